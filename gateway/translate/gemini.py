"""OpenAI chat and embeddings → Google's Gemini API (generateContent), and back.

``chat_to_gemini`` turns a chat request into a GenerateContentRequest;
``response_to_chat`` turns the answer into a ``chat.completion``; ``GeminiStream`` turns
``streamGenerateContent?alt=sse`` (each event a whole response holding only the new
text) into ``chat.completion.chunk`` events as it arrives; ``error_to_openai`` turns
Google's error shape into OpenAI's. Embeddings go through ``embedContent`` (one input)
or ``batchEmbedContents`` (a list).

Choices where the APIs differ: system and developer messages become the
``systemInstruction``; the assistant is the ``model`` role; a tool result becomes a
``functionResponse`` named after the call it answers (Gemini's calls carry no id: the
gateway makes OpenAI's ``call_...`` ids); a prompt Gemini blocks, or an answer it stops
for safety, finishes with ``content_filter``; an answer with function calls finishes
with ``tool_calls`` (Gemini says ``STOP``).
"""

from __future__ import annotations

import base64
import mimetypes
import re
import secrets
import struct
from typing import Any

import msgspec

from ..core.errors import InvalidRequestError, UpstreamStatusError
from ..core.outcome import Usage
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

# reasoning_effort -> thinkingBudget (the budgets Google's own OpenAI layer uses).
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
TOOL_CHOICES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}

_FILTERED = (
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "IMAGE_OTHER",
    "MODEL_ARMOR",
)
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(_FILTERED, "content_filter"),
}


class Facts(msgspec.Struct, kw_only=True):
    """What translating the answer needs to know about the request."""

    model: str
    stream: bool = False
    include_usage: bool = False


# ================================================================= OpenAI -> Gemini


def chat_to_gemini(body: bytes) -> tuple[bytes, Facts]:
    """An OpenAI chat request as a GenerateContentRequest."""
    request = decode_chat(body)
    names: dict[str, str] = {}  # tool call id -> function name, for the results
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)  # Gemini wants turns to alternate too
        else:
            contents.append({"role": role, "parts": parts})

    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        role = message.role
        if role in ("system", "developer"):
            system += [
                {"text": p.text} for p in message_parts(message) if p.type == "text" and p.text
            ]
        elif role == "user":
            add(
                "user",
                [_part(p, f"{where}.content[{j}]") for j, p in enumerate(message_parts(message))],
            )
        elif role == "assistant":
            parts = [
                {"text": p.text} for p in message_parts(message) if p.type == "text" and p.text
            ]
            for call in message.tool_calls or ():
                names[call.id] = call.function.name
                call_part = {
                    "name": call.function.name,
                    "args": tool_arguments(call.function.arguments),
                }
                parts.append({"functionCall": call_part})
            add("model", parts)
        elif role == "tool":
            name = names.get(message.tool_call_id or "") or message.name or ""
            result = {"name": name, "response": _tool_response(message)}
            add("user", [{"functionResponse": result}])
        else:
            raise InvalidRequestError(
                f"Invalid '{where}.role': {role!r} cannot be sent to a Gemini model.",
                param="messages",
            )
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if request.tools:
        out["tools"] = [{"functionDeclarations": _declarations(request)}]
        config = _tool_config(request)
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(request)
    if generation:
        out["generationConfig"] = generation
    facts = Facts(model=request.model, stream=bool(request.stream))
    facts.include_usage = bool(request.stream) and request.include_usage
    return _encode(out), facts


def _part(part: Part, where: str) -> dict[str, Any]:
    kind = part.type
    if kind == "text":
        return {"text": part.text or ""}
    if kind == "image_url" and part.image_url is not None:
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        return _media(url, where)
    if kind == "file" and part.file is not None:
        if part.file.file_data:
            return _media(part.file.file_data, where)
        raise invalid(where, "a file must be sent as file_data (a base64 data URL)")
    if kind == "input_audio" and part.input_audio is not None:
        audio = part.input_audio
        mime = AUDIO_TYPES.get(str(audio.get("format")), f"audio/{audio.get('format')}")
        return {"inlineData": {"mimeType": mime, "data": str(audio.get("data", ""))}}
    raise invalid(where, f"content parts of type {kind!r} cannot be sent to Gemini")


