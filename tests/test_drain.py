"""SIGTERM drains: new connections are refused, what is in flight finishes, exit 0.

A real gateway process per case, both servers, one and two workers; the signal goes to
the main process only, as a supervisor (systemd, Docker, Kubernetes) sends it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVERS, start_gateway, upstream_env
from tests.gateway_process import GatewayProcess, raw_request
from tests.upstream import Upstream


class InFlight(threading.Thread):
    """One request sent now, its whole answer read in the background."""

    def __init__(self, gateway: GatewayProcess, body: dict[str, object]) -> None:
        super().__init__(daemon=True)
        self.gateway = gateway
        self.body = json.dumps(body).encode()
        self.status = 0
        self.data = b""
        self.headers: dict[str, str] = {}
        self.answered = threading.Event()  # the status and headers are in
        self.sent = threading.Event()
        self.start()
        assert self.sent.wait(5)

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=30)
        try:
            connection.request(
                "POST",
                "/v1/chat/completions",
                self.body,
                {"content-type": "application/json"},
            )
            self.sent.set()
            response = connection.getresponse()
            self.status = response.status
            self.headers = {k.lower(): v for k, v in response.getheaders()}
            self.answered.set()
            try:
                self.data = response.read()
            except http.client.IncompleteRead as cut:  # kept, so that a failure shows it
                self.data = cut.partial + b"<cut>"
        finally:
            self.sent.set()
            self.answered.set()
            connection.close()


def _terminate(gateway: GatewayProcess) -> float:
    os.kill(gateway.process.pid, signal.SIGTERM)
    return time.monotonic()


def _refused(gateway: GatewayProcess) -> bool:
    """Whether a new connection is turned away, waiting a moment for the workers to stop."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            raw_request(gateway.url, "GET", "/health", timeout=1)
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(params=[(server, workers) for server in SERVERS for workers in (1, 2)])
def draining_gateway(
    request: pytest.FixtureRequest,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    server, workers = request.param
    env = upstream_env(
        upstream_server,
        GATEWAY_WORKERS=str(workers),
        GATEWAY_DRAIN_SECONDS="10",
        GATEWAY_UPSTREAM_TIMEOUT="20",
    )
    process = start_gateway(tmp_path_factory, server, env)
    yield process
    process.stop()


def test_sigterm_lets_an_open_stream_finish_refuses_new_connections_and_exits_0(
    draining_gateway: GatewayProcess,
) -> None:
    stream = InFlight(draining_gateway, {"model": "sse:8:0.3", "stream": True, "messages": []})
    time.sleep(0.5)  # the stream is open, its first events out
    started = _terminate(draining_gateway)

    assert _refused(draining_gateway)
    stream.join(15)
    assert draining_gateway.process.wait(15) == 0, draining_gateway.log()
    assert time.monotonic() - started < 8  # it left once the stream was done, not at the deadline
    assert stream.status == 200
    assert stream.data.count(b"data: {") == 8
    assert stream.data.endswith(b"data: [DONE]\n\n")


def test_sigterm_lets_a_waiting_request_get_its_answer(
    draining_gateway: GatewayProcess,
) -> None:
    waiting = InFlight(draining_gateway, {"model": "slow:1.5", "messages": []})
    time.sleep(0.3)
    _terminate(draining_gateway)

    waiting.join(15)
    assert draining_gateway.process.wait(15) == 0, draining_gateway.log()
    assert waiting.status == 200
    assert json.loads(waiting.data)["object"] == "chat.completion"


@pytest.mark.parametrize("server", SERVERS)
def test_what_outlasts_the_drain_ends_with_a_shutting_down_error(
    server: str, upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = upstream_env(upstream_server, GATEWAY_DRAIN_SECONDS="1", GATEWAY_UPSTREAM_TIMEOUT="20")
    gateway = start_gateway(tmp_path_factory, server, env)
    try:
        stream = InFlight(gateway, {"model": "sse:30:0.3", "stream": True, "messages": []})
        waiting = InFlight(gateway, {"model": "slow:10", "messages": []})
        time.sleep(0.5)
        _terminate(gateway)

        stream.join(15)
        waiting.join(15)
        assert gateway.process.wait(15) == 0, gateway.log()
    finally:
        gateway.stop()
    # The stream keeps its 200 and what it sent, and ends with an SSE error event.
    assert stream.status == 200
    assert b"tok1 " in stream.data
    last = stream.data.strip().rsplit(b"\n\n", 1)[-1]
    assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "shutting_down"
    # The request still waiting for its upstream is answered, not dropped.
    assert waiting.status == 503
    assert json.loads(waiting.data)["error"]["code"] == "shutting_down"
    assert "in flight" in Path(gateway.log_path).read_text()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("server", SERVERS)
def test_ctrl_c_drains_like_sigterm_and_shuts_down_quietly(
    server: str, workers: int, upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group."""
    env = upstream_env(
        upstream_server,
        GATEWAY_WORKERS=str(workers),
        GATEWAY_DRAIN_SECONDS="10",
        GATEWAY_UPSTREAM_TIMEOUT="20",
    )
    gateway = start_gateway(tmp_path_factory, server, env)
    try:
        stream = InFlight(gateway, {"model": "sse:6:0.3", "stream": True, "messages": []})
        waiting = InFlight(gateway, {"model": "slow:1.2", "messages": []})
        time.sleep(0.4)
        os.killpg(gateway.process.pid, signal.SIGINT)
        stream.join(15)
        waiting.join(15)
        assert gateway.process.wait(15) == 0, gateway.log()
    finally:
        gateway.stop()
    assert stream.status == 200
    assert stream.data.endswith(b"data: [DONE]\n\n"), stream.data[-200:]
    assert waiting.status == 200
    log = Path(gateway.log_path).read_text()
    assert "error accepting connection" not in log
    assert "Traceback" not in log
