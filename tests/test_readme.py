"""The README and the pages of docs/, tried as written: their commands and code run as
pasted, and do what they say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import Gateway, MockProvider, Request, StreamingResponse
from gateway.config.settings import Settings, build_gateway
from tests.conftest import start_gateway
from tests.gateway_process import ROOT, GatewayProcess, clean_environ

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = "\n".join(page.read_text() for page in PAGES)
README_URL = "http://127.0.0.1:8080"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def readme_block(marker: str, language: str = "python") -> str:
    """The code block of the README that contains ``marker``."""
    return next(block for block in blocks(language) if marker in block)


@pytest.fixture(scope="module")
def mock_gateway(tmp_path_factory) -> Iterator[GatewayProcess]:
    """The gateway as `make run` starts it with nothing configured."""
    process = start_gateway(tmp_path_factory, "granian", {})
    yield process
    process.stop()


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**clean_environ(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_curl_command_runs_as_pasted(mock_gateway):
    commands = [b for b in blocks("sh") if b.lstrip().startswith("curl ")]
    assert commands
    for command in commands:
        result = subprocess.run(
            command.replace(README_URL, mock_gateway.url),
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["choices"][0]["message"]["content"] == "This is a mock response to: Hello!"


def test_the_sdk_example_runs_as_pasted(mock_gateway, tmp_path):
    code = readme_block("from openai import OpenAI").replace(README_URL, mock_gateway.url)
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["This is a mock response to: Hello!"] * 2


def test_the_anthropic_sdk_example_runs_as_pasted(mock_gateway, tmp_path):
    code = readme_block("import anthropic").replace(README_URL, mock_gateway.url)
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["This is a mock response to: Hello!"] * 2


def test_the_key_commands_run_as_pasted(redis_server):
    redis_server.command("FLUSHALL")
    block = readme_block("python -m gateway keys create", "sh")
    for line in block.splitlines():
        command = line.split("#")[0].strip()
        if not command:
            continue
        result = subprocess.run(
            command,
            shell=True,
            cwd=ROOT,
            env={
                **clean_environ(),
                "GATEWAY_REDIS_URL": redis_server.url,
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, (command, result.stderr)
    assert "revoked" in result.stdout


async def test_the_own_provider_type_example(tmp_path, monkeypatch):
    (tmp_path / "myproviders.py").write_text(readme_block("class ShoutingProvider"))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "gateway.toml"
    config.write_text(
        'hooks = ["myproviders:Loaded"]\n'
        '[providers.loud]\ntype = "shouting"\nexclamations = 3\n'
        '[models.m]\nprovider = "loud"\n'
    )
    env = {"GATEWAY_CONFIG": str(config), "GATEWAY_ACCESS_LOG": "off"}
    gateway = build_gateway(Settings.from_env(env))
    async with gateway:
        response = await gateway.handle(chat("m", "unused"))
    assert b"This is a MOCK!!! response" in response.body


def test_the_embedding_example_runs_as_pasted(tmp_path):
    result = run_python(readme_block("async with app"), tmp_path)
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition(" ")
    assert status == "200"
    assert json.loads(body)["choices"][0]["message"]["content"].endswith("hi")


def test_the_command_line_examples_that_do_not_serve_run(tmp_path):
    block = readme_block("python -m gateway --check", "sh")
    for line in block.splitlines():
        command = line.split("#")[0].strip()
        if not command.startswith("python -m gateway") or "--host" in command:
            continue  # the last line starts a server
        result = subprocess.run(
            [sys.executable, *command.split()[1:]],
            cwd=ROOT,
            env=clean_environ(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, (command, result.stderr)


def test_every_toml_block_is_a_config_the_gateway_accepts(tmp_path):
    env = {
        "OPENAI_API_KEY": "sk-test",
        "AZURE_OPENAI_API_KEY": "azure-test",
        "ANTHROPIC_API_KEY": "anthropic-test",
        "GEMINI_API_KEY": "gemini-test",
        "VERTEX_ACCESS_TOKEN": "vertex-test",
        "GATEWAY_ACCESS_LOG": "off",
    }
    configs = blocks("toml")
    assert configs
    for number, text in enumerate(configs):
        tomllib.loads(text)  # valid TOML, as pasted
        path = tmp_path / f"block{number}.toml"
        # A block may show one part of a file: give it the providers it names.
        needed = set(re.findall(r'provider = "(\w+)"', text)) - set(
            re.findall(r"\[providers\.(\w+)\]", text)
        )
        extra = "".join(f'\n[providers.{name}]\ntype = "mock"\n' for name in needed - {"openai"})
        path.write_text(text + extra)
        models = set(re.findall(r"\[models\.([\w.-]+?)\]", text))
        fallbacks = set(
            re.findall(r'"([\w.-]+)"', " ".join(re.findall(r"fallbacks = \[.*\]", text)))
        )
        missing = fallbacks - models
        if missing:
            path.write_text(
                path.read_text()
                + "".join(f'\n[models."{m}"]\nprovider = "openai"\n' for m in sorted(missing))
            )
        build_gateway(Settings.from_env({**env, "GATEWAY_CONFIG": str(path)}))


def chat(model: str, key: str, stream: bool = False) -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    return Request("POST", "/v1/chat/completions", "", headers, json.dumps(body).encode())


async def test_the_team_policy_hook_example():
    namespace: dict[str, object] = {}
    exec(readme_block("class TeamPolicy"), namespace)
    policy = namespace["TeamPolicy"]()
    counted: list[int] = []

    class Observer:  # runs after the policy: sees what it left in ctx.metadata
        def on_chunk(self, ctx, event):
            if event.is_done:
                counted.append(ctx.metadata.get("chars", 0))

    async with Gateway(MockProvider(), hooks=[policy, Observer()]) as gateway:
        stranger = await gateway.handle(chat("gpt-4o-mini", "nobody"))
        refused = await gateway.handle(chat("gpt-4o", "key-support"))
        allowed = await gateway.handle(chat("gpt-4o-mini", "key-support"))
        streamed = await gateway.handle(chat("gpt-4o", "key-research", stream=True))
        assert isinstance(streamed, StreamingResponse)
        body = b"".join([chunk async for chunk in streamed.iterate()])
    assert stranger.status == 401
    assert refused.status == 403
    assert json.loads(refused.body)["error"]["message"] == "support may use gpt-4o-mini only"
    assert allowed.status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    assert counted == [len("This is a mock response to: hi")]


def test_the_printed_curl_line_with_keys_on_works_with_the_variable_it_names(
    tmp_path_factory,
):
    process = start_gateway(tmp_path_factory, "granian", {"GATEWAY_API_KEYS": "k-123"})
    try:
        line = re.search(
            r"try \(with GATEWAY_KEY set to one of your keys\): (curl .*)", process.log()
        )
        assert line, process.log()
        result = subprocess.run(
            line.group(1),
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GATEWAY_KEY": "k-123"},
        )
    finally:
        process.stop()
    assert json.loads(result.stdout)["choices"][0]["message"]["content"].startswith("This is")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown page's headings, as GitHub makes them."""
    found, in_code = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower())
            found.add(title.replace(" ", "-"))
    return found


def test_every_link_between_pages_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), (page.name, target)
            if anchor:
                assert anchor in anchors(linked.read_text()), (page.name, target)


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
