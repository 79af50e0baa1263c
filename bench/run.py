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
import subprocess
import time
from pathlib import Path

from bench.harness import KEYS_CONFIG
from bench.plan import KEY_TARGETS, Run, Scenario, Settings, scenarios
from bench.processes import PYTHON, ROOT, MemoryWatch, Process, free_port, pinned, wait_listening


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
        wait_listening(port, ceiling)
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
        variants: list[tuple[str, dict[str, str]]] = [("gateway", {}), ("gateway-hooks", hooked)]
        if any(set(s.targets) & set(KEY_TARGETS) for s in scenarios(self.settings)):
            keys = {"GATEWAY_CONFIG": KEYS_CONFIG}
            redis_url = self.start_redis()
            variants += [
                ("keys-memory", keys),
                ("keys-redis", {**keys, "GATEWAY_REDIS_URL": redis_url}),
            ]
        for name, extra in variants:
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

    def start_redis(self) -> str:
        """A redis-server for the keys-on-Redis target (beside the mock: shared
        infrastructure, as the upstream is), its URL."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        port = free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no"]
        redis = Process("redis", command, self.load_cores, self.env(), self.results / "redis.log")
        self.processes.append(redis)
        wait_listening(port, redis)
        return f"redis://127.0.0.1:{port}/0"

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
        wait_listening(mock_port, mock)
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


def main() -> None:
    Bench(Settings.from_env()).run()
