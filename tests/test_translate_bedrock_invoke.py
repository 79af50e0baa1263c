"""Claude on Bedrock through InvokeModel (Anthropic's Messages API in Bedrock's envelope),
CountTokens, and the Titan and Cohere embeddings: pure translation, no server."""

from __future__ import annotations

import base64
import json
import random

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.parsers import EventStreamJSONParser

from gateway.core.errors import InvalidRequestError, UpstreamProtocolError
from gateway.translate.anthropic.request import chat_to_messages
from gateway.translate.bedrock.embeddings import (
    COHERE_BATCH,
    embeddings_to_bedrock,
    embeddings_to_openai,
)
from gateway.translate.bedrock.eventstream import encode_message
from gateway.translate.bedrock.invoke import (
    ANTHROPIC_VERSION,
    InvokeStream,
    MessagesReframe,
    count_tokens_answer,
    to_count_tokens,
    to_invoke,
    unwrap,
)
from tests.fake_bedrock_invoke import chunk, exception, stream_frames
from tests.test_translate_anthropic import events

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
HI = {"messages": [{"role": "user", "content": "hi there"}]}


def pieces(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random offsets (a frame may straddle any number of reads)."""
    randomness = random.Random(seed)
    out, at = [], 0
    while at < len(data):
        size = randomness.randint(1, 23)
        out.append(data[at : at + size])
        at += size
    return out


def fed(translator, frames: list[bytes], seed: int = 3) -> bytes:
    out = b"".join(translator.feed(piece) for piece in pieces(b"".join(frames), seed))
    return out + translator.finish()


# ======================================================================== the request


def test_a_messages_body_loses_model_and_stream_and_gains_bedrocks_version():
    body = {
        "model": CLAUDE,
        "max_tokens": 100,
        "stream": True,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        **HI,
    }
    raw = json.dumps(body).encode()[:-1] + b', "temperature": 0.70}'
    model, stream, sent = to_invoke(raw, ANTHROPIC_VERSION)
    assert (model, stream) == (CLAUDE, True)
    data = json.loads(sent)
    assert "model" not in data and "stream" not in data
    assert data["anthropic_version"] == "bedrock-2023-05-31"
    assert data["system"] == body["system"] and data["thinking"] == body["thinking"]
    assert b'"temperature":0.70' in sent  # values pass as written, byte for byte


def test_the_clients_version_stays_and_betas_join_the_clients():
    body = {
        "model": CLAUDE,
        "max_tokens": 10,
        "anthropic_version": "bedrock-2099-01-01",
        "anthropic_beta": ["context-1m-2025-08-07"],
        **HI,
    }
    flags = ("interleaved-thinking-2025-05-14", "context-1m-2025-08-07")
    _, stream, sent = to_invoke(json.dumps(body).encode(), ANTHROPIC_VERSION, flags)
    data = json.loads(sent)
    assert stream is False
    assert data["anthropic_version"] == "bedrock-2099-01-01"
    assert data["anthropic_beta"] == ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]


@pytest.mark.parametrize("body", [b"[1]", b'{"messages": []}', b'{"model": 3}'])
def test_a_body_without_a_model_is_a_400(body):
    with pytest.raises(InvalidRequestError):
        to_invoke(body, ANTHROPIC_VERSION)


def test_a_chat_request_keeps_cache_markers_and_thinking_on_the_way_to_invoke_model():
    chat = {
        "model": CLAUDE,
        "stream": True,
        "reasoning_effort": "low",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {"role": "user", "content": "hi"},
        ],
    }
    messages, facts = chat_to_messages(json.dumps(chat).encode(), 4096)
    model, stream, sent = to_invoke(messages, ANTHROPIC_VERSION)
    data = json.loads(sent)
    assert (model, stream, facts.stream) == (CLAUDE, True, True)
    assert data["system"] == [
        {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}
    ]
    assert data["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert data["max_tokens"] == 4096 and "stream" not in data and "model" not in data


def test_count_tokens_wraps_an_invoke_model_body_for_the_foundation_model():
    body = {"model": "eu.anthropic.claude-x-v1:0", **HI}
    model, sent = to_count_tokens(json.dumps(body).encode(), ANTHROPIC_VERSION, 4096)
    assert model == "anthropic.claude-x-v1:0"  # CountTokens takes no inference profile
    inner = json.loads(base64.b64decode(json.loads(sent)["input"]["invokeModel"]["body"]))
    assert inner == {**HI, "anthropic_version": ANTHROPIC_VERSION, "max_tokens": 4096}
    assert json.loads(count_tokens_answer(b'{"inputTokens": 42}')) == {"input_tokens": 42}


# ========================================================================= the stream


def test_the_fakes_frames_are_what_botocore_reads_as_chunks():
    """AWS's own model of the stream (botocore's parser, as the anthropic SDK's Bedrock
    client reads it): a chunk event's payload is {"bytes": base64}, decoded to the event."""
    shape = ServiceModel(Loader().load_service_model("bedrock-runtime", "service-2")).shape_for(
        "ResponseStream"
    )
    frames = stream_frames("anthropic.claude-echo", HI)
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(frames) + exception("throttlingException", "Slow down."))
    parsed = [EventStreamJSONParser().parse(m.to_response_dict(), shape) for m in buffer]
    kinds = [json.loads(p["chunk"]["bytes"])["type"] for p in parsed[:-1]]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert parsed[-1] == {"Error": {"Code": "throttlingException", "Message": "Slow down."}}
    ours = [unwrap(*m) for m in _messages(frames)]
    assert ours == [p["chunk"]["bytes"] for p in parsed[:-1]]


