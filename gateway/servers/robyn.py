"""The Robyn adapter: Robyn route handlers over the gateway core.

Robyn limits (0.88), measured and stated in the README: a streamed response holds an OS
thread per open stream, and Robyn does not tell a handler that its client has left. A
dropped *stream* is still noticed (see ``_reap_abandoned_streams``); a dropped request
that is still waiting for its upstream's answer is not, and runs until it is answered
or times out.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from robyn import Headers as RobynHeaders
from robyn import Request as RobynRequest
from robyn import Response as RobynResponse
from robyn import Robyn
from robyn.argument_parser import Config
from robyn.responses import StreamingResponse as RobynStreamingResponse
from robyn.robyn import get_version

from ..app import Gateway
from ..http import HeaderList, Request, StreamingResponse
from . import freeze_startup_heap

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REAP_INTERVAL = 0.1


async def _reap_abandoned_streams(interval: float = REAP_INTERVAL) -> None:
    """Let go of streams whose client has left, within ``interval`` seconds.

    When a client leaves, Robyn drops that stream's iterator from a thread without the
    GIL; PyO3 defers such a drop until Python code next calls into PyO3 — on a quiet
    server, the next request. Any PyO3 call processes the deferred drops, so one cheap
    call every ``interval`` finalises the abandoned stream promptly, and its ``finally``
    closes the upstream connection: the upstream stops generating.
    """
    while True:
        await asyncio.sleep(interval)
        get_version()


class _Headers:
    """Robyn's request headers with some values replaced."""

    def __init__(self, headers: RobynHeaders, replaced: dict[str, str]) -> None:
        self._items = [(k, v) for k, v in headers.multi_items() if k.lower() not in replaced]
        self._items += replaced.items()

    def get(self, key: str, default: str | None = None) -> str | None:
        return next((v for k, v in self._items if k.lower() == key), default)

    def items(self) -> list[tuple[str, str]]:
        return self._items


def _rebuild_multipart(request: RobynRequest) -> tuple[bytes, str]:
    """A multipart body from what Robyn parsed out of the original.

    Robyn 0.88 replaces a multipart body by its parsed fields and files (files keyed by
    file name, their field name lost), so the original bytes cannot be forwarded. The
    rebuilt body keeps every text field and every file's bytes and name, under the field
    name ``file`` that OpenAI's upload endpoints use.
    """
    boundary = "gateway-" + os.urandom(12).hex()
    parts = []
    for name, value in request.form_data.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        parts.append(value.encode() + b"\r\n")
    for filename, data in request.files.items():
        disposition = f'form-data; name="file"; filename="{filename}"'
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        parts.append(bytes(data) + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _headers(headers: HeaderList) -> RobynHeaders:
    out = RobynHeaders({})
    for key, value in headers:
        out.append(key, value)
    return out


class RobynAdapter:
    """Translates between Robyn's request/response objects and the core's."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._reaper: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await self.gateway.startup()
        freeze_startup_heap()
        self._reaper = asyncio.get_running_loop().create_task(_reap_abandoned_streams())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await self.gateway.shutdown()

    async def __call__(self, request: RobynRequest) -> RobynResponse | RobynStreamingResponse:
        headers: RobynHeaders | _Headers = request.headers
        content_type = headers.get("content-type")
        if content_type is not None and content_type.startswith("multipart/form-data"):
            body, content_type = _rebuild_multipart(request)
            headers = _Headers(headers, {"content-type": content_type})
        else:
            body = request.body
            if type(body) is str:  # Robyn hands over valid UTF-8 as str
                body = body.encode()
        params = request.query_params
        # Robyn keeps query values as sent (still percent-encoded): join them back as they were.
        query = "" if params.empty() else "&".join(f"{k}={v}" for k, v in params.multi_items())
        response = await self.gateway.handle(
            Request(request.method, request.url.path, query, headers, body)
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
    adapter = RobynAdapter(gateway)
    app.startup_handler(adapter.startup)
    app.shutdown_handler(adapter.shutdown)

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
