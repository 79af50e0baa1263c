"""Claude on Bedrock through InvokeModel (Anthropic's Messages API), Anthropic clients at
/v1/messages passed through to it, CountTokens, and Titan and Cohere embeddings: real
gateway processes on both servers, the official openai and anthropic SDKs as clients,
and the fake Bedrock on 127.0.0.1 checking every request's SigV4 signature.
"""

from __future__ import annotations

import base64
import json

import anthropic
import openai
import pytest

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.fake_bedrock import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock
from tests.fake_bedrock_invoke import VERSION, vector
from tests.test_bedrock import HI, TOOLS, tool_calls_of

# public name -> (provider, Bedrock model id)
MODELS = {
    "claude-echo": ("bedrock", "us.anthropic.claude-echo-v1:0"),
    "claude-tools": ("bedrock", "anthropic.claude-tools-v1:0"),
    "claude-thinking": ("bedrock", "anthropic.claude-thinking-v1:0"),
    "claude-json": ("bedrock", "anthropic.claude-json-v1:0"),
    "claude-split": ("bedrock", "anthropic.claude-split-v1:0"),
    "claude-stream-error": ("bedrock", "anthropic.claude-stream-error-v1:0"),
    "claude-throttled": ("bedrock", "anthropic.claude-throttle-2-v1:0"),
    "claude-throttled-stream": ("bedrock", "anthropic.claude-throttle-first-v1:0"),
    "claude-validation": ("bedrock", "anthropic.claude-validation-v1:0"),
    "claude-denied": ("bedrock", "anthropic.claude-denied-v1:0"),
    "claude-not-ready": ("bedrock", "anthropic.claude-not-ready-v1:0"),
    "claude-converse": ("bedrock-converse", "anthropic.claude-echo-v1:0"),
    "llama": ("bedrock", "meta.llama-echo-v1:0"),
    "titan": ("bedrock", "amazon.titan-embed-text-v2:0"),
    "cohere": ("bedrock", "cohere.embed-english-v3"),
    "cohere-v4": ("bedrock", "cohere.embed-v4:0"),
}
KEYS = ['access_key_id_env = "TEST_AWS_KEY"', 'secret_access_key_env = "TEST_AWS_SECRET"']
PROVIDER_BETA = "token-efficient-tools-2025-02-19"
CLIENT_BETA = "interleaved-thinking-2025-05-14"


def config(fake: FakeBedrock) -> str:
    lines = ["[routing]", "retries = 2", "backoff = { base = 0.01, max = 0.02 }", ""]
    for name, extra in [
        ("bedrock", [f'beta = ["{PROVIDER_BETA}"]', f'client_betas = ["{CLIENT_BETA}"]']),
        ("bedrock-converse", ["anthropic_api = false"]),
    ]:
        lines += [f'[providers."{name}"]', 'type = "bedrock"', f'region = "{REGION}"']
        lines += [f'base_url = "{fake.url}"', *KEYS, *extra, ""]
    for name, (provider, model) in MODELS.items():
        lines += [f'[models."{name}"]', f'provider = "{provider}"', f'model = "{model}"', ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fake():
    server = FakeBedrock().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=SERVERS)
