"""OpenAI chat ⇄ Anthropic Messages, both ways.

To Anthropic (an OpenAI client, a Claude model): ``chat_to_messages`` turns a chat
request into a Messages request; ``message_to_chat`` turns the answer back into a
``chat.completion``; ``MessagesStream`` turns Anthropic's event stream into
``chat.completion.chunk`` events as it arrives; ``error_to_openai`` turns an error.

From Anthropic (an Anthropic client at ``/v1/messages``, any other model):
``messages_to_chat`` turns a Messages request into a chat request; ``chat_to_message``
and ``ChatStream`` turn the answer and the stream back; ``anthropic_error`` writes an
error in Anthropic's shape.

Choices made where the APIs differ (the README's provider table lists them):
system and developer messages become the ``system`` blocks, wherever they stood;
consecutive messages of one role merge into one turn (Anthropic wants turns to
alternate); tool results go into the next user turn; ``response_format`` with a schema
becomes a tool the model is made to call (``JSON_TOOL``), whose input comes back as the
content; ``reasoning_effort`` becomes a thinking budget; usage counts cache reads and
writes into ``prompt_tokens`` (OpenAI's prompt count includes cached tokens).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..core.errors import InvalidRequestError, UpstreamStatusError
from ..core.outcome import Usage
from ..wire.endpoints import decode_json
from ..wire.sse import EventSplitter
from .openai import (
    DONE,
    ROLE,
    ChatRequest,
    ChunkWriter,
    Message,
    Part,
    arguments_text,
    completion,
    data_url,
    decode_chat,
    event_data,
    invalid,
    message_parts,
    status_error,
    tool_arguments,
    upstream_said,
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

# The tool that stands in for OpenAI's response_format (the name LiteLLM uses too).
JSON_TOOL = "json_tool_call"
# reasoning_effort -> Anthropic's thinking budget (LiteLLM's defaults; 1024 is the least).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}
MIN_THINKING_BUDGET = 1024
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

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
    thinking = _thinking(request, max_tokens)
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


def _json_tool(request: ChatRequest) -> tuple[dict[str, Any], bool]:
    """The tool standing in for ``response_format``; whether its schema was wrapped."""
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
    return {"name": JSON_TOOL, "description": description, "input_schema": schema}, wrapped


def _thinking(request: ChatRequest, max_tokens: int) -> dict[str, Any] | None:
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
    budget = min(budget, max_tokens - 1)  # the budget is part of max_tokens, and below it
    if budget < MIN_THINKING_BUDGET:
        raise InvalidRequestError(
            f"reasoning_effort needs max_completion_tokens above {MIN_THINKING_BUDGET} on "
            f"Claude models (the smallest thinking budget is {MIN_THINKING_BUDGET} tokens).",
            param="reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}


# ============================================================== Anthropic -> OpenAI


class _OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class _Usage(msgspec.Struct):
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
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    type: str = ""
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    stop_reason: str | None = None


class _Error(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _Event(msgspec.Struct):
    """Any stream event: only the fields of its type are there."""

    type: str = ""
    message: _Message | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_event = msgspec.json.Decoder(_Event).decode


def usage_of(usage: _Usage) -> Usage:
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


def _unwrapped(arguments: str) -> str:
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
                answer = _unwrapped(arguments) if facts.json_wrapped else arguments
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


_TOOL_START = (
    b'{"tool_calls":[{"index":%d,"id":%s,"type":"function","function":{"name":%s,"arguments":""}}]}'
)
_TOOL_ARGUMENTS = b'{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}'


class MessagesStream:
    """Anthropic's event stream in, OpenAI's chunk events out, read by read.

    ``feed`` takes whatever bytes arrived (events may straddle reads) and returns the
    OpenAI events they complete; nothing waits for the stream to end. Tool calls get
    OpenAI indices in the order they start (Anthropic's block indices count text blocks
    too). ``usage`` is known once ``message_delta`` arrived; ``failure`` is set by an
    ``error`` event (the stream is over then); ``finish()`` says whether it ended whole.
    """

    __slots__ = (
        "_args_seen",
        "_facts",
        "_json_blocks",
        "_json_parts",
        "_splitter",
        "_start_usage",
        "_tool_calls",
        "_tools",
        "_writer",
        "failure",
        "finished",
        "usage",
    )

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._splitter = EventSplitter()
        self._writer: ChunkWriter | None = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._tool_calls = 0  # real tool calls (not the JSON tool) seen
        self._args_seen: set[int] = set()
        self._json_blocks: set[int] = set()
        self._json_parts: list[str] = []  # a wrapped JSON answer, held until its block ends
        self._start_usage: _Usage | None = None
        self.usage: Usage | None = None
        self.failure: UpstreamStatusError | None = None
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._splitter.feed(data):
            if self.finished or self.failure is not None:
                break
            payload = event_data(raw)
            if payload is not None:
                self._event(payload, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the upstream's bytes: an event that lacked its blank line."""
        out: list[bytes] = []
        rest = self._splitter.flush()
        if rest is not None and not self.finished and self.failure is None:
            payload = event_data(rest)
            if payload is not None:
                self._event(payload, out)
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """Whether the stream ended as Anthropic ends one (``message_stop``, or an error)."""
        return self.finished or self.failure is not None

    def _writer_for(self, ident: str = "", model: str = "") -> ChunkWriter:
        writer = self._writer
        if writer is None:
            writer = self._writer = ChunkWriter(ident or "msg", model or self._facts.model)
        return writer

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        try:
            event = _decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not an event this translation knows: a ping's kin, or a future one
        kind = event.type
        if kind == "content_block_delta":
            self._delta(event, out)
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "content_block_stop":
            self._block_stop(event.index, out)
        elif kind == "message_start" and event.message is not None:
            message = event.message
            self._start_usage = message.usage
            out.append(self._writer_for(message.id, message.model).delta(ROLE))
        elif kind == "message_delta":
            self._message_delta(event, out)
        elif kind == "message_stop":
            writer = self._writer_for()
            if self._facts.include_usage and self.usage is not None:
                out.append(writer.usage(self.usage))
            out.append(DONE)
            self.finished = True
        elif kind == "error":
            error = event.error or _Error()
            self.failure = _failure(error.type, error.message)

    def _delta(self, event: _Event, out: list[bytes]) -> None:
        delta = event.delta
        if delta is None:
            return
        index = event.index
        if delta.type == "text_delta":
            if delta.text:
                out.append(self._writer_for().text(delta.text))
        elif delta.type == "input_json_delta":
            fragment = delta.partial_json
            if not fragment:
                return
            if index in self._json_blocks:
                if self._facts.json_wrapped:
                    self._json_parts.append(fragment)
                else:
                    out.append(self._writer_for().text(fragment))
            elif index in self._tools:
                self._args_seen.add(index)
                delta_json = _TOOL_ARGUMENTS % (self._tools[index], _encode(fragment))
                out.append(self._writer_for().delta(delta_json))
        elif delta.type == "thinking_delta" and delta.thinking:
            thought = b'{"reasoning_content":%s}' % _encode(delta.thinking)
            out.append(self._writer_for().delta(thought))

    def _block_start(self, event: _Event, out: list[bytes]) -> None:
        block = event.content_block
        if block is None:
            return
        index = event.index
        if block.type == "text":
            if block.text:
                out.append(self._writer_for().text(block.text))
        elif block.type == "tool_use":
            if self._facts.json_tool and block.name == JSON_TOOL:
                self._json_blocks.add(index)
                return
            position = self._tools[index] = len(self._tools)
            self._tool_calls += 1
            start = _TOOL_START % (position, _encode(block.id or ""), _encode(block.name or ""))
            out.append(self._writer_for().delta(start))
            given = bytes(block.input) if block.input else b""
            if given.strip() not in (b"", b"{}"):  # the whole input at once: a proxy's way
                self._args_seen.add(index)
                out.append(
                    self._writer_for().delta(_TOOL_ARGUMENTS % (position, _encode(given.decode())))
                )

    def _block_stop(self, index: int, out: list[bytes]) -> None:
        if index in self._tools and index not in self._args_seen:
            # No argument came: the call has none. Say so, as OpenAI would ("{}").
            self._args_seen.add(index)
            out.append(self._writer_for().delta(_TOOL_ARGUMENTS % (self._tools[index], b'"{}"')))
        elif index in self._json_blocks and self._json_parts:
            answer = _unwrapped("".join(self._json_parts))
            self._json_parts = []
            out.append(self._writer_for().text(answer))

    def _message_delta(self, event: _Event, out: list[bytes]) -> None:
        self.usage = usage_of(_merged(self._start_usage or _Usage(), event.usage))
        reason = event.delta.stop_reason if event.delta is not None else None
        finish = FINISH_REASONS.get(reason or "", "stop")
        if finish == "tool_calls" and self._json_blocks and not self._tool_calls:
            finish = "stop"
        out.append(self._writer_for().delta(b"{}", finish))


