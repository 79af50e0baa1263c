"""The ceiling: the least a gateway on this stack can do.

A bare forwarder on the same server, with the same worker count, as the gateway: one
pooled aiohttp session per worker, the body bytes forwarded unchanged, SSE written to
the client as it arrives. No auth, no parsing, no hooks, no error handling beyond what
the libraries do. The gateway's features should cost little above it.

    python -m bench.ceiling --server granian --port 9200 --upstream http://127.0.0.1:9100/v1

``--client pooled`` (Granian only) sends on the gateway's short path to the pool
(``gateway.providers.client``) instead of ``session.post``: the ceiling for what the
gateway's own features cost, now that its HTTP client does less than aiohttp's session.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream")]
FORWARDED = {"content-type": "application/json"}


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


class GranianForwarder:
    def __init__(self, upstream: str) -> None:
        self.url = URL(upstream.rstrip("/") + "/chat/completions")
        self.session: aiohttp.ClientSession | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        async def start() -> None:
            self.session = new_session()

        loop.run_until_complete(start())

    async def __rsgi__(self, scope, protocol) -> None:
        body = await protocol()
        async with self.session.post(self.url, data=body, headers=FORWARDED) as response:
            if response.content_type == "text/event-stream":
                transport = protocol.response_stream(response.status, SSE)
                async for chunk in response.content.iter_any():
                    await transport.send_bytes(chunk)
            else:
                protocol.response_bytes(response.status, JSON, await response.read())


class PooledForwarder(GranianForwarder):
    """The same forwarder on the gateway's short path to the session's pool."""

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from gateway.providers.client import PooledClient

        async def start() -> None:
            # No cookie jar: the short path serves only sessions that add nothing per request.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self.client = PooledClient(self.session)

        loop.run_until_complete(start())

    async def __rsgi__(self, scope, protocol) -> None:
        body = await protocol()
        response = await self.client.request("POST", self.url, body, POOLED_HEADERS, TIMEOUTS)
        try:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                transport = protocol.response_stream(response.status, SSE)
                async for chunk in response.content.iter_any():
                    await transport.send_bytes(chunk)
            else:
                protocol.response_bytes(response.status, JSON, await response.read())
        finally:
            response.release()


POOLED_HEADERS = list(FORWARDED.items())
TIMEOUTS = aiohttp.ClientTimeout(total=None)


def serve_granian(
    upstream: str, port: int, workers: int, backpressure: int, pooled: bool = False
) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    server = Granian(
        "ceiling",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        backlog=max(1024, backpressure),
        backpressure=backpressure,
        websockets=False,
    )
    forwarder = PooledForwarder if pooled else GranianForwarder
    server.serve(target_loader=lambda: forwarder(upstream), wrap_loader=False)


def serve_robyn(upstream: str, port: int, workers: int) -> None:
    from robyn import Headers, Robyn
    from robyn import Response as RobynResponse
    from robyn.argument_parser import Config
    from robyn.responses import StreamingResponse

    config = Config()
    config.processes, config.workers, config.disable_openapi, config.log_level = (
        workers,
        1,
        True,
        "WARNING",
    )
    app = Robyn(__file__, config=config)
    url = URL(upstream.rstrip("/") + "/chat/completions")
    state: dict[str, aiohttp.ClientSession] = {}

    async def start() -> None:
        state["session"] = new_session()

    async def forward(request):
        body = request.body.encode() if isinstance(request.body, str) else request.body
        response = await state["session"].post(url, data=body, headers=FORWARDED)
        if response.content_type == "text/event-stream":

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.content.iter_any():
                        yield chunk
                finally:
                    response.release()

            return StreamingResponse(
                chunks(), status_code=response.status, headers=Headers(dict(SSE))
            )
        data = await response.read()
        return RobynResponse(
            status_code=response.status, headers=Headers(dict(JSON)), description=data
        )

    app.startup_handler(start)
    app.add_route("POST", "/v1/chat/completions", forward)
    app.start(host="127.0.0.1", port=port, _check_port=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="bare forwarder: the benchmark's ceiling")
    parser.add_argument("--server", choices=("granian", "robyn"), default="granian")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backpressure", type=int, default=4096)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100/v1")
    parser.add_argument("--client", choices=("session", "pooled"), default="session")
    args = parser.parse_args()
    if args.server == "robyn":
        serve_robyn(args.upstream, args.port, args.workers)
    else:
        pooled = args.client == "pooled"
        serve_granian(args.upstream, args.port, args.workers, args.backpressure, pooled)


if __name__ == "__main__":
    main()
