"""Damaged LMDB pages: replay steps over them key by key, fast, and hides nothing else.

A real damaged page makes the bundled LMDB abort the process (an assertion in
``mdb_cursor_next``), so the damage is simulated one level up: every read transaction
of the WAL sees a ``records`` database whose cursors and gets raise
``lmdb.CorruptedError`` when they land on one of the ``bad`` keys (the keys of one
damaged page).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from flk_fast.storage import wal_lmdb
from flk_fast.storage.wal_lmdb import LmdbWal

DAY = 86400.0


class _DamagedCursor:
    def __init__(self, cur: Any, bad: set[bytes]) -> None:
        self._cur, self._bad = cur, bad

    def _landed(self, ok: bool) -> bool:
        if ok and bytes(self._cur.key()) in self._bad:
            raise lmdb.CorruptedError("simulated damaged page")
        return ok

    def set_range(self, key: bytes) -> bool:
        return self._landed(self._cur.set_range(key))

    def first(self) -> bool:
        return self._landed(self._cur.first())

    def last(self) -> bool:
        return self._landed(self._cur.last())

    def key(self) -> Any:
        return self._cur.key()

    def value(self) -> Any:
        return self._cur.value()

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for k, v in self._cur.iternext():
            if bytes(k) in self._bad:
                raise lmdb.CorruptedError("simulated damaged page")
            yield k, v


class _DamagedTxn:
    def __init__(self, txn: Any, records: Any, bad: set[bytes]) -> None:
        self._txn, self._records, self._bad = txn, records, bad

    def cursor(self, db: Any = None) -> Any:
        cur = self._txn.cursor(db=db)
        return _DamagedCursor(cur, self._bad) if db is self._records else cur

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        if db is self._records and bytes(key) in self._bad:
            raise lmdb.CorruptedError("simulated damaged page")
        return self._txn.get(key, default, db=db)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


@pytest.fixture
def damage(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Seqs put in this set are unreadable, as if their B-tree page were damaged."""
    bad: set[int] = set()
    real_read = wal_lmdb._Segment.read

    def read(seg: Any, fn: Any, **kw: Any) -> Any:
        keys = {s.to_bytes(8, "big") for s in bad}
        return real_read(seg, lambda txn: fn(_DamagedTxn(txn, seg.records, keys)), **kw)

    monkeypatch.setattr(wal_lmdb._Segment, "read", read)
    return bad


def _replay_within(wal: LmdbWal, seconds: float, **kw: Any) -> list[int]:
    """Replay in a thread; a replay that hangs fails the test instead of hanging it."""
    out: list[int] = []
    t = threading.Thread(
        target=lambda: out.extend(r.seq for r in wal.replay(**kw)), daemon=True
    )
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"replay still running after {seconds} s"
    return out


def test_replay_steps_over_a_damaged_page(tmp_path: Path, damage: set[int]) -> None:
    seen: list[int] = []
    with LmdbWal(tmp_path, on_corrupt=lambda s, why: seen.append(s)) as wal:
        wal.append_many([b"r%d" % i for i in range(1, 101)])
        damage.update(range(60, 64))
        # every record before and after the damaged page comes out, once, in order
        expect = [s for s in range(1, 101) if s not in damage]
        assert _replay_within(wal, 10) == expect
        assert seen == [60]  # reported once, at its position
        assert wal.stats().corrupt_seen == 1


@pytest.mark.parametrize("where", ["first", "last", "chunk-edge"])
def test_damage_at_the_edges(tmp_path: Path, damage: set[int], where: str) -> None:
    n = 1200  # more than two read chunks of 512
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"r%d" % i for i in range(1, n + 1)])
        bad = {"first": {1, 2}, "last": {n - 1, n}, "chunk-edge": {512, 513}}[where]
        damage.update(bad)
        expect = [s for s in range(1, n + 1) if s not in bad]
        assert _replay_within(wal, 10) == expect
        assert _replay_within(wal, 10, start=700) == [s for s in expect if s >= 700]


def test_acked_records_around_damage(tmp_path: Path, damage: set[int]) -> None:
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"r%d" % i for i in range(1, 41)])
        wal.ack_many(range(1, 41, 2))  # odd seqs acked
        damage.update({20, 21})
        assert _replay_within(wal, 10) == [s for s in range(2, 41, 2) if s != 20]
        assert _replay_within(wal, 10, include_acked=True) == [
            s for s in range(1, 41) if s not in (20, 21)
        ]


def test_rotating_wal_damage_does_not_enumerate_seqs(
    tmp_path: Path, damage: set[int]
) -> None:
    # seqs are day << 40 | n: probing every possible seq after the damage would take
    # ~2^40 reads per day; the replay must finish at once.
    clock = [20_000 * DAY + 5]
    wal = LmdbWal(tmp_path, rotate_daily=True, clock=lambda: clock[0])
    day0 = wal.append_many([b"a%d" % i for i in range(10)])
    clock[0] += DAY
    day1 = wal.append_many([b"b%d" % i for i in range(10)])
    damage.update({day0[5], day0[9], day1[0]})
    expect = [s for s in day0 + day1 if s not in damage]
    # (no ``with``: a hung replay thread holds the WAL's lock, close() would wait)
    assert _replay_within(wal, 10) == expect
    wal.close()


# -- real damage in the file (issue 11) ------------------------------------------------
def _raw_put(path: Path, db: bytes, key: bytes, value: bytes) -> None:
    """Write straight into one of the WAL's databases, as damage or an old version
    would have left it."""
    env = lmdb.open(str(path), max_dbs=5)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(db, txn=txn))
    env.close()


