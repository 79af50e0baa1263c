"""OpenAI chat completions, the hub: its shapes as the translators read and write them.

A translating provider reads the OpenAI request a client sent (``ChatRequest``: the
fields a translation reads, decoded once and validated, with the prompt-caching and
reasoning extensions clients send to gateways) and writes OpenAI answers back: a whole
``chat.completion`` (``completion()``), or ``chat.completion.chunk`` events as the
upstream's stream arrives (``ChunkWriter``, which writes each event's bytes around a
delta without building a dict per event). Usage is written in OpenAI's terms, the
prompt-cache writes as ``prompt_tokens_details.cache_creation_tokens`` (as LiteLLM does).
"""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

import msgspec

from ..core.errors import ErrorBody, ErrorEnvelope, InvalidRequestError, UpstreamStatusError
from ..core.outcome import Usage
from ..wire.endpoints import decode_json

__all__ = [
    "DONE",
    "ROLE",
    "ChatAnswer",
    "ChatChoice",
    "ChatDetails",
    "ChatError",
    "ChatFunction",
    "ChatReply",
    "ChatRequest",
    "ChatToolCall",
    "ChatUsage",
    "ChunkWriter",
    "Message",
    "Part",
    "arguments_text",
    "completion",
    "data_url",
    "decode_chat",
    "decode_chat_answer",
    "event_data",
    "invalid",
    "message_parts",
    "openai_error_type",
    "status_error",
    "tool_arguments",
    "upstream_said",
    "usage_json",
    "usage_of_completion",
]

_encode = msgspec.json.Encoder().encode

# ------------------------------------------------------------------------- the request


class ImageURL(msgspec.Struct, kw_only=True):
    url: str
    detail: str | None = None


class FileRef(msgspec.Struct, kw_only=True):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class Part(msgspec.Struct, kw_only=True):
    """One content part: ``text``, ``image_url``, ``file``, ``input_audio``…"""

    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None
    file: FileRef | None = None
    input_audio: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None  # Anthropic's prompt-caching marker


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, kw_only=True):
    id: str = ""
    type: str = "function"
    function: FunctionCall


