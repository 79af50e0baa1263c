"""What a new user and a fuzzer found in the first hour, each case on both servers:
headers that piled up, two request ids, compressed and cut bodies, header floods, and
authentication before any other answer."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import brotli
import pytest
import zstandard

from tests.conftest import SERVERS, start_gateway, upstream_env
from tests.gateway_process import GatewayProcess, raw_request
from tests.upstream import Upstream

CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
GOOD_BYTES = json.dumps(GOOD).encode()


def header_list(url: str, method: str, path: str, body: bytes | None = None) -> list[tuple]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=JSON if body else {})
        response = connection.getresponse()
        response.read()
        return [(k.lower(), v) for k, v in response.getheaders()]
    finally:
        connection.close()


def assert_openai_error(response, status: int, code: str | None = None) -> dict:
    assert response.status == status, response
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


def raw_exchange(port: int, data: bytes, half_close: bool = True, timeout: float = 3.0) -> bytes:
    """Send exactly these bytes; read what comes back until the server closes or is quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not part:
                break
            received += part
            if b"\r\n\r\n" in received and _complete(received):
                break
        return received


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


# -------------------------------------------------------------------- 1. headers

STREAM_BODY = json.dumps(
    {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "x"}]}
).encode()


@pytest.fixture(scope="module", params=SERVERS)
def mock_gateway(request, tmp_path_factory) -> Iterator[GatewayProcess]:
    """A gateway with nothing configured: the built-in mock answers (make run)."""
    process = start_gateway(tmp_path_factory, request.param, {})
    yield process
    process.stop()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"messages": 5}, "messages"),
        (CHAT, {"messages": [{"role": "user"}], "stream": True, "stream_options": [1]}, None),
        ("/v1/embeddings", {"input": ["a"] * 20000, "dimensions": 4096}, "input"),
        ("/v1/embeddings", {"input": [], "dimensions": 8}, "input"),
    ],
)
def test_the_mock_answers_odd_input_with_a_400_and_serves_on(mock_gateway, path, body, param):
    sent = json.dumps({"model": "mock-gpt", **body}).encode()
    error = assert_openai_error(raw_request(mock_gateway.url, "POST", path, sent, JSON), 400)
    assert error["param"] == (param or "stream_options")
    good = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}'
    assert raw_request(mock_gateway.url, "POST", CHAT, good, JSON).status == 200


@pytest.mark.parametrize("text", [1, None, [1], {"a": 1}, True, 1.5])
def test_the_mock_reads_text_parts_of_any_type(mock_gateway, text):
    content = [{"type": "text", "text": text}, {"type": "text", "text": "kept"}]
    sent = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": content}]})
    response = raw_request(mock_gateway.url, "POST", CHAT, sent.encode(), JSON)
    assert response.status == 200, response
    assert response.json()["choices"][0]["message"]["content"].endswith("to: kept")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", CHAT, b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]}'),
        (
            "POST",
            CHAT,
            STREAM_BODY,
        ),
        ("POST", "/v1/embeddings", b'{"model": "mock-embedding", "input": "x"}'),
        ("GET", "/v1/models", None),
        ("POST", "/v1/nope", b'{"model": "mock-gpt"}'),  # the mock's own 404
        ("POST", CHAT, b"{broken"),  # the gateway's own 400
    ],
)
def test_the_nth_response_carries_the_headers_of_the_first(mock_gateway, method, path, body):
    first = header_list(mock_gateway.url, method, path, body)
    for _ in range(5):
        nth = header_list(mock_gateway.url, method, path, body)
    assert len(nth) == len(first), (first, nth)
    assert [name for name, _ in nth].count("x-request-id") == 1


def test_one_request_id_and_the_upstreams_under_its_own_name(gateway, upstream):
    for body in (GOOD, {**GOOD, "stream": True}):
        sent = json.dumps(body).encode()
        headers = header_list(gateway.url, "POST", CHAT, sent)
        ids = [value for name, value in headers if name == "x-request-id"]
        assert len(ids) == 1 and ids[0].startswith("req_") and "upstream" not in ids[0]
        upstream_ids = [value for name, value in headers if name == "x-upstream-request-id"]
        assert len(upstream_ids) == 1 and upstream_ids[0].startswith("req_upstream")


