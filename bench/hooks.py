"""The hook chain of the ``-hooks`` scenarios; ``GATEWAY_API_KEYS`` is the key check."""

from __future__ import annotations

from gateway import RequestContext, SSEEvent, UpstreamRequest


class TagRequest:
    """Edits every request body: tags it with the caller's identity, as a team policy would."""

    def before_request(self, ctx: RequestContext, request: UpstreamRequest) -> None:
        request.json["user"] = ctx.identity


class CountEvents:
    """Inspects every streamed event: counts the events that carry data."""

    def __init__(self) -> None:
        self.events = 0

    def on_chunk(self, ctx: RequestContext, event: SSEEvent) -> None:
        data = event.data
        if data is not None and data != b"[DONE]":
            self.events += 1
