"""Limits and budgets shared through Redis, admitted against leases.

A request whose every scope this worker holds a lease for (and whose key's budget it
holds a slice of) is admitted here with no I/O (``admit_now``). Any other asks Redis:
one round trip, a ``LEASE`` script per scope (and the cache lookup), which admits it
exactly and leases more for the requests after it. Settlements are summed per scope and
minute and sent every ``FLUSH_EVERY`` seconds — at once when a scope is admitted request
by request (no lease: a low limit, a parallel limit, a budget nearly spent), so that
the next admission sees them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..limits import PARALLEL_TTL, WINDOW, Refusal, Scope, Window, retry_after
from . import Budget, StoreUnavailable, Ticket, Verdict
from .leases import LeaseBook
from .redis_scripts import (
    DELTA,
    KEEP,
    LEASE,
    SLOT_TTL,
    SPEND_KEEP,
    delta_keys,
    lease_keys,
)

logger = logging.getLogger("gateway")

FLUSH_EVERY = 0.1  # seconds between two sends of what leased scopes settled
KEEP_EVERY = SLOT_TTL / 3  # seconds between two renewals of a worker's leased slots
MAX_SLOTS_PER_CALL = 500  # request slots ended, per DELTA call
SLOT_NUMBER = 21  # where a LEASE call's arguments say its first slot's number

Call = tuple[str, list[str], list[Any]]
Scripts = Callable[[list[Call], list[tuple[str, str]]], Awaitable[list[Any]]]


class _Sums:
    """What one scope settled in one minute (and one budget period), not yet sent."""

    __slots__ = ("keep", "money", "requests", "slots", "tokens")

    def __init__(self) -> None:
        self.requests = 0
        self.tokens = 0
        self.money = 0.0
        self.keep = 0
        self.slots: list[str] = []


class LeasedLimits:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self.worker = uuid.uuid4().hex[:16]  # names this worker's leases in Redis
        self.book = LeaseBook()
        self._sums: dict[tuple[str, int, str | None], _Sums] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._tending: asyncio.Task[None] | None = None
        self._next_slot = 0

    def start(self) -> None:
        self._tending = asyncio.get_running_loop().create_task(self._tend())

    async def stop(self) -> None:
        """Hand every lease back and send what is left."""
        if self._tending is not None:
            self._tending.cancel()
            self._tending = None
        self._hand_back(*self.book.everything())
        await self._flush()

    # ------------------------------------------------------------ admitting

    def admit_now(
        self,
        now: float,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        budget: Budget | None,
        cache_key: str | None,
    ) -> Verdict | None:
        """The request admitted against this worker's leases, or ``None``: Redis must be
        asked (a lease or slice is missing or spent, or the cache is to be looked up)."""
        if cache_key is not None:
            return None
        book = self.book
        if budget is not None and not book.spend_allowed(budget.key_id, budget.period):
            return None
        this_minute = int(now // WINDOW)
        window = None
        leased: tuple[str, ...] = ()
        for position, scope in enumerate(scopes):
            seen = book.take(scope, this_minute, tokens, now)
            if seen is None:
                for taken in scopes[:position]:
                    book.untake(taken, tokens)
                return None
            if window is None:
                window = seen
            if scope.limits.max_parallel:
                leased += (scope.id,)
            scope_budget = budget if position == 0 else None
            if book.low(scope, scope_budget.key_id if scope_budget is not None else None):
                self._top_up(scope, scope_budget)
        ticket = Ticket(request_id, this_minute, scopes, tokens, budget)
        ticket.leased = leased
        return Verdict(ticket, window=window)

    async def admit(
        self,
        now: float,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        budget: Budget | None,
        cache_key: str | None,
    ) -> Verdict:
        """Admit against leases where they cover the request, ask Redis for the rest
        (and the cache): one round trip."""
        book = self.book
        this_minute = int(now // WINDOW)
        weight = 1.0 - (now % WINDOW) / WINDOW
        sliced = budget is not None and book.spend_allowed(budget.key_id, budget.period)
        taken: dict[int, Window] = {}  # position -> window, for scopes admitted by a lease
        asked: list[int] = []
        calls = []
        for position, scope in enumerate(scopes):
            # The key's scope comes first: the budget is asked with it, unless this
            # worker's slice of the budget already lets the request through.
            scope_budget = budget if position == 0 and not sliced else None
            seen = None
            if scope_budget is None:
                seen = book.take(scope, this_minute, tokens, now)
            if seen is not None:
                taken[position] = seen
                continue
            asked.append(position)
            calls.append(
                self._lease(scope, this_minute, weight, now, 1, tokens, request_id, scope_budget)
            )
        extra = [("get", f"gw:c:{cache_key}")] if cache_key is not None else []
        try:
            results = await self._scripts(calls, extra)
        except StoreUnavailable:
            for position in taken:
                book.untake(scopes[position], tokens)
            raise
        cached = results[-1] if cache_key is not None else None
        admitted: list[Scope] = []
        refusal = None
        window = taken.get(0)
        for position, call, result in zip(asked, calls, results, strict=False):
            scope = scopes[position]
            reason = result[0].decode()
            counts = result[1]
            used_r, used_t = _used(counts, weight)
            if position == 0:  # the first scope's counts (before this request) for headers
                window = Window.of(scope.limits, used_r, used_t, tokens, not reason, now)
            if reason:
                if refusal is None:
                    refusal = self._refusal(scope, reason, counts, tokens, budget, now)
                continue
            admitted.append(scope)
            self._granted(scope, this_minute, result, used_r, used_t, 1, tokens, now, call)
            if position == 0 and budget is not None and not sliced:
                self._sliced(budget, float(result[4]), now)
        ticket = Ticket(request_id, this_minute, (), tokens, None)
        if refusal is not None or cached:
            # Refused by one scope, or answered from the cache: give back what the others took.
            for position in taken:
                book.untake(scopes[position], tokens)
            for scope in admitted:
                sums = self._add(scope.tag, this_minute, None)
                sums.requests -= 1
                sums.tokens -= tokens if scope.limits.tpm else 0
                if scope.limits.max_parallel:
                    sums.slots.append(request_id)
            if admitted:
                self._send_soon()
        else:
            ticket.scopes = scopes
            ticket.budget = budget
            ticket.leased = tuple(
                scopes[position].id for position in taken if scopes[position].limits.max_parallel
            )
        return Verdict(ticket, refusal, window, cached or None)

    def _lease(
        self,
        scope: Scope,
        this_minute: int,
        weight: float,
        now: float,
        need: int,
        tokens: int,
        request_id: str,
        budget: Budget | None,
    ) -> Call:
        """The LEASE call of a scope: a request (``need``) and what to lease with it."""
        rpm, tpm, max_parallel = scope.limits
        wants = self.book.wants(scope, tokens, now)
        want_m = least_m = 0.0
        keep = 0
        if budget is not None:
            want_m, least_m = self.book.money_wanted(
                budget.key_id, budget.period, budget.amount, now
            )
            keep = int(budget.ttl + SPEND_KEEP) if budget.ttl is not None else 0
        args = [
            repr(now),
            repr(weight),
            rpm or 0,
            tpm or 0,
            max_parallel or 0,
            need,
            tokens,
            request_id,
            repr(budget.amount) if budget is not None else -1,
            repr(now + PARALLEL_TTL),
            self.worker,
            wants.requests,
            wants.tokens,
            repr(want_m),
            wants.least_requests,
            wants.least_tokens,
            repr(least_m),
            keep,
            wants.slots,
            wants.least_slots,
            repr(now + SLOT_TTL),
            self._number_slots(wants.slots),
        ]
        period = budget.period if budget is not None else None
        return LEASE, lease_keys(scope, this_minute, period), args

    def _number_slots(self, count: int) -> int:
        """The first of ``count`` numbers for slots asked on lease, never given twice:
        calls in flight at once each name theirs."""
        first = self._next_slot
        self._next_slot += count
        return first

    def _granted(
        self,
        scope: Scope,
        this_minute: int,
        result: list[Any],
        used_r: float,
        used_t: float,
        need: int,
        tokens: int,
        now: float,
        call: Call,
    ) -> None:
        """Add what Redis leased with an admission of ``need`` requests of ``tokens``
        (or a top-up: none) to the scope's lease."""
        extra_r, extra_t = int(result[2]), int(result[3])
        handed = self.book.granted(
            scope,
            this_minute,
            extra_r,
            extra_t,
            used_r + need + extra_r,
            used_t + tokens + extra_t,
            need,
            tokens,
            now,
        )
        for minute, requests, leased_tokens in handed:  # the older minute's leftovers
            sums = self._add(scope.tag, minute, None)
            sums.requests -= requests
            sums.tokens -= leased_tokens
        if len(result) > 5 and int(result[5]):
            first = int(call[2][SLOT_NUMBER])  # as the call named them
            self.book.new_slots(scope.id, self.worker, first, int(result[5]))

    def _sliced(self, budget: Budget, money: float, now: float) -> None:
        old = self.book.sliced(budget.key_id, budget.period, money, now)
        if old is not None:  # a slice of a period that is over: back to that period
            period, left = old
            self._add(f"k:{budget.key_id}", 0, period).money -= left

    def _refusal(
        self,
        scope: Scope,
        reason: str,
        counts: list[bytes],
        tokens: int,
        budget: Budget | None,
        now: float,
    ) -> Refusal:
        previous_r, current_r, previous_t, current_t = (float(c) for c in counts[:4])
        rpm, tpm, _ = scope.limits
        if reason == "requests":
            wait = retry_after(previous_r, current_r, 1, rpm or 0, now)
        elif reason == "tokens":
            wait = retry_after(previous_t, current_t, tokens, tpm or 0, now)
        elif reason == "budget":
            wait = (budget.ttl if budget is not None else None) or 0.0
        else:
            wait = 1.0
        return Refusal(scope.id, reason, wait)

    def _top_up(self, scope: Scope, budget: Budget | None) -> None:
        lease = self.book.leases[scope.id]
        lease.refilling = True
        asyncio.get_running_loop().create_task(self._refill(scope, budget))

    async def _refill(self, scope: Scope, budget: Budget | None) -> None:
        """Lease more of a scope before its lease runs out (no request waits on it)."""
        try:
            now = time.time()
            this_minute = int(now // WINDOW)
            weight = 1.0 - (now % WINDOW) / WINDOW
            call = self._lease(scope, this_minute, weight, now, 0, 0, "", budget)
            [result] = await self._scripts([call], [])
            used_r, used_t = _used(result[1], weight)
            self._granted(scope, this_minute, result, used_r, used_t, 0, 0, now, call)
            if budget is not None:
                self._sliced(budget, float(result[4]), now)
        except StoreUnavailable:
            pass  # the lease runs out; the next request asks Redis itself
        finally:
            lease = self.book.leases.get(scope.id)
            if lease is not None:
                lease.refilling = False

    # ------------------------------------------------------------ settling

    def settle(
        self, ticket: Ticket, tokens: int | None, cost: float | None, refund: bool = False
    ) -> None:
        if not ticket.scopes and not (ticket.budget and cost):
            return
        book = self.book
        urgent = False
        now = time.time()
        for scope in ticket.scopes:
            _, tpm, max_parallel = scope.limits
            adjustment = (tokens or 0) - ticket.tokens if tpm else 0
            slot = max_parallel and scope.id not in ticket.leased  # the request's own
            if max_parallel and not slot:
                book.release(scope.id, now)  # a leased slot: free again here, no I/O
            if adjustment or refund or slot:
                sums = self._add(scope.tag, ticket.minute, None)
                sums.tokens += adjustment
                sums.requests -= 1 if refund else 0
                if slot:
                    sums.slots.append(ticket.request_id)
                # Admitted one by one: the next admission must see this.
                urgent = urgent or slot or not book.leasing(scope.id)
        budget = ticket.budget
        if budget is not None and cost:
            uncovered = book.charge(budget.key_id, budget.period, cost, now)
            if uncovered:
                sums = self._add(f"k:{budget.key_id}", ticket.minute, budget.period)
                sums.money += uncovered
                sums.keep = int(budget.ttl + SPEND_KEEP) if budget.ttl is not None else 0
                urgent = True
        ticket.scopes = ()  # settled once
        ticket.budget = None
        if urgent:
            self._send_soon()

    def _add(self, tag: str, minute: int, period: str | None) -> _Sums:
        key = (tag, minute, period)
        sums = self._sums.get(key)
        if sums is None:
            sums = self._sums[key] = _Sums()
        return sums

    def _hand_back(self, leases: list, slices: list) -> None:
        for tag, minute, requests, tokens, slots in leases:
            sums = self._add(tag, minute, None)
            sums.requests -= requests
            sums.tokens -= tokens
            sums.slots += slots
        for key_id, period, money in slices:
            self._add(f"k:{key_id}", 0, period).money -= money

    def _send_soon(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _tend(self) -> None:
        """Every FLUSH_EVERY: hand back what lies unused, send what was settled; every
        KEEP_EVERY, keep the leased request slots alive in Redis."""
        kept = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            now = time.time()
            self._hand_back(*self.book.idle(now, int(now // WINDOW)))
            if self._sums:
                self._send_soon()
            if time.monotonic() - kept >= KEEP_EVERY:
                kept = time.monotonic()
                asyncio.get_running_loop().create_task(self._keep_slots(now))

    async def _keep_slots(self, now: float) -> None:
        leases = [lease for lease in self.book.leases.values() if lease.slots]
        calls = [
            (KEEP, [f"gw:{{{lease.tag}}}:p"], [repr(now + SLOT_TTL), *lease.slots])
            for lease in leases
        ]
        try:
            results = await self._scripts(calls, [])
        except StoreUnavailable:
            return  # kept at the next turn, or expired: then counted on no more (below)
        for lease, gone in zip(leases, results, strict=True):
            if gone:  # expired while this worker was cut off from Redis
                lost = {name.decode() for name in gone}
                lease.slots = [name for name in lease.slots if name not in lost]

    async def _flush(self) -> None:
        """Send what is summed — every request settled meanwhile — in one round trip."""
        await asyncio.sleep(0)  # let the requests ending in this loop iteration join
        while self._sums:
            sums, self._sums = self._sums, {}
            calls = []
            for (tag, minute, period), each in sums.items():
                slots = each.slots or [None]
                for start in range(0, len(slots), MAX_SLOTS_PER_CALL):
                    chunk = [s for s in slots[start : start + MAX_SLOTS_PER_CALL] if s]
                    first = start == 0
                    args = [
                        each.requests if first else 0,
                        each.tokens if first else 0,
                        repr(each.money) if first else 0,
                        each.keep,
                        *chunk,
                    ]
                    calls.append((DELTA, delta_keys(tag, minute, period), args))
            try:
                await self._scripts(calls, [])
            except StoreUnavailable:
                logger.debug("dropped %d settlements: Redis is unavailable", len(sums))


def _used(counts: list[bytes], weight: float) -> tuple[float, float]:
    """A LEASE reply's sliding counts: requests and tokens used before it, the previous
    minute's weighted."""
    previous_r, current_r, previous_t, current_t = (float(c) for c in counts[:4])
    return previous_r * weight + current_r, previous_t * weight + current_t
