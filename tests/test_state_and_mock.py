"""Stored API state on both stores (memory, and a real redis-server), the Responses
stream's usage read from its tail, and the built-in mock asked for a tool call."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway import Gateway, MockProvider, Request
from gateway.access.stores.memory import MemoryStore
from gateway.access.stores.redis import RedisStore
from gateway.observability.usage import usage_of_responses_tail

TOOLS = [{"type": "function", "function": {"name": "exec_command", "parameters": {}}}]


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server):
    if request.param == "memory":
        yield MemoryStore(0, state_bytes=1024)
        return
    redis = RedisStore(redis_server.url, timeout=1.0)
    await redis.start(listen=False)
    yield redis
    await redis.stop()


async def test_stored_state_is_kept_until_its_time_or_deleted(store):
    await store.state_put("resp:a", b"first", ttl=60)
    await store.state_put("resp:short", b"gone soon", ttl=0.05)
    assert await store.state_get("resp:a") == b"first"
    assert await store.state_get("resp:nothing") is None
    await asyncio.sleep(0.1)
    assert await store.state_get("resp:short") is None
    assert await store.state_delete("resp:a") is True
    assert await store.state_delete("resp:a") is False
    assert await store.state_get("resp:a") is None


async def test_the_memory_store_lets_the_oldest_state_go_when_full():
    store = MemoryStore(0, state_bytes=100)
    for n in range(5):
        await store.state_put(f"k{n}", b"x" * 30, ttl=60)
    assert await store.state_get("k0") is None
    assert await store.state_get("k4") == b"x" * 30


COMPLETED = (
    b'event: response.completed\ndata: {"type":"response.completed","sequence_number":9,'
    b'"response":{"id":"resp_1","output":[{"type":"message","content":[{"type":"output_text",'
    b'"text":"a \\"usage\\":{ in text"}]}],"usage":{"input_tokens":12,"input_tokens_details":'
    b'{"cached_tokens":2},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":3},'
    b'"total_tokens":21},"user":null,"metadata":{}}}\n\n'
)


def test_a_responses_streams_usage_is_read_from_its_terminal_event():
    usage = usage_of_responses_tail(COMPLETED)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 9, 21)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (2, 3)
    # The event's start may be reads back: the usage object near its end is enough.
    assert usage_of_responses_tail(COMPLETED[len(COMPLETED) // 2 :]) == usage
    assert usage_of_responses_tail(b'data: {"type":"response.in_progress","usage":null}') is None
    assert usage_of_responses_tail(COMPLETED[: COMPLETED.index(b'"total_tokens"')]) is None


def chat(messages: list[dict], stream: bool = False) -> Request:
    body = {"model": "m", "messages": messages, "tools": TOOLS, "stream": stream}
    return Request("POST", "/v1/chat/completions", "", {}, json.dumps(body).encode())


async def test_the_mock_calls_the_tool_a_prompt_asks_for_then_says_its_result():
    ask = [{"role": "user", "content": 'call exec_command {"cmd": "echo hi"}'}]
    async with Gateway(MockProvider()) as gateway:
        answer = json.loads((await gateway.handle(chat(ask))).body)
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        [call] = choice["message"]["tool_calls"]
        assert call["function"] == {"name": "exec_command", "arguments": '{"cmd": "echo hi"}'}
        streamed = await gateway.handle(chat(ask, stream=True))
        events = b"".join([c async for c in streamed.iterate()]).split(b"\n\n")
        pieces = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
        arguments = "".join(
            tc["function"].get("arguments", "")
            for p in pieces
            for tc in (p["choices"][0]["delta"].get("tool_calls") or [] if p["choices"] else [])
        )
        assert arguments == '{"cmd": "echo hi"}'
        assert pieces[-1]["choices"][0]["finish_reason"] == "tool_calls"
        result = [
            *ask,
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "hi\n"},
        ]
        final = json.loads((await gateway.handle(chat(result))).body)
        assert final["choices"][0]["message"]["content"] == "The tool said: hi"


async def test_the_mock_ignores_a_call_to_a_tool_it_was_not_offered():
    ask = [{"role": "user", "content": 'call rm_rf {"path": "/"}'}]
    async with Gateway(MockProvider()) as gateway:
        answer = json.loads((await gateway.handle(chat(ask))).body)
    assert answer["choices"][0]["message"]["content"].startswith("This is a mock response")
