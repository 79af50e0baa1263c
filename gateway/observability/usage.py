"""Token usage in OpenAI's wire format: read from a whole answer or a stream's tail.

A whole answer has ``usage`` at its top level. A stream has it in its last event
before ``[DONE]`` — when the request asked for it with ``stream_options.include_usage``
— so only the last chunks are looked at, never every event. When the gateway asked
on the client's behalf, ``UsageStripper`` takes that event (and the ``"usage":null``
the upstream then adds to every chunk) back out, so the client sees what it asked for.
"""

from __future__ import annotations

import msgspec

from ..core.outcome import Usage


class _Details(msgspec.Struct, gc=False):
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class _WireUsage(msgspec.Struct, gc=False):
    """Chat and completions (``prompt_``/``completion_``) and the Responses API
    (``input_``/``output_``) spell the same counts differently."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    input_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None

    def usage(self) -> Usage:
        prompt, completion, total = self.prompt_tokens, self.completion_tokens, self.total_tokens
        if prompt is None:  # the Responses API's spelling
            prompt, completion = self.input_tokens or 0, self.output_tokens or 0
            prompt_details, completion_details = (
                self.input_tokens_details,
                self.output_tokens_details,
            )
        else:
            prompt_details, completion_details = (
                self.prompt_tokens_details,
                self.completion_tokens_details,
            )
        completion = completion or 0
        return Usage(
            prompt,
            completion,
            prompt + completion if total is None else total,
            0 if prompt_details is None else prompt_details.cached_tokens,
            0,
            0 if completion_details is None else completion_details.reasoning_tokens,
        )


class _Answer(msgspec.Struct, gc=False):
    """Only ``usage`` of an answer is decoded; everything else is skipped."""

    usage: _WireUsage | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode
_USAGE_OBJECT = b'"usage":'


def usage_of_answer(body: bytes) -> Usage | None:
    """The usage of a whole JSON answer, if it states one. (msgspec skips the rest of
    the answer faster than Python could find the usage object in it.)"""
    try:
        wire = _decode_answer(body).usage
    except (msgspec.DecodeError, RecursionError):
        return None
    return None if wire is None else wire.usage()


def usage_of_stream_tail(tail: bytes) -> Usage | None:
    """The usage in the last event of ``tail`` that states one (the stream's last bytes)."""
    position = len(tail)
    while (position := tail.rfind(_USAGE_OBJECT, 0, position)) != -1:
        start = tail.rfind(b"data:", 0, position)
        if start == -1:
            return None
        end = tail.find(b"\n", position)
        usage = usage_of_answer(tail[start + 5 : end if end != -1 else len(tail)])
        if usage is not None:
            return usage
    return None


# The "usage": null an upstream adds to every chunk once usage is asked for, as
# OpenAI (compact) and Python-based servers (spaced) write it.
_NULL_USAGE = (b',"usage":null', b', "usage": null')
_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')


def _boundary_end(data: bytes) -> int:
    """Where the last complete event of ``data`` ends (after its blank line), or -1."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf != -1 else -1, crlf + 4 if crlf != -1 else -1)


# How far from a read's end the usage event of an upstream that states usage only there
# is looked for: it is the stream's last event before [DONE], and shorter than this.
_TAIL = 4096


class UsageStripper:
    """Takes the usage the gateway asked for out of a stream, and keeps it.

    Chunks that hold whole events pass through without a copy; an event split across
    reads is held back until its end arrives (an SSE client cannot use half an event).

    Some upstreams (OpenAI) add ``"usage":null`` to every event once usage is asked for:
    every read is searched. Others state it only in the last event before ``[DONE]``:
    when the stream's first event has no ``"usage"``, only each read's last ``_TAIL``
    bytes are searched from then on (the event that states it ends a read, or comes
    right before ``[DONE]``), not every byte of a long stream.
    """

    __slots__ = ("held", "tail_only", "usage")  # held: an event's start, awaiting its end

    def __init__(self) -> None:
        self.held = b""
        self.tail_only: bool | None = None  # known from the first whole event
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        # (bytes.find, not `in`: on CPython 3.11 `in` costs a caught TypeError first.)
        if self.held:
            chunk = self.held + chunk
            self.held = b""
        if not chunk.endswith(b"\n\n"):  # whole events, the usual case, need no search
            end = _boundary_end(chunk)
            if end != len(chunk):
                if end == -1:
                    self.held = chunk
                    return b""
                chunk, self.held = chunk[:end], chunk[end:]
        if self.tail_only is None:
            # Not in the first event: this upstream states it only at the end.
            end = chunk.find(b"\n\n")
            self.tail_only = chunk.find(b'"usage"', 0, end if end != -1 else len(chunk)) == -1
        if self.tail_only:
            first = chunk.find(b'"usage"', len(chunk) - _TAIL)
        else:
            first = chunk.find(b'"usage"')
        return chunk if first == -1 else self._strip(chunk, first)

    def flush(self) -> bytes:
        """What was held back when the stream ended (an event missing its blank line)."""
        held, self.held = self.held, b""
        first = held.find(b'"usage"')
        return held if first == -1 else self._strip(held, first)

    def _strip(self, data: bytes, first: int) -> bytes:
        # Every search starts at the first "usage" (a null one begins up to 2 bytes
        # before it): a stream's reads are long, and the usage is near their end.
        first = max(first - 2, 0)
        for null in _NULL_USAGE:
            if data.find(null, first) != -1:
                data = data[:first] + data[first:].replace(null, b"")
        position = data.find(_USAGE_OBJECT, first)
        while position != -1:
            start, end = _event_span(data, position)
            event = data[start:end]
            line = event.find(b"data:")
            usage = usage_of_answer(event[line + 5 :]) if line != -1 else None
            if usage is not None:
                self.usage = usage
                if any(event.find(empty) != -1 for empty in _EMPTY_CHOICES):
                    data = _without(data, start, end)  # the event the client did not ask for
                    end = start
            position = data.find(_USAGE_OBJECT, end)
        return data


def _without(data: bytes, start: int, end: int) -> bytes:
    """``data`` less ``data[start:end]``, copied once (a long read holds the usage event
    near its end: slicing it, then joining, would copy the read twice)."""
    view = memoryview(data)
    return b"".join((view[:start], view[end:]))


def _event_span(data: bytes, position: int) -> tuple[int, int]:
    """The start and end (after its blank line) of the event that holds ``position``."""
    # A CRLF boundary matters only where it would end after (or start before) the LF
    # one: each second search stops there instead of crossing the whole read.
    lf = data.rfind(b"\n\n", 0, position)
    crlf = data.rfind(b"\r\n\r\n", max(lf - 1, 0), position)
    start = max(lf + 2 if lf != -1 else 0, crlf + 4 if crlf != -1 else 0)
    lf = data.find(b"\n\n", position)
    crlf = data.find(b"\r\n\r\n", position, lf + 2 if lf != -1 else len(data))
    ends = [i + 2 for i in (lf,) if i != -1] + [i + 4 for i in (crlf,) if i != -1]
    return start, min(ends) if ends else len(data)
