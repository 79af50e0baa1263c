"""The short path to upstreams (gateway/providers/client.py) against a raw HTTP server on
127.0.0.1 that records every request's bytes: it sends what aiohttp's session sends, it
ends a connection as the session would, and whatever it does not handle goes the
session's way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.client_reqrep import ClientResponse
from yarl import URL

from gateway.providers.client import PooledClient, PooledResponse

BODY = b'{"model":"m","messages":[]}'
ANSWER = b'{"ok":true}'
TIMEOUTS = aiohttp.ClientTimeout(total=None, sock_connect=5)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n" + ANSWER
# An answer that promises more body than it sends: it stays unfinished.
UNFINISHED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Content-Length: 100000\r\n\r\ndata: 1\n\n"
)


class RawServer:
    """Keep-alive HTTP/1.1: answers every request with ``answer`` and records its request
    line, header lines (in order) and body. ``drop_after`` reads the request after that
    many answers on a connection, then closes it without answering (a kept-alive
    connection the server gave up on)."""

    def __init__(
        self, answer: bytes | None = None, drop_after: int = 0, answer_first: bool = False
    ) -> None:
        self.answer = answer or OK
        self.drop_after = drop_after
        self.answer_first = answer_first  # answer once the head is in, then read the body
        self.requests: list[tuple[bytes, list[bytes], bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head[:-4].split(b"\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in lines
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if self.answer_first and answered:
                    writer.write(self.answer)
                body = await reader.readexactly(length)
                self.requests.append((request_line, lines, body))
                if self.drop_after and answered >= self.drop_after:
                    break
                if not (self.answer_first and answered):
                    writer.write(self.answer)
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # The gateway's own session settings (gateway/core/app.py).
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )
    yield session
    await session.close()


async def _send(client: PooledClient, url: URL, method: str = "POST", **kw) -> tuple[object, bytes]:
    headers = kw.pop("headers", [("content-type", "application/json"), ("x-custom", "1")])
    response = await client.request(method, url, kw.pop("body", BODY), headers, TIMEOUTS)
    body = await response.read()
    response.release()
    return response, body


@pytest.fixture
async def plain_session() -> AsyncIterator[aiohttp.ClientSession]:
    # aiohttp's defaults (User-Agent and all), but no cookies: the short path's minimum.
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    yield session
    await session.close()


@pytest.mark.parametrize("kind", ["gateway", "plain"])
async def test_a_request_on_a_kept_alive_connection_sends_the_bytes_the_session_sends(
    kind, session, plain_session
):
    session = session if kind == "gateway" else plain_session
    server = RawServer()
    url = URL(await server.start() + "/v1/chat/completions?x=1")
    client = PooledClient(session)
    cases = [
        ("POST", BODY, [("content-type", "application/json"), ("accept-encoding", "identity")]),
        ("POST", BODY, [("X-Mixed-Case", "v"), ("authorization", "Bearer sk-up")]),  # no type
        ("POST", b"", []),  # no body: Content-Length 0 and a type, as the session sends
        ("GET", b"", [("accept", "application/json")]),  # no body, no length
        ("DELETE", b"", []),
        ("POST", BODY, [("x-unicode", "caf\u00e9"), ("x-tab", "a\tb")]),
        ("PUT", BODY, [("User-Agent", "gw"), ("Accept-Encoding", "br")]),  # theirs replaced
    ]
    try:
        for method, body, headers in cases:
            first, _ = await _send(client, url, method, body=body, headers=headers)  # opens
            second, answer = await _send(client, url, method, body=body, headers=headers)
            assert isinstance(first, ClientResponse) or server.connections == 1
            assert isinstance(second, PooledResponse)
            assert answer == ANSWER and second.status == 200
            assert server.requests[-1] == server.requests[-2], (method, headers)
        assert server.connections == 1  # every request after the first on the same one
    finally:
        await server.stop()


async def test_the_connection_goes_back_to_the_pool_when_read_and_is_closed_when_let_go_early(
    session,
):
    events = b"".join(b"data: %d\n\n" % i for i in range(50))
    server = RawServer(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % len(events) + events
    )
    url = URL(await server.start() + "/v1/chat/completions")
    client = PooledClient(session)
    try:
        await _send(client, url)  # the session's path opens the connection
        response = await client.request("POST", url, BODY, [], TIMEOUTS)
        assert isinstance(response, PooledResponse)
        assert await response.content.read() == events
        response.release()
        # Read to its end: back in the pool, and the next request takes it.
        assert isinstance(await client.request("POST", url, BODY, [], TIMEOUTS), PooledResponse)
        assert server.connections == 1
    finally:
        await server.stop()


async def test_an_unfinished_answer_let_go_closes_its_connection(session):
    server = RawServer(UNFINISHED)
    url = URL(await server.start() + "/v1/chat/completions")
    client = PooledClient(session)
    try:
        first = await client.request("POST", url, BODY, [], TIMEOUTS)  # the session's path
        first.close()
        assert server.connections == 1
        # That connection was closed, so this one is new: the session's path again.
        second = await client.request("POST", url, BODY, [], TIMEOUTS)
        assert isinstance(second, ClientResponse)
        second.close()
        assert server.connections == 2
    finally:
        await server.stop()


async def test_a_pooled_answer_released_unread_fails_its_reader_and_is_not_reused(session):
    server = RawServer(UNFINISHED)
    url = URL(await server.start() + "/v1/chat/completions")
    client = PooledClient(session)
    try:
        # A whole first answer puts the connection in the pool; then the long one.
        server.answer = OK
        await _send(client, url)
        server.answer = UNFINISHED
        response = await client.request("POST", url, BODY, [], TIMEOUTS)
        assert isinstance(response, PooledResponse)
        assert await response.content.readany() == b"data: 1\n\n"
        response.release()
        with pytest.raises(aiohttp.ClientConnectionError):
            await response.content.readany()
        server.answer = OK
        response, body = await _send(client, url)
        assert isinstance(response, ClientResponse) and body == ANSWER
        assert server.connections == 2
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/v1/x", [("host", "127.0.0.1")]),
        ("POST", "/v1/x", [("Content-Length", "5")]),
        ("POST", "/v1/x", [("connection", "keep-alive")]),
        # One name in two spellings: the session keeps the last value only.
        ("POST", "/v1/x", [("user-agent", "openai-python"), ("User-Agent", "gw")]),
        ("post", "/v1/x", []),  # the session upper-cases it
        ("POST", "user:secret@", []),  # credentials in the URL: the session's Basic auth
    ],
)
async def test_what_the_session_treats_specially_takes_the_sessions_path(
    session, method, path, headers
):
    server = RawServer()
    base = await server.start()
    url = URL(base.replace("//", "//" + path) + "/v1/x" if path.endswith("@") else base + path)
    client = PooledClient(session)
    try:
        await _send(client, url)
        response, body = await _send(client, url, method, body=b"12345", headers=headers)
        assert isinstance(response, ClientResponse) and body == ANSWER
        assert server.connections == 1  # it still took the pool's connection
        if path.endswith("@"):
            assert b"Authorization: Basic dXNlcjpzZWNyZXQ=" in server.requests[-1][1]
        if len(headers) == 2:
            assert [line for line in server.requests[-1][1] if b"gw" in line] == [b"User-Agent: gw"]
    finally:
        await server.stop()


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
async def test_a_header_value_with_a_line_break_is_refused_as_the_session_refuses_it(
    session, value
):
    server = RawServer()
    url = URL(await server.start() + "/v1/x")
    client = PooledClient(session)
    try:
        await _send(client, url)
        with pytest.raises(ValueError, match="Forbidden control character"):
            await client.request("POST", url, BODY, [("x-hook", value)], TIMEOUTS)
        assert all(b"x-injected" not in b"".join(lines) for _, lines, _ in server.requests)
    finally:
        await server.stop()


async def test_a_body_larger_than_one_write_arrives_whole(session):
    server = RawServer()
    url = URL(await server.start() + "/v1/x")
    client = PooledClient(session)
    big = b"x" * 300_000
    try:
        await _send(client, url)
        response, _ = await _send(client, url, body=big)
        assert isinstance(response, PooledResponse)
        assert server.requests[-1][2] == big
    finally:
        await server.stop()


async def test_a_kept_alive_connection_the_server_dropped_is_retried_for_a_get(session):
    server = RawServer(drop_after=1)
    url = URL(await server.start() + "/v1/models")
    client = PooledClient(session)
    try:
        await _send(client, url, "GET", body=b"")
        # Sent on the kept-alive connection, dropped; tried once more on a new one, as
        # the session does for a request that may be repeated.
        response, body = await _send(client, url, "GET", body=b"")
        assert isinstance(response, ClientResponse) and body == ANSWER
        assert server.connections == 2 and len(server.requests) == 3
    finally:
        await server.stop()


async def test_a_post_on_a_connection_the_server_dropped_fails_as_from_the_session(session):
    server = RawServer(drop_after=1)
    url = URL(await server.start() + "/v1/x")
    client = PooledClient(session)
    try:
        await _send(client, url)
        # Not repeated: the upstream may have acted on it. The gateway's retry policy
        # decides, as it did with the session's error.
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.request("POST", url, BODY, [], TIMEOUTS)
        assert server.connections == 1 and len(server.requests) == 2
        _, body = await _send(client, url)  # the next request opens a new connection
        assert body == ANSWER
    finally:
        await server.stop()


async def test_an_answer_that_is_not_http_is_the_sessions_error(session):
    server = RawServer()
    url = URL(await server.start() + "/v1/x")
    client = PooledClient(session)
    try:
        await _send(client, url)
        server.answer = b"NOT HTTP AT ALL\r\n\r\n"
        with pytest.raises(aiohttp.ClientResponseError):
            await client.request("POST", url, BODY, [], TIMEOUTS)
        server.answer = OK
        _, body = await _send(client, url)  # and the next request is served
        assert body == ANSWER
    finally:
        await server.stop()


async def test_a_head_request_reads_no_body(session):
    server = RawServer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    )
    url = URL(await server.start() + "/v1/x")
    client = PooledClient(session)
    try:
        await _send(client, url, "HEAD", body=b"")
        response, body = await _send(client, url, "HEAD", body=b"")
        assert isinstance(response, PooledResponse) and body == b""
        _, body = await _send(client, url, "HEAD", body=b"")  # the connection is still good
        assert server.connections == 1
    finally:
        await server.stop()


async def test_a_session_with_cookies_or_default_headers_never_takes_the_short_path():
    server = RawServer()
    url = URL(await server.start() + "/v1/x")
    sessions = [
        aiohttp.ClientSession(),  # a cookie jar
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers={"x-all": "1"}),
    ]
    try:
        for session in sessions:
            client = PooledClient(session)
            await _send(client, url)
            response, _ = await _send(client, url)
            assert isinstance(response, ClientResponse)
    finally:
        for session in sessions:
            await session.close()
        await server.stop()


async def test_a_connection_answered_before_its_body_went_out_is_not_reused(session):
    server = RawServer(answer_first=True)
    url = URL(await server.start() + "/v1/x")
    client = PooledClient(session)
    try:
        await _send(client, url)
        # Answered (413) as soon as the head arrived, while most of the body is still in
        # the client's send buffer: the connection cannot carry another request.
        response, _ = await _send(client, url, body=b"x" * 32_000_000)
        assert isinstance(response, PooledResponse)
        response, body = await _send(client, url)
        assert isinstance(response, ClientResponse) and body == ANSWER
        assert server.connections == 2
    finally:
        await server.stop()
