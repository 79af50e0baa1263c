"""Providers that do not speak OpenAI — Anthropic, Gemini (and Vertex AI), Azure OpenAI —
and Anthropic's API in front, through real gateway processes on both servers.

Clients are the official openai SDK (for /v1/chat/completions and /v1/embeddings) and
the official anthropic SDK (for /v1/messages); upstreams are real HTTP servers on
127.0.0.1 that speak each provider's wire format (tests/fake_providers.py) or OpenAI's
(tests/upstream.py). The gateway is configured by a config file with every provider type.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.fake_providers import (
    ANTHROPIC_KEY,
    AZURE_API_VERSION,
    AZURE_KEY,
    FIXTURE_TOOL_STREAM,
    GEMINI_KEY,
    VERTEX_TOKEN,
    FakeProviders,
)
from tests.gateway_process import GatewayProcess, raw_request
from tests.upstream import UPSTREAM_KEY, Upstream

HI = [{"role": "user", "content": "hi there"}]
SECRETS = (CLIENT_KEY, UPSTREAM_KEY, ANTHROPIC_KEY, GEMINI_KEY, VERTEX_TOKEN, AZURE_KEY)

CLAUDE_MODELS = [
    "claude-echo",
    "claude-fixture",
    "claude-fixture-tools",
    "claude-tools",
    "claude-json",
    "claude-thinking",
    "claude-split",
    "claude-slow",
    "claude-context",
    "claude-stream-error",
    "claude-overloaded-first",
    "claude-fail:529:1",
    *(f"claude-status:{code}" for code in (400, 401, 403, 404, 413, 429, 500, 529)),
]
GEMINI_MODELS = [
    "gemini-echo",
    "gemini-tools",
    "gemini-blocked",
    "gemini-unsafe",
    "gemini-slow",
    "gemini-context",
    "text-embedding-004",
    *(f"gemini-status:{code}" for code in (400, 403, 404, 429, 503)),
]


def config(fake: FakeProviders, upstream: Upstream) -> str:
    """The config file: every provider type, the scripted models, fallbacks across them."""
    lines = [
        "[routing]",
        "retries = 2",
        "backoff = { base = 0.01, max = 0.02 }",
        "",
        "[providers.openai]",
        f'base_url = "{upstream.base_url}"',
        'api_key_env = "TEST_OPENAI_KEY"',
        "",
        "[providers.claude]",
        'type = "anthropic"',
        f'base_url = "{fake.url}"',
        'api_key_env = "TEST_ANTHROPIC_KEY"',
        "max_tokens = 1024",
        "",
        "[providers.gemini]",
        'type = "gemini"',
        f'base_url = "{fake.url}"',
        'api_key_env = "TEST_GEMINI_KEY"',
        "",
        "[providers.vertex]",
        'type = "gemini"',
        f'base_url = "{fake.url}"',
        'project = "proj"',
        'location = "europe-west4"',
        'access_token_env = "TEST_VERTEX_TOKEN"',
        "",
        "[providers.azure]",
        'type = "azure"',
        f'base_url = "{fake.url}"',
        'api_key_env = "TEST_AZURE_KEY"',
        'deployments = { "gpt-4o" = "prod-4o" }',
        "",
        "[providers.azure-v1]",
        'type = "azure"',
        f'base_url = "{fake.url}"',
        "v1 = true",
        'api_key_env = "TEST_AZURE_KEY"',
        'deployments = { "gpt-4o-v1" = "prod-v1" }',
        "",
    ]

    def model(name: str, provider: str, upstream_model: str | None = None, **extra: str) -> None:
        lines.append(f'[models."{name}"]')
        lines.append(f'provider = "{provider}"')
        if upstream_model is not None:
            lines.append(f'model = "{upstream_model}"')
        lines.extend(f"{key} = {value}" for key, value in extra.items())
        lines.append("")

    for name in CLAUDE_MODELS:
        model(name, "claude")
    for name in GEMINI_MODELS:
        model(name, "gemini")
    model("vertex-echo", "vertex", "gemini-echo")
    model("gpt-4o", "azure")
    model("gpt-4o-v1", "azure-v1")
    model("gpt-tools", "azure", "azure-tools")
    model("azure-status:429", "azure")
    model("gpt-echo", "openai", "echo")
    model("gpt-limited", "openai", "status:429", retries="0")  # its Retry-After is 7 s
    model("gpt-drop", "openai", "sse-drop")
    model("sonnet", "claude", "claude-echo", aliases='["claude-latest"]')
    # Fallbacks across providers, both ways, and a context fallback.
    model("gpt-down", "openai", "status:503", retries="0", fallbacks='["claude-echo"]')
    model("claude-down", "claude", "claude-status:529", retries="1", fallbacks='["gpt-echo"]')
    model("claude-long", "claude", "claude-context", context_fallbacks='["claude-echo"]')
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fake():
    server = FakeProviders().start()
    yield server
    server.stop()


class Gateway:
    """A gateway process, and the access log it writes."""

    def __init__(self, process: GatewayProcess, access_log: Path) -> None:
        self.process = process
        self.url = process.url
        self.access_log = access_log

    def line(self, request_id: str, timeout: float = 5.0) -> dict:
        """The access-log line of a request (written within 0.2 s of its end)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.access_log.exists():
                for text in self.access_log.read_text().splitlines():
                    entry = json.loads(text)
                    if entry["request_id"] == request_id:
                        return entry
            time.sleep(0.05)
        raise AssertionError(f"no access-log line for {request_id}")


