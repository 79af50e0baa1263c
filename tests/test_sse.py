"""Splitting a byte stream into whole events, and the chunk-hook pipeline."""

from __future__ import annotations

import asyncio
import json
import random

from gateway.core.chunks import run_chunk_hooks
from gateway.core.context import RequestContext
from gateway.core.hooks import Hooks
from gateway.wire.sse import EventSplitter, SSEEvent
from gateway.wire.types import ChatCompletionChunk

EVENTS = [
    b'data: {"a": 1}',
    b"event: ping\ndata: x",
    b": comment",
    b'data: {"b": "two\\nlines"}\ndata: second',
    b"data: [DONE]",
]
STREAM = b"".join(e + b"\n\n" for e in EVENTS)


def split_at_random(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(1, 9)
        pieces.append(data[i : i + n])
        i += n
    return pieces


def test_events_come_out_whole_however_the_bytes_are_cut():
    for seed in range(50):
        splitter = EventSplitter()
        out = [event for piece in split_at_random(STREAM, seed) for event in splitter.feed(piece)]
        assert out == EVENTS
        assert splitter.flush() is None


def test_crlf_and_cr_line_endings():
    for ending in (b"\r\n", b"\r"):
        stream = STREAM.replace(b"\n", ending)
        for seed in range(20):
            splitter = EventSplitter()
            out = [
                event for piece in split_at_random(stream, seed) for event in splitter.feed(piece)
            ]
            assert out == EVENTS


def test_a_cr_terminated_event_is_not_held_back():
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\r") == [b"data: a"]
    assert splitter.feed(b"\ndata: b\r\n\r\n") == [b"data: b"]


def test_an_unterminated_last_event_is_flushed():
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\n\ndata: b") == [b"data: a"]
    assert splitter.flush() == b"data: b"


def test_event_data_and_edits():
    event = SSEEvent(b"id: 7\ndata: line1\ndata: line2")
    assert event.data == b"line1\nline2"
    event.data = b"new"
    assert event.raw == b"id: 7\ndata: new"
    assert SSEEvent(b": keep-alive").data is None
    assert SSEEvent(b"data: [DONE]").is_done
    assert SSEEvent(b"data: [DONE]").json is None


def test_typed_edit_shows_in_raw():
    chunk = (
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"x":0.70}'
    )
    event = SSEEvent(b"data: " + chunk, ChatCompletionChunk)
    event.typed().choices[0].delta.content = "HI"
    out = json.loads(event.raw[6:])
    assert out["choices"][0]["delta"]["content"] == "HI"
    assert event.raw.endswith(b',"x":0.70}')  # untouched field keeps its bytes


async def _collect(hooks: Hooks, pieces: list[bytes]) -> list[bytes]:
    async def source():
        for piece in pieces:
            yield piece

    return [c async for c in run_chunk_hooks(hooks.on_chunk, RequestContext(), source(), None)]


def test_pipeline_runs_hooks_in_order_and_drops():
    seen: list[bytes] = []

    class Recorder:
        def on_chunk(self, ctx, event):
            seen.append(event.raw)

    class Dropper:
        async def on_chunk(self, ctx, event):
            if event.data == b"x":
                event.drop()

    class Upper:
        def on_chunk(self, ctx, event):
            if event.data is not None and not event.is_done:
                event.data = event.data.upper()

    hooks = Hooks([Recorder(), Dropper(), Upper()])
    out = asyncio.run(_collect(hooks, split_at_random(STREAM, 3)))
    assert seen == EVENTS  # the first hook saw every event, whole and in order
    text = b"".join(out)
    assert b"data: x\n" not in text and b"ping" not in text
    assert b'data: {"A": 1}\n\n' in text
    assert text.endswith(b"data: [DONE]\n\n")


def test_pipeline_writes_once_per_upstream_read():
    class Nothing:
        def on_chunk(self, ctx, event):
            pass

    out = asyncio.run(_collect(Hooks([Nothing()]), [STREAM]))
    assert out == [STREAM]
