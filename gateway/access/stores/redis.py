"""The Redis store: keys, limits, budgets, cache and deployment state shared by every
worker of every replica (redis-py's asyncio client with hiredis, a pool per worker), on
one Redis server or a Redis Cluster (``GATEWAY_REDIS_CLUSTER``).

Limits and budgets are admitted against leases (``redis_limits``): most requests with no
round trip at all, the others with one, and settlements summed and sent in batches.
Every key of a scope carries its hash tag (``gw:{k:<key id>}:…``), so that the scripts
that change them work on a cluster.

Key records are cached in the worker and refreshed every ``KEY_TTL`` seconds; a change
made by ``python -m gateway keys`` is published on ``gw:events`` and drops the cached
record at once in every worker. Cooldowns are published there too, and the
deployments' requests and tokens this minute are summed in Redis every second.

Every call is bounded by ``timeout``. A failure raises ``StoreUnavailable`` and opens a
breaker for ``BREAKER_SECONDS``: calls then fail at once instead of waiting, and the
gateway decides what to do (``GATEWAY_REDIS_FAILURE``). The client reconnects by itself
(and, on a cluster, finds the new primary of a slot after a failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from ..keys import Key, decode_key, encode_key
from . import StoreUnavailable
from .redis_limits import LeasedLimits
from .redis_scripts import COUNTER_TTL

logger = logging.getLogger("gateway")

KEY_TTL = 30.0  # seconds a worker trusts its copy of a key record
UNKNOWN_TTL = 2.0  # seconds it remembers that a hash is no key (bounded: see _remember)
BREAKER_SECONDS = 1.0  # after a failure, calls fail at once this long
EVENTS = "gw:events"


def redis_client(url: str, timeout: float, cluster: bool = False) -> Any:
    """A pooled asyncio client of one server, or of a cluster found from one node."""
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=False,
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=RedisRetry(NoBackoff(), 0),  # fail at once; the breaker paces retries
        health_check_interval=30,
        decode_responses=False,
    )


class RedisStore:
    def __init__(
        self,
        url: str,
        timeout: float = 0.05,
        on_event: Callable[[str, list[str]], None] | None = None,
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.cluster = cluster
        self.on_event = on_event  # (kind, arguments) of what other workers published
        self.client: Any = None  # redis.Redis, or RedisCluster
        self._shas: dict[str, str] = {}  # Lua script -> its SHA in Redis
        self._down_until = 0.0
        self._keys: dict[str, tuple[Key | None, float]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._on_failure: Callable[[], None] | None = None
        # Admission, settlement: the store's interface, served by the leases.
        self.limits = LeasedLimits(self._scripts)
        self.admit_now = self.limits.admit_now
        self.admit = self.limits.admit
        self.settle = self.limits.settle

    # ------------------------------------------------------------ lifecycle

    def connect(self) -> Any:
        return redis_client(self.url, self.timeout, self.cluster)

    async def start(self, listen: bool = True) -> None:
        """Open the pool; with ``listen``, follow what other workers publish (a worker
        does; the key command does not)."""
        self.client = self.connect()
        self.limits.start()
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
        await self.limits.stop()  # every lease handed back, every settlement sent
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def on_failure(self, callback: Callable[[], None]) -> None:
        self._on_failure = callback

    async def _call(self, operation: Callable[[Any], Any]) -> Any:
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

        def save(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.set(f"gw:key:{key.secret_sha256}", data)
            pipe.set(f"gw:keyid:{key.id}", key.secret_sha256)
            pipe.sadd("gw:keys", key.id)
            return pipe.execute()

        await self._call(save)
        # Published once saved (and apart: a cluster's pipelines carry no PUBLISH).
        await self._call(lambda c: c.publish(EVENTS, f"key {key.secret_sha256}"))
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

    async def _scripts(
        self, calls: list[tuple[str, list[str], list[Any]]], extra: list[tuple[str, str]] = ()
    ) -> list[Any]:
        """Run Lua scripts (and a few plain reads after them) in one round trip: a single
        call as it is, several pipelined. Scripts are loaded once (again after a Redis
        restart forgot them)."""
        if not calls and not extra:
            return []
        shas = self._shas
        single = _evalsha if not self.cluster else _evalsha_on_cluster

        async def run(client: Any) -> list[Any]:
            if len(calls) == 1 and not extra:
                script, keys, args = calls[0]
                try:
                    return [await single(client, shas[script], keys, args)]
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

        async def run(client: Any) -> Any:
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

    async def _node(self) -> redis.Redis:
        """A client of one server: the server, or any node of the cluster (a message
        published on one node of a cluster reaches every node's subscribers)."""
        if not self.cluster:
            return self.connect()
        await self.client.initialize()
        node = random.choice(self.client.get_nodes())
        return redis.Redis(
            host=node.host,
            port=node.port,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
        )

    async def _listen(self) -> None:
        """Follow what other workers and the key command publish."""
        while self._listening:
            pubsub = None
            try:
                pubsub = (await self._node()).pubsub()
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


async def _evalsha_on_cluster(client: Any, sha: str, keys: list[str], args: list[Any]) -> Any:
    """One EVALSHA on a cluster: redis-py sends it to the primary of the keys' slot."""
    return await client.evalsha(sha, len(keys), *keys, *args)
