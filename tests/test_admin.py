"""The spend ledger and the admin API, against real gateway processes on loopback.

The ledger's sums must equal what the clients were answered, across two gateways on one
Redis and across two workers of one gateway without it; the admin API must make, show
and revoke keys a real OpenAI client then uses, refuse the wrong key, and never show a
secret anywhere — not in an answer, not in a log line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import start_gateway
from tests.gateway_process import GatewayProcess, free_port, raw_request
from tests.redis_server import RedisServer

ADMIN = "admin-key-for-tests-0123456789"
SECRETS = {"alpha": "sk-test-alpha-secret", "beta": "sk-test-beta-secret"}
TEAMS = {"alpha": "team-a", "beta": "team-b"}
PRICES = {"gpt-4o-mini": (1.0, 2.0), "gpt-4o": (5.0, 10.0)}  # US$ per million tokens


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def write_config(directory: Path) -> Path:
    """Two keys of two teams, and prices for the two models the mock answers."""
    lines = ["[prices]"]
    lines += [f'"{m}" = {{ input = {i}, output = {o} }}' for m, (i, o) in PRICES.items()]
    for key_id, secret in SECRETS.items():
        lines += [f"[keys.{key_id}]", f'secret_sha256 = "{sha(secret)}"']
        lines.append(f'team = "{TEAMS[key_id]}"')
    path = directory / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("admin"))


def env(config: Path, **extra: str) -> dict[str, str]:
    return {"GATEWAY_CONFIG": str(config), "GATEWAY_ADMIN_KEY": ADMIN, **extra}


def admin(gateway: GatewayProcess, method: str, path: str, body: object = None, key: str = ADMIN):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return raw_request(gateway.url, method, path, data, headers)


def chat(gateway: GatewayProcess, secret: str, model: str, words: int):
    body = {"model": model, "messages": [{"role": "user", "content": " ".join(["w"] * words)}]}
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    response = raw_request(
        gateway.url, "POST", "/v1/chat/completions", json.dumps(body).encode(), headers
    )
    assert response.status == 200, response
    return response.json()["usage"]


def traffic(gateways: list[GatewayProcess]) -> dict[str, dict[str, list[float]]]:
    """Requests of known usage over every gateway, key and model; the expected sums per
    key and per model: requests, prompt and completion tokens, cost."""
    expected: dict[str, dict[str, list[float]]] = {"key": {}, "model": {}, "team": {}}
    for i in range(24):
        gateway = gateways[i % len(gateways)]
        key_id = ("alpha", "beta")[i // 2 % 2]
        model = ("gpt-4o-mini", "gpt-4o")[i // 3 % 2]
        usage = chat(gateway, SECRETS[key_id], model, 1 + i % 5)
        price_in, price_out = PRICES[model]
        cost = (usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out) / 1e6
        for group, name in (("key", key_id), ("model", model), ("team", TEAMS[key_id])):
            sums = expected[group].setdefault(name, [0, 0, 0, 0.0])
            sums[0] += 1
            sums[1] += usage["prompt_tokens"]
            sums[2] += usage["completion_tokens"]
            sums[3] += cost
    return expected


def spend(gateway: GatewayProcess, group_by: str) -> dict[str, list[float]]:
    """The ledger's sums per group, over every period of the last day."""
    response = admin(gateway, "GET", f"/admin/spend?group_by={group_by}&granularity=day")
    assert response.status == 200, response
    body = response.json()
    assert body["group_by"] == group_by and body["granularity"] == "day"
    sums: dict[str, list[float]] = {}
    for row in body["rows"]:
        mine = sums.setdefault(row["group"], [0, 0, 0, 0.0])
        for i, name in enumerate(("requests", "prompt_tokens", "completion_tokens", "cost")):
            mine[i] += row[name]
    return sums


def assert_ledger_sums(gateways: list[GatewayProcess], expected: dict) -> None:
    """Every gateway's admin API sees every gateway's requests (within the flush)."""
    deadline = time.monotonic() + 5
    for gateway in gateways:
        for group in ("key", "model", "team"):
            while True:
                seen = spend(gateway, group)
                if _same(seen, expected[group]) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert _same(seen, expected[group]), (group, seen, expected[group])


def _same(seen: dict[str, list[float]], expected: dict[str, list[float]]) -> bool:
    if set(seen) != set(expected):
        return False
    for name, values in expected.items():
        if seen[name][:3] != values[:3] or abs(seen[name][3] - values[3]) > 1e-9:
            return False
    return True


# ------------------------------------------------------------------ the ledger


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.command("FLUSHALL")
    return redis_server


