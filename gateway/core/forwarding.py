"""Getting an answer from upstream: deployments, retries, backoff, fallbacks, deadlines.

One request may take several attempts: on the model's deployments (each chosen by its
strategy, cooling ones skipped), with backoff between them, then on its fallback models.
Everything happens before the client has been sent a byte — for streams too, whose
first chunk is read as part of the attempt — so a failed attempt leaves no trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

from ..providers import UpstreamRequest, UpstreamResponse
from ..routing.balancing import Deployment
from ..routing.policy import retry_after
from ..routing.registry import ModelRegistry, Route
from ..wire import multipart
from ..wire.headers import header_value, safe_header_value
from ..wire.payload import JSONBody
from .errors import GatewayError, UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from .timers import Timers

if TYPE_CHECKING:
    from ..observability.tracing import Tracer
    from .context import RequestContext

logger = logging.getLogger("gateway")


class Answer:
    """The upstream answer an exchange settled on, and the headers the gateway adds to it."""

    __slots__ = ("content", "deployment", "headers", "route", "streamed", "upstream")

    def __init__(
        self, upstream: UpstreamResponse, content: bytes, streamed: bool, deployment: Deployment
    ) -> None:
        self.upstream = upstream
        self.content = content  # the whole body, unless streamed
        self.streamed = streamed
        self.deployment = deployment
        self.headers: tuple[tuple[str, str], ...] = ()  # the x-gateway-* headers
        self.route: Route | None = None  # the model that answered (set by the exchange)


class Forwarder:
    """Runs the attempts of one request against a model's deployments and fallbacks."""

    def __init__(
        self, registry: ModelRegistry, timers: Timers, tracer: Tracer | None = None
    ) -> None:
        self.registry = registry
        self.timers = timers
        self.tracer = tracer
        # Told (name, Unix time it cools down until) when a deployment starts cooling down.
        self.on_cooldown: Callable[[str, float], None] | None = None

    async def exchange(
        self, ctx: RequestContext, route: Route, outgoing: UpstreamRequest, model: str | None
    ) -> Answer:
        """The first good answer, or the last failure raised (``x-gateway-attempts`` added).

        ``model`` is the name in ``outgoing.body``; each attempt's body names the model
        its deployment expects.
        """
        clock = self.timers.clock
        started = clock()
        measured = perf_counter()  # the loop's clock is too coarse to measure upstream time
        outcome = ctx.outcome
        budget = route.timeouts.total
        body, sent_model = outgoing.body, model
        attempts = 0
        error: GatewayError | None = None
        candidates = [route]
        context_switched = False
        index = 0
        while index < len(candidates):
            candidate = candidates[index]
            index += 1
            retry = candidate.retry
            tried: list[Deployment] = []
            for attempt in range(retry.retries + 1):
                now = clock()
                left = budget - (now - started)
                if left <= 0:
                    break
                deployment = candidate.balancer.pick(now, tried)
                tried.append(deployment)
                target = deployment.upstream_model or candidate.name or model
                if target != sent_model:  # this deployment expects another name
                    outgoing.body = body if target == model else _with_model(outgoing, body, target)
                    sent_model = target
                outgoing.connect_timeout = candidate.timeouts.connect
                ctx.provider = deployment.provider
                outcome.provider, outcome.deployment = deployment.provider.name, deployment.name
                outcome.upstream_model = target
                attempts += 1
                outcome.attempts = attempts
                first_byte = min(deployment.timeout or candidate.timeouts.first_byte, left)
                try:
                    answer = await self._attempt(ctx, deployment, outgoing, now, first_byte)
                except UpstreamError as failure:
                    error = failure
                    failures = ctx.failed_attempts
                    if failures is None:
                        failures = ctx.failed_attempts = []
                    failures.append((deployment.name, _failure_kind(failure)))
                    if not self._retryable(ctx, failure, candidate, deployment):
                        if route.context_fallbacks and not context_switched and _too_long(failure):
                            logger.info(
                                "request %s: too long for %r; trying its context fallbacks",
                                ctx.request_id,
                                candidate.name,
                            )
                            # Too long for this model: try the larger ones, not this one again.
                            context_switched = True
                            candidates = [
                                *candidates[:index],
                                *self._resolve(route.context_fallbacks),
                            ]
                            break
                        ctx.upstream_seconds = perf_counter() - measured
                        raise _told(failure, attempts) from None
                    if attempt < retry.retries:
                        wait = retry.delay(attempt, _retry_after(failure))
                        if clock() - started + wait >= budget:
                            break
                        logger.info(
                            "request %s: attempt %d on %s failed (%s); retrying in %.2f s",
                            ctx.request_id,
                            attempts,
                            deployment.name,
                            failure.loggable(),
                            wait,
                        )
                        await asyncio.sleep(wait)
                    continue
                answer.route = candidate
                if candidate is not route:
                    outcome.fallback = candidate.name
                ctx.upstream_seconds = perf_counter() - measured
                model_header = candidate.header or _model_header(model)
                answer.headers = (
                    (_attempts_header(attempts), deployment.header, model_header)
                    if model_header is not None
                    else (_attempts_header(attempts), deployment.header)
                )
                return answer
            if candidate is route and not context_switched:
                candidates += self._resolve(route.fallbacks)
            if index < len(candidates):
                logger.info(
                    "request %s: model %r failed after %d attempts; falling back to %r",
                    ctx.request_id,
                    candidate.name,
                    attempts,
                    candidates[index].name,
                )
        if error is None:
            error = UpstreamTimeoutError(f"No attempt could start within {budget:g} s.")
        ctx.upstream_seconds = perf_counter() - measured
        raise _told(error, attempts)

    def _resolve(self, names: tuple[str, ...]) -> list[Route]:
        return [self.registry.resolve(name) for name in names]

    def _retryable(
        self, ctx: RequestContext, failure: UpstreamError, route: Route, deployment: Deployment
    ) -> bool:
        """Whether to try again — and, for a failure of the deployment, count it."""
        retry = route.retry
        if isinstance(failure, UpstreamStatusError):
            retryable = failure.status in retry.statuses
        elif isinstance(failure, UpstreamTimeoutError):
            retryable = retry.on_timeout
        else:  # unreachable, or broke off before answering
            retryable = retry.on_connection
        if retryable or not isinstance(failure, UpstreamStatusError):
            now = self.timers.clock()
            if deployment.failed(now, route.cooldown):
                if self.on_cooldown is not None:
                    self.on_cooldown(deployment.name, time.time() + route.cooldown.seconds)
                logger.warning(
                    "request %s: deployment %s of %r cools down for %g s after %d failures",
                    ctx.request_id,
                    deployment.name,
                    route.name,
                    route.cooldown.seconds,
                    route.cooldown.failures,
                )
        return retryable

    async def _attempt(
        self,
        ctx: RequestContext,
        deployment: Deployment,
        outgoing: UpstreamRequest,
        sent: float,
        first_byte: float,
    ) -> Answer:
        """One try: the status, headers and first chunk (or whole body) within ``first_byte``."""
        timers = self.timers
        task = asyncio.current_task(timers.loop)
        assert task is not None
        # The deadline cancels this task; a cancellation with the timer gone is the deadline's.
        timers.add(task, first_byte, task.cancel)
        deployment.started(sent)
        upstream: UpstreamResponse | None = None
        tracer = self.tracer
        span = tracer.start_attempt(ctx, deployment, outgoing) if tracer is not None else None
        try:
            upstream = await deployment.provider.send(ctx, outgoing)
            if deployment.measured:
                deployment.answered(timers.clock() - sent)
            streamed = upstream.streamed
            content = await upstream.first_chunk() if streamed else await upstream.read()
        except asyncio.CancelledError as cancelled:
            deployment.ended()
            if upstream is not None:
                upstream.close()
            if timers.remove(task):
                if span is not None:
                    tracer.end_attempt(span, cancelled, None)  # type: ignore[union-attr]
                raise  # cancelled from outside: the client left, or the worker stops
            task.uncancel()
            timeout = UpstreamTimeoutError(
                f"Upstream '{deployment.name}' did not answer within {first_byte:g} s."
            )
            if span is not None:
                tracer.end_attempt(span, timeout, None)  # type: ignore[union-attr]
            raise timeout from None
        except BaseException as error:
            deployment.ended()
            if span is not None:
                tracer.end_attempt(span, error, None)  # type: ignore[union-attr]
            raise
        finally:
            timers.remove(task)
        failed = None
        if upstream.status >= 400:
            deployment.ended()
            failed = deployment.provider.error(upstream.status, upstream.headers, content)
        if span is not None:
            tracer.end_attempt(span, failed, upstream.status)  # type: ignore[union-attr]
        if failed is not None:
            raise failed
        return Answer(upstream, b"" if streamed else content, streamed, deployment)


