"""Dedup on PostgreSQL (asyncpg): shared by every server replica, durable on commit.

``put_if_absent`` is ``INSERT … ON CONFLICT (key) DO UPDATE … WHERE expired`` — it
inserts a new key, or replaces an entry whose time is up, and otherwise leaves the
live winner alone and returns no row; then the winner is read in a second statement.
The second statement is needed because a single statement reads from a snapshot taken
before a concurrent winner committed, and would see nothing. A batch sorts its keys so
two overlapping batches lock rows in the same order and cannot deadlock.

Expiry: ``expires_at`` (indexed) hides dead entries from reads at once; ``sweep()``
deletes them in expiry order, and the store runs it in the background at most once
per ``sweep_interval_s``. The schema comes from the migrations in
``storage/migrations``, applied idempotently when the pool first connects and by
``flk db migrate``. ``?schema=name`` in the URL puts the tables in that schema.

The pool is created lazily on first use, so a server starts while PostgreSQL is down
and recovers when it returns. Every call is bounded by ``timeout_s`` and raises
``DedupUnavailableError`` on timeout or any database/connection error (the mapping is
``_pg.storage_error``, shared with the audit log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from flk_fast.errors import DedupUnavailableError

from . import migrations
from ._pg import server_settings, split_dsn, storage_error
from .base import DEFAULT_TTL_S, DedupKey, dedup_key

__all__ = ["PostgresDedup"]

_INSERT = """
INSERT INTO flk_dedup AS d (key, value, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
    WHERE d.expires_at <= now()
RETURNING d.value
"""
_INSERT_MANY = """
INSERT INTO flk_dedup AS d (key, value, expires_at)
SELECT k, v, now() + make_interval(secs => $3)
FROM unnest($1::bytea[], $2::bytea[]) AS t(k, v)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
    WHERE d.expires_at <= now()
RETURNING d.key
"""
_GET = "SELECT value FROM flk_dedup WHERE key = $1 AND expires_at > now()"
_GET_MANY = (
    "SELECT key, value FROM flk_dedup"
    " WHERE key = ANY($1::bytea[]) AND expires_at > now()"
)
# The outer expiry test is re-checked on a row a concurrent put just renewed, so the
# sweep never deletes a live entry.
_SWEEP = """
DELETE FROM flk_dedup WHERE expires_at <= now() AND key IN (
    SELECT key FROM flk_dedup WHERE expires_at <= now() ORDER BY expires_at LIMIT $1)
"""


async def _put_one(
    conn: Any, k: bytes, value: bytes, ttl_s: float
) -> tuple[bytes, bool]:
    """Insert-or-read-the-winner for one key on ``conn``."""
    # Loop: the winner may expire and be swept between our two statements.
    for _ in range(5):
        if await conn.fetchval(_INSERT, k, value, float(ttl_s)) is not None:
            return value, True
        winner = await conn.fetchval(_GET, k)
        if winner is not None:
            return bytes(winner), False
    raise DedupUnavailableError("postgres dedup: key keeps expiring under us")


class PostgresDedup:
    """``DedupStore`` on PostgreSQL: ``postgresql://user@host:port/db[?schema=…]``."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout_s: float = 2.0,
        max_size: int = 10,
        sweep_interval_s: float = 60.0,
    ) -> None:
        self._dsn, opts = split_dsn(dsn)
        self.schema = opts.get("schema") or None
        self.timeout_s = timeout_s
        self.max_size = max_size
        self.sweep_interval_s = sweep_interval_s
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._last_sweep = time.monotonic()
        self._sweeper: asyncio.Task[Any] | None = None
        self._closed = False

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self.max_size,
                    timeout=self.timeout_s,
                    command_timeout=self.timeout_s,
                    server_settings=server_settings(self.schema),
                )
                try:
                    async with pool.acquire() as conn:
                        await migrations.apply(conn, self.schema)
                except BaseException:
                    pool.terminate()
                    raise
                self._pool = pool
        return self._pool

    async def _call(self, fn: Any) -> Any:
        """Run ``fn(conn)`` on a pooled connection within ``timeout_s``."""
        if self._closed:
            raise DedupUnavailableError("postgres dedup store is closed")
        try:
            async with asyncio.timeout(self.timeout_s):
                pool = await self._get_pool()
                async with pool.acquire() as conn:
                    return await fn(conn)
        except Exception as exc:
            raise storage_error(
                "postgres dedup", exc, self.timeout_s, DedupUnavailableError
            ) from exc

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if self._sweeper is None and now - self._last_sweep >= self.sweep_interval_s:
            self._last_sweep = now
            self._sweeper = asyncio.get_running_loop().create_task(self._bg_sweep())

    async def _bg_sweep(self) -> None:
        try:
            await self.sweep()
        except DedupUnavailableError:
            pass  # the next interval tries again; reads already hide dead entries
        finally:
            self._sweeper = None

    async def get(self, key: DedupKey) -> bytes | None:
        k = dedup_key(key)
        value: bytes | None = await self._call(lambda c: c.fetchval(_GET, k))
        return value

    async def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]:
        ks = [dedup_key(k) for k in keys]
        if not ks:
            return []
        rows = await self._call(lambda c: c.fetch(_GET_MANY, ks))
        found = {bytes(r[0]): bytes(r[1]) for r in rows}
        return [found.get(k) for k in ks]

    @staticmethod
    def _check(value: bytes, ttl_s: float) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"dedup values are bytes, not {type(value).__name__}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")

    async def put_if_absent(
        self, key: DedupKey, value: bytes, ttl_s: float = DEFAULT_TTL_S
    ) -> tuple[bytes, bool]:
        k = dedup_key(key)
        self._check(value, ttl_s)

        out: tuple[bytes, bool] = await self._call(
            lambda conn: _put_one(conn, k, value, ttl_s)
        )
        self._maybe_sweep()
        return out

    async def put_many_if_absent(
        self, items: Sequence[tuple[DedupKey, bytes]], ttl_s: float = DEFAULT_TTL_S
    ) -> list[tuple[bytes, bool]]:
        prepared = []
        for key, value in items:
            self._check(value, ttl_s)
            prepared.append((dedup_key(key), value))
        if not prepared:
            return []
        first: dict[bytes, bytes] = {}
        for k, v in prepared:
            first.setdefault(k, v)  # a key repeated in the batch: first occurrence wins
        keys = sorted(first)

        async def run(conn: Any) -> dict[bytes, tuple[bytes, bool]]:
            rows = await conn.fetch(
                _INSERT_MANY, keys, [first[k] for k in keys], float(ttl_s)
            )
            won = {bytes(r[0]) for r in rows}
            result = {k: (first[k], True) for k in won}
            missing = [k for k in keys if k not in won]
            if missing:
                for r in await conn.fetch(_GET_MANY, missing):
                    result[bytes(r[0])] = (bytes(r[1]), False)
            for k in missing:
                if k not in result:  # expired and swept in between: retry alone,
                    # on this connection (another acquire while holding this one
                    # could wait forever for a pool exhausted by such batches)
                    result[k] = await _put_one(conn, k, first[k], ttl_s)
            return result

        by_key: dict[bytes, tuple[bytes, bool]] = await self._call(run)
        self._maybe_sweep()
        out, seen = [], set()
        for k, _ in prepared:
            winner, inserted = by_key[k]
            out.append((winner, inserted and k not in seen))
            seen.add(k)
        return out

    async def sweep(self, limit: int = 100_000) -> int:
        """Delete up to ``limit`` expired entries now; return how many."""
        status: str = await self._call(lambda c: c.execute(_SWEEP, limit))
        return int(status.split()[-1])

    async def ping(self) -> None:
        await self._call(lambda c: c.fetchval("SELECT 1"))

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(self.timeout_s):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    async def __aenter__(self) -> PostgresDedup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
