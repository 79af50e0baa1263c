"""Anthropic's Messages API as a provider.

An OpenAI chat request is translated into a Messages request, and the answer — whole or
streamed, event by event — back into OpenAI's (``gateway.translate.anthropic``). A
request that came in at the gateway's own ``/v1/messages`` (an Anthropic client) goes
to Anthropic as the client sent it, byte for byte, and its answer comes back untouched;
only the usage is read on the way (from the stream's first and last events).

Anthropic's errors become the gateway's: an overload (``529``, ``overloaded_error``) is
a 503, retried like one; a prompt too long for the model sets ``too_long`` (context
fallbacks). The client's key never reaches Anthropic: this provider sends its own.

Claude on Vertex AI (``project`` and ``location`` set): the same Messages bodies, but the
model goes in the URL (``…/publishers/anthropic/models/{model}:rawPredict``, or
``:streamRawPredict`` for a stream) and out of the body, which names Vertex's
``anthropic_version``; the credential is a Google bearer token, refreshed
(``gateway.providers.credentials``). ``count_tokens`` goes to Vertex's ``count-tokens``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import msgspec
from yarl import URL

from ..core.errors import InvalidRequestError, NotFoundError, UpstreamStatusError
from ..core.outcome import Usage
from ..translate.anthropic.answer import message_to_chat
from ..translate.anthropic.errors import error_to_openai
from ..translate.anthropic.request import Facts, chat_to_messages
from ..translate.anthropic.stream import MessagesStream
from ..translate.anthropic.usage import usage_of_message, usage_of_stream
from ..translate.chat import usage_of_completion
from ..wire.headers import JSON, UPSTREAM_REQUEST_ID, HeaderList, header_value, retyped
from ..wire.payload import JSONBody
from .base import UpstreamRequest, UpstreamResponse, provider_type, secret
from .credentials import StaticToken, TokenSource, bearer, google_token
from .http import HTTPProvider
from .openai import HTTPUpstreamResponse
from .translated import TranslatedResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import aiohttp

    from ..core.context import RequestContext
    from .client import HTTPResponse

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
VERTEX_VERSION = "vertex-2023-10-16"  # Vertex AI's anthropic_version, in the body
DEFAULT_MAX_TOKENS = 4096

# The endpoints of the gateway's /v1/messages front door (gateway.core.messages).
MESSAGES = "messages"
COUNT_TOKENS = "messages.count_tokens"

# How much of a passed-through stream's start is kept to read its message_start.
_HEAD_BYTES = 4096


class AnthropicSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "anthropic"``."""

    base_url: str | None = None  # without /v1; default: Anthropic's, or Vertex AI's host
    api_key: str | None = None
    api_key_env: str | None = None  # the variable holding the key: better than the key
    version: str | None = None  # the anthropic-version header (Vertex AI: in the body)
    project: str | None = None  # Claude on Vertex AI: the Google Cloud project...
    location: str | None = None  # ...and location: a region, "global", "us" or "eu"
    access_token: str | None = None  # Vertex AI: a static OAuth2 access token (bearer)...
    access_token_env: str | None = None
    credentials: str | None = None  # ...or "adc" (the default without one): refreshed
    beta: list[str] = []  # anthropic-beta flags, sent with every request
    # Anthropic requires max_tokens; OpenAI does not: this is sent when a request sets none.
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_TOKENS
    headers: dict[str, str] = {}


