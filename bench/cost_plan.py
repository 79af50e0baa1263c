"""What ``make bench-cost`` measures: its scenarios, targets and settings (BENCH_COST_*)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from bench.harness import (
    TARGETS,
    Target,
)
from bench.payloads import CHAT, RESPONSES, Api


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    targets: tuple[str, ...]
    api: Api = CHAT  # where the request goes, its body, how its stream ends
    model: str = "bench-model"  # bench-events-<n>: the mock streams n events
    events: int = 20  # events of a streamed answer (as the client gets them)
    plain: str | None = None  # the same request not streamed: per-chunk cost is the difference

    @property
    def body(self) -> bytes:
        return self.api.body(self.stream, self.model)


# Every target that serves the plain request (the others need hooks or a translating provider).
PLAIN_TARGETS = (
    "ceiling",
    "ceiling-raw",
    "ceiling-pooled",
    "gateway",
    "gateway-quiet",
    "gateway-keys",
    "gateway-keys-headless",
    "gateway-redis",
)

LONG_MODEL = "bench-events-500"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("chat", False, PLAIN_TARGETS),
        Scenario("stream", True, PLAIN_TARGETS, plain="chat"),
        Scenario("chat-hooks", False, ("gateway-hooks",)),
        Scenario("stream-hooks", True, ("gateway-hooks",), plain="chat-hooks"),
        # 500 token events, each its own HTTP chunk: what a stream costs per chunk, its
        # start and end spread thin ((this - plain) / events, against ceiling-raw's).
        Scenario("long-stream", True, PLAIN_TARGETS, model=LONG_MODEL, events=500, plain="chat"),
        Scenario(
            "long-stream-hooks",
            True,
            ("gateway-hooks",),
            model=LONG_MODEL,
            events=500,
            plain="chat-hooks",
        ),
        # The same stream from an Anthropic upstream, translated event by event: beside
        # "stream" on the gateway, it shows what translation costs over the passthrough.
        Scenario("anthropic-stream", True, ("gateway-anthropic",)),
        # The same Anthropic events from Claude on Bedrock (InvokeModelWithResponseStream):
        # beside anthropic-stream, what SigV4 signing and AWS's event-stream framing add.
        Scenario("bedrock-stream", True, ("gateway-bedrock",)),
        # The same request and stream in OpenAI's Responses API: passed through untouched
        # to a provider that serves it (the target: at most 1.05x "stream" on the
        # gateway), and translated both ways for a chat-only one (beside anthropic-stream).
        Scenario("responses-stream", True, ("gateway-responses",), RESPONSES),
        Scenario("responses-translated-stream", True, ("gateway-responses-translated",), RESPONSES),
    )
}


# ------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    requests: int = 1000
    warmup: int = 200
    top: int = 15
    targets: tuple[str, ...] = tuple(TARGETS)
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    profile: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            requests=whole_number("BENCH_COST_REQUESTS", cls.requests, minimum=1),
            warmup=whole_number("BENCH_COST_WARMUP", cls.warmup, minimum=0),
            top=whole_number("BENCH_COST_TOP", cls.top, minimum=0),
            targets=chosen_names("BENCH_COST_TARGETS", tuple(TARGETS), family=False),
            scenarios=chosen_names("BENCH_COST_SCENARIOS", tuple(SCENARIOS), family=True),
            profile=os.environ.get("BENCH_COST_PROFILE", "").strip() not in ("", "0"),
        )


def whole_number(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        sys.exit(f"bench: {name}: expected a whole number >= {minimum}, got {raw!r}")
    return int(raw)


def chosen_names(variable: str, known: tuple[str, ...], family: bool) -> tuple[str, ...]:
    raw = os.environ.get(variable, "").strip()
    if not raw or raw == "all":
        return known
    chosen: list[str] = []
    for name in (n.strip() for n in raw.split(",") if n.strip()):
        matches = [k for k in known if k == name or (family and k.startswith(name + "-"))]
        if not matches:
            sys.exit(f"bench: {variable}: unknown {name!r}; choose from {', '.join(known)}")
        chosen += [m for m in matches if m not in chosen]
    return tuple(k for k in known if k in chosen)


def plan(settings: Settings) -> list[tuple[Scenario, Target]]:
    """What to measure, in order. A scenario without the ceiling among its targets (the
    hooks scenarios) is compared with the ceiling's figure for the same request; if no
    selected scenario measures that, it is measured first, under this scenario's name.
    The ceiling forwards chat requests only: a Responses scenario is compared with the
    ceiling's chat figure (plain or streamed), measured first under "chat" or "stream"."""
    runs = [
        (SCENARIOS[name], TARGETS[target])
        for name in settings.scenarios
        for target in SCENARIOS[name].targets
        if target in settings.targets
    ]
    if "ceiling" in settings.targets:
        for scenario, target in list(runs):
            if not any(s.stream == scenario.stream and t.name == "ceiling" for s, t in runs):
                chat = SCENARIOS["stream" if scenario.stream else "chat"]
                base = scenario if scenario.api is CHAT else chat
                runs.insert(runs.index((scenario, target)), (base, TARGETS["ceiling"]))
    return runs
