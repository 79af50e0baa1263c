"""OpenAI's Responses API ⇄ chat completions (the hub): the pure translation, both ways.

Answers and streams are checked against the openai SDK itself: each event and Response
validated strictly with the SDK's pydantic types, and the bytes replayed through the
SDK's client (its SSE reader and ``responses.stream()`` accumulator) over an in-memory
transport — no server.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import openai._base_client
import pydantic
import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent

from gateway.core.errors import InvalidRequestError, UpstreamProtocolError
from gateway.core.outcome import Usage
from gateway.translate.anthropic.request import Facts as AnthropicFacts
from gateway.translate.anthropic.stream import MessagesStream
from gateway.translate.responses import answer as answer_module
from gateway.translate.responses.answer import chat_to_response
from gateway.translate.responses.request import Facts, responses_to_chat
from gateway.translate.responses.shapes import decode_thinking, encode_thinking
from gateway.translate.responses.stream import ResponsesStream
from gateway.translate.responses.usage import usage_of_response, usage_of_response_stream
from tests.test_translate_anthropic import parallel_stream

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
CODEX = sorted(FIXTURES.glob("codex-*.json"))
RID = "resp_test1"
CREATED = 1760000000
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"},
}
AGENTS = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents.",
    "tools": [
        {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}},
        {"type": "function", "name": "wait_agent", "parameters": {"type": "object"}},
    ],
}
BLOCKS = [{"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"}]

# The HTTP library the SDK is built on (httpx, or httpx2 in newer releases).
http = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx
_events_adapter = pydantic.TypeAdapter(ResponseStreamEvent)
_item_adapter = pydantic.TypeAdapter(ResponseItem)


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch):
    """completed_at is the clock's: fixed, so that streams read differently compare equal."""
    monkeypatch.setattr(answer_module, "time", SimpleNamespace(time=lambda: CREATED + 1.0))


def to_chat(history=None, drop=False, **request) -> tuple[dict, Facts]:
    body = {"model": "claude-x", **request}
    raw, facts = responses_to_chat(json.dumps(body).encode(), history, drop)
    return json.loads(raw), facts


def facts_for(**request) -> Facts:
    request.setdefault("input", "hi")
    return to_chat(**request)[1]


def refused(**request) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        to_chat(**request)
    assert caught.value.status == 400
    return caught.value


def codex_body(path: Path) -> bytes:
    return json.dumps(json.loads(path.read_text())["body"]).encode()


# =================================================================== request -> chat


def test_instructions_input_string_and_stream_options():
    body, facts = to_chat(instructions="Be terse.", input="hi", stream=True)
    assert body == {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert facts.stream and facts.instructions == "Be terse."
    [item] = facts.input_items
    assert item["type"] == "message" and item["role"] == "user" and item["status"] == "completed"
    assert item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "hi"}]


def test_responses_only_fields_never_reach_the_chat_body_and_unknown_fields_are_ignored():
    body, facts = to_chat(
        input="hi",
        store=False,
        previous_response_id="resp_1",
        include=["reasoning.encrypted_content"],
        truncation="auto",
        background=False,
        prompt_cache_key="k",
        client_metadata={"a": "b"},
        service_tier="flex",
        safety_identifier="s",
        context_management=[{"type": "compaction"}],
        stream_options={"include_obfuscation": False},
        conversation=None,
        metadata={"team": "a"},
        some_future_field={"x": 1},
        temperature=0.5,
        top_p=0.9,
        user="u-1",
        max_output_tokens=300,
        text={"verbosity": "low"},
    )
    assert body == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-1",
    }
    assert facts.store is False and facts.previous_response_id == "resp_1"
    assert facts.metadata == {"team": "a"} and facts.encrypted_reasoning
    assert facts.text == {"format": {"type": "text"}, "verbosity": "low"}


def test_message_items_of_every_role_and_their_content_parts():
    body, facts = to_chat(
        input=[
            {"role": "developer", "content": "Cite sources."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "S"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "original"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "a.pdf",
                    },
                ],
            },
            {
                "type": "message",
                "id": "msg_old",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "A cat.", "annotations": []},
                    {"type": "refusal", "refusal": " No more."},
                ],
            },
        ]
    )
    assert body["messages"] == [
        {"role": "system", "content": "Cite sources."},
        {"role": "system", "content": "S"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}},
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "a.pdf",
                    },
                },
            ],
        },
        {"role": "assistant", "content": "A cat. No more."},
    ]
    stored = facts.input_items
    assert [i["role"] for i in stored] == ["developer", "system", "user", "assistant"]
    assert stored[3]["id"] == "msg_old"
    assert stored[3]["content"] == [
        {"type": "output_text", "text": "A cat.", "annotations": []},
        {"type": "refusal", "refusal": " No more."},
    ]
    for item in stored:  # each as GET /v1/responses/{id}/input_items lists it
        _item_adapter.validate_python(item, strict=True)


@pytest.mark.parametrize(
    "part, says",
    [
        ({"type": "input_image", "file_id": "file-1", "detail": "auto"}, "Files API"),
        ({"type": "input_file", "file_id": "file-1"}, "file_data"),
        ({"type": "input_file", "file_url": "https://x/a.pdf"}, "file_data"),
        ({"type": "input_video", "url": "x"}, "input_video"),
    ],
)
def test_content_a_chat_model_cannot_take_is_a_400_naming_the_part(part, says):
    error = refused(input=[{"role": "user", "content": [part]}])
    assert error.param == "input" and "input[0].content[0]" in error.message
    assert says in error.message


