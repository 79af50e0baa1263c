"""The OpenAI endpoints the gateway reads, and the few fields it reads of each.

Routing needs ``model`` and ``stream``; validation needs the required fields to be
there with the right JSON type. Each endpoint decodes exactly that much with a small
Struct — nested values are skipped, not built — and names its typed views for hooks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from ..core.errors import InvalidRequestError
from . import types

T = TypeVar("T")

NOT_SENT = msgspec.Raw()  # a field the body does not have (empty: no JSON value is)


class _Bounds(msgspec.Struct, kw_only=True):
    """What bounds the answer, read as sent (any JSON value: validating it is the
    upstream's to do), so that a key's token limit reserves it without a second pass over
    the body (access/limits.py ``reserved_tokens_read``)."""

    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None  # the Responses API's name


class ChatFields(_Bounds):
    model: str
    messages: list[msgspec.Raw]
    stream: bool | None = None
    stream_options: msgspec.Raw = NOT_SENT  # kept raw: only its presence is read


class CompletionFields(_Bounds):
    model: str
    prompt: msgspec.Raw
    stream: bool | None = None
    stream_options: msgspec.Raw = NOT_SENT


class EmbeddingFields(_Bounds):
    model: str
    input: msgspec.Raw
    stream: bool | None = None  # not an embeddings option; read so every endpoint has it
    stream_options: msgspec.Raw = NOT_SENT


class ResponsesFields(_Bounds):
    """OpenAI's Responses API: ``input`` may be left out when a stored response goes on."""

    model: str
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    stream_options: msgspec.Raw = NOT_SENT


class AnyFields(_Bounds):
    """Any other JSON body: a model, when there is one, picks the provider."""

    model: str | None = None
    stream: bool | None = None
    stream_options: msgspec.Raw = NOT_SENT


Fields = ChatFields | CompletionFields | EmbeddingFields | ResponsesFields | AnyFields


class Endpoint:
    """One kind of request: how to read its routing fields and which types hooks get."""

    __slots__ = ("_decode", "chunk_type", "name", "request_type", "response_type")

    def __init__(
        self,
        name: str,
        fields: type[msgspec.Struct],
        request_type: type[msgspec.Struct] | None = None,
        response_type: type[msgspec.Struct] | None = None,
        chunk_type: type[msgspec.Struct] | None = None,
    ) -> None:
        self.name = name
        self._decode = msgspec.json.Decoder(fields).decode
        self.request_type = request_type
        self.response_type = response_type
        self.chunk_type = chunk_type

    def parse(self, body: bytes) -> Fields:
        """The routing fields of a JSON body, or an ``InvalidRequestError`` naming the param."""
        return decode_json(self._decode, body)

    def __repr__(self) -> str:
        return f"<Endpoint {self.name}>"


CHAT = Endpoint(
    "chat.completions",
    ChatFields,
    types.ChatCompletionRequest,
    types.ChatCompletion,
    types.ChatCompletionChunk,
)
COMPLETIONS = Endpoint(
    "completions", CompletionFields, types.CompletionRequest, types.Completion, types.Completion
)
EMBEDDINGS = Endpoint("embeddings", EmbeddingFields, types.EmbeddingRequest, types.EmbeddingList)
RESPONSES = Endpoint(
    "responses",
    ResponsesFields,
    types.ResponsesRequest,
    types.ResponseObject,
    types.ResponseStreamEvent,
)
PASSTHROUGH = Endpoint("passthrough", AnyFields)


def decode_json(decode: Callable[[bytes], T], body: bytes) -> T:
    """``decode(body)``, or an ``InvalidRequestError`` that says what is wrong the OpenAI way."""
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON ({exc}).") from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None


_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_AT = re.compile(r"^(.*) - at `\$\.?([^`]*)`$")
_WHOLE = re.compile(r"^Expected `object`, got `(\w+)`$")


def _invalid(message: str) -> InvalidRequestError:
    """msgspec's validation message, said the OpenAI way and naming the top-level param."""
    if match := _MISSING.search(message):
        field = match.group(1)
        if at := _AT.match(message):  # missing inside a param: name the param, keep the path
            path = at.group(2)
            param = re.split(r"[.\[]", path, maxsplit=1)[0] or field
            return InvalidRequestError(
                f"Missing required parameter: '{path}.{field}'.", param=param
            )
        return InvalidRequestError(f"Missing required parameter: '{field}'.", param=field)
    if match := _AT.match(message):
        problem, path = match.groups()
        param = re.split(r"[.\[]", path, maxsplit=1)[0] or None
        if param is not None and path != param:
            # A nested field is missing or wrong: name the top-level param, keep the path.
            return InvalidRequestError(f"Invalid '{path}': {problem}.", param=param)
        return InvalidRequestError(f"Invalid type for '{param}': {problem}.", param=param)
    if match := _WHOLE.match(message):
        return InvalidRequestError(
            f"The request body must be a JSON object, not {match.group(1)}.", param=None
        )
    return InvalidRequestError(f"Invalid request body: {message}.")
