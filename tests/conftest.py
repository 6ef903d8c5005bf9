"""Shared fixtures: a seeded rng whose seed shows in failures, and the real services.

Redis and PostgreSQL are real servers on this machine (scripts/services.sh starts them).
When they are unreachable the tests that need them FAIL; only an explicit
FLK_REQUIRE_SERVICES=0 turns that into a visible skip for a laptop without them.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

REQUIRE_SERVICES = os.environ.get("FLK_REQUIRE_SERVICES", "1") != "0"
REDIS_URL = os.environ.get("FLK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get(
    "FLK_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


class SeededRng(np.random.Generator):
    """A numpy Generator whose repr names its seed, so a failure can be replayed."""

    def __init__(self, seed: int) -> None:
        super().__init__(np.random.PCG64(seed))
        self.seed = seed

    def __repr__(self) -> str:
        return f"SeededRng(seed={self.seed})"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> SeededRng:
    seed = int(os.environ.get("FLK_TEST_SEED", "0")) or (
        abs(hash(request.node.nodeid)) % (2**32)
    )
    return SeededRng(seed)


def _reachable(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


def _require(name: str, problem: str | None) -> None:
    if problem is None:
        return
    message = f"{name} is needed by this test but {problem}; run scripts/services.sh"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (FLK_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message + " (FLK_REQUIRE_SERVICES=0)")


@pytest.fixture(scope="session")
def redis_url() -> str:
    _require("Redis", _reachable("127.0.0.1", 6379))
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    _require("PostgreSQL", _reachable("127.0.0.1", 5432))
    return POSTGRES_DSN


def _cluster_ports(n: int) -> list[int]:
    """``n`` ports free on loopback whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = random.randrange(20000, 45000)
        if p in ports or any(
            _reachable("127.0.0.1", q) is None for q in (p, p + 10000)
        ):
            continue
        ports.append(p)
    return ports


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real three-node Redis Cluster (no replicas), started for this session from
    the ``redis-server`` and ``redis-cli`` binaries and stopped after it."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    _require(
        "A Redis Cluster",
        None if server and cli else "redis-server/redis-cli are not installed",
    )
    assert server and cli
    work = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports(3)
    procs = [
        subprocess.Popen(
            [
                server, "--port", str(p), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{p}.conf",
                "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
                "--dir", str(work),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while any(_reachable("127.0.0.1", p) for p in ports):
            assert time.monotonic() < deadline, "redis cluster nodes did not start"
            time.sleep(0.05)
        nodes = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0"]
            + ["--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        while True:  # every node must know every slot before the tests start
            states = [
                subprocess.run(
                    [cli, "-p", str(p), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                for p in ports
            ]
            if all("cluster_state:ok" in st for st in states):
                break
            assert time.monotonic() < deadline + 30, f"cluster not ok: {states}"
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(nodes)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


@pytest.fixture
def unique_prefix() -> Iterator[str]:
    """A namespace so tests sharing Redis / PostgreSQL never see each other's keys."""
    yield f"t{uuid.uuid4().hex[:12]}"
