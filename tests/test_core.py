"""The core on its own — embedded as a library — against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import weakref
from typing import Any

import msgspec
import pytest

from gateway import (
    Gateway,
    GatewayError,
    Limits,
    ModelRegistry,
    OpenAIProvider,
    PermissionDeniedError,
    Request,
    Response,
    StreamingResponse,
)
from gateway.wire.types import ChatCompletion, ChatCompletionRequest
from tests.upstream import RAW_COMPLETION, UPSTREAM_KEY

CHAT = "/v1/chat/completions"


def chat_request(model: str = "gpt-x", stream: bool = False, **headers: str) -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return Request(
        "POST", CHAT, "", {"content-type": "application/json", **headers}, json.dumps(body).encode()
    )


def provider(upstream, name: str = "up") -> OpenAIProvider:
    return OpenAIProvider(name, base_url=upstream.base_url, api_key=UPSTREAM_KEY)


async def body_of(response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.iterate()])
    return response.body


async def test_embedded_gateway_forwards(upstream):
    async with Gateway(provider(upstream)) as gateway:
        response = await gateway.handle(chat_request())
    assert response.status == 200
    assert json.loads(response.body)["choices"][0]["message"]["content"] == "echo: hi"
    assert response.header("x-request-id").startswith("req_")


async def test_responses_keep_every_byte(upstream):
    async with Gateway(provider(upstream)) as gateway:
        response = await gateway.handle(chat_request("raw"))
    assert response.body == RAW_COMPLETION


async def test_before_request_may_answer_directly_like_a_cache(upstream):
    cached = Response(200, [("content-type", "application/json")], b'{"cached": true}')

    class Cache:
        def before_request(self, ctx, request):
            return cached if request.json["model"] == "hit" else None

    async with Gateway(provider(upstream), hooks=[Cache()]) as gateway:
        first = await gateway.handle(chat_request("hit"))
        second = await gateway.handle(chat_request("hit"))
        await gateway.handle(chat_request("miss"))
    assert first.body == second.body == b'{"cached": true}'
    assert first.header("x-request-id") != second.header("x-request-id")
    assert cached.headers == [("content-type", "application/json")]  # the shared one is untouched
    assert [r.json["model"] for r in upstream.requests] == ["miss"]


async def test_a_hook_that_renames_the_model_reroutes_the_request(upstream):
    a, b = (
        provider(upstream, "a"),
        OpenAIProvider("b", base_url=upstream.base_url, headers={"x-b": "1"}),
    )
    registry = ModelRegistry(a)
    registry.add("small", a)
    registry.add("large", b, "large-v2")

    class Router:
        def before_request(self, ctx, request):
            view = request.typed()
            assert isinstance(view, ChatCompletionRequest)
            if view.messages[0].text() == "hi":
                view.model = "large"

    async with Gateway(registry, hooks=[Router()]) as gateway:
        response = await gateway.handle(chat_request("small"))
    assert response.status == 200
    sent = upstream.last()
    assert sent.json["model"] == "large-v2"
    assert sent.headers["x-b"] == "1"


async def test_after_response_edits_with_a_typed_view(upstream):
    class Redact:
        def after_response(self, ctx, response):
            completion = response.typed()
            assert isinstance(completion, ChatCompletion)
            completion.choices[0].message.content = "[redacted]"

    async with Gateway(provider(upstream), hooks=[Redact()]) as gateway:
        response = await gateway.handle(chat_request("raw"))
    body = json.loads(response.body)
    assert body["choices"][0]["message"]["content"] == "[redacted]"
    assert body["choices"][0]["message"]["x_vendor"] == {"a": None}  # only the edited field changed
    assert response.body.endswith(b'"x_score":0.70,"x_tiny":1e-5}')


async def test_on_error_sees_errors_and_may_answer_instead(upstream):
    seen: list[GatewayError] = []

    class Errors:
        def on_error(self, ctx, error):
            seen.append(error)
            if error.status == 503:
                return Response(
                    503,
                    [("content-type", "application/json")],
                    b'{"error": {"message": "try later"}}',
                )
            return None

    async with Gateway(provider(upstream), hooks=[Errors()]) as gateway:
        replaced = await gateway.handle(chat_request("status:503"))
        passed = await gateway.handle(chat_request("status:429"))
    assert json.loads(replaced.body)["error"]["message"] == "try later"
    assert passed.status == 429 and passed.header("retry-after") == "7"
    assert [e.status for e in seen] == [503, 429]


async def test_a_failing_hook_is_a_500_and_the_next_request_is_served(upstream):
    class Flaky:
        calls = 0

        def before_request(self, ctx, request):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("hook bug")

    async with Gateway(provider(upstream), hooks=[Flaky()]) as gateway:
        failed = await gateway.handle(chat_request())
        served = await gateway.handle(chat_request())
    assert failed.status == 500
    assert json.loads(failed.body)["error"]["code"] == "internal_error"
    assert "hook bug" not in failed.body.decode()
    assert served.status == 200


async def test_a_hook_may_refuse_with_a_gateway_error(upstream):
    class Guard:
        def before_request(self, ctx, request):
            raise PermissionDeniedError("not for you")

    async with Gateway(provider(upstream), hooks=[Guard()]) as gateway:
        response = await gateway.handle(chat_request())
    assert response.status == 403
    assert upstream.requests == []


async def pushed(response) -> bytes:
    """A stream as Granian's adapter takes it: written by the relay's pump."""
    chunks: list[bytes] = []

    async def send(chunk: bytes) -> None:
        chunks.append(chunk)

    await response.send_to(send)
    return b"".join(chunks)


def chunk_hook(kind: str, hook: Any) -> object:
    """``hook`` itself ("plain"), or an async hook doing the same ("async")."""
    if kind == "plain":
        return hook

    class Later:
        async def on_chunk(self, ctx, event):
            hook.on_chunk(ctx, event)

    return Later()


@pytest.mark.parametrize("read", [body_of, pushed], ids=["iterated", "pushed"])
@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_a_chunk_hook_failure_ends_the_stream_with_an_error_event(upstream, read, kind):
    class Breaks:
        def on_chunk(self, ctx, event):
            if b"tok2" in event.raw:
                raise RuntimeError("boom")

    async with Gateway(provider(upstream), hooks=[chunk_hook(kind, Breaks())]) as gateway:
        response = await gateway.handle(chat_request("sse:4", stream=True))
        body = await read(response)
    events = [e for e in body.split(b"\n\n") if e]
    assert b"tok0" in events[0] and b"tok1" in events[1]
    assert json.loads(events[-1][6:])["error"]["code"] == "internal_error"
    assert b"[DONE]" not in body


@pytest.mark.parametrize("read", [body_of, pushed], ids=["iterated", "pushed"])
@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_an_event_a_hook_broke_ends_the_stream_with_an_error_event(upstream, read, kind):
    """A hook that leaves an event unwritable (its data a str, not bytes): the stream ends
    with the error event, as when a hook raises — nothing escapes into the server."""
    ended: list[str] = []

    class Spoils:
        def on_chunk(self, ctx, event):
            if event.data is not None and b"tok1" in event.data:
                event.data = "not bytes"

    class Watch:
        def on_complete(self, ctx):
            ended.append(ctx.outcome.outcome)

    hooks = [chunk_hook(kind, Spoils()), Watch()]
    async with Gateway(provider(upstream), hooks=hooks) as gateway:
        body = await read(await gateway.handle(chat_request("sse:4", stream=True)))
    events = [e for e in body.split(b"\n\n") if e]
    assert b"tok1" not in body  # (nor the rest of its read: it cannot be written)
    assert json.loads(events[-1][6:])["error"]["code"] == "internal_error"
    assert b"[DONE]" not in body and ended == ["stream_broken"]


async def test_a_hook_failure_does_not_hold_the_servers_writer(upstream):
    """The error a chunk hook raised leads back, through its traceback, to the frame that
    wrote the stream: once the stream is over nothing keeps it, so the server's writer
    (Granian's transport) is let go at once, not at the next cyclic collection."""

    class Breaks:
        def on_chunk(self, ctx, event):
            if event.data is not None and b"tok2" in event.data:
                raise RuntimeError("boom")

    class Writer:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        async def __call__(self, chunk: bytes) -> None:
            self.chunks.append(chunk)

    gateway_log = logging.getLogger("gateway")
    gateway_log.disabled = True  # (pytest keeps log records, and their tracebacks, for its report)
    gc.disable()
    try:
        async with Gateway(provider(upstream), hooks=[Breaks()]) as gateway:
            for model in ("sse:4", "sse:3"):  # a hook failing mid-stream, then on the last
                writer = Writer()
                response = await gateway.handle(chat_request(model, stream=True))
                await response.send_to(writer)
                assert b"internal_error" in writer.chunks[-1]
                gone = weakref.ref(writer)
                del writer, response
                assert gone() is None
    finally:
        gc.enable()
        gateway_log.disabled = False


@pytest.mark.parametrize("read", [body_of, pushed], ids=["iterated", "pushed"])
@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_chunk_hooks_see_whole_events_of_reads_split_anywhere(upstream, read, kind):
    """Reads cut mid-line and mid-blank-line: each hook sees whole events, in order, and
    the client gets every event, edited, whole (by the relay's own filter for plain
    hooks, by a generator for async ones; pulled or pushed alike)."""
    seen: list[bytes] = []

    class Upper:
        def on_chunk(self, ctx, event):
            seen.append(event.raw)
            if event.data is not None and not event.is_done:
                event.data = event.data.replace(b"part", b"PART")

    async with Gateway(provider(upstream), hooks=[chunk_hook(kind, Upper())]) as gateway:
        response = await gateway.handle(chat_request("sse-split:6", stream=True))
        body = await read(response)
    events = body.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-2]] == [
        f"PART{i} " for i in range(6)
    ]
    assert len(seen) == 7 and all(e.startswith(b"data: ") and b"\n" not in e for e in seen)


