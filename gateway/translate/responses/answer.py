"""A whole chat completion -> a Response (``chat_to_response``), and the pieces a
Response is made of, which the stream writes too: the Response object with every field
OpenAI sends (``response_object``), its output items, its status.

The output is a reasoning item (the chat message's ``reasoning_content``, as
``reasoning_text``; its ``thinking_blocks`` in ``encrypted_content``), then a message item
(the text, or a refusal), then one item per tool call: ``function_call`` (with its
``namespace`` when the tool was declared in one), or ``custom_tool_call`` for a custom
tool. ``length`` and ``content_filter`` finishes make the Response ``incomplete``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ...core.errors import UpstreamProtocolError
from ...core.outcome import Usage
from ..chat import ChatChoice, ChatReply, decode_chat_answer
from .request import Facts
from .shapes import encode_thinking, output_id
from .usage import usage_json, usage_of_chat

_encode = msgspec.json.Encoder().encode

# A chat finish_reason that leaves a Response incomplete -> incomplete_details.reason.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# The codes a Response's error may have (a closed set in the SDK's types).
ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def response_object(
    facts: Facts,
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Response with the full field set api.openai.com sends, echoing the request."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": max(created_at, int(time.time())) if status == "completed" else None,
        "error": error,
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        "instructions": facts.instructions,
        "max_output_tokens": facts.max_output_tokens,
        "max_tool_calls": facts.max_tool_calls,
        "model": facts.model,
        "output": output,
        "parallel_tool_calls": facts.parallel_tool_calls,
        "previous_response_id": facts.previous_response_id,
        "prompt_cache_key": facts.prompt_cache_key,
        "reasoning": facts.reasoning,
        "safety_identifier": facts.safety_identifier,
        "service_tier": "default",
        "store": facts.store,
        "temperature": 1.0 if facts.temperature is None else facts.temperature,
        "text": facts.text,
        "tool_choice": facts.tool_choice,
        "tools": facts.tools,
        "top_logprobs": facts.top_logprobs or 0,
        "top_p": 1.0 if facts.top_p is None else facts.top_p,
        "truncation": facts.truncation or "disabled",
        "usage": None if usage is None else usage_json(usage),
        "user": facts.user,
        "metadata": facts.metadata,
    }


def response_error(message: str, code: str = "server_error") -> dict[str, Any]:
    """A failed Response's ``error``: its code one the SDK knows (else ``server_error``)."""
    return {"code": code if code in ERROR_CODES else "server_error", "message": message}


def error_code(kind: str | None, code: str | None) -> str:
    """The Response error code for a gateway or upstream error's ``type`` and ``code``."""
    if code is not None and code in ERROR_CODES:
        return code
    if kind == "rate_limit_error" or code == "rate_limit_exceeded":
        return "rate_limit_exceeded"
    return "server_error"


# ----------------------------------------------------------------------- output items


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": parts,
        "role": "assistant",
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def reasoning_items(
    item_id: str, text: str, blocks: list[dict[str, Any]] | None, facts: Facts
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A reasoning item as the client sees it, and as the gateway stores it: the stored
    one keeps the thinking blocks (for ``previous_response_id``) even when the client did
    not ask for ``reasoning.encrypted_content``."""
    shown: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    shown["content"] = [{"type": "reasoning_text", "text": text}] if text else []
    if not blocks:
        return shown, shown
    stored = {**shown, "encrypted_content": encode_thinking(blocks)}
    return (stored if facts.encrypted_reasoning else shown), stored


def call_is_custom(facts: Facts, name: str) -> bool:
    return name in facts.custom_tools


def custom_input(arguments: str) -> str:
    """A custom tool's input, out of the arguments of the function standing in for it
    (``{"input": "..."}``); arguments of any other shape are the input as they are."""
    try:
        value = msgspec.json.decode(arguments) if arguments else None
    except (msgspec.DecodeError, RecursionError):
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


def call_item(
    facts: Facts,
    item_id: str,
    call_id: str,
    name: str,
    arguments: str,
    status: str,
) -> dict[str, Any]:
    """A tool call's output item: ``function_call``, or ``custom_tool_call`` (whose
    ``item_id`` should start ``ctc_``)."""
    if call_is_custom(facts, name):
        item = {
            "id": item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "input": custom_input(arguments),
        }
    else:
        item = {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": call_id,
            "name": name,
        }
    namespace = facts.namespaces.get(name)
    if namespace is not None:
        item["namespace"] = namespace
    return item


def finish_status(finish_reason: str | None) -> tuple[str, str | None]:
    """The Response's status and incomplete reason for a chat finish_reason."""
    reason = INCOMPLETE.get(finish_reason or "")
    return ("incomplete", reason) if reason is not None else ("completed", None)


# ------------------------------------------------------------------ the whole answer


def chat_to_response(
    content: bytes, facts: Facts, response_id: str, created_at: int
) -> tuple[bytes, list[dict[str, Any]], Usage | None]:
    """A ``chat.completion`` as a Response: its JSON, its output items (to store: they
    keep thinking blocks the client may not see), and its usage."""
    try:
        answer = decode_chat_answer(content)
    except (msgspec.DecodeError, RecursionError):
        raise UpstreamProtocolError("The upstream's answer is not a chat completion.") from None
    usage = None if answer.usage is None else usage_of_chat(answer.usage)
    choice = answer.choices[0] if answer.choices else ChatChoice()
    message = choice.message or ChatReply()
    status, incomplete = finish_status(choice.finish_reason)
    shown: list[dict[str, Any]] = []
    stored: list[dict[str, Any]] = []
    reasoning = message.reasoning_text
    if reasoning or message.thinking_blocks:
        ident = output_id("rs", response_id, len(shown))
        seen, kept = reasoning_items(ident, reasoning or "", message.thinking_blocks, facts)
        shown.append(seen)
        stored.append(kept)
    parts = []
    if message.content:
        parts.append(text_part(message.content))
    if message.refusal:
        parts.append(refusal_part(message.refusal))
    if parts:
        item = message_item(output_id("msg", response_id, len(shown)), parts, "completed")
        shown.append(item)
        stored.append(item)
    for call in message.tool_calls or ():
        function = call.function
        name = (function.name if function is not None else None) or ""
        arguments = (function.arguments if function is not None else None) or "{}"
        prefix = "ctc" if call_is_custom(facts, name) else "fc"
        ident = output_id(prefix, response_id, len(shown))
        call_id = call.id or output_id("call", response_id, len(shown))
        item = call_item(facts, ident, call_id, name, arguments, "completed")
        shown.append(item)
        stored.append(item)
    if incomplete is not None and shown:
        # The answer was cut in its last item.
        shown[-1] = {**shown[-1], "status": "incomplete"}
        stored[-1] = {**stored[-1], "status": "incomplete"}
    response = response_object(
        facts, response_id, created_at, status, shown, usage, incomplete=incomplete
    )
    return _encode(response), stored, usage
