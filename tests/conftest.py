from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess
from tests.redis_server import RedisServer
from tests.upstream import UPSTREAM_KEY, Upstream

SERVERS = ["granian", "robyn"]
CLIENT_KEY = "gw-client-key-abc"


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    """The shared upstream, its records cleared for this test."""
    upstream_server.clear()
    return upstream_server


def start_gateway(
    tmp_path_factory: pytest.TempPathFactory, server: str, env: dict[str, str]
) -> GatewayProcess:
    log = tmp_path_factory.mktemp(f"gateway-{server}") / "gateway.log"
    return GatewayProcess(env, server, log).wait_ready()


def gateway_pair(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateways on one settings (one per server), stopped after: a fixture's body."""
    gateways = (
        start_gateway(tmp_path_factory, "granian", env),
        start_gateway(tmp_path_factory, "robyn", env),
    )
    yield gateways
    for gateway in gateways:
        gateway.stop()


def upstream_env(upstream: Upstream, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "GATEWAY_UPSTREAM_TIMEOUT": "2",
        "GATEWAY_MAX_BODY_BYTES": str(1024 * 1024),
        "GATEWAY_RETRIES": "0",  # these gateways show one attempt's behaviour; see test_routing
        **extra,
    }


@pytest.fixture(scope="module", params=SERVERS)
def gateway(
    request: pytest.FixtureRequest,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """A gateway process in front of the test upstream, once per server adapter."""
    process = start_gateway(tmp_path_factory, request.param, upstream_env(upstream_server))
    yield process
    process.stop()


@pytest.fixture(scope="module", params=SERVERS)
def auth_gateway(
    request: pytest.FixtureRequest,
    upstream_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """A gateway that requires client keys and runs the sample hooks."""
    env = upstream_env(
        upstream_server,
        GATEWAY_API_KEYS=f"{CLIENT_KEY}, second-key",
        GATEWAY_HOOKS="tests.sample_hooks:AuthenticateAndRewrite,tests.sample_hooks:ShoutingChunks",
    )
    process = start_gateway(tmp_path_factory, request.param, env)
    yield process
    process.stop()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, show the end of the log of every gateway process the test used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, GatewayProcess):
                report.sections.append((f"gateway log ({value.server})", value.log()[-4000:]))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
