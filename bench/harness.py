"""What ``bench.cost`` and ``bench.timeline`` share: the targets, the mock, a plain client.

The targets are a table: a name, how to start it, the environment it gets on top of the
common one, and the key a client presents. Add a row to measure a variant (for example
the gateway with its access log off); every benchmark that takes targets by name sees it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench.payloads import CHAT, Api, last_event
from bench.processes import PYTHON, ROOT, Process, free_port

__all__ = ["PYTHON", "ROOT", "Process", "free_port"]

GATEWAY_HOOKS = "bench.hooks:TagRequest,bench.hooks:CountEvents"
KEYS_CONFIG = str(Path(__file__).resolve().parent / "keys.toml")
DONE = b"data: [DONE]\n\n"

# The model the benchmarks ask for, served by an Anthropic provider on the mock (which
# answers /v1/messages in Anthropic's events): every answer is translated.
ANTHROPIC_CONFIG = """
[providers.anthropic]
type = "anthropic"
base_url = "{mock_url}"
api_key = "sk-ant-bench"

[models.bench-model]
provider = "anthropic"
"""

# The model as a Claude model on Bedrock (the mock answers InvokeModelWithResponseStream
# with Anthropic's events in AWS's event-stream framing): every request is SigV4-signed
# (fake keys: the mock does not check them), every answer translated.
BEDROCK_CONFIG = """
[providers.bedrock]
type = "bedrock"
region = "us-east-1"
base_url = "{mock_url}"
access_key_id_env = "BEDROCK_BENCH_KEY_ID"
secret_access_key_env = "BEDROCK_BENCH_SECRET"

[models.bench-model]
provider = "bedrock"
model = "anthropic.claude-bench-v1:0"
"""
BEDROCK_KEYS = {
    "BEDROCK_BENCH_KEY_ID": "AKIAFAKEBENCH0000001",
    "BEDROCK_BENCH_SECRET": "fake/secret/for/the/bench/only",
}

# The model on an OpenAI-compatible provider (the mock) that serves the Responses API
# itself: /v1/responses passes through untouched. Without it ("false"), the gateway
# translates a Responses request to chat completions and the chat stream back.
RESPONSES_CONFIG = """
[providers.mock]
type = "openai"
base_url = "{mock_url}/v1"
api_key = "sk-bench"
responses = %s

