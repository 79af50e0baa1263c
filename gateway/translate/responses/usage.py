"""Token usage in the Responses API's terms: written into translated answers
(``usage_json``), read from the hub's chat usage (``usage_of_chat``), and read from a
Responses-speaking upstream's own answers passed through (``usage_of_response``, and
``usage_of_response_stream`` from a stream's last bytes).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.outcome import Usage
from ..chat import ChatDetails, ChatUsage


def usage_json(usage: Usage) -> dict[str, Any]:
    """``usage`` as a Response states it (every field: the SDK's type requires them)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def usage_of_chat(wire: ChatUsage) -> Usage:
    """A chat answer's usage (the hub's: cache writes as ``cache_creation_tokens``)."""
    prompt = wire.prompt_tokens or 0
    completion = wire.completion_tokens or 0
    details = wire.prompt_tokens_details or ChatDetails()
    out_details = wire.completion_tokens_details or ChatDetails()
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion if wire.total_tokens is None else wire.total_tokens,
        cached_tokens=details.cached_tokens or 0,
        cache_write_tokens=details.cache_creation_tokens or details.cache_write_tokens or 0,
        reasoning_tokens=out_details.reasoning_tokens or 0,
    )


# ------------------------------------------------------- a Responses upstream's answers


class _Details(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


class _WireUsage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None

    def usage(self) -> Usage:
        prompt = self.input_tokens or 0
        completion = self.output_tokens or 0
        details = self.input_tokens_details or _Details()
        out_details = self.output_tokens_details or _Details()
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion if self.total_tokens is None else self.total_tokens,
            cached_tokens=details.cached_tokens or 0,
            cache_write_tokens=details.cache_write_tokens or 0,
            reasoning_tokens=out_details.reasoning_tokens or 0,
        )


class _Response(msgspec.Struct, gc=False):
    """Only ``usage`` of a Response is decoded; the rest is skipped."""

    usage: _WireUsage | None = None


class _Event(msgspec.Struct, gc=False):
    response: _Response | None = None


_decode_response = msgspec.json.Decoder(_Response).decode
_decode_event = msgspec.json.Decoder(_Event).decode
_decode_usage = msgspec.json.Decoder(_WireUsage).decode

_BAD = (msgspec.DecodeError, RecursionError)  # (a ValidationError is a DecodeError)


def usage_of_response(content: bytes) -> Usage | None:
    """The usage a whole Response states (``None`` for anything else)."""
    try:
        wire = _decode_response(content).usage
    except _BAD:
        return None
    return None if wire is None or wire.input_tokens is None else wire.usage()


# The type of each event that ends a stream, as its JSON says it ("event:" lines have
# no quotes, and a quote inside a JSON string is escaped: these match the type only).
_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')
_USAGE_KEY = b'"usage":'


def usage_of_response_stream(tail: bytes) -> Usage | None:
    """The usage of a Responses stream from its last bytes: its terminal event's
    ``response.usage``. Only that event is decoded; when the tail begins inside it (its
    output is long), only its usage object."""
    at = tail.rfind(_TERMINAL[0])  # a stream ends completed far more often than not:
    if at == -1:  # one search then, three only for the rare endings
        at = max(tail.rfind(marker) for marker in _TERMINAL[1:])
    if at != -1:
        start = tail.rfind(b"data:", 0, at)
        if start != -1:
            end = tail.find(b"\n", at)
            try:
                event = _decode_event(tail[start + 5 : end if end != -1 else len(tail)])
            except _BAD:
                event = None
            if event is not None:
                wire = event.response.usage if event.response is not None else None
                return None if wire is None or wire.input_tokens is None else wire.usage()
    return _last_usage_object(tail)


def _last_usage_object(tail: bytes) -> Usage | None:
    """The last ``"usage":{...}`` of ``tail``: the terminal event's, when the tail begins
    inside that event (the last event of a stream; the events before it state none)."""
    at = tail.rfind(_USAGE_KEY)
    if at == -1:
        return None
    start = at + len(_USAGE_KEY)
    while start < len(tail) and tail[start] in b" \t":
        start += 1
    if not tail.startswith(b"{", start):
        return None  # "usage":null
    depth = 0
    for position in range(start, min(len(tail), start + 2048)):
        byte = tail[position]
        if byte == 0x7B:  # {
            depth += 1
        elif byte == 0x7D:  # }
            depth -= 1
            if depth == 0:
                try:
                    wire = _decode_usage(tail[start : position + 1])
                except _BAD:
                    return None
                return None if wire.input_tokens is None else wire.usage()
    return None
