"""What passes between a server adapter and the core: requests and responses as bytes.

Adapters build a ``Request`` from their server's request and send back the ``Response``
or ``StreamingResponse`` the core returns. Nothing here knows which server is in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from ..core.errors import GatewayError, UpstreamStatusError
from .headers import HeaderList, Headers, header_value
from .payload import JSONMessage
from .sse import aclose


class Request:
    """An incoming request as the server received it; nothing parsed yet.

    ``headers`` has lower-case names (HTTP servers normalise them so); ``client`` is
    the peer's address, when the server tells it.
    """

    __slots__ = ("body", "client", "headers", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        body: bytes,
        client: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


class Response(JSONMessage):
    """A complete response. Hooks may edit ``status``, ``headers``, ``body`` or ``json``.

    ``headers`` is this response's own list: the gateway adds to it (``x-request-id``).
    """

    __slots__ = ("headers", "status")

    def __init__(
        self,
        status: int,
        headers: HeaderList,
        body: bytes,
        json_type: type[msgspec.Struct] | None = None,
    ) -> None:
        self._body = body  # JSONMessage's state, set here: this runs for every response
        self._json = None
        self.json_type = json_type
        self.status = status
        self.headers = headers

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        return header_value(self.headers, name)

    def copy(self) -> Response:
        """A response of its own, for each request a hook answers from a shared one."""
        return Response(self.status, list(self.headers), self.body, self.json_type)

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


class StreamingResponse:
    """A response whose body is written to the client chunk by chunk, as it arrives.

    An adapter either writes what ``iterate()`` yields, in order, then calls
    ``aclose()`` — also when the client left mid-way, so that the upstream is let go
    at once — or hands its write function to ``send_to()``, which does both.
    """

    __slots__ = ("_pump", "chunks", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: HeaderList,
        chunks: AsyncIterator[bytes],
        pump: Callable[[Callable[[bytes], Awaitable[object]]], Awaitable[None]] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.chunks = chunks
        self._pump = pump  # the same stream, written by push (fewer steps per chunk)

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        return header_value(self.headers, name)

    def iterate(self) -> AsyncIterator[bytes]:
        """Every chunk as it arrives — for servers that pull from an iterator."""
        return self.chunks

    async def send_to(self, send: Callable[[bytes], Awaitable[object]]) -> None:
        """Write every chunk with ``send`` as it arrives; let go of the stream at the end,
        also when ``send`` fails (the client left)."""
        if self._pump is not None:
            await self._pump(send)
            return
        try:
            async for chunk in self.chunks:
                await send(chunk)
        finally:
            await aclose(self.chunks)

    async def aclose(self) -> None:
        """Let go of the stream and its upstream; more calls do nothing."""
        await aclose(self.chunks)

    def __repr__(self) -> str:
        return f"<StreamingResponse {self.status}>"


JSON_HEADERS: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


def json_response(status: int, body: bytes, headers: HeaderList | None = None) -> Response:
    """A JSON response with a header list of its own."""
    return Response(status, [*JSON_HEADERS, *headers] if headers else list(JSON_HEADERS), body)


def error_response(error: GatewayError) -> Response:
    """The response for an error: OpenAI error JSON, or the upstream's own error as sent."""
    if isinstance(error, UpstreamStatusError):
        return Response(error.status, list(error.headers), error.body())
    return json_response(error.status, error.body(), error.headers)
