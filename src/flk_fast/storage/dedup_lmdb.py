"""The embedded dedup store on LMDB (the default backend).

``LmdbDedup`` is the synchronous core: one write transaction per batch, fsynced before
it returns, so an entry is durable when the call returns. LMDB's writer lock makes
check-then-insert atomic across every process on the host that opens the same path.
The async ``DedupStore`` for it is ``storage.aio.AsyncLmdbDedup``, which group-commits
concurrent ``put_if_absent`` calls on one writer thread; ``open_dedup("lmdb:///path")``
returns that.

Layout: ``kv`` maps key -> ``expires_at:u32 BE`` + value; ``exp`` maps
``expires_at:u32 BE ‖ key`` -> b"" so expired entries are found in expiry order without
a scan (a pcs_id key is stored as its 32 raw bytes, see ``_stored_key``). Expired
entries are invisible at once and deleted lazily: each write batch also removes up to
``_SWEEP_PER_BATCH`` of them, and ``sweep()`` removes them on demand.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from flk_fast.errors import LmdbDamagedError, StorageError

from .base import DedupKey, dedup_key
from .wal_lmdb import LMDB_DAMAGE, low_space, truncation

__all__ = ["LmdbDedup", "PreparedPut", "put_one", "sweep_expired"]

log = logging.getLogger("flk_fast.storage.dedup")

_EXP = struct.Struct(">I")  # whole seconds since the epoch; fine until 2106
_SWEEP_PER_BATCH = 64
_T = TypeVar("_T")


#: ``(stored key, value, ttl_s)``, as ``LmdbDedup.prepare`` returns it.
PreparedPut = tuple[bytes, bytes, float]

_HEX64 = re.compile(rb"[0-9a-f]{64}")


def _stored_key(key: DedupKey) -> bytes:
    """The LMDB key of a dedup key: a pcs_id (64 lowercase hex) is kept as its 32 raw
    bytes, halving the key in both B-trees (~90 bytes less on disk per entry); a tag
    byte keeps it apart from any other key, which is stored as given."""
    k = dedup_key(key)
    if len(k) == 64 and _HEX64.fullmatch(k):
        return b"\x00" + bytes.fromhex(k.decode("ascii"))
    return b"\x01" + k


class LmdbDedup:
    """First-write-wins key -> bytes store with expiry, durable on return.

    Writes must all come from one thread (LMDB binds write transactions to their
    thread); ``storage.aio.AsyncLmdbDedup`` guarantees that. Reads may come from any
    thread.

    Examples
    --------
    >>> import tempfile
    >>> d = LmdbDedup(tempfile.mkdtemp())
    >>> d.put_many_if_absent([(b"id", b"first", 60), (b"id", b"second", 60)])
    [(b'first', True), (b'first', False)]
    >>> d.get_many([b"id", b"other"])
    [b'first', None]
    >>> d.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        map_size: int = 64 << 20,
        clock: Callable[[], float] = time.time,
        max_dbs: int = 2,
    ) -> None:
        self.path = Path(path)
        _check_kinds(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        # Held by readers and by a map resize, never across a commit: a resize needs
        # every read transaction of this process closed, and readers must not wait
        # for an fsync.
        self._map_lock = threading.Lock()
        if not (self.path / "data.mdb").exists() and low_space(self.path):
            # LMDB creating a fresh store on a full device dies of SIGBUS (it maps
            # pages the file could not be grown to hold): refuse first, and say why.
            raise StorageError(
                f"dedup {self.path}: no space left on the device to create the store; "
                "free some space and start again"
            )
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=max_dbs,
                sync=sync,
                metasync=sync,
                readahead=False,
            )
        except LMDB_DAMAGE as exc:
            raise self._damaged(f"{exc} (LMDB cannot open it)") from None
        try:
            detail = truncation(self.env, self.path)
            if detail:
                raise self._damaged(detail)
            # Through _write(): another process may grow the map between our open
            # and this first transaction (MapResizedError).
            self.kv, self.exp = self._write(
                lambda txn: [self.env.open_db(n, txn=txn) for n in (b"kv", b"exp")]
            )
        except LMDB_DAMAGE as exc:
            self.env.close()
            raise self._damaged(f"{exc} (LMDB cannot read it)") from None
        except BaseException:
            self.env.close()
            raise

    def _damaged(self, detail: str) -> LmdbDamagedError:
        return LmdbDamagedError(
            self.path / "data.mdb",
            detail,
            "restore the directory from a backup, or move it aside to start with an "
            "empty dedup store (PCS stored there are then judged again when resent)",
        )

    # -- plumbing --------------------------------------------------------------------
    def _write(self, fn: Callable[[lmdb.Transaction], _T]) -> _T:
        for _ in range(64):
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                with self._map_lock:
                    size = int(self.env.info()["map_size"])
                    self.env.set_mapsize(size * 2)
                log.info("dedup %s: map grown to %d MiB", self.path, size * 2 >> 20)
            except lmdb.MapResizedError:
                with self._map_lock:
                    self.env.set_mapsize(0)
        raise StorageError(f"dedup {self.path}: could not grow the LMDB map")

    def _read(self, fn: Callable[[lmdb.Transaction], _T]) -> _T:
        for _ in range(100):
            with self._map_lock:
                try:
                    with self.env.begin() as txn:
                        return fn(txn)
                except lmdb.MapResizedError:
                    try:
                        self.env.set_mapsize(0)
                    except lmdb.Error:
                        pass  # our writer is mid-transaction; it adopts the size itself
            time.sleep(0.001)
        raise StorageError(f"dedup {self.path}: map keeps being resized")

    def _live(self, raw: Any, now: float) -> bytes | None:
        if raw is None or _EXP.unpack_from(raw)[0] <= now:
            return None
        return bytes(raw[_EXP.size :])

    # -- API -------------------------------------------------------------------------
    def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]:
        """Live values of ``keys`` (``None`` for missing or expired)."""
        ks = [_stored_key(k) for k in keys]
        now = self._clock()
        return self._read(
            lambda txn: [self._live(txn.get(k, db=self.kv), now) for k in ks]
        )

    def get(self, key: DedupKey) -> bytes | None:
        return self.get_many([key])[0]

    def put_many_if_absent(
        self, items: Sequence[tuple[DedupKey, bytes, float]]
    ) -> list[tuple[bytes, bool]]:
        """Insert each ``(key, value, ttl_s)`` unless a live entry exists; one commit.

        Returns ``(winner, inserted)`` per item, in order; a key repeated in the batch
        is won by its first occurrence.
        """
        return self.put_prepared([self.prepare(k, v, t) for k, v, t in items])

    @staticmethod
    def prepare(key: DedupKey, value: bytes, ttl_s: float) -> PreparedPut:
        """Check one ``put`` and turn its key into the stored form. Callers that batch
        puts from many sources check each here, so one bad put fails only itself."""
        if not isinstance(value, bytes):
            raise TypeError(f"dedup values are bytes, not {type(value).__name__}")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        return (_stored_key(key), value, ttl_s)

    def put_prepared(self, items: Sequence[PreparedPut]) -> list[tuple[bytes, bool]]:
        """``put_many_if_absent`` of items already made by ``prepare``."""
        now = self._clock()

        def put(txn: lmdb.Transaction) -> list[tuple[bytes, bool]]:
            out = [put_one(self, txn, item, now) for item in items]
            sweep_expired(self, txn, now, _SWEEP_PER_BATCH)
            return out

        return self._write(put)

    def sweep(self, limit: int = 100_000) -> int:
        """Delete up to ``limit`` expired entries now; return how many went."""
        now = self._clock()
        return self._write(lambda txn: sweep_expired(self, txn, now, limit))

    def forget(self, key: DedupKey) -> bool:
        """Delete the entry of ``key`` (live, expired or damaged) and its expiry index
        entry; return whether there was one. The operator's repair of a stored
        outcome that fails its checksum (``flk dedup forget``)."""
        k = _stored_key(key)

        def delete(txn: lmdb.Transaction) -> bool:
            raw = txn.get(k, db=self.kv)
            if raw is None:
                return False
            txn.delete(k, db=self.kv)
            if len(raw) >= _EXP.size:
                txn.delete(bytes(raw[: _EXP.size]) + k, db=self.exp)
            return True

        return self._write(delete)

    def count(self) -> int:
        """Entries stored, expired ones not yet swept included."""
        return int(self._read(lambda txn: txn.stat(self.kv)["entries"]))

    def disk_bytes(self) -> int:
        """Bytes the store's files occupy on disk (allocated blocks)."""
        return sum(
            os.stat(self.path / n).st_blocks * 512
            for n in ("data.mdb", "lock.mdb")
            if (self.path / n).exists()
        )

    def close(self) -> None:
        with self._map_lock:
            self.env.close()


