"""Operating the gateway, on real processes (both servers, one and two workers): the
access log, Prometheus metrics read with prometheus-client's own parser, streamed
usage, readiness, trace context."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway, upstream_env
from tests.gateway_process import GatewayProcess, free_port, raw_request
from tests.upstream import UPSTREAM_KEY, Upstream

CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]


def body(model: str, **extra: object) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **extra}).encode()


class Operated:
    """A gateway process with its access log in a file of its own."""

    def __init__(self, process: GatewayProcess, access_log: Path) -> None:
        self.process = process
        self.access_log = access_log

    @property
    def url(self) -> str:
        return self.process.url

    def lines(self, expected: int, timeout: float = 5.0) -> list[dict]:
        """The access log's lines, once there are ``expected`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log.read_text() if self.access_log.exists() else ""
            lines = [json.loads(line) for line in text.splitlines()]
            if len(lines) >= expected or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def line_where(self, **fields: object) -> dict:
        """The last line with these fields, waiting for it to be written."""
        deadline = time.monotonic() + 5
        while True:
            for line in reversed(self.lines(0, timeout=0)):
                if all(line.get(k) == v for k, v in fields.items()):
                    return line
            assert time.monotonic() < deadline, f"no access-log line with {fields}"
            time.sleep(0.05)

    def scrape(self, path: str = "/metrics", url: str | None = None) -> dict:
        response = raw_request(url or self.url, "GET", path)
        assert response.status == 200, response
        assert response.headers["content-type"].startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(response.body.decode())}


def operated_gateway(
    tmp_path_factory, server: str, upstream: Upstream, workers: int = 1, **extra: str
) -> Operated:
    access_log = tmp_path_factory.mktemp("access") / "access.log"
    env = upstream_env(
        upstream,
        GATEWAY_ACCESS_LOG=str(access_log),
        GATEWAY_WORKERS=str(workers),
        GATEWAY_API_KEYS=CLIENT_KEY,
        GATEWAY_HOOKS="tests.sample_hooks:Refuser",
        GATEWAY_IDLE_TIMEOUT="0.5",
        **extra,
    )
    return Operated(start_gateway(tmp_path_factory, server, env), access_log)


@pytest.fixture(scope="module", params=[(s, w) for s in SERVERS for w in (1, 2)])
def operated(request, upstream_server, tmp_path_factory) -> Iterator[Operated]:
    server, workers = request.param
    gateway = operated_gateway(tmp_path_factory, server, upstream_server, workers)
    yield gateway
    gateway.process.stop()


