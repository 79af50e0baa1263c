"""Access control: virtual keys, rate limits, budgets and the response cache, on a store.

``AccessControl`` is a hook (``authenticate``, ``on_complete``, ``startup``,
``shutdown``) plus one step of the pipeline (``admit``, once the model is known):

    authenticate  the presented secret -> its key (config file or store), or 401
    admit         the key's model allow-list (403), then the store: the key's and the
                  model's limits (429 rate_limit_exceeded), the key's budget (429
                  insufficient_quota), the cache lookup (a hit is answered) — at once
                  when the store holds what it needs, else in one round trip
    on_complete   settle: real tokens for the reservation, the slot back, the spend;
                  store the answer in the cache

When the store (Redis) is unreachable: ``failure = "open"`` serves on — known keys,
limits counted in this worker only — and logs it once per ``LOG_EVERY`` seconds;
``"closed"`` answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from hmac import compare_digest
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from ..core.errors import (
    AuthenticationError,
    GatewayError,
    PermissionDeniedError,
    RateLimitError,
)
from ..core.outcome import STREAMED
from .cache import (
    BYPASS,
    HIT,
    MISS,
    CacheSettings,
    Entry,
    cache_control,
    cache_key,
    decode_entry,
    encode_entry,
)
from .keys import Key, period_id, period_span, secret_hash
from .limits import (
    AnswerBound,
    RateLimits,
    Refusal,
    Scope,
    Window,
    rate_limit_headers,
    reserved_tokens,
    reserved_tokens_read,
)
from .stores import Budget, Store, StoreUnavailable, Ticket, Verdict
from .stores.memory import MemoryStore, Meter

if TYPE_CHECKING:
    from ..core.context import RequestContext
    from ..observability.metrics import Metrics
    from ..routing.registry import ModelRegistry, Route
    from ..wire.headers import Headers

logger = logging.getLogger("gateway")

LOG_EVERY = 30.0  # seconds between two log lines about the same store failure
SYNC_EVERY = 1.0  # seconds between two shares of the deployments' minute counts
# Secrets whose SHA-256 this worker remembers (only secrets of known keys); past it, the
# memory starts over: an unbounded dict would be an attacker's to fill.
MAX_KNOWN_SECRETS = 10_000

_Plan = tuple[Key, tuple[Scope, ...], bool, Meter | None]  # see AccessControl._plan


class StoreUnavailableError(GatewayError):
    """The shared store cannot be reached and the gateway is set to fail closed."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class QuotaExceededError(RateLimitError):
    code = "insufficient_quota"
    type = "insufficient_quota"


class Admission(msgspec.Struct, eq=False, gc=False):
    """What the access control knows of one request between ``admit`` and its end (a
    Struct, as the store's Ticket: made in C, in no reference cycle)."""

    ticket: Ticket | None = None
    cache_key: str | None = None
    may_store: bool = False
    # The answer, kept for the cache: its chunks as they came (or its one body),
    # whether the upstream streamed it, and its content type.
    capture: list[bytes] | None = None
    capture_limit: int = 0  # bytes: a larger answer is not stored, so not kept either
    streamed: bool = False
    content_type: str = ""
    # x-ratelimit-* for the response, in place of an upstream's (None: no limit applied)
    headers: Sequence[tuple[str, str]] | None = None
    meter: Meter | None = None  # the usual key's, when it took the request