def test_function_calls_join_the_assistant_text_before_them_and_outputs_become_tool_messages():
    body, facts = to_chat(
        input=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "Looking."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {
                "type": "function_call",
                "id": "fc_2",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"city":"Rome"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [
                    {"type": "input_text", "text": "rain"},
                    {"type": "input_text", "text": "y"},
                ],
            },
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER],
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
        {"role": "user", "content": "thanks"},
    ]
    stored = facts.input_items
    assert [i["type"] for i in stored] == [
        "message",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]
    assert stored[2]["id"].startswith("fc_") and stored[3]["id"] == "fc_2"
    assert stored[4]["id"].startswith("fco_")
    assert all(item["status"] == "completed" for item in stored)
    for item in stored:
        _item_adapter.validate_python(item, strict=True)


def test_a_tool_output_with_an_image_keeps_its_parts():
    body, _ = to_chat(
        input=[
            {"type": "function_call", "call_id": "c", "name": "view_image", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "c",
                "output": [
                    {"type": "input_text", "text": "the image:"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
                ],
            },
        ]
    )
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "the image:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "auto"}},
    ]


def test_calls_without_an_assistant_message_before_them_make_one():
    body, _ = to_chat(
        input=[
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call", "call_id": "b", "name": "f"},
        ]
    )
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert body["messages"][1]["content"] is None
    assert body["messages"][3]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_a_reasoning_item_the_gateway_wrote_gives_back_its_thinking_blocks():
    body, _ = to_chat(
        input=[
            {"role": "user", "content": "go"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "Let me see."}],
                "encrypted_content": encode_thinking(BLOCKS),
            },
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        ]
    )
    assistant = body["messages"][1]
    assert assistant["thinking_blocks"] == BLOCKS
    assert assistant["tool_calls"][0]["id"] == "a"
    assert "reasoning_content" not in assistant


@pytest.mark.parametrize(
    "encrypted",
    [
        "gAAAAABfakeEncryptedReasoning",  # OpenAI's own
        None,
        "gw1:not base64!",
        "gw1:" + base64.b64encode(b"{}").decode(),  # not a list of blocks
        "gw1:" + base64.b64encode(b"[]").decode(),
    ],
)
def test_anyone_elses_reasoning_is_dropped_without_error(encrypted):
    body, facts = to_chat(
        input=[
            {"role": "user", "content": "go"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Planning"}],
                "encrypted_content": encrypted,
            },
            {"role": "assistant", "content": "done"},
        ]
    )
    assert body["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "done"},
    ]
    assert decode_thinking(encrypted) is None
    _item_adapter.validate_python(facts.input_items[1], strict=True)


@pytest.mark.parametrize("reference", [{"type": "item_reference", "id": "msg_1"}, {"id": "msg_1"}])
def test_item_references_are_refused(reference):
    error = refused(input=[{"role": "user", "content": "hi"}, reference])
    assert error.param == "input" and "input[1]" in error.message


def test_built_in_tools_items_are_refused_or_dropped_with_the_built_in_tools():
    call = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}}
    error = refused(input=[{"role": "user", "content": "hi"}, call])
    assert "web_search_call" in error.message and error.param == "input"
    body, facts = to_chat(drop=True, input=[{"role": "user", "content": "hi"}, call])
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert len(facts.input_items) == 1


def test_function_tools_nested_the_chat_way_and_namespaces_flattened():
    body, facts = to_chat(input="hi", tools=[WEATHER, AGENTS], tool_choice="auto")
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather now",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "spawn_agent", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "wait_agent", "parameters": {"type": "object"}}},
    ]
    assert body["tool_choice"] == "auto"
    assert facts.namespaces == {"spawn_agent": "multi_agent_v1", "wait_agent": "multi_agent_v1"}
    assert facts.tools == [WEATHER, AGENTS]  # echoed as sent


def test_a_namespaced_call_in_the_input_is_the_plain_name():
    body, facts = to_chat(
        tools=[AGENTS],
        input=[
            {
                "type": "function_call",
                "call_id": "c",
                "name": "spawn_agent",
                "namespace": "multi_agent_v1",
                "arguments": "{}",
            }
        ],
    )
    assert body["messages"][0]["tool_calls"][0]["function"]["name"] == "spawn_agent"
    assert facts.input_items[0]["namespace"] == "multi_agent_v1"


def test_a_custom_tool_becomes_a_function_taking_one_string_and_its_items_map_back():
    body, facts = to_chat(
        tools=[PATCH],
        input=[
            {"role": "user", "content": "fix it"},
            {
                "type": "custom_tool_call",
                "call_id": "c1",
                "name": "apply_patch",
                "input": "*** Begin Patch\n",
            },
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"},
        ],
    )
    [tool] = body["tools"]
    function = tool["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"]["properties"] == {"input": {"type": "string"}}
    assert function["parameters"]["required"] == ["input"]
    assert function["description"].startswith("Edit files.")
    assert "lark grammar" in function["description"] and "start: patch" in function["description"]
    assert facts.custom_tools == frozenset({"apply_patch"})
    call = body["messages"][1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"input": "*** Begin Patch\n"}
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "Done!"}
    assert facts.input_items[1]["id"].startswith("ctc_")
    assert facts.input_items[2]["id"].startswith("ctco_")
    for item in facts.input_items:
        _item_adapter.validate_python(item, strict=True)


BUILT_IN = [
    {"type": "web_search", "external_web_access": False},
    {"type": "web_search_preview"},
    {"type": "web_search_2025_08_26"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "x"},
    {"type": "computer"},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "image_generation"},
    {"type": "mcp", "server_label": "x"},
    {"type": "local_shell"},
    {"type": "shell"},
    {"type": "apply_patch"},
    {"type": "tool_search", "execution": "client"},
    {"type": "programmatic_tool_calling"},
    {"type": "a_tool_of_tomorrow"},
]


