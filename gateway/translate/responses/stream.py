"""The hub's chat stream -> the Responses API's event stream, read by read
(``ResponsesStream``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.outcome import Usage
from ...wire.sse import EventSplitter
from ..chat import ChatAnswer, ChatError, ChatToolCall, decode_chat_answer, event_data
from .answer import (
    call_is_custom,
    call_item,
    custom_input,
    error_code,
    finish_status,
    message_item,
    reasoning_items,
    refusal_part,
    response_error,
    response_object,
    text_part,
)
from .request import Facts
from .shapes import output_id
from .usage import usage_of_chat

_encode = msgspec.json.Encoder().encode

# The events of the hot path, written around their values (no dict per event).
_TEXT_DELTA = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":%d,"delta":%s,"logprobs":[]}\n\n'
)
_REFUSAL_DELTA = (
    b"event: response.refusal.delta\n"
    b'data: {"type":"response.refusal.delta","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":%d,"delta":%s}\n\n'
)
_REASONING_DELTA = (
    b"event: response.reasoning_text.delta\n"
    b'data: {"type":"response.reasoning_text.delta","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":%d,"delta":%s}\n\n'
)
_ARGUMENTS_DELTA = (
    b"event: response.function_call_arguments.delta\n"
    b'data: {"type":"response.function_call_arguments.delta","sequence_number":%d,'
    b'"item_id":%s,"output_index":%d,"delta":%s}\n\n'
)

CUT_SHORT = "The upstream's stream ended before the answer was complete."


class _Open:
    """The output item being streamed: what its ``.done`` events and the final output
    need (its text so far, as pieces), and nothing more."""

    __slots__ = (
        "blocks",
        "call_id",
        "custom",
        "id",
        "id_json",
        "index",
        "kind",
        "name",
        "part",
        "parts",
        "pieces",
    )

    def __init__(self, kind: str, index: int, ident: str) -> None:
        self.kind = kind  # "reasoning", "message" or "call"
        self.index = index  # its output_index
        self.id = ident
        self.id_json = _encode(ident)
        self.pieces: list[str] = []  # the open part's text, or the call's arguments
        self.part = ""  # a message's open part: "text" or "refusal" ("": none)
        self.parts: list[dict[str, Any]] = []  # a message's closed parts
        self.blocks: list[dict[str, Any]] = []  # a reasoning item's thinking blocks
        self.call_id = ""
        self.name = ""
        self.custom = False


class ResponsesStream:
    """The hub's chat stream in, the Responses API's events out, read by read.

    ``start`` writes ``response.created`` and ``response.in_progress``; ``feed`` takes
    whatever bytes arrived (events may straddle reads) and returns the events they
    complete; ``finish`` ends the stream when the upstream's bytes end; ``fail`` ends it
    for a reason of the gateway's own. Items are streamed one at a time, in the order
    they start (reasoning, text, each tool call), each closed when the next starts. At
    the end: ``response.completed``, ``response.incomplete`` (a ``length`` or
    ``content_filter`` finish), or an ``error`` event and ``response.failed`` (an error
    event upstream, or a stream cut short). ``output`` holds the final items to store
    (thinking blocks kept), ``response`` the final Response, ``usage`` the usage.
    """

    __slots__ = (
        "_created",
        "_facts",
        "_finish",
        "_id",
        "_open",
        "_seq",
        "_shown",
        "_splitter",
        "_started",
        "_tools",
        "done",
        "output",
        "response",
        "usage",
    )

    def __init__(self, facts: Facts, response_id: str, created_at: int) -> None:
        self._facts = facts
        self._id = response_id
        self._created = created_at
        self._splitter = EventSplitter()
        self._seq = 0
        self._started = False
        self._finish: str | None = None  # the finish_reason, once it came
        self._open: _Open | None = None
        self._tools: dict[int, _Open] = {}  # chat tool call index -> its item
        self._shown: list[dict[str, Any]] = []  # the final items, as the client sees them
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.response: dict[str, Any] | None = None
        self.done = False

    # ------------------------------------------------------------------ the interface

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress`` (once)."""
        if self._started:
            return b""
        self._started = True
        response = _encode(
            response_object(self._facts, self._id, self._created, "in_progress", [], None)
        )
        return self._raw_event("response.created", response) + self._raw_event(
            "response.in_progress", response
        )

    def feed(self, data: bytes) -> bytes:
        """Whatever bytes of the chat stream arrived: the events they complete (after
        ``start``'s, if those were not written yet)."""
        out: list[bytes] = [self.start()]
        for raw in self._splitter.feed(data):
            if self.done:
                break
            payload = event_data(raw)
            if payload is not None:
                self._payload(payload, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the upstream's bytes: the terminal events, unless they were
        written already. A stream that ended before its finish is failed."""
        out: list[bytes] = [self.start()]
        rest = self._splitter.flush()
        if rest is not None and not self.done:
            payload = event_data(rest)
            if payload is not None:
                self._payload(payload, out)
        if not self.done:
            if self._finish is not None:
                self._end(out)
            else:
                self._fail(CUT_SHORT, "server_error", out)
        return b"".join(out)

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """The stream ends for a reason of the gateway's own (an idle upstream, a cut):
        an ``error`` event, then ``response.failed`` with the output so far."""
        if self.done:
            return b""
        out: list[bytes] = [self.start()]
        self._fail(message, code, out)
        return b"".join(out)

    # ---------------------------------------------------------------- the chat stream

    def _payload(self, payload: bytes, out: list[bytes]) -> None:
        if payload == b"[DONE]":
            self._end(out)
            return
        try:
            chunk = decode_chat_answer(payload)
        except (msgspec.DecodeError, RecursionError):
            return  # not a chunk this translation knows
        if chunk.error is not None:
            self._upstream_error(chunk, out)
            return
        if chunk.usage is not None:
            self.usage = usage_of_chat(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # a Response has one answer
            delta = choice.delta
            if delta is not None:
                reasoning = delta.reasoning_text
                if reasoning:
                    self._reasoning(reasoning, out)
                if delta.thinking_blocks:
                    self._thinking(delta.thinking_blocks, out)
                if delta.content:
                    self._text("text", delta.content, out)
                if delta.refusal:
                    self._text("refusal", delta.refusal, out)
                for call in delta.tool_calls or ():
                    self._call(call, out)
            if choice.finish_reason:
                self._finish = choice.finish_reason

    def _upstream_error(self, chunk: ChatAnswer, out: list[bytes]) -> None:
        error = chunk.error
        if isinstance(error, str):
            error = ChatError(message=error)
        assert error is not None
        message = error.message or "The upstream failed."
        code = str(error.code) if error.code is not None else None
        self._fail(message, error_code(error.type, code), out, code or error.type)

    # ------------------------------------------------------------------------ items

    def _item(self, kind: str, prefix: str, out: list[bytes]) -> _Open:
        """A new item, the open one closed first."""
        self._close("completed", out)
        index = len(self._shown)
        item = self._open = _Open(kind, index, output_id(prefix, self._id, index))
        return item

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item.kind != "reasoning":
            item = self._reasoning_item(out)
        if not item.part:
            item.part = "text"
            part = {"type": "reasoning_text", "text": ""}
            out.append(self._part_event("response.content_part.added", item, 0, part))
        item.pieces.append(text)
        out.append(_REASONING_DELTA % (self._next(), item.id_json, item.index, 0, _encode(text)))

    def _reasoning_item(self, out: list[bytes]) -> _Open:
        item = self._item("reasoning", "rs", out)
        added = {"id": item.id, "type": "reasoning", "summary": [], "content": []}
        out.append(self._event("response.output_item.added", output_index=item.index, item=added))
        return item

    def _thinking(self, blocks: list[dict[str, Any]], out: list[bytes]) -> None:
        """Thinking blocks to hand back: whole, or in pieces (a text's, then its signature's)
        as LiteLLM streams them; they belong to the reasoning item."""
        item = self._open
        if item is None or item.kind != "reasoning":
            item = self._reasoning_item(out)
        for block in blocks:
            last = item.blocks[-1] if item.blocks else None
            if (
                block.get("type") == "thinking"
                and last is not None
                and last.get("type") == "thinking"
                and not last.get("signature")
            ):
                last["thinking"] = (last.get("thinking") or "") + (block.get("thinking") or "")
                if block.get("signature"):
                    last["signature"] = block["signature"]
            else:
                item.blocks.append(dict(block))

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item.kind != "message":
            item = self._item("message", "msg", out)
            added = message_item(item.id, [], "in_progress")
            out.append(
                self._event("response.output_item.added", output_index=item.index, item=added)
            )
        if item.part != kind:
            self._close_part(item, out)
            item.part = kind
            part = text_part("") if kind == "text" else refusal_part("")
            out.append(self._part_event("response.content_part.added", item, len(item.parts), part))
        item.pieces.append(text)
        template = _TEXT_DELTA if kind == "text" else _REFUSAL_DELTA
        at = len(item.parts)
        out.append(template % (self._next(), item.id_json, item.index, at, _encode(text)))

    def _call(self, call: ChatToolCall, out: list[bytes]) -> None:
        function = call.function
        arguments = function.arguments if function is not None else None
        item = self._tools.get(call.index)
        if item is not None and (not call.id or call.id == item.call_id):
            if item is not self._open:
                return  # a late piece of a call already closed (no known upstream does so)
        else:  # a new call (some servers give every call index 0, each with its own id)
            name = (function.name if function is not None else None) or ""
            custom = call_is_custom(self._facts, name)
            item = self._item("call", "ctc" if custom else "fc", out)
            self._tools[call.index] = item
            item.name = name
            item.custom = custom
            item.call_id = call.id or output_id("call", self._id, item.index)
            added = call_item(self._facts, item.id, item.call_id, name, "", "in_progress")
            out.append(
                self._event("response.output_item.added", output_index=item.index, item=added)
            )
        if arguments:
            item.pieces.append(arguments)
            if not item.custom:  # a custom tool's input is said whole, at its end
                out.append(
                    _ARGUMENTS_DELTA % (self._next(), item.id_json, item.index, _encode(arguments))
                )

    # ---------------------------------------------------------------------- closing

    def _close_part(self, item: _Open, out: list[bytes]) -> None:
        """Close a message's open part (its ``.done`` events)."""
        if not item.part:
            return
        text = "".join(item.pieces)
        index = len(item.parts)
        if item.part == "text":
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=index,
                    text=text,
                    logprobs=[],
                )
            )
            part = text_part(text)
        else:
            out.append(
                self._event(
                    "response.refusal.done",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=index,
                    refusal=text,
                )
            )
            part = refusal_part(text)
        out.append(self._part_event("response.content_part.done", item, index, part))
        item.parts.append(part)
        item.pieces = []
        item.part = ""

    def _close(self, status: str, out: list[bytes]) -> None:
        """Close the open item: its last events, and its place in the output."""
        item = self._open
        if item is None:
            return
        self._open = None
        if item.kind == "message":
            self._close_part(item, out)
            shown = stored = message_item(item.id, item.parts, status)
        elif item.kind == "reasoning":
            text = "".join(item.pieces)
            if item.part:
                out.append(
                    self._event(
                        "response.reasoning_text.done",
                        item_id=item.id,
                        output_index=item.index,
                        content_index=0,
                        text=text,
                    )
                )
                part = {"type": "reasoning_text", "text": text}
                out.append(self._part_event("response.content_part.done", item, 0, part))
            shown, stored = reasoning_items(item.id, text, item.blocks, self._facts)
        else:
            arguments = "".join(item.pieces)
            if item.custom:
                value = custom_input(arguments)
                if value:
                    out.append(self._custom_event("delta", item, delta=value))
                out.append(self._custom_event("done", item, input=value))
            else:
                if not arguments:  # a call without arguments has none: "{}", as OpenAI says
                    arguments = "{}"
                    out.append(_ARGUMENTS_DELTA % (self._next(), item.id_json, item.index, b'"{}"'))
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item.id,
                        output_index=item.index,
                        arguments=arguments,
                    )
                )
            item.pieces = []
            shown = stored = call_item(
                self._facts, item.id, item.call_id, item.name, arguments, status
            )
        if status != "completed":
            shown = {**shown, "status": status}
            stored = {**stored, "status": status}
        out.append(self._event("response.output_item.done", output_index=item.index, item=shown))
        self._shown.append(shown)
        self.output.append(stored)

    def _end(self, out: list[bytes]) -> None:
        """The upstream's answer is whole: the terminal event its finish calls for."""
        status, incomplete = finish_status(self._finish)
        self._close(status, out)
        self._terminal(
            "response.incomplete" if incomplete is not None else "response.completed",
            response_object(
                self._facts,
                self._id,
                self._created,
                status,
                self._shown,
                self.usage,
                incomplete=incomplete,
            ),
            out,
        )

    def _fail(
        self, message: str, code: str, out: list[bytes], event_code: str | None = None
    ) -> None:
        """An ``error`` event, then ``response.failed`` with the output so far."""
        self._close("incomplete", out)
        out.append(self._event("error", code=event_code or code, message=message, param=None))
        response = response_object(
            self._facts,
            self._id,
            self._created,
            "failed",
            self._shown,
            self.usage,
            error=response_error(message, code),
        )
        self._terminal("response.failed", response, out)

    def _terminal(self, kind: str, response: dict[str, Any], out: list[bytes]) -> None:
        out.append(self._event(kind, response=response))
        self.response = response
        self.done = True

    # ------------------------------------------------------------------------ events

    def _next(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self._next(), **fields}
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), _encode(body))

    def _raw_event(self, kind: str, response: bytes) -> bytes:
        """A lifecycle event around an encoded Response."""
        return b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n' % (
            kind.encode(),
            kind.encode(),
            self._next(),
            response,
        )

    def _part_event(self, kind: str, item: _Open, index: int, part: dict[str, Any]) -> bytes:
        return self._event(
            kind, item_id=item.id, output_index=item.index, content_index=index, part=part
        )

    def _custom_event(self, which: str, item: _Open, **value: str) -> bytes:
        return self._event(
            f"response.custom_tool_call_input.{which}",
            item_id=item.id,
            output_index=item.index,
            **value,
        )
