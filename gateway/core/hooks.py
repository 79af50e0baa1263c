"""Hooks: plain objects whose methods are named after the events they take part in.

A hook implements any subset of::

    authenticate(ctx, api_key)      -> identity | None   (raise to refuse)
    before_request(ctx, request)    -> Response | None   (edit the request, or answer it)
    after_response(ctx, response)   -> None              (edit the response)
    on_chunk(ctx, event)            -> None              (edit or drop one SSE event)
    on_error(ctx, error)            -> Response | None   (observe, or answer differently)
    on_complete(ctx)                -> None              (the request is over: ctx.outcome)
    startup()                       -> None              (once per worker, before serving)
    shutdown()                      -> None              (once per worker, at exit)

Methods may be ``async`` or plain. A hook takes part in *every* event it implements.
The per-event lists are built once, when the gateway is built, so an event without
hooks costs nothing per request.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

EVENTS = (
    "authenticate",
    "before_request",
    "after_response",
    "on_chunk",
    "on_error",
    "on_complete",
    "startup",
    "shutdown",
)

Handler = Callable[..., Any]


def _is_async(fn: Handler) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


class HookList(tuple[tuple[Handler, bool], ...]):
    """The handlers of one event, in registration order, each marked async or not.

    A tuple, so that ``if hooks.before_request:`` costs no Python call per request.
    """

    __slots__ = ()

    def __new__(cls, handlers: Iterable[Handler] = ()) -> HookList:
        return super().__new__(cls, ((fn, _is_async(fn)) for fn in handlers))

    async def each(self, *args: Any) -> None:
        """Call every handler in order."""
        for fn, is_async in self:
            result = fn(*args)
            if is_async:
                await result

    async def first(self, *args: Any) -> Any:
        """Call the handlers in order; the first result that is not ``None`` wins."""
        for fn, is_async in self:
            result = fn(*args)
            if is_async:
                result = await result
            if result is not None:
                return result
        return None


class Hooks:
    """The registry: one ``HookList`` per event, built from hook objects at start-up."""

    def __init__(self, hooks: Iterable[object] = ()) -> None:
        self.hooks = [as_hook(h) for h in hooks]
        for hook in self.hooks:
            if not any(callable(getattr(hook, event, None)) for event in EVENTS):
                raise TypeError(f"{hook!r} implements none of the hook events {', '.join(EVENTS)}")
        for event in EVENTS:
            handlers = [getattr(h, event) for h in self.hooks if callable(getattr(h, event, None))]
            setattr(self, event, HookList(handlers))

    authenticate: HookList
    before_request: HookList
    after_response: HookList
    on_chunk: HookList
    on_error: HookList
    on_complete: HookList
    startup: HookList
    shutdown: HookList


class FunctionHook:
    """Wraps a plain function named after an event (``def before_request(ctx, request)``)."""

    def __init__(self, fn: Callable[..., Any | Awaitable[Any]]) -> None:
        if fn.__name__ not in EVENTS:
            raise TypeError(f"a function hook must be named after an event ({', '.join(EVENTS)})")
        setattr(self, fn.__name__, fn)
        self.__name__ = fn.__name__

    def __repr__(self) -> str:
        return f"<FunctionHook {self.__name__}>"


def as_hook(obj: object) -> object:
    """A hook object from what a user gave: an object, a class to instantiate, or a function."""
    if inspect.isclass(obj):
        return obj()
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return FunctionHook(obj)
    return obj


def load_hook(path: str) -> object:
    """Load a hook by import path ``package.module:attribute``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:attribute', got {path!r}")
    module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return as_hook(obj)