@pytest.mark.parametrize("tool", BUILT_IN, ids=[t["type"] for t in BUILT_IN])
def test_built_in_tools_are_refused_naming_their_type_or_dropped_by_policy(tool):
    error = refused(input="hi", tools=[WEATHER, tool])
    assert error.param == "tools"
    assert error.message == (
        f"The tool type '{tool['type']}' cannot be served for this model: only function "
        f"tools (and custom tools) reach it."
    )
    body, facts = to_chat(drop=True, input="hi", tools=[WEATHER, tool])
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert facts.tools == [WEATHER, tool]


def test_without_tools_left_no_tool_choice_or_parallel_tool_calls_is_sent():
    body, _ = to_chat(
        drop=True,
        input="hi",
        tools=[{"type": "web_search"}],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & body.keys()


@pytest.mark.parametrize(
    "choice, expected, names",
    [
        ("auto", "auto", ["get_weather", "apply_patch"]),
        ("none", "none", ["get_weather", "apply_patch"]),
        ("required", "required", ["get_weather", "apply_patch"]),
        (
            {"type": "function", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            ["get_weather", "apply_patch"],
        ),
        (
            {"type": "custom", "name": "apply_patch"},
            {"type": "function", "function": {"name": "apply_patch"}},
            ["get_weather", "apply_patch"],
        ),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            },
            "required",
            ["get_weather"],
        ),
    ],
)
def test_tool_choice(choice, expected, names):
    body, facts = to_chat(
        input="hi", tools=[WEATHER, PATCH], tool_choice=choice, parallel_tool_calls=False
    )
    assert body["tool_choice"] == expected
    assert [t["function"]["name"] for t in body["tools"]] == names
    assert body["parallel_tool_calls"] is False
    assert facts.tool_choice == choice and facts.parallel_tool_calls is False


def test_a_built_in_tool_choice_is_refused_or_left_out_by_policy():
    error = refused(input="hi", tools=[WEATHER], tool_choice={"type": "file_search"})
    assert error.param == "tool_choice" and "file_search" in error.message
    body, _ = to_chat(drop=True, input="hi", tools=[WEATHER], tool_choice={"type": "file_search"})
    assert "tool_choice" not in body
    assert refused(input="hi", tools=[WEATHER], tool_choice="sometimes").param == "tool_choice"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            {
                "format": {
                    "type": "json_schema",
                    "name": "city",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "A city",
                },
                "verbosity": "high",
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "description": "A city",
                    "schema": {"type": "object"},
                    "strict": True,
                },
            },
        ),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        ({"format": {"type": "text"}, "verbosity": "low"}, None),
    ],
)
def test_text_format_becomes_response_format_and_verbosity_is_ignored(text, expected):
    body, facts = to_chat(input="hi", text=text)
    assert body.get("response_format") == expected
    assert "verbosity" not in body
    assert facts.text["format"] == text["format"]


@pytest.mark.parametrize(
    "effort, expected",
    [
        ("none", None),
        ("minimal", "minimal"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "high"),
        ("max", "high"),
        (None, None),
    ],
)
def test_reasoning_effort(effort, expected):
    body, facts = to_chat(input="hi", reasoning={"effort": effort, "summary": "auto"})
    assert body.get("reasoning_effort") == expected
    assert facts.reasoning == {"effort": effort, "summary": "auto"}


@pytest.mark.parametrize(
    "field, value",
    [("conversation", "conv_1"), ("conversation", {"id": "c"}), ("background", True)],
)
def test_conversations_and_background_responses_are_refused(field, value):
    assert refused(input="hi", **{field: value}).param == field


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (b'{"input": "hi"}', "model"),
        (b'{"model": "m", "input": 5}', "input"),
        (b'{"model": "m", "input": "hi", "tools": [{"type": "function", "name": 5}]}', "tools"),
        (b'{"model": "m", "input": "hi", "tools": [{"name": "f"}]}', "tools"),
        (b'{"model": "m", "input": "hi", "tools": [{"type": "function"}]}', "tools"),
        (b'{"model": "m", "input": "hi", "max_output_tokens": "many"}', "max_output_tokens"),
        (b'{"model": "m", "input": [{"type": "function_call", "name": "f"}]}', "input"),
        (b'{"model": "m"}', "input"),
    ],
)
def test_a_malformed_request_is_a_400_naming_the_param(body, param):
    with pytest.raises(InvalidRequestError) as caught:
        responses_to_chat(body)
    assert caught.value.param == param


def test_a_message_without_a_role_is_refused():
    error = refused(input=[{"type": "message", "content": "hi"}])
    assert error.param == "input" and "input[0].role" in error.message


def test_a_tool_declared_twice_is_refused():
    assert refused(input="hi", tools=[WEATHER, WEATHER]).param == "tools"


