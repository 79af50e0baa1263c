"""The Granian adapter: an RSGI application over the gateway core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope

from ..core.app import Gateway
from ..core.errors import IncompleteBodyError
from ..observability.logs import granian_log_config
from ..wire.http import Request, StreamingResponse
from . import freeze_startup_heap, on_stop_signal

# When the client leaves, cancelling the request's task closes the upstream connection,
# which is how the upstream learns to stop generating. Granian's client_disconnect()
# starts a watcher that lives until the *connection* closes unless it is cancelled, and
# costs tens of microseconds; so it is armed only for requests that have run ARM_AFTER
# seconds (streams, slow answers) and always cancelled at the end. Quick requests never
# pay for it; a client that left before the watch was armed is seen the moment it is.
ARM_AFTER = 0.25


class RSGIApp:
    """One per worker process. The worker's loop runs ``startup`` before serving."""

    def __init__(self, gateway: Gateway, drain_seconds: float = 30.0) -> None:
        self.gateway = gateway
        self.drain_seconds = drain_seconds
        self._draining: asyncio.Task[None] | None = None
        self._max_body = gateway.limits.max_body_bytes
        # The client-disconnect watch: armed per request by the core's coarse timers (keyed
        # by the request's protocol object; the core keys its own by task), see ARM_AFTER.
        self._timers = gateway.timers
        self._watching: dict[asyncio.Task[None], Any] = {}
        self._gone: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # the worker's

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is not running yet: run start-up on it so the session belongs to it.
        self._loop = loop
        loop.run_until_complete(self.gateway.startup())
        freeze_startup_heap()
        on_stop_signal(lambda: loop.call_soon_threadsafe(self._drain))

    def _drain(self) -> None:
        # Granian has stopped accepting and waits for what is in flight; the gateway
        # bounds that wait, ending what is left after GATEWAY_DRAIN_SECONDS.
        if self._draining is None:
            self._draining = self._loop.create_task(self.gateway.drain(self.drain_seconds))

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._draining is not None:
            loop.run_until_complete(self._draining)
        loop.run_until_complete(self.gateway.shutdown())

    async def __rsgi__(self, scope: Scope, protocol: HTTPProtocol) -> None:
        if scope.proto != "http":
            protocol.close(1003)  # type: ignore[attr-defined]  # websockets are not served
            return
        task = asyncio.current_task(self._loop)
        self._timers.add(protocol, ARM_AFTER, self._watch, task, protocol)
        headers = scope.headers
        try:
            try:
                length = headers.get("content-length")
                if length is not None and length.isdigit() and int(length) <= self._max_body:
                    body = await protocol()
                else:
                    body = await self._read_limited(protocol)
            except ProtocolClosed:  # the body ended early, or its chunked framing is broken
                request = Request(
                    scope.method, scope.path, scope.query_string, headers, b"", scope.client
                )
                response = await self.gateway.refuse(request, IncompleteBodyError())
            else:
                request = Request(
                    scope.method, scope.path, scope.query_string, headers, body, scope.client
                )
                response = await self.gateway.handle(request)
            if type(response) is StreamingResponse:
                transport = protocol.response_stream(response.status, response.headers)
                # Lets go of the upstream at the end, even if the client left mid-stream.
                # (Granian ends the response when the transport is let go: nothing may
                # keep it, such as a stored exception whose traceback holds this frame.)
                await response.send_to(transport.send_bytes)
            else:
                protocol.response_bytes(response.status, response.headers, response.body)
        except asyncio.CancelledError:
            if task not in self._gone:
                raise
        except ProtocolClosed:
            pass  # the client left while we were writing
        finally:
            self._timers.remove(protocol)
            self._gone.discard(task)
            watch = self._watching.pop(task, None)
            if watch is not None:
                watch.cancel()  # else it would live as long as the connection

    def _watch(self, task: asyncio.Task[None], protocol: HTTPProtocol) -> None:
        """Arm the disconnect watch of a request that has run ``ARM_AFTER`` seconds."""
        disconnected = protocol.client_disconnect()
        self._watching[task] = disconnected

        def on_disconnect(future: Any) -> None:
            if not future.cancelled():
                self._gone.add(task)
                task.cancel()

        disconnected.add_done_callback(on_disconnect)

    async def _read_limited(self, protocol: HTTPProtocol) -> bytes:
        """A body of unknown or too large a size: its first ``limit + 1`` bytes at most.

        Granian's body iterator does not raise on a broken body (a chunked body cut
        short or malformed): it yields an empty frame for the error, then one more for
        the end, where a whole body ends with a single empty frame. So a second empty
        frame means the body is broken.
        """
        parts, size, empty = [], 0, 0
        async for part in protocol:
            if not part:
                empty += 1
                continue
            parts.append(part)
            size += len(part)
            if size > self._max_body:
                break
        if empty > 1:
            raise ProtocolClosed("the request body is broken")
        return b"".join(parts)


def serve(
    make_gateway: Callable[[], Gateway],
    *,
    host: str,
    port: int,
    workers: int,
    max_concurrency: int,
    drain_seconds: float = 30.0,
    log_level: str = "info",
    log_format: str = "text",
    max_header_bytes: int = 64 * 1024,
    **options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM, then drain. Each worker gets its gateway by ``make_gateway``."""
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    server = Granian(
        "gateway",
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        backlog=max(1024, max_concurrency),
        backpressure=max_concurrency,
        log_level=LogLevels(log_level),
        log_dictconfig=granian_log_config(log_format),
        websockets=False,
        # A worker that has not finished draining well after its time is killed.
        workers_kill_timeout=int(drain_seconds) + 15,
        respawn_failed_workers=True,  # a worker that dies is replaced; the others serve on
        # Granian's own header cap stays above the gateway's, which answers in OpenAI's
        # shape; past Granian's, Granian answers a bare 431 itself.
        http1_settings=HTTP1Settings(
            max_buffer_size=max(HTTP1Settings.max_buffer_size, max_header_bytes + 16 * 1024)
        ),
        **options,
    )
    server.serve(target_loader=lambda: RSGIApp(make_gateway(), drain_seconds), wrap_loader=False)
