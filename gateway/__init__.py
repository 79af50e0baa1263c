"""A fast, programmable, OpenAI-compatible AI gateway."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("gateway")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

from .app import Gateway, Limits
from .balancing import Deployment
from .context import RequestContext
from .errors import (
    AuthenticationError,
    ClientError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from .hooks import Hooks
from .http import Request, Response, StreamingResponse
from .policy import Cooldown, Retry, Timeouts
from .providers import Provider, UpstreamRequest, UpstreamResponse
from .providers.mock import MockProvider
from .providers.openai import OpenAIProvider
from .registry import ModelRegistry, Route
from .sse import SSEEvent

__all__ = [
    "AuthenticationError",
    "ClientError",
    "Cooldown",
    "Deployment",
    "Gateway",
    "GatewayError",
    "Hooks",
    "InvalidRequestError",
    "Limits",
    "MockProvider",
    "ModelNotFoundError",
    "ModelRegistry",
    "NotFoundError",
    "OpenAIProvider",
    "PermissionDeniedError",
    "Provider",
    "RateLimitError",
    "Request",
    "RequestContext",
    "RequestTooLargeError",
    "Response",
    "Retry",
    "Route",
    "SSEEvent",
    "StreamingResponse",
    "Timeouts",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRequest",
    "UpstreamResponse",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
]
