"""What every provider with an HTTP API shares: the worker's pooled session, one timeout
object per connect timeout, and requests whose failures are the gateway's errors."""

from __future__ import annotations

import aiohttp
from yarl import URL

from ..errors import UpstreamProtocolError, UpstreamUnavailableError
from ..headers import HeaderList
from . import Provider


class HTTPProvider(Provider):
    """Base of the HTTP providers (``start`` gives it the worker's session)."""

    _session: aiohttp.ClientSession | None = None

    def __init__(self) -> None:
        self._session = None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def stop(self) -> None:
        self._session = None

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
    ) -> aiohttp.ClientResponse:
        """One request on the pooled session; failing to connect or to get an answer is
        ``UpstreamUnavailableError`` or ``UpstreamProtocolError``."""
        session = self._session
        if session is None:
            raise RuntimeError(f"provider {self.name!r} used before the gateway started")
        try:
            return await session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=self.timeout(connect_timeout),
            )
        except aiohttp.ClientConnectorError as exc:
            raise unavailable(self.name, exc) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream '{self.name}' failed: {exc}") from exc


def unavailable(name: str, exc: aiohttp.ClientConnectorError) -> UpstreamUnavailableError:
    """The client is told why, not where (the upstream's address stays in the log)."""
    reason = exc.os_error.strerror or type(exc.os_error).__name__
    return UpstreamUnavailableError(f"upstream '{name}' is unreachable ({reason.lower()})")


def let_go(response: aiohttp.ClientResponse) -> None:
    """The end of a streamed response: a finished one's connection goes back to the
    pool; an unfinished one's is closed, which is how the upstream learns that nobody is
    listening any more."""
    if response.content.is_eof():
        response.release()
    else:
        response.close()
