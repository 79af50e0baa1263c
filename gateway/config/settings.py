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

import msgspec

from ..access.control import AccessControl
from ..access.keys import Budget, Key, checked, parse_expiry, secret_hash
from ..access.limits import RateLimits
from ..access.stores import Store
from ..core.admin import Admin, AdminPort
from ..core.app import Gateway, Limits
from ..core.hooks import load_hook
from ..core.responses import ResponsesOptions
from ..observability.accesslog import AccessLog
from ..observability.ledger import Ledger
from ..observability.logs import FORMATS
from ..observability.metrics import Metrics
from ..observability.pricing import Price, Prices
from ..providers import Provider, provider_types
from ..providers.mock import MockProvider
from ..providers.openai import DEFAULT_BASE_URL, OpenAIProvider
from ..routing.balancing import Deployment
from ..routing.policy import CONNECTION, TIMEOUT, Retry, RoutingDefaults, Timeouts
from ..routing.registry import ModelRegistry
from .file import ConfigFile, FileError, RoutingTable, convert, explain, parse_config

T = TypeVar("T")

SERVERS = ("granian", "robyn")
# Either turns tracing on (observability/tracing.py); the OpenTelemetry SDK reads them itself.
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
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
    log_format: str = "text"
    access_log: str = "stdout"  # stdout, stderr, off, or a file path
    metrics: bool = True
    metrics_port: int | None = None
    redis_url: str | None = None
    redis_failure: str = "open"
    redis_timeout: float = 0.05
    redis_cluster: bool = False
    rate_limit_headers: bool = True
    responses_ttl: float = 7 * 24 * 3600.0
    responses_builtin_tools: str = "refuse"
    admin_key: str | None = field(default=None, repr=False)
    admin_port: int | None = None
    ledger_retention_days: int = 90
    config_path: str | None = None
    file: dict[str, Any] = field(default_factory=dict, repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)  # for api_key_env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        config_path = env.text("GATEWAY_CONFIG")
        settings = cls(
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
            log_format=env.choice("GATEWAY_LOG_FORMAT", FORMATS, cls.log_format),
            access_log=env.log_destination("GATEWAY_ACCESS_LOG", cls.access_log),
            metrics=env.switch("GATEWAY_METRICS", cls.metrics),
            metrics_port=env.number("GATEWAY_METRICS_PORT", int, None, 1, 65535),
            redis_url=env.redis_url("GATEWAY_REDIS_URL"),
            redis_failure=env.choice("GATEWAY_REDIS_FAILURE", ("open", "closed"), "open"),
            redis_timeout=env.seconds("GATEWAY_REDIS_TIMEOUT", cls.redis_timeout),
            redis_cluster=env.switch("GATEWAY_REDIS_CLUSTER", cls.redis_cluster),
            rate_limit_headers=env.switch("GATEWAY_RATE_LIMIT_HEADERS", cls.rate_limit_headers),
            responses_ttl=env.number("GATEWAY_RESPONSES_TTL", float, cls.responses_ttl, 1),
            responses_builtin_tools=env.choice(
                "GATEWAY_RESPONSES_BUILTIN_TOOLS", ("refuse", "drop"), cls.responses_builtin_tools
            ),
            admin_key=env.text("GATEWAY_ADMIN_KEY"),
            admin_port=env.number("GATEWAY_ADMIN_PORT", int, None, 1, 65535),
            ledger_retention_days=env.number(
                "GATEWAY_LEDGER_RETENTION_DAYS", int, cls.ledger_retention_days, 1, 3650
            ),
            config_path=config_path,
            file=_read_file(config_path) if config_path else {},
            environ=env.environ,
        )
        if settings.metrics_port is not None and settings.metrics_port == settings.port:
            raise ConfigError(
                f"GATEWAY_METRICS_PORT: {settings.metrics_port} is GATEWAY_PORT too; give "
                "another port, or unset it to serve /metrics on the main port"
            )
        _check_admin(settings)
        return settings

    @property
    def limits(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes,
            max_connections=self.max_connections,
        )


