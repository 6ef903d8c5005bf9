"""A throwaway ``redis-server`` on a free loopback port, for tests that must break or
reconfigure the server itself (the shared one at 6379 is left alone)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import _require
from tests.services import free_loopback_ports, reachable

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


def aof_back_on(execute: Callable[..., object]) -> None:
    """``CONFIG SET appendonly yes`` through ``execute`` (a redis-py client's
    ``execute_command``) and wait for the initial AOF rewrite: while it runs, Redis
    ignores SIGTERM ("Writing initial AOF, can't exit"), and a fixture stopping it
    would hang."""
    execute("CONFIG", "SET", "appendonly", "yes")
    deadline = time.monotonic() + 20
    while True:
        raw = execute("INFO", "persistence")
        info = raw if isinstance(raw, dict) else {}
        if not info.get("aof_rewrite_in_progress") and not info.get(
            "aof_rewrite_scheduled"
        ):
            return
        assert time.monotonic() < deadline, f"AOF rewrite still running: {info}"
        time.sleep(0.05)


class ThrowawayRedis:
    """One ``redis-server`` process; ``stop()`` ends it by its PID."""

    def __init__(self, work: Path, *args: str, port: int | None = None) -> None:
        server = shutil.which("redis-server")
        _require("redis-server", None if server else "it is not installed")
        assert server
        work.mkdir(parents=True, exist_ok=True)
        # A port found free can be taken before redis-server binds it (other test
        # processes pick ports too): then try another, up to three times. Any other
        # exit at start fails with the server's own words.
        for attempt in range(3):
            self.port = port or free_loopback_ports(1)[0]
            log = work / f"redis-{self.port}.log"
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    [server, "--port", str(self.port), "--bind", "127.0.0.1"]
                    + ["--save", "", "--dir", str(work), *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 20
            while reachable("127.0.0.1", self.port) is not None:
                if self.proc.poll() is not None:
                    break
                assert time.monotonic() < deadline, (
                    "throwaway redis-server did not start"
                )
                time.sleep(0.02)
            else:
                return
            said = log.read_text(errors="replace")
            if "Address already in use" in said and port is None and attempt < 2:
                continue
            raise AssertionError(f"redis-server {args} exited at start:\n{said}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        """One command through redis-py (a connection of its own)."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            return str(client.execute_command(*args))
        finally:
            client.close()

    def aof_back_on(self) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            aof_back_on(client.execute_command)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # it refused SIGTERM: no test needs
                self.proc.kill()  # its data any more
                self.proc.wait(10)


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[Callable[..., ThrowawayRedis]]:
    """A factory ``start(*redis_server_args, port=None)``; every server started is
    stopped."""
    started: list[ThrowawayRedis] = []

    def start(*args: str, port: int | None = None) -> ThrowawayRedis:
        r = ThrowawayRedis(tmp_path / f"redis-{len(started)}", *args, port=port)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
