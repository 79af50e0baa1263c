"""Keys, limits, budgets and the cache shared through a real redis-server by several
gateway processes (one on Granian, one on Robyn), the key command, and Redis failing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import start_gateway, upstream_env
from tests.gateway_process import ROOT, GatewayProcess, clean_environ, raw_request
from tests.redis_server import RedisServer
from tests.upstream import Upstream

CHAT = "/v1/chat/completions"

CONFIG = """
[prices]
echo = {{ input = 1000.0, output = 1000.0 }}          # $0.001 a token: budgets run out fast
"sse:4" = {{ input = 1000.0, output = 1000.0 }}

[cache]
ttl = 60

[keys.fixed]
secret_sha256 = "{fixed_hash}"
rpm = 12

[keys.tokens]
secret_sha256 = "{tokens_hash}"
tpm = 120
"""
FIXED, TOKENS = "sk-gw-fixed-secret-for-tests", "sk-gw-tokens-secret-for-tests"


def sha(secret: str) -> str:
    import hashlib

    return hashlib.sha256(secret.encode()).hexdigest()


def keys_command(redis: RedisServer, *args: str, config: str | None = None, **settings: str) -> str:
    env = {**clean_environ(), "GATEWAY_REDIS_URL": redis.url, **settings}
    if config:
        env["GATEWAY_CONFIG"] = config
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def created_secret(output: str) -> str:
    return re.search(r"^(sk-gw-\S+)$", output, re.M).group(1)


def chat(gateway: GatewayProcess, secret: str, model: str = "echo", **body: object):
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    headers = {"content-type": "application/json", "authorization": f"Bearer {secret}"}
    return raw_request(gateway.url, "POST", CHAT, json.dumps(payload).encode(), headers)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("shared") / "gateway.toml"
    path.write_text(CONFIG.format(fixed_hash=sha(FIXED), tokens_hash=sha(TOKENS)))
    return str(path)


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, upstream_server: Upstream, config_path: str, tmp_path_factory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateways — one per server — sharing one Redis."""
    env = upstream_env(
        upstream_server, GATEWAY_REDIS_URL=redis_server.url, GATEWAY_CONFIG=config_path
    )
    first = start_gateway(tmp_path_factory, "granian", env)
    second = start_gateway(tmp_path_factory, "robyn", env)
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.command("FLUSHALL")
    return redis_server


def wait_for_minute_start() -> None:
    """Start a rate test early in a clock minute, so that it runs within one."""
    into = time.time() % 60
    if into > 45:
        time.sleep(60 - into + 0.2)


def test_two_gateways_enforce_one_rpm_limit(pair, clean_redis, upstream):
    wait_for_minute_start()
    statuses = [chat(pair[i % 2], FIXED).status for i in range(20)]
    assert statuses.count(200) == 12, statuses  # exact within one minute
    assert set(statuses[12:]) == {429}
    limited = chat(pair[0], FIXED)
    assert limited.headers["x-ratelimit-limit-requests"] == "12"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(limited.headers["retry-after"]) >= 1
    # The reset the headers say is the wait Retry-After says.
    reset = limited.headers["x-ratelimit-reset-requests"]
    parts = re.findall(r"\d+", reset)[::-1]
    seconds = sum(int(n) * f for n, f in zip(parts, (1, 60, 3600), strict=False))
    assert seconds == int(limited.headers["retry-after"]), (reset, limited.headers)


def test_one_set_of_rate_limit_headers_the_gateways(pair, clean_redis, upstream):
    wait_for_minute_start()
    answer = raw_request(
        pair[0].url,
        "POST",
        CHAT,
        json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {"content-type": "application/json", "authorization": f"Bearer {FIXED}"},
    )
    assert answer.status == 200
    assert answer.headers["x-ratelimit-limit-requests"] == "12"  # not the upstream's 10000
    assert "inner-gateway-model" not in str(answer.headers)