def _either(value: int | None, default: int | None) -> int | None:
    return default if value is None else value


# ----------------------------------------------------------------------------- errors

# Anthropic's error types, and the HTTP status each comes with.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Anthropic's words for a prompt longer than the model's context window.
_TOO_LONG = re.compile(r"prompt is too long|exceed context limit|context window", re.IGNORECASE)


class _ErrorEnvelope(msgspec.Struct):
    error: _Error | None = None


_decode_error = msgspec.json.Decoder(_ErrorEnvelope).decode


class AnthropicStatusError(UpstreamStatusError):
    """An Anthropic error, in OpenAI's shape for the retry loop and OpenAI clients, that
    keeps Anthropic's own answer (``upstream_status``, ``upstream_body``) for Anthropic
    clients at ``/v1/messages``."""

    upstream_status: int | None = None
    upstream_body: bytes | None = None


def _failure(kind: str, message: str, status: int | None = None) -> AnthropicStatusError:
    """Anthropic's error as the gateway's: an overload (529) is a 503, to be retried like
    one; a prompt too long for the model says so (``too_long``), for context fallbacks."""
    if status is None:
        status = ERROR_STATUS.get(kind, 500)
    if status == 529 or kind == "overloaded_error":
        status = 503
    too_long = status == 400 and _TOO_LONG.search(message) is not None
    return status_error(status, message, kind, too_long, AnthropicStatusError)


