"""OpenAI embeddings -> ``embedContent`` (one input) or ``batchEmbedContents`` (a list),
and back (``embeddings_to_gemini``, ``embeddings_to_openai``).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec

from ...core.errors import InvalidRequestError
from .answer import UsageMetadata

_encode = msgspec.json.Encoder().encode


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
    usage_metadata: UsageMetadata | None = None


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
