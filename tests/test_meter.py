"""The usual key's meter (access/stores/memory.py ``Meter``): a request taken in one step
is taken exactly as the store's general admission would take it — the same counts, the
same x-ratelimit-* figures — and whatever it cannot decide goes to that admission."""

from __future__ import annotations

import json

import pytest

from gateway import Gateway, MockProvider, ModelRegistry, OpenAIProvider, Request
from gateway.access.cache import CacheSettings
from gateway.access.control import AccessControl
from gateway.access.keys import Budget, Key, secret_hash
from gateway.access.limits import RateLimits, Scope, rate_limit_headers
from gateway.access.stores.memory import MemoryStore, Meter
from tests.upstream import UPSTREAM_KEY

START = 1798761600.0  # a minute's start


def _counts(store: MemoryStore) -> tuple[float, ...]:
    c = store._minutes["key:k"]
    return (c.minute, c.requests, c.tokens, c.previous_requests, c.previous_tokens)


def test_a_metered_request_is_taken_as_the_store_would_take_it():
    scope = Scope("key:k", RateLimits(rpm=5, tpm=300), "k:k")
    metered, general = MemoryStore(0), MemoryStore(0)
    meter = Meter(metered, scope)
    # Into a minute, up to its limits, across into the next (the previous one weighs
    # less and less), a minute skipped, the last half second of a minute (reset in ms).
    steps = [(START + t, tokens) for t, tokens in [(0.5, 40), (1, 40), (2, 40), (3, 200)]]
    steps += [(START + t, 10) for t in (4, 5, 6, 7, 30, 61, 62, 90, 100, 119.5, 300, 301)]
    taken_by_meter = 0
    for n, (now, tokens) in enumerate(steps):
        ticket = meter.take(now, f"r{n}", tokens)
        by_meter = ticket is not None
        expected = general.admit_now(now, f"r{n}", (scope,), tokens, None, None)
        if ticket is None:  # not the meter's to decide: the store's general admission
            verdict = metered.admit_now(now, f"r{n}", (scope,), tokens, None, None)
            assert (verdict.refusal, verdict.window) == (expected.refusal, expected.window)
            ticket = verdict.ticket if verdict.refusal is None else None
        else:
            taken_by_meter += 1
            assert expected.refusal is None, (n, "the meter took what the store refuses")
            assert meter.headers() == rate_limit_headers(expected.window), n
            assert (ticket.minute, ticket.scopes, ticket.tokens) == (
                expected.ticket.minute,
                expected.ticket.scopes,
                expected.ticket.tokens,
            )
        assert _counts(metered) == _counts(general), n
        if ticket is not None and n % 3 == 0:  # some answers use fewer tokens than reserved
            if by_meter:  # settled by the meter, as the access control does
                meter.settle(ticket, 5)
            else:
                metered.settle(ticket, 5, None)
            general.settle(expected.ticket, 5, None)
            assert _counts(metered) == _counts(general), n
    later = steps[-1][0] + 30  # settled after the minute turned: the previous minute's
    for store, take in ((metered, meter.take), (general, None)):
        if take is not None:
            ticket = take(later, "late", 100)
            assert ticket is not None
        else:
            ticket = store.admit_now(later, "late", (scope,), 100, None, None).ticket
        store.admit_now(later + 60, "next", (scope,), 1, None, None)  # the minute turns
        (meter.settle(ticket, 7) if take is not None else store.settle(ticket, 7, None))
    assert _counts(metered) == _counts(general)
    assert taken_by_meter >= 8  # most were the meter's: the comparison covers it


def test_a_meter_leaves_counts_another_key_left_behind_to_the_store():
    """The store's clock minute is moved on by any key's request: a key whose counts are
    still of an older minute is the store's to move on, not the meter's to add to."""
    scopes = [Scope(f"key:{name}", RateLimits(rpm=100, tpm=10_000), f"k:{name}") for name in "ab"]
    metered, general = MemoryStore(0), MemoryStore(0)
    meters = [Meter(metered, scope) for scope in scopes]
    steps = [(0, 10.0), (1, 11.0), (0, 70.0), (1, 71.0), (1, 72.0), (0, 200.0), (1, 201.0)]
    for n, (which, at) in enumerate(steps):
        now = START + at
        scope = scopes[which]
        expected = general.admit_now(now, f"r{n}", (scope,), 50, None, None)
        ticket = meters[which].take(now, f"r{n}", 50)
        if ticket is None:
            metered.admit_now(now, f"r{n}", (scope,), 50, None, None)
        for name in ("key:a", "key:b"):
            if name in general._minutes:
                mine, theirs = metered._minutes[name], general._minutes[name]
                assert (mine.minute, mine.requests, mine.previous_requests) == (
                    theirs.minute,
                    theirs.requests,
                    theirs.previous_requests,
                ), (n, name)
        assert expected.refusal is None


