"""The Granian adapter: an RSGI application over the gateway core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope

from ..app import Gateway
from ..http import Request, StreamingResponse


class _DisconnectWatch:
    """Cancels the request's task when its client leaves — for requests that last.

    When the client leaves, cancelling the task closes the upstream connection, which
    is how the upstream learns to stop generating. Granian's ``client_disconnect()``
    starts a watcher per call that lives until the *connection* closes unless it is
    cancelled, and costs tens of microseconds; so it is armed only once a request has
    run for ``ARM_AFTER`` seconds (streams, slow answers) and always cancelled at the
    end. Quick requests never pay for it; a client that left before the watch was armed
    is seen the moment it is.
    """

    ARM_AFTER = 0.25

    __slots__ = ("_disconnected", "_protocol", "_task", "_timer", "client_left")

    def __init__(self, protocol: HTTPProtocol) -> None:
        self._protocol = protocol
        self._task = asyncio.current_task()
        self._disconnected: Any = None
        self.client_left = False
        self._timer = asyncio.get_running_loop().call_later(self.ARM_AFTER, self._arm)

    def _arm(self) -> None:
        self._disconnected = self._protocol.client_disconnect()
        self._disconnected.add_done_callback(self._on_disconnect)

    def _on_disconnect(self, future: Any) -> None:
        if not future.cancelled():
            self.client_left = True
            self._task.cancel()  # type: ignore[union-attr]

    def close(self) -> None:
        self._timer.cancel()
        if self._disconnected is not None:
            self._disconnected.remove_done_callback(self._on_disconnect)
            self._disconnected.cancel()


class RSGIApp:
    """One per worker process. The worker's loop runs ``startup`` before serving."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._max_body = gateway.limits.max_body_bytes

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is not running yet: run start-up on it so the session belongs to it.
        loop.run_until_complete(self.gateway.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.gateway.shutdown())

    async def __rsgi__(self, scope: Scope, protocol: HTTPProtocol) -> None:
        if scope.proto != "http":
            protocol.close(1003)  # type: ignore[attr-defined]  # websockets are not served
            return
        watch = _DisconnectWatch(protocol)
        try:
            body = await self._read_body(scope, protocol)
            request = Request(scope.method, scope.path, scope.query_string, scope.headers, body)
            response = await self.gateway.handle(request)
            if type(response) is StreamingResponse:
                transport = protocol.response_stream(response.status, response.headers)
                async for chunk in response.iterate():
                    await transport.send_bytes(chunk)
            else:
                protocol.response_bytes(response.status, response.headers, response.body)
        except asyncio.CancelledError:
            if not watch.client_left:
                raise
        except ProtocolClosed:
            pass  # the client left while we were writing
        finally:
            watch.close()

    async def _read_body(self, scope: Scope, protocol: HTTPProtocol) -> bytes:
        """The body, or its first ``limit + 1`` bytes when it is larger than the limit."""
        length = scope.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) <= self._max_body:
            return await protocol()
        parts, size = [], 0
        async for part in protocol:
            parts.append(part)
            size += len(part)
            if size > self._max_body:
                break
        return b"".join(parts)


def serve(
    make_gateway: Callable[[], Gateway],
    *,
    host: str,
    port: int,
    workers: int,
    max_concurrency: int,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM. Each worker builds its own gateway by ``make_gateway``."""
    from granian import Granian
    from granian.constants import Interfaces, Loops
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
        websockets=False,
        **options,
    )
    server.serve(target_loader=lambda: RSGIApp(make_gateway()), wrap_loader=False)
