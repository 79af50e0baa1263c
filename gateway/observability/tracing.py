"""OpenTelemetry traces: a span per request and one per upstream attempt, sent by OTLP.

An optional extra (``pip install gateway[otel]``), on only when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; off,
the gateway never imports OpenTelemetry and each request pays one ``is None`` check.
The usual ``OTEL_*`` variables (service name, headers, sampler…) apply.

Spans follow the GenAI semantic conventions: ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``. The client's ``traceparent`` is the
request span's parent, and each attempt's own ``traceparent`` goes upstream. (With
tracing off, the client's ``traceparent`` and ``tracestate`` are forwarded as sent.)
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..core.errors import GatewayError

if TYPE_CHECKING:
    from ..core.context import RequestContext
    from ..providers import UpstreamRequest
    from ..routing.balancing import Deployment
    from ..wire.headers import Headers

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")
# The GenAI conventions' operation names for the gateway's endpoints.
_OPERATIONS = {
    "chat.completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


class _HeaderGetter:
    """Reads a carrier that is a server's header object (lower-case names)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier.items()]


_GETTER = _HeaderGetter()


class Tracer:
    """Creates the spans; one per worker process (``start`` runs in each worker)."""

    def __init__(self, service_name: str = "gateway") -> None:
        self.service_name = os.environ.get("OTEL_SERVICE_NAME", service_name)
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None

    def start(self) -> None:
        # After the fork: the batch processor's thread belongs to this worker.
        provider = TracerProvider(resource=Resource.create({"service.name": self.service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._provider = provider
        self._tracer = provider.get_tracer("gateway")

    def stop(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # flushes what is left
            self._provider = None

    def start_request(self, ctx: RequestContext, headers: Headers) -> None:
        assert self._tracer is not None
        parent = _PROPAGATOR.extract(headers, getter=_GETTER)  # type: ignore[arg-type]
        span = self._tracer.start_span("gateway.request", context=parent, kind=SpanKind.SERVER)
        ctx.span = span
        ctx.outcome.trace_id = format(span.get_span_context().trace_id, "032x")

    def start_attempt(
        self, ctx: RequestContext, deployment: Deployment, outgoing: UpstreamRequest
    ) -> Any:
        assert self._tracer is not None
        operation = _OPERATIONS.get(ctx.outcome.endpoint, ctx.outcome.endpoint)
        model = ctx.outcome.upstream_model
        span = self._tracer.start_span(
            f"{operation} {model}" if model else operation,
            context=trace.set_span_in_context(ctx.span) if ctx.span is not None else None,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": deployment.provider.name,
                "gen_ai.request.model": model or "",
                "gateway.deployment": deployment.name,
            },
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        headers = [(k, v) for k, v in outgoing.headers if k.lower() not in _TRACE_HEADERS]
        outgoing.headers = headers + list(carrier.items())
        return span

    def end_attempt(self, span: Any, error: BaseException | None, status: int | None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            said = error.loggable() if isinstance(error, GatewayError) else str(error)
            span.set_status(Status(StatusCode.ERROR, said))
        span.end()

    def end_request(self, ctx: RequestContext) -> None:
        span = ctx.span
        if span is None:
            return
        outcome = ctx.outcome
        operation = _OPERATIONS.get(outcome.endpoint, outcome.endpoint or "request")
        span.update_name(f"{operation} {outcome.model}" if outcome.model else operation)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "http.request.method": outcome.method,
            "url.path": outcome.path,
            "http.response.status_code": outcome.status,
            "gateway.request_id": outcome.request_id,
            "gateway.outcome": outcome.outcome,
            "gateway.attempts": outcome.attempts,
        }
        if outcome.model is not None:
            attributes["gen_ai.request.model"] = outcome.model
        if outcome.upstream_model is not None:
            attributes["gen_ai.response.model"] = outcome.upstream_model
        if outcome.provider is not None:
            attributes["gen_ai.provider.name"] = outcome.provider
        usage = outcome.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if outcome.error_type is not None:
            attributes["error.type"] = outcome.error_type
            span.set_status(Status(StatusCode.ERROR, outcome.error_code or outcome.error_type))
        span.set_attributes(attributes)
        span.end(end_time=time.time_ns())
        ctx.span = None
