"""The request pipeline of the model endpoints, once the caller is authenticated.

read routing fields -> resolve model -> before_request hooks -> forward (attempts,
retries, fallbacks) -> after_response hooks, or the stream relay (chunk hooks, usage)
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, MutableSet
from typing import TYPE_CHECKING

import msgspec

from ..access.cache import HIT, Entry
from ..observability.usage import UsageStripper, usage_of_stream_tail
from ..providers import UpstreamRequest
from ..translate.responses.usage import usage_of_response_stream
from ..wire import multipart
from ..wire.endpoints import CHAT, COMPLETIONS, NOT_SENT, PASSTHROUGH, RESPONSES, Endpoint, Fields
from ..wire.headers import HeaderList
from ..wire.http import Request, Response, StreamingResponse, json_response
from ..wire.types import Model, ModelList
from .chunks import ChunkHooks, run_chunk_hooks
from .errors import (
    GatewayError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
)
from .forwarding import Answer, Forwarder
from .hooks import HookList
from .outcome import Usage
from .relay import EndCallback, NextChunk, Relay, chunks_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..access.control import AccessControl
    from ..routing.registry import ModelRegistry, Route
    from .context import RequestContext
    from .hooks import Hooks
    from .timers import Timers

_NO_HOOKS = HookList()
logger = logging.getLogger("gateway")

AnyResponse = Response | StreamingResponse

# A passthrough path is appended to the provider's base URL, so it may hold only plain
# path characters, and no segment may climb out of the API root, encoded or not.
_SAFE_PATH = re.compile(r"/v1(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+/?")
_CLIMBING = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)|%2f|%5c", re.IGNORECASE)

# What the gateway adds to a streamed chat or completions request whose client did not
# ask for usage, so that the stream's tokens are counted (the answer is stripped of it).
_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}'
_USAGE_ENDPOINTS = (CHAT, COMPLETIONS)


class Pipeline:
    """Serves the model endpoints: everything from the routing fields to the response."""

    def __init__(
        self,
        registry: ModelRegistry,
        hooks: Hooks,
        forwarder: Forwarder,
        timers: Timers,
        streams: MutableSet[Relay],
        *,
        on_stream_end: EndCallback,
        notify_error: Callable[[RequestContext, GatewayError], Awaitable[Response | None]],
        stream_usage: bool = True,
        access: AccessControl | None = None,
    ) -> None:
        self.access = access
        self.registry = registry
        self.hooks = hooks
        self.forwarder = forwarder
        self.timers = timers
        self.streams = streams
        self.on_stream_end = on_stream_end
        self.notify_error = notify_error
        self.stream_usage = stream_usage
        self.model_list = msgspec.json.encode(
            ModelList(data=[Model(id=name) for name in registry.names()])
        )

    # ------------------------------------------------------------------ endpoints

    async def model_endpoint(
        self,
        endpoint: Endpoint,
        ctx: RequestContext,
        request: Request,
        body: bytes,
        headers: HeaderList,
    ) -> AnyResponse:
        """Chat completions, completions, embeddings: a JSON body with a model."""
        ctx.outcome.endpoint = endpoint.name
        fields = endpoint.parse(json_body(body))
        model, stream, options = fields.model, fields.stream, fields.stream_options
        return await self.forward(
            ctx, request, headers, endpoint, body, model, stream, options, fields
        )

    async def list_models(
        self, ctx: RequestContext, request: Request, body: bytes, headers: HeaderList
    ) -> AnyResponse:
        ctx.outcome.endpoint = "models"
        if self.registry.is_open:
            return await self.forward(ctx, request, headers, PASSTHROUGH, b"", None, None)
        return json_response(200, self.model_list)

    async def passthrough(
        self, ctx: RequestContext, request: Request, body: bytes, headers: HeaderList
    ) -> AnyResponse:
        """Any other ``/v1`` path: forwarded as sent, to the provider its model names."""
        ctx.outcome.endpoint = "passthrough"
        path = request.path
        if not path.startswith("/v1/") or not _SAFE_PATH.fullmatch(path) or _CLIMBING.search(path):
            raise NotFoundError(f"Unknown path: {path}", code="unknown_url")
        if request.method == "GET" and path.startswith("/v1/models/"):
            ctx.outcome.endpoint = "models"
            model_id = path[len("/v1/models/") :]
            if not self.registry.is_open:
                if model_id not in self.registry.names():
                    raise ModelNotFoundError(model_id)
                return json_response(200, msgspec.json.encode(Model(id=model_id)))
        model: str | None = None
        stream: bool | None = None
        content_type = request.headers.get("content-type")
        if content_type is not None and content_type.lower().startswith("multipart/"):
            boundary = multipart.boundary_of(content_type)
            if boundary is None:
                raise InvalidRequestError("The multipart body has no boundary.")
            model = multipart.read_field(body, boundary, "model")
        elif body and (content_type is None or "json" in content_type):
            fields = PASSTHROUGH.parse(json_body(body))
            model, stream = fields.model, fields.stream
        return await self.forward(ctx, request, headers, PASSTHROUGH, body, model, stream)

    # ------------------------------------------------------------------ forwarding

    async def forward(
        self,
        ctx: RequestContext,
        request: Request,
        headers: HeaderList,
        endpoint: Endpoint,
        body: bytes,
        model: str | None,
        stream: bool | None,
        stream_options: msgspec.Raw = NOT_SENT,
        fields: Fields | None = None,
    ) -> AnyResponse:
        route = self.registry.resolve(model) if model is not None else self._default_route()
        outcome = ctx.outcome
        outcome.model, outcome.stream = model, bool(stream)
        ctx.provider, outcome.upstream_model = route.provider, route.upstream_model or model
        outgoing = UpstreamRequest(
            request.method,
            request.path[3:],  # below /v1: providers append it to their base URL
            request.query,
            headers,
            body,
            endpoint.request_type,
            endpoint.name,
        )
        if self.hooks.before_request:
            answer = await self.hooks.before_request.first(ctx, outgoing)
            if answer is not None:
                return answer.copy()
            if outgoing.body is not body and model is not None:
                # A hook changed the body; it may have named another model.
                new_model = outgoing.json.get("model")
                if isinstance(new_model, str) and new_model != model:
                    route = self.registry.resolve(new_model)
                    outcome.model = model = new_model
        access = self.access
        if access is not None:
            sent = outgoing.body
            hit = await access.admit(
                ctx,
                route,
                endpoint.name,
                sent,
                bool(stream),
                request.headers,
                fields if sent is body else None,  # the body parsed, unchanged by a hook
            )
            if hit is not None:
                strip_usage = bool(stream) and not _asks_for_usage(stream_options)
                return await self._replay(ctx, endpoint, route, hit, strip_usage)
        strip_usage = False
        if stream and self.stream_usage and endpoint in _USAGE_ENDPOINTS:
            strip_usage = _ask_for_usage(outgoing, body, stream_options)
        answer = await self.forwarder.exchange(ctx, route, outgoing, model)
        upstream = answer.upstream
        outcome.upstream_request_id = upstream.request_id
        admission = ctx.admission
        if admission is not None and admission.headers is not None:
            # The gateway's limits, not the upstream's, in one set (a slice: no call).
            response_headers = [h for h in upstream.headers if h[0][:12] != "x-ratelimit-"]
            response_headers += answer.headers
            response_headers += admission.headers
        else:
            response_headers = [*upstream.headers, *answer.headers]
        if outcome.cache is not None:
            response_headers.append(("x-gateway-cache", outcome.cache))
        if admission is not None and admission.cache_key is not None and admission.may_store:
            admission.capture = [] if answer.streamed else [answer.content]
            admission.streamed = answer.streamed
            admission.content_type = upstream.content_type
        if answer.streamed:
            return self._stream(ctx, endpoint, answer, response_headers, strip_usage)
        content = answer.content
        usage = None
        if upstream.status < 300 and upstream.content_type.startswith("application/json"):
            usage = outcome.usage = answer.deployment.provider.usage(content)
        answer.deployment.ended(_tokens(usage))
        response = Response(upstream.status, response_headers, content, endpoint.response_type)
        if self.hooks.after_response:
            await self.hooks.after_response.each(ctx, response)
        return response

    def _default_route(self) -> Route:
        route = self.registry.default_route()
        if route is None:
            raise NotFoundError(
                "This request names no model, and the gateway has no default provider to "
                "send it to (default_provider in the config file)."
            )
        return route

    def _stream(
        self,
        ctx: RequestContext,
        endpoint: Endpoint,
        answer: Answer,
        headers: list[tuple[str, str]],
        strip_usage: bool,
    ) -> StreamingResponse:
        upstream = answer.upstream
        is_sse = upstream.content_type.startswith("text/event-stream")
        next_chunk, iterator, chunk_hooks = _chunk_source(
            self.hooks.on_chunk if is_sse else _NO_HOOKS,
            ctx,
            endpoint,
            getattr(upstream, "next_chunk", None),
            upstream.iter_chunks,
        )
        deployment = answer.deployment
        on_stream_end = self.on_stream_end

        def on_end(ctx: RequestContext, how: str, failure: Exception | None) -> None:
            deployment.ended(_tokens(ctx.outcome.usage))
            on_stream_end(ctx, how, failure)

        admission = ctx.admission
        relay = Relay(
            ctx,
            next_chunk,
            on_error=self._stream_failed(ctx, is_sse, endpoint),
            on_end=on_end,
            close_upstream=upstream.close,
            timers=self.timers,
            idle=answer.route.timeouts.idle,  # type: ignore[union-attr]  # the answering model's
            running=self.streams,
            strip_usage=strip_usage and is_sse,
            # A provider that translates its stream sets the usage itself ("own").
            usage_of_tail=(
                (usage_of_response_stream if endpoint is RESPONSES else usage_of_stream_tail)
                if is_sse and deployment.provider.stream_usage == "ask"
                else None
            ),
            capture=admission.capture if admission is not None else None,
            capture_limit=admission.capture_limit if admission is not None else 0,
            iterator=iterator,
            chunk_hooks=chunk_hooks,
        )
        return StreamingResponse(upstream.status, headers, relay.iterate(), relay.pump)

    def _stream_failed(
        self, ctx: RequestContext, is_sse: bool, endpoint: Endpoint = CHAT
    ) -> Callable[[Exception], Awaitable[bytes | None]]:
        async def on_error(error: Exception) -> bytes | None:
            # Headers and some events are out: the status cannot change any more. Say
            # so in the stream, without a [DONE], so it never passes for a full answer.
            if not isinstance(error, GatewayError):
                logger.error("stream %s failed", ctx.request_id, exc_info=error)
                error = InternalError("The gateway failed while streaming.")
            await self.notify_error(ctx, error)
            if not is_sse:
                return None
            if endpoint is RESPONSES:  # the Responses API's own last words: an error event
                return responses_error_event(error)
            return b"data: " + error.body() + b"\n\n"

        return on_error

    async def _replay(
        self, ctx: RequestContext, endpoint: Endpoint, route: Route, hit: Entry, strip_usage: bool
    ) -> AnyResponse:
        """A cached answer, served as the upstream's was: a stream as a stream, and
        through the same hooks (a redacting hook must see what the cache gives back)."""
        headers = [("content-type", hit.content_type), ("x-gateway-cache", HIT)]
        if not hit.stream:
            response = Response(hit.status, headers, hit.body, endpoint.response_type)
            if self.hooks.after_response:
                await self.hooks.after_response.each(ctx, response)
            return response
        is_sse = hit.content_type.startswith("text/event-stream")
        body = _strip_usage(hit.body) if strip_usage and is_sse else hit.body
        next_chunk, iterator, chunk_hooks = _chunk_source(
            self.hooks.on_chunk if is_sse else _NO_HOOKS, ctx, endpoint, None, lambda: _once(body)
        )
        relay = Relay(
            ctx,
            next_chunk,
            on_error=self._stream_failed(ctx, is_sse),
            on_end=self.on_stream_end,
            close_upstream=_nothing,
            timers=self.timers,
            idle=route.timeouts.idle,  # type: ignore[union-attr]
            running=self.streams,
            usage_of_tail=None,  # a hit costs no tokens
            iterator=iterator,
            chunk_hooks=chunk_hooks,
        )
        return StreamingResponse(hit.status, headers, relay.iterate(), relay.pump)


def _chunk_source(
    hooks: HookList,
    ctx: RequestContext,
    endpoint: Endpoint,
    reader: NextChunk | None,
    chunks: Callable[[], AsyncIterator[bytes]],
) -> tuple[NextChunk, AsyncIterator[bytes] | None, ChunkHooks | None]:
    """Where a relay reads a stream (the upstream's own ``reader`` if it has one, else
    ``chunks()``; the iterator to close, if any) and the chunk hooks it runs itself.

    Plain hooks run in the relay, between a read and its write; async ones need a
    generator of their own between the reads and the relay."""
    if not hooks:
        if reader is not None:
            return reader, None, None  # nothing between the upstream's reads and the client
        iterator = chunks()
        return chunks_of(iterator), iterator, None
    filtered = ChunkHooks(hooks, ctx, endpoint.chunk_type)
    if not filtered.plain:
        iterator = run_chunk_hooks(hooks, ctx, chunks(), endpoint.chunk_type)
        return chunks_of(iterator), iterator, None
    if reader is not None:
        return reader, None, filtered
    iterator = chunks()
    return chunks_of(iterator), iterator, filtered


def _tokens(usage: Usage | None) -> int:
    return 0 if usage is None else usage.total_tokens


def _ask_for_usage(outgoing: UpstreamRequest, body: bytes, stream_options: msgspec.Raw) -> bool:
    """Ask the upstream for the stream's usage when the client did not; ``True`` when
    the gateway asked (and so must take the usage event back out)."""
    if outgoing.body is body and not stream_options:
        # The usual case: no stream_options. Spliced in, the body is not re-encoded.
        end = body.rindex(b"}")
        outgoing.body = body[:end] + _INCLUDE_USAGE + body[end:]
        return True
    options = outgoing.json.get("stream_options")
    if options is None:
        options = {}
    elif not isinstance(options, dict) or options.get("include_usage") is True:
        return False  # asked already, or not an object: the upstream judges it as sent
    outgoing.json["stream_options"] = {**options, "include_usage": True}
    return True


async def _once(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


def _nothing() -> None:
    pass


def _asks_for_usage(stream_options: msgspec.Raw) -> bool:
    """Whether the client's own request asks for a stream's usage."""
    if not stream_options:
        return False
    options = msgspec.json.decode(stream_options)
    return isinstance(options, dict) and options.get("include_usage") is True


def _strip_usage(stream: bytes) -> bytes:
    stripper = UsageStripper()
    return stripper.feed(stream) + stripper.flush()


def responses_error_event(error: GatewayError) -> bytes:
    """A Responses stream's ``error`` event for a failure of the gateway's seeing: its
    code, message and param flat, as the API sends them. (The stream's own sequence is
    not read on a passthrough: the event says ``sequence_number`` 0 of its own.)"""
    try:
        said = msgspec.json.decode(error.body())
    except (msgspec.DecodeError, RecursionError):
        said = None
    inner = said.get("error") if isinstance(said, dict) else None
    if not isinstance(inner, dict):
        inner = {}
    event = {
        "type": "error",
        "code": inner.get("code") or inner.get("type"),
        "message": inner.get("message") or error.message,
        "param": inner.get("param"),
        "sequence_number": 0,
    }
    return b"event: error\ndata: " + msgspec.json.encode(event) + b"\n\n"


def json_body(body: bytes) -> bytes:
    """The body, if it can be JSON at all: present and valid UTF-8."""
    if not body:
        raise InvalidRequestError("The request body is empty; expected a JSON object.")
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError:
            raise InvalidRequestError("The request body is not valid UTF-8.") from None
    return body
