"""Long-lived connections do not make a worker grow."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

from tests.gateway_process import GatewayProcess

BODY = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}'


def tree_rss_kib(pid: int) -> int:
    """Total RSS of a process and its children (the gateway's workers)."""
    total = 0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                pids.append(int(entry))
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def requests_on_one_connection(gateway: GatewayProcess, count: int) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(count):
            headers = {"content-type": "application/json"}
            connection.request("POST", "/v1/chat/completions", BODY, headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()


def test_many_requests_on_one_keep_alive_connection_do_not_grow_the_worker(gateway, upstream):
    requests_on_one_connection(gateway, 1500)  # warm up: pools, caches, allocator arenas
    before = tree_rss_kib(gateway.process.pid)
    requests_on_one_connection(gateway, 4000)
    grown = tree_rss_kib(gateway.process.pid) - before
    # Anything kept per request (a watcher, a task, a callback) would show as megabytes.
    assert grown < 4 * 1024, f"worker grew by {grown} KiB over 4000 requests"
