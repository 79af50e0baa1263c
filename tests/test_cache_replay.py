"""The response cache serves a hit as the upstream's answer was served: a stream as a
whole stream (to OpenAI and Anthropic clients alike), a body as its body — on both
servers, in front of the test upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.conftest import SERVERS, start_gateway, upstream_env
from tests.gateway_process import GatewayProcess, raw_request
from tests.upstream import Upstream

CONFIG = """
[cache]
ttl = 60
"""


@pytest.fixture(scope="module", params=SERVERS)
def cached(
    request: pytest.FixtureRequest,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("cache") / "gateway.toml"
    path.write_text(CONFIG)
    env = upstream_env(upstream_server, GATEWAY_CONFIG=str(path))
    process = start_gateway(tmp_path_factory, request.param, env)
    yield process
    process.stop()


def test_a_repeated_anthropic_stream_is_replayed_as_anthropic_events(cached, upstream):
    client = anthropic.Anthropic(base_url=cached.url, api_key="unused", max_retries=0, timeout=20)
    asked = {
        "model": "echo",
        "max_tokens": 20,
        "extra_body": {"temperature": 0},  # (this SDK has no parameter for it)
        "messages": [{"role": "user", "content": "a stream worth keeping"}],
    }
    answers = []
    for _ in range(2):
        stream = client.messages.create(stream=True, **asked)
        events = list(stream)
        answers.append((stream.response.headers["x-gateway-cache"], events))
    (first_state, first), (second_state, second) = answers
    assert (first_state, second_state) == ("miss", "hit")
    assert [e.type for e in second] == [e.type for e in first]
    assert second[0].type == "message_start" and second[-1].type == "message_stop"
    text = "".join(e.delta.text for e in second if e.type == "content_block_delta")
    assert text == "tok0 tok1 tok2 tok3 tok4 "  # what the upstream streams, whole
    assert len(upstream.requests) == 1

    message = client.messages.with_raw_response.create(**asked)  # the body: its own entry
    again = client.messages.with_raw_response.create(**asked)
    assert message.headers["x-gateway-cache"] == "miss"
    assert again.headers["x-gateway-cache"] == "hit"
    assert again.parse().content[0].text == message.parse().content[0].text


def test_a_repeated_openai_stream_is_replayed_whole(cached, upstream):
    client = openai.OpenAI(base_url=cached.url + "/v1", api_key="unused", max_retries=0)
    asked = {"model": "sse:5", "seed": 7, "messages": [{"role": "user", "content": "x"}]}
    texts, states = [], []
    for _ in range(2):
        response = client.chat.completions.with_raw_response.create(stream=True, **asked)
        states.append(response.headers["x-gateway-cache"])
        texts.append("".join(c.choices[0].delta.content or "" for c in response.parse()))
    assert states == ["miss", "hit"]
    assert texts[0] == texts[1] and texts[0].count("tok") == 5
    assert len(upstream.requests) == 1


def test_a_stream_the_client_did_not_ask_for_is_kept_whole_and_replayed_as_a_stream(
    cached, upstream
):
    body = {"model": "sse:3", "temperature": 0, "messages": [{"role": "user", "content": "y"}]}
    headers = {"content-type": "application/json"}
    first, second = (
        raw_request(cached.url, "POST", "/v1/chat/completions", json.dumps(body).encode(), headers)
        for _ in range(2)
    )
    assert first.status == second.status == 200
    assert second.headers["x-gateway-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.body == first.body and second.body.count(b"data: ") == 4  # 3 events, [DONE]
    assert len(upstream.requests) == 1
