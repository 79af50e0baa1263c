"""Routing settings from a GATEWAY_CONFIG file: parsed as written, refused when wrong,
and obeyed by a running gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, Settings, build_registry
from tests.conftest import SERVERS, start_gateway
from tests.gateway_process import free_port, raw_request

ROUTING = """
[providers.one]
base_url = "{base}"
api_key = "k1"

[providers.two]
base_url = "{base}"
api_key = "k2"

[providers.down]
base_url = "http://127.0.0.1:{refused}/v1"

[routing]
retries = 3
retry_on = [429, 503, "connection"]
timeouts = {{ connect = 2, first_byte = 30, idle = 20, total = 60 }}
cooldown = {{ failures = 2, window = 30, seconds = 10 }}
backoff = {{ base = 0.01, max = 0.05, retry_after_max = 5 }}

[models.chat]
strategy = "round-robin"
fallbacks = ["backup"]
context_fallbacks = ["long"]
timeouts = {{ first_byte = 5 }}
retries = 1

[[models.chat.deployments]]
provider = "down"
model = "echo"

[[models.chat.deployments]]
provider = "two"
model = "echo"
weight = 3
rpm = 100
tpm = 50000
timeout = 4

[models.backup]
provider = "one"
model = "echo"

[models.long]
provider = "one"
model = "echo-long"

[models.unreachable]
provider = "down"
retries = 1

