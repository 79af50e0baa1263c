"""A worker's leases: slices of shared limits it may admit requests against alone.

A limit shared through Redis would cost a round trip per request. Instead, when a
worker asks Redis to admit a request, it also takes a lease: some of what the scope has
left this minute (requests, tokens), of its request slots (``max_parallel``) or of what
its key's budget has left (money), counted in Redis at once as if used. The worker's
next requests are admitted against its leases with no I/O; a lease running low is
topped up in the background; what is left of it is handed back when the minute turns or
the worker stops using it. (A leased slot is freed here when its request ends, and kept
alive in Redis by its worker: a worker that dies loses its slots within ``SLOT_TTL``.)

How big: what the worker used in the last ``HORIZON`` seconds (its own rate), at least a
thousandth of the limit (slots: twice what it holds), and never more than a fair share
of what is left (see ``redis_scripts.LEASE``) — below ``LEAST`` requests' worth, no
lease: a low limit or one nearly used up is admitted request by request, exactly.

The bound: leases are counted in Redis when granted, so no more than the limit is
admitted in any window (exactly as request by request). A lease a worker holds but does
not use is counted too: another worker may be refused while it is outstanding, until it
is used or handed back (within ``IDLE`` seconds, or at the minute's end).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..limits import RateLimits, Scope, Window

HORIZON = 0.1  # seconds of a worker's own traffic a lease covers
FLOOR = 1 / 1000  # a lease is at least this fraction of the limit (when that is fair)
LEAST = 4  # requests' worth: a smaller lease is not taken (admitted one by one)
IDLE = 1.0  # seconds a lease may lie unused before it is handed back
FORGET = 300.0  # seconds after which a scope unused is forgotten (its rate too): bounded


class Wants(NamedTuple):
    """What a worker asks for on lease of a scope, and the least of each worth taking."""

    requests: int
    tokens: int
    slots: int
    least_requests: int
    least_tokens: int
    least_slots: int


NO_WANTS = Wants(0, 0, 0, 0, 0, 0)


class Lease:
    """What a worker may still admit alone for one scope: requests and tokens in one
    clock minute, request slots while it holds them."""

    __slots__ = (
        "busy",
        "last_used",
        "limits",
        "low_requests",
        "low_tokens",
        "minute",
        "refilling",
        "requests",
        "seen_requests",
        "seen_tokens",
        "since",
        "slots",
        "tag",
        "taken_requests",
        "taken_tokens",
        "tokens",
    )

    def __init__(self, limits: RateLimits, tag: str, now: float) -> None:
        self.limits = limits
        self.tag = tag  # the scope's, in Redis: what is handed back goes there
        self.minute = -1
        self.requests = 0  # permits left
        self.tokens = 0
        # The scope's sliding counts right after the last grant (every lease counted).
        self.seen_requests = 0.0
        self.seen_tokens = 0.0
        # What this worker took since ``since``: its rate, for the next lease's size.
        self.taken_requests = 0
        self.taken_tokens = 0
        self.since = now
        self.last_used = now
        self.low_requests = 0  # below these, top up (half the last lease)
        self.low_tokens = 0
        self.refilling = False
        # Request slots leased (their names in the scope's parallel set), and how many
        # of them requests hold now.
        self.slots: list[str] = []
        self.busy = 0

    def covers(self, minute: int, tokens: int) -> bool:
        rpm, tpm, max_parallel = self.limits
        return (
            self.minute == minute
            and (not rpm or self.requests >= 1)
            and (not tpm or self.tokens >= tokens)
            and (not max_parallel or self.busy < len(self.slots))
        )


class Slice:
    """Money of a key's budget this worker may spend alone, in one budget period."""

    __slots__ = ("costs", "last_used", "low", "money", "period", "requests", "since")

    def __init__(self, period: str, now: float) -> None:
        self.period = period
        self.money = 0.0  # left of the slice
        self.low = 0.0  # below this, top up (half the last slice)
        self.costs = 0.0  # this worker's costs since ``since``: its rate, and a request's
        self.requests = 0
        self.since = now
        self.last_used = now


