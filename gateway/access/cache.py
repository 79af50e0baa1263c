"""The response cache: exact-match answers for requests that can repeat.

A request's cache key is the hash of its canonical form: the endpoint, whether it
streams, the model it resolved to (an alias and its model share answers), and the body
with its top-level keys in a fixed order (nested values as sent), without the fields
that do not change the answer (``user``, ``stream_options``, ``metadata``…) — scoped
to the caller's key, or its team, so that answers are never shared across teams
unless configured.

Only requests that can repeat are cached: ``temperature`` 0 or a ``seed`` (unless
``deterministic_only = false``). ``Cache-Control: no-cache`` from the client skips the
lookup (the fresh answer is still stored); ``no-store`` skips the cache altogether.
A streamed answer is stored as the stream's bytes and replayed as SSE.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

# Fields that say who asks or how the answer is delivered, not what it says.
IGNORED_FIELDS = frozenset({"user", "stream_options", "metadata", "store", "service_tier"})

HIT, MISS, BYPASS = "hit", "miss", "bypass"

_decode_number = msgspec.json.Decoder(float | None).decode
_decode_top = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_encode = msgspec.json.encode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[cache]`` in the config file."""

    enabled: bool = True
    ttl: float = 3600.0  # seconds
    max_bytes: int = 256 * 1024 * 1024  # the in-memory cache's size (per worker)
    max_entry_bytes: int = 4 * 1024 * 1024  # answers larger than this are not stored
    scope: Literal["key", "team", "global"] = "key"
    deterministic_only: bool = True
    endpoints: list[str] = msgspec.field(
        default_factory=lambda: ["chat.completions", "completions", "embeddings"]
    )


class Entry(msgspec.Struct, array_like=True):
    """What the cache holds for one request."""

    status: int
    content_type: str
    body: bytes
    stream: bool = False


_encode_entry = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(Entry).decode


def encode_entry(entry: Entry) -> bytes:
    return _encode_entry(entry)


def decode_entry(data: bytes) -> Entry | None:
    try:
        return _decode_entry(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def cache_control(value: str | None) -> tuple[bool, bool]:
    """(may look up, may store) from a client's ``Cache-Control``."""
    if not value:
        return True, True
    directives = {part.strip().lower().split("=")[0] for part in value.split(",")}
    if "no-store" in directives:
        return False, False
    if "no-cache" in directives or "max-age=0" in value.replace(" ", "").lower():
        return False, True
    return True, True


def cache_key(
    settings: CacheSettings,
    scope: str,
    endpoint: str,
    model: str,
    stream: bool,
    body: bytes,
) -> str | None:
    """The request's cache key, or ``None`` when it cannot repeat (or is not JSON)."""
    try:
        # Only the top level is decoded: its values stay raw bytes, so that the work is
        # one pass over the body however many objects it nests.
        fields = _decode_top(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if settings.deterministic_only and endpoint != "embeddings":
        seed = fields.get("seed")
        if (seed is None or bytes(seed) == b"null") and _number(fields.get("temperature")) != 0:
            return None
    canonical = {k: v for k, v in fields.items() if k not in IGNORED_FIELDS}
    canonical["model"] = msgspec.Raw(_encode(model))
    canonical["stream"] = msgspec.Raw(b"true" if stream else b"false")
    digest = hashlib.sha256(_encode_sorted(canonical)).hexdigest()
    return f"{scope}:{endpoint}:{digest}"


def _number(raw: msgspec.Raw | None) -> float | None:
    """A top-level number, or ``None`` (absent, null, or not a number)."""
    try:
        return None if raw is None else _decode_number(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
