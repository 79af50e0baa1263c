"""The gateway core: its lifecycle, and from a ``Request`` to a ``Response``.

handle: the body's limit (413) -> probes -> authenticate (every other route) -> the
header block's limit (431) -> decode the body -> route -> the pipeline (pipeline.py)
-> the request's outcome, closed once
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from ..access.auth import APIKeyAuth, presented_key
from ..access.stores.memory import MemoryStore
from ..observability.pricing import Prices
from ..providers import Provider
from ..routing.registry import ModelRegistry
from ..wire.encoding import decode_body
from ..wire.endpoints import CHAT, COMPLETIONS, EMBEDDINGS
from ..wire.headers import HeaderList, forwardable_headers
from ..wire.http import Request, Response, StreamingResponse, error_response, json_response
from .context import RequestContext, reset_request_ids
from .errors import (
    AuthenticationError,
    ClientError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    ShuttingDownError,
    UpstreamError,
)
from .forwarding import Forwarder
from .hooks import Hooks
from .messages import Messages, anthropic_error_response
from .outcome import (
    ANSWERED,
    CLIENT_CLOSED,
    CLIENT_LEFT,
    DRAINED,
    FAILED,
    REFUSED,
    UPSTREAM_ERROR,
)
from .pipeline import Pipeline
from .relay import Relay
from .responses import Responses, ResponsesOptions
from .timers import Timers

if TYPE_CHECKING:
    from ..access.control import AccessControl
    from ..access.stores import Store
    from ..observability.tracing import Tracer

logger = logging.getLogger("gateway")
_perf_counter = time.perf_counter

AnyResponse = Response | StreamingResponse
# (ctx, the request, its body decoded, the headers to forward) -> the response
Handler = Callable[[RequestContext, Request, bytes, HeaderList], Awaitable[AnyResponse]]
ProbeHandler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[GatewayError], Response]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what the gateway accepts and holds. (Timeouts are per model: routing/policy.py.)"""

    max_body_bytes: int = 32 * 1024 * 1024  # decoded size, when the body came compressed
    max_header_bytes: int = 64 * 1024  # the whole request header block
    max_connections: int = 0  # pooled upstream connections per worker; 0 = no limit
    max_connections_per_host: int = 0


PROBE = "probe"  # the endpoint of /health, /ready, /metrics