[models.broken]
provider = "one"
model = "status:503"
retries = 0
fallbacks = ["backup"]
"""


def write(tmp_path: Path, text: str, base: str = "http://127.0.0.1:9/v1") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text.format(base=base, refused=free_port()))
    return path


def registry_from(path: Path):
    return build_registry(Settings.from_env({"GATEWAY_CONFIG": str(path)}))


def test_the_files_routing_settings_reach_each_model(tmp_path):
    registry = registry_from(write(tmp_path, ROUTING))
    chat = registry.resolve("chat")
    assert chat.balancer.strategy == "round-robin"
    assert [d.name for d in chat.deployments] == ["down/echo", "two/echo"]
    two = chat.deployments[1]
    assert (two.weight, two.rpm, two.tpm, two.timeout) == (3.0, 100, 50000, 4.0)
    assert chat.fallbacks == ("backup",) and chat.context_fallbacks == ("long",)
    # The model's own settings over [routing], over the environment's.
    assert (chat.timeouts.connect, chat.timeouts.first_byte) == (2.0, 5.0)
    assert (chat.timeouts.idle, chat.timeouts.total) == (20.0, 60.0)
    assert chat.retry.retries == 1
    assert chat.retry.statuses == frozenset({429, 503})
    assert chat.retry.on_connection and not chat.retry.on_timeout
    assert (chat.retry.backoff, chat.retry.backoff_max, chat.retry.retry_after_max) == (
        0.01,
        0.05,
        5.0,
    )
    assert (chat.cooldown.failures, chat.cooldown.window, chat.cooldown.seconds) == (2, 30, 10)
    backup = registry.resolve("backup")
    assert backup.retry.retries == 3 and backup.balancer.strategy == "least-inflight"


def test_without_routing_settings_the_environment_sets_the_defaults(tmp_path):
    path = write(tmp_path, '[providers.one]\nbase_url = "{base}"\n[models.m]\nprovider = "one"\n')
    env = {
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_RETRIES": "0",
        "GATEWAY_UPSTREAM_TIMEOUT": "7",
        "GATEWAY_IDLE_TIMEOUT": "8",
        "GATEWAY_TOTAL_TIMEOUT": "9",
    }
    route = build_registry(Settings.from_env(env)).resolve("m")
    assert route.retry.retries == 0
    assert (route.timeouts.first_byte, route.timeouts.idle, route.timeouts.total) == (7, 8, 9)


MODEL = '[providers.one]\nbase_url = "{base}"\n[models.m]\nprovider = "one"\n'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('strategy = "fastest"', r"models\.m: unknown strategy 'fastest'"),
        ('fallbacks = ["nowhere"]', r"models: .*nowhere"),
        ("retries = -1", r"models\.m\.retries: expected a whole number of at least 0"),
        ("retries = 1.5", r"models\.m\.retries: expected a whole number, got a number"),
        ('retry_on = ["sometimes"]', r"models\.m\.retry_on\[0\]: 'sometimes' is not one of"),
        ("retry_on = [700]", r"models\.m\.retry_on\[0\]: expected a whole number of at most 599"),
        ("timeouts = {{ first_byte = 0 }}", r"models\.m\.timeouts\.first_byte: expected a number"),
        ("timeouts = {{ soon = 1 }}", r"models\.m\.timeouts\.soon: unknown setting"),
        (
            'cooldown = {{ failures = "3" }}',
            r"models\.m\.cooldown\.failures: expected a whole number, got a string",
        ),
        ("backoff = {{ base = -1 }}", r"models\.m\.backoff\.base: expected a number"),
        ("retrys = 2", r"models\.m\.retrys: unknown setting"),
    ],
)
def test_a_wrong_routing_setting_stops_start_up_naming_it(tmp_path, extra, message):
    path = write(tmp_path, MODEL + extra + "\n")  # (braces doubled: the text is formatted)
    with pytest.raises(ConfigError, match=r"^GATEWAY_CONFIG \(.*\): " + message):
        registry_from(path)


@pytest.mark.parametrize(
    ("deployment", "message"),
    [
        ('provider = "nope"', r"deployments\[0\]\.provider: unknown provider 'nope'"),
        ('provider = "one"\nweight = 0', r"deployments\[0\]\.weight: expected a number"),
        (
            'provider = "one"\nrpm = 0',
            r"deployments\[0\]\.rpm: expected a whole number of at least 1",
        ),
        ('provider = "one"\nregion = "eu"', r"deployments\[0\]\.region: unknown setting"),
    ],
)
def test_a_wrong_deployment_stops_start_up_naming_it(tmp_path, deployment, message):
    text = '[providers.one]\nbase_url = "{base}"\n[[models.m.deployments]]\n' + deployment + "\n"
    with pytest.raises(ConfigError, match=r"^GATEWAY_CONFIG \(.*\): models\.m\." + message):
        registry_from(write(tmp_path, text))


def test_deployments_and_a_single_provider_together_are_refused(tmp_path):
    text = MODEL + '[[models.m.deployments]]\nprovider = "one"\n'
    with pytest.raises(ConfigError, match="either provider/model or deployments"):
        registry_from(write(tmp_path, text))


# ------------------------------------------------------------------ a running gateway


@pytest.fixture(scope="module", params=SERVERS)
def routing_gateway(request, upstream_server, tmp_path_factory):
    path = write(tmp_path_factory.mktemp("routing"), ROUTING, upstream_server.base_url)
    process = start_gateway(tmp_path_factory, request.param, {"GATEWAY_CONFIG": str(path)})
    yield process
    process.stop()


def chat(gateway, model: str, stream: bool = False):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return raw_request(
        gateway.url,
        "POST",
        "/v1/chat/completions",
        json.dumps(body).encode(),
        {"content-type": "application/json"},
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_deployment_is_retried_on_the_next_and_the_headers_say_so(
    routing_gateway, upstream, stream
):
    answers = [chat(routing_gateway, "chat", stream) for _ in range(4)]
    assert all(a.status == 200 for a in answers), answers
    # Round-robin: every other request meets the refusing deployment first.
    attempts = sorted(a.headers["x-gateway-attempts"] for a in answers)
    assert attempts[:2] == ["1", "1"]
    assert {a.headers["x-gateway-deployment"] for a in answers} == {"two/echo"}
    assert {a.headers["x-gateway-model"] for a in answers} == {"chat"}
    assert len(upstream.requests) == 4
    assert {r.headers["Authorization"] for r in upstream.requests} == {"Bearer k2"}


def test_a_failing_model_falls_back_and_the_headers_name_the_fallback(routing_gateway, upstream):
    answer = chat(routing_gateway, "broken")
    assert answer.status == 200, answer
    assert answer.headers["x-gateway-model"] == "backup"
    assert answer.headers["x-gateway-attempts"] == "2"
    assert [r.json["model"] for r in upstream.requests] == ["status:503", "echo"]


def test_an_error_after_all_attempts_says_how_many_were_made(routing_gateway, upstream):
    answer = chat(routing_gateway, "unreachable")
    assert answer.status == 502, answer
    assert answer.json()["error"]["type"] == "upstream_error"
    assert answer.headers["x-gateway-attempts"] == "2"
    assert chat(routing_gateway, "backup").status == 200  # and the next is served
