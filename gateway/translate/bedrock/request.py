"""OpenAI chat request -> Bedrock Converse request (``chat_to_converse``).

The model is not in the body: it names the URL (``/model/{modelId}/converse``). System
and developer messages become ``system`` blocks; consecutive messages of one role merge
into one turn (Converse wants turns to alternate); tool results go into the next user
turn as ``toolResult`` blocks; images and documents travel as base64 (``bytes``) or as
an ``s3://`` location, never fetched by the gateway; ``response_format`` becomes a tool
the model is made to call (``JSON_TOOL``, as for Anthropic), whose input comes back as
the content; ``reasoning_effort`` becomes Claude's thinking budget, in
``additionalModelRequestFields``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ...core.errors import InvalidRequestError
from ..anthropic.request import JSON_TOOL, claude_thinking, json_tool_schema
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

# The tool standing in for response_format (JSON_TOOL) and the thinking budgets are
# Claude's, as on Anthropic's API: imported from ..anthropic.request.
# When thinking and the request sets no max_tokens: the answer's room beyond the budget.
THINKING_ANSWER_TOKENS = 4096
IMAGE_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/plain": "txt",
    "text/html": "html",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
CACHE_POINT = {"cachePoint": {"type": "default"}}
# What Converse takes as a document's name: letters, digits, whitespace, hyphens,
# parentheses, square brackets (no whitespace twice in a row).
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9\s\-\(\)\[\]]+")
_SPACES = re.compile(r"\s+")


class Facts(msgspec.Struct, kw_only=True):
    """What translating the answer needs to know about the request."""

    model: str
    stream: bool = False
    include_usage: bool = False
    json_tool: bool = False  # the JSON_TOOL stands in for response_format
    json_wrapped: bool = False  # ...its schema wrapped as {"values": schema}


def is_claude(model: str) -> bool:
    """Whether a model id (or inference profile, or ARN) names an Anthropic Claude model."""
    return "anthropic." in model or "claude" in model


# ================================================================= OpenAI -> Converse


def chat_to_converse(body: bytes) -> tuple[bytes, Facts]:
    """An OpenAI chat request as a Converse request body (the model goes in the URL)."""
    request = decode_chat(body)
    if request.n not in (None, 1):
        raise InvalidRequestError("Bedrock models give one choice: 'n' must be 1.", param="n")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        role = message.role
        if role in ("system", "developer"):
            system += _system_blocks(message, where)
        elif role == "user":
            blocks = [_user_block(p, f"{where}.content[{j}]", j) for j, p in _parts(message)]
            _add_turn(turns, "user", _cached([b for b in blocks if b is not None], message))
        elif role == "assistant":
            _add_turn(turns, "assistant", _cached(_assistant_blocks(message, where), message))
        elif role == "tool":
            result = {
                "toolResult": {
                    "toolUseId": message.tool_call_id or "",
                    "content": [{"text": _tool_result_text(message)}],
                }
            }
            _add_turn(turns, "user", [result])
        else:
            raise InvalidRequestError(
                f"Invalid '{where}.role': {role!r} cannot be sent to a Bedrock model.",
                param="messages",
            )
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = system
    facts = Facts(model=request.model, stream=bool(request.stream))
    facts.include_usage = bool(request.stream) and request.include_usage
    claude = is_claude(request.model)
    max_tokens = request.max_completion_tokens or request.max_tokens
    thinking = claude_thinking(request, max_tokens) if claude else None
    thinks = thinking is not None and thinking.get("type") != "disabled"
    budget = thinking.get("budget_tokens") if thinking is not None else None
    if max_tokens is None and isinstance(budget, int):
        max_tokens = budget + THINKING_ANSWER_TOKENS
    inference = _inference(request, max_tokens, thinks)
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(request, facts, thinks)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    extra: dict[str, Any] = {}
    if thinking is not None:
        extra["thinking"] = thinking
    elif claude and request.top_k is not None:
        extra["top_k"] = request.top_k
    if extra:
        out["additionalModelRequestFields"] = extra
    return _encode(out), facts


def _parts(message: Message) -> list[tuple[int, Part]]:
    return list(enumerate(message_parts(message)))


def _add_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append a message's blocks, merged into the last turn when it has the same role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _cached(blocks: list[dict[str, Any]], message: Message) -> list[dict[str, Any]]:
    """A message's ``cache_control`` marker as a cache point after its last block."""
    if blocks and message.cache_control is not None:
        blocks.append(CACHE_POINT)
    return blocks


def _system_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in _parts(message):
        if part.type != "text":
            raise invalid(f"{where}.content[{j}]", f"a {message.role} message takes text only")
        if part.text:
            blocks.append({"text": part.text})
            if part.cache_control is not None:
                blocks.append(CACHE_POINT)
    return _cached(blocks, message)


def _user_block(part: Part, where: str, position: int) -> dict[str, Any] | None:
    kind = part.type
    if kind == "text":
        return {"text": part.text} if part.text else None  # Converse refuses blank text
    if kind == "image_url" and part.image_url is not None:
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        return {"image": _image(url, where)}
    if kind == "file" and part.file is not None:
        return {"document": _document(part, where, position)}
    if kind == "input_audio":
        raise invalid(where, "audio input cannot be sent to Bedrock through this gateway")
    raise invalid(where, f"content parts of type {kind!r} cannot be sent to Bedrock")


