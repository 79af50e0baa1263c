"""Server-sent events: whole events out of a byte stream, and back onto it.

An event may straddle two reads, and a read may carry many events: ``EventSplitter``
yields whole events whatever the split, and ``SSEEvent`` is one event as hooks see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec

from .payload import JSONBody

T = TypeVar("T", bound=msgspec.Struct)

DONE = b"[DONE]"


class SSEEvent:
    """One server-sent event, as hooks see it: ``SSEEvent(raw)``, from the event's bytes
    without the blank line after them.

    Hooks may read or replace ``data`` (the data lines joined by newlines; ``None`` for
    an event without data) or ``raw``, edit ``json`` or a ``typed`` view in place, or
    ``drop()`` the event.

    Hooks are shown one for every event of every hooked stream, so it is cheap to make
    and to read: ``data`` is a plain attribute; for the usual event (one ``data:`` line)
    the pipeline sets ``data`` alone (the bytes are then ``data: `` and it). It tells a
    change by ``data`` rebound or by ``_touched``, which all else that may change the
    event sets (``raw`` set, ``json`` read, a drop).
    """

    __slots__ = (
        "_data",
        "_dropped",
        "_json",
        "_json_data",
        "_raw",
        "_touched",
        "data",
        "json_type",
    )

    def __init__(self, raw: bytes, json_type: type[msgspec.Struct] | None = None) -> None:
        self.data = self._data = data_of(raw)
        self.json_type = json_type
        self._raw: bytes | None = raw  # the event's bytes as they came; None: b"data: " + data
        self._json: JSONBody | None = None
        self._json_data: bytes | None = None  # the data _json was decoded from
        self._dropped = self._touched = False

    @classmethod
    def of_data(cls, data: bytes, json_type: type[msgspec.Struct] | None = None) -> SSEEvent:
        """The usual event: one ``data:`` line holding ``data`` (no newline in it)."""
        event = _new(cls)  # (not through __init__: one of these per event of a stream)
        event.data = event._data = data
        event.json_type = json_type
        event._raw = event._json = event._json_data = None
        event._dropped = event._touched = False
        return event

    @property
    def raw(self) -> bytes:
        body = self._json
        if body is not None and self._json_data is self.data and body.changed:
            self.data = self._json_data = body.to_bytes()
        data, raw = self.data, self._raw
        if raw is None:
            return _data_lines(data)
        if data is not self._data:  # data replaced: the other lines stay, in their order
            kept = [line for line in raw.split(b"\n") if line and not line.startswith(b"data:")]
            if data is not None:
                kept.append(_data_lines(data))
            self._raw = raw = b"\n".join(kept)
            self._data = data
        return raw

    @raw.setter
    def raw(self, value: bytes) -> None:
        self._raw = value
        self.data = self._data = data_of(value)
        self._json = self._json_data = None
        self._touched = True

    @property
    def is_done(self) -> bool:
        """Whether this is the OpenAI end-of-stream marker ``data: [DONE]``."""
        return self.data == DONE

    @property
    def json(self) -> JSONBody | None:
        """The data as a lazily decoded JSON object (``None`` for no data or ``[DONE]``)."""
        data = self.data
        body = self._json
        if body is not None and self._json_data is data:
            return body
        if data is None or not data.startswith(b"{"):
            return None
        body = self._json = JSONBody(data)
        self._json_data = data
        self._touched = True  # its edits show when raw is next read
        return body

    def typed(self, type_: type[T] | None = None) -> T | None:
        """The data decoded as ``type_`` (default: the endpoint's chunk type), once."""
        type_ = type_ or self.json_type  # type: ignore[assignment]
        if type_ is None:
            raise TypeError("this event has no typed view; pass a Struct type")
        body = self.json
        return None if body is None else body.typed(type_)

    def drop(self) -> None:
        """Leave this event out of the stream sent to the client."""
        self._dropped = self._touched = True

    @property
    def dropped(self) -> bool:
        return self._dropped

    @dropped.setter
    def dropped(self, value: bool) -> None:
        self._dropped = value
        self._touched = True

    def __repr__(self) -> str:
        raw = self._raw if self._raw is not None else _data_lines(self.data)
        return f"<SSEEvent {raw[:60]!r}>"


_new = object.__new__


def data_of(raw: bytes) -> bytes | None:
    """An event's data lines joined by newlines; ``None`` for an event without data."""
    # (find, not `in`: see observability/usage.py)
    if raw.startswith(b"data: ") and raw.find(b"\n") == -1:
        return raw[6:]  # the usual event: one data line
    lines = [line[5:].removeprefix(b" ") for line in raw.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _data_lines(data: bytes | None) -> bytes:
    """``data`` as the data lines of an event."""
    if data is None:
        return b""
    if data.find(b"\n") == -1:
        return b"data: " + data
    return b"\n".join(b"data: " + line for line in data.split(b"\n"))


class EventSplitter:
    """Accumulates bytes and yields complete events (any of the three SSE line endings).

    ``exact`` tells whether the last ``feed`` or ``split`` took exactly that chunk's
    bytes: whole events only, nothing carried in or left over, no line ending rewritten.
    """

    __slots__ = ("_buffer", "_skip_lf", "exact", "whole")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes a CRLF
        self.exact = False
        self.whole = b""  # after a split: the bytes of the events it returned

    def split(self, chunk: bytes) -> list[bytes] | None:
        """The data of the whole events ``chunk`` completes, when every one of them is a
        single ``data: `` line (the usual stream), cut out by one ``split`` of the read
        rather than by calls per event; ``whole`` is then the bytes they came from.
        ``None`` for any other stream: nothing was taken, ``feed(chunk)`` it instead."""
        buffer = self._buffer
        text = buffer + chunk if buffer else chunk
        if self._skip_lf or text.find(b"\r") != -1 or text[:6] != b"data: ":
            return None
        last = len(text) - 2
        if text[-1] == 10 and text.find(b"\n") == last:  # one event, as tokens come one by one
            self._buffer, self.whole, self.exact = b"", text, not buffer
            return [text[6:last]]
        datas = text.split(b"\n\ndata: ")
        if text[-2:] == b"\n\n":
            whole, rest = text, b""
            datas[-1] = datas[-1][:-2]
        else:  # the last event is not whole yet: it waits for the next read
            tail = datas.pop()
            if tail.find(b"\n") != -1:  # maybe more whole events, not usual ones
                return None
            if not datas:
                self._buffer, self.exact = text, False
                return datas
            end = len(text) - len(tail) - 6
            whole, rest = text[:end], text[end:]
        datas[0] = datas[0][6:]
        # The separators and the last blank line hold every newline of the usual stream:
        # any other (a second line, an extra blank line) is a stream to feed().
        if b"".join(datas).find(b"\n") != -1:
            return None
        self._buffer, self.whole, self.exact = rest, whole, not buffer and not rest
        return datas

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole events (their bytes, without the blank line) ``chunk`` completes."""
        exact = not self._buffer
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
            exact = False
        self._skip_lf = False
        if chunk.find(b"\r") != -1:
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            exact = False
        events = (self._buffer + chunk if self._buffer else chunk).split(b"\n\n")
        self._buffer = events.pop()
        self.exact = exact and not self._buffer
        if b"" in events:  # an extra blank line between events is no event
            self.exact = False
            events = [event for event in events if event]
        return events

    def flush(self) -> bytes | None:
        """What is left when the stream ends: an event missing its blank line, if any."""
        rest, self._buffer = self._buffer.rstrip(b"\n"), b""
        return rest or None


def events_bytes(events: list[bytes]) -> bytes:
    """Events back on the wire, each followed by its blank line."""
    return b"\n\n".join(events) + b"\n\n" if events else b""


async def aclose(chunks: AsyncIterator[bytes]) -> None:
    """Finish an async iterator early, so that whatever it holds upstream is let go."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
