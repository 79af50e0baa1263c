"""Prometheus metrics, counted per worker in plain Python and merged at scrape time.

Each worker counts requests as they complete (an ``on_complete`` hook) into its own
in-memory series — a dict entry and a bisect per histogram, a fraction of a microsecond
— and writes a snapshot of them to a directory shared by all workers, every second and
when it stops. A scrape, on any worker (``/metrics``) or on the supervisor's own port
(``GATEWAY_METRICS_PORT``), merges every worker's snapshot and renders them with
prometheus-client. So one scrape sees all workers, to within a second.

(prometheus-client's own multiprocess mode does the same merging but writes a memory-
mapped file on every increment: 2–3 µs per label lookup and update, ten of them per
request. Counting locally and writing once a second costs a tenth of that.)

Label values are bounded: models and deployments come from the configuration; in open
mode (every model goes to one provider) the first ``MAX_OPEN_MODELS`` model names
seen get a series of their own and later ones count as ``other``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..core.outcome import Outcome
from ..wire.http import Request, Response

if TYPE_CHECKING:
    from ..core.context import RequestContext

Gauges = dict[str, list[tuple[tuple[str, ...], float]]]


class ModelNames(Protocol):
    def is_open(self, model: str) -> bool: ...
    def names(self) -> Iterable[str]: ...


class Observed(Protocol):
    """What the metrics read of the gateway they count (``Gateway`` is one): its models,
    the gauges of what it holds now, and a way to serve ``/metrics`` beside it."""

    @property
    def registry(self) -> ModelNames: ...
    def gauges(self) -> Gauges: ...
    def add_probe(
        self, method: str, path: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> None: ...


logger = logging.getLogger("gateway")

SNAPSHOT_INTERVAL = 1.0  # seconds between a worker's snapshots
MAX_OPEN_MODELS = 100  # distinct model labels per worker in open mode; then "other"
OTHER = "other"

# Seconds: requests from 1 ms to 10 min; the gateway's own overhead from 50 µs.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
OVERHEAD_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

DURATION_BOUNDS_MS = tuple(bound * 1000 for bound in DURATION_BUCKETS)
OVERHEAD_BOUNDS_MS = tuple(bound * 1000 for bound in OVERHEAD_BUCKETS)

Labels = tuple[str, ...]


class _Counter:
    __slots__ = ("doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: Labels) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.series: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        series = self.series
        series[labels] = series.get(labels, 0.0) + amount


class _Histogram:
    """Bucket counts (not cumulative) and the sum, per label set."""

    __slots__ = ("bounds", "doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: Labels, bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.series: dict[Labels, list[float]] = {}


class _Tally:
    """Everything counted of the requests that share a model, deployment, endpoint and
    status: one dict lookup per request finds it all (histograms: bucket counts, then
    the sum)."""

    __slots__ = (
        "cached",
        "completion",
        "cost",
        "count",
        "duration",
        "ok",
        "overhead",
        "prompt",
        "ttfb",
    )

    def __init__(self) -> None:
        self.count = self.ok = 0
        self.prompt = self.completion = self.cached = 0
        self.cost = 0.0
        self.duration = [0.0] * (len(DURATION_BUCKETS) + 2)
        self.ttfb = [0.0] * (len(DURATION_BUCKETS) + 2)
        self.overhead = [0.0] * (len(OVERHEAD_BUCKETS) + 2)


class Snapshot(msgspec.Struct):
    """What one worker has counted, as written to its file."""

    pid: int
    counters: dict[str, list[tuple[Labels, float]]]
    histograms: dict[str, list[tuple[Labels, list[float]]]]
    gauges: dict[str, list[tuple[Labels, float]]]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Snapshot).decode


class Metrics:
    """A hook: counts each completed request; serves ``/metrics``.

    ``directory`` is shared by the workers of one gateway (``None``: this process only).
    """

    def __init__(self, directory: str | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._gateway: Observed | None = None
        self._known_models: frozenset[str] = frozenset()
        self._open = True
        self._open_models: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.requests = _Counter(
            "gateway_requests",
            "Requests answered, by public model, deployment, endpoint and status.",
            ("model", "deployment", "endpoint", "status"),
        )
        self.duration = _Histogram(
            "gateway_request_duration_seconds",
            "From the request's arrival to its last byte.",
            ("model", "endpoint"),
            DURATION_BUCKETS,
        )
        self.ttfb = _Histogram(
            "gateway_time_to_first_byte_seconds",
            "From the request's arrival to the first byte of its answer.",
            ("model", "endpoint"),
            DURATION_BUCKETS,
        )
        self.overhead = _Histogram(
            "gateway_overhead_seconds",
            "The gateway's own share of the time to first byte (not waiting on upstreams).",
            ("endpoint",),
            OVERHEAD_BUCKETS,
        )
        self.tokens = _Counter(
            "gateway_tokens",
            "Tokens of answered requests, by kind: prompt, completion, cached (of prompt).",
            ("model", "deployment", "kind"),
        )
        self.cost = _Counter(
            "gateway_cost_usd", "Cost of answered requests in US dollars.", ("model",)
        )
        self.attempts = _Counter(
            "gateway_upstream_attempts",
            "Upstream attempts, by deployment and result (ok, or why it failed).",
            ("deployment", "result"),
        )
        self.fallbacks = _Counter(
            "gateway_fallbacks",
            "Requests answered by a fallback model, by requested and answering model.",
            ("model", "fallback"),
        )
        self.stream_outcomes = _Counter(
            "gateway_stream_outcomes", "Streams by how they ended.", ("outcome",)
        )
        self.extra: list[_Counter] = []  # counters other parts add (cache, store failures)
        self._tallies: dict[tuple[str, str, str, int], _Tally] = {}

    def __repr__(self) -> str:
        return "<Metrics>"

    # ------------------------------------------------------------ wiring

    def attach(self, gateway: Observed, route: bool = True) -> None:
        """Count this gateway's requests, and serve its ``/metrics`` (unless ``route`` is
        false: another port serves them)."""
        self._gateway = gateway
        registry = gateway.registry
        self._open = registry.is_open
        self._known_models = frozenset(registry.names())
        if route:
            gateway.add_probe("GET", "/metrics", self.scrape)

    def counter(self, name: str, doc: str, labels: Labels) -> _Counter:
        """Another counter, counted by another part of the gateway."""
        counter = _Counter(name, doc, labels)
        self.extra.append(counter)
        return counter

    async def startup(self) -> None:
        if self.directory is not None:
            self._task = asyncio.get_running_loop().create_task(self._snapshots())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.write_snapshot()

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            try:
                self.write_snapshot()
            except OSError:
                logger.exception("cannot write the metrics snapshot")

    # ------------------------------------------------------------ counting

    def _model(self, model: str | None) -> str:
        """The model's label: its name if configured (or among the first seen, in open
        mode), else ``other``, so that labels stay bounded."""
        if model is None:
            return ""
        if model in self._known_models:
            return model
        if not self._open:
            return OTHER  # refused names (404) never make a series
        if model in self._open_models:
            return model
        if len(self._open_models) < MAX_OPEN_MODELS:
            self._open_models.add(model)
            return model
        return OTHER

    def on_complete(self, ctx: RequestContext) -> None:
        outcome: Outcome = ctx.outcome
        model = outcome.model
        if model not in self._known_models:
            model = self._model(model)
        key = (model, outcome.deployment or "", outcome.endpoint or "other", outcome.status)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        tally.count += 1
        # Milliseconds, as the outcome has them: bounds and sums become seconds at the fold.
        milliseconds = outcome.duration_ms
        histogram = tally.duration
        histogram[_bisect(DURATION_BOUNDS_MS, milliseconds)] += 1
        histogram[-1] += milliseconds
        milliseconds = outcome.ttfb_ms  # type: ignore[assignment]
        if milliseconds is not None:
            histogram = tally.ttfb
            histogram[_bisect(DURATION_BOUNDS_MS, milliseconds)] += 1
            histogram[-1] += milliseconds
        milliseconds = outcome.overhead_ms  # type: ignore[assignment]
        if milliseconds is not None:
            histogram = tally.overhead
            histogram[_bisect(OVERHEAD_BOUNDS_MS, milliseconds)] += 1
            histogram[-1] += milliseconds
        usage = outcome.usage
        if usage is not None:
            tally.prompt += usage.prompt_tokens
            tally.completion += usage.completion_tokens
            tally.cached += usage.cached_tokens
        if outcome.cost is not None:
            tally.cost += outcome.cost
        attempts = outcome.attempts
        if attempts:
            failures = ctx.failed_attempts
            if failures is None:
                tally.ok += 1
            else:
                for failed_deployment, result in failures:
                    self.attempts.inc((failed_deployment, result))
                if attempts > len(failures):
                    tally.ok += 1
            if outcome.fallback is not None:
                self.fallbacks.inc((model, self._model(outcome.fallback)))
        if outcome.stream and outcome.status < 400:
            self.stream_outcomes.inc((outcome.outcome,))

    def _fold(self) -> None:
        """Spread the tallies over the metrics they count (at snapshot time)."""
        requests, tokens, cost = self.requests, self.tokens, self.cost
        duration, ttfb, overhead = self.duration, self.ttfb, self.overhead
        for series in (requests, tokens, cost, duration, ttfb, overhead):
            series.series.clear()
        attempts_ok = {k: v for k, v in self.attempts.series.items() if k[1] != "ok"}
        for (model, deployment, endpoint, status), tally in self._tallies.items():
            requests.inc(
                (model, deployment, endpoint, _STATUS.get(status) or str(status)), tally.count
            )
            _add(duration.series, (model, endpoint), _seconds(tally.duration))
            if any(tally.ttfb[:-1]):
                _add(ttfb.series, (model, endpoint), _seconds(tally.ttfb))
            if any(tally.overhead[:-1]):
                _add(overhead.series, (endpoint,), _seconds(tally.overhead))
            if tally.prompt or tally.completion:
                tokens.inc((model, deployment, "prompt"), tally.prompt)
                tokens.inc((model, deployment, "completion"), tally.completion)
            if tally.cached:
                tokens.inc((model, deployment, "cached"), tally.cached)
            if tally.cost:
                cost.inc((model,), tally.cost)
            if tally.ok:
                key = (deployment, "ok")
                attempts_ok[key] = attempts_ok.get(key, 0.0) + tally.ok
        self.attempts.series = attempts_ok

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> Snapshot:
        self._fold()
        counters = [self.requests, self.tokens, self.cost, self.attempts, self.fallbacks]
        counters += [self.stream_outcomes, *self.extra]
        histograms = [self.duration, self.ttfb, self.overhead]
        gauges: dict[str, list[tuple[Labels, float]]] = {}
        gateway = self._gateway
        if gateway is not None:
            gauges = gateway.gauges()
        return Snapshot(
            os.getpid(),
            {c.name: list(c.series.items()) for c in counters},
            {h.name: list(h.series.items()) for h in histograms},
            gauges,
        )

    def write_snapshot(self) -> None:
        if self.directory is None:
            return
        path = self.directory / f"{os.getpid()}.snapshot"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(_encode(self.snapshot()))
        temporary.replace(path)  # atomic: a scrape never reads half a file

    def render(self) -> bytes:
        """Every worker's counts, merged, in Prometheus' text format."""
        if self.directory is None:
            snapshots = [self.snapshot()]
        else:
            self.write_snapshot()  # this worker's counts are current, the others' within 1 s
            snapshots = list(read_snapshots(self.directory))
        return render(snapshots, self._families())

    def render_directory(self) -> bytes:
        """The workers' snapshots, merged (for the supervisor, which counts nothing)."""
        assert self.directory is not None
        return render(list(read_snapshots(self.directory)), self._families())

    def _families(self) -> dict[str, tuple[str, str, Labels, tuple[float, ...] | None]]:
        families: dict[str, tuple[str, str, Labels, tuple[float, ...] | None]] = {}
        for counter in (self.requests, self.tokens, self.cost, self.attempts, self.fallbacks):
            families[counter.name] = ("counter", counter.doc, counter.labels, None)
        for counter in (self.stream_outcomes, *self.extra):
            families[counter.name] = ("counter", counter.doc, counter.labels, None)
        for histogram in (self.duration, self.ttfb, self.overhead):
            families[histogram.name] = (
                "histogram",
                histogram.doc,
                histogram.labels,
                histogram.bounds,
            )
        for name, (doc, labels) in GAUGES.items():
            families[name] = ("gauge", doc, labels, None)
        return families

    async def scrape(self, request: Request) -> Response:
        return Response(200, [("content-type", CONTENT_TYPE_LATEST)], self.render())


