"""The spend ledger: requests, errors, tokens and cost per hour, key (and team), model
(and deployment); and the last requests this worker set answered.

A hook (``on_complete``) adds each finished request to a dict keyed by the hour it arrived
in and who and what it was for — one lookup and a few additions, no I/O. Where the
counts meet:

- with Redis (``GATEWAY_REDIS_URL``): each worker adds what it counted since its last
  flush to a hash per hour (``gw:ledger:<hour>``, ``HINCRBY``/``HINCRBYFLOAT``, expiring
  after the retention) in one pipelined round trip, at most once a second; a read sums
  the hours' hashes, so every worker of every replica is counted;
- in memory: each worker writes its ledger to the directory the workers share (as the
  metrics do): this hour's counts (``<pid>.ledger``) every second they changed, earlier
  hours' (``<pid>.ledger-past``) when one of them did; a read sums the files.

The last ``RECENT`` requests of each worker (their outcome records: no bodies, no
secrets) are written beside them (``<pid>.recent``) for the admin API's request list,
latency percentiles and per-deployment counts: that view is of this worker set (one
host), never of other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.outcome import Outcome

if TYPE_CHECKING:
    from ..core.context import RequestContext

logger = logging.getLogger("gateway")

FLUSH_INTERVAL = 1.0  # seconds between a worker's flushes (Redis) or snapshots (files)
# The recent requests go to the shared directory only while someone reads them (the
# console, the admin API): a thousand outcomes take milliseconds to write, too much to do
# every second on every worker for nobody. A read marks them wanted for this long.
WANTED_FOR = 120.0
RECENT = 1000  # outcomes kept per worker
MAX_ROWS_PER_HOUR = 10_000  # distinct (key, team, model, deployment) per worker-hour
OTHER = "other"  # the model of rows past that bound (clients inventing model names)
HOUR = 3600
# The counted values of a row, in this order.
FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")
_REDIS_FIELD = ("r", "e", "p", "c", "k", "$")  # their names in a Redis hash

Who = tuple[str, str, str, str]  # key, team, model, deployment ("" when none)
Rows = dict[int, dict[Who, list[float]]]  # hour (Unix seconds // 3600) -> who -> values


class LedgerSnapshot(msgspec.Struct):
    """One worker's ledger, as written to its file."""

    pid: int
    rows: list[tuple[int, Who, list[float]]]
    last_used: dict[str, float]


_encode = msgspec.msgpack.Encoder().encode
_decode_ledger = msgspec.msgpack.Decoder(LedgerSnapshot).decode
_decode_recent = msgspec.msgpack.Decoder(list[Outcome]).decode
_json = msgspec.json.Encoder().encode
_unjson = msgspec.json.Decoder(tuple[str, str, str, str]).decode


