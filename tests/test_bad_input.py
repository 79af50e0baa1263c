"""Malformed requests get a clear OpenAI error with the right status, and the worker
carries on: after each one, a normal request is served normally."""

from __future__ import annotations

import pytest

from tests.gateway_process import raw_request

CHAT = "/v1/chat/completions"
GOOD = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}'

BAD_BODIES = [
    # (body, expected param, words expected in the message)
    (b"{not json", None, "not valid JSON"),
    (b"", None, "empty"),
    (b"[1, 2]", None, "JSON object"),
    (b"null", None, "JSON object"),
    (b'"text"', None, "JSON object"),
    (b'{"model": 123, "messages": []}', "model", "model"),
    (b'{"model": "m", "messages": "x"}', "messages", "messages"),
    (b'{"model": "m", "messages": [], "stream": "yes"}', "stream", "stream"),
    (b'{"messages": []}', "model", "model"),
    (b'{"model": "m"}', "messages", "messages"),
    (b'{"model": "m", "messages": [], "x": "\xff\xfe"}', None, "UTF-8"),
    (b'{"model": "m", "messages": ' + b"[" * 10000 + b"]" * 10000 + b"}", None, "nested"),
    (b'{"model": "m", "messages": []} trailing', None, "not valid JSON"),
]


def assert_error(response, status: int, param: str | None = None, words: str = "") -> None:
    assert response.status == status, response
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert words.lower() in error["message"].lower()


def assert_serves_normally(gateway) -> None:
    response = raw_request(gateway.url, "POST", CHAT, GOOD, {"content-type": "application/json"})
    assert response.status == 200, response
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"


@pytest.mark.parametrize(("body", "param", "words"), BAD_BODIES)
def test_bad_body_is_a_400_naming_the_param(gateway, upstream, body, param, words):
    response = raw_request(gateway.url, "POST", CHAT, body, {"content-type": "application/json"})
    assert_error(response, 400, param, words)
    assert upstream.requests == []
    assert_serves_normally(gateway)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", b'{"model": "m"}', "prompt"),
        ("/v1/completions", b'{"model": ["m"], "prompt": "p"}', "model"),
        ("/v1/embeddings", b'{"model": "m"}', "input"),
        ("/v1/embeddings", b'{"input": "x"}', "model"),
    ],
)
def test_other_endpoints_validate_their_required_fields(gateway, upstream, path, body, param):
    response = raw_request(gateway.url, "POST", path, body, {"content-type": "application/json"})
    assert_error(response, 400, param)
    assert_serves_normally(gateway)


def test_body_over_the_limit_is_a_413(gateway, upstream):
    big = b'{"model": "m", "messages": [], "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = raw_request(gateway.url, "POST", CHAT, big, {"content-type": "application/json"})
    assert_error(response, 413, None, "larger than")
    assert upstream.requests == []
    assert_serves_normally(gateway)


def test_unknown_path_is_an_openai_404(gateway, upstream):
    for path in ("/", "/nope", "/v2/chat/completions"):
        assert_error(raw_request(gateway.url, "GET", path), 404, None, "unknown path")
    assert_serves_normally(gateway)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../admin",
        "/v1/files/..",
        "/v1/%2e%2e/admin",
        "/v1/files/%2e%2E/x",
        "/v1/a%2fb",
        "/v1/a%5cb",
    ],
)
def test_paths_never_climb_out_of_the_api(gateway, upstream, path):
    response = raw_request(gateway.url, "GET", path)
    if response.status == 404:
        assert upstream.requests == []
    else:  # a server that decodes %2f first forwards /v1/a/b: still inside the API
        assert response.status == 200, response
        forwarded = upstream.last().path
        assert forwarded.startswith("/v1/") and ".." not in forwarded.split("/")
    assert_serves_normally(gateway)


def test_health(gateway):
    response = raw_request(gateway.url, "GET", "/health")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/completions", "/v1/messages"])
def test_a_known_endpoint_with_the_wrong_method_is_a_405(gateway, upstream, path):
    response = raw_request(gateway.url, "GET", path)
    assert response.status == 405, response
    assert response.headers["allow"] == "POST"
    assert upstream.requests == []