def error_to_openai(status: int, content: bytes) -> AnthropicStatusError:
    """An Anthropic error answer (any status) as the gateway's error, in OpenAI's shape."""
    try:
        error = _decode_error(content).error
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        error = None
    if error is None:
        failure = _failure(f"upstream_{status}", upstream_said(status, content), status)
    else:
        failure = _failure(error.type, error.message, status)
        failure.upstream_body = content
    failure.upstream_status = status
    return failure


class _MessageUsage(msgspec.Struct):
    usage: _Usage | None = None


_decode_message_usage = msgspec.json.Decoder(_MessageUsage).decode


def usage_of_message(content: bytes) -> Usage | None:
    """The usage of a whole Anthropic Message (``None`` for other answers: count_tokens)."""
    try:
        usage = _decode_message_usage(content).usage
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return None if usage is None else usage_of(usage)


def _event_at(data: bytes, position: int) -> _Event | None:
    """The event whose data line holds ``position``."""
    start = data.rfind(b"data:", 0, position)
    if start == -1:
        return None
    end = data.find(b"\n", position)
    try:
        return _decode_event(data[start + 5 : end if end != -1 else len(data)])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def usage_of_stream(head: bytes, tail: bytes) -> Usage | None:
    """The usage of an Anthropic stream from its first bytes (``message_start``: the input
    counts) and its last (``message_delta``: the output, and newer streams' input too)."""
    at = head.find(b'"message_start"')
    start = _event_at(head, at) if at != -1 else None
    at = tail.rfind(b'"message_delta"')
    end = _event_at(tail, at) if at != -1 else None
    begun = start.message.usage if start is not None and start.message is not None else None
    late = end.usage if end is not None else None
    if begun is None and late is None:
        return None
    return usage_of(_merged(begun or _Usage(), late))


