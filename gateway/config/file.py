"""The config file's schema (``GATEWAY_CONFIG``, TOML), defined once as msgspec Structs.

Decoding the file into these Structs is its validation: a wrong value stops start-up
with one line naming the key (``models.smart.deployments[0].rpm: expected a whole
number of at least 1``). Tables keyed by name (models, providers, prices, keys) are
decoded entry by entry, so that the message names the entry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ..access.cache import CacheSettings

T = TypeVar("T")

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]
RetryCondition = Annotated[int, msgspec.Meta(ge=100, le=599)] | Literal["connection", "timeout"]


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A table of the file: unknown keys are refused (a typo never passes silently)."""


class TimeoutsTable(_Table):
    connect: Positive | None = None
    first_byte: Positive | None = None
    idle: Positive | None = None
    total: Positive | None = None


class BackoffTable(_Table):
    base: NonNegative | None = None
    max: NonNegative | None = None
    retry_after_max: NonNegative | None = None


class CooldownTable(_Table):
    failures: Count | None = None
    window: Positive | None = None
    seconds: NonNegative | None = None


class RoutingTable(_Table):
    """How a model's requests behave under failure (``[routing]`` or a model's own)."""

    retries: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    retry_on: list[RetryCondition] | None = None
    timeouts: TimeoutsTable | None = None
    cooldown: CooldownTable | None = None
    backoff: BackoffTable | None = None


class DeploymentTable(_Table):
    provider: str | None = None
    model: str | None = None
    weight: Positive = 1.0
    rpm: Count | None = None
    tpm: Count | None = None
    timeout: Positive | None = None


class LimitsTable(_Table):
    """Limits of a model for every caller together (a key has its own)."""

    rpm: Count | None = None
    tpm: Count | None = None
    max_parallel: Count | None = None


class BudgetTable(_Table):
    amount: NonNegative  # US dollars
    period: Literal["daily", "monthly", "total"] = "monthly"


class KeyTable(_Table):
    """``[keys.<id>]``: a virtual key; its secret only as a SHA-256 (hex)."""

    secret_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{64}$")]
    owner: str | None = None
    team: str | None = None
    models: list[str] = []
    rpm: Count | None = None
    tpm: Count | None = None
    max_parallel: Count | None = None
    budget: BudgetTable | None = None
    expires: Any = None  # a TOML date or datetime, or an ISO 8601 string
    disabled: bool = False
    metadata: dict[str, Any] = {}


class ModelTable(RoutingTable):
    limits: LimitsTable | None = None
    provider: str | None = None
    model: str | None = None
    aliases: list[str] = []
    match: list[str] = []  # globs: any other name that matches one is this model's
    deployments: list[DeploymentTable] = []
    strategy: str = "least-inflight"
    fallbacks: list[str] = []
    context_fallbacks: list[str] = []


class PriceTable(_Table):
    """US dollars per million tokens. ``cached_input`` defaults to ``input``;
    ``cache_write`` (tokens written to a provider's prompt cache) too."""

    input: NonNegative
    output: NonNegative
    cached_input: NonNegative | None = None
    cache_write: NonNegative | None = None


class ConfigFile(msgspec.Struct, kw_only=True):
    """The whole file. ``providers`` stay raw here: each provider type has its own
    settings, decoded by that type (see ``gateway.providers``)."""

    default_provider: str | None = None
    hooks: list[str] = []
    routing: RoutingTable | None = None
    providers: dict[str, dict[str, Any]] = {}
    models: dict[str, ModelTable] = {}
    prices: dict[str, PriceTable] = {}
    keys: dict[str, KeyTable] = {}
    cache: CacheSettings | None = None


_TOP_LEVEL = {
    "default_provider": str,
    "hooks": list[str],
    "routing": RoutingTable,
    "cache": CacheSettings,
}
_NAMED = {
    "providers": dict[str, Any],
    "models": ModelTable,
    "prices": PriceTable,
    "keys": KeyTable,
}


class FileError(ValueError):
    """A wrong value in the file; ``str()`` names the key (``models.m.retries: ...``)."""


def parse_config(data: dict[str, Any]) -> ConfigFile:
    """The file's tables as Structs, or a ``FileError`` naming the first wrong key."""
    known = set(_TOP_LEVEL) | set(_NAMED)
    for key in data:
        if key not in known:
            raise FileError(f"{key}: unknown setting; expected one of {', '.join(sorted(known))}")
    fields: dict[str, Any] = {}
    for key, kind in _TOP_LEVEL.items():
        if key in data:
            fields[key] = convert(data[key], kind, key)
    for key, kind in _NAMED.items():
        if key in data:
            table = convert(data[key], dict[str, Any], key)
            fields[key] = {name: convert(v, kind, f"{key}.{name}") for name, v in table.items()}
    return ConfigFile(**fields)


def convert(value: object, kind: type[T] | Any, where: str) -> T:
    """``value`` as ``kind``, or a ``FileError`` that names ``where`` and the key inside."""
    try:
        return msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise FileError(explain(exc, where)) from None


_AT = re.compile(r"^(.*) - at `\$(.*)`$")
_EXPECTED = re.compile(r"^Expected `([^`]+)`(?: (>=|>|<=|<) (\S+))?(?:, got `(\w+)`)?$")
_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
}
_BOUNDS = {">=": "of at least", ">": "greater than", "<=": "of at most", "<": "less than"}


def explain(error: msgspec.ValidationError, where: str) -> str:
    """msgspec's message, said for an operator: ``where.key: expected ...``."""
    message = str(error)
    path = ""
    if match := _AT.match(message):
        message, path = match.groups()
    if field := re.match(r"Object contains unknown field `([^`]+)`", message):
        return f"{where}{path}.{field.group(1)}: unknown setting"
    if field := re.match(r"Object missing required field `([^`]+)`", message):
        return f"{where}{path}.{field.group(1)}: missing"
    if match := _EXPECTED.match(message):
        kinds, op, bound, got = match.groups()
        words = " or ".join(_WORDS.get(k, k) for k in kinds.split(" | ") if k != "null")
        if op:
            words += f" {_BOUNDS[op]} {_number(bound)}"
        return f"{where}{path}: expected {words}" + (f", got {_WORDS.get(got, got)}" if got else "")
    if match := re.match(r"Expected `str` matching regex", message):
        return f"{where}{path}: not in the expected form"
    if match := re.match(r"Invalid enum value (.*)", message):
        return f"{where}{path}: {match.group(1)} is not one of the allowed values"
    return f"{where}{path}: {message}"


def _number(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text
