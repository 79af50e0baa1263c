"""Micro-benchmarks of the request path without the network (``make bench-micro``).

The core alone — decode, route, hooks, encode — against a provider that answers from
memory, so a regression shows in microseconds. Under ``make test`` each runs once, as a
plain test of the same path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gateway import Gateway, Provider, Request, StreamingResponse
from gateway.providers.mock import MockResponse
from gateway.routing.registry import ModelRegistry
from gateway.wire.endpoints import CHAT

REQUESTS = 100  # per measured call, so the event loop's own cost is spread thin

BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 8},
            {"role": "user", "content": "Plan a three-day trip to Lisbon for me, please. " * 6},
        ],
        "temperature": 0.7,
        "max_tokens": 256,
    }
).encode()
STREAM_BODY = BODY[:-1] + b', "stream": true}'
HEADERS = {
    "host": "127.0.0.1:8080",
    "content-type": "application/json",
    "authorization": "Bearer bench-key",
    "user-agent": "bench",
}
COMPLETION = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi " * 50}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }
).encode()
EVENTS = (
    b"".join(
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"token%d "},"finish_reason":null}]}\n\n' % i
        for i in range(19)
    )
    + b"data: [DONE]\n\n"
)
READS = [EVENTS[: len(EVENTS) // 3], EVENTS[len(EVENTS) // 3 : 2 * len(EVENTS) // 3]]
READS.append(EVENTS[2 * len(EVENTS) // 3 :])  # events straddle the reads, as on a socket


class Prepared(Provider):
    """Answers from memory: the upstream costs nothing, the gateway is all that is measured."""

    name = "prepared"

    async def send(self, ctx: Any, request: Any) -> MockResponse:
        if b'"stream":true' in request.body.replace(b" ", b""):
            return MockResponse(200, [("content-type", "text/event-stream")], chunks=READS)
        return MockResponse(200, [("content-type", "application/json")], COMPLETION)


class TagRequest:
    def before_request(self, ctx: Any, request: Any) -> None:
        request.json["user"] = ctx.identity


class CountEvents:
    events = 0

    def on_chunk(self, ctx: Any, event: Any) -> None:
        if event.data != b"[DONE]":
            self.events += 1


def gateway(hooks: bool = False, rewrite: bool = False) -> Gateway:
    provider = Prepared()
    registry = ModelRegistry(provider)
    if rewrite:
        registry.add("bench-model", provider, upstream_model="upstream-model")
    if hooks:
        return Gateway(registry, hooks=[TagRequest(), CountEvents()], api_keys=["bench-key"])
    return Gateway(registry)


def measured(gw: Gateway, body: bytes) -> Callable[[], Coroutine[Any, Any, int]]:
    request = Request("POST", "/v1/chat/completions", "", HEADERS, body)

    async def requests() -> int:
        total = 0
        for _ in range(REQUESTS):
            response = await gw.handle(request)
            assert response.status == 200
            if type(response) is StreamingResponse:
                total += sum([len(chunk) async for chunk in response.iterate()])
            else:
                total += len(response.body)
        return total

    return requests


@pytest.fixture
def run_on_loop():
    loop = asyncio.new_event_loop()
    started: list[Gateway] = []

    def run(benchmark, gw: Gateway, body: bytes) -> int:
        loop.run_until_complete(gw.startup())
        started.append(gw)
        requests = measured(gw, body)
        return benchmark(lambda: loop.run_until_complete(requests()))

    yield run
    for gw in started:
        loop.run_until_complete(gw.shutdown())
    loop.close()


def test_chat_x100(benchmark, run_on_loop):
    assert run_on_loop(benchmark, gateway(), BODY) == REQUESTS * len(COMPLETION)


def test_chat_with_hooks_x100(benchmark, run_on_loop):
    assert run_on_loop(benchmark, gateway(hooks=True), BODY) == REQUESTS * len(COMPLETION)


def test_chat_with_model_rewrite_x100(benchmark, run_on_loop):
    assert run_on_loop(benchmark, gateway(rewrite=True), BODY) == REQUESTS * len(COMPLETION)


def test_stream_x100(benchmark, run_on_loop):
    assert run_on_loop(benchmark, gateway(), STREAM_BODY) == REQUESTS * len(EVENTS)


def test_stream_with_hooks_x100(benchmark, run_on_loop):
    assert run_on_loop(benchmark, gateway(hooks=True), STREAM_BODY) == REQUESTS * len(EVENTS)


def test_routing_fields_decode(benchmark):
    fields = benchmark(CHAT.parse, BODY)
    assert fields.model == "bench-model" and len(fields.messages) == 2
