"""``make bench``: the gateway against the bare-forwarder ceiling and the upstream itself.

Starts the mock upstream, the ceiling and the gateway (one process tree per target,
pinned to their own core), runs locust against each target in turn — alternating, for
``BENCH_ROUNDS`` rounds — and prints one table: per scenario and target the request
rate, latency percentiles, failures, CPU time per request and memory, with the ratios
that matter. Results go to ``bench/results/<timestamp>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ALL_SCENARIOS = ("chat", "stream", "chat-hooks", "stream-hooks", "light", "ttfb", "open-streams")
T = TypeVar("T", int, float)


# ------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """What ``make bench`` measures; every field has a ``BENCH_*`` variable (README)."""

    duration: float = 8.0  # seconds of each locust run
    users: int = 30  # locust users of the chat and stream scenarios
    rps: float = 0.0  # their total request rate; 0 = as fast as one locust process goes
    light_rps: float = 20.0  # the request rate of the light-load scenario
    rounds: int = 2  # how many times the targets take turns
    workers: int = 1  # worker processes of the ceiling and the gateway
    streams: int = 2000  # slow streams held open at once
    servers: tuple[str, ...] = ("granian",)
    scenarios: tuple[str, ...] = ALL_SCENARIOS

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            duration=_number("BENCH_DURATION", cls.duration, float),
            users=_number("BENCH_USERS", cls.users, int),
            rps=_number("BENCH_RPS", cls.rps, float, allow_zero=True),
            light_rps=_number("BENCH_LIGHT_RPS", cls.light_rps, float),
            rounds=_number("BENCH_ROUNDS", cls.rounds, int),
            workers=_number("BENCH_WORKERS", cls.workers, int),
            streams=_number("BENCH_STREAMS", cls.streams, int),
            servers=_servers(os.environ.get("BENCH_SERVER", "").strip() or "granian"),
            scenarios=_scenarios(os.environ.get("BENCH_SCENARIOS", "").strip() or "all"),
        )


def _number(name: str, default: T, kind: type[T], allow_zero: bool = False) -> T:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < 0 or (value == 0 and not allow_zero):
        sys.exit(f"bench: {name}: expected a positive {kind.__name__}, got {raw!r}")
    return value


def _servers(value: str) -> tuple[str, ...]:
    if value == "both":
        return ("granian", "robyn")
    if value not in ("granian", "robyn"):
        sys.exit(f"bench: BENCH_SERVER: expected granian, robyn or both, got {value!r}")
    return (value,)


def _scenarios(value: str) -> tuple[str, ...]:
    if value == "all":
        return ALL_SCENARIOS
    chosen = []
    for name in (v.strip() for v in value.split(",") if v.strip()):
        # A prefix selects a family: "stream" is stream and stream-hooks.
        matches = [s for s in ALL_SCENARIOS if s == name or s.startswith(name + "-")]
        if not matches:
            sys.exit(
                f"bench: BENCH_SCENARIOS: unknown {name!r}; choose from {', '.join(ALL_SCENARIOS)}"
            )
        chosen += [m for m in matches if m not in chosen]
    return tuple(s for s in ALL_SCENARIOS if s in chosen)


# ----------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += _children(current)
    return pids


def pinned(command: list[str], cores: str) -> list[str]:
    """The command run on those cores only (``taskset``), so roles keep their cores."""
    return ["taskset", "-c", cores, *command] if shutil.which("taskset") else command


class Process:
    """A process tree pinned to some cores, with its CPU time and memory."""

    def __init__(
        self, name: str, command: list[str], cores: str, env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.command = pinned(command, cores)
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see its log")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready at {url}")

    def cpu_seconds(self) -> float:
        total = 0
        for pid in _tree(self.popen.pid):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / TICKS

    def rss_bytes(self) -> int:
        total = 0
        for pid in _tree(self.popen.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        return total

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


class MemoryWatch:
    """Samples a process tree's total RSS every 0.25 s while a run is going."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.peak = process.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, self.process.rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.process.rss_bytes())


# ------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    locust: str  # the locustfile's BENCH_SCENARIO
    users: int
    rate: float  # per user per second; 0 = as fast as possible
    targets: tuple[str, ...]
    duration: float
    spawn_rate: float
    warmup: float = 1.0
    hooks: bool = False
    rounds: int | None = None  # None: Settings.rounds


ALL_TARGETS = ("direct", "ceiling", "gateway")


