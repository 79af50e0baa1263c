"""Anthropic's event stream -> OpenAI ``chat.completion.chunk`` events, read by read
(``MessagesStream``).
"""

from __future__ import annotations

import msgspec

from ...core.errors import UpstreamStatusError
from ...core.outcome import Usage
from ...wire.sse import EventSplitter
from ..chat import (
    DONE,
    ROLE,
    ChunkWriter,
    event_data,
)
from .answer import FINISH_REASONS, Event, WireError, WireUsage, decode_event, unwrapped, usage_of
from .errors import upstream_failure
from .request import JSON_TOOL, Facts
from .usage import merged

_TOOL_START = (
    b'{"tool_calls":[{"index":%d,"id":%s,"type":"function","function":{"name":%s,"arguments":""}}]}'
)

_encode = msgspec.json.Encoder().encode
_TOOL_ARGUMENTS = b'{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}'


class MessagesStream:
    """Anthropic's event stream in, OpenAI's chunk events out, read by read.

    ``feed`` takes whatever bytes arrived (events may straddle reads) and returns the
    OpenAI events they complete; nothing waits for the stream to end. Tool calls get
    OpenAI indices in the order they start (Anthropic's block indices count text blocks
    too). ``usage`` is known once ``message_delta`` arrived; ``failure`` is set by an
    ``error`` event (the stream is over then); ``finish()`` says whether it ended whole.
    """

    __slots__ = (
        "_args_seen",
        "_facts",
        "_json_blocks",
        "_json_parts",
        "_splitter",
        "_start_usage",
        "_thoughts",
        "_tool_calls",
        "_tools",
        "_writer",
        "failure",
        "finished",
        "usage",
    )

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._splitter = EventSplitter()
        self._writer: ChunkWriter | None = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._tool_calls = 0  # real tool calls (not the JSON tool) seen
        self._args_seen: set[int] = set()
        self._json_blocks: set[int] = set()
        self._json_parts: list[str] = []  # a wrapped JSON answer, held until its block ends
        self._start_usage: WireUsage | None = None
        # A thinking block's text, until its signature comes: then the block goes out
        # whole as thinking_blocks (LiteLLM's name), for a client to hand back to Claude.
        self._thoughts: dict[int, list[str]] = {}
        self.usage: Usage | None = None
        self.failure: UpstreamStatusError | None = None
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._splitter.feed(data):
            if self.finished or self.failure is not None:
                break
            payload = event_data(raw)
            if payload is not None:
                self._event(payload, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the upstream's bytes: an event that lacked its blank line."""
        out: list[bytes] = []
        rest = self._splitter.flush()
        if rest is not None and not self.finished and self.failure is None:
            payload = event_data(rest)
            if payload is not None:
                self._event(payload, out)
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """Whether the stream ended as Anthropic ends one (``message_stop``, or an error)."""
        return self.finished or self.failure is not None

    def _writer_for(self, ident: str = "", model: str = "") -> ChunkWriter:
        writer = self._writer
        if writer is None:
            writer = self._writer = ChunkWriter(ident or "msg", model or self._facts.model)
        return writer

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        try:
            event = decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not an event this translation knows: a ping's kin, or a future one
        kind = event.type
        if kind == "content_block_delta":
            self._delta(event, out)
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "content_block_stop":
            self._block_stop(event.index, out)
        elif kind == "message_start" and event.message is not None:
            message = event.message
            self._start_usage = message.usage
            out.append(self._writer_for(message.id, message.model).delta(ROLE))
        elif kind == "message_delta":
            self._message_delta(event, out)
        elif kind == "message_stop":
            writer = self._writer_for()
            if self._facts.include_usage and self.usage is not None:
                out.append(writer.usage(self.usage))
            out.append(DONE)
            self.finished = True
        elif kind == "error":
            error = event.error or WireError()
            self.failure = upstream_failure(error.type, error.message)

    def _delta(self, event: Event, out: list[bytes]) -> None:
        delta = event.delta
        if delta is None:
            return
        index = event.index
        if delta.type == "text_delta":
            if delta.text:
                out.append(self._writer_for().text(delta.text))
        elif delta.type == "input_json_delta":
            fragment = delta.partial_json
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
        elif delta.type == "thinking_delta" and delta.thinking:
            thought = b'{"reasoning_content":%s}' % _encode(delta.thinking)
            out.append(self._writer_for().delta(thought))
            self._thoughts.setdefault(index, []).append(delta.thinking)
        elif delta.type == "signature_delta" and delta.signature:
            text = "".join(self._thoughts.pop(index, ()))
            block = {"type": "thinking", "thinking": text, "signature": delta.signature}
            out.append(self._writer_for().delta(_encode({"thinking_blocks": [block]})))

    def _block_start(self, event: Event, out: list[bytes]) -> None:
        block = event.content_block
        if block is None:
            return
        index = event.index
        if block.type == "text":
            if block.text:
                out.append(self._writer_for().text(block.text))
        elif block.type == "redacted_thinking" and block.data:
            redacted = {"type": "redacted_thinking", "data": block.data}
            out.append(self._writer_for().delta(_encode({"thinking_blocks": [redacted]})))
        elif block.type == "tool_use":
            if self._facts.json_tool and block.name == JSON_TOOL:
                self._json_blocks.add(index)
                return
            position = self._tools[index] = len(self._tools)
            self._tool_calls += 1
            start = _TOOL_START % (position, _encode(block.id or ""), _encode(block.name or ""))
            out.append(self._writer_for().delta(start))
            given = bytes(block.input) if block.input else b""
            if given.strip() not in (b"", b"{}"):  # the whole input at once: a proxy's way
                self._args_seen.add(index)
                out.append(
                    self._writer_for().delta(_TOOL_ARGUMENTS % (position, _encode(given.decode())))
                )

    def _block_stop(self, index: int, out: list[bytes]) -> None:
        if index in self._tools and index not in self._args_seen:
            # No argument came: the call has none. Say so, as OpenAI would ("{}").
            self._args_seen.add(index)
            out.append(self._writer_for().delta(_TOOL_ARGUMENTS % (self._tools[index], b'"{}"')))
        elif index in self._json_blocks and self._json_parts:
            answer = unwrapped("".join(self._json_parts))
            self._json_parts = []
            out.append(self._writer_for().text(answer))

    def _message_delta(self, event: Event, out: list[bytes]) -> None:
        self.usage = usage_of(merged(self._start_usage or WireUsage(), event.usage))
        reason = event.delta.stop_reason if event.delta is not None else None
        finish = FINISH_REASONS.get(reason or "", "stop")
        if finish == "tool_calls" and self._json_blocks and not self._tool_calls:
            finish = "stop"
        out.append(self._writer_for().delta(b"{}", finish))
