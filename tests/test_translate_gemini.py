"""OpenAI chat and embeddings → Gemini's generateContent and embedContent, and back."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from gateway.core.errors import InvalidRequestError
from gateway.translate.gemini.answer import response_to_chat
from gateway.translate.gemini.embeddings import embeddings_to_gemini, embeddings_to_openai
from gateway.translate.gemini.errors import error_to_openai
from gateway.translate.gemini.request import Facts, chat_to_gemini
from gateway.translate.gemini.stream import GeminiStream
from tests.test_translate_anthropic import PNG, events


def to_gemini(**request) -> tuple[dict, Facts]:
    raw, facts = chat_to_gemini(json.dumps({"model": "gemini-x", **request}).encode())
    return json.loads(raw), facts


def test_system_instruction_roles_parts_and_function_results_by_name():
    body, _ = to_gemini(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "Cite."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/a/cat.jpg?x=1"},
                    },
                    {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "9h"},
        ]
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}, {"text": "Cite."}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is here?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {
                    "fileData": {
                        "fileUri": "https://example.com/a/cat.jpg?x=1",
                        "mimeType": "image/jpeg",
                    }
                },
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time", "args": {}}},
            ],
        },
        {
            "role": "user",  # both results in one turn, each named after its call
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"temp": 18}}},
                {"functionResponse": {"name": "time", "response": {"content": "9h"}}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["weather"]},
        ),
    ],
)
def test_tools_and_tool_choice(choice, config):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body, _ = to_gemini(
        messages=[{"role": "user", "content": "hi"}],
        tools=[
            {
                "type": "function",
                "function": {"name": "weather", "description": "Now", "parameters": schema},
            }
        ],
        tool_choice=choice,
    )
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "weather", "description": "Now", "parametersJsonSchema": schema}
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body, facts = to_gemini(
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.3,
        top_p=0.9,
        max_completion_tokens=100,
        stop=["END"],
        n=2,
        seed=7,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "candidateCount": 2,
        "seed": 7,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    assert facts.stream and facts.include_usage


def test_what_gemini_cannot_take_is_a_400():
    with pytest.raises(InvalidRequestError, match="must be an http"):
        to_gemini(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
                }
            ]
        )
    with pytest.raises(InvalidRequestError):
        to_gemini(messages=[{"role": "user", "content": "x"}], reasoning_effort="extreme")


def test_an_answer_with_text_thoughts_function_calls_and_usage():
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Thinking...", "thought": True},
                        {"text": "Checking."},
                        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"name": "time", "args": {}}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 44,
            "totalTokenCount": 235,
            "thoughtsTokenCount": 186,
            "cachedContentTokenCount": 2,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "AdVRaMmD",
    }
    chat = json.loads(response_to_chat(json.dumps(answer).encode(), Facts(model="g")))
    assert chat["id"] == "AdVRaMmD" and chat["model"] == "gemini-2.5-flash"
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # Gemini says STOP
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["reasoning_content"] == "Thinking..."
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert chat["usage"]["prompt_tokens"] == 5
    assert chat["usage"]["completion_tokens"] == 230  # candidates + thoughts
    assert chat["usage"]["total_tokens"] == 235
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert chat["usage"]["completion_tokens_details"] == {"reasoning_tokens": 186}


@pytest.mark.parametrize(
    ("answer", "finish"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}}, "content_filter"),
        ({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]}, "content_filter"),
        (
            {"candidates": [{"content": {"parts": []}, "finishReason": "RECITATION"}]},
            "content_filter",
        ),
        ({"candidates": [{"content": {"parts": []}, "finishReason": "MAX_TOKENS"}]}, "length"),
        (
            {"candidates": [{"content": {"parts": []}, "finishReason": "MALFORMED_FUNCTION_CALL"}]},
            "stop",
        ),
    ],
)
def test_safety_blocks_and_finish_reasons(answer, finish):
    chat = json.loads(response_to_chat(json.dumps(answer).encode(), Facts(model="g")))
    assert chat["choices"][0]["finish_reason"] == finish


def stream_event(parts: list[dict], finish: str | None = None, tokens: int = 1) -> bytes:
    candidate: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    usage = {"promptTokenCount": 5, "candidatesTokenCount": tokens, "totalTokenCount": 5 + tokens}
    payload = {"candidates": [candidate], "usageMetadata": usage, "responseId": "r1"}
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"  # Gemini frames with CRLF


def test_a_crlf_stream_split_across_reads_with_function_calls_and_usage():
    data = (
        stream_event([{"text": "Here"}])
        + stream_event([{"text": " you go"}], tokens=3)
        + stream_event(
            [
                {"functionCall": {"name": "a", "args": {"x": 1}}},
                {"functionCall": {"name": "b", "args": {}}},
            ],
            "STOP",
            tokens=9,
        )
    )
    stream = GeminiStream(Facts(model="g", stream=True, include_usage=True))
    out = b"".join(stream.feed(data[i : i + 7]) for i in range(0, len(data), 7))
    assert b"[DONE]" not in out  # Gemini sends no end marker: it comes with the end
    out += stream.finish()
    chunks = events(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:3])
    assert text == "Here you go"
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[3:5]]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "a"), (1, "b")]
    assert json.loads(calls[0]["function"]["arguments"]) == {"x": 1}
    assert chunks[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[6]["choices"] == [] and chunks[6]["usage"]["completion_tokens"] == 9
    assert chunks[7] == "[DONE]"
    assert stream.complete


def test_a_stream_without_a_finish_reason_was_cut():
    stream = GeminiStream(Facts(model="g", stream=True))
    stream.feed(stream_event([{"text": "Here"}]))
    assert stream.finish() == b""
    assert not stream.complete


def test_an_error_inside_a_stream_fails_it():
    stream = GeminiStream(Facts(model="g", stream=True))
    stream.feed(
        b'data: {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}\r\n\r\n'
    )
    assert stream.failure is not None and stream.failure.status == 503


@pytest.mark.parametrize(
    ("status", "google_status", "openai_type"),
    [
        (400, "INVALID_ARGUMENT", "invalid_request_error"),
        (401, "UNAUTHENTICATED", "authentication_error"),
        (403, "PERMISSION_DENIED", "permission_error"),
        (404, "NOT_FOUND", "invalid_request_error"),
        (429, "RESOURCE_EXHAUSTED", "rate_limit_error"),
        (500, "INTERNAL", "server_error"),
        (503, "UNAVAILABLE", "server_error"),
    ],
)
def test_google_errors_in_openai_shape(status, google_status, openai_type):
    body = {"error": {"code": status, "message": "said", "status": google_status}}
    failure = error_to_openai(status, json.dumps(body).encode())
    assert failure.status == status
    assert json.loads(failure.body()) == {
        "error": {"message": "said", "type": openai_type, "param": None, "code": google_status}
    }


def test_a_context_error_and_the_list_form():
    message = (
        "The input token count (3475108) exceeds the maximum number of tokens allowed (1048576)."
    )
    body = [{"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}]
    failure = error_to_openai(400, json.dumps(body).encode())
    assert failure.too_long
    assert json.loads(failure.body())["error"]["code"] == "context_length_exceeded"


def test_embeddings_one_and_many_and_base64():
    one, facts = embeddings_to_gemini(
        b'{"model": "text-embedding-004", "input": "hi", "dimensions": 3}'
    )
    assert json.loads(one) == {"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 3}
    assert not facts.batch
    many, facts = embeddings_to_gemini(
        b'{"model": "text-embedding-004", "input": ["a", "b"], "encoding_format": "base64"}'
    )
    assert json.loads(many) == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
        ]
    }
    assert facts.batch and facts.base64
    answer = {"embeddings": [{"values": [0.5, -0.25]}, {"values": [1.0, 2.0]}]}
    out = json.loads(embeddings_to_openai(json.dumps(answer).encode(), facts))
    assert out["object"] == "list" and out["model"] == "text-embedding-004"
    vectors = [struct.unpack("<2f", base64.b64decode(d["embedding"])) for d in out["data"]]
    assert vectors == [(0.5, -0.25), (1.0, 2.0)]
    with pytest.raises(InvalidRequestError):
        embeddings_to_gemini(b'{"model": "m", "input": [[1, 2, 3]]}')  # tokens: text only


def test_tool_arguments_and_results_nested_too_deeply_are_read_as_unreadable():
    deep = "[" * 100_000 + "]" * 100_000  # past msgspec's recursion limit
    body, _ = to_gemini(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": deep}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": deep},
        ]
    )
    call, result = body["contents"][1]["parts"][0], body["contents"][2]["parts"][0]
    assert call == {"functionCall": {"name": "f", "args": {}}}
    assert result == {"functionResponse": {"name": "f", "response": {"content": deep}}}