def gw(request, fake, tmp_path_factory):
    path = tmp_path_factory.mktemp("bedrock-invoke") / "gateway.toml"
    path.write_text(config(fake))
    env = {
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_UPSTREAM_TIMEOUT": "10",
        "TEST_AWS_KEY": ACCESS_KEY,
        "TEST_AWS_SECRET": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    process = start_gateway(tmp_path_factory, request.param, env)
    yield process
    process.stop()


@pytest.fixture
def bedrock(fake):
    fake.clear()
    return fake


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


# ================================================================ chat, through InvokeModel


def test_plain_chat_to_claude_goes_through_invoke_model(gw, bedrock):
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="claude-echo", messages=[{"role": "system", "content": "Be terse."}, *HI]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 35  # 10 in + 20 cache reads + 5 cache writes
    assert completion.usage.prompt_tokens_details.cached_tokens == 20
    assert raw.headers["x-upstream-request-id"] == "req-invoke-1"
    sent = bedrock.last()
    assert sent.path == "/model/us.anthropic.claude-echo-v1%3A0/invoke"  # the id, quoted
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert sent.json == {
        "max_tokens": 4096,  # Anthropic requires one: the provider's default
        "system": [{"type": "text", "text": "Be terse."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
        "anthropic_version": VERSION,
        "anthropic_beta": [PROVIDER_BETA],
    }


def test_streamed_chat_through_invoke_with_response_stream(gw, bedrock):
    stream = sdk(gw).chat.completions.create(
        model="claude-echo", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi there"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 35
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    sent = bedrock.last()
    assert sent.path == "/model/us.anthropic.claude-echo-v1%3A0/invoke-with-response-stream"
    assert "stream" not in sent.json and "model" not in sent.json


def test_tool_calls_plain_and_streamed_from_split_frames(gw, bedrock):
    client = sdk(gw)
    first = client.chat.completions.create(
        model="claude-tools", messages=HI, tools=TOOLS, tool_choice="required"
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name) for c in message.tool_calls] == [
        ("toolu_A1", "get_weather"),
        ("toolu_B2", "get_time"),
    ]
    sent = bedrock.last().json
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["tools"][0] == {"name": "get_weather", "input_schema": {"type": "object"}}
    stream = client.chat.completions.create(
        model="claude-split", messages=HI, stream=True, tools=TOOLS
    )
    calls, finish = tool_calls_of(stream)
    assert finish == "tool_calls"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c°"}
    assert json.loads(calls[1]["arguments"]) == {"zone": "Europe/Paris"}


def test_cache_markers_and_thinking_reach_claude_and_thinking_comes_back(gw, bedrock):
    client = sdk(gw)
    rules = {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "system", "content": [rules]}, *HI]
    completion = client.chat.completions.create(
        model="claude-thinking", messages=messages, reasoning_effort="low"
    )
    message = completion.choices[0].message
    assert message.content == "4"
    assert message.model_extra["reasoning_content"] == "Two and two."
    assert message.model_extra["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Two and two.", "signature": "EqQBsig"}
    ]
    sent = bedrock.last().json
    assert sent["system"] == [rules]  # the marker as sent: prompt caching
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    stream = client.chat.completions.create(
        model="claude-thinking", messages=messages, reasoning_effort="low", stream=True
    )
    thoughts = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in stream
        if c.choices
    )
    assert thoughts == "Two and two."


def test_a_json_answer(gw, bedrock):
    completion = sdk(gw).chat.completions.create(
        model="claude-json",
        messages=HI,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": {"type": "object"}},
        },
    )
    assert json.loads(completion.choices[0].message.content) == {"name": "Ada"}
    assert completion.choices[0].finish_reason == "stop"
    sent = bedrock.last()
    assert sent.path.endswith("/invoke")
    assert sent.json["tool_choice"] == {"type": "tool", "name": "json_tool_call"}


