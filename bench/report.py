"""The summary of a ``make bench`` run: one Markdown report, printed and saved."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bench.plan import KEY_TARGETS

if TYPE_CHECKING:
    from bench.plan import Run, Settings

MIB = 1024 * 1024
BASE = {"chat-hooks": "chat", "stream-hooks": "stream"}  # compared with these scenarios' runs

INTRODUCTION = """\
Machine: {machine}. Targets pinned to CPU {target_cores}; the mock upstream and locust to \
CPU {load_cores}. {workers} worker(s). {rounds} alternating round(s); a figure is the median \
of the rounds, with (min–max) where it matters.

How to read it. *direct* is locust against the mock upstream itself; *ceiling* is a bare \
forwarder on the same server (the least a gateway on this stack can do); *gateway* is ours. \
One locust process on one core saturates before a one-core target does, so req/s is capped \
by locust, not by the target: compare **CPU µs per request** (from the target's own CPU \
counters over the run) and *capacity* = 1 s / CPU per request, the req/s one saturated core \
would serve. Latency at light load (*light*: one user, {light_rps:g} req/s; *ttfb*: time to \
the first event of streams whose events come 50 ms apart) is the target's, not locust's.
"""


def _median(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else float("nan")


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt)


def _spread(runs: list[Run], value: Callable[[Run], float], fmt: str) -> str:
    values = [value(r) for r in runs]
    middle = _f(_median(values), fmt)
    if len(values) < 2:
        return middle
    return f"{middle} ({_f(min(values), fmt)}–{_f(max(values), fmt)})"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {python}"


def report(runs: list[Run], settings: Settings, target_cores: str, load_cores: str) -> str:
    by_key: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.scenario, run.target), []).append(run)
    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    lines = [
        "# make bench",
        "",
        INTRODUCTION.format(
            machine=machine(),
            target_cores=target_cores,
            load_cores=load_cores,
            workers=settings.workers,
            rounds=settings.rounds,
            light_rps=settings.light_rps,
        ),
        "| scenario | target | req/s | p50 ms | p90 ms | p99 ms | fail "
        "| CPU µs/req | capacity req/s | RSS MiB idle→peak |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in scenarios:
        if scenario.endswith(":open-streams"):
            continue
        for target in ("direct", "ceiling", "gateway", *KEY_TARGETS):
            if group := by_key.get((scenario, target)):
                lines.append(_row(scenario, target, group))
    checks: list[str] = []
    for scenario in scenarios:
        memory, redis = (by_key.get((scenario, target)) for target in KEY_TARGETS)
        if memory and redis:
            ratio = _median(r.rps for r in redis) / _median(r.rps for r in memory)
            cpu = _median(r.cpu_us for r in redis) / _median(r.cpu_us for r in memory)
            mark = "✓" if ratio >= 0.9 else "✗"
            checks.append(
                f"- {mark} {scenario}: keys on Redis {ratio:.3f}× the req/s of keys in memory "
                f"(target ≥ 0.9), CPU per request {cpu:.3f}×"
            )
    if any((scenario, "gateway") in by_key for scenario in scenarios):
        lines += [
            "",
            "## Ratios, and latency added over direct",
            "",
            "| scenario | capacity gateway/ceiling | CPU gateway/ceiling | req/s gateway/ceiling "
            "| req/s gateway/direct | +p50: gateway (ceiling) | +p99: gateway (ceiling) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for scenario in scenarios:
        server, name = scenario.split(":", 1)
        base = f"{server}:{BASE.get(name, name)}"
        gateway = by_key.get((scenario, "gateway"))
        if gateway and name != "open-streams":
            row, found = _ratios(
                scenario, gateway, by_key.get((base, "ceiling")), by_key.get((base, "direct"))
            )
            lines.append(row)
            checks += _checks(name, scenario, found)
    for scenario in scenarios:
        if scenario.endswith(":open-streams"):
            lines += _open_streams(scenario, by_key, settings, checks)
    if checks:
        lines += ["", "## Against the targets", "", *checks]
    return "\n".join(lines) + "\n"


def _row(scenario: str, target: str, group: list[Run]) -> str:
    cpu = _median(r.cpu_us for r in group)
    idle = _median(r.rss_idle for r in group) / MIB
    peak = max(r.rss_peak for r in group) / MIB
    cells = [
        scenario,
        target,
        _f(_median(r.rps for r in group), ".0f"),
        _spread(group, lambda r: r.percentile(50), ".2f"),
        _f(_median(r.percentile(90) for r in group)),
        _f(_median(r.percentile(99) for r in group)),
        str(sum(r.failures for r in group)),
        _spread(group, lambda r: r.cpu_us, ".0f"),
        _f(1e6 / cpu if cpu else float("nan"), ".0f"),
        f"{idle:.0f}→{peak:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _ratios(
    scenario: str, gateway: list[Run], ceiling: list[Run] | None, direct: list[Run] | None
) -> tuple[str, dict[str, float]]:
    nan = float("nan")
    g_cpu = _median(r.cpu_us for r in gateway)
    c_cpu = _median(r.cpu_us for r in ceiling) if ceiling else nan
    g_rps = _median(r.rps for r in gateway)
    found = {"capacity": c_cpu / g_cpu, "cpu": g_cpu / c_cpu}
    cells = [scenario, _f(found["capacity"]), _f(found["cpu"])]
    cells.append(_f(g_rps / _median(r.rps for r in ceiling)) if ceiling else "–")
    cells.append(_f(g_rps / _median(r.rps for r in direct)) if direct else "–")
    for p in (50, 99):
        if not direct:
            cells.append("–")
            continue
        d = _median(r.percentile(p) for r in direct)
        g = _median(r.percentile(p) for r in gateway) - d
        c = _median(r.percentile(p) for r in ceiling) - d if ceiling else nan
        found[f"added_p{p}"], found[f"ceiling_added_p{p}"] = g, c
        cells.append(f"{g:+.2f} ms ({c:+.2f})")
    return "| " + " | ".join(cells) + " |", found


def _checks(name: str, scenario: str, found: dict[str, float]) -> list[str]:
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"- {'✓' if ok else '✗'} {scenario}: {text}")

    capacity, cpu = found["capacity"], found["cpu"]
    if name in ("chat", "stream"):
        check(capacity >= 0.85, f"capacity {capacity:.3f} × the ceiling's (target ≥ 0.85)")
        check(cpu <= 1.2, f"CPU per request {cpu:.3f} × the ceiling's (target ≤ 1.2)")
    elif name in ("chat-hooks", "stream-hooks"):
        check(capacity >= 0.70, f"capacity {capacity:.3f} × the ceiling's (target ≥ 0.70)")
    elif name in ("light", "ttfb") and "added_p50" in found:
        over = found["added_p50"] - found["ceiling_added_p50"]
        limit, what = (0.2, "p50 latency") if name == "light" else (0.3, "time to first byte")
        check(over <= limit, f"{what} {over:+.2f} ms over the ceiling's (target ≤ {limit} ms)")
    return out


def _open_streams(
    scenario: str, by_key: dict[tuple[str, str], list[Run]], settings: Settings, checks: list[str]
) -> list[str]:
    server = scenario.split(":")[0]
    lines = [
        "",
        f"## {settings.streams} open slow streams ({server}; 20 events 1 s apart)",
        "",
        "| target | completed | failed | largest gap between events "
        "| RSS MiB idle→peak | CPU µs/stream |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target in ("direct", "ceiling", "gateway"):
        if not (group := by_key.get((scenario, target))):
            continue
        run = group[0]
        completed = run.requests - run.failures
        gap = run.gap_max / 1000 if run.gap_max is not None else float("nan")
        peak = run.rss_peak / MIB
        lines.append(
            f"| {target} | {completed}/{settings.streams} | {run.failures} | {_f(gap)} s "
            f"| {run.rss_idle / MIB:.0f}→{peak:.0f} | {_f(run.cpu_us, '.0f')} |"
        )
        if target == "gateway":
            ok = completed == settings.streams and gap <= 1.5 and peak < 300
            checks.append(
                f"- {'✓' if ok else '✗'} {scenario}: {completed}/{settings.streams} completed, "
                f"largest gap {gap:.2f} s (target ≤ 1.5), peak RSS {peak:.0f} MiB (target < 300)"
            )
    return lines