def _image(url: str, where: str) -> dict[str, Any]:
    parsed = data_url(url)
    if parsed is not None:
        media_type, data = parsed
        image_format = IMAGE_FORMATS.get(media_type)
        if image_format is None:
            raise invalid(where, f"images of type {media_type} cannot be sent to Bedrock")
        return {"format": image_format, "source": {"bytes": data}}
    if url.startswith("s3://"):
        extension = url.rsplit(".", 1)[-1].lower()
        image_format = "jpeg" if extension == "jpg" else extension
        if image_format not in IMAGE_FORMATS.values():
            raise invalid(where, "an S3 image must end in .png, .jpg, .jpeg, .gif or .webp")
        return {"format": image_format, "source": {"s3Location": {"uri": url}}}
    raise invalid(where, "an image for Bedrock must be a base64 data URL or an s3:// URI")


def _document(part: Part, where: str, position: int) -> dict[str, Any]:
    file = part.file
    assert file is not None
    parsed = data_url(file.file_data) if file.file_data else None
    if parsed is None:
        raise invalid(where, "a file must be sent as file_data (a base64 data URL)")
    media_type, data = parsed
    document_format = DOCUMENT_FORMATS.get(media_type)
    if document_format is None:
        raise invalid(where, f"files of type {media_type} cannot be sent to Bedrock")
    return {
        "format": document_format,
        "name": _document_name(file.filename, position),
        "source": {"bytes": data},
    }


def _document_name(filename: str | None, position: int) -> str:
    """A name Converse takes: the file's, less its extension and the characters it refuses."""
    stem = (filename or "").rsplit(".", 1)[0]
    name = _SPACES.sub(" ", _NAME_UNSAFE.sub("-", stem)).strip()[:200]
    return name or f"document-{position + 1}"


def _assistant_blocks(message: Message, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for thought in message.thinking_blocks or ():  # Claude's signed thinking, handed back
        if thought.get("type") == "thinking":
            text = {"text": thought.get("thinking") or ""}
            if thought.get("signature"):
                text["signature"] = thought["signature"]
            blocks.append({"reasoningContent": {"reasoningText": text}})
        elif thought.get("type") == "redacted_thinking" and thought.get("data"):
            blocks.append({"reasoningContent": {"redactedContent": thought["data"]}})
    for j, part in _parts(message):
        if part.type == "text":
            if part.text:
                blocks.append({"text": part.text})
        elif part.type != "refusal":
            raise invalid(f"{where}.content[{j}]", "an assistant message takes text only")
    for call in message.tool_calls or ():
        tool_use = {
            "toolUseId": call.id,
            "name": call.function.name,
            "input": tool_arguments(call.function.arguments),
        }
        blocks.append({"toolUse": tool_use})
    return blocks


def _tool_result_text(message: Message) -> str:
    content = message.content
    if isinstance(content, str) or content is None:
        text = content or ""
    else:
        text = "".join(p.text or "" for p in content if p.type == "text")
    return text or " "  # Converse refuses an empty text block


def _inference(request: ChatRequest, max_tokens: int | None, thinking: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    if thinking:
        # With thinking on, Claude refuses temperature, and top_p below 0.95.
        if request.top_p is not None and request.top_p >= 0.95:
            config["topP"] = request.top_p
    else:
        if request.temperature is not None:
            config["temperature"] = min(max(request.temperature, 0.0), 1.0)  # OpenAI's reaches 2
        if request.top_p is not None:
            config["topP"] = request.top_p
    if request.stops:
        config["stopSequences"] = request.stops
    return config


def _tool_config(request: ChatRequest, facts: Facts, thinking: bool) -> dict[str, Any] | None:
    choice = _tool_choice(request)
    tools: list[dict[str, Any]] = []
    if choice != "none":
        for i, tool in enumerate(request.tools or ()):
            function = tool.function
            if tool.type != "function" or function is None:
                why = f"tools of type {tool.type!r} cannot be sent to Bedrock"
                raise invalid(f"tools[{i}]", why)
            spec: dict[str, Any] = {"name": function.name}
            if function.description:
                spec["description"] = function.description
            schema = function.parameters or {"type": "object", "properties": {}}
            spec["inputSchema"] = {"json": schema}
            tools.append({"toolSpec": spec})
            if tool.cache_control is not None:
                tools.append(CACHE_POINT)
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        spec, facts.json_wrapped = _json_tool(request)
        tools.append({"toolSpec": spec})
        facts.json_tool = True
        if not request.tools and not thinking:  # Claude refuses forcing a tool while thinking
            choice = {"tool": {"name": JSON_TOOL}}
    if not tools:
        return None
    config: dict[str, Any] = {"tools": tools}
    if isinstance(choice, dict):
        config["toolChoice"] = choice
    return config


def _tool_choice(request: ChatRequest) -> dict[str, Any] | str | None:
    """Converse's ``toolChoice``, ``"none"`` (no tools sent), or ``None`` (its default)."""
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice == "none":
            return "none"
        if choice == "auto":
            return {"auto": {}}
        if choice == "required":
            return {"any": {}}
        raise InvalidRequestError(f"Invalid 'tool_choice': {choice!r}.", param="tool_choice")
    if choice.type == "function" and choice.function is not None:
        return {"tool": {"name": choice.function.name}}
    raise InvalidRequestError(
        f"Invalid 'tool_choice': type {choice.type!r} cannot be sent to Bedrock.",
        param="tool_choice",
    )


def _json_tool(request: ChatRequest) -> tuple[dict[str, Any], bool]:
    """The tool standing in for ``response_format`` (Claude's, in Converse's shape)."""
    description, schema, wrapped = json_tool_schema(request)
    tool = {"name": JSON_TOOL, "description": description, "inputSchema": {"json": schema}}
    return tool, wrapped
