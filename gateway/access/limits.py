"""Rate limits: requests and tokens per minute, requests at once, budgets per period.

The algorithm is a sliding window counter (as Cloudflare and most gateways use): each
scope (a key, a model) counts requests and tokens per clock minute, and a request is
admitted when the current minute's count plus the previous minute's, weighted by how
much of it still falls in the last 60 seconds, leaves room for it. This bounds a burst:
over any 60 seconds, at most the limit passes when traffic is steady, and at most twice
the limit in the worst case (a full previous minute, all of it in its last instant, then
a full current minute at once) — in practice a few percent over, never more than 2×.

Tokens are counted from real usage after the answer; before it, a request reserves an
estimate (its ``max_tokens``/``max_completion_tokens`` plus a quarter of its body size
for the input), settled against the usage afterwards. A burst of long requests thus
cannot pass much more than the limit: each reserves its share up front.
"""

from __future__ import annotations

from math import ceil
from typing import NamedTuple, Protocol

import msgspec

WINDOW = 60.0  # seconds: limits are per minute
PARALLEL_TTL = 900.0  # a request slot is forgotten after this, should its end be lost

# What a request may still ask for when it sets no max_tokens: an estimate of its answer.
DEFAULT_COMPLETION_ESTIMATE = 256


class RateLimits(NamedTuple):
    """The limits of one scope; ``None``: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel)


class Scope(NamedTuple):
    """A set of limits and what it applies to: ``key:<hash>`` or ``model:<name>``."""

    id: str
    limits: RateLimits
    tag: str  # a Redis Cluster hash tag: every counter of the scope in one slot


class Refusal(NamedTuple):
    scope: str
    kind: str  # requests, tokens, parallel, budget
    retry_after: float  # seconds


class Window(NamedTuple):
    """What a scope's limit looked like at admission, for the x-ratelimit-* headers."""

    limit_requests: int | None
    remaining_requests: int | None
    limit_tokens: int | None
    remaining_tokens: int | None
    reset: float  # seconds until the oldest counted minute no longer counts

    @classmethod
    def of(
        cls,
        limits: RateLimits,
        used_requests: float,
        used_tokens: float,
        tokens: int,
        taken: bool,
        now: float,
    ) -> Window:
        """The window of a scope that had used this much (sliding counts) before a
        request of ``tokens``, which it ``taken`` or refused."""
        rpm, tpm, _ = limits
        # tuple.__new__ directly: a NamedTuple's own __new__ is one more Python call, and
        # this runs for every admitted request.
        return tuple.__new__(
            cls,
            (
                rpm,
                None if rpm is None else int(rpm - used_requests - taken),
                tpm,
                None if tpm is None else int(tpm - used_tokens - tokens * taken),
                WINDOW - now % WINDOW,
            ),
        )


