"""The floor: the least anything on Granian and asyncio can spend forwarding a request.

Not a product, a limit to measure against (``ceiling-raw`` in ``make bench-cost``): Granian
RSGI in front; behind it an ``asyncio.Protocol`` upstream client with httptools' parser
and a plain list of idle kept-alive connections. No pool manager, no TLS, no timeouts, no
error handling beyond dropping a broken connection. The request body is written upstream
as it came with a fixed head; a plain answer is sent whole; a stream is forwarded read
by read — what one ``data_received`` brought (its HTTP chunks' payloads) goes to the
client as one write. Reading pauses while the client has not taken the last write, so a
slow client holds back the upstream instead of filling memory (``HIGH_WATER`` bytes taken
and not yet sent, at most, besides the sockets' buffers).

    python -m bench.ceiling_raw --port 9200 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httptools
from yarl import URL

JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream")]
HIGH_WATER = 1 << 16  # bytes read and not yet sent, past which reading pauses


class Upstream(asyncio.Protocol):
    """One kept-alive upstream connection: the parser's callbacks collect an answer."""

    def __init__(self, idle: list[Upstream]) -> None:
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.pieces: list[bytes] = []
        self.on_body = self.pieces.append  # the parser's body callback: no Python frame
        self.waiter: asyncio.Future[None] | None = None
        self.streamed = False
        self.headers_done = False
        self.done = False
        self.broken = False
        self.paused = False
        self.parser = httptools.HttpResponseParser(self)  # it takes the callbacks set above

    # ---- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.broken = True
            self.transport.close()  # type: ignore[union-attr]
        if not self.paused and sum(map(len, self.pieces)) > HIGH_WATER:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self._wake()

    # ---- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
            self.streamed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.done = True

    # ---- the forwarder's side
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until the next read arrives (or the connection breaks)."""
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def start(self, request: bytes) -> None:
        self.streamed = self.headers_done = self.done = False
        self.transport.write(request)  # type: ignore[union-attr]

    def take(self) -> bytes:
        """What the reads since the last take brought, as one piece."""
        pieces = self.pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def finish(self) -> None:
        """The answer is whole: the connection waits for the next request."""
        if not self.broken and self.parser.should_keep_alive():
            self.idle.append(self)
        else:
            self.transport.close()  # type: ignore[union-attr]


class RawForwarder:
    def __init__(self, upstream: str) -> None:
        url = URL(upstream.rstrip("/") + "/chat/completions")
        self.host, self.port = url.host or "127.0.0.1", url.port or 80
        self.head = (
            f"POST {url.raw_path} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
            "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"
            "Content-Length: "
        ).encode()
        self.idle: list[Upstream] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def connection(self) -> Upstream:
        if self.idle:
            return self.idle.pop()
        _, protocol = await asyncio.get_running_loop().create_connection(
            lambda: Upstream(self.idle), self.host, self.port
        )
        return protocol

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        body = await protocol()
        upstream = await self.connection()
        upstream.start(self.head + b"%d\r\n\r\n" % len(body) + body)
        try:
            while not upstream.headers_done and not upstream.broken:
                await upstream.wait()
            status = upstream.parser.get_status_code()
            if upstream.streamed:
                await self.stream(upstream, protocol.response_stream(status, SSE))
            else:
                while not upstream.done and not upstream.broken:
                    await upstream.wait()
                protocol.response_bytes(status, JSON, upstream.take())
        finally:
            if upstream.done:
                upstream.finish()
            else:
                upstream.transport.close()  # type: ignore[union-attr]  # unfinished

    async def stream(self, upstream: Upstream, transport: Any) -> None:
        """Each read as one write, the next read taken once the client took the last."""
        while True:
            if upstream.pieces:
                await transport.send_bytes(upstream.take())
            elif upstream.done or upstream.broken:
                return
            else:
                await upstream.wait()


def serve(upstream: str, port: int, workers: int, backpressure: int) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    server = Granian(
        "ceiling_raw",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        backlog=max(1024, backpressure),
        backpressure=backpressure,
        websockets=False,
    )
    server.serve(target_loader=lambda: RawForwarder(upstream), wrap_loader=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="the floor: Granian + a raw upstream client")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backpressure", type=int, default=4096)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100/v1")
    args = parser.parse_args()
    serve(args.upstream, args.port, args.workers, args.backpressure)


if __name__ == "__main__":
    main()
