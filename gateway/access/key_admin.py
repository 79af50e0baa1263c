"""Making, changing, listing and revoking virtual keys: the rules ``python -m gateway
keys`` and the admin API (``/admin/keys``) share.

A key is made with a fresh secret, shown once to whoever made it and kept only as its
SHA-256; it is checked as the store and the config file will read it (a key that could
never be used is refused here, not at its first request). Keys of the config file are
read-only: they change with the file. Everything else is in the store.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..config.file import explain
from .keys import Budget, Key, checked, new_secret, parse_expiry, period_id, secret_hash
from .stores import Store

# The fields a key is made or changed with (besides its id), as the admin API takes them.
EDITABLE = (
    "owner",
    "team",
    "models",
    "rpm",
    "tpm",
    "max_parallel",
    "budget",
    "expires",
    "metadata",
    "disabled",
)


class KeyExists(ValueError):
    """A key of that id exists already (in the file or the store)."""


class KeyInConfigFile(ValueError):
    """The key is the config file's: change it there."""


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC (``2026-12-07T05:00:00Z``)."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def make_key(key_id: str, fields: dict[str, Any], now: float | None = None) -> tuple[Key, str]:
    """A new key and its secret (shown once), from ``fields`` (those of ``EDITABLE``);
    ``ValueError`` naming what is wrong."""
    secret = new_secret()
    now = time.time() if now is None else now
    key = Key(id=key_id, secret_sha256=secret_hash(secret), created=now)
    return _with(key, fields, now), secret


def changed_key(key: Key, fields: dict[str, Any], now: float | None = None) -> Key:
    """``key`` with ``fields`` changed (a ``None`` clears a field); checked again."""
    return _with(key, fields, time.time() if now is None else now)


def _with(key: Key, fields: dict[str, Any], now: float) -> Key:
    values = msgspec.structs.asdict(key)
    for name, value in fields.items():
        if name not in EDITABLE:
            raise ValueError(f"key.{name}: unknown setting")
        values[name] = value
    if values.get("models") is None:
        values["models"] = []
    if values.get("metadata") is None:
        values["metadata"] = {}
    if values.get("disabled") is None:
        values["disabled"] = False
    budget = values.get("budget")
    if isinstance(budget, dict):
        values["budget"] = budget
    elif isinstance(budget, Budget):
        values["budget"] = msgspec.structs.asdict(budget)
    if "expires" in fields:
        original = fields["expires"]
        values["expires"] = parse_expiry(original)
        if values["expires"] is not None and values["expires"] <= now:
            raise ValueError(f"expires {original!r} is in the past")
    try:
        return checked(msgspec.convert(values, Key))
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a valid key: {explain(exc, 'key')}") from None


async def find(store: Store | None, config: dict[str, Key], key_id: str) -> Key | None:
    """The key of that id: the config file's, or the store's."""
    key = config.get(key_id)
    if key is None and store is not None:
        key = await store.key_by_id(key_id)
    return key


async def create(
    store: Store | None, config: dict[str, Key], key_id: str, fields: dict[str, Any]
) -> tuple[Key, str]:
    """Make a key and save it in ``store`` (when there is one); the key and its secret."""
    if await find(store, config, key_id) is not None:
        raise KeyExists(f"a key {key_id!r} exists already")
    key, secret = make_key(key_id, fields)
    if store is not None:
        await store.save_key(key)
    return key, secret


async def update(store: Store, config: dict[str, Key], key: Key, fields: dict[str, Any]) -> Key:
    """Change a key of the store (not of the config file) and save it."""
    if key.id in config:
        raise KeyInConfigFile(f"{key.id!r} is in the config file: change it there and restart")
    key = changed_key(key, fields)
    await store.save_key(key)
    return key


async def revoke(store: Store | None, config: dict[str, Key], key: Key) -> Key:
    """Refuse a key of the store from the next request on (it stays listed)."""
    if key.id in config or store is None:
        raise KeyInConfigFile(
            f"{key.id!r} is in the config file: revoke it by removing it there "
            "(or set disabled = true) and restarting"
        )
    key.revoked = True
    await store.save_key(key)
    return key


async def every_key(store: Store | None, config: dict[str, Key]) -> list[Key]:
    """The config file's keys and the store's, by id."""
    keys = dict(config)
    if store is not None:
        keys.update({key.id: key for key in await store.keys()})
    return sorted(keys.values(), key=lambda k: k.id)


async def spent(store: Store | None, key: Key) -> float | None:
    """What the key spent in its budget's period (``None``: no budget, or no store)."""
    if store is None or key.budget is None:
        return None
    return await store.spent(key.id, period_id(key.budget.period, time.time()))


def state(key: Key, now: float) -> str:
    """active, revoked, disabled or expired."""
    if key.refusal(now) is None:
        return "active"
    return "revoked" if key.revoked else "disabled" if key.disabled else "expired"


def describe(key: Key, spent: float | None) -> str:
    """One key as the key command shows it: JSON, without its secret's hash."""
    fields = msgspec.structs.asdict(key)
    fields.pop("secret_sha256")  # not a secret, but nothing anyone needs to see
    fields["state"] = state(key, time.time())
    for name in ("created", "expires"):
        if fields.get(name) is not None:
            fields[name] = iso(fields[name])
    if spent is not None:
        fields["spent_this_period"] = round(spent, 6)
    return msgspec.json.format(msgspec.json.encode(fields), indent=2).decode()


def toml(key: Key) -> str:
    """The ``[keys.<id>]`` table of a key, to paste into the config file."""
    lines = [f"[keys.{key.id}]", f'secret_sha256 = "{key.secret_sha256}"']
    for field in ("owner", "team", "rpm", "tpm", "max_parallel"):
        value = getattr(key, field)
        if value is not None:
            lines.append(f"{field} = {msgspec.json.encode(value).decode()}")
    if key.models:
        lines.append(f"models = {msgspec.json.encode(key.models).decode()}")
    if key.budget is not None:
        lines.append(f'budget = {{ amount = {key.budget.amount}, period = "{key.budget.period}" }}')
    if key.expires is not None:
        lines.append(f'expires = "{iso(key.expires)}"')
    return "\n".join(lines)


def view(key: Key, spent: float, last_used: float | None) -> dict[str, Any]:
    """A key as the admin API shows it: never its secret, nor its hash."""
    budget = key.budget
    return {
        "id": key.id,
        "owner": key.owner,
        "team": key.team,
        "models": key.models,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_parallel": key.max_parallel,
        "budget": {"amount": budget.amount, "period": budget.period} if budget else None,
        "expires": iso(key.expires),
        "disabled": key.disabled,
        "revoked": key.revoked,
        "metadata": key.metadata,
        "spent": round(spent, 9),
        "last_used": iso(last_used),
    }


def summary(key: Key, names: tuple[str, ...] = ()) -> str:
    """What a key allows (or the ``names`` fields), for an audit line: never its secret."""
    names = names or ("team", "owner", "rpm", "tpm", "max_parallel", "budget", "expires")
    parts = [f"{name}={_short(getattr(key, name))}" for name in names if getattr(key, name)]
    if "models" not in names or not key.models:
        parts.append(f"models={_short(key.models)}")
    return " ".join(parts)


def _short(value: object) -> str:
    if isinstance(value, float):
        return iso(value) or "" if value > 1e9 else f"{value:g}"
    if isinstance(value, Budget):
        return f"{value.amount:g}/{value.period}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "*"
    return str(value)
