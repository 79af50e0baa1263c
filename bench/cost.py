"""``make bench-cost``: instructions per request, counted by valgrind's callgrind.

Timing figures on a shared machine swing by a third from run to run; the number of
instructions a request makes its server execute hardly moves. For each scenario and
target this

1. starts the mock upstream (natively: it is not measured);
2. starts the target with one worker under
   ``valgrind --tool=callgrind --trace-children=yes`` (Granian forks a worker process:
   every process of the target is counted, each into ``callgrind.out.<pid>``) and waits
   for its first answer (valgrind makes start-up slow);
3. sends ``BENCH_COST_WARMUP`` requests, then resets the counters of every process of
   the target with ``callgrind_control --dump`` (a dump writes what was counted since
   the last one and starts again from zero: the warm-up's profile is kept, apart);
4. sends ``BENCH_COST_REQUESTS`` requests one after another on one keep-alive
   connection, from a plain ``http.client`` client that valgrind does not see;
5. dumps the counters again, and divides the instructions (Ir) of all the target's
   processes by the number of requests.

A fresh target process serves each scenario, so a figure does not depend on which
scenarios ran before it. The figure is read from each dump's ``summary:`` line (for
every thread, its running total minus its total at the previous dump: exact); the
per-function costs, parsed from the same files, only serve to explain it. Why a dump
and not ``callgrind_control --zero`` before the measured requests: after a zero, the
per-function costs of the next dump still held up to 3 % from before it (``totals:``
above ``summary:``); after a dump they add up to ``summary:`` exactly.

Clock-driven work is counted too: the gateway's timer sweep (every 0.1 s while a request
is in flight) adds ~2 k instructions per request at valgrind's speed. Two runs agreed
within 0.4 %; ``PYTHONHASHSEED=0`` and ``setarch -R`` keep hashing and memory layout
the same from run to run.

Variables: ``BENCH_COST_TARGETS`` (names from ``bench.harness.TARGETS``, comma-separated),
``BENCH_COST_SCENARIOS`` (a prefix selects a family: ``stream`` = stream, stream-hooks),
``BENCH_COST_REQUESTS`` (1000), ``BENCH_COST_WARMUP`` (200), ``BENCH_COST_TOP`` (15
functions), ``BENCH_COST_PROFILE=1`` (also a Python-level profile, natively, see
``bench.pyprofile``). ``python -m bench.cost compare DIR DIR`` sets two runs side by side.
Results: ``bench/results/cost-<timestamp>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from bench.callgrind import Measure, measure, valgrind_version
from bench.cost_plan import SCENARIOS, Settings, plan
from bench.harness import (
    ROOT,
    mock_upstream,
    redis_server,
    stopped_by_sigterm,
)

# ------------------------------------------------------------------------- report


def ceiling_of(
    measure: Measure, measures: list[Measure], ceiling: str = "ceiling"
) -> Measure | None:
    """The ceiling's figure for the same request: the same scenario (a hooked one's
    plain twin), else the ceiling's chat request, streamed or not, as this one."""
    ceilings = [m for m in measures if m.target == ceiling]
    for name in (measure.scenario, measure.scenario.removesuffix("-hooks")):
        for other in ceilings:
            if other.scenario == name:
                return other
    for other in ceilings:
        if other.stream == measure.stream and SCENARIOS.get(other.scenario, _ANY).events == 20:
            return other
    return None


_ANY = SCENARIOS["stream"]  # a stand-in for a scenario no longer in the table

# Frames that only pass control on: their inclusive cost says nothing about where the
# work is. The inclusive list leaves them out, and the interpreter's own functions (its
# costs are in the self list and under "by library").
_MACHINERY = re.compile(
    r"^(__Pyx_\w+|__pyx_\w*uvloop_4loop_(4Loop_\w*run\w*|4Loop__on_idle|6Handle__run|"
    r"cb_idle_callback|run_in_context\w*)|uv_run|uv__run_idle|__libc_start\S*|"
    r"task_step\w*|task_wakeup|TaskStepMethWrapper_call|\(below main\)|main|_start|"
    r"0x[0-9a-f]+) \("
)
INTERPRETER = "libpython"


def by_library(costs: list[tuple[str, int]]) -> dict[str, int]:
    libraries: dict[str, int] = defaultdict(int)
    for function, cost in costs:
        libraries[library(function)] += cost
    return libraries


