"""The embedded store of ``flk serve``: inbox, outcomes and audit spool in ONE commit.

``DATA_DIR/ledger`` is one LMDB environment (shared by every ``--workers`` process)
with these named databases:

``kv``, ``exp``       the dedup outcomes, exactly as ``LmdbDedup`` keeps them
``inbox/YYYY-MM-DD``  one per UTC day: record key -> checksummed WAL record
                      (``u8 len(tenant) | tenant | body``, framed by ``frame_record``)
``audit/w<i>``        worker ``i``'s audit spool: 8-byte seq -> checksummed entry
``sys``               counters (each audit spool's last seq)

``Ledger.commit`` writes a batch of requests in one write transaction and one fsync:
each request's inbox record, its outcome (first-write-wins ``put_if_absent``) and,
when that outcome is the one stored, its audit entry. SPEC §7 step 1 allows exactly
this: a crash leaves a request's body, outcome and audit entry all, or none, and no
answer leaves before the commit returned. So nothing is ever replayed: there are no
acks and no per-record compaction on the hot path. The inbox keeps 14 days by
default; older days are dropped whole (``drop_days``), and LMDB reuses their pages.

A record key is ``boot id (8 bytes) | n (8 bytes, big endian)``: the boot id is random
per ``Ledger`` handle, so processes sharing the environment never collide without
coordinating. ``origin(n)`` spells the same thing as text for the outcome's inserter.

The single LMDB writer lock is the limit of this design: every worker's commits queue
on it (docs/server.md, "Where the single writer lock ends").
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from flk_fast.errors import LmdbDamagedError

from .base import WalRecord
from .dedup_lmdb import LmdbDedup, PreparedPut, put_one, sweep_expired
from .wal_lmdb import _decode, _encode

__all__ = ["LEDGER_DIR", "Ledger", "LedgerItem", "InboxRecord"]

log = logging.getLogger("flk_fast.storage.ledger")

#: The ledger's directory inside ``--data-dir``.
LEDGER_DIR = "ledger"
#: Inbox days kept (the dedup TTL's default): older ``inbox/`` databases are dropped.
RETENTION_DAYS = 14
_SEQ = struct.Struct(">Q")
_DAY_S = 86_400
_INBOX = b"inbox/"
_AUDIT = b"audit/"
_SWEEP_PER_BATCH = 64
#: Named databases: kv, exp, sys, audit spools of the workers, and the inbox days.
_MAX_DBS = 256


class LedgerItem(NamedTuple):
    """One request of a batch: any of the three parts may be absent.

    ``record`` is stored under ``record_key`` in today's inbox; ``put`` is an outcome
    to store first-write-wins; ``audit`` is spooled only if ``put`` inserted (or, with
    no ``put``, always)."""

    record_key: bytes | None
    record: bytes | None
    put: PreparedPut | None
    audit: bytes | None = None


class InboxRecord(NamedTuple):
    day: str
    key: bytes
    data: bytes
    appended_at: float


def _day_name(day: int) -> bytes:
    date = _dt.date(1970, 1, 1) + _dt.timedelta(days=day)
    return _INBOX + date.isoformat().encode("ascii")


class Ledger(LmdbDedup):
    """The dedup store plus the inbox and audit spool, committed together.

    Parameters
    ----------
    path
        The environment's directory (``DATA_DIR/ledger``).
    worker
        Index of this ``--workers`` process: names its audit spool database.
    sync, clock
        As for ``LmdbDedup``.
    used
        Whether this ledger is known to have held data (``flk serve``: its data
        directory has a ``server-id``): an empty ``data.mdb`` is then refused as
        truncated (``LmdbDamagedError``) instead of being taken for a new store.

    Examples
    --------
    >>> import tempfile
    >>> led = Ledger(tempfile.mkdtemp())
    >>> put = led.prepare(b"id", b"verdict", 60)
    >>> led.commit([LedgerItem(led.record_key(1), b"\\x00{}", put, b"entry")])
    [(b'verdict', True)]
    >>> [r.data for r in led.inbox()], led.audit_pending(10)[0].data
    ([b'\\x00{}'], b'entry')
    >>> led.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        worker: int = 0,
        sync: bool = True,
        clock: Callable[[], float] = time.time,
        map_size: int = 64 << 20,
        used: bool = False,
    ) -> None:
        data = Path(path) / "data.mdb"
        if used and data.exists() and data.stat().st_size == 0:
            # LMDB takes an empty file for a new environment and would start over
            # without a word. An empty file is also what a crash inside LMDB's very
            # first open leaves, hence ``used``: the caller knows this directory's
            # ledger has held data (the server: DATA_DIR/server-id exists, made once
            # the ledger's first open is durable).
            raise self._damaged(
                "empty (0 bytes), but this ledger has held data: truncated",
                Path(path),
            )
        super().__init__(
            path, sync=sync, map_size=map_size, clock=clock, max_dbs=_MAX_DBS
        )
        self.boot = os.urandom(8)
        self.boot_hex = self.boot.hex()
        self._audit_name = _AUDIT + b"w%d" % worker
        try:
            self.sys, self.audit_db = self._write(
                lambda txn: [
                    self.env.open_db(n, txn=txn) for n in (b"sys", self._audit_name)
                ]
            )
        except BaseException:
            self.env.close()
            raise
        self._audit_last_key = self._audit_name + b"/last"
        self._days: dict[int, Any] = {}
        #: Called inside every batch transaction just before it commits (crash tests).
        self.before_commit: Callable[[], None] | None = None

    def _damaged(self, detail: str, path: Path | None = None) -> LmdbDamagedError:
        return LmdbDamagedError(
            (path or self.path) / "data.mdb",
            detail,
            "restore the directory from a backup, or move it aside to start with an "
            "empty ledger (its inbox days and outcomes are then gone: PCS resent "
            "later are judged again)",
        )

    # -- keys ------------------------------------------------------------------------
    def record_key(self, n: int) -> bytes:
        """The inbox key of this handle's ``n``-th request."""
        return self.boot + _SEQ.pack(n)

    def origin(self, server: str, n: int) -> bytes:
        """``server/ledger/<boot hex>-<n>``: who stored an outcome (kept with it)."""
        return f"{server}/{LEDGER_DIR}/{self.boot_hex}-{n}".encode("ascii")

    # -- the batch commit --------------------------------------------------------------
    def _inbox_db(self, day: int) -> Any:
        db = self._days.get(day)
        if db is None:
            # Its own short commit, once a day: a handle opened inside a transaction
            # that then aborts (map growth retries) would be invalid.
            db = self._write(
                lambda txn: self.env.open_db(_day_name(day), txn=txn, create=True)
            )
            self._days = {day: db}  # yesterday's handle is not needed any more
        return db

    def commit(self, items: Sequence[LedgerItem]) -> list[tuple[bytes, bool] | None]:
        """Write every item in one transaction (fsynced before it returns).

        Returns, per item, ``(winner, inserted)`` of its ``put`` (None without one); a
        key repeated in the batch is won by its first occurrence, as in
        ``put_many_if_absent``.
        """
        now = self._clock()
        inbox = self._inbox_db(int(now // _DAY_S))

        def write(txn: lmdb.Transaction) -> list[tuple[bytes, bool] | None]:
            out: list[tuple[bytes, bool] | None] = []
            spool: list[bytes] = []
            # The batch's inbox records in one call (one GIL hand-off, not one each)
            records = [
                (it.record_key, _encode(it.record_key, it.record, now))
                for it in items
                if it.record is not None and it.record_key is not None
            ]
            if records:
                txn.cursor(db=inbox).putmulti(records)
            for item in items:
                if item.put is None:
                    out.append(None)
                    if item.audit is not None:
                        spool.append(item.audit)
                    continue
                won = put_one(self, txn, item.put, now)
                out.append(won)
                if won[1] and item.audit is not None:
                    spool.append(item.audit)
            if spool:
                self._spool(txn, spool, now)
            sweep_expired(self, txn, now, _SWEEP_PER_BATCH)
            if self.before_commit is not None:
                self.before_commit()
            return out

        return self._write(write)

    def _spool(self, txn: lmdb.Transaction, entries: list[bytes], now: float) -> None:
        raw = txn.get(self._audit_last_key, db=self.sys)
        seq = _SEQ.unpack(raw)[0] if raw is not None and len(raw) == 8 else 0
        if raw is None or len(raw) != 8:
            # A missing or damaged counter: continue above every key present, so no
            # seq is reused (entries are deleted once shipped, so this is the last).
            cur = txn.cursor(db=self.audit_db)
            if cur.last():
                seq = max(seq, _SEQ.unpack(bytes(cur.key()))[0])
        for data in entries:
            seq += 1
            key = _SEQ.pack(seq)
            txn.put(key, _encode(key, data, now), db=self.audit_db)
        txn.put(self._audit_last_key, _SEQ.pack(seq), db=self.sys)

    # -- the audit spool (read by storage.audit_postgres.AuditLog) --------------------
    def audit_pending(self, limit: int, start: int = 0) -> list[WalRecord]:
        """Up to ``limit`` spooled entries from seq ``start`` on, in order. An entry
        that fails its checksum is logged and skipped (its bytes cannot be trusted)."""

        def read(txn: lmdb.Transaction) -> list[WalRecord]:
            out: list[WalRecord] = []
            cur = txn.cursor(db=self.audit_db)
            if not cur.set_range(_SEQ.pack(start)):
                return out
            for key, raw in cur:
                decoded = _decode(key, raw)
                seq = _SEQ.unpack(bytes(key))[0] if len(key) == 8 else 0
                if isinstance(decoded, str):
                    log.error("ledger %s: audit entry %d: %s", self.path, seq, decoded)
                    continue
                out.append(WalRecord(seq, bytes(decoded[0]), False, decoded[1]))
                if len(out) >= limit:
                    break
            return out

        return self._read(read)

    def adopt_spools(self, workers: int) -> int:
        """Move every entry of the audit spools of worker indexes ``>= workers`` (left
        by an earlier, wider ``--workers`` group: no worker ships them any more) into
        this handle's spool, in one transaction: a crash moves all or none, and an
        entry shipped twice is kept once by PostgreSQL (its id is its origin). Each
        emptied spool keeps its seq counter in ``sys``, so a later, wider group never
        reuses a seq. Returns how many entries moved."""
        now = self._clock()

        def names(txn: lmdb.Transaction) -> list[bytes]:
            cur = txn.cursor()
            out = []
            if cur.set_range(_AUDIT):
                for key in cur.iternext(values=False):
                    k = bytes(key)
                    if not k.startswith(_AUDIT):
                        break
                    index = k[len(_AUDIT) + 1 :]
                    if (
                        k != self._audit_name
                        and k[len(_AUDIT) : len(_AUDIT) + 1] == b"w"
                        and index.isdigit()
                        and int(index) >= workers
                    ):
                        out.append(k)
            return out

        moved = 0
        for name in self._read(names):

            def move(txn: lmdb.Transaction, n: bytes = name) -> int:
                db = self.env.open_db(n, txn=txn, create=False)
                entries = []
                for key, raw in txn.cursor(db=db):
                    decoded = _decode(key, raw)
                    if isinstance(decoded, str):
                        log.error("ledger %s: %s entry: %s", self.path, n, decoded)
                        continue
                    entries.append(bytes(decoded[0]))
                if entries:
                    self._spool(txn, entries, now)
                txn.drop(db, delete=False)
                return len(entries)

            n_moved = self._write(move)
            if n_moved:
                log.info(
                    "ledger %s: %d audit entries of %s (a worker index no longer "
                    "started) moved to %s",
                    self.path,
                    n_moved,
                    name.decode("ascii"),
                    self._audit_name.decode("ascii"),
                )
            moved += n_moved
        return moved

    def audit_done(self, seqs: Sequence[int]) -> None:
        """Delete shipped entries (their seq counter stays in ``sys``)."""
        keys = [_SEQ.pack(s) for s in seqs]
        self._write(lambda txn: [txn.delete(k, db=self.audit_db) for k in keys])

    def audit_count(self) -> int:
        return int(self._read(lambda txn: txn.stat(self.audit_db)["entries"]))

    # -- the inbox --------------------------------------------------------------------
    def days(self) -> list[str]:
        """The inbox days present, oldest first (``YYYY-MM-DD``)."""

        def read(txn: lmdb.Transaction) -> list[str]:
            cur = txn.cursor()
            names = []
            if cur.set_range(_INBOX):
                for key in cur.iternext(values=False):
                    k = bytes(key)
                    if not k.startswith(_INBOX):
                        break
                    names.append(k[len(_INBOX) :].decode("ascii"))
            return names

        return self._read(read)

    def inbox(self, day: str | None = None) -> Iterator[InboxRecord]:
        """Every inbox record (of ``day``, or of all days), in key order; a record that
        fails its checksum is logged and skipped."""
        for name in [day] if day is not None else self.days():
            label = _INBOX + name.encode("ascii")
            # each lambda runs before the loop moves on: the closure is safe (B023)
            db = self._write(
                lambda txn: self.env.open_db(label, txn=txn, create=True)  # noqa: B023
            )
            recs: list[tuple[bytes, bytes]] = self._read(
                lambda txn: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]  # noqa: B023
            )
            for key, raw in recs:
                decoded = _decode(key, raw)
                if isinstance(decoded, str):
                    log.error(
                        "ledger %s: inbox %s record: %s", self.path, name, decoded
                    )
                    continue
                yield InboxRecord(name, bytes(key), bytes(decoded[0]), decoded[1])

    def drop_days(self, keep_days: int = RETENTION_DAYS) -> list[str]:
        """Drop whole inbox days older than ``keep_days``; return the days dropped."""
        today = int(self._clock() // _DAY_S)
        cutoff = (
            _dt.date(1970, 1, 1) + _dt.timedelta(days=today - keep_days)
        ).isoformat()
        dropped = []
        for name in self.days():
            if name >= cutoff:
                break

            def drop(txn: lmdb.Transaction, n: str = name) -> None:
                db = self.env.open_db(_INBOX + n.encode("ascii"), txn=txn, create=True)
                txn.drop(db, delete=True)

            self._write(drop)
            self._days = {}
            dropped.append(name)
        if dropped:
            log.info("ledger %s: inbox days dropped: %s", self.path, ", ".join(dropped))
        return dropped

    def adopt_outcomes(self, old: LmdbDedup, chunk: int = 10_000) -> int:
        """Copy the live entries of an older, separate dedup store, expiry kept, unless
        the key is already here; one transaction per ``chunk``. Returns how many."""
        now = self._clock()
        copied = 0
        start = b""
        while True:

            def read(txn: lmdb.Transaction, at: bytes = start) -> list[Any]:
                cur = txn.cursor(db=old.kv)
                if at and not cur.set_range(at):
                    return []
                if not at and not cur.first():
                    return []
                out = []
                for k, v in cur:
                    if bytes(k) == at:
                        continue
                    out.append((bytes(k), bytes(v)))
                    if len(out) >= chunk:
                        break
                return out

            batch = old._read(read)
            if not batch:
                return copied

            def write(txn: lmdb.Transaction, rows: list[Any] = batch) -> int:
                n = 0
                for key, raw in rows:
                    if old._live(raw, now) is None or txn.get(key, db=self.kv):
                        continue
                    txn.put(key, raw, db=self.kv)
                    txn.put(raw[:4] + key, b"", db=self.exp)
                    n += 1
                return n

            copied += self._write(write)
            start = batch[-1][0]


def ledger_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / LEDGER_DIR
