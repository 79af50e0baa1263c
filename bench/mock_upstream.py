"""A fast mock OpenAI upstream for benchmarks: raw asyncio protocol on uvloop.

It does the least an HTTP/1.1 keep-alive server can: find the end of the request,
and write a prepared answer in one go — a chat completion, or (when the body asks
for ``"stream": true``) 20 prepared SSE events as chunked transfer encoding. A model
named ``bench-delay-<ms>`` spaces the events that many milliseconds apart; one named
``bench-events-<n>`` gets a chat stream of ``n`` events instead (``long-stream`` in
``make bench-cost``: 500 token events, each its own HTTP chunk, as tokens arrive),
prepared the first time a count is asked for and kept. So it costs
far less CPU per request than anything in front of it, and the benchmark measures the
gateway, not the mock.

As OpenAI does, a stream whose request has ``"stream_options": {"include_usage": true}``
gets one more event before ``[DONE]``: ``"choices": []`` and the stream's ``usage``.
Both variants are prepared at start-up; a bytes search tells which one a request wants.

``POST /v1/messages`` answers as Anthropic's Messages API does: the same answer as a
Message, or (streamed) as Anthropic's events — ``message_start``, a text block with the
same 18 text deltas, ``message_delta`` with the usage, ``message_stop`` — each event one
HTTP chunk, as the OpenAI stream's are. A gateway that translates pays for its
translation against the same content.

``POST /model/{id}/invoke-with-response-stream`` answers as Bedrock does for Claude: the
same Anthropic events, each in an event-stream ``chunk`` message (binary framing, CRCs),
each message one HTTP chunk; ``/invoke`` answers with the Message. SigV4 is not checked.

``POST /v1/responses`` answers as OpenAI's Responses API does: a Response object, or
(streamed) ``events`` Responses events with the same ``token<i> `` text pieces —
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``events - 8`` ``response.output_text.delta``,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, ``response.completed`` with the usage — each event one
HTTP chunk, and no ``[DONE]``: as many chunks as the chat stream, for a gateway that
passes them through. The Response objects echo the benchmarks' request
(``bench.payloads``), as OpenAI's do.

With ``BENCH_MOCK_TIMES=<file>`` set, the mock notes the ``CLOCK_MONOTONIC`` time (ns)
at which each request had arrived whole, and writes the list to that file as JSON when
it stops (``bench/timeline.py`` lines these up with the gateway's and the client's).

    python -m bench.mock_upstream --port 9100 [--events 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import struct
import time
import zlib

import uvloop

from bench.payloads import MAX_TOKENS, SYSTEM, TEMPERATURE

USAGE = {"prompt_tokens": 200, "completion_tokens": 80, "total_tokens": 280}
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! " * 40, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "system_fingerprint": "fp_bench",
    }
).encode()


def _event(text: str, finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
        ],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _usage_event(completion_tokens: int) -> bytes:
    """The extra last event of a stream that asked for ``include_usage``."""
    usage = {
        "prompt_tokens": USAGE["prompt_tokens"],
        "completion_tokens": completion_tokens,
        "total_tokens": USAGE["prompt_tokens"] + completion_tokens,
    }
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [],
        "usage": usage,
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _anthropic_event(kind: str, payload: dict) -> bytes:
    data = json.dumps({"type": kind, **payload}, separators=(",", ":")).encode()
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)


ANTHROPIC_USAGE = {"input_tokens": USAGE["prompt_tokens"], "output_tokens": 1}
ANTHROPIC_MESSAGE = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "bench-model",
        "content": [{"type": "text", "text": "Hello! " * 40}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {**ANTHROPIC_USAGE, "output_tokens": USAGE["completion_tokens"]},
    }
).encode()


def prepared_anthropic_stream(events: int) -> list[bytes]:
    """The answer of ``prepared_stream(events)`` (``events - 2`` text pieces) in Anthropic's
    events, each as one HTTP chunk."""
    return [_chunked(e) for e in _anthropic_events(events)] + [b"0\r\n\r\n"]


def prepared_bedrock_stream(events: int) -> list[bytes]:
    """The same Anthropic events as Bedrock's InvokeModelWithResponseStream sends them: each
    an event-stream ``chunk`` message (``{"bytes": base64 of its JSON}``), one HTTP chunk
    each (Bedrock sends no ping)."""
    frames = []
    for event in _anthropic_events(events):
        data = event[event.index(b"data: ") + 6 : -2]
        if b'"ping"' not in data:
            frames.append(_chunked(_chunk_frame(data)))
    return [*frames, b"0\r\n\r\n"]


def _chunk_frame(data: bytes) -> bytes:
    """One message of AWS's event stream: prelude (lengths and CRC), string headers,
    the payload, and the CRC of all before it."""
    payload = json.dumps({"bytes": base64.b64encode(data).decode()}).encode()
    headers = b""
    for name, value in (
        (b":event-type", b"chunk"),
        (b":content-type", b"application/json"),
        (b":message-type", b"event"),
    ):
        headers += bytes([len(name)]) + name + b"\x07" + struct.pack(">H", len(value)) + value
    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _anthropic_events(events: int) -> list[bytes]:
    start = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "bench-model",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }
    body = [
        _anthropic_event("message_start", {"message": start}),
        _anthropic_event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        ),
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    for i in range(events - 2):
        delta = {"type": "text_delta", "text": f"token{i} "}
        body.append(_anthropic_event("content_block_delta", {"index": 0, "delta": delta}))
    body.append(_anthropic_event("content_block_stop", {"index": 0}))
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    body.append(
        _anthropic_event("message_delta", {"delta": stop, "usage": {"output_tokens": events - 2}})
    )
    body.append(_anthropic_event("message_stop", {}))
    return body


def _response(status: str, output: list, usage: dict | None) -> dict:
    """A Response object with every field api.openai.com sends, echoing the request."""
    return {
        "id": "resp_bench",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "background": False,
        "completed_at": 1700000001 if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": SYSTEM,
        "max_output_tokens": MAX_TOKENS,
        "max_tool_calls": None,
        "model": "bench-model",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": True,
        "temperature": TEMPERATURE,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _responses_usage(output_tokens: int) -> dict:
    return {
        "input_tokens": USAGE["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": USAGE["prompt_tokens"] + output_tokens,
    }


def _output_text(text: str) -> dict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message(status: str, content: list) -> dict:
    return {
        "id": "msg_bench",
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


RESPONSE = json.dumps(
    _response(
        "completed",
        [_message("completed", [_output_text("Hello! " * 40)])],
        _responses_usage(USAGE["completion_tokens"]),
    ),
    separators=(",", ":"),
).encode()


def prepared_responses_stream(events: int) -> list[bytes]:
    """``events`` events of OpenAI's Responses API, ``events - 8`` of them text deltas
    (the pieces of ``prepared_stream``), each as one HTTP chunk; no ``[DONE]``."""
    pieces = [f"token{i} " for i in range(events - 8)]
    text = "".join(pieces)
    at = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    done = _message("completed", [_output_text(text)])
    usage = _responses_usage(len(pieces))
    body = [
        ("response.created", {"response": _response("in_progress", [], None)}),
        ("response.in_progress", {"response": _response("in_progress", [], None)}),
        ("response.output_item.added", {"output_index": 0, "item": _message("in_progress", [])}),
        ("response.content_part.added", {**at, "part": _output_text("")}),
        *(("response.output_text.delta", {**at, "delta": p, "logprobs": []}) for p in pieces),
        ("response.output_text.done", {**at, "text": text, "logprobs": []}),
        ("response.content_part.done", {**at, "part": _output_text(text)}),
        ("response.output_item.done", {"output_index": 0, "item": done}),
        ("response.completed", {"response": _response("completed", [done], usage)}),
    ]
    return [
        _chunked(_responses_event(kind, n, payload)) for n, (kind, payload) in enumerate(body)
    ] + [b"0\r\n\r\n"]


def _responses_event(kind: str, sequence_number: int, payload: dict) -> bytes:
    data = {"type": kind, "sequence_number": sequence_number, **payload}
    return b"event: %s\ndata: %s\n\n" % (
        kind.encode(),
        json.dumps(data, separators=(",", ":")).encode(),
    )


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def prepared_stream(events: int, usage: bool = False) -> list[bytes]:
    """``events`` SSE events — the last one ``[DONE]`` — each as one HTTP chunk; with
    ``usage``, one more (the usage event) before ``[DONE]``."""
    body = [_event(f"token{i} ") for i in range(events - 2)]
    body.append(_event("", "stop"))
    if usage:
        body.append(_usage_event(events - 2))
    body.append(b"data: [DONE]\n\n")
    return [_chunked(e) for e in body] + [b"0\r\n\r\n"]


JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(COMPLETION)
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(RESPONSE)
)
ANTHROPIC_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(ANTHROPIC_MESSAGE)
)
BEDROCK_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
    b"x-amzn-requestid: req-bench\r\ntransfer-encoding: chunked\r\n\r\n"
)
MODELS = b'{"object":"list","data":[{"id":"bench-model","object":"model","owned_by":"bench"}]}'
MODELS_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(MODELS), MODELS)
)


DELAY_MARK = b'"bench-delay-'
EVENTS_MARK = b'"bench-events-'
USAGE_MARK = b'"include_usage":'

# Streams of another number of events (bench-events-<n>), by (events, usage), once made.
LONG_STREAMS: dict[tuple[int, bool], list[bytes]] = {}

# Arrival times of requests (CLOCK_MONOTONIC, ns), kept only when BENCH_MOCK_TIMES is set.
TIMES: list[int] | None = [] if os.environ.get("BENCH_MOCK_TIMES") else None


def delay_of(body: bytes) -> float:
    """Seconds between events that the request's model name asks for."""
    at = body.find(DELAY_MARK)
    if at < 0:
        return 0.0
    start = at + len(DELAY_MARK)
    return int(body[start : body.index(b'"', start)]) / 1000