def _media(url: str, where: str) -> dict[str, Any]:
    parsed = data_url(url)
    if parsed is not None:
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    if url.startswith(("https://", "http://")):
        # Gemini fetches public and signed URLs itself (fileData); its type, if known.
        file: dict[str, Any] = {"fileUri": url}
        guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
        if guessed:
            file["mimeType"] = guessed
        return {"fileData": file}
    raise invalid(where, "media must be an http(s) URL or a base64 data URL")


def _tool_response(message: Message) -> dict[str, Any]:
    """A tool result as the object Gemini's ``functionResponse.response`` is."""
    content = message.content
    text = (
        content
        if isinstance(content, str)
        else "".join(p.text or "" for p in content or () if p.type == "text")
    )
    try:
        value = _decode(text) if text else None
    except (msgspec.DecodeError, RecursionError):
        value = None
    return value if isinstance(value, dict) else {"content": text}


def _declarations(request: ChatRequest) -> list[dict[str, Any]]:
    declarations = []
    for i, tool in enumerate(request.tools or ()):
        function = tool.function
        if tool.type != "function" or function is None:
            raise invalid(f"tools[{i}]", f"tools of type {tool.type!r} cannot be sent to Gemini")
        declaration: dict[str, Any] = {"name": function.name}
        if function.description:
            declaration["description"] = function.description
        if function.parameters:
            # JSON Schema as OpenAI has it (``parameters`` takes only an OpenAPI subset).
            declaration["parametersJsonSchema"] = function.parameters
        declarations.append(declaration)
    return declarations


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = TOOL_CHOICES.get(choice)
        if mode is None:
            raise InvalidRequestError(f"Invalid 'tool_choice': {choice!r}.", param="tool_choice")
        return {"mode": mode}
    if choice.type == "function" and choice.function is not None:
        return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    raise InvalidRequestError(
        f"Invalid 'tool_choice': type {choice.type!r} cannot be sent to Gemini.",
        param="tool_choice",
    )


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, value in (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("topK", request.top_k),
        ("maxOutputTokens", request.max_completion_tokens or request.max_tokens),
        ("candidateCount", request.n),
        ("seed", request.seed),
        ("presencePenalty", request.presence_penalty),
        ("frequencyPenalty", request.frequency_penalty),
    ):
        if value is not None:
            config[name] = value
    if request.stops:
        config["stopSequences"] = request.stops
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        if response_format.type not in ("json_object", "json_schema"):
            raise InvalidRequestError(
                f"Invalid 'response_format.type': {response_format.type!r}.",
                param="response_format",
            )
        config["responseMimeType"] = "application/json"
        spec = response_format.json_schema
        if spec is not None and spec.schema is not None:
            config["responseJsonSchema"] = spec.schema
    effort = request.reasoning_effort
    if effort is not None:
        budget = THINKING_BUDGETS.get(effort)
        if budget is None:
            raise InvalidRequestError(
                f"Invalid 'reasoning_effort': {effort!r}.", param="reasoning_effort"
            )
        config["thinkingConfig"] = {"thinkingBudget": budget}
    return config


# ================================================================= Gemini -> OpenAI


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


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int | None = None
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class _Feedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _Error(msgspec.Struct):
    code: int | None = None
    message: str = ""
    status: str | None = None


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    prompt_feedback: _Feedback | None = None
    usage_metadata: _UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: _Error | None = None


_decode_response = msgspec.json.Decoder(_Response).decode


def usage_of(metadata: _UsageMetadata) -> Usage:
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


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _finish(candidate: _Candidate, called: bool) -> str:
    if called:
        return "tool_calls"
    return FINISH_REASONS.get(candidate.finish_reason or "STOP", "stop")


