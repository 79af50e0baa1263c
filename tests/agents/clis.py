"""Run the real Codex CLI or Claude Code once against a gateway, configured as a user would.

Each run gets a fresh home in a temporary folder (nothing read from or left in the
developer's own), a bounded time, stdin from /dev/null (else ``codex exec`` waits for
more input), and few retries: a failing gateway fails the test in seconds instead of
minutes of back-off. The CLIs come from ``tests/agents/install.sh`` (``make test`` runs
it); a missing one is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".agents" / "node_modules" / ".bin"
CODEX = BIN / "codex"
CLAUDE = BIN / "claude"
TIMEOUT = 60.0
CLIS = ("codex", "claude")

# The variable the Codex config names in env_key: Codex sends it as a Bearer token.
CODEX_KEY_VARIABLE = "GATEWAY_KEY"

# What the developer's environment may hold that would steer a CLI elsewhere.
_FOREIGN = ("OPENAI_", "ANTHROPIC_", "CODEX_", "CLAUDE_", "GATEWAY_")


class MissingCLI(RuntimeError):
    """An agent CLI is not installed: a test that needs it must fail, not skip."""


@dataclass(frozen=True)
class Run:
    """What one CLI run left: its exit code (negative: killed by that signal) and output."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def __str__(self) -> str:
        state = "timed out" if self.timed_out else f"exit {self.returncode}"
        out, err = self.stdout[-3000:], self.stderr[-3000:]
        return f"{state}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


def codex_config(base_url: str, model: str = "mock-gpt") -> str:
    """``$CODEX_HOME/config.toml`` for the gateway, as docs/agents.md shows it.

    ``web_search = "disabled"`` drops the built-in ``web_search`` tool Codex offers by
    default: the gateway cannot run it for a model it translates, and refuses it.
    """
    return (
        'model_provider = "gateway"\n'
        f'model = "{model}"\n'
        'web_search = "disabled"\n'
        "\n"
        "[model_providers.gateway]\n"
        'name = "Gateway"\n'
        f'base_url = "{base_url}/v1"\n'
        f'env_key = "{CODEX_KEY_VARIABLE}"\n'
        'wire_api = "responses"\n'
    )


def claude_env(base_url: str, key: str) -> dict[str, str]:
    """The variables that point Claude Code at the gateway, as docs/agents.md shows them.

    ``ANTHROPIC_API_KEY`` goes out as ``x-api-key``, which the gateway reads as the
    client key; the DISABLE_* variables keep the CLI from calling home.
    """
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": key,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def require(binary: Path) -> Path:
    if not os.access(binary, os.X_OK):
        raise MissingCLI(f"{binary} is not installed: run tests/agents/install.sh (make test does)")
    return binary


def base_environ(home: Path) -> dict[str, str]:
    """This environment without anything that would steer a CLI, with ``home`` as HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env["HOME"] = str(home)
    return env


def run_codex(base_url: str, key: str, prompt: str, tmp: Path, model: str = "mock-gpt") -> Run:
    """``codex exec`` once, with the documented config file and one try per request."""
    home, work = _folders(tmp)
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(codex_config(base_url, model))
    env = {**base_environ(home), "CODEX_HOME": str(codex_home), CODEX_KEY_VARIABLE: key}
    command = [
        str(require(CODEX)),
        "exec",
        "--skip-git-repo-check",  # the work folder is no git repository
        "--ephemeral",  # no session files
        "--strict-config",  # a config key this version does not know is an error
        # No sandbox: the bundled bubblewrap needs user namespaces, which containers may
        # not allow, and the sandbox is no part of what these tests are about.
        "--sandbox",
        "danger-full-access",
        "-c",
        "model_providers.gateway.request_max_retries=0",
        "-c",
        "model_providers.gateway.stream_max_retries=0",
        prompt,
    ]
    return _run(command, env, work)


def run_claude(base_url: str, key: str, prompt: str, tmp: Path, model: str | None = None) -> Run:
    """``claude -p`` once, allowed to run Bash (as root too), with one retry at most."""
    home, work = _folders(tmp)
    env = {**base_environ(home), **claude_env(base_url, key), "CLAUDE_CODE_MAX_RETRIES": "1"}
    command = [
        str(require(CLAUDE)),
        "-p",
        "--no-session-persistence",
        # The `=` form: the option takes many values and would swallow the prompt.
        "--allowedTools=Bash",
        *(["--model", model] if model else []),
        prompt,
    ]
    return _run(command, env, work)


def run_cli(cli: str, base_url: str, key: str, prompt: str, tmp: Path) -> Run:
    runner = {"codex": run_codex, "claude": run_claude}[cli]
    return runner(base_url, key, prompt, tmp)


def _folders(tmp: Path) -> tuple[Path, Path]:
    home, work = tmp / "home", tmp / "work"
    home.mkdir(parents=True)
    work.mkdir()
    return home, work


def _run(command: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run in a session of its own, so that on timeout the whole tree is killed: the
    npm launcher of Codex starts the native binary as a child, which starts shells."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything the CLI left running
    return Run(process.returncode, stdout, stderr, timed_out)
