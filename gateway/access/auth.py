"""Client authentication: the key a client presents, and the built-in key-list check."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.context import RequestContext
    from ..wire.headers import Headers


def presented_key(headers: Headers) -> str | None:
    """The client's key: ``Authorization: Bearer <key>``, or ``api-key`` / ``x-api-key``."""
    authorization = headers.get("authorization")
    if authorization:
        if authorization[:7] == "Bearer ":  # as nearly every client spells it
            token = authorization[7:].strip()
            if token:
                return token
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return token
    return headers.get("api-key") or headers.get("x-api-key") or None


def key_id(key: str) -> str:
    """A short, stable, non-secret name for a key, fit for logs."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:10]


class APIKeyAuth:
    """A hook accepting a fixed set of keys (``GATEWAY_API_KEYS``).

    Keys are compared as SHA-256 digests with ``hmac.compare_digest``, against every
    configured key without stopping at a match, so the time taken tells nothing about
    how much of a key was right, nor which key matched.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [(hashlib.sha256(k.encode()).digest(), key_id(k)) for k in keys if k]
        if not self._keys:
            raise ValueError("APIKeyAuth needs at least one non-empty key")

    def authenticate(self, ctx: RequestContext, api_key: str | None) -> str | None:
        if api_key is None:
            return None
        presented = hashlib.sha256(api_key.encode()).digest()
        identity = None
        for digest, name in self._keys:
            if hmac.compare_digest(presented, digest):
                identity = name
        return identity

    def __repr__(self) -> str:
        count = len(self._keys)
        return f"<APIKeyAuth: {count} key{'s' if count != 1 else ''}>"
