"""The front door's request: Anthropic Messages request -> OpenAI chat request
(``messages_to_chat``), for an Anthropic client asking a model that is not Claude.

Claude Code, the Agent SDK and the SDKs' beta namespace send more than the base API: a
``system`` message inside ``messages`` (the mid-conversation-system beta), adaptive
thinking, ``output_config.effort``, ``context_management``, signed thinking blocks
echoed back. What the hub has a place for is kept: system messages stay where they
stood (the translators to Anthropic and Gemini move them where those APIs want them),
``cache_control`` markers go on parts, messages and tools, signed thinking blocks become
``thinking_blocks`` (a Claude fallback must get them back unchanged). What no other
model has a use for (``context_management``, ``container``, ``service_tier``…) is
ignored, never refused: a client's next beta field must not break every request. Only
what would be silently wrong is refused: a content block of a type this file does not
know, a server tool, an MCP server.
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

# output_config.effort -> reasoning_effort (OpenAI's scale stops at high).
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}


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
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None  # a redacted_thinking block's
    cache_control: dict[str, Any] | None = None


class _InMessage(msgspec.Struct):
    role: str
    content: str | list[_InBlock]


class _InTool(msgspec.Struct):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    cache_control: dict[str, Any] | None = None


class _InToolChoice(msgspec.Struct):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _InThinking(msgspec.Struct):
    type: str  # enabled, adaptive, disabled
    budget_tokens: int | None = None


class _InOutputConfig(msgspec.Struct):
    effort: str | None = None


class _InMetadata(msgspec.Struct):
    user_id: str | None = None


class MessagesRequest(msgspec.Struct, kw_only=True):
    """The fields read; any other (``context_management``, ``container``…) is ignored."""

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
    output_config: _InOutputConfig | None = None
    metadata: _InMetadata | None = None
    mcp_servers: list[msgspec.Raw] | None = None


_decode_messages_request = msgspec.json.Decoder(MessagesRequest).decode


# What only a Claude model reads back (the hub's translator to Anthropic): the markers and
# signed thinking that an OpenAI-compatible upstream may refuse as unknown fields.
CLAUDE_ONLY = ("cache_control", "thinking_blocks", "reasoning_content")


def messages_to_chat(body: bytes, claude_only: bool = True) -> bytes:
    """An Anthropic Messages request as an OpenAI chat request (streams ask for usage).

    ``claude_only=False`` leaves out what only a Claude model reads (``CLAUDE_ONLY``):
    for a request none of whose deployments is on an Anthropic provider."""
    request = decode_json(_decode_messages_request, body)
    if request.mcp_servers:
        raise InvalidRequestError(
            "mcp_servers: MCP servers are connected by Anthropic's API; only Claude models "
            "serve them.",
            param="mcp_servers",
        )
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append(_front_system(request.system, "system"))
    for i, message in enumerate(request.messages):
        where = f"messages.{i}"
        if message.role == "assistant":
            messages.append(_front_assistant(message, where))
        elif message.role == "user":
            messages += _front_user(message, where)
        elif message.role == "system":  # mid-conversation: it stays where it stood
            messages.append(_front_system(message.content, f"{where}.content"))
        else:
            raise InvalidRequestError(f"{where}.role: {message.role!r} is not a role here.")
    if not claude_only:
        _strip(messages)
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
        out["tools"] = [_front_tool(tool, f"tools.{i}") for i, tool in enumerate(request.tools)]
        if not claude_only:
            _strip(out["tools"])
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
    effort = _reasoning_effort(request)
    if effort is not None:
        out["reasoning_effort"] = effort
    if request.metadata is not None and request.metadata.user_id:
        out["user"] = request.metadata.user_id
    if request.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return _encode(out)


def _strip(items: list[dict[str, Any]]) -> None:
    """Take ``CLAUDE_ONLY`` out of messages (and their parts) or tools, in place."""
    for item in items:
        for name in CLAUDE_ONLY:
            item.pop(name, None)
        content = item.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    part.pop("cache_control", None)


def _reasoning_effort(request: MessagesRequest) -> str | None:
    """``output_config.effort`` if given (an effort this file does not know: none), else
    the thinking budget's size; none while thinking is disabled, or adaptive without an
    effort (the model's own default then)."""
    thinking = request.thinking
    if thinking is not None and thinking.type == "disabled":
        return None
    config = request.output_config
    if config is not None and config.effort is not None:
        return EFFORTS.get(config.effort)
    if thinking is not None and thinking.type == "enabled" and thinking.budget_tokens:
        budget = thinking.budget_tokens
        return "low" if budget <= 1024 else "medium" if budget <= 2048 else "high"
    return None


def _front_tool(tool: _InTool, where: str) -> dict[str, Any]:
    if tool.type not in (None, "custom"):
        raise InvalidRequestError(
            f"{where}: the server tool {tool.type!r} is only served by Claude models."
        )
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.input_schema or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"type": "function", "function": function}
    if tool.cache_control is not None:
        out["cache_control"] = tool.cache_control
    return out


