"""Coarse timers for the hot path: one periodic sweep instead of a loop timer each.

Every request needs a deadline (its upstream timeout), and on Granian a delayed
disconnect watch. An event-loop timer costs a libuv timer to create and to cancel;
here a timer is one dict entry, set when a request starts and deleted when it ends,
and a sweep fires what is due: every ``resolution`` seconds while timers are set,
every ``idle`` seconds while none are (an idle worker stays nearly idle, and starting
a request never has to wake anything). Timers fire late by at most one sweep interval,
never early — precision enough for timeouts counted in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

logger = logging.getLogger("gateway")
Callback = Callable[..., object]


class Timers:
    """The timers of one event loop, each under a key (such as the request's task)."""

    def __init__(self, resolution: float = 0.1, idle: float = 0.5) -> None:
        self.resolution = resolution
        self.idle = idle
        self._due: dict[Hashable, tuple[float, Callback, tuple[Any, ...]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock: Callable[[], float] = time.monotonic  # the loop's clock, once started
        self.sweeps = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clock = loop.time
        self._task = loop.create_task(self._sweep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def add(self, key: Hashable, seconds: float, callback: Callback, *args: Any) -> None:
        """Call ``callback(*args)`` in ``seconds``, or up to one sweep interval later."""
        self._due[key] = (self.clock() + seconds, callback, args)

    def remove(self, key: Hashable) -> bool:
        """Forget a timer; ``False`` when there was none (it has fired already)."""
        return self._due.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._due)

    async def _sweep(self) -> None:
        due = self._due
        while True:
            await asyncio.sleep(self.resolution if due else self.idle)
            self.sweeps += 1
            now = self.clock()
            expired = [key for key, (at, _, _) in due.items() if at <= now]
            for key in expired:
                _, callback, args = due.pop(key)
                try:
                    callback(*args)
                except Exception:
                    logger.exception("a timer's callback failed")
