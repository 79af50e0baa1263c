"""The Responses API's request, and the hub's answers, as the translation reads them.

The request's Structs (``ResponsesRequest`` and the ``Item`` of its ``input``) hold the
fields a translation reads; a chat answer or chunk is read as ``ChatAnswer``. Here too:
the ids of items, and the opaque ``encrypted_content`` that carries an upstream's signed
thinking blocks through a client and back (``encode_thinking`` / ``decode_thinking``).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from ...wire.endpoints import decode_json

T = TypeVar("T")

# ------------------------------------------------------------------------ the request


class Content(msgspec.Struct, kw_only=True):
    """One content part of a message, a tool output, or a reasoning item's text."""

    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None
    input_audio: dict[str, Any] | None = None


class Item(msgspec.Struct, kw_only=True):
    """One item of ``input`` (or of a stored conversation): every kind in one Struct, as
    the ``type`` discriminator is optional on messages (``{role, content}``)."""

    type: str | None = None
    id: str | None = None
    role: str | None = None
    content: str | list[Content] | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    namespace: str | None = None
    arguments: str | None = None
    input: str | None = None  # a custom tool call's
    output: str | list[Content] | None = None
    summary: list[Content] | None = None
    encrypted_content: str | None = None


class TextFormat(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, kw_only=True):
    format: TextFormat | None = None
    verbosity: str | None = None


class Reasoning(msgspec.Struct, kw_only=True):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None  # the deprecated name of summary


class ResponsesRequest(msgspec.Struct, kw_only=True):
    """The fields of ``POST /v1/responses`` the gateway reads; the others are ignored."""

    model: str
    input: str | list[Item] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None  # kept as sent: they are echoed back
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    user: str | None = None
    stream: bool | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    truncation: str | None = None


class ToolSpec(msgspec.Struct, kw_only=True):
    """One tool as the Responses API declares it (flat), whatever its type."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    format: dict[str, Any] | None = None  # a custom tool's input format
    tools: list[dict[str, Any]] | None = None  # a namespace's tools


decode_request = msgspec.json.Decoder(ResponsesRequest).decode


def converted(value: Any, type_: type[T], where: str) -> T:
    """``value`` (decoded JSON) as ``type_``, or a 400 naming where it stands."""

    def convert(_: bytes) -> T:
        try:
            return msgspec.convert(value, type_)
        except msgspec.ValidationError as exc:
            message = str(exc)
            if " - at `$" in message:
                message = message.replace(" - at `$", f" - at `$.{where}", 1)
            else:
                message += f" - at `$.{where}`"
            raise msgspec.ValidationError(message) from None

    return decode_json(convert, b"")


# -------------------------------------------------------------------------------- ids


def new_id(prefix: str) -> str:
    """A fresh item id, ``<prefix>_<32 hex digits>``."""
    return f"{prefix}_{uuid.uuid4().hex}"


def output_id(prefix: str, response_id: str, index: int) -> str:
    """The id of a response's output item: its response's id and its position, so a
    response's items have the same ids however its stream was read."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"


# ----------------------------------------------------------- thinking, round the client

# The gateway's own encrypted_content: "gw1:" and the base64 of the blocks' JSON. Only
# the upstream can check the blocks (Anthropic signs them), so they are not encrypted.
THINKING_PREFIX = "gw1:"
_decode_blocks: Callable[[bytes], list[dict[str, Any]]] = msgspec.json.Decoder(
    list[dict[str, Any]]
).decode


def encode_thinking(blocks: list[dict[str, Any]]) -> str:
    """Thinking blocks as a reasoning item's opaque ``encrypted_content``."""
    return THINKING_PREFIX + base64.b64encode(msgspec.json.encode(blocks)).decode()


def decode_thinking(content: str | None) -> list[dict[str, Any]] | None:
    """The thinking blocks the gateway put in ``encrypted_content``; ``None`` for anyone
    else's (OpenAI's own, encrypted) or for anything it cannot read."""
    if not content or not content.startswith(THINKING_PREFIX):
        return None
    try:
        blocks = _decode_blocks(base64.b64decode(content[len(THINKING_PREFIX) :], validate=True))
    except (binascii.Error, ValueError, msgspec.DecodeError, RecursionError):
        return None
    return blocks or None
