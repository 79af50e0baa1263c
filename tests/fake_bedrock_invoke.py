"""The InvokeModel side of the fake Bedrock (tests/fake_bedrock.py): Claude's Messages API,
embedding models, and CountTokens, answered as Bedrock answers them.

- ``POST /model/{id}/invoke`` for a Claude model: the body must be Bedrock's Messages API
  (``anthropic_version`` ``bedrock-2023-05-31``, no ``model``, no ``stream``: a 400
  ValidationException otherwise, as Bedrock says of an extraneous key); the answer is
  Anthropic's Message. For ``amazon.titan-embed…``: ``{"inputText"}`` -> ``{"embedding",
  "inputTextTokenCount"}``; for ``cohere.embed…``: ``{"texts", "input_type"}`` ->
  ``{"embeddings", "id", "response_type", "texts"}`` and the token count in
  ``x-amzn-bedrock-input-token-count`` (v4: ``{"embeddings": {"float": …}}``).
- ``/invoke-with-response-stream``: AWS's event stream of ``chunk`` events, each
  ``{"bytes": base64 of one Anthropic event's JSON}``; Bedrock's last event
  (``message_stop``) carries ``amazon-bedrock-invocationMetrics``.
- ``/count-tokens``: ``{"input": {"invokeModel": {"body": base64}}}`` -> ``{"inputTokens"}``.

Scripted by the model id, as the Converse side is: *echo*, *tools*, *thinking*, *json*,
*split* (the stream in random small writes), *stream-error*, *throttle-first*.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from gateway.translate.bedrock.eventstream import encode_message

VERSION = "bedrock-2023-05-31"
# The Anthropic usage of every Claude answer: input 10, cache read 20, cache write 5, output 7.
CLAUDE_USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 20,
    "output_tokens": 7,
}
TOOL_CALLS = [
    ("toolu_A1", "get_weather", ['{"city": "Pa', 'ris", "unit', '": "c\\u00b0"}']),
    ("toolu_B2", "get_time", ['{"zone":', ' "Europe/Paris"}']),
]
THOUGHT = ("Two and two.", "EqQBsig")
DIMENSIONS = 8  # the fake's vectors: short, and a function of the text


def chunk(data: dict[str, Any]) -> bytes:
    """One ``chunk`` event of InvokeModelWithResponseStream around an Anthropic event."""
    payload = {"bytes": base64.b64encode(json.dumps(data).encode()).decode(), "p": "abcd"}
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, json.dumps(payload).encode())


def exception(kind: str, message: str) -> bytes:
    """An exception message of the stream (``throttlingException``…)."""
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())


def problem(model: str, data: dict[str, Any]) -> str | None:
    """Why Bedrock would refuse this InvokeModel body for a Claude model, or ``None``."""
    for key in ("model", "stream"):
        if key in data:
            return f"extraneous key [{key}] is not permitted"
    if data.get("anthropic_version") != VERSION:
        return f"anthropic_version: expected {VERSION}, got {data.get('anthropic_version')!r}"
    if not isinstance(data.get("max_tokens"), int):
        return "max_tokens: required key [max_tokens] not found"
    return None


def last_user_text(data: dict[str, Any]) -> str:
    for message in reversed(data.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            texts = [b["text"] for b in content if b.get("type") == "text"]
            if texts:
                return " ".join(texts)
    return ""


def content_of(model: str, data: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A scripted Claude's content blocks and stop reason."""
    if "tools" in model or "split" in model:
        content: list[dict[str, Any]] = [{"type": "text", "text": "Let me check."}]
        for ident, name, pieces in TOOL_CALLS:
            tool = {"type": "tool_use", "id": ident, "name": name}
            content.append({**tool, "input": json.loads("".join(pieces))})
        return content, "tool_use"
    if "json" in model:
        tool = {"type": "tool_use", "id": "toolu_j", "name": "json_tool_call"}
        return [{**tool, "input": {"name": "Ada"}}], "tool_use"
    if "thinking" in model:
        thought = {"type": "thinking", "thinking": THOUGHT[0], "signature": THOUGHT[1]}
        return [thought, {"type": "text", "text": "4"}], "end_turn"
    return [{"type": "text", "text": "echo: " + last_user_text(data)}], "end_turn"


