"""Fixtures for the storage tests: one dedup URL per backend, each cleaned up after."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ("lmdb", "memory", "redis", "redis-cluster", "redis-sentinel", "postgres")
#: Backends that need a service (a server running, or binaries to start one).
SERVICES = ("redis", "redis-cluster", "redis-sentinel", "postgres")


def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(run())


def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def dedup_url_for(
    request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str
) -> Iterator[object]:
    """A function backend -> URL; Redis keys and PostgreSQL schemas go after."""
    cleanups: list[object] = []

    def make(backend: str) -> str:
        if backend == "lmdb":
            return f"lmdb://{tmp_path / 'dedup'}"
        if backend == "memory":
            return "memory://"
        if backend == "redis":
            url = request.getfixturevalue("redis_url")
            prefix = f"{unique_prefix}:"
            cleanups.append(lambda: drop_redis_prefix(url, prefix))
            return f"{url}?prefix={prefix}"
        if backend in ("redis-cluster", "redis-sentinel"):
            # Servers of this session only: a fresh prefix is all the isolation needed.
            url = request.getfixturevalue(backend.replace("-", "_") + "_url")
            return f"{url}?prefix={unique_prefix}:"
        if backend == "postgres":
            dsn = request.getfixturevalue("postgres_dsn")
            cleanups.append(lambda: drop_schema(dsn, unique_prefix))
            return f"{dsn}?schema={unique_prefix}"
        raise ValueError(backend)

    yield make
    for fn in cleanups:
        fn()  # type: ignore[operator]


def backend_params(names: tuple[str, ...] = BACKENDS) -> list[object]:
    """Backends as params; Redis and PostgreSQL carry the ``services`` marker."""
    return [
        pytest.param(n, marks=pytest.mark.services) if n in SERVICES else n
        for n in names
    ]


@pytest.fixture(params=backend_params())
def dedup_url(request: pytest.FixtureRequest, dedup_url_for: object) -> str:
    return dedup_url_for(request.param)  # type: ignore[operator]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    sock.close()


@pytest.fixture
def closed_port() -> int:
    """A TCP port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port
