"""Virtual keys, rate limits, budgets and the response cache, on the in-memory store,
through the real gateway core (the mock provider answers)."""

from __future__ import annotations

import json
import time

import pytest

from gateway import Gateway, MockProvider, ModelRegistry, Request, StreamingResponse
from gateway.access.cache import CacheSettings
from gateway.access.control import AccessControl
from gateway.access.keys import Budget, Key, secret_hash
from gateway.access.limits import RateLimits, reset_text, retry_after
from gateway.observability.pricing import Price, Prices

CHAT = "/v1/chat/completions"


def key(key_id: str, **fields) -> tuple[str, Key]:
    secret = f"sk-gw-test-{key_id}"
    return secret, Key(id=key_id, secret_sha256=secret_hash(secret), **fields)


def request(secret: str, model: str = "mock-gpt", headers: dict | None = None, **body) -> Request:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi there"}], **body}
    all_headers = {"authorization": f"Bearer {secret}", **(headers or {})}
    return Request("POST", CHAT, "", all_headers, json.dumps(payload).encode())


def registry() -> ModelRegistry:
    models = ModelRegistry()
    mock = MockProvider()
    models.add("mock-gpt", mock, aliases=["gpt-latest"])
    models.add("other", mock)
    return models


async def read(response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.iterate()])
    return response.body


def error_of(response) -> dict:
    return json.loads(response.body)["error"]


# ------------------------------------------------------------------ keys


async def test_a_key_is_refused_a_model_it_is_not_allowed():
    secret, record = key("team", models=["mock-*"])
    access = AccessControl(keys=[record])
    async with Gateway(registry(), access=access) as gateway:
        allowed = await gateway.handle(request(secret, "mock-gpt"))
        alias = await gateway.handle(request(secret, "gpt-latest"))  # an alias of mock-gpt
        refused = await gateway.handle(request(secret, "other"))
    assert allowed.status == 200 and alias.status == 200
    assert refused.status == 403
    error = error_of(refused)
    assert error["code"] == "model_not_allowed" and "`other`" in error["message"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"revoked": True}, "revoked"),
        ({"disabled": True}, "disabled"),
        ({"expires": time.time() - 1}, "expired"),
    ],
)
async def test_revoked_disabled_or_expired_keys_get_a_401(fields, words):
    secret, record = key("k", **fields)
    async with Gateway(registry(), access=AccessControl(keys=[record])) as gateway:
        response = await gateway.handle(request(secret))
        unknown = await gateway.handle(request("sk-gw-nobody"))
    assert response.status == 401 and words in error_of(response)["message"]
    assert unknown.status == 401


async def test_the_key_id_is_on_the_outcome_never_the_secret():
    secret, record = key("team-a", owner="alice")
    seen = []

    class Watch:
        def on_complete(self, ctx):
            seen.append((ctx.outcome.key, ctx.identity.owner))

    async with Gateway(registry(), hooks=[Watch()], access=AccessControl(keys=[record])) as gw:
        await gw.handle(request(secret))
    assert seen == [("team-a", "alice")]


# ------------------------------------------------------------------ rate limits