def test_other_models_and_anthropic_api_false_go_through_converse(gw, bedrock):
    client = sdk(gw)
    assert client.chat.completions.create(model="llama", messages=HI).choices[0].message.content
    assert bedrock.last().path == "/model/meta.llama-echo-v1%3A0/converse"
    completion = client.chat.completions.create(model="claude-converse", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    assert bedrock.last().path == "/model/anthropic.claude-echo-v1%3A0/converse"


# ============================================================================= errors


@pytest.mark.parametrize(
    ("model", "error", "status", "kind", "tries"),
    [
        ("claude-validation", openai.BadRequestError, 400, "ValidationException", 1),
        ("claude-denied", openai.PermissionDeniedError, 403, "AccessDeniedException", 1),
        ("claude-not-ready", openai.InternalServerError, 503, "ModelNotReadyException", 3),
    ],
)
def test_errors_are_mapped(gw, bedrock, model, error, status, kind, tries):
    with pytest.raises(error) as caught:
        sdk(gw).chat.completions.create(model=model, messages=HI)
    assert caught.value.status_code == status
    assert caught.value.body["code"] == kind
    assert bedrock.counts[MODELS[model][1]] == tries  # the 503 retried (retries = 2)
    assert bedrock.last().path.endswith("/invoke")


def test_throttling_is_retried_whole_and_streamed(gw, bedrock):
    client = sdk(gw)
    completion = client.chat.completions.create(model="claude-throttled", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    assert bedrock.counts["anthropic.claude-throttle-2-v1:0"] == 3  # two 429s, then it
    assert bedrock.last().path.endswith("/invoke")
    stream = client.chat.completions.create(
        model="claude-throttled-stream", messages=HI, stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: hi there"
    )
    assert bedrock.counts["anthropic.claude-throttle-first-v1:0"] == 2
    assert bedrock.last().path.endswith("/invoke-with-response-stream")


def test_an_exception_midway_ends_the_stream_with_an_error(gw, bedrock):
    stream = sdk(gw).chat.completions.create(model="claude-stream-error", messages=HI, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "echo"
    assert "model stream failed" in str(caught.value)
    assert bedrock.last().path.endswith("/invoke-with-response-stream")


# ================================================================ Anthropic clients, passed through


def test_the_anthropic_sdk_reaches_claude_on_bedrock_as_it_sent(gw, bedrock):
    system = [{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}]
    message = claude(gw).messages.create(
        model="claude-thinking",
        max_tokens=2048,
        system=system,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HI,
        extra_headers={"anthropic-beta": f"{CLIENT_BETA},mcp-client-2025-04-04"},
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature == "EqQBsig" and message.content[1].text == "4"
    assert message.id == "msg_bdrk_01Fake"  # Bedrock's Message, untranslated
    assert message.usage.cache_read_input_tokens == 20
    sent = bedrock.last()
    assert sent.path == "/model/anthropic.claude-thinking-v1%3A0/invoke"
    assert sent.json == {
        "max_tokens": 2048,
        "messages": HI,
        "system": system,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "anthropic_version": VERSION,
        # the client's flag the table lets through, and the provider's own; not the other
        "anthropic_beta": [CLIENT_BETA, PROVIDER_BETA],
    }


def test_the_anthropic_sdk_streams_from_bedrocks_chunks(gw, bedrock):
    with claude(gw).messages.stream(
        model="claude-thinking",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HI,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Two and two." and final.content[0].signature == "EqQBsig"
    assert final.usage.output_tokens == 7 and final.usage.cache_creation_input_tokens == 5
    sent = bedrock.last()
    assert sent.path == "/model/anthropic.claude-thinking-v1%3A0/invoke-with-response-stream"
    assert "stream" not in sent.json and sent.json["thinking"]["budget_tokens"] == 1024


def test_the_anthropic_sdk_streams_tool_use_from_split_frames(gw, bedrock):
    tools = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    with claude(gw).messages.stream(
        model="claude-split", max_tokens=64, messages=HI, tools=tools
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"city": "Paris", "unit": "c°"}, {"zone": "Europe/Paris"}]
    assert bedrock.last().json["tools"] == tools  # cache_control on a tool, as sent


def test_errors_and_broken_streams_reach_the_anthropic_sdk(gw, bedrock):
    client = claude(gw)
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(model="claude-denied", max_tokens=10, messages=HI)
    answer = client.messages.create(model="claude-throttled", max_tokens=10, messages=HI)
    assert answer.content[0].text == "echo: hi there"  # two 429s retried
    text = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="claude-stream-error", max_tokens=10, messages=HI) as stream,
    ):
        text += stream.text_stream
    assert text == ["echo"]  # what came before the exception, then Anthropic's error event
    assert "model stream failed" in str(caught.value)
    assert bedrock.last().path.endswith("/invoke-with-response-stream")


def test_count_tokens_goes_to_bedrocks_count_tokens(gw, bedrock):
    counted = claude(gw).messages.count_tokens(model="claude-echo", messages=HI)
    assert counted.input_tokens > 3
    sent = bedrock.last()
    assert sent.path == "/model/anthropic.claude-echo-v1%3A0/count-tokens"  # no "us."
    inner = json.loads(base64.b64decode(sent.json["input"]["invokeModel"]["body"]))
    assert inner == {"messages": HI, "anthropic_version": VERSION, "max_tokens": 4096}


def test_anthropic_api_false_translates_messages_to_converse(gw, bedrock):
    message = claude(gw).messages.create(model="claude-converse", max_tokens=10, messages=HI)
    assert message.content[0].text == "echo: hi there"
    assert bedrock.last().path.endswith("/converse")


# ========================================================================= embeddings


def test_titan_embeddings_one_call_per_input(gw, bedrock):
    texts = ["one", "two words", "three short words"]
    answer = sdk(gw).embeddings.create(model="titan", input=texts, dimensions=4)
    assert [d.embedding for d in answer.data] == [pytest.approx(vector(t, 4)) for t in texts]
    assert answer.usage.prompt_tokens == 6 and answer.model == "amazon.titan-embed-text-v2:0"
    sent = sorted(r.json["inputText"] for r in bedrock.requests)
    assert sent == sorted(texts)
    assert all(r.path.endswith("/invoke") and r.json["dimensions"] == 4 for r in bedrock.requests)


def test_cohere_embeddings_in_batches_of_96(gw, bedrock):
    texts = [f"text number {i}" for i in range(100)]
    answer = sdk(gw).embeddings.create(model="cohere", input=texts)
    assert len(answer.data) == 100 and answer.data[99].embedding == pytest.approx(vector(texts[99]))
    assert answer.usage.prompt_tokens == 300  # from x-amzn-bedrock-input-token-count
    sizes = sorted(len(r.json["texts"]) for r in bedrock.requests)
    assert sizes == [4, 96]
    assert all(r.json["input_type"] == "search_document" for r in bedrock.requests)
    one = sdk(gw).embeddings.create(
        model="cohere-v4", input="hi", dimensions=4, extra_body={"input_type": "search_query"}
    )
    assert one.data[0].embedding == pytest.approx(vector("hi", 4))
    assert bedrock.last().json["input_type"] == "search_query"


def test_embeddings_the_models_cannot_take_are_a_400(gw, bedrock):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).embeddings.create(model="cohere", input="x", dimensions=3)
    assert caught.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError):
        sdk(gw).embeddings.create(model="claude-echo", input="x")
    assert bedrock.requests == []