_STATUS = {status: str(status) for status in range(100, 600)}
_bisect = bisect.bisect_left  # the first bound >= value: its bucket (the last: +Inf)


def _seconds(histogram: list[float]) -> list[float]:
    """A tally's histogram with its sum (the last value) from milliseconds to seconds."""
    return [*histogram[:-1], histogram[-1] / 1000]


def _add(series: dict[Labels, list[float]], labels: Labels, values: list[float]) -> None:
    current = series.get(labels)
    if current is None:
        series[labels] = list(values)
    else:
        for i, value in enumerate(values):
            current[i] += value


# Gauges every worker reports with its snapshot (Gateway.gauges()).
GAUGES: dict[str, tuple[str, Labels]] = {
    "gateway_in_flight_requests": ("Requests being handled, streams included.", ()),
    "gateway_open_streams": ("Streams being relayed.", ()),
    "gateway_deployment_cooling": (
        "1 while a deployment is cooling down after failures (in any worker).",
        ("deployment",),
    ),
}


def read_snapshots(directory: Path) -> Iterator[Snapshot]:
    for path in directory.glob("*.snapshot"):
        with contextlib.suppress(OSError, msgspec.DecodeError, ValueError):
            yield _decode(path.read_bytes())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Families = dict[str, tuple[str, str, Labels, tuple[float, ...] | None]]


