"""Deployments — the upstreams one public model can be served by — and choosing one.

Each worker keeps its own view of every deployment: requests in flight, an EWMA of time
to first byte, recent failures, cooldown, and requests and tokens this minute.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Collection, Sequence

from ..providers import Provider
from .policy import Cooldown

STRATEGIES = ("least-inflight", "round-robin", "weighted", "lowest-latency")
LATENCY_WEIGHT = 0.2  # of each new sample in the time-to-first-byte average


class Deployment:
    """A provider and the model name it is asked for, with optional weight, hints, timeout.

    ``rpm`` / ``tpm`` are hints: a deployment past its requests or tokens for the current
    minute is chosen only when every other one is too. ``timeout`` overrides the model's
    time-to-first-byte timeout for this deployment.
    """

    __slots__ = (
        "_failures",
        "_minute",
        "cooling_until",
        "header",
        "inflight",
        "last_failure",
        "latency",
        "measured",
        "minute_requests",
        "minute_tokens",
        "name",
        "own_requests",
        "own_tokens",
        "provider",
        "rpm",
        "timeout",
        "tpm",
        "upstream_model",
        "weight",
    )

    def __init__(
        self,
        provider: Provider,
        upstream_model: str | None = None,
        *,
        weight: float = 1.0,
        rpm: int | None = None,
        tpm: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if weight <= 0:
            raise ValueError(f"a deployment's weight must be positive, got {weight}")
        self.provider = provider
        self.upstream_model = upstream_model
        self.name = f"{provider.name}/{upstream_model}" if upstream_model else provider.name
        self.header = ("x-gateway-deployment", self.name)  # built once, sent with each answer
        self.weight = weight
        self.rpm = rpm
        self.tpm = tpm
        self.timeout = timeout
        self.inflight = 0
        self.latency: float | None = None
        self.measured = False  # whether its latency is wanted (by the lowest-latency strategy)
        self._failures: deque[float] = deque()
        self.cooling_until = 0.0
        self.last_failure = 0.0
        self._minute = 0
        self.minute_requests = 0
        self.minute_tokens = 0
        # This worker's own requests and tokens, ever (shared through a store each second).
        self.own_requests = 0
        self.own_tokens = 0

    def cooling(self, now: float) -> bool:
        return now < self.cooling_until

    def over_budget(self, now: float) -> bool:
        if (self.rpm is None and self.tpm is None) or int(now // 60) != self._minute:
            return False
        return (self.rpm is not None and self.minute_requests >= self.rpm) or (
            self.tpm is not None and self.minute_tokens >= self.tpm
        )

    def started(self, now: float) -> None:
        self.inflight += 1
        if self.rpm is not None or self.tpm is not None:
            minute = int(now // 60)
            if minute != self._minute:
                self._minute, self.minute_requests, self.minute_tokens = minute, 0, 0
            self.minute_requests += 1
            self.own_requests += 1

    def answered(self, seconds: float) -> None:
        """The first byte came after ``seconds``: fold it into the latency average."""
        latency = self.latency
        self.latency = (
            seconds if latency is None else latency + LATENCY_WEIGHT * (seconds - latency)
        )

    def ended(self, tokens: int = 0) -> None:
        """A request that ``started`` here is over; ``tokens`` it used count this minute."""
        self.inflight -= 1
        if tokens and self.tpm is not None:
            self.minute_tokens += tokens
            self.own_tokens += tokens

    def shared(self, now: float, requests: int, tokens: int) -> None:
        """Every worker's requests and tokens this minute (this one's included), from the
        shared store: they replace this worker's own count — also one of an earlier
        minute, and one that went on from a minute the store has turned since."""
        self._minute = int(now // 60)
        self.minute_requests, self.minute_tokens = requests, tokens

    def failed(self, now: float, cooldown: Cooldown) -> bool:
        """Count a failure; ``True`` when it sends the deployment into cooldown."""
        self.last_failure = now
        failures = self._failures
        failures.append(now)
        while failures and failures[0] <= now - cooldown.window:
            failures.popleft()
        if len(failures) >= cooldown.failures:
            failures.clear()
            self.cooling_until = now + cooldown.seconds
            return True
        return False

    def __repr__(self) -> str:
        return f"<Deployment {self.name}>"


class Balancer:
    """Chooses a deployment for each attempt of a request, by the model's strategy."""

    __slots__ = ("_counter", "_single", "deployments", "strategy")

    def __init__(self, deployments: Sequence[Deployment], strategy: str = "least-inflight") -> None:
        if not deployments:
            raise ValueError("a model needs at least one deployment")
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        self.deployments = tuple(deployments)
        self.strategy = strategy
        self._counter = itertools.count()
        self._single = deployments[0] if len(deployments) == 1 else None
        if strategy == "lowest-latency":
            for deployment in deployments:
                deployment.measured = True

    def pick(self, now: float, tried: Collection[Deployment] = ()) -> Deployment:
        """The deployment for the next attempt.

        Untried, not cooling and within budget comes first; then not cooling (a retry
        may go back to a deployment, as it must when there is only one); when every
        deployment is cooling, the one that failed longest ago, rather than none.
        """
        if self._single is not None:
            return self._single
        pool = [d for d in self.deployments if d not in tried and not d.cooling(now)]
        if not pool:
            pool = [d for d in self.deployments if not d.cooling(now)]
            if not pool:
                return min(self.deployments, key=lambda d: d.last_failure)
        within = [d for d in pool if not d.over_budget(now)]
        return self._choose(within or pool)

    def _choose(self, pool: list[Deployment]) -> Deployment:
        if len(pool) == 1:
            return pool[0]
        strategy = self.strategy
        if strategy == "least-inflight":
            fewest = min(d.inflight for d in pool)
            return random.choice([d for d in pool if d.inflight == fewest])
        if strategy == "round-robin":
            # The next in the rotation that may be chosen: a retry goes to the one after.
            rotation, start = self.deployments, next(self._counter)
            turns = (rotation[(start + i) % len(rotation)] for i in range(len(rotation)))
            return next(d for d in turns if d in pool)
        if strategy == "weighted":
            return random.choices(pool, weights=[d.weight for d in pool])[0]
        # lowest-latency: a deployment without a sample yet is tried first.
        return min(pool, key=lambda d: -1.0 if d.latency is None else d.latency)
