"""The Robyn adapter: Robyn route handlers over the gateway core.

Robyn limits (0.88), measured and stated in the README: a streamed response holds an OS
thread per open stream, and Robyn does not tell a handler that its client has left. A
dropped *stream* is still noticed (see ``_reap_abandoned_streams``); a dropped request
that is still waiting for its upstream's answer is not, and runs until it is answered
or times out. Robyn's own process pool does not drain on SIGTERM, so ``serve``
supervises the worker processes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import stat
import time
from collections.abc import Callable

from robyn import Headers as RobynHeaders
from robyn import Request as RobynRequest
from robyn import Response as RobynResponse
from robyn import Robyn
from robyn.argument_parser import Config
from robyn.processpool import spawn_process
from robyn.responses import StreamingResponse as RobynStreamingResponse
from robyn.robyn import SocketHeld, get_version

from ..core.app import Gateway
from ..core.errors import IncompleteBodyError
from ..wire.headers import HeaderList
from ..wire.http import Request, StreamingResponse
from . import freeze_startup_heap

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REAP_INTERVAL = 0.1
# Robyn writes an answer, and starts pulling a stream, after its handler has returned,
# and has no call to wait for either: a worker exits only once it has been idle this long.
WRITE_GRACE = 1.0
RESPAWN_PAUSE = 1.0
# What the supervisor sends a worker to drain it. Not SIGTERM: Robyn's server (actix)
# also acts on SIGTERM, and may end open streams at once when it does.
DRAIN_SIGNAL = signal.SIGUSR1

logger = logging.getLogger("gateway")


async def _reap_abandoned_streams(interval: float = REAP_INTERVAL) -> None:
    """Let go of streams whose client has left, within ``interval`` seconds.

    When a client leaves, Robyn drops that stream's iterator from a thread without the
    GIL; PyO3 defers such a drop until Python code next calls into PyO3 — on a quiet
    server, the next request. Any PyO3 call processes the deferred drops, so one cheap
    call every ``interval`` finalises the abandoned stream promptly, and its ``finally``
    closes the upstream connection: the upstream stops generating.
    """
    while True:
        await asyncio.sleep(interval)
        get_version()


class _Headers:
    """Robyn's request headers with some values replaced."""

    def __init__(self, headers: RobynHeaders, replaced: dict[str, str]) -> None:
        self._items = [(k, v) for k, v in headers.multi_items() if k.lower() not in replaced]
        self._items += replaced.items()

    def get(self, key: str, default: str | None = None) -> str | None:
        return next((v for k, v in self._items if k.lower() == key), default)

    def items(self) -> list[tuple[str, str]]:
        return self._items


