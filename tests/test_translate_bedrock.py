"""OpenAI chat → Bedrock's Converse API and back, the event-stream framing, and errors:
pure translation, no server."""

from __future__ import annotations

import json
import random
import struct
import zlib

import pytest

from gateway.core.errors import InvalidRequestError, UpstreamProtocolError
from gateway.translate.bedrock.answer import converse_to_chat
from gateway.translate.bedrock.errors import error_to_openai, error_type, stream_failure
from gateway.translate.bedrock.eventstream import EventStreamDecoder, encode_message
from gateway.translate.bedrock.request import JSON_TOOL, Facts, chat_to_converse
from gateway.translate.bedrock.stream import ConverseStream
from tests.fake_bedrock import event, exception
from tests.test_translate_anthropic import PNG, events

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def to_converse(**request) -> tuple[dict, Facts]:
    request.setdefault("model", CLAUDE)
    raw, facts = chat_to_converse(json.dumps(request).encode())
    return json.loads(raw), facts


# ======================================================================== the request


def test_system_turns_images_documents_tools_and_results():
    pdf = "JVBERi0xLjQK"
    body, facts = to_converse(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Cite."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "s3://bucket/cat.jpg"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": f"data:application/pdf;base64,{pdf}",
                            "filename": "Q3 report (final).v2.pdf",
                        },
                    },
                ],
            },
            {"role": "user", "content": "And the weather?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "tooluse_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "18C"},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "The weather.",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        tool_choice="required",
        max_completion_tokens=300,
        temperature=1.7,
        top_p=0.9,
        stop="END",
    )
    assert "modelId" not in body and "model" not in body  # the model is in the URL
    assert body["system"] == [{"text": "Be terse."}, {"text": "Cite."}]
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    first = body["messages"][0]["content"]
    assert first[0] == {"text": "What is here?"}
    assert first[1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert first[2] == {
        "image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/cat.jpg"}}}
    }
    assert first[3] == {
        "document": {"format": "pdf", "name": "Q3 report (final)-v2", "source": {"bytes": pdf}}
    }
    assert first[4] == {"text": "And the weather?"}  # two user messages: one turn
    assert body["messages"][1]["content"] == [
        {"text": "Checking."},
        {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}},
    ]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C"}]}},
        {"text": "Thanks"},
    ]
    [tool] = body["toolConfig"]["tools"]
    assert tool["toolSpec"]["name"] == "weather"
    assert tool["toolSpec"]["description"] == "The weather."
    assert tool["toolSpec"]["inputSchema"]["json"]["properties"] == {"city": {"type": "string"}}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    inference = {"maxTokens": 300, "temperature": 1.0, "topP": 0.9, "stopSequences": ["END"]}
    assert body["inferenceConfig"] == inference  # temperature clamped: Converse takes 0 to 1
    assert facts.model == CLAUDE and not facts.stream
    with pytest.raises(InvalidRequestError, match="'n' must be 1"):
        to_converse(messages=[{"role": "user", "content": "x"}], n=2)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "f"}}, {"tool": {"name": "f"}}),
    ],
)
def test_tool_choices(choice, expected):
    tools = [{"type": "function", "function": {"name": "f"}}]
    body, _ = to_converse(
        messages=[{"role": "user", "content": "x"}], tools=tools, tool_choice=choice
    )
    assert body["toolConfig"]["toolChoice"] == expected
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": {"type": "object", "properties": {}}
    }


def test_tool_choice_none_sends_no_tools_and_nothing_unasked_is_sent():
    tools = [{"type": "function", "function": {"name": "f"}}]
    body, _ = to_converse(
        messages=[{"role": "user", "content": "x"}], tools=tools, tool_choice="none"
    )
    assert body == {"messages": [{"role": "user", "content": [{"text": "x"}]}]}


def test_cache_control_markers_become_cache_points():
    mark = {"cache_control": {"type": "ephemeral"}}
    body, _ = to_converse(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Long.", **mark}]},
            {"role": "user", "content": "hi", **mark},
        ],
        tools=[{"type": "function", "function": {"name": "f"}, **mark}],
    )
    point = {"cachePoint": {"type": "default"}}
    assert body["system"] == [{"text": "Long."}, point]
    assert body["messages"][0]["content"] == [{"text": "hi"}, point]
    assert body["toolConfig"]["tools"][1] == point


