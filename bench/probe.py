"""Timestamps of a request's steps inside a server process, for ``bench.timeline``.

Loaded by a ``sitecustomize.py`` that ``bench.timeline`` writes to a temporary
directory and puts first on the server's ``PYTHONPATH``: nothing of it is in the
gateway package, and the gateway runs unchanged. ``install()`` wraps, by monkeypatching:

- ``granian.Granian.serve``, so that the class of the application it loads gets its
  ``__rsgi__`` wrapped: the request's RSGI ``protocol`` (a Rust object, not patchable)
  is handed on inside a proxy that notes when the body was read (``await protocol()``),
  when the answer's headers went out (``response_bytes``/``response_stream``) and each
  ``send_bytes`` of the stream's transport. This covers the gateway's ``RSGIApp`` and
  the ceiling's forwarder alike;
- aiohttp's ``ClientSession._request`` and the gateway's short path to the pool,
  ``PooledClient._exchange`` (upstream request started; upstream headers arrived),
  ``StreamReader.readany`` (an upstream chunk arrived) and ``ClientResponse.read`` /
  ``PooledResponse.read`` (an upstream body read whole).

Each step appends ``(name, time.monotonic_ns())`` to a list: ~0.2 µs. SIGUSR2 makes the
process write the list to ``<dir>/<pid>.json``. ``CLOCK_MONOTONIC`` is one clock for all
processes of a machine, so these times line up with the client's and the mock's.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

EVENTS: list[tuple[str, int]] = []
_now = time.monotonic_ns


def mark(name: str) -> None:
    EVENTS.append((name, _now()))


class TransportProbe:
    """A stream transport that notes each ``send_bytes``."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def send_bytes(self, data: bytes) -> Awaitable[None]:
        mark("server wrote a chunk")
        return self._transport.send_bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ProtocolProbe:
    """An RSGI HTTP protocol that notes the body read and the answer written."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    async def __call__(self) -> bytes:
        body = await self._protocol()
        mark("server read the body")
        return body

    def __aiter__(self) -> Any:
        return self._protocol.__aiter__()

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        mark("server wrote headers")
        mark("server wrote a chunk")
        self._protocol.response_bytes(status, headers, body)

    def response_stream(self, status: int, headers: Any) -> TransportProbe:
        mark("server wrote headers")
        return TransportProbe(self._protocol.response_stream(status, headers))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)


def wrap_app_class(cls: type) -> None:
    original = cls.__dict__.get("__rsgi__")
    if original is None or getattr(original, "_bench_probe", False):
        return

    @functools.wraps(original)
    async def __rsgi__(self: Any, scope: Any, protocol: Any) -> None:
        mark("server got the request")
        await original(self, scope, ProtocolProbe(protocol))

    __rsgi__._bench_probe = True  # type: ignore[attr-defined]
    cls.__rsgi__ = __rsgi__  # type: ignore[attr-defined]


def _wrap_async(cls: type, attribute: str, before: str | None, after: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(cls, attribute)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            mark(before)
        result = await original(*args, **kwargs)
        mark(after)
        return result

    setattr(cls, attribute, wrapper)


def _patch_granian() -> None:
    from granian import Granian

    original = Granian.serve

    @functools.wraps(original)
    def serve(
        self: Any,
        spawn_target: Any = None,
        target_loader: Callable[..., Any] | None = None,
        wrap_loader: bool = True,
    ) -> Any:
        if target_loader is not None:
            inner = target_loader

            def target_loader(*args: Any, **kwargs: Any) -> Any:
                app = inner(*args, **kwargs)
                wrap_app_class(type(app))
                return app

        return original(self, spawn_target, target_loader, wrap_loader)

    Granian.serve = serve  # type: ignore[method-assign]


def _patch_aiohttp() -> None:
    import aiohttp
    from aiohttp import streams

    _wrap_async(aiohttp.ClientSession, "_request", "upstream request started", "upstream headers")
    _wrap_async(streams.StreamReader, "readany", None, "upstream chunk")
    _wrap_async(aiohttp.ClientResponse, "read", None, "upstream body read")
    from gateway.providers.client import PooledClient, PooledResponse

    _wrap_async(PooledClient, "_exchange", "upstream request started", "upstream headers")
    _wrap_async(PooledResponse, "read", None, "upstream body read")


def _dump(directory: str) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        path = os.path.join(directory, f"{os.getpid()}.json")
        with open(path + ".part", "w") as f:
            json.dump(EVENTS, f)
        os.replace(path + ".part", path)

    return handler


def install(directory: str) -> None:
    _patch_granian()
    _patch_aiohttp()
    signal.signal(signal.SIGUSR2, _dump(directory))
