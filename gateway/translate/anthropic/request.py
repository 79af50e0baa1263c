"""OpenAI chat request -> Anthropic Messages request (``chat_to_messages``).

System and developer messages become the ``system`` blocks, wherever they stood;
consecutive messages of one role merge into one turn (Anthropic wants turns to
alternate); tool results go into the next user turn; ``response_format`` with a schema
becomes a tool the model is made to call (``JSON_TOOL``), whose input comes back as the
content; ``reasoning_effort`` becomes a thinking budget.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.errors import InvalidRequestError
from ..chat import (
    ChatRequest,
    Message,
    Part,
    data_url,
    decode_chat,
    invalid,
    message_parts,
    tool_arguments,
)

_encode = msgspec.json.Encoder().encode

# The tool that stands in for OpenAI's response_format (the name LiteLLM uses too).
JSON_TOOL = "json_tool_call"
# reasoning_effort -> Anthropic's thinking budget (LiteLLM's defaults; 1024 is the least).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}
MIN_THINKING_BUDGET = 1024
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class Facts(msgspec.Struct, kw_only=True):
    """What translating the answer needs to know about the request."""

    model: str
    stream: bool = False
    include_usage: bool = False
    json_tool: bool = False  # the JSON_TOOL stands in for response_format
    json_wrapped: bool = False  # ...its schema wrapped as {"values": schema}


# ============================================================== OpenAI -> Anthropic


def chat_to_messages(body: bytes, default_max_tokens: int) -> tuple[bytes, Facts]:
    """An OpenAI chat request as an Anthropic Messages request."""
    request = decode_chat(body)
    if request.n not in (None, 1):
        raise InvalidRequestError("Claude models give one choice: 'n' must be 1.", param="n")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        role = message.role
        if role in ("system", "developer"):
            system += _text_blocks(message, f"messages[{i}]")
        elif role == "user":
            _add_turn(turns, "user", _user_blocks(message, f"messages[{i}]"), message)
        elif role == "assistant":
            _add_turn(turns, "assistant", _assistant_blocks(message, f"messages[{i}]"), message)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": _tool_result_content(message, f"messages[{i}]"),
            }
            _add_turn(turns, "user", [result], message)
        else:
            raise InvalidRequestError(
                f"Invalid 'messages[{i}].role': {role!r} cannot be sent to a Claude model.",
                param="messages",
            )
    out: dict[str, Any] = {"model": request.model}
    max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
    out["max_tokens"] = max_tokens
    if system:
        out["system"] = system
    out["messages"] = turns
    facts = Facts(model=request.model, stream=bool(request.stream))
    facts.include_usage = bool(request.stream) and request.include_usage
    thinking = claude_thinking(request, max_tokens)
    tools = _tools(request)
    tool_choice = _tool_choice(request)
    if request.response_format is not None and request.response_format.type != "text":
        tool, facts.json_wrapped = _json_tool(request)
        tools = [*(tools or ()), tool]
        facts.json_tool = True
        if not request.tools and thinking is None:  # Anthropic refuses forcing while thinking
            tool_choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        out["tools"] = tools
        if request.parallel_tool_calls is False and (tool_choice or {}).get("type") != "none":
            tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
    if request.stops:
        out["stop_sequences"] = request.stops
    if thinking is not None:
        out["thinking"] = thinking
        # With thinking on, Anthropic refuses temperature and top_k, and top_p below 0.95.
        if request.top_p is not None and request.top_p >= 0.95:
            out["top_p"] = request.top_p
    else:
        if request.temperature is not None:
            out["temperature"] = min(max(request.temperature, 0.0), 1.0)  # OpenAI's reaches 2
        if request.top_p is not None:
            out["top_p"] = request.top_p
        if request.top_k is not None:
            out["top_k"] = request.top_k
    if request.user:
        out["metadata"] = {"user_id": request.user}
    if request.stream:
        out["stream"] = True
    return _encode(out), facts


def _add_turn(
    turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]], message: Message
) -> None:
    """Append a message's blocks, merged into the last turn when it has the same role."""
    if not blocks:
        return
    if message.cache_control is not None:  # on the message: it marks its last block
        blocks[-1] = {**blocks[-1], "cache_control": message.cache_control}
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text_block(part: Part) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part.text or ""}
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def _text_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(message_parts(message)):
        if part.type != "text":
            raise InvalidRequestError(
                f"Invalid '{where}.content[{j}]': a {message.role} message takes text only.",
                param="messages",
            )
        if part.text:
            blocks.append(_text_block(part))
    if blocks and message.cache_control is not None:
        blocks[-1] = {**blocks[-1], "cache_control": message.cache_control}
    return blocks


def _user_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    blocks = [
        _user_block(part, f"{where}.content[{j}]") for j, part in enumerate(message_parts(message))
    ]
    kept = [b for b in blocks if b["type"] != "text" or b["text"]]
    # Anthropic refuses empty text blocks; a message of nothing but one is left for
    # Anthropic to refuse with its own words.
    return kept or blocks


