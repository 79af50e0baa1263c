"""Bedrock's ConverseStream -> OpenAI ``chat.completion.chunk`` events, read by read
(``ConverseStream``).

The stream is AWS's binary event stream (``eventstream``); each event message's payload
is one JSON event: ``messageStart``, ``contentBlockStart`` (a tool call's id and name),
``contentBlockDelta`` (text, a tool call's input, reasoning), ``contentBlockStop``,
``messageStop`` (the stop reason), then ``metadata`` (the usage). An ``exception``
message (``throttlingException``…) ends it as the translator's ``failure``.
"""

from __future__ import annotations

import msgspec

from ...core.errors import UpstreamStatusError
from ...core.outcome import Usage
from ..chat import DONE, ROLE, ChunkWriter
from .answer import WireUsage, completion_id, finish_reason, unwrapped, usage_of
from .errors import stream_failure, upstream_failure
from .eventstream import EventStreamDecoder
from .request import JSON_TOOL, Facts

_encode = msgspec.json.Encoder().encode
_TOOL_START = (
    b'{"tool_calls":[{"index":%d,"id":%s,"type":"function","function":{"name":%s,"arguments":""}}]}'
)
_TOOL_ARGUMENTS = b'{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}'


class _ToolStart(msgspec.Struct, rename="camel"):
    tool_use_id: str = ""
    name: str = ""


class _Start(msgspec.Struct, rename="camel"):
    tool_use: _ToolStart | None = None


class _ToolDelta(msgspec.Struct):
    input: str = ""


class _ReasoningDelta(msgspec.Struct, rename="camel"):
    text: str | None = None
    signature: str | None = None
    redacted_content: str | None = None


