"""Anthropic's Messages API as a provider.

An OpenAI chat request is translated into a Messages request, and the answer — whole or
streamed, event by event — back into OpenAI's (``gateway.translate.anthropic``). A
request that came in at the gateway's own ``/v1/messages`` (an Anthropic client) goes
to Anthropic as the client sent it, byte for byte, and its answer comes back untouched;
only the usage is read on the way (from the stream's first and last events).

Anthropic's errors become the gateway's: an overload (``529``, ``overloaded_error``) is
a 503, retried like one; a prompt too long for the model sets ``too_long`` (context
fallbacks). The client's key never reaches Anthropic: this provider sends its own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import msgspec
from yarl import URL

from ..core.errors import NotFoundError, UpstreamStatusError
from ..core.outcome import Usage
from ..translate.anthropic.answer import message_to_chat
from ..translate.anthropic.errors import error_to_openai
from ..translate.anthropic.request import Facts, chat_to_messages
from ..translate.anthropic.stream import MessagesStream
from ..translate.anthropic.usage import usage_of_message, usage_of_stream
from ..translate.chat import usage_of_completion
from ..wire.headers import JSON, UPSTREAM_REQUEST_ID, HeaderList, header_value, retyped
from .base import UpstreamRequest, UpstreamResponse, provider_type, secret
from .http import HTTPProvider
from .openai import HTTPUpstreamResponse
from .translated import TranslatedResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.context import RequestContext
    from .client import HTTPResponse

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

# The endpoints of the gateway's /v1/messages front door (gateway.core.messages).
MESSAGES = "messages"
COUNT_TOKENS = "messages.count_tokens"

# How much of a passed-through stream's start is kept to read its message_start.
_HEAD_BYTES = 4096


class AnthropicSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "anthropic"``."""

    base_url: str = DEFAULT_BASE_URL  # without /v1
    api_key: str | None = None
    api_key_env: str | None = None  # the variable holding the key: better than the key
    version: str = API_VERSION  # the anthropic-version header
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
        return cls(
            name,
            base_url=settings.base_url,
            api_key=secret(settings.api_key, settings.api_key_env, environ),
            version=settings.version,
            beta=settings.beta,
            max_tokens=settings.max_tokens,
            headers=settings.headers,
        )

    def __init__(
        self,
        name: str = "anthropic",
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        version: str = API_VERSION,
        beta: list[str] | tuple[str, ...] = (),
        max_tokens: int = DEFAULT_MAX_TOKENS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        base = URL(self.base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(
                f"provider {name!r}: base_url must be an http(s) URL, got {base_url!r}"
            )
        self.max_tokens = max_tokens
        self.version = version
        self.beta = ",".join(beta)
        self._own: HeaderList = [(k.lower(), v) for k, v in (headers or {}).items()]
        if api_key:
            self._own.append(("x-api-key", api_key))
        self._headers: HeaderList = [
            ("content-type", "application/json"),
            ("accept-encoding", "identity"),
            ("anthropic-version", version),
            *([("anthropic-beta", self.beta)] if self.beta else []),
            *self._own,
        ]
        self._messages_url = URL(f"{self.base_url}/v1/messages", encoded=True)
        self._count_url = URL(f"{self.base_url}/v1/messages/count_tokens", encoded=True)
        super().__init__()

    def describe(self) -> str:
        return f"{self.name} -> {self.base_url} (anthropic)"

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        endpoint = request.endpoint
        connect = request.connect_timeout
        if endpoint == "chat.completions":
            body, facts = chat_to_messages(request.body, self.max_tokens)
            response = await self.request("POST", self._messages_url, body, self._headers, connect)
            translator = MessagesStream(facts) if facts.stream else None
            whole = functools.partial(_whole, facts)
            return TranslatedResponse(response, ctx, whole, translator, "request-id")
        if endpoint in (MESSAGES, COUNT_TOKENS):
            url = self._messages_url if endpoint == MESSAGES else self._count_url
            if request.query:  # ?beta=true, from the SDKs' beta namespace
                url = URL(f"{url}?{request.query}", encoded=True)
            headers = self._passthrough_headers(request.headers)
            response = await self.request("POST", url, request.body, headers, connect)
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
        if header_value(client, "anthropic-version") is None:
            headers.append(("anthropic-version", self.version))
        flags = [f for f in (header_value(client, "anthropic-beta"), self.beta) if f]
        if flags:
            headers.append(("anthropic-beta", ",".join(flags)))
        return headers + self._own

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
