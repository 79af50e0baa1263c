"""Anthropic Message -> OpenAI ``chat.completion`` (``message_to_chat``), and the wire
shapes of Anthropic's answers and stream events that the readers decode.

Usage counts cache reads and writes into ``prompt_tokens`` (OpenAI's prompt count
includes cached tokens).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.outcome import Usage
from ..chat import (
    arguments_text,
    completion,
)
from .request import JSON_TOOL, Facts

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class _OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class WireUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()  # a tool's input, kept as the bytes Anthropic sent
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class _Message(msgspec.Struct):
    id: str = ""
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: WireUsage | None = None


class _Delta(msgspec.Struct):
    type: str = ""
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None


class WireError(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class Event(msgspec.Struct):
    """Any stream event: only the fields of its type are there."""

    type: str = ""
    message: _Message | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: WireUsage | None = None
    error: WireError | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
decode_event = msgspec.json.Decoder(Event).decode


def usage_of(usage: WireUsage) -> Usage:
    """Anthropic's usage in OpenAI's terms: the prompt is input plus cache reads and writes."""
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    prompt = (usage.input_tokens or 0) + read + write
    completion_tokens = usage.output_tokens or 0
    details = usage.output_tokens_details
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=prompt + completion_tokens,
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=(details.thinking_tokens or 0) if details is not None else 0,
    )


def unwrapped(arguments: str) -> str:
    """The answer inside a wrapped JSON tool's input (``{"values": answer}``)."""
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        return arguments
    if isinstance(value, dict) and "values" in value:
        return _encode(value["values"]).decode()
    return arguments


def message_to_chat(content: bytes, facts: Facts) -> tuple[bytes, Usage | None]:
    """An Anthropic Message as a ``chat.completion``, and its usage."""
    message = _decode_message(content)
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    answer: str | None = None
    for block in message.content:
        kind = block.type
        if kind == "text":
            texts.append(block.text or "")
        elif kind == "tool_use":
            arguments = arguments_text(block.input)
            if facts.json_tool and block.name == JSON_TOOL:
                answer = unwrapped(arguments) if facts.json_wrapped else arguments
                continue
            tool_calls.append(
                {
                    "id": block.id or "",
                    "type": "function",
                    "function": {"name": block.name or "", "arguments": arguments},
                }
            )
        elif kind == "thinking":
            reasoning.append(block.thinking or "")
            thinking_blocks.append(
                {"type": "thinking", "thinking": block.thinking or "", "signature": block.signature}
            )
        elif kind == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": block.data})
    finish = FINISH_REASONS.get(message.stop_reason or "", "stop")
    if answer is not None and not tool_calls:
        finish = "stop"  # the JSON answer was the point, not a tool call
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": answer if answer is not None else ("".join(texts) if texts else None),
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        reply["thinking_blocks"] = thinking_blocks
    usage = usage_of(message.usage) if message.usage is not None else None
    choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}
    return completion(message.id, message.model or facts.model, [choice], usage), usage
