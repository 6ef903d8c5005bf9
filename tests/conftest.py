"""Shared fixtures: a seeded rng whose seed shows in failures, and the real services.

Redis and PostgreSQL are real servers on this machine (scripts/services.sh starts them).
When they are unreachable the tests that need them FAIL; only an explicit
FLK_REQUIRE_SERVICES=0 turns that into a visible skip for a laptop without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.services import (
    REDIS_DURABLE,
    RedisCluster,
    free_loopback_ports,
    reachable,
    redis_cli,
)

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


def _require(name: str, problem: str | None) -> None:
    if problem is None:
        return
    message = f"{name} is needed by this test but {problem}; run scripts/services.sh"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (FLK_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message + " (FLK_REQUIRE_SERVICES=0)")


@pytest.fixture(scope="session")
def redis_url() -> str:
    _require("Redis", reachable("127.0.0.1", 6379))
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    _require("PostgreSQL", reachable("127.0.0.1", 5432))
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real three-node Redis Cluster (no replicas), started for this session
    (``tests/services.RedisCluster``) and stopped after it."""
    _require(
        "A Redis Cluster",
        None
        if shutil.which("redis-server") and shutil.which("redis-cli")
        else "redis-server/redis-cli are not installed",
    )
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster.url


class RedisSentinelGroup:
    """A primary, its replica and one Sentinel watching them (service ``flk``)."""

    SERVICE = "flk"

    def __init__(self, work: Path, cli: str, server: str) -> None:
        self.cli = cli
        self.primary, self.replica, self.sentinel = free_loopback_ports(3)
        common = ["--bind", "127.0.0.1", "--save", "", *REDIS_DURABLE]
        common += ["--dir", str(work)]
        conf = f"{work}/sentinel.conf"
        with open(conf, "w") as f:
            f.write(
                f"port {self.sentinel}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary} 1\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 2000\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
            )
        self.procs = [
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for cmd in (
                [server, "--port", str(self.primary), *common,
                 "--appenddirname", f"aof-{self.primary}"],
                [server, "--port", str(self.replica), *common,
                 "--appenddirname", f"aof-{self.replica}", "--replicaof",
                 "127.0.0.1", str(self.primary)],
                [server, conf, "--sentinel"],
            )
        ]  # fmt: skip
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel}/{self.SERVICE}/0"

    def ask(self, port: int, *args: str) -> str:
        return redis_cli(self.cli, port, *args)

    def primary_port(self) -> int | None:
        out = self.ask(
            self.sentinel, "sentinel", "get-master-addr-by-name", self.SERVICE
        ).split()
        return int(out[1]) if len(out) == 2 and out[1].isdigit() else None

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"redis sentinel group: {what}"
            time.sleep(0.1)

    def replica_in_sync(self) -> bool:
        return "master_link_status:up" in self.ask(self.replica, "info", "replication")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)


@pytest.fixture(scope="session")
def redis_sentinel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisSentinelGroup]:
    """A real Sentinel-managed primary/replica pair, started for this session."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    _require(
        "Redis Sentinel",
        None if server and cli else "redis-server/redis-cli are not installed",
    )
    assert server and cli
    group = RedisSentinelGroup(tmp_path_factory.mktemp("redis-sentinel"), cli, server)
    try:
        group.wait(group.replica_in_sync, "the replica did not sync")
        group.wait(lambda: group.primary_port() == group.primary, "no primary known")
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="session")
def redis_sentinel_url(redis_sentinel: RedisSentinelGroup) -> str:
    return redis_sentinel.url


@pytest.fixture
def unique_prefix() -> Iterator[str]:
    """A namespace so tests sharing Redis / PostgreSQL never see each other's keys."""
    yield f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount_tmpfs("4m")`` mounts a tmpfs of that size and unmounts it after the
    test. Needs root (CI has it); without, it fails, or skips under
    FLK_REQUIRE_SERVICES=0."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        problem = None
        if os.geteuid() != 0 or not shutil.which("mount"):
            problem = "mounting a tmpfs needs root and mount(8)"
        else:
            cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
            if subprocess.run(cmd).returncode != 0:
                problem = "mount -t tmpfs failed"
        if problem:
            # CI runs as root: there a disk-full test that cannot run fails.
            if REQUIRE_SERVICES:
                pytest.fail(
                    f"{problem} (FLK_REQUIRE_SERVICES=0 turns this into a skip)"
                )
            pytest.skip(problem)
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def tiny_disk(mount_tmpfs: Callable[[str], Path]) -> Path:
    """A 4 MiB tmpfs: a disk that fills up within a test."""
    return mount_tmpfs("4m")