def events_of(body: bytes) -> int:
    """How many events the request's model name asks for; 0: the default stream."""
    at = body.find(EVENTS_MARK)
    if at < 0:
        return 0
    start = at + len(EVENTS_MARK)
    return int(body[start : body.index(b'"', start)])


def wants_usage(body: bytes) -> bool:
    """Whether a stream's request asks for the usage event (``stream_options``).

    One search, and ``find``: on CPython 3.11, ``sub in data`` raises and clears a
    TypeError inside before it searches (~0.1 µs each)."""
    at = body.find(USAGE_MARK)
    if at < 0:
        return False
    at += len(USAGE_MARK)
    return body.startswith(b"true", at) or body.startswith(b" true", at)


class MockProtocol(asyncio.Protocol):
    def __init__(
        self,
        stream: list[bytes],
        usage_stream: list[bytes],
        anthropic_stream: list[bytes],
        responses_stream: list[bytes],
        bedrock_stream: list[bytes],
    ) -> None:
        self.stream = stream
        self.usage_stream = usage_stream
        self.anthropic_stream = anthropic_stream
        self.responses_stream = responses_stream
        self.bedrock_stream = bedrock_stream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timers: list[asyncio.TimerHandle] = []

    def chat_stream(self, body: bytes) -> list[bytes]:
        """The chat stream the request asks for: its usage variant, its number of events."""
        usage = wants_usage(body)
        events = events_of(body)
        if not events:
            return self.usage_stream if usage else self.stream
        key = (events, usage)
        stream = LONG_STREAMS.get(key)
        if stream is None:
            stream = LONG_STREAMS[key] = prepared_stream(events, usage=usage)
        return stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self.timers:
            timer.cancel()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buffer[:head_end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                end = head.find(b"\r\n", at)
                length = int(head[at + 15 : end if end >= 0 else len(head)])
            total = head_end + 4 + length
            if len(buffer) < total:
                break
            body = buffer[head_end + 4 : total]
            buffer = buffer[total:]
            self.respond(head, body)
        self.buffer = buffer

    def respond(self, head: bytes, body: bytes) -> None:
        if TIMES is not None:
            TIMES.append(time.monotonic_ns())
        transport = self.transport
        assert transport is not None
        if head.startswith(b"get /v1/models"):
            transport.write(MODELS_RESPONSE)
        elif head.startswith(b"post /v1/messages"):
            if b'"stream":true' in body or b'"stream": true' in body:
                transport.writelines([SSE_HEAD, *self.anthropic_stream])
            else:
                transport.writelines([ANTHROPIC_HEAD, ANTHROPIC_MESSAGE])
        elif head.startswith(b"post /model/"):  # Bedrock's InvokeModel: the URL says stream
            if b"/invoke-with-response-stream " in head[: head.find(b"\r\n")]:
                transport.writelines([BEDROCK_STREAM_HEAD, *self.bedrock_stream])
            else:
                transport.writelines([ANTHROPIC_HEAD, ANTHROPIC_MESSAGE])
        elif head.startswith(b"post /v1/responses"):
            if b'"stream":true' in body or b'"stream": true' in body:
                transport.writelines([SSE_HEAD, *self.responses_stream])
            else:
                transport.writelines([RESPONSE_HEAD, RESPONSE])
        elif b'"stream":true' in body or b'"stream": true' in body:
            stream = self.chat_stream(body)
            delay = delay_of(body)
            if delay:
                self.send_slowly(transport, stream, delay)
            else:
                transport.writelines([SSE_HEAD, *stream])
        else:
            transport.writelines([JSON_HEAD, COMPLETION])

    def send_slowly(self, transport: asyncio.Transport, stream: list[bytes], delay: float) -> None:
        loop = asyncio.get_running_loop()
        transport.write(SSE_HEAD + stream[0])
        now = loop.time()
        self.timers = [t for t in self.timers if not t.cancelled() and t.when() > now]
        pieces = stream[1:]
        if stream is self.usage_stream:
            # As OpenAI sends it: the usage event right before [DONE], not a tick earlier
            # (a gateway that takes it back out would otherwise show its client a gap).
            pieces = [*pieces[:-3], pieces[-3] + pieces[-2], pieces[-1]]
        for i, piece in enumerate(pieces, 1):
            self.timers.append(loop.call_at(now + i * delay, transport.write, piece))


async def serve(port: int, events: int) -> None:
    loop = asyncio.get_running_loop()
    stream, usage_stream = prepared_stream(events), prepared_stream(events, usage=True)
    anthropic_stream = prepared_anthropic_stream(events)
    responses_stream = prepared_responses_stream(events)
    bedrock_stream = prepared_bedrock_stream(events)
    server = await loop.create_server(
        lambda: MockProtocol(
            stream, usage_stream, anthropic_stream, responses_stream, bedrock_stream
        ),
        "127.0.0.1",
        port,
        backlog=4096,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.events))
    if TIMES is not None:
        with open(os.environ["BENCH_MOCK_TIMES"], "w") as f:
            json.dump(TIMES, f)


if __name__ == "__main__":
    main()
