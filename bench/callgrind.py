"""Counting instructions under valgrind's callgrind: one target's process tree, dumped
around the measured requests, read back into per-function costs."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.cost_plan import Scenario, Settings
from bench.harness import (
    Client,
    Process,
    Target,
    free_port,
    wait_port,
)
from bench.processes import tree

STARTUP_SECONDS = 180.0  # valgrind makes Python's start-up 10-20 times slower
REQUEST_SECONDS = 60.0  # one request, at most
CONTROL_SECONDS = 60.0  # one callgrind_control command, at most


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
    body, stream, api = scenario.body, scenario.stream, scenario.api
    try:
        wait_port(port, process, STARTUP_SECONDS)
        client = Client(port, target.key, timeout=STARTUP_SECONDS)
        client.post(body, stream, api)  # the first answer: the worker is up
        client.settimeout(REQUEST_SECONDS)
        for _ in range(settings.warmup):
            client.post(body, stream, api)
        pids = sorted(tree(process.popen.pid))
        for pid in pids:
            dump(pid, out, "warm-up")
        started = time.monotonic()
        for _ in range(settings.requests):
            client.post(body, stream, api)
        seconds = time.monotonic() - started
        if sorted(tree(process.popen.pid)) != pids:
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


def valgrind_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return "valgrind ?"
