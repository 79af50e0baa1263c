"""A real Redis Cluster on loopback: three primaries, each with a replica.

Six ``redis-server --cluster-enabled yes`` processes joined by ``redis-cli --cluster
create``; a short node timeout, so that a replica takes over within seconds of its
primary being killed. A test that needs it fails, loudly, when it cannot start.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.redis_server import RedisServer


def _free_pair() -> int:
    """A port free on loopback whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free pair of ports for a cluster node")


class ClusterNode(RedisServer):
    @property
    def extra_arguments(self) -> tuple[str, ...]:  # type: ignore[override]
        return (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{self.port}.conf",
            "--cluster-node-timeout",
            "1000",  # ms: a replica takes over within seconds
        )

    def info(self) -> str:
        return self.command("CLUSTER", "INFO").decode(errors="replace")


class RedisCluster:
    def __init__(self, directory: Path, size: int = 6) -> None:
        self.nodes = []
        for _ in range(size):
            port = _free_pair()
            (directory / str(port)).mkdir()
            node = ClusterNode(directory / str(port))  # a replica's copy is a file there
            node.port = port
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed: `make test` installs redis-server with it"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok, and every live replica has its
        primary's data (a replica that never synced cannot take over)."""
        deadline = time.monotonic() + timeout
        while True:
            live = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
            replicas = [n.command("INFO", "replication").decode() for n in live]
            if all("cluster_state:ok" in node.info() for node in live) and all(
                "master_link_status:up" in info for info in replicas if "role:slave" in info
            ):
                return
            assert time.monotonic() < deadline, "the cluster did not become ok"
            time.sleep(0.2)

    def slot_owner(self, key: str) -> ClusterNode:
        """The primary serving ``key``'s slot now."""
        probe = next(n for n in self.nodes if n.process is not None and n.process.poll() is None)
        slot = int(probe.command("CLUSTER", "KEYSLOT", key).decode().strip(":\r\n"))
        for line in probe.command("CLUSTER", "NODES").decode().splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no primary serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
