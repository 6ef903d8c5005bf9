"""Append-only, hash-chained audit log of verification outcomes in PostgreSQL.

Write path (never on the request's critical path longer than one group-committed WAL
append): ``await audit.record(entry)`` appends the entry to a local ``LmdbWal`` spool
and returns; a background shipper drains the spool in batches into ``flk_audit`` and
acks what PostgreSQL committed. While PostgreSQL is down the entries simply stay in the
spool (durable on disk) and the shipper retries with capped exponential backoff, so
nothing is lost, even across restarts.

The chain: rows get dense ids 1, 2, 3, … and
``row_hash = sha256(prev_hash ‖ canonical row)`` where ``prev_hash`` is the previous
row's ``row_hash`` (32 zero bytes for row 1) and the canonical row is the JSON of every
column but the hashes (sorted keys, no spaces, ASCII; floats in shortest repr;
``received_at`` as integer microseconds since the epoch). A batch is inserted under a
transaction-scoped advisory lock, so several servers sharing one database extend one
chain without forks. Shipping is idempotent: each entry has an ``entry_id`` and an
entry already in the table (shipped, then the ack was lost in a crash) is skipped.

``verify_chain`` walks the table in id order and reports the first broken link: an id
gap (a deleted row), a ``prev_hash`` that is not the previous ``row_hash`` (a removed or
re-ordered row), or a ``row_hash`` that does not match the row (an edited row).
Deleting the newest rows cannot be seen from inside the chain; publish
``ChainReport.head_hash`` elsewhere to catch that.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from flk_fast.errors import StorageError

from . import migrations
from ._pg import connect
from .aio import AsyncWal
from .wal_lmdb import LmdbWal

__all__ = ["AuditEntry", "AuditLog", "ChainReport", "GENESIS", "verify_chain"]

log = logging.getLogger("flk_fast.storage.audit")

#: ``prev_hash`` of the first row.
GENESIS = bytes(32)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_COLUMNS = (
    "id",
    "entry_id",
    "pcs_id",
    "tenant",
    "accepted",
    "escalated",
    "reason",
    "recomputed_d_hat",
    "recomputed_budget",
    "received_at",
    "request_digest",
    "prev_hash",
    "row_hash",
)
# One chain per schema: the lock key is derived from the schema the table lives in.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('flk_audit:' || current_schema()))"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One verification outcome. ``received_at`` is epoch seconds (kept to 1 µs);
    ``request_digest`` is e.g. the hex SHA-256 of the request body."""

    pcs_id: str
    accepted: bool
    escalated: bool
    received_at: float
    request_digest: str
    reason: str = ""
    tenant: str = ""
    recomputed_d_hat: float | None = None
    recomputed_budget: float | None = None
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> AuditEntry:
        return cls(**json.loads(raw))


def _us(received_at: float) -> int:
    return round(received_at * 1_000_000)


def _canonical(row_id: int, e: dict[str, Any]) -> bytes:
    doc = {
        "id": row_id,
        "entry_id": e["entry_id"],
        "pcs_id": e["pcs_id"],
        "tenant": e["tenant"],
        "accepted": bool(e["accepted"]),
        "escalated": bool(e["escalated"]),
        "reason": e["reason"],
        "recomputed_d_hat": e["recomputed_d_hat"],
        "recomputed_budget": e["recomputed_budget"],
        "received_at_us": e["received_at_us"],
        "request_digest": e["request_digest"],
    }
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    ).encode()


def row_hash(prev_hash: bytes, row_id: int, e: dict[str, Any]) -> bytes:
    """sha256(prev_hash ‖ canonical row) — see the module docstring."""
    return hashlib.sha256(prev_hash + _canonical(row_id, e)).digest()


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


async def _insert_batch(conn: Any, entries: Sequence[AuditEntry]) -> int:
    """Append the entries not yet in the table, extending the chain; return how many."""
    async with conn.transaction():
        await conn.execute(_LOCK)
        ids = [e.entry_id for e in entries]
        have = {
            r[0]
            for r in await conn.fetch(
                "SELECT entry_id FROM flk_audit WHERE entry_id = ANY($1::text[])", ids
            )
        }
        last = await conn.fetchrow(
            "SELECT id, row_hash FROM flk_audit ORDER BY id DESC LIMIT 1"
        )
        prev = bytes(last["row_hash"]) if last else GENESIS
        next_id = last["id"] + 1 if last else 1
        rows = []
        for e in entries:
            if e.entry_id in have:
                continue
            have.add(e.entry_id)
            us = _us(e.received_at)
            fields = {
                "entry_id": e.entry_id,
                "pcs_id": e.pcs_id,
                "tenant": e.tenant,
                "accepted": e.accepted,
                "escalated": e.escalated,
                "reason": e.reason,
                "recomputed_d_hat": _float(e.recomputed_d_hat),
                "recomputed_budget": _float(e.recomputed_budget),
                "received_at_us": us,
                "request_digest": e.request_digest,
            }
            h = row_hash(prev, next_id, fields)
            rows.append(
                (
                    next_id,
                    e.entry_id,
                    e.pcs_id,
                    e.tenant,
                    e.accepted,
                    e.escalated,
                    e.reason,
                    fields["recomputed_d_hat"],
                    fields["recomputed_budget"],
                    _EPOCH + _dt.timedelta(microseconds=us),
                    e.request_digest,
                    prev,
                    h,
                )
            )
            prev, next_id = h, next_id + 1
        if rows:
            await conn.copy_records_to_table(
                "flk_audit", records=rows, columns=_COLUMNS
            )
        return len(rows)


