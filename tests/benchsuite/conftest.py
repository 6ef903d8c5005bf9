"""Endpoints of known behaviour (flk_fast.benchsuite.endpoint), each a real HTTP
server in its own process on 127.0.0.1, and a key file to sign with."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flk_fast.benchsuite.endpoint import spawn

KEY = b"testsecret"


class Endpoint:
    def __init__(self, *args: str) -> None:
        self.proc, self.url = spawn(*args)

    def stop(self) -> None:
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
