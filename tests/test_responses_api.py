"""``/v1/responses`` as OpenAI's SDK uses it, on both servers: translated for the built-in
mock, a fake Anthropic and a fake Gemini upstream; passed through, byte for byte, to an
upstream that speaks it; stored responses; and keys, limits and budgets as on chat."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from aiohttp import web

from gateway import Gateway, MockProvider, ModelRegistry, Request, StreamingResponse
from gateway.access.control import AccessControl
from gateway.access.keys import Budget, Key, secret_hash
from gateway.observability.pricing import Price, Prices
from gateway.providers.mock import MockResponse
from tests.conftest import SERVERS, start_gateway
from tests.fake_providers import ANTHROPIC_KEY, GEMINI_KEY, FakeProviders
from tests.threaded_server import ThreadedServer

KEY, OTHER_KEY = "sk-gw-responses-a", "sk-gw-responses-b"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 21,
}


class ResponsesUpstream(ThreadedServer):
    """An upstream that speaks the Responses API itself: fixed bytes, recorded requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._create)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if not body.get("stream"):
            return web.Response(body=answer_bytes(body["model"]), content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in stream_events(body["model"]):
            await response.write(event)
        await response.write_eof()
        return response


def answer_bytes(model: str) -> bytes:
    answer = {
        "id": "resp_upstream1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": model,
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "from upstream", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": USAGE,
        "x_vendor": 0.70,
    }
    return json.dumps(answer, separators=(",", ":")).encode().replace(b"0.7", b"0.70")


def stream_events(model: str) -> list[bytes]:
    whole = json.loads(answer_bytes(model))
    started = {**whole, "status": "in_progress", "output": [], "usage": None}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": started},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "from upstream",
            "logprobs": [],
        },
        {"type": "response.completed", "sequence_number": 2, "response": whole},
    ]
    return [
        f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n".encode()
        for e in events
    ]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    server = FakeProviders().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def native() -> Iterator[ResponsesUpstream]:
    server = ResponsesUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=SERVERS)
def gateway(request, fake, native, tmp_path_factory):
    directory = tmp_path_factory.mktemp("responses")
    config = directory / "gateway.toml"
    config.write_text(
        '[providers.mock]\ntype = "mock"\n\n'
        f'[providers.claude]\ntype = "anthropic"\nbase_url = "{fake.url}"\n'
        f'api_key = "{ANTHROPIC_KEY}"\n\n'
        f'[providers.gemini]\ntype = "gemini"\nbase_url = "{fake.url}"\n'
        f'api_key = "{GEMINI_KEY}"\n\n'
        f'[providers.native]\nbase_url = "http://127.0.0.1:{native.port}/v1"\n'
        'api_key = "sk-native-upstream"\nresponses = true\n\n'
        '[models.mock-gpt]\nprovider = "mock"\n\n'
        '[models.claude-echo]\nprovider = "claude"\n\n'
        '[models.gemini-echo]\nprovider = "gemini"\n\n'
        '[models.gpt-native]\nprovider = "native"\n'
    )
    access_log = directory / "access.log"
    env = {
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_API_KEYS": f"{KEY},{OTHER_KEY}",
        "GATEWAY_ACCESS_LOG": str(access_log),
    }
    process = start_gateway(tmp_path_factory, request.param, env)
    process.access_log = access_log  # type: ignore[attr-defined]
    yield process
    process.stop()


def client(gateway, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def log_lines(access_log: Path, request_id: str) -> list[dict]:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = [json.loads(t) for t in access_log.read_text().splitlines()]
        found = [line for line in lines if line["request_id"] == request_id]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no access-log line for {request_id}")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("mock-gpt", "This is a mock response to: Hello!"),
        ("claude-echo", "echo: Hello!"),
        ("gemini-echo", "echo: Hello!"),
    ],
)
def test_a_translated_response_plain_and_streamed(gateway, model, expected):
    sdk = client(gateway)
    raw = sdk.responses.with_raw_response.create(model=model, input="Hello!")
    response = raw.parse()
    assert response.output_text == expected
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    [line] = log_lines(gateway.access_log, raw.headers["x-request-id"])
    assert line["endpoint"] == "responses" and line["usage"]["prompt_tokens"] > 0
    with sdk.responses.stream(model=model, input="Hello!") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == expected
    assert final.usage.total_tokens > 0


async def test_the_async_client_plain_and_streamed(gateway):
    sdk = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    response = await sdk.responses.create(model="mock-gpt", input="Hello!")
    assert response.output_text == "This is a mock response to: Hello!"
    async with sdk.responses.stream(model="claude-echo", input="Hello!") as stream:
        final = await stream.get_final_response()
    assert final.output_text == "echo: Hello!"
    await sdk.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_function_tool_round_trip(gateway, stream):
    sdk = client(gateway)
    ask = 'call get_weather {"city": "Paris"}'
    if stream:
        with sdk.responses.stream(model="mock-gpt", input=ask, tools=[WEATHER]) as events:
            first = events.get_final_response()
    else:
        first = sdk.responses.create(model="mock-gpt", input=ask, tools=[WEATHER])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = sdk.responses.create(
        model="mock-gpt",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": ask},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
    )
    assert second.output_text == "The tool said: sunny, 21 C"