@pytest.fixture(scope="module", params=SERVERS)
def gw(request, fake, upstream_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("providers")
    path = directory / "gateway.toml"
    path.write_text(config(fake, upstream_server))
    access_log = directory / "access.log"
    env = {
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_ACCESS_LOG": str(access_log),
        "GATEWAY_UPSTREAM_TIMEOUT": "10",
        "TEST_OPENAI_KEY": UPSTREAM_KEY,
        "TEST_ANTHROPIC_KEY": ANTHROPIC_KEY,
        "TEST_GEMINI_KEY": GEMINI_KEY,
        "TEST_VERTEX_TOKEN": VERTEX_TOKEN,
        "TEST_AZURE_KEY": AZURE_KEY,
    }
    process = start_gateway(tmp_path_factory, request.param, env)
    yield Gateway(process, access_log)
    process.stop()


@pytest.fixture
def ups(fake, upstream_server):
    """Both upstreams, their records cleared for this test: (fake providers, OpenAI's)."""
    fake.clear()
    upstream_server.clear()
    return fake, upstream_server


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def claude_sdk(gw: Gateway, **kwargs) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", CLIENT_KEY)
    return anthropic.Anthropic(base_url=gw.url, max_retries=0, timeout=20, **kwargs)


def assert_no_secret_crossed(fake: FakeProviders, upstream: Upstream) -> None:
    """The client's key reached no upstream; each upstream got only its own key."""
    for recorded in (*fake.requests, *upstream.requests):
        assert CLIENT_KEY not in json.dumps(recorded.headers)
        assert CLIENT_KEY.encode() not in recorded.body


# ================================================================ OpenAI clients, Claude models


def test_claude_chat_with_usage_and_its_own_key(gw, ups):
    fake, upstream = ups
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="claude-echo",
        messages=[{"role": "system", "content": "Be terse."}, *HI],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 35  # 10 in + 20 cache reads + 5 cache writes
    assert completion.usage.prompt_tokens_details.cached_tokens == 20
    assert raw.headers["x-gateway-deployment"] == "claude"
    assert raw.headers["x-upstream-request-id"] == "req_anthropic_1"
    sent = fake.last()
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["max_tokens"] == 1024  # the provider's default: Anthropic requires one
    assert sent.json["system"] == [{"type": "text", "text": "Be terse."}]
    assert_no_secret_crossed(fake, upstream)
    usage = gw.line(raw.headers["x-request-id"])["usage"]
    assert usage["prompt_tokens"] == 35 and usage["cache_write_tokens"] == 5


def test_the_recorded_stream_with_and_without_usage(gw, ups):
    client = sdk(gw)
    stream = client.chat.completions.create(
        model="claude-fixture", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there!"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 17
    with client.chat.completions.with_streaming_response.create(
        model="claude-fixture", messages=HI, stream=True
    ) as response:
        body = response.read()
        request_id = response.headers["x-request-id"]
    assert b'"usage"' not in body  # the gateway asked for it, and took it back out
    assert body.endswith(b"data: [DONE]\n\n")
    assert gw.line(request_id)["usage"]["completion_tokens"] == 6  # counted all the same


def test_streamed_parallel_tool_calls_split_across_reads(gw, ups):
    stream = sdk(gw).chat.completions.create(
        model="claude-split",
        messages=HI,
        stream=True,
        tools=[
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": {"type": "object"}},
            },
            {
                "type": "function",
                "function": {"name": "get_time", "parameters": {"type": "object"}},
            },
        ],
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] = (call.function.name if call.function else None) or entry["name"]
                entry["arguments"] += (call.function.arguments if call.function else None) or ""
    assert finish == "tool_calls"
    assert [(c["id"], c["name"]) for _, c in sorted(calls.items())] == [
        ("toolu_01A", "get_weather"),
        ("toolu_01B", "get_time"),
    ]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c°"}
    assert json.loads(calls[1]["arguments"]) == {"zone": "Europe/Paris"}


def test_tool_results_and_images_reach_claude_in_its_shape(gw, ups):
    fake, _ = ups
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    completion = sdk(gw).chat.completions.create(
        model="claude-tools",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this and the weather?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_0", "content": "18C"},
        ],
        tools=[{"type": "function", "function": {"name": "get_weather"}}],
        tool_choice="required",
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]
    sent = fake.last().json
    assert sent["tool_choice"] == {"type": "any"}
    images = sent["messages"][0]["content"][1:]
    assert images[0]["source"] == {"type": "base64", "media_type": "image/png", "data": png}
    assert images[1]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert sent["messages"][1]["content"][0]["input"] == {"city": "Paris"}
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_0", "content": "18C"}
    ]


