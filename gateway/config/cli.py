"""``python -m gateway``: configure from the environment (and flags), then serve."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import ipaddress
import logging
import os
import resource
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence

from .. import __version__
from ..core.app import Gateway
from ..observability.logs import configure_logging
from ..observability.metrics import Metrics, MetricsServer
from ..providers.mock import MOCK_MODELS, MockProvider
from . import keys_cli
from .settings import ConfigError, Settings, build_gateway

logger = logging.getLogger("gateway")

# Flags override these variables; everything else is read from the environment.
FLAG_VARIABLES = {
    "host": "GATEWAY_HOST",
    "port": "GATEWAY_PORT",
    "workers": "GATEWAY_WORKERS",
    "config": "GATEWAY_CONFIG",
    "server": "GATEWAY_SERVER",
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="A fast, programmable, OpenAI-compatible AI gateway. Configured by "
        "environment variables (see the README); these flags override them.",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    parser.add_argument("--host", help="listen address (GATEWAY_HOST, default 127.0.0.1)")
    parser.add_argument("--port", help="listen port (GATEWAY_PORT, default 8080)")
    parser.add_argument("--workers", help="worker processes (GATEWAY_WORKERS, default 1)")
    parser.add_argument("--server", help="granian or robyn (GATEWAY_SERVER, default granian)")
    parser.add_argument("--config", metavar="PATH", help="config file (GATEWAY_CONFIG)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the environment and the config file, print what would be served, "
        "and exit: 0 when all is well, 1 when not",
    )
    keys_cli.add_parser(parser.add_subparsers(dest="command", metavar="{keys}"))
    return parser


def raise_open_file_limit() -> None:
    """Every open stream holds two sockets; allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def listen_address(host: str, port: int) -> tuple[int, int, int, tuple[object, ...]]:
    """The socket address ``host`` names, or the one line that says why it names none."""
    if all(part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"GATEWAY_HOST: {host!r} is not a valid IPv4 address") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"GATEWAY_HOST: cannot listen on {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    return family, kind, proto, address