def _rebuild_multipart(request: RobynRequest) -> tuple[bytes, str]:
    """A multipart body from what Robyn parsed out of the original.

    Robyn 0.88 replaces a multipart body by its parsed fields and files (files keyed by
    file name, their field name lost), so the original bytes cannot be forwarded. The
    rebuilt body keeps every text field and every file's bytes and name, under the field
    name ``file`` that OpenAI's upload endpoints use.
    """
    boundary = "gateway-" + os.urandom(12).hex()
    parts = []
    for name, value in request.form_data.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        parts.append(value.encode() + b"\r\n")
    for filename, data in request.files.items():
        disposition = f'form-data; name="file"; filename="{filename}"'
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        parts.append(bytes(data) + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _headers(headers: HeaderList) -> RobynHeaders:
    out = RobynHeaders({})
    for key, value in headers:
        out.append(key, value)
    return out


class RobynAdapter:
    """Translates between Robyn's request/response objects and the core's."""

    def __init__(self, gateway: Gateway, port: int = 0, drain_seconds: float = 30.0) -> None:
        self.gateway = gateway
        self.port = port
        self.drain_seconds = drain_seconds
        self._reaper: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Runs in each worker process, on its loop, before it serves."""
        # Robyn's accept loop complains about the listener the supervisor shuts at exit,
        # and actix logs every malformed request at ERROR: any client could write them.
        logging.getLogger("actix_server").setLevel(logging.CRITICAL)
        logging.getLogger("actix_http").setLevel(logging.CRITICAL)
        logging.getLogger("robyn.server").addFilter(_client_mistakes_as_warnings)
        await self.gateway.startup()
        freeze_startup_heap()
        loop = asyncio.get_running_loop()
        self._reaper = loop.create_task(_reap_abandoned_streams())
        for signum in (DRAIN_SIGNAL, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop)

    def _stop(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._drain_and_exit())

    async def _drain_and_exit(self) -> None:
        """Let what is in flight finish (within the drain), then exit 0. (The supervising
        process has stopped the listening socket.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while True:
            await self.gateway.drain(max(0.0, deadline - loop.time()))
            await asyncio.sleep(WRITE_GRACE)
            if not self.gateway.in_flight or loop.time() >= deadline:
                break
        if self._reaper is not None:
            self._reaper.cancel()
        await self.gateway.shutdown()
        # The loop is run twice: by Robyn's server.start, then by spawn_process after it
        # returns. Stop the first run now, and the second as soon as it starts.
        loop.stop()
        loop.call_soon(loop.call_soon, loop.stop)

    async def __call__(self, request: RobynRequest) -> RobynResponse | RobynStreamingResponse:
        headers: RobynHeaders | _Headers = request.headers
        content_type = headers.get("content-type")
        incomplete = False
        if content_type is not None and content_type.startswith("multipart/form-data"):
            body, content_type = _rebuild_multipart(request)
            headers = _Headers(headers, {"content-type": content_type})
        else:
            body = request.body
            if type(body) is str:  # Robyn hands over valid UTF-8 as str
                body = body.encode()
            # Robyn runs the handler on whatever arrived before a client half-closed:
            # a body shorter than its Content-Length is refused here. (A chunked body
            # cut short cannot be told from a whole one: Robyn does not say.)
            length = headers.get("content-length")
            incomplete = (
                length is not None
                and length.isdigit()
                and int(length) != len(body)
                and headers.get("transfer-encoding") is None
            )
        params = request.query_params
        # Robyn keeps query values as sent (still percent-encoded): join them back as they were.
        query = "" if params.empty() else "&".join(f"{k}={v}" for k, v in params.multi_items())
        incoming = Request(request.method, request.url.path, query, headers, body, request.ip_addr)
        if incomplete:
            response = await self.gateway.refuse(incoming, IncompleteBodyError())
        else:
            response = await self.gateway.handle(incoming)
        if type(response) is StreamingResponse:
            media_type = response.header("content-type") or ""
            return RobynStreamingResponse(
                response.iterate(),
                status_code=response.status,
                headers=_headers(response.headers),
                media_type=media_type or "application/octet-stream",
            )
        return RobynResponse(
            status_code=response.status,
            headers=_headers(response.headers),
            description=response.body,
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _client_mistakes_as_warnings(record: logging.LogRecord) -> bool:
    """Robyn's own 500 for a body it cannot parse (multipart) is the client's mistake:
    worth a warning, not an error that pages someone."""
    if record.levelno == logging.ERROR and str(record.msg).startswith("Failed to parse"):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _stop_listening(port: int) -> None:
    """Stop taking new connections: shut the listening socket Robyn holds (all workers
    share it, and all are stopping). Robyn has no call for it; the kernel does."""
    logging.getLogger("actix_server").setLevel(logging.CRITICAL)  # its accept loop complains
    for fd in map(int, os.listdir("/proc/self/fd")):
        with contextlib.suppress(OSError):
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as listener:
                accepting = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                if accepting and listener.getsockname()[1] == port:
                    listener.shutdown(socket.SHUT_RD)


def create_app(adapter: RobynAdapter, *, log_level: str = "info") -> Robyn:
    config = Config()
    config.workers = 1
    config.disable_openapi = True
    config.log_level = "WARNING" if log_level == "info" else log_level.upper()
    app = Robyn(__file__, config=config)
    app.startup_handler(adapter.startup)

    async def handle(request: RobynRequest) -> RobynResponse | RobynStreamingResponse:
        return await adapter(request)

    for method in METHODS:
        app.add_route(method, "/", handle)
        app.add_route(method, "/*path", handle)
    return app


def serve(
    make_gateway: Callable[[], Gateway],
    *,
    host: str,
    port: int,
    workers: int,
    drain_seconds: float = 30.0,
    log_level: str = "info",
    **_: object,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain; the gateway is built once, and each worker
    process (forked) starts its own copy.

    Robyn's own process pool kills its workers on SIGTERM (and a single Robyn process
    ignores it), so the workers are supervised here: each runs Robyn's own worker
    function; one that dies is replaced; on SIGTERM this parent forwards the signal,
    waits for the workers to drain, and exits non-zero if one of them failed.
    """
    if not _loopback(host):
        logger.warning(
            "Robyn is listening on %s, beyond this machine: one malformed chunked request "
            "body aborts a Robyn worker (a Robyn limit). Put a proxy that reassembles "
            "request bodies in front, or use Granian (GATEWAY_SERVER=granian, the default)",
            host,
        )
    adapter = RobynAdapter(make_gateway(), port, drain_seconds)
    app = create_app(adapter, log_level=log_level)
    listener = SocketHeld(host, port)
    prepared = (
        app.directories,
        app.request_headers,
        app.router.get_routes(),
        app.middleware_router.get_global_middlewares(),
        app.middleware_router.get_route_middlewares(),
        app.web_socket_router.get_routes(),
        app.event_handlers,
    )
    context = multiprocessing.get_context("fork")

    def run_worker(*args: object) -> None:
        # A process group of its own: Ctrl-C in a terminal signals the foreground group,
        # and must reach only this supervisor, which drains the workers (Robyn's server
        # would end a worker's connections at once on SIGINT). If the supervisor dies
        # without a word, the worker goes with it.
        os.setpgid(0, 0)
        _die_with_parent()
        # A replacement worker is forked after this parent set its handlers below: until
        # the worker's own startup sets its handlers, a signal must act as by default.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        spawn_process(*args)

    def start_worker(number: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=run_worker,
            args=(*prepared, listener.try_clone(), 1, app.response_headers, None, 30, 20),
            name=f"gateway-worker-{number}",
        )
        process.start()
        return process

    processes = [start_worker(number) for number in range(1, workers + 1)]
    stopping = False

    signalled: set[int | None] = set()

    def stop(signum: int, _: object) -> None:
        nonlocal stopping
        if not stopping:
            _stop_listening(port)  # once, here: the workers share this socket
        stopping = True
        for process in processes:
            # Once each: a worker drains once.
            if process.pid not in signalled and process.exitcode is None:
                signalled.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, DRAIN_SIGNAL)  # type: ignore[arg-type]

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        multiprocessing.connection.wait([p.sentinel for p in processes], timeout=1.0)
        for number, process in enumerate(processes, 1):
            if process.exitcode is not None and not stopping:
                logger.error("worker %d exited with %s: starting another", number, process.exitcode)
                processes[number - 1] = start_worker(number)
                time.sleep(RESPAWN_PAUSE)  # a worker that dies at once must not spin the CPU
    stop(signal.SIGTERM, None)  # a replacement started as the signal came gets it too
    deadline = time.monotonic() + drain_seconds + 15
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:  # still running long after its drain: it is stuck
            logger.error("worker %s did not drain in time: killing it", process.name)
            process.kill()
            process.join()
    if any(process.exitcode != 0 for process in processes):
        raise SystemExit(1)