class _Delta(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolDelta | None = None
    reasoning_content: _ReasoningDelta | None = None


class Event(msgspec.Struct, rename="camel"):
    """Any ConverseStream event's payload: only the fields of its type are there."""

    role: str | None = None
    content_block_index: int = 0
    start: _Start | None = None
    delta: _Delta | None = None
    stop_reason: str | None = None
    usage: WireUsage | None = None


decode_event = msgspec.json.Decoder(Event).decode


class ConverseStream:
    """ConverseStream's event messages in, OpenAI's chunk events out, read by read.

    ``feed`` takes whatever bytes arrived (messages may straddle reads) and returns the
    OpenAI events they complete. Tool calls get OpenAI indices in the order they start
    (Bedrock's block indices count text blocks too). The finishing chunk leaves at
    ``messageStop``; the usage (when asked for) and ``[DONE]`` at ``metadata``, which
    follows it, or at the end. ``failure`` is set by an exception message.
    """

    __slots__ = (
        "_args_seen",
        "_decoder",
        "_done",
        "_facts",
        "_json_blocks",
        "_json_parts",
        "_thoughts",
        "_tool_calls",
        "_tools",
        "_writer",
        "failure",
        "stopped",
        "usage",
    )

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._decoder = EventStreamDecoder()
        self._writer: ChunkWriter | None = None
        self._tools: dict[int, int] = {}  # Bedrock block index -> OpenAI tool call index
        self._tool_calls = 0  # real tool calls (not the JSON tool) seen
        self._args_seen: set[int] = set()
        self._json_blocks: set[int] = set()
        self._json_parts: list[str] = []  # a wrapped JSON answer, held until its block ends
        self._thoughts: dict[int, list[str]] = {}  # reasoning text until its signature
        self._done = False
        self.stopped = False  # messageStop came
        self.usage: Usage | None = None
        self.failure: UpstreamStatusError | None = None

    @property
    def complete(self) -> bool:
        """Whether the stream ended as Bedrock ends one (``messageStop``, or an error)."""
        return self.stopped or self.failure is not None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for headers, payload in self._decoder.feed(data):
            if self._done or self.failure is not None:
                break
            kind = headers.get(":message-type", "event")
            if kind == "event":
                self._event(headers.get(":event-type", ""), payload, out)
            elif kind == "exception":
                self.failure = stream_failure(headers.get(":exception-type", ""), payload)
            elif kind == "error":
                code = headers.get(":error-code") or "InternalServerException"
                message = headers.get(":error-message") or "Bedrock's stream failed."
                self.failure = upstream_failure(code, message, 500)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the upstream's bytes: the tail, if ``metadata`` did not bring it."""
        out: list[bytes] = []
        if self.stopped and not self._done and self.failure is None:
            self._tail(out)
        return b"".join(out)

    def _writer_for(self) -> ChunkWriter:
        writer = self._writer
        if writer is None:
            writer = self._writer = ChunkWriter(completion_id(), self._facts.model)
        return writer

    def _tail(self, out: list[bytes]) -> None:
        writer = self._writer_for()
        if self._facts.include_usage and self.usage is not None:
            out.append(writer.usage(self.usage))
        out.append(DONE)
        self._done = True

    def _event(self, kind: str, payload: bytes, out: list[bytes]) -> None:
        try:
            event = decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not an event this translation knows
        if kind == "contentBlockDelta":
            self._delta(event, out)
        elif kind == "contentBlockStart":
            self._block_start(event, out)
        elif kind == "contentBlockStop":
            self._block_stop(event.content_block_index, out)
        elif kind == "messageStart":
            out.append(self._writer_for().delta(ROLE))
        elif kind == "messageStop":
            json_answer, called = bool(self._json_blocks), bool(self._tool_calls)
            finish = finish_reason(event.stop_reason, json_answer, called)
            out.append(self._writer_for().delta(b"{}", finish))
            self.stopped = True
        elif kind == "metadata":
            if event.usage is not None:
                self.usage = usage_of(event.usage)
            if self.stopped:
                self._tail(out)

    def _delta(self, event: Event, out: list[bytes]) -> None:
        delta = event.delta
        if delta is None:
            return
        index = event.content_block_index
        if delta.text is not None:
            if delta.text:
                out.append(self._writer_for().text(delta.text))
        elif delta.tool_use is not None:
            fragment = delta.tool_use.input
            if not fragment:
                return
            if index in self._json_blocks:
                if self._facts.json_wrapped:
                    self._json_parts.append(fragment)
                else:
                    out.append(self._writer_for().text(fragment))
            elif index in self._tools:
                self._args_seen.add(index)
                delta_json = _TOOL_ARGUMENTS % (self._tools[index], _encode(fragment))
                out.append(self._writer_for().delta(delta_json))
        elif delta.reasoning_content is not None:
            self._reasoning(index, delta.reasoning_content, out)

    def _reasoning(self, index: int, delta: _ReasoningDelta, out: list[bytes]) -> None:
        if delta.text:
            thought = b'{"reasoning_content":%s}' % _encode(delta.text)
            out.append(self._writer_for().delta(thought))
            self._thoughts.setdefault(index, []).append(delta.text)
        elif delta.signature:
            text = "".join(self._thoughts.pop(index, ()))
            block = {"type": "thinking", "thinking": text, "signature": delta.signature}
            out.append(self._writer_for().delta(_encode({"thinking_blocks": [block]})))
        elif delta.redacted_content:
            redacted = {"type": "redacted_thinking", "data": delta.redacted_content}
            out.append(self._writer_for().delta(_encode({"thinking_blocks": [redacted]})))

    def _block_start(self, event: Event, out: list[bytes]) -> None:
        tool = event.start.tool_use if event.start is not None else None
        if tool is None:
            return
        index = event.content_block_index
        if self._facts.json_tool and tool.name == JSON_TOOL:
            self._json_blocks.add(index)
            return
        position = self._tools[index] = len(self._tools)
        self._tool_calls += 1
        start = _TOOL_START % (position, _encode(tool.tool_use_id), _encode(tool.name))
        out.append(self._writer_for().delta(start))

    def _block_stop(self, index: int, out: list[bytes]) -> None:
        if index in self._tools and index not in self._args_seen:
            # No input came: the call has none. Say so, as OpenAI would ("{}").
            self._args_seen.add(index)
            out.append(self._writer_for().delta(_TOOL_ARGUMENTS % (self._tools[index], b'"{}"')))
        elif index in self._json_blocks and self._json_parts:
            answer = unwrapped("".join(self._json_parts))
            self._json_parts = []
            out.append(self._writer_for().text(answer))
