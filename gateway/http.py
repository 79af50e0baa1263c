"""What passes between a server adapter and the core: requests and responses as bytes.

Adapters build a ``Request`` from their server's request and send back the ``Response``
or ``StreamingResponse`` the core returns. Nothing here knows which server is in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableSet
from typing import TYPE_CHECKING, Protocol

import msgspec

from .errors import GatewayError, UpstreamStatusError, UpstreamTimeoutError
from .payload import JSONMessage
from .sse import aclose

if TYPE_CHECKING:
    from .timers import Timers

HeaderList = list[tuple[str, str]]


class Headers(Protocol):
    """The little the core needs of a server's header object (lower-case names)."""

    def get(self, key: str, default: str | None = None) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


class Request:
    """An incoming request as the server received it; nothing parsed yet.

    ``headers`` has lower-case names (HTTP servers normalise them so).
    """

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: Headers, body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


class Response(JSONMessage):
    """A complete response. Hooks may edit ``status``, ``headers``, ``body`` or ``json``."""

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

    An adapter writes what ``iterate()`` yields, in order. When the stream breaks — the
    upstream fails, a hook fails, the upstream falls silent for ``idle`` seconds, or
    ``abort(error)`` is called (at shutdown) — ``iterate()`` yields the gateway's last
    words for the client (an SSE error event) and stops. However it ends, the upstream
    is let go and ``on_close`` runs.
    """

    __slots__ = (
        "__weakref__",
        "_aborted",
        "_close_upstream",
        "_idle",
        "_on_close",
        "_on_error",
        "_released",
        "_running",
        "_timers",
        "chunks",
        "headers",
        "last_chunk_at",
        "status",
    )

    def __init__(
        self,
        status: int,
        headers: HeaderList,
        chunks: AsyncIterator[bytes],
        on_error: Callable[[Exception], Awaitable[bytes | None]] | None = None,
        *,
        close_upstream: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
        timers: Timers | None = None,
        idle: float | None = None,
        running: MutableSet[StreamingResponse] | None = None,
    ) -> None:
        self._released = False
        self.status = status
        self.headers = headers
        self.chunks = chunks
        self._on_error = on_error
        self._close_upstream = close_upstream
        self._on_close = on_close
        self._timers = timers
        self._idle = idle if timers is not None else None
        self._aborted: GatewayError | None = None
        # Where a stream is known from now until it ends (for shutdown): an adapter may
        # start pulling it only after the core has returned it (Robyn does, from a thread).
        self._running = running
        if running is not None:
            running.add(self)
        self.last_chunk_at = 0.0

    async def fail(self, error: Exception) -> bytes | None:
        return None if self._on_error is None else await self._on_error(error)

    def abort(self, error: GatewayError) -> None:
        """End the stream now: drop the upstream; the client gets ``error`` as last words."""
        self._aborted = error
        if self._close_upstream is not None:
            self._close_upstream()

    def _check_idle(self) -> None:
        timers, idle = self._timers, self._idle
        assert timers is not None and idle is not None
        silent = timers.clock() - self.last_chunk_at
        if silent < idle:
            timers.add(self, idle - silent, self._check_idle)
        else:
            self.abort(UpstreamTimeoutError(f"The upstream sent nothing for {idle:g} s."))

    def _release(self) -> None:
        """Leave the gateway's accounting: timers, the running set, the deployment."""
        if self._released:
            return
        self._released = True
        if self._timers is not None:
            self._timers.remove(self)
        if self._running is not None:
            self._running.discard(self)
        if self._on_close is not None:
            self._on_close()

    async def aclose(self) -> None:
        """Let go of the stream and its upstream; ``iterate()`` does it as it ends, and
        more calls do nothing."""
        self._release()
        await aclose(self.chunks)

    def __del__(self) -> None:
        # Dropped without ever being pulled (Robyn may drop a stream whose client left
        # before it started): no iterate() ran to let go, so do it here, synchronously.
        if not self._released:
            self._release()
            if self._close_upstream is not None:
                self._close_upstream()

    async def iterate(self) -> AsyncIterator[bytes]:
        """Every chunk as it arrives — for servers that pull from an iterator."""
        next_chunk = self.chunks.__anext__
        timers = self._timers
        clock = timers.clock if self._idle is not None else None  # type: ignore[union-attr]
        if clock is not None:
            self.last_chunk_at = clock()
            timers.add(self, self._idle, self._check_idle)  # type: ignore[union-attr, arg-type]
        try:
            while True:
                try:
                    chunk = await next_chunk()
                except StopAsyncIteration:
                    return
                except Exception as error:
                    # The stream broke upstream or in a hook (errors in writing to the
                    # client surface in the adapter, not here): send the last words.
                    if tail := await self.fail(self._aborted or error):
                        yield tail
                    return
                if clock is not None:
                    self.last_chunk_at = clock()
                yield chunk
        finally:
            await self.aclose()

    def __repr__(self) -> str:
        return f"<StreamingResponse {self.status}>"


def header_value(headers: HeaderList, name: str) -> str | None:
    """The first value of a header in a header list, by case-insensitive name."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


JSON_HEADERS: HeaderList = [("content-type", "application/json")]


def json_response(status: int, body: bytes, headers: HeaderList | None = None) -> Response:
    return Response(status, JSON_HEADERS + headers if headers else list(JSON_HEADERS), body)


# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those the
# server or the HTTP client computes again for the next hop.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# Never forwarded upstream: the client's credentials (the provider sets its own), the
# client's account headers that would not match the provider's key, cookies, and the
# encodings (the gateway asks for identity so it can read what it forwards).
REQUEST_HEADERS_DROPPED = _HOP_BY_HOP | {
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "accept-encoding",
}

# Never passed back to the client: the upstream's cookies, and what the gateway's own
# server writes itself (a second Date or Server header would be a duplicate).
RESPONSE_HEADERS_DROPPED = _HOP_BY_HOP | {"content-encoding", "set-cookie", "date", "server"}


def forwardable_headers(headers: Headers) -> HeaderList:
    """The client's headers that may go upstream. Names are lower-case, as servers give them."""
    kept = []
    connection = None
    for name, value in headers.items():
        if name not in REQUEST_HEADERS_DROPPED:
            kept.append((name, value))
        elif name == "connection":
            connection = value
    if connection is None:
        return kept
    return _without_connection_named(kept, connection)


def passable_headers(items: Iterable[tuple[str, str]]) -> HeaderList:
    """An upstream's response headers that may go to the client (names in any case)."""
    kept = []
    connection = None
    for key, value in items:
        name = key.lower()
        if name not in RESPONSE_HEADERS_DROPPED:
            kept.append((key, value))
        elif name == "connection":
            connection = value
    if connection is None:
        return kept
    return _without_connection_named(kept, connection)


def _without_connection_named(headers: HeaderList, connection: str) -> HeaderList:
    """Headers named in ``Connection`` belong to that hop only (RFC 9110 §7.6.1)."""
    named = {token.strip().lower() for token in connection.split(",")} - {"keep-alive", "close"}
    return [(k, v) for k, v in headers if k.lower() not in named] if named else headers


def error_response(error: GatewayError) -> Response:
    """The response for an error: OpenAI error JSON, or the upstream's own error as sent."""
    if isinstance(error, UpstreamStatusError):
        return Response(error.status, list(error.headers), error.body())
    return json_response(error.status, error.body(), error.headers)
