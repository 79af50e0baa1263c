"""OpenAI chat ⇄ Anthropic Messages: the pure translation functions, both directions."""

from __future__ import annotations

import json

import pytest

from gateway.core.errors import InvalidRequestError
from gateway.translate.anthropic.answer import message_to_chat
from gateway.translate.anthropic.errors import (
    anthropic_error,
    error_to_openai,
    openai_error_to_anthropic,
)
from gateway.translate.anthropic.front_answer import chat_to_message
from gateway.translate.anthropic.front_request import messages_to_chat
from gateway.translate.anthropic.front_stream import ChatStream
from gateway.translate.anthropic.request import JSON_TOOL, Facts, chat_to_messages
from gateway.translate.anthropic.stream import MessagesStream
from gateway.translate.anthropic.usage import usage_of_stream
from tests.fake_providers import FIXTURE_TEXT_STREAM, FIXTURE_TOOL_STREAM, sse

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


def to_anthropic(default_max_tokens: int = 4096, **request) -> tuple[dict, Facts]:
    body = {"model": "claude-x", **request}
    raw, facts = chat_to_messages(json.dumps(body).encode(), default_max_tokens)
    return json.loads(raw), facts


def events(data: bytes) -> list[dict]:
    """The JSON payloads of an SSE byte stream (``[DONE]`` as the string)."""
    out = []
    for block in data.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def anthropic_events(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in data.decode().split("\n\n"):
        if block.strip():
            kind, payload = block.split("\n", 1)
            assert kind.startswith("event: ")
            assert payload.startswith("data: ")
            out.append((kind[7:], json.loads(payload[6:])))
    return out


# ================================================================ request: OpenAI -> Anthropic


def test_system_and_developer_messages_become_the_system_blocks_wherever_they_stand():
    body, _ = to_anthropic(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hi"},
            {
                "role": "developer",
                "content": [
                    {"type": "text", "text": "Cite.", "cache_control": {"type": "ephemeral"}}
                ],
            },
        ]
    )
    assert body["system"] == [
        {"type": "text", "text": "Be terse."},
        {"type": "text", "text": "Cite.", "cache_control": {"type": "ephemeral"}},
    ]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_turns_of_one_role_merge_and_tool_results_join_the_next_user_turn():
    body, _ = to_anthropic(
        messages=[
            {"role": "user", "content": "What is the weather and time in Paris?"},
            {"role": "user", "content": "Be quick."},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "time", "arguments": "not json"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9h"}]},
            {"role": "user", "content": "Thanks"},
        ]
    )
    turns = body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["text"] for b in turns[0]["content"]] == [
        "What is the weather and time in Paris?",
        "Be quick.",
    ]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": [{"type": "text", "text": "9h"}],
        },
        {"type": "text", "text": "Thanks"},
    ]


def test_images_by_data_url_and_by_http_url_and_pdfs():
    body, _ = to_anthropic(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBERi0x",
                            "filename": "a.pdf",
                        },
                    },
                ],
            }
        ]
    )
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert blocks[3] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
        "title": "a.pdf",
    }


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ],
)
def test_content_claude_cannot_take_is_a_400_naming_the_part(part):
    with pytest.raises(InvalidRequestError) as caught:
        to_anthropic(messages=[{"role": "user", "content": [part]}])
    assert "messages[0].content[0]" in caught.value.message
    assert caught.value.param == "messages"