def test_two_gateways_on_one_redis_count_into_one_ledger(clean_redis, config, tmp_path_factory):
    gateways = [
        start_gateway(tmp_path_factory, "granian", env(config, GATEWAY_REDIS_URL=clean_redis.url))
        for _ in range(2)
    ]
    try:
        expected = traffic(gateways)
        assert_ledger_sums(gateways, expected)
        overview = admin(gateways[0], "GET", "/admin/overview?window=1h").json()
        assert overview["requests"] == 24 and overview["errors"] == 0
        assert {m["model"] for m in overview["by_model"]} == set(PRICES)
        assert abs(overview["cost"] - sum(v[3] for v in expected["model"].values())) < 1e-9
        assert overview["latency_ms"]["p95"] >= overview["latency_ms"]["p50"] > 0
        assert b"gw:ledger:" in clean_redis.command("KEYS", "gw:ledger:*")
    finally:
        for gateway in gateways:
            gateway.stop()


def test_two_workers_without_redis_count_into_one_ledger(config, tmp_path_factory):
    gateway = start_gateway(tmp_path_factory, "granian", env(config, GATEWAY_WORKERS="2"))
    try:
        expected = traffic([gateway])
        assert_ledger_sums([gateway], expected)
        # The first read asks every worker for its recent requests; they come within a flush.
        deadline = time.monotonic() + 3
        while True:
            listed = admin(gateway, "GET", "/admin/requests?limit=1000").json()["data"]
            if len(listed) == 24 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(listed) == 24
        times = [row["time"] for row in listed]
        assert times == sorted(times, reverse=True)  # newest first
        only = admin(gateway, "GET", "/admin/requests?key=alpha&model=gpt-4o&limit=3").json()
        assert only["data"] and len(only["data"]) <= 3
        assert all(r["key"] == "alpha" and r["model"] == "gpt-4o" for r in only["data"])
        # Keys made in one worker's memory of two would fool the operator: refused.
        made = admin(gateway, "POST", "/admin/keys", {"id": "nope"})
        assert made.status == 409 and made.json()["error"]["code"] == "keys_need_shared_store"
    finally:
        gateway.stop()


# ------------------------------------------------------------------ the admin API


@pytest.fixture(scope="module")
def redis_gateway(
    redis_server: RedisServer, config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    redis_server.command("FLUSHALL")
    gateway = start_gateway(
        tmp_path_factory, "granian", env(config, GATEWAY_REDIS_URL=redis_server.url)
    )
    yield gateway
    gateway.stop()


def test_a_key_made_over_http_is_used_seen_and_revoked(redis_gateway):
    gateway = redis_gateway
    body = {
        "id": "sdk-key",
        "team": "team-sdk",
        "models": ["gpt-4o*"],
        "rpm": 600,
        "budget": {"amount": 5.0, "period": "monthly"},
        "metadata": {"cost_center": "r&d"},
    }
    made = admin(gateway, "POST", "/admin/keys", body)
    assert made.status == 201, made
    view = made.json()
    secret = view.pop("secret")
    assert secret.startswith("sk-gw-")
    assert view["id"] == "sdk-key" and view["rpm"] == 600 and view["revoked"] is False
    assert view["budget"] == {"amount": 5.0, "period": "monthly"}
    assert set(view) == {
        "id", "owner", "team", "models", "rpm", "tpm", "max_parallel", "budget",
        "expires", "disabled", "revoked", "metadata", "spent", "last_used",
    }  # fmt: skip
    assert admin(gateway, "POST", "/admin/keys", body).status == 409  # the id exists

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert answer.choices[0].message.content
    deadline = time.monotonic() + 5
    while True:
        shown = admin(gateway, "GET", "/admin/keys/sdk-key").json()
        if (shown["spent"] > 0 and shown["last_used"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown["spent"] > 0 and shown["last_used"], shown
    assert "secret" not in shown

    changed = admin(gateway, "PATCH", "/admin/keys/sdk-key", {"rpm": 100, "owner": "ops"})
    assert changed.status == 200 and changed.json()["rpm"] == 100
    assert changed.json()["owner"] == "ops"
    listed = admin(gateway, "GET", "/admin/keys").json()["data"]
    assert {"alpha", "beta", "sdk-key"} <= {k["id"] for k in listed}

    revoked = admin(gateway, "POST", "/admin/keys/sdk-key/revoke")
    assert revoked.status == 200 and revoked.json()["revoked"] is True
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}]
        )

    # The secret (and its hash) is in no answer since the one that made it, nor in the log.
    answers = [
        admin(gateway, "GET", path).body
        for path in ("/admin/keys", "/admin/keys/sdk-key", "/admin/requests?limit=1000")
    ]
    for text in [*(a.decode() for a in answers), gateway.log()]:
        assert secret not in text and sha(secret) not in text
    assert "admin: key sdk-key created by admin (team=team-sdk" in gateway.log()
    assert "admin: key sdk-key revoked by admin" in gateway.log()


