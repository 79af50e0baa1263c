"""The gateway core: from a ``Request`` to a ``Response``, knowing nothing of servers.

route -> authenticate -> read routing fields -> resolve model -> before_request hooks
      -> provider (pooled session, first-byte timeout) -> after_response hooks
                                                       or the SSE chunk-hook pipeline
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import msgspec

from . import multipart
from .auth import APIKeyAuth, presented_key
from .context import RequestContext, reset_request_ids
from .endpoints import CHAT, COMPLETIONS, EMBEDDINGS, PASSTHROUGH, Endpoint
from .errors import (
    AuthenticationError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RequestTooLargeError,
    ShuttingDownError,
)
from .forwarding import Answer, Forwarder
from .hooks import Hooks
from .http import (
    Request,
    Response,
    StreamingResponse,
    error_response,
    forwardable_headers,
    json_response,
)
from .providers import Provider, UpstreamRequest
from .registry import ModelRegistry, Route
from .sse import run_chunk_hooks
from .timers import Timers
from .types import Model, ModelList

logger = logging.getLogger("gateway")

AnyResponse = Response | StreamingResponse
Handler = Callable[[RequestContext, Request], Awaitable[AnyResponse]]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what the gateway accepts and holds. (Timeouts are per model: policy.py.)"""

    max_body_bytes: int = 32 * 1024 * 1024
    max_connections: int = 0  # pooled upstream connections per worker; 0 = no limit
    max_connections_per_host: int = 0


# A passthrough path is appended to the provider's base URL, so it may hold only plain
# path characters, and no segment may climb out of the API root, encoded or not.
_SAFE_PATH = re.compile(r"/v1(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+/?")
_CLIMBING = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)|%2f|%5c", re.IGNORECASE)

# A cancellation carrying this asks a request to end because the worker is stopping.
SHUTDOWN = "gateway shutting down"
_HEALTH = json_response(200, b'{"status":"ok"}')