def check_listen_address(host: str, port: int, port_variable: str = "GATEWAY_PORT") -> None:
    """Fail now, in one line, if the address cannot be listened on or another process
    holds the port. (The servers share a port between their own workers, and would
    silently share it with any other process that asked the same way.)"""
    family, kind, proto, address = listen_address(host, port)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{port_variable}: {host}:{port} is already in use by another process"
                ) from None
            raise ConfigError(
                f"GATEWAY_HOST: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None


def example_curl(settings: Settings, gateway: Gateway) -> str:
    """A curl line that works as pasted (with the key variable it names, when keys are on)."""
    registry = gateway.registry
    if isinstance(registry.default, MockProvider) and registry.is_open:
        model = MOCK_MODELS[0]
    else:
        # A model the mock serves, when there is one: its answer needs no upstream key.
        names = registry.names()
        mocked = [n for n in names if type(registry.resolve(n).provider) is MockProvider]
        model = (mocked or names or ["gpt-4o-mini"])[0]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
    parts = ["curl", f"http://{host}:{settings.port}/v1/chat/completions"]
    parts += ["-H", "Content-Type: application/json"]
    line = " ".join(shlex.quote(p) for p in parts)
    if gateway.requires_auth:  # the key is never printed: the shell fills it in
        line += ' -H "Authorization: Bearer $GATEWAY_KEY"'
    return f"{line} -d {shlex.quote(body)}"


def describe(settings: Settings, gateway: Gateway, say: logging.Logger | None = None) -> None:
    say = say or logger
    registry = gateway.registry
    say.info(
        "serving on http://%s:%d with %s, %d worker(s)",
        settings.host,
        settings.port,
        settings.server,
        settings.workers,
    )
    for provider in registry.providers():
        say.info("provider %s", provider.describe())
    if registry.is_open:
        say.info("every model goes to provider %r", getattr(registry.default, "name", None))
    else:
        say.info("models: %s", ", ".join(registry.names()))
    if type(registry.default) is MockProvider and not settings.config_path:
        say.warning(
            "no upstream configured (OPENAI_API_KEY / OPENAI_BASE_URL / GATEWAY_CONFIG): "
            "answering with the built-in mock provider"
        )
    if not gateway.requires_auth:
        say.warning("GATEWAY_API_KEYS is not set: clients are not authenticated")
    if gateway.hooks.hooks:
        say.info("hooks: %s", ", ".join(_named(h) for h in gateway.hooks.hooks))
    say.info("store: %s", redacted(settings.redis_url) if settings.redis_url else "in memory")
    if gateway.tracer is not None:
        say.info("tracing: OpenTelemetry spans by OTLP/HTTP")
    for warning in budget_warnings(gateway):
        say.warning("%s", warning)
    if gateway.requires_auth:
        say.info(
            "try (with GATEWAY_KEY set to one of your keys): %s", example_curl(settings, gateway)
        )
    else:
        say.info("try: %s", example_curl(settings, gateway))


def _named(hook: object) -> str:
    """A hook as the start-up log names it: its own words, or its class's path."""
    if type(hook).__repr__ is not object.__repr__:
        return repr(hook)
    return f"{type(hook).__module__}.{type(hook).__qualname__}"


def redacted(url: str) -> str:
    """A Redis URL without its password: the user info and the query (``?password=``)."""
    scheme, _, rest = url.partition("://")
    _, at, rest = rest.rpartition("@")
    where, query, _ = rest.partition("?")
    return f"{scheme}://{'***@' if at else ''}{where}{'?***' if query else ''}"


def budget_warnings(gateway: Gateway) -> list[str]:
    """Budgets that can never run out: their keys' models have no price."""
    access = gateway.access
    if access is None:
        return []
    prices = gateway.prices.table
    warnings = []
    names = gateway.registry.names()
    for key in access.config_keys.values():
        if key.budget is None:
            continue
        unpriced = [m for m in names if key.allows(m) and m not in prices]
        if not prices or unpriced:
            which = ", ".join(unpriced[:5]) or "any model (the table is empty)"
            warnings.append(
                f"key {key.id!r} has a budget, but [prices] has no price for {which}: "
                "what those models cost is not counted against it"
            )
    if access.shared and not prices:
        warnings.append(
            "keys in Redis may have budgets, but [prices] is empty: spend is not counted"
        )
    return warnings


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    environ = dict(os.environ)
    for flag, variable in FLAG_VARIABLES.items():
        value = getattr(args, flag)
        if value is not None:
            environ[variable] = value
    if args.command == "keys":
        try:
            settings = Settings.from_env(environ)
        except ConfigError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 1
        return keys_cli.run(args, settings)
    metrics_directory = None
    try:
        settings = Settings.from_env(environ)
        listen_address(settings.host, settings.port)  # (whether the port is free: at start)
        if (settings.metrics or settings.admin_key) and not args.check:
            # Made before the workers start, shared by them, removed when the gateway exits.
            metrics_directory = tempfile.mkdtemp(prefix="gateway-metrics-")
            atexit.register(shutil.rmtree, metrics_directory, True)
        gateway = build_gateway(settings, metrics_directory)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1 if args.check else 2
    if args.check:
        check = logging.getLogger("gateway.check")
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        check.handlers[:] = [handler]
        check.setLevel(logging.INFO)
        check.propagate = False
        describe(settings, gateway, check)
        print("configuration OK")
        return 0
    try:
        check_listen_address(settings.host, settings.port)
        if settings.metrics_port is not None:
            check_listen_address(settings.host, settings.metrics_port, "GATEWAY_METRICS_PORT")
        if settings.admin_port is not None:
            check_listen_address(settings.host, settings.admin_port, "GATEWAY_ADMIN_PORT")
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    raise_open_file_limit()
    describe(settings, gateway)
    metrics = next((h for h in gateway.hooks.hooks if isinstance(h, Metrics)), None)
    if settings.metrics_port is not None and metrics is not None:
        MetricsServer(settings.host, settings.metrics_port, metrics.render_directory).start()
        logger.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    if settings.admin_key is not None:
        where = f"{settings.host}:{settings.admin_port or settings.port}"
        logger.info("admin API on http://%s/admin/, console on http://%s/console/", where, where)
    if settings.server == "robyn":
        from ..servers.robyn import serve
    else:
        from ..servers.granian import serve
    # Workers are forked: each gets its own copy of the gateway and starts it on its loop.
    serve(
        lambda: gateway,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        max_concurrency=settings.max_concurrency,
        drain_seconds=settings.drain_seconds,
        log_level=settings.log_level,
        log_format=settings.log_format,
        max_header_bytes=settings.max_header_bytes,
    )
    return 0
