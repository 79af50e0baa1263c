"""Virtual keys: who may call the gateway, for which models, within which limits.

A key's secret is shown once, when it is made, and kept only as its SHA-256 (a secret
of 32 random bytes needs no slower hash). Presented secrets are hashed and compared in
constant time. A key names its owner and team, the models it may use (names or globs),
its limits (requests and tokens per minute, requests at once), a budget per period, an
expiry, and whether it is disabled or revoked.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
import secrets
import time
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import msgspec

SECRET_PREFIX = "sk-gw-"
PERIODS = ("daily", "monthly", "total")

Count = Annotated[int, msgspec.Meta(ge=1)]


class Budget(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """US dollars a key may spend per period (``daily`` and ``monthly`` reset in UTC)."""

    amount: Annotated[float, msgspec.Meta(ge=0)]
    period: Literal["daily", "monthly", "total"] = "monthly"


KEY_ID = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # a bare TOML key, a safe metric label


class Key(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One virtual key, as the config file's ``[keys.<id>]`` or the store holds it."""

    id: Annotated[str, msgspec.Meta(pattern=KEY_ID)] = "key"
    secret_sha256: str
    owner: str | None = None
    team: str | None = None
    models: list[str] = []  # names or globs; empty: every model
    rpm: Count | None = None
    tpm: Count | None = None
    max_parallel: Count | None = None
    budget: Budget | None = None
    expires: float | None = None  # Unix seconds; None: never
    disabled: bool = False
    revoked: bool = False
    metadata: dict[str, Any] = {}
    created: float | None = None

    def __post_init__(self) -> None:
        self.secret_sha256 = self.secret_sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", self.secret_sha256):
            raise ValueError("secret_sha256 must be 64 hexadecimal characters")

    @property
    def limited(self) -> bool:
        """Whether a request with this key needs the store's admission (limits or budget)."""
        return bool(self.rpm or self.tpm or self.max_parallel or self.budget)

    def refusal(self, now: float) -> str | None:
        """Why the key cannot be used now (revoked, disabled, expired), or ``None``."""
        if self.revoked:
            return "This API key has been revoked."
        if self.disabled:
            return "This API key is disabled."
        if self.expires is not None and now >= self.expires:
            return "This API key has expired."
        return None

    def allows(self, model: str | None, aliases: dict[str, str] | None = None) -> bool:
        """Whether the key may use ``model`` (a public name; ``aliases`` maps an alias to
        its model, so that a key allowed a model may use its aliases and the reverse)."""
        patterns = self.models
        if not patterns or model is None:
            return True
        names = {model}
        if aliases is not None and model in aliases:
            names.add(aliases[model])
        return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in patterns)


_encode = msgspec.json.Encoder().encode
_decode_key = msgspec.json.Decoder(Key).decode


def encode_key(key: Key) -> bytes:
    return _encode(key)


def decode_key(data: bytes | str) -> Key | None:
    """A stored key, or ``None`` (logged) for a record that is not one: a broken record
    must not make every other key unusable."""
    try:
        return _decode_key(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        logging.getLogger("gateway").error("a stored key record is not valid: %s", exc)
        return None


def checked(key: Key) -> Key:
    """``key`` validated as the store and the config file will read it (the Struct's
    limits, ``rpm >= 1`` and the rest, apply on decoding, not on construction)."""
    return _decode_key(encode_key(key))


def new_secret() -> str:
    """A fresh secret: 32 random bytes, URL-safe, with a recognisable prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def parse_expiry(value: object) -> float | None:
    """A TOML date or datetime, an ISO string, or Unix seconds, as Unix seconds (UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected a date")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected a date or time (ISO 8601), got {value!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise ValueError("expected a date")


def period_id(period: str, now: float) -> str:
    """The budget period ``now`` falls in: ``d20261202``, ``m202612`` or ``total``."""
    if period == "total":
        return "total"
    day = time.gmtime(now)
    if period == "daily":
        return f"d{day.tm_year:04d}{day.tm_mon:02d}{day.tm_mday:02d}"
    return f"m{day.tm_year:04d}{day.tm_mon:02d}"


def period_span(period: str, now: float) -> tuple[float, float] | None:
    """When the period ``now`` falls in began and ends, in Unix seconds (``None`` for
    ``total``): a budget's period is the same for a day or a month of requests."""
    if period == "total":
        return None
    day = datetime.fromtimestamp(now, UTC)
    if period == "daily":
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        return start, start + 86400
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    start = datetime(day.year, day.month, 1, tzinfo=UTC).timestamp()
    return start, datetime(year, month, 1, tzinfo=UTC).timestamp()


def period_reset(period: str, now: float) -> float | None:
    """Seconds until the period ``now`` falls in is over (``None`` for ``total``)."""
    span = period_span(period, now)
    return None if span is None else span[1] - now
