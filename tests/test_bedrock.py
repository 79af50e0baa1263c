"""AWS Bedrock (``type = "bedrock"``, the Converse API) through real gateway processes on
both servers, with the official openai and anthropic SDKs as clients and a fake Bedrock
on 127.0.0.1 that checks every request's SigV4 signature (tests/fake_bedrock.py).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys

import anthropic
import openai
import pytest

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.fake_bedrock import (
    ACCESS_KEY,
    PROFILE_ACCESS_KEY,
    PROFILE_SECRET_KEY,
    REGION,
    SECRET_KEY,
    SESSION_TOKEN,
    TEMP_ACCESS_KEY,
    TEMP_SECRET_KEY,
    FakeBedrock,
)
from tests.gateway_process import ROOT

HI = [{"role": "user", "content": "hi there"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
# public name -> (provider, Bedrock model id)
MODELS = {
    "claude-echo": ("bedrock", "anthropic.claude-echo-v1:0"),
    "claude-tools": ("bedrock", "us.anthropic.claude-tools-v1:0"),
    "claude-thinking": ("bedrock", "anthropic.claude-thinking-v1:0"),
    "claude-json": ("bedrock", "anthropic.claude-json-v1:0"),
    "claude-split": ("bedrock", "anthropic.claude-split-v1:0"),
    "claude-stream-error": ("bedrock", "anthropic.claude-stream-error-v1:0"),
    "corrupt": ("bedrock", "anthropic.claude-corrupt-v1:0"),
    "throttled": ("bedrock", "meta.throttle-2-v1:0"),
    "throttled-stream": ("bedrock", "anthropic.claude-throttle-first-v1:0"),
    "validation": ("bedrock", "meta.validation-v1:0"),
    "denied": ("bedrock", "meta.denied-v1:0"),
    "missing": ("bedrock", "meta.missing-v1:0"),
    "unavailable": ("bedrock", "meta.unavailable-v1:0"),
    "temp-echo": ("bedrock-temp", "amazon.echo-v1:0"),
    "chain-echo": ("bedrock-chain", "amazon.echo-v1:0"),
    "profile-echo": ("bedrock-profile", "amazon.echo-v1:0"),
    "wrong-key": ("bedrock-wrong", "amazon.echo-v1:0"),
}


def config(fake: FakeBedrock) -> str:
    lines = ["[routing]", "retries = 2", "backoff = { base = 0.01, max = 0.02 }", ""]
    for name, extra in [
        (
            "bedrock",
            [
                'access_key_id_env = "TEST_AWS_KEY"',
                'secret_access_key_env = "TEST_AWS_SECRET"',
                # Claude through Converse here (InvokeModel: tests/test_bedrock_invoke.py)
                "anthropic_api = false",
            ],
        ),
        (
            "bedrock-temp",
            [
                'access_key_id_env = "TEST_TEMP_KEY"',
                'secret_access_key_env = "TEST_TEMP_SECRET"',
                'session_token_env = "TEST_TEMP_TOKEN"',
            ],
        ),
        ("bedrock-chain", []),  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
        ("bedrock-profile", ['profile = "gw-test"']),  # the shared credentials file
        (
            "bedrock-wrong",
            ['access_key_id_env = "TEST_AWS_KEY"', 'secret_access_key_env = "TEST_WRONG_SECRET"'],
        ),
    ]:
        lines += [f'[providers."{name}"]', 'type = "bedrock"', f'region = "{REGION}"']
        lines += [f'base_url = "{fake.url}"', *extra, ""]
    for name, (provider, model) in MODELS.items():
        lines += [f'[models."{name}"]', f'provider = "{provider}"', f'model = "{model}"']
        if name == "claude-echo":
            lines.append('aliases = ["claude-long"]')
        lines.append("")
    lines += [
        '[models."too-long"]',
        'provider = "bedrock"',
        'model = "meta.too-long-v1:0"',
        'context_fallbacks = ["claude-echo"]',
        "",
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fake():
    server = FakeBedrock().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=SERVERS)
def gw(request, fake, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bedrock")
    path = directory / "gateway.toml"
    path.write_text(config(fake))
    credentials = directory / "credentials"
    credentials.write_text(
        "[default]\n\n[gw-test]\n"
        f"aws_access_key_id = {PROFILE_ACCESS_KEY}\n"
        f"aws_secret_access_key = {PROFILE_SECRET_KEY}\n"
    )
    env = {
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_UPSTREAM_TIMEOUT": "10",
        "TEST_AWS_KEY": ACCESS_KEY,
        "TEST_AWS_SECRET": SECRET_KEY,
        "TEST_WRONG_SECRET": SECRET_KEY[::-1],
        "TEST_TEMP_KEY": TEMP_ACCESS_KEY,
        "TEST_TEMP_SECRET": TEMP_SECRET_KEY,
        "TEST_TEMP_TOKEN": SESSION_TOKEN,
        # AWS's chain, here only from these: no real config, no instance metadata.
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(directory / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PROFILE": "default",  # (empty in the file: the environment's keys count)
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


def tool_calls_of(stream) -> tuple[dict[int, dict], str | None]:
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
    return calls, finish


# ====================================================================== chat, signed


def test_plain_chat_is_signed_and_translated(gw, bedrock):
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="claude-echo",
        messages=[{"role": "system", "content": "Be terse."}, *HI],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 35  # 10 in + 20 cache reads + 5 cache writes
    assert completion.usage.prompt_tokens_details.cached_tokens == 20
    assert raw.headers["x-upstream-request-id"] == "req-bedrock-1"
    sent = bedrock.last()
    assert sent.path == "/model/anthropic.claude-echo-v1%3A0/converse"  # the id, quoted
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "hi there"}]}],
        "system": [{"text": "Be terse."}],
        "inferenceConfig": {"maxTokens": 50},
    }
    assert CLIENT_KEY not in json.dumps(sent.headers)


def test_streamed_chat_with_usage(gw, bedrock):
    stream = sdk(gw).chat.completions.create(
        model="claude-echo", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi there"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 35
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    sent = bedrock.last()
    assert sent.path == "/model/anthropic.claude-echo-v1%3A0/converse-stream"
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"


def test_streamed_tool_calls_from_frames_split_across_writes(gw, bedrock):
    stream = sdk(gw).chat.completions.create(
        model="claude-split", messages=HI, stream=True, tools=TOOLS
    )
    calls, finish = tool_calls_of(stream)
    assert finish == "tool_calls"
    assert [(c["id"], c["name"]) for _, c in sorted(calls.items())] == [
        ("tooluse_A1", "get_weather"),
        ("tooluse_B2", "get_time"),
    ]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c°"}
    assert json.loads(calls[1]["arguments"]) == {"zone": "Europe/Paris"}


def test_a_tool_round_trip(gw, bedrock):
    client = sdk(gw)
    messages: list = [{"role": "user", "content": "Weather and time in Paris?"}]
    first = client.chat.completions.create(
        model="claude-tools", messages=messages, tools=TOOLS, tool_choice="auto"
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]
    assert bedrock.last().json["toolConfig"]["toolChoice"] == {"auto": {}}
    messages.append(message.model_dump(exclude_none=True))
    for call, result in zip(message.tool_calls, ("18C", "9h"), strict=True):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    messages.append({"role": "user", "content": "So?"})
    second = client.chat.completions.create(model="claude-echo", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "echo: So?"
    turns = bedrock.last().json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][1]["toolUse"] == {
        "toolUseId": "tooluse_A1",
        "name": "get_weather",
        "input": {"city": "Paris", "unit": "c°"},
    }
    assert turns[2]["content"] == [
        {"toolResult": {"toolUseId": "tooluse_A1", "content": [{"text": "18C"}]}},
        {"toolResult": {"toolUseId": "tooluse_B2", "content": [{"text": "9h"}]}},
        {"text": "So?"},
    ]


def test_thinking_and_json_answers(gw, bedrock):
    client = sdk(gw)
    completion = client.chat.completions.create(
        model="claude-thinking", messages=HI, reasoning_effort="low"
    )
    message = completion.choices[0].message
    assert message.content == "4"
    assert message.model_extra["reasoning_content"] == "Two and two."
    assert bedrock.last().json["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    }
    stream = client.chat.completions.create(
        model="claude-thinking", messages=HI, reasoning_effort="low", stream=True
    )
    thoughts = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in stream
        if c.choices
    )
    assert thoughts == "Two and two."
    completion = client.chat.completions.create(
        model="claude-json",
        messages=HI,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": {"type": "object"}},
        },
    )
    assert json.loads(completion.choices[0].message.content) == {"name": "Ada"}
    assert completion.choices[0].finish_reason == "stop"


# ============================================================================= errors


@pytest.mark.parametrize(
    ("model", "error", "status", "kind"),
    [
        ("validation", openai.BadRequestError, 400, "ValidationException"),
        ("denied", openai.PermissionDeniedError, 403, "AccessDeniedException"),
        ("missing", openai.NotFoundError, 404, "ResourceNotFoundException"),
        ("unavailable", openai.InternalServerError, 503, "ServiceUnavailableException"),
    ],
)
def test_errors_are_mapped(gw, bedrock, model, error, status, kind):
    with pytest.raises(error) as caught:
        sdk(gw).chat.completions.create(model=model, messages=HI)
    assert caught.value.status_code == status
    assert caught.value.body["code"] == kind
    retried = 3 if status == 503 else 1  # a 503 is retried (retries = 2); the others not
    assert bedrock.counts[MODELS[model][1]] == retried


def test_throttling_is_retried(gw, bedrock):
    completion = sdk(gw).chat.completions.create(model="throttled", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    assert bedrock.counts["meta.throttle-2-v1:0"] == 3  # two 429s, then the answer


def test_a_stream_whose_first_message_is_an_exception_is_retried(gw, bedrock):
    stream = sdk(gw).chat.completions.create(model="throttled-stream", messages=HI, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: hi there"
    assert bedrock.counts["anthropic.claude-throttle-first-v1:0"] == 2


def test_too_long_falls_back_to_the_context_fallback(gw, bedrock):
    completion = sdk(gw).chat.completions.create(model="too-long", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    assert [r.model for r in bedrock.requests] == [
        "meta.too-long-v1:0",
        "anthropic.claude-echo-v1:0",
    ]


def test_an_exception_midway_ends_the_stream_with_an_error(gw, bedrock):
    stream = sdk(gw).chat.completions.create(model="claude-stream-error", messages=HI, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "echo"  # the first delta went out before the exception came
    assert "model stream failed" in str(caught.value)


def test_a_corrupt_message_ends_the_stream_as_broken(gw, bedrock):
    stream = sdk(gw).chat.completions.create(model="corrupt", messages=HI, stream=True)
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "echo: hi"  # what came before the corrupt message, nothing after it


def test_a_wrong_secret_key_is_a_403(gw, bedrock):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk(gw).chat.completions.create(model="wrong-key", messages=HI)
    assert caught.value.body["code"] == "InvalidSignatureException"
    assert "signature we calculated does not match" in caught.value.message


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("temp-echo", TEMP_ACCESS_KEY),  # a session token, signed too
        ("chain-echo", ACCESS_KEY),  # AWS's chain: the environment
        ("profile-echo", PROFILE_ACCESS_KEY),  # AWS's chain: a profile
    ],
)
def test_credentials_from_each_source(gw, bedrock, model, key):
    completion = sdk(gw).chat.completions.create(model=model, messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    assert f"Credential={key}/" in bedrock.last().headers["authorization"]


# ================================================================ Anthropic's API in front


def test_the_anthropic_sdk_through_messages(gw, bedrock):
    client = anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
    message = client.messages.create(model="claude-echo", max_tokens=64, messages=HI)
    assert message.content[0].text == "echo: hi there"
    assert message.stop_reason == "end_turn"
    assert bedrock.last().path.endswith("/converse")
    with client.messages.stream(model="claude-echo", max_tokens=64, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hi there" and final.usage.output_tokens == 7


# =================================================================== signing, unit-level


def test_the_signature_is_botocores_own_for_the_same_request(monkeypatch):
    """The provider signs as botocore's own bedrock-runtime client does (same bytes, same
    instant): the fake's check is then AWS's."""
    import botocore.auth
    import botocore.session

    from gateway.providers.bedrock import BedrockProvider, BedrockSettings

    instant = datetime.datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: instant)
    captured = {}

    def capture(request, **_kwargs):
        captured["request"] = request
        raise RuntimeError("captured")

    session = botocore.session.Session()
    session.set_credentials(ACCESS_KEY, SECRET_KEY)
    client = session.create_client(
        "bedrock-runtime", region_name=REGION, endpoint_url="http://127.0.0.1:9"
    )
    client.meta.events.register("before-send", capture)
    model = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
    with pytest.raises(RuntimeError, match="captured"):
        client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    theirs = captured["request"]
    settings = BedrockSettings(
        region=REGION,
        base_url="http://127.0.0.1:9",
        access_key_id_env="K",
        secret_access_key_env="S",
    )
    provider = BedrockProvider.from_settings("b", settings, {"K": ACCESS_KEY, "S": SECRET_KEY})
    url = provider._url(model, "converse")
    assert str(url) == theirs.url
    theirs_headers = {
        k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in theirs.headers.items()
    }
    signed_names = theirs_headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    headers = [
        (n, theirs_headers[n]) for n in signed_names.split(";") if n not in ("host", "x-amz-date")
    ]
    ours = dict(asyncio.run(provider.signed(url, theirs.body, headers)))
    assert ours["authorization"] == theirs_headers["authorization"]


def test_without_the_aws_extra_start_up_stops_with_one_line(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[providers.aws]\ntype = "bedrock"\nregion = "us-east-1"\n\n'
        '[models.claude]\nprovider = "aws"\nmodel = "anthropic.claude-3-5-sonnet-20240620-v1:0"\n'
    )
    code = (
        "import sys, runpy; sys.modules['botocore'] = None; sys.argv = ['gateway', '--check']; "
        "runpy.run_module('gateway', run_name='__main__')"
    )
    env = {**os.environ, "GATEWAY_CONFIG": str(path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"gateway: GATEWAY_CONFIG ({path}): providers.aws: type bedrock needs the aws extra: "
        "pip install 'gateway[aws]'"
    ]
