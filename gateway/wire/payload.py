"""A JSON object body that is decoded only as far as someone reads it.

The top level decodes into ``{key: msgspec.Raw}``: nested values stay as the exact bytes
the client sent. Reading a key decodes that value alone; writing one encodes that value
alone; the body is re-encoded only when something changed, and then only the top level —
so unknown fields, number spellings (``0.70``, ``1e-5``), escapes and key order survive.

Typed views (``typed(ChatCompletionRequest)``) are decoded once, on first use. Changes
made to a typed view are written back field by field: only top-level fields whose value
differs from a fresh decode are re-encoded, and within those, keys the Structs do not
know (a vendor's extra field inside a message) are merged back from the original.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import UNSET

T = TypeVar("T", bound=msgspec.Struct)

_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
_MISSING: Any = object()


class JSONBody:
    """Lazy, lossless access to a JSON object."""

    __slots__ = ("_changed", "_fields", "_raw", "_views")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._fields: dict[str, msgspec.Raw] | None = None
        self._changed = False
        self._views: dict[type, tuple[msgspec.Struct, msgspec.Struct]] | None = None

    @property
    def fields(self) -> dict[str, msgspec.Raw]:
        """The top level, values undecoded. Raises ``msgspec.DecodeError``/``ValidationError``."""
        if self._fields is None:
            self._fields = _decode_fields(self._raw)
        return self._fields

    def __getitem__(self, key: str) -> Any:
        return _decode(self.fields[key])

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.fields.get(key, _MISSING)
        return default if raw is _MISSING else _decode(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        self.fields[key] = msgspec.Raw(_encode(value))
        self._changed = True

    def __delitem__(self, key: str) -> None:
        del self.fields[key]
        self._changed = True

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def keys(self) -> list[str]:
        return list(self.fields)

    def typed(self, type_: type[T]) -> T:
        """The body decoded as ``type_``, once; edits to it are written back on ``to_bytes``."""
        views = self._views
        if views is None:
            views = self._views = {}
        elif type_ in views:
            return views[type_][0]  # type: ignore[return-value]
        raw = self.to_bytes()
        view = msgspec.json.decode(raw, type=type_)
        views[type_] = (view, msgspec.json.decode(raw, type=type_))
        return view

    @property
    def changed(self) -> bool:
        if self._changed:
            return True
        return self._views is not None and any(
            view != snapshot for view, snapshot in self._views.values()
        )

    def to_bytes(self) -> bytes:
        """The body as it stands: the original bytes when nothing changed."""
        if self._views:
            self._write_back_views()
        if not self._changed:
            return self._raw
        self._raw = _encode(self._fields)
        self._changed = False
        return self._raw

    def _write_back_views(self) -> None:
        views = self._views
        assert views is not None
        for type_, (view, snapshot) in list(views.items()):
            if view == snapshot:
                continue
            fields = self.fields
            for field in msgspec.structs.fields(type_):
                value = getattr(view, field.name)
                before = getattr(snapshot, field.name)
                if value == before:
                    continue
                if value is UNSET:
                    fields.pop(field.encode_name, None)
                else:
                    original = fields.get(field.encode_name)
                    new = msgspec.to_builtins(value)
                    if original is not None:
                        new = _merge(_decode(original), msgspec.to_builtins(before), new)
                    fields[field.encode_name] = msgspec.Raw(_encode(new))
                self._changed = True
            # Other views no longer match the body; this one keeps tracking its edits.
            self._views = views = {type_: (view, msgspec.json.decode(_encode(view), type=type_))}


def _merge(original: Any, before: Any, after: Any) -> Any:
    """``after``, plus whatever ``original`` held that the typed view never knew.

    ``before`` is the view as decoded: a key in ``original`` but not in ``before`` is
    unknown to the Struct and is kept; a key in ``before`` but not in ``after`` was
    removed by the hook and stays removed.
    """
    if isinstance(original, dict) and isinstance(before, dict) and isinstance(after, dict):
        merged = {}
        for key, value in original.items():
            if key in after:
                merged[key] = _merge(value, before.get(key, _MISSING), after[key])
            elif key not in before:
                merged[key] = value
        merged.update((k, v) for k, v in after.items() if k not in merged)
        return merged
    if (
        isinstance(original, list)
        and isinstance(before, list)
        and isinstance(after, list)
        and len(original) == len(before) == len(after)
    ):
        return [_merge(o, b, a) for o, b, a in zip(original, before, after, strict=True)]
    return after


class JSONMessage:
    """A message with a bytes body that hooks may also edit as JSON.

    ``body`` is always the current bytes: edits made through ``json`` or a typed view
    show there. ``typed()`` without a type uses the message's ``json_type`` (for example
    ``ChatCompletionRequest`` on a chat request).
    """

    __slots__ = ("_body", "_json", "json_type")

    def __init__(self, body: bytes, json_type: type[msgspec.Struct] | None = None) -> None:
        self._body = body
        self._json: JSONBody | None = None
        self.json_type = json_type

    @property
    def body(self) -> bytes:
        return self._body if self._json is None else self._json.to_bytes()

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value
        self._json = None

    @property
    def json(self) -> JSONBody:
        """The body as a lazily decoded JSON object; edits show in ``body``."""
        if self._json is None:
            self._json = JSONBody(self._body)
        return self._json

    def typed(self, type_: type[T] | None = None) -> T:
        type_ = type_ or self.json_type  # type: ignore[assignment]
        if type_ is None:
            raise TypeError("this message has no typed view; pass a Struct type")
        return self.json.typed(type_)
