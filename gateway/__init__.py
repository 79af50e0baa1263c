"""A fast, programmable, OpenAI-compatible AI gateway."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("gateway")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

from .access.cache import CacheSettings
from .access.control import AccessControl
from .access.keys import Budget, Key
from .access.limits import RateLimits
from .core.app import Gateway, Limits
from .core.context import RequestContext
from .core.errors import (
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
from .core.hooks import Hooks
from .core.outcome import Outcome, Usage
from .observability.pricing import Price, Prices
from .providers import Provider, UpstreamRequest, UpstreamResponse, provider_type
from .providers.mock import MockProvider
from .providers.openai import OpenAIProvider
from .routing.balancing import Deployment
from .routing.policy import Cooldown, Retry, Timeouts
from .routing.registry import ModelRegistry, Route
from .wire.http import Request, Response, StreamingResponse
from .wire.sse import SSEEvent

__all__ = [
    "AccessControl",
    "AuthenticationError",
    "Budget",
    "CacheSettings",
    "ClientError",
    "Cooldown",
    "Deployment",
    "Gateway",
    "GatewayError",
    "Hooks",
    "InvalidRequestError",
    "Key",
    "Limits",
    "MockProvider",
    "ModelNotFoundError",
    "ModelRegistry",
    "NotFoundError",
    "OpenAIProvider",
    "Outcome",
    "PermissionDeniedError",
    "Price",
    "Prices",
    "Provider",
    "RateLimitError",
    "RateLimits",
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
    "Usage",
    "provider_type",
]
