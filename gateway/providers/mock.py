"""A built-in, in-process mock of an OpenAI-compatible API.

It answers deterministically — the same request always gets the same answer — so that
``make run`` works with nothing configured and examples give reproducible output.

It can be told to call a tool, so that agents (Codex, Claude Code) can be tried with no
upstream: a chat request with tools whose last user message says ``call NAME {json}``
(NAME one of its tools) is answered with that tool call; once the last message is the
tool's result, the answer is ``The tool said: <the result>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import struct
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from ..wire.headers import HeaderList
from .base import Provider, UpstreamRequest, provider_type

if TYPE_CHECKING:
    from ..core.context import RequestContext

MOCK_MODELS = ("mock-gpt", "mock-embedding")
_CREATED = 1_700_000_000
MAX_EMBEDDING_VALUES = 65536  # about 30 ms of hashing: the mock never stalls its worker
_encode = msgspec.json.Encoder().encode
_JSON = (("content-type", "application/json"),)
_SSE = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))


class MockResponse:
    """A prepared answer, whole or as a list of chunks."""

    __slots__ = ("_body", "_chunks", "_delay", "_position", "headers", "status", "streamed")
    request_id = None

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes = b"",
        chunks: list[bytes] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.status = status
        self.headers: HeaderList = list(headers)  # this response's own
        self._body = body
        self._chunks = chunks
        self._delay = delay
        self._position = 0
        self.streamed = chunks is not None

    @property
    def content_type(self) -> str:
        return self.headers[0][1]

    async def read(self) -> bytes:
        return self._body if self._chunks is None else b"".join(self._chunks)

    async def first_chunk(self) -> bytes:
        return (self._chunks or [self._body])[0]  # prepared: nothing to wait for

    async def next_chunk(self) -> bytes:
        chunks = self._chunks if self._chunks is not None else [self._body]
        position = self._position
        if position >= len(chunks):
            return b""
        if self._delay and position:
            await asyncio.sleep(self._delay)
        self._position = position + 1
        return chunks[position]

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self._chunks if self._chunks is not None else [self._body]):
            if self._delay and i:
                await asyncio.sleep(self._delay)
            yield chunk

    def close(self) -> None:
        pass


def _error(status: int, message: str, param: str | None = None) -> MockResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return MockResponse(status, _JSON, _encode({"error": error}))


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = (p.get("text") for p in content if isinstance(p, dict))
                return " ".join(text for text in texts if isinstance(text, str))
    return ""


_CALL = re.compile(r"\bcall ([\w.-]+) (\{.*\})", re.S)


def _last_turn(messages: list[Any]) -> dict[str, Any] | None:
    """The last message that is not a system one (Claude Code sends system messages
    inside the conversation: they say how to answer, not what)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") not in ("system", "developer"):
            return message
    return None


