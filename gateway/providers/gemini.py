"""Google's Gemini models as a provider: the Gemini API (AI Studio) or Vertex AI.

Chat completions go to ``generateContent`` (``streamGenerateContent?alt=sse`` for a
stream), embeddings to ``embedContent`` / ``batchEmbedContents`` (Gemini API only),
translated both ways by ``gateway.translate.gemini``. The Gemini API takes the key in
``x-goog-api-key``; Vertex AI (``project`` set) takes an OAuth2 access token as a bearer
token, and names the model under the project and location. The token is Google's
Application Default Credentials', refreshed before it expires (``credentials``), or a
static ``access_token``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import msgspec
from yarl import URL

from ..core.errors import InvalidRequestError, NotFoundError, UpstreamStatusError
from ..core.outcome import Usage
from ..translate.chat import usage_of_completion
from ..translate.gemini.answer import response_to_chat
from ..translate.gemini.embeddings import embeddings_to_gemini, embeddings_to_openai
from ..translate.gemini.errors import error_to_openai
from ..translate.gemini.request import chat_to_gemini
from ..translate.gemini.stream import GeminiStream
from ..wire.headers import JSON, HeaderList, retyped
from .base import UpstreamRequest, UpstreamResponse, provider_type, secret
from .credentials import StaticToken, TokenSource, bearer, google_token
from .http import HTTPProvider
from .translated import TranslatedResponse

if TYPE_CHECKING:
    import aiohttp

    from ..core.context import RequestContext

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


class GeminiSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "gemini"``. With ``project`` set it is Vertex AI."""

    base_url: str | None = None  # default: the Gemini API's, or the location's Vertex host
    api_version: str | None = None  # default: v1beta (Gemini API), v1 (Vertex AI)
    api_key: str | None = None  # the Gemini API's key (x-goog-api-key)
    api_key_env: str | None = None
    project: str | None = None  # Vertex AI: the Google Cloud project...
    location: str = "us-central1"  # ...and location ("global" for the global endpoint)
    access_token: str | None = None  # Vertex AI: a static OAuth2 access token (bearer)...
    access_token_env: str | None = None
    credentials: str | None = None  # ...or "adc" (the default without one): refreshed
    headers: dict[str, str] = {}


@provider_type("gemini")
class GeminiProvider(HTTPProvider):
    """Gemini models through ``generateContent``, on the Gemini API or Vertex AI."""

    Settings = GeminiSettings
    stream_usage = "own"

    @classmethod
    def from_settings(
        cls, name: str, settings: GeminiSettings, environ: Mapping[str, str]
    ) -> GeminiProvider:
        access_token = secret(settings.access_token, settings.access_token_env, environ)
        token = None
        if settings.project is not None:
            token = google_token(name, access_token, settings.credentials)
        elif access_token is not None or settings.credentials is not None:
            raise ValueError("access_token and credentials are Vertex AI's: set project too")
        return cls(
            name,
            base_url=settings.base_url,
            api_version=settings.api_version,
            api_key=secret(settings.api_key, settings.api_key_env, environ),
            project=settings.project,
            location=settings.location,
            token=token,
            headers=settings.headers,
        )

    def __init__(
        self,
        name: str = "gemini",
        *,
        base_url: str | None = None,
        api_version: str | None = None,
        api_key: str | None = None,
        project: str | None = None,
        location: str = "us-central1",
        access_token: str | None = None,
        token: TokenSource | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Vertex AI's bearer token is ``token`` (a source, refreshed) or ``access_token``."""
        self.name = name
        self.vertex = project is not None
        if self.vertex:
            host = "aiplatform.googleapis.com"
            default = f"https://{host}" if location == "global" else f"https://{location}-{host}"
            base = (base_url or default).rstrip("/")
            where = f"projects/{quote(project or '', safe='')}/locations/{quote(location, safe='')}"
            self._prefix = f"{base}/{api_version or 'v1'}/{where}/publishers/google/models/"
        else:
            base = (base_url or DEFAULT_BASE_URL).rstrip("/")
            self._prefix = f"{base}/{api_version or 'v1beta'}/models/"
        self.base_url = base
        parsed = URL(base)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"provider {name!r}: base_url must be an http(s) URL, got {base!r}")
        self._headers: HeaderList = [
            ("content-type", "application/json"),
            ("accept-encoding", "identity"),
            *((k.lower(), v) for k, v in (headers or {}).items()),
        ]
        if self.vertex and token is None and access_token:
            token = StaticToken(access_token)
        self._token = token if self.vertex else None
        if not self.vertex and api_key:
            self._headers.append(("x-goog-api-key", api_key))
        self._model_urls: dict[tuple[str, str], URL] = {}
        super().__init__()

    def describe(self) -> str:
        if self._token is None:
            return f"{self.name} -> {self.base_url} ({'vertex ai' if self.vertex else 'gemini'})"
        return f"{self.name} -> {self.base_url} (vertex ai, {self._token.describe()})"

    async def start(self, session: aiohttp.ClientSession) -> None:
        await super().start(session)
        if self._token is not None:
            self._token.warm()

    def _url(self, model: str, method: str) -> URL:
        url = self._model_urls.get((model, method))
        if url is None:
            # The model names a path segment: quoted, so that it cannot name another path.
            name = quote(model.removeprefix("models/"), safe="")
            url = URL(f"{self._prefix}{name}:{method}", encoded=True)
            if len(self._model_urls) < 1024:  # (names come from clients: kept bounded)
                self._model_urls[(model, method)] = url
        return url

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        endpoint = request.endpoint
        connect = request.connect_timeout
        if endpoint == "chat.completions":
            body, facts = chat_to_gemini(request.body)
            method = "streamGenerateContent?alt=sse" if facts.stream else "generateContent"
            url = self._url(facts.model, method)
            response = await self.request(
                "POST", url, body, await bearer(self._token, self._headers), connect
            )
            translator = GeminiStream(facts) if facts.stream else None
            whole = functools.partial(response_to_chat, facts=facts)
            return TranslatedResponse(response, ctx, whole, translator)
        if endpoint == "embeddings":
            if self.vertex:
                raise InvalidRequestError(
                    f"The model's provider ({self.name}, Vertex AI) does not serve embeddings "
                    "through this gateway; use the Gemini API.",
                    code="unsupported_endpoint",
                )
            body, embedding = embeddings_to_gemini(request.body)
            method = "batchEmbedContents" if embedding.batch else "embedContent"
            url = self._url(embedding.model, method)
            response = await self.request(
                "POST", url, body, await bearer(self._token, self._headers), connect
            )
            whole = functools.partial(embeddings_to_openai, facts=embedding)
            return TranslatedResponse(response, ctx, whole, None)
        raise NotFoundError(
            f"The model's provider ({self.name}, Gemini) serves chat completions and "
            f"embeddings, not {request.method} /v1{request.path}.",
            code="unsupported_endpoint",
        )

    def error(self, status: int, headers: HeaderList, content: bytes) -> UpstreamStatusError:
        failure = error_to_openai(status, content)
        failure.headers = retyped(headers, JSON)
        return failure

    def usage(self, content: bytes) -> Usage | None:
        return usage_of_completion(content)