def scenarios(settings: Settings) -> list[Scenario]:
    d, users = settings.duration, settings.users
    per_user = settings.rps / users if settings.rps else 0.0  # 0: as fast as locust can
    streams, spawn = settings.streams, 500.0
    table = {
        "chat": Scenario("chat", "chat", users, per_user, ALL_TARGETS, d, users),
        "stream": Scenario("stream", "stream", users, per_user, ALL_TARGETS, d, users),
        # The hook chain runs on the gateway only; the ceiling and direct runs are shared.
        "chat-hooks": Scenario(
            "chat-hooks", "chat", users, per_user, ("gateway",), d, users, hooks=True
        ),
        "stream-hooks": Scenario(
            "stream-hooks", "stream", users, per_user, ("gateway",), d, users, hooks=True
        ),
        # One user, requests one after another: latency with no queueing inside locust.
        "light": Scenario("light", "chat", 1, settings.light_rps, ALL_TARGETS, d, 1),
        # Ten users spawned 0.1 s apart, each opening a one-second stream every second.
        "ttfb": Scenario("ttfb", "ttfb", 10, 1.0, ALL_TARGETS, d, 10),
        # Every user holds one slow stream (20 events 1 s apart) to the end of the run.
        "open-streams": Scenario(
            "open-streams",
            "slow-stream",
            streams,
            0,
            ("ceiling", "gateway"),
            streams / spawn + 20 + 6,
            spawn,
            warmup=0,
            rounds=1,
        ),
    }
    return [table[name] for name in settings.scenarios]


# ---------------------------------------------------------------------------- runs


