"""Errors both ways: an Anthropic error answer as the gateway's error
(``error_to_openai``), and an error in Anthropic's shape for the front door.
"""

from __future__ import annotations

import re

import msgspec

from ...core.errors import UpstreamStatusError
from ..chat import (
    decode_chat_answer,
    status_error,
    upstream_said,
)
from .answer import WireError

_encode = msgspec.json.Encoder().encode

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
    error: WireError | None = None


_decode_error = msgspec.json.Decoder(_ErrorEnvelope).decode


class AnthropicStatusError(UpstreamStatusError):
    """An Anthropic error, in OpenAI's shape for the retry loop and OpenAI clients, that
    keeps Anthropic's own answer (``upstream_status``, ``upstream_body``) for Anthropic
    clients at ``/v1/messages``."""

    upstream_status: int | None = None
    upstream_body: bytes | None = None


def upstream_failure(kind: str, message: str, status: int | None = None) -> AnthropicStatusError:
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
        failure = upstream_failure(f"upstream_{status}", upstream_said(status, content), status)
    else:
        failure = upstream_failure(error.type, error.message, status)
        failure.upstream_body = content
    failure.upstream_status = status
    return failure


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
        error = decode_chat_answer(content).error
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
