"""``python -m gateway`` as an operator meets it: start-up checks, the mock, workers."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SERVERS, start_gateway, upstream_env
from tests.gateway_process import ROOT, clean_environ, raw_request


def run_gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env={**clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "named", "expected"),
    [
        ({"GATEWAY_PORT": "abc"}, "GATEWAY_PORT", "an integer from 1 to 65535"),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT", "an integer from 1 to 65535"),
        ({"GATEWAY_WORKERS": "0"}, "GATEWAY_WORKERS", "an integer from 1 to 256"),
        ({"GATEWAY_SERVER": "nginx"}, "GATEWAY_SERVER", "granian, robyn"),
        ({"GATEWAY_UPSTREAM_TIMEOUT": "-1"}, "GATEWAY_UPSTREAM_TIMEOUT", "a number of at least"),
        ({"GATEWAY_UPSTREAM_TIMEOUT": "soon"}, "GATEWAY_UPSTREAM_TIMEOUT", "a number"),
        ({"GATEWAY_MAX_BODY_BYTES": "1e3"}, "GATEWAY_MAX_BODY_BYTES", "an integer"),
        ({"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL", "debug, info, warning, error"),
        ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL", "http:// or https:// URL"),
        ({"GATEWAY_CONFIG": "/nonexistent.toml"}, "GATEWAY_CONFIG", "cannot read"),
        ({"GATEWAY_HOOKS": "no_such_module:Hook"}, "GATEWAY_HOOKS", "cannot load"),
        ({"GATEWAY_HOOKS": "tests.sample_hooks"}, "GATEWAY_HOOKS", "module:attribute"),
        ({"GATEWAY_HOOKS": "tests.sample_hooks:HOOK_KEY"}, "GATEWAY_HOOKS", "implements none"),
        ({"GATEWAY_HOST": "999.1.1.1"}, "GATEWAY_HOST", "not a valid IPv4 address"),
        ({"GATEWAY_HOST": "203.0.113.9"}, "GATEWAY_HOST", "cannot listen on"),
        ({"GATEWAY_API_KEYS": ""}, "GATEWAY_API_KEYS", "set but holds no key"),
        ({"GATEWAY_API_KEYS": " , ,"}, "GATEWAY_API_KEYS", "set but holds no key"),
        ({"GATEWAY_MAX_HEADER_BYTES": "10"}, "GATEWAY_MAX_HEADER_BYTES", "an integer from"),
        ({"GATEWAY_STREAM_USAGE": "maybe"}, "GATEWAY_STREAM_USAGE", "on or off"),
        ({"GATEWAY_ACCESS_LOG": "/no/such/dir/a.log"}, "GATEWAY_ACCESS_LOG", "cannot write"),
        ({"GATEWAY_METRICS_PORT": "8080"}, "GATEWAY_METRICS_PORT", "is GATEWAY_PORT too"),
        ({"GATEWAY_MAX_HEADER_BYTES": "5"}, "GATEWAY_MAX_HEADER_BYTES", "from 1024 to 1048576"),
    ],
)
def test_a_wrong_value_stops_start_up_with_one_line(env, named, expected):
    result = run_gateway(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gateway: {named}")
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[models", "not valid TOML"),
        ('[models.m]\nprovider = "nope"', "models.m.provider: unknown provider 'nope'"),
        ('[providers.p]\ntype = "grpc"', "providers.p: unknown type 'grpc'"),
        ('[providers.p]\nbase_url = "file:///x"', "base_url must be an http(s) URL"),
        ('[providers.p]\napi_key_env = "UNSET_VARIABLE_X"', "UNSET_VARIABLE_X is not set"),
        ('default_provider = "zzz"', "default_provider: unknown provider 'zzz'"),
        ('[models.m]\naliases = "m2"', "models.m.aliases: expected a list, got a string"),
    ],
)
def test_a_wrong_config_file_names_the_key(tmp_path, config, expected):
    path = tmp_path / "gateway.toml"
    path.write_text(config)
    result = run_gateway({"GATEWAY_CONFIG": str(path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert (
        result.stderr.startswith(f"gateway: GATEWAY_CONFIG ({path})")
        or "GATEWAY_CONFIG" in result.stderr
    )
    assert expected in result.stderr


def team_key(key_id: str, secret: str) -> str:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return f'[keys.{key_id}]\nsecret_sha256 = "{digest}"\nrpm = 5\nbudget = {{ amount = 1.0 }}\n'


def test_a_secret_that_is_a_plain_key_and_a_virtual_key_stops_start_up(tmp_path):
    # Before, the plain key won and keys.team-a's limits and budget silently never applied.
    path = tmp_path / "gateway.toml"
    path.write_text(team_key("other", "sk-other") + team_key("team-a", "sk-team-a"))
    for args in ((), ("--check",)):
        result = run_gateway(
            {"GATEWAY_API_KEYS": "sk-old, sk-team-a", "GATEWAY_CONFIG": str(path)}, *args
        )
        assert result.returncode == (1 if args else 2)  # --check says 1 for "would not start"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("gateway: GATEWAY_API_KEYS and keys.team-a ")
        assert "sk-team-a" not in result.stderr  # the secret itself is never repeated
    result = run_gateway({"GATEWAY_API_KEYS": "sk-old", "GATEWAY_CONFIG": str(path)}, "--check")
    assert result.returncode == 0, result.stderr


def test_two_virtual_keys_with_one_secret_stop_start_up(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(team_key("team-a", "sk-shared") + team_key("team-b", "sk-shared"))
    result = run_gateway({"GATEWAY_CONFIG": str(path)}, "--check")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("gateway: keys.team-a and keys.team-b ")


@pytest.mark.parametrize("server", SERVERS)
def test_with_nothing_configured_the_printed_curl_gets_a_mock_answer(server, tmp_path_factory):
    process = start_gateway(tmp_path_factory, server, {})
    try:
        log = process.log()
        assert "built-in mock provider" in log
        assert "GATEWAY_API_KEYS is not set" in log
        command = re.search(r"try: (curl .*)", log).group(1)
        if shutil.which("curl"):
            output = subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=10
            ).stdout
        else:  # replay the printed request without curl
            body = re.search(r"-d '(.*)'$", command).group(1).encode()
            output = raw_request(process.url, "POST", "/v1/chat/completions", body).body.decode()
        assert '"content":"This is a mock response to: Hello!"' in output
    finally:
        process.stop()


@pytest.mark.parametrize("server", SERVERS)
def test_workers_serve_on_one_port_each_with_its_own_process(
    server, upstream_server, tmp_path_factory
):
    env = upstream_env(upstream_server, GATEWAY_WORKERS="2")
    process = start_gateway(tmp_path_factory, server, env)
    try:
        body = b'{"model": "slow:0.05", "messages": [{"role": "user", "content": "x"}]}'

        def one(_: int) -> str:
            response = raw_request(process.url, "POST", "/v1/chat/completions", body)
            assert response.status == 200
            return response.headers["x-request-id"]

        with ThreadPoolExecutor(32) as pool:
            ids = list(pool.map(one, range(200)))
        # Each worker numbers its requests under a prefix of its own: "req_" + 12 hex.
        prefixes = {i[:16] for i in ids}
        assert len(prefixes) == 2, prefixes
    finally:
        process.stop()


def _workers(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task").glob("*/children")
    return {int(child) for path in children for child in path.read_text().split()}


@pytest.mark.parametrize("server", SERVERS)
def test_a_worker_that_dies_is_replaced_and_the_others_serve_on(
    server, upstream_server, tmp_path_factory
):
    env = upstream_env(upstream_server, GATEWAY_WORKERS="2")
    process = start_gateway(tmp_path_factory, server, env)
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "x"}]}'
    try:
        before = _workers(process.process.pid)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while len(_workers(process.process.pid) - {victim}) < 2:
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.1)
        assert victim not in _workers(process.process.pid)
        for _ in range(50):
            assert raw_request(process.url, "POST", "/v1/chat/completions", body).status == 200
        assert process.process.poll() is None
    finally:
        process.stop()


# ------------------------------------------------------------------ command line


def test_help_and_version_answer_and_start_nothing():
    from gateway import __version__

    helped = run_gateway({}, "--help")
    assert helped.returncode == 0
    for flag in ("--host", "--port", "--workers", "--config", "--check", "--version"):
        assert flag in helped.stdout
    versioned = run_gateway({}, "--version")
    assert versioned.returncode == 0
    assert versioned.stdout.strip() == f"gateway {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", __version__)


def test_check_prints_what_would_be_served_and_exits_0(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[providers.demo]\ntype = "mock"\n[models.m1]\nprovider = "demo"\n')
    result = run_gateway({}, "--check", "--config", str(path), "--port", "9999")
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:9999" in result.stdout
    assert "models: m1" in result.stdout
    assert "configuration OK" in result.stdout


def test_check_exits_1_with_the_one_line_on_a_wrong_value():
    result = run_gateway({"GATEWAY_PORT": "abc"}, "--check")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gateway: GATEWAY_PORT: expected an integer from 1 to 65535, got 'abc'"
    ]


@pytest.mark.parametrize("server", SERVERS)
def test_flags_override_the_environment(server, tmp_path_factory):
    from tests.gateway_process import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env={**clean_environ(), "GATEWAY_PORT": "1", "GATEWAY_SERVER": server},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert raw_request(f"http://127.0.0.1:{port}", "GET", "/health").status == 200
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


@pytest.mark.parametrize("server", SERVERS)
def test_a_port_held_by_another_process_stops_start_up_with_one_line(server):
    import socket

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as the servers do
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_gateway({"GATEWAY_PORT": str(port), "GATEWAY_SERVER": server})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"gateway: GATEWAY_PORT: 127.0.0.1:{port} is already in use by another process"
    ]


def test_make_run_installs_only_what_serving_needs(tmp_path):
    dry = subprocess.run(
        ["make", "-n", "run", f"VENV={tmp_path}/venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert installs and all("[dev]" not in line for line in installs), dry.stdout
    assert any("echo" in line for line in dry.stdout.splitlines())  # it says what it does
    tested = subprocess.run(
        ["make", "-n", "test", f"VENV={tmp_path}/venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert any("[dev]" in line for line in tested.stdout.splitlines()), tested.stdout


def test_check_warns_of_a_budget_no_price_can_spend(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[providers.demo]\ntype = "mock"\n[models.m1]\nprovider = "demo"\n'
        f'[keys.team]\nsecret_sha256 = "{"a" * 64}"\nbudget = {{ amount = 5 }}\n'
    )
    result = run_gateway({}, "--check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "key 'team' has a budget, but [prices] has no price for m1" in result.stdout


def test_a_key_table_that_is_no_key_is_refused_naming_it(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(f'[keys.team]\nsecret_sha256 = "{"a" * 64}"\nrpm = 0\n')
    result = run_gateway({"GATEWAY_CONFIG": str(path)}, "--check")
    assert result.returncode == 1
    assert "keys.team.rpm: expected a whole number of at least 1" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bad id"], "key.id: not in the expected form"),
        (["ok", "--rpm", "0"], "key.rpm: expected a whole number of at least 1"),
        (["ok", "--budget", "-5"], "key.budget.amount"),
        (["ok", "--expires", "2020-01-01"], "is in the past"),
    ],
)
def test_keys_create_refuses_a_key_that_could_not_be_used(args, words):
    result = run_gateway({}, "keys", "create", *args)
    assert result.returncode == 1
    assert words in result.stderr


def test_a_redis_password_is_never_printed():
    url = "redis://user:pw-in-userinfo@127.0.0.1:1/0?password=pw-in-query"
    result = run_gateway({"GATEWAY_REDIS_URL": url}, "--check")
    assert result.returncode == 0, result.stderr
    assert "store: redis://***@127.0.0.1:1/0?***" in result.stdout + result.stderr
    wrong = run_gateway({"GATEWAY_REDIS_URL": "http://user:pw-wrong-scheme@127.0.0.1:1"}, "--check")
    assert wrong.returncode == 1 and "GATEWAY_REDIS_URL" in wrong.stderr
    for printed in (result.stdout + result.stderr, wrong.stdout + wrong.stderr):
        assert "pw-" not in printed
