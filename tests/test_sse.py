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


def split_at_random(data: bytes, seed: int, most: int = 9) -> list[bytes]:
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(1, most)
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


# ---------------------------------------------------------------- the usual-event path

# The usual stream (one data line per event) with the other shapes mixed in: a comment,
# a named event, an extra blank line, a two-line event, an empty data line.
MIXED = (
    b'data: {"i": 0}\n\n'
    b'data: {"i": 1}\n\n'
    b": keep-alive\n\n"
    b'data: {"i": 2}\n\n'
    b"event: ping\ndata: x\n\n"
    b'data: {"i": 3}\n\n\n\n'
    b'data: {"i": 4}\ndata: more\n\n'
    b"data: \n\n"
    b'data: {"i": 5}\n\n'
    b"data: [DONE]\n\n"
)
USUAL = b"".join(b'data: {"i": %d, "text": "tok %d"}\n\n' % (i, i) for i in range(30))


def _run(hooks: list[object], pieces: list[bytes]) -> list[bytes]:
    return asyncio.run(_collect(Hooks(hooks), pieces))


class Looker:
    """Reads every event, changes nothing (the bench's hook)."""

    def __init__(self) -> None:
        self.data: list[bytes | None] = []

    def on_chunk(self, ctx, event):
        self.data.append(event.data)


class Editor:
    """Changes some events (data, json, raw), drops others."""

    def on_chunk(self, ctx, event):
        data = event.data
        if data == b'{"i": 1}':
            event.data = b'{"i": "one"}'
        elif data == b'{"i": 2}':
            event.json["i"] = "two"
        elif data == b"x":
            event.raw = b"event: pong\ndata: y"
        elif data == b'{"i": 5}':
            event.drop()


def _events_of(stream: bytes) -> list[bytes | None]:
    """Every event's data, read with the line-by-line splitter."""
    splitter = EventSplitter()
    return [SSEEvent(raw).data for raw in splitter.feed(stream)]


def test_a_looking_hook_passes_any_split_through_byte_for_byte():
    # (Extra blank lines between events, and CRs, come out as the one-piece run has
    # them: dropped and turned into LFs, whatever the split.)
    plain = MIXED.replace(b"\n\n\n\n", b"\n\n")
    for stream, expected in (
        (USUAL, USUAL),
        (plain, plain),
        (MIXED, plain),
        (MIXED.replace(b"\n", b"\r\n"), plain),
    ):
        for seed in range(40):
            looker = Looker()
            # pieces of a few bytes, and of a few events (the usual reads)
            pieces = split_at_random(stream, seed, 9 if seed % 2 else 120)
            assert b"".join(_run([looker], pieces)) == expected, seed
            assert looker.data == _events_of(expected), seed


def test_edits_come_out_the_same_however_the_reads_are_cut():
    expected = b"".join(_run([Editor()], [MIXED]))
    assert b'data: {"i": "one"}\n\n' in expected
    assert b'data: {"i":"two"}\n\n' in expected
    assert b"event: pong\ndata: y\n\n" in expected
    assert b'{"i": 5}' not in expected
    assert expected.endswith(b'data: {"i": 4}\ndata: more\n\ndata: \n\ndata: [DONE]\n\n')
    for seed in range(40):
        pieces = split_at_random(MIXED, seed, 9 if seed % 2 else 120)
        assert b"".join(_run([Editor()], pieces)) == expected, seed
        # and with a second hook after it, which the pipeline runs each event through too
        assert b"".join(_run([Editor(), Looker()], pieces)) == expected, seed


def test_a_read_of_usual_events_goes_out_as_it_came():
    out = _run([Looker()], [USUAL[:200], USUAL[200:]])
    assert b"".join(out) == USUAL
    whole = _run([Looker()], [USUAL])
    assert whole == [USUAL] and whole[0] is not None


def test_a_hook_that_keeps_events_keeps_each_one():
    kept: list[SSEEvent] = []

    class Keeper:
        def on_chunk(self, ctx, event):
            kept.append(event)

    looker = Looker()
    _run([looker, Keeper()], [USUAL])
    assert [event.data for event in kept] == looker.data
    assert len({id(event) for event in kept}) == len(kept) == 30


def test_a_failing_hook_lets_the_events_before_it_out():
    class Fails:
        def on_chunk(self, ctx, event):
            if event.data == b'{"i": 3, "text": "tok 3"}':
                raise RuntimeError("boom")

    out: list[bytes] = []

    async def run() -> None:
        async def source():
            yield USUAL

        async for chunk in run_chunk_hooks(
            Hooks([Fails()]).on_chunk, RequestContext(), source(), None
        ):
            out.append(chunk)

    try:
        asyncio.run(run())
    except RuntimeError as error:
        assert str(error) == "boom"
    else:
        raise AssertionError("the hook's error did not end the stream")
    assert b"".join(out) == b"".join(USUAL.split(b"\n\n")[i] + b"\n\n" for i in range(3))


def test_split_hands_other_streams_to_feed_untouched():
    for chunk in (
        b"event: x\ndata: y\n\n",
        b"data: a\r\n\r\n",
        b"data: a\ndata: b\n\n",
        b": hi\n\n",
    ):
        splitter = EventSplitter()
        assert splitter.split(chunk) is None
        assert splitter.feed(chunk) != [] or chunk.startswith(b":")
    splitter = EventSplitter()
    assert splitter.split(b"data: a\n\ndata: b") == [b"a"]
    assert splitter.whole == b"data: a\n\n"
    assert splitter.split(b"c\n\n") == [b"bc"]  # the held event, completed
    assert splitter.split(b"data: d\n\nid: 4\n\n") is None  # not usual: nothing taken
    assert splitter.feed(b"data: d\n\nid: 4\n\n") == [b"data: d", b"id: 4"]


def test_json_follows_data_set_after_it_was_read():
    event = SSEEvent(b'data: {"a": 1}')
    assert event.json["a"] == 1
    event.data = b'{"a": 2}'
    assert event.json["a"] == 2
    event.json["a"] = 3
    assert event.raw == b'data: {"a":3}'
    assert SSEEvent.of_data(b'{"a": 1}').raw == b'data: {"a": 1}'