@pytest.mark.parametrize("key", [b"\x00" * 6 + b"\x05", b"\x00" * 7 + b"\x05\x01"])
def test_keys_that_are_not_seqs_are_reported_and_skipped(
    tmp_path: Path, key: bytes
) -> None:
    # Was: struct.error: unpack requires a buffer of 8 bytes (a flipped length byte).
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"r%d" % i for i in range(1, 11)])
    _raw_put(tmp_path, b"records", key, b"garbage")
    seen: list[tuple[int, str]] = []
    with LmdbWal(tmp_path, on_corrupt=lambda s, why: seen.append((s, why))) as wal:
        assert _replay_within(wal, 10) == list(range(1, 11))
        assert [s for s, _ in seen] == [0] and "not a seq" in seen[0][1]
        st = wal.stats()
        assert (st.first_seq, st.last_seq) == (1, 10)
        assert wal.append(b"next") == 11


def test_out_of_order_keys_end_the_replay(tmp_path: Path) -> None:
    # A cursor sent back to keys already passed (a garbled branch page) yielded the
    # same record hundreds of times.
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"r%d" % i for i in range(1, 21)])
        real = wal_lmdb._record_from

        def lost(seg: Any, key: bytes, txn: Any) -> Any:
            seq = int.from_bytes(key, "big")
            return real(seg, (5 if 8 <= seq <= 12 else seq).to_bytes(8, "big"), txn)

        wal_lmdb._record_from = lost  # type: ignore[assignment]
        try:
            got = list(wal._probe_past(wal._segment(0), 6, False)[0] or [])
        finally:
            wal_lmdb._record_from = real  # type: ignore[assignment]
        seqs = [r.seq for r in got]
        assert seqs == sorted(set(seqs)) and 6 in seqs and 13 in seqs


def test_meta_value_checksum(tmp_path: Path) -> None:
    with LmdbWal(tmp_path) as wal:
        wal.append(b"r", meta={b"state": b'{"events":1000}'})
    raw = (tmp_path / "data.mdb").read_bytes()
    at = raw.rindex(b'{"events":1000}')
    (tmp_path / "data.mdb").write_bytes(raw[:at] + b'{"events":2000}' + raw[at + 15 :])
    with LmdbWal(tmp_path) as wal:
        with pytest.raises(wal_lmdb.WalDamagedError, match="'state' fails its check"):
            wal.get_meta(b"state")
        assert [r.data for r in wal.replay()] == [b"r"]


def test_format_1_meta_is_migrated_once(tmp_path: Path) -> None:
    # A WAL written before meta checksums: plain values, an 8-byte last_seq.
    env = lmdb.open(str(tmp_path), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"state", b'{"a":1}', db=env.open_db(b"meta", txn=txn))
        txn.put(b"last_seq", (41).to_bytes(8, "big"), db=env.open_db(b"sys", txn=txn))
    env.close()
    with LmdbWal(tmp_path) as wal:
        assert wal.get_meta(b"state") == b'{"a":1}'
        assert wal.append(b"x") == 42  # the counter survived the migration
    env = lmdb.open(str(tmp_path), max_dbs=5, readonly=True)
    with env.begin() as txn:
        stored = txn.get(b"state", db=env.open_db(b"meta", txn=txn))
        assert stored.endswith(b'{"a":1}') and stored != b'{"a":1}'  # checksummed
        assert txn.get(b"format", db=env.open_db(b"sys", txn=txn)) == b"2"
    env.close()
    with LmdbWal(tmp_path) as wal:  # read again: migrated once, not wrapped twice
        assert wal.get_meta(b"state") == b'{"a":1}'


def test_damaged_seq_counter_never_reuses_a_seq(tmp_path: Path) -> None:
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"r%d" % i for i in range(1, 6)])
    _raw_put(tmp_path, b"sys", b"last_seq", b"\x00" * 16)  # fails its checksum
    with LmdbWal(tmp_path) as wal:
        assert wal.append(b"next") > 5


def test_truncated_file_is_refused_before_any_page_is_read(tmp_path: Path) -> None:
    # Reading a page past the end of the file through LMDB's map is a SIGBUS.
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"x" * 1000 for _ in range(200)])
    mdb = tmp_path / "data.mdb"
    os.truncate(mdb, mdb.stat().st_size // 2)
    with pytest.raises(wal_lmdb.WalDamagedError, match="truncated") as info:
        LmdbWal(tmp_path)
    assert info.value.file == mdb


def test_garbage_file_is_damaged_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(wal_lmdb.WalDamagedError) as info:
        LmdbWal(tmp_path)
    assert info.value.file == tmp_path / "data.mdb"


@pytest.mark.parametrize(
    "exc",
    [
        lmdb.DiskError("mdb_txn_commit: No space left on device"),
        lmdb.MapFullError("mdb_put: MDB_MAP_FULL"),
        OSError(28, "No space left on device"),
    ],
)
def test_full_disk_errors_map_to_wal_full(tmp_path: Path, exc: Exception) -> None:
    err = wal_lmdb._storage_error(tmp_path, exc)
    assert isinstance(err, wal_lmdb.WalFullError)
    assert "no space left on the device" in str(err)


def test_map_that_cannot_grow_is_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LMDB's map_size limit standing in for a full disk: the map cannot grow.
    wal = LmdbWal(tmp_path, map_size=1 << 20)
    seg = wal._segment(0)
    real = seg.env

    class NoGrow:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def set_mapsize(self, size: int) -> None:
            raise lmdb.MapFullError("cannot grow")

    monkeypatch.setattr(seg, "env", NoGrow())
    with pytest.raises(wal_lmdb.WalFullError):
        for _ in range(2000):
            wal.append(os.urandom(1024))
    monkeypatch.undo()
    assert len(list(wal.replay())) > 0  # what was committed is kept
    wal.close()