def test_the_sdk_reads_the_gateways_request_id(gateway, upstream):
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.request_id is not None
    assert reply.request_id.startswith("req_") and "," not in reply.request_id


# ---------------------------------------------------------- 3. compressed bodies

ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_compressed_body_is_decoded_and_forwarded_plain(gateway, upstream, encoding):
    sent = ENCODERS[encoding](GOOD_BYTES)
    response = raw_request(gateway.url, "POST", CHAT, sent, {**JSON, "content-encoding": encoding})
    assert response.status == 200, response
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
    forwarded = upstream.last()
    assert forwarded.json == GOOD
    assert "content-encoding" not in {k.lower() for k in forwarded.headers}


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_body_that_does_not_decode_is_a_400_and_never_forwarded(gateway, upstream, encoding):
    for body in (GOOD_BYTES, ENCODERS[encoding](GOOD_BYTES)[:-6]):  # mislabelled, cut
        response = raw_request(
            gateway.url, "POST", CHAT, body, {**JSON, "content-encoding": encoding}
        )
        assert_openai_error(response, 400)
    assert upstream.requests == []


def test_an_unknown_encoding_is_a_415(gateway, upstream):
    response = raw_request(
        gateway.url, "POST", CHAT, GOOD_BYTES, {**JSON, "content-encoding": "lzma"}
    )
    assert_openai_error(response, 415, "unsupported_content_encoding")
    assert upstream.requests == []


def test_stacked_encodings_are_decoded_up_to_three_and_refused_beyond(gateway, upstream):
    # Each layer costs up to the body limit's worth of work: a header of thousands of
    # "gzip" over stored layers would hold the worker for seconds. Three decode.
    def layered(count: int) -> bytes:
        body = GOOD_BYTES
        for _ in range(count):
            body = gzip.compress(body, compresslevel=0)
        return body

    three = raw_request(
        gateway.url, "POST", CHAT, layered(3), {**JSON, "content-encoding": "gzip, gzip,gzip"}
    )
    assert three.status == 200, three
    assert upstream.last().json == GOOD
    upstream.clear()
    many = ",".join(["gzip"] * 2000)
    refused = raw_request(gateway.url, "POST", CHAT, layered(4), {**JSON, "content-encoding": many})
    assert_openai_error(refused, 415, "unsupported_content_encoding")
    assert "at most 3" in refused.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_decompression_bomb_is_a_413(gateway, upstream, encoding):
    # 1 MiB limit; this inflates to 64 MiB from a few KiB.
    padding = b" " * (64 * 1024 * 1024)
    data = GOOD_BYTES[:-1] + padding + b"}"
    bomb = brotli.compress(data, quality=1) if encoding == "br" else ENCODERS[encoding](data)
    assert len(bomb) < 1024 * 1024
    response = raw_request(gateway.url, "POST", CHAT, bomb, {**JSON, "content-encoding": encoding})
    assert_openai_error(response, 413, "request_too_large")
    assert upstream.requests == []


# ---------------------------------------------------------------- 5. cut bodies


def test_a_body_shorter_than_its_length_is_a_400_and_never_forwarded(gateway, upstream):
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(GOOD_BYTES) + 40}\r\n\r\n"
    ).encode()
    answer = raw_exchange(gateway.port, head + GOOD_BYTES)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer
    body = rest.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["error"]["code"] == "incomplete_body"
    time.sleep(0.2)
    assert upstream.requests == []
    # and the next request is served
    assert raw_request(gateway.url, "POST", CHAT, GOOD_BYTES, JSON).status == 200


def test_a_valid_chunked_body_is_accepted(gateway, upstream):
    half = len(GOOD_BYTES) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        GOOD_BYTES[:half],
        len(GOOD_BYTES) - half,
        GOOD_BYTES[half:],
    )
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw_exchange(gateway.port, head + chunked, half_close=False)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert upstream.last().json == GOOD


# ------------------------------------------------------------ 6. header floods