[models.bench-model]
provider = "mock"
"""


@dataclass(frozen=True)
class Target:
    """A server to measure: the bare forwarder (``ceiling``) or the gateway with some env."""

    name: str
    kind: str  # "ceiling" or "gateway"
    env: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None  # sent as "Authorization: Bearer <key>"
    redis: bool = False  # needs a redis-server: GATEWAY_REDIS_URL is added
    config: str | None = None  # a config file for the gateway; "{mock_url}" is filled in
    args: tuple[str, ...] = ()  # more arguments for the ceiling's command
    module: str = "bench.ceiling"  # the ceiling's module

    def command(self, port: int, mock_url: str) -> list[str]:
        if self.kind == "ceiling":
            return [
                *(PYTHON, "-m", self.module, "--workers", "1"),
                *("--port", str(port), "--upstream", f"{mock_url}/v1"),
                *self.args,
            ]
        return [PYTHON, "-m", "gateway"]

    def environ(self, port: int, mock_url: str, **extra: str) -> dict[str, str]:
        if self.kind == "ceiling":
            return common_env(**self.env, **extra)
        if self.config is not None:
            path = Path(tempfile.gettempdir()) / f"bench-{self.name}-{port}.toml"
            path.write_text(self.config.replace("{mock_url}", mock_url))
            extra = {"GATEWAY_CONFIG": str(path), **extra}
        return common_env(
            OPENAI_BASE_URL=f"{mock_url}/v1",
            OPENAI_API_KEY="sk-bench",
            GATEWAY_PORT=str(port),
            GATEWAY_WORKERS="1",
            GATEWAY_LOG_LEVEL="warning",
            **self.env,
            **extra,
        )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("ceiling", "ceiling"),
        # The floor: Granian, an asyncio.Protocol upstream client with httptools' parser and
        # a list of idle connections, forwarding bytes (bench/ceiling_raw.py).
        Target("ceiling-raw", "ceiling", module="bench.ceiling_raw"),
        # The same forwarder on the gateway's short path to the pool, not session.post:
        # what the gateway's features cost over the HTTP client it now uses.
        Target("ceiling-pooled", "ceiling", args=("--client", "pooled")),
        Target("gateway", "gateway"),
        Target(
            "gateway-hooks",
            "gateway",
            {"GATEWAY_API_KEYS": "bench-key", "GATEWAY_HOOKS": GATEWAY_HOOKS},
            key="bench-key",
        ),
        # Logs and metrics off: what they cost is the difference with "gateway".
        Target("gateway-quiet", "gateway", {"GATEWAY_ACCESS_LOG": "off", "GATEWAY_METRICS": "off"}),
        # A virtual key with rate limits, counted in memory, then on Redis.
        Target("gateway-keys", "gateway", {"GATEWAY_CONFIG": KEYS_CONFIG}, key="bench-key"),
        # The same, without the x-ratelimit-* headers: what the six headers cost.
        Target(
            "gateway-keys-headless",
            "gateway",
            {"GATEWAY_CONFIG": KEYS_CONFIG, "GATEWAY_RATE_LIMIT_HEADERS": "off"},
            key="bench-key",
        ),
        Target(
            "gateway-redis", "gateway", {"GATEWAY_CONFIG": KEYS_CONFIG}, key="bench-key", redis=True
        ),
        Target("gateway-anthropic", "gateway", config=ANTHROPIC_CONFIG),
        Target("gateway-bedrock", "gateway", BEDROCK_KEYS, config=BEDROCK_CONFIG),
        Target("gateway-responses", "gateway", config=RESPONSES_CONFIG % "true"),
        Target("gateway-responses-translated", "gateway", config=RESPONSES_CONFIG % "false"),
    )
}


def common_env(**extra: str) -> dict[str, str]:
    """This environment less any GATEWAY_/OPENAI_/BENCH_ variable, the work tree importable,
    and a fixed hash seed (str hashes, so dict and set layouts, are the same every run)."""
    keep = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "BENCH_"))
    }
    return {**keep, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", **extra}


def wait_port(port: int, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited early; see its log")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not listen on port {port} within {timeout:g} s")


@contextlib.contextmanager
def mock_upstream(cores: str, log: Path, **env: str) -> Iterator[tuple[Process, str]]:
    """The mock upstream, running until the block ends."""
    port = free_port()
    command = [PYTHON, "-m", "bench.mock_upstream", "--port", str(port)]
    mock = Process("mock", command, cores, common_env(**env), log)
    try:
        wait_port(port, mock, 30)
        yield mock, f"http://127.0.0.1:{port}"
    finally:
        mock.stop()


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM ends the block like Ctrl-C does, so every ``finally`` stops its processes."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def redis_server(log: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, its URL, until the block ends."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs it)")
    port = free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    server = Process(
        "redis", command, ",".join(map(str, sorted(os.sched_getaffinity(0)))), common_env(), log
    )
    try:
        wait_port(port, server, 10)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


class Client:
    """One keep-alive connection, one request at a time (like an SDK, without its cost)."""

    def __init__(self, port: int, key: str | None = None, timeout: float = 60) -> None:
        self.port = port
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, body: bytes, stream: bool, api: Api = CHAT) -> bytes:
        """Send a request (chat, or ``api``'s) and read the whole answer; raise unless it
        is whole and 200: a stream must end with the API's last event."""
        self.connection.request("POST", api.path, body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        if stream and not (data.endswith(b"\n\n") and last_event(data).startswith(api.last_event)):
            raise RuntimeError(
                f"stream ended without {api.last_event.strip().decode()!r}: {data[-300:]!r}"
            )
        return data

    def settimeout(self, seconds: float) -> None:
        self.connection.timeout = seconds
        if self.connection.sock is not None:
            self.connection.sock.settimeout(seconds)

    def close(self) -> None:
        self.connection.close()
