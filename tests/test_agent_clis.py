"""The real agent CLIs as acceptance tests: ``codex exec`` (the Responses API) and
``claude -p`` (the Messages API) through ``python -m gateway`` on its built-in mock, on
both server adapters — a question answered, and one tool call's round trip.

The CLIs are pinned and installed by ``tests/agents/install.sh`` (``make test`` runs it);
a missing one fails these tests. Each CLI run takes about a second; the gateway starts
once per server adapter.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.access.auth import key_id
from tests.agents.clis import CLIS, Run, claude_env, codex_config, run_cli
from tests.conftest import SERVERS, start_gateway
from tests.gateway_process import ROOT, GatewayProcess

KEY = "sk-gateway-agent-test"
QUESTION = "What is the capital of France?"
# `call NAME {json}` makes the mock call that tool; the tool's result comes back as
# "The tool said: <result>". The tools are the CLIs' own shell tools.
TOOL_PROMPTS = {
    "codex": 'call exec_command {"cmd": "echo hello-from-codex"}',
    "claude": 'call Bash {"command": "echo hello-from-claude"}',
}
TOOL_OUTPUT = {"codex": "hello-from-codex", "claude": "hello-from-claude"}
# The gateway's endpoint for each CLI's requests, as the access log names it.
ENDPOINTS = {"codex": "responses", "claude": "messages"}


@dataclass
class AgentGateway:
    """A gateway with client keys on, and the access log it writes to a file."""

    process: GatewayProcess
    access_log: Path

    def records_after(self, offset: int, count: int, timeout: float = 5.0) -> list[dict]:
        """The access-log records from ``offset`` on, once ``count`` model requests are
        there (the log is written off the loop: it may trail the answer by a moment)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.access_log.open("rb") as log:
                log.seek(offset)
                records = [json.loads(line) for line in log.read().splitlines() if line]
            models = [r for r in records if r["endpoint"]]
            if len(models) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0


@pytest.fixture(scope="module", params=SERVERS)
def agent_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentGateway]:
    """``python -m gateway`` with nothing configured but a client key: the mock answers."""
    access_log = tmp_path_factory.mktemp(f"access-{request.param}") / "access.log"
    env = {"GATEWAY_API_KEYS": KEY, "GATEWAY_ACCESS_LOG": str(access_log)}
    process = start_gateway(tmp_path_factory, request.param, env)
    yield AgentGateway(process, access_log)
    process.stop()


@pytest.fixture
def gateway_process(agent_gateway: AgentGateway) -> GatewayProcess:
    """The gateway's process as a test's argument: on a failure, conftest shows its log."""
    return agent_gateway.process


def run_through(
    gateway: AgentGateway, cli: str, prompt: str, tmp: Path, requests: int
) -> tuple[Run, list]:
    """One CLI run through the gateway, and the access-log records it left (waiting for
    the ``requests`` model requests the run should have made)."""
    offset = gateway.offset()
    run = run_cli(cli, gateway.process.url, KEY, prompt, tmp)
    return run, gateway.records_after(offset, count=requests)


def check_records(records: list[dict], cli: str, requests: int) -> None:
    """Every model request of the run was the CLI's endpoint, answered, under the key.

    Claude Code also sends ``HEAD /`` without a key first (a reachability probe): it
    gets a 401 and carries on, so records without an endpoint are not counted.
    """
    models = [r for r in records if r["endpoint"]]
    summary = [(r["method"], r["path"], r["endpoint"], r["status"]) for r in records]
    assert len(models) == requests, summary
    for record in models:
        assert record["endpoint"] == ENDPOINTS[cli], summary
        assert record["status"] == 200, summary
        assert record["key"] == key_id(KEY), summary
        assert record["stream"] is True, summary


@pytest.mark.parametrize("cli", CLIS)
def test_a_question_is_answered(agent_gateway, gateway_process, cli, tmp_path):
    run, records = run_through(agent_gateway, cli, QUESTION, tmp_path, requests=1)
    assert run.returncode == 0, str(run)
    # Codex sends the question as the last user message; Claude Code puts a
    # <system-reminder> block before it in the same message, and the mock quotes it all.
    expected = f"This is a mock response to: {QUESTION}" if cli == "codex" else "This is a mock"
    assert run.stdout.startswith(expected), str(run)
    check_records(records, cli, requests=1)


@pytest.mark.parametrize("cli", CLIS)
def test_a_tool_call_makes_the_round_trip(agent_gateway, gateway_process, cli, tmp_path):
    run, records = run_through(agent_gateway, cli, TOOL_PROMPTS[cli], tmp_path, requests=2)
    assert run.returncode == 0, str(run)
    # The mock answers "The tool said: <result>" only to a tool's result: the command's
    # output after it proves the CLI ran the call and sent its result back.
    _, said, result = run.stdout.partition("The tool said:")
    assert said, str(run)
    assert TOOL_OUTPUT[cli] in result, str(run)
    check_records(records, cli, requests=2)


def test_the_documented_settings_are_the_tested_ones():
    """docs/agents.md shows the Codex config and Claude Code variables these tests use."""
    page = (ROOT / "docs" / "agents.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    config = codex_config("http://127.0.0.1:8080")
    assert ("ini", config) in blocks, config
    variables = "\n".join(text for language, text in blocks if language == "sh")
    for name, value in claude_env("http://127.0.0.1:8080", "my-gateway-key").items():
        assert f"{name}={value}" in variables, name
