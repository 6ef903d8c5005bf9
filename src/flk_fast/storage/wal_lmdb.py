"""A durable append-only write-ahead log on LMDB (server inbox, agent outbox).

Layout
------
One LMDB environment per *segment*. A plain WAL has one segment, the directory ``path``.
A rotating WAL (``rotate_daily=True``) keeps one segment per UTC day in
``path/YYYY-MM-DD/`` and deletes whole days past ``retention_days``; deleting a day's
directory is the only way to give disk space back, because LMDB files never shrink.

Each environment holds five named databases:

``records``  8-byte big-endian seq -> header + checksum + payload
``acks``     8-byte big-endian seq -> b"" (present = acknowledged), or checksum + a
             small caller value learnt with the ack (the agent: the server's verdict)
``meta``     caller's key -> tag + checksum + value (written in the same transaction
             as records)
``sys``      ``last_seq`` -> 8-byte counter + checksum, so seqs never repeat after
             compaction; ``format`` -> b"2" once meta and sys values are checksummed
``tags``     8-byte seq -> checksum + a small caller value describing the record
             (where it came from), deleted with the record by compaction

Sequence numbers increase monotonically. In a plain WAL they are dense from 1. In a
rotating WAL a seq is ``(days since 1970-01-01) << 40 | n``: every day starts its own
counter and needs no coordination with earlier days, yet later days always sort after
earlier ones, and ``seq >> 40`` names the segment holding the record.

Records and checksums
---------------------
A record is ``version:u8 flags:u8 appended_at:f64 length:u32 | checksum:8 | payload``.
The checksum is BLAKE3 truncated to 64 bits over ``seq ‖ header ‖ payload``. Why
BLAKE3: it is already a runtime dependency (the Merkle kernels use it), so no new
package is needed for CRC32C; its 64-bit truncation misses a random corruption with
probability 2^-64, against 2^-32 for zlib's CRC-32; and at ~1.8 µs per 1 KB record it
is noise next to an fsync. Hashing the seq too catches a record that ends up under the
wrong key. LMDB commits are atomic (copy-on-write pages, meta page written last), so a
crash mid-commit loses the whole uncommitted transaction rather than tearing it; the
checksum catches what LMDB cannot: bit rot, torn sectors under ``sync=False``, and
tampering. A bad record is logged with its seq, passed to ``on_corrupt`` and skipped;
the records after it are still returned. A key that is not an 8-byte seq at all (a
flipped length byte) is reported with seq 0 and skipped the same way.

Meta, sys and tag values carry the same 64-bit BLAKE3 checksum (over the database name,
the key and the value): one changed byte in a checkpoint would otherwise be read as a
different, valid checkpoint. Format 1 WALs (no such checksums) are migrated once, when
a segment is first opened by this version, in one transaction: every value is rewritten
with its checksum and ``format`` is set. A meta value that fails its checksum raises
``WalDamagedError`` (never read wrong, never read as absent); a damaged ``last_seq``
is rebuilt above every key present plus a margin (``_SEQ_MARGIN``), so no seq handed
out before the damage is handed out again.

Damage that LMDB itself reports (``MDB_CORRUPTED``, a page of the wrong type, an invalid
file) while opening or outside the records is ``WalDamagedError``, naming the file; a
file shorter than its meta page says is refused before any page is touched, because a
read through the map past the end of the file is a SIGBUS, not an exception. A full
device (``lmdb.DiskError``, ``ENOSPC``, or a commit that fails on a device with almost
no space left) is ``WalFullError``. Neither loses what is already committed.

Durability and concurrency
--------------------------
With ``sync=True`` (the default) a commit returns after LMDB's fdatasync, so
``append`` returns only when the record is durable. LMDB's own lock file serialises
writers across processes; the seq counter is read and bumped inside the write
transaction, so several processes may append to one WAL on one host. Within a process
one lock serialises all use of an environment; write transactions are bound to the
calling thread, so async code goes through ``storage.aio.AsyncWal``, which owns one
writer thread. The map starts small and doubles whenever LMDB reports it full (and
adopts a size grown by another process), so callers never see ``MapFullError``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import blake3
import lmdb

from flk_fast.errors import LmdbDamagedError, StorageError, WalCorruptionError

from .base import OnCorrupt, WalRecord, WalStats

__all__ = ["DEFAULT_MAP_SIZE", "LmdbWal", "WalDamagedError", "WalFullError"]

log = logging.getLogger("flk_fast.storage.wal")

#: Initial LMDB map size per segment; it doubles on demand.
DEFAULT_MAP_SIZE = 64 << 20

_VERSION = 1
_HDR = struct.Struct(">BBdI")  # version, flags, appended_at, payload length
_SUM_LEN = 8
_PREFIX = _HDR.size + _SUM_LEN
_SEQ = struct.Struct(">Q")
_DAY_SHIFT = 40  # rotating WAL: seq = day << 40 | n  (2^40 records a day is plenty)
_CHUNK = 512  # records read per read transaction: keeps read txns short
_LAST_SEQ = b"last_seq"
_FORMAT = b"format"
_FORMAT_2 = b"2"
_META_TAG = b"\xfb\x02"  # never the first bytes of a format-1 value (JSON, b"1")
_SEQ_MAX = (1 << 64) - 1
#: Seqs skipped when ``last_seq`` is damaged: the highest seq ever handed out may have
#: been compacted away, so "above every key present" alone could reuse one.
_SEQ_MARGIN = 1 << 24
#: Below this many free bytes on the device, a failed commit is a full disk (LMDB
#: reports a short write as a plain I/O error).
_LOW_SPACE = 1 << 20
_T = TypeVar("_T")


class WalDamagedError(LmdbDamagedError):
    """LMDB's own structures, or a checksummed meta value, are damaged.

    ``file`` is the damaged ``data.mdb``. What is committed elsewhere is intact, but
    this WAL cannot be read safely: move its directory aside (or restore it).
    """

    def __init__(self, file: Path, detail: str) -> None:
        super().__init__(
            file,
            detail,
            f"restore {file.parent} from a backup, or move it aside (what it held is "
            "then no longer replayed)",
        )


def truncation(env: lmdb.Environment, path: Path) -> str:
    """Why ``path/data.mdb`` is shorter than the pages its meta page says it has, or
    "" when it is not.

    LMDB reads pages through its memory map: a page past the end of a truncated file
    is a SIGBUS that kills the process with no log line, so every store checks this
    before any transaction touches a page. (The meta pages themselves are read with
    pread when the environment opens.)
    """
    file = path / "data.mdb"
    try:
        size = os.stat(file).st_size
    except FileNotFoundError:
        return ""
    need = (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])
    if size < need:
        return f"truncated: {size} bytes, but its last page ends at byte {need}"
    return ""


class WalFullError(StorageError):
    """The device holding the WAL is full; the failed write committed nothing."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"WAL {path}: no space left on the device ({detail}); free some space "
            "and start again (everything committed before is kept)"
        )


