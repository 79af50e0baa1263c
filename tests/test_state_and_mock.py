"""Stored API state on both stores (memory, and a real redis-server), and the built-in
mock asked for a tool call."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway import Gateway, MockProvider, Request
from gateway.access.stores.memory import MemoryStore
from gateway.access.stores.redis import RedisStore

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
