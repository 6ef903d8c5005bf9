"""Shared fixtures: a seeded rng whose seed shows in failures, and the real services.

Redis and PostgreSQL are real servers on this machine (scripts/services.sh starts them).
When they are unreachable the tests that need them FAIL; only an explicit
FLK_REQUIRE_SERVICES=0 turns that into a visible skip for a laptop without them.
"""

from __future__ import annotations

import os
import socket
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


@pytest.fixture
def unique_prefix() -> Iterator[str]:
    """A namespace so tests sharing Redis / PostgreSQL never see each other's keys."""
    yield f"t{uuid.uuid4().hex[:12]}"