LMDB_DAMAGE = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.PanicError,
    lmdb.VersionMismatchError,
    lmdb.BadTxnError,
    lmdb.BadDbiError,
    lmdb.BadValsizeError,
)


def low_space(path: Path) -> bool:
    """Whether the device holding ``path`` has less than 1 MiB free."""
    try:
        return shutil.disk_usage(path).free < _LOW_SPACE
    except OSError:
        return False


def _storage_error(path: Path, exc: BaseException) -> StorageError:
    """The one mapping from LMDB / OS failures of a segment to ``StorageError``s."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, lmdb.DiskError | lmdb.MapFullError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    ):
        return WalFullError(path, str(exc))
    if isinstance(exc, LMDB_DAMAGE):
        return WalDamagedError(path / "data.mdb", f"{exc} (LMDB cannot read it)")
    if isinstance(exc, lmdb.Error | OSError) and low_space(path):
        return WalFullError(path, str(exc))
    return StorageError(f"WAL {path}: {exc}")


def _value_sum(db: bytes, key: bytes, value: bytes | memoryview) -> bytes:
    h = blake3.blake3(db)
    h.update(_SEQ.pack(len(key)))
    h.update(key)
    h.update(value)
    return h.digest(_SUM_LEN)


def _seal(db: bytes, key: bytes, value: bytes) -> bytes:
    """A checksummed meta/sys/tag value (module docstring)."""
    return _META_TAG + _value_sum(db, key, value) + value


def _unseal(db: bytes, key: bytes, raw: Any) -> bytes | None:
    """The value of a checksummed value, or None when it fails its checksum."""
    raw = bytes(raw)
    head = len(_META_TAG) + _SUM_LEN
    if len(raw) < head or not raw.startswith(_META_TAG):
        return None
    value = raw[head:]
    if _value_sum(db, key, value) != raw[len(_META_TAG) : head]:
        return None
    return value


def _seq_of(key: Any) -> int:
    """The seq of a records/acks/tags key; 0 when the key is not 8 bytes (damage)."""
    return int(_SEQ.unpack(key)[0]) if len(key) == _SEQ.size else 0


def _after(key: Any) -> int:
    """The smallest seq whose key sorts after ``key`` (LMDB's order: memcmp, then the
    shorter key first), so a reader steps over a key that is not a seq."""
    key = bytes(key)
    if len(key) < _SEQ.size:
        return int(_SEQ.unpack(key.ljust(_SEQ.size, b"\0"))[0])
    return int(_SEQ.unpack(key[: _SEQ.size])[0]) + 1


def _checksum(seq_key: bytes, header: bytes, data: bytes | memoryview) -> bytes:
    h = blake3.blake3(seq_key)
    h.update(header)
    h.update(data)
    return h.digest(_SUM_LEN)


def _encode(seq_key: bytes, data: bytes, appended_at: float) -> bytes:
    header = _HDR.pack(_VERSION, 0, appended_at, len(data))
    return header + _checksum(seq_key, header, data) + data


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the entries created in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_meta(meta: Mapping[bytes, bytes] | None) -> None:
    """Reject a bad ``meta`` before it reaches a transaction (possibly a shared one).

    Keys and values are ``bytes``; a key is 1-511 bytes (LMDB's key size limit).
    """
    if meta is None:
        return
    if not isinstance(meta, Mapping):
        raise TypeError(f"WAL meta is a mapping of bytes, not {type(meta).__name__}")
    for k, v in meta.items():
        if not isinstance(k, bytes) or not isinstance(v, bytes):
            raise TypeError(
                "WAL meta keys and values are bytes, not "
                f"{type(k).__name__} -> {type(v).__name__}"
            )
        if not 1 <= len(k) <= 511:
            raise ValueError(f"WAL meta key must be 1-511 bytes, got {len(k)}")


def _decode(seq_key: Any, raw: Any) -> tuple[bytes, float] | str:
    """Return ``(payload, appended_at)`` or a string saying why the record is bad."""
    if len(raw) < _PREFIX:
        return f"torn record: {len(raw)} bytes, shorter than the {_PREFIX}-byte header"
    version, _flags, appended_at, length = _HDR.unpack_from(raw)
    if version != _VERSION:
        return f"unknown record version {version}"
    if len(raw) - _PREFIX != length:
        found = len(raw) - _PREFIX
        return f"torn record: header says {length} payload bytes, found {found}"
    data = raw[_PREFIX:]
    if _checksum(seq_key, raw[: _HDR.size], data) != raw[_HDR.size : _PREFIX]:
        return "checksum mismatch"
    return data, appended_at


class _Segment:
    """One LMDB environment; every method runs under the owning WAL's lock."""

    def __init__(self, path: Path, *, base: int, sync: bool, map_size: int) -> None:
        self.path = path
        self.base = base
        created = not (path / "data.mdb").exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=5,
                sync=sync,
                metasync=sync,
                readahead=False,  # random reads of one record: no neighbours
            )
        except (lmdb.Error, OSError) as exc:
            raise _storage_error(path, exc) from None
        try:
            self._check_size()
            # Through write(): another process may grow the map between our open and
            # this first transaction (MapResizedError; seen in the 2-process test).
            self.records, self.acks, self.meta, self.sys, self.tags = self.write(
                lambda txn: [
                    self.env.open_db(name, txn=txn)
                    for name in (b"records", b"acks", b"meta", b"sys", b"tags")
                ]
            )
            self.write(self._migrate)
        except BaseException:
            self.env.close()
            raise
        if created and sync:
            # LMDB fsyncs its files, not the directories naming them: without this a
            # power loss could forget a new segment (a new day) with its records.
            fsync_dir(path)
            fsync_dir(path.parent)

    def _check_size(self) -> None:
        """Refuse a truncated data.mdb before any page is read (``truncation``)."""
        detail = truncation(self.env, self.path)
        if detail:
            raise WalDamagedError(self.path / "data.mdb", detail)

    def _migrate(self, txn: lmdb.Transaction) -> None:
        """Format 1 -> 2: checksum every meta value and ``last_seq`` (docstring)."""
        if txn.get(_FORMAT, db=self.sys) is not None:
            return
        old = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=self.meta)]
        for k, v in old:
            if not v.startswith(_META_TAG):  # else written by format 2 already
                txn.put(k, _seal(b"meta", k, v), db=self.meta)
        raw = txn.get(_LAST_SEQ, db=self.sys)
        if raw is not None and len(raw) == _SEQ.size:
            txn.put(_LAST_SEQ, _seal(b"sys", _LAST_SEQ, bytes(raw)), db=self.sys)
        txn.put(_FORMAT, _FORMAT_2, db=self.sys)
        if old:
            log.info(
                "WAL %s: %d meta values checksummed (format 2)", self.path, len(old)
            )

    def fail(self, exc: BaseException) -> NoReturn:
        raise _storage_error(self.path, exc) from exc

    def write(self, fn: Callable[[lmdb.Transaction], _T]) -> _T:
        """Run ``fn`` in one write transaction, growing the map until it fits."""
        try:
            for _ in range(64):
                try:
                    with self.env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    size = int(self.env.info()["map_size"])
                    self.env.set_mapsize(size * 2)
                    log.info("WAL %s: map grown to %d MiB", self.path, size * 2 >> 20)
                except lmdb.MapResizedError:
                    self.env.set_mapsize(0)  # another process grew it: adopt its size
        except (lmdb.Error, OSError) as exc:
            self.fail(exc)
        raise WalFullError(self.path, "the LMDB map cannot grow any further")

    def read(self, fn: Callable[[lmdb.Transaction], _T], *, raw: bool = False) -> _T:
        """Run ``fn`` in a read transaction. LMDB errors become ``StorageError``s
        unless ``raw`` (the record readers step around damaged pages themselves)."""
        try:
            for _ in range(8):
                try:
                    with self.env.begin() as txn:
                        return fn(txn)
                except lmdb.MapResizedError:
                    self.env.set_mapsize(0)
        except (lmdb.Error, OSError) as exc:
            if raw:
                raise
            self.fail(exc)
        raise StorageError(f"WAL {self.path}: map keeps being resized")

    def next_seqs(self, txn: lmdb.Transaction, n: int) -> int:
        """Reserve ``n`` seqs in ``txn``; return the first."""
        raw = txn.get(_LAST_SEQ, db=self.sys)
        if raw is None:
            last = self.base
        else:
            value = _unseal(b"sys", _LAST_SEQ, raw)
            if value is not None and len(value) == _SEQ.size:
                last = _SEQ.unpack(value)[0]
            else:
                last = self._rebuild_last_seq(txn)
        txn.put(_LAST_SEQ, _seal(b"sys", _LAST_SEQ, _SEQ.pack(last + n)), db=self.sys)
        return last + 1

    def _rebuild_last_seq(self, txn: lmdb.Transaction) -> int:
        top = self.base
        for db in (self.records, self.acks, self.tags):
            cur = txn.cursor(db=db)
            ok = cur.last()
            while ok:
                seq = _seq_of(cur.key())
                if seq:  # the highest key of this database that is a seq
                    top = max(top, seq)
                    break
                ok = cur.prev()
        last = min(top + _SEQ_MARGIN, _SEQ_MAX - (1 << 32))
        log.error(
            "WAL %s: the seq counter is damaged; continuing at %d (above every seq "
            "present, plus a margin)",
            self.path,
            last + 1,
        )
        return last

    def close(self) -> None:
        self.env.close()