def test_response_format_through_a_forced_tool(gw, ups):
    fake, _ = ups
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    completion = sdk(gw).chat.completions.create(
        model="claude-json",
        messages=HI,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) == {"name": "Ada", "born": 1815}
    assert completion.choices[0].finish_reason == "stop"
    assert fake.last().json["tool_choice"] == {"type": "tool", "name": "json_tool_call"}


def test_thinking_comes_back_as_reasoning(gw, ups):
    fake, _ = ups
    completion = sdk(gw).chat.completions.create(
        model="claude-thinking", messages=HI, reasoning_effort="low", max_completion_tokens=2000
    )
    assert completion.choices[0].message.content == "4"
    assert completion.choices[0].message.reasoning_content == "Two and two."
    assert completion.usage.completion_tokens_details.reasoning_tokens == 3
    assert fake.last().json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert fake.last().json["max_tokens"] == 2000


@pytest.mark.parametrize(
    ("status", "error", "expected_status", "code"),
    [
        (400, openai.BadRequestError, 400, "invalid_request_error"),
        (401, openai.AuthenticationError, 401, "authentication_error"),
        (403, openai.PermissionDeniedError, 403, "permission_error"),
        (404, openai.NotFoundError, 404, "not_found_error"),
        (413, openai.APIStatusError, 413, "request_too_large"),
        (429, openai.RateLimitError, 429, "rate_limit_error"),
        (500, openai.InternalServerError, 500, "api_error"),
        (529, openai.InternalServerError, 503, "overloaded_error"),
    ],
)
def test_every_anthropic_error_in_openai_shape(gw, ups, status, error, expected_status, code):
    with pytest.raises(error) as caught:
        sdk(gw).chat.completions.create(model=f"claude-status:{status}", messages=HI)
    assert caught.value.status_code == expected_status
    body = caught.value.response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"] == f"upstream says {status}"
    retried = status >= 429
    assert caught.value.response.headers["x-gateway-attempts"] == ("3" if retried else "1")


def test_an_overload_is_retried_like_a_503(gw, ups):
    fake, _ = ups
    raw = sdk(gw).chat.completions.with_raw_response.create(model="claude-fail:529:1", messages=HI)
    assert raw.parse().choices[0].message.content == "echo: hi there"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert fake.counts["claude-fail:529:1"] == 2


def test_an_error_event_before_anything_was_sent_is_retried(gw, ups):
    fake, _ = ups
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(gw).chat.completions.create(model="claude-overloaded-first", messages=HI, stream=True)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-gateway-attempts"] == "3"
    assert fake.counts["claude-overloaded-first"] == 3


def test_a_stream_that_breaks_midway_ends_with_an_error(gw, ups):
    stream = sdk(gw).chat.completions.create(model="claude-stream-error", messages=HI, stream=True)
    text = ""
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text.startswith("echo")


def test_a_prompt_too_long_goes_to_the_context_fallback(gw, ups):
    raw = sdk(gw).chat.completions.with_raw_response.create(model="claude-long", messages=HI)
    assert raw.parse().choices[0].message.content == "echo: hi there"
    assert raw.headers["x-gateway-model"] == "claude-echo"


