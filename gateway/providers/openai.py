"""The OpenAI-compatible HTTP provider: OpenAI itself, Azure-style proxies, vLLM, Ollama…"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import aiohttp
import msgspec
from yarl import URL

from ..core.errors import UpstreamProtocolError
from ..wire.headers import HeaderList, passable_headers
from .base import UpstreamRequest, provider_type, secret
from .client import HTTPResponse
from .http import ANSWER_BROKE_OFF, BROKE_OFF, HTTPProvider, let_go, unavailable

if TYPE_CHECKING:
    from ..core.context import RequestContext

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Media types passed on as they arrive; anything else is read whole first.
STREAMED_TYPES = ("text/event-stream", "audio/", "video/", "application/octet-stream")

# Paths every request of a kind shares: their URLs are built once, not per request.
_COMMON_PATHS = ("/chat/completions", "/completions", "/embeddings", "/models")


class HTTPUpstreamResponse:
    """An HTTP answer (aiohttp's, or one read on the short path) seen through the provider
    interface."""

    __slots__ = (
        "_first",
        "_response",
        "content_type",
        "headers",
        "request_id",
        "status",
        "streamed",
    )

    def __init__(self, response: HTTPResponse) -> None:
        self._response = response
        self._first: bytes | None = None
        self.status = response.status
        headers = response.headers
        self.headers = passable_headers(headers.items())
        self.content_type = content_type = headers.get("Content-Type", "")
        self.request_id = headers.get("x-request-id")
        self.streamed = self.status < 400 and content_type.startswith(STREAMED_TYPES)

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, ValueError) as exc:
            self._response.close()
            raise UpstreamProtocolError(ANSWER_BROKE_OFF) from exc
        finally:
            self._response.release()

    async def first_chunk(self) -> bytes:
        try:
            self._first = await self._response.content.readany()
        except (aiohttp.ClientError, ValueError) as exc:
            self._response.close()
            raise UpstreamProtocolError(BROKE_OFF) from exc
        return self._first

    async def next_chunk(self) -> bytes:
        """The next chunk of the body (the one read ahead first); ``b""`` at its end,
        when the connection goes back to the pool."""
        first = self._first
        if first is not None:
            self._first = None
            if first:
                return first
        response = self._response
        try:
            chunk = await response.content.readany()
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamProtocolError(BROKE_OFF) from exc
        if not chunk:
            response.release()
        return chunk

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        response = self._response
        try:
            if self._first:
                yield self._first
            async for chunk in response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamProtocolError(BROKE_OFF) from exc
        finally:
            let_go(response)

    def close(self) -> None:
        self._response.close()


class OpenAISettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "openai"`` (the default type)."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    api_key_env: str | None = None  # the variable holding the key: better than the key
    headers: dict[str, str] = {}
    # Whether it serves the Responses API itself; unset: OpenAI's own API does.
    responses: bool | None = None


@provider_type("openai")
class OpenAIProvider(HTTPProvider):
    """Any OpenAI-compatible HTTP API at ``base_url`` (which includes ``/v1``)."""

    Settings = OpenAISettings

    @classmethod
    def from_settings(
        cls, name: str, settings: OpenAISettings, environ: Mapping[str, str]
    ) -> OpenAIProvider:
        api_key = secret(settings.api_key, settings.api_key_env, environ)
        return cls(
            name,
            base_url=settings.base_url,
            api_key=api_key,
            headers=settings.headers,
            responses=settings.responses,
        )

    def __init__(
        self,
        name: str = "openai",
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        responses: bool | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._base = URL(self.base_url)
        self.responses = self._base.host == "api.openai.com" if responses is None else responses
        if self._base.scheme not in ("http", "https") or not self._base.host:
            raise ValueError(
                f"provider {name!r}: base_url must be an http(s) URL, got {base_url!r}"
            )
        self._headers: HeaderList = [("accept-encoding", "identity")]
        self._headers += list((headers or {}).items())
        if api_key:
            self._headers.append(("authorization", f"Bearer {api_key}"))
        self._urls = {path: self._build_url(path, "") for path in _COMMON_PATHS}
        super().__init__()

    def describe(self) -> str:
        return f"{self.name} -> {self.base_url}"

    def _build_url(self, path: str, query: str) -> URL:
        # The path was validated by the router; it is appended, never resolved, so
        # nothing in a request can point the gateway at another host.
        return URL(
            f"{self.base_url}{path}?{query}" if query else self.base_url + path, encoded=True
        )

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> HTTPUpstreamResponse:
        client = self._client
        if client is None:
            raise RuntimeError(f"provider {self.name!r} used before the gateway started")
        url = None if request.query else self._urls.get(request.path)
        if url is None:
            url = self._build_url(request.path, request.query)
        # HTTPProvider.request() inline: this runs for every request.
        timeout = self._timeouts.get(request.connect_timeout) or self.timeout(
            request.connect_timeout
        )
        try:
            response = await client.request(
                request.method, url, request.body, request.headers + self._headers, timeout
            )
        except aiohttp.ClientConnectorError as exc:
            raise unavailable(self.name, exc) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream '{self.name}' failed: {exc}") from exc
        return HTTPUpstreamResponse(response)
