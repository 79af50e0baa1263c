"""OpenAI request and response types as msgspec Structs.

These exist for hooks that ask for typed objects; forwarding never needs them. Every
optional field defaults to ``UNSET`` so that a field absent from the JSON stays absent
when a changed object is written back. Open-ended parts (content parts, response
formats, tool parameters) are kept open rather than tagged, so a vendor's new part type
still decodes.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType


class _Object(msgspec.Struct, kw_only=True):
    """Base of every type: unknown JSON fields are ignored. Subclasses are keyword-only."""


# ---------------------------------------------------------------------------- messages


class ImageURL(_Object, kw_only=True):
    url: str
    detail: str | UnsetType = UNSET


class InputAudio(_Object, kw_only=True):
    data: str
    format: str


class FileRef(_Object, kw_only=True):
    file_id: str | UnsetType = UNSET
    file_data: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class ContentPart(_Object, kw_only=True):
    """One part of a message's content: ``text``, ``image_url``, ``input_audio``, ``file``…"""

    type: str
    text: str | UnsetType = UNSET
    image_url: ImageURL | UnsetType = UNSET
    input_audio: InputAudio | UnsetType = UNSET
    file: FileRef | UnsetType = UNSET
    refusal: str | UnsetType = UNSET


class FunctionCall(_Object, kw_only=True):
    name: str
    arguments: str


class ToolCall(_Object, kw_only=True):
    id: str
    type: str = "function"
    function: FunctionCall


class ChatMessage(_Object, kw_only=True):
    """A message in any role; ``content`` is a string, a list of parts, or null."""

    role: str
    content: str | list[ContentPart] | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType | None = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET
    audio: dict[str, Any] | UnsetType | None = UNSET
    function_call: FunctionCall | UnsetType | None = UNSET

    def text(self) -> str:
        """The message's text, whichever content form it uses."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if isinstance(p.text, str))
        return ""


# ------------------------------------------------------------------------------- tools


class FunctionDefinition(_Object, kw_only=True):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(_Object, kw_only=True):
    type: str = "function"
    function: FunctionDefinition | UnsetType = UNSET


class NamedFunction(_Object, kw_only=True):
    name: str


class ToolChoice(_Object, kw_only=True):
    type: str
    function: NamedFunction | UnsetType = UNSET


class StreamOptions(_Object, kw_only=True):
    include_usage: bool | UnsetType | None = UNSET


# ------------------------------------------------------------------------------- usage


class PromptTokensDetails(_Object, kw_only=True):
    cached_tokens: int | UnsetType | None = UNSET
    audio_tokens: int | UnsetType | None = UNSET


class CompletionTokensDetails(_Object, kw_only=True):
    reasoning_tokens: int | UnsetType | None = UNSET
    audio_tokens: int | UnsetType | None = UNSET
    accepted_prediction_tokens: int | UnsetType | None = UNSET
    rejected_prediction_tokens: int | UnsetType | None = UNSET


class Usage(_Object, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int | UnsetType = UNSET
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | UnsetType | None = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType | None = UNSET


# ---------------------------------------------------------------------- chat completions


class ChatCompletionRequest(_Object, kw_only=True):
    model: str
    messages: list[ChatMessage]
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: str | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: str | ToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: dict[str, Any] | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    reasoning_effort: str | UnsetType | None = UNSET
    modalities: list[str] | UnsetType | None = UNSET
    audio: dict[str, Any] | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET


class Choice(_Object, kw_only=True):
    index: int = 0
    message: ChatMessage
    finish_reason: str | None = None
    logprobs: Any = UNSET


class ChatCompletion(_Object, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int = 0
    model: str
    choices: list[Choice]
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET


class FunctionCallDelta(_Object, kw_only=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(_Object, kw_only=True):
    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: FunctionCallDelta | UnsetType = UNSET


class Delta(_Object, kw_only=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChunkChoice(_Object, kw_only=True):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: Any = UNSET


class ChatCompletionChunk(_Object, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET


# --------------------------------------------------------------------------- completions


class CompletionRequest(_Object, kw_only=True):
    model: str
    prompt: str | list[Any] | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    echo: bool | UnsetType | None = UNSET
    logprobs: int | UnsetType | None = UNSET
    suffix: str | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: str | UnsetType = UNSET


class CompletionChoice(_Object, kw_only=True):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: Any = UNSET


class Completion(_Object, kw_only=True):
    """A completion, and also each chunk of a streamed completion."""

    id: str
    object: str = "text_completion"
    created: int = 0
    model: str
    choices: list[CompletionChoice]
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


# ---------------------------------------------------------------------------- embeddings


class EmbeddingRequest(_Object, kw_only=True):
    model: str
    input: str | list[Any]
    encoding_format: str | UnsetType = UNSET
    dimensions: int | UnsetType = UNSET
    user: str | UnsetType = UNSET


class Embedding(_Object, kw_only=True):
    object: str = "embedding"
    index: int = 0
    embedding: list[float] | str


class EmbeddingUsage(_Object, kw_only=True):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingList(_Object, kw_only=True):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage | UnsetType = UNSET


# -------------------------------------------------------------------------------- models


class Model(_Object, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "gateway"


class ModelList(_Object, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


# ------------------------------------------------------------------- the Responses API


class ResponsesUsage(_Object, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, Any] | UnsetType = UNSET
    output_tokens_details: dict[str, Any] | UnsetType = UNSET


class ResponsesRequest(_Object, kw_only=True):
    """``POST /v1/responses``; input items, tools and formats kept open (many kinds)."""

    model: str
    input: str | list[dict[str, Any]] | UnsetType = UNSET
    instructions: str | UnsetType | None = UNSET
    tools: list[dict[str, Any]] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    text: dict[str, Any] | UnsetType = UNSET
    reasoning: dict[str, Any] | UnsetType | None = UNSET
    max_output_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    include: list[str] | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    user: str | UnsetType = UNSET


class ResponseObject(_Object, kw_only=True):
    """A Response: the answer of ``/v1/responses``, and inside its lifecycle events."""

    id: str
    object: Literal["response"] = "response"
    created_at: float | UnsetType = UNSET
    status: str | UnsetType | None = UNSET
    model: str | UnsetType = UNSET
    output: list[dict[str, Any]] = []
    usage: ResponsesUsage | UnsetType | None = UNSET
    error: dict[str, Any] | UnsetType | None = UNSET
    incomplete_details: dict[str, Any] | UnsetType | None = UNSET


class ResponseStreamEvent(_Object, kw_only=True):
    """One event of a Responses stream; which fields it has depends on its ``type``."""

    type: str
    sequence_number: int | UnsetType = UNSET
    response: ResponseObject | UnsetType = UNSET
    output_index: int | UnsetType = UNSET
    content_index: int | UnsetType = UNSET
    item_id: str | UnsetType = UNSET
    item: dict[str, Any] | UnsetType = UNSET
    part: dict[str, Any] | UnsetType = UNSET
    delta: str | UnsetType = UNSET
    text: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET
    code: str | UnsetType | None = UNSET
    message: str | UnsetType = UNSET