@pytest.mark.parametrize("stream", [False, True])
def test_a_gpt_request_falls_back_to_claude(gw, ups, stream):
    fake, upstream = ups
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="gpt-down", messages=HI, stream=stream
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    assert text == "echo: hi there"
    assert raw.headers["x-gateway-model"] == "claude-echo"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert [r.json["model"] for r in upstream.requests] == ["status:503"]
    assert fake.last().json["model"] == "claude-echo"


@pytest.mark.parametrize("stream", [False, True])
def test_a_claude_request_falls_back_to_gpt(gw, ups, stream):
    fake, upstream = ups
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="claude-down", messages=HI, stream=stream
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == "tok0 tok1 tok2 tok3 tok4 "
    else:
        assert raw.parse().choices[0].message.content == "echo: hi there"
    assert raw.headers["x-gateway-model"] == "gpt-echo"
    assert raw.headers["x-gateway-attempts"] == "3"  # Claude twice (one retry), then GPT
    assert fake.counts["claude-status:529"] == 2
    assert upstream.last().json["model"] == "echo"


def first_text_and_end(chunks) -> float:
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic()
            for _ in chunks:
                pass
            return first
    raise AssertionError("no text came")


@pytest.mark.parametrize("model", ["claude-slow", "gemini-slow"])
def test_a_translated_stream_leaves_as_it_arrives(gw, ups, model):
    fake, _ = ups
    stream = sdk(gw).chat.completions.create(model=model, messages=HI, stream=True)
    first = first_text_and_end(stream)
    # The upstream paused 1.5 s before its last events: the first translated text was out
    # (and read by the client) well before the upstream finished.
    assert fake.finished[model] - first > 1.0


# ================================================================ OpenAI clients, Gemini models


def test_gemini_chat_with_images_and_usage(gw, ups):
    fake, upstream = ups
    image = [
        {"type": "text", "text": "hi there"},
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    completion = sdk(gw).chat.completions.create(
        model="gemini-echo",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": image}],
    )
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.completion_tokens == 10  # 6 answer + 4 thinking
    assert completion.usage.completion_tokens_details.reasoning_tokens == 4
    sent = fake.last()
    assert sent.path == "/v1beta/models/gemini-echo:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert sent.json["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg"}},
        {"fileData": {"fileUri": "https://example.com/cat.png", "mimeType": "image/png"}},
    ]
    assert_no_secret_crossed(fake, upstream)


def test_gemini_streamed_function_calls(gw, ups):
    fake, _ = ups
    stream = sdk(gw).chat.completions.create(
        model="gemini-tools",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
        tools=[{"type": "function", "function": {"name": "get_weather"}}],
    )
    chunks = list(stream)
    calls = [c for ch in chunks if ch.choices for c in ch.choices[0].delta.tool_calls or ()]
    assert [(c.index, c.function.name) for c in calls] == [(0, "get_weather"), (1, "get_time")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    assert chunks[-1].usage.total_tokens == 22
    sent = fake.last()
    assert sent.path == "/v1beta/models/gemini-tools:streamGenerateContent"
    assert sent.query == "alt=sse"


@pytest.mark.parametrize("model", ["gemini-blocked", "gemini-unsafe"])
def test_gemini_safety_blocks_are_content_filter(gw, ups, model):
    completion = sdk(gw).chat.completions.create(model=model, messages=HI)
    assert completion.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (503, openai.InternalServerError),
    ],
)
def test_every_gemini_error_in_openai_shape(gw, ups, status, error):
    with pytest.raises(error) as caught:
        sdk(gw).chat.completions.create(model=f"gemini-status:{status}", messages=HI)
    assert caught.value.status_code == status
    assert caught.value.response.json()["error"]["message"] == f"upstream says {status}"


def test_gemini_context_errors_are_context_length_exceeded(gw, ups):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(model="gemini-context", messages=HI, stream=True)
    assert caught.value.response.json()["error"]["code"] == "context_length_exceeded"


def test_gemini_embeddings_one_and_many(gw, ups):
    fake, _ = ups
    client = sdk(gw)
    one = client.embeddings.create(model="text-embedding-004", input="hello")
    assert one.data[0].embedding == [5.0, 0.5, -0.25]
    assert fake.last().path == "/v1beta/models/text-embedding-004:embedContent"
    many = client.embeddings.create(
        model="text-embedding-004", input=["a", "bb"], encoding_format="base64"
    )
    vectors = [struct.unpack("<3f", base64.b64decode(d.embedding)) for d in many.data]
    assert vectors == [(1.0, 0.5, -0.25), (2.0, 0.5, -0.25)]
    assert fake.last().path == "/v1beta/models/text-embedding-004:batchEmbedContents"


