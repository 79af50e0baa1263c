"""Usage read from answers and stream tails; the usage the gateway asked for, taken out."""

from __future__ import annotations

import json

import pytest

from gateway.core.outcome import Usage
from gateway.observability.usage import UsageStripper, usage_of_answer, usage_of_stream_tail

OPENAI_USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 10,
    "total_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 4},
}
EXPECTED = Usage(
    prompt_tokens=20, completion_tokens=10, total_tokens=30, cached_tokens=5, reasoning_tokens=4
)


def compact(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def chunk(text: str, *, usage_null: bool, spaced: bool = False) -> bytes:
    payload = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"delta": {"content": text}}],
    }
    if usage_null:
        payload["usage"] = None
    data = json.dumps(payload).encode() if spaced else compact(payload)
    return b"data: " + data + b"\n\n"


USAGE_EVENT = b"data: " + compact({"id": "c", "choices": [], "usage": OPENAI_USAGE}) + b"\n\n"
DONE = b"data: [DONE]\n\n"


def test_usage_of_a_whole_answer_in_both_spellings():
    assert usage_of_answer(compact({"id": "x", "usage": OPENAI_USAGE})) == EXPECTED
    responses = {
        "input_tokens": 20,
        "output_tokens": 10,
        "total_tokens": 30,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens_details": {"reasoning_tokens": 4},
    }
    assert usage_of_answer(compact({"usage": responses})) == EXPECTED
    assert usage_of_answer(b'{"usage": null}') is None
    assert usage_of_answer(b"not json") is None
    embeddings = usage_of_answer(b'{"usage": {"prompt_tokens": 3, "total_tokens": 3}}')
    assert embeddings == Usage(prompt_tokens=3, total_tokens=3)


def test_usage_of_a_stream_tail():
    tail = chunk("b", usage_null=True) + USAGE_EVENT + DONE
    assert usage_of_stream_tail(tail) == EXPECTED
    assert usage_of_stream_tail(chunk("b", usage_null=True) + DONE) is None
    assert usage_of_stream_tail(b"") is None


@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("cut", [None, 1, 7, 40, -9, -3])
def test_the_stripper_gives_the_client_the_stream_it_asked_for(spaced, cut):
    asked = [chunk(f"t{i}", usage_null=True, spaced=spaced) for i in range(3)]
    wanted = [chunk(f"t{i}", usage_null=False, spaced=spaced) for i in range(3)]
    stream = b"".join(asked) + USAGE_EVENT + DONE
    reads = [stream] if cut is None else [stream[:cut], stream[cut:]]
    if cut is not None and cut < 0:  # the usage event straddles two reads
        position = len(b"".join(asked)) + len(USAGE_EVENT) + cut
        reads = [stream[:position], stream[position:]]
    stripper = UsageStripper()
    out = b"".join(stripper.feed(read) for read in reads) + stripper.flush()
    assert out == b"".join(wanted) + DONE
    assert stripper.usage == EXPECTED


def test_the_stripper_passes_whole_events_without_a_copy():
    stripper = UsageStripper()
    event = chunk("x", usage_null=False)
    assert stripper.feed(event) is event


def test_the_stripper_keeps_usage_that_comes_with_content():
    """An upstream that puts usage in a chunk with choices: the chunk stays, usage is read."""
    payload = {"id": "c", "choices": [{"delta": {"content": "z"}}], "usage": OPENAI_USAGE}
    event = b"data: " + compact(payload) + b"\n\n"
    stripper = UsageStripper()
    assert stripper.feed(event + DONE) == event + DONE
    assert stripper.usage == EXPECTED


def test_the_stripper_handles_crlf_events():
    stream = chunk("a", usage_null=True).replace(b"\n\n", b"\r\n\r\n") + USAGE_EVENT.replace(
        b"\n\n", b"\r\n\r\n"
    )
    stripper = UsageStripper()
    out = stripper.feed(stream[:10]) + stripper.feed(stream[10:]) + stripper.flush()
    assert out == chunk("a", usage_null=False).replace(b"\n\n", b"\r\n\r\n")
    assert stripper.usage == EXPECTED