def test_previous_response_id_and_the_stored_responses(gateway):
    sdk = client(gateway)
    first = sdk.responses.create(model="claude-echo", input="the first question")
    second = sdk.responses.create(
        model="claude-echo", input="and a second", previous_response_id=first.id
    )
    assert second.output_text == "echo: and a second"
    assert second.previous_response_id == first.id
    assert sdk.responses.retrieve(first.id).output_text == "echo: the first question"
    items = sdk.responses.input_items.list(second.id)
    assert [item.content[0].text for item in items.data] == ["and a second"]
    # Another key: it does not exist.
    with pytest.raises(openai.NotFoundError):
        client(gateway, OTHER_KEY).responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway, OTHER_KEY).responses.create(
            model="claude-echo", input="x", previous_response_id=first.id
        )
    assert refused.value.code == "previous_response_not_found"
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)


def test_store_false_keeps_nothing(gateway):
    sdk = client(gateway)
    response = sdk.responses.create(model="mock-gpt", input="Hello!", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_a_builtin_tool_the_model_cannot_run_is_a_400_naming_it(gateway):
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).responses.create(
            model="mock-gpt", input="Hello!", tools=[{"type": "web_search"}]
        )
    assert "web_search" in refused.value.message
    assert refused.value.param == "tools"


def test_a_responses_upstream_gets_the_bytes_and_gives_its_own_back(gateway, native):
    native.requests.clear()
    sdk = client(gateway)
    raw = sdk.responses.with_raw_response.create(
        model="gpt-native", input="Hello!", extra_body={"x_unknown": {"kept": True}}
    )
    assert raw.http_response.content == answer_bytes("gpt-native")  # untouched
    [sent] = native.requests
    assert sent["body"]["x_unknown"] == {"kept": True}
    assert sent["headers"]["Authorization"] == "Bearer sk-native-upstream"  # not the client's
    [line] = log_lines(gateway.access_log, raw.headers["x-request-id"])
    assert (line["usage"]["prompt_tokens"], line["usage"]["completion_tokens"]) == (12, 9)
    streamed = sdk.responses.with_raw_response.create(model="gpt-native", input="Hi", stream=True)
    assert streamed.http_response.read() == b"".join(stream_events("gpt-native"))
    [line] = log_lines(gateway.access_log, streamed.headers["x-request-id"])
    usage = line["usage"]
    assert (line["endpoint"], usage["prompt_tokens"], usage["completion_tokens"]) == (
        "responses",
        12,
        9,
    )


# ------------------------------------------------- limits and budgets, as on chat


def responses_request(secret: str, stream: bool = False) -> Request:
    body = {"model": "mock-gpt", "input": "hi there", "stream": stream, "max_output_tokens": 20}
    headers = {"authorization": f"Bearer {secret}"}
    return Request("POST", "/v1/responses", "", headers, json.dumps(body).encode())


async def read(response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.iterate()])
    return response.body


async def test_a_budget_and_a_token_limit_hold_on_responses():
    secret = "sk-gw-responses-budget"
    record = Key(id="k", secret_sha256=secret_hash(secret), budget=Budget(0.000025, "daily"))
    prices = Prices({"mock-gpt": Price(input=1.0, output=1.0)})  # $1 per million tokens
    models = ModelRegistry()
    models.add("mock-gpt", MockProvider())
    access = AccessControl(keys=[record])
    async with Gateway(models, access=access, prices=prices) as gateway:
        statuses = []
        for stream in (True, False, True, False):
            response = await gateway.handle(responses_request(secret, stream))
            await read(response)
            statuses.append(response.status)
    assert statuses[:2] == [200, 200]
    assert 429 in statuses  # about 10 tokens each at $1/M: the budget runs out


async def test_a_tpm_limit_counts_responses_tokens():
    secret = "sk-gw-responses-tpm"
    record = Key(id="t", secret_sha256=secret_hash(secret), tpm=200)
    models = ModelRegistry()
    models.add("mock-gpt", MockProvider())
    async with Gateway(models, access=AccessControl(keys=[record])) as gateway:
        statuses = []
        for n in range(40):
            response = await gateway.handle(responses_request(secret, stream=n % 2 == 0))
            await read(response)
            statuses.append(response.status)
    assert statuses[0] == 200 and 429 in statuses


# ------------------------------------------------- hooks' typed views, passed through


class NativeProvider(MockProvider):
    """A provider that speaks the Responses API itself (fixed answers, no network)."""

    responses = True

    async def send(self, ctx, request):
        body = json.loads(request.body)
        if body.get("stream"):
            chunks = stream_events(body["model"])
            return MockResponse(200, (("content-type", "text/event-stream"),), chunks=chunks)
        return MockResponse(200, (("content-type", "application/json"),), answer_bytes("m"))


async def test_hooks_get_typed_views_of_a_passed_through_responses_request():
    seen: dict[str, object] = {}

    class Looking:
        async def before_request(self, ctx, request):
            seen["request"] = request.typed()

        async def after_response(self, ctx, response):
            seen["response"] = response.typed()

        def on_chunk(self, ctx, event):
            seen.setdefault("events", []).append(event.typed().type)

    async with Gateway(NativeProvider(), hooks=[Looking()]) as gateway:
        body = {"model": "gpt-native", "input": "hi", "instructions": "Be brief."}
        answer = await gateway.handle(
            Request("POST", "/v1/responses", "", {}, json.dumps(body).encode())
        )
        assert answer.status == 200
        streamed = await gateway.handle(
            Request("POST", "/v1/responses", "", {}, json.dumps(body | {"stream": True}).encode())
        )
        await read(streamed)
    assert seen["request"].instructions == "Be brief."
    assert seen["response"].usage.input_tokens == 12
    assert seen["events"] == [
        "response.created",
        "response.output_text.delta",
        "response.completed",
    ]
