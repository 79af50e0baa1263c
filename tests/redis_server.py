"""A real redis-server on a free loopback port, started and stopped by the tests.

`make test` installs redis-server when it is missing; a test that needs one fails,
loudly, when it cannot start it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.gateway_process import free_port


class RedisServer:
    extra_arguments: tuple[str, ...] = ()  # a cluster node's, say

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: `make test` installs it (apt-get)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra_arguments,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def command(self, *words: str) -> bytes:
        """One command, its raw reply (for tests that look at what the gateway stored)."""
        parts = [f"${len(w.encode())}\r\n{w}\r\n" for w in words]
        request = f"*{len(words)}\r\n" + "".join(parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(request.encode())
            return s.recv(65536)