class Gateway:
    """An OpenAI-compatible gateway: models, providers and hooks, ready to ``handle``.

    Use it under any server adapter, or directly::

        gateway = Gateway(OpenAIProvider(api_key=...), hooks=[MyHook()])
        async with gateway:
            response = await gateway.handle(Request("POST", "/v1/chat/completions", ...))
    """

    def __init__(
        self,
        models: ModelRegistry | Provider,
        *,
        hooks: Iterable[object] = (),
        api_keys: Iterable[str] = (),
        limits: Limits | None = None,
    ) -> None:
        self.registry = models if isinstance(models, ModelRegistry) else ModelRegistry(models)
        self.registry.check_fallbacks()  # a fallback to nowhere fails now, not mid-request
        keys = [key for key in api_keys if key]
        self.hooks = Hooks([APIKeyAuth(keys), *hooks] if keys else hooks)
        self.limits = limits or Limits()
        self.session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set at start-up
        self.timers = Timers()
        self.forwarder = Forwarder(self.registry, self.timers)
        # What is in flight, so that a stopping worker can end what outlives its drain.
        self._tasks: set[asyncio.Task[object]] = set()
        # Weakly: a stream an adapter drops without ever pulling it leaves no trace.
        self._streams: weakref.WeakSet[StreamingResponse] = weakref.WeakSet()
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._endpoint(CHAT),
            ("POST", "/v1/completions"): self._endpoint(COMPLETIONS),
            ("POST", "/v1/embeddings"): self._endpoint(EMBEDDINGS),
            ("GET", "/v1/models"): self._list_models,
            ("GET", "/health"): self._health,
        }
        self._model_list = msgspec.json.encode(
            ModelList(data=[Model(id=name) for name in self.registry.names()])
        )

    @property
    def requires_auth(self) -> bool:
        return bool(self.hooks.authenticate)

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Create this worker's pooled session, on the running loop, and start providers."""
        reset_request_ids()
        self._loop = asyncio.get_running_loop()
        self.timers.start(self._loop)
        limits = self.limits
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections,
            limit_per_host=limits.max_connections_per_host,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # deadlines are the gateway's own
            cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies never reach another
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        for provider in self.registry.providers():
            await provider.start(self.session)

    async def shutdown(self) -> None:
        await self.timers.stop()
        for provider in self.registry.providers():
            await provider.stop()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __aenter__(self) -> Gateway:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # ------------------------------------------------------------------ handling

    async def handle(self, request: Request) -> AnyResponse:
        """Answer one request. Never raises, except when the task is cancelled."""
        ctx = RequestContext(request.headers.get("x-request-id"))
        task = asyncio.current_task(self._loop)
        tasks = self._tasks
        tasks.add(task)  # type: ignore[arg-type]
        try:
            if len(request.body) > self.limits.max_body_bytes:
                raise RequestTooLargeError(
                    f"The request body is larger than {self.limits.max_body_bytes} bytes."
                )
            handler = self._routes.get((request.method, request.path))
            if handler is not None:
                response = await handler(ctx, request)
            elif request.path.startswith("/v1/"):
                response = await self._passthrough(ctx, request)
            else:
                raise NotFoundError(f"Unknown path: {request.path}", code="unknown_url")
        except GatewayError as error:
            response = await self._fail(ctx, error)
        except asyncio.CancelledError as cancelled:
            if cancelled.args[:1] != (SHUTDOWN,):
                raise
            task.uncancel()  # type: ignore[union-attr]
            response = await self._fail(ctx, ShuttingDownError("The gateway is shutting down."))
        except Exception:
            logger.exception("request %s failed inside the gateway", ctx.request_id)
            response = await self._fail(ctx, InternalError("The gateway failed on this request."))
        finally:
            tasks.discard(task)  # type: ignore[arg-type]
        response.headers.append(("x-request-id", ctx.request_id))
        return response

    @property
    def in_flight(self) -> int:
        """Requests being answered, streams being relayed."""
        return len(self._tasks) + len(self._streams)

    async def drain(self, seconds: float) -> None:
        """Give what is in flight ``seconds`` to finish; then end it.

        A request still waiting for its upstream gets a 503; a stream still running ends
        with an SSE error event. The worker's server stops taking new connections first.
        """
        if await self._idle_within(seconds):
            return
        logger.warning("ending %d requests still in flight after %g s", self.in_flight, seconds)
        for stream in list(self._streams):
            stream.abort(ShuttingDownError("The gateway is shutting down."))
        for task in list(self._tasks):
            task.cancel(SHUTDOWN)
        await self._idle_within(5.0)

    async def _idle_within(self, seconds: float) -> bool:
        # Polled, not signalled: this runs once, at shutdown; requests pay nothing for it.
        deadline = self._loop.time() + seconds
        while self.in_flight and self._loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return not self.in_flight

    def _endpoint(self, endpoint: Endpoint) -> Handler:
        async def handler(ctx: RequestContext, request: Request) -> AnyResponse:
            ctx.endpoint = endpoint.name
            if self.hooks.authenticate:
                await self._authenticate(ctx, request)
            body = _json_body(request.body)
            fields = endpoint.parse(body)
            return await self._forward(ctx, request, endpoint, body, fields.model, fields.stream)

        return handler

    async def _health(self, ctx: RequestContext, request: Request) -> Response:
        return _HEALTH.copy()

    async def _list_models(self, ctx: RequestContext, request: Request) -> AnyResponse:
        ctx.endpoint = "models"
        if self.hooks.authenticate:
            await self._authenticate(ctx, request)
        if self.registry.is_open:
            return await self._forward(ctx, request, PASSTHROUGH, b"", None, None)
        return json_response(200, self._model_list)

    async def _passthrough(self, ctx: RequestContext, request: Request) -> AnyResponse:
        """Any other ``/v1`` path: forwarded as sent, to the provider its model names."""
        ctx.endpoint = "passthrough"
        if not _SAFE_PATH.fullmatch(request.path) or _CLIMBING.search(request.path):
            raise NotFoundError(f"Unknown path: {request.path}", code="unknown_url")
        if self.hooks.authenticate:
            await self._authenticate(ctx, request)
        if request.method == "GET" and request.path.startswith("/v1/models/"):
            model_id = request.path[len("/v1/models/") :]
            if not self.registry.is_open:
                if model_id not in self.registry.names():
                    raise ModelNotFoundError(model_id)
                return json_response(200, msgspec.json.encode(Model(id=model_id)))
        body = request.body
        model: str | None = None
        stream: bool | None = None
        content_type = request.headers.get("content-type")
        boundary = multipart.boundary_of(content_type)
        if boundary is not None:
            model = multipart.read_field(body, boundary, "model")
        elif body and (content_type is None or "json" in content_type):
            fields = PASSTHROUGH.parse(_json_body(body))
            model, stream = fields.model, fields.stream
        return await self._forward(ctx, request, PASSTHROUGH, body, model, stream)

    async def _authenticate(self, ctx: RequestContext, request: Request) -> None:
        key = presented_key(request.headers)
        identity = await self.hooks.authenticate.first(ctx, key)
        if identity is None:
            raise AuthenticationError(
                "Incorrect API key provided."
                if key
                else "No API key provided. Send it as 'Authorization: Bearer <key>'."
            )
        ctx.identity = identity

    def _default_route(self) -> Route:
        route = self.registry.default_route()
        if route is None:
            raise NotFoundError(
                "This request names no model and the gateway has no default provider."
            )
        return route

    async def _forward(
        self,
        ctx: RequestContext,
        request: Request,
        endpoint: Endpoint,
        body: bytes,
        model: str | None,
        stream: bool | None,
    ) -> AnyResponse:
        route = self.registry.resolve(model) if model is not None else self._default_route()
        ctx.model, ctx.stream = model, bool(stream)
        ctx.provider, ctx.upstream_model = route.provider, route.upstream_model or model
        outgoing = UpstreamRequest(
            request.method,
            request.path[3:],  # below /v1: providers append it to their base URL
            request.query,
            forwardable_headers(request.headers),
            body,
            endpoint.request_type,
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
                    ctx.model = model = new_model
        answer = await self.forwarder.exchange(ctx, route, outgoing, model)
        if answer.streamed:
            return self._stream(ctx, endpoint, answer)
        answer.finished()
        upstream = answer.upstream
        response = Response(upstream.status, answer.headers, answer.content, endpoint.response_type)
        if self.hooks.after_response:
            await self.hooks.after_response.each(ctx, response)
        return response

    def _stream(self, ctx: RequestContext, endpoint: Endpoint, answer: Answer) -> StreamingResponse:
        upstream = answer.upstream
        chunks = upstream.iter_chunks()
        is_sse = upstream.content_type.startswith("text/event-stream")
        if is_sse and self.hooks.on_chunk:
            chunks = run_chunk_hooks(self.hooks.on_chunk, ctx, chunks, endpoint.chunk_type)

        async def on_error(error: Exception) -> bytes | None:
            # Headers and some events are out: the status cannot change any more. Say
            # so in the stream, without a [DONE], so it never passes for a full answer.
            if not isinstance(error, GatewayError):
                logger.error("stream %s failed", ctx.request_id, exc_info=error)
                error = InternalError("The gateway failed while streaming.")
            await self._notify_error(ctx, error)
            return b"data: " + error.body() + b"\n\n" if is_sse else None

        return StreamingResponse(
            upstream.status,
            answer.headers,
            chunks,
            on_error,
            close_upstream=upstream.close,
            on_close=answer.finished,
            timers=self.timers,
            idle=answer.route.timeouts.idle,  # type: ignore[union-attr]  # the answering model's
            running=self._streams,
        )

    async def _fail(self, ctx: RequestContext, error: GatewayError) -> Response:
        replacement = await self._notify_error(ctx, error)
        return replacement.copy() if replacement is not None else error_response(error)

    async def _notify_error(self, ctx: RequestContext, error: GatewayError) -> Response | None:
        if not self.hooks.on_error:
            return None
        try:
            return await self.hooks.on_error.first(ctx, error)
        except Exception:
            logger.exception("an on_error hook failed on request %s", ctx.request_id)
            return None


def _json_body(body: bytes) -> bytes:
    """The body, if it can be JSON at all: present and valid UTF-8."""
    if not body:
        raise InvalidRequestError("The request body is empty; expected a JSON object.")
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError:
            raise InvalidRequestError("The request body is not valid UTF-8.") from None
    return body
