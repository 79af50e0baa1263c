"""``python -m gateway``: configure from the environment, then serve."""

from __future__ import annotations

import contextlib
import logging
import resource
import shlex
import sys

from .app import Gateway
from .config import ConfigError, Settings, build_gateway
from .providers.mock import MOCK_MODELS, MockProvider

logger = logging.getLogger("gateway")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def raise_open_file_limit() -> None:
    """Every open stream holds two sockets; allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def example_curl(settings: Settings, gateway: Gateway) -> str:
    registry = gateway.registry
    if isinstance(registry.default, MockProvider) and registry.is_open:
        model = MOCK_MODELS[0]
    else:
        model = registry.names()[0] if registry.names() else "gpt-4o-mini"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
    parts = ["curl", f"http://{host}:{settings.port}/v1/chat/completions"]
    parts += ["-H", "Content-Type: application/json"]
    line = " ".join(shlex.quote(p) for p in parts)
    if gateway.requires_auth:  # left for the shell to expand: the key is never printed
        line += ' -H "Authorization: Bearer $GATEWAY_KEY"'
    return f"{line} -d {shlex.quote(body)}"


def describe(settings: Settings, gateway: Gateway) -> None:
    registry = gateway.registry
    logger.info(
        "serving on http://%s:%d with %s, %d worker(s)",
        settings.host,
        settings.port,
        settings.server,
        settings.workers,
    )
    for provider in registry.providers():
        logger.info("provider %s", provider.describe())
    if registry.is_open:
        logger.info("every model goes to provider %r", getattr(registry.default, "name", None))
    else:
        logger.info("models: %s", ", ".join(registry.names()))
    if isinstance(registry.default, MockProvider):
        logger.warning(
            "no upstream configured (OPENAI_API_KEY / OPENAI_BASE_URL / GATEWAY_CONFIG): "
            "answering with the built-in mock provider"
        )
    if not gateway.requires_auth:
        logger.warning("GATEWAY_API_KEYS is not set: clients are not authenticated")
    if gateway.hooks.hooks:
        logger.info("hooks: %s", ", ".join(repr(h) for h in gateway.hooks.hooks))
    logger.info("try: %s", example_curl(settings, gateway))


def main() -> int:
    try:
        settings = Settings.from_env()
        gateway = build_gateway(settings)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    raise_open_file_limit()
    describe(settings, gateway)
    if settings.server == "robyn":
        from .servers.robyn import serve
    else:
        from .servers.granian import serve
    # Workers are forked: each gets its own copy of the gateway and starts it on its loop.
    serve(
        lambda: gateway,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        max_concurrency=settings.max_concurrency,
        drain_seconds=settings.drain_seconds,
        log_level=settings.log_level,
    )
    return 0
