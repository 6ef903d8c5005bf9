"""Append-only, hash-chained audit log of verification outcomes in PostgreSQL.

Write path (never on the request's critical path longer than one group-committed WAL
append): ``await audit.record(entry)`` appends the entry to a local ``LmdbWal`` spool
and returns; a background shipper drains the spool in batches into ``flk_audit`` and
acks what PostgreSQL committed. While PostgreSQL is down the entries simply stay in the
spool (durable on disk) and the shipper retries with capped exponential backoff, so
nothing is lost, even across restarts. ``record`` refuses entries PostgreSQL could
never store (``check_entry``); one it refuses anyway (a spool written by an older
version, say) is moved to a quarantine WAL so that it cannot block the others.

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
The table is partitioned by day of ``logged_at`` (``partitions.py``); after retention
dropped old partitions the walk starts from the last dropped row recorded in
``flk_audit_retention`` (its id and ``row_hash``), so a gap right after it is found too.
An entry whose partition was dropped would be stored again if re-shipped; retention is
days, re-shipping after a crash seconds.
Deleting the newest rows cannot be seen from inside the chain; publish
``ChainReport.head_hash`` elsewhere to catch that.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flk_fast.errors import StorageError

from . import migrations
from ._pg import connect, storage_error, unavailable_errors
from .aio import AsyncWal
from .base import WalRecord
from .wal_lmdb import LmdbWal

__all__ = [
    "AuditEntry",
    "AuditLog",
    "ChainReport",
    "GENESIS",
    "check_entry",
    "verify_chain",
]

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
    "logged_at",
)
# One chain per schema: the lock key is derived from the schema the table lives in.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('flk_audit:' || current_schema()))"
# The writer's clock (a test sets it to a past day to fill older partitions).
_CLOCK = "clock_timestamp()"
# The last row of the newest partition retention dropped (partitions.py): the kept
# chain continues from it.
_ANCHOR = (
    "SELECT last_id AS id, last_row_hash AS row_hash, dropped_at AS logged_at"
    " FROM flk_audit_retention ORDER BY last_id DESC LIMIT 1"
)


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
            "SELECT id, row_hash, logged_at FROM flk_audit ORDER BY id DESC LIMIT 1"
        )
        if last is None:  # empty, or every partition dropped by retention
            last = await conn.fetchrow(_ANCHOR)
        prev = bytes(last["row_hash"]) if last else GENESIS
        next_id = last["id"] + 1 if last else 1
        # logged_at (the partition key) never goes back, even if the clock does, so
        # retention always drops the oldest ids.
        logged_at = await conn.fetchval(
            f"SELECT greatest({_CLOCK}, $1::timestamptz)",
            last["logged_at"] if last else None,
        )
        await conn.execute(
            "SELECT flk_ensure_day_partition('flk_audit',"
            " ($1::timestamptz AT TIME ZONE 'UTC')::date)",
            logged_at,
        )
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
                    logged_at,
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
        Directory of the local LMDB spool (created if missing). Entries PostgreSQL
        refuses for good go to the quarantine WAL in ``spool_path/quarantine``.
    batch_size
        Most entries per PostgreSQL transaction.
    flush_interval_s
        How long the shipper waits for more entries before shipping a partial batch.
    timeout_s
        Bound on each connect and each batch insert.
    max_backoff_s
        Longest wait between two shipping attempts while PostgreSQL fails.
    compact_interval_s
        Shipped entries are deleted from the spool at most this often.

    Notes
    -----
    Built inside a running event loop, the shipper starts at once, so entries a
    crash left in the spool are shipped without waiting for the next ``record``;
    otherwise ``await start()`` (or ``async with``) starts it. The shipper survives
    any error: it logs, backs off (capped at ``max_backoff_s``) and tries again.
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
        compact_interval_s: float = 60.0,
        spool: Any = None,
    ) -> None:
        self.dsn = dsn
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.compact_interval_s = compact_interval_s
        # ``spool``: entries written elsewhere in the caller's own transactions (the
        # server's ledger); else a spool WAL of our own in ``spool_path``.
        self.spool = spool if spool is not None else AsyncWal(LmdbWal(spool_path))
        self.quarantine = AsyncWal(LmdbWal(Path(spool_path) / "quarantine"))
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ship_lock = asyncio.Lock()
        # Every spool record below this seq is acked: pending() starts here instead
        # of rescanning the acked records from seq 0 at every flush.
        self._next_seq = 0
        self._last_compact = -math.inf  # the first successful flush compacts
        self._closed = False
        self.shipped = 0
        self.quarantined = 0
        self.last_error: str | None = None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop yet: start() / record() / async with start the shipper
        else:
            self._ensure_shipper()

    def _ensure_shipper(self) -> None:
        """Start the shipper, or restart it if it died."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            if self._task is not None and not self._task.cancelled():
                exc = self._task.exception()
                if exc is not None:
                    log.error("audit: shipper had stopped (%r); restarted", exc)
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._wake.set()  # ship whatever is already spooled

    async def start(self) -> None:
        """Start shipping (entries left in the spool by an earlier run, too)."""
        self._ensure_shipper()

    async def record(self, entry: AuditEntry) -> None:
        """Spool ``entry`` durably; the background shipper sends it to PostgreSQL.

        Raises
        ------
        TypeError, ValueError
            The entry cannot be stored in PostgreSQL: a field of the wrong type, a
            NUL character or an unpaired surrogate in a text field, an overlong
            text, or ``received_at`` that is not a finite time in years 1-9999.
        StorageError
            The log is closed, or the spool cannot be written.
        """
        if self._closed:
            raise StorageError("audit log is closed")
        check_entry(entry)
        await self.spool.append(entry.to_bytes())
        self._ensure_shipper()
        self._wake.set()

    def spooled(self) -> None:
        """Entries were written to a caller-provided ``spool``: ship them soon."""
        self._ensure_shipper()
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

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _ship(self, entries: Sequence[AuditEntry]) -> int:
        """Insert one batch. Connection trouble raises ``StorageError``; an entry
        the database refuses for good raises one of ``_REFUSED``."""
        unavailable = unavailable_errors()
        not_now: tuple[type[Exception], ...] = (*unavailable, ValueError)
        try:
            # Whatever goes wrong while connecting is "not now", never the entries'
            # fault (a bad DSN is a ValueError too: it must not quarantine them).
            conn = await self._connection()
        except not_now as exc:
            raise self._unavailable(exc) from exc
        try:
            async with asyncio.timeout(self.timeout_s):
                return await _insert_batch(conn, entries)
        except _refused() as exc:
            self._drop_connection()  # never reuse a connection left mid-COPY
            self.last_error = str(exc) or type(exc).__name__
            raise
        except unavailable as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> StorageError:
        self._drop_connection()
        self.last_error = str(exc) or type(exc).__name__
        return storage_error("audit: PostgreSQL unavailable", exc, self.timeout_s)

    async def _ship_each(
        self, recs: Sequence[tuple[WalRecord, AuditEntry]]
    ) -> tuple[int, list[tuple[WalRecord, str]]]:
        """Ship entries one per transaction; return (rows added, refused entries)."""
        added, refused = 0, []
        for rec, entry in recs:
            try:
                added += await self._ship([entry])
            except _refused() as exc:
                refused.append((rec, f"{type(exc).__name__}: {exc}"))
        return added, refused

    async def _quarantine(self, bad: Sequence[tuple[WalRecord, str]]) -> None:
        """Move entries PostgreSQL can never take out of the way of the others."""
        docs = []
        for rec, reason in bad:
            log.error(
                "audit: spool entry %d quarantined (%s); the others are shipped",
                rec.seq,
                reason,
            )
            docs.append(
                json.dumps(
                    {
                        "spool_seq": rec.seq,
                        "reason": reason,
                        "appended_at": rec.appended_at,
                        "raw_b64": base64.b64encode(rec.data).decode(),
                    },
                    sort_keys=True,
                ).encode()
            )
        await self.quarantine.append_many(docs)
        self.quarantined += len(docs)

    async def flush(self) -> int:
        """Ship everything spooled now; return how many rows were appended.

        An entry PostgreSQL refuses for good (say a NUL byte spooled by an older
        version) is moved to the quarantine WAL and counted in ``quarantined``; the
        others are shipped. Raises ``StorageError`` if PostgreSQL cannot be reached
        (entries stay spooled).
        """
        total = 0
        async with self._ship_lock:
            while True:
                recs = await self.spool.pending(
                    limit=self.batch_size, start=self._next_seq
                )
                if not recs:
                    break
                good: list[tuple[WalRecord, AuditEntry]] = []
                bad: list[tuple[WalRecord, str]] = []
                for r in recs:
                    try:
                        e = AuditEntry.from_bytes(r.data)
                        check_entry(e)
                    except (ValueError, TypeError) as exc:  # JSON errors too
                        bad.append((r, f"unusable spool entry: {exc}"))
                    else:
                        good.append((r, e))
                if good:
                    try:
                        total += await self._ship([e for _, e in good])
                    except _refused():
                        # Find the entries at fault; ship the rest one by one.
                        n, refused = await self._ship_each(good)
                        total += n
                        bad.extend(refused)
                if bad:
                    await self._quarantine(bad)
                await self.spool.ack_many([r.seq for r in recs])
                self._next_seq = recs[-1].seq + 1
                self.shipped += len(recs) - len(bad)
        if total and time.monotonic() - self._last_compact >= self.compact_interval_s:
            await self.compact()
        return total

    async def compact(self) -> int:
        """Delete shipped entries from the spool now; return how many."""
        self._last_compact = time.monotonic()
        return await self.spool.compact(older_than_s=0)

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
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never die: a dead shipper would lose nothing
                # but would ship nothing either, silently
                if isinstance(exc, StorageError):
                    log.warning("%s; retrying in %.1f s", exc, backoff)
                else:
                    log.exception("audit: shipping failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                self._wake.set()

    async def pending(self) -> int:
        """Entries spooled but not yet in PostgreSQL (nor quarantined)."""
        return (await self.spool.stats()).pending

    async def close(self, *, flush_timeout_s: float | None = None) -> None:
        """Stop the shipper, try one last flush (bounded), close the spool.

        Whatever could not be shipped stays in the spool for the next ``AuditLog``.
        The spool and the connection are closed whatever happens.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
                except Exception as exc:
                    log.error("audit: shipper had failed: %r", exc)
                self._task = None
            try:
                async with asyncio.timeout(flush_timeout_s or self.timeout_s):
                    await self.flush()
                    await self.compact()
            except Exception as exc:
                left = await self.pending()
                log.warning("audit: %d entries left in the spool (%r)", left, exc)
        finally:
            try:
                await _close_conn(self._conn, self.timeout_s)
            finally:
                self._conn = None
                try:
                    await self.spool.close()
                finally:
                    await self.quarantine.close()

    async def __aenter__(self) -> AuditLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _close_conn(conn: Any, timeout_s: float) -> None:
    """Close gracefully within ``timeout_s``, else terminate (never hangs)."""
    if conn is None or conn.is_closed():
        return
    try:
        async with asyncio.timeout(timeout_s):
            await conn.close()
    except Exception:  # TimeoutError included: a server that does not answer
        conn.terminate()


def _refused() -> tuple[type[BaseException], ...]:
    """Errors that say "this entry, never" rather than "not now".

    PostgreSQL data exceptions (SQLSTATE class 22, e.g. a NUL in text) and program
    limits (54, e.g. an index row too large); client-side encoding failures.
    """
    import asyncpg

    return (
        asyncpg.DataError,
        asyncpg.ProgramLimitExceededError,
        OverflowError,
        UnicodeError,
        ValueError,
        TypeError,
    )


#: Longest text field accepted (btree index rows must stay far below 2.7 KB).
MAX_TEXT = 1024
_TEXT_FIELDS = ("pcs_id", "request_digest", "reason", "tenant", "entry_id")


def check_entry(entry: AuditEntry) -> None:
    """Raise ``TypeError``/``ValueError`` unless PostgreSQL can store ``entry``."""
    if not isinstance(entry, AuditEntry):
        raise TypeError(f"audit entries are AuditEntry, not {type(entry).__name__}")
    for name in _TEXT_FIELDS:
        value = getattr(entry, name)
        if not isinstance(value, str):
            raise TypeError(f"audit entry {name} is str, not {type(value).__name__}")
        if "\x00" in value:
            raise ValueError(f"audit entry {name} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"audit entry {name} is not valid Unicode (unpaired surrogate)"
            ) from exc
        if len(value) > MAX_TEXT:
            raise ValueError(f"audit entry {name} is over {MAX_TEXT} characters")
    for name in ("accepted", "escalated"):
        if not isinstance(getattr(entry, name), bool):
            raise TypeError(f"audit entry {name} is bool")
    for name in ("recomputed_d_hat", "recomputed_budget"):
        x = getattr(entry, name)
        if x is not None and (isinstance(x, bool) or not isinstance(x, int | float)):
            raise TypeError(f"audit entry {name} is a number or None")
    t = entry.received_at
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ValueError(f"audit entry received_at must be finite epoch seconds: {t!r}")
    try:
        _EPOCH + _dt.timedelta(microseconds=_us(t))
    except (OverflowError, ValueError) as exc:
        raise ValueError(
            f"audit entry received_at {t!r} is outside the years 1-9999"
        ) from exc


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of ``verify_chain``: ``ok`` or the first broken row and why."""

    ok: bool
    rows: int
    head_hash: str
    broken_id: int | None = None
    reason: str = ""
    #: Last id dropped by retention (the chain is checked from the row after it).
    anchor_id: int | None = None


async def verify_chain(dsn: str, *, timeout_s: float = 30.0) -> ChainReport:
    """Walk ``flk_audit`` in id order and check every link (see the module doc)."""
    conn, _schema = await connect(dsn, timeout_s=timeout_s)
    prev, expect_id, rows, anchor = GENESIS, 1, 0, None
    try:
        # One snapshot for the whole walk: rows appended meanwhile are not half-seen.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            dropped = await conn.fetchrow(_ANCHOR)
            if dropped is not None:  # older rows left by retention, not by tampering
                anchor = dropped["id"]
                prev, expect_id = bytes(dropped["row_hash"]), anchor + 1
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
        await _close_conn(conn, timeout_s)
    return ChainReport(True, rows, prev.hex(), anchor_id=anchor)
