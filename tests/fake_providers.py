"""Fake upstreams that speak Anthropic's Messages API, Google's Gemini API and Azure
OpenAI: one real aiohttp server on 127.0.0.1, scripted by model name (as tests/upstream.py).

The shapes follow each provider's published API reference; the Anthropic streams named
"fixture" are the official SDK's recorded streams, byte for byte.

Anthropic — ``POST /v1/messages``, ``/v1/messages/count_tokens`` (``x-api-key`` and
``anthropic-version`` are checked: 401 ``authentication_error`` otherwise):

    claude-echo             "echo: <last user text>"; the stream says it in three deltas.
                            Usage with cache reads and writes.
    claude-fixture          the SDK's recorded text stream (basic_response.txt)
    claude-fixture-tools    the SDK's recorded tool-use stream (tool_use_response.txt)
    claude-tools            text, then two parallel tool_use blocks (argument deltas split
                            mid-string and mid-escape)
    claude-json             a json_tool_call tool_use: response_format's stand-in
    claude-thinking         a thinking block, then text
    claude-split            claude-tools' stream written in odd pieces (events straddle reads)
    claude-slow             message_start and a delta, then 1.5 s of silence, then the rest
    claude-status:CODE      CODE with Anthropic's error body (529: overloaded_error)
    claude-fail:CODE:N      CODE for this model's first N requests here, then echo
    claude-context          400 "prompt is too long: ..."
    claude-stream-error     a delta, then ``event: error`` (overloaded_error)
    claude-overloaded-first 200, then at once ``event: error`` (overloaded_error)

Gemini — ``POST /v1beta/models/{model}:{method}`` (``x-goog-api-key`` checked), and
Vertex AI's ``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}``
(a bearer token checked); streams (``:streamGenerateContent?alt=sse``) use CRLF:

    gemini-echo             "echo: <last user text>" (the stream: in two events)
    gemini-tools            two parallel functionCall parts
    gemini-blocked          the prompt blocked (promptFeedback.blockReason SAFETY)
    gemini-unsafe           a candidate that stops for SAFETY
    gemini-status:CODE      CODE with Google's error body
    gemini-context          400 "The input token count (...) exceeds the maximum ..."
    gemini-slow             one event, then 1.5 s of silence, then the last
    (embedContent, batchEmbedContents: a vector per text)

Azure OpenAI — ``POST /openai/deployments/{deployment}/chat/completions?api-version=…``
and the v1 API's ``/openai/v1/chat/completions`` (``api-key`` checked): an OpenAI chat
completion (or stream; its first event has no choices, as Azure's) naming the
deployment; ``azure-status:CODE``; ``azure-tools``: two parallel tool calls, their
arguments split across chunks as OpenAI streams them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.threaded_server import ThreadedServer

ANTHROPIC_KEY = "sk-ant-upstream-secret-42"
GEMINI_KEY = "gemini-upstream-secret-42"
VERTEX_TOKEN = "ya29.vertex-upstream-token"
AZURE_KEY = "azure-upstream-secret-42"
AZURE_API_VERSION = "2024-10-21"

# The official SDK's recorded streams (anthropic-sdk-python tests/lib/streaming/fixtures).
FIXTURE_TEXT_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",'
    b'"type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest",'
    b'"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}\n'
    b"\n"
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":" there"}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}\n'
    b"\n"
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":6}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)

FIXTURE_TOOL_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr",'
    b'"type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],'
    b'"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,'
    b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,'
    b'"service_tier":"standard"}}}\n'
    b"\n"
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I"}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"\'ll check the current weather in Paris for you."}}\n'
    b"\n"
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n'
    b"\n"
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
    b'"id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","caller":{"type":"direct"},'
    b'"input":{}}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":""}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"{\\"locati"}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"on\\": \\"P"}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"ar"}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"is\\"}"}}\n'
    b"\n"
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":1}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
    b'"usage":{"output_tokens":65}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)

ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# Anthropic's usage in the echo answers: input 10, cache read 20, cache write 5, output 7.
ECHO_USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 20,
    "output_tokens": 7,
}
GEMINI_USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 6,
    "totalTokenCount": 22,
    "cachedContentTokenCount": 4,
    "thoughtsTokenCount": 4,
}


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sse(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), compact({"type": kind, **payload}))


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProviders(ThreadedServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)  # model -> when its stream ended

    def clear(self) -> None:
        self.requests.clear()
        self.counts.clear()
        self.finished.clear()

    def last(self) -> Recorded:
        return self.requests[-1]

    def sent_to(self, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                request.rel_url.raw_query_string,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        path = request.path
        if path.startswith("/v1/messages"):
            return await self._anthropic(request, body)
        if path.startswith(("/v1beta/models/", "/v1/projects/")):
            return await self._gemini(request, body)
        if path.startswith("/openai/"):
            return await self._azure(request, body)
        return web.json_response({"error": {"message": f"no route {path}"}}, status=404)

    def _seen(self, model: str) -> int:
        self.counts[model] = seen = self.counts.get(model, 0) + 1
        return seen

    # ------------------------------------------------------------------ Anthropic

    async def _anthropic(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.headers.get("x-api-key") != ANTHROPIC_KEY:
            return _anthropic_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _anthropic_error(400, "anthropic-version: header is required")
        data = json.loads(body)
        model = str(data.get("model", ""))
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": 42})
        kind, _, arg = model.partition(":")
        seen = self._seen(model)
        if kind == "claude-status":
            return _anthropic_error(int(arg), f"upstream says {arg}")
        if kind == "claude-fail":
            code, _, times = arg.partition(":")
            if seen <= int(times):
                return _anthropic_error(int(code), f"upstream says {code}")
        if kind == "claude-context":
            return _anthropic_error(400, "prompt is too long: 210000 tokens > 200000 maximum")
        if data.get("stream"):
            return await self._anthropic_stream(request, kind, data)
        return web.json_response(_message(kind, data), headers={"request-id": "req_anthropic_1"})

    async def _anthropic_stream(
        self, request: web.Request, kind: str, data: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "request-id": "req_anthropic_stream"}
        )
        await response.prepare(request)
        if kind == "claude-fixture":
            events = [FIXTURE_TEXT_STREAM]
        elif kind == "claude-fixture-tools":
            events = [FIXTURE_TOOL_STREAM]
        else:
            events = _anthropic_events(kind, data)
        if kind == "claude-split":
            payload = b"".join(events)
            position, size = 0, 1
            while position < len(payload):
                await response.write(payload[position : position + size])
                position += size
                size = size % 11 + 1
                await asyncio.sleep(0)
        elif kind == "claude-slow":
            for event in events[:4]:
                await response.write(event)
            await asyncio.sleep(1.5)
            for event in events[4:]:
                await response.write(event)
        elif kind == "claude-stream-error":
            # The error comes after the text has gone out (a read of its own): midway.
            for event in events[:-1]:
                await response.write(event)
            await asyncio.sleep(0.2)
            await response.write(events[-1])
        else:
            for event in events:
                await response.write(event)
        self.finished[str(data.get("model"))] = time.monotonic()
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ Gemini

    async def _gemini(self, request: web.Request, body: bytes) -> web.StreamResponse:
        path = request.path
        if path.startswith("/v1/projects/"):
            if request.headers.get("authorization") != f"Bearer {VERTEX_TOKEN}":
                return _google_error(401, "Request had invalid authentication credentials.")
        elif request.headers.get("x-goog-api-key") != GEMINI_KEY:
            return _google_error(400, "API key not valid. Please pass a valid API key.")
        model, _, method = path.rsplit("/", 1)[1].rpartition(":")
        data = json.loads(body)
        kind, _, arg = model.partition(":")
        self._seen(model)
        if method == "embedContent":
            return web.json_response({"embedding": {"values": _vector(_text_of(data))}})
        if method == "batchEmbedContents":
            vectors = [{"values": _vector(_text_of(r))} for r in data["requests"]]
            return web.json_response({"embeddings": vectors})
        if kind == "gemini-status":
            return _google_error(int(arg), f"upstream says {arg}")
        if kind == "gemini-context":
            return _google_error(
                400,
                "The input token count (1200293) exceeds the maximum number of tokens "
                "allowed (1048576).",
            )
        chunks = _gemini_chunks(kind, model, data)
        if method == "generateContent":
            return web.json_response(_gemini_whole(chunks))
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return _google_error(404, f"unknown method {method}")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, chunk in enumerate(chunks):
            if kind == "gemini-slow" and i == len(chunks) - 1:
                await asyncio.sleep(1.5)
            await response.write(b"data: " + compact(chunk) + b"\r\n\r\n")
        self.finished[model] = time.monotonic()
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ Azure

    async def _azure(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.headers.get("api-key") != AZURE_KEY:
            error = {"code": "401", "message": "Access denied due to invalid subscription key."}
            return web.json_response({"error": error}, status=401)
        path = request.path
        data = json.loads(body) if body else {}
        if path.startswith("/openai/deployments/"):
            if request.query.get("api-version") != AZURE_API_VERSION:
                error = {"code": "404", "message": "Resource not found"}
                return web.json_response({"error": error}, status=404)
            deployment, _, operation = path.removeprefix("/openai/deployments/").partition("/")
        elif path.startswith("/openai/v1/"):
            deployment, operation = str(data.get("model")), path.removeprefix("/openai/v1/")
        else:
            return web.json_response({"error": {"message": "no route"}}, status=404)
        if deployment.startswith("azure-status:"):
            code = int(deployment.partition(":")[2])
            error = {"code": str(code), "message": f"upstream says {code}", "type": None}
            return web.json_response({"error": error}, status=code)
        if operation != "chat/completions":
            return web.json_response({"error": {"message": f"no {operation}"}}, status=404)
        if deployment == "azure-tools":
            return await _openai_tool_calls(request, data)
        text = f"azure {deployment}: {_last_user_text(data.get('messages') or [])}"
        if data.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            base = {"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1}
            base["model"] = deployment
            # Azure's first event: the prompt's content filter results, no choices.
            await response.write(
                b"data: " + compact({**base, "choices": [], "prompt_filter_results": []}) + b"\n\n"
            )
            for piece in (text[:5], text[5:]):
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                await response.write(b"data: " + compact({**base, "choices": [choice]}) + b"\n\n")
            choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
            await response.write(b"data: " + compact({**base, "choices": [choice]}) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        message = {"role": "assistant", "content": text}
        return web.json_response(
            {
                "id": "chatcmpl-az",
                "object": "chat.completion",
                "created": 1,
                "model": deployment,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
            },
            headers={"x-request-id": "req_azure_1"},
        )


# ---------------------------------------------------------------------- OpenAI shapes


async def _openai_tool_calls(request: web.Request, data: dict[str, Any]) -> web.StreamResponse:
    """Two parallel tool calls, as OpenAI sends them (arguments split across chunks)."""
    usage = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    if not data.get("stream"):
        calls = [
            {
                "id": "call_w",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_t",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ]
        message = {"role": "assistant", "content": "Checking.", "tool_calls": calls}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        answer = {
            "id": "chatcmpl-tools",
            "object": "chat.completion",
            "created": 1,
            "model": "azure-tools",
        }
        return web.json_response({**answer, "choices": [choice], "usage": usage})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {
        "id": "chatcmpl-tools",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "azure-tools",
    }

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + compact({**base, "choices": choices, **extra}) + b"\n\n"

    def call(index: int, **function: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, "function": function}]}

    first = {
        "index": 0,
        "id": "call_w",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    second = {
        "index": 1,
        "id": "call_t",
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
    }
    for piece in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Checking."}),
        chunk({"tool_calls": [first]}),
        chunk(call(0, arguments='{"city": "Pa')),
        chunk(call(0, arguments='ris"}')),
        chunk({"tool_calls": [second]}),
        chunk(call(1, arguments="{}")),
        chunk({}, "tool_calls"),
    ):
        await response.write(piece)
    options = data.get("stream_options") or {}
    if options.get("include_usage"):
        await response.write(chunk(None, usage=usage))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


# ---------------------------------------------------------------------- Anthropic shapes


def _anthropic_error(status: int, message: str) -> web.Response:
    error = {"type": ANTHROPIC_ERRORS.get(status, "api_error"), "message": message}
    headers = {"request-id": "req_anthropic_error"}
    if status in (429, 529):
        headers["retry-after"] = "0"
    return web.json_response({"type": "error", "error": error}, status=status, headers=headers)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [p.get("text", "") for p in content if isinstance(p, dict)]
                return " ".join(t for t in texts if t)
    return ""


_TOOL_INPUTS = [
    ("toolu_01A", "get_weather", ["", '{"city": "Pa', 'ris", "unit', '": "c\\u00b0"}']),
    ("toolu_01B", "get_time", ['{"zone":', ' "Europe/Paris"}']),
]


def _message(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A whole Anthropic Message for the scripted model."""
    content: list[dict[str, Any]]
    stop = "end_turn"
    if kind == "claude-fixture":
        content = [{"type": "text", "text": "Hello there!"}]
        usage: dict[str, Any] = {"input_tokens": 11, "output_tokens": 6}
    else:
        usage = dict(ECHO_USAGE)
        if kind in ("claude-tools", "claude-split", "claude-fixture-tools"):
            content = [{"type": "text", "text": "Let me check."}]
            for ident, name, pieces in _TOOL_INPUTS:
                tool_input = json.loads("".join(pieces))
                content.append({"type": "tool_use", "id": ident, "name": name, "input": tool_input})
            stop = "tool_use"
        elif kind == "claude-json":
            answer = {"name": "Ada", "born": 1815}
            content = [
                {"type": "tool_use", "id": "toolu_j", "name": "json_tool_call", "input": answer}
            ]
            stop = "tool_use"
        elif kind == "claude-thinking":
            content = [
                {"type": "thinking", "thinking": "Two and two.", "signature": "EqQBsig"},
                {"type": "text", "text": "4"},
            ]
            usage["output_tokens_details"] = {"thinking_tokens": 3}
        else:
            content = [{"type": "text", "text": "echo: " + _last_user_text(data["messages"])}]
    return {
        "id": "msg_fake_1",
        "type": "message",
        "role": "assistant",
        "model": str(data.get("model")),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _anthropic_events(kind: str, data: dict[str, Any]) -> list[bytes]:
    """A scripted model's stream, event by event."""
    model = str(data.get("model"))
    start_usage = {**ECHO_USAGE, "output_tokens": 1}
    message = {
        "id": "msg_fake_stream",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [sse("message_start", {"message": message})]
    if kind == "claude-overloaded-first":
        return [sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})]
    events.append(
        sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    )
    events.append(b'event: ping\ndata: {"type": "ping"}\n\n')
    stop = "end_turn"
    if kind in ("claude-tools", "claude-split"):
        events.append(_text_delta(0, "Let me check."))
        events.append(sse("content_block_stop", {"index": 0}))
        for offset, (ident, name, pieces) in enumerate(_TOOL_INPUTS, 1):
            block = {"type": "tool_use", "id": ident, "name": name, "input": {}}
            events.append(sse("content_block_start", {"index": offset, "content_block": block}))
            for piece in pieces:
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append(sse("content_block_delta", {"index": offset, "delta": delta}))
            events.append(sse("content_block_stop", {"index": offset}))
        stop = "tool_use"
    elif kind == "claude-json":
        events.append(sse("content_block_stop", {"index": 0}))
        block = {"type": "tool_use", "id": "toolu_j", "name": "json_tool_call", "input": {}}
        events.append(sse("content_block_start", {"index": 1, "content_block": block}))
        for piece in ('{"name": "Ada",', ' "born": 1815}'):
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(sse("content_block_delta", {"index": 1, "delta": delta}))
        events.append(sse("content_block_stop", {"index": 1}))
        stop = "tool_use"
    else:
        text = "echo: " + _last_user_text(data["messages"])
        third = max(len(text) // 3, 1)
        for piece in (text[:third], text[third : 2 * third], text[2 * third :]):
            events.append(_text_delta(0, piece))
            if kind == "claude-stream-error":
                error = {"type": "overloaded_error", "message": "Overloaded"}
                return [*events, sse("error", {"error": error})]
        events.append(sse("content_block_stop", {"index": 0}))
    usage = {"output_tokens": 7}
    events.append(
        sse(
            "message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage}
        )
    )
    events.append(sse("message_stop", {}))
    return events


def _text_delta(index: int, text: str) -> bytes:
    return sse(
        "content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}}
    )


# ---------------------------------------------------------------------- Google shapes


def _google_error(status: int, message: str) -> web.Response:
    error = {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}
    return web.json_response({"error": error}, status=status)


def _text_of(request: dict[str, Any]) -> str:
    return " ".join(p.get("text", "") for p in request["content"]["parts"])


def _vector(text: str) -> list[float]:
    return [float(len(text)), 0.5, -0.25]


def _gemini_contents_text(data: dict[str, Any]) -> str:
    for content in reversed(data.get("contents") or []):
        if content.get("role") == "user":
            texts = [p["text"] for p in content.get("parts", []) if "text" in p]
            if texts:
                return " ".join(texts)
    return ""


def _gemini_chunks(kind: str, model: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """A scripted model's answer as the events of its stream (the last has the finish)."""
    meta = {"modelVersion": model, "responseId": "resp-gemini-1"}

    def chunk(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "usageMetadata": GEMINI_USAGE, **meta}

    if kind == "gemini-blocked":
        return [
            {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": GEMINI_USAGE, **meta}
        ]
    if kind == "gemini-unsafe":
        return [chunk([{"text": "I"}]), chunk([], "SAFETY")]
    if kind == "gemini-tools":
        calls = [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {"zone": "Europe/Paris"}}},
        ]
        return [chunk([{"text": "Checking."}]), chunk(calls, "STOP")]
    text = "echo: " + _gemini_contents_text(data)
    half = len(text) // 2
    return [chunk([{"text": text[:half]}]), chunk([{"text": text[half:]}], "STOP")]


def _gemini_whole(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole answer the stream's events make up."""
    whole = dict(chunks[-1])
    if "candidates" in whole:
        parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
        text = "".join(p["text"] for p in parts if "text" in p)
        calls = [p for p in parts if "functionCall" in p]
        merged = ([{"text": text}] if text else []) + calls
        candidate = dict(whole["candidates"][0])
        candidate["content"] = {"parts": merged, "role": "model"}
        whole["candidates"] = [candidate]
    return whole