def test_history_comes_after_the_instructions_and_before_the_input():
    history = [
        {
            "id": "msg_a",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "weather?"}],
            "status": "completed",
        },
        {
            "id": "rs_resp_0",
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Let me see."}],
            "encrypted_content": encode_thinking(BLOCKS),
        },
        {
            "id": "fc_resp_1",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"city":"Paris"}',
            "call_id": "call_1",
            "name": "get_weather",
        },
    ]
    body, facts = to_chat(
        history=history,
        instructions="Now",
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
        previous_response_id="resp_prev",
    )
    assert body["messages"] == [
        {"role": "system", "content": "Now"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "thinking_blocks": BLOCKS,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    [stored] = facts.input_items  # only this request's own input is stored
    assert stored["type"] == "function_call_output"


# ------------------------------------------------------------------ the Codex fixtures


@pytest.mark.parametrize("path", CODEX, ids=[p.stem for p in CODEX])
def test_codex_requests_translate_when_built_in_tools_are_dropped(path):
    request = json.loads(path.read_text())["body"]
    raw, facts = responses_to_chat(codex_body(path), drop_builtin_tools=True)
    body = json.loads(raw)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert all(t["type"] == "function" for t in body["tools"])
    names = [t["function"]["name"] for t in body["tools"]]
    assert "exec_command" in names and "web_search" not in names
    assert facts.tools == request["tools"]
    assert facts.encrypted_reasoning and facts.store is False
    for item in facts.input_items:
        _item_adapter.validate_python(item, strict=True)
    assert [i["id"] for i in facts.input_items] == [i["id"] for i in request["input"]]
    # the body is one a hub translator takes
    from gateway.translate.anthropic.request import chat_to_messages

    chat_to_messages(raw, 4096)


@pytest.mark.parametrize("path", CODEX, ids=[p.stem for p in CODEX])
def test_codex_requests_are_refused_for_their_built_in_tools_by_default(path):
    with pytest.raises(InvalidRequestError) as caught:
        responses_to_chat(codex_body(path))
    first = "tool_search" if path.stem == "codex-gpt55" else "web_search"
    assert f"'{first}'" in caught.value.message and caught.value.param == "tools"


def test_codex_namespace_and_custom_tools():
    first = {p.stem: p for p in CODEX}
    _, facts = responses_to_chat(codex_body(first["codex-first"]), drop_builtin_tools=True)
    assert facts.namespaces["spawn_agent"] == "multi_agent_v1"
    raw, facts = responses_to_chat(codex_body(first["codex-gpt55"]), drop_builtin_tools=True)
    assert facts.custom_tools == frozenset({"apply_patch"})
    assert json.loads(raw)["reasoning_effort"] == "medium"


def test_codex_tool_result_round_trip():
    path = FIXTURES / "codex-tool-result.json"
    body = json.loads(responses_to_chat(codex_body(path), drop_builtin_tools=True)[0])
    call, result = body["messages"][-2:]
    assert call["role"] == "assistant" and call["content"] is None
    assert call["tool_calls"] == [
        {
            "id": "call_c83df1a03c814a13a5d2b10a",
            "type": "function",
            "function": {"name": "exec_command", "arguments": '{"cmd": "echo hello"}'},
        }
    ]
    assert result["role"] == "tool" and result["tool_call_id"] == "call_c83df1a03c814a13a5d2b10a"
    assert "Process exited with code 0" in result["content"]


def test_codex_reasoning_with_openais_encrypted_content_is_dropped():
    path = FIXTURES / "codex-reasoning-tool-result.json"
    body = json.loads(responses_to_chat(codex_body(path), drop_builtin_tools=True)[0])
    roles = [m["role"] for m in body["messages"]]
    assert roles[-3:] == ["user", "assistant", "tool"]
    assert not any("thinking_blocks" in m for m in body["messages"])
    assert body["messages"][-2]["tool_calls"][0]["id"] == "call_79742981206c44019d3ae285"


# ==================================================================== answer -> Response


def completion(message: dict, finish: str = "stop", usage: dict | None = None) -> bytes:
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "claude-x-2025",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
    }
    if usage is not None:
        answer["usage"] = usage
    return json.dumps(answer).encode()


CHAT_USAGE = {
    "prompt_tokens": 60,
    "completion_tokens": 18,
    "total_tokens": 78,
    "prompt_tokens_details": {"cached_tokens": 20, "cache_creation_tokens": 5},
    "completion_tokens_details": {"reasoning_tokens": 7},
}
RESPONSE_USAGE = {
    "input_tokens": 60,
    "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 5},
    "output_tokens": 18,
    "output_tokens_details": {"reasoning_tokens": 7},
    "total_tokens": 78,
}


def sdk_client(body: bytes, content_type: str, strict: bool = False) -> openai.OpenAI:
    """The real SDK client, answered from memory."""

    def answer(request: Any) -> Any:
        return http.Response(200, headers={"content-type": content_type}, content=body)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=http.Client(transport=http.MockTransport(answer)),
        _strict_response_validation=strict,
    )


def checked_response(raw: bytes) -> dict:
    """A Response validated strictly, and read by the SDK's strict client."""
    response = json.loads(raw)
    Response.model_validate(response, strict=True)
    sdk = sdk_client(raw, "application/json", strict=True).responses.create(model="m", input="x")
    assert sdk.id == response["id"]
    return response