def _front_blocks(content: str | list[_InBlock]) -> list[_InBlock]:
    return [_InBlock(type="text", text=content)] if isinstance(content, str) else content


def _front_system(content: str | list[_InBlock], where: str) -> dict[str, Any]:
    """A system prompt (``system``, or a ``system`` message) as a system message: one
    string, or text parts when a block carries a ``cache_control`` marker to keep."""
    if isinstance(content, str):
        return {"role": "system", "content": content}
    for j, block in enumerate(content):
        if block.type != "text":
            raise InvalidRequestError(
                f"{where}.{j}: a system prompt takes text blocks, not {block.type!r}."
            )
    if not any(block.cache_control is not None for block in content):
        return {"role": "system", "content": "\n".join(b.text or "" for b in content)}
    return {"role": "system", "content": [_text_part(block) for block in content]}


def _text_part(block: _InBlock) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": block.text or ""}
    if block.cache_control is not None:
        part["cache_control"] = block.cache_control
    return part


def _front_assistant(message: _InMessage, where: str) -> dict[str, Any]:
    """An assistant turn: its text, tool calls and thinking. Signed thinking blocks go
    to ``thinking_blocks`` unchanged (Claude, as a fallback, wants them back before
    tool results); their text also to ``reasoning_content``. A marker on any block marks
    the message (the hub has no place on a tool call for one)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[str] = []
    signed: list[dict[str, Any]] = []
    marker: dict[str, Any] | None = None
    for block in _front_blocks(message.content):
        if block.cache_control is not None:
            marker = block.cache_control
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
        elif block.type == "thinking":
            thoughts.append(block.thinking or "")
            if block.signature:  # unsigned: another model's thinking, said back
                thinking = block.thinking or ""
                signed.append(
                    {"type": "thinking", "thinking": thinking, "signature": block.signature}
                )
        elif block.type == "redacted_thinking" and block.data:
            signed.append({"type": "redacted_thinking", "data": block.data})
        # other blocks of Claude's own (server tool calls and results) do not cross over
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "\n".join(thoughts)
    if signed:
        out["thinking_blocks"] = signed
    if marker is not None:
        out["cache_control"] = marker
    return out


def _front_user(message: _InMessage, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as ``tool`` messages first, then what else it says."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_front_blocks(message.content)):
        if block.type == "tool_result":
            # is_error has no place in OpenAI's tool message: the result's text says it.
            result: dict[str, Any] = {
                "role": "tool",
                "tool_call_id": block.tool_use_id or "",
                "content": _tool_result_text(block.content),
            }
            if block.cache_control is not None:
                result["cache_control"] = block.cache_control
            results.append(result)
        else:
            parts.append(_front_part(block, f"{where}.content.{j}"))
    out = results
    if parts:
        first = parts[0]
        only_text = len(parts) == 1 and first["type"] == "text" and "cache_control" not in first
        out.append({"role": "user", "content": first["text"] if only_text else parts})
    return out


def _tool_result_text(content: str | list[_InBlock] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    # OpenAI's tool messages take text: a result's images do not cross over.
    return "\n".join(b.text or "" for b in content if b.type == "text")


def _front_part(block: _InBlock, where: str) -> dict[str, Any]:
    part = _part(block, where)
    if block.cache_control is not None:
        part["cache_control"] = block.cache_control
    return part


def _part(block: _InBlock, where: str) -> dict[str, Any]:
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