def test_message_level_cache_control_marks_the_messages_last_block():
    body, _ = to_anthropic(
        messages=[
            {"role": "user", "content": "long context", "cache_control": {"type": "ephemeral"}}
        ]
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            {"type": "tool", "name": "weather"},
        ),
    ],
)
def test_tools_and_tool_choice(choice, expected):
    body, _ = to_anthropic(
        messages=[{"role": "user", "content": "hi"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather now",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "function", "function": {"name": "noargs"}},
        ],
        tool_choice=choice,
    )
    assert body["tools"] == [
        {
            "name": "weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        },
        {"name": "noargs", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    tools = [{"type": "function", "function": {"name": "weather"}}]
    body, _ = to_anthropic(
        messages=[{"role": "user", "content": "hi"}], tools=tools, parallel_tool_calls=False
    )
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    body, _ = to_anthropic(
        messages=[{"role": "user", "content": "hi"}],
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_sampling_stop_max_tokens_and_user():
    body, facts = to_anthropic(
        default_max_tokens=1000,
        messages=[{"role": "user", "content": "hi"}],
        temperature=1.7,
        top_p=0.9,
        stop="END",
        user="u-1",
        stream=True,
        stream_options={"include_usage": True},
        seed=7,
    )
    assert body["max_tokens"] == 1000  # Anthropic requires it: the provider's default
    assert body["temperature"] == 1.0  # OpenAI's range reaches 2, Anthropic's 1
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["stream"] is True
    assert "seed" not in body and "stream_options" not in body
    assert facts.stream and facts.include_usage
    body, _ = to_anthropic(
        messages=[{"role": "user", "content": "hi"}], max_tokens=50, max_completion_tokens=60
    )
    assert body["max_tokens"] == 60


def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens():
    body, _ = to_anthropic(
        messages=[{"role": "user", "content": "hi"}], reasoning_effort="high", temperature=0.2
    )
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4095}  # max_tokens 4096
    assert "temperature" not in body  # Anthropic refuses it while thinking
    body, _ = to_anthropic(
        messages=[{"role": "user", "content": "hi"}], reasoning_effort="medium", max_tokens=8000
    )
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    with pytest.raises(InvalidRequestError, match="above 1024"):
        to_anthropic(
            messages=[{"role": "user", "content": "hi"}], reasoning_effort="low", max_tokens=500
        )
    body, _ = to_anthropic(messages=[{"role": "user", "content": "hi"}], reasoning_effort="none")
    assert "thinking" not in body


def test_response_format_json_schema_becomes_a_forced_tool():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    body, facts = to_anthropic(
        messages=[{"role": "user", "content": "Who?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
    )
    assert body["tools"][-1]["name"] == JSON_TOOL
    assert body["tools"][-1]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    assert facts.json_tool and not facts.json_wrapped


def test_a_json_schema_that_is_not_an_object_is_wrapped_and_unwrapped():
    schema = {"type": "array", "items": {"type": "integer"}}
    _, facts = to_anthropic(
        messages=[{"role": "user", "content": "Primes?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert facts.json_wrapped
    message = {
        "id": "msg_1",
        "model": "claude-x",
        "content": [
            {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"values": [2, 3]}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    answer, _ = message_to_chat(json.dumps(message).encode(), facts)
    choice = json.loads(answer)["choices"][0]
    assert choice["message"]["content"] == "[2,3]"
    assert choice["finish_reason"] == "stop"


def test_n_above_one_is_refused():
    with pytest.raises(InvalidRequestError) as caught:
        to_anthropic(messages=[{"role": "user", "content": "hi"}], n=2)
    assert caught.value.param == "n"


def test_a_malformed_request_is_a_400_naming_the_field():
    with pytest.raises(InvalidRequestError) as caught:
        chat_to_messages(b'{"model": "m", "messages": [{"content": "no role"}]}', 100)
    assert caught.value.param == "messages"


# ================================================================ answer: Anthropic -> OpenAI


def test_a_message_with_text_parallel_tool_calls_and_cache_usage():
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 20,
            "output_tokens": 7,
        },
    }
    raw, usage = message_to_chat(json.dumps(message).encode(), Facts(model="x"))
    answer = json.loads(raw)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "claude-sonnet-4-5"
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    calls = choice["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [
        ("toolu_1", "weather"),
        ("toolu_2", "time"),
    ]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert answer["usage"] == {
        "prompt_tokens": 35,  # input + cache reads + cache writes
        "completion_tokens": 7,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 20, "cache_creation_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (35, 20, 5)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons_become_finish_reasons(stop_reason, finish):
    message = {
        "id": "m",
        "model": "c",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
    }
    raw, _ = message_to_chat(json.dumps(message).encode(), Facts(model="c"))
    assert json.loads(raw)["choices"][0]["finish_reason"] == finish


def test_the_recorded_text_stream_fed_byte_by_byte_gives_what_it_gives_whole():
    whole = MessagesStream(Facts(model="m", stream=True, include_usage=True))
    at_once = whole.feed(FIXTURE_TEXT_STREAM)
    piecewise = MessagesStream(Facts(model="m", stream=True, include_usage=True))
    pieces = b"".join(
        piecewise.feed(FIXTURE_TEXT_STREAM[i : i + 1]) for i in range(len(FIXTURE_TEXT_STREAM))
    )

    def without_created(data: bytes) -> list:
        return [
            {k: v for k, v in e.items() if k != "created"} if isinstance(e, dict) else e
            for e in events(data)
        ]

    assert without_created(pieces) == without_created(at_once)
    chunks = events(at_once)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
    assert chunks[0]["model"] == "claude-3-opus-latest"
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2] if c["choices"]
    )
    assert text == "Hello there!"
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["prompt_tokens"] == 11
    assert chunks[-2]["usage"]["completion_tokens"] == 6
    assert chunks[-1] == "[DONE]"
    assert whole.complete and whole.usage.total_tokens == 17


def test_the_recorded_tool_stream_gives_one_tool_call_at_openai_index_0():
    stream = MessagesStream(Facts(model="m", stream=True))
    chunks = events(stream.feed(FIXTURE_TOOL_STREAM))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c != "[DONE]" and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,  # Anthropic's block index is 1 (the text block is 0)
        "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(c) == {"index", "function"} for c in calls[1:])  # no type re-declared
    assert "".join(c["function"]["arguments"] for c in calls) == '{"location": "Paris"}'
    assert len(calls) == 5  # the empty first partial_json is not sent
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(c != "[DONE]" and c["choices"] == [] for c in chunks)  # usage not asked


def parallel_stream() -> bytes:
    def block_start(index, block):
        return sse("content_block_start", {"index": index, "content_block": block})

    def json_delta(index, text):
        return sse(
            "content_block_delta",
            {"index": index, "delta": {"type": "input_json_delta", "partial_json": text}},
        )

    message = {
        "id": "msg_p",
        "model": "c",
        "content": [],
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    return b"".join(
        [
            sse("message_start", {"message": message}),
            block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            sse(
                "content_block_delta",
                {"index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
            ),
            sse(
                "content_block_delta",
                {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
            ),
            sse("content_block_stop", {"index": 0}),
            block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "a", "input": {}}),
            json_delta(1, '{"x": "1\\'),
            json_delta(1, 'n2"}'),
            sse("content_block_stop", {"index": 1}),
            block_start(2, {"type": "tool_use", "id": "toolu_b", "name": "b", "input": {}}),
            sse("content_block_stop", {"index": 2}),
            sse(
                "message_delta",
                {
                    "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                    "usage": {
                        "input_tokens": 40,
                        "cache_creation_input_tokens": 12,
                        "cache_read_input_tokens": 7,
                        "output_tokens": 8,
                        "output_tokens_details": {"thinking_tokens": 3},
                    },
                },
            ),
            sse("message_stop", {}),
        ]
    )


def test_parallel_tool_calls_get_their_own_indices_and_a_call_without_arguments_gets_braces():
    stream = MessagesStream(Facts(model="m", stream=True, include_usage=True))
    data = parallel_stream()
    out = b"".join(stream.feed(data[i : i + 5]) for i in range(0, len(data), 5))  # split reads
    chunks = [c for c in events(out) if c != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": "Hmm."} in deltas
    # The signed block whole, once its signature came: a client hands it back to Claude.
    signed = {"type": "thinking", "thinking": "Hmm.", "signature": "sig"}
    assert {"thinking_blocks": [signed]} in deltas
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    by_index: dict[int, str] = {}
    for call in calls:
        by_index[call["index"]] = by_index.get(call["index"], "") + call["function"]["arguments"]
    assert json.loads(by_index[0]) == {"x": "1\n2"}  # an escape split across two deltas
    assert by_index[1] == "{}"
    assert [c["id"] for c in calls if "id" in c] == ["toolu_a", "toolu_b"]
    usage = chunks[-1]["usage"]
    # message_delta's newer, fuller usage counts: 40 + 12 + 7 in, 8 out, 3 of it thinking
    assert usage["prompt_tokens"] == 59 and usage["completion_tokens"] == 8
    assert usage["prompt_tokens_details"] == {"cached_tokens": 7, "cache_creation_tokens": 12}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 3}


def test_a_json_tool_stream_becomes_content():
    facts = Facts(model="m", stream=True, json_tool=True)
    message = {
        "id": "msg_j",
        "model": "c",
        "content": [],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    data = b"".join(
        [
            sse("message_start", {"message": message}),
            sse(
                "content_block_start",
                {
                    "index": 0,
                    "content_block": {
                        "type": "tool_use",
                        "id": "t",
                        "name": JSON_TOOL,
                        "input": {},
                    },
                },
            ),
            sse(
                "content_block_delta",
                {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
            ),
            sse(
                "content_block_delta",
                {"index": 0, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
            ),
            sse("content_block_stop", {"index": 0}),
            sse(
                "message_delta",
                {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
            ),
            sse("message_stop", {}),
        ]
    )
    chunks = [c for c in events(MessagesStream(facts).feed(data)) if c != "[DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == '{"a": 1}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_an_error_event_fails_the_stream_an_overload_as_a_503():
    stream = MessagesStream(Facts(model="m", stream=True))
    message = {
        "id": "msg_e",
        "model": "c",
        "content": [],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    out = stream.feed(
        sse("message_start", {"message": message})
        + sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    assert events(out)[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stream.failure is not None and stream.failure.status == 503
    assert json.loads(stream.failure.body())["error"]["code"] == "overloaded_error"
    assert stream.complete


def test_a_stream_cut_before_message_stop_is_not_complete():
    stream = MessagesStream(Facts(model="m", stream=True))
    stream.feed(FIXTURE_TEXT_STREAM[: len(FIXTURE_TEXT_STREAM) // 2])
    stream.finish()
    assert not stream.complete


def test_usage_of_a_passed_through_stream_from_its_first_and_last_bytes():
    usage = usage_of_stream(FIXTURE_TOOL_STREAM[:700], FIXTURE_TOOL_STREAM[-400:])
    assert (usage.prompt_tokens, usage.completion_tokens) == (377, 65)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "kind", "expected_status", "openai_type"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error"),
        (401, "authentication_error", 401, "authentication_error"),
        (403, "permission_error", 403, "permission_error"),
        (404, "not_found_error", 404, "invalid_request_error"),
        (413, "request_too_large", 413, "invalid_request_error"),
        (429, "rate_limit_error", 429, "rate_limit_error"),
        (500, "api_error", 500, "server_error"),
        (529, "overloaded_error", 503, "server_error"),
    ],
)
def test_anthropic_errors_in_openai_shape(status, kind, expected_status, openai_type):
    body = json.dumps({"type": "error", "error": {"type": kind, "message": "said"}}).encode()
    failure = error_to_openai(status, body)
    assert failure.status == expected_status
    assert json.loads(failure.body()) == {
        "error": {"message": "said", "type": openai_type, "param": None, "code": kind}
    }
    assert failure.upstream_status == status and failure.upstream_body == body
    assert not failure.too_long


def test_a_prompt_too_long_sets_too_long_for_context_fallbacks():
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error",'
        b'"message":"prompt is too long: 207791 tokens > 200000 maximum"}}'
    )
    failure = error_to_openai(400, body)
    assert failure.too_long
    assert json.loads(failure.body())["error"]["code"] == "context_length_exceeded"


def test_an_error_page_that_is_not_anthropics_is_wrapped():
    failure = error_to_openai(502, b"<html>Bad Gateway</html>")
    error = json.loads(failure.body())["error"]
    assert failure.status == 502 and "Bad Gateway" in error["message"]


# ================================================================ the front door: Anthropic in


def test_a_messages_request_as_a_chat_request():
    request = {
        "model": "gpt-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "18C"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "tools": [
            {"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }
    chat = json.loads(messages_to_chat(json.dumps(request).encode()))
    assert chat["messages"] == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    # the client's own bytes
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
            "reasoning_content": "...",
            "thinking_blocks": [{"type": "thinking", "thinking": "...", "signature": "s"}],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["max_completion_tokens"] == 100 and chat["stop"] == ["END"]
    assert chat["reasoning_effort"] == "medium" and chat["user"] == "u-1"
    assert chat["stream_options"] == {"include_usage": True}


def test_a_chat_completion_as_a_message():
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 5,
            "total_tokens": 35,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }
    message = json.loads(chat_to_message(json.dumps(completion).encode(), "asked"))
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 20,
        "output_tokens": 5,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 0,
    }


def openai_chunk(
    delta: dict | None = None, finish: str | None = None, usage: dict | None = None
) -> bytes:
    chunk = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
    chunk["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_an_openai_stream_as_anthropic_events_with_blocks_in_order():
    data = b"".join(
        [
            openai_chunk({"role": "assistant", "content": ""}),
            openai_chunk({"content": "Let me"}),
            openai_chunk({"content": " check."}),
            openai_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "a", "arguments": ""},
                        }
                    ]
                }
            ),
            openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
            openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
            openai_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "b", "arguments": "{}"},
                        }
                    ]
                }
            ),
            openai_chunk({}, "tool_calls"),
            openai_chunk(
                None, usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
            ),
            b"data: [DONE]\n\n",
        ]
    )
    stream = ChatStream("asked")
    out = b"".join(stream.feed(data[i : i + 9]) for i in range(0, len(data), 9)) + stream.finish()
    got = anthropic_events(out)
    assert [kind for kind, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(payload["type"] == kind for kind, payload in got)  # the TS SDK reads type
    assert got[0][1]["message"]["model"] == "gpt-x"
    assert got[5][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "call_a", "name": "a", "input": {}},
    }
    arguments = "".join(
        p["delta"]["partial_json"]
        for k, p in got
        if p.get("index") == 1 and k == "content_block_delta"
    )
    assert json.loads(arguments) == {"x": 1}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert got[-2][1]["usage"]["input_tokens"] == 9 and got[-2][1]["usage"]["output_tokens"] == 4


def test_an_openai_error_event_becomes_an_anthropic_error_event():
    stream = ChatStream("m")
    out = stream.feed(
        openai_chunk({"content": "Hi"})
        + b'data: {"error":{"message":"gone","type":"timeout_error","code":"upstream_timeout"}}\n\n'
    )
    got = anthropic_events(out)
    assert got[-1] == (
        "error",
        {"type": "error", "error": {"type": "timeout_error", "message": "gone"}},
    )
    assert "message_stop" not in [k for k, _ in got]


def test_errors_in_anthropic_shape():
    assert json.loads(anthropic_error(404, "no such model")) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    body = b'{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}'
    assert json.loads(openai_error_to_anthropic(429, body))["error"] == {
        "type": "rate_limit_error",
        "message": "slow down",
    }
    assert json.loads(openai_error_to_anthropic(503, b"<html>"))["error"]["type"] == "api_error"


def test_tool_arguments_nested_too_deeply_are_read_as_unreadable():
    deep = "[" * 100_000 + "]" * 100_000  # past msgspec's recursion limit
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": deep}}
    body, _ = to_anthropic(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": "done"},
        ]
    )
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {}}
    ]
