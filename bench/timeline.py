"""``make bench-timeline``: where the time of one request goes, step by step.

For plain and streamed chat, through the gateway and through the ceiling (the bare
forwarder), this sends ``BENCH_TIMELINE_REQUESTS`` requests one at a time (after a
warm-up, a short pause between them) and prints, for each step of a request, the
median time since the client sent it:

    client sent -> server got the request -> server read the body
      -> upstream request started -> mock got the request -> upstream headers
      -> upstream first chunk (stream) / upstream body read (chat)
      -> server wrote headers -> server wrote the first chunk
      -> client got headers -> client got the first chunk -> client read it all

Server-side times come from ``bench.probe``, loaded into the (unchanged) server
through a ``sitecustomize.py`` in a temporary directory put first on its PYTHONPATH;
the mock notes arrivals itself (``BENCH_MOCK_TIMES``). All are ``CLOCK_MONOTONIC``,
one clock for every process of the machine. A step's time is its first occurrence
after the request was sent and before the next one was; beside each median, ``step`` is
the median over requests of the time since that request's previous step (negative when
a target takes the step earlier than the row above: the ceiling writes its headers
before the upstream's first chunk arrives, the gateway after). The hops between
processes vary most from run to run; the steps inside the server are the steadier part.
The target runs on the first CPU, the mock and the client on the others (as in
``make bench``).

Variables: ``BENCH_TIMELINE_REQUESTS`` (200: a run takes seconds, and medians of 50
moved by a fifth between runs on a shared machine), ``BENCH_TIMELINE_WARMUP`` (20),
``BENCH_TIMELINE_TARGETS`` (``ceiling,gateway``; names from ``bench.harness.TARGETS``).
Results: ``bench/results/timeline-<timestamp>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cost_plan import chosen_names, whole_number
from bench.harness import (
    DONE,
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
from bench.payloads import PATH, chat_body
from bench.processes import tree

PAUSE = 0.01  # seconds between two requests, so that one's aftermath ends before the next
SITECUSTOMIZE = """\
import os

if os.environ.get("BENCH_TIMELINE_DIR"):
    import bench.probe

    bench.probe.install(os.environ["BENCH_TIMELINE_DIR"])
"""

# (step, where it is noted); in the order a request goes through them.
STEPS = (
    ("client sent", "client"),
    ("server got the request", "server"),
    ("server read the body", "server"),
    ("upstream request started", "server"),
    ("mock got the request", "mock"),
    ("upstream headers", "server"),
    ("upstream chunk", "server"),
    ("upstream body read", "server"),
    ("server wrote headers", "server"),
    ("server wrote a chunk", "server"),
    ("client got headers", "client"),
    ("client got a chunk", "client"),
    ("client read it all", "client"),
)
LABELS = {
    "upstream chunk": "upstream first chunk",
    "server wrote a chunk": "server wrote the first chunk",
    "client got a chunk": "client got the first chunk",
}


@dataclass
class Sample:
    """One request's client-side times (ns, CLOCK_MONOTONIC)."""

    sent: int
    headers: int
    first: int
    done: int


def timed_post(client: Client, body: bytes, stream: bool) -> Sample:
    connection = client.connection
    sent = time.monotonic_ns()
    connection.request("POST", PATH, body, client.headers)
    response = connection.getresponse()
    headers = time.monotonic_ns()
    chunk = response.read1(65536)
    first = time.monotonic_ns()
    rest = response.read()
    done = time.monotonic_ns()
    data = chunk + rest
    if response.status != 200 or (stream and not data.endswith(DONE)):
        raise RuntimeError(f"{response.status}: {data[-200:]!r}")
    return Sample(sent, headers, first, done)


