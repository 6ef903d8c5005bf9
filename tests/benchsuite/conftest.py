"""Endpoints of known behaviour (flk_fast.benchsuite.endpoint), each a real HTTP
server in its own process on 127.0.0.1, and a key file to sign with."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

KEY = b"testsecret"


class Endpoint:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flk_fast.benchsuite.endpoint", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"endpoint did not start: {line!r}")
        self.url = line.split()[-1]

    def stop(self) -> None:
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def endpoint() -> Iterator[Callable[..., Endpoint]]:
    started: list[Endpoint] = []

    def start(*args: str) -> Endpoint:
        ep = Endpoint(*args)
        started.append(ep)
        time.sleep(0.2)  # let it settle before load starts
        return ep

    yield start
    for ep in started:
        ep.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hmac.key"
    path.write_bytes(KEY)
    return path
