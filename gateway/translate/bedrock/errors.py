"""Bedrock's errors as the gateway's (``error_to_openai``, ``stream_failure``).

Bedrock answers an error with its status, a JSON body ``{"message": "..."}`` and the
error's type in the ``x-amzn-ErrorType`` header (``ThrottlingException:http://...``); a
stream's error is a message of type ``exception`` whose ``:exception-type`` header names
it (``throttlingException``) and whose payload is that JSON body. Each becomes the
gateway's error in OpenAI's shape, with the status that makes retries and fallbacks do
the right thing: throttling is a 429, a model not ready or the service unavailable a
503, a model that failed or timed out a 502 or 504 (all retried); a prompt too long for
the model is ``context_length_exceeded`` (context fallbacks).
"""

from __future__ import annotations

import re

import msgspec

from ...core.errors import UpstreamStatusError
from ..chat import status_error, upstream_said

# Bedrock's exception types, and the status the gateway answers each with.
ERROR_STATUS = {
    "ValidationException": 400,
    "ConflictException": 400,
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "ExpiredTokenException": 403,
    "IncompleteSignatureException": 403,
    "ResourceNotFoundException": 404,
    "ThrottlingException": 429,
    "ServiceQuotaExceededException": 429,
    "InternalServerException": 500,
    "ModelErrorException": 502,
    "ModelStreamErrorException": 502,
    "ModelNotReadyException": 503,
    "ServiceUnavailableException": 503,
    "ModelTimeoutException": 504,
}
# Bedrock's (and its models') words for a prompt longer than the model's context.
_TOO_LONG = re.compile(
    r"input is too long|too many input tokens|prompt is too long|too many total text bytes"
    r"|exceeds? (?:the )?(?:model'?s? )?(?:context|maximum context)"
    r"|input token count .*exceeds|maximum context length|context window",
    re.IGNORECASE,
)


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None  # some AWS front ends capitalize it
    type_: str | None = msgspec.field(default=None, name="__type")


_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def error_type(header: str | None) -> str | None:
    """The exception's name out of ``x-amzn-ErrorType`` (``Name:http://...``, or
    ``namespace#Name``), or ``None``."""
    if not header:
        return None
    name = header.split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return name or None


def upstream_failure(kind: str | None, message: str, status: int) -> UpstreamStatusError:
    """Bedrock's error as the gateway's: its status by the exception's type."""
    status = ERROR_STATUS.get(kind or "", status)
    too_long = status == 400 and _TOO_LONG.search(message) is not None
    return status_error(status, message, kind, too_long)


def _message(content: bytes) -> tuple[str | None, str | None]:
    try:
        body = _decode_error(content)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None, None
    return body.message or body.Message, error_type(body.type_)


def error_to_openai(status: int, kind_header: str | None, content: bytes) -> UpstreamStatusError:
    """A Bedrock error answer as the gateway's error, in OpenAI's shape."""
    message, body_kind = _message(content)
    kind = error_type(kind_header) or body_kind
    if message is None:
        said = upstream_said(status, content)
        return upstream_failure(kind or f"upstream_{status}", said, status)
    return upstream_failure(kind, message, status)


def stream_failure(exception_type: str, payload: bytes) -> UpstreamStatusError:
    """An ``exception`` message inside a stream (``throttlingException``…) as the
    gateway's error."""
    kind = exception_type[:1].upper() + exception_type[1:]
    message, _ = _message(payload)
    status = ERROR_STATUS.get(kind, 500)
    return upstream_failure(kind, message or f"Bedrock's stream failed ({exception_type}).", status)