def sample(families: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape_until(gateway: Operated, name: str, expected: float, **labels: str) -> dict:
    """Scrapes until ``name`` reaches ``expected`` (each worker snapshots every second)."""
    deadline = time.monotonic() + 6
    while True:
        families = gateway.scrape()
        if sample(families, name, **labels) >= expected or time.monotonic() > deadline:
            return families
        time.sleep(0.2)


def stream_text(url: str, payload: bytes) -> bytes:
    response = raw_request(url, "POST", CHAT, payload, JSON)
    assert response.status == 200, response
    return response.body


# ---------------------------------------------------------------- the whole picture


def test_counts_tokens_and_log_lines_match_what_was_sent(operated, upstream):
    client = OpenAI(base_url=f"{operated.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    sent = 0
    for _ in range(4):
        reply = client.chat.completions.create(model="echo", messages=MESSAGES)
        assert reply.usage.total_tokens == 7
        sent += 1
    # Streams whose client did not ask for usage: counted, and the client sees exactly
    # the chunks it would have seen (no usage chunk, no "usage": null).
    for _ in range(3):
        chunks = list(client.chat.completions.create(model="sse:4", messages=MESSAGES, stream=True))
        assert len(chunks) == 4 and all(c.choices and c.usage is None for c in chunks)
        sent += 1
    raw = stream_text(operated.url, body("sse:4", stream=True))
    assert b"usage" not in raw and raw.endswith(b"data: [DONE]\n\n")
    sent += 1
    # A stream whose client asked for usage gets it, and it is counted once.
    asked = list(
        client.chat.completions.create(
            model="sse:3", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].choices == [] and asked[-1].usage.total_tokens == 12
    sent += 1
    embedded = client.embeddings.create(model="emb", input="x")
    assert embedded.usage.prompt_tokens == 3
    sent += 1
    assert raw_request(operated.url, "POST", CHAT, body("status:503"), JSON).status == 503
    assert raw_request(operated.url, "POST", CHAT, b"{broken", JSON).status == 400
    assert raw_request(operated.url, "GET", "/nope", None, JSON).status == 404
    sent += 3

    families = scrape_until(operated, "gateway_requests_total", sent)
    assert sample(families, "gateway_requests_total") == sent  # probes are not counted
    assert sample(families, "gateway_requests_total", model="echo", status="200") == 4
    assert sample(families, "gateway_requests_total", status="503") == 1
    assert sample(families, "gateway_request_duration_seconds_count") == sent
    prompt = 4 * 5 + 4 * 9 + 9 + 3  # echo: 5 each; streams: 9 each; embeddings: 3
    completion = 4 * 2 + 4 * 4 + 3
    assert sample(families, "gateway_tokens_total", kind="prompt") == prompt
    assert sample(families, "gateway_tokens_total", kind="completion") == completion
    assert sample(families, "gateway_stream_outcomes_total", outcome="streamed") == 5
    assert sample(families, "gateway_upstream_attempts_total", result="ok") == 10
    assert sample(families, "gateway_upstream_attempts_total", result="status_503") == 1
    assert sample(families, "gateway_time_to_first_byte_seconds_count") == sent
    assert sample(families, "gateway_overhead_seconds_count") == 11  # those with attempts
    buckets = [s for s in families["gateway_request_duration_seconds"].samples if "le" in s.labels]
    assert {s.labels["le"] for s in buckets} >= {"0.001", "600.0", "+Inf"}

    lines = operated.lines(sent)
    assert len(lines) == sent
    by_model = {}
    for line in lines:
        by_model.setdefault(line["model"], []).append(line)
    assert all(line["usage"]["total_tokens"] == 7 for line in by_model["echo"])
    assert all(line["key"].startswith("key_") for line in lines if line["status"] != 401)
    assert {line["outcome"] for line in by_model["sse:4"]} == {"streamed"}
    assert all(line["usage"]["prompt_tokens"] == 9 for line in by_model["sse:4"])
    assert by_model["status:503"][0]["outcome"] == "upstream_error"
    for line in lines:
        assert line["request_id"].startswith("req_")
        assert line["duration_ms"] >= 0
        assert line["client"].startswith("127.0.0.1")
    assert all(line["user_agent"].startswith("OpenAI/Python") for line in by_model["echo"])


def test_no_key_and_no_body_reaches_any_log(operated, upstream):
    secret_content = "my-private-prompt-text"
    raw_request(operated.url, "POST", CHAT, body("echo"), JSON)
    payload = json.dumps(
        {"model": "echo", "messages": [{"role": "user", "content": secret_content}]}
    )
    raw_request(operated.url, "POST", CHAT, payload.encode(), JSON)
    raw_request(operated.url, "POST", CHAT, body("echo"), {"authorization": "Bearer wrong-key-xyz"})
    operated.lines(3)
    logs = operated.access_log.read_text() + operated.process.log()
    for secret in (CLIENT_KEY, UPSTREAM_KEY, "wrong-key-xyz", secret_content, "echo: hi"):
        assert secret not in logs


# ------------------------------------------------------- one line for every ending


def test_every_outcome_has_its_line(upstream_server, tmp_path_factory, server):
    gateway = operated_gateway(tmp_path_factory, server, upstream_server, GATEWAY_DRAIN_SECONDS="1")
    try:
        url = gateway.url
        cases = 0
        assert raw_request(url, "POST", CHAT, body("echo"), JSON).status == 200
        stream_text(url, body("sse:2", stream=True))
        broken = stream_text(url, body("sse-drop", stream=True))
        assert b'"error"' in broken
        idle = stream_text(url, body("sse-stall:1", stream=True))
        assert b"upstream_timeout" in idle
        assert raw_request(url, "POST", CHAT, body("echo"), {}).status == 401
        assert raw_request(url, "POST", CHAT, body("forbidden"), JSON).status == 403
        assert raw_request(url, "POST", CHAT, body("limited"), JSON).status == 429
        big = b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
        assert raw_request(url, "POST", CHAT, big, JSON).status == 413
        assert raw_request(url, "POST", CHAT, body("crash"), JSON).status == 500
        assert raw_request(url, "POST", CHAT, body("status:502"), JSON).status == 502
        cases = 10
        # The client leaves a stream mid-way.
        with socket.create_connection(("127.0.0.1", gateway.process.port)) as sock:
            payload = body("sse-endless", stream=True)
            head = (
                f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            sock.sendall(head.encode() + payload)
            assert b"t1" in _read_until(sock, b"t1")
        cases += 1
        # A stream still running when the worker stops after its drain time.
        drained = _Streaming(url, body("sse:40:0.2", stream=True))
        time.sleep(0.5)
        lines_before = gateway.lines(cases, timeout=8)
        assert len(lines_before) == cases, lines_before
        gateway.process.process.send_signal(15)
        drained.join(15)
        gateway.process.process.wait(20)
        cases += 1
    finally:
        gateway.process.stop()
    lines = gateway.lines(cases)
    outcomes = [line["outcome"] for line in lines]
    assert sorted(outcomes) == sorted(
        [
            "answered",
            "streamed",
            "stream_broken",
            "idle_timeout",
            "refused",  # 401
            "refused",  # 403
            "refused",  # 429
            "refused",  # 413
            "failed",  # a hook's bug
            "upstream_error",
            "client_left",
            "drained",
        ]
    ), outcomes
    statuses = {line["outcome"]: line["status"] for line in lines}
    assert statuses["client_left"] == 200  # its headers had been sent
    assert statuses["failed"] == 500
    refused = sorted(line["status"] for line in lines if line["outcome"] == "refused")
    assert refused == [401, 403, 413, 429]
    drained_line = next(line for line in lines if line["outcome"] == "drained")
    assert drained_line["error_code"] == "shutting_down"


def test_a_cut_body_is_logged_with_its_client(operated):
    with socket.create_connection(("127.0.0.1", operated.process.port)) as sock:
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"model": "cut-short"')
        sock.shutdown(socket.SHUT_WR)
        assert b" 400 " in _read_until(sock, b"\r\n")
    line = operated.line_where(error_code="incomplete_body")
    assert line["status"] == 400 and line["client"].startswith("127.0.0.1")


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        data += sock.recv(4096)
    return data


class _Streaming(threading.Thread):
    def __init__(self, url: str, payload: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.payload, self.data = url, payload, b""
        self.start()

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("POST", CHAT, self.payload, JSON)
            response = connection.getresponse()
            try:
                self.data = response.read()
            except http.client.IncompleteRead as cut:
                self.data = cut.partial
        except OSError:
            pass
        finally:
            connection.close()


@pytest.fixture(params=SERVERS)
def server(request) -> str:
    return request.param


# ------------------------------------------------------------------- readiness


def test_ready_turns_503_when_every_deployment_cools_down(tmp_path_factory, server):
    refused = free_port()
    config = tmp_path_factory.mktemp("ready") / "gateway.toml"
    config.write_text(
        f"""
[providers.down]
base_url = "http://127.0.0.1:{refused}/v1"
[models.m]
provider = "down"
retries = 0
cooldown = {{ failures = 1, window = 60, seconds = 30 }}
"""
    )
    gateway = start_gateway(tmp_path_factory, server, {"GATEWAY_CONFIG": str(config)})
    try:
        ready = raw_request(gateway.url, "GET", "/ready")
        assert ready.status == 200 and ready.json()["status"] == "ready"
        assert raw_request(gateway.url, "POST", CHAT, body("m")).status == 502
        not_ready = raw_request(gateway.url, "GET", "/ready")
        assert not_ready.status == 503, not_ready
        assert not_ready.json()["cooling"] == ["down"]
        assert "cooling down" in not_ready.json()["reason"]
        assert raw_request(gateway.url, "GET", "/health").status == 200  # still alive
    finally:
        gateway.stop()


async def test_ready_turns_503_while_draining():
    from gateway import Gateway, MockProvider, Request
    from gateway.providers.mock import MockProvider as Mock

    gateway = Gateway(Mock(chunk_delay=0.2))
    async with gateway:
        ready = await gateway.handle(Request("GET", "/ready", "", {}, b""))
        assert ready.status == 200
        stream = await gateway.handle(Request("POST", CHAT, "", {}, body("mock-gpt", stream=True)))
        import asyncio

        draining = asyncio.create_task(gateway.drain(5))
        await asyncio.sleep(0.05)
        during = await gateway.handle(Request("GET", "/ready", "", {}, b""))
        assert during.status == 503
        assert json.loads(during.body)["status"] == "draining"
        chunks = [chunk async for chunk in stream.iterate()]
        assert chunks[-1] == b"data: [DONE]\n\n"
        await draining
    assert MockProvider is Mock


# ------------------------------------------------------------- metrics settings


def test_metrics_off_removes_the_route(upstream_server, tmp_path_factory, server):
    env = upstream_env(upstream_server, GATEWAY_METRICS="off")
    gateway = start_gateway(tmp_path_factory, server, env)
    try:
        assert raw_request(gateway.url, "GET", "/metrics").status == 404
    finally:
        gateway.stop()


def test_metrics_on_a_port_of_their_own(upstream_server, tmp_path_factory, server):
    port = free_port()
    gateway = operated_gateway(
        tmp_path_factory, server, upstream_server, 2, GATEWAY_METRICS_PORT=str(port)
    )
    try:
        for _ in range(6):
            assert raw_request(gateway.url, "POST", CHAT, body("echo"), JSON).status == 200
        assert raw_request(gateway.url, "GET", "/metrics", None, JSON).status == 404
        deadline = time.monotonic() + 6
        while True:
            families = gateway.scrape(url=f"http://127.0.0.1:{port}")
            if sample(families, "gateway_requests_total") >= 7 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sample(families, "gateway_requests_total", status="200") == 6
        assert sample(families, "gateway_requests_total", status="404") == 1
    finally:
        gateway.process.stop()


def test_open_mode_model_labels_are_bounded(upstream_server, tmp_path_factory):
    from gateway.observability.metrics import MAX_OPEN_MODELS

    gateway = operated_gateway(tmp_path_factory, "granian", upstream_server)
    try:
        count = MAX_OPEN_MODELS + 30
        for i in range(count):
            raw_request(gateway.url, "POST", CHAT, body(f"echo-{i}"), JSON)
        families = scrape_until(gateway, "gateway_requests_total", count)
    finally:
        gateway.process.stop()
    models = {s.labels["model"] for s in families["gateway_requests"].samples}
    assert len(models) == MAX_OPEN_MODELS + 1 and "other" in models
    assert sample(families, "gateway_requests_total") == count


def test_json_log_format_for_the_gateway_and_its_server(upstream_server, tmp_path_factory, server):
    env = upstream_env(upstream_server, GATEWAY_LOG_FORMAT="json", GATEWAY_ACCESS_LOG="off")
    gateway = start_gateway(tmp_path_factory, server, env)
    try:
        raw_request(gateway.url, "POST", CHAT, body("fail:503:1"))
    finally:
        gateway.stop()
    lines = [line for line in gateway.log().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line: JSON
    assert {"time", "level", "logger", "message"} <= set(parsed[0])
    loggers = {line["logger"] for line in parsed}
    assert "gateway" in loggers
    if server == "granian":
        assert any(name.startswith("_granian") for name in loggers)


def test_a_retry_is_logged_without_the_upstreams_own_words(upstream_server, tmp_path_factory):
    # An upstream's error message may quote the request: the log says its status instead.
    env = upstream_env(upstream_server, GATEWAY_RETRIES="1", GATEWAY_ACCESS_LOG="off")
    gateway = start_gateway(tmp_path_factory, "granian", env)
    try:
        answer = raw_request(gateway.url, "POST", CHAT, body("fail:502:1"), JSON)
    finally:
        gateway.stop()
    assert answer.status == 200, answer
    retries = [line for line in gateway.log().splitlines() if "retrying in" in line]
    assert len(retries) == 1 and "upstream answered 502" in retries[0], retries
    assert "upstream says" not in gateway.log()


# ------------------------------------------------------------------ tracing


def test_traceparent_reaches_the_upstream_and_the_log(operated, upstream):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**JSON, "traceparent": traceparent, "tracestate": "vendor=1"}
    raw_request(operated.url, "POST", CHAT, body("echo", user="tracer"), headers)
    forwarded = upstream.last().headers
    assert forwarded["traceparent"] == traceparent
    assert forwarded["tracestate"] == "vendor=1"
    line = operated.line_where(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    assert line["model"] == "echo"


class OTLPReceiver:
    """A real OTLP/HTTP trace receiver on loopback: decodes what it is sent."""

    def __init__(self) -> None:
        from aiohttp import web
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list = []
        self._parse = ExportTraceServiceRequest.FromString

        async def traces(request: web.Request) -> web.Response:
            export = self._parse(await request.read())
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            return web.Response(status=200, content_type="application/x-protobuf", body=b"")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        self.upstream = Upstream()  # reuse its thread-and-loop plumbing for a second server
        self._app = app

    def start(self) -> OTLPReceiver:
        import asyncio

        from aiohttp import web

        ready = threading.Event()
        self.port = free_port()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            runner = web.AppRunner(self._app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self.runner = runner
            ready.set()
            loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.spans) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.spans)


def test_spans_reach_an_otlp_receiver(upstream_server, tmp_path_factory, server):
    receiver = OTLPReceiver().start()
    gateway = operated_gateway(
        tmp_path_factory,
        server,
        upstream_server,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="gateway-under-test",
    )
    client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    client_span = "00f067aa0ba902b7"
    try:
        upstream_server.clear()
        headers = {**JSON, "traceparent": f"00-{client_trace}-{client_span}-01"}
        answer = raw_request(gateway.url, "POST", CHAT, body("fail:503:1"), headers)
        assert answer.status == 503  # no retries in these gateways: one failed attempt
        answer = raw_request(gateway.url, "POST", CHAT, body("echo"), headers)
        assert answer.status == 200
        forwarded = upstream_server.last().headers["traceparent"]
        spans = receiver.wait_for(4)
        line = gateway.line_where(model="echo")
    finally:
        gateway.process.stop()
        receiver.stop()
    # The upstream sees the same trace, with the gateway's attempt span as the parent.
    _, trace_id, parent_id, _ = forwarded.split("-")
    assert trace_id == client_trace and parent_id != client_span
    assert line["trace_id"] == client_trace
    by_id = {span.span_id.hex(): span for span in spans}
    assert all(span.trace_id.hex() == client_trace for span in spans)
    requests = [s for s in spans if s.parent_span_id.hex() == client_span]
    attempts = [s for s in spans if s.parent_span_id.hex() in {r.span_id.hex() for r in requests}]
    assert len(requests) == 2 and len(attempts) == 2
    assert parent_id in by_id and by_id[parent_id] in attempts

    def attributes(span) -> dict:
        return {a.key: next(iter(a.value.ListFields()))[1] for a in span.attributes}

    echo = next(s for s in requests if attributes(s).get("gen_ai.request.model") == "echo")
    values = attributes(echo)
    assert echo.name == "chat echo"
    assert values["gen_ai.operation.name"] == "chat"
    assert values["gen_ai.provider.name"] == "openai"
    assert values["gen_ai.usage.input_tokens"] == 5
    assert values["gen_ai.usage.output_tokens"] == 2
    assert values["http.response.status_code"] == 200
    failed = next(s for s in attempts if attributes(s).get("http.response.status_code") == 503)
    assert failed.status.code == 2  # ERROR