def library(function: str) -> str:
    return function.rsplit(" (", 1)[1][:-1] if function.endswith(")") else "?"


def report(measures: list[Measure], settings: Settings) -> str:
    lines = [
        f"Instructions per request (callgrind, every process of the target), "
        f"{settings.requests} sequential requests after {settings.warmup} of warm-up; "
        f"one worker; Python {platform.python_version()}, {valgrind_version()}.",
        "",
        "| scenario | target | k instructions / request | × ceiling | × ceiling-pooled "
        "| client ms / request |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for m in measures:
        ratios = []
        for ceiling in ("ceiling", "ceiling-pooled"):
            base = ceiling_of(m, measures, ceiling)
            ratios.append(f"{m.per_request / base.per_request:.3f}" if base else "–")
        lines.append(
            f"| {m.scenario} | {m.target} | {m.per_request / 1000:.1f} | {' | '.join(ratios)} "
            f"| {m.seconds / m.requests * 1000:.2f} |"
        )
    lines += judged(measures)
    lines += per_chunk_report(measures)
    for m in measures:
        for d in m.dumps:
            if d.summary and abs(d.totals - d.summary) > 0.01 * d.summary:
                lines.append(
                    f"\nNote: {m.scenario}/{m.target} pid {d.pid}: its functions add up to "
                    f"{d.totals}, its count to {d.summary}: the function lists are off by "
                    f"{(d.totals - d.summary) / d.summary:+.1%} (the figure above is the count)."
                )
    for m in measures:
        if not m.target.startswith("ceiling") and settings.top:
            lines += functions_report(m, ceiling_of(m, measures), settings.top)
    return "\n".join(lines) + "\n"


# The project's targets: a (scenario, target)'s instructions per request at most this many
# times another's — the ceiling's for the same request (None), or another (scenario,
# target). With logs and metrics on: plain and streamed chat, a stream with a chunk hook
# that reads every event, and the Responses API passed through against chat passed through.
TARGET_RATIOS: dict[tuple[str, str], tuple[float, tuple[str, str] | None]] = {
    ("chat", "gateway"): (1.15, None),
    ("stream", "gateway"): (1.15, None),
    ("stream-hooks", "gateway-hooks"): (1.5, None),
    ("responses-stream", "gateway-responses"): (1.05, ("stream", "gateway")),
    # A key's limits: in memory against none; on Redis (leases) against in memory.
    ("chat", "gateway-keys"): (1.07, ("chat", "gateway")),
    ("stream", "gateway-keys"): (1.07, ("stream", "gateway")),
    ("chat", "gateway-redis"): (1.10, ("chat", "gateway-keys")),
    ("stream", "gateway-redis"): (1.10, ("stream", "gateway-keys")),
}

# Figures shown beside another's, without a target: the Responses stream translated from
# a chat stream, and Claude's stream from Bedrock (signed, event-stream framed), beside the
# chat stream translated from Anthropic's events; a key's limits without the x-ratelimit-*
# headers (GATEWAY_RATE_LIMIT_HEADERS=off) beside no key.
BESIDE: dict[tuple[str, str], tuple[str, str]] = {
    ("chat", "gateway-keys-headless"): ("chat", "gateway"),
    ("stream", "gateway-keys-headless"): ("stream", "gateway"),
    ("bedrock-stream", "gateway-bedrock"): ("anthropic-stream", "gateway-anthropic"),
    ("responses-translated-stream", "gateway-responses-translated"): (
        "anthropic-stream",
        "gateway-anthropic",
    ),
}


def judged(measures: list[Measure]) -> list[str]:
    """✓ or ✗ for each target ratio this run measured (both sides of it), then the
    figures shown beside another's."""
    found = {(m.scenario, m.target): m for m in measures}
    checks, beside = [], []
    for m in measures:
        key = (m.scenario, m.target)
        if key in TARGET_RATIOS:
            limit, against = TARGET_RATIOS[key]
            base = ceiling_of(m, measures) if against is None else found.get(against)
            if base is not None:
                ratio = m.per_request / base.per_request
                mark = "✓" if ratio <= limit else "✗"
                what = "the ceiling" if against is None else " / ".join(against)
                checks.append(
                    f"- {mark} {m.scenario} / {m.target}: {ratio:.3f}× {what} (target ≤ {limit})"
                )
        elif key in BESIDE and BESIDE[key] in found:
            base = found[BESIDE[key]]
            beside.append(
                f"- {m.scenario} / {m.target}: {m.per_request / 1000:.1f} k, "
                f"{m.per_request / base.per_request:.3f}× {base.scenario} / {base.target} "
                f"({base.per_request / 1000:.1f} k)"
            )
    lines = ["", "Against the targets:", "", *checks] if checks else []
    return lines + (["", "Side by side (no target):", "", *beside] if beside else [])


# Per-chunk targets: a (scenario, target)'s instructions per chunk at most this many times
# ceiling-raw's (the floor) for the same stream; logs and metrics on.
CHUNK_TARGETS: dict[tuple[str, str], float] = {
    ("long-stream", "gateway"): 2.0,
    ("long-stream-hooks", "gateway-hooks"): 3.0,
}
FLOOR = "ceiling-raw"


def per_chunk(m: Measure, measures: list[Measure]) -> float | None:
    """A stream's instructions per chunk: (its cost - the same request's not streamed, on
    the same target) / its events. The stream's start and end are in it, spread thin
    over a long stream."""
    scenario = SCENARIOS.get(m.scenario)
    if scenario is None or scenario.plain is None:
        return None
    for other in measures:
        if other.target == m.target and other.scenario == scenario.plain:
            return (m.per_request - other.per_request) / scenario.events
    return None


def floor_of(m: Measure, measures: list[Measure]) -> Measure | None:
    """ceiling-raw's measure of the same stream (a hooked one against the plain stream)."""
    wanted = {m.scenario, m.scenario.removesuffix("-hooks")}
    for other in measures:
        if other.target == FLOOR and other.scenario in wanted:
            return other
    return None


def per_chunk_report(measures: list[Measure]) -> list[str]:
    """Instructions per chunk of each stream, against the floor's; ✓/✗ for the targets."""
    rows, checks = [], []
    for m in measures:
        mine = per_chunk(m, measures)
        if mine is None:
            continue
        floor = floor_of(m, measures)
        theirs = per_chunk(floor, measures) if floor is not None else None
        ratio = mine / theirs if theirs else None
        rows.append(
            f"| {m.scenario} | {m.target} | {SCENARIOS[m.scenario].events} | {mine / 1000:.2f} "
            f"| {f'{ratio:.2f}' if ratio is not None else '–'} |"
        )
        limit = CHUNK_TARGETS.get((m.scenario, m.target))
        if limit is not None and ratio is not None:
            checks.append(
                f"- {'✓' if ratio <= limit else '✗'} {m.scenario} / {m.target}: "
                f"{ratio:.2f}× {FLOOR} per chunk ({mine / 1000:.2f} k against "
                f"{theirs / 1000:.2f} k; target ≤ {limit:g})"
            )
    if not rows:
        return []
    return [
        "",
        "Per chunk: (stream - the same request not streamed) ÷ events, on the same target:",
        "",
        f"| scenario | target | events | k instructions / chunk | × {FLOOR} |",
        "| --- | --- | ---: | ---: | ---: |",
        *rows,
        *(["", "Against the per-chunk targets:", "", *checks] if checks else []),
    ]


def functions_report(m: Measure, base: Measure | None, top: int) -> list[str]:
    """Where a target's instructions go, per request, beside the ceiling's where known."""

    def k(cost: float, n: int) -> str:
        return f"{cost / n / 1000:.1f}"

    def delta(cost: float, n: int, other: float, n_other: int) -> str:
        return f"{(cost / n - other / n_other) / 1000:+.1f}"

    n = m.requests
    lines = ["", f"### {m.scenario} / {m.target}: where the instructions go (k per request)"]
    mine = by_library(m.exclusive)
    theirs = by_library(base.exclusive) if base else {}
    lines += [
        "",
        "By library (self cost: this partitions the total)"
        + (", beside the ceiling's" if base else "")
        + ":",
        "",
        "| library | k | ceiling k | difference |" if base else "| library | k |",
        "| --- | ---: | ---: | ---: |" if base else "| --- | ---: |",
    ]
    for name in sorted(set(mine) | set(theirs), key=lambda x: -mine.get(x, 0)):
        if base:
            a, b = mine.get(name, 0), theirs.get(name, 0)
            if max(a / n, b / base.requests) >= 500:
                lines.append(
                    f"| {name} | {k(a, n)} | {k(b, base.requests)} "
                    f"| {delta(a, n, b, base.requests)} |"
                )
        elif mine[name] / n >= 500:
            lines.append(f"| {name} | {k(mine[name], n)} |")
    inclusive = [
        (f, c)
        for f, c in m.inclusive
        if library(f) != "?" and not library(f).startswith(INTERPRETER) and not _MACHINERY.match(f)
    ]
    lines += [
        "",
        f"Top {top} functions by inclusive cost (outside the interpreter and the event "
        "loop's dispatch; Granian's Rust threads are under `start_thread`):",
        "",
        "| k | function |",
        "| ---: | --- |",
        *(f"| {k(c, n)} | `{f}` |" for f, c in inclusive[:top]),
    ]
    ceiling_self = dict(base.exclusive) if base else {}
    lines += [
        "",
        f"Top {top} functions by self cost" + (", beside the ceiling's:" if base else ":"),
        "",
        "| k | function | ceiling k | difference |" if base else "| k | function |",
        "| ---: | --- | ---: | ---: |" if base else "| ---: | --- |",
    ]
    for f, c in m.exclusive[:top]:
        if base:
            other = ceiling_self.get(f, 0)
            lines.append(
                f"| {k(c, n)} | `{f}` | {k(other, base.requests)} "
                f"| {delta(c, n, other, base.requests)} |"
            )
        else:
            lines.append(f"| {k(c, n)} | `{f}` |")
    return lines


def save(measures: list[Measure], results: Path) -> None:
    data = [
        {
            **{k: v for k, v in asdict(m).items() if k not in ("inclusive", "exclusive")},
            "per_request": m.per_request,
            "inclusive": m.inclusive[:200],
            "exclusive": m.exclusive[:200],
        }
        for m in measures
    ]
    (results / "cost.json").write_text(json.dumps(data, indent=1))


def compare(first: Path, second: Path) -> None:
    """``python -m bench.cost compare DIR DIR``: two runs' figures and their spread."""
    runs = [
        {(m["scenario"], m["target"]): m["per_request"] for m in json.loads(p.read_text())}
        for p in (first / "cost.json", second / "cost.json")
    ]
    print("| scenario | target | first k | second k | spread |")
    print("| --- | --- | ---: | ---: | ---: |")
    for key, a in runs[0].items():
        b = runs[1].get(key)
        if b is not None:
            spread = abs(a - b) / min(a, b)
            print(f"| {key[0]} | {key[1]} | {a / 1000:.1f} | {b / 1000:.1f} | {spread:.2%} |")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    settings = Settings.from_env()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"bench.cost: {tool} not found: install valgrind (make bench-cost does)")
    runs = plan(settings)
    if not runs:
        sys.exit("bench.cost: nothing to measure with these targets and scenarios")
    results = ROOT / "bench" / "results" / time.strftime("cost-%Y%m%d-%H%M%S")
    results.mkdir(parents=True, exist_ok=True)
    print(f"bench.cost: results in {results.relative_to(ROOT)}", flush=True)
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    measures: list[Measure] = []
    needs_redis = any(target.redis for _, target in runs)
    with contextlib.ExitStack() as stack:
        stack.enter_context(stopped_by_sigterm())
        _, mock_url = stack.enter_context(mock_upstream(cores, results / "mock.log"))
        redis_url = (
            stack.enter_context(redis_server(results / "redis.log")) if needs_redis else None
        )
        width = max(len(s.name) for s, _ in runs), max(len(t.name) for _, t in runs)
        for scenario, target in runs:
            m = measure(scenario, target, settings, mock_url, results, redis_url)
            measures.append(m)
            print(
                f"  {scenario.name:{width[0]}} {target.name:{width[1]}} "
                f"{m.per_request / 1000:8.1f} k "
                f"instructions/request  ({m.seconds / m.requests * 1000:.1f} ms/request "
                f"under valgrind)",
                flush=True,
            )
            save(measures, results)
        summary = report(measures, settings)
        (results / "summary.md").write_text(summary)
        print()
        print(summary, flush=True)
        if settings.profile:
            from bench.pyprofile import profile_all

            print(
                profile_all(
                    runs, mock_url, settings.requests, settings.warmup, settings.top, results
                )
            )


if __name__ == "__main__":
    main()
