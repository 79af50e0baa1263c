"""How a model's requests behave under failure: timeouts, retries, backoff, cooldown.

Every model has these; values not given in its configuration come from the defaults
(environment variables, then the config file's ``[routing]`` table).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

# What may be retried, besides the statuses: a connection that could not be made or
# broke before an answer, and an upstream that did not answer in time.
CONNECTION = "connection"
TIMEOUT = "timeout"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``first_byte`` may be overridden per deployment."""

    connect: float = 10.0  # to open a connection to the upstream
    first_byte: float = 600.0  # from sending to the upstream's first response byte
    idle: float = 300.0  # between two chunks of a stream
    total: float = 900.0  # all attempts of a request, backoff included, until it answers


@dataclass(frozen=True, slots=True)
class Retry:
    """Which failures are retried, how often, and how long to wait between attempts."""

    retries: int = 2  # attempts after the first, per model (fallbacks have their own)
    statuses: frozenset[int] = RETRYABLE_STATUSES
    on_connection: bool = True
    on_timeout: bool = True
    backoff: float = 0.5  # the first wait's ceiling; it doubles with each retry
    backoff_max: float = 8.0
    retry_after_max: float = 30.0  # an upstream's Retry-After is honoured up to this

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        Exponential backoff with full jitter; an upstream's Retry-After, when it sent
        one, is waited out instead (capped at ``retry_after_max``).
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return random.uniform(0.0, min(self.backoff_max, self.backoff * 2**retry))


@dataclass(frozen=True, slots=True)
class Cooldown:
    """A deployment failing ``failures`` times within ``window`` seconds rests ``seconds``."""

    failures: int = 3
    window: float = 60.0
    seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class RoutingDefaults:
    """What a model gets for what its own configuration does not say."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: Retry = field(default_factory=Retry)
    cooldown: Cooldown = field(default_factory=Cooldown)


def retry_after(headers: Iterable[tuple[str, str]]) -> float | None:
    """Seconds an upstream asked to wait: ``retry-after-ms``, or ``retry-after`` (seconds
    or an HTTP date)."""
    for key, value in headers:
        name = key.lower()
        if name == "retry-after-ms":
            try:
                return float(value) / 1000
            except ValueError:
                continue
        if name == "retry-after":
            try:
                return float(value)
            except ValueError:
                pass
            try:
                return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
    return None