def test_a_text_answer_as_a_response_with_the_full_field_set_echoing_the_request():
    facts = facts_for(
        instructions="Be terse.",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.5,
        max_output_tokens=99,
        metadata={"k": "v"},
        store=False,
        previous_response_id="resp_0",
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        reasoning={"effort": "low"},
        user="u",
    )
    raw, output, usage = chat_to_response(
        completion({"content": "Hello!"}, usage=CHAT_USAGE), facts, RID, CREATED
    )
    response = checked_response(raw)
    assert response == {
        "id": RID,
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "background": False,
        "completed_at": CREATED + 1,
        "error": None,
        "incomplete_details": None,
        "instructions": "Be terse.",
        "max_output_tokens": 99,
        "max_tool_calls": None,
        "model": "claude-x",
        "output": [
            {
                "id": "msg_test1_0",
                "type": "message",
                "status": "completed",
                "content": [
                    {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello!"}
                ],
                "role": "assistant",
            }
        ],
        "parallel_tool_calls": False,
        "previous_response_id": "resp_0",
        "prompt_cache_key": None,
        "reasoning": {"effort": "low", "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": False,
        "temperature": 0.2,
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "tool_choice": "required",
        "tools": [WEATHER],
        "top_logprobs": 0,
        "top_p": 0.5,
        "truncation": "disabled",
        "usage": RESPONSE_USAGE,
        "user": "u",
        "metadata": {"k": "v"},
    }
    assert output == response["output"]
    assert usage == Usage(60, 18, 78, 20, 5, 7)
    sdk = sdk_client(raw, "application/json", strict=True).responses.create(model="m", input="x")
    assert sdk.output_text == "Hello!"


def test_defaults_when_the_request_said_nothing():
    raw, _, usage = chat_to_response(completion({"content": "x"}), facts_for(), RID, CREATED)
    response = checked_response(raw)
    assert response["tools"] == [] and response["tool_choice"] == "auto"
    assert response["parallel_tool_calls"] is True and response["metadata"] == {}
    assert response["temperature"] == 1.0 and response["top_p"] == 1.0
    assert response["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert response["reasoning"] == {"effort": None, "summary": None}
    assert response["store"] is True and response["usage"] is None and usage is None


def test_tool_calls_become_function_call_items_with_namespaces_and_custom_calls():
    facts = facts_for(tools=[WEATHER, AGENTS, PATCH])
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "spawn_agent", "arguments": ""}},
        {
            "id": "call_c",
            "type": "function",
            "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'},
        },
    ]
    raw, output, _ = chat_to_response(
        completion({"content": "On it.", "tool_calls": calls}, "tool_calls", CHAT_USAGE),
        facts,
        RID,
        CREATED,
    )
    response = checked_response(raw)
    assert response["status"] == "completed"
    assert [item["type"] for item in output] == [
        "message",
        "function_call",
        "function_call",
        "custom_tool_call",
    ]
    assert output[1] == {
        "id": "fc_test1_1",
        "type": "function_call",
        "status": "completed",
        "arguments": '{"city":"Paris"}',
        "call_id": "call_a",
        "name": "get_weather",
    }
    assert output[2]["namespace"] == "multi_agent_v1" and output[2]["arguments"] == "{}"
    assert output[3] == {
        "id": "ctc_test1_3",
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": "call_c",
        "name": "apply_patch",
        "input": "*** Begin Patch",
    }
    for item in output:  # as input_items / history would list them
        _item_adapter.validate_python(item, strict=True)


def test_reasoning_first_and_thinking_blocks_only_shown_when_asked_but_always_stored():
    message = {"content": "4", "reasoning_content": "2+2", "thinking_blocks": BLOCKS}
    for include, shown in ((["reasoning.encrypted_content"], True), ([], False)):
        facts = facts_for(include=include)
        raw, stored, _ = chat_to_response(completion(message), facts, RID, CREATED)
        response = checked_response(raw)
        reasoning = response["output"][0]
        assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
        assert reasoning["content"] == [{"type": "reasoning_text", "text": "2+2"}]
        assert ("encrypted_content" in reasoning) is shown
        assert decode_thinking(stored[0]["encrypted_content"]) == BLOCKS
        # stored items as the next request's history: the blocks go back upstream
        body, _ = to_chat(history=stored, input="and 3+3?")
        assert body["messages"][0] == {
            "role": "assistant",
            "content": "4",
            "thinking_blocks": BLOCKS,
        }


@pytest.mark.parametrize(
    "finish, reason", [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete(finish, reason):
    raw, output, _ = chat_to_response(
        completion({"content": "Once upon"}, finish), facts_for(), RID, CREATED
    )
    response = checked_response(raw)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["completed_at"] is None
    assert output[0]["status"] == "incomplete"


def test_a_refusal_is_a_refusal_part():
    raw, _, _ = chat_to_response(
        completion({"content": None, "refusal": "I can't."}), facts_for(), RID, CREATED
    )
    response = checked_response(raw)
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]


def test_an_answer_that_is_not_a_chat_completion_is_an_upstream_protocol_error():
    with pytest.raises(UpstreamProtocolError):
        chat_to_response(b'{"choices": 5}', facts_for(), RID, CREATED)


# ====================================================================== stream -> events


def chunk(delta: dict | None = None, finish: str | None = None, index: int = 0) -> bytes:
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "claude-x",
        "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def calls(*deltas: dict) -> dict:
    return {"tool_calls": list(deltas)}


def call(index: int, arguments: str | None = None, ident: str = "", name: str = "") -> dict:
    """One tool call's delta, as OpenAI streams them: the first with its id and name."""
    function: dict[str, Any] = {"name": name} if name else {}
    if arguments is not None:
        function["arguments"] = arguments
    delta: dict[str, Any] = {"index": index, "function": function}
    if ident:
        delta.update(id=ident, type="function")
    return delta


USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"claude-x",'
    b'"choices":[],"usage":' + json.dumps(CHAT_USAGE).encode() + b"}\n\n"
)
DONE = b"data: [DONE]\n\n"


def text_stream() -> bytes:
    return (
        chunk({"role": "assistant", "content": ""})
        + chunk({"content": "Hello"})
        + chunk({"content": " there!"})
        + chunk({}, "stop")
        + USAGE_CHUNK
        + DONE
    )


def tool_stream() -> bytes:
    """Text, then two parallel calls, their arguments split as OpenAI streams them."""
    return (
        chunk({"role": "assistant", "content": None})
        + chunk({"content": "Checking both."})
        + chunk(calls(call(0, "", "call_a", "get_weather")))
        + chunk(calls(call(0, '{"ci')))
        + chunk(calls(call(0, 'ty": "Paris"}')))
        + chunk(calls(call(1, "", "call_b", "get_weather")))
        + chunk(calls(call(1, '{"city"')))
        + chunk(calls(call(1, ': "Rome"}')))
        + chunk({}, "tool_calls")
        + USAGE_CHUNK
        + DONE
    )


