"""Claude on Bedrock through InvokeModel: Anthropic's Messages API in Bedrock's envelope.

The request is a Messages body — an Anthropic client's as sent, or one the Anthropic
translator made of a chat request — without ``model`` and ``stream`` (the URL says both:
``/model/{modelId}/invoke``, ``/invoke-with-response-stream``) and with Bedrock's
``anthropic_version`` and any ``anthropic_beta`` flags in the body (``to_invoke``). A
whole answer is Anthropic's Message, as Anthropic writes it. A stream is AWS's event
stream whose ``chunk`` events carry ``{"bytes": "<base64 of one Anthropic event's
JSON>"}``: ``InvokeStream`` hands each event to the Anthropic translator (OpenAI chunks
out), ``MessagesReframe`` writes each as Anthropic's SSE (``event: <type>`` and
``data: <json>``) for an Anthropic client. An ``exception`` message (throttling…) ends
either as its ``failure``. ``to_count_tokens`` wraps a count_tokens body for Bedrock's
CountTokens API.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec

from ...core.errors import InvalidRequestError, UpstreamProtocolError, UpstreamStatusError
from ...core.outcome import Usage
from ...wire.payload import JSONBody
from ..anthropic.answer import Event, WireError, WireUsage, decode_event, usage_of
from ..anthropic.errors import upstream_failure as anthropic_failure
from ..anthropic.request import Facts
from ..anthropic.stream import MessagesStream
from ..anthropic.usage import merged
from .errors import stream_failure, upstream_failure
from .eventstream import EventStreamDecoder

__all__ = [
    "ANTHROPIC_VERSION",
    "InvokeStream",
    "MessagesReframe",
    "count_tokens_answer",
    "to_count_tokens",
    "to_invoke",
    "unwrap",
]

# The anthropic_version Bedrock's Messages API takes, in the body (not a header).
ANTHROPIC_VERSION = "bedrock-2023-05-31"
# A cross-region inference profile's prefix (us., eu., apac., global.…): CountTokens
# takes the foundation model's own id.
_REGION_PREFIX = re.compile(r"^[a-z][a-z-]{1,9}\.(?=anthropic\.)")
_KIND = re.compile(r"[a-z_]{1,64}")
_encode = msgspec.json.Encoder().encode


def _fields(body: bytes) -> tuple[JSONBody, str]:
    fields = JSONBody(body)
    try:
        model = fields.get("model")
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequestError("The request body must be a JSON object.") from None
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model: a string is required.", param="model")
    del fields["model"]
    return fields, model


def to_invoke(body: bytes, version: str, betas: tuple[str, ...] = ()) -> tuple[str, bool, bytes]:
    """A Messages request as InvokeModel takes it: ``(model, stream, body)``, the body
    without ``model`` and ``stream``, with ``anthropic_version`` (unless the client gave
    one) and ``betas`` added to its ``anthropic_beta``. Everything else stays as sent."""
    fields, model = _fields(body)
    stream = fields.get("stream") is True
    if "stream" in fields:
        del fields["stream"]
    if "anthropic_version" not in fields:
        fields["anthropic_version"] = version
    if betas:
        given = fields.get("anthropic_beta")
        flags = [f for f in given if isinstance(f, str)] if isinstance(given, list) else []
        fields["anthropic_beta"] = list(dict.fromkeys([*flags, *betas]))
    return model, stream, fields.to_bytes()


def to_count_tokens(body: bytes, version: str, max_tokens: int) -> tuple[str, bytes]:
    """A count_tokens request as Bedrock's CountTokens takes it: ``(model, body)``, the
    Messages body (an InvokeModel body: it needs ``max_tokens`` too) base64-encoded in
    ``input.invokeModel.body``; the model without its cross-region prefix."""
    fields, model = _fields(body)
    if "anthropic_version" not in fields:
        fields["anthropic_version"] = version
    if "max_tokens" not in fields:
        fields["max_tokens"] = max_tokens
    inner = base64.b64encode(fields.to_bytes()).decode()
    return _REGION_PREFIX.sub("", model), _encode({"input": {"invokeModel": {"body": inner}}})


class _Counted(msgspec.Struct, rename="camel"):
    input_tokens: int


_decode_counted = msgspec.json.Decoder(_Counted).decode


def count_tokens_answer(content: bytes) -> bytes:
    """CountTokens' ``{"inputTokens": n}`` as Anthropic's ``{"input_tokens": n}``."""
    return b'{"input_tokens":%d}' % _decode_counted(content).input_tokens


# ------------------------------------------------------------------------ the stream


class _Chunk(msgspec.Struct):
    data: str = msgspec.field(default="", name="bytes")


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def unwrap(headers: dict[str, str], payload: bytes) -> bytes | UpstreamStatusError | None:
    """One event-stream message of InvokeModelWithResponseStream: a chunk's Anthropic
    event (its JSON), the failure an exception or error message says, or ``None`` (a
    message of another kind)."""
    kind = headers.get(":message-type", "event")
    if kind == "event":
        if headers.get(":event-type") != "chunk":
            return None
        try:
            return binascii.a2b_base64(_decode_chunk(payload).data, strict_mode=True)
        except (msgspec.DecodeError, msgspec.ValidationError, binascii.Error, ValueError) as exc:
            raise UpstreamProtocolError(
                "The upstream's event stream is corrupt (a chunk)."
            ) from exc
    if kind == "exception":
        return stream_failure(headers.get(":exception-type", ""), payload)
    if kind == "error":
        code = headers.get(":error-code") or "InternalServerException"
        return upstream_failure(
            code, headers.get(":error-message") or "Bedrock's stream failed.", 500
        )
    return None


class InvokeStream(MessagesStream):
    """InvokeModelWithResponseStream's chunks in, OpenAI's chunk events out, read by read:
    each chunk's Anthropic event goes through the Anthropic translator."""

    __slots__ = ("_decoder",)

    def __init__(self, facts: Facts) -> None:
        super().__init__(facts)
        self._decoder = EventStreamDecoder()

    def feed(self, data: bytes) -> bytes:
        return _feed_chunks(self, data)

    def finish(self) -> bytes:
        return b""  # a message cut short is no event: complete says the stream broke