class LmdbWal:
    """Durable append-only log of byte records on LMDB.

    Parameters
    ----------
    path
        Directory of the WAL (created if missing).
    sync
        fsync every commit (default). ``False`` trades durability for speed: a machine
        crash may lose the last commits, a process crash loses nothing.
    rotate_daily
        Keep one segment per UTC day under ``path`` (the server inbox).
    retention_days
        With ``rotate_daily``, delete day segments older than this many days
        (today counts as day 1), pending or not.
    on_corrupt
        Called with ``(seq, reason)`` for each corrupt record met while reading.
    map_size
        Initial LMDB map size of a segment in bytes; it grows automatically.
    clock
        Wall clock in epoch seconds (tests inject a fake one to cross midnight).

    Examples
    --------
    >>> import tempfile
    >>> wal = LmdbWal(tempfile.mkdtemp())
    >>> wal.append(b"hello", meta={b"checkpoint": b"42"})
    1
    >>> [r.data for r in wal.pending()], wal.get_meta(b"checkpoint")
    ([b'hello'], b'42')
    >>> wal.ack(1); list(wal.pending())
    []
    >>> wal.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        rotate_daily: bool = False,
        retention_days: int | None = None,
        on_corrupt: OnCorrupt | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days is not None and (not rotate_daily or retention_days < 1):
            raise ValueError("retention_days needs rotate_daily=True and must be >= 1")
        self.path = Path(path)
        self.sync = sync
        self.rotate_daily = rotate_daily
        self.retention_days = retention_days
        self.on_corrupt = on_corrupt
        self._map_size = map_size
        self._clock = clock
        self._lock = threading.RLock()
        self._segments: dict[int, _Segment] = {}
        self._corrupt_seen = 0
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        if rotate_daily:
            self._current_day = self._today()
            self._expire_days()
        else:
            self._current_day = 0
        self._segment(self._current_day)

    # -- segments --------------------------------------------------------------------
    def _today(self) -> int:
        return int(self._clock() // 86400)

    def _day_dir(self, day: int) -> Path:
        if not self.rotate_daily:
            return self.path
        return self.path / _dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()

    def _disk_days(self) -> list[int]:
        if not self.rotate_daily:
            return [0]
        days = []
        for entry in self.path.iterdir():
            try:
                date = _dt.date.fromisoformat(entry.name)
            except ValueError:
                continue
            if entry.is_dir():
                days.append(date.toordinal() - _EPOCH_ORDINAL)
        days.extend(d for d in self._segments if d not in days)
        return sorted(days)

    def _segment(self, day: int, *, create: bool = True) -> _Segment | None:
        seg = self._segments.get(day)
        if seg is None:
            if self._closed:
                raise StorageError(f"WAL {self.path} is closed")
            where = self._day_dir(day)
            if not create and not (where / "data.mdb").exists():
                return None
            base = day << _DAY_SHIFT if self.rotate_daily else 0
            seg = _Segment(where, base=base, sync=self.sync, map_size=self._map_size)
            self._segments[day] = seg
        return seg

    def _roll(self) -> None:
        """Follow the clock to a new day (and apply retention) in a rotating WAL."""
        if self.rotate_daily:
            today = self._today()
            if today != self._current_day:
                self._current_day = today
                self._expire_days()

    def _writer(self) -> _Segment:
        self._roll()
        seg = self._segment(self._current_day)
        assert seg is not None
        return seg

    def _expire_days(self) -> None:
        if self.retention_days is None:
            return
        horizon = self._today() - self.retention_days + 1
        for day in self._disk_days():
            if day >= horizon:
                continue
            self._drop_day(day)
            log.info(
                "WAL %s: dropped day segment %s (retention %d days)",
                self.path,
                self._day_dir(day).name,
                self.retention_days,
            )

    def _drop_day(self, day: int) -> None:
        """Delete a past day's segment, first carrying its meta forward.

        Meta lives in the segment of the append that wrote it (same transaction), so
        a checkpoint written on a day that retention or compaction drops would vanish
        with it. Keys no later day holds are copied into the current day (copy, then
        delete: a crash in between leaves a harmless duplicate).
        """
        seg = self._segment(day, create=False)
        if seg is not None and day < self._current_day:
            items = seg.read(partial(_meta_items, seg))
            later = [d for d in self._disk_days() if d > day]
            keep = {}
            for key, value in items:
                held = False
                for d in later:
                    other = self._segment(d, create=False)
                    if (
                        other is not None
                        and other.read(partial(_meta_get, other, key)) is not None
                    ):
                        held = True
                        break
                if not held:
                    keep[key] = value
            if keep:
                target = self._segment(self._current_day)
                assert target is not None

                def put(txn: lmdb.Transaction, t: _Segment = target) -> None:
                    for k, v in keep.items():
                        txn.put(k, v, db=t.meta)

                target.write(put)
        seg = self._segments.pop(day, None)
        if seg is not None:
            seg.close()
        shutil.rmtree(self._day_dir(day), ignore_errors=True)

    def _seg_of(self, seq: int) -> _Segment | None:
        day = seq >> _DAY_SHIFT if self.rotate_daily else 0
        return self._segment(day, create=False)

    def _report(self, seq: int, reason: str) -> None:
        self._corrupt_seen += 1
        log.warning(
            "WAL %s: record %d is corrupt (%s); skipped", self.path, seq, reason
        )
        if self.on_corrupt is not None:
            self.on_corrupt(seq, reason)

    # -- writes ----------------------------------------------------------------------
    def append(self, data: bytes, meta: Mapping[bytes, bytes] | None = None) -> int:
        """Append one record (and ``meta`` in the same transaction); return its seq."""
        return self.append_many([data], meta)[0]

    def append_many(
        self,
        items: Sequence[bytes],
        meta: Mapping[bytes, bytes] | None = None,
        *,
        tags: Sequence[bytes | None] | None = None,
    ) -> list[int]:
        """Append ``items`` and ``meta`` in one transaction (one fsync); return seqs.

        ``tags``, one per item (None: no tag), are small values kept apart from the
        records (another B-tree, their own checksum) and deleted with them: what the
        caller needs to rebuild a record that turns out to be damaged.
        """
        for item in items:
            if not isinstance(item, bytes):
                raise TypeError(f"WAL records are bytes, not {type(item).__name__}")
        if tags is not None and len(tags) != len(items):
            raise ValueError(f"{len(tags)} tags for {len(items)} WAL records")
        check_meta(meta)
        if not items and not meta:
            return []
        with self._lock:
            seg = self._writer()
            now = self._clock()

            def put(txn: lmdb.Transaction) -> list[int]:
                first = seg.next_seqs(txn, len(items)) if items else 0
                seqs = []
                for i, item in enumerate(items):
                    key = _SEQ.pack(first + i)
                    # append=True: keys only grow, so LMDB may skip the B-tree search
                    txn.put(key, _encode(key, item, now), db=seg.records, append=True)
                    seqs.append(first + i)
                    tag = tags[i] if tags is not None else None
                    if tag is not None:
                        txn.put(key, _seal(b"tags", key, tag), db=seg.tags)
                for k, v in (meta or {}).items():
                    txn.put(k, _seal(b"meta", k, v), db=seg.meta)
                return seqs

            return seg.write(put)

    def ack(self, seq: int) -> None:
        """Mark ``seq`` as processed; compaction may delete it later."""
        self.ack_many([seq])

    def ack_many(
        self, seqs: Sequence[int], values: Sequence[bytes] | None = None
    ) -> None:
        """Mark several seqs as processed, one transaction per segment.

        ``values``, one small value per seq, are kept with the acks (checksummed, in
        the same transaction, deleted with the record by compaction) and read back by
        :meth:`ack_values`.
        """
        if values is not None and len(values) != len(seqs):
            raise ValueError(f"{len(seqs)} seqs but {len(values)} ack values")
        by_seg: dict[int, list[tuple[int, bytes]]] = {}
        for i, seq in enumerate(seqs):
            by_seg.setdefault(seq >> _DAY_SHIFT if self.rotate_daily else 0, []).append(
                (seq, values[i] if values is not None else b"")
            )
        with self._lock:
            for day, group in by_seg.items():
                seg = self._segment(day, create=False)
                if seg is None:
                    continue  # the day was dropped by retention: nothing left to ack

                def put(
                    txn: lmdb.Transaction,
                    seg: _Segment = seg,
                    group: list[tuple[int, bytes]] = group,
                ) -> None:
                    for seq, value in group:
                        key = _SEQ.pack(seq)
                        if txn.get(key, db=seg.records) is not None:
                            ack = _seal(b"acks", key, value) if value else b""
                            txn.put(key, ack, db=seg.acks)

                seg.write(put)

    def compact(self, older_than_s: float) -> int:
        """Delete acked records appended over ``older_than_s`` ago; return how many.

        In a rotating WAL, a past day left with no record is removed from disk.
        """
        horizon = self._clock() - older_than_s
        removed = 0
        with self._lock:
            self._roll()  # "past day" is judged against today, not the last append
            for day in self._disk_days():
                seg = self._segment(day, create=False)
                if seg is None:
                    continue
                while True:  # bounded transactions: other writers are not starved
                    n, more = seg.write(partial(_compact_chunk, seg, horizon=horizon))
                    removed += n
                    if not more:
                        break
                if (
                    self.rotate_daily
                    and day != self._current_day
                    and seg.read(partial(_entries, seg)) == 0
                ):
                    self._drop_day(day)
        return removed

    # -- reads -----------------------------------------------------------------------
    def get_meta(self, key: bytes) -> bytes | None:
        """The latest value stored under ``key`` by ``append(…, meta=…)``.

        Raises ``WalDamagedError`` when the value fails its checksum.
        """
        with self._lock:
            for day in reversed(self._disk_days()):
                seg = self._segment(day, create=False)
                if seg is None:
                    continue
                raw = seg.read(partial(_meta_get, seg, key))
                if raw is not None:
                    value = _unseal(b"meta", key, raw)
                    if value is None:
                        raise WalDamagedError(
                            seg.path / "data.mdb",
                            f"the meta value {key.decode('ascii', 'replace')!r} "
                            "fails its checksum",
                        )
                    return value
        return None

    def get_tag(self, seq: int) -> bytes | None:
        """The tag appended with record ``seq``; None if it has none, or if it is
        damaged too (reported like a corrupt record)."""
        key = _SEQ.pack(seq)
        with self._lock:
            seg = self._seg_of(seq)
            if seg is None:
                return None
            raw = seg.read(lambda txn: txn.get(key, db=seg.tags))
        if raw is None:
            return None
        value = _unseal(b"tags", key, raw)
        if value is None:
            self._report(seq, "its tag fails its checksum")
        return value

    def ack_values(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """seq -> the value stored with its ack by ``ack_many(…, values=…)``. A seq
        not acked, acked without a value, or whose value fails its checksum is left
        out (the value is informational: damage there is not worth an error)."""
        out: dict[int, bytes] = {}
        with self._lock:
            for seq in seqs:
                seg = self._seg_of(seq)
                if seg is None:
                    continue
                key = _SEQ.pack(seq)

                def read(
                    txn: lmdb.Transaction, s: _Segment = seg, k: bytes = key
                ) -> bytes:
                    return bytes(txn.get(k, b"", db=s.acks))

                raw = seg.read(read)
                value = _unseal(b"acks", key, raw) if raw else None
                if value:
                    out[seq] = value
        return out

    def tagged(self) -> list[tuple[int, bool]]:
        """``(seq, acked)`` of every record that has a tag, in seq order.

        A tagged seq that is neither acked nor among the readable pending records was
        lost to damage (a garbled key, a page LMDB cannot read): compaction deletes a
        record, its ack and its tag in one transaction, so nothing else leaves one.
        An ack that cannot be read counts as absent (the caller may redo the work).
        """
        out: list[tuple[int, bool]] = []
        with self._lock:
            for day in self._disk_days():
                seg = self._segment(day, create=False)
                if seg is None:
                    continue

                def tags(txn: lmdb.Transaction, s: _Segment = seg) -> list[bytes]:
                    return [
                        bytes(k) for k in txn.cursor(db=s.tags).iternext(values=False)
                    ]

                keys = [k for k in seg.read(tags) if _seq_of(k)]

                def acks(
                    txn: lmdb.Transaction, s: _Segment = seg, ks: list[bytes] = keys
                ) -> list[bool]:
                    return [txn.get(k, db=s.acks) is not None for k in ks]

                try:
                    acked = seg.read(acks, raw=True)
                except lmdb.Error:
                    acked = [False] * len(keys)
                out.extend((_seq_of(k), a) for k, a in zip(keys, acked, strict=True))
        return out

    def drop_tags(self, seqs: Sequence[int]) -> None:
        """Delete the tags of ``seqs`` (orphans once dealt with)."""
        with self._lock:
            for seq in seqs:
                seg = self._seg_of(seq)
                if seg is not None:
                    key, tags = _SEQ.pack(seq), seg.tags
                    # runs before the loop moves on: the closure is safe (B023)
                    seg.write(lambda txn: txn.delete(key, db=tags))  # noqa: B023

    def get(self, seq: int) -> WalRecord | None:
        """The record ``seq``; ``None`` if absent; ``WalCorruptionError`` if corrupt."""
        key = _SEQ.pack(seq)
        with self._lock:
            seg = self._seg_of(seq)
            if seg is None:
                return None

            def read(txn: lmdb.Transaction) -> tuple[Any, bool]:
                raw = txn.get(key, db=seg.records)
                return raw, raw is not None and txn.get(key, db=seg.acks) is not None

            raw, acked = seg.read(read)
        if raw is None:
            return None
        decoded = _decode(key, raw)
        if isinstance(decoded, str):
            self._report(seq, decoded)
            raise WalCorruptionError(seq, decoded)
        return WalRecord(seq, decoded[0], acked, decoded[1])

    def replay(
        self, start: int = 0, include_acked: bool = False
    ) -> Iterator[WalRecord]:
        """Yield records with ``seq >= start`` in order, skipping corrupt ones.

        Reads in chunks with short read transactions, so a slow consumer never pins
        old pages and writers may append meanwhile (new records are yielded too).
        """
        with self._lock:
            days = self._disk_days()
        for day in days:
            if self.rotate_daily and (day + 1) << _DAY_SHIFT <= start:
                continue
            pos = max(start, 0)
            while True:
                with self._lock:
                    seg = self._segment(day, create=False)
                    if seg is None:
                        break
                    chunk, pos = self._read_chunk(seg, pos, include_acked)
                if chunk is None:
                    break
                yield from chunk

    def pending(self, start: int = 0) -> Iterator[WalRecord]:
        """Records not yet acked, in seq order."""
        return self.replay(start, include_acked=False)

    def _read_chunk(
        self, seg: _Segment, pos: int, include_acked: bool
    ) -> tuple[list[WalRecord] | None, int]:
        """Up to _CHUNK records from ``pos``; ``(None, pos)`` at the segment's end."""
        bad: list[tuple[int, str]] = []

        def read(txn: lmdb.Transaction) -> tuple[list[WalRecord] | None, int]:
            out: list[WalRecord] = []
            cur = txn.cursor(db=seg.records)
            acks = txn.cursor(db=seg.acks)
            if not cur.set_range(_SEQ.pack(pos)):
                return None, pos
            nxt = pos
            scanned = 0
            for key, raw in cur:
                seq = _seq_of(key)
                scanned += 1
                if not seq:
                    nxt = _after(key)
                    bad.append((0, f"a key that is not a seq: {bytes(key)[:16]!r}"))
                    if len(out) + len(bad) >= _CHUNK:
                        break
                    continue
                if seq < nxt:
                    # A damaged branch page sends the cursor back to keys already
                    # passed: the key-by-key reader steps over that stretch.
                    raise lmdb.CorruptedError("keys out of order (damaged page)")
                nxt = seq + 1
                acked = acks.set_key(key)
                if acked and not include_acked:
                    if scanned >= 8 * _CHUNK:
                        break
                    continue
                decoded = _decode(key, raw)
                if isinstance(decoded, str):
                    bad.append((seq, decoded))
                else:
                    out.append(WalRecord(seq, decoded[0], acked, decoded[1]))
                if len(out) + len(bad) >= _CHUNK:
                    break
            return out, nxt

        try:
            out, nxt = seg.read(read, raw=True)
        except lmdb.Error:
            # A damaged B-tree page somewhere between ``pos`` and the end of the chunk:
            # walk again from ``pos`` itself (records before the damage are fine),
            # one existing key at a time, and step over what cannot be read.
            return self._probe_past(seg, pos, include_acked)
        for seq, reason in bad:
            self._report(seq, reason)
        if out is None:
            return None, pos
        return out, nxt

    def _probe_past(
        self, seg: _Segment, pos: int, include_acked: bool
    ) -> tuple[list[WalRecord] | None, int]:
        """Up to _CHUNK records from ``pos``, read key by key around damaged pages.

        Each step is a fresh read transaction and cursor: ``set_range`` to the next
        position, one record, then on to ``seq + 1``. A step that raises marks an
        unreadable region; ``_next_readable`` finds where it ends with O(64) probes
        (never one probe per possible seq: a rotating WAL's seqs span 2^40 per day).
        """
        out: list[WalRecord] = []
        at = pos
        steps = 0
        while steps < _CHUNK:
            steps += 1
            if at > _SEQ_MAX:
                return out or None, at
            try:
                found = seg.read(partial(_record_from, seg, _SEQ.pack(at)), raw=True)
                if (
                    found is not None
                    and len(found[0]) == _SEQ.size
                    and (_seq_of(found[0]) < at)
                ):
                    raise lmdb.CorruptedError("keys out of order (damaged page)")
            except lmdb.Error as exc:
                after = _next_readable(seg, at)
                end = "the end of the segment" if after is None else f"seq {after}"
                self._report(at, f"unreadable LMDB page ({exc}); skipped up to {end}")
                if after is None:
                    return out or None, at
                at = after
                continue
            if found is None:  # no key at or after ``at``: end of the segment
                return out or None, at
            key, raw, acked = found
            seq = _seq_of(key)
            if not seq:
                self._report(0, f"a key that is not a seq: {key[:16]!r}")
                at = _after(key)
                continue
            at = seq + 1
            if acked and not include_acked:
                continue
            decoded = _decode(key, raw)
            if isinstance(decoded, str):
                self._report(seq, decoded)
            else:
                out.append(WalRecord(seq, decoded[0], acked, decoded[1]))
        return out, at

    def stats(self) -> WalStats:
        """Counts, sizes and seq range over every segment."""
        count = acked = used = disk = 0
        first: int | None = None
        last: int | None = None
        with self._lock:
            days = self._disk_days()
            for day in days:
                seg = self._segment(day, create=False)
                if seg is None:
                    continue

                def read(txn: lmdb.Transaction, s: _Segment = seg) -> tuple[Any, ...]:
                    st_r, st_a = txn.stat(s.records), txn.stat(s.acks)
                    cur = txn.cursor(db=s.records)
                    lo = _edge_seq(cur, last=False)
                    hi = _edge_seq(cur, last=True)
                    env_st = s.env.stat()
                    pages = sum(
                        env_st[k]
                        for k in ("branch_pages", "leaf_pages", "overflow_pages")
                    )
                    for st in (st_r, st_a):
                        pages += (
                            st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                        )
                    return (
                        st_r["entries"],
                        st_a["entries"],
                        pages * env_st["psize"],
                        lo,
                        hi,
                    )

                n, a, u, lo, hi = seg.read(read)
                count += n
                acked += a
                used += u
                disk += _disk_usage(seg.path)
                if lo is not None and first is None:
                    first = lo
                if hi is not None:
                    last = hi
        return WalStats(
            count=count,
            pending=count - acked,
            acked=acked,
            used_bytes=used,
            disk_bytes=disk,
            first_seq=first,
            last_seq=last,
            segments=len(days),
            corrupt_seen=self._corrupt_seen,
        )

    def close(self) -> None:
        """Close every segment; further use raises ``StorageError``."""
        with self._lock:
            self._closed = True
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()

    def __enter__(self) -> LmdbWal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def _entries(seg: _Segment, txn: lmdb.Transaction) -> int:
    return int(txn.stat(seg.records)["entries"])