class AuditLog:
    """Spooled, batched writer of the audit chain (see the module docstring).

    Parameters
    ----------
    dsn
        ``postgresql://…[?schema=…]``.
    spool_path
        Directory of the local LMDB spool (created if missing).
    batch_size
        Most entries per PostgreSQL transaction.
    flush_interval_s
        How long the shipper waits for more entries before shipping a partial batch.
    timeout_s
        Bound on each connect and each batch insert.
    """

    def __init__(
        self,
        dsn: str,
        spool_path: str | os.PathLike[str],
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.spool = AsyncWal(LmdbWal(spool_path))
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ship_lock = asyncio.Lock()
        self.shipped = 0
        self.last_error: str | None = None

    async def record(self, entry: AuditEntry) -> None:
        """Spool ``entry`` durably; the background shipper sends it to PostgreSQL."""
        await self.spool.append(entry.to_bytes())
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            async with asyncio.timeout(self.timeout_s):
                conn, schema = await connect(self.dsn, timeout_s=self.timeout_s)
                try:
                    await migrations.apply(conn, schema)
                except BaseException:
                    conn.terminate()
                    raise
            self._conn = conn
        return self._conn

    async def flush(self) -> int:
        """Ship everything spooled now; return how many rows were appended.

        Raises ``StorageError`` if PostgreSQL cannot be reached (entries stay spooled).
        """
        import asyncpg

        total = 0
        async with self._ship_lock:
            while True:
                recs = await self.spool.pending(limit=self.batch_size)
                if not recs:
                    return total
                entries = [AuditEntry.from_bytes(r.data) for r in recs]
                try:
                    conn = await self._connection()
                    async with asyncio.timeout(self.timeout_s):
                        total += await _insert_batch(conn, entries)
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    if self._conn is not None:
                        self._conn.terminate()
                        self._conn = None
                    self.last_error = str(exc) or type(exc).__name__
                    raise StorageError(
                        f"audit: PostgreSQL unavailable: {self.last_error}"
                    ) from exc
                await self.spool.ack_many([r.seq for r in recs])
                self.shipped += len(recs)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with asyncio.timeout(self.flush_interval_s * 10 or None):
                    await self._wake.wait()
            except TimeoutError:
                pass  # periodic retry of whatever is still spooled
            self._wake.clear()
            await asyncio.sleep(self.flush_interval_s)  # let a batch gather
            try:
                await self.flush()
                backoff = 0.5
            except StorageError as exc:
                log.warning("%s; retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                self._wake.set()

    async def pending(self) -> int:
        """Entries spooled but not yet in PostgreSQL."""
        return (await self.spool.stats()).pending

    async def close(self, *, flush_timeout_s: float | None = None) -> None:
        """Stop the shipper, try one last flush (bounded), close the spool.

        Whatever could not be shipped stays in the spool for the next ``AuditLog``.
        """
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            async with asyncio.timeout(flush_timeout_s or self.timeout_s):
                await self.flush()
        except (StorageError, TimeoutError) as exc:
            log.warning(
                "audit: %d entries left in the spool (%s)", await self.pending(), exc
            )
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        await self.spool.close()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of ``verify_chain``: ``ok`` or the first broken row and why."""

    ok: bool
    rows: int
    head_hash: str
    broken_id: int | None = None
    reason: str = ""


async def verify_chain(dsn: str, *, timeout_s: float = 30.0) -> ChainReport:
    """Walk ``flk_audit`` in id order and check every link (see the module doc)."""
    conn, _schema = await connect(dsn, timeout_s=timeout_s)
    prev, expect_id, rows = GENESIS, 1, 0
    try:
        # One snapshot for the whole walk: rows appended meanwhile are not half-seen.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cur = conn.cursor(
                "SELECT id, entry_id, pcs_id, tenant, accepted, escalated, reason,"
                " recomputed_d_hat, recomputed_budget, received_at, request_digest,"
                " prev_hash, row_hash FROM flk_audit ORDER BY id",
                prefetch=2000,
            )
            async for r in cur:
                rid = r["id"]
                if rid != expect_id:
                    return ChainReport(
                        False,
                        rows,
                        prev.hex(),
                        rid,
                        f"id {rid} follows id {expect_id - 1}: rows missing",
                    )
                if bytes(r["prev_hash"]) != prev:
                    return ChainReport(
                        False,
                        rows,
                        prev.hex(),
                        rid,
                        "prev_hash is not the previous row's row_hash",
                    )
                fields = dict(r)
                fields["received_at_us"] = (r["received_at"] - _EPOCH) // _dt.timedelta(
                    microseconds=1
                )
                if row_hash(prev, rid, fields) != bytes(r["row_hash"]):
                    return ChainReport(
                        False,
                        rows,
                        prev.hex(),
                        rid,
                        "row_hash does not match the row: contents changed",
                    )
                prev, expect_id, rows = bytes(r["row_hash"]), rid + 1, rows + 1
    finally:
        await conn.close()
    return ChainReport(True, rows, prev.hex())