def _tool_call(messages: list[Any], tools: Any, prompt: str) -> tuple[str, str] | None:
    """The tool call a prompt asks for (``call NAME {json}``), when NAME is a tool offered."""
    last = _last_turn(messages)
    if not isinstance(tools, list) or last is None or last.get("role") != "user":
        return None
    found = _CALL.search(prompt)
    if found is None:
        return None
    names = {
        t["function"].get("name")
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    name, arguments = found.group(1), found.group(2)
    try:
        json.loads(arguments)
    except ValueError:
        return None
    return (name, arguments) if name in names else None


def _tool_result(messages: list[Any]) -> str | None:
    """The result the last message hands back, if it is a tool's."""
    last = _last_turn(messages)
    if last is None or last.get("role") != "tool":
        return None
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    text = " ".join(str(content or "").split())
    return text if len(text) <= 200 else text[:197] + "..."


def _reply_words(prompt: str) -> list[str]:
    prompt = " ".join(prompt.split())
    quoted = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    return f"This is a mock response to: {quoted}".split(" ")


def _embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from the text's hash: equal texts, equal vectors."""
    values: list[float] = []
    seed = text.encode()
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        values.extend(v / 2**31 for v in struct.unpack(">8i", digest))
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _call_id(ident: str) -> str:
    return "call_" + ident.removeprefix("mock-")[:24]


class MockSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "mock"``."""

    chunk_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # seconds between stream events


@provider_type("mock")
class MockProvider(Provider):
    """Answers chat, completions (plain and streamed), embeddings and the model list."""

    Settings = MockSettings

    @classmethod
    def from_settings(
        cls, name: str, settings: MockSettings, environ: Mapping[str, str]
    ) -> MockProvider:
        return cls(name, chunk_delay=settings.chunk_delay)

    def __init__(self, name: str = "mock", *, chunk_delay: float = 0.0) -> None:
        self.name = name
        self.chunk_delay = chunk_delay

    def describe(self) -> str:
        if type(self) is not MockProvider:
            return super().describe()
        return f"{self.name} (built-in mock, deterministic answers)"

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> MockResponse:
        path = request.path
        if request.method == "GET" and path == "/models":
            data = [
                {"id": m, "object": "model", "created": _CREATED, "owned_by": "mock"}
                for m in MOCK_MODELS
            ]
            return MockResponse(200, _JSON, _encode({"object": "list", "data": data}))
        if request.method != "POST" or path not in (
            "/chat/completions",
            "/completions",
            "/embeddings",
        ):
            return _error(404, f"The mock provider does not serve {request.method} /v1{path}.")
        try:
            body = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        model = str(body.get("model", "mock-gpt"))
        if path == "/embeddings":
            return self._embeddings(model, body)
        if path == "/chat/completions":
            messages = body.get("messages") or []
            if not isinstance(messages, list):
                return _error(400, "'messages' must be an array.", "messages")
            prompt = _last_user_text(messages)
            result = _tool_result(messages)
            call = _tool_call(messages, body.get("tools"), prompt)
        else:
            prompt, result, call = str(body.get("prompt", "")), None, None
        words = _reply_words(prompt) if result is None else f"The tool said: {result}".split(" ")
        ident = "mock-" + hashlib.sha256(request.body).hexdigest()[:24]
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(words),
            "total_tokens": len(prompt.split()) + len(words),
        }
        chat = path == "/chat/completions"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            if not isinstance(options, dict):
                return _error(400, "'stream_options' must be an object.", "stream_options")
            include_usage = options.get("include_usage") is True
            return self._stream(ident, model, words, usage if include_usage else None, chat, call)
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            if call is None:
                message["content"] = " ".join(words)
            else:
                function = {"name": call[0], "arguments": call[1]}
                message["tool_calls"] = [
                    {"id": _call_id(ident), "type": "function", "function": function}
                ]
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "stop" if call is None else "tool_calls",
            }
            kind = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": " ".join(words),
                "logprobs": None,
                "finish_reason": "stop",
            }
            kind = "text_completion"
        answer = {
            "id": ident,
            "object": kind,
            "created": _CREATED,
            "model": model,
            "choices": [choice],
        }
        answer["usage"] = usage
        return MockResponse(200, _JSON, _encode(answer))

    def _stream(
        self,
        ident: str,
        model: str,
        words: list[str],
        usage: dict[str, int] | None,
        chat: bool,
        call: tuple[str, str] | None = None,
    ) -> MockResponse:
        kind = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": ident, "object": kind, "created": _CREATED, "model": model}

        def event(choice: dict[str, Any] | None, **extra: Any) -> bytes:
            payload = {**base, "choices": [choice] if choice else [], **extra}
            return b"data: " + _encode(payload) + b"\n\n"

        def delta(
            text: str | None, finish: str | None = None, role: bool = False
        ) -> dict[str, Any]:
            if not chat:
                return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            content: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                content["content"] = text
            return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}

        chunks = [event(delta(None, role=True))] if chat else []
        if call is None:
            chunks += [event(delta(w if i == 0 else " " + w)) for i, w in enumerate(words)]
            chunks.append(event(delta(None, "stop")))
        else:  # its arguments in two pieces, as OpenAI streams them
            name, arguments = call
            half = len(arguments) // 2
            first = {"index": 0, "id": _call_id(ident), "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            pieces = [first]
            pieces += [{"index": 0, "function": {"arguments": arguments[:half]}}]
            pieces += [{"index": 0, "function": {"arguments": arguments[half:]}}]
            for piece in pieces:
                choice = {"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}
                chunks.append(event({**choice, "logprobs": None}))
            chunks.append(event(delta(None, "tool_calls")))
        if usage is not None:
            chunks.append(event(None, usage=usage))
        chunks.append(b"data: [DONE]\n\n")
        return MockResponse(200, _SSE, chunks=chunks, delay=self.chunk_delay)

    def _embeddings(self, model: str, body: dict[str, Any]) -> MockResponse:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "'input' must be a string or a non-empty array.", "input")
        dimensions = body.get("dimensions", 16)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            return _error(400, "'dimensions' must be an integer from 1 to 4096.", "dimensions")
        if len(inputs) * dimensions > MAX_EMBEDDING_VALUES:  # the mock computes each one
            return _error(
                400,
                f"The mock computes at most {MAX_EMBEDDING_VALUES} values per request "
                f"(inputs x dimensions); this asks for {len(inputs)} x {dimensions}.",
                "input",
            )
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(str(text), dimensions)}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return MockResponse(
            200, _JSON, _encode({"object": "list", "data": data, "model": model, "usage": usage})
        )