def _meta_get(seg: _Segment, key: bytes, txn: lmdb.Transaction) -> Any:
    return txn.get(key, db=seg.meta)


def _meta_items(seg: _Segment, txn: lmdb.Transaction) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=seg.meta)]


def _edge_seq(cur: lmdb.Cursor, *, last: bool) -> int | None:
    """The first (or last) key of a cursor's database that is a seq."""
    ok = cur.last() if last else cur.first()
    while ok:
        seq = _seq_of(cur.key())
        if seq:
            return seq
        ok = cur.prev() if last else cur.next()
    return None


def _disk_usage(path: Path) -> int:
    """Bytes the segment's files occupy on disk (allocated blocks)."""
    total = 0
    for name in ("data.mdb", "lock.mdb"):
        try:
            total += os.stat(path / name).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


def _compact_chunk(
    seg: _Segment, txn: lmdb.Transaction, horizon: float
) -> tuple[int, bool]:
    """Delete up to 10 000 acked records older than ``horizon``; (n, more_left)."""
    removed = 0
    cur = txn.cursor(db=seg.acks)
    keys: list[bytes] = []
    more = False
    for key, _ in cur:
        if len(keys) >= 10_000:
            more = True
            break
        keys.append(bytes(key))
    done = 0
    for key in keys:
        raw = txn.get(key, db=seg.records)
        if raw is None:  # record already gone: drop the stray ack
            txn.delete(key, db=seg.acks)
            continue
        appended_at = _HDR.unpack_from(raw)[2] if len(raw) >= _HDR.size else horizon - 1
        if appended_at >= horizon:
            # Acks mostly arrive in seq order and seqs follow time, but a late ack of an
            # old record is possible, so keep scanning instead of stopping here.
            done += 1
            continue
        txn.delete(key, db=seg.records)
        txn.delete(key, db=seg.acks)
        txn.delete(key, db=seg.tags)
        removed += 1
    # Young acked records stay behind at the front of ``acks``; stop once a pass made
    # no progress so the loop in ``compact`` terminates.
    return removed, more and removed > 0


