"""The in-memory store: this process's own keys, counters, budgets and cache.

One process, one store: with several workers and no Redis, each worker counts on its
own, so a limit of N requests a minute lets up to N pass per worker; budgets and the
cache are per worker too. (GATEWAY_REDIS_URL shares them.)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from math import trunc

from ..keys import Key
from ..limits import (
    PARALLEL_TTL,
    WINDOW,
    Refusal,
    Scope,
    Window,
    minute_limit_headers,
    retry_after,
)
from . import Budget, Ticket, Verdict


class _Minutes:
    """A scope's requests and tokens in the current and the previous clock minute."""

    __slots__ = ("minute", "previous_requests", "previous_tokens", "requests", "tokens")

    def __init__(self) -> None:
        self.minute = -2
        self.requests = self.tokens = 0.0
        self.previous_requests = self.previous_tokens = 0.0

    def at(self, now_minute: int) -> _Minutes:
        if now_minute != self.minute:
            if now_minute == self.minute + 1:
                self.previous_requests, self.previous_tokens = self.requests, self.tokens
            else:
                self.previous_requests = self.previous_tokens = 0.0
            self.requests = self.tokens = 0.0
            self.minute = now_minute
        return self


def _correct(counts: _Minutes, minute: int, adjustment: float, refund: bool) -> None:
    """A settled request's share of a scope's counts, in the minute it was admitted (now
    the current or the previous one): its tokens corrected by ``adjustment``, its request
    given back on a refund."""
    if counts.minute == minute:
        if adjustment:  # (x if x > 0.0 else 0.0: max(0.0, x) without a call)
            left = counts.tokens + adjustment
            counts.tokens = left if left > 0.0 else 0.0
        if refund:
            counts.requests = max(0.0, counts.requests - 1)
    elif counts.minute == minute + 1:
        if adjustment:
            left = counts.previous_tokens + adjustment
            counts.previous_tokens = left if left > 0.0 else 0.0
        if refund:
            counts.previous_requests = max(0.0, counts.previous_requests - 1)


