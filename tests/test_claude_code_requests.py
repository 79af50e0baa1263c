"""Claude Code's own requests (recorded from claude-cli 2.1.197 in
``tests/fixtures/agents/claude-*.json``) reach a model that is not Claude: translated
by ``messages_to_chat``, then served end to end by the built-in mock, as sent to
``POST /v1/messages?beta=true``."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway, MockProvider, Request, StreamingResponse
from gateway.core.errors import InvalidRequestError
from gateway.translate.anthropic.front_request import messages_to_chat
from gateway.translate.anthropic.request import chat_to_messages
from tests.conftest import SERVERS, start_gateway
from tests.gateway_process import GatewayProcess, raw_request

AGENTS = Path(__file__).parent / "fixtures" / "agents"
FIXTURES = sorted(AGENTS.glob("claude-*.json"))


def recorded(name: str) -> dict[str, Any]:
    return json.loads((AGENTS / name).read_text())


def body_of(name: str) -> dict[str, Any]:
    return recorded(name)["body"]


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(messages_to_chat(json.dumps(body).encode()))


def small(**fields: Any) -> dict[str, Any]:
    """A minimal Messages request with ``fields`` on top."""
    return {
        "model": "gpt-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


# ======================================================================== translation


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_recorded_request_translates(path):
    body = json.loads(path.read_text())["body"]
    chat = to_chat(body)
    assert chat["model"] == body["model"]
    assert len(chat["tools"]) == len(body["tools"]) == 24
    bash = next(t["function"] for t in chat["tools"] if t["function"]["name"] == "Bash")
    schema = next(t["input_schema"] for t in body["tools"] if t["name"] == "Bash")
    assert bash["parameters"] == schema  # draft 2020-12, $schema and all, as sent
    assert chat["max_completion_tokens"] == body["max_tokens"]
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    # Nothing of Anthropic's own reaches the chat request.
    for field in ("context_management", "output_config", "thinking", "metadata", "system"):
        assert field not in chat


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_recorded_request_reaches_claude_again_through_the_hub(path):
    """A Claude model as the fallback of the translated request: the system messages move
    to ``system`` (wherever they stood), the cache markers stay on their blocks."""
    body = json.loads(path.read_text())["body"]
    messages, _ = chat_to_messages(messages_to_chat(json.dumps(body).encode()), 4096)
    claude = json.loads(messages)
    texts = [block["text"] for block in claude["system"]]
    assert texts[:3] == [block["text"] for block in body["system"]]
    assert texts[3] == body["messages"][1]["content"]  # the mid-conversation one, moved
    markers = [block.get("cache_control") for block in claude["system"]]
    assert markers[:3] == [block.get("cache_control") for block in body["system"]]
    assert claude["messages"][0]["role"] == "user"


def test_the_system_message_stays_in_place():
    body = body_of("claude-tool-result.json")
    chat = to_chat(body)
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "system", "assistant", "tool"]
    assert chat["messages"][2] == {"role": "system", "content": body["messages"][1]["content"]}


def test_the_system_blocks_keep_their_cache_markers():
    body = body_of("claude-first.json")
    system = to_chat(body)["messages"][0]
    assert system["role"] == "system"
    assert system["content"] == [
        {"type": "text", **{k: v for k, v in block.items() if k != "type"}}
        for block in body["system"]
    ]
    user = to_chat(body)["messages"][1]
    assert user["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in user["content"][0]


def test_a_system_prompt_without_markers_is_one_string():
    system = [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    chat = to_chat(small(system=system))
    assert chat["messages"][0] == {"role": "system", "content": "One.\nTwo."}


def test_a_system_message_inside_messages_may_be_blocks():
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    ]
    chat = to_chat(small(messages=messages))
    assert chat["messages"][1] == {"role": "system", "content": "Be brief."}


def test_a_system_prompt_of_other_blocks_is_refused():
    messages = [{"role": "system", "content": [{"type": "image", "source": {"type": "url"}}]}]
    with pytest.raises(InvalidRequestError, match="'image'"):
        to_chat(small(messages=messages))


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "adaptive"}, None),  # the model's own default
        ({"type": "disabled"}, None),
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 2048}, "medium"),
        ({"type": "enabled", "budget_tokens": 10000}, "high"),
    ],
)
def test_each_kind_of_thinking(thinking, effort):
    chat = to_chat(small(thinking=thinking))
    assert chat.get("reasoning_effort") == effort
    assert "thinking" not in chat


@pytest.mark.parametrize(
    ("asked", "effort"),
    [("low", "low"), ("medium", "medium"), ("high", "high"), ("max", "high"), ("xhigh", "high")],
)
def test_output_config_effort_becomes_reasoning_effort(asked, effort):
    chat = to_chat(small(thinking={"type": "adaptive"}, output_config={"effort": asked}))
    assert chat["reasoning_effort"] == effort
    assert "output_config" not in chat


def test_the_effort_wins_over_a_budget_and_disabled_thinking_wins_over_both():
    budget = small(thinking={"type": "enabled", "budget_tokens": 1024})
    assert to_chat({**budget, "output_config": {"effort": "high"}})["reasoning_effort"] == "high"
    disabled = small(thinking={"type": "disabled"}, output_config={"effort": "high"})
    assert "reasoning_effort" not in to_chat(disabled)


def test_an_effort_not_known_yet_is_ignored():
    assert "reasoning_effort" not in to_chat(small(output_config={"effort": "ludicrous"}))


def test_fields_no_other_model_uses_are_ignored():
    chat = to_chat(
        small(
            context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            container="container_1",
            mcp_servers=[],
            service_tier="auto",
            speed="fast",
            output_config={"format": None},
            betas=["whatever-2099-01-01"],
        )
    )
    assert chat == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 100,
    }


def test_mcp_servers_are_refused():
    servers = [{"type": "url", "url": "https://mcp.example", "name": "x"}]
    with pytest.raises(InvalidRequestError, match="mcp_servers"):
        to_chat(small(mcp_servers=servers))


def test_an_unknown_block_type_is_refused_by_name():
    content = [{"type": "text", "text": "hi"}, {"type": "hologram", "text": "?"}]
    with pytest.raises(InvalidRequestError, match="'hologram'") as failure:
        to_chat(small(messages=[{"role": "user", "content": content}]))
    assert "messages.0.content.1" in failure.value.message


def test_an_unknown_role_is_still_refused():
    with pytest.raises(InvalidRequestError, match="'narrator'"):
        to_chat(small(messages=[{"role": "narrator", "content": "Once..."}]))


def test_a_tool_use_and_its_result_round_trip():
    body = body_of("claude-tool-result.json")
    use = body["messages"][2]["content"][0]
    result = body["messages"][3]["content"][0]
    assistant, tool = to_chat(body)["messages"][3:]
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": use["id"],
                "type": "function",
                "function": {"name": "Bash", "arguments": json.dumps(use["input"])},
            }
        ],
    }
    assert tool == {
        "role": "tool",
        "tool_call_id": result["tool_use_id"],
        "content": "hello",
        "cache_control": {"type": "ephemeral"},
    }


def test_an_error_result_and_a_result_of_blocks():
    content = [
        {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True},
        {
            "type": "tool_result",
            "tool_use_id": "t2",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
    ]
    chat = to_chat(small(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "boom"},
        {"role": "tool", "tool_call_id": "t2", "content": "a\nb"},
    ]


def test_a_signed_thinking_block_comes_back_unchanged():
    body = body_of("claude-thinking-tool-result.json")
    thinking = body["messages"][2]["content"][0]
    assistant = to_chat(body)["messages"][3]
    assert assistant["thinking_blocks"] == [thinking]  # its signature, byte for byte
    assert assistant["reasoning_content"] == thinking["thinking"]
    assert assistant["tool_calls"][0]["id"] == body["messages"][2]["content"][1]["id"]
    # ...and on to Claude (a fallback) as it came.
    claude, _ = chat_to_messages(messages_to_chat(json.dumps(body).encode()), 4096)
    turn = next(t for t in json.loads(claude)["messages"] if t["role"] == "assistant")
    assert turn["content"][0] == thinking


def test_unsigned_and_redacted_thinking():
    content = [
        {"type": "thinking", "thinking": "another model's", "signature": ""},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Done.", "cache_control": {"type": "ephemeral"}},
    ]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]
    assistant = to_chat(small(messages=messages))["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": "Done.",
        "reasoning_content": "another model's",
        # an unsigned block would be refused by Claude: only the signed ones are kept
        "thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}],
        "cache_control": {"type": "ephemeral"},
    }


def test_a_tool_keeps_its_cache_marker():
    tool = {
        "name": "Read",
        "input_schema": {"type": "object"},
        "cache_control": {"type": "ephemeral"},
    }
    chat = to_chat(small(tools=[tool]))
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "Read", "parameters": {"type": "object"}},
            "cache_control": {"type": "ephemeral"},
        }
    ]


# ======================================================================== end to end


def claude_code(name: str, stream: bool, model: str = "mock-gpt") -> Request:
    """The recorded request as Claude Code sent it, for ``model``."""
    record = recorded(name)
    body = copy.deepcopy(record["body"])
    body["model"], body["stream"] = model, stream
    path, _, query = record["path"].partition("?")
    headers = {k.lower(): v for k, v in record["headers"] if k.lower() != "content-length"}
    return Request(record["method"], path, query, headers, json.dumps(body).encode())


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for raw in data.decode().split("\n\n"):
        if not raw.strip():
            continue
        fields = dict(line.split(": ", 1) for line in raw.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def assert_a_message(message: dict[str, Any]) -> None:
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "mock-gpt"
    assert message["content"] and message["content"][0]["type"] in ("text", "tool_use")
    assert message["stop_reason"] in ("end_turn", "tool_use")
    assert message["usage"]["output_tokens"] > 0


def assert_a_stream(events: list[tuple[str, dict[str, Any]]]) -> None:
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert "content_block_start" in kinds and "content_block_delta" in kinds
    assert kinds.count("content_block_start") == kinds.count("content_block_stop")
    assert all(data["type"] == kind for kind, data in events)
    assert events[0][1]["message"]["model"] == "mock-gpt"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "tool_use")
    assert delta["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_claude_code_through_the_gateway_to_the_mock(path):
    async with Gateway(MockProvider()) as gateway:
        request = claude_code(path.name, stream=False)
        assert request.path == "/v1/messages" and request.query == "beta=true"
        whole = await gateway.handle(request)
        assert whole.status == 200, whole.body
        assert_a_message(json.loads(whole.body))

        streamed = await gateway.handle(claude_code(path.name, stream=True))
        assert isinstance(streamed, StreamingResponse) and streamed.status == 200
        data = b"".join([chunk async for chunk in streamed.iterate()])
        assert_a_stream(sse_events(data))


@pytest.fixture(scope="module", params=SERVERS)
def mock_gateway(request, tmp_path_factory) -> Iterator[GatewayProcess]:
    """The gateway as `make run` starts it with nothing configured, per server adapter."""
    process = start_gateway(tmp_path_factory, request.param, {})
    yield process
    process.stop()


def test_the_beta_query_reaches_the_messages_route_on_each_server(mock_gateway):
    record = recorded("claude-first.json")
    body = {**record["body"], "model": "mock-gpt", "stream": False}
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    response = raw_request(
        mock_gateway.url, "POST", record["path"], json.dumps(body).encode(), headers
    )
    assert record["path"] == "/v1/messages?beta=true"
    assert response.status == 200, response.body
    assert_a_message(json.loads(response.body))


def test_what_only_claude_reads_stays_out_of_a_request_for_other_models():
    body = json.dumps(body_of("claude-thinking-tool-result.json")).encode()
    kept = json.dumps(json.loads(messages_to_chat(body)))
    assert all(name in kept for name in ("cache_control", "thinking_blocks"))
    plain = messages_to_chat(body, claude_only=False)
    for name in (b"cache_control", b"thinking_blocks", b"reasoning_content"):
        assert name not in plain


async def test_an_openai_compatible_upstream_never_sees_claudes_fields():
    sent: list[bytes] = []

    class Recording(MockProvider):
        async def send(self, ctx, request):
            sent.append(request.body)
            return await super().send(ctx, request)

    body = body_of("claude-thinking-tool-result.json") | {"model": "mock-gpt", "stream": False}
    request = Request("POST", "/v1/messages", "beta=true", {}, json.dumps(body).encode())
    async with Gateway(Recording()) as gateway:
        response = await gateway.handle(request)
    assert response.status == 200
    [chat] = sent
    assert b"cache_control" not in chat and b"thinking_blocks" not in chat