def test_file_keys_are_read_only_and_unknown_keys_404(redis_gateway):
    assert admin(redis_gateway, "GET", "/admin/keys/nobody").status == 404
    refused = admin(redis_gateway, "POST", "/admin/keys/alpha/revoke")
    assert refused.status == 409 and refused.json()["error"]["code"] == "key_in_config_file"
    bad = admin(redis_gateway, "POST", "/admin/keys", {"id": "x1", "rpm": 0})
    assert bad.status == 400 and bad.json()["error"]["param"] == "rpm"
    unknown = admin(redis_gateway, "POST", "/admin/keys", {"id": "x2", "colour": "red"})
    assert unknown.status == 400 and unknown.json()["error"]["param"] == "colour"


@pytest.mark.parametrize("key", ["", "wrong", SECRETS["alpha"], ADMIN + "x"])
def test_anything_but_the_admin_key_is_a_401(redis_gateway, key):
    response = admin(redis_gateway, "GET", "/admin/overview", key=key)
    assert response.status == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_admin_key_is_no_client_key(redis_gateway):
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    response = raw_request(
        redis_gateway.url, "POST", "/v1/chat/completions", body.encode(), headers
    )
    assert response.status == 401


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("group_by=colour", "group_by"),
        ("granularity=minute", "granularity"),
        ("format=xml", "format"),
        ("from=yesterday", "from"),
        ("from=2026-12-07T05:00:00Z&to=2026-12-06T05:00:00Z", "from"),
        ("colour=red", "colour"),
    ],
)
def test_a_wrong_spend_parameter_is_a_400_naming_it(redis_gateway, query, param):
    response = admin(redis_gateway, "GET", f"/admin/spend?{query}")
    assert response.status == 400, response
    assert response.json()["error"]["param"] == param


def test_other_wrong_parameters_are_400s(redis_gateway):
    for path in ("/admin/overview?window=2h", "/admin/requests?limit=5000"):
        assert admin(redis_gateway, "GET", path).status == 400


def test_spend_as_csv(redis_gateway):
    chat(redis_gateway, SECRETS["beta"], "gpt-4o", 3)
    time.sleep(1.2)
    response = admin(redis_gateway, "GET", "/admin/spend?format=csv&group_by=team&from=0")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.body.decode())))
    assert rows[0] == [
        "period", "group", "requests", "errors", "prompt_tokens", "completion_tokens",
        "cached_tokens", "cost",
    ]  # fmt: skip
    assert "team-b" in {row[1] for row in rows[1:]}


def test_deployments_and_the_console(redis_gateway):
    data = admin(redis_gateway, "GET", "/admin/deployments").json()["data"]
    assert data and data[0]["deployment"] == "mock" and data[0]["healthy"] is True
    page = raw_request(redis_gateway.url, "GET", "/console/")
    if page.status == 200:  # the console's files, when they are there
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
    assert raw_request(redis_gateway.url, "GET", "/console/../gateway.toml").status == 404
    assert raw_request(redis_gateway.url, "GET", "/console/nothing-here.js").status == 404


def test_without_an_admin_key_there_is_no_admin_api(tmp_path_factory):
    gateway = start_gateway(tmp_path_factory, "granian", {})  # the mock, no keys
    try:
        assert raw_request(gateway.url, "GET", "/admin/overview").status == 404
        headers = {"Authorization": f"Bearer {ADMIN}"}
        assert raw_request(gateway.url, "GET", "/admin/keys", headers=headers).status == 404
        assert raw_request(gateway.url, "GET", "/console/").status == 404
    finally:
        gateway.stop()


def test_the_admin_port_serves_admin_and_the_main_port_not(config, tmp_path_factory):
    port = free_port()
    gateway = start_gateway(
        tmp_path_factory, "granian", env(config, GATEWAY_ADMIN_PORT=str(port), GATEWAY_WORKERS="2")
    )
    try:
        chat(gateway, SECRETS["alpha"], "gpt-4o-mini", 2)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 5
        while True:
            response = raw_request(
                url, "GET", "/admin/overview", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            if response.json().get("requests") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status == 200 and response.json()["requests"] == 1, response
        assert raw_request(url, "GET", "/admin/overview").status == 401
        main = admin(gateway, "GET", "/admin/overview")
        assert main.status in (401, 404)  # not served there: a client path like any other
    finally:
        gateway.stop()


def test_one_worker_without_redis_makes_keys_in_its_memory(config, tmp_path_factory):
    gateway = start_gateway(tmp_path_factory, "granian", env(config))
    try:
        made = admin(gateway, "POST", "/admin/keys", {"id": "local", "rpm": 100})
        assert made.status == 201, made
        secret = made.json()["secret"]
        assert chat(gateway, secret, "gpt-4o-mini", 2)["completion_tokens"] > 0
        assert admin(gateway, "POST", "/admin/keys/local/revoke").json()["revoked"] is True
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
        again = raw_request(gateway.url, "POST", "/v1/chat/completions", body.encode(), headers)
        assert again.status == 401
        assert secret not in gateway.log()
    finally:
        gateway.stop()
