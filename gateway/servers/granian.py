"""The Granian adapter: an RSGI application over the gateway core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from granian.rsgi import HTTPProtocol, ProtocolClosed, Scope

from ..app import Gateway
from ..http import Request, StreamingResponse


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
        # When the client leaves, cancel this request's task: that closes the upstream
        # connection, which is how the upstream learns to stop generating.
        task = asyncio.current_task()
        assert task is not None
        disconnected = protocol.client_disconnect()
        disconnected.add_done_callback(lambda _: task.cancel())  # type: ignore[attr-defined]
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
            if not disconnected.done():  # type: ignore[attr-defined]
                raise
        except ProtocolClosed:
            pass  # the client left while we were writing

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
