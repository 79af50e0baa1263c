"""Just enough multipart/form-data to read and rewrite one small field (``model``).

Audio and file uploads carry the model name as a form field next to the file. The
gateway finds that field by walking the part headers between boundaries — the file's
bytes are skipped, never parsed — and splices a new value in when a rewrite asks.
"""

from __future__ import annotations

import re


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, else ``None``."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


def find_field(body: bytes, boundary: bytes, name: str) -> tuple[int, int] | None:
    """The (start, end) offsets of a form field's value in ``body``, if present."""
    delimiter = b"--" + boundary
    # `name="model"`, and not the tail of `filename="model"`.
    wanted = re.compile(rb'[;\s]name="' + re.escape(name.encode()) + rb'"', re.IGNORECASE)
    position = body.find(delimiter)
    while position != -1:
        headers_start = position + len(delimiter)
        if body.startswith(b"--", headers_start):
            return None  # the closing delimiter
        headers_end = body.find(b"\r\n\r\n", headers_start)
        if headers_end == -1:
            return None
        next_delimiter = body.find(b"\r\n" + delimiter, headers_end)
        if next_delimiter == -1:
            return None
        headers = body[headers_start:headers_end]
        for line in headers.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:") and wanted.search(line):
                return headers_end + 4, next_delimiter
        position = next_delimiter + 2
    return None


def read_field(body: bytes, boundary: bytes, name: str) -> str | None:
    span = find_field(body, boundary, name)
    if span is None:
        return None
    return body[span[0] : span[1]].decode("utf-8", "replace")


def replace_field(body: bytes, boundary: bytes, name: str, value: str) -> bytes:
    """``body`` with the field's value replaced (unchanged when the field is absent)."""
    span = find_field(body, boundary, name)
    if span is None:
        return body
    return body[: span[0]] + value.encode() + body[span[1] :]
