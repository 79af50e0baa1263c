"""The deployments' minute counts (their ``rpm``/``tpm`` hints), shared by two gateway
processes through one real redis-server (and, in tests/test_redis_cluster.py, through a
Redis Cluster): a deployment one gateway has used up is past its hint in the other too."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gateway.access.control import AccessControl
from tests.conftest import gateway_pair, upstream_env
from tests.gateway_process import GatewayProcess
from tests.redis_server import RedisServer
from tests.test_shared_state import chat, sha
from tests.upstream import Upstream

# Two deployments of one model: the first nearly always chosen while under its hint of
# 4 requests a minute — counted by every gateway together.
HINTED_MODEL = """
[models.hinted]
strategy = "weighted"

[[models.hinted.deployments]]
model = "echo"
weight = 1000000
rpm = 4

[[models.hinted.deployments]]
model = "slow:0"
"""
SECRET = "sk-gw-deployments-secret-for-tests"


def assert_deployment_counts_shared(first: GatewayProcess, second: GatewayProcess, secret: str):
    """One gateway uses up the first deployment's hint; within the second the gateways
    share their counts (every second), the other gateway — which has sent it nothing
    this minute — sends the next request to the second deployment."""
    into = time.time() % 60
    if into > 50:  # within one clock minute
        time.sleep(60 - into + 0.2)
    deployments = [
        chat(first, secret, model="hinted").headers["x-gateway-deployment"] for _ in range(4)
    ]
    assert deployments == ["openai/echo"] * 4
    time.sleep(2.5)
    answer = chat(second, secret, model="hinted")
    assert answer.status == 200 and answer.headers["x-gateway-deployment"] == "openai/slow:0"


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, upstream_server: Upstream, tmp_path_factory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    config = tmp_path_factory.mktemp("deployments") / "gateway.toml"
    config.write_text(HINTED_MODEL + f'\n[keys.router]\nsecret_sha256 = "{sha(SECRET)}"\n')
    env = upstream_env(
        upstream_server, GATEWAY_REDIS_URL=redis_server.url, GATEWAY_CONFIG=str(config)
    )
    yield from gateway_pair(tmp_path_factory, env)


def test_the_deployments_minute_counts_are_shared_through_redis(pair, redis_server):
    redis_server.command("FLUSHALL")
    assert_deployment_counts_shared(*pair, SECRET)


def test_each_share_reports_what_came_since_the_last_one():
    """A worker's own counts only grow; each share adds to the current minute's totals
    what came since the last share — the first share of a new minute too (it once added
    everything the worker had ever sent, so a busy deployment looked past its hint for
    good), and a share that failed is told with the next one."""
    access = AccessControl()
    assert access._deployment_deltas({"d": (5, 50)}) == {"d": (5, 50)}
    access._reported.update({"d": (5, 50)})
    assert access._deployment_deltas({"d": (7, 80)}) == {"d": (2, 30)}
