"""Hooks the integration tests load by import path, as an operator would."""

from __future__ import annotations

import msgspec

from gateway import (
    MockProvider,
    PermissionDeniedError,
    RateLimitError,
    RequestContext,
    SSEEvent,
    UpstreamRequest,
)
from gateway.providers import provider_type

HOOK_KEY = "hook-only-key"


class AuthenticateAndRewrite:
    """One object, two roles: it accepts its own key, and it edits every chat request."""

    def authenticate(self, ctx: RequestContext, api_key: str | None) -> str | None:
        return "hook-user" if api_key == HOOK_KEY else None

    async def before_request(self, ctx: RequestContext, request: UpstreamRequest) -> None:
        if ctx.endpoint == "chat.completions":
            request.json["temperature"] = 0.25
            request.json["x_identity"] = str(ctx.identity)
            request.headers.append(("x-hooked", "yes"))


class ShoutingChunks:
    """Upper-cases streamed content and drops chunks that say 'tok1 '."""

    def on_chunk(self, ctx: RequestContext, event: SSEEvent) -> None:
        if ctx.endpoint != "chat.completions":
            return
        chunk = event.typed()
        if chunk is None or not chunk.choices:
            return
        delta = chunk.choices[0].delta
        if delta.content == "tok1 ":
            event.drop()
        elif isinstance(delta.content, str):
            delta.content = delta.content.upper()


class Refuser:
    """Refuses or breaks requests by their model's name, as a policy hook would."""

    def before_request(self, ctx: RequestContext, request: UpstreamRequest) -> None:
        if ctx.model == "forbidden":
            raise PermissionDeniedError("not for you")
        if ctx.model == "limited":
            raise RateLimitError("slow down", retry_after=3)
        if ctx.model == "crash":
            raise RuntimeError("a bug in a hook")


class UpperSettings(msgspec.Struct, forbid_unknown_fields=True):
    upper: bool = True


@provider_type("echo-upper")
class UpperEchoProvider(MockProvider):
    """A provider type of the user's own, registered from a hook module: the config file
    may name it as soon as the module is loaded (GATEWAY_HOOKS loads it first)."""

    Settings = UpperSettings

    @classmethod
    def from_settings(cls, name, settings, environ):
        return cls(name, upper=settings.upper)

    def __init__(self, name: str = "echo-upper", *, upper: bool = True) -> None:
        super().__init__(name)
        self.upper = upper

    async def send(self, ctx, request):
        response = await super().send(ctx, request)
        if self.upper and not response.streamed:
            response._body = response._body.replace(b"mock response", b"MOCK RESPONSE")
        return response


class Marker:
    """A hook, so that the module can be listed in GATEWAY_HOOKS."""

    def on_complete(self, ctx: RequestContext) -> None:
        pass
