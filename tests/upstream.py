"""A scriptable OpenAI-compatible upstream: a real aiohttp server on 127.0.0.1.

It runs on its own event loop in a background thread, so sync and async tests alike
can use it. The requested *model name* picks the behaviour, so a test scripts the
upstream through the gateway without a side channel:

    echo                 chat completion whose content is the last user message
    sse[:N[:DELAY]]      N chunk events DELAY seconds apart, then [DONE] (also any stream)
    sse-split            events written in odd pieces: split mid-line and mid-"\\n\\n"
    sse-endless          an event every 50 ms until the client goes away
    sse-drop             two events, then the connection is cut
    status:CODE          that status with an OpenAI error body (429 adds Retry-After: 7)
    html:CODE            that status with an HTML page, as a proxy in front of an API sends
    fail:CODE:N          CODE for this model's first N requests here, then echo
    retry-after:SECONDS  429 with that Retry-After
    context              400 context_length_exceeded
    hang                 never answers
    slow:SECONDS         answers after SECONDS
    drop                 cuts the connection without answering
    cut-body             sends headers and half the body, then cuts the connection
    sse-empty-drop       200 text/event-stream, then cuts the connection before any event
    sse-stall:N          N events, then silence until the client goes away

Every request is recorded (method, path, query, headers, body); cancellations and
closed connections are recorded as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.threaded_server import ThreadedServer

UPSTREAM_KEY = "sk-upstream-secret-0123456789"

# A response in exactly these bytes: odd spacing, 0.70, an escape, nested nulls, unicode
# and vendor fields that no Struct knows. What reaches the client must be identical.
RAW_COMPLETION = (
    b'{"id": "raw-1", "object":"chat.completion","created":1,"model":"raw",'
    b'"choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"h\\u00e9llo \\"q\\" \xe2\x9c\x93",'
    b'"refusal":null,"x_vendor":{"a":null}},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,'
    b'"prompt_tokens_details":{"cached_tokens":0}},"x_score":0.70,"x_tiny":1e-5}'
)


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
class Upstream(ThreadedServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    max_body = 64 * 1024 * 1024
    shutdown_timeout = 0.5

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def clear(self) -> None:
        self.requests.clear()
        self.events.clear()
        self.counts.clear()

    def wait_for_event(self, name: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.events:
                return True
            time.sleep(0.01)
        return False

    def last(self) -> Recorded:
        return self.requests[-1]

    # ------------------------------------------------------------------ behaviour

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        # Like OpenAI, every answer carries the upstream's own request id and rate limits;
        # and this upstream says it is a gateway too (its x-gateway-* must not reach
        # the client beside the gateway's own).
        if not response.prepared:
            response.headers["X-Request-Id"] = f"req_upstream_{len(self.requests)}"
            response.headers["X-Ratelimit-Limit-Requests"] = "10000"
            response.headers["X-Ratelimit-Remaining-Requests"] = "9999"
            response.headers["X-Gateway-Model"] = "inner-gateway-model"
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                request.rel_url.raw_query_string,
                dict(request.headers),
                body,
            )
        )
        data: dict[str, Any] = {}
        if body and request.content_type == "application/json":
            with contextlib.suppress(ValueError):
                data = json.loads(body)
        model = str(data.get("model", "")) if isinstance(data, dict) else ""
        path = request.path
        if path == "/v1/models" and request.method == "GET":
            return web.json_response(
                {"object": "list", "data": [{"id": "up-1", "object": "model", "owned_by": "up"}]}
            )
        if path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            return web.json_response(
                {
                    "method": request.method,
                    "path": path,
                    "query": request.rel_url.raw_query_string,
                    "content_type": request.headers.get("Content-Type"),
                    "size": len(body),
                    "model": model or None,
                },
                headers={"Set-Cookie": "upstream-session=1", "X-Upstream": "passthrough"},
            )
        kind, _, arg = model.partition(":")
        self.counts[model] = seen = self.counts.get(model, 0) + 1
        if kind == "status":
            return self._error(int(arg))
        if kind == "html":
            page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(status=int(arg), text=page, content_type="text/html")
        if kind == "fail":
            code, _, times = arg.partition(":")
            if seen <= int(times):
                return self._error(int(code))
        if kind == "retry-after":
            error = {"message": "slow down", "type": "rate_limit", "param": None, "code": None}
            return web.json_response({"error": error}, status=429, headers={"Retry-After": arg})
        if kind == "context":
            error = {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            return web.json_response({"error": error}, status=400)
        if kind == "cut-body":
            response = web.StreamResponse(
                headers={"Content-Type": "application/json", "Content-Length": "200"}
            )
            await response.prepare(request)
            await response.write(b'{"id": "half", "choices": [')
            await asyncio.sleep(0.05)
            request.transport.close()  # type: ignore[union-attr]
            return response
        if kind == "hang":
            self.events.append("hang-started")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.events.append("hang-cancelled")
                raise
        if kind == "slow":
            await asyncio.sleep(float(arg))
        if kind == "raw":
            return web.Response(body=RAW_COMPLETION, content_type="application/json")
        if kind == "drop":
            request.transport.close()  # type: ignore[union-attr]
            raise asyncio.CancelledError
        if path == "/v1/embeddings":
            inputs = data.get("input")
            inputs = [inputs] if isinstance(inputs, str) else inputs
            return web.json_response(
                {
                    "object": "list",
                    "model": model,
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.5, -0.25, float(i)]}
                        for i, _ in enumerate(inputs)
                    ],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                }
            )
        if data.get("stream") or kind.startswith("sse"):
            options = data.get("stream_options") or {}
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, kind, arg, path == "/v1/chat/completions", usage)
        return web.json_response(_completion(model, data, path == "/v1/chat/completions"))

    def _error(self, status: int) -> web.Response:
        headers = {"Retry-After": "7"} if status == 429 else {}
        error = {
            "message": f"upstream says {status}",
            "type": "upstream_test",
            "param": None,
            "code": None,
        }
        return web.json_response({"error": error}, status=status, headers=headers)

    async def _stream(
        self, request: web.Request, kind: str, arg: str, chat: bool, usage: bool = False
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Request-Id": "req_upstream_stream"}
        )
        await response.prepare(request)
        # As OpenAI does: with stream_options.include_usage, every chunk has "usage":null
        # and one more chunk, with no choices, states the usage before [DONE].
        _event = _usage_event if usage else _plain_event
        count, _, delay_text = arg.partition(":")
        count_n = int(count) if count else 5
        delay = float(delay_text) if delay_text else 0.0
        try:
            if kind == "sse-empty-drop":
                await asyncio.sleep(0.05)
                request.transport.close()  # type: ignore[union-attr]
                return response
            if kind == "sse-stall":
                for i in range(count_n):
                    await response.write(_event(chat, f"tok{i} "))
                self.events.append("stalled")
                await asyncio.sleep(3600)
            if kind == "sse-endless":
                self.events.append("endless-started")
                i = 0
                while True:
                    await response.write(_event(chat, f"t{i}"))
                    i += 1
                    await asyncio.sleep(0.05)
            if kind == "sse-split":
                payload = (
                    b"".join(_event(chat, f"part{i} ") for i in range(count_n))
                    + b"data: [DONE]\n\n"
                )
                # Odd boundaries: 1, 2, 3… bytes, so events and their blank lines straddle writes.
                position, size = 0, 1
                while position < len(payload):
                    await response.write(payload[position : position + size])
                    position += size
                    size = size % 7 + 1
                    await asyncio.sleep(0)
                await response.write_eof()
                return response
            for i in range(count_n if kind != "sse-drop" else 2):
                if delay and i:
                    await asyncio.sleep(delay)
                await response.write(_event(chat, f"tok{i} "))
            if kind == "sse-drop":
                await asyncio.sleep(0.2)  # the events are out; then the upstream dies
                request.transport.close()  # type: ignore[union-attr]
                return response
            if usage:
                tail = _usage_tail(chat, count_n)
                if kind == "sse-usage-split":  # the usage event straddles two writes
                    await response.write(tail[:17])
                    await asyncio.sleep(0.01)
                    tail = tail[17:]
                await response.write(tail)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.events.append("stream-cancelled")
            raise
        return response


STREAM_USAGE = {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}


def _usage_tail(chat: bool, completion_tokens: int) -> bytes:
    usage = {**STREAM_USAGE, "completion_tokens": completion_tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + completion_tokens
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": usage,
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _usage_event(chat: bool, text: str) -> bytes:
    """A chunk once usage is asked for: the same chunk, ending in ``"usage": null``."""
    plain = _plain_event(chat, text)
    return plain[: plain.rindex(b"}")] + b', "usage": null}\n\n'


def _plain_event(chat: bool, text: str) -> bytes:
    if chat:
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        payload = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [choice],
        }
    else:
        payload = {
            "id": "c1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": None}],
        }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _completion(model: str, data: dict[str, Any], chat: bool) -> dict[str, Any]:
    messages = data.get("messages") or []
    last = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else ""
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": f"echo: {last}", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
        kind = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": f"echo: {data.get('prompt')}",
            "logprobs": None,
            "finish_reason": "stop",
        }
        kind = "text_completion"
    return {
        "id": "cmpl-1",
        "object": kind,
        "created": 1,
        "model": model,
        "choices": [choice],
        "usage": usage,
        "vendor_extra": {"nested": None, "unicode": "héllo ✓", "n": 0.70},
    }
