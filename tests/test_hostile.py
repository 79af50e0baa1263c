"""Hostile raw input, on both servers: malformed and cut chunked bodies, text that is not
a header value, Upgrade and CONNECT, multipart without a boundary. No 5xx made by the
gateway, nothing slower than a second, nothing incomplete forwarded — except where a
server makes it impossible, which docs/servers.md states and these tests pin down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import start_gateway, upstream_env
from tests.gateway_process import raw_request
from tests.test_drain import InFlight
from tests.test_hardening import GOOD_BYTES, raw_exchange

CHAT = "/v1/chat/completions"
HEAD = (
    f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    "Transfer-Encoding: chunked\r\n\r\n"
).encode()

MALFORMED_CHUNKED = {
    "not hex": b"zz\r\n" + GOOD_BYTES + b"\r\n0\r\n\r\n",
    "negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "overflow": b"fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "lf only": b"%x\n%s\n0\n\n" % (len(GOOD_BYTES), GOOD_BYTES),
    "no crlf after data": b"%x\r\n%sXX0\r\n\r\n" % (len(GOOD_BYTES), GOOD_BYTES),
    "trailers": b"%x\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(GOOD_BYTES), GOOD_BYTES),
}


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def json_error(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


@pytest.mark.parametrize("case", sorted(MALFORMED_CHUNKED))
def test_a_malformed_chunked_body_on_granian_is_a_400_at_once(gateway, upstream, case):
    if gateway.server != "granian":
        pytest.skip("on Robyn it aborts the worker: see the supervisor test below")
    started = time.monotonic()
    answer = raw_exchange(gateway.port, HEAD + MALFORMED_CHUNKED[case])
    assert time.monotonic() - started < 1.0
    if answer:  # or nothing: Granian closes a connection whose trailers it cannot read
        assert status_of(answer) == 400, answer
        assert json_error(answer)["code"] == "incomplete_body"
    time.sleep(0.1)
    assert upstream.requests == []
    assert raw_request(gateway.url, "POST", CHAT, GOOD_BYTES).status == 200


def test_a_chunked_body_without_its_end_is_refused_or_at_least_never_a_5xx(gateway, upstream):
    """Cut at a chunk boundary, then half-closed: Granian sees the cut and answers 400;
    Robyn cannot tell it from a whole body (docs/servers.md), so it is served as it arrived."""
    cut = b"%x\r\n%s\r\n" % (len(GOOD_BYTES), GOOD_BYTES)  # no terminating 0-chunk
    started = time.monotonic()
    answer = raw_exchange(gateway.port, HEAD + cut)
    assert time.monotonic() - started < 1.0
    if gateway.server == "granian":
        assert status_of(answer) == 400, answer
        assert json_error(answer)["code"] == "incomplete_body"
        time.sleep(0.1)
        assert upstream.requests == []
    else:
        assert status_of(answer) < 500, answer


def test_a_cut_chunked_body_mid_chunk_is_refused(gateway, upstream):
    cut = b"%x\r\n%s" % (len(GOOD_BYTES), GOOD_BYTES[:20])
    answer = raw_exchange(gateway.port, HEAD + cut)
    assert 400 <= status_of(answer) < 500 or answer == b"", answer
    time.sleep(0.1)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "model",
    ["bad\r\nx-injected: 1", "nul\x00byte", "tab\tand\x7fdel", "naïve-λ-模型", " padded "],
)
def test_client_text_that_is_no_header_value_never_breaks_a_response(gateway, upstream, model):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode()
    started = time.monotonic()
    response = raw_request(gateway.url, "POST", CHAT, body, {"content-type": "application/json"})
    assert time.monotonic() - started < 1.0
    assert response.status == 200, response
    assert "x-gateway-model" not in response.headers
    assert "x-injected" not in response.headers
    assert upstream.last().json["model"] == model  # the model itself goes on as sent


def test_a_request_id_that_is_no_header_value_is_replaced(gateway, upstream):
    raw = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: id\twith\ttabs\r\nContent-Length: {len(GOOD_BYTES)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + GOOD_BYTES
    answer = raw_exchange(gateway.port, raw, half_close=False)
    assert status_of(answer) == 200, answer
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.count(b"x-request-id: req_") == 1 and b"tabs" not in head


def test_upgrade_and_connect_are_answered_at_once(gateway, upstream, request):
    if gateway.server == "robyn":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="Robyn reads Upgrade/CONNECT as a body until the client leaves (servers.md)",
            )
        )
    upgrade = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    for raw in (upgrade, connect):
        started = time.monotonic()
        answer = raw_exchange(gateway.port, raw, half_close=False, timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert 400 <= status_of(answer) < 500, answer
    assert upstream.requests == []


def test_a_multipart_body_without_a_boundary_is_a_400(gateway, upstream, request):
    if gateway.server == "robyn":
        request.applymarker(
            pytest.mark.xfail(
                strict=True, reason="Robyn answers its own 500 before the gateway runs (servers.md)"
            )
        )
    body = b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--x--\r\n'
    response = raw_request(
        gateway.url,
        "POST",
        "/v1/audio/transcriptions",
        body,
        {"content-type": "multipart/form-data"},
    )
    assert response.status == 400, response
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_a_clients_malformed_request_is_never_logged_as_an_error(gateway, upstream):
    # Robyn's actix logs every parse failure at ERROR; a client must not write those.
    bad_length = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\n"
    bad_header = b"GET /health HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n"
    for raw in (bad_length, bad_header):
        assert 400 <= status_of(raw_exchange(gateway.port, raw)) < 500
    body = b"--B\r\nno disposition\r\n\r\nx\r\n--B--\r\n"
    multipart = {"content-type": "multipart/form-data; boundary=B"}
    raw_request(gateway.url, "POST", "/v1/audio/transcriptions", body, multipart)
    assert raw_request(gateway.url, "POST", CHAT, GOOD_BYTES).status == 200
    time.sleep(0.3)
    errors = [line for line in gateway.log().splitlines() if " ERROR " in line]
    assert errors == []


def _workers(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task").glob("*/children")
    return {int(child) for path in children for child in path.read_text().split()}


def test_robyn_replaces_an_aborted_worker_and_the_others_streams_go_on(
    upstream_server, tmp_path_factory
):
    env = upstream_env(upstream_server, GATEWAY_WORKERS="2", GATEWAY_UPSTREAM_TIMEOUT="20")
    gateway = start_gateway(tmp_path_factory, "robyn", env)
    try:
        before = _workers(gateway.process.pid)
        assert len(before) == 2
        # Open streams until both workers hold some (each worker's request ids carry a
        # prefix of their own; the kernel hands connections to either).
        streams: list[InFlight] = []
        while len({s.headers.get("x-request-id", "")[:16] for s in streams}) < 2:
            assert len(streams) < 40, "every stream went to one worker"
            stream = InFlight(gateway, {"model": "sse:16:0.25", "stream": True, "messages": []})
            assert stream.answered.wait(5)
            streams.append(stream)
        raw_exchange(gateway.port, HEAD + MALFORMED_CHUNKED["not hex"], timeout=2)
        deadline = time.monotonic() + 10
        while not (before - _workers(gateway.process.pid)):
            assert time.monotonic() < deadline, "no worker aborted"
            time.sleep(0.05)
        for stream in streams:
            stream.join(20)
        whole = [s for s in streams if s.data.endswith(b"data: [DONE]\n\n")]
        cut = [s for s in streams if not s.data.endswith(b"data: [DONE]\n\n")]
        assert whole, "every stream was cut: the other worker's streams must go on"
        # The cut ones were all on the worker that aborted; the other's all went on.
        prefix = lambda s: s.headers["x-request-id"][:16]  # noqa: E731
        assert {prefix(s) for s in cut}.isdisjoint({prefix(s) for s in whole})
        # A replacement is serving within seconds, and the gateway never went down.
        deadline = time.monotonic() + 15
        while len(_workers(gateway.process.pid)) < 2:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.1)
        for _ in range(20):
            assert raw_request(gateway.url, "POST", CHAT, GOOD_BYTES).status == 200
        assert gateway.process.poll() is None
        assert len(cut) < len(streams)
    finally:
        gateway.stop()


def test_robyn_warns_when_it_listens_beyond_loopback(upstream_server, tmp_path_factory):
    env = upstream_env(upstream_server, GATEWAY_HOST="0.0.0.0")
    gateway = start_gateway(tmp_path_factory, "robyn", env)
    try:
        log = gateway.log()
    finally:
        gateway.stop()
    assert "one malformed chunked request body aborts a Robyn worker" in log


def test_granian_on_any_address_does_not_warn(upstream_server, tmp_path_factory):
    env = upstream_env(upstream_server, GATEWAY_HOST="0.0.0.0")
    gateway = start_gateway(tmp_path_factory, "granian", env)
    try:
        log = gateway.log()
    finally:
        gateway.stop()
    assert "aborts a Robyn worker" not in log