class Cache:
    """An LRU of answers, bounded in bytes; entries also expire."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def get(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if now >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, expires: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, expires)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def pop(self, key: str) -> bool:
        """Drop an entry; whether there was one."""
        if key not in self._entries:
            return False
        self._drop(key)
        return True

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.size -= len(value)

    def __len__(self) -> int:
        return len(self._entries)


class Meter:
    """The usual scope — requests and tokens per minute, no slots — counted by a memory
    store: ``take`` admits a request in one step, with the same sliding window as
    ``MemoryStore.admit_now``, while the store's clock minute is under way and both
    limits have room; anything else (a new minute, a refusal) is the store's to decide.

    A key's plan holds one (access/control.py), so that the request of the usual key
    costs no call into the store's general admission, no verdict and no window.
    """

    __slots__ = (
        "counts",
        "remaining_requests",
        "remaining_tokens",
        "reset",
        "rpm",
        "scopes",
        "store",
        "tpm",
    )

    def __init__(self, store: MemoryStore, scope: Scope) -> None:
        rpm, tpm, max_parallel = scope.limits
        assert rpm and tpm and not max_parallel, "a meter counts per-minute limits only"
        self.rpm, self.tpm = rpm, tpm
        self.store = store
        self.scopes = (scope,)
        self.counts = store.counts(scope.id)
        # What the last request taken left of each limit, and the seconds until the
        # oldest counted minute no longer counts: the x-ratelimit-* figures.
        self.remaining_requests = self.remaining_tokens = 0
        self.reset = WINDOW

    def take(self, now: float, request_id: str, tokens: int) -> Ticket | None:
        """The request taken (its ticket), or ``None``: ``admit_now`` must decide."""
        store = self.store
        start = store._minute_start
        counts = self.counts
        this_minute = store._minute
        if not start <= now < start + WINDOW or counts.minute != this_minute:
            return None  # a minute turned: the store moves the counts on
        into = now - start
        weight = 1.0 - into / WINDOW
        requests_left = self.rpm - counts.previous_requests * weight - counts.requests - 1
        tokens_left = self.tpm - counts.previous_tokens * weight - counts.tokens - tokens
        if requests_left < 0 or tokens_left < 0:
            return None  # over a limit: the store says which, and when to come back
        counts.requests += 1
        counts.tokens += tokens
        self.remaining_requests = trunc(requests_left)
        self.remaining_tokens = trunc(tokens_left)
        self.reset = WINDOW - into
        return Ticket(request_id, this_minute, self.scopes, tokens, None)

    def headers(self) -> list[tuple[str, str]]:
        """The x-ratelimit-* lines of the last request taken."""
        return minute_limit_headers(
            self.rpm, self.remaining_requests, self.tpm, self.remaining_tokens, self.reset
        )

    def settle(self, ticket: Ticket, tokens: int | None) -> None:
        """``MemoryStore.settle`` of a ticket this meter took (no slot, no budget): its
        reservation corrected to the tokens used."""
        if ticket.scopes:
            _correct(self.counts, ticket.minute, (tokens or 0) - ticket.tokens, False)
            ticket.scopes = ()  # settled once


class MemoryStore:
    """Everything in this process (see the module's note on several workers)."""

    def __init__(
        self, cache_bytes: int = 256 * 1024 * 1024, state_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self._keys: dict[str, Key] = {}
        self._minutes: dict[str, _Minutes] = {}
        self._parallel: dict[str, dict[str, float]] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self.cache = Cache(cache_bytes)
        self.states = Cache(state_bytes)  # the oldest go first when it is full
        self._clock = time.time
        self._minute = -1  # the clock minute of the last admission, and when it began
        self._minute_start = float("inf")

    async def start(self, listen: bool = True) -> None:
        pass

    async def stop(self) -> None:
        pass

    # ------------------------------------------------------------ keys

    async def key(self, secret_sha256: str) -> Key | None:
        return self._keys.get(secret_sha256)

    async def save_key(self, key: Key) -> None:
        self._keys[key.secret_sha256] = key

    async def key_by_id(self, key_id: str) -> Key | None:
        return next((k for k in self._keys.values() if k.id == key_id), None)

    async def keys(self) -> list[Key]:
        return sorted(self._keys.values(), key=lambda k: k.id)

    async def spent(self, key_id: str, period: str) -> float:
        return self._spend.get((key_id, period), 0.0)

    def counts(self, scope_id: str) -> _Minutes:
        """A scope's counts, kept from its first request on."""
        counts = self._minutes.get(scope_id)
        if counts is None:
            counts = self._minutes[scope_id] = _Minutes()
        return counts

    # ------------------------------------------------------------ requests

    async def admit(
        self,
        now: float,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        budget: Budget | None,
        cache_key: str | None,
    ) -> Verdict:
        return self.admit_now(now, request_id, scopes, tokens, budget, cache_key)

    def admit_now(
        self,
        now: float,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        budget: Budget | None,
        cache_key: str | None,
    ) -> Verdict:
        """``admit`` without awaiting anything (also the fallback of a Redis store).

        Every admitted request of a limited key comes through here, so the usual case
        is written out for as little work as can be: the clock minute is worked out
        once per minute, and each scope's counts are taken as it admits the request
        (given back should a later scope, or the budget, refuse it).
        """
        start = self._minute_start
        if not start <= now < start + WINDOW:
            start = self._new_minute(now)
        this_minute = self._minute
        if cache_key is not None:
            cached = self.cache.get(cache_key, now)
            if cached is not None:  # a hit costs nothing
                return Verdict(Ticket(request_id, this_minute, (), tokens, None), cached=cached)
        into = now - start  # now % WINDOW, exactly (Sterbenz), without an fmod per request
        weight = 1.0 - into / WINDOW  # limits.weight_of_previous()
        minutes = self._minutes
        window = None
        for scope in scopes:
            counts = minutes.get(scope.id)
            if counts is None:
                counts = minutes[scope.id] = _Minutes()
            if counts.minute != this_minute:
                counts.at(this_minute)
            used_requests = counts.previous_requests * weight + counts.requests
            used_tokens = counts.previous_tokens * weight + counts.tokens
            rpm, tpm, max_parallel = scope.limits
            if (
                (rpm and used_requests + 1 > rpm)
                or (tpm and used_tokens + tokens > tpm)
                or max_parallel
            ):  # else there is room under both minute limits, and no slots to count
                refusal = self._refusal(scope, counts, used_requests, used_tokens, tokens, now)
                if refusal is not None:
                    self._give_back(scopes[: scopes.index(scope)], request_id, tokens)
                    if window is None:
                        limits = scope.limits
                        window = Window.of(limits, used_requests, used_tokens, tokens, False, now)
                    refused = Ticket(request_id, this_minute, (), tokens, None)
                    return Verdict(refused, refusal, window)
            if window is None:  # the first scope's, for the headers: Window.of(), inline
                window = tuple.__new__(  # (trunc: int() of a float, without a type call)
                    Window,
                    (
                        rpm,
                        None if rpm is None else trunc(rpm - used_requests - 1),
                        tpm,
                        None if tpm is None else trunc(tpm - used_tokens - tokens),
                        WINDOW - into,
                    ),
                )
            counts.requests += 1
            if tpm:
                counts.tokens += tokens
            if max_parallel:
                self._parallel[scope.id][request_id] = now + PARALLEL_TTL
        if budget is not None and self._spend.get((budget.key_id, budget.period), 0.0) >= (
            budget.amount
        ):
            self._give_back(scopes, request_id, tokens)
            refusal = Refusal("key:" + budget.key_id, "budget", budget.ttl or 0.0)
            return Verdict(Ticket(request_id, this_minute, (), tokens, None), refusal, window)
        return Verdict(Ticket(request_id, this_minute, scopes, tokens, budget), window=window)

    def _new_minute(self, now: float) -> float:
        """The clock minute ``now`` falls in, remembered until it is over; its start."""
        self._minute = minute = int(now // WINDOW)  # limits.minute()
        self._minute_start = start = minute * WINDOW
        return start

    def _give_back(self, scopes: Sequence[Scope], request_id: str, tokens: int) -> None:
        """Untake what ``admit_now`` took of ``scopes`` for a request it then refused."""
        for scope in scopes:
            counts = self._minutes[scope.id]
            _, tpm, max_parallel = scope.limits
            counts.requests -= 1
            if tpm:
                counts.tokens -= tokens
            if max_parallel:
                self._parallel[scope.id].pop(request_id, None)

    def _refusal(
        self,
        scope: Scope,
        counts: _Minutes,
        used_requests: float,
        used_tokens: float,
        tokens: int,
        now: float,
    ) -> Refusal | None:
        """Why ``scope`` refuses a request of ``tokens`` now, or ``None``."""
        rpm, tpm, max_parallel = scope.limits
        if rpm and used_requests + 1 > rpm:
            wait = retry_after(counts.previous_requests, counts.requests, 1, rpm, now)
            return Refusal(scope.id, "requests", wait)
        if tpm and used_tokens + tokens > tpm:
            wait = retry_after(counts.previous_tokens, counts.tokens, tokens, tpm, now)
            return Refusal(scope.id, "tokens", wait)
        if max_parallel:
            active = self._parallel.setdefault(scope.id, {})
            for rid in [r for r, expires in active.items() if expires <= now]:
                del active[rid]
            if len(active) >= max_parallel:
                return Refusal(scope.id, "parallel", 1.0)
        return None

    def settle(
        self, ticket: Ticket, tokens: int | None, cost: float | None, refund: bool = False
    ) -> None:
        used = tokens or 0
        for scope in ticket.scopes:
            _, tpm, max_parallel = scope.limits
            adjustment = used - ticket.tokens if tpm else 0
            if adjustment or refund:
                counts = self._minutes.get(scope.id)
                if counts is not None:
                    _correct(counts, ticket.minute, adjustment, refund)
            if max_parallel:
                self._parallel.get(scope.id, {}).pop(ticket.request_id, None)
        budget = ticket.budget
        if budget is not None and cost:
            spend_key = (budget.key_id, budget.period)
            self._spend[spend_key] = self._spend.get(spend_key, 0.0) + cost
        ticket.scopes, ticket.budget = (), None  # settled once

    async def cache_put(self, cache_key: str, value: bytes, ttl: float) -> None:
        self.cache_put_now(cache_key, value, ttl)

    def cache_put_now(self, cache_key: str, value: bytes, ttl: float) -> None:
        self.cache.put(cache_key, value, self._clock() + ttl)

    # ------------------------------------------------------------ stored state

    async def state_get(self, key: str) -> bytes | None:
        return self.states.get(key, self._clock())

    async def state_put(self, key: str, value: bytes, ttl: float) -> None:
        self.states.put(key, value, self._clock() + ttl)

    async def state_delete(self, key: str) -> bool:
        return self.states.pop(key)

    # ------------------------------------------------------------ deployments

    def deployment_failed(self, name: str, cooling_until: float | None) -> None:
        pass  # one process: the deployment itself holds it
