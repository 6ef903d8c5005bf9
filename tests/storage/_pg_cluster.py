"""A PostgreSQL primary and a streaming replica of it, started for a test session.

Both run as the ``postgres`` user (the server refuses root) in a temporary
directory, on free loopback ports; the replica is a ``pg_basebackup -R`` of the
primary. Each is stopped by its PID.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgPair:
    def __init__(self, work: Path) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt postgresql)")
        self.bin = bindir
        self.work = work
        self.user = pwd.getpwnam("postgres")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.primary_port, self.replica_port = _free_port(), _free_port()

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            capture_output=True,
            timeout=300,
        )
        if out.returncode:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.decode()[-2000:]}")

    def _start(self, datadir: Path, port: int) -> None:
        with open(datadir / "postgresql.conf", "a") as f:
            f.write(
                f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.work}'\nfsync = off\n"
                "hot_standby = on\n"
            )
        with open(self.work / f"pg-{port}.log", "ab") as log:  # the child keeps it
            self.procs.append(
                subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(datadir)],
                    user=self.user.pw_uid,
                    group=self.user.pw_gid,
                    stdout=log,
                    stderr=log,
                )
            )
        self._wait_ready(port)

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise RuntimeError(f"postgres on {port} exited; see {self.work}")
            ok = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
            )
            if ok.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"postgres on {port} did not come up; see {self.work}")

    def start(self) -> None:
        os.chown(self.work, self.user.pw_uid, self.user.pw_gid)
        primary, replica = self.work / "primary", self.work / "replica"
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust")
        self._start(primary, self.primary_port)
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",  # standby.signal + primary_conninfo: a streaming replica
            "-X",
            "stream",
        )
        self._start(replica, self.replica_port)

    def dsn(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)  # fast shutdown
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def pg_pair() -> object:
    """A primary and its streaming replica (fails, never skips, without binaries:
    scripts/services.sh installs them)."""
    # Not under pytest's tmp dir: that is root's, mode 0700, closed to postgres.
    work = Path(tempfile.mkdtemp(prefix="flk-pg-pair-"))
    pair = PgPair(work)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(work, ignore_errors=True)