def test_reasoning_effort_is_claude_thinking_in_additional_fields():
    body, _ = to_converse(
        messages=[{"role": "user", "content": "x"}], reasoning_effort="medium", temperature=0.5
    )
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 2048}
    }
    assert body["inferenceConfig"] == {"maxTokens": 2048 + 4096}  # no temperature while thinking
    body, _ = to_converse(
        messages=[{"role": "user", "content": "x"}], reasoning_effort="high", max_tokens=3000
    )
    assert body["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 2999
    assert body["inferenceConfig"]["maxTokens"] == 3000
    with pytest.raises(InvalidRequestError):
        to_converse(
            messages=[{"role": "user", "content": "x"}], reasoning_effort="low", max_tokens=500
        )
    # Other models: no thinking field (they have none of Claude's).
    body, _ = to_converse(
        model="amazon.nova-pro-v1:0",
        messages=[{"role": "user", "content": "x"}],
        reasoning_effort="high",
    )
    assert "additionalModelRequestFields" not in body and "inferenceConfig" not in body


def test_thinking_blocks_handed_back_as_reasoning_content():
    body, _ = to_converse(
        messages=[
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "Hmm.", "signature": "sig1"},
                    {"type": "redacted_thinking", "data": "b64data"},
                ],
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
        ]
    )
    assert body["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": "sig1"}}},
        {"reasoningContent": {"redactedContent": "b64data"}},
        {"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}},
    ]


def test_response_format_is_a_forced_tool():
    schema = {"type": "array", "items": {"type": "string"}}
    body, facts = to_converse(
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "names", "schema": schema}},
    )
    spec = body["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == JSON_TOOL
    assert spec["inputSchema"]["json"]["properties"]["values"] == schema
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": JSON_TOOL}}
    assert facts.json_tool and facts.json_wrapped


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ],
)
def test_what_bedrock_cannot_take_is_a_400_naming_it(part):
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[0\]"):
        to_converse(messages=[{"role": "user", "content": [part]}])


# ========================================================================= the answer


def test_answer_text_tools_reasoning_and_usage():
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "s"}}},
                    {"text": "Let me check."},
                    {
                        "toolUse": {
                            "toolUseId": "tu1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 7,
            "totalTokens": 42,
            "cacheReadInputTokens": 20,
            "cacheWriteInputTokens": 5,
        },
        "metrics": {"latencyMs": 100},
    }
    chat = json.loads(converse_to_chat(json.dumps(answer).encode(), Facts(model=CLAUDE)))
    choice = chat["choices"][0]
    assert chat["object"] == "chat.completion" and chat["model"] == CLAUDE
    assert chat["id"].startswith("chatcmpl-")
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Let me check."
    assert message["reasoning_content"] == "Think."
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Think.", "signature": "s"}
    ]
    [call] = message["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("tu1", "function", "weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    usage = chat["usage"]
    assert usage["prompt_tokens"] == 35 and usage["completion_tokens"] == 7
    assert usage["total_tokens"] == 42
    assert usage["prompt_tokens_details"] == {"cached_tokens": 20, "cache_creation_tokens": 5}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ],
)
def test_stop_reasons(stop, finish):
    answer = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop}
    chat = json.loads(converse_to_chat(json.dumps(answer).encode(), Facts(model="m")))
    assert chat["choices"][0]["finish_reason"] == finish


def test_the_json_tool_answer_is_the_content():
    answer = {
        "output": {
            "message": {
                "content": [
                    {"toolUse": {"toolUseId": "j", "name": JSON_TOOL, "input": {"values": [1, 2]}}}
                ]
            }
        },
        "stopReason": "tool_use",
    }
    facts = Facts(model="m", json_tool=True, json_wrapped=True)
    chat = json.loads(converse_to_chat(json.dumps(answer).encode(), facts))
    assert chat["choices"][0]["message"]["content"] == "[1,2]"
    assert chat["choices"][0]["finish_reason"] == "stop"


# =================================================================== the event stream


def test_decoder_reads_messages_split_at_any_offset():
    messages = [
        encode_message({":event-type": f"e{i}", ":message-type": "event"}, b'{"i":%d}' % i)
        for i in range(20)
    ]
    stream = b"".join(messages)
    for seed in range(30):
        chance = random.Random(seed)
        decoder = EventStreamDecoder()
        got = []
        at = 0
        while at < len(stream):
            size = chance.randint(1, 40)
            got += decoder.feed(stream[at : at + size])
            at += size
            assert decoder.pending < max(len(m) for m in messages)  # one incomplete at most
        assert [h[":event-type"] for h, _ in got] == [f"e{i}" for i in range(20)]
        assert [json.loads(p)["i"] for _, p in got] == list(range(20))
        assert decoder.pending == 0
    decoder = EventStreamDecoder()  # byte by byte
    got = [m for byte in stream for m in decoder.feed(bytes([byte]))]
    assert len(got) == 20