def _record_from(
    seg: _Segment, key: bytes, txn: lmdb.Transaction
) -> tuple[bytes, bytes, bool] | None:
    """The first record at or after ``key``: ``(key, raw, acked)``, or None."""
    cur = txn.cursor(db=seg.records)
    if not cur.set_range(key):
        return None
    found = bytes(cur.key())
    return found, bytes(cur.value()), txn.get(found, db=seg.acks) is not None


def _readable_from(seg: _Segment, seq: int) -> bool:
    """Whether a cursor can be positioned at the first key >= ``seq``."""
    try:
        found = seg.read(partial(_record_from, seg, _SEQ.pack(seq)), raw=True)
    except lmdb.Error:
        return False
    # Landing before ``seq`` is damage too (a garbled branch page).
    return found is None or len(found[0]) != _SEQ.size or _seq_of(found[0]) >= seq


def _next_readable(seg: _Segment, bad: int) -> int | None:
    """The smallest position after ``bad`` from which the records can be read again.

    Positions that land on a damaged page fail, the ones past it succeed, so the
    boundary is found by galloping (1, 2, 4, … past ``bad``) and then bisecting:
    at most ~128 read transactions whatever the seq range. None: nothing readable.
    """
    lo, step, hi = bad, 1, None
    while lo < _SEQ_MAX:
        probe = min(lo + step, _SEQ_MAX)
        if _readable_from(seg, probe):
            hi = probe
            break
        lo, step = probe, step * 2
    if hi is None:
        return None
    while hi - lo > 1:  # lo unreadable, hi readable
        mid = (lo + hi) // 2
        if _readable_from(seg, mid):
            hi = mid
        else:
            lo = mid
    return hi
