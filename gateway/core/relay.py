"""Relaying one stream from its upstream to the client, and ending it exactly once.

The relay owns what the gateway keeps about a running stream: its idle deadline, its
place among the streams a stopping worker must end, the usage in its last event, and
its end. However the stream ends — relayed to the end, broken by the upstream, fallen
silent, aborted at shutdown, left by the client, or dropped by a server that never
pulled it — the upstream is let go and ``on_end`` runs once, with how it ended.

Two ways to run it, the same behaviour: ``pump(send)`` writes each chunk with ``send``
as it arrives (Granian: one coroutine for the whole stream, the fewest steps between
the upstream's read and the client's write); ``iterate()`` yields them (servers that
pull, like Robyn, and library users).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableSet
from time import perf_counter
from typing import TYPE_CHECKING

from ..observability.usage import UsageStripper, usage_of_stream_tail
from ..wire.sse import aclose
from .errors import GatewayError, ShuttingDownError, UpstreamTimeoutError
from .outcome import CLIENT_LEFT, DRAINED, IDLE_TIMEOUT, STREAM_BROKEN, STREAMED

if TYPE_CHECKING:
    from .chunks import ChunkHooks
    from .context import RequestContext
    from .outcome import Usage
    from .timers import Timers

# on_end(ctx, how it ended, the error that ended it or None)
EndCallback = Callable[["RequestContext", str, "Exception | None"], None]
NextChunk = Callable[[], Awaitable[bytes]]  # the next chunk; b"" when the stream is over


class Relay:
    """One stream: ``pump()`` or ``iterate()`` relays it; it ends once, however it ends."""

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_capture",
        "_capture_room",
        "_close_upstream",
        "_ended",
        "_failure",
        "_hooks",
        "_how",
        "_idle",
        "_iterator",
        "_last",
        "_next_chunk",
        "_on_end",
        "_on_error",
        "_previous",
        "_running",
        "_sent",
        "_stripper",
        "_timers",
        "ctx",
        "last_chunk_at",
        "usage_of_tail",
    )

    def __init__(
        self,
        ctx: RequestContext,
        next_chunk: NextChunk,
        *,
        on_error: Callable[[Exception], Awaitable[bytes | None]],
        on_end: EndCallback,
        close_upstream: Callable[[], None],
        timers: Timers,
        idle: float,
        running: MutableSet[Relay],
        strip_usage: bool = False,
        usage_of_tail: Callable[[bytes], Usage | None] | None = usage_of_stream_tail,
        capture: list[bytes] | None = None,
        capture_limit: int = 0,
        iterator: AsyncIterator[bytes] | None = None,
        chunk_hooks: ChunkHooks | None = None,
    ) -> None:
        self.ctx = ctx
        self._next_chunk = next_chunk
        self._iterator = iterator  # closed at the end, when chunks come from one
        # Plain on_chunk hooks, run between each read and its write (no generator).
        self._hooks = chunk_hooks
        self._on_error = on_error
        self._on_end = on_end
        self._close_upstream = close_upstream
        self._timers = timers
        self._idle = idle
        self._ended = False
        self._aborted: GatewayError | None = None
        self._stripper = UsageStripper() if strip_usage else None
        self.usage_of_tail = usage_of_tail  # reads the usage the stream's tail states
        self._capture = capture  # gets every chunk as it came (for the response cache)
        self._capture_room = capture_limit  # bytes it may still take before it is let go
        self._how = CLIENT_LEFT  # until it ends otherwise: stopped at a write, the client left
        self._failure: Exception | None = None
        self._sent = 0
        self._previous = self._last = b""
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

    # ------------------------------------------------------------ relaying

    async def pump(self, send: Callable[[bytes], Awaitable[object]]) -> None:
        """Write every chunk with ``send`` as it arrives, then the last words if the
        stream broke. An error raised by ``send`` (the client left) ends the stream."""
        next_chunk = self._next_chunk
        self._start()
        try:
            if self._capture is None and self._stripper is None and self._hooks is None:
                await self._pump_plain(next_chunk, send)
                return
            took = self._took
            hooks = self._hooks
            while True:
                try:
                    chunk = await next_chunk()
                except Exception as error:
                    if tail := await self._broke(error):
                        await send(tail)
                    return
                if not chunk:
                    if rest := self._over():
                        await send(rest)
                    # (hooks.failure read, not kept: its traceback leads back to this frame)
                    if (
                        hooks is not None
                        and hooks.failure is not None
                        and (tail := await self._broke(hooks.failure))
                    ):
                        await send(tail)  # a hook raised on the last event
                    return
                if chunk := took(chunk):
                    await send(chunk)
                if hooks is not None and hooks.failure is not None:  # a hook raised
                    if tail := await self._broke(hooks.failure):
                        await send(tail)
                    return
        finally:
            self._end()
            if self._iterator is not None:
                await aclose(self._iterator)

    async def _pump_plain(
        self, next_chunk: NextChunk, send: Callable[[bytes], Awaitable[object]]
    ) -> None:
        """``pump`` for a stream whose chunks go out as they came (nothing captured or
        taken out): what ``_took`` does, inline, the fewest steps per chunk."""
        clock = self._timers.clock
        previous = last = b""
        sent = 0
        try:
            while True:
                try:
                    chunk = await next_chunk()
                except Exception as error:
                    if tail := await self._broke(error):
                        await send(tail)
                    return
                if not chunk:
                    self._how = STREAMED
                    return
                self.last_chunk_at = clock()
                if not sent:
                    self.ctx.first_byte_at = perf_counter()
                previous, last = last, chunk
                sent += len(chunk)
                await send(chunk)
        finally:
            self._sent += sent
            self._previous, self._last = previous, last

    async def iterate(self) -> AsyncIterator[bytes]:
        """Every chunk as it arrives — for servers that pull from an iterator."""
        next_chunk = self._next_chunk
        took = self._took
        hooks = self._hooks
        self._start()
        try:
            while True:
                try:
                    chunk = await next_chunk()
                except Exception as error:
                    if tail := await self._broke(error):
                        yield tail
                    return
                if not chunk:
                    if rest := self._over():
                        yield rest
                    # (hooks.failure read, not kept: its traceback leads back to this frame)
                    if (
                        hooks is not None
                        and hooks.failure is not None
                        and (tail := await self._broke(hooks.failure))
                    ):
                        yield tail  # a hook raised on the last event
                    return
                if chunk := took(chunk):
                    yield chunk
                if hooks is not None and hooks.failure is not None:  # a hook raised
                    if tail := await self._broke(hooks.failure):
                        yield tail
                    return
        finally:
            self._end()
            if self._iterator is not None:
                await aclose(self._iterator)

    def _start(self) -> None:
        timers = self._timers
        self.last_chunk_at = timers.clock()
        timers.add(self, self._idle, self._check_idle)

    def _took(self, chunk: bytes) -> bytes:
        """A chunk read from upstream, as the client gets it (maybe nothing yet)."""
        self.last_chunk_at = self._timers.clock()
        hooks = self._hooks
        if hooks is not None:
            chunk = hooks.feed(chunk)
            if not chunk:
                return chunk
        capture = self._capture
        if capture is not None:
            self._capture_room -= len(chunk)
            if self._capture_room >= 0:
                capture.append(chunk)
            else:  # too large to be stored: stop holding it
                capture.clear()
                self._capture = None
        if self._stripper is not None:
            chunk = self._stripper.feed(chunk)
            if not chunk:
                return chunk
        else:
            self._previous, self._last = self._last, chunk
        if not self._sent:
            self.ctx.first_byte_at = perf_counter()
        self._sent += len(chunk)
        return chunk

    def _over(self) -> bytes:
        """The upstream finished the stream: what was held back, if anything."""
        self._how = STREAMED
        rest = b""
        hooks = self._hooks
        if hooks is not None and (last := hooks.end()):
            # The last event has been through the hooks: _took must not feed it again.
            self._hooks = None
            rest = self._took(last)
            self._hooks = hooks  # (the loop reads its failure after this)
        if self._stripper is not None:
            flushed = self._stripper.flush()
            self._sent += len(flushed)
            rest += flushed
        return rest

    async def _broke(self, error: Exception) -> bytes | None:
        """The stream broke upstream or in a hook (errors in writing to the client
        surface in the adapter, not here): how it ended, and the last words."""
        failure = self._aborted or error
        self._how = _ended_by(failure)
        self._failure = failure
        tail = await self._on_error(failure)
        if tail:
            self._sent += len(tail)
        return tail

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._timers.remove(self)
        self._running.discard(self)
        ctx = self.ctx
        outcome = ctx.outcome
        outcome.bytes_out = self._sent
        stripper = self._stripper
        if outcome.usage is None:  # a translating provider states it itself, fuller
            if stripper is not None and stripper.usage is not None:
                outcome.usage = stripper.usage
            elif self.usage_of_tail is not None and self._last:
                outcome.usage = self.usage_of_tail(self._previous + self._last)
        if self._how is not STREAMED:
            self._close_upstream()  # unfinished: drop the connection, the upstream stops
        failure, self._failure = self._failure, None
        if self._hooks is not None:
            self._hooks.failure = None
        # (Not kept: its traceback holds pump()'s frame, whose `send` holds Granian's
        # transport, which must be let go for the response to end.)
        self._on_end(ctx, self._how, failure)

    def __del__(self) -> None:
        # Dropped without ever being pulled (Robyn may drop a stream whose client left
        # before it started): nothing ran to end it, so do it here, synchronously.
        if not self._ended:
            self._end()


def _ended_by(error: Exception) -> str:
    if isinstance(error, ShuttingDownError):
        return DRAINED
    if isinstance(error, UpstreamTimeoutError):
        return IDLE_TIMEOUT
    return STREAM_BROKEN


def chunks_of(iterator: AsyncIterator[bytes]) -> NextChunk:
    """``NextChunk`` over an async iterator (the chunk-hook pipeline, a provider's)."""
    next_of = iterator.__anext__

    async def next_chunk() -> bytes:
        try:
            return await next_of()
        except StopAsyncIteration:
            return b""

    return next_chunk
