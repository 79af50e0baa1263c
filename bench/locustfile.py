"""Locust users for ``make bench``; the scenario is chosen by ``BENCH_SCENARIO``.

Every user records what the table needs under a fixed name:

- ``chat``        non-streamed chat completion, ~1 KB request;
- ``stream``      whole 20-event stream, timed to its last byte; fails without [DONE];
- ``ttfb``        time to the first event of a stream (events 50 ms apart);
- ``slow-stream`` one slow stream per user, held to the end, plus ``max-gap``: the
                  largest pause between two events of that stream.

``BENCH_RATE`` is each user's request rate (``constant_throughput``); the total rate
is kept below what one locust process can generate, so the target, not locust, sets
the latency. Locust rounds its own percentiles to whole milliseconds; every sample is
also written, unrounded, to ``BENCH_SAMPLES`` (JSON) for sub-millisecond figures.
Requests started in the first ``BENCH_WARMUP`` seconds (connections opening) are left out.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from typing import Any

import gevent
from locust import constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

from bench.payloads import chat_body

SCENARIO = os.environ.get("BENCH_SCENARIO", "chat")
RATE = float(os.environ.get("BENCH_RATE", "0"))
KEY = os.environ.get("BENCH_KEY", "bench-key")
SAMPLES = os.environ.get("BENCH_SAMPLES")
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))

_samples: dict[str, list[float]] = defaultdict(list)
_failures: dict[str, int] = defaultdict(int)
_started = time.time()


@events.test_start.add_listener
def _on_start(**_: Any) -> None:
    global _started
    _started = time.time()


@events.request.add_listener
def _on_request(name: str, response_time: float, exception: Any, **kwargs: Any) -> None:
    if exception is not None:
        _failures[name] += 1
    elif kwargs.get("start_time", _started + WARMUP) >= _started + WARMUP:
        _samples[name].append(response_time)


@events.quitting.add_listener
def _on_quit(**_: Any) -> None:
    if SAMPLES:
        with open(SAMPLES, "w") as f:
            json.dump({"samples": _samples, "failures": _failures}, f)


PLAIN = chat_body(False)
STREAMED = chat_body(True)
SPACED = chat_body(True, "bench-delay-50")  # events 50 ms apart
SLOW = chat_body(True, "bench-delay-1000")  # events 1 s apart
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
PATH = "/v1/chat/completions"


class BenchUser(FastHttpUser):
    """One simulated client; keep-alive connections, like an SDK's."""

    wait_time = constant_throughput(RATE) if RATE else constant(0)
    connection_timeout = 30.0
    network_timeout = 60.0
    insecure = True

    @task
    def request(self) -> None:
        if SCENARIO == "chat":
            self.client.post(PATH, data=PLAIN, headers=HEADERS, name="chat")
        elif SCENARIO == "slow-stream":
            self.slow_stream()
        else:
            self.stream(SCENARIO)

    def stream(self, name: str) -> None:
        started = time.perf_counter()
        body = SPACED if name == "ttfb" else STREAMED
        with self.client.post(
            PATH, data=body, headers=HEADERS, name=name, stream=True, catch_response=True
        ) as response:
            # geventhttpclient's read(n) waits for n bytes: one byte times the first event.
            tail = response.iter_content(1, decode_content=False).__next__() if response.ok else b""
            first = time.perf_counter()
            size = len(tail)
            for chunk in response.iter_content(65536, decode_content=False):
                size += len(chunk)
                tail = (tail + chunk)[-32:]
            done = time.perf_counter()
            end = first if name == "ttfb" else done
            response.request_meta["response_time"] = (end - started) * 1000
            response.request_meta["response_length"] = size
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif not tail.endswith(b"data: [DONE]\n\n"):
                response.failure("stream ended without [DONE]")
            else:
                response.success()

    def slow_stream(self) -> None:
        """One stream per user, held to its end; then this user idles."""
        started = time.perf_counter()
        gaps = []
        with self.client.post(
            PATH, data=SLOW, headers=HEADERS, name="slow-stream", stream=True, catch_response=True
        ) as response:
            last = None
            tail = b""
            # Small reads return as each event arrives (read(n) waits for n bytes).
            for chunk in response.iter_content(128, decode_content=False):
                now = time.perf_counter()
                if last is not None:
                    gaps.append(now - last)
                last = now
                tail = (tail + chunk)[-32:]
            response.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            if response.status_code == 200 and tail.endswith(b"data: [DONE]\n\n"):
                response.success()
            else:
                response.failure(f"status {response.status_code}, incomplete stream")
        if gaps:
            self.environment.events.request.fire(
                request_type="GAP",
                name="max-gap",
                response_time=max(gaps) * 1000,
                response_length=0,
                exception=None,
                context={},
            )
        gevent.sleep(3600)  # hold: one stream per user; the run's time limit ends it
