"""Responses input items -> chat messages (``Messages``), and the items as stored
(``stored_item``: an id, a type and a status each, as ``input_items`` lists them).

Messages keep their roles (developer as system); ``function_call`` and
``custom_tool_call`` items become an assistant's ``tool_calls`` (consecutive calls, and
the assistant text before them, in one message), their outputs ``role: tool`` messages;
a reasoning item the gateway wrote hands its thinking blocks to the next assistant
message, anyone else's is dropped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.errors import InvalidRequestError
from ..chat import invalid
from .shapes import Content, Item, decode_thinking, new_id

_encode = msgspec.json.Encoder().encode

_ITEM_IDS = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}
_TEXT = ("input_text", "output_text", "text")


def required(value: str | None, where: str, param: str) -> str:
    if not value:
        raise InvalidRequestError(f"Missing required parameter: '{where}'.", param=param)
    return value


class Messages:
    """Chat messages, made item by item: calls join the assistant message before them."""

    __slots__ = ("_assistant", "_drop", "_thinking", "out")

    def __init__(self, drop: bool) -> None:
        self._drop = drop
        self.out: list[dict[str, Any]] = []
        self._assistant: dict[str, Any] | None = None  # the message calls may join
        self._thinking: list[dict[str, Any]] | None = None  # for the next assistant message

    def add(self, item: Item, where: str) -> bool:
        """Add one item; ``False`` if it was dropped (a built-in tool's item)."""
        kind = item.type or ("message" if item.role is not None else "item_reference")
        if kind == "message":
            self._message(item, where)
        elif kind in ("function_call", "custom_tool_call"):
            self._call(item, where, kind == "custom_tool_call")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = required(item.call_id, f"{where}.call_id", _param(where))
            content = _tool_output(item.output, where)
            self.out.append({"role": "tool", "tool_call_id": call_id, "content": content})
            self._assistant = None
        elif kind == "reasoning":
            blocks = decode_thinking(item.encrypted_content)
            if blocks:
                self._thinking = (self._thinking or []) + blocks
        elif kind == "item_reference":
            raise InvalidRequestError(
                f"Invalid '{where}': item references are not supported for this model; "
                f"send the item itself.",
                param=_param(where),
            )
        elif self._drop:
            return False
        else:
            raise InvalidRequestError(
                f"Invalid '{where}': items of type {kind!r} cannot be served for this model.",
                param=_param(where),
            )
        return True

    def _message(self, item: Item, where: str) -> None:
        role = required(item.role, f"{where}.role", _param(where))
        if role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": _assistant_text(item, where)}
            self._take_thinking(message)
            self.out.append(message)
            self._assistant = message
            return
        if role not in ("user", "system", "developer"):
            raise InvalidRequestError(
                f"Invalid '{where}.role': {role!r} is not a role.", param=_param(where)
            )
        self.out.append(
            {
                "role": "user" if role == "user" else "system",
                "content": _chat_content(item.content, where),
            }
        )
        self._assistant = None

    def _call(self, item: Item, where: str, custom: bool) -> None:
        name = required(item.name, f"{where}.name", _param(where))
        call_id = required(item.call_id, f"{where}.call_id", _param(where))
        if custom:
            arguments = _encode({"input": item.input or ""}).decode()
        else:
            arguments = item.arguments or "{}"
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        message = self._assistant
        if message is None or self._thinking:
            message = {"role": "assistant", "content": None}
            self._take_thinking(message)
            self.out.append(message)
            self._assistant = message
        message.setdefault("tool_calls", []).append(call)

    def _take_thinking(self, message: dict[str, Any]) -> None:
        if self._thinking:
            message["thinking_blocks"] = self._thinking
            self._thinking = None


def _param(where: str) -> str:
    return where.split("[", 1)[0]


def _assistant_text(item: Item, where: str) -> str:
    content = item.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.type in _TEXT:
            texts.append(part.text or "")
        elif part.type == "refusal":
            texts.append(part.refusal or part.text or "")
        else:
            raise invalid(f"{where}.content[{j}]", "an assistant message takes text only")
    return "".join(texts)


def _chat_content(content: str | list[Content] | None, where: str) -> str | list[dict[str, Any]]:
    """A user or system message's content: a string, or chat content parts."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = [_chat_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _chat_part(part: Content, where: str) -> dict[str, Any]:
    kind = part.type
    if kind in _TEXT:
        return {"type": "text", "text": part.text or ""}
    if kind == "refusal":
        return {"type": "text", "text": part.refusal or ""}
    if kind == "input_image":
        if not part.image_url:
            why = "an image by file_id needs OpenAI's Files API" if part.file_id else "no image"
            raise invalid(where, f"{why}; send image_url (a URL or a data URL)")
        detail = part.detail if part.detail in ("low", "high", "auto") else "auto"
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": detail}}
    if kind == "input_file":
        if not part.file_data:
            why = (
                "a file by file_id or file_url cannot be sent"
                if part.file_id or part.file_url
                else "no file"
            )
            raise invalid(where, f"{why}; send file_data (a base64 data URL)")
        file: dict[str, Any] = {"file_data": part.file_data}
        if part.filename:
            file["filename"] = part.filename
        return {"type": "file", "file": file}
    if kind == "input_audio" and part.input_audio is not None:
        return {"type": "input_audio", "input_audio": part.input_audio}
    raise invalid(where, f"content parts of type {kind!r} cannot be served for this model")


def _tool_output(output: str | list[Content] | None, where: str) -> str | list[dict[str, Any]]:
    """A tool's output: a string; a list of parts is its text joined, unless it holds
    images or files (then chat parts: the Claude hub passes them on)."""
    if output is None or isinstance(output, str):
        return output or ""
    parts = [_chat_part(part, f"{where}.output[{j}]") for j, part in enumerate(output)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


# ----------------------------------------------------------------- items, to be stored


def stored_item(item: Item) -> dict[str, Any]:
    """An input item as ``GET /v1/responses/{id}/input_items`` lists it: with an id, a
    type and a status, in the shape the Responses API gives each kind."""
    kind = item.type or "message"
    ident = item.id or new_id(_ITEM_IDS.get(kind, "item"))
    if kind == "message":
        role = item.role or "user"
        content = item.content
        if content is None or isinstance(content, str):
            content = [Content(type="output_text", text=content or "")]
        if role == "assistant":
            parts = [_stored_output_part(part) for part in content]
        else:
            parts = [_stored_part(part) for part in content]
        return stored_message(role, parts, ident)
    out: dict[str, Any] = {"id": ident, "type": kind}
    if kind in ("function_call", "custom_tool_call"):
        out["call_id"] = item.call_id
        out["name"] = item.name
        if kind == "function_call":
            out["arguments"] = item.arguments or "{}"
        else:
            out["input"] = item.input or ""
        if item.namespace:
            out["namespace"] = item.namespace
    elif kind in ("function_call_output", "custom_tool_call_output"):
        out["call_id"] = item.call_id
        output = item.output
        if output is None or isinstance(output, str):
            out["output"] = output or ""
        else:
            out["output"] = [_stored_part(part) for part in output]
    elif kind == "reasoning":
        out["summary"] = [
            {"type": "summary_text", "text": part.text or ""} for part in item.summary or ()
        ]
        if item.content and not isinstance(item.content, str):
            out["content"] = [
                {"type": "reasoning_text", "text": part.text or ""} for part in item.content
            ]
        if item.encrypted_content is not None:
            out["encrypted_content"] = item.encrypted_content
    out["status"] = "completed"
    return out


def stored_message(role: str, parts: list[dict[str, Any]], ident: str | None) -> dict[str, Any]:
    return {
        "id": ident or new_id("msg"),
        "type": "message",
        "role": role,
        "content": parts,
        "status": "completed",
    }


def _stored_output_part(part: Content) -> dict[str, Any]:
    """An assistant message's content part as stored (as a Response's output gives it)."""
    if part.type == "refusal":
        return {"type": "refusal", "refusal": part.refusal or part.text or ""}
    return {"type": "output_text", "text": part.text or "", "annotations": []}


def _stored_part(part: Content) -> dict[str, Any]:
    """An input content part as stored: the input kinds, with the fields each requires."""
    if part.type in _TEXT or part.type == "refusal":
        return {"type": "input_text", "text": part.text or part.refusal or ""}
    out = msgspec.to_builtins(part)
    out = {key: value for key, value in out.items() if value is not None}
    if part.type == "input_image" and out.get("detail") is None:
        out["detail"] = "auto"
    return out