def test_vertex_ai_with_a_bearer_token(gw, ups):
    fake, _ = ups
    completion = sdk(gw).chat.completions.create(model="vertex-echo", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    sent = fake.last()
    assert sent.path == (
        "/v1/projects/proj/locations/europe-west4/publishers/google/models/"
        "gemini-echo:generateContent"
    )
    assert sent.headers["authorization"] == f"Bearer {VERTEX_TOKEN}"
    assert "x-goog-api-key" not in {k.lower() for k in sent.headers}


# ================================================================ OpenAI clients, Azure OpenAI


def test_azure_deployment_url_key_and_untouched_bytes(gw, ups):
    fake, upstream = ups
    body = (
        b'{"model": "gpt-4o",  "messages": [{"role": "user", "content": "h\\u00e9"}],'
        b' "temperature": 0.70, "x_vendor": {"a": null}}'
    )
    headers = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}
    response = raw_request(gw.url, "POST", "/v1/chat/completions", body, headers)
    assert response.status == 200, response
    assert response.json()["choices"][0]["message"]["content"] == "azure prod-4o: hé"
    assert response.headers["x-upstream-request-id"] == "req_azure_1"
    sent = fake.last()
    assert sent.path == "/openai/deployments/prod-4o/chat/completions"
    assert sent.query == f"api-version={AZURE_API_VERSION}"
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in {k.lower() for k in sent.headers}
    assert sent.body == body  # zero-parse: the client's bytes
    assert_no_secret_crossed(fake, upstream)


def test_azure_stream_and_the_v1_api(gw, ups):
    fake, _ = ups
    client = sdk(gw)
    stream = client.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "azure prod-4o: hi there"
    )
    completion = client.chat.completions.create(model="gpt-4o-v1", messages=HI)
    assert completion.choices[0].message.content == "azure prod-v1: hi there"
    sent = fake.last()
    assert sent.path == "/openai/v1/chat/completions" and sent.query == ""
    assert sent.json["model"] == "prod-v1"


def test_azure_errors_keep_their_status_and_body(gw, ups):
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(gw).chat.completions.create(model="azure-status:429", messages=HI)
    assert caught.value.response.json()["error"]["message"] == "upstream says 429"


# ================================================================ Anthropic clients: /v1/messages


def test_messages_to_claude_pass_through_byte_for_byte(gw, ups):
    fake, upstream = ups
    body = (
        b'{"model": "claude-echo",  "max_tokens": 50, "temperature": 0.70,'
        b' "messages": [{"role": "user", "content": "h\\u00e9"}], "x_new": {"a": null}}'
    )
    headers = {
        "content-type": "application/json",
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2099",
    }
    response = raw_request(gw.url, "POST", "/v1/messages?beta=true", body, headers)
    assert response.status == 200, response
    assert response.json()["content"] == [{"type": "text", "text": "echo: hé"}]
    assert response.json()["type"] == "message"
    sent = fake.last()
    assert sent.body == body
    assert sent.query == "beta=true"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-beta"] == "tools-2099"
    assert_no_secret_crossed(fake, upstream)
    line = gw.line(response.headers["x-request-id"])
    assert line["endpoint"] == "messages" and line["usage"]["prompt_tokens"] == 35