class AccessControl:
    def __init__(
        self,
        store: Store | None = None,
        keys: Iterable[Key] = (),
        model_limits: Mapping[str, RateLimits] | None = None,
        cache: CacheSettings | None = None,
        failure: str = "open",
        metrics: Metrics | None = None,
        headers: bool = True,
    ) -> None:
        self.store: Store = store or MemoryStore(cache.max_bytes if cache else 0)
        self.local: MemoryStore = (
            self.store if isinstance(self.store, MemoryStore) else MemoryStore(0)
        )
        self.shared = not isinstance(self.store, MemoryStore)
        # Admitted without a coroutine where the store can: the in-memory store always
        # (exactly a MemoryStore: a subclass may do otherwise in ``admit``), the Redis
        # store against its leases.
        subclassed = isinstance(self.store, MemoryStore) and type(self.store) is not MemoryStore
        self._admit_now = None if subclassed else getattr(self.store, "admit_now", None)
        # A presented secret's SHA-256, for secrets that authenticated: hashed once.
        self._digests: dict[str, str] = {}
        # What admitting a key's requests needs, once per key record (see ``_plan``).
        self._plans: dict[str, _Plan] = {}
        # Budget periods: the one ``now`` is in, while it lasts: (id, start, end).
        self._periods: dict[str, tuple[str, float, float]] = {}
        self.config_keys: dict[str, Key] = {key.secret_sha256: key for key in keys}
        # A model's scope is the same for every request: built once.
        self.model_scopes = {
            name: Scope("model:" + name, limits, f"m:{name}")
            for name, limits in (model_limits or {}).items()
            if limits
        }
        self.cache = cache if cache is not None and cache.enabled else None
        self.failure = failure
        self.headers = headers  # the x-ratelimit-* headers: on every response of a limited key
        self._logged_at = 0.0
        self._registry: ModelRegistry | None = None
        self._aliases: dict[str, str] = {}
        self._sync: asyncio.Task[None] | None = None
        self._reported: dict[str, tuple[int, int]] = {}
        self._cache_results = self._failures = self._limited = None
        if metrics is not None:
            self._cache_results = metrics.counter(
                "gateway_cache", "Cache lookups by result: hit, miss, bypass.", ("result",)
            )
            self._limited = metrics.counter(
                "gateway_rate_limited",
                "Requests refused by a limit, by scope kind (key, model) and limit.",
                ("scope", "limit"),
            )
            self._failures = metrics.counter(
                "gateway_store_failures", "Calls to the shared store that failed.", ()
            )
        if hasattr(self.store, "on_failure"):
            self.store.on_failure(self._count_failure)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return "<AccessControl>"

    @property
    def keys_enabled(self) -> bool:
        """Whether callers need a key: keys in the config file, or a shared store."""
        return bool(self.config_keys) or self.shared

    def key_hook(self) -> object:
        """The hook that authenticates callers by their virtual keys."""
        return _KeyAuth(self)

    def _allowed(self, key: Key, model: str | None, route: Route) -> bool:
        """Whether a key may use the model a request names: by that name or an alias of
        it, or by the entry a pattern (``match``) resolved the name to."""
        if key.allows(model, self._aliases):
            return True
        return bool(route.name) and route.name != model and key.allows(route.name, self._aliases)

    def attach(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._aliases = registry.aliases()
        if hasattr(self.store, "on_event"):
            self.store.on_event = self._on_event  # type: ignore[attr-defined]

    # ------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        await self.store.start()
        if self.shared and self._registry is not None:
            self._sync = asyncio.get_running_loop().create_task(self._share_deployments())

    async def shutdown(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
        await self.store.stop()

    # ------------------------------------------------------------ authenticate

    async def authenticate_key(self, ctx: RequestContext, secret: str | None) -> Key | None:
        """The key of a presented secret: the config file's, else the shared store's."""
        if secret is None:
            return None
        digest = self._digests.get(secret)
        known = digest is not None
        if digest is None:
            digest = secret_hash(secret)
        key = self.config_keys.get(digest)
        if key is None and self.shared:
            try:
                key = await self.store.key(digest)
            except StoreUnavailable:
                self._unavailable("look up a key")
                if self.failure == "closed":
                    raise StoreUnavailableError("The key store is unavailable.") from None
                return None
        return self._usable(key, secret, digest, known)

    def authenticate_config_key(self, ctx: RequestContext, secret: str | None) -> Key | None:
        """``authenticate_key`` without a shared store: the config file's keys only, so
        nothing to await (and no coroutine per request)."""
        if secret is None:
            return None
        digest = self._digests.get(secret)
        if digest is None:  # first sight: hashed, compared in constant time, remembered
            digest = secret_hash(secret)
            return self._usable(self.config_keys.get(digest), secret, digest, False)
        # A remembered secret: its key is looked up afresh (a record replaced since is the
        # one used), and found by the very digest it holds: nothing more to compare.
        key = self.config_keys.get(digest)
        if key is not None and (key.revoked or key.disabled or key.expires is not None):
            self._check_usable(key)  # only a key that may be refused reads the clock
        return key

    def _usable(self, key: Key | None, secret: str, digest: str, known: bool) -> Key | None:
        """``key`` if it holds this digest (compared in constant time) and may be used
        now — checked on every request, remembered digest or not: a key revoked or
        expired is refused at once."""
        if key is None or not compare_digest(key.secret_sha256, digest):
            return None
        self._check_usable(key)
        if not known:
            self._remember_digest(secret, digest)
        return key

    @staticmethod
    def _check_usable(key: Key) -> None:
        """A 401 for a key revoked, disabled or expired."""
        refusal = key.refusal(time.time())
        if refusal is not None:
            raise AuthenticationError(refusal)

    def _remember_digest(self, secret: str, digest: str) -> None:
        """Keep a known secret's SHA-256, so that its next requests skip hashing it. A
        dict compares a presented secret with a remembered one only when their (seeded)
        hashes are equal, so its lookup tells nothing of how much of a secret was right."""
        if len(self._digests) >= MAX_KNOWN_SECRETS:
            self._digests.clear()
        self._digests[secret] = digest

    # ------------------------------------------------------------ admit

    async def admit(
        self,
        ctx: RequestContext,
        route: Route,
        endpoint: str,
        body: bytes,
        stream: bool,
        headers: Headers,
        fields: AnswerBound | None = None,
    ) -> Entry | None:
        """Refuse the request (raise), answer it from the cache (the entry), or let it go on.

        ``fields`` is the first parse of ``body`` (wire/endpoints.py), when the caller has
        it for this very body: a token limit's reservation reads it, not the body again.
        """
        identity = ctx.identity
        now = time.time()
        budget = None
        if isinstance(identity, Key):
            plan = self._plans.get(identity.id)
            if plan is None or plan[0] is not identity:
                plan = self._plan(identity)
            _, scopes, tokens_limited, meter = plan
            if identity.models and not self._allowed(identity, ctx.outcome.model, route):
                raise PermissionDeniedError(
                    f"This API key is not allowed to use the model `{ctx.outcome.model}`.",
                    param="model",
                    code="model_not_allowed",
                )
            if meter is not None:  # the usual key: taken in one step, if it can be
                tokens = (
                    reserved_tokens(body) if fields is None else reserved_tokens_read(body, fields)
                )
                ticket = meter.take(now, ctx.request_id, tokens)
                if ticket is not None:
                    headers = meter.headers() if self.headers else ()
                    ctx.admission = Admission(ticket, headers=headers, meter=meter)
                    return None
            if identity.budget is not None:
                budget = self._budget(identity, now)
        else:
            scopes, tokens_limited, meter = (), False, None
        if self.model_scopes:
            model_scope = self.model_scopes.get(route.name)
            if model_scope is not None:
                scopes = (*scopes, model_scope)
                tokens_limited = tokens_limited or bool(model_scope.limits.tpm)
        admission = Admission()
        lookup_key = None
        if self.cache is not None and endpoint in self.cache.endpoints:
            lookup_key = self._cache_lookup(ctx, admission, route, endpoint, body, stream, headers)
        if not scopes and lookup_key is None:
            if admission.cache_key is not None:
                ctx.admission = admission
            self._count_cache(ctx)
            return None
        if not tokens_limited:
            tokens = 0
        elif meter is None:  # (else the meter's reservation, as it let the request through)
            tokens = reserved_tokens(body) if fields is None else reserved_tokens_read(body, fields)
        admit_now = self._admit_now
        verdict = (
            admit_now(now, ctx.request_id, scopes, tokens, budget, lookup_key)
            if admit_now is not None
            else None
        )
        if verdict is None:
            verdict = await self._admit_shared(
                ctx, admission, now, scopes, tokens, budget, lookup_key
            )
        refusal = verdict.refusal
        window = verdict.window
        if refusal is not None:
            self._refuse(refusal, window)
        if window is not None:
            admission.headers = rate_limit_headers(window) if self.headers else ()
        if verdict.cached is not None:
            entry = decode_entry(verdict.cached)
            if entry is not None:
                ctx.outcome.cache = HIT
                self._count_cache(ctx)
                return entry
        admission.ticket = verdict.ticket
        ctx.admission = admission
        if self.cache is not None:
            self._count_cache(ctx)
        return None

    def _plan(self, key: Key) -> _Plan:
        """What admitting a key's requests needs, once per key record (a record changed
        is a new object): its limits as a scope (none when the key needs no admission),
        whether one of them counts tokens, and the usual key's meter."""
        scopes: tuple[Scope, ...] = ()
        meter = None
        if key.limited:
            limits = RateLimits(key.rpm, key.tpm, key.max_parallel)
            scope = Scope("key:" + key.id, limits, f"k:{key.id}")
            scopes = (scope,)
            # The usual key — requests and tokens per minute, counted here (exactly a
            # MemoryStore: a subclass admits its own way), nothing else to check (no
            # slots, budget, model limits or cache) — is metered.
            usual = key.rpm and key.tpm and not key.max_parallel and key.budget is None
            here = type(self.store) is MemoryStore
            if usual and here and not self.model_scopes and self.cache is None:
                meter = Meter(self.local, scope)
        if len(self._plans) >= MAX_KNOWN_SECRETS:
            self._plans.clear()
        plan = self._plans[key.id] = (key, scopes, bool(key.tpm), meter)
        return plan

    def _budget(self, key: Key, now: float) -> Budget:
        """The budget check of a key with a budget: its period, worked out once per period."""
        assert key.budget is not None
        period = key.budget.period
        current = self._periods.get(period)
        if current is None or not current[1] <= now < current[2]:
            span = period_span(period, now)
            start, end = span if span is not None else (float("-inf"), float("inf"))
            current = self._periods[period] = (period_id(period, now), start, end)
        ttl = None if period == "total" else current[2] - now
        return Budget(key.id, current[0], key.budget.amount, ttl)

    def _cache_lookup(
        self,
        ctx: RequestContext,
        admission: Admission,
        route: Route,
        endpoint: str,
        body: bytes,
        stream: bool,
        headers: Headers,
    ) -> str | None:
        """The request's cache key, kept on the admission; what to look up, if anything."""
        cache = self.cache
        assert cache is not None
        may_look, may_store = cache_control(headers.get("cache-control"))
        computed = None
        if may_look or may_store:  # else the key would be thrown away: not computed
            scope = _cache_scope(cache, ctx.identity)
            model_name = route.name or ctx.outcome.model or ""
            computed = cache_key(cache, scope, endpoint, model_name, stream, body)
        if computed is None:
            ctx.outcome.cache = BYPASS
            return None
        admission.cache_key = computed
        admission.capture_limit = cache.max_entry_bytes
        admission.may_store = may_store
        ctx.outcome.cache = MISS if may_look else BYPASS
        return computed if may_look else None

    async def _admit_shared(
        self,
        ctx: RequestContext,
        admission: Admission,
        now: float,
        scopes: tuple[Scope, ...],
        tokens: int,
        budget: Budget | None,
        lookup_key: str | None,
    ) -> Verdict:
        """One round trip to the shared store; when it is down, this worker's own count
        (``open``) or a 503 (``closed``)."""
        try:
            return await self.store.admit(now, ctx.request_id, scopes, tokens, budget, lookup_key)
        except StoreUnavailable:
            self._unavailable("check limits")
            if self.failure == "closed":
                raise StoreUnavailableError("The rate-limit store is unavailable.") from None
        # Open: serve on, counting limits in this worker only; no cache.
        verdict = self.local.admit_now(now, ctx.request_id, scopes, tokens, budget, None)
        if admission.cache_key is not None:
            ctx.outcome.cache = BYPASS
            admission.cache_key = None
        verdict.ticket.local = True
        return verdict

    def _refuse(self, refusal: Refusal, window: Window | None) -> NoReturn:
        """The 429 of a refusal: over a limit (with the limit's headers), or over the budget."""
        kind = refusal.scope.partition(":")[0]
        if self._limited is not None:
            self._limited.inc((kind, refusal.kind))
        if refusal.kind == "budget":
            raise QuotaExceededError(
                "You exceeded your current quota: this key's budget for the period is used up.",
                retry_after=refusal.retry_after or None,
            )
        what = {"requests": "requests per minute", "tokens": "tokens per minute"}.get(
            refusal.kind, "requests at once"
        )
        error = RateLimitError(
            f"Rate limit reached for this {kind}: {what}. Try again in "
            f"{refusal.retry_after:.1f} s.",
            retry_after=refusal.retry_after,
        )
        if window is not None and self.headers:  # the reset they say is Retry-After's wait
            error.headers += rate_limit_headers(window._replace(reset=refusal.retry_after))
        raise error

    def _count_cache(self, ctx: RequestContext) -> None:
        if self._cache_results is not None and ctx.outcome.cache is not None:
            self._cache_results.inc((ctx.outcome.cache,))

    # ------------------------------------------------------------ the way out

    def on_complete(self, ctx: RequestContext) -> None:
        admission = ctx.admission
        if admission is None:
            return
        outcome = ctx.outcome
        ticket = admission.ticket
        if ticket is not None:
            usage = outcome.usage
            used = None if usage is None else usage.total_tokens
            if admission.meter is not None:
                admission.meter.settle(ticket, used)
            else:
                (self.local if ticket.local else self.store).settle(ticket, used, outcome.cost)
        if admission.cache_key is not None and admission.may_store and outcome.status == 200:
            entry = None
            capture, content_type = admission.capture, admission.content_type
            if capture and not admission.streamed:
                entry = Entry(200, content_type, capture[0])
            elif capture and outcome.outcome == STREAMED:  # only a stream relayed to its end
                entry = Entry(200, content_type, b"".join(capture), True)
            if entry is not None and len(entry.body) <= self.cache.max_entry_bytes:  # type: ignore[union-attr]
                if self.shared:
                    asyncio.get_running_loop().create_task(self._store(admission.cache_key, entry))
                else:  # in this process: at once, for the very next request
                    self.local.cache_put_now(
                        admission.cache_key, encode_entry(entry), self.cache.ttl
                    )  # type: ignore[union-attr]

    async def _store(self, key: str, entry: Entry) -> None:
        try:
            await self.store.cache_put(key, encode_entry(entry), self.cache.ttl)  # type: ignore[union-attr]
        except StoreUnavailable:
            self._unavailable("store an answer in the cache")

    # ------------------------------------------------------------ failures and sharing

    def _count_failure(self) -> None:
        if self._failures is not None:
            self._failures.inc(())

    def _unavailable(self, doing: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            logger.error(
                "the shared store (Redis) is unavailable: could not %s; %s",
                doing,
                "answering 503 (GATEWAY_REDIS_FAILURE=closed)"
                if self.failure == "closed"
                else "serving on with this worker's own limits (GATEWAY_REDIS_FAILURE=open)",
            )

    def deployment_failed(self, name: str, cooling_until: float) -> None:
        """A deployment cools down here: tell the other workers (in Unix time)."""
        self.store.deployment_failed(name, cooling_until)

    def _on_event(self, kind: str, arguments: list[str]) -> None:
        if kind == "cool" and len(arguments) == 2 and self._registry is not None:
            name, until = arguments[0], float(arguments[1])
            loop = asyncio.get_running_loop()
            for deployment in self._registry.deployments():
                if deployment.name == name:
                    cooling_until = loop.time() + (until - time.time())
                    deployment.cooling_until = max(deployment.cooling_until, cooling_until)

    async def _share_deployments(self) -> None:
        """Every second: add this worker's requests and tokens per deployment to the
        minute's totals in Redis, and take the totals as every worker's view."""
        assert self._registry is not None
        store: Any = self.store
        while True:
            await asyncio.sleep(SYNC_EVERY)
            deployments = [d for d in self._registry.deployments() if d.rpm or d.tpm]
            if not deployments:
                continue
            counted = {d.name: (d.own_requests, d.own_tokens) for d in deployments}
            try:
                totals = await store.share_minute(
                    int(time.time() // 60), self._deployment_deltas(counted)
                )
            except StoreUnavailable:
                continue  # told with the next share
            self._reported.update(counted)
            now = asyncio.get_running_loop().time()  # the deployments' clock
            for d in deployments:
                requests, tokens = totals.get(d.name, (0, 0))
                d.shared(now, requests, tokens)

    def _deployment_deltas(self, counted: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """This worker's requests and tokens per deployment (``counted``: ever) since it
        last shared them — what goes into the current minute's totals."""
        deltas = {}
        for name, (requests, tokens) in counted.items():
            reported_requests, reported_tokens = self._reported.get(name, (0, 0))
            deltas[name] = (requests - reported_requests, tokens - reported_tokens)
        return deltas


class _KeyAuth:
    def __init__(self, access: AccessControl) -> None:
        # Without a shared store, a plain method: the keys are all in this process.
        self.authenticate = (
            access.authenticate_key if access.shared else access.authenticate_config_key
        )

    def __repr__(self) -> str:
        return "<VirtualKeys>"


def _cache_scope(settings: CacheSettings, identity: object) -> str:
    """Whose answers a request may share: its key's, its team's, or everyone's."""
    if settings.scope == "global":
        return "global"
    if isinstance(identity, Key):
        if settings.scope == "team" and identity.team:
            return "team:" + identity.team
        return "key:" + identity.id
    return "key:" + identity if isinstance(identity, str) else "open"
