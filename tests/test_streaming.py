"""Streams pass through as they arrive, byte for byte, and end cleanly after [DONE]."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.gateway_process import raw_request
from tests.upstream import _plain_event as _event

CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}


def body(model: str) -> bytes:
    return json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()


def test_split_events_pass_through_byte_for_byte(gateway, upstream):
    response = raw_request(gateway.url, "POST", CHAT, body("sse-split:6"), JSON)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    expected = b"".join(_event(True, f"part{i} ") for i in range(6)) + b"data: [DONE]\n\n"
    assert response.body == expected


def test_first_chunk_arrives_while_the_upstream_is_still_sending(gateway, upstream):
    """Five events 200 ms apart: the first must reach the client long before the last."""

    async def run() -> tuple[float, float, list[bytes]]:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            response = await session.post(
                f"{gateway.url}{CHAT}", data=body("sse:5:0.2"), headers=JSON
            )
            lines = []
            first = None
            async for line in response.content:
                if line.strip():
                    first = first or time.monotonic() - started
                    lines.append(line.strip())
            return first, time.monotonic() - started, lines

    first, total, lines = asyncio.run(run())
    assert lines[-1] == b"data: [DONE]"
    assert len(lines) == 6
    assert total >= 0.8
    assert first < total - 0.5, (first, total)


@pytest.mark.parametrize("options", [b"[1]", b'"x"', b"1", b"true"])
def test_stream_options_that_are_not_an_object_reach_the_upstream_as_sent(
    gateway, upstream, options
):
    # The gateway asks for the usage only by extending an object: anything else is the
    # client's mistake, for the upstream to judge (a real one answers a 400).
    sent = b'{"model":"sse:1","stream":true,"stream_options":' + options + b',"messages":[]}'
    response = raw_request(gateway.url, "POST", CHAT, sent, JSON)
    assert response.status == 200
    assert upstream.last().json["stream_options"] == json.loads(options)


def test_stream_options_and_unknown_fields_reach_the_upstream_untouched(gateway, upstream):
    sent = (
        b'{"model":"sse:1","stream":true,"stream_options":{"include_usage":true},'
        b'"messages":[{"role":"user","content":"h\\u00e9 \xe2\x9c\x93","x_part":null}],'
        b'"temperature":0.70,"x_vendor":{"deep":[1e-5,null,{"k":"\\"q\\""}]}}'
    )
    response = raw_request(gateway.url, "POST", CHAT, sent, JSON)
    assert response.status == 200
    assert upstream.last().body == sent
