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
    Window,
    estimate_tokens,
    max_tokens_of,
    rate_limit_headers,
    reserved_tokens,
    reset_text,
)

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
