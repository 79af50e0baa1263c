"""Example hooks. Load one with ``GATEWAY_HOOKS=gateway.examples.hooks:UsageLog``.

A hook is a plain object; each method named after an event takes part in it.
"""

from __future__ import annotations

import logging

from gateway import PermissionDeniedError, RequestContext, Response, SSEEvent, UpstreamRequest

logger = logging.getLogger("gateway.usage")


class UsageLog:
    """Logs the token usage of every chat completion, streamed or not."""

    def before_request(self, ctx: RequestContext, request: UpstreamRequest) -> None:
        if ctx.endpoint == "chat.completions" and ctx.stream:
            # Ask the upstream to report usage in its last chunk, so streams are counted too.
            request.json["stream_options"] = {"include_usage": True}

    def after_response(self, ctx: RequestContext, response: Response) -> None:
        if ctx.endpoint == "chat.completions":
            usage = response.typed().usage
            if usage:
                self._log(ctx, usage.total_tokens)

    def on_chunk(self, ctx: RequestContext, event: SSEEvent) -> None:
        if ctx.endpoint == "chat.completions" and b'"usage"' in event.raw:
            chunk = event.typed()
            if chunk is not None and chunk.usage:
                self._log(ctx, chunk.usage.total_tokens)

    def _log(self, ctx: RequestContext, tokens: int) -> None:
        logger.info("%s %s %s tokens=%d", ctx.request_id, ctx.identity, ctx.model, tokens)


class BlockWords:
    """Refuses chat requests whose messages contain a blocked word (a tiny guardrail)."""

    blocked = ("password",)

    async def before_request(self, ctx: RequestContext, request: UpstreamRequest) -> None:
        if ctx.endpoint != "chat.completions":
            return
        for message in request.typed().messages:
            if any(word in message.text().lower() for word in self.blocked):
                raise PermissionDeniedError("This request contains a blocked word.")
