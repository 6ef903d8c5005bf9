"""Dedup lookups from a real streaming replica (--dedup-read-dsn): hits from the
replica, misses, lag and a replica down or silent answered by the primary."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from flk_fast.errors import ConfigError
from flk_fast.server.config import ServerConfig
from flk_fast.storage import open_dedup
from flk_fast.storage.dedup_postgres import PostgresDedup

from ._pg_cluster import PgPair, pg_pair  # noqa: F401 - the session fixture

pytestmark = pytest.mark.services


@pytest.fixture
def schema() -> str:
    return "r" + uuid.uuid4().hex[:12]


async def _replica_has(pair: PgPair, schema: str, key: bytes) -> None:
    """Wait until the replica has replayed the row of ``key``."""
    conn = await asyncpg.connect(pair.dsn(pair.replica_port))
    try:
        for _ in range(300):
            try:
                if await conn.fetchval(
                    f'SELECT count(*) FROM "{schema}".flk_dedup WHERE key = $1', key
                ):
                    return
            except asyncpg.UndefinedTableError:
                pass  # the schema itself is not replayed yet
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the replica never caught up")


async def _replay(pair: PgPair, paused: bool) -> None:
    conn = await asyncpg.connect(pair.dsn(pair.replica_port))
    try:
        fn = "pg_wal_replay_pause" if paused else "pg_wal_replay_resume"
        await conn.execute(f"SELECT {fn}()")
    finally:
        await conn.close()


def _stores(pair: PgPair, schema: str, read_port: int) -> tuple[Any, Any]:
    primary = f"{pair.dsn(pair.primary_port)}?schema={schema}"
    return (
        PostgresDedup(primary, timeout_s=10),
        PostgresDedup(
            primary,
            timeout_s=10,
            read_dsn=pair.dsn(read_port),
            read_timeout_s=0.5,
            read_retry_s=0.2,
        ),
    )


async def test_hit_is_answered_by_the_replica(pg_pair: PgPair, schema: str) -> None:
    writer, reader = _stores(pg_pair, schema, pg_pair.replica_port)
    try:
        assert await writer.put_if_absent("k", b"first") == (b"first", True)
        await _replica_has(pg_pair, schema, b"k")
        assert await reader.put_if_absent("k", b"second") == (b"first", False)
        assert await reader.get("k") == b"first"
        assert await reader.get_many(["k", "nope"]) == [b"first", None]
        assert reader.replica_hits == 3 and reader.replica_fallbacks == 1
    finally:
        await writer.close()
        await reader.close()


async def test_lagging_replica_falls_back_to_the_primary(
    pg_pair: PgPair, schema: str
) -> None:
    writer, reader = _stores(pg_pair, schema, pg_pair.replica_port)
    try:
        assert await writer.put_if_absent("seen", b"v", ttl_s=0.5) == (b"v", True)
        await _replica_has(pg_pair, schema, b"seen")
        await _replay(pg_pair, paused=True)
        try:
            # written after the replica stopped replaying: only the primary has it
            assert await writer.put_if_absent("late", b"L") == (b"L", True)
            assert await reader.get("late") == b"L"
            assert await reader.put_if_absent("late", b"other") == (b"L", False)
            # expired and written again on the primary: the replica holds only the
            # dead row, which it must not answer with
            await asyncio.sleep(0.6)
            assert await writer.put_if_absent("seen", b"new") == (b"new", True)
            assert await reader.get("seen") == b"new"
            assert await reader.put_if_absent("seen", b"x") == (b"new", False)
            assert reader.replica_hits == 0 and reader.replica_fallbacks == 4
        finally:
            await _replay(pg_pair, paused=False)
    finally:
        await writer.close()
        await reader.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize("replica", ["down", "silent"])
async def test_replica_down_or_silent_falls_back_to_the_primary(
    pg_pair: PgPair, schema: str, replica: str, closed_port: int, silent_port: int
) -> None:
    port = closed_port if replica == "down" else silent_port
    writer, reader = _stores(pg_pair, schema, port)
    try:
        assert await writer.put_if_absent("k", b"v") == (b"v", True)
        t0 = time.monotonic()
        assert await reader.get("k") == b"v"
        assert await reader.put_if_absent("k", b"w") == (b"v", False)
        assert await reader.put_if_absent("new", b"n") == (b"n", True)
        # one failed attempt, then the replica is left alone for read_retry_s
        assert time.monotonic() - t0 < 5
        assert reader.replica_hits == 0
    finally:
        await writer.close()
        await reader.close()


def test_read_dsn_needs_a_postgres_store(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="needs a postgresql:// dedup"):
        open_dedup(f"lmdb://{tmp_path}/d", read_dsn="postgresql://h/db")
    with pytest.raises(ConfigError, match="--dedup-read-dsn needs a PostgreSQL"):
        ServerConfig(dedup="redis://127.0.0.1:6379/0", dedup_read_dsn="postgresql://h")