def _check_admin(settings: Settings) -> None:
    """The admin API's settings: a port of its own, a key that is no client key."""
    port = settings.admin_port
    if port is not None and port in (settings.port, settings.metrics_port):
        raise ConfigError(
            f"GATEWAY_ADMIN_PORT: {port} is GATEWAY_PORT or GATEWAY_METRICS_PORT too; give "
            "another port, or unset it to serve /admin on the main port"
        )
    if port is not None and settings.admin_key is None:
        raise ConfigError("GATEWAY_ADMIN_PORT: set, but GATEWAY_ADMIN_KEY is not (no admin API)")
    if settings.admin_key is not None and settings.admin_key in settings.api_keys:
        raise ConfigError(
            "GATEWAY_ADMIN_KEY: it is in GATEWAY_API_KEYS too; the admin key must be no client key"
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
            f" from {_number(low)} to {_number(high)}"
            if low is not None and high is not None
            else f" of at least {_number(low)}"
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

    def log_destination(self, name: str, default: str) -> str:
        raw = self.text(name) or default
        if raw in ("stdout", "stderr", "off"):
            return raw
        folder = os.path.dirname(os.path.abspath(raw))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ConfigError(
                f"{name}: cannot write {raw!r}: its folder does not exist or is not writable "
                "(or say stdout, stderr or off)"
            )
        return raw

    def redis_url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is not None and not raw.startswith(("redis://", "rediss://", "unix://")):
            # (Not repeated: it may hold a password.)
            raise ConfigError(f"{name}: expected a redis://, rediss:// or unix:// URL")
        return raw

    def url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is not None and not raw.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: expected an http:// or https:// URL, got {raw!r}")
        return raw


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: cannot read {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {path} is not valid TOML: {exc}") from None


def load_file(settings: Settings) -> ConfigFile:
    """The config file's tables, checked against the schema (config/file.py)."""
    try:
        return parse_config(settings.file)
    except FileError as exc:
        raise _file_error(settings, str(exc)) from None


def _file_error(settings: Settings, problem: str) -> ConfigError:
    return ConfigError(f"GATEWAY_CONFIG ({settings.config_path}): {problem}")


def _providers(settings: Settings, file: ConfigFile) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    if settings.openai_api_key or settings.openai_base_url:
        providers["openai"] = OpenAIProvider(
            "openai",
            base_url=settings.openai_base_url or DEFAULT_BASE_URL,
            api_key=settings.openai_api_key,
        )
    types = provider_types()
    for name, table in file.providers.items():
        where = f"providers.{name}"
        kind = table.get("type", "openai")
        cls = types.get(kind) if isinstance(kind, str) else None
        if cls is None or cls.Settings is None:
            raise _file_error(
                settings, f"{where}: unknown type {kind!r}; expected one of {', '.join(types)}"
            )
        options = {key: value for key, value in table.items() if key != "type"}
        try:
            provider_settings = convert(options, cls.Settings, where)
            providers[name] = cls.from_settings(name, provider_settings, settings.environ)
        except FileError as exc:
            raise _file_error(settings, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise _file_error(settings, f"{where}: {exc}") from None
    return providers


def routing_defaults(settings: Settings, file: ConfigFile) -> RoutingDefaults:
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
    if file.routing is None:
        return base
    return RoutingDefaults(**_routing(file.routing, base))


def _changed(value: T, table: msgspec.Struct | None, names: dict[str, str]) -> T:
    """``value`` (a frozen dataclass) with the fields ``table`` sets (``names``: table
    field -> dataclass field)."""
    if table is None:
        return value
    values = {field: getattr(table, key) for key, field in names.items()}
    changes = {field: value for field, value in values.items() if value is not None}
    return dataclasses.replace(value, **changes)  # type: ignore[type-var]


_TIMEOUTS = {name: name for name in ("connect", "first_byte", "idle", "total")}
_BACKOFF = {"base": "backoff", "max": "backoff_max", "retry_after_max": "retry_after_max"}
_COOLDOWN = {name: name for name in ("failures", "window", "seconds")}


def _routing(table: RoutingTable, base: RoutingDefaults) -> dict[str, Any]:
    """A table's timeouts, retry and cooldown settings, over ``base``."""
    retry = _changed(base.retry, table.backoff, _BACKOFF)
    if table.retries is not None:
        retry = dataclasses.replace(retry, retries=table.retries)
    if table.retry_on is not None:
        conditions = table.retry_on
        retry = dataclasses.replace(
            retry,
            statuses=frozenset(c for c in conditions if isinstance(c, int)),
            on_connection=CONNECTION in conditions,
            on_timeout=TIMEOUT in conditions,
        )
    return {
        "timeouts": _changed(base.timeouts, table.timeouts, _TIMEOUTS),
        "retry": retry,
        "cooldown": _changed(base.cooldown, table.cooldown, _COOLDOWN),
    }


def build_registry(settings: Settings, file: ConfigFile | None = None) -> ModelRegistry:
    """Providers and models from the environment and the config file."""
    file = file or load_file(settings)
    providers = _providers(settings, file)
    default_name = file.default_provider
    if default_name is not None:
        if default_name not in providers:
            raise _file_error(settings, f"default_provider: unknown provider {default_name!r}")
        default: Provider | None = providers[default_name]
    elif "openai" in providers:
        default = providers["openai"]
    elif len(providers) == 1:
        default = next(iter(providers.values()))
    elif not providers:
        default = MockProvider()
    else:
        default = None
    defaults = routing_defaults(settings, file)
    registry = ModelRegistry(default, defaults)

    def provider_of(name: str | None, where: str) -> Provider:
        name = name or default_name
        if name is None and default is not None:
            return default
        if name not in providers:
            raise _file_error(settings, f"{where}.provider: unknown provider {name!r}")
        return providers[name]

    for name, model in file.models.items():
        where = f"models.{name}"
        deployments = [
            Deployment(
                provider_of(d.provider, f"{where}.deployments[{i}]"),
                d.model,
                weight=d.weight,
                rpm=d.rpm,
                tpm=d.tpm,
                timeout=d.timeout,
            )
            for i, d in enumerate(model.deployments)
        ]
        if not deployments:
            deployments.append(Deployment(provider_of(model.provider, where), model.model))
        elif model.provider is not None or model.model is not None:
            problem = "give either provider/model or deployments, not both"
            raise _file_error(settings, f"{where}.deployments: {problem}")
        for j, pattern in enumerate(model.match):
            if not pattern:
                raise _file_error(settings, f"{where}.match[{j}]: a pattern must not be empty")
        try:
            registry.add(
                name,
                deployments,
                aliases=model.aliases,
                match=model.match,
                strategy=model.strategy,
                fallbacks=model.fallbacks,
                context_fallbacks=model.context_fallbacks,
                **_routing(model, defaults),
            )
        except ValueError as exc:
            raise _file_error(settings, f"{where}: {exc}") from None
    try:
        registry.check_fallbacks()
    except ValueError as exc:
        raise _file_error(settings, f"models: {exc}") from None
    return registry


def build_keys(settings: Settings, file: ConfigFile) -> list[Key]:
    keys = []
    for key_id, table in file.keys.items():
        fields = msgspec.structs.asdict(table)
        try:
            fields["expires"] = parse_expiry(fields["expires"])
        except ValueError as exc:
            raise _file_error(settings, f"keys.{key_id}.expires: {exc}") from None
        budget = fields.pop("budget")
        key = Key(
            id=key_id,
            budget=Budget(budget.amount, budget.period) if budget is not None else None,
            **fields,
        )
        try:
            keys.append(checked(key))
        except (msgspec.ValidationError, ValueError) as exc:
            problem = (
                explain(exc, f"keys.{key_id}")
                if isinstance(exc, msgspec.ValidationError)
                else f"keys.{key_id}: {exc}"
            )
            raise _file_error(settings, problem) from None
    _no_shared_secrets(settings, keys)
    return keys


def _no_shared_secrets(settings: Settings, keys: list[Key]) -> None:
    """One secret, one key: a secret that is also a plain key (``GATEWAY_API_KEYS``), or
    that two virtual keys share, would authenticate as only one of them, and the other's
    limits and budget would silently never apply."""
    holders: dict[str, str] = {secret_hash(k): "GATEWAY_API_KEYS" for k in settings.api_keys}
    for key in keys:
        holder = holders.get(key.secret_sha256)
        if holder is not None:
            raise ConfigError(
                f"{holder} and keys.{key.id} (GATEWAY_CONFIG {settings.config_path}) hold the "
                f"same secret: it would authenticate as only one of them, and keys.{key.id}'s "
                "limits and budget would never apply; keep the secret in one place"
            )
        holders[key.secret_sha256] = f"keys.{key.id}"


def build_store(settings: Settings) -> Store | None:
    if settings.redis_url is None:
        return None
    from ..access.stores.redis import RedisStore

    return RedisStore(
        settings.redis_url, timeout=settings.redis_timeout, cluster=settings.redis_cluster
    )


def build_access(
    settings: Settings, file: ConfigFile, metrics: Metrics | None = None
) -> AccessControl | None:
    """Virtual keys, limits, budgets and the cache — when the configuration asks for any."""
    keys = build_keys(settings, file)
    model_limits = {
        name: RateLimits(model.limits.rpm, model.limits.tpm, model.limits.max_parallel)
        for name, model in file.models.items()
        if model.limits is not None
    }
    store = build_store(settings)
    cache = file.cache if file.cache is not None and file.cache.enabled else None
    if not (keys or model_limits or store or cache):
        return None
    return AccessControl(
        store,
        keys,
        model_limits,
        cache,
        failure=settings.redis_failure,
        metrics=metrics,
        headers=settings.rate_limit_headers,
    )


def build_gateway(settings: Settings, metrics_directory: str | None = None) -> Gateway:
    """The gateway the settings describe, hooks loaded by import path.

    ``metrics_directory`` is where the workers' metrics meet (observability/metrics.py),
    and the spend ledger's and recent requests when there is no Redis (ledger.py);
    without one, they count this process only.
    """
    file = load_file(settings)
    hook_paths = [*settings.hooks, *file.hooks]
    hooks: list[object] = []
    if settings.access_log != "off":
        hooks.append(AccessLog(settings.access_log))
    metrics = Metrics(metrics_directory) if settings.metrics else None
    if metrics is not None:
        hooks.append(metrics)
    ledger = admin_port = None
    if settings.admin_key is not None:  # the ledger's one reader is the admin API
        ledger = Ledger(
            settings.ledger_retention_days,
            metrics_directory,
            settings.redis_url,
            max(settings.redis_timeout, 1.0),
            settings.redis_cluster,
        )
        hooks.append(ledger)
        if settings.admin_port is not None:
            admin_port = AdminPort(settings.host, settings.admin_port)
            hooks.append(admin_port)
    for path in hook_paths:
        try:
            hooks.append(load_hook(path))
        except Exception as exc:
            raise ConfigError(f"GATEWAY_HOOKS: cannot load {path!r}: {exc}") from None
    registry = build_registry(settings, file)
    access = build_access(settings, file, metrics)
    prices = Prices({name: Price(**msgspec.structs.asdict(p)) for name, p in file.prices.items()})
    tracer = None
    if any(settings.environ.get(name) for name in OTEL_VARIABLES):
        try:
            from ..observability.tracing import Tracer
        except ImportError:
            raise ConfigError(
                "an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or "
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), but OpenTelemetry is not installed: "
                "pip install 'gateway[otel]'"
            ) from None
        tracer = Tracer()
    try:
        gateway = Gateway(
            registry,
            hooks=hooks,
            api_keys=settings.api_keys,
            limits=settings.limits,
            stream_usage=settings.stream_usage,
            prices=prices,
            tracer=tracer,
            access=access,
            responses=ResponsesOptions(settings.responses_ttl, settings.responses_builtin_tools),
        )
    except TypeError as exc:  # a hook that implements no event
        raise ConfigError(f"GATEWAY_HOOKS: {exc}") from None
    if metrics is not None:
        metrics.attach(gateway, route=settings.metrics_port is None)
    if ledger is not None:
        admin = Admin(settings.admin_key, gateway, ledger, settings.workers)  # type: ignore[arg-type]
        if admin_port is None:
            admin.attach()
        else:
            admin_port.admin = admin
    return gateway