def response_to_chat(content: bytes, facts: Facts) -> bytes:
    """A GenerateContentResponse as a ``chat.completion``."""
    response = _decode_response(content)
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
                        "id": call.id or _call_id(),
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
                "finish_reason": _finish(candidate, bool(calls)),
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


_TOOL_CALL = (
    b'{"tool_calls":[{"index":%d,"id":%s,"type":"function","function":{"name":%s,"arguments":%s}}]}'
)


class GeminiStream:
    """Gemini's SSE stream in, OpenAI's chunk events out, read by read.

    Each Gemini event is a whole response carrying only what is new: its text parts
    become content deltas, its function calls whole tool calls (Gemini does not split
    their arguments), its finish reason a finishing chunk. Gemini sends no end marker,
    so the usage event (when asked for) and ``[DONE]`` leave in ``finish()``.
    """

    __slots__ = (
        "_called",
        "_facts",
        "_finished",
        "_splitter",
        "_started",
        "_tools",
        "_writer",
        "failure",
        "usage",
    )

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._splitter = EventSplitter()
        self._writer: ChunkWriter | None = None
        self._started: set[int] = set()  # candidates whose role chunk went out
        self._tools: dict[int, int] = {}  # candidate -> tool calls so far
        self._called: set[int] = set()  # candidates that called a function
        self._finished: set[int] = set()
        self.usage: Usage | None = None
        self.failure: UpstreamStatusError | None = None

    @property
    def complete(self) -> bool:
        return bool(self._finished) or self.failure is not None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._splitter.feed(data):
            if self.failure is not None:
                break
            payload = event_data(raw)
            if payload is not None:
                self._event(payload, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        rest = self._splitter.flush()
        if rest is not None and self.failure is None:
            payload = event_data(rest)
            if payload is not None:
                self._event(payload, out)
        if self._finished and self.failure is None:
            writer = self._writer_for()
            if self._facts.include_usage and self.usage is not None:
                out.append(writer.usage(self.usage))
            out.append(DONE)
        return b"".join(out)

    def _writer_for(self, response: _Response | None = None) -> ChunkWriter:
        writer = self._writer
        if writer is None:
            ident = (response.response_id if response else None) or "chatcmpl-" + secrets.token_hex(
                12
            )
            model = (response.model_version if response else None) or self._facts.model
            writer = self._writer = ChunkWriter(ident, model)
        return writer

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        try:
            response = _decode_response(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if response.error is not None:
            error = response.error
            self.failure = _failure(error.code or 500, error.message, error.status)
            return
        writer = self._writer_for(response)
        if response.usage_metadata is not None:
            self.usage = usage_of(response.usage_metadata)
        if not response.candidates and response.prompt_feedback is not None:
            if response.prompt_feedback.block_reason and 0 not in self._finished:
                self._role(0, writer, out)
                out.append(writer.delta(b"{}", "content_filter", 0))
                self._finished.add(0)
            return
        for position, candidate in enumerate(response.candidates):
            index = candidate.index if candidate.index is not None else position
            self._role(index, writer, out)
            for part in candidate.content.parts if candidate.content is not None else ():
                call = part.function_call
                if call is not None:
                    number = self._tools.get(index, 0)
                    self._tools[index] = number + 1
                    self._called.add(index)
                    arguments = arguments_text(call.args)
                    delta = _TOOL_CALL % (
                        number,
                        _encode(call.id or _call_id()),
                        _encode(call.name),
                        _encode(arguments),
                    )
                    out.append(writer.delta(delta, None, index))
                elif part.text:
                    if part.thought:
                        thought = b'{"reasoning_content":%s}' % _encode(part.text)
                        out.append(writer.delta(thought, None, index))
                    else:
                        out.append(writer.text(part.text, index))
            if candidate.finish_reason and index not in self._finished:
                self._finished.add(index)
                finish = _finish(candidate, index in self._called)
                out.append(writer.delta(b"{}", finish, index))

    def _role(self, index: int, writer: ChunkWriter, out: list[bytes]) -> None:
        if index not in self._started:
            self._started.add(index)
            out.append(writer.delta(ROLE, None, index))


# ----------------------------------------------------------------------------- errors

# Google's words for a prompt longer than the model's context window.
_TOO_LONG = re.compile(r"exceeds the maximum number of tokens", re.IGNORECASE)


class _ErrorEnvelope(msgspec.Struct):
    error: _Error | None = None


_decode_error = msgspec.json.Decoder(_ErrorEnvelope | list[_ErrorEnvelope]).decode


def _failure(status: int, message: str, code: str | None) -> UpstreamStatusError:
    too_long = status == 400 and _TOO_LONG.search(message) is not None
    return status_error(status, message, code, too_long)


def error_to_openai(status: int, content: bytes) -> UpstreamStatusError:
    """A Google error answer (``{"error": {"code", "message", "status"}}``, or a list of
    them from a non-SSE stream) as the gateway's error, in OpenAI's shape."""
    try:
        decoded = _decode_error(content)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        decoded = None
    if isinstance(decoded, list):
        decoded = decoded[0] if decoded else None
    error = decoded.error if decoded is not None else None
    if error is None:
        return _failure(status, upstream_said(status, content), f"upstream_{status}")
    return _failure(status, error.message, error.status)


# ------------------------------------------------------------------------- embeddings


class EmbeddingFacts(msgspec.Struct, kw_only=True):
    model: str
    base64: bool = False
    batch: bool = False


class _EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[str]
    dimensions: int | None = None
    encoding_format: str | None = None


_decode_embedding_request = msgspec.json.Decoder(_EmbeddingRequest).decode


def embeddings_to_gemini(body: bytes) -> tuple[bytes, EmbeddingFacts]:
    """An OpenAI embeddings request as ``embedContent`` (one input) or
    ``batchEmbedContents`` (a list: ``facts.batch``)."""
    try:
        request = _decode_embedding_request(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"Invalid embeddings request for a Gemini model (the input must be text): {exc}.",
            param="input",
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON ({exc}).") from None
    facts = EmbeddingFacts(model=request.model, base64=request.encoding_format == "base64")

    def one(text: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            entry["outputDimensionality"] = request.dimensions
        return entry

    if isinstance(request.input, str):
        return _encode(one(request.input)), facts
    if not request.input:
        raise InvalidRequestError("'input' must not be empty.", param="input")
    facts.batch = True
    name = request.model if request.model.startswith("models/") else f"models/{request.model}"
    requests = [{"model": name, **one(text)} for text in request.input]
    return _encode({"requests": requests}), facts


class _Values(msgspec.Struct):
    values: list[float] = []


class _Embeddings(msgspec.Struct, rename="camel"):
    embedding: _Values | None = None
    embeddings: list[_Values] | None = None
    usage_metadata: _UsageMetadata | None = None


_decode_embeddings = msgspec.json.Decoder(_Embeddings).decode


def embeddings_to_openai(content: bytes, facts: EmbeddingFacts) -> bytes:
    """Gemini's embeddings as OpenAI's list (Gemini states no usage: zero)."""
    answer = _decode_embeddings(content)
    vectors = [answer.embedding] if answer.embedding is not None else list(answer.embeddings or ())
    data = []
    for i, vector in enumerate(vectors):
        values: list[float] | str = vector.values
        if facts.base64:  # OpenAI's: little-endian float32, base64
            packed = struct.pack(f"<{len(vector.values)}f", *vector.values)
            values = base64.b64encode(packed).decode()
        data.append({"object": "embedding", "index": i, "embedding": values})
    tokens = answer.usage_metadata.prompt_token_count if answer.usage_metadata else 0
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _encode({"object": "list", "data": data, "model": facts.model, "usage": usage})