def _user_block(part: Part, where: str) -> dict[str, Any]:
    kind = part.type
    if kind == "text":
        return _text_block(part)
    if kind == "image_url" and part.image_url is not None:
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        block: dict[str, Any] = {"type": "image", "source": _image_source(url, where)}
    elif kind == "file" and part.file is not None:
        block = {"type": "document", "source": _document_source(part, where)}
        if part.file.filename:
            block["title"] = part.file.filename
    elif kind == "input_audio":
        raise invalid(where, "Claude models do not take audio input")
    else:
        raise invalid(where, f"content parts of type {kind!r} cannot be sent to Claude")
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def _image_source(url: str, where: str) -> dict[str, Any]:
    parsed = data_url(url)
    if parsed is not None:
        media_type, data = parsed
        if media_type not in IMAGE_TYPES:
            raise invalid(where, f"images of type {media_type} cannot be sent to Claude")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}  # Anthropic fetches it
    raise invalid(where, "an image must be an http(s) URL or a base64 data URL")


def _document_source(part: Part, where: str) -> dict[str, Any]:
    file = part.file
    assert file is not None
    parsed = data_url(file.file_data) if file.file_data else None
    if parsed is None:
        raise invalid(where, "a file must be sent as file_data (a base64 data URL)")
    media_type, data = parsed
    if media_type != "application/pdf":
        raise invalid(where, f"files of type {media_type} cannot be sent to Claude")
    return {"type": "base64", "media_type": media_type, "data": data}


def _assistant_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = list(message.thinking_blocks or ())
    for j, part in enumerate(message_parts(message)):
        if part.type == "text":
            if part.text:
                blocks.append(_text_block(part))
        elif part.type != "refusal":
            raise invalid(f"{where}.content[{j}]", "an assistant message takes text only")
    for call in message.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": tool_arguments(call.function.arguments),
            }
        )
    return blocks


def _tool_result_content(message: Message, where: str) -> str | list[dict[str, Any]]:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    return [_user_block(part, f"{where}.content[{j}]") for j, part in enumerate(message.content)]


def _tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    if not request.tools:
        return None
    tools = []
    for i, tool in enumerate(request.tools):
        function = tool.function
        if tool.type != "function" or function is None:
            why = f"tools of type {tool.type!r} cannot be sent to Claude"
            raise invalid(f"tools[{i}]", why)
        out: dict[str, Any] = {"name": function.name}
        if function.description:
            out["description"] = function.description
        out["input_schema"] = function.parameters or {"type": "object", "properties": {}}
        if tool.cache_control is not None:
            out["cache_control"] = tool.cache_control
        tools.append(out)
    return tools


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
        if mapped is None:
            raise InvalidRequestError(f"Invalid 'tool_choice': {choice!r}.", param="tool_choice")
        return {"type": mapped}
    if choice.type == "function" and choice.function is not None:
        return {"type": "tool", "name": choice.function.name}
    raise InvalidRequestError(
        f"Invalid 'tool_choice': type {choice.type!r} cannot be sent to Claude.",
        param="tool_choice",
    )


def json_tool_schema(request: ChatRequest) -> tuple[str, dict[str, Any], bool]:
    """What the tool standing in for ``response_format`` declares — its description and
    input schema — and whether the schema was wrapped (a tool's input is an object). Claude
    on Anthropic's API and on Bedrock take the same tool, each in its API's shape."""
    response_format = request.response_format
    assert response_format is not None
    if response_format.type not in ("json_schema", "json_object"):
        raise InvalidRequestError(
            f"Invalid 'response_format.type': {response_format.type!r}.",
            param="response_format",
        )
    spec = response_format.json_schema
    schema = spec.schema if spec is not None and spec.schema is not None else None
    wrapped = False
    if schema is None:
        schema = {"type": "object", "additionalProperties": True}
    elif schema.get("type") != "object":  # a tool's input is an object: wrap anything else
        schema = {"type": "object", "properties": {"values": schema}, "required": ["values"]}
        wrapped = True
    description = (spec.description if spec is not None else None) or (
        "Give your answer as this tool's input, in the JSON schema it declares."
    )
    return description, schema, wrapped


def _json_tool(request: ChatRequest) -> tuple[dict[str, Any], bool]:
    """The tool standing in for ``response_format``; whether its schema was wrapped."""
    description, schema, wrapped = json_tool_schema(request)
    return {"name": JSON_TOOL, "description": description, "input_schema": schema}, wrapped


def claude_thinking(request: ChatRequest, max_tokens: int | None) -> dict[str, Any] | None:
    """Claude's ``thinking`` for a request: its own parameter as given, or a budget for its
    ``reasoning_effort`` (below ``max_tokens``, which it is part of, when that is known)."""
    if request.thinking is not None:
        return request.thinking  # Anthropic's own parameter: passed on as given
    effort = request.reasoning_effort
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGETS.get(effort)
    if budget is None:
        raise InvalidRequestError(
            f"Invalid 'reasoning_effort': {effort!r}.", param="reasoning_effort"
        )
    if max_tokens is not None:
        budget = min(budget, max_tokens - 1)  # the budget is part of max_tokens, and below it
    if budget < MIN_THINKING_BUDGET:
        raise InvalidRequestError(
            f"reasoning_effort needs max_completion_tokens above {MIN_THINKING_BUDGET} on "
            f"Claude models (the smallest thinking budget is {MIN_THINKING_BUDGET} tokens).",
            param="reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}
