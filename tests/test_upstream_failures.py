"""Upstreams that fail: errors keep their meaning, and the next request is served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest

from tests.conftest import start_gateway, upstream_env
from tests.gateway_process import free_port, raw_request
from tests.test_bad_input import assert_error, assert_serves_normally

CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}


def chat(model: str, stream: bool = False) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 503])
def test_upstream_error_status_and_body_pass_through(gateway, upstream, status):
    response = raw_request(gateway.url, "POST", CHAT, chat(f"status:{status}"), JSON)
    assert response.status == status
    assert response.json() == {
        "error": {
            "message": f"upstream says {status}",
            "type": "upstream_test",
            "param": None,
            "code": None,
        }
    }
    if status == 429:
        assert response.headers["retry-after"] == "7"
    assert response.headers["x-request-id"]
    assert_serves_normally(gateway)


def test_an_upstream_error_that_is_not_openai_json_is_wrapped_in_it(gateway, upstream):
    response = raw_request(gateway.url, "POST", CHAT, chat("html:502"), JSON)
    assert response.status == 502
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_502" and "502 Bad Gateway" in error["message"]
    assert_serves_normally(gateway)


def test_stream_request_with_error_status_is_a_plain_error(gateway, upstream):
    response = raw_request(gateway.url, "POST", CHAT, chat("status:503", stream=True), JSON)
    assert response.status == 503
    assert response.json()["error"]["message"] == "upstream says 503"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_that_never_answers_is_a_504(gateway, upstream, stream):
    started = time.monotonic()
    response = raw_request(gateway.url, "POST", CHAT, chat("hang", stream), JSON, timeout=10)
    elapsed = time.monotonic() - started
    assert_error(response, 504, None, "did not answer within 2 s")
    assert 1.9 < elapsed < 6
    assert upstream.wait_for_event("hang-cancelled"), "the gateway should drop the hung request"
    assert_serves_normally(gateway)


def test_upstream_that_drops_the_connection_is_a_502(gateway, upstream):
    response = raw_request(gateway.url, "POST", CHAT, chat("drop"), JSON)
    assert_error(response, 502)
    assert_serves_normally(gateway)


def test_upstream_that_cuts_a_stream_ends_it_with_an_error_event(gateway, upstream):
    response = raw_request(gateway.url, "POST", CHAT, chat("sse-drop", stream=True), JSON)
    assert response.status == 200
    events = [e for e in response.body.split(b"\n\n") if e]
    assert len(events) == 3
    assert events[0].startswith(b"data: {") and b"tok0" in events[0]
    assert events[-1].startswith(b'data: {"error":')
    assert b"[DONE]" not in response.body
    assert_serves_normally(gateway)


@pytest.fixture(scope="module", params=["granian", "robyn"])
def unreachable_gateway(request, tmp_path_factory, upstream_server):
    env = upstream_env(upstream_server, OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    process = start_gateway(tmp_path_factory, request.param, env)
    yield process
    process.stop()


def test_unreachable_upstream_is_a_502(unreachable_gateway):
    for stream in (False, True):
        response = raw_request(unreachable_gateway.url, "POST", CHAT, chat("m", stream), JSON)
        assert_error(response, 502, None, "unreachable")
    assert raw_request(unreachable_gateway.url, "GET", "/health").status == 200


def test_client_disconnect_mid_stream_cancels_the_upstream(gateway, upstream):
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{gateway.url}{CHAT}", data=chat("sse-endless", True), headers=JSON
            )
            assert response.status == 200
            await response.content.readline()  # the stream is flowing
            response.close()  # the client walks away

    asyncio.run(run())
    assert upstream.wait_for_event("stream-cancelled", timeout=2), upstream.events
    assert_serves_normally(gateway)


def test_client_disconnect_while_waiting_cancels_the_upstream(gateway, upstream):
    if gateway.server == "robyn":
        pytest.skip("Robyn 0.88 does not tell a handler that its client left (see docs/servers.md)")

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(f"{gateway.url}{CHAT}", data=chat("hang"), headers=JSON)
            )
            await asyncio.to_thread(upstream.wait_for_event, "hang-started", 5)
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request

    asyncio.run(run())
    assert upstream.wait_for_event("hang-cancelled", timeout=1), upstream.events
