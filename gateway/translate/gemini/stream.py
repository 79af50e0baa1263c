"""Gemini's ``streamGenerateContent?alt=sse`` -> OpenAI ``chat.completion.chunk`` events,
read by read (``GeminiStream``): each Gemini event is a whole response holding only the
new text.
"""

from __future__ import annotations

import secrets

import msgspec

from ...core.errors import UpstreamStatusError
from ...core.outcome import Usage
from ...wire.sse import EventSplitter
from ..chat import (
    DONE,
    ROLE,
    ChunkWriter,
    arguments_text,
    event_data,
)
from .answer import WireResponse, call_id, decode_response, finish_reason, usage_of
from .errors import upstream_failure
from .request import Facts

_encode = msgspec.json.Encoder().encode


_TOOL_CALL = (
    b'{"tool_calls":[{"index":%d,"id":%s,"type":"function","function":{"name":%s,"arguments":%s}}]}'
)


class GeminiStream:
    """Gemini's SSE stream in, OpenAI's chunk events out, read by read.

    Each Gemini event is a whole response carrying only what is new: its text parts
    become content deltas, its function calls whole tool calls (Gemini does not split
    their arguments), its finish reason a finishing chunk. Gemini sends no end marker,
    so the usage event (when asked for) and ``[DONE]`` leave in ``finish()``.
    """

    __slots__ = (
        "_called",
        "_facts",
        "_finished",
        "_splitter",
        "_started",
        "_tools",
        "_writer",
        "failure",
        "usage",
    )

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._splitter = EventSplitter()
        self._writer: ChunkWriter | None = None
        self._started: set[int] = set()  # candidates whose role chunk went out
        self._tools: dict[int, int] = {}  # candidate -> tool calls so far
        self._called: set[int] = set()  # candidates that called a function
        self._finished: set[int] = set()
        self.usage: Usage | None = None
        self.failure: UpstreamStatusError | None = None

    @property
    def complete(self) -> bool:
        return bool(self._finished) or self.failure is not None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._splitter.feed(data):
            if self.failure is not None:
                break
            payload = event_data(raw)
            if payload is not None:
                self._event(payload, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        rest = self._splitter.flush()
        if rest is not None and self.failure is None:
            payload = event_data(rest)
            if payload is not None:
                self._event(payload, out)
        if self._finished and self.failure is None:
            writer = self._writer_for()
            if self._facts.include_usage and self.usage is not None:
                out.append(writer.usage(self.usage))
            out.append(DONE)
        return b"".join(out)

    def _writer_for(self, response: WireResponse | None = None) -> ChunkWriter:
        writer = self._writer
        if writer is None:
            ident = (response.response_id if response else None) or "chatcmpl-" + secrets.token_hex(
                12
            )
            model = (response.model_version if response else None) or self._facts.model
            writer = self._writer = ChunkWriter(ident, model)
        return writer

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        try:
            response = decode_response(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if response.error is not None:
            error = response.error
            self.failure = upstream_failure(error.code or 500, error.message, error.status)
            return
        writer = self._writer_for(response)
        if response.usage_metadata is not None:
            self.usage = usage_of(response.usage_metadata)
        if not response.candidates and response.prompt_feedback is not None:
            if response.prompt_feedback.block_reason and 0 not in self._finished:
                self._role(0, writer, out)
                out.append(writer.delta(b"{}", "content_filter", 0))
                self._finished.add(0)
            return
        for position, candidate in enumerate(response.candidates):
            index = candidate.index if candidate.index is not None else position
            self._role(index, writer, out)
            for part in candidate.content.parts if candidate.content is not None else ():
                call = part.function_call
                if call is not None:
                    number = self._tools.get(index, 0)
                    self._tools[index] = number + 1
                    self._called.add(index)
                    arguments = arguments_text(call.args)
                    delta = _TOOL_CALL % (
                        number,
                        _encode(call.id or call_id()),
                        _encode(call.name),
                        _encode(arguments),
                    )
                    out.append(writer.delta(delta, None, index))
                elif part.text:
                    if part.thought:
                        thought = b'{"reasoning_content":%s}' % _encode(part.text)
                        out.append(writer.delta(thought, None, index))
                    else:
                        out.append(writer.text(part.text, index))
            if candidate.finish_reason and index not in self._finished:
                self._finished.add(index)
                finish = finish_reason(candidate, index in self._called)
                out.append(writer.delta(b"{}", finish, index))

    def _role(self, index: int, writer: ChunkWriter, out: list[bytes]) -> None:
        if index not in self._started:
            self._started.add(index)
            out.append(writer.delta(ROLE, None, index))