def test_two_gateways_enforce_one_tpm_limit_within_one_reservation(pair, clean_redis, upstream):
    """tpm 120; each answer uses 7 tokens and reserves ~20 before it (body / 4 + 1)."""
    wait_for_minute_start()
    passed = 0
    for i in range(40):
        response = chat(pair[i % 2], TOKENS, max_tokens=1)
        if response.status == 200:
            passed += 1
        else:
            assert response.status == 429 and response.json()["error"]["code"] == (
                "rate_limit_exceeded"
            )
        time.sleep(0.02)  # settlements are batched a few ms after each answer
    used = passed * 7
    assert 120 - 20 <= used <= 120 + 20, passed  # the stated tolerance: one reservation


def test_keys_made_in_redis_are_allowed_models_and_revoked_without_a_restart(
    pair, clean_redis, upstream
):
    secret = created_secret(keys_command(clean_redis, "create", "team-x", "--models", "echo*"))
    assert chat(pair[0], secret).status == 200
    assert chat(pair[1], secret, model="echo-2").status == 200
    refused = chat(pair[1], secret, model="other")
    assert refused.status == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert "`other`" in refused.json()["error"]["message"]
    keys_command(clean_redis, "revoke", "team-x")
    for gateway in pair:
        revoked = chat(gateway, secret)
        assert revoked.status == 401 and "revoked" in revoked.json()["error"]["message"]
    soon = time.time() + 3
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon))
    expiring = created_secret(keys_command(clean_redis, "create", "brief", "--expires", at))
    assert chat(pair[0], expiring).status == 200
    time.sleep(max(0.0, soon - time.time()) + 1.0)  # (the time said is whole seconds)
    expired = chat(pair[0], expiring)
    assert expired.status == 401 and "expired" in expired.json()["error"]["message"]


def test_a_budget_runs_out_midway_counting_streamed_usage(pair, clean_redis, upstream):
    secret = created_secret(
        keys_command(clean_redis, "create", "spender", "--budget", "0.05", "--period", "daily")
    )
    statuses = []
    for i in range(6):  # each stream: 9 + 4 tokens at $0.001 = $0.013
        response = chat(pair[i % 2], secret, model="sse:4", stream=True)
        statuses.append(response.status)
        if response.status == 200:
            assert response.body.endswith(b"data: [DONE]\n\n")
        time.sleep(0.05)
    assert statuses[:4] == [200] * 4  # the fourth starts at $0.039 < $0.05, and finishes
    assert statuses[4:] == [429, 429]
    refused = chat(pair[0], secret, model="sse:4", stream=True)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    shown = json.loads(keys_command(clean_redis, "show", "spender"))
    assert shown["spent_this_period"] == pytest.approx(4 * 0.013)


def test_a_cached_answer_is_served_by_the_other_process(pair, clean_redis, upstream):
    secret = created_secret(keys_command(clean_redis, "create", "cacher"))
    for stream in (False, True):
        upstream.clear()
        first = chat(pair[0], secret, temperature=0, stream=stream)
        assert first.status == 200 and first.headers["x-gateway-cache"] == "miss"
        time.sleep(0.2)  # the answer is stored after it was sent
        second = chat(pair[1], secret, temperature=0, stream=stream)
        assert second.headers["x-gateway-cache"] == "hit"
        assert second.body == first.body  # byte for byte, the stream's events too
        assert len(upstream.requests) == 1
    other = created_secret(keys_command(clean_redis, "create", "other-team"))
    assert chat(pair[1], other, temperature=0).headers["x-gateway-cache"] == "miss"


def test_a_broken_key_record_breaks_no_other_key(pair, clean_redis, upstream):
    secret = created_secret(keys_command(clean_redis, "create", "good"))
    clean_redis.command("SET", f"gw:key:{'b' * 64}", '{"id": "broken", "rpm": 0}')
    clean_redis.command("SET", "gw:keyid:broken", "b" * 64)
    clean_redis.command("SADD", "gw:keys", "broken")
    assert chat(pair[0], secret).status == 200
    listed = keys_command(clean_redis, "list")
    assert "good" in listed and "broken" not in listed