def minute(now: float) -> int:
    return int(now // WINDOW)


def weight_of_previous(now: float) -> float:
    """How much of the previous minute still falls in the last 60 seconds."""
    return 1.0 - (now % WINDOW) / WINDOW


def retry_after(previous: float, current: float, amount: float, limit: float, now: float) -> float:
    """Seconds until ``amount`` more would fit under ``limit``, if nothing else came."""
    if amount > limit:
        return WINDOW  # never fits: try again after a minute (it will be refused again)
    into = now % WINDOW
    # The previous minute's weight falls linearly to 0 at the end of this minute; then
    # this minute becomes the previous one.
    if previous > 0 and current + amount <= limit:
        # previous * (1 - t/60) + current + amount <= limit  =>  t >= 60 * (1 - room/previous)
        room = limit - current - amount
        needed = WINDOW * (1 - room / previous)
        return max(0.5, needed - into)
    spill = current + amount - limit  # what must fall out of the next window's weight
    return max(0.5, WINDOW - into + WINDOW * spill / max(current, 1.0))


def estimate_tokens(body: bytes, max_tokens: int | None) -> int:
    """The tokens a request may use: its input (about 4 bytes a token) and its answer."""
    answer = DEFAULT_COMPLETION_ESTIMATE if max_tokens is None else max_tokens
    return len(body) // 4 + max(0, answer)


class _MaxTokens(msgspec.Struct, gc=False):
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None  # the Responses API's name


_decode_max = msgspec.json.Decoder(_MaxTokens).decode


def max_tokens_of(body: bytes) -> int | None:
    try:
        fields = _decode_max(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    for value in (fields.max_completion_tokens, fields.max_tokens, fields.max_output_tokens):
        if value is not None:
            return value
    return None


def reserved_tokens(body: bytes) -> int:
    """``estimate_tokens`` of a request body, in one call: every request of a key with a
    token limit reserves it."""
    try:
        fields = _decode_max(body)
    except (msgspec.DecodeError, RecursionError):
        return len(body) // 4 + DEFAULT_COMPLETION_ESTIMATE
    answer = fields.max_completion_tokens
    if answer is None:
        answer = fields.max_tokens
        if answer is None:
            answer = fields.max_output_tokens
            if answer is None:
                answer = DEFAULT_COMPLETION_ESTIMATE
    return len(body) // 4 + (answer if answer > 0 else 0)


class AnswerBound(Protocol):
    """The bounds of an answer a request sets, as its first parse read them (the fields
    of wire/endpoints.py): each as sent, any JSON value, ``None`` when absent."""

    max_tokens: object
    max_completion_tokens: object
    max_output_tokens: object


def reserved_tokens_read(body: bytes, fields: AnswerBound) -> int:
    """``reserved_tokens(body)`` from the body's first parse, without reading it again:
    the same figure, a value that is not an integer included (as ``reserved_tokens``
    cannot decode such a body, it reserves the default)."""
    completion = fields.max_completion_tokens
    output = fields.max_output_tokens
    answer = fields.max_tokens
    if completion is not None or output is not None or type(answer) is not int:
        answer = DEFAULT_COMPLETION_ESTIMATE  # the usual case is max_tokens alone, or none
        # The last one set wins: completion, then max_tokens, then output, as
        # reserved_tokens reads them.
        for value in (output, fields.max_tokens, completion):
            if value is not None:
                if type(value) is not int:  # a bool, a float, a string: not decodable
                    return len(body) // 4 + DEFAULT_COMPLETION_ESTIMATE
                answer = value
    return len(body) // 4 + (answer if answer > 0 else 0)


def _spelled(whole: int) -> str:
    """Whole seconds in OpenAI's spelling: ``6s``, ``6m0s``, ``1h2m3s``."""
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# A window's reset is at most a minute away: those spellings are made once, not per request.
_SPELLED = tuple(_spelled(whole) for whole in range(int(WINDOW) + 1))


def reset_text(seconds: float) -> str:
    """OpenAI's spelling of a reset time: ``60ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    whole = ceil(seconds)  # as Retry-After rounds
    return _SPELLED[whole] if whole <= WINDOW else _spelled(whole)


# Header lines many responses share, made once: each reset of the window (whole seconds
# up to a minute), and each limit (a few values: the keys' and the models').
_RESETS = tuple(
    (("x-ratelimit-reset-requests", text), ("x-ratelimit-reset-tokens", text)) for text in _SPELLED
)
_LIMIT_REQUESTS: dict[int, tuple[str, str]] = {}
_LIMIT_TOKENS: dict[int, tuple[str, str]] = {}
MAX_LIMIT_LINES = 1024  # distinct limits remembered; past it, the memory starts over


def _limit_line(lines: dict[int, tuple[str, str]], name: str, limit: int) -> tuple[str, str]:
    if len(lines) >= MAX_LIMIT_LINES:
        lines.clear()
    line = lines[limit] = (name, str(limit))
    return line


def rate_limit_headers(window: Window) -> list[tuple[str, str]]:
    """The ``x-ratelimit-*`` headers OpenAI clients read, for the limits there are.

    Every response of a limited key carries them: only the two remaining counts are
    spelled per request, the other lines are made once.
    """
    limit_requests, remaining_requests, limit_tokens, remaining_tokens, reset = window
    if limit_requests is not None and limit_tokens is not None:  # the usual: both
        return minute_limit_headers(
            limit_requests,
            remaining_requests,  # type: ignore[arg-type]  # (set with its limit)
            limit_tokens,
            remaining_tokens,  # type: ignore[arg-type]
            reset,
        )
    reset_requests, reset_tokens = _reset_lines(reset)
    if limit_requests is not None:
        return [
            _LIMIT_REQUESTS.get(limit_requests)
            or _limit_line(_LIMIT_REQUESTS, "x-ratelimit-limit-requests", limit_requests),
            ("x-ratelimit-remaining-requests", _spelled_count(remaining_requests)),
            reset_requests,
        ]
    if limit_tokens is not None:
        return [
            _LIMIT_TOKENS.get(limit_tokens)
            or _limit_line(_LIMIT_TOKENS, "x-ratelimit-limit-tokens", limit_tokens),
            ("x-ratelimit-remaining-tokens", _spelled_count(remaining_tokens)),
            reset_tokens,
        ]
    return []


def minute_limit_headers(
    limit_requests: int,
    remaining_requests: int,
    limit_tokens: int,
    remaining_tokens: int,
    reset: float,
) -> list[tuple[str, str]]:
    """``rate_limit_headers`` of a window with both limits, from its figures (no window
    made): the six lines of every response of the usual key."""
    if 1 <= reset <= WINDOW:
        reset_requests, reset_tokens = _RESETS[ceil(reset)]  # as reset_text() rounds
    else:
        reset_requests, reset_tokens = _reset_lines(reset)
    return [
        _LIMIT_REQUESTS.get(limit_requests)
        or _limit_line(_LIMIT_REQUESTS, "x-ratelimit-limit-requests", limit_requests),
        (
            "x-ratelimit-remaining-requests",
            str(remaining_requests) if remaining_requests > 0 else "0",
        ),
        reset_requests,
        _LIMIT_TOKENS.get(limit_tokens)
        or _limit_line(_LIMIT_TOKENS, "x-ratelimit-limit-tokens", limit_tokens),
        ("x-ratelimit-remaining-tokens", str(remaining_tokens) if remaining_tokens > 0 else "0"),
        reset_tokens,
    ]


def _reset_lines(reset: float) -> tuple[tuple[str, str], tuple[str, str]]:
    if 1 <= reset <= WINDOW:
        return _RESETS[ceil(reset)]
    reset_in = reset_text(reset)
    return ("x-ratelimit-reset-requests", reset_in), ("x-ratelimit-reset-tokens", reset_in)


def _spelled_count(remaining: int | None) -> str:
    return str(remaining) if remaining is not None and remaining > 0 else "0"