def _check_kinds(path: Path) -> None:
    """A store directory that is a file, or a ``data.mdb``/``lock.mdb`` that is a
    directory, named in plain words (``mkdir`` said ``[Errno 17] File exists``, and
    ``lmdb.open`` raised a bare ``lmdb.Error`` that ended in a traceback)."""
    if path.exists() and not path.is_dir():
        raise StorageError(
            f"{path} is a file, not a directory: LMDB keeps its store in a directory; "
            "move the file aside"
        )
    for name in ("data.mdb", "lock.mdb"):
        if (path / name).is_dir():
            raise StorageError(
                f"{path / name} is a directory, not LMDB's file; move it aside"
            )


def put_one(
    store: LmdbDedup, txn: lmdb.Transaction, item: PreparedPut, now: float
) -> tuple[bytes, bool]:
    """First-write-wins put of one prepared item inside ``txn``:
    ``(winner, inserted)``."""
    key, value, ttl_s = item
    # Rounded up to the next whole second: an entry may outlive its TTL by under a
    # second, never expire early.
    expires = _EXP.pack(min(math.ceil(now + ttl_s), 2**32 - 1))
    # The usual case, a fresh key, in one LMDB call (no get first): fewer calls into
    # py-lmdb mean fewer GIL hand-offs with the event loop's thread.
    if not txn.put(key, expires + value, db=store.kv, overwrite=False):
        raw = txn.get(key, db=store.kv)
        if raw is None:  # the put found the key, the get in the same txn does not
            raise lmdb.CorruptedError("dedup store: a key both present and absent")
        live = store._live(raw, now)
        if live is not None:
            return live, False
        # expired: replace it and its index entry
        txn.delete(bytes(raw[: _EXP.size]) + key, db=store.exp)
        txn.put(key, expires + value, db=store.kv)
    txn.put(expires + key, b"", db=store.exp)
    return value, True


def sweep_expired(
    store: LmdbDedup, txn: lmdb.Transaction, now: float, limit: int
) -> int:
    """Delete up to ``limit`` expired entries inside ``txn``; return how many."""
    cur = txn.cursor(db=store.exp)
    removed = 0
    if not cur.first():
        return 0
    while removed < limit:
        ikey = bytes(cur.key())
        if not ikey or _EXP.unpack_from(ikey)[0] > now:  # b"": walked off the end
            break
        key = ikey[_EXP.size :]
        raw = txn.get(key, db=store.kv)
        if raw is not None and bytes(raw[: _EXP.size]) == ikey[: _EXP.size]:
            txn.delete(key, db=store.kv)
        removed += 1
        if not cur.delete():  # deletes and moves to the next entry
            break
    return removed
