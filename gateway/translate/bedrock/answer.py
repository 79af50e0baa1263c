"""Bedrock ConverseResponse -> OpenAI ``chat.completion`` (``converse_to_chat``), and the
wire shapes of Converse's answers that the stream reads too.

Usage counts cache reads and writes into ``prompt_tokens`` (Bedrock's ``inputTokens``
leaves them out; OpenAI's prompt count includes cached tokens). Converse's answers carry
no id: the gateway makes one.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from ...core.outcome import Usage
from ..chat import arguments_text, completion
from .request import JSON_TOOL, Facts

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}


class WireUsage(msgspec.Struct, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None


class _ToolUse(msgspec.Struct, rename="camel"):
    tool_use_id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw()  # kept as the bytes Bedrock sent


class _ReasoningText(msgspec.Struct):
    text: str = ""
    signature: str | None = None


class _Reasoning(msgspec.Struct, rename="camel"):
    reasoning_text: _ReasoningText | None = None
    redacted_content: str | None = None  # base64


class _Block(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolUse | None = None
    reasoning_content: _Reasoning | None = None


class _Message(msgspec.Struct):
    role: str = "assistant"
    content: list[_Block] = []


class _Output(msgspec.Struct):
    message: _Message | None = None


class WireResponse(msgspec.Struct, rename="camel"):
    output: _Output = msgspec.field(default_factory=_Output)
    stop_reason: str | None = None
    usage: WireUsage | None = None


decode_response = msgspec.json.Decoder(WireResponse).decode


def usage_of(usage: WireUsage) -> Usage:
    """Bedrock's usage in OpenAI's terms: the prompt is input plus cache reads and writes."""
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_write_input_tokens or 0
    prompt = usage.input_tokens + read + write
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=usage.output_tokens,
        total_tokens=prompt + usage.output_tokens,
        cached_tokens=read,
        cache_write_tokens=write,
    )


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def unwrapped(arguments: str) -> str:
    """The answer inside a wrapped JSON tool's input (``{"values": answer}``)."""
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        return arguments
    if isinstance(value, dict) and "values" in value:
        return _encode(value["values"]).decode()
    return arguments


def finish_reason(stop_reason: str | None, json_answer: bool, tool_calls: bool) -> str:
    finish = FINISH_REASONS.get(stop_reason or "", "stop")
    if finish == "tool_calls" and json_answer and not tool_calls:
        return "stop"  # the JSON answer was the point, not a tool call
    return finish


def converse_to_chat(content: bytes, facts: Facts) -> bytes:
    """A ConverseResponse as a ``chat.completion``."""
    response = decode_response(content)
    message = response.output.message or _Message()
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    answer: str | None = None
    for block in message.content:
        if block.text is not None:
            texts.append(block.text)
        elif block.tool_use is not None:
            call = block.tool_use
            arguments = arguments_text(call.input)
            if facts.json_tool and call.name == JSON_TOOL:
                answer = unwrapped(arguments) if facts.json_wrapped else arguments
                continue
            tool_calls.append(
                {
                    "id": call.tool_use_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }
            )
        elif block.reasoning_content is not None:
            thought = block.reasoning_content
            if thought.reasoning_text is not None:
                text = thought.reasoning_text
                reasoning.append(text.text)
                thinking_blocks.append(
                    {"type": "thinking", "thinking": text.text, "signature": text.signature}
                )
            elif thought.redacted_content:
                redacted = {"type": "redacted_thinking", "data": thought.redacted_content}
                thinking_blocks.append(redacted)
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
    finish = finish_reason(response.stop_reason, answer is not None, bool(tool_calls))
    usage = usage_of(response.usage) if response.usage is not None else None
    choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}
    return completion(completion_id(), facts.model, [choice], usage)
