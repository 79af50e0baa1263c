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
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.harness import (
    ROOT,
    TARGETS,
    Client,
    Process,
    Target,
    free_port,
    mock_upstream,
    redis_server,
    stopped_by_sigterm,
    wait_port,
)
from bench.payloads import chat_body
from bench.run import _tree

STARTUP_SECONDS = 180.0  # valgrind makes Python's start-up 10-20 times slower
REQUEST_SECONDS = 60.0  # one request, at most
CONTROL_SECONDS = 60.0  # one callgrind_control command, at most


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    targets: tuple[str, ...]

    @property
    def body(self) -> bytes:
        return chat_body(self.stream)


# Every target that serves the plain request (the others need hooks or a translating provider).
PLAIN_TARGETS = (
    "ceiling",
    "ceiling-pooled",
    "gateway",
    "gateway-quiet",
    "gateway-keys",
    "gateway-redis",
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("chat", False, PLAIN_TARGETS),
        Scenario("stream", True, PLAIN_TARGETS),
        Scenario("chat-hooks", False, ("gateway-hooks",)),
        Scenario("stream-hooks", True, ("gateway-hooks",)),
        # The same stream from an Anthropic upstream, translated event by event: beside
        # "stream" on the gateway, it shows what translation costs over the passthrough.
        Scenario("anthropic-stream", True, ("gateway-anthropic",)),
    )
}


# ------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    requests: int = 1000
    warmup: int = 200
    top: int = 15
    targets: tuple[str, ...] = tuple(TARGETS)
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    profile: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            requests=_count("BENCH_COST_REQUESTS", cls.requests, minimum=1),
            warmup=_count("BENCH_COST_WARMUP", cls.warmup, minimum=0),
            top=_count("BENCH_COST_TOP", cls.top, minimum=0),
            targets=_names("BENCH_COST_TARGETS", tuple(TARGETS), family=False),
            scenarios=_names("BENCH_COST_SCENARIOS", tuple(SCENARIOS), family=True),
            profile=os.environ.get("BENCH_COST_PROFILE", "").strip() not in ("", "0"),
        )