def _failure_kind(failure: UpstreamError) -> str:
    """Why an attempt failed, as a metric label: ``status_503``, ``timeout``…"""
    if isinstance(failure, UpstreamStatusError):
        return f"status_{failure.status}"
    if isinstance(failure, UpstreamTimeoutError):
        return "timeout"
    return failure.code or "error"


def _too_long(failure: UpstreamError) -> bool:
    """Whether the upstream refused the request as longer than the model's context."""
    return isinstance(failure, UpstreamStatusError) and failure.too_long


def _retry_after(failure: UpstreamError) -> float | None:
    return retry_after(failure.headers) if isinstance(failure, UpstreamStatusError) else None


# Built once: most answers take one attempt, and allocations cost on the hot path.
_ATTEMPTS_HEADERS = tuple(("x-gateway-attempts", str(n)) for n in range(16))


def _attempts_header(attempts: int) -> tuple[str, str]:
    if attempts < len(_ATTEMPTS_HEADERS):
        return _ATTEMPTS_HEADERS[attempts]
    return ("x-gateway-attempts", str(attempts))


_MODEL_HEADERS: dict[str, tuple[str, str] | None] = {}


def _model_header(model: str | None) -> tuple[str, str] | None:
    """``x-gateway-model`` for a model the client named (in open mode): left out unless
    the name is a valid header value. Built once per name (a few hundred names kept)."""
    if not model:
        return None
    header = _MODEL_HEADERS.get(model, _UNSEEN)
    if header is _UNSEEN:
        header = None if safe_header_value(model) is None else ("x-gateway-model", model)
        if len(_MODEL_HEADERS) < 512:
            _MODEL_HEADERS[model] = header
    return header  # type: ignore[return-value]


_UNSEEN = ("", "")


def _told(error: GatewayError, attempts: int) -> GatewayError:
    """The error, carrying how many attempts were made."""
    error.headers = [*error.headers, _attempts_header(attempts)]
    return error


def _with_model(outgoing: UpstreamRequest, body: bytes, model: str) -> bytes:
    """``body`` naming ``model``: a JSON body's top-level field, or a multipart field."""
    boundary = multipart.boundary_of(header_value(outgoing.headers, "content-type"))
    if boundary is not None:
        return multipart.replace_field(body, boundary, "model", model)
    fields = JSONBody(body)
    fields["model"] = model
    return fields.to_bytes()
