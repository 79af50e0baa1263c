"""Responses API request -> chat completions request (``responses_to_chat``), and the
``Facts`` the answer needs.

``instructions`` become the first system message, then the earlier conversation (the
stored items of ``previous_response_id``), then ``input``: messages keep their roles
(developer as system), ``function_call`` items become an assistant's ``tool_calls``
(consecutive calls, and the assistant text before them, in one message), their outputs
``role: tool`` messages; a reasoning item the gateway wrote hands its thinking blocks to
the next assistant message, anyone else's is dropped. Function tools are nested the chat
way; a namespace's tools are flattened (``Facts.namespaces`` remembers whose they are); a
custom tool becomes a function taking one string, ``input``. Built-in tools, which no
chat model runs, are refused with a 400, or dropped when the endpoint says so.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...core.errors import InvalidRequestError
from ...wire.endpoints import decode_json
from ..chat import invalid
from .items import Messages, required, stored_item, stored_message
from .shapes import Item, ResponsesRequest, ToolSpec, converted, decode_request

_encode = msgspec.json.Encoder().encode

# reasoning.effort -> the hub's reasoning_effort ("none": no reasoning asked for).
EFFORTS = {"xhigh": "high", "max": "high"}
# The parameters of the function that stands in for a custom tool.
CUSTOM_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}


class Facts(msgspec.Struct, kw_only=True):
    """What the answer needs to know of the request: the values a Response echoes, how
    tool calls are said back, and the request's own items (to store)."""

    model: str
    stream: bool = False
    instructions: str | None = None
    tools: list[dict[str, Any]] = []  # as the client sent them
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"format": {"type": "text"}, "verbosity": "medium"}
    )
    reasoning: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"effort": None, "summary": None}
    )
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    metadata: dict[str, str] = {}
    store: bool = True
    previous_response_id: str | None = None
    include: list[str] = []
    user: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    truncation: str | None = None
    namespaces: dict[str, str] = {}  # tool name -> the namespace it was declared in
    custom_tools: frozenset[str] = frozenset()
    input_items: list[dict[str, Any]] = []  # this request's input, normalised to store

    @property
    def encrypted_reasoning(self) -> bool:
        """Whether the client asked for reasoning items' ``encrypted_content``."""
        return "reasoning.encrypted_content" in self.include


