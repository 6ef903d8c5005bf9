"""Real Redis servers started on loopback: the one starter of a Redis Cluster, shared
by the test session (``tests/conftest.py``) and the benchmark
(``bench/bench_replicas.py``).

No pytest here: a benchmark imports it too. A cluster that does not come up raises
``RuntimeError`` naming what was seen.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "REDIS_DURABLE",
    "RedisCluster",
    "free_loopback_ports",
    "reachable",
    "redis_cli",
]

#: What the dedup store requires of a Redis server (docs/storage.md, "Durability"); the
#: servers started here use it, as scripts/services.sh does for 127.0.0.1:6379.
REDIS_DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


def reachable(host: str, port: int) -> str | None:
    """``None`` if a TCP connection to ``host:port`` opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


def free_loopback_ports(n: int) -> list[int]:
    """``n`` ports free on loopback whose +10000 neighbour (a Redis Cluster node's bus
    port) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = random.randrange(20000, 45000)
        if p in ports or any(reachable("127.0.0.1", q) is None for q in (p, p + 10000)):
            continue
        ports.append(p)
    return ports


def redis_cli(cli: str, port: int, *args: str) -> str:
    """One ``redis-cli`` command to the server on ``127.0.0.1:port``; its output."""
    return subprocess.run(
        [cli, "-p", str(port), *args], capture_output=True, text=True, timeout=10
    ).stdout


class RedisCluster:
    """A real Redis Cluster of ``nodes`` primaries (no replicas) in ``work``, from the
    ``redis-server`` and ``redis-cli`` binaries. ``start()`` returns once every node
    knows every slot; ``stop()`` terminates the nodes by PID. Also a context manager.

    ``url`` is the ``redis+cluster://`` dedup URL; ``ports`` the nodes' client ports."""

    def __init__(self, work: Path, nodes: int = 3) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not (server and cli):
            raise FileNotFoundError("redis-server/redis-cli are not installed")
        self.server, self.cli, self.work = server, cli, work
        self.ports = free_loopback_ports(nodes)
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.procs: list[subprocess.Popen[bytes]] = []

    def ask(self, port: int, *args: str) -> str:
        return redis_cli(self.cli, port, *args)

    def start(self, timeout: float = 30) -> RedisCluster:
        self.procs = [
            subprocess.Popen(
                [
                    self.server, "--port", str(p), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file",
                    f"nodes-{p}.conf", "--cluster-node-timeout", "5000", "--save", "",
                    *REDIS_DURABLE, "--dir", str(self.work),
                    "--appenddirname", f"aof-{p}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for p in self.ports
        ]  # fmt: skip
        try:
            self._form(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, deadline: float) -> None:
        while any(reachable("127.0.0.1", p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster nodes did not start")
            time.sleep(0.05)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "0"]
            + ["--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        while True:  # every node must know every slot before it is used
            states = [self.ask(p, "cluster", "info") for p in self.ports]
            if all("cluster_state:ok" in st for st in states):
                return
            if time.monotonic() > deadline + 30:
                raise RuntimeError(f"redis cluster not ok: {states}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
