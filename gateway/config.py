"""Configuration: environment variables first, a TOML file for what does not fit.

Every value is checked at start-up; a wrong one stops the gateway with one line that
names the variable (or the file and key) and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .app import Gateway, Limits
from .balancing import Deployment
from .hooks import load_hook
from .policy import CONNECTION, TIMEOUT, Retry, RoutingDefaults, Timeouts
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
    idle_timeout: float = 300.0
    total_timeout: float = 900.0
    retries: int = 2
    drain_seconds: float = 30.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    stream_usage: bool = True
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
            api_keys=env.keys("GATEWAY_API_KEYS"),
            upstream_timeout=env.seconds("GATEWAY_UPSTREAM_TIMEOUT", cls.upstream_timeout),
            connect_timeout=env.seconds("GATEWAY_CONNECT_TIMEOUT", cls.connect_timeout),
            idle_timeout=env.seconds("GATEWAY_IDLE_TIMEOUT", cls.idle_timeout),
            total_timeout=env.seconds("GATEWAY_TOTAL_TIMEOUT", cls.total_timeout),
            retries=env.number("GATEWAY_RETRIES", int, cls.retries, 0, 20),
            drain_seconds=env.number("GATEWAY_DRAIN_SECONDS", float, cls.drain_seconds, 0),
            max_body_bytes=env.number("GATEWAY_MAX_BODY_BYTES", int, cls.max_body_bytes, 1),
            max_header_bytes=env.number(
                "GATEWAY_MAX_HEADER_BYTES", int, cls.max_header_bytes, 1024, 1024 * 1024
            ),
            stream_usage=env.switch("GATEWAY_STREAM_USAGE", cls.stream_usage),
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
            max_header_bytes=self.max_header_bytes,
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

    def keys(self, name: str) -> tuple[str, ...]:
        """Comma-separated secrets: set means at least one, never silently none."""
        keys = self.items(name)
        if name in self.environ and not keys:
            raise ConfigError(
                f"{name}: set but holds no key; give at least one, or unset it to run "
                "without client authentication"
            )
        return keys

    def switch(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("on", "true", "1", "yes"):
            return True
        if raw.lower() in ("off", "false", "0", "no"):
            return False
        raise ConfigError(f"{name}: expected on or off, got {raw!r}")

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


class _Table:
    """Typed, validated reads of one table of the config file."""

    def __init__(self, settings: Settings, where: str, spec: object) -> None:
        if not isinstance(spec, dict):
            raise _file_error(settings, where, "expected a table")
        self.settings, self.where, self.spec = settings, where, spec

    def error(self, key: str, problem: str) -> ConfigError:
        return _file_error(self.settings, f"{self.where}.{key}", problem)

    def text(self, key: str) -> str | None:
        value = self.spec.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, "expected a string")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.spec.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        return value

    def number(self, key: str, kind: type[int] | type[float], low: float = 0) -> Any:
        value = self.spec.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise self.error(key, f"expected a number of at least {low:g}")
        if kind is int and not isinstance(value, int):
            raise self.error(key, "expected a whole number")
        return kind(value)

    def table(self, key: str) -> _Table | None:
        value = self.spec.get(key)
        return None if value is None else _Table(self.settings, f"{self.where}.{key}", value)

    def tables(self, key: str) -> list[_Table]:
        value = self.spec.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, "expected an array of tables ([[...]])")
        return [_Table(self.settings, f"{self.where}.{key}[{i}]", v) for i, v in enumerate(value)]

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.spec) - allowed)
        if unknown:
            raise self.error(
                unknown[0], f"unknown setting; expected one of {', '.join(sorted(allowed))}"
            )


ROUTING_KEYS = {"retries", "retry_on", "timeouts", "cooldown", "backoff"}
MODEL_KEYS = ROUTING_KEYS | {
    "provider",
    "model",
    "aliases",
    "deployments",
    "strategy",
    "fallbacks",
    "context_fallbacks",
}


def routing_defaults(settings: Settings) -> RoutingDefaults:
    """The environment's timeouts and retries, refined by the file's ``[routing]`` table."""
    base = RoutingDefaults(
        timeouts=Timeouts(
            connect=settings.connect_timeout,
            first_byte=settings.upstream_timeout,
            idle=settings.idle_timeout,
            total=settings.total_timeout,
        ),
        retry=Retry(retries=settings.retries),
    )
    if "routing" not in settings.file:
        return base
    table = _Table(settings, "routing", settings.file["routing"])
    table.check_keys(ROUTING_KEYS)
    return RoutingDefaults(**_routing(table, base))


Field = tuple[str, type, float]  # the dataclass field, its type, its least value
TIMEOUT_FIELDS: dict[str, Field] = {
    name: (name, float, 0.001) for name in ("connect", "first_byte", "idle", "total")
}
BACKOFF_FIELDS: dict[str, Field] = {
    "base": ("backoff", float, 0.0),
    "max": ("backoff_max", float, 0.0),
    "retry_after_max": ("retry_after_max", float, 0.0),
}
COOLDOWN_FIELDS: dict[str, Field] = {
    "failures": ("failures", int, 1),
    "window": ("window", float, 0.001),
    "seconds": ("seconds", float, 0.0),
}


def _replaced(value: T, table: _Table | None, fields: dict[str, Field]) -> T:
    """``value`` (a frozen dataclass) with the fields that ``table`` sets."""
    if table is None:
        return value
    table.check_keys(set(fields))
    changes = {
        name: table.number(key, kind, low)
        for key, (name, kind, low) in fields.items()
        if key in table.spec
    }
    return dataclasses.replace(value, **changes)  # type: ignore[type-var]


def _retry_condition(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return 100 <= value <= 599
    return value in (CONNECTION, TIMEOUT)


def _routing(table: _Table, base: RoutingDefaults) -> dict[str, Any]:
    """A table's timeouts, retry and cooldown settings, over ``base``."""
    retry = _replaced(base.retry, table.table("backoff"), BACKOFF_FIELDS)
    if (retries := table.number("retries", int)) is not None:
        retry = dataclasses.replace(retry, retries=retries)
    if "retry_on" in table.spec:
        conditions = table.spec["retry_on"]
        if not isinstance(conditions, list) or not all(map(_retry_condition, conditions)):
            raise table.error("retry_on", 'expected HTTP statuses and "connection" / "timeout"')
        retry = dataclasses.replace(
            retry,
            statuses=frozenset(c for c in conditions if isinstance(c, int)),
            on_connection=CONNECTION in conditions,
            on_timeout=TIMEOUT in conditions,
        )
    return {
        "timeouts": _replaced(base.timeouts, table.table("timeouts"), TIMEOUT_FIELDS),
        "retry": retry,
        "cooldown": _replaced(base.cooldown, table.table("cooldown"), COOLDOWN_FIELDS),
    }


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
    defaults = routing_defaults(settings)
    registry = ModelRegistry(default, defaults)
    models = settings.file.get("models", {})
    if not isinstance(models, dict):
        raise _file_error(settings, "models", "expected a table of models")

    def provider_of(table: _Table) -> Provider:
        name = table.text("provider") or default_name
        if name is None and default is not None:
            return default
        if name not in providers:
            raise table.error("provider", f"unknown provider {name!r}")
        return providers[name]

    for name, spec in models.items():
        model = _Table(settings, f"models.{name}", spec)
        model.check_keys(MODEL_KEYS)
        deployments = []
        for d in model.tables("deployments"):
            d.check_keys({"provider", "model", "weight", "rpm", "tpm", "timeout"})
            deployments.append(
                Deployment(
                    provider_of(d),
                    d.text("model"),
                    weight=d.number("weight", float, 0.001) or 1.0,
                    rpm=d.number("rpm", int, 1),
                    tpm=d.number("tpm", int, 1),
                    timeout=d.number("timeout", float, 0.001),
                )
            )
        if not deployments:
            deployments.append(Deployment(provider_of(model), model.text("model")))
        elif "provider" in model.spec or "model" in model.spec:
            raise model.error("deployments", "give either provider/model or deployments, not both")
        try:
            registry.add(
                name,
                deployments,
                aliases=model.texts("aliases"),
                strategy=model.text("strategy") or "least-inflight",
                fallbacks=model.texts("fallbacks"),
                context_fallbacks=model.texts("context_fallbacks"),
                **_routing(model, defaults),
            )
        except ValueError as exc:
            raise _file_error(settings, f"models.{name}", str(exc)) from None
    try:
        registry.check_fallbacks()
    except ValueError as exc:
        raise _file_error(settings, "models", str(exc)) from None
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
        return Gateway(
            registry,
            hooks=hooks,
            api_keys=settings.api_keys,
            limits=settings.limits,
            stream_usage=settings.stream_usage,
        )
    except TypeError as exc:  # a hook that implements no event
        raise ConfigError(f"GATEWAY_HOOKS: {exc}") from None