def responses_to_chat(
    body: bytes, history: list[dict[str, Any]] | None = None, drop_builtin_tools: bool = False
) -> tuple[bytes, Facts]:
    """A Responses request as a chat completions request, after ``history`` (the earlier
    conversation's items). ``drop_builtin_tools`` drops built-in tools (and built-in
    tools' items) instead of refusing them."""
    request: ResponsesRequest = decode_json(decode_request, body)
    if request.conversation is not None:
        raise InvalidRequestError(
            "Conversations are not supported for this model; use previous_response_id.",
            param="conversation",
        )
    if request.background:
        raise InvalidRequestError(
            "Background responses are not supported for this model.", param="background"
        )
    tools = _Tools(request.tools, drop_builtin_tools)
    chat: dict[str, Any] = {"model": request.model}
    messages = Messages(drop_builtin_tools)
    if request.instructions:
        messages.out.append({"role": "system", "content": request.instructions})
    if history:
        items = converted(history, list[Item], "previous_response_id")
        for i, item in enumerate(items):
            messages.add(item, f"previous_response_id[{i}]")
    stored: list[dict[str, Any]] = []
    given = request.input
    if isinstance(given, str):
        messages.out.append({"role": "user", "content": given})
        stored.append(stored_message("user", [{"type": "input_text", "text": given}], None))
    elif given is not None:
        for i, item in enumerate(given):
            if messages.add(item, f"input[{i}]"):
                stored.append(stored_item(item))
    if not messages.out:
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input")
    chat["messages"] = messages.out
    choice, allowed = _tool_choice(request.tool_choice, drop_builtin_tools)
    chat_tools = tools.chat
    if allowed is not None:
        chat_tools = [t for t in chat_tools if t["function"]["name"] in allowed]
    if chat_tools:
        chat["tools"] = chat_tools
        if choice is not None:
            chat["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = request.parallel_tool_calls
    _options(request, chat)
    facts = _facts(request, tools, stored)
    return _encode(chat), facts


def _options(request: ResponsesRequest, chat: dict[str, Any]) -> None:
    """The sampling, length, format and reasoning options, in the chat request."""
    text = request.text
    if text is not None and text.format is not None:
        spec = text.format
        if spec.type == "json_schema":
            schema: dict[str, Any] = {"name": spec.name or "answer"}
            if spec.description is not None:
                schema["description"] = spec.description
            schema["schema"] = spec.schema or {"type": "object"}
            if spec.strict is not None:
                schema["strict"] = spec.strict
            chat["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif spec.type == "json_object":
            chat["response_format"] = {"type": "json_object"}
        elif spec.type != "text":
            raise invalid("text.format.type", f"{spec.type!r} is not a text format")
    effort = request.reasoning.effort if request.reasoning is not None else None
    if effort is not None and effort != "none":
        chat["reasoning_effort"] = EFFORTS.get(effort, effort)
    if request.max_output_tokens is not None:
        chat["max_completion_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        chat["temperature"] = request.temperature
    if request.top_p is not None:
        chat["top_p"] = request.top_p
    if request.user:
        chat["user"] = request.user
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}


def _facts(request: ResponsesRequest, tools: _Tools, stored: list[dict[str, Any]]) -> Facts:
    facts = Facts(
        model=request.model,
        stream=bool(request.stream),
        instructions=request.instructions,
        tools=request.tools or [],
        tool_choice=request.tool_choice if request.tool_choice is not None else "auto",
        parallel_tool_calls=request.parallel_tool_calls is not False,
        max_output_tokens=request.max_output_tokens,
        max_tool_calls=request.max_tool_calls,
        temperature=request.temperature,
        top_p=request.top_p,
        top_logprobs=request.top_logprobs,
        metadata=request.metadata or {},
        store=request.store is not False,
        previous_response_id=request.previous_response_id,
        include=request.include or [],
        user=request.user,
        prompt_cache_key=request.prompt_cache_key,
        safety_identifier=request.safety_identifier,
        truncation=request.truncation,
        namespaces=tools.namespaces,
        custom_tools=frozenset(tools.custom),
        input_items=stored,
    )
    text = request.text
    if text is not None:
        if text.format is not None:
            facts.text["format"] = msgspec.to_builtins(text.format)
        if text.verbosity is not None:
            facts.text["verbosity"] = text.verbosity
    if request.reasoning is not None:
        reasoning = request.reasoning
        facts.reasoning = {
            "effort": reasoning.effort,
            "summary": reasoning.summary or reasoning.generate_summary,
        }
    return facts


# ------------------------------------------------------------------------------ tools


class _Tools:
    """The request's tools as chat tools, and what saying their calls back needs."""

    __slots__ = ("_drop", "chat", "custom", "namespaces")

    def __init__(self, tools: list[dict[str, Any]] | None, drop: bool) -> None:
        self._drop = drop
        self.chat: list[dict[str, Any]] = []
        self.namespaces: dict[str, str] = {}
        self.custom: set[str] = set()
        for i, raw in enumerate(tools or ()):
            self._add(converted(raw, ToolSpec, f"tools[{i}]"), f"tools[{i}]", None)

    def _add(self, tool: ToolSpec, where: str, namespace: str | None) -> None:
        kind = tool.type
        if kind == "namespace" and namespace is None:
            name = required(tool.name, f"{where}.name", "tools")
            for j, raw in enumerate(tool.tools or ()):
                inner = f"{where}.tools[{j}]"
                self._add(converted(raw, ToolSpec, inner), inner, name)
            return
        if kind not in ("function", "custom"):
            if self._drop:
                return
            raise InvalidRequestError(
                f"The tool type {kind!r} cannot be served for this model: only function "
                f"tools (and custom tools) reach it.",
                param="tools",
            )
        name = required(tool.name, f"{where}.name", "tools")
        if any(t["function"]["name"] == name for t in self.chat):
            raise invalid(where, f"a tool named {name!r} is declared twice")
        function: dict[str, Any] = {"name": name}
        if kind == "custom":
            self.custom.add(name)
            function["description"] = _custom_description(tool)
            function["parameters"] = CUSTOM_PARAMETERS
        else:
            if tool.description:
                function["description"] = tool.description
            if tool.parameters is not None:
                function["parameters"] = tool.parameters
            if tool.strict is not None:
                function["strict"] = tool.strict
        if namespace is not None:
            self.namespaces[name] = namespace
        self.chat.append({"type": "function", "function": function})


def _custom_description(tool: ToolSpec) -> str:
    """A custom tool's description, saying how its free-form input is given."""
    text = tool.description or ""
    spec = tool.format or {}
    how = (
        "Call this tool with one argument, `input`: the tool's input as raw text (not JSON "
        "inside it)"
    )
    if spec.get("type") == "grammar" and isinstance(spec.get("definition"), str):
        syntax = spec.get("syntax") or "lark"
        how += f", which must match this {syntax} grammar:\n{spec['definition']}"
    else:
        how += "."
    return f"{text}\n\n{how}" if text else how


def _tool_choice(
    choice: str | dict[str, Any] | None, drop: bool
) -> tuple[str | dict[str, Any] | None, set[str] | None]:
    """The chat ``tool_choice``, and the names of the tools it allows (``None``: all)."""
    if choice is None:
        return None, None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise invalid("tool_choice", f"{choice!r} is not a tool choice")
        return choice, None
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError(
                "Missing required parameter: 'tool_choice.name'.", param="tool_choice"
            )
        return {"type": "function", "function": {"name": name}}, None
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise invalid("tool_choice.mode", f"{mode!r} is not a mode")
        listed = choice.get("tools")
        names = set()
        for tool in listed if isinstance(listed, list) else ():
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                names.add(tool["name"])
        return mode, names
    if drop:
        return None, None
    raise InvalidRequestError(
        f"The tool choice {kind!r} cannot be served for this model: only function tools "
        f"(and custom tools) reach it.",
        param="tool_choice",
    )
