"""The front door's answer: OpenAI ``chat.completion`` -> Anthropic Message
(``chat_to_message``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..chat import (
    ChatChoice,
    ChatDetails,
    ChatFunction,
    ChatReply,
    ChatUsage,
    decode_chat_answer,
    tool_arguments,
)
from .answer import STOP_REASONS

_encode = msgspec.json.Encoder().encode

# ------------------------------------------------------------------ the answer, back


def anthropic_usage(usage: ChatUsage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.prompt_tokens_details or ChatDetails()
    read = details.cached_tokens or 0
    write = details.cache_creation_tokens or 0
    return {
        "input_tokens": max((usage.prompt_tokens or 0) - read - write, 0),
        "output_tokens": usage.completion_tokens or 0,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }


def chat_to_message(content: bytes, model: str) -> bytes:
    """A ``chat.completion`` as an Anthropic Message."""
    answer = decode_chat_answer(content)
    choice = answer.choices[0] if answer.choices else ChatChoice()
    message = choice.message or ChatReply()
    blocks: list[dict[str, Any]] = []
    if message.reasoning_content:
        blocks.append({"type": "thinking", "thinking": message.reasoning_content, "signature": ""})
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls or ():
        function = call.function or ChatFunction()
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or "",
                "name": function.name or "",
                "input": tool_arguments(function.arguments or ""),
            }
        )
    out = {
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model or model,
        "content": blocks,
        "stop_reason": STOP_REASONS.get(choice.finish_reason or "", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(answer.usage),
    }
    return _encode(out)
