"""Shared state behind one small interface: in memory for one process, Redis for many.

Keys, rate-limit counters, budgets, the response cache, the deployments' shared state
(cooldowns, requests and tokens this minute) and stored API state (Responses kept for
``previous_response_id``) live in a store. One worker, many
workers and many replicas are then the same code: ``MemoryStore`` holds it in this
process (each worker its own), ``RedisStore`` in Redis, shared by every worker of
every replica.

On the way in, a request needs at most one round trip to the store (``admit``: every
limit that applies, the budget, the cache lookup), and usually none (``admit_now``: the
Redis store admits against leases it holds); on the way out, its settlement (tokens
used, the parallel slot, the spend) is batched with others' (``settle``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from ..keys import Key
from ..limits import Refusal, Scope, Window


class Budget:
    """The budget check of an admission: the key, its period, the amount."""

    __slots__ = ("amount", "key_id", "period", "ttl")

    def __init__(self, key_id: str, period: str, amount: float, ttl: float | None) -> None:
        self.key_id = key_id
        self.period = period  # period_id(): d20261202, m202612, total
        self.amount = amount
        self.ttl = ttl  # seconds the period's spend must be kept (None: forever)


class Ticket(msgspec.Struct, eq=False, gc=False):
    """What an admission took, so that its settlement can give back or add to it.

    A Struct, as ``Verdict`` is: every admitted request makes one, and a Struct is made
    in C (a plain class's ``__init__`` is a Python call); out of the cyclic collector's
    sight, as it refers to nothing that could refer back to it."""

    request_id: str
    minute: int
    scopes: Sequence[Scope]  # those that admitted the request (and hold its slot)
    tokens: int  # reserved in each scope with a token limit
    budget: Budget | None
    local: bool = False  # admitted by this worker alone (the shared store was down)
    leased: tuple[str, ...] = ()  # scopes whose request slot is a leased one


class Verdict(msgspec.Struct, eq=False, gc=False):
    """What the store said: refused (and why), or admitted (with what it reserved);
    the answer cached for the request, if there was one."""

    ticket: Ticket
    refusal: Refusal | None = None
    window: Window | None = None  # the first scope's counts, for the x-ratelimit-* headers
    cached: bytes | None = None


class StoreUnavailable(Exception):
    """The store did not answer in time (Redis down or slow)."""


class Store(Protocol):
    async def start(self, listen: bool = True) -> None: ...

    async def stop(self) -> None: ...

    # ------------------------------------------------------------ keys
    async def key(self, secret_sha256: str) -> Key | None:
        """The key with this secret's hash, if the store holds one."""
        ...

    async def save_key(self, key: Key) -> None: ...

    async def key_by_id(self, key_id: str) -> Key | None: ...

    async def keys(self) -> list[Key]: ...

    async def spent(self, key_id: str, period: str) -> float: ...

    # ------------------------------------------------------------ requests
    def admit_now(
        self,
        now: float,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        budget: Budget | None,
        cache_key: str | None,
    ) -> Verdict | None:
        """``admit`` with no I/O, when the store can answer at once; else ``None``."""
        ...

    async def admit(
        self,
        now: float,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        budget: Budget | None,
        cache_key: str | None,
    ) -> Verdict:
        """Check every scope's limits and the budget, and take what the request needs
        when all admit it; look the cache up. One round trip."""
        ...

    def settle(
        self, ticket: Ticket, tokens: int | None, cost: float | None, refund: bool = False
    ) -> None:
        """The request is over: give its slot back, correct its token reservation to
        ``tokens`` used (``None``: give it all back), add ``cost`` to the budget."""
        ...

    async def cache_put(self, cache_key: str, value: bytes, ttl: float) -> None: ...

    # ------------------------------------------------------------ stored state
    # Values the API itself keeps between requests (stored Responses), by key, for ttl s.

    async def state_get(self, key: str) -> bytes | None: ...

    async def state_put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def state_delete(self, key: str) -> bool:
        """Forget a value; whether there was one."""
        ...

    # ------------------------------------------------------------ deployments
    def deployment_failed(self, name: str, cooling_until: float | None) -> None:
        """Tell the other workers a deployment cools down until ``cooling_until`` (Unix)."""
        ...
