"""The Redis store: keys, limits, budgets, cache and deployment state shared by every
worker of every replica (redis-py's asyncio client with hiredis, a pool per worker).

Counters are changed atomically by Lua scripts, one per scope, each on keys of one hash
slot (``gw:{k:<key id>}:…``, ``gw:{m:<model>}:…``), so that they work on Redis Cluster.
A request's admission is one pipeline — a script per scope and the cache lookup — so
one round trip; settlements are batched, several requests' in one pipeline.

Key records are cached in the worker and refreshed every ``KEY_TTL`` seconds; a change
made by ``python -m gateway keys`` is published on ``gw:events`` and drops the cached
record at once in every worker. Cooldowns are published there too, and the
deployments' requests and tokens this minute are summed in Redis every second.

Every call is bounded by ``timeout``. A failure raises ``StoreUnavailable`` and opens a
breaker for ``BREAKER_SECONDS``: calls then fail at once instead of waiting, and the
gateway decides what to do (``GATEWAY_REDIS_FAILURE``). The client reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from ..keys import Key, decode_key, encode_key
from ..limits import PARALLEL_TTL, Refusal, Scope, Window, minute, retry_after, weight_of_previous
from . import Budget, StoreUnavailable, Ticket, Verdict

logger = logging.getLogger("gateway")

KEY_TTL = 30.0  # seconds a worker trusts its copy of a key record
UNKNOWN_TTL = 2.0  # seconds it remembers that a hash is no key (bounded: see _remember)
BREAKER_SECONDS = 1.0  # after a failure, calls fail at once this long
EVENTS = "gw:events"
COUNTER_TTL = 150  # seconds a minute's counter is kept: the current and the previous
SPEND_KEEP = 3 * 86400  # seconds past its period a daily or monthly spend is kept

# Check a scope's limits (and a key's budget), and when they all admit, take what the
# request needs. KEYS: requests now, requests before, tokens now, tokens before, the
# parallel set, the spend. ARGV: now, previous minute's weight, rpm, tpm, max parallel,
# tokens, request id, budget (-1: none), the slot's expiry.
ADMIT = """
local now = tonumber(ARGV[1])
local weight = tonumber(ARGV[2])
local rpm, tpm, maxpar = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens = tonumber(ARGV[6])
local budget = tonumber(ARGV[8])
local rc = tonumber(redis.call('GET', KEYS[1]) or '0')
local rp = tonumber(redis.call('GET', KEYS[2]) or '0')
local tc = tonumber(redis.call('GET', KEYS[3]) or '0')
local tp = tonumber(redis.call('GET', KEYS[4]) or '0')
local counts = {tostring(rp), tostring(rc), tostring(tp), tostring(tc)}
if rpm > 0 and rp * weight + rc + 1 > rpm then return {'requests', counts} end
if tpm > 0 and tp * weight + tc + tokens > tpm then return {'tokens', counts} end
if maxpar > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= maxpar then return {'parallel', counts} end
end
if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[6]) or '0')
  if spent >= budget then return {'budget', counts} end
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], $COUNTER_TTL)
if tpm > 0 then
  redis.call('INCRBY', KEYS[3], tokens)
  redis.call('EXPIRE', KEYS[3], $COUNTER_TTL)
end
if maxpar > 0 then
  redis.call('ZADD', KEYS[5], tonumber(ARGV[9]), ARGV[7])
  redis.call('EXPIRE', KEYS[5], 1800)
end
return {'', counts}
""".replace("$COUNTER_TTL", str(COUNTER_TTL))


# Settle what one scope took for a request. KEYS: tokens then, requests then, the
# parallel set, the spend. ARGV: the token adjustment, 1 to give the request back, the
# request id (empty: no slot), the cost, how long to keep the spend (0: forever).
SETTLE = """
local adjust = tonumber(ARGV[1])
if adjust ~= 0 then
  redis.call('INCRBY', KEYS[1], adjust)
  redis.call('EXPIRE', KEYS[1], $COUNTER_TTL)
end
if ARGV[2] == '1' then redis.call('DECR', KEYS[2]) end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
if tonumber(ARGV[4]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[4], ARGV[4])
  local keep = tonumber(ARGV[5])
  if keep > 0 then redis.call('EXPIRE', KEYS[4], keep) end
