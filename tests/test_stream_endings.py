"""Every way a translated stream can end closes the client's response, on both servers.

A scripted upstream on 127.0.0.1 speaks Anthropic's and Gemini's streams and ends each
one differently (by model name): whole, an error event before any text, an error event
midway (the upstream then ends its response, or keeps it open), cut mid-event, cut
between events, silent past the idle timeout. The client reads with a bounded socket
timeout: a response that never ends fails the test instead of hanging it. Each request
leaves exactly one access-log line, with the outcome the ending deserves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.gateway_process import raw_request
from tests.threaded_server import ThreadedServer

IDLE_SECONDS = 1.0
READ_TIMEOUT = 8.0  # far beyond any ending here: a hang, not a slow end


def sse(kind: str, payload: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


def anthropic_events() -> list[bytes]:
    usage = {"input_tokens": 5, "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    events = [sse("message_start", {"message": {**message, "model": "c", "usage": usage}})]
    events.append(sse("content_block_start", {"index": 0, "content_block": {"type": "text"}}))
    for piece in ("Hel", "lo ", "there"):
        delta = {"type": "text_delta", "text": piece}
        events.append(sse("content_block_delta", {"index": 0, "delta": delta}))
    events.append(sse("content_block_stop", {"index": 0}))
    stop = {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
    events.append(sse("message_delta", stop))
    events.append(sse("message_stop", {}))
    return events


ANTHROPIC_ERROR = sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})


def gemini_events() -> list[bytes]:
    def event(payload: dict) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"

    parts = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}]}
        for t in ("Hel", "lo ", "there")
    ]
    last = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4},
    }
    last["candidates"][0]["finishReason"] = "STOP"
    return [event(p) for p in parts] + [event(last)]


GEMINI_ERROR = (
    b'data: {"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}}\r\n\r\n'
)

# How each stream ends: the events sent (by index into the whole stream), then what
# happens: "end" (the response ends), "open" (the upstream keeps it open, silent),
# "cut" (the connection drops), "half" (half of the next event, then it drops).
ENDINGS = {
    "done": ("all", "end"),
    "error-first": ("error", "end"),
    "error-midway": ("three+error", "end"),
    "error-midway-open": ("three+error", "open"),
    "cut-between-events": ("three", "cut"),
    "cut-mid-event": ("three", "half"),
    "idle": ("three", "open"),
}


class EndingUpstream(ThreadedServer):
    """Anthropic at ``POST /v1/messages`` and Gemini at ``.../models/{m}:streamGenerateContent``,
    each stream ending as its model name says (``claude-<ending>``, ``gemini-<ending>``)."""

    def __init__(self) -> None:
        self.closed: dict[str, float] = {}  # model -> when the gateway closed the connection

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{call}", self._gemini)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        model = (await request.json())["model"]
        return await self._stream(request, model, anthropic_events(), ANTHROPIC_ERROR)

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["call"].partition(":")[0]
        return await self._stream(request, model, gemini_events(), GEMINI_ERROR)

    async def _stream(
        self, request: web.Request, model: str, events: list[bytes], error: bytes
    ) -> web.StreamResponse:
        sent, after = ENDINGS[model.partition("-")[2]]
        chosen = {
            "all": events,
            "error": [error],
            "three": events[:4],
            "three+error": [*events[:4], error],
        }[sent]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in chosen:
                await response.write(event)
                await asyncio.sleep(0.05)
            transport = request.transport
            if after == "end":
                with contextlib.suppress(ConnectionResetError):  # the gateway may close first
                    await response.write_eof()
                return response
            if after == "half":
                await response.write(events[4][:20])
                await asyncio.sleep(0.05)
            if after in ("cut", "half"):
                assert transport is not None
                transport.abort()
                return response
            await asyncio.sleep(30)  # "open": silent until the gateway lets go
        except (asyncio.CancelledError, ConnectionResetError):
            self.closed[model] = time.monotonic()
            raise
        return response


@pytest.fixture(scope="module")
def ending_upstream() -> Iterator[EndingUpstream]:
    server = EndingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=SERVERS)
def gateway(request, ending_upstream, tmp_path_factory):
    directory = tmp_path_factory.mktemp("endings")
    config = directory / "gateway.toml"
    config.write_text(
        "[routing]\nretries = 0\n\n"
        f'[providers.claude]\ntype = "anthropic"\nbase_url = "{ending_upstream.url}"\n'
        'api_key = "sk-ant-test"\n\n'
        f'[providers.gemini]\ntype = "gemini"\nbase_url = "{ending_upstream.url}"\n'
        'api_key = "gemini-test"\n\n'
        + "".join(
            f'[models."{family}-{ending}"]\nprovider = "{provider}"\n\n'
            for family, provider in (("claude", "claude"), ("gemini", "gemini"))
            for ending in ENDINGS
        )
    )
    access_log = directory / "access.log"
    env = {
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_ACCESS_LOG": str(access_log),
        "GATEWAY_IDLE_TIMEOUT": str(IDLE_SECONDS),
    }
    process = start_gateway(tmp_path_factory, request.param, env)
    process.access_log = access_log  # type: ignore[attr-defined]
    yield process
    process.stop()


def lines_of(access_log: Path, request_id: str, wait: float = 3.0) -> list[dict]:
    """Every access-log line of one request, once its first has been written."""
    deadline = time.monotonic() + wait
    found: list[dict] = []
    while time.monotonic() < deadline and not found:
        if access_log.exists():
            entries = [json.loads(t) for t in access_log.read_text().splitlines()]
            found = [e for e in entries if e["request_id"] == request_id]
        time.sleep(0.1)
    time.sleep(0.3)  # a second line would be written within the access log's tick
    entries = [json.loads(t) for t in access_log.read_text().splitlines()]
    return [e for e in entries if e["request_id"] == request_id]


def stream(gateway, model: str):
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    started = time.monotonic()
    response = raw_request(
        gateway.url, "POST", "/v1/chat/completions", body.encode(), headers, timeout=READ_TIMEOUT
    )
    return response, time.monotonic() - started


def events_of(body: bytes) -> list[bytes]:
    return [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e.strip()]


@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_a_whole_stream_ends_with_done(gateway, family):
    response, _ = stream(gateway, f"{family}-done")
    assert response.status == 200
    events = events_of(response.body)
    assert events[-1] == b"[DONE]"
    text = "".join(
        (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for e in events[:-1]
    )
    assert text.startswith("Hello there")
    [line] = lines_of(gateway.access_log, response.headers["x-request-id"])
    assert line["outcome"] == "streamed"


@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_an_error_event_before_any_text_is_an_error_answer(gateway, family):
    response, _ = stream(gateway, f"{family}-error-first")
    assert response.status >= 500
    assert "Overloaded" in response.json()["error"]["message"]
    [line] = lines_of(gateway.access_log, response.headers["x-request-id"])
    assert line["status"] == response.status


@pytest.mark.parametrize("family", ["claude", "gemini"])
@pytest.mark.parametrize("ending", ["error-midway", "error-midway-open"])
def test_an_error_event_midway_ends_the_response_with_it(gateway, ending_upstream, family, ending):
    response, took = stream(gateway, f"{family}-{ending}")
    assert response.status == 200
    events = events_of(response.body)
    last = json.loads(events[-1])
    assert last["error"]["message"] == "Overloaded"
    assert b"[DONE]" not in events
    assert took < 3.0
    [line] = lines_of(gateway.access_log, response.headers["x-request-id"])
    assert line["outcome"] == "stream_broken"
    if ending == "error-midway-open":  # the upstream's open response is let go
        deadline = time.monotonic() + 3
        while f"{family}-{ending}" not in ending_upstream.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"{family}-{ending}" in ending_upstream.closed


@pytest.mark.parametrize("family", ["claude", "gemini"])
@pytest.mark.parametrize("ending", ["cut-between-events", "cut-mid-event"])
def test_a_cut_stream_ends_with_an_error_in_the_gateways_words(gateway, family, ending):
    response, took = stream(gateway, f"{family}-{ending}")
    assert response.status == 200
    events = events_of(response.body)
    error = json.loads(events[-1])["error"]
    assert error["message"] == "The upstream's stream broke off before it was complete."
    assert "aiohttp" not in response.body.decode() and "Transfer" not in response.body.decode()
    assert took < 3.0
    [line] = lines_of(gateway.access_log, response.headers["x-request-id"])
    assert line["outcome"] == "stream_broken"


@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_a_silent_stream_ends_at_the_idle_timeout(gateway, ending_upstream, family):
    response, took = stream(gateway, f"{family}-idle")
    events = events_of(response.body)
    assert "sent nothing" in json.loads(events[-1])["error"]["message"]
    assert IDLE_SECONDS <= took < IDLE_SECONDS + 3
    [line] = lines_of(gateway.access_log, response.headers["x-request-id"])
    assert line["outcome"] == "idle_timeout"


@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_a_client_that_leaves_lets_the_upstream_go(gateway, ending_upstream, family):
    if gateway.server == "robyn":
        pytest.skip("Robyn 0.88 does not tell a handler that its client left (see docs/servers.md)")
    model = f"{family}-idle"  # the upstream stays open after three events
    ending_upstream.closed.pop(model, None)
    request_id = f"leaving-{family}-{time.monotonic_ns()}"
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=READ_TIMEOUT) as client:
        client.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {CLIENT_KEY}\r\nX-Request-Id: {request_id}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        received = b""
        while b"Hel" not in received:
            received += client.recv(65536)
        left = time.monotonic()
    deadline = time.monotonic() + 3
    while model not in ending_upstream.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ending_upstream.closed[model] - left < IDLE_SECONDS  # not the idle timeout's doing
    [line] = lines_of(gateway.access_log, request_id)
    assert line["outcome"] == "client_left"


LAST_EVENT = {
    "done": "response.completed",
    "error-midway": "response.failed",
    "error-midway-open": "response.failed",
    "cut-between-events": "response.failed",
    "cut-mid-event": "response.failed",
    "idle": "response.failed",
}


@pytest.mark.parametrize("family", ["claude", "gemini"])
@pytest.mark.parametrize("ending", sorted(LAST_EVENT))
def test_a_translated_responses_stream_ends_as_the_responses_api_ends_one(gateway, family, ending):
    body = {"model": f"{family}-{ending}", "stream": True, "input": "hi"}
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    started = time.monotonic()
    response = raw_request(
        gateway.url, "POST", "/v1/responses", json.dumps(body).encode(), headers, READ_TIMEOUT
    )
    took = time.monotonic() - started
    assert response.status == 200
    events = [
        json.loads(line[6:])
        for block in response.body.split(b"\n\n")
        for line in block.split(b"\n")
        if line.startswith(b"data: {")
    ]
    types = [e["type"] for e in events if "type" in e]
    assert types[0] == "response.created" and types[-1] == LAST_EVENT[ending]
    assert types.count(LAST_EVENT[ending]) == 1
    if ending != "done":
        [error] = [e for e in events if e.get("type") == "error"]
        assert error["message"] and "aiohttp" not in error["message"]
    assert took < (IDLE_SECONDS + 3 if ending == "idle" else 3.0)
    [line] = lines_of(gateway.access_log, response.headers["x-request-id"])
    assert line["endpoint"] == "responses"
    assert line["outcome"] == ("streamed" if ending == "done" else LINE_OUTCOME.get(ending))


LINE_OUTCOME = {"idle": "idle_timeout"} | {
    e: "stream_broken"
    for e in ("error-midway", "error-midway-open", "cut-between-events", "cut-mid-event")
}