def test_decoder_skips_headers_of_every_other_type():
    headers = b""
    for name, kind, value in [
        (b"t", 0, b""),
        (b"f", 1, b""),
        (b"b", 2, b"\x01"),
        (b"s", 3, b"\x00\x02"),
        (b"i", 4, struct.pack(">i", 3)),
        (b"l", 5, struct.pack(">q", 4)),
        (b"bytes", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
        (b"ts", 8, struct.pack(">q", 1700000000000)),
        (b"uuid", 9, bytes(16)),
        (b":event-type", 7, struct.pack(">H", 12) + b"messageStart"),
    ]:
        headers += bytes([len(name)]) + name + bytes([kind]) + value
    payload = b'{"role":"assistant"}'
    total = 16 + len(headers) + len(payload)
    prelude = struct.pack(">II", total, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    message += struct.pack(">I", zlib.crc32(message))
    [(got_headers, got_payload)] = EventStreamDecoder().feed(message)
    assert got_headers == {":event-type": "messageStart"} and got_payload == payload


def test_a_crc_mismatch_is_a_protocol_error():
    message = bytearray(encode_message({":message-type": "event"}, b'{"a":1}'))
    broken = bytes(message[:-1]) + bytes([message[-1] ^ 1])  # the message CRC
    with pytest.raises(UpstreamProtocolError, match="CRC"):
        EventStreamDecoder().feed(broken)
    broken = bytes(message[:8]) + bytes([message[8] ^ 1]) + bytes(message[9:])  # the prelude's
    with pytest.raises(UpstreamProtocolError, match="CRC"):
        EventStreamDecoder().feed(broken[:12])  # known as soon as the prelude is there
    body = bytearray(message)
    body[-6] ^= 0x20  # a payload byte
    with pytest.raises(UpstreamProtocolError):
        EventStreamDecoder().feed(bytes(body))


def test_botocore_reads_what_the_encoder_writes():
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(encode_message({":event-type": "messageStop"}, b'{"stopReason":"end_turn"}'))
    [message] = list(buffer)
    assert message.headers == {":event-type": "messageStop"}
    assert message.payload == b'{"stopReason":"end_turn"}'


# ================================================================ the stream translator


def _stream(include_usage: bool = True, **facts) -> ConverseStream:
    facts.setdefault("model", CLAUDE)
    return ConverseStream(Facts(stream=True, include_usage=include_usage, **facts))


def _translate(frames: list[bytes], translator: ConverseStream, splits: int | None = None) -> bytes:
    data = b"".join(frames)
    out = b""
    if splits is None:
        out += translator.feed(data)
    else:
        chance = random.Random(splits)
        at = 0
        while at < len(data):
            size = chance.randint(1, 11)
            out += translator.feed(data[at : at + size])
            at += size
    return out + translator.finish()


def delta(index: int, **value) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": value})


def tool_start(index: int, ident: str, name: str) -> bytes:
    start = {"toolUse": {"toolUseId": ident, "name": name}}
    return event("contentBlockStart", {"contentBlockIndex": index, "start": start})


def stop(index: int) -> bytes:
    return event("contentBlockStop", {"contentBlockIndex": index})


START = event("messageStart", {"role": "assistant"})
USAGE = {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7, "cacheReadInputTokens": 2}
TOOL_FRAMES = [
    START,
    delta(0, text="Let me "),
    delta(0, text="check."),
    stop(0),
    tool_start(1, "tu1", "weather"),
    delta(1, toolUse={"input": '{"ci'}),
    delta(1, toolUse={"input": 'ty":"P"}'}),
    stop(1),
    tool_start(2, "tu2", "now"),
    stop(2),
    event("messageStop", {"stopReason": "tool_use"}),
    event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 5}}),
]


@pytest.mark.parametrize("splits", [None, 1, 2, 3])
def test_stream_text_tool_calls_finish_and_usage(splits):
    translator = _stream()
    chunks = events(_translate(TOOL_FRAMES, translator, splits))
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check."
    calls: dict[int, dict] = {}
    for delta in deltas:
        for call in delta.get("tool_calls") or ():
            entry = calls.setdefault(call["index"], {"arguments": ""})
            entry.update({k: v for k, v in call.items() if k in ("id",)})
            entry["name"] = call["function"].get("name") or entry.get("name")
            entry["arguments"] += call["function"].get("arguments") or ""
    assert calls[0] == {"id": "tu1", "name": "weather", "arguments": '{"city":"P"}'}
    assert calls[1] == {"id": "tu2", "name": "now", "arguments": "{}"}  # none came: "{}"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["prompt_tokens"] == 5
    assert translator.usage.completion_tokens == 4 and translator.usage.cached_tokens == 2
    assert translator.complete and translator.failure is None