end
return 1
""".replace("$COUNTER_TTL", str(COUNTER_TTL))


def _keys(scope: Scope, this_minute: int, budget: Budget | None) -> list[str]:
    base = f"gw:{{{scope.tag}}}"
    spend = f"{base}:s:{budget.period}" if budget is not None else f"{base}:s:none"
    return [
        f"{base}:r:{this_minute}",
        f"{base}:r:{this_minute - 1}",
        f"{base}:t:{this_minute}",
        f"{base}:t:{this_minute - 1}",
        f"{base}:p",
        spend,
    ]


class RedisStore:
    def __init__(
        self,
        url: str,
        timeout: float = 0.05,
        on_event: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_event = on_event  # (kind, arguments) of what other workers published
        self.client: redis.Redis | None = None
        self._shas: dict[str, str] = {}  # Lua script -> its SHA in Redis
        self._down_until = 0.0
        self._keys: dict[str, tuple[Key | None, float]] = {}
        self._settlements: list[tuple[Ticket, int | None, float | None, bool]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._on_failure: Callable[[], None] | None = None

    # ------------------------------------------------------------ lifecycle

    def connect(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=RedisRetry(NoBackoff(), 0),  # fail at once; the breaker paces retries
            health_check_interval=30,
            decode_responses=False,
        )

    async def start(self, listen: bool = True) -> None:
        """Open the pool; with ``listen``, follow what other workers publish (a worker
        does; the key command does not)."""
        self.client = self.connect()
        if listen:
            self._listening = True
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        self._listening = False
        if self._listener is not None:
            self._listener.cancel()
            # Bounded: redis-py's pub/sub read may swallow a cancellation; the loop then
            # ends at its next turn (within a second) on _listening.
            await asyncio.wait({self._listener}, timeout=2.0)
            self._listener = None
        await self._flush()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def on_failure(self, callback: Callable[[], None]) -> None:
        self._on_failure = callback

    async def _call(self, operation: Callable[[redis.Redis], Any]) -> Any:
        """One round trip, bounded, or ``StoreUnavailable``."""
        if time.monotonic() < self._down_until or self.client is None:
            raise StoreUnavailable("Redis was unreachable a moment ago")
        try:
            # (No wait_for: its task and timer would cost more than the call; the
            # client's socket timeouts bound every read, write and connect.)
            return await operation(self.client)
        except (TimeoutError, RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BREAKER_SECONDS
            if self._on_failure is not None:
                self._on_failure()
            raise StoreUnavailable(f"Redis failed: {exc or type(exc).__name__}") from exc

    # ------------------------------------------------------------ keys

    async def key(self, secret_sha256: str) -> Key | None:
        now = time.monotonic()
        cached = self._keys.get(secret_sha256)
        if cached is not None and now < cached[1]:
            return cached[0]
        try:
            data = await self._call(lambda c: c.get(f"gw:key:{secret_sha256}"))
        except StoreUnavailable:
            if cached is not None:  # known before the outage: still known
                return cached[0]
            raise
        key = decode_key(data) if data else None
        self._remember(secret_sha256, key, now)
        return key

    def _remember(self, secret_sha256: str, key: Key | None, now: float) -> None:
        if len(self._keys) > 100_000:  # unknown hashes are bounded, not an attacker's dict
            self._keys = {h: e for h, e in self._keys.items() if e[0] is not None}
        self._keys[secret_sha256] = (key, now + (KEY_TTL if key is not None else UNKNOWN_TTL))

    async def save_key(self, key: Key) -> None:
        data = encode_key(key)

        def save(client: redis.Redis) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.set(f"gw:key:{key.secret_sha256}", data)
            pipe.set(f"gw:keyid:{key.id}", key.secret_sha256)
            pipe.sadd("gw:keys", key.id)
            pipe.publish(EVENTS, f"key {key.secret_sha256}")
            return pipe.execute()

        await self._call(save)
        self._keys.pop(key.secret_sha256, None)

    async def key_by_id(self, key_id: str) -> Key | None:
        digest = await self._call(lambda c: c.get(f"gw:keyid:{key_id}"))
        if not digest:
            return None
        data = await self._call(lambda c: c.get(f"gw:key:{digest.decode()}"))
        return decode_key(data) if data else None

    async def keys(self) -> list[Key]:
        ids = await self._call(lambda c: c.smembers("gw:keys"))
        found = [await self.key_by_id(i.decode()) for i in sorted(ids)]
        return [key for key in found if key is not None]  # (broken records are logged)

    async def spent(self, key_id: str, period: str) -> float:
        value = await self._call(lambda c: c.get(f"gw:{{k:{key_id}}}:s:{period}"))
        return float(value or 0)

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
        this_minute = minute(now)
        weight = weight_of_previous(now)
        ticket = Ticket(request_id, this_minute, (), tokens, None)
        calls = []
        for position, scope in enumerate(scopes):
            rpm, tpm, max_parallel = scope.limits
            scope_budget = budget if position == 0 else None  # the key's scope comes first
            args = [
                repr(now),
                repr(weight),
                rpm or 0,
                tpm or 0,
                max_parallel or 0,
                tokens,
                request_id,
                repr(scope_budget.amount) if scope_budget is not None else -1,
                repr(now + PARALLEL_TTL),
            ]
            calls.append((_keys(scope, this_minute, scope_budget), args))
        extra = [("get", f"gw:c:{cache_key}")] if cache_key is not None else []
        results = await self._scripts([(ADMIT, keys, args) for keys, args in calls], extra)
        cached = results[-1] if cache_key is not None else None
        admitted: list[Scope] = []
        refusal = None
        window = None
        for scope, (verdict, counts) in zip(scopes, results[: len(scopes)], strict=True):
            reason = verdict.decode()
            previous_r, current_r, previous_t, current_t = (float(c) for c in counts)
            rpm, tpm, _ = scope.limits
            if window is None:  # the first scope's counts (before this request) for headers
                used_r, used_t = previous_r * weight + current_r, previous_t * weight + current_t
                window = Window.of(scope.limits, used_r, used_t, tokens, not reason, now)
            if reason:
                if refusal is None:
                    if reason == "requests":
                        wait = retry_after(previous_r, current_r, 1, rpm or 0, now)
                    elif reason == "tokens":
                        wait = retry_after(previous_t, current_t, tokens, tpm or 0, now)
                    elif reason == "budget":
                        wait = (budget.ttl if budget is not None else None) or 0.0
                    else:
                        wait = 1.0
                    refusal = Refusal(scope.id, reason, wait)
                continue
            admitted.append(scope)
        ticket.scopes = admitted
        ticket.budget = budget if admitted and not refusal else None
        if refusal is not None or cached:
            # Refused by one scope, or answered from the cache: give back what the others took.
            self.settle(ticket, None, None, refund=True)
            ticket = Ticket(request_id, this_minute, (), tokens, None)
        return Verdict(ticket, refusal, window, cached or None)

    def settle(
        self, ticket: Ticket, tokens: int | None, cost: float | None, refund: bool = False
    ) -> None:
        if not ticket.scopes and not (ticket.budget and cost):
            return
        # A copy: the ticket is emptied now, so that it is never settled twice.
        copy = Ticket(ticket.request_id, ticket.minute, ticket.scopes, ticket.tokens, ticket.budget)
        self._settlements.append((copy, tokens, cost, refund))
        ticket.scopes = ()
        ticket.budget = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Settle what is queued — every request that ended meanwhile — in one round trip."""
        await asyncio.sleep(0)  # let the requests ending in this loop iteration join
        while self._settlements:
            batch, self._settlements = self._settlements, []
            calls = [
                call
                for ticket, tokens, cost, refund in batch
                for call in _settlement(ticket, tokens, cost, refund)
            ]
            try:
                await self._scripts(calls)
            except StoreUnavailable:
                logger.debug("dropped %d settlements: Redis is unavailable", len(batch))

    async def _scripts(
        self, calls: list[tuple[str, list[str], list[Any]]], extra: list[tuple[str, str]] = ()
    ) -> list[Any]:
        """Run Lua scripts (and a few plain reads after them) in one round trip: a single
        call as it is, several pipelined. Scripts are loaded once (again after a Redis
        restart forgot them)."""
        shas = self._shas

        async def run(client: redis.Redis) -> list[Any]:
            if len(calls) == 1 and not extra:
                script, keys, args = calls[0]
                try:
                    return [await _evalsha(client, shas[script], keys, args)]
                except NoScriptError as forgotten:  # not a failure of Redis: see below
                    return [forgotten]
            pipe = client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(shas[script], len(keys), *keys, *args)
            for command, key in extra:
                pipe.execute_command(command.upper(), key)
            return await pipe.execute(raise_on_error=False)

        for attempt in (1, 2):
            if any(script not in shas for script, _, _ in calls):
                for script in {script for script, _, _ in calls}:
                    shas[script] = await self._call(lambda c, s=script: c.script_load(s))
            results = await self._call(run)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                shas.clear()  # Redis restarted and forgot them
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise StoreUnavailable(f"Redis failed: {result}")
            return results
        raise StoreUnavailable("Redis forgets its scripts")

    async def cache_put(self, cache_key: str, value: bytes, ttl: float) -> None:
        await self._call(lambda c: c.set(f"gw:c:{cache_key}", value, px=max(1, int(ttl * 1000))))

    # ------------------------------------------------------------ stored state

    async def state_get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(lambda c: c.get(f"gw:state:{key}"))
        return value

    async def state_put(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = max(1, int(ttl * 1000))
        await self._call(lambda c: c.set(f"gw:state:{key}", value, px=milliseconds))

    async def state_delete(self, key: str) -> bool:
        return bool(await self._call(lambda c: c.delete(f"gw:state:{key}")))

    # ------------------------------------------------------------ deployments

    def deployment_failed(self, name: str, cooling_until: float | None) -> None:
        if cooling_until is None:
            return
        message = f"cool {name} {cooling_until!r}"

        async def publish() -> None:
            with contextlib.suppress(StoreUnavailable):
                await self._call(lambda c: c.publish(EVENTS, message))

        asyncio.get_running_loop().create_task(publish())

    async def share_minute(self, this_minute: int, deltas: dict[str, tuple[int, int]]) -> dict:
        """Add this worker's requests and tokens per deployment this minute; the totals."""
        key = f"gw:{{d}}:{this_minute}"

        async def run(client: redis.Redis) -> Any:
            pipe = client.pipeline(transaction=False)
            for name, (requests, tokens) in deltas.items():
                if requests:
                    pipe.hincrby(key, f"r:{name}", requests)
                if tokens:
                    pipe.hincrby(key, f"t:{name}", tokens)
            pipe.expire(key, COUNTER_TTL)
            pipe.hgetall(key)
            return await pipe.execute()

        results = await self._call(run)
        totals: dict[str, list[int]] = {}
        for field, value in results[-1].items():
            kind, _, name = field.decode().partition(":")
            totals.setdefault(name, [0, 0])[0 if kind == "r" else 1] = int(value)
        return totals

    async def _listen(self) -> None:
        """Follow what other workers and the key command publish."""
        while self._listening:
            pubsub = None
            try:
                pubsub = self.connect().pubsub()
                await pubsub.subscribe(EVENTS)
                self._keys.clear()  # messages may have been missed while unsubscribed
                while self._listening:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    kind, *arguments = message["data"].decode().split(" ")
                    if kind == "key" and arguments:
                        self._keys.pop(arguments[0], None)
                    elif self.on_event is not None:
                        self.on_event(kind, arguments)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()


async def _evalsha(client: redis.Redis, sha: str, keys: list[str], args: list[Any]) -> Any:
    """One EVALSHA, packed by hiredis (redis-py packs commands in Python: a quarter of a
    call's cost) on a pooled connection, as redis-py's own commands do."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(
            hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)), check_health=False
        )
        return await connection.read_response()
    except (RedisError, OSError, asyncio.CancelledError):
        await connection.disconnect()  # a reply may still be on its way: never reuse it
        raise
    finally:
        await pool.release(connection)


def _settlement(
    ticket: Ticket, tokens: int | None, cost: float | None, refund: bool
) -> list[tuple[str, list[str], list[Any]]]:
    """The SETTLE calls of a request: one per scope it was admitted by."""
    calls = []
    budget = ticket.budget
    for scope in ticket.scopes:
        base = f"gw:{{{scope.tag}}}"
        adjustment = (tokens or 0) - ticket.tokens if scope.limits.tpm else 0
        spends = budget is not None and cost and scope.tag == f"k:{budget.key_id}"
        keys = [
            f"{base}:t:{ticket.minute}",
            f"{base}:r:{ticket.minute}",
            f"{base}:p",
            f"{base}:s:{budget.period}" if spends else f"{base}:s:none",  # type: ignore[union-attr]
        ]
        keep = int(budget.ttl + SPEND_KEEP) if spends and budget.ttl is not None else 0  # type: ignore[union-attr]
        args = [
            adjustment,
            1 if refund else 0,
            ticket.request_id if scope.limits.max_parallel else "",
            repr(cost) if spends else 0,
            keep,
        ]
        calls.append((SETTLE, keys, args))
    return calls