def reasoning_stream() -> bytes:
    return (
        chunk({"role": "assistant", "content": ""})
        + chunk({"reasoning_content": "The user "})
        + chunk({"reasoning_content": "greets."})
        + chunk({"content": "Hi!"})
        + chunk({}, "stop")
        + USAGE_CHUNK
        + DONE
    )


def run(stream: bytes, facts: Facts | None = None, reads: list[bytes] | None = None) -> bytes:
    translator = ResponsesStream(facts or facts_for(stream=True), RID, CREATED)
    out = translator.start()
    for read in reads if reads is not None else [stream]:
        out += translator.feed(read)
    return out + translator.finish()


def events(data: bytes) -> list[dict]:
    """The events of a Responses stream, its framing and sequence numbers checked, and
    each validated strictly with the SDK's types."""
    assert data.endswith(b"\n\n") and b"[DONE]" not in data
    out = []
    for block in data.decode().split("\n\n")[:-1]:
        kind, payload = block.split("\n")
        assert kind.startswith("event: ") and payload.startswith("data: ")
        event = json.loads(payload[6:])
        assert event["type"] == kind[7:]
        assert event["sequence_number"] == len(out)
        if event["type"] != "error":
            assert "error" not in event  # the SDK raises on a top-level error key
        _events_adapter.validate_python(event, strict=True)
        out.append(event)
    return out


def replay(data: bytes, tools: list[dict] | None = None) -> Any:
    """The stream through the SDK: plain iteration, then ``responses.stream()`` and its
    ``get_final_response()`` (function tools strict, so arguments are parsed)."""
    client = sdk_client(data, "text/event-stream")
    assert [e.type for e in client.responses.create(model="m", input="x", stream=True)]
    kwargs: dict[str, Any] = {"model": "m", "input": "x"}
    if tools:
        kwargs["tools"] = tools
    with client.responses.stream(**kwargs) as stream:
        for _ in stream:
            pass
        return stream.get_final_response()


def types(evts: list[dict]) -> list[str]:
    return [e["type"] for e in evts]


def test_a_text_stream():
    out = run(text_stream())
    evts = events(out)
    assert types(evts) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert evts[0]["response"]["status"] == "in_progress" and evts[0]["response"]["output"] == []
    assert evts[6]["text"] == "Hello there!"
    final = evts[-1]["response"]
    assert final["status"] == "completed" and final["usage"] == RESPONSE_USAGE
    assert final["output"][0]["content"][0]["text"] == "Hello there!"
    response = replay(out)
    assert response.output_text == "Hello there!" and response.id == RID
    assert response.usage is not None and response.usage.input_tokens == 60


def test_two_parallel_tool_calls_stream_one_item_after_another():
    facts = facts_for(stream=True, tools=[WEATHER])
    translator = ResponsesStream(facts, RID, CREATED)
    out = translator.start() + translator.feed(tool_stream()) + translator.finish()
    evts = events(out)
    assert types(evts)[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = evts[8]["item"]
    assert added == {
        "id": "fc_test1_1",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_a",
        "name": "get_weather",
    }
    assert [e["output_index"] for e in evts if e["type"] == "response.output_item.added"] == [
        0,
        1,
        2,
    ]
    assert evts[11]["arguments"] == '{"city": "Paris"}'
    response = replay(out, [WEATHER])
    calls = [(o.name, o.call_id, o.parsed_arguments) for o in response.output[1:]]
    assert calls == [
        ("get_weather", "call_a", {"city": "Paris"}),
        ("get_weather", "call_b", {"city": "Rome"}),
    ]
    assert translator.done and translator.output == evts[-1]["response"]["output"]
    assert translator.response == evts[-1]["response"]
    assert translator.usage == Usage(60, 18, 78, 20, 5, 7)


def test_a_reasoning_stream_gives_a_reasoning_item_first():
    out = run(reasoning_stream())
    evts = events(out)
    assert types(evts)[2:9] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    reasoning = evts[8]["item"]
    assert reasoning == {
        "id": "rs_test1_0",
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "The user greets."}],
    }
    response = replay(out)
    assert response.output[0].type == "reasoning" and response.output_text == "Hi!"


def test_streamed_thinking_blocks_are_kept_for_the_next_turn():
    """Thinking blocks in pieces, as LiteLLM streams them: text, then the signature."""
    stream = (
        chunk(
            {
                "reasoning_content": "Let me",
                "thinking_blocks": [{"type": "thinking", "thinking": "Let me"}],
            }
        )
        + chunk(
            {
                "reasoning_content": " see.",
                "thinking_blocks": [{"type": "thinking", "thinking": " see."}],
            }
        )
        + chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig-1"}]})
        + chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": "xyz"}]})
        + chunk({"content": "Done."}, "stop")
        + DONE
    )
    blocks = [*BLOCKS, {"type": "redacted_thinking", "data": "xyz"}]
    for include in ([], ["reasoning.encrypted_content"]):
        translator = ResponsesStream(facts_for(stream=True, include=include), RID, CREATED)
        evts = events(translator.feed(stream) + translator.finish())
        shown = evts[-1]["response"]["output"][0]
        assert ("encrypted_content" in shown) is bool(include)
        assert decode_thinking(translator.output[0]["encrypted_content"]) == blocks