def test_a_header_block_over_the_limit_is_a_431(gateway, upstream):
    huge = {**JSON, "x-filler": "a" * (80 * 1024)}  # over the 64 KiB default
    response = raw_request(gateway.url, "POST", CHAT, GOOD_BYTES, huge)
    assert_openai_error(response, 431, "request_header_fields_too_large")
    many = {**JSON, **{f"x-h{i}": "b" * 900 for i in range(80)}}
    assert_openai_error(raw_request(gateway.url, "POST", CHAT, GOOD_BYTES, many), 431)
    assert upstream.requests == []
    assert raw_request(gateway.url, "POST", CHAT, GOOD_BYTES, JSON).status == 200


# ---------------------------------------------------------- 7. authentication first


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/", None),
        ("GET", "/admin", None),
        ("POST", "/v2/chat/completions", GOOD_BYTES),
        ("POST", CHAT, b"{broken"),
        ("POST", CHAT, b'{"model": "echo"}'),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/echo", None),
        ("POST", "/v1/files/../x", b"{}"),
        ("DELETE", "/v1/files/f1", None),
    ],
)
def test_a_caller_without_a_valid_key_learns_nothing(auth_gateway, upstream, method, path, body):
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = raw_request(auth_gateway.url, method, path, body, {**JSON, **headers})
        assert_openai_error(response, 401, "invalid_api_key")
    assert upstream.requests == []


def test_probes_need_no_key(auth_gateway):
    assert raw_request(auth_gateway.url, "GET", "/health").status == 200


def test_an_oversized_body_may_be_refused_before_the_key_is_checked(auth_gateway, upstream):
    big = b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    assert_openai_error(raw_request(auth_gateway.url, "POST", CHAT, big, JSON), 413)


# ------------------------------------------ 4. one client's bad requests hurt nobody


def _bad_requests(port: int) -> list[bytes]:
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    plain = GOOD_BYTES
    return [
        # mislabelled and broken encodings
        (head + f"Content-Encoding: gzip\r\nContent-Length: {len(plain)}\r\n\r\n").encode() + plain,
        (head + "Content-Encoding: br\r\nContent-Length: 5\r\n\r\n").encode() + b"\x00\x01bad",
        (head + "Content-Encoding: lzma\r\nContent-Length: 2\r\n\r\n{}").encode(),
        # a cut body
        (head + f"Content-Length: {len(plain) + 10}\r\n\r\n").encode() + plain,
        # malformed JSON, wrong types
        (head + "Content-Length: 7\r\n\r\n{broken").encode(),
        (head + 'Content-Length: 27\r\n\r\n{"model": 1, "messages": 2}').encode(),
        # an oversized header block
        (head + f"X-Flood: {'f' * 70000}\r\nContent-Length: {len(plain)}\r\n\r\n").encode() + plain,
        # a model the upstream refuses with a client error is still forwarded: not here
    ]


def test_a_flood_of_bad_requests_does_not_degrade_another_clients_traffic(
    upstream_server: Upstream, tmp_path_factory, server_name
):
    env = upstream_env(upstream_server, GATEWAY_RETRIES="2")
    gateway = start_gateway(tmp_path_factory, server_name, env)
    stop = threading.Event()
    bad_sent = [0]

    def flood() -> None:
        cases = _bad_requests(gateway.port)
        while not stop.is_set():
            for case in cases:
                raw_exchange(gateway.port, case, timeout=2)
                bad_sent[0] += 1

    upstream_server.clear()
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for i in range(60):
            body = {"model": "echo", "messages": [{"role": "user", "content": f"n{i}"}]}
            response = raw_request(gateway.url, "POST", CHAT, json.dumps(body).encode(), JSON)
            assert response.status == 200, response
            assert response.headers["x-gateway-attempts"] == "1"
            assert response.json()["choices"][0]["message"]["content"] == f"echo: n{i}"
    finally:
        stop.set()
        flooder.join(10)
        gateway.stop()
    assert bad_sent[0] >= len(_bad_requests(0))
    # Only the good client's requests reached the upstream, each once.
    contents = [r.json["messages"][0]["content"] for r in upstream_server.requests]
    assert contents == [f"n{i}" for i in range(60)]


@pytest.fixture(params=SERVERS)
def server_name(request) -> str:
    return request.param
