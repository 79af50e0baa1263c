"""Configuration: environment variables first, a TOML file for what does not fit.

Every value is checked at start-up; a wrong one stops the gateway with one line that
names the variable (or the file and key) and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .app import Gateway, Limits
from .hooks import load_hook
from .providers import Provider
from .providers.mock import MockProvider
from .providers.openai import DEFAULT_BASE_URL, OpenAIProvider
from .registry import ModelRegistry

T = TypeVar("T")

SERVERS = ("granian", "robyn")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    """Everything the environment says. Field defaults are the documented defaults."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    server: str = "granian"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    api_keys: tuple[str, ...] = ()
    upstream_timeout: float = 600.0
    connect_timeout: float = 10.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_connections: int = 0
    max_concurrency: int = 4096
    hooks: tuple[str, ...] = ()
    log_level: str = "info"
    config_path: str | None = None
    file: dict[str, Any] = field(default_factory=dict, repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)  # for api_key_env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        config_path = env.text("GATEWAY_CONFIG")
        return cls(
            host=env.text("GATEWAY_HOST") or cls.host,
            port=env.number("GATEWAY_PORT", int, cls.port, 1, 65535),
            workers=env.number("GATEWAY_WORKERS", int, cls.workers, 1, 256),
            server=env.choice("GATEWAY_SERVER", SERVERS, cls.server),
            openai_api_key=env.text("OPENAI_API_KEY"),
            openai_base_url=env.url("OPENAI_BASE_URL"),
            api_keys=env.items("GATEWAY_API_KEYS"),
            upstream_timeout=env.seconds("GATEWAY_UPSTREAM_TIMEOUT", cls.upstream_timeout),
            connect_timeout=env.seconds("GATEWAY_CONNECT_TIMEOUT", cls.connect_timeout),
            max_body_bytes=env.number("GATEWAY_MAX_BODY_BYTES", int, cls.max_body_bytes, 1),
            max_connections=env.number("GATEWAY_MAX_CONNECTIONS", int, cls.max_connections, 0),
            max_concurrency=env.number("GATEWAY_MAX_CONCURRENCY", int, cls.max_concurrency, 1),
            hooks=env.items("GATEWAY_HOOKS"),
            log_level=env.choice("GATEWAY_LOG_LEVEL", LOG_LEVELS, cls.log_level),
            config_path=config_path,
            file=_read_file(config_path) if config_path else {},
            environ=env.environ,
        )

    @property
    def limits(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            upstream_timeout=self.upstream_timeout,
            connect_timeout=self.connect_timeout,
            max_connections=self.max_connections,
        )


class _Env:
    """Typed, validated reads of environment variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in (self.text(name) or "").split(",") if item.strip())

    def number(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        low: float | None = None,
        high: float | None = None,
    ) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        what = "an integer" if kind is int else "a number"
        bounds = (
            f" from {low:g} to {high:g}"
            if low is not None and high is not None
            else f" of at least {low:g}"
            if low is not None
            else ""
        )
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected {what}{bounds}, got {raw!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
            raise ConfigError(f"{name}: expected {what}{bounds}, got {raw!r}")
        return value

    def seconds(self, name: str, default: float) -> float:
        return self.number(name, float, default, 0.001)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return raw.lower()

    def url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is not None and not raw.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: expected an http:// or https:// URL, got {raw!r}")
        return raw


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: cannot read {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {path} is not valid TOML: {exc}") from None


def _providers(settings: Settings) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    if settings.openai_api_key or settings.openai_base_url:
        providers["openai"] = OpenAIProvider(
            "openai",
            base_url=settings.openai_base_url or DEFAULT_BASE_URL,
            api_key=settings.openai_api_key,
        )
    table = settings.file.get("providers", {})
    if not isinstance(table, dict):
        raise _file_error(settings, "providers", "expected a table of providers")
    for name, spec in table.items():
        where = f"providers.{name}"
        if not isinstance(spec, dict):
            raise _file_error(settings, where, "expected a table")
        kind = spec.get("type", "openai")
        try:
            if kind == "mock":
                providers[name] = MockProvider(name, chunk_delay=float(spec.get("chunk_delay", 0)))
                continue
            if kind != "openai":
                raise ValueError(f"unknown type {kind!r}; expected 'openai' or 'mock'")
            api_key = spec.get("api_key")
            if "api_key_env" in spec:
                api_key = settings.environ.get(spec["api_key_env"]) or None
                if api_key is None:
                    raise ValueError(f"environment variable {spec['api_key_env']} is not set")
            headers = spec.get("headers", {})
            if not isinstance(headers, dict) or not all(
                isinstance(v, str) for v in headers.values()
            ):
                raise ValueError("headers must be a table of strings")
            base_url = str(spec.get("base_url", DEFAULT_BASE_URL))
            providers[name] = OpenAIProvider(
                name, base_url=base_url, api_key=api_key, headers=headers
            )
        except (TypeError, ValueError) as exc:
            raise _file_error(settings, where, str(exc)) from None
    return providers


def _file_error(settings: Settings, where: str, problem: str) -> ConfigError:
    return ConfigError(f"GATEWAY_CONFIG ({settings.config_path}): {where}: {problem}")


def build_registry(settings: Settings) -> ModelRegistry:
    """Providers and models from the environment and the config file."""
    providers = _providers(settings)
    default_name = settings.file.get("default_provider")
    if default_name is not None:
        if default_name not in providers:
            raise _file_error(settings, "default_provider", f"unknown provider {default_name!r}")
        default: Provider | None = providers[default_name]
    elif "openai" in providers:
        default = providers["openai"]
    elif len(providers) == 1:
        default = next(iter(providers.values()))
    elif not providers:
        default = MockProvider()
    else:
        default = None
    registry = ModelRegistry(default)
    models = settings.file.get("models", {})
    if not isinstance(models, dict):
        raise _file_error(settings, "models", "expected a table of models")
    for name, spec in models.items():
        where = f"models.{name}"
        if not isinstance(spec, dict):
            raise _file_error(settings, where, "expected a table")
        provider_name = spec.get("provider", default_name)
        if provider_name is None and default is not None:
            provider = default
        elif provider_name in providers:
            provider = providers[provider_name]
        else:
            raise _file_error(settings, f"{where}.provider", f"unknown provider {provider_name!r}")
        upstream = spec.get("model")
        aliases = spec.get("aliases", [])
        if upstream is not None and not isinstance(upstream, str):
            raise _file_error(settings, f"{where}.model", "expected a string")
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _file_error(settings, f"{where}.aliases", "expected a list of strings")
        try:
            registry.add(name, provider, upstream, aliases)
        except ValueError as exc:
            raise _file_error(settings, where, str(exc)) from None
    return registry


def build_gateway(settings: Settings) -> Gateway:
    """The gateway the settings describe, hooks loaded by import path."""
    hook_paths = [*settings.hooks, *settings.file.get("hooks", [])]
    hooks = []
    for path in hook_paths:
        try:
            hooks.append(load_hook(path))
        except Exception as exc:
            raise ConfigError(f"GATEWAY_HOOKS: cannot load {path!r}: {exc}") from None
    registry = build_registry(settings)
    try:
        return Gateway(registry, hooks=hooks, api_keys=settings.api_keys, limits=settings.limits)
    except TypeError as exc:  # a hook that implements no event
        raise ConfigError(f"GATEWAY_HOOKS: {exc}") from None