class Message(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    cache_control: dict[str, Any] | None = None
    # An earlier answer's thinking, handed back (LiteLLM's names): Anthropic wants its
    # signed thinking blocks again, unchanged, when tool calls follow them.
    thinking_blocks: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class FunctionDefinition(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    type: str = "function"
    function: FunctionDefinition | None = None
    cache_control: dict[str, Any] | None = None


class NamedFunction(msgspec.Struct, kw_only=True):
    name: str


class ToolChoice(msgspec.Struct, kw_only=True):
    type: str
    function: NamedFunction | None = None


class JSONSchema(msgspec.Struct, kw_only=True):
    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: str
    json_schema: JSONSchema | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct, kw_only=True):
    """The fields of a chat completion request that a translation reads."""

    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's; Anthropic and Gemini take it
    n: int | None = None
    stop: str | list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    thinking: dict[str, Any] | None = None  # not OpenAI's: Anthropic's own, passed on
    user: str | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage is True

    @property
    def stops(self) -> list[str]:
        stop = self.stop
        return [stop] if isinstance(stop, str) else list(stop or ())


_decode_chat = msgspec.json.Decoder(ChatRequest).decode

# The first delta of an answer's stream: who speaks.
ROLE = b'{"role":"assistant","content":""}'


def decode_chat(body: bytes) -> ChatRequest:
    """The request as a ``ChatRequest``, or a 400 naming what is wrong."""
    return decode_json(_decode_chat, body)


def openai_error_type(status: int) -> str:
    """The error ``type`` OpenAI uses for a status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


E = TypeVar("E", bound=UpstreamStatusError)


def status_error(
    status: int, message: str, code: str | None, too_long: bool, kind: type[E] = UpstreamStatusError
) -> E:
    """An upstream's error answer as the gateway's error, in OpenAI's shape; one that
    says the prompt was too long for the model is ``context_length_exceeded``."""
    code = "context_length_exceeded" if too_long else code
    body = _encode(ErrorEnvelope(ErrorBody(message, openai_error_type(status), None, code)))
    headers = [("content-type", "application/json")]
    return kind(status, headers, body, too_long=too_long, message=message)


def upstream_said(status: int, content: bytes) -> str:
    """An error answer the gateway cannot read, as a message: its status and first bytes."""
    text = content[:500].decode("utf-8", "replace").strip()
    return f"The upstream answered {status}" + (f": {text}" if text else ".")


def invalid(where: str, why: str) -> InvalidRequestError:
    """A 400 for a request that cannot be said to the upstream, naming the top-level param."""
    param = re.split(r"[.\[]", where, maxsplit=1)[0]
    return InvalidRequestError(f"Invalid '{where}': {why}.", param=param)


def message_parts(message: Message) -> list[Part]:
    """A message's content as parts (a string is one text part)."""
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [Part(type="text", text=content)]
    return content


def arguments_text(raw: msgspec.Raw | None) -> str:
    """A tool call's arguments, sent as a JSON object, as OpenAI's arguments string."""
    return bytes(raw).decode() if raw else "{}"


def tool_arguments(arguments: str) -> dict[str, Any]:
    """A tool call's arguments (a JSON string) as an object; ``{}`` for anything else,
    as OpenAI's own SDKs treat arguments they cannot read."""
    try:
        value = msgspec.json.decode(arguments) if arguments else {}
    except (msgspec.DecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*?;base64,", re.ASCII)


def data_url(url: str) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a ``data:<type>;base64,<data>`` URL, else ``None``."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    return match.group(1) or "application/octet-stream", url[match.end() :]


# -------------------------------------------------------------------------- the answer


def usage_json(usage: Usage) -> dict[str, Any]:
    """``usage`` as OpenAI writes it (cached and reasoning tokens in their details)."""
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_creation_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion(ident: str, model: str, choices: list[dict[str, Any]], usage: Usage | None) -> bytes:
    """A whole ``chat.completion``."""
    answer: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        answer["usage"] = usage_json(usage)
    return _encode(answer)


DONE = b"data: [DONE]\n\n"
_FINISH = {
    None: b"null",
    "stop": b'"stop"',
    "length": b'"length"',
    "tool_calls": b'"tool_calls"',
    "content_filter": b'"content_filter"',
}


class ChunkWriter:
    """Writes the ``chat.completion.chunk`` events of one stream: its id, creation time
    and model are encoded once; each event is those bytes around a delta."""

    __slots__ = ("_head", "_tail")

    def __init__(self, ident: str, model: str, created: int | None = None) -> None:
        created = int(time.time()) if created is None else created
        self._head = (
            b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,"choices":'
            % (_encode(ident), created, _encode(model))
        )

    def delta(self, delta: bytes, finish: str | None = None, index: int = 0) -> bytes:
        """One event: ``delta`` is the delta object's JSON."""
        reason = _FINISH.get(finish) or _encode(finish)
        return b'%s[{"index":%d,"delta":%s,"logprobs":null,"finish_reason":%s}]}\n\n' % (
            self._head,
            index,
            delta,
            reason,
        )

    def text(self, text: str, index: int = 0) -> bytes:
        return self.delta(b'{"content":%s}' % _encode(text), None, index)

    def usage(self, usage: Usage) -> bytes:
        """The event that ends a stream whose request asked for usage: no choices."""
        return b'%s[],"usage":%s}\n\n' % (self._head, _encode(usage_json(usage)))


def event_data(raw: bytes) -> bytes | None:
    """The data of one SSE event (its ``data:`` lines joined), or ``None`` without any."""
    if raw.startswith(b"data:"):
        start = 5
    else:
        start = raw.find(b"\ndata:")
        if start == -1:
            return None
        start += 6
    end = raw.find(b"\n", start)
    if end != -1 and b"\ndata:" in raw[end:]:  # several data lines: rare
        lines = [line[5:] for line in raw[start - 5 :].split(b"\n") if line.startswith(b"data:")]
        return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
    data = raw[start:] if end == -1 else raw[start:end]
    return data[1:] if data.startswith(b" ") else data


# --------------------------------------------------------------------------- usage read


class _Details(msgspec.Struct):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None


class _Answer(msgspec.Struct):
    usage: _WireUsage | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


def usage_of_completion(body: bytes) -> Usage | None:
    """The usage a translated answer states, prompt-cache writes included."""
    try:
        wire = _decode_answer(body).usage
    except (msgspec.DecodeError, RecursionError):
        return None
    if wire is None:
        return None
    prompt = wire.prompt_tokens_details or _Details()
    completion_details = wire.completion_tokens_details or _Details()
    return Usage(
        prompt_tokens=wire.prompt_tokens,
        completion_tokens=wire.completion_tokens,
        total_tokens=wire.total_tokens
        if wire.total_tokens is not None
        else wire.prompt_tokens + wire.completion_tokens,
        cached_tokens=prompt.cached_tokens or 0,
        cache_write_tokens=prompt.cache_creation_tokens or 0,
        reasoning_tokens=completion_details.reasoning_tokens or 0,
    )


# ------------------------------------------------------------ the answer, as read back


class ChatFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ChatToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: ChatFunction | None = None


class ChatReply(msgspec.Struct):
    """A whole answer's ``message``, or a chunk's ``delta``."""

    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: Any = None  # some servers' name for reasoning_content (a string)
    thinking_blocks: list[dict[str, Any]] | None = None
    tool_calls: list[ChatToolCall] | None = None

    @property
    def reasoning_text(self) -> str | None:
        if self.reasoning_content:
            return self.reasoning_content
        return self.reasoning if isinstance(self.reasoning, str) and self.reasoning else None


class ChatChoice(msgspec.Struct):
    index: int = 0
    message: ChatReply | None = None
    delta: ChatReply | None = None
    finish_reason: str | None = None


class ChatDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None  # the hub's name for prompt-cache writes
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


class ChatUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: ChatDetails | None = None
    completion_tokens_details: ChatDetails | None = None


class ChatError(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class ChatAnswer(msgspec.Struct):
    """A ``chat.completion``, or one ``chat.completion.chunk``, or the gateway's last
    words in a broken stream (``{"error": {...}}``): what translators read back of it."""

    id: str = ""
    model: str = ""
    choices: list[ChatChoice] = []
    usage: ChatUsage | None = None
    error: ChatError | str | None = None


decode_chat_answer = msgspec.json.Decoder(ChatAnswer).decode
