"""The access path's per-worker memories: what they save must never change an answer.

A known secret's SHA-256 is remembered (hashed once, not per request), a key's limits
are built into a scope once per key record, a budget's period once per period. A
revoked or expired key must still be refused at once, the memories stay bounded, and
the figures they give are the ones worked out afresh.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from gateway import Gateway, MockProvider, ModelRegistry, Request
from gateway.access import control
from gateway.access.control import AccessControl
from gateway.access.keys import Budget, Key, period_id, period_reset, secret_hash
from gateway.access.limits import (
    RateLimits,
    Scope,
    Window,
    estimate_tokens,
    max_tokens_of,
    rate_limit_headers,
    reserved_tokens,
    reserved_tokens_read,
    reset_text,
)
from gateway.access.stores import Budget as StoreBudget
from gateway.access.stores.memory import MemoryStore
from gateway.core.context import RequestContext
from gateway.wire.endpoints import CHAT as CHAT_ENDPOINT
from gateway.wire.endpoints import COMPLETIONS, EMBEDDINGS, PASSTHROUGH, RESPONSES

CHAT = "/v1/chat/completions"


def key(key_id: str, **fields) -> tuple[str, Key]:
    secret = f"sk-gw-fast-{key_id}"
    return secret, Key(id=key_id, secret_sha256=secret_hash(secret), **fields)


def request(secret: str, **body) -> Request:
    payload = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], **body}
    headers = {"authorization": f"Bearer {secret}"}
    return Request("POST", CHAT, "", headers, json.dumps(payload).encode())


def gateway(access: AccessControl) -> Gateway:
    models = ModelRegistry()
    models.add("mock-gpt", MockProvider())
    return Gateway(models, access=access)


# ------------------------------------------------------------------ remembered digests


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"revoked": True}, "revoked"),
        ({"disabled": True}, "disabled"),
        ({"expires": time.time() - 1}, "expired"),
    ],
)
async def test_a_key_refused_after_its_digest_is_remembered_is_refused_at_once(change, words):
    secret, record = key("k")
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        first = await gw.handle(request(secret))
        assert secret in access._digests  # the next request will not hash it again
        for name, value in change.items():
            setattr(record, name, value)
        refused = await gw.handle(request(secret))
    assert first.status == 200
    assert refused.status == 401 and words in json.loads(refused.body)["error"]["message"]


async def test_only_secrets_of_known_keys_are_remembered():
    secret, record = key("k")
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        unknown = [await gw.handle(request(f"sk-gw-guess-{i}")) for i in range(5)]
        known = await gw.handle(request(secret))
    assert [r.status for r in unknown] == [401] * 5 and known.status == 200
    assert list(access._digests) == [secret]


async def test_remembered_digests_are_bounded(monkeypatch):
    monkeypatch.setattr(control, "MAX_KNOWN_SECRETS", 2)
    pairs = [key(f"k{i}") for i in range(5)]
    access = AccessControl(keys=[record for _, record in pairs])
    async with gateway(access) as gw:
        for _ in range(2):
            statuses = [(await gw.handle(request(secret))).status for secret, _ in pairs]
            assert statuses == [200] * 5
            assert len(access._digests) <= 2


async def test_a_remembered_digest_is_checked_against_the_key_it_finds():
    # The key of that hash is replaced by another record (as the Redis store's 30 s
    # memory or a config change would): the remembered digest finds the new one.
    secret, record = key("k", rpm=5)
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        first = await gw.handle(request(secret))
        stricter = Key(id="k", secret_sha256=record.secret_sha256, rpm=1)
        access.config_keys[record.secret_sha256] = stricter
        second = await gw.handle(request(secret))
    assert first.header("x-ratelimit-limit-requests") == "5"
    assert second.status == 429  # the new record's scope (rpm = 1), not the remembered one
    assert second.header("x-ratelimit-limit-requests") == "1"


async def test_a_secret_that_is_not_a_bearer_token_still_authenticates():
    secret, record = key("k")
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        for headers in ({"authorization": f"bearer  {secret} "}, {"x-api-key": secret}):
            body = json.dumps({"model": "mock-gpt", "messages": []}).encode()
            response = await gw.handle(Request("POST", CHAT, "", headers, body))
            assert response.status == 200


# ------------------------------------------------------------------ budgets and periods


@pytest.mark.parametrize("period", ["daily", "monthly", "total"])
def test_a_budget_period_is_the_one_worked_out_afresh(period):
    _, record = key("k", budget=Budget(1.0, period))
    access = AccessControl(keys=[record])
    # Across a month's end and a day's: 2026-12-31 23:59:59.5, then the new year.
    new_year = 1798761600.0
    for now in (new_year - 86400 * 3, new_year - 0.5, new_year, new_year + 3600.25):
        budget = access._budget(record, now)
        assert budget.period == period_id(period, now)
        assert budget.ttl == period_reset(period, now)
        assert budget.key_id == "k" and budget.amount == 1.0


# ------------------------------------------------------------------ the figures


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "max_tokens": 60}',
        b'{"model": "m", "max_completion_tokens": 7, "max_tokens": 60}',
        b'{"model": "m", "max_output_tokens": 90}',
        b'{"model": "m", "max_tokens": -5}',
        b'{"model": "m"}',
        b'{"model": "m", "max_tokens": "many"}',
        b"not json at all",
        b"[" * 10000,
    ],
)
def test_the_reservation_is_the_estimate(body):
    assert reserved_tokens(body) == estimate_tokens(body, max_tokens_of(body))


def _reset_text_as_it_was(seconds: float) -> str:
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def test_reset_texts_are_spelled_as_before():
    for seconds in [-1, 0, 0.0004, 0.25, 0.999, 1, 1.0001, 6, 59.5, 60, 60.01, 360, 3725.2]:
        assert reset_text(seconds) == _reset_text_as_it_was(seconds)
    for tenth in range(0, 1300):
        assert reset_text(tenth / 10) == _reset_text_as_it_was(tenth / 10)


def test_rate_limit_headers_say_each_limit_there_is():
    both = rate_limit_headers(Window(10, -3, 200, 150, 12.5))
    assert both == [
        ("x-ratelimit-limit-requests", "10"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "13s"),
        ("x-ratelimit-limit-tokens", "200"),
        ("x-ratelimit-remaining-tokens", "150"),
        ("x-ratelimit-reset-tokens", "13s"),
    ]
    assert rate_limit_headers(Window(None, None, 200, 0, 0.5))[1] == (
        "x-ratelimit-remaining-tokens",
        "0",
    )
    assert rate_limit_headers(Window(None, None, None, None, 30.0)) == []


# ------------------------------------------------------------------ remembered secrets


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"revoked": True}, "revoked"),
        ({"disabled": True}, "disabled"),
        ({"expires": time.time() - 1}, "expired"),
    ],
)
async def test_a_remembered_secret_whose_record_is_replaced_by_an_unusable_one_is_refused(
    change, words
):
    # A reload (or the admin API) files a new record under the same digest: the
    # remembered secret finds it, and it is checked as a first sight would be.
    secret, record = key("k")
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        first = await gw.handle(request(secret))
        assert secret in access._digests
        replaced = Key(id="k", secret_sha256=record.secret_sha256, **change)
        access.config_keys[record.secret_sha256] = replaced
        refused = await gw.handle(request(secret))
    assert first.status == 200
    assert refused.status == 401 and words in json.loads(refused.body)["error"]["message"]


async def test_a_remembered_secret_whose_key_expires_later_is_refused_once_it_has():
    secret, record = key("k", expires=time.time() + 3600)
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        first = await gw.handle(request(secret))
        record.expires = time.time() - 0.001  # the same record, its time now past
        refused = await gw.handle(request(secret))
    assert first.status == 200 and refused.status == 401


async def test_a_remembered_secret_whose_key_is_removed_is_unknown():
    secret, record = key("k")
    access = AccessControl(keys=[record])
    async with gateway(access) as gw:
        first = await gw.handle(request(secret))
        del access.config_keys[record.secret_sha256]
        unknown = await gw.handle(request(secret))
    assert first.status == 200
    assert unknown.status == 401
    assert json.loads(unknown.body)["error"]["message"] == "Incorrect API key provided."


class _AsyncKeys:
    async def authenticate(self, ctx, api_key):
        return "async-caller" if api_key == "sk-async" else None


class _PlainKeys:
    def authenticate(self, ctx, api_key):
        return "plain-caller" if api_key == "sk-plain" else None


@pytest.mark.parametrize(
    ("hooks", "secret", "status"),
    [
        ([_PlainKeys()], "sk-plain", 200),  # one plain hook: called without a coroutine
        ([_PlainKeys()], "sk-other", 401),
        ([_AsyncKeys()], "sk-async", 200),
        ([_AsyncKeys()], "sk-plain", 401),
        ([_PlainKeys(), _AsyncKeys()], "sk-async", 200),  # the first identity wins
        ([_PlainKeys(), _AsyncKeys()], "sk-plain", 200),
        ([_PlainKeys(), _AsyncKeys()], "sk-other", 401),
    ],
)
async def test_authenticate_hooks_plain_or_async_one_or_several(hooks, secret, status):
    models = ModelRegistry()
    models.add("mock-gpt", MockProvider())
    async with Gateway(models, hooks=hooks) as gw:
        response = await gw.handle(request(secret))
        unsent = await gw.handle(Request("POST", CHAT, "", {}, b"{}"))
    assert response.status == status
    assert unsent.status == 401
    assert "No API key provided" in json.loads(unsent.body)["error"]["message"]


# ------------------------------------------------------------------ the reservation, read once

BOUNDS = [
    {},
    {"max_tokens": 60},
    {"max_completion_tokens": 7, "max_tokens": 60},
    {"max_output_tokens": 90},
    {"max_output_tokens": 90, "max_tokens": 30},
    {"max_tokens": -5},
    {"max_tokens": None},
    {"max_tokens": None, "max_output_tokens": 4},
    {"max_tokens": "many"},
    {"max_tokens": True},
    {"max_tokens": 60.0},
    {"max_tokens": 60, "max_completion_tokens": "x"},
    {"max_tokens": 10**30},
    {"max_output_tokens": {"nested": [1]}},
]


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize(
    "endpoint", [CHAT_ENDPOINT, COMPLETIONS, EMBEDDINGS, RESPONSES, PASSTHROUGH]
)
def test_the_reservation_read_from_the_first_parse_is_the_one_read_from_the_body(bounds, endpoint):
    request_fields = {"model": "m", "messages": [], "prompt": "p", "input": "i", **bounds}
    body = json.dumps(request_fields).encode()
    assert reserved_tokens_read(body, endpoint.parse(body)) == reserved_tokens(body)


@pytest.mark.parametrize("bounds", [{}, {"max_tokens": 60}, {"max_tokens": "many"}])
async def test_admit_reserves_the_same_with_the_first_parse_or_without(bounds):
    _, record = key("k", tpm=10_000)
    body = json.dumps({"model": "mock-gpt", "messages": [], **bounds}).encode()
    remaining = []
    for fields in (None, CHAT_ENDPOINT.parse(body)):
        access = AccessControl(keys=[record])
        ctx = RequestContext(None, "", "POST", CHAT, None)
        ctx.identity = record
        route = ModelRegistry()
        route.add("mock-gpt", MockProvider())
        await access.admit(
            ctx, route.resolve("mock-gpt"), "chat.completions", body, False, {}, fields
        )
        remaining.append(dict(ctx.admission.headers)["x-ratelimit-remaining-tokens"])
    assert remaining[0] == remaining[1] == str(10_000 - reserved_tokens(body))


# ------------------------------------------------------------------ the memory store's admission


def _store_scopes(**limits) -> tuple[Scope, ...]:
    return tuple(
        Scope(name, RateLimits(**scope), name.replace(":", "-")) for name, scope in limits.items()
    )


def test_a_request_a_later_scope_refuses_takes_nothing_from_the_earlier_ones():
    store = MemoryStore(0)
    key_scope, model_scope = _store_scopes(
        **{"key:k": {"rpm": 100, "tpm": 10_000, "max_parallel": 5}, "model:m": {"rpm": 1}}
    )
    now = 1798761600.0 + 12.5
    first = store.admit_now(now, "r1", (key_scope, model_scope), 40, None, None)
    second = store.admit_now(now, "r2", (key_scope, model_scope), 40, None, None)
    assert first.refusal is None
    assert second.refusal is not None and second.refusal.scope == "model:m"
    counts = store._minutes["key:k"]
    assert (counts.requests, counts.tokens) == (1, 40)  # r2's share given back
    assert list(store._parallel["key:k"]) == ["r1"]
    # The refusal's headers are the first scope's, as they always were: as if it took r2.
    assert second.window == Window(100, 98, 10_000, 9_920, 47.5)


def test_a_request_the_budget_refuses_takes_nothing_from_its_scopes():
    store = MemoryStore(0)
    (scope,) = _store_scopes(**{"key:k": {"rpm": 100, "tpm": 10_000}})
    store._spend[("k", "total")] = 5.0
    verdict = store.admit_now(100.0, "r1", (scope,), 40, StoreBudget("k", "total", 5.0, None), None)
    assert verdict.refusal is not None and verdict.refusal.kind == "budget"
    assert verdict.window == Window(100, 99, 10_000, 9_960, 20.0)
    counts = store._minutes["key:k"]
    assert (counts.requests, counts.tokens) == (0, 0)


def test_the_clock_minute_worked_out_once_per_minute_gives_the_figures_worked_out_afresh():
    store = MemoryStore(0)
    (scope,) = _store_scopes(**{"key:k": {"rpm": 1_000_000}})
    start = 1798761600.0  # a minute's start
    # Within a minute, across one, back (a clock set back), a minute skipped, odd fractions.
    times = [start + 0.1, start + 59.999, start + 60.0, start + 61.3, start + 59.5]
    times += [start + 200.25, start + 200.75, start + 260.0001, start + 1e-6, start + 0.123456]
    minute, current, previous = -2, 0, 0  # the counts as they were kept, minute by minute
    for n, now in enumerate(times):
        verdict = store.admit_now(now, f"r{n}", (scope,), 0, None, None)
        if int(now // 60.0) != minute:
            previous = current if int(now // 60.0) == minute + 1 else 0
            minute, current = int(now // 60.0), 0
        used = previous * (1.0 - (now % 60.0) / 60.0) + current
        expected = Window(1_000_000, int(1_000_000 - used - 1), None, None, 60.0 - now % 60.0)
        assert verdict.window == expected, (n, now)
        assert verdict.ticket.minute == minute
        current += 1


def test_limit_lines_are_remembered_in_bounded_memory(monkeypatch):
    from gateway.access import limits

    monkeypatch.setattr(limits, "MAX_LIMIT_LINES", 2)
    for _ in range(2):
        for limit in (5, 6, 7, 8):
            headers = dict(rate_limit_headers(Window(limit, 1, limit * 10, 2, 3.5)))
            assert headers["x-ratelimit-limit-requests"] == str(limit)
            assert headers["x-ratelimit-limit-tokens"] == str(limit * 10)
            assert headers["x-ratelimit-reset-requests"] == "4s"
    assert len(limits._LIMIT_REQUESTS) <= 2 and len(limits._LIMIT_TOKENS) <= 2