async def test_rpm_limit_answers_429_with_retry_after_and_openai_headers():
    secret, record = key("k", rpm=3)
    async with Gateway(registry(), access=AccessControl(keys=[record])) as gateway:
        answers = [await gateway.handle(request(secret)) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    remaining = [a.header("x-ratelimit-remaining-requests") for a in answers[:3]]
    assert remaining == ["2", "1", "0"]
    assert answers[0].header("x-ratelimit-limit-requests") == "3"
    limited = answers[3]
    assert error_of(limited)["code"] == "rate_limit_exceeded"
    assert error_of(limited)["type"] == "rate_limit_error"
    assert int(limited.header("retry-after")) >= 1
    assert limited.header("x-ratelimit-limit-requests") == "3"


async def test_rate_limit_headers_off_leave_them_out_and_the_limits_hold():
    """GATEWAY_RATE_LIMIT_HEADERS=off: no x-ratelimit-* header on an answer or on the 429
    (Retry-After still says when to try again), and the limit counts as before."""
    secret, record = key("k", rpm=2, tpm=10_000)
    access = AccessControl(keys=[record], headers=False)
    async with Gateway(registry(), access=access) as gateway:
        answers = [await gateway.handle(request(secret)) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    for answer in answers:
        assert not [name for name, _ in answer.headers if name.startswith("x-ratelimit-")]
    assert int(answers[2].header("retry-after")) >= 1
    assert error_of(answers[2])["code"] == "rate_limit_exceeded"


def test_rate_limit_headers_are_on_unless_turned_off():
    from gateway.config.settings import Settings, build_access, load_file

    for value, expected in ((None, True), ("off", False), ("on", True)):
        environ = {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1"}  # (never reached: not started)
        if value is not None:
            environ["GATEWAY_RATE_LIMIT_HEADERS"] = value
        settings = Settings.from_env(environ)
        assert settings.rate_limit_headers is expected
        access = build_access(settings, load_file(settings))
        assert access is not None and access.headers is expected


async def test_model_limits_hold_for_every_caller_together():
    a, key_a = key("a")
    b, key_b = key("b")
    access = AccessControl(keys=[key_a, key_b], model_limits={"other": RateLimits(rpm=2)})
    async with Gateway(registry(), access=access) as gateway:
        statuses = [
            (await gateway.handle(request(secret, "other"))).status for secret in (a, b, a, b)
        ]
        unlimited = await gateway.handle(request(a, "mock-gpt"))
    assert statuses == [200, 200, 429, 429]
    assert unlimited.status == 200


async def test_tokens_are_reserved_then_settled_to_real_usage():
    # The mock answers "This is a mock response to: hi there" = 2 + 8 tokens.
    secret, record = key("k", tpm=200)
    access = AccessControl(keys=[record])
    async with Gateway(registry(), access=access) as gateway:
        # Each reserves ~25 for its body and 60 for its answer: three would not fit in 200
        # if they stayed reserved; each is settled to its 10 real tokens, so they all pass.
        answers = [await gateway.handle(request(secret, max_tokens=60)) for _ in range(4)]
    assert [a.status for a in answers] == [200] * 4
    assert answers[-1].header("x-ratelimit-limit-tokens") == "200"
    counts = access.local._minutes["key:k"]
    assert counts.tokens + counts.previous_tokens <= 40 + 1e-9  # 4 answers of 10 tokens


async def test_a_burst_of_long_requests_cannot_overshoot_the_token_limit():
    secret, record = key("k", tpm=1000)
    access = AccessControl(keys=[record])
    gateway = Gateway(registry(), access=access)
    async with gateway:
        # Reservations are taken at admission: in flight at once, 1000 // (~30 + 300) pass.
        admitted = []
        for _ in range(6):
            response = await gateway.handle(request(secret, stream=True, max_tokens=300))
            admitted.append(response)
        statuses = [r.status for r in admitted]
        for response in admitted:
            await read(response)
    assert statuses.count(200) == 3 and statuses.count(429) == 3


async def test_max_parallel_counts_requests_in_flight():
    secret, record = key("k", max_parallel=1)
    gateway = Gateway(
        ModelRegistry(MockProvider(chunk_delay=0.05)), access=AccessControl(keys=[record])
    )
    async with gateway:
        stream = await gateway.handle(request(secret, stream=True))
        second = await gateway.handle(request(secret))
        await read(stream)
        third = await gateway.handle(request(secret))
    assert isinstance(stream, StreamingResponse)
    assert second.status == 429 and "at once" in error_of(second)["message"]
    assert third.status == 200


def test_retry_after_says_when_the_window_has_room():
    # 10 requests last minute, none this minute, limit 10, 15 s into the minute:
    # 10 * (1 - t/60) + 1 <= 10 from t = 6 s: nothing needed... (it is already 15 s)
    assert retry_after(10, 0, 1, 10, 60 * 1000 + 15) == 0.5
    # a full current minute: wait until enough of it has slid out
    assert 59 < retry_after(0, 10, 1, 10, 60 * 1000 + 1) <= 66
    assert reset_text(0.25) == "250ms" and reset_text(6) == "6s" and reset_text(360) == "6m0s"


# ------------------------------------------------------------------ budgets


async def test_a_spent_budget_is_a_429_insufficient_quota_and_streams_count():
    secret, record = key("k", budget=Budget(0.000025, "daily"))
    prices = Prices({"mock-gpt": Price(input=1.0, output=1.0)})  # $1 per million tokens
    async with Gateway(registry(), access=AccessControl(keys=[record]), prices=prices) as gw:
        answers = []
        for _ in range(3):  # a stream of 2 + 8 tokens: $0.00001 each; the third overspends
            response = await gw.handle(request(secret, stream=True))
            answers.append(response.status if not isinstance(response, StreamingResponse) else 200)
            await read(response)
        refused = await gw.handle(request(secret))
    assert answers == [200, 200, 200]  # the third started under budget and was finished
    assert refused.status == 429
    error = error_of(refused)
    assert error["code"] == "insufficient_quota" and "quota" in error["message"]


# ------------------------------------------------------------------ cache


def cached_gateway(**settings) -> tuple[Gateway, list[str]]:
    upstream_calls: list[str] = []

    class Counting(MockProvider):
        async def send(self, ctx, request):
            upstream_calls.append(request.body.decode())
            return await super().send(ctx, request)

    models = ModelRegistry(Counting())
    cache = CacheSettings(**settings)
    return Gateway(models, access=AccessControl(cache=cache)), upstream_calls


async def test_a_repeated_deterministic_request_is_answered_from_the_cache():
    gateway, calls = cached_gateway()
    async with gateway:
        first = await gateway.handle(request("x", temperature=0))
        second = await gateway.handle(request("x", temperature=0, user="someone-else"))
        random = await gateway.handle(request("x", temperature=0.7))
    assert len(calls) == 2  # the second was a hit; the random one is never cached
    assert first.header("x-gateway-cache") == "miss"
    assert second.header("x-gateway-cache") == "hit"
    assert second.body == first.body
    assert random.header("x-gateway-cache") == "bypass"


async def test_cache_control_no_cache_and_no_store():
    gateway, calls = cached_gateway()
    async with gateway:
        await gateway.handle(request("x", seed=1))
        no_cache = await gateway.handle(request("x", headers={"cache-control": "no-cache"}, seed=1))
        no_store = await gateway.handle(request("x", headers={"cache-control": "no-store"}, seed=2))
        again = await gateway.handle(request("x", seed=2))
    assert no_cache.header("x-gateway-cache") == "bypass"
    assert no_store.header("x-gateway-cache") == "bypass"
    assert again.header("x-gateway-cache") == "miss"  # no-store kept it out
    assert len(calls) == 4


async def test_a_streamed_hit_replays_the_events_the_client_asked_for():
    gateway, calls = cached_gateway()
    async with gateway:
        first = await read(await gateway.handle(request("x", stream=True, temperature=0)))
        hit = await gateway.handle(request("x", stream=True, temperature=0))
        replay = await read(hit)
        with_usage = await read(
            await gateway.handle(
                request("x", stream=True, temperature=0, stream_options={"include_usage": True})
            )
        )
    assert len(calls) == 1
    assert hit.header("x-gateway-cache") == "hit"
    assert replay == first and b'"usage"' not in replay
    assert b'"usage":{' in with_usage and with_usage.endswith(b"data: [DONE]\n\n")


async def test_a_stream_too_large_to_store_is_relayed_whole_and_not_held():
    held: list[int] = []

    class Holding:
        def on_complete(self, ctx) -> None:
            held.append(sum(map(len, ctx.admission.capture)))

    access = AccessControl(cache=CacheSettings(max_entry_bytes=100))
    async with Gateway(registry(), access=access, hooks=[Holding()]) as gateway:
        streams = [
            await read(await gateway.handle(request("x", seed=4, stream=True))) for _ in range(2)
        ]
    assert streams[0] == streams[1] and len(streams[0]) > 100
    assert streams[0].endswith(b"data: [DONE]\n\n")
    assert held == [0, 0]  # let go once over the bound, not kept to the end


class Redacting:
    """Hooks that change every answer: a hit must pass through them like a miss."""

    def __init__(self) -> None:
        self.ends: list[tuple[str, str | None]] = []

    def after_response(self, ctx, response) -> None:
        response.body = response.body.replace(b"mock", b"[redacted]")

    def on_chunk(self, ctx, event) -> None:
        if event.data and b"mock" in event.data:
            event.data = event.data.replace(b"mock", b"[redacted]")

    def on_complete(self, ctx) -> None:
        self.ends.append((ctx.outcome.outcome, ctx.outcome.cache))


async def test_a_hit_goes_through_the_hooks_and_a_streamed_hit_ends_as_a_stream():
    hooks = Redacting()
    access = AccessControl(cache=CacheSettings())
    async with Gateway(registry(), access=access, hooks=[hooks]) as gateway:
        bodies = [(await gateway.handle(request("x", seed=3))).body for _ in range(2)]
        streams = [
            await read(await gateway.handle(request("x", seed=3, stream=True))) for _ in range(2)
        ]
    assert bodies[0] == bodies[1] and b"[redacted]" in bodies[1] and b"mock" not in bodies[1]
    assert streams[0] == streams[1] and b"[redacted]" in streams[1]
    assert b"mock" not in streams[1]
    assert hooks.ends == [
        ("answered", "miss"),
        ("answered", "hit"),
        ("streamed", "miss"),
        ("streamed", "hit"),
    ]


def test_the_cache_key_reads_the_top_level_only_and_in_bounded_memory():
    import tracemalloc

    from gateway.access.cache import cache_key

    def key_of(body: bytes, endpoint: str = "chat.completions") -> str | None:
        return cache_key(CacheSettings(), "s", endpoint, "m", False, body)

    one = key_of(b'{"model":"a","temperature":0,"messages":[{"role":"user"}],"user":"u1"}')
    two = key_of(b'{"messages": [{"role":"user"}], "user": "u2", "temperature": 0, "model": "b"}')
    assert one is not None and one == two  # key order, spacing, user; the resolved model
    for cannot_repeat in (b'{"temperature":0.5}', b'{"seed":null}', b'{"temperature":"0"}', b"{}"):
        assert key_of(cannot_repeat) is None, cannot_repeat
    assert key_of(b'{"seed":1}') and key_of(b'{"temperature":0.0}')
    assert key_of(b'{"input":"x"}', "embeddings")  # embeddings always repeat
    assert key_of(b"[1]") is None and key_of(b'{"seed":1') is None  # not a JSON object
    # Millions of nested objects are never built: memory stays near the body's size.
    body = b'{"seed":1,"x":[' + b"{}," * 3_000_000 + b"0]}"
    tracemalloc.start()
    try:
        assert key_of(body) is not None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(body)


async def test_answers_are_never_shared_across_keys_by_default_and_are_by_team():
    a, key_a = key("a", team="t1")
    b, key_b = key("b", team="t1")
    c, key_c = key("c", team="t2")
    for scope, expected in (("key", ["miss", "miss", "miss"]), ("team", ["miss", "hit", "miss"])):
        access = AccessControl(keys=[key_a, key_b, key_c], cache=CacheSettings(scope=scope))
        async with Gateway(ModelRegistry(MockProvider()), access=access) as gateway:
            results = [
                (await gateway.handle(request(secret, temperature=0))).header("x-gateway-cache")
                for secret in (a, b, c)
            ]
        assert results == expected, scope


async def test_a_hit_costs_no_tokens_against_limits():
    secret, record = key("k", rpm=2)
    access = AccessControl(keys=[record], cache=CacheSettings())
    async with Gateway(registry(), access=access) as gateway:
        statuses = [(await gateway.handle(request(secret, temperature=0))).status for _ in range(5)]
    assert statuses == [200] * 5  # one miss, then hits: the limit of 2 never reached
