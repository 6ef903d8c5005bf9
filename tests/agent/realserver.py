"""``flk serve`` in a subprocess on LMDB, for agent tests that need the real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = b"testsecret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return e


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def metric(url: str, name: str) -> float:
    _, text = http_get(url + "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Server:
    def __init__(self, tmp: Path, key_args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp / "srv"
        self.key = tmp / "key"
        self.key.write_bytes(KEY)
        self.log = open(tmp / "server.log", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        # How the server is keyed; the default is HMAC with self.key.
        self.key_args = key_args

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flk_fast",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data),
                *(self.key_args or ["--hmac-key-file", str(self.key)]),
            ],
            stdout=self.log,
            stderr=self.log,
            env=env(),
        )
        deadline = time.monotonic() + 30
        while http_get(self.url + "/ready")[0] != 200:
            assert self.proc.poll() is None, "server died at start-up"
            assert time.monotonic() < deadline, "server not ready in 30 s"
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def stored_outcomes(self, ids: list[str]) -> tuple[int, list[bool]]:
        """(entries in the server's dedup store, whether each id has one); the server
        must be stopped. Read through the store's own API, not its layout."""
        from flk_fast.storage.ledger import Ledger

        store = Ledger(self.data / "ledger")  # the default layout
        try:
            return store.count(), [v is not None for v in store.get_many(ids)]
        finally:
            store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:  # a start that fails must still close the log (else a ResourceWarning
        s.start()  # surfaces later, in whatever test the GC happens to run in)
        yield s
    finally:
        s.stop()
