"""The examples shipped in gateway/examples work as the README says."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gateway
from gateway import Gateway, MockProvider, OpenAIProvider, Request
from gateway.config.settings import Settings, build_gateway

EXAMPLES = Path(gateway.__file__).parent / "examples"


def test_example_config_builds_the_gateway_it_describes():
    env = {"GATEWAY_CONFIG": str(EXAMPLES / "gateway.toml"), "OPENAI_API_KEY": "sk-test"}
    built = build_gateway(Settings.from_env(env))
    registry = built.registry
    assert registry.names() == ["gpt-4o-mini", "fast", "cheap", "demo", "smart", "long"]
    assert isinstance(registry.default, OpenAIProvider) and registry.default.name == "openai"
    assert registry.resolve("cheap").upstream_model == "llama3.1:8b"
    assert isinstance(registry.resolve("demo").provider, MockProvider)
    # the access log and the metrics are hooks too, before the configured ones
    assert [type(h).__name__ for h in built.hooks.hooks] == ["AccessLog", "Metrics", "UsageLog"]
    smart = registry.resolve("smart")
    assert [d.name for d in smart.deployments] == ["openai/gpt-4o", "local/qwen2.5:72b"]
    assert smart.balancer.strategy == "lowest-latency"
    assert (smart.fallbacks, smart.context_fallbacks) == (("gpt-4o-mini",), ("long",))
    assert smart.timeouts.first_byte == 120 and smart.retry.retries == 2
    assert registry.resolve("long").retry.retries == 0


def chat(content: str, stream: bool = False) -> Request:
    messages = [{"role": "user", "content": content}]
    body = {"model": "mock-gpt", "messages": messages, "stream": stream}
    return Request("POST", "/v1/chat/completions", "", {}, json.dumps(body).encode())


async def test_usage_log_counts_plain_and_streamed_answers(caplog):
    from gateway.examples.hooks import UsageLog

    caplog.set_level(logging.INFO, logger="gateway.usage")
    async with Gateway(MockProvider(), hooks=[UsageLog()]) as gw:
        await gw.handle(chat("one two"))
        streamed = await gw.handle(chat("three", stream=True))
        body = b"".join([c async for c in streamed.iterate()])
    assert b'"usage"' not in body  # the gateway asked for usage, and took it back out
    assert [r.getMessage().split()[-1] for r in caplog.records] == ["tokens=10", "tokens=8"]


async def test_block_words_refuses_with_a_403():
    from gateway.examples.hooks import BlockWords

    async with Gateway(MockProvider(), hooks=[BlockWords()]) as gw:
        refused = await gw.handle(chat("my Password is 123"))
        served = await gw.handle(chat("hello"))
    assert refused.status == 403
    assert json.loads(refused.body)["error"]["type"] == "permission_error"
    assert served.status == 200
