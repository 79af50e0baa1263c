"""The front door's stream: OpenAI chunk events -> Anthropic stream events, read by read
(``ChatStream``).
"""

from __future__ import annotations

import msgspec

from ...wire.sse import EventSplitter
from ..chat import (
    ChatAnswer,
    ChatFunction,
    ChatToolCall,
    ChatUsage,
    decode_chat_answer,
    event_data,
)
from .answer import STOP_REASONS
from .errors import anthropic_error
from .front_answer import anthropic_usage


def _sse(kind: bytes, payload: bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind, payload)


_TEXT_DELTA = b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%s}}'
_JSON_DELTA = (
    b'{"type":"content_block_delta","index":%d,"delta":{"type":"input_json_delta",'
    b'"partial_json":%s}}'
)
_THINKING_DELTA = (
    b'{"type":"content_block_delta","index":%d,"delta":{"type":"thinking_delta","thinking":%s}}'
)

_encode = msgspec.json.Encoder().encode


# The error types of a stream's last words (the gateway's, or an upstream's) in Anthropic's.
_FRONT_ERROR_TYPES = {
    "timeout_error": "timeout_error",
    "rate_limit_error": "rate_limit_error",
    "invalid_request_error": "invalid_request_error",
}


class ChatStream:
    """OpenAI's chunk events in, Anthropic's stream events out, read by read.

    ``message_start`` leaves with the first chunk; text, reasoning and each tool call
    become content blocks, opened and closed in order; the last ``message_delta`` carries
    the stop reason and the usage (the request asked for usage: OpenAI sends it last).
    An OpenAI error event becomes an ``error`` event.
    """

    __slots__ = (
        "_blocks",
        "_model",
        "_open",
        "_open_kind",
        "_splitter",
        "_started",
        "_stop",
        "_tools",
        "_usage",
        "done",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._splitter = EventSplitter()
        self._started = False
        self._blocks = 0  # content blocks opened so far
        self._open: int | None = None  # the open block's index
        self._open_kind = ""  # "text", "thinking", or "tool"
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self._stop = "end_turn"
        self._usage: ChatUsage | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._splitter.feed(data):
            if self.done:
                break
            payload = event_data(raw)
            if payload is None:
                continue
            if payload == b"[DONE]":
                self._end(out)
                continue
            try:
                chunk = decode_chat_answer(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            self._chunk(chunk, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the stream: close what is open (an upstream that sent no
        ``[DONE]`` but ended cleanly still gets a whole Anthropic stream)."""
        out: list[bytes] = []
        if not self.done:
            self._end(out)
        return b"".join(out)

    def _start(self, chunk: ChatAnswer, out: list[bytes]) -> None:
        self._started = True
        message = {
            "id": chunk.id or "msg",
            "type": "message",
            "role": "assistant",
            "model": chunk.model or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(_sse(b"message_start", _encode({"type": "message_start", "message": message})))

    def _chunk(self, chunk: ChatAnswer, out: list[bytes]) -> None:
        if chunk.error is not None:
            error = chunk.error
            if isinstance(error, str):
                message, kind = error, "api_error"
            else:
                message = error.message or "The upstream failed."
                kind = _FRONT_ERROR_TYPES.get(error.type or "", "api_error")
            out.append(_sse(b"error", anthropic_error(500, message, kind)))
            self.done = True
            return
        if not self._started:
            self._start(chunk, out)
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta is not None:
                if delta.reasoning_content:
                    index = self._block("thinking", out)
                    out.append(
                        _sse(
                            b"content_block_delta",
                            _THINKING_DELTA % (index, _encode(delta.reasoning_content)),
                        )
                    )
                if delta.content:
                    index = self._block("text", out)
                    out.append(
                        _sse(b"content_block_delta", _TEXT_DELTA % (index, _encode(delta.content)))
                    )
                for call in delta.tool_calls or ():
                    self._tool_delta(call, out)
            if choice.finish_reason:
                self._stop = STOP_REASONS.get(choice.finish_reason, "end_turn")

    def _block(self, kind: str, out: list[bytes]) -> int:
        """The open block of this kind, opened (and the previous one closed) if need be."""
        if self._open is not None and self._open_kind == kind:
            return self._open
        self._close(out)
        index = self._open = self._blocks
        self._blocks += 1
        self._open_kind = kind
        block = (
            {"type": "text", "text": ""}
            if kind == "text"
            else {
                "type": "thinking",
                "thinking": "",
                "signature": "",
            }
        )
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_sse(b"content_block_start", _encode(start)))
        return index

    def _tool_delta(self, call: ChatToolCall, out: list[bytes]) -> None:
        function = call.function or ChatFunction()
        index = self._tools.get(call.index)
        if index is None:
            self._close(out)
            index = self._tools[call.index] = self._open = self._blocks
            self._blocks += 1
            self._open_kind = "tool"
            block = {
                "type": "tool_use",
                "id": call.id or f"toolu_{index}",
                "name": function.name or "",
                "input": {},
            }
            start = {"type": "content_block_start", "index": index, "content_block": block}
            out.append(_sse(b"content_block_start", _encode(start)))
        if function.arguments:
            out.append(
                _sse(b"content_block_delta", _JSON_DELTA % (index, _encode(function.arguments)))
            )

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            stop = b'{"type":"content_block_stop","index":%d}' % self._open
            out.append(_sse(b"content_block_stop", stop))
            self._open = None

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(ChatAnswer(), out)
        self._close(out)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": anthropic_usage(self._usage),
        }
        out.append(_sse(b"message_delta", _encode(delta)))
        out.append(_sse(b"message_stop", b'{"type":"message_stop"}'))
        self.done = True