# A cancellation carrying this asks a request to end because the worker is stopping.
SHUTDOWN = "gateway shutting down"
_HEALTH = b'{"status":"ok"}'
_encode = msgspec.json.encode


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
        stream_usage: bool = True,
        prices: Prices | None = None,
        tracer: Tracer | None = None,
        access: AccessControl | None = None,
        state: Store | None = None,
        responses: ResponsesOptions | None = None,
    ) -> None:
        self.registry = models if isinstance(models, ModelRegistry) else ModelRegistry(models)
        self.registry.check_fallbacks()  # a fallback to nowhere fails now, not mid-request
        keys = [key for key in api_keys if key]
        builtin: list[object] = [APIKeyAuth(keys)] if keys else []
        self.access = access
        if access is not None:
            access.attach(self.registry)
            if access.keys_enabled:
                builtin.append(access.key_hook())
            builtin.append(access)
        self.hooks = Hooks([*builtin, *hooks])
        # The usual authentication: one plain hook (the key list, or the virtual keys in
        # this process), called directly: no coroutine per request.
        only = self.hooks.authenticate
        self._sole_authenticate = only[0][0] if len(only) == 1 and not only[0][1] else None
        self.limits = limits or Limits()
        self.prices = prices or Prices()
        self._prices = self.prices if self.prices else None  # None: nothing to price
        self.session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set at start-up
        self.timers = Timers()
        self.tracer = tracer
        self.forwarder = Forwarder(self.registry, self.timers, tracer)
        if access is not None and access.shared:
            self.forwarder.on_cooldown = access.deployment_failed
        self.draining = False
        # What is in flight, so that a stopping worker can end what outlives its drain.
        self._tasks: set[asyncio.Task[object]] = set()
        # Weakly: a stream an adapter drops without ever pulling it leaves no trace.
        self._streams: weakref.WeakSet[Relay] = weakref.WeakSet()
        self.pipeline = Pipeline(
            self.registry,
            self.hooks,
            self.forwarder,
            self.timers,
            self._streams,
            on_stream_end=self._stream_ended,
            notify_error=self._notify_error,
            stream_usage=stream_usage,
            access=access,
        )
        pipeline = self.pipeline
        messages = Messages(pipeline, self.registry)  # Anthropic's API in front
        # What the API itself keeps between requests: on the access store when there is
        # one (Redis: shared by every replica), else in this process.
        self.state = state or (access.store if access is not None else MemoryStore(0))
        self.responses = Responses(pipeline, self.registry, self.state, responses)
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): partial(pipeline.model_endpoint, CHAT),
            ("POST", "/v1/completions"): partial(pipeline.model_endpoint, COMPLETIONS),
            ("POST", "/v1/embeddings"): partial(pipeline.model_endpoint, EMBEDDINGS),
            ("GET", "/v1/models"): pipeline.list_models,
            ("POST", "/v1/messages"): messages.create,
            ("POST", "/v1/messages/count_tokens"): messages.count_tokens,
            ("POST", "/v1/responses"): self.responses.create,
        }
        # Paths whose errors are not in OpenAI's shape (the gateway's own included).
        self._error_renderers: dict[str, ErrorRenderer] = {
            "/v1/messages": anthropic_error_response,
            "/v1/messages/count_tokens": anthropic_error_response,
        }
        # Known endpoints answer 405 to another method; not chat completions: OpenAI lists
        # stored completions at GET /v1/chat/completions, which is passed through.
        self._post_only = frozenset(
            path
            for method, path in self._routes
            if method == "POST" and path != "/v1/chat/completions"
        )
        # Probes answer without a key: load balancers, orchestrators and scrapers send none.
        self._probes: dict[tuple[str, str], ProbeHandler] = {
            ("GET", "/health"): self._health,
            ("GET", "/ready"): self._ready,
        }
        # Served like probes under a path prefix (the admin API: it checks its own key).
        self._probe_prefixes: list[tuple[str, ProbeHandler]] = []

    @property
    def requires_auth(self) -> bool:
        return bool(self.hooks.authenticate)

    def add_probe(self, method: str, path: str, handler: ProbeHandler) -> None:
        """Serve ``path`` without authentication (readiness, metrics)."""
        self._probes[(method, path)] = handler

    def add_probe_prefix(self, prefix: str, handler: ProbeHandler) -> None:
        """Serve every path under ``prefix`` as a probe (the admin API, the console)."""
        self._probe_prefixes.append((prefix, handler))

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Create this worker's pooled session, on the running loop; start providers and
        the hooks' ``startup``."""
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
        if self.tracer is not None:
            self.tracer.start()
        for startup, _ in self.hooks.startup:
            await _maybe_await(startup())

    async def shutdown(self) -> None:
        for shutdown, _ in reversed(self.hooks.shutdown):
            try:
                await _maybe_await(shutdown())
            except Exception:
                logger.exception("a hook's shutdown failed")
        await self.timers.stop()
        if self.tracer is not None:
            self.tracer.stop()
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
        headers = request.headers
        ctx = RequestContext(
            headers.get("x-request-id"), "", request.method, request.path, request.client
        )
        outcome = ctx.outcome
        outcome.user_agent = headers.get("user-agent")
        outcome.bytes_in = len(request.body)
        if self.tracer is not None:
            if (request.method, request.path) not in self._probes:
                self.tracer.start_request(ctx, headers)
        elif (traceparent := headers.get("traceparent")) is not None and len(traceparent) >= 55:
            outcome.trace_id = traceparent[3:35]  # W3C: version-traceid-parentid-flags
        task = asyncio.current_task(self._loop)
        tasks = self._tasks
        tasks.add(task)  # type: ignore[arg-type]
        try:
            response = await self._dispatch(ctx, request)
        except GatewayError as error:
            response = await self._fail(ctx, error, request.path)
        except asyncio.CancelledError as cancelled:
            if cancelled.args[:1] != (SHUTDOWN,):
                self._complete(ctx, CLIENT_CLOSED, CLIENT_LEFT)
                raise
            task.uncancel()  # type: ignore[union-attr]
            stopping = ShuttingDownError("The gateway is shutting down.")
            response = await self._fail(ctx, stopping, request.path)
        except Exception:
            logger.exception("request %s failed inside the gateway", ctx.request_id)
            failed = InternalError("The gateway failed on this request.")
            response = await self._fail(ctx, failed, request.path)
        finally:
            tasks.discard(task)  # type: ignore[arg-type]
        response.headers.append(("x-request-id", ctx.request_id))
        if type(response) is not StreamingResponse:  # a stream's relay completes it
            outcome.bytes_out = len(response.body)
            self._complete(ctx, response.status, outcome.outcome or ANSWERED)
        return response

    async def refuse(self, request: Request, error: GatewayError) -> Response:
        """Answer a request a server adapter found broken before the core could read it
        (a body cut short): the error, with its outcome recorded like any other."""
        ctx = RequestContext(
            request.headers.get("x-request-id"), "", request.method, request.path, request.client
        )
        outcome = ctx.outcome
        response = await self._fail(ctx, error, request.path)
        response.headers.append(("x-request-id", ctx.request_id))
        outcome.bytes_out = len(response.body)
        self._complete(ctx, response.status, outcome.outcome)
        return response

    async def _dispatch(self, ctx: RequestContext, request: Request) -> AnyResponse:
        limits = self.limits
        body = request.body
        if len(body) > limits.max_body_bytes:
            raise RequestTooLargeError(
                f"The request body is larger than {limits.max_body_bytes} bytes."
            )
        key = (request.method, request.path)
        probe = self._probes.get(key)
        if probe is None and self._probe_prefixes:
            probe = next((h for p, h in self._probe_prefixes if request.path.startswith(p)), None)
        if probe is not None:
            ctx.outcome.endpoint = PROBE  # not logged or counted: probes come every few seconds
            self._tasks.discard(asyncio.current_task(self._loop))  # nor in flight
            return await probe(request)
        if self.hooks.authenticate:
            secret = presented_key(request.headers)
            authenticate = self._sole_authenticate
            if authenticate is not None:
                identity = authenticate(ctx, secret)
            else:
                identity = await self.hooks.authenticate.first(ctx, secret)
            if identity is None:
                raise _unauthenticated(secret)
            ctx.identity = identity
            ctx.outcome.key = (
                identity if isinstance(identity, str) else getattr(identity, "id", None)
            )
        # One pass over the headers: the ones to forward, and the block's size (431).
        forwarded = forwardable_headers(request.headers, limits.max_header_bytes)
        upgrade = request.headers.get("upgrade")
        if upgrade is not None and "websocket" in upgrade.lower():
            raise InvalidRequestError(
                "WebSocket connections are not served by this gateway.", code="upgrade_refused"
            )
        encoding = request.headers.get("content-encoding")
        if encoding is not None:
            body = decode_body(body, encoding, limits.max_body_bytes)
        handler = self._routes.get(key)
        if handler is not None:
            return await handler(ctx, request, body, forwarded)
        if request.path in self._post_only:  # a known endpoint, the wrong method
            raise MethodNotAllowedError(request.method, request.path)
        if self.responses.handles(request.path):
            return await self.responses.item(ctx, request, body, forwarded)
        if request.path.startswith("/v1/"):
            return await self.pipeline.passthrough(ctx, request, body, forwarded)
        raise NotFoundError(f"Unknown path: {request.path}", code="unknown_url")

    async def _health(self, request: Request) -> Response:
        return json_response(200, _HEALTH)

    async def _ready(self, request: Request) -> Response:
        """200 while this worker serves; 503 while it drains, or while every deployment
        of every model is cooling down (nothing would be answered)."""
        if self.draining:
            return json_response(503, b'{"status":"draining","reason":"the gateway is stopping"}')
        now = self.timers.clock()
        deployments = self.registry.deployments()
        cooling = sorted({d.name for d in deployments if d.cooling(now)})
        if deployments and all(d.cooling(now) for d in deployments):
            body = {
                "status": "unavailable",
                "reason": "every deployment of every model is cooling down after failures",
                "cooling": cooling,
            }
            return json_response(503, _encode(body))
        return json_response(200, _encode({"status": "ready", "cooling": cooling}))

    def gauges(self) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        """What this worker holds now, for the metrics."""
        now = self.timers.clock()
        return {
            "gateway_in_flight_requests": [((), float(self.in_flight))],
            "gateway_open_streams": [((), float(len(self._streams)))],
            "gateway_deployment_cooling": [
                ((d.name,), 1.0 if d.cooling(now) else 0.0) for d in self.registry.deployments()
            ],
        }

    # ------------------------------------------------------------------ endings

    def _complete(self, ctx: RequestContext, status: int, how: str) -> None:
        """Close the request's outcome — once — and tell the ``on_complete`` hooks."""
        outcome = ctx.outcome
        outcome.status = status
        outcome.outcome = how
        if outcome.usage is not None and self._prices is not None:
            outcome.cost = self._prices.cost(outcome)
        started = ctx.started
        ended = _perf_counter() - started
        outcome.duration_ms = ended * 1000
        if ctx.first_byte_at:
            ttfb: float | None = ctx.first_byte_at - started
            outcome.ttfb_ms = ttfb * 1000  # type: ignore[operator]
        elif how is not CLIENT_LEFT and how is not DRAINED:
            ttfb = ended  # a whole answer's first byte leaves with the rest
            outcome.ttfb_ms = outcome.duration_ms
        else:
            ttfb = None
        if outcome.attempts:
            upstream = ctx.upstream_seconds
            outcome.upstream_ms = upstream * 1000
            if ttfb is not None:
                outcome.overhead_ms = max(0.0, ttfb - upstream) * 1000
        if ctx.span is not None:
            self.tracer.end_request(ctx)  # type: ignore[union-attr]
        if outcome.endpoint is PROBE:
            return
        for on_complete, is_async in self.hooks.on_complete:
            try:
                result = on_complete(ctx)
                if is_async:
                    self._loop.create_task(_logged(result, ctx))
            except Exception:
                logger.exception("an on_complete hook failed on request %s", ctx.request_id)

    def _stream_ended(self, ctx: RequestContext, how: str, failure: Exception | None) -> None:
        if isinstance(failure, GatewayError):
            ctx.outcome.error_type, ctx.outcome.error_code = failure.type, failure.code
        elif failure is not None:
            ctx.outcome.error_type, ctx.outcome.error_code = "server_error", "internal_error"
        status = ctx.outcome.status or 200
        self._complete(ctx, status, how)

    async def _fail(self, ctx: RequestContext, error: GatewayError, path: str) -> Response:
        outcome = ctx.outcome
        outcome.error_type, outcome.error_code = error.type, error.code
        outcome.outcome = (
            REFUSED
            if isinstance(error, ClientError)
            else UPSTREAM_ERROR
            if isinstance(error, UpstreamError)
            else FAILED
        )
        replacement = await self._notify_error(ctx, error)
        if replacement is not None:
            return replacement.copy()
        return self._error_renderers.get(path, error_response)(error)

    async def _notify_error(self, ctx: RequestContext, error: GatewayError) -> Response | None:
        if not self.hooks.on_error:
            return None
        try:
            return await self.hooks.on_error.first(ctx, error)
        except Exception:
            logger.exception("an on_error hook failed on request %s", ctx.request_id)
            return None

    # ------------------------------------------------------------------ shutdown

    @property
    def in_flight(self) -> int:
        """Requests being answered, streams being relayed."""
        return len(self._tasks) + len(self._streams)

    async def drain(self, seconds: float) -> None:
        """Give what is in flight ``seconds`` to finish; then end it.

        A request still waiting for its upstream gets a 503; a stream still running ends
        with an SSE error event. The worker's server stops taking new connections first.
        """
        self.draining = True
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


def _unauthenticated(secret: str | None) -> AuthenticationError:
    return AuthenticationError(
        "Incorrect API key provided."
        if secret
        else "No API key provided. Send it as 'Authorization: Bearer <key>'."
    )


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


async def _logged(result: Awaitable[object], ctx: RequestContext) -> None:
    try:
        await result
    except Exception:
        logger.exception("an on_complete hook failed on request %s", ctx.request_id)
