"""OpenAI chat request -> Gemini GenerateContentRequest (``chat_to_gemini``).

System and developer messages become the ``systemInstruction``; the assistant is the
``model`` role; a tool result becomes a ``functionResponse`` named after the call it
answers.
"""

from __future__ import annotations

import mimetypes
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
