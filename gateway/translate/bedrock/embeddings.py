"""OpenAI embeddings -> Bedrock's embedding models through InvokeModel, and back.

Two families, told apart by the model id:

- **Titan** (``amazon.titan-embed-text-v2:0``, ``…-v1``): one text per call,
  ``{"inputText", "dimensions"?, "normalize"?}`` -> ``{"embedding": [...],
  "inputTextTokenCount"}``. A list of inputs is one call each.
- **Cohere** (``cohere.embed-english-v3``, ``cohere.embed-multilingual-v3``,
  ``cohere.embed-v4:0``): up to 96 texts per call, ``{"texts", "input_type"}`` (OpenAI has
  no ``input_type``: ``search_document`` unless the request sends one) -> ``{"embeddings":
  [[...]]}`` (v4: ``{"embeddings": {"float": [[...]]}}``); the token count is only in the
  ``x-amzn-bedrock-input-token-count`` header.

``embeddings_to_bedrock`` makes the calls' bodies; ``embeddings_to_openai`` makes one
OpenAI ``list`` of their answers, in input order, with the summed usage.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec

from ...core.errors import InvalidRequestError

__all__ = ["COHERE_BATCH", "EmbeddingFacts", "embeddings_to_bedrock", "embeddings_to_openai"]

COHERE_BATCH = 96  # texts per Cohere call, Bedrock's limit
_encode = msgspec.json.Encoder().encode


class EmbeddingFacts(msgspec.Struct, kw_only=True):
    model: str
    family: str  # "titan" or "cohere"
    base64: bool = False


class _EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[str]
    dimensions: int | None = None
    encoding_format: str | None = None
    # Not OpenAI's, sent by clients that know the model (the SDKs' extra_body):
    input_type: str | None = None  # Cohere's
    truncate: str | None = None  # Cohere's
    normalize: bool | None = None  # Titan's


_decode_request = msgspec.json.Decoder(_EmbeddingRequest).decode


def family_of(model: str) -> str | None:
    """``titan`` or ``cohere`` for a Bedrock embedding model's id, else ``None``."""
    if "amazon.titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    return None


def embeddings_to_bedrock(body: bytes) -> tuple[list[bytes], EmbeddingFacts]:
    """An OpenAI embeddings request as the InvokeModel bodies that answer it."""
    try:
        request = _decode_request(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"Invalid embeddings request for a Bedrock model (the input must be text): {exc}.",
            param="input",
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON ({exc}).") from None
    family = family_of(request.model)
    if family is None:
        raise InvalidRequestError(
            f"{request.model!r} is not an embedding model the gateway knows on Bedrock "
            "(Titan: amazon.titan-embed-…, Cohere: cohere.embed-…).",
            param="model",
        )
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts:
        raise InvalidRequestError("'input' must not be empty.", param="input")
    facts = EmbeddingFacts(
        model=request.model, family=family, base64=request.encoding_format == "base64"
    )
    if family == "titan":
        options: dict[str, Any] = {}
        if request.dimensions is not None:
            options["dimensions"] = request.dimensions
        if request.normalize is not None:
            options["normalize"] = request.normalize
        return [_encode({"inputText": text, **options}) for text in texts], facts
    v4 = "embed-v4" in request.model
    cohere: dict[str, Any] = {"input_type": request.input_type or "search_document"}
    if request.truncate is not None:
        cohere["truncate"] = request.truncate
    if v4:
        cohere["embedding_types"] = ["float"]
        if request.dimensions is not None:
            cohere["output_dimension"] = request.dimensions
    elif request.dimensions is not None:
        raise InvalidRequestError(
            f"{request.model!r} answers with vectors of one size: 'dimensions' cannot be set.",
            param="dimensions",
        )
    batches = [texts[i : i + COHERE_BATCH] for i in range(0, len(texts), COHERE_BATCH)]
    return [_encode({"texts": batch, **cohere}) for batch in batches], facts


class _Titan(msgspec.Struct, rename="camel"):
    embedding: list[float]
    input_text_token_count: int = 0


class _ByType(msgspec.Struct):
    floats: list[list[float]] = msgspec.field(default_factory=list, name="float")


class _Cohere(msgspec.Struct):
    embeddings: list[list[float]] | _ByType


_decode_titan = msgspec.json.Decoder(_Titan).decode
_decode_cohere = msgspec.json.Decoder(_Cohere).decode


def embeddings_to_openai(
    contents: list[bytes], counts: list[int | None], facts: EmbeddingFacts
) -> bytes:
    """The calls' answers (in the order of their bodies) as one OpenAI list; ``counts``
    are the calls' ``x-amzn-bedrock-input-token-count`` headers (Cohere's only count)."""
    vectors: list[list[float]] = []
    tokens = 0
    for content, counted in zip(contents, counts, strict=True):
        if facts.family == "titan":
            titan = _decode_titan(content)
            vectors.append(titan.embedding)
            tokens += titan.input_text_token_count or counted or 0
        else:
            found = _decode_cohere(content).embeddings
            vectors += found.floats if isinstance(found, _ByType) else found
            tokens += counted or 0
    data = []
    for i, vector in enumerate(vectors):
        values: list[float] | str = vector
        if facts.base64:  # OpenAI's: little-endian float32, base64
            values = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": values})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _encode({"object": "list", "data": data, "model": facts.model, "usage": usage})