def render(snapshots: list[Snapshot], families: Families) -> bytes:
    """Merge snapshots — counters and histograms summed over every worker that ever
    counted, gauges over the live ones (the cooling gauge: the largest) — and render."""
    counters: dict[str, dict[Labels, float]] = {}
    histograms: dict[str, dict[Labels, list[float]]] = {}
    gauges: dict[str, dict[Labels, float]] = {}
    for snapshot in snapshots:
        for name, series in snapshot.counters.items():
            merged = counters.setdefault(name, {})
            for labels, value in series:
                labels = tuple(labels)
                merged[labels] = merged.get(labels, 0.0) + value
        for name, hseries in snapshot.histograms.items():
            hmerged = histograms.setdefault(name, {})
            for labels, values in hseries:
                _add(hmerged, tuple(labels), values)
        if not _alive(snapshot.pid):
            continue
        for name, series in snapshot.gauges.items():
            gmerged = gauges.setdefault(name, {})
            for labels, value in series:
                labels = tuple(labels)
                if name == "gateway_deployment_cooling":
                    gmerged[labels] = max(gmerged.get(labels, 0.0), value)
                else:
                    gmerged[labels] = gmerged.get(labels, 0.0) + value
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families, counters, histograms, gauges))
    return generate_latest(registry)


