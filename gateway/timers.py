"""Coarse timers for the hot path: one periodic sweep instead of a loop timer each.

Every request needs a deadline (its upstream timeout), and on Granian a delayed
disconnect watch. An event-loop timer costs a libuv timer to create and to cancel;
here a timer is one dict entry, set when a request starts and deleted when it ends,
and a sweep every ``resolution`` seconds fires what is due. Timers fire up to two
resolutions late, never early — precision enough for timeouts counted in seconds.
With no timer set, the sweep sleeps until one is: an idle worker stays idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any

logger = logging.getLogger("gateway")
Callback = Callable[..., object]


class Timers:
    """The timers of one event loop, each under a key (such as the request's task)."""

    def __init__(self, resolution: float = 0.1) -> None:
        self.resolution = resolution
        self.now = 0.0  # the loop's time at the last sweep
        self._due: dict[Hashable, tuple[float, Callback, tuple[Any, ...]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # the sweep waits on it when idle
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = loop.time()
        self._task = loop.create_task(self._sweep(loop))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def add(
        self, key: Hashable, seconds: float, callback: Callable[..., object], *args: Any
    ) -> None:
        """Call ``callback(*args)`` in ``seconds``, or up to two resolutions later."""
        if self._idle is not None:  # the first timer after a quiet spell wakes the sweep
            self._idle.set_result(None)
            self._idle = None
            self.now = self._loop.time()  # type: ignore[union-attr]
        # `now` may be a resolution old: counting from the next sweep is never early.
        self._due[key] = (self.now + self.resolution + seconds, callback, args)

    def remove(self, key: Hashable) -> bool:
        """Forget a timer; ``False`` when there was none (it has fired already)."""
        return self._due.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._due)

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._due
        while True:
            if not due:
                self._idle = loop.create_future()
                await self._idle
            await asyncio.sleep(self.resolution)
            self.now = now = loop.time()
            expired = [key for key, (at, _, _) in due.items() if at <= now]
            for key in expired:
                _, callback, args = due.pop(key)
                try:
                    callback(*args)
                except Exception:
                    logger.exception("a timer's callback failed")
