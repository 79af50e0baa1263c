"""AWS's binary event-stream framing (``application/vnd.amazon.eventstream``), both ways.

A message is its prelude — total length, headers length (4 bytes each, big-endian) and
the prelude's CRC32 —, its headers, its payload, and the CRC32 of everything before it.
A header is a name (1-byte length), a type byte and a value whose size the type sets
(type 7, a string: a 2-byte length and UTF-8). ``EventStreamDecoder.feed`` takes bytes as
they arrive, split anywhere, and returns the messages they complete; it holds no more
than the one message still incomplete, and checks both CRCs (a mismatch is an
``UpstreamProtocolError``). ``encode_message`` writes a message (string headers only):
the tests' fake Bedrock builds its streams with it.
"""

from __future__ import annotations

import struct
import zlib

from ...core.errors import UpstreamProtocolError

__all__ = ["MAX_MESSAGE", "EventStreamDecoder", "Message", "encode_message"]

# AWS's limits: a message of at most 16 MiB of payload and 128 KiB of headers.
MAX_MESSAGE = 16 * 1024 * 1024 + 128 * 1024 + 16
_PRELUDE = 12  # total length, headers length, prelude CRC
_MINIMUM = _PRELUDE + 4  # ...and the message CRC
_prelude = struct.Struct(">III")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")

# Header value types: the size of each fixed-size value (0 and 1 are true and false).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
_BYTES, _STRING = 6, 7

Message = tuple[dict[str, str], bytes]  # (string headers, payload)

# A stream's messages carry a few header blocks over and over (the chunk event's, each
# event type's): each is read once and shared (a message's headers are read, never
# changed).
_known: dict[bytes, dict[str, str]] = {}


class EventStreamDecoder:
    """Whole event-stream messages out of bytes as they arrive."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete message are held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes (with what came before it), in order."""
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        position = 0
        size = len(buffer)
        while size - position >= _PRELUDE:
            total, headers_length, prelude_crc = _prelude.unpack_from(buffer, position)
            if zlib.crc32(memoryview(buffer)[position : position + 8]) != prelude_crc:
                raise UpstreamProtocolError("The upstream's event stream is corrupt (prelude CRC).")
            if total < _MINIMUM or total > MAX_MESSAGE or headers_length > total - _MINIMUM:
                raise UpstreamProtocolError(
                    f"The upstream's event stream is corrupt (a message of {total} bytes)."
                )
            if size - position < total:
                break
            end = position + total
            view = memoryview(buffer)
            try:
                (message_crc,) = _u32.unpack_from(view, end - 4)
                if zlib.crc32(view[position : end - 4]) != message_crc:
                    raise UpstreamProtocolError(
                        "The upstream's event stream is corrupt (message CRC)."
                    )
                start = position + _PRELUDE
                raw = bytes(view[start : start + headers_length])
                headers = _known.get(raw)
                if headers is None:
                    headers = _headers(memoryview(raw))
                    if len(_known) < 256:
                        _known[raw] = headers
                payload = bytes(view[start + headers_length : end - 4])
            finally:
                view.release()
            messages.append((headers, payload))
            position = end
        if position:
            del buffer[:position]
        return messages


def _headers(raw: memoryview) -> dict[str, str]:
    """A message's string headers (headers of other types are read past)."""
    headers: dict[str, str] = {}
    at = 0
    size = len(raw)
    try:
        while at < size:
            name_length = raw[at]
            name = bytes(raw[at + 1 : at + 1 + name_length]).decode()
            at += 1 + name_length
            kind = raw[at]
            at += 1
            fixed = _FIXED.get(kind)
            if fixed is not None:
                at += fixed
            elif kind in (_BYTES, _STRING):
                (length,) = _u16.unpack_from(raw, at)
                at += 2
                if kind == _STRING:
                    headers[name] = bytes(raw[at : at + length]).decode()
                at += length
            else:
                raise UpstreamProtocolError(
                    f"The upstream's event stream is corrupt (a header of type {kind})."
                )
        if at != size:
            raise IndexError
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise UpstreamProtocolError(
            "The upstream's event stream is corrupt (its headers)."
        ) from exc
    return headers


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers."""
    encoded = bytearray()
    for name, value in headers.items():
        name_bytes = name.encode()
        value_bytes = value.encode()
        encoded += bytes([len(name_bytes)]) + name_bytes + bytes([_STRING])
        encoded += _u16.pack(len(value_bytes)) + value_bytes
    total = _MINIMUM + len(encoded) + len(payload)
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + _u32.pack(zlib.crc32(prelude))
    body = head + bytes(encoded) + payload
    return body + _u32.pack(zlib.crc32(body))
