"""The per-request context that travels through hooks and providers."""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .providers import Provider

# Request ids: a random prefix per process and a counter — unique across workers and
# restarts, and far cheaper than a uuid4 per request.
_PREFIX = "req_" + os.urandom(6).hex()
_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_counter):x}"


def _acceptable_request_id(value: str | None) -> bool:
    return value is not None and 0 < len(value) <= 128 and value.isascii() and value.isprintable()


def reset_request_ids() -> None:
    """Give this process its own id prefix; called in each worker after fork."""
    global _PREFIX, _counter
    _PREFIX = "req_" + os.urandom(6).hex()
    _counter = itertools.count(1)


class RequestContext:
    """What the gateway knows about one request while it is handled."""

    __slots__ = (
        "_metadata",
        "endpoint",
        "identity",
        "model",
        "provider",
        "request_id",
        "started",
        "stream",
        "upstream_model",
    )

    def __init__(self, request_id: str | None = None, endpoint: str = "") -> None:
        if request_id is None or not _acceptable_request_id(request_id):
            request_id = f"{_PREFIX}{next(_counter):x}"  # new_request_id(), inlined
        self.request_id = request_id
        self.started = time.perf_counter()
        self.endpoint = endpoint
        self.identity: Any = None
        self.model: str | None = None
        self.stream = False
        self.provider: Provider | None = None
        self.upstream_model: str | None = None
        self._metadata: dict[str, Any] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form values hooks share with each other for this request."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    def get(self, key: str, default: Any = None) -> Any:
        return default if self._metadata is None else self._metadata.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.metadata[key] = value

    @property
    def elapsed(self) -> float:
        """Seconds since the gateway received the request."""
        return time.perf_counter() - self.started

    def __repr__(self) -> str:
        return f"<RequestContext {self.request_id} {self.endpoint} model={self.model!r}>"
