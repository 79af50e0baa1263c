"""Providers: where requests go. One interface, any number of implementations.

A provider owns everything about its upstream: the URL, the auth headers, translating
an OpenAI request (``UpstreamRequest``: the endpoint it is for, method, path below
``/v1``, query, headers, body bytes) into its own API and the answer back into OpenAI's
(``UpstreamResponse``: status, headers, a body to read whole or to iterate), turning its
error answers into the gateway's error family (``error()``), and reading usage. It
raises ``UpstreamUnavailableError`` when it cannot reach its upstream and
``UpstreamProtocolError`` when the answer is broken. The retry loop knows only the
gateway's errors, so retries, fallbacks and context fallbacks work for every provider.

OpenAI-compatible providers pass bytes through untouched; translating ones parse.
"""

from __future__ import annotations

from .base import (
    CONTEXT_EXCEEDED,
    TYPES,
    Provider,
    UpstreamRequest,
    UpstreamResponse,
    openai_error,
    provider_type,
    secret,
)

__all__ = [
    "CONTEXT_EXCEEDED",
    "Provider",
    "UpstreamRequest",
    "UpstreamResponse",
    "openai_error",
    "provider_type",
    "provider_types",
    "secret",
]


def provider_types() -> dict[str, type[Provider]]:
    """Every registered provider type, by name."""
    from . import anthropic, azure, bedrock, gemini, mock, openai  # noqa: F401 - they register themselves

    return dict(TYPES)
