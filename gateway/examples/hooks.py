"""Example hooks. Load one with ``GATEWAY_HOOKS=gateway.examples.hooks:UsageLog``.

A hook is a plain object; each method named after an event takes part in it.
"""

from __future__ import annotations

import logging

from gateway import PermissionDeniedError, RequestContext, UpstreamRequest

logger = logging.getLogger("gateway.usage")


class UsageLog:
    """Logs the token usage of every request that reports one, streamed or not.

    The gateway reads usage itself (a stream's from its last chunk, asked for on the
    client's behalf); this hook only reads the request's outcome when it is over.
    """

    def on_complete(self, ctx: RequestContext) -> None:
        usage = ctx.outcome.usage
        if usage is not None:
            key = ctx.outcome.key or "-"  # "-": no client keys on
            logger.info("%s %s %s tokens=%d", ctx.request_id, key, ctx.model, usage.total_tokens)


class BlockWords:
    """Refuses chat requests whose messages contain a blocked word (a tiny guardrail)."""

    blocked = ("password",)

    async def before_request(self, ctx: RequestContext, request: UpstreamRequest) -> None:
        if ctx.endpoint != "chat.completions":
            return
        for message in request.typed().messages:
            if any(word in message.text().lower() for word in self.blocked):
                raise PermissionDeniedError("This request contains a blocked word.")