async def test_stream_context_is_filled(upstream):
    contexts = []

    class Watch:
        def on_chunk(self, ctx, event):
            contexts.append(
                (ctx.endpoint, ctx.model, ctx.stream, ctx.provider.name, ctx.upstream_model)
            )

    registry = ModelRegistry(provider(upstream))
    registry.add("public", registry.default, "sse:2")
    async with Gateway(registry, hooks=[Watch()]) as gateway:
        await body_of(await gateway.handle(chat_request("public", stream=True)))
    assert contexts[0] == ("chat.completions", "public", True, "up", "sse:2")


@pytest.mark.parametrize("limit", [10, 1000])
async def test_body_limit(upstream, limit):
    async with Gateway(provider(upstream), limits=Limits(max_body_bytes=limit)) as gateway:
        response = await gateway.handle(chat_request())
    assert response.status == (413 if limit == 10 else 200)


async def test_api_keys_option(upstream):
    async with Gateway(provider(upstream), api_keys=["secret"]) as gateway:
        refused = await gateway.handle(chat_request())
        accepted = await gateway.handle(chat_request(authorization="Bearer secret"))
    assert (refused.status, accepted.status) == (401, 200)
    assert msgspec.json.decode(refused.body)["error"]["type"] == "authentication_error"


async def test_a_stream_is_in_flight_from_when_it_is_returned_until_it_is_let_go(upstream):
    registry = ModelRegistry()
    up = provider(upstream)
    registry.add("m", up, "sse:3")
    async with Gateway(registry) as gateway:
        deployment = registry.resolve("m").deployments[0]
        # Pulled to the end: counted until then, not after.
        pulled = await gateway.handle(chat_request("m", stream=True))
        assert gateway.in_flight == 1 and deployment.inflight == 1  # returned, not yet pulled
        assert (await body_of(pulled)).endswith(b"data: [DONE]\n\n")
        assert gateway.in_flight == 0 and deployment.inflight == 0
    registry.add("endless", up, "sse-endless")
    async with Gateway(registry) as gateway:
        # Let go of without a read (a client gone before its server began pulling): the
        # count goes down, and the upstream is let go at once.
        dropped = await gateway.handle(chat_request("endless", stream=True))
        assert gateway.in_flight == 1
        del dropped
        assert gateway.in_flight == 0
        assert registry.resolve("endless").deployments[0].inflight == 0
        await asyncio.sleep(0.3)  # the loop closes the socket
        assert upstream.wait_for_event("stream-cancelled", 2)