@provider_type("anthropic")
class AnthropicProvider(HTTPProvider):
    """Claude models through Anthropic's Messages API (``base_url`` without ``/v1``)."""

    Settings = AnthropicSettings
    stream_usage = "own"

    @classmethod
    def from_settings(
        cls, name: str, settings: AnthropicSettings, environ: Mapping[str, str]
    ) -> AnthropicProvider:
        api_key = secret(settings.api_key, settings.api_key_env, environ)
        access_token = secret(settings.access_token, settings.access_token_env, environ)
        token = None
        if settings.project is not None:
            if settings.location is None:
                raise ValueError('Claude on Vertex AI needs a location: location = "us-east5"')
            if api_key is not None:
                raise ValueError("Vertex AI takes a Google access token, not an api_key")
            token = google_token(name, access_token, settings.credentials)
        elif settings.location or access_token or settings.credentials:
            raise ValueError("location, access_token and credentials are Vertex AI's: set project")
        return cls(
            name,
            base_url=settings.base_url,
            api_key=api_key,
            version=settings.version,
            beta=settings.beta,
            max_tokens=settings.max_tokens,
            headers=settings.headers,
            project=settings.project,
            location=settings.location,
            token=token,
        )

    def __init__(
        self,
        name: str = "anthropic",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        version: str | None = None,
        beta: list[str] | tuple[str, ...] = (),
        max_tokens: int = DEFAULT_MAX_TOKENS,
        headers: Mapping[str, str] | None = None,
        project: str | None = None,
        location: str | None = None,
        token: TokenSource | str | None = None,
    ) -> None:
        """Anthropic's API; or, with ``project`` and ``location``, Claude on Vertex AI,
        authorized by ``token`` (a Google access token, or a source that refreshes one)."""
        self.name = name
        self.vertex = project is not None
        self._token = StaticToken(token) if isinstance(token, str) else token
        default = vertex_host(location) if self.vertex else DEFAULT_BASE_URL
        self.base_url = (base_url or default).rstrip("/")
        base = URL(self.base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(
                f"provider {name!r}: base_url must be an http(s) URL, got {base_url!r}"
            )
        self.max_tokens = max_tokens
        self.version = version or (VERTEX_VERSION if self.vertex else API_VERSION)
        self.beta = ",".join(beta)
        self._own: HeaderList = [(k.lower(), v) for k, v in (headers or {}).items()]
        if api_key:
            self._own.append(("x-api-key", api_key))
        self._headers: HeaderList = [
            ("content-type", "application/json"),
            ("accept-encoding", "identity"),
            *([] if self.vertex else [("anthropic-version", self.version)]),
            *([("anthropic-beta", self.beta)] if self.beta else []),
            *self._own,
        ]
        self._messages_url = URL(f"{self.base_url}/v1/messages", encoded=True)
        self._count_url = URL(f"{self.base_url}/v1/messages/count_tokens", encoded=True)
        self._prefix = ""
        if self.vertex:
            segments = (quote(project or "", safe=""), quote(location or "", safe=""))
            where = "projects/{}/locations/{}".format(*segments)
            self._prefix = f"{self.base_url}/v1/{where}/publishers/anthropic/models/"
            self._count_url = URL(f"{self._prefix}count-tokens:rawPredict", encoded=True)
        self._model_urls: dict[tuple[str, bool], URL] = {}
        super().__init__()

    def describe(self) -> str:
        if not self.vertex:
            return f"{self.name} -> {self.base_url} (anthropic)"
        how = f", {self._token.describe()}" if self._token is not None else ""
        return f"{self.name} -> {self.base_url} (anthropic on vertex ai{how})"

    async def start(self, session: aiohttp.ClientSession) -> None:
        await super().start(session)
        if self._token is not None:
            self._token.warm()

    def _vertex_url(self, model: str, stream: bool) -> URL:
        """The model's ``rawPredict`` (``streamRawPredict``) URL on Vertex AI."""
        url = self._model_urls.get((model, stream))
        if url is None:
            # The model names a path segment: quoted, so that it cannot name another path
            # ('@' kept: Vertex's model versions are named claude-…@20250514).
            method = "streamRawPredict" if stream else "rawPredict"
            url = URL(f"{self._prefix}{quote(model, safe='@')}:{method}", encoded=True)
            if len(self._model_urls) < 1024:  # (names come from clients: kept bounded)
                self._model_urls[(model, stream)] = url
        return url

    def _for_vertex(self, endpoint: str, body: bytes) -> tuple[URL, bytes]:
        """A Messages request as Vertex AI takes it: the model out of the body and into
        the URL (``count_tokens`` keeps it), Vertex's ``anthropic_version`` in the body."""
        fields = JSONBody(body)
        if endpoint == COUNT_TOKENS:
            url = self._count_url
        else:
            model = fields.get("model")
            if not isinstance(model, str):
                raise InvalidRequestError("model: a string is required.")
            url = self._vertex_url(model, fields.get("stream") is True)
            del fields["model"]
        if "anthropic_version" not in fields:
            fields["anthropic_version"] = self.version
        return url, fields.to_bytes()

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        endpoint = request.endpoint
        connect = request.connect_timeout
        if endpoint == "chat.completions":
            body, facts = chat_to_messages(request.body, self.max_tokens)
            url = self._messages_url
            if self.vertex:
                url, body = self._for_vertex(MESSAGES, body)
            headers = await bearer(self._token, self._headers)
            response = await self.request("POST", url, body, headers, connect)
            translator = MessagesStream(facts) if facts.stream else None
            whole = functools.partial(_whole, facts)
            return TranslatedResponse(response, ctx, whole, translator, "request-id")
        if endpoint in (MESSAGES, COUNT_TOKENS):
            body = request.body
            url = self._messages_url if endpoint == MESSAGES else self._count_url
            if self.vertex:  # (Vertex takes no ?beta=true: its flags are headers)
                url, body = self._for_vertex(endpoint, body)
            elif request.query:  # ?beta=true, from the SDKs' beta namespace
                url = URL(f"{url}?{request.query}", encoded=True)
            headers = await bearer(self._token, self._passthrough_headers(request.headers))
            response = await self.request("POST", url, body, headers, connect)
            return PassthroughResponse(response, ctx)
        raise NotFoundError(
            f"The model's provider ({self.name}, Anthropic) serves chat completions and "
            f"/v1/messages, not {request.method} /v1{request.path}.",
            code="unsupported_endpoint",
        )

    def _passthrough_headers(self, client: HeaderList) -> HeaderList:
        """The client's headers (its credentials already dropped) and this provider's."""
        headers = [h for h in client if h[0] != "anthropic-beta"]
        headers.append(("accept-encoding", "identity"))
        if header_value(client, "anthropic-version") is None and not self.vertex:
            headers.append(("anthropic-version", self.version))
        flags = [f for f in (header_value(client, "anthropic-beta"), self.beta) if f]
        if flags:
            headers.append(("anthropic-beta", ",".join(flags)))
        return headers + self._own

    def messages_api(self, model: str) -> bool:
        return True

    def error(self, status: int, headers: HeaderList, content: bytes) -> UpstreamStatusError:
        failure = error_to_openai(status, content)
        failure.headers = retyped(
            [(UPSTREAM_REQUEST_ID if k == "request-id" else k, v) for k, v in headers], JSON
        )
        return failure

    def usage(self, content: bytes) -> Usage | None:
        # An OpenAI client's answer was translated; an Anthropic client's came as sent.
        if b'"prompt_tokens"' in content:
            return usage_of_completion(content)
        return usage_of_message(content)


def vertex_host(location: str | None) -> str:
    """Vertex AI's endpoint for a location: regional, global, or a multi-region's."""
    if not location or not location.replace("-", "").isalnum():
        raise ValueError(f"location must name a Vertex AI location, got {location!r}")
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _whole(facts: Facts, content: bytes) -> bytes:
    return message_to_chat(content, facts)[0]


class PassthroughResponse(HTTPUpstreamResponse):
    """Anthropic's answer to an Anthropic client, as sent; its stream's usage is read from
    its first bytes and its last two reads, as they pass."""

    __slots__ = ("_ctx",)
    next_chunk = None  # type: ignore[assignment]  # its chunks go through iter_chunks()

    def __init__(self, response: HTTPResponse, ctx: RequestContext) -> None:
        super().__init__(response)
        self._ctx = ctx
        self.request_id = response.headers.get("request-id")

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        head = previous = last = b""
        try:
            async for chunk in super().iter_chunks():
                if len(head) < _HEAD_BYTES:
                    head += chunk
                previous, last = last, chunk
                yield chunk
        finally:
            usage = usage_of_stream(head, previous + last)
            if usage is not None:
                self._ctx.outcome.usage = usage
