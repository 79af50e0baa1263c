"""Requests to upstreams on the worker's pooled aiohttp session, by the shortest path.

``ClientSession.request`` does much per request that the gateway never uses: redirects,
cookies, auth, proxies, traces, middlewares, a request object with a dozen update steps
and, on Python 3.11, a task to write the body. When the session's pool holds an idle
keep-alive connection to the upstream, ``PooledClient`` takes it and does only what is
left: it writes the request head and body in one go, and reads the answer with the
connection's own parser — so it costs about a third of the session's path (see the
README's figures). The connection goes back to the pool when the body has been read, as
the session's would. Anything else — no idle connection yet, a header the session treats
specially, a value it would refuse — goes through ``session.request()`` unchanged, so
both paths send the same bytes and fail the same way.

A body is read through a leaner reader than aiohttp's (``BodyReader``; on the short path
``_QueuedReader``, fed by ``_LeanFeed``): the same object, the same bounds, without
aiohttp's per-HTTP-chunk bookkeeping — a stream of one-token events paid it per event
(``docs/benchmarks.md``, per chunk).

This reaches into aiohttp's connector, response protocol, parser and body reader, which
are not its public API: ``pyproject.toml`` pins the minor version, and the tests run
every provider over it.
"""

from __future__ import annotations

from itertools import repeat, starmap
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp.client_reqrep import ClientRequest, ClientResponse, ConnectionKey, RequestInfo
from aiohttp.helpers import set_exception
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import Connection
    from aiohttp.http_parser import RawResponseMessage
    from yarl import URL

    from ..wire.headers import HeaderList


class HTTPResponse(Protocol):
    """What the providers use of an answer: aiohttp's ``ClientResponse`` has it, and so
    does ``PooledResponse``."""

    status: int

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content(self) -> StreamReader: ...

    async def read(self) -> bytes: ...

    def release(self) -> object: ...

    def close(self) -> None: ...


# Headers the session treats specially (its own Host, Content-Length, framing, 100-continue):
# a request that carries one of them goes the session's way.
_SESSION_ONLY = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect"})
# Methods the session sends a Content-Type for even without one given (and Content-Length 0).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NO_LENGTH_METHODS = frozenset(ClientRequest.GET_METHODS)
# Methods the session tries once more on a new connection when a kept-alive one was closed.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods sent as given (the session upper-cases and checks any other).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DEFAULT_ACCEPT_ENCODING = ClientRequest.DEFAULT_HEADERS["Accept-Encoding"]
_SSL_SCHEMES = frozenset({"https", "wss"})
# What aiohttp's header writer refuses: the C0 controls but tab, and DEL.
_CONTROL_BYTES = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
_CONNECTION_CLOSED = aiohttp.ClientConnectionError("Connection closed")
# ConnectionKey's fields after (host, port, is_ssl, ssl): proxy, proxy_auth, proxy
# headers' hash, server_hostname. Another aiohttp's key: every request takes the
# session's path.
_NO_PROXY = (None, None, None, None)
_SHORT_PATH = ConnectionKey._fields == (
    "host",
    "port",
    "is_ssl",
    "ssl",
    "proxy",
    "proxy_auth",
    "proxy_headers_hash",
    "server_hostname",
)


