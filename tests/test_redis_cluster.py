"""Keys, limits, budgets, the cache and revocation on a real Redis Cluster (three
primaries, three replicas), shared by two gateway processes (Granian and Robyn); then a
primary killed: requests are served on (``GATEWAY_REDIS_FAILURE=open``) and, once its
replica has taken over, limits hold again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests import test_admin as admin_api
from tests.conftest import gateway_pair, start_gateway, upstream_env
from tests.gateway_process import GatewayProcess
from tests.redis_cluster import ClusterNode, RedisCluster
from tests.test_shared_deployments import HINTED_MODEL, assert_deployment_counts_shared
from tests.test_shared_state import chat, created_secret, keys_command, sha
from tests.upstream import Upstream

NAMES = ("red", "green", "blue", "wide", "after")
SECRETS = {name: f"sk-gw-cluster-{name}-secret" for name in NAMES}
CONFIG = (
    """
[prices]
echo = { input = 1000.0, output = 1000.0 }

[cache]
ttl = 60

[models.echo]  # (with models listed, only those are served)
model = "echo"
"""
    + HINTED_MODEL
    + "".join(
        f'\n[keys.{name}]\nsecret_sha256 = "{sha(secret)}"\nrpm = {rpm}\n'
        for (name, secret), rpm in zip(SECRETS.items(), (10, 10, 10, 100_000, 6), strict=True)
    )
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    started = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def pair(
    cluster: RedisCluster, upstream_server: Upstream, tmp_path_factory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    config = tmp_path_factory.mktemp("cluster-config") / "gateway.toml"
    config.write_text(CONFIG)
    env = upstream_env(
        upstream_server,
        GATEWAY_REDIS_URL=cluster.url,
        GATEWAY_REDIS_CLUSTER="true",
        GATEWAY_REDIS_FAILURE="open",
        GATEWAY_REDIS_TIMEOUT="0.2",
        GATEWAY_CONFIG=str(config),
    )
    yield from gateway_pair(tmp_path_factory, env)


def within_one_minute(needed: float) -> None:
    into = time.time() % 60
    if into > 60 - needed:
        time.sleep(60 - into + 0.2)


def cluster_keys(cluster: RedisCluster, *args: str) -> str:
    """The key command, on the cluster."""
    return keys_command(cluster, *args, GATEWAY_REDIS_CLUSTER="true")  # type: ignore[arg-type]


def counted(node: ClusterNode, name: str) -> int:
    """The requests counted this minute for a key, on the primary holding them."""
    reply = node.command("GET", f"gw:{{k:{name}}}:r:{int(time.time() // 60)}")
    return int(reply.split(b"\r\n")[1]) if reply.startswith(b"$") and b"$-1" not in reply else 0


def test_the_scopes_live_on_different_primaries(cluster):
    owners = {cluster.slot_owner(f"gw:{{k:{name}}}:r:0").port for name in ("red", "green", "blue")}
    assert len(owners) >= 2  # else the test below would not cross slots


def test_limits_across_slots_are_exact_on_both_gateways(pair, cluster):
    within_one_minute(15)
    for name in ("red", "green", "blue"):
        statuses = [chat(pair[i % 2], SECRETS[name]).status for i in range(14)]
        assert statuses == [200] * 10 + [429] * 4, (name, statuses)


def test_keys_budgets_cache_and_revocation_on_the_cluster(pair, cluster):
    secret = created_secret(
        cluster_keys(cluster, "create", "cluster-spender", "--budget", "0.03", "--period", "daily")
    )
    statuses = []
    for i in range(7):  # each answer: 7 tokens at $0.001 = $0.007 (echo)
        statuses.append(chat(pair[i % 2], secret, max_tokens=1).status)
        time.sleep(0.05)
    assert statuses == [200] * 5 + [429] * 2  # $0.028 < $0.03 before the fifth, not the sixth
    refused = chat(pair[1], secret, max_tokens=1)
    assert refused.json()["error"]["code"] == "insufficient_quota"

    cacher = created_secret(cluster_keys(cluster, "create", "cluster-cacher"))
    first = chat(pair[0], cacher, temperature=0)
    assert first.headers["x-gateway-cache"] == "miss"
    time.sleep(0.2)
    second = chat(pair[1], cacher, temperature=0)
    assert second.headers["x-gateway-cache"] == "hit" and second.body == first.body

    cluster_keys(cluster, "revoke", "cluster-cacher")
    for gateway in pair:
        revoked = chat(gateway, cacher)
        assert revoked.status == 401 and "revoked" in revoked.json()["error"]["message"]


def test_the_spend_ledger_on_the_cluster(cluster, tmp_path_factory):
    """Two gateways' admin APIs read one ledger, flushed to the cluster's slots."""
    config = admin_api.write_config(tmp_path_factory.mktemp("ledger"))
    settings = admin_api.env(config, GATEWAY_REDIS_URL=cluster.url, GATEWAY_REDIS_CLUSTER="true")
    gateways = [start_gateway(tmp_path_factory, "granian", settings) for _ in range(2)]
    try:
        admin_api.assert_ledger_sums(gateways, admin_api.traffic(gateways))
    finally:
        for gateway in gateways:
            gateway.stop()


def test_the_deployments_minute_counts_are_shared_through_the_cluster(pair, cluster):
    assert_deployment_counts_shared(*pair, SECRETS["wide"])


def test_a_primary_killed_requests_go_on_and_limits_hold_after_failover(pair, cluster):
    within_one_minute(40)
    victim = cluster.slot_owner("gw:{k:after}:r:0")
    assert cluster.slot_owner("gw:{k:wide}:r:0") is victim  # (slots 12991 and 15285)
    victim.stop()
    victim.process = None
    served = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # before the replica has taken over
        served.append(chat(pair[len(served) % 2], SECRETS["wide"]).status)
    assert set(served) == {200}, served  # served on, with each worker's own count
    cluster.wait_ok()
    successor = cluster.slot_owner("gw:{k:after}:r:0")
    assert successor.port != victim.port  # the replica took over
    for gateway in pair:  # each gateway finds the new primary by itself, within seconds
        deadline = time.monotonic() + 15
        while True:
            before = counted(successor, "after")
            chat(gateway, SECRETS["after"])
            if counted(successor, "after") > before:
                break
            assert time.monotonic() < deadline, "a gateway never reached the new primary"
            time.sleep(0.2)
    successor.command("DEL", f"gw:{{k:after}}:r:{int(time.time() // 60)}")
    statuses = [chat(pair[i % 2], SECRETS["after"]).status for i in range(10)]
    assert statuses == [200] * 6 + [429] * 4, statuses  # the limit holds again, exactly