def test_stream_reasoning_then_text_without_usage_asked():
    frames = [
        START,
        delta(0, reasoningContent={"text": "Hm."}),
        delta(0, reasoningContent={"signature": "sg"}),
        stop(0),
        delta(1, text="4"),
        event("messageStop", {"stopReason": "end_turn"}),
        event("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}}),
    ]
    translator = _stream(include_usage=False)
    chunks = events(_translate(frames, translator))
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[1] == {"reasoning_content": "Hm."}
    assert deltas[2] == {
        "thinking_blocks": [{"type": "thinking", "thinking": "Hm.", "signature": "sg"}]
    }
    assert deltas[3] == {"content": "4"}
    assert chunks[-1] == "[DONE]" and all(c["choices"] for c in chunks[:-1])
    assert translator.usage.total_tokens == 3  # known all the same


def test_an_exception_message_midway_is_the_failure():
    frames = [
        START,
        delta(0, text="Hel"),
        exception("throttlingException", "Too many tokens, please wait."),
        delta(0, text="lo"),
    ]
    translator = _stream()
    out = translator.feed(b"".join(frames))
    assert b"Hel" in out and b'"content":"lo"' not in out and b"[DONE]" not in out
    failure = translator.failure
    assert failure is not None and failure.status == 429
    assert json.loads(failure.body())["error"]["type"] == "rate_limit_error"
    assert translator.complete


def test_a_stream_cut_short_is_not_complete():
    translator = _stream()
    out = _translate(TOOL_FRAMES[:4], translator)
    assert b"[DONE]" not in out and not translator.complete


def test_a_stream_without_metadata_ends_at_its_end():
    translator = _stream()
    out = _translate(
        [*TOOL_FRAMES[:4], event("messageStop", {"stopReason": "end_turn"})], translator
    )
    assert out.endswith(b"data: [DONE]\n\n") and translator.complete


def test_stream_json_tool_answer_is_content():
    frames = [
        START,
        tool_start(0, "j", JSON_TOOL),
        delta(0, toolUse={"input": '{"a":'}),
        delta(0, toolUse={"input": "1}"}),
        stop(0),
        event("messageStop", {"stopReason": "tool_use"}),
    ]
    chunks = events(_translate(frames, _stream(json_tool=True)))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


# ============================================================================= errors


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected", "kind_name"),
    [
        (400, "ValidationException", "Malformed input request.", 400, "invalid_request_error"),
        (403, "AccessDeniedException", "No access.", 403, "permission_error"),
        (404, "ResourceNotFoundException", "Not found.", 404, "invalid_request_error"),
        (429, "ThrottlingException", "Too many requests.", 429, "rate_limit_error"),
        (429, "ModelNotReadyException", "Model not ready.", 503, "server_error"),
        (500, "InternalServerException", "Oops.", 500, "server_error"),
        (503, "ServiceUnavailableException", "Unavailable.", 503, "server_error"),
        (408, "ModelTimeoutException", "Timed out.", 504, "server_error"),
    ],
)
def test_errors_by_type(status, kind, message, expected, kind_name):
    header = f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    failure = error_to_openai(status, header, json.dumps({"message": message}).encode())
    body = json.loads(failure.body())["error"]
    assert failure.status == expected
    assert body == {"message": message, "type": kind_name, "param": None, "code": kind}
    assert not failure.too_long


@pytest.mark.parametrize(
    "message",
    [
        "Input is too long for requested model.",
        "The model returned the following errors: prompt is too long: 210000 tokens > 200000",
        "too many input tokens",
    ],
)
def test_too_long_is_context_length_exceeded(message):
    failure = error_to_openai(400, "ValidationException", json.dumps({"message": message}).encode())
    assert failure.too_long
    assert json.loads(failure.body())["error"]["code"] == "context_length_exceeded"


def test_errors_of_other_shapes():
    assert error_type("com.amazon.coral.service#UnrecognizedClientException") == (
        "UnrecognizedClientException"
    )
    failure = error_to_openai(
        403,
        None,
        b'{"__type":"com.amazon.coral.service#ExpiredTokenException","Message":"Expired."}',
    )
    assert failure.status == 403 and json.loads(failure.body())["error"]["message"] == "Expired."
    failure = error_to_openai(502, None, b"<html>bad gateway</html>")
    assert failure.status == 502 and "bad gateway" in json.loads(failure.body())["error"]["message"]
    failure = stream_failure("modelStreamErrorException", b'{"message":"boom"}')
    assert failure.status == 502 and json.loads(failure.body())["error"]["message"] == "boom"
    failure = stream_failure(
        "validationException", b'{"message":"Input is too long for requested model."}'
    )
    assert failure.status == 400 and failure.too_long
