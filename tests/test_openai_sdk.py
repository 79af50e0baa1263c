"""The official openai SDK, sync and async, through a real gateway to a real upstream."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.upstream import UPSTREAM_KEY

MESSAGES = [{"role": "user", "content": "Hello there"}]


def client(gateway, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="anything", max_retries=0, **kwargs)


def async_client(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="anything", max_retries=0)


def test_chat_completion(gateway, upstream):
    completion = client(gateway).chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: Hello there"
    assert completion.usage.total_tokens == 7
    sent = upstream.last()
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gpt-x"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_chat_completion_stream(gateway, upstream):
    stream = client(gateway).chat.completions.create(
        model="sse:4", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert upstream.last().json["stream_options"] == {"include_usage": True}


def test_completions_and_embeddings(gateway, upstream):
    sdk = client(gateway)
    completion = sdk.completions.create(model="text-x", prompt="Say hi")
    assert completion.choices[0].text == "echo: Say hi"
    embeddings = sdk.embeddings.create(model="embed-x", input=["a", "b"])
    assert [e.embedding for e in embeddings.data] == [[0.5, -0.25, 0.0], [0.5, -0.25, 1.0]]
    assert upstream.last().path == "/v1/embeddings"


def test_models_list_comes_from_the_upstream_when_every_model_goes_there(gateway, upstream):
    models = client(gateway).models.list()
    assert [m.id for m in models.data] == ["up-1"]


def test_upstream_error_keeps_status_and_body(gateway, upstream):
    with pytest.raises(openai.RateLimitError) as caught:
        client(gateway).chat.completions.create(model="status:429", messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["message"] == "upstream says 429"


def test_async_client_plain_and_streamed(gateway, upstream):
    async def run() -> tuple[str, str]:
        sdk = async_client(gateway)
        plain = await sdk.chat.completions.create(model="gpt-x", messages=MESSAGES)
        stream = await sdk.chat.completions.create(model="sse:3", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content async for c in stream if c.choices])
        await sdk.close()
        return plain.choices[0].message.content, text

    plain, streamed = asyncio.run(run())
    assert plain == "echo: Hello there"
    assert streamed == "tok0 tok1 tok2 "


def test_async_client_200_concurrent_streams(gateway, upstream):
    async def one(sdk: openai.AsyncOpenAI, i: int) -> str:
        stream = await sdk.chat.completions.create(
            model="sse:10:0.01", messages=[{"role": "user", "content": str(i)}], stream=True
        )
        return "".join([c.choices[0].delta.content async for c in stream if c.choices])

    async def run() -> list[str]:
        sdk = async_client(gateway)
        try:
            return await asyncio.gather(*(one(sdk, i) for i in range(200)))
        finally:
            await sdk.close()

    results = asyncio.run(run())
    expected = "".join(f"tok{i} " for i in range(10))
    assert results == [expected] * 200