class PooledClient:
    """One worker's requests, on its session's connection pool."""

    __slots__ = (
        "_auto_headers",
        "_connector",
        "_default_type",
        "_parser_settings",
        "_session",
        "_short",
    )

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        connector = session.connector
        assert connector is not None
        self._connector = connector
        # The session's own settings for reading an answer, as its request() passes them.
        self._parser_settings = {
            "read_until_eof": True,
            "auto_decompress": session.auto_decompress,
            "read_bufsize": session._read_bufsize,
            "timeout_ceil_threshold": connector._timeout_ceil_threshold,
            "max_line_size": session._max_line_size,
            "max_field_size": session._max_field_size,
            "max_headers": session._max_headers,
        }
        # The headers the session adds when a request has none of that name (less those
        # it was told to skip), in the order it writes them.
        skipped = {name.lower() for name in session.skip_auto_headers}
        self._auto_headers = tuple(
            (name.lower(), f"{name}: {value}")
            for name, value in (
                ("Accept", "*/*"),
                ("Accept-Encoding", _DEFAULT_ACCEPT_ENCODING),
                ("User-Agent", SERVER_SOFTWARE),
            )
            if name.lower() not in skipped
        )
        self._default_type = "content-type" not in skipped
        # Only a session that adds nothing else of its own per request (as the gateway's):
        # no default headers, auth, proxy, cookies, traces, middlewares, raising on
        # statuses; HTTP/1.1.
        self._short = (
            _SHORT_PATH
            and not session.headers
            and session.auth is None
            and not session.trust_env
            and session._default_proxy is None
            and isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
            and not session.trace_configs
            and not session._middlewares
            and session.raise_for_status is False
            and session._base_url is None
            and tuple(session.version) == (1, 1)
            and session._request_class is ClientRequest
            and session._response_class is ClientResponse
        )

    async def request(
        self,
        method: str,
        url: URL,
        body: bytes,
        headers: HeaderList,
        timeouts: aiohttp.ClientTimeout,
    ) -> HTTPResponse:
        """The answer's status and headers; its body is read from ``content``."""
        # (A total timeout is the session's to run: the gateway's deadlines are its own.)
        short = self._short and timeouts.total is None
        head = self._head(method, url, body, headers) if short else None
        if head is not None:
            # The key the session's request would file this connection under: no proxy,
            # the default TLS settings.
            key = tuple.__new__(
                ConnectionKey,
                (url.raw_host or "", url.port, url.scheme in _SSL_SCHEMES, True, *_NO_PROXY),
            )
            connection = await self._connector._get(key, [])
            if connection is not None:
                try:
                    return await self._exchange(
                        connection, method, url, head, body, timeouts.sock_read, headers
                    )
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                    if method not in _IDEMPOTENT:
                        raise
                    # As the session does: the kept-alive connection was closed; once
                    # more (the session's request may retry once more itself: such a
                    # request may be repeated).
        response = await self._session.request(
            method,
            url,
            data=body or None,
            headers=headers,
            allow_redirects=False,
            timeout=timeouts,
        )
        lean_body(response.content)
        return response

    def _head(self, method: str, url: URL, body: bytes, headers: HeaderList) -> bytes | None:
        """The request line and headers the session would write for this request, or
        None when the request is one to leave to the session."""
        if method not in _METHODS or url.raw_user is not None or url.raw_password is not None:
            return None  # a method to check, or credentials to turn into a header
        names = {name.lower() for name, _ in headers}
        if len(names) != len(headers) or not names.isdisjoint(_SESSION_ONLY):
            return None  # a name twice (the session merges spellings) or one it owns
        lines = [f"{name}: {value}" for name, value in headers]
        for name, line in self._auto_headers:
            if name not in names:
                lines.append(line)
        # Length before type, as the session writes them.
        if body or method not in _NO_LENGTH_METHODS:
            lines.append(f"Content-Length: {len(body)}")
        if self._default_type and "content-type" not in names and (body or method in _BODY_METHODS):
            lines.append("Content-Type: application/octet-stream")
        try:
            head = (
                f"{method} {url.raw_path_qs} HTTP/1.1\r\n"
                f"Host: {url.host_port_subcomponent}\r\n" + "\r\n".join(lines) + "\r\n\r\n"
            ).encode()
        except UnicodeEncodeError:
            return None
        # The session refuses control characters in a name or value (a line break would
        # let a hook's header start another): with any besides the lines' own CRLFs, it
        # decides.
        if len(head) - len(head.translate(None, _CONTROL_BYTES)) != 2 * (len(lines) + 3):
            return None
        return head

    async def _exchange(
        self,
        connection: Connection,
        method: str,
        url: URL,
        head: bytes,
        body: bytes,
        read_timeout: float | None,
        headers: HeaderList,
    ) -> PooledResponse:
        protocol = connection.protocol
        assert protocol is not None and protocol.transport is not None
        try:
            protocol.set_response_params(
                skip_payload=method == "HEAD",
                read_timeout=read_timeout,
                **self._parser_settings,
            )
            protocol._parser = _LeanFeed(protocol, protocol._parser)
            transport = protocol.transport
            if len(body) < 65536:
                transport.write(head + body)  # one write, one segment
            else:
                transport.write(head)
                transport.write(body)
            protocol.start_timeout()
            while True:
                try:
                    message, payload = await protocol.read()
                except HttpProcessingError as exc:
                    raise aiohttp.ClientResponseError(
                        RequestInfo(url, method, CIMultiDictProxy(CIMultiDict(headers)), url),
                        (),
                        status=exc.code,
                        message=exc.message,
                        headers=exc.headers,
                    ) from exc
                if message.code < 100 or message.code > 199 or message.code == 101:
                    break
        except BaseException:
            connection.close()
            raise
        return PooledResponse(connection, message, payload)