def _messages(frames: list[bytes]) -> list[tuple[dict[str, str], bytes]]:
    from gateway.translate.bedrock.eventstream import EventStreamDecoder

    return EventStreamDecoder().feed(b"".join(frames))


def test_a_chunk_that_is_not_base64_is_a_corrupt_stream():
    headers = {":event-type": "chunk", ":message-type": "event"}
    with pytest.raises(UpstreamProtocolError):
        unwrap(headers, b'{"bytes": "not base64!"}')
    assert unwrap({":event-type": "other", ":message-type": "event"}, b"{}") is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_claude_stream_as_openai_chunks_from_frames_split_anywhere(seed):
    _, facts = chat_to_messages(
        json.dumps(
            {"model": CLAUDE, "stream": True, "stream_options": {"include_usage": True}, **HI}
        ).encode(),
        4096,
    )
    stream = InvokeStream(facts)
    out = events(fed(stream, stream_frames("anthropic.claude-tools", HI), seed))
    assert out[-1] == "[DONE]" and stream.complete
    chunks = out[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Let me check."
    calls: dict[int, str] = {}
    for c in chunks:
        for call in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            calls[call["index"]] = calls.get(call["index"], "") + call["function"]["arguments"]
    assert json.loads(calls[0]) == {"city": "Paris", "unit": "c°"}
    assert json.loads(calls[1]) == {"zone": "Europe/Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 35  # 10 + 20 cache reads + 5 writes
    assert stream.usage.cached_tokens == 20 and stream.usage.completion_tokens == 7


def test_thinking_comes_back_as_reasoning_and_a_signed_block():
    _, facts = chat_to_messages(json.dumps({"model": CLAUDE, "stream": True, **HI}).encode(), 99)
    out = events(fed(InvokeStream(facts), stream_frames("anthropic.claude-thinking", HI)))
    deltas = [c["choices"][0]["delta"] for c in out[:-1] if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Two and two."
    blocks = [b for d in deltas for b in d.get("thinking_blocks") or []]
    assert blocks == [{"type": "thinking", "thinking": "Two and two.", "signature": "EqQBsig"}]


def test_an_exception_ends_the_stream_as_its_failure():
    _, facts = chat_to_messages(json.dumps({"model": CLAUDE, "stream": True, **HI}).encode(), 99)
    stream = InvokeStream(facts)
    out = events(fed(stream, stream_frames("anthropic.claude-stream-error", HI)))
    assert out[-1] != "[DONE]"
    assert stream.failure is not None and stream.failure.status == 502
    assert stream.complete  # ended as Bedrock ends a failed stream
    cut = InvokeStream(facts)
    fed(cut, stream_frames("anthropic.claude-echo", HI)[:4])
    assert not cut.complete  # no message_stop: broken off


@pytest.mark.parametrize("seed", [4, 5])
def test_a_claude_stream_reframed_as_anthropics_sse(seed):
    frames = stream_frames("anthropic.claude-thinking", HI)
    reframe = MessagesReframe()
    sse = fed(reframe, frames, seed).decode()
    sent = [json.loads(base64.b64decode(json.loads(p)["bytes"])) for _, p in _messages(frames)]
    blocks = sse.split("\n\n")
    assert blocks[-1] == ""
    got = []
    for block in blocks[:-1]:
        kind, data = block.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: ")
        event = json.loads(data[6:])
        assert kind[7:] == event["type"]
        got.append(event)
    assert got == sent  # every event, in order, as Bedrock sent it
    assert reframe.complete and reframe.failure is None
    usage = reframe.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (35, 20, 7)


def test_a_reframed_stream_fails_on_an_exception_or_an_error_event():
    reframe = MessagesReframe()
    fed(
        reframe,
        [
            *stream_frames("anthropic.claude-echo", HI)[:3],
            exception("throttlingException", "Slow."),
        ],
    )
    assert reframe.failure is not None and reframe.failure.status == 429
    overloaded = MessagesReframe()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = fed(overloaded, [chunk(error)])
    assert out == b"" and overloaded.failure.status == 503  # said once, by the gateway


def test_an_event_with_line_breaks_is_sent_on_one_data_line():
    raw = b'{"type": "ping",\n "x": 1}'
    payload = json.dumps({"bytes": base64.b64encode(raw).decode()}).encode()
    headers = {":event-type": "chunk", ":message-type": "event"}
    out = MessagesReframe().feed(encode_message(headers, payload))
    assert out == b'event: ping\ndata: {"type":"ping","x":1}\n\n'


# ======================================================================== embeddings


def test_titan_takes_one_text_per_call():
    request = {
        "model": "amazon.titan-embed-text-v2:0",
        "input": ["one", "two words"],
        "dimensions": 256,
        "normalize": False,
    }
    bodies, facts = embeddings_to_bedrock(json.dumps(request).encode())
    assert [json.loads(b) for b in bodies] == [
        {"inputText": "one", "dimensions": 256, "normalize": False},
        {"inputText": "two words", "dimensions": 256, "normalize": False},
    ]
    answers = [
        b'{"embedding": [0.5, 0.25], "inputTextTokenCount": 1}',
        b'{"embedding": [1.0, -2.0], "inputTextTokenCount": 2, "embeddingsByType": {}}',
    ]
    out = json.loads(embeddings_to_openai(answers, [None, None], facts))
    assert [d["embedding"] for d in out["data"]] == [[0.5, 0.25], [1.0, -2.0]]
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert out["model"] == "amazon.titan-embed-text-v2:0"


def test_cohere_takes_96_texts_per_call_and_counts_from_the_header():
    texts = [f"text {i}" for i in range(COHERE_BATCH + 4)]
    request = {"model": "cohere.embed-english-v3", "input": texts, "encoding_format": "base64"}
    bodies, facts = embeddings_to_bedrock(json.dumps(request).encode())
    sent = [json.loads(b) for b in bodies]
    assert [len(b["texts"]) for b in sent] == [96, 4]
    assert all(b["input_type"] == "search_document" for b in sent)
    answers = [json.dumps({"embeddings": [[0.5]] * len(b["texts"])}).encode() for b in sent]
    out = json.loads(embeddings_to_openai(answers, [200, 9], facts))
    assert len(out["data"]) == 100 and out["data"][99]["index"] == 99
    assert base64.b64decode(out["data"][0]["embedding"]) == b"\x00\x00\x00?"  # 0.5, float32
    assert out["usage"]["prompt_tokens"] == 209


def test_cohere_v4_answers_by_type_and_takes_dimensions():
    request = {
        "model": "cohere.embed-v4:0",
        "input": "hi",
        "dimensions": 256,
        "input_type": "search_query",
    }
    bodies, facts = embeddings_to_bedrock(json.dumps(request).encode())
    assert json.loads(bodies[0]) == {
        "texts": ["hi"],
        "input_type": "search_query",
        "embedding_types": ["float"],
        "output_dimension": 256,
    }
    out = json.loads(embeddings_to_openai([b'{"embeddings": {"float": [[0.1, 0.2]]}}'], [1], facts))
    assert out["data"][0]["embedding"] == [0.1, 0.2]


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"model": "cohere.embed-english-v3", "input": "x", "dimensions": 3}, "dimensions"),
        ({"model": "anthropic.claude-x", "input": "x"}, "model"),
        ({"model": "amazon.titan-embed-text-v2:0", "input": [1, 2, 3]}, "input"),
        ({"model": "amazon.titan-embed-text-v2:0", "input": []}, "input"),
    ],
)
def test_what_the_embedding_models_cannot_take_is_a_400(request_, param):
    with pytest.raises(InvalidRequestError) as caught:
        embeddings_to_bedrock(json.dumps(request_).encode())
    assert caught.value.param == param