def _merged(start: _Usage, late: _Usage | None) -> _Usage:
    """Counts are cumulative: the input counts are in message_start, and newer streams
    repeat them in message_delta (the non-null ones count, as the SDK takes them)."""
    if late is None:
        return start
    return _Usage(
        input_tokens=_either(late.input_tokens, start.input_tokens),
        output_tokens=_either(late.output_tokens, start.output_tokens),
        cache_creation_input_tokens=_either(
            late.cache_creation_input_tokens, start.cache_creation_input_tokens
        ),
        cache_read_input_tokens=_either(
            late.cache_read_input_tokens, start.cache_read_input_tokens
        ),
        output_tokens_details=late.output_tokens_details or start.output_tokens_details,
    )


# ============================================================== Anthropic -> OpenAI
# (the front door: an Anthropic client, a model that is not Claude)


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


# ------------------------------------------------------------------ the answer, back


class _OAIDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None


class _OAIUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _OAIDetails | None = None


class _OAIFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _OAIToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _OAIFunction | None = None


class _OAIMessage(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_OAIToolCall] | None = None


class _OAIChoice(msgspec.Struct):
    message: _OAIMessage | None = None
    delta: _OAIMessage | None = None
    finish_reason: str | None = None


class _OAIError(msgspec.Struct):
    message: str | None = None
    type: str | None = None


class _OAIAnswer(msgspec.Struct):
    id: str = ""
    model: str = ""
    choices: list[_OAIChoice] = []
    usage: _OAIUsage | None = None
    error: _OAIError | str | None = None


_decode_oai = msgspec.json.Decoder(_OAIAnswer).decode


def _anthropic_usage(usage: _OAIUsage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.prompt_tokens_details or _OAIDetails()
    read = details.cached_tokens or 0
    write = details.cache_creation_tokens or 0
    return {
        "input_tokens": max(usage.prompt_tokens - read - write, 0),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }


def chat_to_message(content: bytes, model: str) -> bytes:
    """A ``chat.completion`` as an Anthropic Message."""
    answer = _decode_oai(content)
    choice = answer.choices[0] if answer.choices else _OAIChoice()
    message = choice.message or _OAIMessage()
    blocks: list[dict[str, Any]] = []
    if message.reasoning_content:
        blocks.append({"type": "thinking", "thinking": message.reasoning_content, "signature": ""})
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls or ():
        function = call.function or _OAIFunction()
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
        "usage": _anthropic_usage(answer.usage),
    }
    return _encode(out)


def _sse(kind: bytes, payload: bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind, payload)


_TEXT_DELTA = b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%s}}'
_JSON_DELTA = (
    b'{"type":"content_block_delta","index":%d,"delta":{"type":"input_json_delta",'
    b'"partial_json":%s}}'
)
_THINKING_DELTA = (
    b'{"type":"content_block_delta","index":%d,"delta":{"type":"thinking_delta","thinking":%s}}'
)


# The error types of a stream's last words (the gateway's, or an upstream's) in Anthropic's.
_FRONT_ERROR_TYPES = {
    "timeout_error": "timeout_error",
    "rate_limit_error": "rate_limit_error",
    "invalid_request_error": "invalid_request_error",
}