def test_custom_and_namespaced_tool_calls_in_a_stream():
    facts = facts_for(stream=True, tools=[AGENTS, PATCH])
    stream = (
        chunk(calls(call(0, '{"input": "*** Be', "call_p", "apply_patch")))
        + chunk(calls(call(0, 'gin Patch\\n"}')))
        + chunk(calls(call(1, None, "call_s", "spawn_agent")))
        + chunk({}, "tool_calls")
        + DONE
    )
    out = run(stream, facts)
    evts = events(out)
    assert types(evts)[2:-1] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert evts[4]["input"] == "*** Begin Patch\n"
    custom, spawn = evts[-1]["response"]["output"]
    assert custom == {
        "id": "ctc_test1_0",
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": "call_p",
        "name": "apply_patch",
        "input": "*** Begin Patch\n",
    }
    assert spawn["namespace"] == "multi_agent_v1" and spawn["arguments"] == "{}"
    assert replay(out).output[1].namespace == "multi_agent_v1"


@pytest.mark.parametrize(
    "finish, reason", [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_stream_ends_incomplete(finish, reason):
    stream = chunk({"content": "Once upon"}) + chunk({}, finish) + USAGE_CHUNK + DONE
    out = run(stream)
    evts = events(out)
    final = evts[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": reason}
    assert final["response"]["output"][0]["status"] == "incomplete"
    assert final["response"]["usage"] == RESPONSE_USAGE
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        replay(out)


def test_a_stream_cut_short_fails_with_the_output_so_far():
    translator = ResponsesStream(facts_for(stream=True), RID, CREATED)
    out = translator.start() + translator.feed(chunk({"content": "Once"})) + translator.finish()
    evts = events(out)
    assert types(evts)[-5:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "error",
        "response.failed",
    ]
    assert evts[-2]["code"] == "server_error" and evts[-2]["param"] is None
    failed = evts[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "server_error",
        "message": "The upstream's stream ended before the answer was complete.",
    }
    assert failed["output"][0]["status"] == "incomplete"
    assert translator.done and translator.response == failed
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        replay(out)


def test_a_stream_that_finished_but_sent_no_done_is_complete():
    out = run(chunk({"content": "Hi"}) + chunk({}, "stop") + USAGE_CHUNK)
    assert events(out)[-1]["type"] == "response.completed"


def test_an_error_event_fails_the_stream():
    said = {
        "message": "Too many requests",
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
    }
    error = b"data: " + json.dumps({"error": said}).encode() + b"\n\n"
    translator = ResponsesStream(facts_for(stream=True), RID, CREATED)
    out = translator.feed(chunk({"content": "Hel"}) + error + chunk({"content": "lo"}))
    out += translator.finish()
    evts = events(out)
    assert evts[-2] == {
        "type": "error",
        "sequence_number": evts[-2]["sequence_number"],
        "code": "rate_limit_exceeded",
        "message": "Too many requests",
        "param": None,
    }
    assert evts[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert evts[-1]["response"]["output"][0]["content"][0]["text"] == "Hel"
    # the gateway's own last words, with its own code: the Response's code is one the SDK knows
    said = {"message": "idle", "type": "timeout_error", "code": "upstream_timeout"}
    timeout = b"data: " + json.dumps({"error": said}).encode() + b"\n\n"
    evts = events(run(timeout))
    assert evts[-2]["code"] == "upstream_timeout"
    assert evts[-1]["response"]["error"] == {"code": "server_error", "message": "idle"}


def test_fail_ends_the_stream_with_the_output_so_far():
    facts = facts_for(stream=True, tools=[WEATHER])
    translator = ResponsesStream(facts, RID, CREATED)
    out = translator.start() + translator.feed(tool_stream()[:-200])
    out += translator.fail("The upstream fell silent.", "upstream_timeout")
    evts = events(out)
    assert types(evts)[-2:] == ["error", "response.failed"]
    assert evts[-2]["code"] == "upstream_timeout"
    failed = evts[-1]["response"]
    assert failed["error"] == {"code": "server_error", "message": "The upstream fell silent."}
    assert [item["status"] for item in failed["output"]] == ["completed", "completed", "incomplete"]
    assert translator.output == failed["output"]
    assert translator.fail("again") == b"" and translator.finish() == b""
    assert translator.feed(DONE) == b""


def test_start_is_written_once_whoever_asks_first():
    translator = ResponsesStream(facts_for(stream=True), RID, CREATED)
    first = translator.feed(chunk({"content": "a"}))
    assert first.startswith(b"event: response.created\n")
    assert translator.start() == b""
    assert events(first + translator.feed(chunk({}, "stop") + DONE) + translator.finish())


def test_a_fail_before_anything_still_begins_with_response_created():
    evts = events(ResponsesStream(facts_for(stream=True), RID, CREATED).fail("no"))
    assert types(evts) == ["response.created", "response.in_progress", "error", "response.failed"]


def test_a_refusal_streams_as_a_refusal_part():
    out = run(chunk({"refusal": "I can't"}) + chunk({"refusal": " help."}, "stop") + DONE)
    evts = events(out)
    assert "response.refusal.delta" in types(evts) and "response.refusal.done" in types(evts)
    assert evts[-1]["response"]["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help."}
    ]
    replay(out)


def test_an_empty_answer_completes_with_no_output():
    evts = events(run(chunk({"role": "assistant", "content": ""}) + chunk({}, "stop") + DONE))
    assert evts[-1]["type"] == "response.completed" and evts[-1]["response"]["output"] == []


def test_whole_calls_in_one_chunk_and_calls_that_all_say_index_0():
    """Gemini's way (each call whole, several in a chunk), and servers that number every
    call 0 but give each its own id."""
    whole = chunk(
        calls(call(0, "{}", "c0", "get_weather"), call(1, "{}", "c1", "get_weather")), "tool_calls"
    )
    same_index = chunk(calls(call(0, None, "c0", "get_weather"))) + chunk(
        calls(call(0, None, "c1", "get_weather"))
    )
    for stream in (whole, same_index + chunk({}, "tool_calls")):
        out = run(stream + DONE, facts_for(stream=True, tools=[WEATHER]))
        output = events(out)[-1]["response"]["output"]
        assert [(i["call_id"], i["arguments"]) for i in output] == [("c0", "{}"), ("c1", "{}")]
        replay(out, [WEATHER])


def test_text_after_a_call_is_a_new_message_item_and_a_late_piece_of_a_closed_call_is_ignored():
    stream = (
        chunk(calls(call(0, "{", "c0", "f")))
        + chunk({"content": "Meanwhile."})
        + chunk(calls(call(0, "}")))
        + chunk({}, "stop")
        + DONE
    )
    evts = events(run(stream))
    output = evts[-1]["response"]["output"]
    assert [(i["type"], i["id"]) for i in output] == [
        ("function_call", "fc_test1_0"),
        ("message", "msg_test1_1"),
    ]


ALL_STREAMS = {
    "text": text_stream(),
    "tools": tool_stream(),
    "reasoning": reasoning_stream(),
    "cut": chunk({"content": "Once upon a time"}) + chunk({"content": " there"}),
}


@pytest.mark.parametrize("name", ALL_STREAMS)
def test_the_events_are_the_same_however_the_stream_is_read(name):
    stream = ALL_STREAMS[name]
    facts = facts_for(stream=True, tools=[WEATHER])
    whole = run(stream, facts)
    byte_by_byte = run(stream, facts, [stream[i : i + 1] for i in range(len(stream))])
    assert byte_by_byte == whole
    rng = random.Random(name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 6))
        reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert run(stream, facts, reads) == whole
    crlf = stream.replace(b"\n", b"\r\n")
    assert run(crlf, facts) == whole


def test_every_split_of_a_stream_gives_the_same_events_and_they_replay_through_the_sdk():
    facts = facts_for(stream=True, tools=[WEATHER])
    for stream in (text_stream(), tool_stream(), reasoning_stream()):
        whole = run(stream, facts)
        for at in range(len(stream) + 1):  # split at every byte offset
            assert run(stream, facts, [stream[:at], stream[at:]]) == whole
        assert replay(whole, [WEATHER]).status == "completed"


# ======================================================================= usage (passthrough)


def test_usage_of_a_whole_response():
    raw, _, _ = chat_to_response(
        completion({"content": "x"}, usage=CHAT_USAGE), facts_for(), RID, CREATED
    )
    assert usage_of_response(raw) == Usage(60, 18, 78, 20, 5, 7)
    assert usage_of_response(b'{"usage": null}') is None
    assert usage_of_response(b"not json") is None
    assert usage_of_response(json.dumps({"usage": CHAT_USAGE}).encode()) is None  # chat's


def test_usage_of_a_stream_from_its_tail_even_when_the_tail_begins_inside_the_last_event():
    facts = facts_for(stream=True, tools=[WEATHER])
    out = run(tool_stream(), facts)
    expected = Usage(60, 18, 78, 20, 5, 7)
    assert usage_of_response_stream(out) == expected
    last = out.rfind(b"event: response.completed")
    assert usage_of_response_stream(out[last:]) == expected
    for cut in (last + 40, last + 300, len(out) - 400):
        assert usage_of_response_stream(out[cut:]) == expected
    incomplete = run(chunk({"content": "x"}) + chunk({}, "length") + USAGE_CHUNK + DONE)
    assert usage_of_response_stream(incomplete[-3000:]) == expected


def test_usage_of_a_stream_without_any():
    assert usage_of_response_stream(run(chunk({"content": "x"}))) is None  # failed: null
    assert usage_of_response_stream(b"") is None
    assert usage_of_response_stream(b"data: {garbage") is None
    tricky = run(chunk({"content": 'say "response.completed" and "usage": {"input_tokens": 1}'}))
    assert usage_of_response_stream(tricky) is None


def test_usage_of_a_stream_written_with_spaces():
    event = {"type": "response.completed", "response": {"usage": RESPONSE_USAGE}}
    tail = b"event: response.completed\ndata: " + json.dumps(event).encode() + b"\n\n"
    assert usage_of_response_stream(tail) == Usage(60, 18, 78, 20, 5, 7)
    assert usage_of_response_stream(tail[60:]) == Usage(60, 18, 78, 20, 5, 7)


def test_thinking_blocks_round_trip_through_encrypted_content():
    assert decode_thinking(encode_thinking(BLOCKS)) == BLOCKS
    assert encode_thinking(BLOCKS).startswith("gw1:")


def test_claudes_signed_thinking_round_trips_through_a_responses_client():
    """Anthropic's stream -> chat chunks -> Responses events -> the reasoning item the
    client sends back -> the next chat request's thinking_blocks, signature unchanged."""
    chat = MessagesStream(AnthropicFacts(model="c", stream=True, include_usage=True))
    chunks = chat.feed(parallel_stream()) + chat.finish()
    request = json.dumps(
        {"model": "c", "input": "hi", "stream": True, "include": ["reasoning.encrypted_content"]}
    ).encode()
    _, facts = responses_to_chat(request)
    stream = ResponsesStream(facts, RID, CREATED)
    stream.start()
    stream.feed(chunks)
    stream.finish()
    reasoning = [item for item in stream.output if item["type"] == "reasoning"]
    assert reasoning and reasoning[0]["encrypted_content"]
    follow_up = json.dumps(
        {"model": "c", "input": [{"role": "user", "content": "hi"}, *stream.output]}
    ).encode()
    body, _ = responses_to_chat(follow_up)
    [assistant] = [m for m in json.loads(body)["messages"] if m["role"] == "assistant"]
    assert assistant["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"}
    ]
