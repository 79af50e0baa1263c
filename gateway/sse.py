"""Server-sent events: whole events out of a byte stream, for stream-chunk hooks.

Without chunk hooks the gateway never looks inside a stream. With them, the bytes are
split on event boundaries (an event may straddle two reads, and a read may carry many
events), each hook sees each whole event in order, and the events are written back out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

import msgspec

from .payload import JSONBody

if TYPE_CHECKING:
    from .context import RequestContext
    from .hooks import HookList

T = TypeVar("T", bound=msgspec.Struct)

DONE = b"[DONE]"


class SSEEvent:
    """One server-sent event, as raw bytes without its terminating blank line.

    Hooks may read ``data`` or ``json``, replace ``data`` or ``raw``, edit ``json`` or a
    ``typed`` view in place, or ``drop()`` the event.
    """

    __slots__ = ("_json", "_raw", "dropped", "json_type")

    def __init__(self, raw: bytes, json_type: type[msgspec.Struct] | None = None) -> None:
        self._raw = raw
        self._json: JSONBody | None = None
        self.json_type = json_type
        self.dropped = False

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
        lines = [
            line[5:].removeprefix(b" ")
            for line in self._raw.split(b"\n")
            if line.startswith(b"data:")
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
    """Accumulates bytes and yields complete events (any of the three SSE line endings)."""

    __slots__ = ("_buffer", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes a CRLF

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        if b"\r" in chunk:
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = (self._buffer + chunk if self._buffer else chunk).split(b"\n\n")
        self._buffer = events.pop()
        return [event for event in events if event]

    def flush(self) -> bytes | None:
        """What is left when the stream ends: an event missing its blank line, if any."""
        rest, self._buffer = self._buffer.rstrip(b"\n"), b""
        return rest or None


async def run_chunk_hooks(
    hooks: HookList,
    ctx: RequestContext,
    chunks: AsyncIterator[bytes],
    json_type: type[msgspec.Struct] | None,
) -> AsyncIterator[bytes]:
    """The stream with each whole event passed through the ``on_chunk`` hooks, in order.

    Events that arrived in one read leave in one write; a dropped event leaves nothing.
    """
    handlers = hooks.handlers

    async def through_hooks(events: list[bytes]) -> tuple[bytes, Exception | None]:
        """The events that survive the hooks; on a hook's failure, those before it."""
        out = []
        for raw in events:
            event = SSEEvent(raw, json_type)
            try:
                for fn, is_async in handlers:
                    result = fn(ctx, event)
                    if is_async:
                        await result
                    if event.dropped:
                        break
                else:
                    out.append(event.raw + b"\n\n")
            except Exception as failure:
                return b"".join(out), failure
        return b"".join(out), None

    async def batches() -> AsyncIterator[list[bytes]]:
        """The whole events of each read, then any unterminated last event."""
        splitter = EventSplitter()
        async for chunk in chunks:
            yield splitter.feed(chunk)
        rest = splitter.flush()
        if rest is not None:
            yield [rest]

    try:
        async for events in batches():
            out, failure = await through_hooks(events)
            if out:
                yield out
            if failure is not None:
                raise failure
    finally:
        await aclose(chunks)


async def aclose(chunks: AsyncIterator[bytes]) -> None:
    """Finish an async iterator early, so that whatever it holds upstream is let go."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