@dataclass
class Run:
    scenario: str
    target: str
    round: int
    requests: int
    failures: int
    seconds: float
    samples: list[float]
    cpu_seconds: float
    rss_idle: int
    rss_peak: int
    gap_max: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else float("nan")

    def percentile(self, p: float) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.results = ROOT / "bench" / "results" / stamp
        self.results.mkdir(parents=True, exist_ok=True)
        cores = sorted(os.sched_getaffinity(0))
        n_target = min(settings.workers, max(1, len(cores) - 1))
        self.target_cores = ",".join(map(str, cores[:n_target]))
        rest = cores[n_target:] or cores
        self.load_cores = ",".join(map(str, rest))
        self.processes: list[Process] = []
        self.runs: list[Run] = []

    def env(self, **extra: str) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "OPENAI_", "BENCH_"))
        }
        return {**keep, "PYTHONPATH": str(ROOT), **extra}

    def start(
        self, name: str, command: list[str], cores: str, env: dict[str, str], ready: str
    ) -> Process:
        process = Process(name, command, cores, env, self.results / f"{name}.log")
        self.processes.append(process)
        process.wait_ready(ready)
        return process

    def start_targets(self, server: str, mock_url: str) -> dict[str, tuple[Process, str]]:
        """The ceiling, the gateway and the gateway with hooks, all idle until their turn."""
        workers = str(self.settings.workers)
        port = free_port()
        command = [
            PYTHON,
            "-m",
            "bench.ceiling",
            "--server",
            server,
            "--workers",
            workers,
            "--port",
            str(port),
            "--upstream",
            f"{mock_url}/v1",
        ]
        ceiling = Process(
            f"ceiling-{server}",
            command,
            self.target_cores,
            self.env(),
            self.results / f"ceiling-{server}.log",
        )
        self.processes.append(ceiling)
        _wait_port(port, ceiling)
        targets = {"ceiling": (ceiling, f"http://127.0.0.1:{port}")}
        base = {
            "OPENAI_BASE_URL": f"{mock_url}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "GATEWAY_SERVER": server,
            "GATEWAY_WORKERS": workers,
            "GATEWAY_LOG_LEVEL": "warning",
        }
        hooked = {
            "GATEWAY_API_KEYS": "bench-key",
            "GATEWAY_HOOKS": "bench.hooks:TagRequest,bench.hooks:CountEvents",
        }
        for name, extra in (("gateway", {}), ("gateway-hooks", hooked)):
            port = free_port()
            process = self.start(
                f"{name}-{server}",
                [PYTHON, "-m", "gateway"],
                self.target_cores,
                self.env(GATEWAY_PORT=str(port), **base, **extra),
                f"http://127.0.0.1:{port}/health",
            )
            targets[name] = (process, f"http://127.0.0.1:{port}")
        return targets

    def locust(
        self, scenario: Scenario, target: str, url: str, process: Process, round_: int, server: str
    ) -> Run:
        label = f"{server}-{scenario.name}-{target}-r{round_}"
        samples_path = self.results / f"{label}.samples.json"
        command = [
            PYTHON,
            "-m",
            "locust",
            "-f",
            str(ROOT / "bench" / "locustfile.py"),
            "--headless",
            "-u",
            str(scenario.users),
            "-r",
            str(scenario.spawn_rate),
            "-t",
            f"{scenario.duration:g}s",
            "--host",
            url,
            "--csv",
            str(self.results / label),
            "--html",
            str(self.results / f"{label}.html"),
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--stop-timeout",
            "0",
        ]
        env = self.env(
            BENCH_SCENARIO=scenario.locust,
            BENCH_RATE=f"{scenario.rate:g}",
            BENCH_SAMPLES=str(samples_path),
            BENCH_WARMUP=f"{scenario.warmup:g}",
        )
        rss_idle = process.rss_bytes()
        cpu_before = process.cpu_seconds()
        watch = MemoryWatch(process)
        started = time.monotonic()
        with open(self.results / f"{label}.locust.log", "wb") as log:
            subprocess.run(
                pinned(command, self.load_cores),
                cwd=self.results,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=scenario.duration + 120,
                check=False,
            )
        seconds = time.monotonic() - started
        rss_peak = watch.stop()
        cpu = process.cpu_seconds() - cpu_before
        data = (
            json.loads(samples_path.read_text())
            if samples_path.exists()
            else {"samples": {}, "failures": {}}
        )
        name = scenario.locust
        samples = data["samples"].get(name, [])
        failures = data["failures"].get(name, 0)
        requests = len(samples) + failures
        gaps = data["samples"].get("max-gap")
        if scenario.warmup:  # CPU covers the whole run, so count every request it served
            requests = _locust_count(self.results / f"{label}_stats.csv", name) or requests
        return Run(
            scenario.name,
            target,
            round_,
            requests,
            failures,
            min(seconds, scenario.duration),
            samples,
            cpu,
            rss_idle,
            rss_peak,
            max(gaps) if gaps else None,
        )

    def run(self) -> None:
        settings = self.settings
        print(f"bench: results in {self.results.relative_to(ROOT)}", flush=True)
        roles = f"targets on CPU {self.target_cores}; mock and locust on CPU {self.load_cores}"
        print(f"bench: {roles}", flush=True)
        mock_port = free_port()
        mock = Process(
            "mock",
            [PYTHON, "-m", "bench.mock_upstream", "--port", str(mock_port)],
            self.load_cores,
            self.env(),
            self.results / "mock.log",
        )
        self.processes.append(mock)
        _wait_port(mock_port, mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        try:
            for server in settings.servers:
                targets = self.start_targets(server, mock_url)
                targets["direct"] = (mock, mock_url)
                for scenario in scenarios(settings):
                    for round_ in range(1, (scenario.rounds or settings.rounds) + 1):
                        for target in scenario.targets:
                            key = "gateway-hooks" if scenario.hooks else target
                            process, url = targets[key]
                            run = self.locust(scenario, target, url, process, round_, server)
                            run.scenario = f"{server}:{scenario.name}"
                            self.runs.append(run)
                            print(
                                f"  {server:8} {scenario.name:13} {target:8} round {round_}: "
                                f"{run.rps:7.0f} req/s  p50 {run.percentile(50):7.2f} ms  "
                                f"CPU {run.cpu_us:6.0f} µs/req  fail {run.failures}",
                                flush=True,
                            )
                for name, (process, _) in targets.items():
                    if name != "direct":
                        process.stop()
                        self.processes.remove(process)
        finally:
            for process in self.processes:
                process.stop()
        from bench.report import report

        summary = report(self.runs, settings, self.target_cores, self.load_cores)
        (self.results / "summary.md").write_text(summary)
        (self.results / "runs.json").write_text(
            json.dumps([_run_json(r) for r in self.runs], indent=1)
        )
        print()
        print(summary)


def _run_json(run: Run) -> dict[str, object]:
    return {
        "scenario": run.scenario,
        "target": run.target,
        "round": run.round,
        "requests": run.requests,
        "failures": run.failures,
        "rps": run.rps,
        "cpu_us": run.cpu_us,
        "p50": run.percentile(50),
        "p90": run.percentile(90),
        "p99": run.percentile(99),
        "rss_idle": run.rss_idle,
        "rss_peak": run.rss_peak,
        "gap_max": run.gap_max,
    }


def _locust_count(stats_csv: Path, name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in stats_csv.read_text().splitlines()[1:]:
            cells = line.split(",")
            if cells[1].strip('"') == name:
                return int(cells[2]) + int(cells[3])
    return None


def _wait_port(port: int, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not listen on {port}")


def main() -> None:
    Bench(Settings.from_env()).run()
    # Then the steady figure: instructions per request under callgrind (bench/cost.py),
    # unless BENCH_COST=off (it takes a few minutes more).
    if os.environ.get("BENCH_COST", "on").strip().lower() not in ("off", "0", "no"):
        from bench.cost import main as cost

        print()
        cost()