def run_target(
    target: Target,
    mock_url: str,
    requests: int,
    warmup: int,
    cores: str,
    out: Path,
    redis_url: str | None = None,
) -> dict[str, tuple[list[Sample], list[tuple[str, int]]]]:
    """Both scenarios against one target; per scenario, the client's samples and the
    server's noted steps."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    samples: dict[str, list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as site:
        Path(site, "sitecustomize.py").write_text(SITECUSTOMIZE)
        extra = {"GATEWAY_REDIS_URL": redis_url} if target.redis and redis_url else {}
        env = target.environ(port, mock_url, BENCH_TIMELINE_DIR=str(out), **extra)
        env["PYTHONPATH"] = os.pathsep.join([site, env["PYTHONPATH"]])
        command = target.command(port, mock_url)
        process = Process(target.name, command, cores, env, out / "target.log")
        try:
            wait_port(port, process, 60)
            client = Client(port, target.key, timeout=30)
            for name, stream in (("chat", False), ("stream", True)):
                body = chat_body(stream)
                for _ in range(warmup):
                    client.post(body, stream)
                time.sleep(PAUSE)
                samples[name] = []
                for _ in range(requests):
                    samples[name].append(timed_post(client, body, stream))
                    time.sleep(PAUSE)
            client.close()
            workers = [pid for pid in tree(process.popen.pid) if pid != process.popen.pid]
            for pid in workers:
                os.kill(pid, signal.SIGUSR2)
            files = [out / f"{pid}.json" for pid in workers]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(f.exists() for f in files):
                time.sleep(0.05)
        finally:
            process.stop()
    events = sorted(
        (tuple(e) for f in files if f.exists() for e in json.loads(f.read_text())),
        key=lambda e: e[1],
    )
    return {name: (s, events) for name, s in samples.items()}  # type: ignore[misc]


def offsets(
    samples: list[Sample], events: list[tuple[str, int]], mock: list[int]
) -> list[dict[str, float]]:
    """Per request, each step's time since the client sent it, in µs."""
    noted = sorted([*events, *(("mock got the request", t) for t in mock)], key=lambda e: e[1])
    requests = []
    for i, sample in enumerate(samples):
        end = samples[i + 1].sent if i + 1 < len(samples) else sample.done + int(PAUSE * 1e9)
        found = {
            "client sent": sample.sent,
            "client got headers": sample.headers,
            "client got a chunk": sample.first,
            "client read it all": sample.done,
        }
        for name, at in noted:
            if sample.sent <= at < end and name not in found:
                found[name] = at
        requests.append({step: (at - sample.sent) / 1000 for step, at in found.items()})
    return requests


def table(name: str, per_target: dict[str, list[dict[str, float]]]) -> list[str]:
    """Per step and target: the median time since the client sent, and the median of
    each request's time since its previous step (steadier than a difference of medians)."""
    targets = list(per_target)
    lines = [
        "",
        f"### {name}: median µs since the client sent; step: since the previous row",
        "",
        "| step | where | " + " | ".join(f"{t} | step" for t in targets) + " |",
        "| --- | --- | " + " | ".join("---: | ---:" for _ in targets) + " |",
    ]
    for step, where in STEPS:
        cells, seen = [], False
        for target in targets:
            requests = per_target[target]
            having = [r for r in requests if step in r]
            if len(having) < len(requests) // 2:  # a step this kind of request does not take
                cells += ["", ""]
                continue
            seen = True
            deltas = []
            for r in having:
                earlier = [s for s, _ in STEPS[: STEPS.index((step, where))] if s in r]
                deltas.append(r[step] - r[earlier[-1]] if earlier else 0.0)
            median = statistics.median(r[step] for r in having)
            cells += [f"{median:.0f}", f"{statistics.median(deltas):+.0f}"]
        if seen:
            lines.append(f"| {LABELS.get(step, step)} | {where} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    requests = whole_number("BENCH_TIMELINE_REQUESTS", 200, 1)
    warmup = whole_number("BENCH_TIMELINE_WARMUP", 20, 0)
    names = ("ceiling", "gateway")
    if os.environ.get("BENCH_TIMELINE_TARGETS", "").strip():
        names = chosen_names("BENCH_TIMELINE_TARGETS", tuple(TARGETS), family=False)
    results = ROOT / "bench" / "results" / time.strftime("timeline-%Y%m%d-%H%M%S")
    results.mkdir(parents=True, exist_ok=True)
    cores = sorted(os.sched_getaffinity(0))
    target_cores = str(cores[0])
    load_cores = ",".join(map(str, cores[1:] or cores))
    os.sched_setaffinity(0, [int(c) for c in load_cores.split(",")])  # the client
    mock_times = results / "mock-times.json"
    runs = {}
    needs_redis = any(TARGETS[name].redis for name in names)
    with (
        stopped_by_sigterm(),
        mock_upstream(load_cores, results / "mock.log", BENCH_MOCK_TIMES=str(mock_times)) as (
            _,
            mock_url,
        ),
        redis_server(results / "redis.log")
        if needs_redis
        else contextlib.nullcontext() as redis_url,
    ):
        for name in names:
            print(f"bench.timeline: {name}", flush=True)
            runs[name] = run_target(
                TARGETS[name], mock_url, requests, warmup, target_cores, results / name, redis_url
            )
    deadline = time.monotonic() + 10
    while not mock_times.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    mock = json.loads(mock_times.read_text()) if mock_times.exists() else []
    lines = [
        f"Timeline of one request: {requests} requests one at a time after {warmup} of "
        f"warm-up, {PAUSE * 1000:g} ms apart; target on CPU {target_cores}, mock and client "
        f"on CPU {load_cores}."
    ]
    for scenario in ("chat", "stream"):
        per_target = {
            name: offsets(*runs[name][scenario], mock) for name in names if scenario in runs[name]
        }
        lines += table(scenario, per_target)
    text = "\n".join(lines) + "\n"
    (results / "timeline.md").write_text(text)
    print(f"bench.timeline: results in {results.relative_to(ROOT)}\n")
    print(text)


if __name__ == "__main__":
    main()
