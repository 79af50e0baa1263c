"""Token usage of Anthropic answers: a whole Message, or a stream's first and last events."""

from __future__ import annotations

import msgspec

from ...core.outcome import Usage
from .answer import Event, WireUsage, decode_event, usage_of


class _MessageUsage(msgspec.Struct):
    usage: WireUsage | None = None


_decode_message_usage = msgspec.json.Decoder(_MessageUsage).decode


def usage_of_message(content: bytes) -> Usage | None:
    """The usage of a whole Anthropic Message (``None`` for other answers: count_tokens)."""
    try:
        usage = _decode_message_usage(content).usage
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return None if usage is None else usage_of(usage)


def _event_at(data: bytes, position: int) -> Event | None:
    """The event whose data line holds ``position``."""
    start = data.rfind(b"data:", 0, position)
    if start == -1:
        return None
    end = data.find(b"\n", position)
    try:
        return decode_event(data[start + 5 : end if end != -1 else len(data)])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def usage_of_stream(head: bytes, tail: bytes) -> Usage | None:
    """The usage of an Anthropic stream from its first bytes (``message_start``: the input
    counts) and its last (``message_delta``: the output, and newer streams' input too)."""
    at = head.find(b'"message_start"')
    start = _event_at(head, at) if at != -1 else None
    at = tail.rfind(b'"message_delta"')
    end = _event_at(tail, at) if at != -1 else None
    begun = start.message.usage if start is not None and start.message is not None else None
    late = end.usage if end is not None else None
    if begun is None and late is None:
        return None
    return usage_of(merged(begun or WireUsage(), late))


def merged(start: WireUsage, late: WireUsage | None) -> WireUsage:
    """Counts are cumulative: the input counts are in message_start, and newer streams
    repeat them in message_delta (the non-null ones count, as the SDK takes them)."""
    if late is None:
        return start
    return WireUsage(
        input_tokens=either(late.input_tokens, start.input_tokens),
        output_tokens=either(late.output_tokens, start.output_tokens),
        cache_creation_input_tokens=either(
            late.cache_creation_input_tokens, start.cache_creation_input_tokens
        ),
        cache_read_input_tokens=either(late.cache_read_input_tokens, start.cache_read_input_tokens),
        output_tokens_details=late.output_tokens_details or start.output_tokens_details,
    )


# ============================================================== Anthropic -> OpenAI
# (the front door: an Anthropic client, a model that is not Claude)


def either(value: int | None, default: int | None) -> int | None:
    return default if value is None else value
