"""Google's error shape as the gateway's error (``error_to_openai``)."""

from __future__ import annotations

import re

import msgspec

from ...core.errors import UpstreamStatusError
from ..chat import (
    status_error,
    upstream_said,
)
from .answer import WireError

# ----------------------------------------------------------------------------- errors

# Google's words for a prompt longer than the model's context window.
_TOO_LONG = re.compile(r"exceeds the maximum number of tokens", re.IGNORECASE)


class _ErrorEnvelope(msgspec.Struct):
    error: WireError | None = None


_decode_error = msgspec.json.Decoder(_ErrorEnvelope | list[_ErrorEnvelope]).decode


def upstream_failure(status: int, message: str, code: str | None) -> UpstreamStatusError:
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
        return upstream_failure(status, upstream_said(status, content), f"upstream_{status}")
    return upstream_failure(status, error.message, error.status)
