"""Server adapters: each turns its server's requests into ``gateway.wire.http.Request`` and
writes back the core's responses. No routing, hook or error logic lives here."""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable
from types import FrameType


def freeze_startup_heap() -> None:
    """Move everything made before serving out of the cyclic collector's sight.

    Modules, Structs, the session: they live as long as the worker, yet every full
    collection would walk them again. Frozen, the collector only walks what requests
    allocate. Call once per worker, after start-up.
    """
    gc.collect()
    gc.freeze()


def on_stop_signal(callback: Callable[[], object]) -> None:
    """Also call ``callback`` on SIGTERM and SIGINT, after whatever handles them already.

    The servers stop on these signals themselves; chaining keeps their handling and lets
    the gateway bound the drain. ``callback`` runs in a signal handler: it should only
    schedule work (``loop.call_soon_threadsafe``).
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(number: int, frame: FrameType | None, previous: object = previous) -> None:
            callback()
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, handler)
