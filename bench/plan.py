"""What a ``make bench`` timing run measures: its settings, scenarios and runs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TypeVar

ALL_SCENARIOS = (
    "chat",
    "stream",
    "chat-hooks",
    "stream-hooks",
    "chat-keys",
    "stream-keys",
    "light",
    "ttfb",
    "open-streams",
)
# A virtual key with limits (bench/keys.toml), counted in memory and on a redis-server.
KEY_TARGETS = ("keys-memory", "keys-redis")
T = TypeVar("T", int, float)


@dataclass(frozen=True)
class Settings:
    """What ``make bench`` measures; every field has a ``BENCH_*`` variable (README)."""

    duration: float = 8.0  # seconds of each locust run
    users: int = 30  # locust users of the chat and stream scenarios
    rps: float = 0.0  # their total request rate; 0 = as fast as one locust process goes
    light_rps: float = 20.0  # the request rate of the light-load scenario
    rounds: int = 2  # how many times the targets take turns
    workers: int = 1  # worker processes of the ceiling and the gateway
    streams: int = 2000  # slow streams held open at once
    servers: tuple[str, ...] = ("granian",)
    scenarios: tuple[str, ...] = ALL_SCENARIOS

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            duration=_number("BENCH_DURATION", cls.duration, float),
            users=_number("BENCH_USERS", cls.users, int),
            rps=_number("BENCH_RPS", cls.rps, float, allow_zero=True),
            light_rps=_number("BENCH_LIGHT_RPS", cls.light_rps, float),
            rounds=_number("BENCH_ROUNDS", cls.rounds, int),
            workers=_number("BENCH_WORKERS", cls.workers, int),
            streams=_number("BENCH_STREAMS", cls.streams, int),
            servers=_servers(os.environ.get("BENCH_SERVER", "").strip() or "granian"),
            scenarios=_scenarios(os.environ.get("BENCH_SCENARIOS", "").strip() or "all"),
        )


def _number(name: str, default: T, kind: type[T], allow_zero: bool = False) -> T:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < 0 or (value == 0 and not allow_zero):
        sys.exit(f"bench: {name}: expected a positive {kind.__name__}, got {raw!r}")
    return value


def _servers(value: str) -> tuple[str, ...]:
    if value == "both":
        return ("granian", "robyn")
    if value not in ("granian", "robyn"):
        sys.exit(f"bench: BENCH_SERVER: expected granian, robyn or both, got {value!r}")
    return (value,)


def _scenarios(value: str) -> tuple[str, ...]:
    if value == "all":
        return ALL_SCENARIOS
    chosen = []
    for name in (v.strip() for v in value.split(",") if v.strip()):
        # A prefix selects a family: "stream" is stream and stream-hooks.
        matches = [s for s in ALL_SCENARIOS if s == name or s.startswith(name + "-")]
        if not matches:
            sys.exit(
                f"bench: BENCH_SCENARIOS: unknown {name!r}; choose from {', '.join(ALL_SCENARIOS)}"
            )
        chosen += [m for m in matches if m not in chosen]
    return tuple(s for s in ALL_SCENARIOS if s in chosen)


@dataclass(frozen=True)
class Scenario:
    name: str
    locust: str  # the locustfile's BENCH_SCENARIO
    users: int
    rate: float  # per user per second; 0 = as fast as possible
    targets: tuple[str, ...]
    duration: float
    spawn_rate: float
    warmup: float = 1.0
    hooks: bool = False
    rounds: int | None = None  # None: Settings.rounds


ALL_TARGETS = ("direct", "ceiling", "gateway")


def scenarios(settings: Settings) -> list[Scenario]:
    d, users = settings.duration, settings.users
    per_user = settings.rps / users if settings.rps else 0.0  # 0: as fast as locust can
    streams, spawn = settings.streams, 500.0
    table = {
        "chat": Scenario("chat", "chat", users, per_user, ALL_TARGETS, d, users),
        "stream": Scenario("stream", "stream", users, per_user, ALL_TARGETS, d, users),
        # The hook chain runs on the gateway only; the ceiling and direct runs are shared.
        "chat-hooks": Scenario(
            "chat-hooks", "chat", users, per_user, ("gateway",), d, users, hooks=True
        ),
        "stream-hooks": Scenario(
            "stream-hooks", "stream", users, per_user, ("gateway",), d, users, hooks=True
        ),
        # The same key's limits in each worker's memory, then shared through Redis.
        "chat-keys": Scenario("chat-keys", "chat", users, per_user, KEY_TARGETS, d, users),
        "stream-keys": Scenario("stream-keys", "stream", users, per_user, KEY_TARGETS, d, users),
        # One user, requests one after another: latency with no queueing inside locust.
        "light": Scenario("light", "chat", 1, settings.light_rps, ALL_TARGETS, d, 1),
        # Ten users spawned 0.1 s apart, each opening a one-second stream every second.
        "ttfb": Scenario("ttfb", "ttfb", 10, 1.0, ALL_TARGETS, d, 10),
        # Every user holds one slow stream (20 events 1 s apart) to the end of the run.
        "open-streams": Scenario(
            "open-streams",
            "slow-stream",
            streams,
            0,
            ("ceiling", "gateway"),
            streams / spawn + 20 + 6,
            spawn,
            warmup=0,
            rounds=1,
        ),
    }
    return [table[name] for name in settings.scenarios]


# ---------------------------------------------------------------------------- runs


@dataclass
class Run:
    scenario: str
    target: str
    round: int
    requests: int
    failures: int
    seconds: float
    samples: list[float]
    cpu_seconds: float
    rss_idle: int
    rss_peak: int
    gap_max: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else float("nan")

    def percentile(self, p: float) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