class _Kind(msgspec.Struct):
    type: str = ""


_decode_kind = msgspec.json.Decoder(_Kind).decode


class MessagesReframe:
    """InvokeModelWithResponseStream's chunks in, Anthropic's SSE out (for an Anthropic
    client): each chunk's event as ``event: <type>`` and ``data: <its JSON>``, in order,
    as it arrives. The usage is read from ``message_start`` and ``message_delta``; an
    ``error`` event, or an exception message, is the ``failure`` (said once, by the
    gateway, as Anthropic's ``error`` event)."""

    __slots__ = ("_decoder", "_start", "failure", "finished", "usage")

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self._start: WireUsage | None = None
        self.usage: Usage | None = None
        self.failure: UpstreamStatusError | None = None
        self.finished = False

    @property
    def complete(self) -> bool:
        return self.finished or self.failure is not None

    def feed(self, data: bytes) -> bytes:
        return _feed_chunks(self, data)

    def finish(self) -> bytes:
        return b""

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        try:
            kind = _decode_kind(raw).type
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not an event: nothing a client could read
        if not _KIND.fullmatch(kind):
            return
        if kind in ("message_start", "message_delta", "error"):
            try:
                event = decode_event(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                event = Event(type=kind)
            if kind == "error":
                error = event.error or WireError()
                self.failure = anthropic_failure(error.type, error.message)
                return
            self._count(event)
        elif kind == "message_stop":
            self.finished = True
        if b"\n" in raw or b"\r" in raw:  # (JSON may hold line breaks between its tokens)
            raw = _encode(msgspec.json.decode(raw))
        out.append(b"event: %s\ndata: %s\n\n" % (kind.encode(), raw))

    def _count(self, event: Event) -> None:
        if event.type == "message_start":
            self._start = event.message.usage if event.message is not None else None
        late = event.usage if event.type == "message_delta" else None
        if self._start is not None or late is not None:
            self.usage = usage_of(merged(self._start or WireUsage(), late))


def _feed_chunks(reader: Any, data: bytes) -> bytes:
    """What a read brought, through a reader of chunk messages (``_decoder``, ``_event``,
    ``finished``, ``failure``): each whole message's Anthropic event handled in turn, an
    exception message taken as the failure; nothing after the end or a failure."""
    out: list[bytes] = []
    for headers, payload in reader._decoder.feed(data):
        if reader.finished or reader.failure is not None:
            break
        event = unwrap(headers, payload)
        if isinstance(event, bytes):
            reader._event(event, out)
        elif event is not None:
            reader.failure = event
    return b"".join(out)