class _Collector:
    def __init__(
        self,
        families: Families,
        counters: dict[str, dict[Labels, float]],
        histograms: dict[str, dict[Labels, list[float]]],
        gauges: dict[str, dict[Labels, float]],
    ) -> None:
        self.families = families
        self.counters, self.histograms, self.gauges = counters, histograms, gauges

    def collect(self) -> Iterator[Any]:
        for name, (kind, doc, labels, bounds) in self.families.items():
            if kind == "counter":
                family: Any = CounterMetricFamily(name, doc, labels=list(labels))
                for values, value in sorted(self.counters.get(name, {}).items()):
                    family.add_metric(list(values), value)
            elif kind == "histogram":
                family = HistogramMetricFamily(name, doc, labels=list(labels))
                assert bounds is not None
                for values, counts in sorted(self.histograms.get(name, {}).items()):
                    cumulative, buckets = 0.0, []
                    for bound, count in zip((*bounds, float("inf")), counts[:-1], strict=True):
                        cumulative += count
                        buckets.append((_le(bound), cumulative))
                    family.add_metric(list(values), buckets, counts[-1])
            else:
                family = GaugeMetricFamily(name, doc, labels=list(labels))
                for values, value in sorted(self.gauges.get(name, {}).items()):
                    family.add_metric(list(values), value)
            yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


# ------------------------------------------------------------- the metrics port


class MetricsServer:
    """``GET /metrics`` on a port of its own, served by the supervising process from the
    workers' snapshots (keep it off the public port: scrapers reach it, clients not)."""

    def __init__(self, host: str, port: int, render_all: Callable[[], bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render_all()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # scrapes are not news

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="gateway-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
