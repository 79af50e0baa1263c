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


class SSEEvent(msgspec.Struct):
    """One server-sent event, as raw bytes without its terminating blank line.

    Hooks may read ``data`` or ``json``, replace ``data`` or ``raw``, edit ``json`` or a
    ``typed`` view in place, or ``drop()`` the event. (A msgspec Struct: one is made per
    event of every hooked stream, and a Struct is made in half the time of a class.)
    """

    _raw: bytes
    json_type: type[msgspec.Struct] | None = None
    _json: JSONBody | None = None
    dropped: bool = False

    @property
    def raw(self) -> bytes:
        if self._json is not None and self._json.changed:
            self.data = self._json.to_bytes()
        return self._raw

    @raw.setter
    def raw(self, value: bytes) -> None:
        self._raw = value
        self._json = None

    @property
    def data(self) -> bytes | None:
        """The event's data lines joined by newlines; ``None`` for an event without data."""
        raw = self._raw
        # (find, not `in`: see observability/usage.py)
        if raw.startswith(b"data: ") and raw.find(b"\n") == -1:
            return raw[6:]  # the usual event: one data line
        lines = [
            line[5:].removeprefix(b" ") for line in raw.split(b"\n") if line.startswith(b"data:")
        ]
        return b"\n".join(lines) if lines else None

    @data.setter
    def data(self, value: bytes) -> None:
        kept = [line for line in self._raw.split(b"\n") if line and not line.startswith(b"data:")]
        kept.extend(b"data: " + line for line in value.split(b"\n"))
        self._raw = b"\n".join(kept)
        self._json = None

    @property
    def is_done(self) -> bool:
        """Whether this is the OpenAI end-of-stream marker ``data: [DONE]``."""
        return self.data == DONE

    @property
    def json(self) -> JSONBody | None:
        """The data as a lazily decoded JSON object (``None`` for no data or ``[DONE]``)."""
        if self._json is None:
            data = self.data
            if data is None or data == DONE or not data.startswith(b"{"):
                return None
            self._json = JSONBody(data)
        return self._json

    def typed(self, type_: type[T] | None = None) -> T | None:
        """The data decoded as ``type_`` (default: the endpoint's chunk type), once."""
        type_ = type_ or self.json_type  # type: ignore[assignment]
        if type_ is None:
            raise TypeError("this event has no typed view; pass a Struct type")
        body = self.json
        return None if body is None else body.typed(type_)

    def drop(self) -> None:
        """Leave this event out of the stream sent to the client."""
        self.dropped = True

    def __repr__(self) -> str:
        return f"<SSEEvent {self._raw[:60]!r}>"


class EventSplitter:
    """Accumulates bytes and yields complete events (any of the three SSE line endings).

    ``exact`` tells whether the last ``feed`` returned exactly that chunk's bytes: whole
    events only, nothing carried in or left over, no line ending rewritten.
    """

    __slots__ = ("_buffer", "_skip_lf", "exact")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes a CRLF
        self.exact = False

    def feed(self, chunk: bytes) -> list[bytes]:
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
