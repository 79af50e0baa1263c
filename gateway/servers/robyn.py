"""The Robyn adapter: Robyn route handlers over the gateway core.

Robyn limits (0.88), measured and stated in the README: a streamed response holds an OS
thread per open stream, and Robyn does not tell a handler that its client has left, so
a dropped stream is only noticed when its next chunk cannot be written.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from robyn import Headers as RobynHeaders
from robyn import Request as RobynRequest
from robyn import Response as RobynResponse
from robyn import Robyn
from robyn.argument_parser import Config
from robyn.responses import StreamingResponse as RobynStreamingResponse

from ..app import Gateway
from ..http import HeaderList, Request, StreamingResponse

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _headers(headers: HeaderList) -> RobynHeaders:
    out = RobynHeaders({})
    for key, value in headers:
        out.append(key, value)
    return out


class RobynAdapter:
    """Translates between Robyn's request/response objects and the core's."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, request: RobynRequest) -> RobynResponse | RobynStreamingResponse:
        body = request.body
        if type(body) is str:  # Robyn hands over valid UTF-8 as str
            body = body.encode()
        params = request.query_params
        query = "" if params.empty() else urlencode(params.multi_items())
        response = await self.gateway.handle(
            Request(request.method, request.url.path, query, request.headers, body)
        )
        if type(response) is StreamingResponse:
            media_type = next((v for k, v in response.headers if k.lower() == "content-type"), "")
            return RobynStreamingResponse(
                response.iterate(),
                status_code=response.status,
                headers=_headers(response.headers),
                media_type=media_type or "application/octet-stream",
            )
        return RobynResponse(
            status_code=response.status,
            headers=_headers(response.headers),
            description=response.body,
        )


def create_app(gateway: Gateway, *, processes: int = 1, log_level: str = "info") -> Robyn:
    config = Config()
    config.processes = processes
    config.workers = 1
    config.disable_openapi = True
    config.log_level = "WARNING" if log_level == "info" else log_level.upper()
    app = Robyn(__file__, config=config)
    app.startup_handler(gateway.startup)
    app.shutdown_handler(gateway.shutdown)
    adapter = RobynAdapter(gateway)

    async def handle(request: RobynRequest) -> RobynResponse | RobynStreamingResponse:
        return await adapter(request)

    for method in METHODS:
        app.add_route(method, "/", handle)
        app.add_route(method, "/*path", handle)
    return app


def serve(
    make_gateway: Callable[[], Gateway],
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str = "info",
    **_: object,
) -> None:
    """Serve until interrupted; the gateway is built once and each process starts its own."""
    app = create_app(make_gateway(), processes=workers, log_level=log_level)
    app.start(host=host, port=port, _check_port=False)