class LeaseBook:
    """Every lease and slice of one worker."""

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.slices: dict[str, Slice] = {}  # by key id

    # ------------------------------------------------------------ admitting alone

    def take(self, scope: Scope, minute: int, tokens: int, now: float) -> Window | None:
        """Admit a request against the scope's lease, or ``None`` (no lease covers it).
        The window is the scope's as this worker sees it, for the headers."""
        lease = self.leases.get(scope.id)
        if lease is None or lease.limits != scope.limits or not lease.covers(minute, tokens):
            return None
        rpm, tpm, _ = scope.limits
        window = tuple.__new__(
            Window,
            (
                rpm,
                None if rpm is None else int(rpm - lease.seen_requests + lease.requests - 1),
                tpm,
                None if tpm is None else int(tpm - lease.seen_tokens + lease.tokens - tokens),
                60.0 - now % 60.0,
            ),
        )
        if rpm:
            lease.requests -= 1
        if tpm:
            lease.tokens -= tokens
        if scope.limits.max_parallel:
            lease.busy += 1
        lease.taken_requests += 1
        lease.taken_tokens += tokens
        lease.last_used = now
        return window

    def untake(self, scope: Scope, tokens: int) -> None:
        """Give a request's permits back to the lease it took them from (another scope
        refused the request, or the cache answered it)."""
        lease = self.leases.get(scope.id)
        if lease is not None:
            rpm, tpm, max_parallel = lease.limits
            lease.requests += 1 if rpm else 0
            lease.tokens += tokens if tpm else 0
            lease.busy -= 1 if max_parallel else 0
            lease.taken_requests -= 1
            lease.taken_tokens -= tokens

    def release(self, scope_id: str, now: float) -> None:
        """A request admitted on a leased slot is over: the slot is free again."""
        lease = self.leases.get(scope_id)
        if lease is not None and lease.busy > 0:
            lease.busy -= 1
            lease.last_used = now

    def spend_allowed(self, key_id: str, period: str) -> bool:
        """Whether the key's budget slice lets a request through without asking Redis."""
        piece = self.slices.get(key_id)
        return piece is not None and piece.period == period and piece.money > 0

    def low(self, scope: Scope, key_id: str | None = None) -> bool:
        """Whether the scope's lease (or the key's budget slice) should be topped up, and
        is not being already."""
        lease = self.leases.get(scope.id)
        if lease is None or lease.refilling:
            return False
        rpm, tpm, max_parallel = lease.limits
        if (rpm and lease.low_requests and lease.requests < lease.low_requests) or (
            tpm and lease.low_tokens and lease.tokens < lease.low_tokens
        ):
            return True
        slots = len(lease.slots)
        if max_parallel and slots and slots - lease.busy <= slots // 4:
            return True
        piece = self.slices.get(key_id) if key_id is not None else None
        return piece is not None and piece.money < piece.low

    def leasing(self, scope_id: str) -> bool:
        """Whether the scope is leased (else admitted request by request)."""
        lease = self.leases.get(scope_id)
        return lease is not None and bool(lease.low_requests or lease.low_tokens or lease.slots)

    # ------------------------------------------------------------ asking Redis

    def wants(self, scope: Scope, tokens: int, now: float) -> Wants:
        """What to ask for on lease, and the least of each worth taking."""
        rpm, tpm, max_parallel = scope.limits
        lease = self.leases.get(scope.id)
        if lease is None or lease.limits != scope.limits:
            lease = self.leases[scope.id] = Lease(scope.limits, scope.tag, now)
        if not lease.taken_requests:  # no traffic seen yet: no rate, no lease
            return NO_WANTS
        elapsed = max(now - lease.since, HORIZON)
        want_requests = want_tokens = want_slots = least_tokens = 0
        if rpm:
            rate = lease.taken_requests / elapsed
            want_requests = max(math.ceil(rate * HORIZON), math.ceil(rpm * FLOOR))
        if tpm:
            per_request = tokens or (lease.taken_tokens // lease.taken_requests)
            want_tokens = math.ceil(max(lease.taken_tokens / elapsed * HORIZON, tpm * FLOOR))
            least_tokens = LEAST * max(per_request, 1)
        if max_parallel:  # twice what it holds: a window that grows with its traffic
            want_slots = max(LEAST, len(lease.slots))
        return Wants(want_requests, want_tokens, want_slots, LEAST, least_tokens, LEAST)

    def new_slots(self, scope_id: str, worker: str, first: int, count: int) -> None:
        """Redis leased ``count`` more request slots, numbered from ``first``."""
        self.leases[scope_id].slots += [f"{worker}:{n}" for n in range(first, first + count)]

    def granted(
        self,
        scope: Scope,
        minute: int,
        extra_requests: int,
        extra_tokens: int,
        seen_requests: float,
        seen_tokens: float,
        need: int,
        tokens: int,
        now: float,
    ) -> list[tuple[int, int, int]]:
        """Redis admitted ``need`` requests of ``tokens`` (none: a top-up) and leased
        this much more; what is left of a lease of an older minute, to hand back:
        ``[(minute, requests, tokens)]``."""
        lease = self.leases.get(scope.id)
        if lease is None:
            return []
        handed = []
        if lease.minute != minute:
            if lease.requests or lease.tokens:
                handed.append((lease.minute, lease.requests, lease.tokens))
            lease.requests = lease.tokens = 0
            lease.minute = minute
        lease.requests += extra_requests
        lease.tokens += extra_tokens
        lease.seen_requests, lease.seen_tokens = seen_requests, seen_tokens
        lease.low_requests = extra_requests // 2
        lease.low_tokens = extra_tokens // 2
        if extra_requests or extra_tokens or need:  # a new stretch of this worker's rate
            lease.taken_requests, lease.taken_tokens = need, tokens
            lease.since = now
        lease.last_used = now
        return handed

    def money_wanted(self, key_id: str, period: str, amount: float, now: float) -> tuple:
        """Money to ask for on lease of a budget, and the least worth taking: none until
        this worker has seen what its requests cost."""
        piece = self.slices.get(key_id)
        if piece is None or piece.period != period:
            return 0.0, 0.0
        if not piece.requests:
            return 0.0, 0.0
        elapsed = max(now - piece.since, HORIZON)
        per_request = piece.costs / piece.requests
        want = max(piece.costs / elapsed * HORIZON, amount * FLOOR)
        return want, LEAST * per_request

    def sliced(
        self, key_id: str, period: str, money: float, now: float
    ) -> tuple[str, float] | None:
        """Redis leased ``money`` of the budget; a slice of a period that is over, to
        hand back to that period: ``(period, money)``."""
        piece = self.slices.get(key_id)
        handed = None
        if piece is None or piece.period != period:
            if piece is not None and piece.money > 0:
                handed = (piece.period, piece.money)
            piece = self.slices[key_id] = Slice(period, now)
        if money:
            piece.money += money
            piece.low = money / 2
            piece.costs = 0.0
            piece.requests = 0
            piece.since = now
        return handed

    # ------------------------------------------------------------ settling

    def charge(self, key_id: str, period: str, cost: float, now: float) -> float:
        """Spend ``cost`` from the key's slice; what the slice did not cover (to add to
        the spend in Redis)."""
        piece = self.slices.get(key_id)
        if piece is None or piece.period != period:
            piece = self.slices[key_id] = Slice(period, now)
        piece.costs += cost
        piece.requests += 1
        piece.last_used = now
        covered = min(piece.money, cost)
        piece.money -= covered
        return cost - covered

    def idle(self, now: float, this_minute: int) -> tuple[list, list]:
        """Leases and slices to hand back: unused for ``IDLE`` seconds, or of a minute
        that is over; request slots no request holds. ``([(scope tag, minute, requests,
        tokens, slots)], [(key id, period, money)])``"""
        leases = []
        forgotten = []
        for scope_id, lease in self.leases.items():
            unused = now - lease.last_used >= IDLE
            if now - lease.last_used >= FORGET and not (lease.busy or lease.refilling):
                forgotten.append(scope_id)  # (handed back below, then forgotten)
            if (lease.requests or lease.tokens) and (lease.minute != this_minute or unused):
                leases.append((lease.tag, lease.minute, lease.requests, lease.tokens, []))
                lease.requests = lease.tokens = 0
                lease.low_requests = lease.low_tokens = 0
            if lease.slots and not lease.busy and unused:
                leases.append((lease.tag, lease.minute, 0, 0, lease.slots))
                lease.slots = []
        for scope_id in forgotten:
            del self.leases[scope_id]
        slices = []
        for key_id, piece in list(self.slices.items()):
            if piece.money > 0 and now - piece.last_used >= IDLE:
                slices.append((key_id, piece.period, piece.money))
                piece.money = piece.low = 0.0
            if now - piece.last_used >= FORGET:
                del self.slices[key_id]
        return leases, slices

    def everything(self) -> tuple[list, list]:
        """Every lease and slice, to hand back as the worker stops."""
        return self.idle(float("inf"), -1)
