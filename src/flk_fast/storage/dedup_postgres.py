"""Dedup on PostgreSQL (asyncpg): shared by every server replica, durable on commit.

``put_if_absent`` calls ``flk_dedup_put`` (one round trip), which takes a
transaction-scoped advisory lock per key (a batch takes its
keys' locks in lock-id order, so overlapping batches cannot deadlock), reads the live
entry and inserts only if there is none: the first write wins. The lock is needed
because the table is partitioned by day of ``expires_at`` (migration 0004), and a
partitioned table's primary key must contain the partition key: ``(key,
expires_at)`` alone would let two racing puts each insert. The read is a statement of
its own, after the lock, so its snapshot sees a winner that committed while we waited.

Expiry: reads hide dead entries at once (``expires_at > now()``); ``sweep()`` drops the
partitions whose day has passed (``partitions.drop_expired_dedup``: metadata only, no
scan, whatever the table size), and the store runs it in the background at most once
per ``sweep_interval_s``. The writer creates the partition of a new day itself. The
schema comes from the migrations in ``storage/migrations``, applied idempotently when
the pool first connects and by ``flk db migrate``. ``?schema=name`` in the URL puts the
tables in that schema.

With ``read_dsn`` (``flk serve --dedup-read-dsn``, a streaming standby), lookups and
the read half of a put ask the replica first: a live entry found there is the answer
(rows never change once written, so it is the primary's winner); a miss, an error or
no answer within ``read_timeout_s`` goes to the primary, and a failed replica is left
alone for ``read_retry_s``. Writes always go to the primary.

The pool is created lazily on first use, so a server starts while PostgreSQL is down
and recovers when it returns. Every call is bounded by ``timeout_s`` and raises
``DedupUnavailableError`` on timeout or any database/connection error (the mapping is
``_pg.storage_error``, shared with the audit log).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from flk_fast.errors import DedupUnavailableError

from . import migrations
from ._pg import server_settings, split_dsn, storage_error
from .base import DEFAULT_TTL_S, DedupKey, dedup_key

log = logging.getLogger("flk_fast.storage.postgres")

__all__ = ["PostgresDedup"]

# Lock, read the live winners, insert the others (see the module docstring).
_PUT = "SELECT key, value, inserted FROM flk_dedup_put($1::bytea[], $2::bytea[], $3)"
_GET_MANY = (
    "SELECT key, value FROM flk_dedup"
    " WHERE key = ANY($1::bytea[]) AND expires_at > now()"
)


class PostgresDedup:
    """``DedupStore`` on PostgreSQL: ``postgresql://user@host:port/db[?schema=…]``."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout_s: float = 2.0,
        max_size: int = 10,
        sweep_interval_s: float = 60.0,
        read_dsn: str = "",
        read_timeout_s: float = 0.5,
        read_retry_s: float = 5.0,
    ) -> None:
        self._dsn, opts = split_dsn(dsn)
        # A read replica (streaming standby) answers hits; see _replica_hits.
        self._read_dsn = split_dsn(read_dsn)[0] if read_dsn else ""
        self.read_timeout_s = min(read_timeout_s, timeout_s)
        self.read_retry_s = read_retry_s
        self._read_pool: asyncpg.Pool | None = None
        self._read_lock = asyncio.Lock()
        self._replica_down_until = 0.0
        self.replica_hits = 0
        self.replica_fallbacks = 0  # misses and failures answered by the primary
        self.schema = opts.get("schema") or None
        self.timeout_s = timeout_s
        self.max_size = max_size
        self.sweep_interval_s = sweep_interval_s
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._last_sweep = time.monotonic()
        self._sweeper: asyncio.Task[Any] | None = None
        self._closed = False
        self._days: set[_dt.date] = set()  # partitions known to exist (by UTC day)

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

    async def _replica_hits(self, ks: list[bytes]) -> dict[bytes, bytes]:
        """Live entries the read replica has for ``ks``; {} without one, or while
        it failed within the last ``read_retry_s``.

        Safe because a row is never changed once written: a live row the replica
        has is the winner the primary would return (expiry is checked against the
        replica's clock, as the primary checks its own). A miss may be lag, so the
        caller asks the primary for every key not found here."""
        if not self._read_dsn or time.monotonic() < self._replica_down_until:
            return {}
        try:
            async with asyncio.timeout(self.read_timeout_s):
                if self._read_pool is None:
                    async with self._read_lock:
                        if self._read_pool is None:
                            self._read_pool = await asyncpg.create_pool(
                                self._read_dsn,
                                min_size=1,
                                max_size=self.max_size,
                                timeout=self.read_timeout_s,
                                command_timeout=self.read_timeout_s,
                                server_settings=server_settings(self.schema),
                            )
                async with self._read_pool.acquire() as conn:
                    rows = await conn.fetch(_GET_MANY, ks)
        except Exception as exc:  # down, lagging behind a migration, timed out
            self._replica_down_until = time.monotonic() + self.read_retry_s
            log.warning(
                "postgres dedup: read replica failed (%s: %s); primary only for %.0f s",
                type(exc).__name__,
                exc,
                self.read_retry_s,
            )
            return {}
        found = {bytes(r[0]): bytes(r[1]) for r in rows}
        self.replica_hits += len(found)
        self.replica_fallbacks += len(ks) - len(found)
        return found

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
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]:
        ks = [dedup_key(k) for k in keys]
        if not ks:
            return []
        found = await self._replica_hits(ks)
        rest = [k for k in ks if k not in found]
        if rest:
            rows = await self._call(lambda c: c.fetch(_GET_MANY, rest))
            found.update((bytes(r[0]), bytes(r[1])) for r in rows)
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
        return (await self.put_many_if_absent([(key, value)], ttl_s))[0]

    async def _put(
        self, conn: Any, keys: list[bytes], values: list[bytes], ttl_s: float
    ) -> dict[bytes, tuple[bytes, bool]]:
        await self._ensure_partition(conn, ttl_s)
        try:
            return await self._put_locked(conn, keys, values, ttl_s)
        except asyncpg.CheckViolationError:
            # "no partition of relation found for row": the day's partition was
            # dropped behind our back (by hand, say). Forget what we knew, retry once.
            self._days.clear()
            await self._ensure_partition(conn, ttl_s)
            return await self._put_locked(conn, keys, values, ttl_s)

    async def _put_locked(
        self, conn: Any, keys: list[bytes], values: list[bytes], ttl_s: float
    ) -> dict[bytes, tuple[bytes, bool]]:
        """Lock the keys, read the live winners, insert the others: one round trip
        (``flk_dedup_put``, migration 0004)."""
        rows = await conn.fetch(_PUT, keys, values, float(ttl_s))
        return {bytes(r[0]): (bytes(r[1]), r[2]) for r in rows}

    async def _ensure_partition(self, conn: Any, ttl_s: float) -> None:
        """Create the partition entries put now expire into, once per UTC day.

        Its own transaction, before the key locks: creating a partition locks the
        whole table, and doing that while holding key locks others wait for would
        deadlock. The day before and after are created too, for clock skew between
        this host and the database."""
        day = (_dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=ttl_s)).date()
        if day in self._days:
            return
        await conn.execute(
            "SELECT flk_ensure_day_partition('flk_dedup', d::date) FROM"
            " generate_series($1::date - 1, $1::date + 1, interval '1 day') AS d",
            day,
        )
        self._days.add(day)

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
        hits = await self._replica_hits(sorted(first))
        keys = sorted(k for k in first if k not in hits)

        by_key = {k: (v, False) for k, v in hits.items()}
        if keys:
            by_key.update(
                await self._call(
                    lambda conn: self._put(conn, keys, [first[k] for k in keys], ttl_s)
                )
            )
        self._maybe_sweep()
        out, seen = [], set()
        for k, _ in prepared:
            winner, inserted = by_key[k]
            out.append((winner, inserted and k not in seen))
            seen.add(k)
        return out

    async def sweep(self, limit: int = 100_000) -> int:
        """Drop the partitions whose every entry has expired; return how many.

        ``limit`` is accepted for the ``DedupStore`` interface; dropping a partition
        costs the same whatever its size."""
        from .partitions import drop_expired_dedup

        return len(await self._call(drop_expired_dedup))

    async def ping(self) -> None:
        await self._call(lambda c: c.fetchval("SELECT 1"))

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._read_pool is not None:
            self._read_pool.terminate()  # read-only: nothing to finish
            self._read_pool = None
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