def test_a_streamed_message_passes_through_byte_for_byte(gw, ups):
    body = json.dumps(
        {"model": "claude-fixture-tools", "max_tokens": 50, "messages": HI, "stream": True}
    ).encode()
    headers = {"content-type": "application/json", "x-api-key": CLIENT_KEY}
    response = raw_request(gw.url, "POST", "/v1/messages", body, headers)
    assert response.status == 200
    assert response.body == FIXTURE_TOOL_STREAM
    usage = gw.line(response.headers["x-request-id"])["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (377, 65)


def test_the_anthropic_sdk_against_claude(gw, ups):
    client = claude_sdk(gw)
    message = client.messages.create(model="claude-echo", max_tokens=50, messages=HI)
    assert message.content[0].text == "echo: hi there"
    assert message.usage.cache_read_input_tokens == 20
    with client.messages.stream(model="claude-fixture-tools", max_tokens=50, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[1].input == {"location": "Paris"}
    count = client.messages.count_tokens(model="claude-echo", messages=HI)
    assert count.input_tokens == 42


def test_an_alias_is_rewritten_and_a_bearer_key_works(gw, ups):
    fake, _ = ups
    client = claude_sdk(gw, api_key=None, auth_token=CLIENT_KEY)
    message = client.messages.create(model="claude-latest", max_tokens=50, messages=HI)
    assert message.content[0].text == "echo: hi there"
    assert fake.last().json["model"] == "claude-echo"


def test_the_anthropic_sdk_against_a_gpt_model(gw, ups):
    _, upstream = ups
    client = claude_sdk(gw)
    message = client.messages.create(
        model="gpt-echo", max_tokens=50, system="Be terse.", messages=HI
    )
    assert message.content[0].text == "echo: hi there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 2)
    sent = upstream.last()
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi there"},
    ]
    assert sent.json["max_completion_tokens"] == 50
    assert "anthropic-version" not in {k.lower() for k in sent.headers}
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    with client.messages.stream(model="gpt-echo", max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert final.usage.input_tokens == 9 and final.usage.output_tokens == 5


def test_the_anthropic_sdk_gets_tool_calls_from_an_openai_compatible_model(gw, ups):
    client = claude_sdk(gw)
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    message = client.messages.create(model="gpt-tools", max_tokens=50, messages=HI, tools=tools)
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}
    with client.messages.stream(
        model="gpt-tools", max_tokens=50, messages=HI, tools=tools
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Checking."
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
        ("call_w", "get_weather", {"city": "Paris"}),
        ("call_t", "get_time", {}),
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 12)


def test_messages_fall_back_from_claude_to_gpt(gw, ups):
    fake, upstream = ups
    message = claude_sdk(gw).messages.create(model="claude-down", max_tokens=50, messages=HI)
    assert message.content[0].text == "echo: hi there"
    assert fake.counts["claude-status:529"] == 2
    assert upstream.last().json["model"] == "echo"


def test_a_translated_message_stream_leaves_as_it_arrives(gw, ups):
    fake, _ = ups
    client = claude_sdk(gw)
    with client.messages.stream(model="claude-slow", max_tokens=50, messages=HI) as stream:
        for text in stream.text_stream:
            if text:
                first = time.monotonic()
                break
        stream.get_final_message()
    assert fake.finished["claude-slow"] - first > 1.0


@pytest.mark.parametrize("model", ["claude-stream-error", "gpt-drop"])
def test_a_message_stream_that_breaks_raises_in_the_sdk(gw, ups, model):
    client = claude_sdk(gw)
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model=model, max_tokens=50, messages=HI) as stream,
    ):
        for _ in stream:
            pass


def test_messages_errors_in_anthropics_shape(gw, ups):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        claude_sdk(gw, api_key="wrong").messages.create(
            model="claude-echo", max_tokens=5, messages=HI
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }
    client = claude_sdk(gw)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=5, messages=HI)
    assert caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.APIStatusError) as caught:  # Anthropic's own, as it sent it
        client.messages.create(model="claude-status:529", max_tokens=5, messages=HI)
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "upstream says 529"},
    }
    with pytest.raises(anthropic.RateLimitError) as caught:  # an OpenAI upstream's, translated
        client.messages.create(model="gpt-limited", max_tokens=5, messages=HI)
    assert caught.value.body["error"] == {
        "type": "rate_limit_error",
        "message": "upstream says 429",
    }
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="gpt-echo", messages=HI)
    assert caught.value.body["error"]["type"] == "not_found_error"
    headers = {"content-type": "application/json", "x-api-key": CLIENT_KEY}
    response = raw_request(
        gw.url, "POST", "/v1/messages", b'{"model": "claude-echo", "messages": []}', headers
    )
    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in response.json()["error"]["message"]


def test_no_upstream_key_appears_in_any_answer_or_log(gw, ups):
    client = claude_sdk(gw)
    client.messages.create(model="gpt-echo", max_tokens=5, messages=HI)
    client.messages.create(model="claude-echo", max_tokens=5, messages=HI)
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(model="claude-status:401", max_tokens=5, messages=HI)
    log = gw.process.log() + (gw.access_log.read_text() if gw.access_log.exists() else "")
    for secret in SECRETS:
        assert secret not in log
