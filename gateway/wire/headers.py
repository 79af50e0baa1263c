"""Header rules: what crosses the gateway in each direction, and what may be a header at all.

Names in a ``HeaderList`` are lower-case when they come from a server or are the
gateway's own. A header list belongs to one message: the gateway builds a new list for
every response and never appends to a list it did not build for that response.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..core.errors import HeadersTooLargeError

HeaderList = list[tuple[str, str]]


class Headers(Protocol):
    """The little the core needs of a server's header object (lower-case names)."""

    def get(self, key: str, default: str | None = None) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those the
# server or the HTTP client computes again for the next hop.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# Never forwarded upstream: the client's credentials (the provider sets its own), the
# client's account headers that would not match the provider's key, cookies, and the
# encodings (the gateway decodes a compressed body, and asks for identity so that it
# can read what it forwards).
REQUEST_HEADERS_DROPPED = _HOP_BY_HOP | {
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "accept-encoding",
    "content-encoding",
}

# Never passed back to the client: the upstream's cookies, and what the gateway's own
# server writes itself (a second Date or Server header would be a duplicate).
RESPONSE_HEADERS_DROPPED = _HOP_BY_HOP | {"content-encoding", "set-cookie", "date", "server"}

# The upstream's own request id goes to the client under this name: the response's
# ``x-request-id`` is the gateway's (one value, or SDKs read a list as the id).
UPSTREAM_REQUEST_ID = "x-upstream-request-id"

JSON = "application/json"


def forwardable_headers(headers: Headers, limit: int | None = None) -> HeaderList:
    """The client's headers that may go upstream. Names are lower-case, as servers give them.

    With ``limit``, the same pass measures the header block (``name: value\r\n`` each):
    over it, ``HeadersTooLargeError``.
    """
    kept = []
    connection = None
    size = 0
    dropped = REQUEST_HEADERS_DROPPED
    for name, value in headers.items():
        size += len(name) + len(value) + 4
        if name not in dropped:
            kept.append((name, value))
        elif name == "connection":
            connection = value
    if limit is not None and size > limit:
        raise HeadersTooLargeError(f"The request headers are larger than {limit} bytes.")
    if connection is None:
        return kept
    return _without_connection_named(kept, connection)


def passable_headers(items: Iterable[tuple[str, str]]) -> HeaderList:
    """An upstream's response headers that may go to the client, in a new list (names
    lower-cased); its ``x-request-id`` renamed ``x-upstream-request-id``."""
    kept = []
    connection = None
    for key, value in items:
        name = key.lower()
        if name not in RESPONSE_HEADERS_DROPPED:
            if name.startswith("x-gateway-"):
                continue  # another gateway's (in front of this one's upstream): ours replace them
            kept.append((UPSTREAM_REQUEST_ID if name == "x-request-id" else name, value))
        elif name == "connection":
            connection = value
    if connection is None:
        return kept
    return _without_connection_named(kept, connection)


def _without_connection_named(headers: HeaderList, connection: str) -> HeaderList:
    """Headers named in ``Connection`` belong to that hop only (RFC 9110 §7.6.1)."""
    named = {token.strip().lower() for token in connection.split(",")} - {"keep-alive", "close"}
    return [(k, v) for k, v in headers if k.lower() not in named] if named else headers


def retyped(headers: Iterable[tuple[str, str]], content_type: str) -> HeaderList:
    """``headers`` in a new list, with ``content_type`` for the body they now describe."""
    kept = [h for h in headers if h[0] != "content-type"]
    kept.append(("content-type", content_type))
    return kept


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of a header in a header list, by case-insensitive name."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def safe_header_value(value: str) -> str | None:
    """``value`` if it can be sent as a header value as it is, else ``None``.

    Header values the gateway builds from what a client sent (a model name, a request
    id) are checked here: one with a CR, LF, NUL, another control character (tab and
    DEL included) or a non-ASCII character, or with spaces at its ends, is left out of
    the response rather than breaking it. (RFC 9110 §5.5 allows a little more.)
    """
    if value.isascii() and value.isprintable() and value.strip() == value:
        return value
    return None
