"""The Python-level view of ``bench.cost``'s requests: cProfile inside the target's worker.

Callgrind sees the C functions of CPython, uvloop and Granian, not which Python function
spent them. ``BENCH_COST_PROFILE=1 make bench-cost`` also runs each gateway target
natively (not under valgrind) with a ``sitecustomize.py`` in a temporary directory put
first on its ``PYTHONPATH``. That module only installs a SIGUSR2 handler: the first
SIGUSR2 starts a ``cProfile.Profile`` in the process that gets it, the second stops it
and writes ``<pid>.prof``. The harness sends the warm-up, signals the worker processes,
sends the same requests, signals again and prints the top Python functions by
cumulative time, per request. Nothing of this is in the gateway package.

cProfile profiles the thread that enables it: the worker's main thread, which runs the
event loop and so every coroutine of a request. Its own overhead inflates small
functions; read the order and the call counts, not the microseconds.
"""

from __future__ import annotations

import os
import pstats
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import Client, Process, free_port, wait_port
from bench.processes import tree

if TYPE_CHECKING:
    from bench.cost_plan import Scenario
    from bench.harness import Target

SITECUSTOMIZE = '''\
"""bench.pyprofile: SIGUSR2 starts, then stops and saves, a cProfile of this process."""
import os
import signal

_out = os.environ.get("BENCH_PROFILE_DIR")
if _out:
    import cProfile

    _state = {}

    def _toggle(signum, frame):
        profiler = _state.pop("profiler", None)
        if profiler is None:
            _state["profiler"] = profiler = cProfile.Profile()
            profiler.enable()
        else:
            profiler.disable()
            profiler.dump_stats(os.path.join(_out, "%d.prof" % os.getpid()))

    signal.signal(signal.SIGUSR2, _toggle)
'''


def profile(
    scenario: Scenario, target: Target, mock_url: str, requests: int, warmup: int, out: Path
) -> Path | None:
    """Run the scenario's requests against a natively started target under cProfile;
    the worker's ``.prof`` file, or None when none was written."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as site:
        Path(site, "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = target.environ(port, mock_url, BENCH_PROFILE_DIR=str(out))
        env["PYTHONPATH"] = os.pathsep.join([site, env["PYTHONPATH"]])
        cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        process = Process(
            f"{target.name} (profile)", target.command(port, mock_url), cores, env, out / "log"
        )
        try:
            wait_port(port, process, 60)
            client = Client(port, target.key, timeout=60)
            body, stream, api = scenario.body, scenario.stream, scenario.api
            for _ in range(warmup + 1):
                client.post(body, stream, api)
            workers = [pid for pid in tree(process.popen.pid) if pid != process.popen.pid]
            for pid in workers:
                os.kill(pid, signal.SIGUSR2)
            time.sleep(0.5)  # the handler runs when the worker's loop wakes up
            for _ in range(requests):
                client.post(body, stream, api)
            for pid in workers:
                os.kill(pid, signal.SIGUSR2)
            client.close()
            files = [out / f"{pid}.prof" for pid in workers]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(f.exists() for f in files):
                time.sleep(0.1)
            time.sleep(0.5)  # let the last file be written whole
        finally:
            process.stop()
    written = [f for f in files if f.exists() and f.stat().st_size]
    return max(written, key=lambda f: f.stat().st_size) if written else None


# Entries every callback passes through, whose cumulative time is the whole run.
SKIP = ("<method 'run' of '_contextvars.Context' objects>",)


def top_functions(prof: Path, requests: int, top: int) -> str:
    """Two Markdown tables, per request: the top functions by cumulative time, and by
    their own time (without what they call)."""
    stats = pstats.Stats(str(prof))
    rows = [
        (key, value)
        for key, value in stats.stats.items()  # type: ignore[attr-defined]
        if key[2] not in SKIP
    ]
    parts = []
    for title, column in (("cumulative", 3), ("own", 2)):
        lines = [
            f"By {title} time:",
            "",
            "| calls / request | cumulative µs / request | own µs / request | function |",
            "| ---: | ---: | ---: | --- |",
        ]
        for (file, line, name), (_, calls, own, cumulative, _) in sorted(
            rows, key=lambda row: -row[1][column]
        )[:top]:
            where = f" {_short(file)}:{line}" if file != "~" else ""
            lines.append(
                f"| {calls / requests:.1f} | {cumulative / requests * 1e6:.1f} "
                f"| {own / requests * 1e6:.1f} | `{name}`{where} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _short(file: str) -> str:
    for marker in ("site-packages/", "/work/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return os.path.basename(file)


def profile_all(
    runs: list[tuple[Scenario, Target]],
    mock_url: str,
    requests: int,
    warmup: int,
    top: int,
    results: Path,
) -> str:
    """Profile every gateway run; the report, also written to ``python-profile.md``."""
    parts = [
        "## Python functions (cProfile in the worker, natively; its overhead inflates "
        "small functions: read the order and the calls)"
    ]
    for scenario, target in runs:
        if target.kind == "ceiling":
            continue
        prof = profile(
            scenario,
            target,
            mock_url,
            requests,
            warmup,
            results / f"{scenario.name}-{target.name}" / "profile",
        )
        parts.append(f"\n### {scenario.name} / {target.name}\n")
        parts.append(top_functions(prof, requests, top) if prof else "(no profile written)")
    text = "\n".join(parts) + "\n"
    (results / "python-profile.md").write_text(text)
    return text
