"""Routing under failure: deployments, strategies, retries, backoff, fallbacks, cooldown,
timeouts — with real upstreams on 127.0.0.1 that fail on purpose."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from gateway import Gateway, ModelRegistry, OpenAIProvider, Request, StreamingResponse
from gateway.routing.balancing import Balancer, Deployment
from gateway.routing.policy import Cooldown, Retry, Timeouts, retry_after
from tests.gateway_process import free_port
from tests.upstream import Upstream

CHAT = "/v1/chat/completions"
FAST = Retry(retries=2, backoff=0.01, backoff_max=0.02)


@pytest.fixture(scope="module")
def servers():
    started = [Upstream().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def ups(servers):
    for server in servers:
        server.clear()
    return servers


def provider(server: Upstream, name: str) -> OpenAIProvider:
    return OpenAIProvider(name, base_url=server.base_url, api_key="k")


def refused() -> OpenAIProvider:
    return OpenAIProvider("refused", base_url=f"http://127.0.0.1:{free_port()}/v1")


def two_deployments(ups, first: str, second: str, **options) -> ModelRegistry:
    """Model "m" on ``a/first`` (ups[0]) and ``b/second`` (ups[1]), taken in turn unless
    ``options`` say otherwise — so a request that fails on the first goes to the second."""
    registry = ModelRegistry()
    deployments = [
        Deployment(provider(ups[0], "a"), first),
        Deployment(provider(ups[1], "b"), second),
    ]
    registry.add("m", deployments, **{"strategy": "round-robin", "retry": FAST, **options})
    return registry


def chat(model: str, stream: bool = False) -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return Request(
        "POST", CHAT, "", {"content-type": "application/json"}, json.dumps(body).encode()
    )


async def text(response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.iterate()])
    return response.body


def header(response, name: str) -> str | None:
    return next((v for k, v in response.headers if k == name), None)


# ---------------------------------------------------------------------- policies, unit


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after():
    retry = Retry(backoff=0.5, backoff_max=4.0, retry_after_max=10.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        waits = [retry.delay(attempt, None) for _ in range(300)]
        assert min(waits) >= 0 and max(waits) <= ceiling
        assert max(waits) > ceiling * 0.8  # full jitter: the whole range is used
    assert retry.delay(0, 3.0) == 3.0
    assert retry.delay(0, 99.0) == 10.0  # capped


def test_retry_after_forms():
    assert retry_after([("Retry-After", "7")]) == 7.0
    assert retry_after([("retry-after-ms", "1500")]) == 1.5
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 28 <= retry_after([("Retry-After", soon)]) <= 31
    assert retry_after([("Retry-After", "soon")]) is None
    assert retry_after([]) is None


def deployments(*weights: float) -> list[Deployment]:
    return [Deployment(OpenAIProvider(f"p{i}"), weight=w) for i, w in enumerate(weights)]


def test_weighted_strategy_follows_the_weights_over_1000_picks():
    balancer = Balancer(deployments(3, 1), "weighted")
    picks = Counter(balancer.pick(0.0).provider.name for _ in range(1000))
    # Binomial(1000, 0.75): sd 13.7; six standard deviations either side.
    assert 750 - 82 <= picks["p0"] <= 750 + 82


def test_round_robin_takes_turns_and_least_inflight_picks_the_idle_one():
    rr = Balancer(deployments(1, 1, 1), "round-robin")
    assert [rr.pick(0.0).provider.name for _ in range(6)] == ["p0", "p1", "p2", "p0", "p1", "p2"]
    busy = Balancer(deployments(1, 1), "least-inflight")
    busy.deployments[0].inflight = 5
    assert {busy.pick(0.0).provider.name for _ in range(50)} == {"p1"}


def test_lowest_latency_prefers_the_fastest_and_tries_the_unmeasured():
    balancer = Balancer(deployments(1, 1, 1), "lowest-latency")
    balancer.deployments[0].answered(0.5)
    balancer.deployments[1].answered(0.1)
    assert balancer.pick(0.0).provider.name == "p2"  # no sample yet: tried first
    balancer.deployments[2].answered(0.9)
    assert balancer.pick(0.0).provider.name == "p1"


def test_a_deployment_past_its_rpm_hint_is_chosen_only_when_all_are():
    balancer = Balancer(deployments(1, 1), "round-robin")
    a, b = balancer.deployments
    a.rpm, b.rpm = 2, 3
    for _ in range(2):
        a.started(30.0)
    assert {balancer.pick(31.0).provider.name for _ in range(6)} == {"p1"}
    for _ in range(3):
        b.started(31.0)
    assert {balancer.pick(32.0).provider.name for _ in range(6)} == {"p0", "p1"}
    assert {balancer.pick(61.0).provider.name for _ in range(6)} == {"p0", "p1"}  # new minute


def test_shared_minute_counts_hold_for_a_worker_that_sent_nothing_this_minute():
    """Every worker's counts, shared through the store, put a deployment past its hint
    also in a worker that has not sent it a request this minute (it did not)."""
    balancer = Balancer(deployments(1, 1), "round-robin")
    a, _ = balancer.deployments
    a.rpm = 4
    a.started(10.0)  # a request in an earlier minute
    a.shared(70.0, 4, 0)  # the other workers used the hint up this minute
    assert {balancer.pick(71.0).provider.name for _ in range(6)} == {"p1"}
    # The store's minute turned: its totals (this worker's own included) replace the count.
    a.shared(72.0, 1, 0)
    assert a.minute_requests == 1
    assert {balancer.pick(72.5).provider.name for _ in range(6)} == {"p0", "p1"}


def test_cooldown_entry_and_exit_and_all_cooling_takes_the_least_recently_failed():
    balancer = Balancer(deployments(1, 1), "round-robin")
    a, b = balancer.deployments
    cooldown = Cooldown(failures=2, window=10.0, seconds=5.0)
    assert a.failed(100.0, cooldown) is False
    assert a.failed(101.0, cooldown) is True  # two within the window: cooling till 106
    assert {balancer.pick(102.0).provider.name for _ in range(10)} == {"p1"}
    assert {balancer.pick(106.5).provider.name for _ in range(10)} == {"p0", "p1"}
    b.failed(103.0, cooldown)
    b.failed(104.0, cooldown)  # both cooling at 105: a failed longest ago
    assert balancer.pick(105.0) is a
    assert a.failed(200.0, cooldown) is False  # old failures left the window


def test_a_retry_goes_to_an_untried_deployment_then_back_when_there_is_none():
    balancer = Balancer(deployments(1, 1), "round-robin")
    a, b = balancer.deployments
    assert balancer.pick(0.0, [a]) is b
    assert balancer.pick(0.0, [a, b]) in (a, b)
    single = Balancer(deployments(1), "weighted")
    assert single.pick(0.0, single.deployments) is single.deployments[0]


# ------------------------------------------------------------ through the gateway


async def test_500_twice_then_success_is_three_attempts(ups):
    registry = ModelRegistry()
    registry.add("m", provider(ups[0], "a"), "fail:500:2", retry=FAST)
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m"))
    assert response.status == 200
    assert header(response, "x-gateway-attempts") == "3"
    assert header(response, "x-gateway-deployment") == "a/fail:500:2"
    assert len(ups[0].requests) == 3


async def test_the_chosen_deployment_sequence_skips_the_failed_one(ups):
    registry = ModelRegistry()
    registry.add(
        "m",
        [Deployment(refused()), Deployment(provider(ups[1], "b"))],
        strategy="round-robin",
        retry=FAST,
    )
    async with Gateway(registry) as gateway:
        first = await gateway.handle(chat("m"))
    assert first.status == 200
    assert header(first, "x-gateway-attempts") == "2"
    assert header(first, "x-gateway-deployment") == "b"
    assert len(ups[1].requests) == 1


async def test_each_retry_takes_the_next_deployment_in_turn(ups):
    registry = ModelRegistry()
    registry.add(
        "m",
        [
            Deployment(provider(ups[0], "a"), "status:503"),
            Deployment(provider(ups[1], "b"), "status:502"),
            Deployment(provider(ups[2], "c"), "status:500"),
            Deployment(provider(ups[0], "d"), "echo-d"),
        ],
        strategy="round-robin",
        retry=Retry(retries=3, backoff=0.01),
    )
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m"))
    assert response.status == 200
    assert header(response, "x-gateway-attempts") == "4"
    assert header(response, "x-gateway-deployment") == "d/echo-d"
    sequence = sorted((r.at, r.json["model"]) for u in ups for r in u.requests)
    assert [model for _, model in sequence] == ["status:503", "status:502", "status:500", "echo-d"]


async def test_retry_after_is_honoured_and_capped(ups):
    registry = ModelRegistry()
    registry.add("waits", provider(ups[0], "a"), "retry-after:1", retry=Retry(retries=1))
    capped = Retry(retries=1, retry_after_max=0.2)
    registry.add("capped", provider(ups[1], "b"), "retry-after:60", retry=capped)
    async with Gateway(registry) as gateway:
        assert (await gateway.handle(chat("waits"))).status == 429
        assert (await gateway.handle(chat("capped"))).status == 429
    waited = ups[0].requests[1].at - ups[0].requests[0].at
    assert 1.0 <= waited < 1.6
    capped_wait = ups[1].requests[1].at - ups[1].requests[0].at
    assert 0.2 <= capped_wait < 0.7


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_never_retried(ups, status):
    registry = ModelRegistry(provider(ups[0], "a"))
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat(f"status:{status}"))
    assert response.status == status
    assert header(response, "x-gateway-attempts") == "1"
    assert len(ups[0].requests) == 1


async def test_fallbacks_are_tried_in_order(ups):
    registry = ModelRegistry()
    no_retry = Retry(retries=0)
    registry.add(
        "primary",
        provider(ups[0], "a"),
        "status:503",
        retry=no_retry,
        fallbacks=["second", "third"],
    )
    registry.add("second", provider(ups[1], "b"), "status:502", retry=no_retry)
    registry.add("third", provider(ups[2], "c"), "echo-third", retry=no_retry)
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("primary"))
    assert response.status == 200
    assert header(response, "x-gateway-model") == "third"
    assert header(response, "x-gateway-attempts") == "3"
    assert [r.json["model"] for r in (*ups[0].requests, *ups[1].requests, *ups[2].requests)] == [
        "status:503",
        "status:502",
        "echo-third",
    ]
    assert ups[0].requests[0].at < ups[1].requests[0].at < ups[2].requests[0].at


async def test_context_window_errors_go_to_the_context_fallbacks(ups):
    registry = ModelRegistry()
    registry.add(
        "small", provider(ups[0], "a"), "context", fallbacks=["other"], context_fallbacks=["large"]
    )
    registry.add("other", provider(ups[1], "b"))
    registry.add("large", provider(ups[2], "c"), "echo-large")
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("small"))
    assert response.status == 200
    assert header(response, "x-gateway-model") == "large"
    assert len(ups[0].requests) == 1 and ups[1].requests == [] and len(ups[2].requests) == 1


async def test_a_cooling_deployment_is_skipped_until_it_has_rested(ups):
    registry = ModelRegistry()
    registry.add(
        "m",
        [
            Deployment(provider(ups[0], "a"), "status:500"),
            Deployment(provider(ups[1], "b"), "echo-b"),
        ],
        strategy="round-robin",
        retry=Retry(retries=1, backoff=0.01),
        cooldown=Cooldown(failures=2, window=60, seconds=1.0),
    )
    async with Gateway(registry) as gateway:
        while len(ups[0].requests) < 2:  # a fails in its turns; b answers every request
            assert (await gateway.handle(chat("m"))).status == 200
        for _ in range(6):  # two failures: a is cooling, b alone answers
            response = await gateway.handle(chat("m"))
            assert header(response, "x-gateway-attempts") == "1"
        assert len(ups[0].requests) == 2
        await asyncio.sleep(1.2)  # rested: a takes its turn again
        for _ in range(2):
            await gateway.handle(chat("m"))
        assert len(ups[0].requests) == 3


async def test_a_hung_deployment_times_out_and_the_next_answers(ups):
    registry = two_deployments(ups, "hang", "echo-b", timeouts=Timeouts(first_byte=0.3))
    started = time.monotonic()
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m"))
    assert response.status == 200
    assert header(response, "x-gateway-deployment") == "b/echo-b"
    assert time.monotonic() - started < 1.5
    assert ups[0].wait_for_event("hang-cancelled", 2)


async def test_the_total_budget_bounds_every_attempt(ups):
    registry = ModelRegistry()
    registry.add(
        "m",
        provider(ups[0], "a"),
        "hang",
        retry=Retry(retries=5, backoff=0.01),
        timeouts=Timeouts(first_byte=0.5, total=1.2),
    )
    started = time.monotonic()
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m"))
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert 1.1 < elapsed < 2.0
    assert header(response, "x-gateway-attempts") == "3"  # 0.5 + 0.5 + the 0.2 left


async def test_a_stream_that_breaks_before_its_first_byte_is_retried(ups):
    registry = two_deployments(ups, "sse-empty-drop", "sse:3")
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m", stream=True))
        body = await text(response)
    assert isinstance(response, StreamingResponse)
    assert header(response, "x-gateway-attempts") == "2"
    assert body.count(b"data: {") == 3 and body.endswith(b"data: [DONE]\n\n")


async def test_a_body_cut_short_is_retried(ups):
    registry = two_deployments(ups, "cut-body", "echo-b")
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m"))
    assert response.status == 200
    assert header(response, "x-gateway-attempts") == "2"


async def test_a_stream_that_falls_silent_ends_with_an_error_event(ups):
    registry = ModelRegistry()
    registry.add("m", provider(ups[0], "a"), "sse-stall:2", timeouts=Timeouts(idle=0.4))
    started = time.monotonic()
    async with Gateway(registry) as gateway:
        body = await text(await gateway.handle(chat("m", stream=True)))
    events = [e for e in body.split(b"\n\n") if e]
    assert len(events) == 3
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_timeout"
    assert b"[DONE]" not in body
    assert time.monotonic() - started < 1.5
    assert ups[0].wait_for_event("stream-cancelled", 2)  # the silent upstream was let go


async def test_weighted_deployments_share_1000_requests_by_weight(ups):
    registry = ModelRegistry()
    registry.add(
        "m",
        [Deployment(provider(ups[0], "a"), weight=4), Deployment(provider(ups[1], "b"), weight=1)],
        strategy="weighted",
    )
    async with Gateway(registry) as gateway:
        await asyncio.gather(*(gateway.handle(chat("m")) for _ in range(1000)))
    # Binomial(1000, 0.8): sd 12.6; six standard deviations either side.
    assert 800 - 76 <= len(ups[0].requests) <= 800 + 76
    assert len(ups[0].requests) + len(ups[1].requests) == 1000


async def test_a_client_that_leaves_during_backoff_stops_the_retries(ups):
    registry = ModelRegistry()
    registry.add("m", provider(ups[0], "a"), "retry-after:2", retry=Retry(retries=3))
    async with Gateway(registry) as gateway:
        request = asyncio.ensure_future(gateway.handle(chat("m")))
        await asyncio.sleep(0.5)  # the first attempt got its 429; the gateway is waiting
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.sleep(2.5)
    assert len(ups[0].requests) == 1


async def test_deployments_rewrite_the_model_each_their_own_way(ups):
    registry = two_deployments(ups, "status:503", "their-name")
    async with Gateway(registry) as gateway:
        response = await gateway.handle(chat("m"))
    assert response.status == 200
    assert ups[0].requests[0].json["model"] == "status:503"
    assert ups[1].requests[0].json["model"] == "their-name"


async def test_a_tpm_hint_counts_the_tokens_of_whole_answers(ups):
    registry = ModelRegistry()
    registry.add(
        "m",
        # Each echo answer uses 7 tokens: a is past its hint after two.
        [Deployment(provider(ups[0], "a"), tpm=10), Deployment(provider(ups[1], "b"))],
        strategy="round-robin",
    )
    async with Gateway(registry) as gateway:
        clock = gateway.timers.clock
        if clock() % 60 > 55:  # the hints count per minute: start well inside one
            await asyncio.sleep(60 - clock() % 60)
        for _ in range(10):
            assert (await gateway.handle(chat("m"))).status == 200
    assert len(ups[0].requests) == 2
    assert len(ups[1].requests) == 8


async def test_lowest_latency_sends_most_requests_to_the_upstream_that_answers_first(ups):
    registry = two_deployments(ups, "slow:0.15", "echo", strategy="lowest-latency")
    async with Gateway(registry) as gateway:
        for _ in range(10):
            assert (await gateway.handle(chat("m"))).status == 200
    assert len(ups[0].requests) == 1  # measured once, then passed over
    assert len(ups[1].requests) == 9


def test_a_fallback_to_an_unknown_model_is_refused_at_start_up():
    registry = ModelRegistry()
    registry.add("m", refused(), fallbacks=["nowhere"])
    with pytest.raises(ValueError, match="unknown fallback model 'nowhere'"):
        Gateway(registry)


async def test_a_fallbacks_stream_keeps_the_fallbacks_own_idle_timeout(ups):
    registry = ModelRegistry()
    registry.add(
        "primary",
        provider(ups[0], "a"),
        "status:503",
        retry=Retry(retries=0),
        fallbacks=["patient-less"],
        timeouts=Timeouts(idle=30),
    )
    registry.add("patient-less", provider(ups[1], "b"), "sse-stall:2", timeouts=Timeouts(idle=0.4))
    started = time.monotonic()
    async with Gateway(registry) as gateway:
        body = await text(await gateway.handle(chat("primary", stream=True)))
    assert (
        json.loads(body.strip().rsplit(b"\n\n", 1)[-1][6:])["error"]["code"] == "upstream_timeout"
    )
    assert time.monotonic() - started < 3  # the fallback's 0.4 s, not the primary's 30 s