class ChatStream:
    """OpenAI's chunk events in, Anthropic's stream events out, read by read.

    ``message_start`` leaves with the first chunk; text, reasoning and each tool call
    become content blocks, opened and closed in order; the last ``message_delta`` carries
    the stop reason and the usage (the request asked for usage: OpenAI sends it last).
    An OpenAI error event becomes an ``error`` event.
    """

    __slots__ = (
        "_blocks",
        "_model",
        "_open",
        "_open_kind",
        "_splitter",
        "_started",
        "_stop",
        "_tools",
        "_usage",
        "done",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._splitter = EventSplitter()
        self._started = False
        self._blocks = 0  # content blocks opened so far
        self._open: int | None = None  # the open block's index
        self._open_kind = ""  # "text", "thinking", or "tool"
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._stop = "end_turn"
        self._usage: _OAIUsage | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._splitter.feed(data):
            if self.done:
                break
            payload = event_data(raw)
            if payload is None:
                continue
            if payload == b"[DONE]":
                self._end(out)
                continue
            try:
                chunk = _decode_oai(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            self._chunk(chunk, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the stream: close what is open (an upstream that sent no
        ``[DONE]`` but ended cleanly still gets a whole Anthropic stream)."""
        out: list[bytes] = []
        if not self.done:
            self._end(out)
        return b"".join(out)

    def _start(self, chunk: _OAIAnswer, out: list[bytes]) -> None:
        self._started = True
        message = {
            "id": chunk.id or "msg",
            "type": "message",
            "role": "assistant",
            "model": chunk.model or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(_sse(b"message_start", _encode({"type": "message_start", "message": message})))

    def _chunk(self, chunk: _OAIAnswer, out: list[bytes]) -> None:
        if chunk.error is not None:
            error = chunk.error
            if isinstance(error, str):
                message, kind = error, "api_error"
            else:
                message = error.message or "The upstream failed."
                kind = _FRONT_ERROR_TYPES.get(error.type or "", "api_error")
            out.append(_sse(b"error", anthropic_error(500, message, kind)))
            self.done = True
            return
        if not self._started:
            self._start(chunk, out)
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta is not None:
                if delta.reasoning_content:
                    index = self._block("thinking", out)
                    out.append(
                        _sse(
                            b"content_block_delta",
                            _THINKING_DELTA % (index, _encode(delta.reasoning_content)),
                        )
                    )
                if delta.content:
                    index = self._block("text", out)
                    out.append(
                        _sse(b"content_block_delta", _TEXT_DELTA % (index, _encode(delta.content)))
                    )
                for call in delta.tool_calls or ():
                    self._tool_delta(call, out)
            if choice.finish_reason:
                self._stop = STOP_REASONS.get(choice.finish_reason, "end_turn")

    def _block(self, kind: str, out: list[bytes]) -> int:
        """The open block of this kind, opened (and the previous one closed) if need be."""
        if self._open is not None and self._open_kind == kind:
            return self._open
        self._close(out)
        index = self._open = self._blocks
        self._blocks += 1
        self._open_kind = kind
        block = (
            {"type": "text", "text": ""}
            if kind == "text"
            else {
                "type": "thinking",
                "thinking": "",
                "signature": "",
            }
        )
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_sse(b"content_block_start", _encode(start)))
        return index

    def _tool_delta(self, call: _OAIToolCall, out: list[bytes]) -> None:
        function = call.function or _OAIFunction()
        index = self._tools.get(call.index)
        if index is None:
            self._close(out)
            index = self._tools[call.index] = self._open = self._blocks
            self._blocks += 1
            self._open_kind = "tool"
            block = {
                "type": "tool_use",
                "id": call.id or f"toolu_{index}",
                "name": function.name or "",
                "input": {},
            }
            start = {"type": "content_block_start", "index": index, "content_block": block}
            out.append(_sse(b"content_block_start", _encode(start)))
        if function.arguments:
            out.append(
                _sse(b"content_block_delta", _JSON_DELTA % (index, _encode(function.arguments)))
            )

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            stop = b'{"type":"content_block_stop","index":%d}' % self._open
            out.append(_sse(b"content_block_stop", stop))
            self._open = None

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(_OAIAnswer(), out)
        self._close(out)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": _anthropic_usage(self._usage),
        }
        out.append(_sse(b"message_delta", _encode(delta)))
        out.append(_sse(b"message_stop", b'{"type":"message_stop"}'))
        self.done = True


# ----------------------------------------------------------------------------- errors


def anthropic_error_type(status: int) -> str:
    """The error ``type`` Anthropic uses for a status."""
    for kind, code in ERROR_STATUS.items():
        if code == status:
            return kind
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error(status: int, message: str, kind: str | None = None) -> bytes:
    """An error body in Anthropic's shape."""
    error = {"type": kind or anthropic_error_type(status), "message": message}
    return _encode({"type": "error", "error": error})


def openai_error_to_anthropic(status: int, content: bytes) -> bytes:
    """An OpenAI-shaped error body (the gateway's, or an upstream's) in Anthropic's."""
    try:
        error = _decode_oai(content).error
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        error = None
    if isinstance(error, str):
        message = error
    elif error is not None and error.message:
        message = error.message
    else:
        text = content[:500].decode("utf-8", "replace").strip()
        message = text or f"Error {status}."
    return anthropic_error(status, message)
