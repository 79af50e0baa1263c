"""One record per request: what happened to it, filled as it goes, final exactly once.

The core fills an ``Outcome`` while it handles a request — the route, each attempt, the
first byte, the usage — and closes it at the request's single exit: the end of the
handler for a whole answer, the release of the stream for a streamed one. Hooks see it
through ``on_complete(ctx)`` as ``ctx.outcome``; the access log, the metrics and the
budgets are consumers of that one event.
"""

from __future__ import annotations

import msgspec

# How a request ended (``Outcome.outcome``).
ANSWERED = "answered"  # a whole answer was sent (an upstream's, a hook's or a cache's)
STREAMED = "streamed"  # a stream was relayed to its end
STREAM_BROKEN = "stream_broken"  # the upstream (or a chunk hook) broke the stream mid-way
IDLE_TIMEOUT = "idle_timeout"  # the upstream fell silent mid-stream for too long
CLIENT_LEFT = "client_left"  # the client went away before the answer was complete
DRAINED = "drained"  # ended by the gateway's shutdown after the drain time
REFUSED = "refused"  # the gateway refused the request (4xx of its own)
UPSTREAM_ERROR = "upstream_error"  # no upstream gave an answer (error status, timeout…)
FAILED = "failed"  # a bug or a failing hook inside the gateway (500)

# The status logged for a client that left before it got its status (nginx's convention).
CLIENT_CLOSED = 499


class Usage(msgspec.Struct, gc=False):
    """Tokens of one answer, in OpenAI's terms; the cached and cache-write tokens are
    part of ``prompt_tokens``, the reasoning tokens part of ``completion_tokens``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Outcome(msgspec.Struct, gc=False):
    """The facts about one request; encoded as they stand, they are its access-log line.

    Times are milliseconds: ``ttfb_ms`` from arrival to the first byte handed to the
    server, ``duration_ms`` to the last, ``upstream_ms`` spent waiting on upstreams (all
    attempts and the waits between them) until the answer's first byte, and
    ``overhead_ms`` the gateway's own share of the time to first byte.
    """

    request_id: str
    time: float  # Unix seconds when the request arrived
    method: str = ""
    path: str = ""
    endpoint: str = ""
    model: str | None = None  # as the client named it
    fallback: str | None = None  # the fallback model that answered, when one did
    upstream_model: str | None = None
    provider: str | None = None
    deployment: str | None = None
    key: str | None = None  # the caller's key id, never the key
    stream: bool = False
    status: int = 0
    outcome: str = ""
    error_type: str | None = None
    error_code: str | None = None
    attempts: int = 0
    ttfb_ms: float | None = None
    duration_ms: float = 0.0
    upstream_ms: float | None = None
    overhead_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    usage: Usage | None = None
    cost: float | None = None
    cache: str | None = None  # hit, miss or bypass, when a cache took part
    upstream_request_id: str | None = None
    trace_id: str | None = None
    client: str | None = None
    user_agent: str | None = None
