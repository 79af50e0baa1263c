"""What every provider with an HTTP API shares: the worker's pooled session (and the short
path on its pool), one timeout object per connect timeout, and requests whose failures
are the gateway's errors."""

from __future__ import annotations

import aiohttp
from yarl import URL

from ..core.errors import UpstreamProtocolError, UpstreamUnavailableError
from ..wire.headers import HeaderList
from .base import Provider
from .client import HTTPResponse, PooledClient

# What a client is told when its upstream's answer breaks off: in the gateway's words,
# not the HTTP client's (its words name its internals; they stay in the exception chain).
BROKE_OFF = "The upstream's stream broke off before it was complete."
ANSWER_BROKE_OFF = "The upstream's answer broke off before it was complete."


class HTTPProvider(Provider):
    """Base of the HTTP providers (``start`` gives it the worker's session)."""

    _client: PooledClient | None = None

    def __init__(self) -> None:
        self._client = None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._client = PooledClient(session)

    async def stop(self) -> None:
        self._client = None

    def timeout(self, connect: float | None) -> aiohttp.ClientTimeout:
        """The deadlines are the gateway's own; only connecting is bounded here."""
        timeout = self._timeouts.get(connect)
        if timeout is None:
            timeout = self._timeouts[connect] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect
            )
        return timeout

    async def request(
        self,
        method: str,
        url: URL,
        body: bytes,
        headers: HeaderList,
        connect_timeout: float | None,
    ) -> HTTPResponse:
        """One request on the pooled session; failing to connect or to get an answer is
        ``UpstreamUnavailableError`` or ``UpstreamProtocolError``."""
        client = self._client
        if client is None:
            raise RuntimeError(f"provider {self.name!r} used before the gateway started")
        try:
            return await client.request(method, url, body, headers, self.timeout(connect_timeout))
        except aiohttp.ClientConnectorError as exc:
            raise unavailable(self.name, exc) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream '{self.name}' failed: {exc}") from exc


def unavailable(name: str, exc: aiohttp.ClientConnectorError) -> UpstreamUnavailableError:
    """The client is told why, not where (the upstream's address stays in the log)."""
    reason = exc.os_error.strerror or type(exc.os_error).__name__
    return UpstreamUnavailableError(f"upstream '{name}' is unreachable ({reason.lower()})")


def let_go(response: HTTPResponse) -> None:
    """The end of a streamed response: a finished one's connection goes back to the
    pool; an unfinished one's is closed, which is how the upstream learns that nobody is
    listening any more."""
    if response.content.is_eof():
        response.release()
    else:
        response.close()