async def test_a_memory_store_of_its_own_is_asked_for_every_request():
    """A subclass of the memory store may admit and settle otherwise: no meter passes it by."""
    calls = []

    class Audited(MemoryStore):
        async def admit(self, *args, **kwargs):
            calls.append("admit")
            return await super().admit(*args, **kwargs)

        def settle(self, *args, **kwargs):
            calls.append("settle")
            super().settle(*args, **kwargs)

    secret, record = _key(rpm=10, tpm=10_000)
    access = AccessControl(Audited(0), keys=[record])
    async with Gateway(_registry(), access=access) as gateway:
        statuses = [(await gateway.handle(_request(secret))).status for _ in range(3)]
    assert statuses == [200] * 3
    assert calls == ["admit", "settle"] * 3


def _key(**fields) -> tuple[str, Key]:
    return "sk-gw-meter", Key(id="k", secret_sha256=secret_hash("sk-gw-meter"), **fields)


@pytest.mark.parametrize(
    ("fields", "access_fields", "metered"),
    [
        ({"rpm": 10, "tpm": 1000}, {}, True),
        ({"rpm": 10}, {}, False),  # no token limit: nothing to reserve, the store is cheaper
        ({"tpm": 1000}, {}, False),
        ({"rpm": 10, "tpm": 1000, "max_parallel": 2}, {}, False),
        ({"rpm": 10, "tpm": 1000, "budget": Budget(amount=1.0, period="daily")}, {}, False),
        ({"rpm": 10, "tpm": 1000}, {"model_limits": {"mock-gpt": RateLimits(rpm=5)}}, False),
        ({"rpm": 10, "tpm": 1000}, {"cache": CacheSettings(enabled=True)}, False),
    ],
)
def test_only_the_usual_key_is_metered(fields, access_fields, metered):
    _, record = _key(**fields)
    access = AccessControl(keys=[record], **access_fields)
    assert (access._plan(record)[3] is not None) is metered


def _registry() -> ModelRegistry:
    models = ModelRegistry()
    models.add("mock-gpt", MockProvider())
    models.add("other", MockProvider())
    return models


def _request(secret: str, model: str = "mock-gpt") -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
    headers = {"authorization": f"Bearer {secret}"}
    return Request("POST", "/v1/chat/completions", "", headers, json.dumps(body).encode())


async def test_a_metered_key_is_limited_settled_and_held_to_its_models():
    secret, record = _key(rpm=3, tpm=10_000, models=["mock-*"])
    access = AccessControl(keys=[record])
    async with Gateway(_registry(), access=access) as gateway:
        answers = [await gateway.handle(_request(secret)) for _ in range(4)]
        other = await gateway.handle(_request(secret, "other"))
    assert access._plan(record)[3] is not None
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert [a.header("x-ratelimit-remaining-requests") for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].header("x-ratelimit-limit-tokens") == "10000"
    assert int(answers[3].header("retry-after")) >= 1
    assert other.status == 403
    # Settled to the mock's real usage (2 + 8 tokens each), not the reservations.
    counts = access.local._minutes["key:k"]
    assert counts.tokens + counts.previous_tokens == pytest.approx(30)


@pytest.mark.parametrize("shown", [True, False])
async def test_a_limited_key_reads_the_gateway_limits_or_none_never_the_upstream(upstream, shown):
    """The upstream (tests/upstream.py) sends its own x-ratelimit-* lines, as OpenAI does:
    a limited key's answer carries the gateway's instead — or, headers off, none at all."""
    secret, record = _key(rpm=7, tpm=10_000)
    models = ModelRegistry()
    models.add("gpt-test", OpenAIProvider("up", base_url=upstream.base_url, api_key=UPSTREAM_KEY))
    access = AccessControl(keys=[record], headers=shown)
    async with Gateway(models, access=access) as gateway:
        answer = await gateway.handle(_request(secret, "gpt-test"))
    assert answer.status == 200
    lines = [(name, value) for name, value in answer.headers if name.startswith("x-ratelimit-")]
    if shown:
        assert dict(lines)["x-ratelimit-limit-requests"] == "7"  # not the upstream's 10000
        assert len(lines) == 6
    else:
        assert lines == []