class Ledger:
    """A hook: counts each finished request; reads the counts back for the admin API.

    ``directory`` is shared by the workers of one gateway (``None``: this process only);
    ``redis_url`` makes Redis the place the counts meet.
    """

    def __init__(
        self,
        retention_days: int = 90,
        directory: str | None = None,
        redis_url: str | None = None,
        redis_timeout: float = 1.0,
        redis_cluster: bool = False,
    ) -> None:
        self.retention_hours = retention_days * 24
        self.directory = Path(directory) if directory else None
        self.redis_url = redis_url
        self.redis_timeout = redis_timeout
        self.redis_cluster = redis_cluster
        self._rows: Rows = {}  # in memory: everything kept; with Redis: not yet flushed
        self._last_used: dict[str, float] = {}
        self._recent: deque[Outcome] = deque(maxlen=RECENT)
        self._changed = False
        self._hot = 0  # the hour the worker's file holds; earlier ones are in another
        self._past_changed = True  # whether an earlier hour changed since that file
        self._recent_changed = False
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._failed_at = 0.0

    def __repr__(self) -> str:
        return "<Ledger in Redis>" if self.redis_url else "<Ledger>"

    # ------------------------------------------------------------ counting

    def on_complete(self, ctx: RequestContext) -> None:
        """One dict update per request (the hot path: nothing else)."""
        outcome = ctx.outcome
        hour = int(outcome.time // HOUR)
        table = self._rows.get(hour)
        if table is None:
            table = self._rows[hour] = {}
        if hour != self._hot:
            self._past_changed = True
        key = outcome.key or ""
        team = getattr(ctx.identity, "team", None) or ""
        who = (key, team, outcome.model or "", outcome.deployment or "")
        values = table.get(who)
        if values is None:
            if len(table) >= MAX_ROWS_PER_HOUR:
                who = (who[0], who[1], OTHER, who[3])
                values = table.get(who)
            if values is None:
                values = table[who] = _zero()
        values[0] += 1
        if outcome.status >= 400:
            values[1] += 1
        usage = outcome.usage
        if usage is not None:
            values[2] += usage.prompt_tokens
            values[3] += usage.completion_tokens
            values[4] += usage.cached_tokens
        if outcome.cost is not None:
            values[5] += outcome.cost
        if key:
            self._last_used[key] = outcome.time
        self._recent.append(outcome)  # final: nothing writes it after on_complete
        self._changed = self._recent_changed = True

    # ------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        if self.redis_url is not None:
            from ..access.stores.redis import redis_client

            self._client = redis_client(self.redis_url, self.redis_timeout, self.redis_cluster)
        if self._client is not None or self.directory is not None:
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:
                logger.exception("cannot write the spend ledger")

    async def flush(self) -> None:
        """Hand what was counted to where the workers' counts meet."""
        self._prune(int(time.time() // HOUR) - self.retention_hours)
        if self._client is not None:
            await self._flush_redis()
        if self.directory is not None:
            self._write_files()

    def _prune(self, oldest: int) -> None:
        """Drop hours past the retention."""
        for hour in [h for h in self._rows if h < oldest]:
            del self._rows[hour]
            self._changed = self._past_changed = True

    # ------------------------------------------------------------ Redis

    async def _flush_redis(self) -> None:
        if not self._rows and not self._last_used:
            return
        rows, self._rows = self._rows, {}
        last_used, self._last_used = self._last_used, {}
        keep = (self.retention_hours + 1) * HOUR
        pipe = self._client.pipeline(transaction=False)
        for hour, table in rows.items():
            name = f"gw:ledger:{hour}"
            for who, values in table.items():
                field = _json(who).decode()
                for short, value in zip(_REDIS_FIELD, values, strict=True):
                    if value and short == "$":
                        pipe.hincrbyfloat(name, f"$:{field}", value)
                    elif value:
                        pipe.hincrby(name, f"{short}:{field}", int(value))
            pipe.expire(name, keep)
        if last_used:
            pipe.hset("gw:ledger:last", mapping=last_used)
        try:
            await pipe.execute()
        except Exception as exc:
            self._merge_back(rows, last_used)
            now = time.monotonic()
            if now - self._failed_at >= 30:
                self._failed_at = now
                logger.error("cannot add to the spend ledger in Redis (kept, retried): %s", exc)

    def _merge_back(self, rows: Rows, last_used: dict[str, float]) -> None:
        """A flush that failed: its counts wait for the next one."""
        for hour, table in rows.items():
            mine = self._rows.setdefault(hour, {})
            for who, values in table.items():
                _add(mine, who, values)
        for key, at in last_used.items():
            self._last_used[key] = max(at, self._last_used.get(key, 0.0))

    async def _read_redis(self, first: int, last: int) -> tuple[Rows, dict[str, float]]:
        pipe = self._client.pipeline(transaction=False)
        hours = list(range(first, last + 1))
        for hour in hours:
            pipe.hgetall(f"gw:ledger:{hour}")
        pipe.hgetall("gw:ledger:last")
        *tables, last_used = await pipe.execute()
        rows: Rows = {}
        for hour, table in zip(hours, tables, strict=True):
            if not table:
                continue
            mine = rows[hour] = {}
            for field, value in table.items():
                short, _, who_json = field.decode().partition(":")
                index = _REDIS_FIELD.index(short)
                values = mine.setdefault(_unjson(who_json), _zero())
                values[index] += float(value) if short == "$" else int(value)
        used = {k.decode(): float(v) for k, v in last_used.items()}
        return rows, used

    # ------------------------------------------------------------ files

    def _wanted(self) -> bool:
        """Whether someone read the recent requests lately (see ``WANTED_FOR``)."""
        assert self.directory is not None
        try:
            touched = (self.directory / "recent.wanted").stat().st_mtime
        except OSError:
            return False
        return time.time() - touched < WANTED_FOR

    def _write_files(self, force: bool = False) -> None:
        """This hour's counts every second they changed; earlier hours' (a retention's
        worth: large) only when one of them changed — at the hour's turn, mostly."""
        assert self.directory is not None
        pid = os.getpid()
        hot = int(time.time() // HOUR)
        if hot != self._hot:
            self._hot, self._past_changed = hot, True
        if self._changed and self._client is None:
            if self._past_changed:
                rows = self._snapshot(lambda hour: hour < hot).rows
                _write(self.directory / f"{pid}.ledger-past", LedgerSnapshot(pid, rows, {}))
                self._past_changed = False
            _write(self.directory / f"{pid}.ledger", self._snapshot(lambda hour: hour >= hot))
        self._changed = False
        if self._recent_changed and (force or self._wanted()):
            _write(self.directory / f"{pid}.recent", list(self._recent))
            self._recent_changed = False

    # ------------------------------------------------------------ reading

    async def read(self, first: int, last: int) -> tuple[Rows, dict[str, float]]:
        """Every worker's counts for the hours ``first`` to ``last`` (Unix seconds //
        3600), and when each key was last used."""
        if self._client is not None:
            await self.flush()  # this worker's own are current; the others' within 1 s
            return await self._read_redis(first, last)
        if self.directory is None:
            snapshots = [self._snapshot(lambda hour: True)]
        else:
            self._write_files()
            snapshots = [
                *_read_all(self.directory, ".ledger", _decode_ledger),
                *_read_all(self.directory, ".ledger-past", _decode_ledger),
            ]
        rows: Rows = {}
        last_used: dict[str, float] = {}
        for snapshot in snapshots:
            for hour, who, values in snapshot.rows:
                if first <= hour <= last:
                    _add(rows.setdefault(hour, {}), tuple(who), values)  # type: ignore[arg-type]
            for key, at in snapshot.last_used.items():
                last_used[key] = max(at, last_used.get(key, 0.0))
        return rows, last_used

    def _snapshot(self, hours: Callable[[int], bool]) -> LedgerSnapshot:
        rows = [
            (hour, who, values)
            for hour, table in self._rows.items()
            if hours(hour)
            for who, values in table.items()
        ]
        return LedgerSnapshot(os.getpid(), rows, self._last_used)

    def recent(self) -> list[Outcome]:
        """The last requests of every worker of this gateway, newest first."""
        if self.directory is None:
            outcomes = list(self._recent)
        else:
            wanted = self.directory / "recent.wanted"
            wanted.touch()  # the other workers write theirs from their next flush on
            self._write_files(force=True)  # this worker's own are always current
            batches = _read_all(self.directory, ".recent", _decode_recent)
            outcomes = [outcome for batch in batches for outcome in batch]
        outcomes.sort(key=lambda o: o.time, reverse=True)
        return outcomes


def totals(rows: Rows, index: int | None = None) -> dict[str, list[float]]:
    """The rows summed over every hour: all together (``""``), or per ``who[index]``."""
    sums: dict[str, list[float]] = {}
    for table in rows.values():
        for who, values in table.items():
            _sum(sums.setdefault("" if index is None else who[index], _zero()), values)
    return sums


def grouped(rows: Rows, index: int, seconds: int) -> list[tuple[int, str, list[float]]]:
    """The rows summed per period of ``seconds`` (its start) and ``who[index]``, sorted."""
    sums: dict[tuple[int, str], list[float]] = {}
    for hour, table in rows.items():
        period = hour * HOUR // seconds * seconds
        for who, values in table.items():
            _sum(sums.setdefault((period, who[index]), _zero()), values)
    return [(period, group, values) for (period, group), values in sorted(sums.items())]


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p95, by nearest rank (0 when there are none)."""
    if not values:
        return {"p50": 0.0, "p95": 0.0}
    values = sorted(values)
    last = len(values) - 1
    return {
        "p50": round(values[round(0.50 * last)], 3),
        "p95": round(values[round(0.95 * last)], 3),
    }


def _zero() -> list[float]:
    return [0, 0, 0, 0, 0, 0.0]


def _sum(total: list[float], values: list[float]) -> None:
    for i, value in enumerate(values):
        total[i] += value


def _add(table: dict[Who, list[float]], who: Who, values: list[float]) -> None:
    mine = table.get(who)
    if mine is None:
        table[who] = list(values)
    else:
        for i, value in enumerate(values):
            mine[i] += value


def _write(path: Path, value: object) -> None:
    temporary = path.with_suffix(".tmp-" + path.suffix[1:])
    temporary.write_bytes(_encode(value))
    temporary.replace(path)  # atomic: a read never sees half a file


def _read_all(directory: Path, suffix: str, decode: Any) -> Iterator[Any]:
    for path in directory.glob(f"*{suffix}"):
        with contextlib.suppress(OSError, msgspec.DecodeError, msgspec.ValidationError):
            yield decode(path.read_bytes())
