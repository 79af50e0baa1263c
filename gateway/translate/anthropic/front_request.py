"""The front door's request: Anthropic Messages request -> OpenAI chat request
(``messages_to_chat``), for an Anthropic client asking a model that is not Claude.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.errors import InvalidRequestError
from ...wire.endpoints import decode_json
from ..chat import (
    arguments_text,
)

_encode = msgspec.json.Encoder().encode


class _Source(msgspec.Struct):
    type: str = ""
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class _InBlock(msgspec.Struct):
    type: str
    text: str | None = None
    source: _Source | None = None
    id: str | None = None
    name: str | None = None
    input: msgspec.Raw = msgspec.Raw()
    tool_use_id: str | None = None
    content: str | list[_InBlock] | None = None
    is_error: bool | None = None
    title: str | None = None


class _InMessage(msgspec.Struct):
    role: str
    content: str | list[_InBlock]


class _InTool(msgspec.Struct):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class _InToolChoice(msgspec.Struct):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _InThinking(msgspec.Struct):
    type: str
    budget_tokens: int | None = None


class _InMetadata(msgspec.Struct):
    user_id: str | None = None


class MessagesRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[_InMessage]
    max_tokens: int | None = None
    system: str | list[_InBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = None
    tools: list[_InTool] | None = None
    tool_choice: _InToolChoice | None = None
    thinking: _InThinking | None = None
    metadata: _InMetadata | None = None


_decode_messages_request = msgspec.json.Decoder(MessagesRequest).decode


def messages_to_chat(body: bytes) -> bytes:
    """An Anthropic Messages request as an OpenAI chat request (streams ask for usage)."""
    request = decode_json(_decode_messages_request, body)
    messages: list[dict[str, Any]] = []
    if request.system:
        system = (
            request.system
            if isinstance(request.system, str)
            else "\n".join(b.text or "" for b in request.system if b.type == "text")
        )
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(request.messages):
        where = f"messages.{i}"
        if message.role == "assistant":
            messages.append(_front_assistant(message, where))
        elif message.role == "user":
            messages += _front_user(message, where)
        else:
            raise InvalidRequestError(f"{where}.role: {message.role!r} is not a role here.")
    out: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.max_tokens is not None:
        out["max_completion_tokens"] = request.max_tokens
    if request.stop_sequences:
        out["stop"] = request.stop_sequences
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.tools:
        tools = []
        for i, tool in enumerate(request.tools):
            if tool.type not in (None, "custom"):
                raise InvalidRequestError(
                    f"tools.{i}: the server tool {tool.type!r} is only served by Claude models."
                )
            function: dict[str, Any] = {"name": tool.name}
            if tool.description:
                function["description"] = tool.description
            function["parameters"] = tool.input_schema or {"type": "object", "properties": {}}
            tools.append({"type": "function", "function": function})
        out["tools"] = tools
        choice = request.tool_choice
        if choice is not None:
            if choice.type == "tool" and choice.name:
                out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            elif choice.type in ("auto", "any", "none"):
                out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[
                    choice.type
                ]
            if choice.disable_parallel_tool_use and choice.type != "none":
                out["parallel_tool_calls"] = False
    thinking = request.thinking
    if thinking is not None and thinking.type == "enabled" and thinking.budget_tokens:
        budget = thinking.budget_tokens
        effort = "low" if budget <= 1024 else "medium" if budget <= 2048 else "high"
        out["reasoning_effort"] = effort
    if request.metadata is not None and request.metadata.user_id:
        out["user"] = request.metadata.user_id
    if request.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return _encode(out)


def _front_blocks(content: str | list[_InBlock]) -> list[_InBlock]:
    return [_InBlock(type="text", text=content)] if isinstance(content, str) else content


def _front_assistant(message: _InMessage, where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _front_blocks(message.content):
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            calls.append(
                {
                    "id": block.id or "",
                    "type": "function",
                    "function": {
                        "name": block.name or "",
                        "arguments": arguments_text(block.input),
                    },
                }
            )
        # thinking and redacted_thinking blocks are Claude's own: other models drop them
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _front_user(message: _InMessage, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as ``tool`` messages first, then what else it says."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_front_blocks(message.content)):
        if block.type == "tool_result":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id or "",
                    "content": _tool_result_text(block.content),
                }
            )
        else:
            parts.append(_front_part(block, f"{where}.content.{j}"))
    out = results
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _tool_result_text(content: str | list[_InBlock] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    # OpenAI's tool messages take text: a result's images do not cross over.
    return "\n".join(b.text or "" for b in content if b.type == "text")


def _front_part(block: _InBlock, where: str) -> dict[str, Any]:
    source = block.source
    if block.type == "text":
        return {"type": "text", "text": block.text or ""}
    if block.type == "image" and source is not None:
        if source.type == "base64":
            url = f"data:{source.media_type};base64,{source.data}"
        elif source.type == "url" and source.url:
            url = source.url
        else:
            raise InvalidRequestError(f"{where}.source: type {source.type!r} is not supported.")
        return {"type": "image_url", "image_url": {"url": url}}
    if block.type == "document" and source is not None:
        if source.type == "base64" and source.media_type == "application/pdf":
            file = {"file_data": f"data:application/pdf;base64,{source.data}"}
            file["filename"] = block.title or "document.pdf"
            return {"type": "file", "file": file}
        if source.type == "text":
            return {"type": "text", "text": source.data or ""}
        raise InvalidRequestError(
            f"{where}.source: only base64 PDF and text documents reach this model."
        )
    raise InvalidRequestError(f"{where}: blocks of type {block.type!r} cannot reach this model.")