def _count(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        sys.exit(f"bench: {name}: expected a whole number >= {minimum}, got {raw!r}")
    return int(raw)


def _names(variable: str, known: tuple[str, ...], family: bool) -> tuple[str, ...]:
    raw = os.environ.get(variable, "").strip()
    if not raw or raw == "all":
        return known
    chosen: list[str] = []
    for name in (n.strip() for n in raw.split(",") if n.strip()):
        matches = [k for k in known if k == name or (family and k.startswith(name + "-"))]
        if not matches:
            sys.exit(f"bench: {variable}: unknown {name!r}; choose from {', '.join(known)}")
        chosen += [m for m in matches if m not in chosen]
    return tuple(k for k in known if k in chosen)


def plan(settings: Settings) -> list[tuple[Scenario, Target]]:
    """What to measure, in order. A scenario without the ceiling among its targets (the
    hooks scenarios) is compared with the ceiling's figure for the same request; if no
    selected scenario measures that, it is measured first, under this scenario's name."""
    runs = [
        (SCENARIOS[name], TARGETS[target])
        for name in settings.scenarios
        for target in SCENARIOS[name].targets
        if target in settings.targets
    ]
    if "ceiling" in settings.targets:
        for scenario, target in list(runs):
            if not any(s.stream == scenario.stream and t.name == "ceiling" for s, t in runs):
                runs.insert(runs.index((scenario, target)), (scenario, TARGETS["ceiling"]))
    return runs


# ---------------------------------------------------------------------- callgrind


@dataclass
class Dump:
    """One process's counts over the measured requests."""

    pid: int
    path: str
    summary: int  # exact: instructions executed between the two dumps
    totals: int  # the sum of the per-function costs in the file (see check_dump)


@dataclass
class Measure:
    scenario: str
    target: str
    stream: bool
    requests: int
    warmup: int
    dumps: list[Dump]
    seconds: float  # client-side wall time of the measured requests (under valgrind)
    inclusive: list[tuple[str, int]] = field(default_factory=list)  # function, Ir
    exclusive: list[tuple[str, int]] = field(default_factory=list)

    @property
    def instructions(self) -> int:
        return sum(d.summary for d in self.dumps)

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def no_aslr() -> list[str]:
    """``setarch -R``: the same memory layout every run, where the system allows it."""
    command = ["setarch", platform.machine(), "-R"]
    if shutil.which("setarch"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([*command, "true"], capture_output=True, timeout=10).returncode == 0:
                return command
    return []


def callgrind_command(out: Path) -> list[str]:
    return [
        *no_aslr(),
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out}/callgrind.out.%p",
        # vgdb's FIFOs go with the results, not to /tmp (a killed process leaves them).
        f"--vgdb-prefix={out}/vgdb",
    ]


def dump(pid: int, out: Path, label: str) -> Path:
    """Make the process write its counts since its last dump, and start again from zero.

    ``callgrind_control`` reaches the process through valgrind's gdbserver (``vgdb``),
    which interrupts a process blocked in a system call by ptrace: it works on an idle
    server at once. Returns the file written (``callgrind.out.<pid>.<n>``)."""
    before = set(out.glob(f"callgrind.out.{pid}.*"))
    try:
        result = subprocess.run(
            ["callgrind_control", f"--vgdb-prefix={out}/vgdb", f"--dump={label}", str(pid)],
            capture_output=True,
            text=True,
            timeout=CONTROL_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"callgrind_control --dump {pid}: no answer in {CONTROL_SECONDS:g} s "
            "(vgdb reaches an idle process by ptrace: is ptrace allowed here?)"
        ) from exc
    if result.returncode != 0 or "OK" not in result.stdout:
        raise RuntimeError(
            f"callgrind_control --dump {pid} failed (needs ptrace): "
            f"{result.stdout.strip()} {result.stderr.strip()}"
        )
    deadline = time.monotonic() + CONTROL_SECONDS
    while time.monotonic() < deadline:
        new = set(out.glob(f"callgrind.out.{pid}.*")) - before
        for path in new:
            if "\ntotals:" in path.read_text(errors="replace"):
                return path
        time.sleep(0.1)
    raise RuntimeError(f"callgrind of process {pid} wrote no dump")


def read_dump(pid: int, path: Path) -> Dump:
    text = path.read_text(errors="replace")
    summary = re.search(r"^summary: (\d+)", text, re.MULTILINE)
    totals = re.search(r"^totals: (\d+)", text, re.MULTILINE)
    if summary is None or totals is None:
        raise RuntimeError(f"{path}: no summary/totals line")
    return Dump(pid, str(path), int(summary.group(1)), int(totals.group(1)))


@dataclass
class Profile:
    """The functions of one dump: self and inclusive cost, by ``function (object)``."""

    self: dict[str, int]
    inclusive: dict[str, int]


def read_profile(path: Path) -> Profile:
    """Parse a callgrind dump (``positions: line``, one event).

    Self cost: the cost lines of a function. Inclusive: self plus the cost of the calls
    it makes (a ``calls=`` line, then a line with the call's inclusive cost). Callgrind
    names a function re-entered while it runs ``name'2``, so the inclusive cost of the
    plain name (the outermost calls) counts nothing twice; ``'2`` entries are left out
    of the inclusive list and added to the plain name in the self list.
    (``callgrind_annotate`` 3.19 gave self costs above the total on these files.)"""
    names: dict[str, dict[str, str]] = {"fn": {}, "ob": {}}
    self_cost: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    ob = fn = ""
    in_call = False

    def name(kind: str, value: str) -> str:
        value = value.strip()
        if value.startswith("("):
            ident, _, rest = value.partition(")")
            if rest.strip():
                names[kind][ident] = rest.strip()
                return rest.strip()
            return names[kind].get(ident, value)
        return value

    with open(path, errors="replace") as lines:
        for line in lines:
            head = line[:1]
            if head.isdigit() or head in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if in_call:
                    inclusive[fn] += cost
                    in_call = False
                else:
                    self_cost[fn] += cost
                    inclusive[fn] += cost
            elif line.startswith("fn="):
                fn = f"{name('fn', line[3:])} ({ob})" if ob else name("fn", line[3:])
            elif line.startswith(("ob=", "cob=")):
                value = object_name(name("ob", line.partition("=")[2]))
                if line.startswith("ob="):
                    ob = value
            elif line.startswith("cfn="):
                name("fn", line[4:])  # only to learn the name of a compressed id
            elif line.startswith("calls="):
                in_call = True
    plain: dict[str, int] = defaultdict(int)
    for function, cost in self_cost.items():
        plain[_RECURSION.sub("", function)] += cost
    return Profile(dict(plain), {f: c for f, c in inclusive.items() if not _RECURSION.search(f)})


def object_name(path: str) -> str:
    """``.../site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so`` -> ``uvloop/loop.so``."""
    path = (
        path.split("site-packages/", 1)[1] if "site-packages/" in path else os.path.basename(path)
    )
    return re.sub(r"\.cpython-[^/]*\.so$", ".so", path)


_RECURSION = re.compile(r"'\d+(?= \(|$)")


def merge(tables: list[dict[str, int]]) -> list[tuple[str, int]]:
    """The costs of several processes' functions, added by name, largest first."""
    total: dict[str, int] = defaultdict(int)
    for table in tables:
        for name, cost in table.items():
            total[name] += cost
    return sorted(total.items(), key=lambda item: -item[1])


def measure(
    scenario: Scenario,
    target: Target,
    settings: Settings,
    mock_url: str,
    results: Path,
    redis_url: str | None = None,
) -> Measure:
    out = results / f"{scenario.name}-{target.name}"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [*callgrind_command(out), *target.command(port, mock_url)]
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    process = Process(
        f"{target.name} ({scenario.name})",
        command,
        cores,
        target.environ(
            port, mock_url, **({"GATEWAY_REDIS_URL": redis_url} if target.redis else {})
        ),
        out / "target.log",
    )
    body, stream = scenario.body, scenario.stream
    try:
        wait_port(port, process, STARTUP_SECONDS)
        client = Client(port, target.key, timeout=STARTUP_SECONDS)
        client.post(body, stream)  # the first answer: the worker is up
        client.settimeout(REQUEST_SECONDS)
        for _ in range(settings.warmup):
            client.post(body, stream)
        pids = sorted(_tree(process.popen.pid))
        for pid in pids:
            dump(pid, out, "warm-up")
        started = time.monotonic()
        for _ in range(settings.requests):
            client.post(body, stream)
        seconds = time.monotonic() - started
        if sorted(_tree(process.popen.pid)) != pids:
            raise RuntimeError(f"{process.name}: its processes changed while measured")
        paths = {pid: dump(pid, out, "measure") for pid in pids}
        client.close()
    finally:
        process.stop()
    dumps = [read_dump(pid, path) for pid, path in paths.items()]
    result = Measure(
        scenario.name, target.name, stream, settings.requests, settings.warmup, dumps, seconds
    )
    profiles = [read_profile(Path(d.path)) for d in dumps]
    result.inclusive = merge([p.inclusive for p in profiles])
    result.exclusive = merge([p.self for p in profiles])
    return result


# ------------------------------------------------------------------------- report


def ceiling_of(
    measure: Measure, measures: list[Measure], ceiling: str = "ceiling"
) -> Measure | None:
    for other in measures:
        if other.target == ceiling and other.stream == measure.stream:
            return other
    return None


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


# The project's targets (instructions per request, × the ceiling), with logs and metrics
# on: plain and streamed chat, and a stream with a chunk hook that reads every event.
TARGET_RATIOS = {
    ("chat", "gateway"): 1.15,
    ("stream", "gateway"): 1.15,
    ("stream-hooks", "gateway-hooks"): 1.5,
}


def judged(measures: list[Measure]) -> list[str]:
    """✓ or ✗ for each target ratio this run measured."""
    checks = []
    for m in measures:
        limit = TARGET_RATIOS.get((m.scenario, m.target))
        base = ceiling_of(m, measures)
        if limit is not None and base is not None:
            ratio = m.per_request / base.per_request
            mark = "✓" if ratio <= limit else "✗"
            checks.append(
                f"- {mark} {m.scenario} / {m.target}: {ratio:.3f}× the ceiling (target ≤ {limit})"
            )
    return ["", "Against the targets:", "", *checks] if checks else []


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


def valgrind_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return "valgrind ?"


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
        for scenario, target in runs:
            m = measure(scenario, target, settings, mock_url, results, redis_url)
            measures.append(m)
            print(
                f"  {scenario.name:13} {target.name:14} {m.per_request / 1000:8.1f} k "
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
