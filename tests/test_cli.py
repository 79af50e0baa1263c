"""``python -m gateway`` as an operator meets it: start-up checks, the mock, workers."""

from __future__ import annotations

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


def run_gateway(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway"],
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
        ('[models.m]\naliases = "m2"', "models.m.aliases: expected a list of strings"),
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
