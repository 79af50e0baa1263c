"""The provider interface: ``Provider``, the request it sends and the answer it gets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import msgspec

from ..core.errors import UpstreamStatusError
from ..core.outcome import Usage
from ..observability.usage import usage_of_answer
from ..wire.headers import JSON, retyped
from ..wire.payload import JSONMessage

if TYPE_CHECKING:
    import aiohttp

    from ..core.context import RequestContext
    from ..wire.headers import HeaderList


class UpstreamRequest(JSONMessage):
    """A request for a provider: ``path`` is relative to the API root (``/chat/completions``).

    ``before_request`` hooks get this object and may edit any part of it: the body (as
    bytes, through ``json``, or through the ``typed()`` view), the headers, the query.
    ``connect_timeout`` is the model's, set by the gateway for each attempt.
    """

    __slots__ = ("connect_timeout", "endpoint", "headers", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: HeaderList,
        body: bytes,
        json_type: type[msgspec.Struct] | None = None,
        endpoint: str = "passthrough",
    ) -> None:
        self._body = body  # JSONMessage's state, set here: this runs for every request
        self._json = None
        self.json_type = json_type
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.endpoint = endpoint  # chat.completions, completions, embeddings, models, passthrough
        self.connect_timeout: float | None = None

    def __repr__(self) -> str:
        return f"<UpstreamRequest {self.method} {self.path}>"


class UpstreamResponse(Protocol):
    """A provider's answer once its status and headers have arrived."""

    status: int
    headers: HeaderList  # ready to pass to the client: no hop-by-hop headers
    request_id: str | None  # the upstream's own id for this request, if it gave one
    streamed: bool  # passed on as it arrives (SSE, audio…), rather than read whole first

    @property
    def content_type(self) -> str: ...

    async def read(self) -> bytes: ...

    async def first_chunk(self) -> bytes:
        """Read the body's first chunk ahead (``b""`` if there is none); ``iter_chunks()``
        then yields it first. The gateway reads it before answering the client, so that
        a stream that breaks before its first byte can still be retried."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Every chunk of the body as it arrives, the one read ahead included.

        A response may also have ``async next_chunk() -> bytes`` (``b""`` at the end,
        when the connection is let go): the relay then reads with it, without a
        generator in between; ``next_chunk = None`` asks for ``iter_chunks()``."""
        ...

    def close(self) -> None:
        """Drop the response (and its connection, unless the body was read to the end)."""
        ...


class Provider:
    """Base class of providers. ``start``/``stop`` run once per worker, on its event loop.

    A provider type usable from the config file names its settings (a msgspec Struct,
    decoded from its ``[providers.<name>]`` table) and builds itself from them.
    """

    name: str = "provider"
    Settings: ClassVar[type[msgspec.Struct] | None] = None
    # How a stream's token usage is known: "ask" — the gateway asks an OpenAI-compatible
    # upstream for it (stream_options.include_usage) and reads the last event; "own" —
    # the provider sets ctx.outcome.usage itself as it translates the stream.
    stream_usage: ClassVar[str] = "ask"
    # Whether the upstream serves OpenAI's Responses API itself (POST /responses): then
    # /v1/responses passes through untouched; else the gateway translates it to chat.
    responses: bool = False

    @classmethod
    def from_settings(
        cls, name: str, settings: Any, environ: Mapping[str, str]
    ) -> Provider:  # pragma: no cover - every registered type overrides it
        raise NotImplementedError(f"provider type {cls.__name__} cannot be configured")

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Called at worker start-up with the worker's pooled HTTP session."""

    async def stop(self) -> None:
        """Called at worker shutdown."""

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        raise NotImplementedError

    def error(self, status: int, headers: HeaderList, content: bytes) -> UpstreamStatusError:
        """The gateway's error for an error answer, its body in OpenAI's shape.

        This default suits OpenAI-compatible upstreams: an OpenAI error body goes on as
        sent; anything else (an HTML page from a proxy) is wrapped in one.
        """
        return openai_error(status, headers, content)

    def usage(self, content: bytes) -> Usage | None:
        """The usage a whole (OpenAI-shaped) answer states."""
        return usage_of_answer(content)

    def messages_api(self, model: str) -> bool:
        """Whether the upstream serves Anthropic's Messages API itself for ``model`` (then
        ``/v1/messages`` passes through to it, untranslated)."""
        return False

    def describe(self) -> str:
        """One line for the start-up log; never includes a secret."""
        return f"{self.name} ({type(self).__name__})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


P = TypeVar("P", bound=type[Provider])

TYPES: dict[str, type[Provider]] = {}  # by config-file type name (provider_type)


def provider_type(type_name: str) -> Callable[[P], P]:
    """Register a provider class under ``type`` for the config file (a class decorator).

    A module that registers a type must be imported before the providers are built:
    list it in ``GATEWAY_HOOKS`` (hooks load first).
    """

    def register(cls: P) -> P:
        TYPES[type_name] = cls
        return cls

    return register


def secret(value: str | None, variable: str | None, environ: Mapping[str, str]) -> str | None:
    """A secret given as is or, better, by the environment variable that holds it."""
    if variable is not None:
        value = environ.get(variable) or None
        if value is None:
            raise ValueError(f"environment variable {variable} is not set")
    return value


class _OpenAIErrorBody(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None


class _OpenAIError(msgspec.Struct):
    error: _OpenAIErrorBody | str


_decode_error = msgspec.json.Decoder(_OpenAIError).decode
CONTEXT_EXCEEDED = "context_length_exceeded"


def openai_error(status: int, headers: HeaderList, content: bytes) -> UpstreamStatusError:
    """An OpenAI-compatible upstream's error answer as the gateway's error."""
    try:
        error = _decode_error(content).error
    except (msgspec.DecodeError, RecursionError):
        error = None
    if error is None:  # not OpenAI's shape: wrap what it said
        from ..core.errors import ErrorBody, ErrorEnvelope
        from ..translate.chat import upstream_said

        said = upstream_said(status, content)
        body = msgspec.json.encode(
            ErrorEnvelope(ErrorBody(said, "upstream_error", None, f"upstream_{status}"))
        )
        return UpstreamStatusError(status, retyped(headers, JSON), body)
    if isinstance(error, str):
        return UpstreamStatusError(status, headers, content, message=error)
    too_long = error.code == CONTEXT_EXCEEDED
    return UpstreamStatusError(status, headers, content, too_long=too_long, message=error.message)
