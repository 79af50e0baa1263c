"""OpenAI's Responses API in front: ``POST /v1/responses``, and the responses it stored.

Coding agents (Codex CLI, the Agents SDK) speak only this API. The model a request
names is resolved through the same registry as any request, and it runs the same
pipeline: hooks, keys, limits, budgets, retries, fallbacks, the cache, usage, logs.

- When every deployment the request may reach speaks the Responses API itself
  (``provider.responses``: OpenAI, Azure's v1 API, any provider configured so), the
  bytes pass through untouched, as chat completions do; the usage is read from the
  answer, or from the stream's terminal event.
- Otherwise the request is translated into a chat completion request (the hub every
  provider speaks), runs the chat pipeline, and the answer comes back as a Response
  object, or as the Responses event stream, translated as it arrives
  (``gateway.translate.responses``). A translated response is kept in the state store
  when the request says ``store`` (the API's default), for ``previous_response_id``,
  ``GET /v1/responses/{id}``, ``DELETE`` and ``/input_items``, scoped to the key that
  made it: for another key it does not exist.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ..translate.responses.answer import chat_to_response
from ..translate.responses.request import Facts, responses_to_chat
from ..translate.responses.stream import ResponsesStream
from ..wire.endpoints import CHAT, RESPONSES
from ..wire.http import Request, Response, StreamingResponse, json_response
from ..wire.sse import aclose
from .errors import InvalidRequestError, NotFoundError
from .pipeline import json_body

if TYPE_CHECKING:
    from ..access.stores import Store
    from ..routing.registry import ModelRegistry, Route
    from ..wire.headers import HeaderList
    from .context import RequestContext
    from .pipeline import AnyResponse, Pipeline

# The translated chat request asks for the stream's usage itself (for response.completed).
_USAGE_ASKED = msgspec.Raw(b'{"include_usage":true}')
_PREFIX = "/v1/responses/"


@dataclass(frozen=True)
class ResponsesOptions:
    """How translated responses are kept, and what happens to tools the model cannot run."""

    ttl: float = 7 * 24 * 3600.0  # seconds a stored response is kept
    builtin_tools: str = "refuse"  # "refuse" (a 400 naming the tool) or "drop"


class Stored(msgspec.Struct):
    """A kept response: who made it, the conversation it continued, and the answer."""

    owner: str
    response: dict[str, Any]  # as the client got it
    context: list[dict[str, Any]]  # the earlier conversation, then this request's input
    input_count: int  # how many of ``context`` are this request's own input items
    output: list[dict[str, Any]]  # the answer's items in full (thinking blocks kept)


_decode_stored = msgspec.json.Decoder(Stored).decode


def new_response_id() -> str:
    return "resp_" + os.urandom(16).hex()


class Responses:
    """The handlers of ``/v1/responses`` and ``/v1/responses/{id}[/input_items]``."""

    def __init__(
        self,
        pipeline: Pipeline,
        registry: ModelRegistry,
        state: Store,
        options: ResponsesOptions | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.state = state
        self.options = options or ResponsesOptions()
        self._native: dict[int, bool] = {}  # id(route) -> every deployment speaks it

    def native(self, route: Route) -> bool:
        """Whether every deployment the request may reach speaks the Responses API."""
        known = self._native.get(id(route))
        if known is None:
            known = all(p.responses for p in self.registry.reached(route))
            self._native[id(route)] = known
        return known

    # ------------------------------------------------------------------ create

    async def create(
        self, ctx: RequestContext, request: Request, body: bytes, forwarded: HeaderList
    ) -> AnyResponse:
        ctx.outcome.endpoint = RESPONSES.name
        fields = RESPONSES.parse(json_body(body))
        model, stream = fields.model, fields.stream
        pipeline = self.pipeline
        if self.native(self.registry.resolve(model)):
            return await pipeline.forward(ctx, request, forwarded, RESPONSES, body, model, stream)
        history: list[dict[str, Any]] | None = None
        if fields.previous_response_id is not None:
            history = await self._history(ctx, fields.previous_response_id)
        drop = self.options.builtin_tools == "drop"
        chat, facts = responses_to_chat(body, history, drop_builtin_tools=drop)
        chat_request = Request(
            "POST", "/v1/chat/completions", "", request.headers, chat, request.client
        )
        response = await pipeline.forward(
            ctx, chat_request, forwarded, CHAT, chat, model, stream, _USAGE_ASKED
        )
        response_id, created = new_response_id(), int(time.time())
        if isinstance(response, StreamingResponse):
            translator = ResponsesStream(facts, response_id, created)
            chunks = self._translated(ctx, response.chunks, translator, history or [], facts)
            return StreamingResponse(response.status, response.headers, chunks)
        if response.status >= 300:
            return response  # the error, in OpenAI's shape
        content, output, _ = chat_to_response(response.body, facts, response_id, created)
        if facts.store:
            answer = msgspec.json.decode(content)
            await self._keep(ctx, answer, output, history or [], facts)
        return Response(response.status, response.headers, content)

    async def _translated(
        self,
        ctx: RequestContext,
        chunks: AsyncIterator[bytes],
        translator: ResponsesStream,
        history: list[dict[str, Any]],
        facts: Facts,
    ) -> AsyncIterator[bytes]:
        """The chat pipeline's stream as the Responses API's events, read by read."""
        try:
            yield translator.start()
            async for chunk in chunks:
                out = translator.feed(chunk)
                if out:
                    yield out
            out = translator.finish()
            if facts.store and translator.response is not None:
                # Kept before its last event goes out: a follow-up may come at once.
                await self._keep(ctx, translator.response, translator.output, history, facts)
            if out:
                yield out
        finally:
            await aclose(chunks)

    async def _keep(
        self,
        ctx: RequestContext,
        response: dict[str, Any],
        output: list[dict[str, Any]],
        history: list[dict[str, Any]],
        facts: Facts,
    ) -> None:
        context = [*history, *facts.input_items]
        stored = Stored(_owner(ctx), response, context, len(facts.input_items), output)
        await self.state.state_put(
            _state_key(response["id"]), msgspec.json.encode(stored), self.options.ttl
        )

    async def _history(self, ctx: RequestContext, response_id: str) -> list[dict[str, Any]]:
        """The conversation a stored response ends: its context, then its output."""
        stored = await self._stored(ctx, response_id)
        if stored is None:
            raise InvalidRequestError(
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return [*stored.context, *stored.output]

    async def _stored(self, ctx: RequestContext, response_id: str) -> Stored | None:
        stored = await self._record(response_id)
        return stored if stored is not None and stored.owner == _owner(ctx) else None

    async def _record(self, response_id: str) -> Stored | None:
        """A kept response, whoever made it."""
        data = await self.state.state_get(_state_key(response_id))
        return None if data is None else _decode_stored(data)

    # ------------------------------------------------------------------ stored ones

    def handles(self, path: str) -> bool:
        return path.startswith(_PREFIX)

    async def item(
        self, ctx: RequestContext, request: Request, body: bytes, forwarded: HeaderList
    ) -> AnyResponse:
        """``GET``/``DELETE /v1/responses/{id}`` and ``GET .../input_items``: the gateway's
        own stored responses; any other id goes to the default provider (OpenAI's)."""
        ctx.outcome.endpoint = RESPONSES.name
        response_id, _, rest = request.path[len(_PREFIX) :].partition("/")
        stored = await self._record(response_id) if response_id else None
        if stored is None:  # not the gateway's: the default provider's, as OpenAI's are
            return await self.pipeline.passthrough(ctx, request, body, forwarded)
        if stored.owner != _owner(ctx):  # another key's: it does not exist, nor goes on
            raise _not_found(response_id)
        if request.method == "GET" and rest == "":
            return json_response(200, msgspec.json.encode(stored.response))
        if request.method == "DELETE" and rest == "":
            await self.state.state_delete(_state_key(response_id))
            deleted = {"id": response_id, "object": "response", "deleted": True}
            return json_response(200, msgspec.json.encode(deleted))
        if request.method == "GET" and rest == "input_items":
            items = stored.context[len(stored.context) - stored.input_count :]
            return json_response(200, msgspec.json.encode(_page(items, request.query)))
        raise NotFoundError(f"Unknown path: {request.path}", code="unknown_url")


def _owner(ctx: RequestContext) -> str:
    return ctx.outcome.key or ""


def _state_key(response_id: str) -> str:
    return "resp:" + response_id


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"No response found with id '{response_id}'.", code="not_found")


def _page(items: list[dict[str, Any]], query: str) -> dict[str, Any]:
    """One page of input items, as the API lists them (newest first unless asked)."""
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("order must be 'asc' or 'desc'.", param="order")
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        raise InvalidRequestError("limit must be an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise InvalidRequestError("limit must be from 1 to 100.", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = params.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": len(ordered) > limit,
    }
