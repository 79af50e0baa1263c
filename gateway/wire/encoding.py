"""Request bodies sent compressed (``Content-Encoding``): decoded, within the body limit.

The limit applies to the decoded size, while decoding: a small body that inflates to
gigabytes (a decompression bomb) is refused with a 413 as soon as its output passes the
limit, never held whole. A body that does not decode as labelled is a 400; an encoding
the gateway does not know, or more than ``MAX_CODINGS`` of them stacked (each layer
costs up to the limit's worth of work), a 415. The decoded body is forwarded without
the header.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import brotli
import zstandard

from ..core.errors import InvalidRequestError, RequestTooLargeError, UnsupportedMediaTypeError

Decoder = Callable[[bytes, int], bytes]
_STEP = 64 * 1024  # decoded bytes produced per step, so that no step outgrows the limit
MAX_CODINGS = 3  # clients send one, rarely two


def decode_body(body: bytes, content_encoding: str, limit: int) -> bytes:
    """``body`` decoded as ``content_encoding`` says (codings in the order applied)."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    if len(codings) > MAX_CODINGS:
        raise UnsupportedMediaTypeError(
            f"The request body has {len(codings)} content codings; at most {MAX_CODINGS} "
            "are decoded."
        )
    for coding in codings:  # checked before any work is done
        if coding not in _DECODERS:
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {coding!r} is not supported; "
                f"use one of {', '.join(sorted(_DECODERS))}."
            )
    for coding in reversed(codings):  # the last applied is the first undone
        try:
            body = _DECODERS[coding](body, limit)
        except _TooLarge:
            raise RequestTooLargeError(
                f"The request body is larger than {limit} bytes once decoded."
            ) from None
        except (zlib.error, brotli.error, zstandard.ZstdError, EOFError, ValueError) as exc:
            raise InvalidRequestError(
                f"The request body could not be decoded as {coding} ({exc or 'truncated'})."
            ) from None
    return body


class _TooLarge(Exception):
    pass


def _inflate(body: bytes, limit: int, wbits: int) -> bytes:
    """zlib, gzip or raw deflate; several gzip members follow each other (RFC 1952)."""
    out = bytearray()
    data = body
    while True:
        decompressor = zlib.decompressobj(wbits)
        while data:
            out += decompressor.decompress(data, _STEP)
            if len(out) > limit:
                raise _TooLarge
            data = decompressor.unconsumed_tail
        while not decompressor.eof:  # output held back for want of room
            chunk = decompressor.decompress(b"", _STEP)
            if not chunk:
                raise EOFError("the compressed data ends early")
            out += chunk
            if len(out) > limit:
                raise _TooLarge
        data = decompressor.unused_data
        if not data or wbits != _GZIP:
            if data:
                raise ValueError("data follows the end of the compressed stream")
            return bytes(out)


_GZIP = 16 + zlib.MAX_WBITS


def _gzip(body: bytes, limit: int) -> bytes:
    return _inflate(body, limit, _GZIP)


def _deflate(body: bytes, limit: int) -> bytes:
    # "deflate" means zlib-wrapped (RFC 9110 §8.4.1.2); some clients send it raw.
    try:
        return _inflate(body, limit, zlib.MAX_WBITS)
    except zlib.error:
        return _inflate(body, limit, -zlib.MAX_WBITS)


def _brotli(body: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    out = bytearray(decompressor.process(body, output_buffer_limit=_STEP))
    while not decompressor.can_accept_more_data():
        if len(out) > limit:
            raise _TooLarge
        out += decompressor.process(b"", output_buffer_limit=_STEP)
    if len(out) > limit:
        raise _TooLarge
    if not decompressor.is_finished():
        raise EOFError("the compressed data ends early")
    return bytes(out)


def _zstd(body: bytes, limit: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    out = bytearray()
    while chunk := reader.read(_STEP):
        out += chunk
        if len(out) > limit:
            raise _TooLarge
    if not out and body:
        raise EOFError("no complete zstd frame")
    return bytes(out)


def _identity(body: bytes, limit: int) -> bytes:
    return body


_DECODERS: dict[str, Decoder] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
    "identity": _identity,
}
