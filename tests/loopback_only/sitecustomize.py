"""Loopback only: a folder some tests put first on a gateway process's ``PYTHONPATH``, so
that Python runs this at start-up (as ``sitecustomize``) in the process and its workers.

An audit hook refuses every name lookup and connection beyond loopback that Python's
``socket`` module is asked for — a cloud SDK's (google-auth's, azure-identity's, both
through requests) among them — and says so on stderr, that is in the gateway's log, as
``loopback-only: refused …``. A test then knows no real network was touched: nothing was
resolved, nothing was reached, metadata.google.internal and login.microsoftonline.com
included.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

LOOPBACK = {None, "", "localhost", "127.0.0.1", "::1"}


def _host(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes | bytearray) else value


def _loopback_only(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        host = _host(args[0])
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = _host(args[1][0])
    else:
        return
    if host in LOOPBACK:
        return
    print(f"loopback-only: refused {event} {host!r}", file=sys.stderr, flush=True)
    raise socket.gaierror(socket.EAI_NONAME, f"loopback only: {host!r} refused")


sys.addaudithook(_loopback_only)