def message(model: str, data: dict[str, Any]) -> dict[str, Any]:
    content, stop = content_of(model, data)
    return {
        "id": "msg_bdrk_01Fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake-20250101",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": CLAUDE_USAGE,
    }


def stream_frames(model: str, data: dict[str, Any]) -> list[bytes]:
    """A scripted Claude's stream, as Bedrock frames it, event by event."""
    whole = message(model, data)
    start = {**whole, "content": [], "stop_reason": None}
    start["usage"] = {**CLAUDE_USAGE, "output_tokens": 1}
    frames = [chunk({"type": "message_start", "message": start})]
    for index, block in enumerate(whole["content"]):
        kind = block["type"]
        if kind == "text":
            frames.append(chunk(_start(index, {"type": "text", "text": ""})))
            text = block["text"]
            third = max(len(text) // 3, 1)
            for piece in (text[:third], text[third : 2 * third], text[2 * third :]):
                frames.append(chunk(_delta(index, {"type": "text_delta", "text": piece})))
                if "stream-error" in model:
                    said = "The model stream failed: the model is busy."
                    return [*frames, exception("modelStreamErrorException", said)]
        elif kind == "tool_use":
            tool = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            frames.append(chunk(_start(index, tool)))
            pieces = next((p for i, _, p in TOOL_CALLS if i == block["id"]), None)
            for piece in pieces or [json.dumps(block["input"])]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                frames.append(chunk(_delta(index, delta)))
        else:
            frames.append(chunk(_start(index, {"type": "thinking", "thinking": ""})))
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            frames.append(chunk(_delta(index, delta)))
            frames.append(
                chunk(_delta(index, {"type": "signature_delta", "signature": THOUGHT[1]}))
            )
        frames.append(chunk({"type": "content_block_stop", "index": index}))
    frames.append(
        chunk(
            {
                "type": "message_delta",
                "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": CLAUDE_USAGE["output_tokens"]},
            }
        )
    )
    metrics = {
        "inputTokenCount": 10,
        "outputTokenCount": 7,
        "invocationLatency": 321,
        "firstByteLatency": 123,
    }
    frames.append(chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}))
    return frames


def _start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def vector(text: str, size: int = DIMENSIONS) -> list[float]:
    """A made-up embedding: a function of the text, so that tests can tell them apart."""
    return [round((len(text) + i) / 100, 2) for i in range(size)]


def embedding_answer(model: str, data: dict[str, Any]) -> web.Response | str:
    """A Titan or Cohere answer, or why Bedrock would refuse the body."""
    if "titan-embed" in model:
        if set(data) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
            return f"extraneous keys: {sorted(set(data))}"
        text = data.get("inputText")
        if not isinstance(text, str):
            return "inputText: required key [inputText] not found"
        size = data.get("dimensions", DIMENSIONS)
        answer = {"embedding": vector(text, size), "inputTextTokenCount": len(text.split())}
        return web.json_response(answer, headers={"x-amzn-RequestId": "req-titan"})
    texts = data.get("texts")
    if not isinstance(texts, list) or not 1 <= len(texts) <= 96:
        return "texts: between 1 and 96 texts"
    if data.get("input_type") not in (
        "search_document",
        "search_query",
        "classification",
        "clustering",
    ):
        return "input_type: required key [input_type] not found"
    if "embed-v4" in model:
        size = data.get("output_dimension", DIMENSIONS)
        embeddings: Any = {"float": [vector(t, size) for t in texts]}
        kind = "embeddings_by_type"
    else:
        embeddings, kind = [vector(t) for t in texts], "embeddings_floats"
    answer = {"embeddings": embeddings, "id": "emb-1", "response_type": kind, "texts": texts}
    tokens = str(sum(len(t.split()) for t in texts))
    headers = {"x-amzn-RequestId": "req-cohere", "x-amzn-bedrock-input-token-count": tokens}
    return web.json_response(answer, headers=headers)


def counted(data: dict[str, Any]) -> dict[str, Any] | str:
    """CountTokens' answer, or why Bedrock would refuse the body."""
    try:
        body = json.loads(base64.b64decode(data["input"]["invokeModel"]["body"], validate=True))
    except (KeyError, TypeError, ValueError):
        return "input.invokeModel.body: a base64 InvokeModel body is required"
    reason = problem("", body)
    if reason is not None:
        return reason
    return {"inputTokens": 3 + len(json.dumps(body["messages"])) // 10}