class PooledResponse:
    """An answer read on a pooled connection: the part of ``ClientResponse`` the
    providers use, with the same ending — the connection back to the pool when the body
    has been read, closed when it is let go unfinished."""

    __slots__ = ("_connection", "_released", "content", "headers", "status")

    def __init__(
        self, connection: Connection, message: RawResponseMessage, payload: StreamReader
    ) -> None:
        self._connection: Connection | None = connection
        self._released = False
        self.status = message.code
        self.headers = message.headers
        self.content = lean_body(payload)
        payload.on_eof(self._at_eof)

    def _at_eof(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            transport = connection.transport
            if transport is not None and transport.get_write_buffer_size():
                # Answered before the whole body went out (a 413, say): as the session
                # does, the connection is not reused.
                connection.close()
            else:
                connection.release()  # the pool closes it instead if it may not be reused

    async def read(self) -> bytes:
        try:
            return await self.content.read()
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        self._stop_readers()
        self._at_eof()

    def close(self) -> None:
        self._stop_readers()
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.close()

    def _stop_readers(self) -> None:
        # As ClientResponse does: whoever still waits on the body learns it is gone.
        if not self._released:
            self._released = True
            if self.content.exception() is None:
                set_exception(self.content, _CONNECTION_CLOSED)


# Pieces a body reader holds at most before the connection stops reading (as aiohttp's own
# reader does with its default buffer size): a body of tiny chunks stays bounded too.
_MAX_PIECES = 4096


class BodyReader(StreamReader):
    """aiohttp's ``StreamReader`` with less to do per HTTP chunk and per read.

    aiohttp's parser hands each HTTP chunk of a body to its reader in three calls (its
    start, its bytes, its end), and the reader keeps the chunk boundaries for
    ``readchunk()``; each piece taken out of it then calls ``resume_reading()``, which
    runs the connection's parser again on no data. A stream of small events (one token
    each, one HTTP chunk each) pays all that per event. This reader keeps only the bytes:
    the chunk marks cost a builtin call and keep nothing, ``readany()`` takes everything
    that has arrived as one piece, and reading resumes only where it was paused. What it
    keeps bounded is the same: past the high-water mark in bytes or pieces, the
    connection stops reading until the body is read.

    ``lean_body`` turns the parser's reader of an answer into one (the same object, so
    the parser, the connection and the response see no difference).
    """

    __slots__ = ()

    # The HTTP chunk marks: no argument, no effect, no Python frame.
    begin_http_chunk_receiving = end_http_chunk_receiving = staticmethod(tuple)

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        """A piece of the body from the parser (its size given), or a decompressor (not)."""
        buffer = self._buffer
        buffer.append(data)
        self._size += size or len(data)
        self._arrived()
        return False

    def _arrived(self) -> None:
        """Something is in: wake the reader; past the marks, stop reading until it reads."""
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result(None)
        if self._size > self._high_water or len(self._buffer) > _MAX_PIECES:
            self._protocol.pause_reading()

    async def readany(self) -> bytes:
        """Everything that has arrived, as one piece; waits when nothing has."""
        if self._exception is not None:
            raise self._exception
        while not self._buffer and not self._eof:
            await self._wait("readany")
        return self._take()

    def _take(self) -> bytes:
        buffer = self._buffer
        if self._buffer_offset or not buffer:  # part of one was read by read(n): its way
            return self._read_nowait(-1)
        self._timer.assert_timeout()
        data = buffer.popleft() if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self._size = 0
        self._cursor += len(data)
        if self._protocol._reading_paused:
            self._protocol.resume_reading()  # also parses what a pause left unparsed
        return data


class _QueuedReader(BodyReader):
    """The body reader of an answer on the short path, fed through ``_LeanFeed``.

    Even ``BodyReader.feed_data`` is a Python call per HTTP chunk. This one's is not: the
    parser's ``feed_data(piece, size)`` is the ``put`` of a ``SimpleQueue`` (C; the size
    lands on its ignored ``block``). The bound ``put`` is kept in the one slot of
    aiohttp's reader that this reader has no use for (the chunk-count mark, which only
    ``readchunk()`` needs), and ``feed_data`` *is* that slot's descriptor: the parser's
    lookup returns it as it is. After each read ``_LeanFeed`` calls ``arrived()``, which
    moves what the read brought into the reader as one piece: from then on it is a
    plain ``BodyReader``.
    """

    __slots__ = ()

    feed_data = StreamReader._high_water_chunks  # type: ignore[assignment]

    def enqueue_pieces(self) -> None:
        """From now on, the parser's pieces go to a queue of this reader's own."""
        self.__class__ = _QueuedReader
        self._high_water_chunks = SimpleQueue().put  # type: ignore[assignment]

    def arrived(self) -> None:
        queue: SimpleQueue[bytes] = self._high_water_chunks.__self__  # type: ignore[attr-defined]
        count = queue.qsize()
        if not count:
            return
        # count calls of get_nowait() in C: no Python step per piece.
        data = b"".join(starmap(queue.get_nowait, repeat((), count)))
        self._buffer.append(data)
        self._size += len(data)
        self._arrived()


class _LeanFeed:
    """A pooled connection's parser, as the short path's protocol sees it.

    Until an answer's head is in, a read that holds the end of a head and more is parsed
    in two steps: the head (the answer's reader is made, and made a ``_QueuedReader``),
    then the rest — else the parser would hand a whole first read of body to aiohttp's
    own reader, piece by piece. (Any split of the bytes is the same to the parser: a
    wrong guess only costs the speed-up.) Then each read is parsed and its pieces moved
    into the reader at once. The protocol's ``pause_reading()`` comes after a whole read
    has been parsed: the parser has nothing to stop, only the socket does. The next
    exchange on the connection gives the protocol a new parser.
    """

    __slots__ = ("_parser", "_protocol", "_reader")

    def __init__(self, protocol: ResponseHandler, parser: Any) -> None:
        self._protocol = protocol
        self._parser = parser
        self._reader: _QueuedReader | None = None

    def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
        reader = self._reader
        if reader is None:
            return self._head(data)
        try:
            return self._parser.feed_data(data)
        finally:
            reader.arrived()

    def pause_reading(self) -> None:
        if self._reader is None:
            self._parser.pause_reading()

    def feed_eof(self) -> Any:
        return self._parser.feed_eof()

    def _head(self, data: bytes) -> tuple[Any, bool, bytes]:
        parser = self._parser
        end = data.find(b"\r\n\r\n") + 4
        head = data[:end] if 3 < end < len(data) else data
        # (A body in one piece, not chunked, gains nothing from a split and its copy.)
        split = head is not data and head.find(b"chunked") != -1
        messages, upgraded, tail = parser.feed_data(head if split else data)
        if messages:
            message, payload = messages[-1]
            # (A body in one piece is one call per read anyway: the plain lean reader.)
            plain = type(payload) is StreamReader and message.compression is None
            if plain and message.chunked:
                _QueuedReader.enqueue_pieces(payload)  # type: ignore[arg-type]
                self._reader = payload  # type: ignore[assignment]
            else:
                self._protocol._parser = parser  # nothing more to do for this answer
        if not split:
            return messages, upgraded, tail
        if upgraded:
            return messages, upgraded, tail + data[end:]
        rest = data[end:]
        feed = parser.feed_data if self._protocol._parser is parser else self.feed_data
        more, upgraded, tail = feed(rest)
        return [*messages, *more] if messages else more, upgraded, tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)  # the rest of the parser's interface, as it is


def lean_body(content: StreamReader) -> StreamReader:
    """The body reader of an answer as a ``BodyReader`` (aiohttp's plain reader only: a
    decompressing one, or the empty body, stays as it is)."""
    if type(content) is StreamReader:
        content.__class__ = BodyReader
    return content