def test_the_key_command_never_hangs_on_an_unknown_key(clean_redis):
    for action in ("show", "revoke"):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "keys", action, "nobody"],
            cwd=ROOT,
            env={**clean_environ(), "GATEWAY_REDIS_URL": clean_redis.url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1 and "no key 'nobody'" in result.stderr
        assert time.monotonic() - started < 10


def test_the_key_command_end_to_end(clean_redis, config_path):
    output = keys_command(
        clean_redis,
        "create",
        "cli-key",
        "--owner",
        "ops@example.com",
        "--team",
        "ops",
        "--rpm",
        "5",
        "--budget",
        "3",
        config=config_path,
    )
    secret = created_secret(output)
    listed = keys_command(clean_redis, "list", config=config_path)
    assert secret not in listed and sha(secret) not in listed
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    assert set(rows) == {"cli-key", "fixed", "tokens"}  # the file's keys and Redis's
    assert "ops@example.com" in rows["cli-key"] and "3/monthly" in rows["cli-key"]
    shown = json.loads(keys_command(clean_redis, "show", "cli-key"))
    assert shown["rpm"] == 5 and shown["state"] == "active" and "secret_sha256" not in shown
    keys_command(clean_redis, "revoke", "cli-key")
    assert json.loads(keys_command(clean_redis, "show", "cli-key"))["state"] == "revoked"
    again = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "cli-key"],
        cwd=ROOT,
        env={**clean_environ(), "GATEWAY_REDIS_URL": clean_redis.url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 1 and "exists already" in again.stderr


# ------------------------------------------------------------------ Redis failing


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_killed_mid_run_and_restarted(mode, upstream_server, tmp_path_factory):
    redis = RedisServer(tmp_path_factory.mktemp("redis-failing")).start()
    config = tmp_path_factory.mktemp("cfg") / "gateway.toml"
    config.write_text(f'[keys.k]\nsecret_sha256 = "{sha(FIXED)}"\nrpm = 1000\n')
    env = upstream_env(
        upstream_server,
        GATEWAY_REDIS_URL=redis.url,
        GATEWAY_CONFIG=str(config),
        GATEWAY_REDIS_FAILURE=mode,
        GATEWAY_REDIS_TIMEOUT="0.05",
    )
    gateway = start_gateway(tmp_path_factory, "granian", env)
    try:
        assert chat(gateway, FIXED).status == 200
        redis.stop()
        started = time.monotonic()
        during = [chat(gateway, FIXED) for _ in range(10)]
        assert time.monotonic() - started < 5  # never hangs on Redis
        if mode == "open":
            assert {r.status for r in during} == {200}
        else:
            assert {r.status for r in during} == {503}
            assert during[0].json()["error"]["code"] == "store_unavailable"
        redis.process = None
        restarted = RedisServer(redis.directory)
        restarted.port = redis.port
        restarted.start()
        # It recovers by itself: the limits count in Redis again.
        deadline = time.monotonic() + 10
        while True:
            status = chat(gateway, FIXED).status
            if status == 200 and b"gw:{k:k}:r:" in restarted.command("KEYS", "gw:{k:k}:r:*"):
                break
            assert time.monotonic() < deadline, "did not recover after Redis came back"
            time.sleep(0.2)
        metrics = raw_request(gateway.url, "GET", "/metrics").body.decode()
        failures = re.search(r"^gateway_store_failures_total (\S+)$", metrics, re.M)
        assert failures and float(failures.group(1)) >= 1
        log = gateway.log()
        assert log.count("the shared store (Redis) is unavailable") == 1  # once per interval
        restarted.stop()
    finally:
        gateway.stop()
        redis.stop()
