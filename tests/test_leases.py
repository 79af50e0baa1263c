"""Leases: shared limits admitted without a round trip to Redis, within a stated bound.

Four gateway processes share one real redis-server. Whatever the traffic — a burst, a
steady trickle, a limit smaller than the number of workers — no more than the limit is
admitted in a window; once the leases are handed back (unused for a second), exactly the
limit is. And a worker with a lease admits requests with no round trip at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.access.limits import RateLimits, Scope
from gateway.access.stores.leases import FORGET, IDLE, LEAST, NO_WANTS, LeaseBook
from tests.conftest import start_gateway, upstream_env
from tests.gateway_process import GatewayProcess, raw_request
from tests.redis_server import RedisServer
from tests.upstream import Upstream

CHAT = "/v1/chat/completions"
NAMES = ("burst", "trickle", "tiny", "fast", "slots")
SECRETS = {name: f"sk-gw-lease-{name}-secret" for name in NAMES}
LIMITS = {"burst": 300, "trickle": 60, "tiny": 3, "fast": 1_000_000, "slots": 40}


def sha(secret: str) -> str:
    import hashlib

    return hashlib.sha256(secret.encode()).hexdigest()


def chat(gateway: GatewayProcess, name: str, **fields: object) -> int:
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}], **fields})
    headers = {"content-type": "application/json", "authorization": f"Bearer {SECRETS[name]}"}
    return raw_request(gateway.url, "POST", CHAT, body.encode(), headers).status


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, upstream_server: Upstream, tmp_path_factory
) -> Iterator[list[GatewayProcess]]:
    """Four gateways (three on Granian, one on Robyn) sharing one Redis."""
    config = tmp_path_factory.mktemp("leases") / "gateway.toml"
    config.write_text(
        "[cache]\nttl = 60\n"  # on: requests that cannot repeat must not pay for it
        + "".join(
            f'[keys.{name}]\nsecret_sha256 = "{sha(SECRETS[name])}"\n'
            + (f"max_parallel = {LIMITS[name]}\n" if name == "slots" else f"rpm = {LIMITS[name]}\n")
            for name in SECRETS
        )
    )
    env = upstream_env(
        upstream_server, GATEWAY_REDIS_URL=redis_server.url, GATEWAY_CONFIG=str(config)
    )
    gateways = [
        start_gateway(tmp_path_factory, server, env)
        for server in ("granian", "granian", "granian", "robyn")
    ]
    yield gateways
    for gateway in gateways:
        gateway.stop()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.command("FLUSHALL")
    return redis_server


def within_one_minute(needed: float) -> None:
    """Start a test early enough in a clock minute to run within it."""
    into = time.time() % 60
    if into > 60 - needed:
        time.sleep(60 - into + 0.2)


def top_off(fleet: list[GatewayProcess], name: str) -> int:
    """Once the leases are handed back: ask each gateway until it refuses; the admitted."""
    time.sleep(IDLE + 0.5)  # every lease unused this long is handed back
    admitted = 0
    for gateway in fleet:
        while chat(gateway, name) == 200:
            admitted += 1
    return admitted


def test_a_burst_on_four_processes_never_passes_the_limit(fleet, clean_redis):
    within_one_minute(25)
    jobs = [fleet[i % 4] for i in range(420)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda gateway: chat(gateway, "burst"), jobs))
    assert set(statuses) <= {200, 429}
    admitted = statuses.count(200)
    assert admitted <= LIMITS["burst"]  # never more than the limit
    assert admitted >= LIMITS["burst"] - 4 * 40  # at most the leases outstanding less
    assert admitted + top_off(fleet, "burst") == LIMITS["burst"]  # and then exactly it


def test_a_trickle_at_the_limit_is_admitted_exactly(fleet, clean_redis):
    within_one_minute(25)
    statuses = []
    for i in range(80):  # ten a second, round the four gateways: the limit in 6 s
        statuses.append(chat(fleet[i % 4], "trickle"))
        time.sleep(0.1)
    admitted = statuses.count(200)
    assert LIMITS["trickle"] - 4 * LEAST <= admitted <= LIMITS["trickle"]
    assert statuses[: LIMITS["trickle"] - 4 * LEAST] == [200] * (LIMITS["trickle"] - 4 * LEAST)
    assert admitted + top_off(fleet, "trickle") == LIMITS["trickle"]


def test_a_limit_smaller_than_the_workers_is_exact(fleet, clean_redis):
    within_one_minute(15)
    statuses = [chat(fleet[i % 4], "tiny") for i in range(12)]
    assert statuses == [200] * 3 + [429] * 9


def test_request_slots_on_four_processes_never_pass_the_limit_nor_leak(
    fleet, clean_redis, upstream
):
    for _wave in range(3):  # the first asks Redis; the later ones run on leased slots too
        jobs = [fleet[i % 4] for i in range(80)]
        with ThreadPoolExecutor(80) as pool:
            statuses = list(pool.map(lambda g: chat(g, "slots", model="slow:0.5"), jobs))
        assert set(statuses) <= {200, 429} and 200 in statuses
    # The upstream answers each 0.5 s after it got it; a request holds its slot longer
    # than that: requests at the upstream at once never pass the limit.
    arrivals = sorted(r.at for r in upstream.requests if r.json.get("model") == "slow:0.5")
    at_once = max(sum(1 for t in arrivals if start <= t < start + 0.5) for start in arrivals)
    assert at_once <= LIMITS["slots"], at_once
    time.sleep(IDLE + 0.5)  # unused slots are handed back
    assert clean_redis.command("ZCARD", "gw:{k:slots}:p") == b":0\r\n"  # none left behind


def test_a_leased_request_makes_no_round_trip_to_redis(fleet, clean_redis):
    within_one_minute(15)
    gateway = fleet[0]
    for _ in range(20):  # a rate seen: leases from now on
        assert chat(gateway, "fast") == 200
    before = commands(clean_redis)
    for _ in range(200):
        assert chat(gateway, "fast") == 200
    calls = commands(clean_redis) - before
    assert calls < 40, calls  # top-ups and settlements, not one call per request
    # A request that can be cached (temperature 0) looks the cache up: one GET each.
    before_gets = commands(clean_redis, "get")
    for _ in range(10):
        assert chat(gateway, "fast", temperature=0) == 200
    assert commands(clean_redis, "get") - before_gets == 10


def commands(redis: RedisServer, name: str | None = None) -> int:
    """Commands Redis ran for clients (scripts counted once each), from INFO: all of
    them, or those of one name."""
    info = redis.command("INFO", "commandstats").decode()
    total = 0
    for line in info.splitlines():
        counted = line.startswith("cmdstat_") and not line.startswith(
            ("cmdstat_info", "cmdstat_ping")
        )
        if counted and (name is None or line.startswith(f"cmdstat_{name}:")):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


# ------------------------------------------------------------------ the book alone


def test_a_lease_is_taken_only_after_traffic_and_sized_by_its_rate():
    book = LeaseBook()
    scope = Scope("key:k", RateLimits(rpm=600_000), "k:k")
    now = 1000.0
    assert book.wants(scope, 0, now) == NO_WANTS  # no rate yet: no lease
    book.granted(scope, int(now // 60), 0, 0, 1.0, 0.0, 1, 0, now)
    # 1 request in the last 0.1 s or more: ten a second -> 1, but at least 1/1000 of 600k.
    assert book.wants(scope, 0, now + 0.05).requests == 600
    book.granted(scope, int(now // 60), 600, 0, 602.0, 0.0, 1, 0, now)
    for _ in range(600):
        assert book.take(scope, int(now // 60), 0, now) is not None
    assert book.take(scope, int(now // 60), 0, now) is None  # spent: ask Redis
    assert book.take(scope, int(now // 60) + 1, 0, now) is None  # another minute


def test_the_window_a_lease_reports_counts_its_own_permits_as_left():
    book = LeaseBook()
    scope = Scope("key:k", RateLimits(rpm=100, tpm=10_000), "k:k")
    minute = 16
    book.wants(scope, 10, minute * 60.0)
    book.granted(scope, minute, 0, 0, 1.0, 10.0, 1, 10, minute * 60.0)
    book.granted(scope, minute, 10, 400, 20.0, 500.0, 0, 0, minute * 60.0)
    window = book.take(scope, minute, 10, minute * 60.0 + 1)
    # 20 counted in Redis, 10 of them this worker's unused permits: 90 left, less this one.
    assert window.remaining_requests == 89
    assert window.remaining_tokens == 10_000 - 500 + 400 - 10


def test_idle_leases_and_other_minutes_are_handed_back():
    book = LeaseBook()
    scope = Scope("key:k", RateLimits(rpm=1000), "k:k")
    book.wants(scope, 0, 60.0)
    book.granted(scope, 1, 8, 0, 9.0, 0.0, 1, 0, 60.0)
    assert book.idle(60.5, 1) == ([], [])
    assert book.idle(60.0 + IDLE, 1) == ([("k:k", 1, 8, 0, [])], [])
    assert book.take(scope, 1, 0, 61.5) is None  # nothing left to admit alone
    book.granted(scope, 1, 8, 0, 9.0, 0.0, 1, 0, 62.0)
    assert book.granted(scope, 2, 5, 0, 6.0, 0.0, 1, 0, 120.0) == [(1, 8, 0)]
    assert book.idle(120.1, 3) == ([("k:k", 2, 5, 0, [])], [])
    book.charge("k", "d1", 0.5, 120.0)
    book.idle(120.0 + FORGET, 3)  # a scope and a budget unused this long are forgotten
    assert book.leases == {} and book.slices == {}


def test_a_budget_slice_covers_costs_and_the_rest_goes_to_redis():
    book = LeaseBook()
    assert not book.spend_allowed("k", "d20261207")
    assert book.money_wanted("k", "d20261207", 100.0, 0.0) == (0.0, 0.0)  # no cost seen
    assert book.charge("k", "d20261207", 0.25, 0.0) == 0.25  # no slice: all to Redis
    want, least = book.money_wanted("k", "d20261207", 100.0, 0.05)
    assert least == pytest.approx(LEAST * 0.25) and want == pytest.approx(0.25)
    assert book.sliced("k", "d20261207", 1.0, 0.1) is None
    assert book.spend_allowed("k", "d20261207")
    assert book.charge("k", "d20261207", 0.75, 0.2) == 0.0
    assert book.charge("k", "d20261207", 0.5, 0.3) == pytest.approx(0.25)
    assert not book.spend_allowed("k", "d20261207")
    book.sliced("k", "d20261207", 1.0, 0.4)
    assert book.sliced("k", "d20261208", 0.0, 0.5) == ("d20261207", 1.0)  # a new day


def test_leased_slots_admit_while_free_and_go_back_when_unused():
    book = LeaseBook()
    scope = Scope("key:k", RateLimits(max_parallel=100), "k:k")
    book.wants(scope, 0, 60.0)
    book.granted(scope, 1, 0, 0, 1.0, 0.0, 1, 0, 60.0)
    assert book.wants(scope, 0, 60.2).slots == LEAST  # then twice what it holds
    book.new_slots("key:k", "w1", 0, 4)
    assert book.leases["key:k"].slots == ["w1:0", "w1:1", "w1:2", "w1:3"]
    assert book.wants(scope, 0, 60.3).slots == 4
    for _ in range(4):
        assert book.take(scope, 1, 0, 60.4) is not None
    assert book.low(scope)  # all four busy: top up
    assert book.take(scope, 1, 0, 60.4) is None  # a fifth asks Redis
    for _ in range(4):
        book.release("key:k", 60.5)
    assert book.idle(60.5 + IDLE / 2, 1) == ([], [])
    handed, _ = book.idle(60.5 + IDLE, 1)
    assert handed == [("k:k", 1, 0, 0, ["w1:0", "w1:1", "w1:2", "w1:3"])]
    assert book.take(scope, 1, 0, 62.0) is None
