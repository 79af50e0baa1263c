"""Anthropic's API in front: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

An Anthropic client (the official SDKs, and tools built on them) points its base URL at
the gateway and presents its gateway key as ``x-api-key`` or a bearer token. The model
it names is resolved through the same registry as any request, and the request runs the
same pipeline: hooks, retries, fallbacks, limits, usage, logs.

- When every deployment the request may reach (the model's, its fallbacks') serves
  Anthropic's Messages API itself (``Provider.messages_api``: Anthropic's API, Claude on
  Vertex AI or on Bedrock), the request goes to it as the client sent it (the model name
  rewritten, if the registry says so) and the answer comes back untouched.
- Otherwise the request is translated into an OpenAI chat request, runs the chat
  pipeline (so a Claude model may fall back to a GPT model, or the reverse), and the
  answer — whole, or streamed event by event — is translated back.

Errors on these paths are in Anthropic's shape (``{"type": "error", "error": {"type",
"message"}}``), the gateway's own included; an Anthropic upstream's own error goes back
as it sent it. ``count_tokens`` is served where such an upstream can answer it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from ..providers.anthropic import COUNT_TOKENS, MESSAGES
from ..translate.anthropic.errors import (
    AnthropicStatusError,
    anthropic_error,
    openai_error_to_anthropic,
)
from ..translate.anthropic.front_answer import chat_to_message
from ..translate.anthropic.front_request import messages_to_chat
from ..translate.anthropic.front_stream import ChatStream
from ..wire.endpoints import CHAT, Endpoint
from ..wire.headers import JSON, HeaderList, retyped
from ..wire.http import Request, Response, StreamingResponse
from ..wire.sse import aclose
from .errors import GatewayError, NotFoundError, UpstreamStatusError
from .pipeline import json_body

if TYPE_CHECKING:
    from ..routing.registry import ModelRegistry, Route
    from .context import RequestContext
    from .pipeline import AnyResponse, Pipeline


class MessagesFields(msgspec.Struct):
    """What routing reads of a Messages request (and what Anthropic requires)."""

    model: str
    messages: list[msgspec.Raw]
    max_tokens: int
    stream: bool | None = None


class CountTokensFields(msgspec.Struct):
    model: str
    messages: list[msgspec.Raw]


MESSAGES_ENDPOINT = Endpoint(MESSAGES, MessagesFields)
COUNT_TOKENS_ENDPOINT = Endpoint(COUNT_TOKENS, CountTokensFields)

# The translated chat request asks for the stream's usage itself (for message_delta).
_USAGE_ASKED = msgspec.Raw(b'{"include_usage":true}')


class Messages:
    """The handlers of the two routes."""

    def __init__(self, pipeline: Pipeline, registry: ModelRegistry) -> None:
        self.pipeline = pipeline
        self.registry = registry
        # (id(route), model) -> whether every, and whether any, deployment it reaches
        # serves Anthropic's API itself (the model counts only on the open route)
        self._claude: dict[tuple[int, str], tuple[bool, bool]] = {}

    def _reach(self, route: Route, model: str) -> tuple[bool, bool]:
        key = (id(route), "" if route.name else model)
        known = self._claude.get(key)
        if known is None:
            reached = self.registry.reached_models(route, model)
            claude = [provider.messages_api(name) for provider, name in reached]
            if len(self._claude) >= 4096:  # (open-route names come from clients)
                self._claude.clear()
            known = self._claude[key] = (all(claude), any(claude))
        return known

    def native(self, route: Route, model: str) -> bool:
        """Whether every deployment the request may reach speaks Anthropic's API."""
        return self._reach(route, model)[0]

    def reaches_claude(self, route: Route, model: str) -> bool:
        """Whether any deployment the request may reach speaks Anthropic's API: only then
        does the translated request keep what only Claude reads back."""
        return self._reach(route, model)[1]

    async def create(
        self, ctx: RequestContext, request: Request, body: bytes, forwarded: HeaderList
    ) -> AnyResponse:
        ctx.outcome.endpoint = MESSAGES
        pipeline = self.pipeline
        fields = MESSAGES_ENDPOINT.parse(json_body(body))
        model = fields.model
        route = self.registry.resolve(model)
        if self.native(route, model):
            response = await pipeline.forward(
                ctx, request, forwarded, MESSAGES_ENDPOINT, body, model, fields.stream
            )
            if isinstance(response, StreamingResponse):
                chunks = _anthropic_last_words(response.chunks)
                return StreamingResponse(response.status, response.headers, chunks)
            return response
        chat = messages_to_chat(body, claude_only=self.reaches_claude(route, model))
        headers = {k: v for k, v in request.headers.items() if not k.startswith("anthropic-")}
        chat_request = Request("POST", "/v1/chat/completions", "", headers, chat, request.client)
        forwarded = [h for h in forwarded if not h[0].startswith("anthropic-")]
        response = await pipeline.forward(
            ctx, chat_request, forwarded, CHAT, chat, model, fields.stream, _USAGE_ASKED
        )
        if isinstance(response, StreamingResponse):
            chunks = _translated(response.chunks, ChatStream(model))
            return StreamingResponse(response.status, response.headers, chunks)
        if response.status >= 300:
            return response
        headers_out = retyped(response.headers, JSON)
        return Response(response.status, headers_out, chat_to_message(response.body, model))

    async def count_tokens(
        self, ctx: RequestContext, request: Request, body: bytes, forwarded: HeaderList
    ) -> AnyResponse:
        ctx.outcome.endpoint = COUNT_TOKENS
        fields = COUNT_TOKENS_ENDPOINT.parse(json_body(body))
        if not self.native(self.registry.resolve(fields.model), fields.model):
            raise NotFoundError(
                f"Counting tokens is served for models whose provider speaks Anthropic's API; "
                f"{fields.model!r} is not one.",
                code="unsupported_endpoint",
            )
        return await self.pipeline.forward(
            ctx, request, forwarded, COUNT_TOKENS_ENDPOINT, body, fields.model, False
        )


async def _translated(chunks: AsyncIterator[bytes], stream: ChatStream) -> AsyncIterator[bytes]:
    """The chat pipeline's stream (OpenAI's events) as Anthropic's, read by read."""
    try:
        async for chunk in chunks:
            out = stream.feed(chunk)
            if out:
                yield out
        out = stream.finish()
        if out:
            yield out
    finally:
        await aclose(chunks)


_LAST_WORDS = b'data: {"error"'


async def _anthropic_last_words(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An Anthropic stream passed through; a stream that breaks ends with the gateway's
    last words in OpenAI's shape (a ``data:`` line of its own): said as Anthropic's
    ``error`` event instead, which the Anthropic SDKs raise."""
    try:
        async for chunk in chunks:
            yield ChatStream("").feed(chunk) if chunk.startswith(_LAST_WORDS) else chunk
    finally:
        await aclose(chunks)


def anthropic_error_response(error: GatewayError) -> Response:
    """The response for an error on the Anthropic routes, in Anthropic's shape."""
    headers = retyped(error.headers, JSON)
    if isinstance(error, AnthropicStatusError) and error.upstream_body is not None:
        # An Anthropic upstream's own answer: its status (529, not the 503 it counted as).
        return Response(error.upstream_status or error.status, headers, error.upstream_body)
    if isinstance(error, UpstreamStatusError):
        body = openai_error_to_anthropic(error.status, error.body())
    else:
        body = anthropic_error(error.status, error.message)
    return Response(error.status, headers, body)
