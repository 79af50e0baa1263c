"""Relaying one stream from its upstream to the client, and ending it exactly once.

The relay owns what the gateway keeps about a running stream: its idle deadline, its
place among the streams a stopping worker must end, the usage in its last event, and
its end. However the stream ends — relayed to the end, broken by the upstream, fallen
silent, aborted at shutdown, left by the client, or dropped by a server that never
pulled it — the upstream is let go and ``on_end`` runs once, with how it ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableSet
from time import perf_counter
from typing import TYPE_CHECKING

from .errors import GatewayError, ShuttingDownError, UpstreamTimeoutError
from .outcome import CLIENT_LEFT, DRAINED, IDLE_TIMEOUT, STREAM_BROKEN, STREAMED
from .sse import aclose
from .usage import UsageStripper, usage_of_stream_tail

if TYPE_CHECKING:
    from .context import RequestContext
    from .timers import Timers

# on_end(ctx, how it ended, the error that ended it or None)
EndCallback = Callable[["RequestContext", str, "Exception | None"], None]


class Relay:
    """One stream: iterate() yields its chunks; it ends once, however it ends."""

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_chunks",
        "_close_upstream",
        "_ended",
        "_idle",
        "_on_end",
        "_on_error",
        "_running",
        "_stripper",
        "_timers",
        "ctx",
        "last_chunk_at",
        "read_usage",
    )

    def __init__(
        self,
        ctx: RequestContext,
        chunks: AsyncIterator[bytes],
        *,
        on_error: Callable[[Exception], Awaitable[bytes | None]],
        on_end: EndCallback,
        close_upstream: Callable[[], None],
        timers: Timers,
        idle: float,
        running: MutableSet[Relay],
        strip_usage: bool = False,
        read_usage: bool = True,
    ) -> None:
        self.ctx = ctx
        self._chunks = chunks
        self._on_error = on_error
        self._on_end = on_end
        self._close_upstream = close_upstream
        self._timers = timers
        self._idle = idle
        self._ended = False
        self._aborted: GatewayError | None = None
        self._stripper = UsageStripper() if strip_usage else None
        self.read_usage = read_usage  # whether the stream's tail may state its usage
        self.last_chunk_at = 0.0
        # Known from now until it ends (for shutdown): an adapter may start pulling it
        # only after the core has returned it (Robyn does, from a thread).
        self._running = running
        running.add(self)

    def abort(self, error: GatewayError) -> None:
        """End the stream now: drop the upstream; the client gets ``error`` as last words."""
        self._aborted = error
        self._close_upstream()

    def _check_idle(self) -> None:
        timers, idle = self._timers, self._idle
        silent = timers.clock() - self.last_chunk_at
        if silent < idle:
            timers.add(self, idle - silent, self._check_idle)
        else:
            self.abort(UpstreamTimeoutError(f"The upstream sent nothing for {idle:g} s."))

    async def iterate(self) -> AsyncIterator[bytes]:
        """Every chunk as it arrives, then the last words if the stream broke."""
        next_chunk = self._chunks.__anext__
        timers = self._timers
        clock = timers.clock
        ctx = self.ctx
        stripper = self._stripper
        self.last_chunk_at = clock()
        timers.add(self, self._idle, self._check_idle)
        how, failure = CLIENT_LEFT, None  # closed at a yield: the client stopped reading
        previous = last = b""
        sent = 0
        try:
            while True:
                try:
                    chunk = await next_chunk()
                except StopAsyncIteration:
                    if stripper is not None and (rest := stripper.flush()):
                        sent += len(rest)
                        yield rest
                    how = STREAMED
                    break
                except Exception as error:
                    # The stream broke upstream or in a hook (errors in writing to the
                    # client surface in the adapter, not here): send the last words.
                    failure = self._aborted or error
                    how = _ended_by(failure)
                    if tail := await self._on_error(failure):
                        yield tail
                    break
                self.last_chunk_at = clock()
                if stripper is not None:
                    chunk = stripper.feed(chunk)
                    if not chunk:
                        continue
                else:
                    previous, last = last, chunk
                if not sent:
                    ctx.first_byte_at = perf_counter()
                sent += len(chunk)
                yield chunk
        finally:
            ctx.outcome.bytes_out = sent
            outcome = ctx.outcome
            if outcome.usage is None:  # a translating provider states it itself, fuller
                if stripper is not None and stripper.usage is not None:
                    outcome.usage = stripper.usage
                elif self.read_usage and last:
                    outcome.usage = usage_of_stream_tail(previous + last)
            self._end(how, failure)
            await aclose(self._chunks)

    def _end(self, how: str, failure: Exception | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._timers.remove(self)
        self._running.discard(self)
        self._on_end(self.ctx, how, failure)

    def __del__(self) -> None:
        # Dropped without ever being pulled (Robyn may drop a stream whose client left
        # before it started): no iterate() ran to end it, so do it here, synchronously.
        if not self._ended:
            self._end(CLIENT_LEFT, None)
            self._close_upstream()


def _ended_by(error: Exception) -> str:
    if isinstance(error, ShuttingDownError):
        return DRAINED
    if isinstance(error, UpstreamTimeoutError):
        return IDLE_TIMEOUT
    return STREAM_BROKEN
