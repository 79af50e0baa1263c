"""The access log: one JSON line per request, written off the event loop.

An ``on_complete`` hook encodes the request's outcome (its fields are the line's
fields: see ``gateway.core.outcome``) and appends it to a buffer; a timer hands the buffer
to a writer thread every ``FLUSH_INTERVAL`` seconds (sooner when it fills), and the
thread does the blocking write. When the destination cannot keep up and
``MAX_PENDING_BYTES`` are waiting, new lines are dropped and counted — a slow disk or
a full pipe never slows requests. A line holds no key (the key's id only) and no body.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import sys
import threading
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from ..core.context import RequestContext
    from ..core.outcome import Outcome

logger = logging.getLogger("gateway")

FLUSH_INTERVAL = 0.2  # seconds a line may wait in the buffer
FLUSH_LINES = 512  # or this many lines, whichever comes first
MAX_PENDING_BYTES = 8 * 1024 * 1024  # handed to the writer and not yet written: then drop
PIPE_BUF = 4096  # writes up to this size to a pipe are never interleaved with others'

_encode_lines = msgspec.json.Encoder().encode_lines


class AccessLog:
    """A hook writing one JSON line per request to ``destination``: ``stdout``,
    ``stderr`` or a file path (appended to; several workers may share it)."""

    def __init__(self, destination: str = "stdout") -> None:
        self.destination = destination
        self.dropped = 0  # lines dropped because the destination fell behind
        self._lines: list[Outcome] = []  # encoded together, at the flush
        self._pending = 0  # bytes handed to the writer, not yet written
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._owns_fd = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._small_writes = False

    def __repr__(self) -> str:
        return f"<AccessLog to {self.destination}>"

    def startup(self) -> None:
        if self.destination == "stdout":
            self._fd = sys.stdout.fileno()
        elif self.destination == "stderr":
            self._fd = sys.stderr.fileno()
        else:
            self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._owns_fd = True
        # A pipe shared by several workers interleaves writes larger than PIPE_BUF:
        # write lines to one in pieces no larger, cut at line ends.
        self._small_writes = not self._owns_fd
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write_forever, name="access-log", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.flush()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)
            self._thread = None
        if self._owns_fd:
            os.close(self._fd)
        if self.dropped:
            logger.warning(
                "the access log dropped %d lines: its destination fell behind", self.dropped
            )

    def on_complete(self, ctx: RequestContext) -> None:
        if self._pending > MAX_PENDING_BYTES:
            self.dropped += 1
            return
        lines = self._lines
        lines.append(ctx.outcome)  # final: nothing writes it after on_complete
        if len(lines) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Hand what is buffered to the writer thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        batch = _encode_lines(self._lines)  # one line each, newline-terminated
        self._lines = []
        with self._lock:
            self._pending += len(batch)
        if self._thread is None:  # not started (embedded use without startup): write now
            self._write(batch)
        else:
            self._queue.put(batch)

    def _write_forever(self) -> None:
        while (batch := self._queue.get()) is not None:
            self._write(batch)

    def _write(self, batch: bytes) -> None:
        try:
            if self._small_writes and len(batch) > PIPE_BUF:
                for piece in _pieces(batch):
                    _write_all(self._fd, piece)
            else:
                _write_all(self._fd, batch)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                logger.error("cannot write the access log: %s", exc.strerror)
        finally:
            with self._lock:
                self._pending -= len(batch)


def _pieces(batch: bytes) -> list[bytes]:
    """``batch`` cut at line ends into pieces of at most ``PIPE_BUF`` bytes (a longer line
    is a piece of its own)."""
    pieces, start = [], 0
    while start < len(batch):
        end = batch.rfind(b"\n", start, start + PIPE_BUF) + 1
        if end <= start:  # one line longer than PIPE_BUF
            end = batch.find(b"\n", start) + 1 or len(batch)
        pieces.append(batch[start:end])
        start = end
    return pieces


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
