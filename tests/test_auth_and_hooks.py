"""Client keys, and hooks loaded by import path, in a real server."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import CLIENT_KEY
from tests.gateway_process import raw_request
from tests.sample_hooks import HOOK_KEY
from tests.upstream import UPSTREAM_KEY

CHAT = "/v1/chat/completions"
BODY = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}'


def headers(**extra: str) -> dict[str, str]:
    return {"content-type": "application/json", **extra}


@pytest.mark.parametrize(
    "presented",
    [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": f"Basic {CLIENT_KEY}"},
        {"authorization": f"Bearer {CLIENT_KEY}x"},
        {"authorization": f"Bearer {CLIENT_KEY[:-1]}"},
    ],
)
def test_missing_or_wrong_key_is_a_401(auth_gateway, upstream, presented):
    response = raw_request(auth_gateway.url, "POST", CHAT, BODY, headers(**presented))
    assert response.status == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "presented",
    [
        {"authorization": f"Bearer {CLIENT_KEY}"},
        {"authorization": "bearer second-key"},
        {"api-key": CLIENT_KEY},
        {"x-api-key": "second-key"},
    ],
)
def test_valid_key_is_replaced_by_the_upstream_key(auth_gateway, upstream, presented):
    response = raw_request(auth_gateway.url, "POST", CHAT, BODY, headers(**presented))
    assert response.status == 200, response
    sent = upstream.last()
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    forwarded = json.dumps(sent.headers) + sent.body.decode()
    assert CLIENT_KEY not in forwarded and "second-key" not in forwarded
    assert "api-key" not in {k.lower() for k in sent.headers}
    assert "x-api-key" not in {k.lower() for k in sent.headers}


def test_one_hook_both_authenticates_and_rewrites(auth_gateway, upstream):
    sdk = openai.OpenAI(base_url=f"{auth_gateway.url}/v1", api_key=HOOK_KEY, max_retries=0)
    completion = sdk.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "echo: hi"
    sent = upstream.last()
    # The hook's key was accepted (authenticate) and the request was edited (before_request).
    assert sent.json["temperature"] == 0.25
    assert sent.json["x_identity"] == "hook-user"
    assert sent.headers["x-hooked"] == "yes"
    assert HOOK_KEY not in json.dumps(sent.headers)


def test_the_hook_also_edits_requests_of_key_list_clients(auth_gateway, upstream):
    response = raw_request(
        auth_gateway.url, "POST", CHAT, BODY, headers(authorization=f"Bearer {CLIENT_KEY}")
    )
    assert response.status == 200
    assert upstream.last().json["x_identity"].startswith("key_")


def test_chunk_hook_sees_whole_events_of_a_split_stream(auth_gateway, upstream):
    """The upstream splits events at odd byte boundaries; the hook edits each whole event."""
    body = (
        b'{"model": "sse-split:4", "stream": true, "messages": [{"role": "user", "content": "x"}]}'
    )
    response = raw_request(
        auth_gateway.url, "POST", CHAT, body, headers(authorization=f"Bearer {CLIENT_KEY}")
    )
    assert response.status == 200
    events = [e for e in response.body.split(b"\n\n") if e]
    contents = [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]]
    assert contents == ["PART0 ", "PART1 ", "PART2 ", "PART3 "]
    assert events[-1] == b"data: [DONE]"


def test_chunk_hook_drops_events(auth_gateway, upstream):
    sdk = openai.OpenAI(base_url=f"{auth_gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    stream = sdk.chat.completions.create(
        model="sse:3", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert [c.choices[0].delta.content for c in stream] == ["TOK0 ", "TOK2 "]


def test_health_needs_no_key(auth_gateway):
    assert raw_request(auth_gateway.url, "GET", "/health").status == 200


def test_models_needs_a_key(auth_gateway):
    assert raw_request(auth_gateway.url, "GET", "/v1/models").status == 401
    ok = raw_request(
        auth_gateway.url, "GET", "/v1/models", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert ok.status == 200
