"""The per-request context that travels through hooks and providers."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Protocol

from ..wire.headers import safe_header_value
from .outcome import Outcome


class NamedProvider(Protocol):
    """What the context needs of a provider: its name. (Providers take the context as an
    argument, so naming their class here would make the two modules need each other.)"""

    name: str


# Request ids: a random prefix per process and a counter — unique across workers and
# restarts, and far cheaper than a uuid4 per request.
_PREFIX = "req_" + os.urandom(6).hex()
_counter = itertools.count(1)
_perf_counter = time.perf_counter
_time = time.time


def new_request_id() -> str:
    return f"{_PREFIX}{next(_counter):x}"


def _acceptable_request_id(value: str | None) -> bool:
    """A client's own id is echoed in a header: printable ASCII, no edge spaces, short."""
    return value is not None and 0 < len(value) <= 128 and safe_header_value(value) is not None


def reset_request_ids() -> None:
    """Give this process its own id prefix; called in each worker after fork."""
    global _PREFIX, _counter
    _PREFIX = "req_" + os.urandom(6).hex()
    _counter = itertools.count(1)


class RequestContext:
    """What the gateway knows about one request while it is handled.

    ``outcome`` is the request's record (see ``gateway.core.outcome``); ``endpoint``,
    ``model``, ``stream`` and ``upstream_model`` read it. ``provider`` is the provider
    of the current attempt, ``identity`` what the authenticating hook returned.
    """

    __slots__ = (
        "_metadata",
        "admission",
        "failed_attempts",
        "first_byte_at",
        "identity",
        "outcome",
        "provider",
        "request_id",
        "span",
        "started",
        "upstream_seconds",
    )

    def __init__(
        self,
        request_id: str | None = None,
        endpoint: str = "",
        method: str = "",
        path: str = "",
        client: str | None = None,
    ) -> None:
        if request_id is None or not _acceptable_request_id(request_id):
            request_id = f"{_PREFIX}{next(_counter):x}"  # new_request_id(), inlined
        self.request_id = request_id
        self.started = _perf_counter()
        self.outcome = Outcome(request_id, _time(), method, path, endpoint, client=client)
        self.first_byte_at = 0.0  # perf_counter() when the first byte went to the server
        self.upstream_seconds = 0.0  # spent in upstream attempts until the answer began
        # (deployment, why) of each attempt that failed; None while none has
        self.failed_attempts: list[tuple[str, str]] | None = None
        self.identity: Any = None
        self.provider: NamedProvider | None = None
        self._metadata: dict[str, Any] | None = None
        self.span: Any = None  # the request's trace span, when tracing is on
        self.admission: Any = None  # what access control took for it (access/control.py)

    @property
    def endpoint(self) -> str:
        return self.outcome.endpoint

    @endpoint.setter
    def endpoint(self, value: str) -> None:
        self.outcome.endpoint = value

    @property
    def model(self) -> str | None:
        """The model the request names (after a hook's rewrite)."""
        return self.outcome.model

    @model.setter
    def model(self, value: str | None) -> None:
        self.outcome.model = value

    @property
    def stream(self) -> bool:
        return self.outcome.stream

    @stream.setter
    def stream(self, value: bool) -> None:
        self.outcome.stream = value

    @property
    def upstream_model(self) -> str | None:
        """The model name the current attempt's upstream is asked for."""
        return self.outcome.upstream_model

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
        return _perf_counter() - self.started

    def __repr__(self) -> str:
        return f"<RequestContext {self.request_id} {self.endpoint} model={self.model!r}>"
