"""Gemini GenerateContentResponse -> OpenAI ``chat.completion`` (``response_to_chat``),
and the wire shapes of Gemini's answers that the stream reads too.

Gemini's calls carry no id: the gateway makes OpenAI's ``call_...`` ids; a prompt Gemini
blocks, or an answer it stops for safety, finishes with ``content_filter``; an answer
with function calls finishes with ``tool_calls`` (Gemini says ``STOP``).
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from ...core.outcome import Usage
from ..chat import (
    arguments_text,
    completion,
)
from .request import FINISH_REASONS, Facts


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: msgspec.Raw = msgspec.Raw()
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool | None = None
    function_call: _FunctionCall | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int | None = None


class UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int | None = None
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class _Feedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class WireError(msgspec.Struct):
    code: int | None = None
    message: str = ""
    status: str | None = None


class WireResponse(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    prompt_feedback: _Feedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: WireError | None = None


decode_response = msgspec.json.Decoder(WireResponse).decode


def usage_of(metadata: UsageMetadata) -> Usage:
    """Gemini's usage in OpenAI's terms: thoughts are completion (reasoning) tokens."""
    prompt = metadata.prompt_token_count + metadata.tool_use_prompt_token_count
    completion_tokens = metadata.candidates_token_count + metadata.thoughts_token_count
    total = metadata.total_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=total if total is not None else prompt + completion_tokens,
        cached_tokens=metadata.cached_content_token_count,
        reasoning_tokens=metadata.thoughts_token_count,
    )


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


def finish_reason(candidate: _Candidate, called: bool) -> str:
    if called:
        return "tool_calls"
    return FINISH_REASONS.get(candidate.finish_reason or "STOP", "stop")


def response_to_chat(content: bytes, facts: Facts) -> bytes:
    """A GenerateContentResponse as a ``chat.completion``."""
    response = decode_response(content)
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(response.candidates):
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in candidate.content.parts if candidate.content is not None else ():
            if part.function_call is not None:
                call = part.function_call
                arguments = arguments_text(call.args)
                calls.append(
                    {
                        "id": call.id or call_id(),
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments},
                    }
                )
            elif part.text is not None:
                (thoughts if part.thought else texts).append(part.text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        choices.append(
            {
                "index": candidate.index if candidate.index is not None else position,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate, bool(calls)),
            }
        )
    if not choices:  # the prompt was blocked: no candidate at all
        message = {"role": "assistant", "content": None, "refusal": None}
        choices.append(
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"}
        )
    usage = usage_of(response.usage_metadata) if response.usage_metadata is not None else None
    ident = response.response_id or "chatcmpl-" + secrets.token_hex(12)
    return completion(ident, response.model_version or facts.model, choices, usage)
