"""Damaged LMDB pages: replay steps over them key by key, fast, and hides nothing else.

A real damaged page makes the bundled LMDB abort the process (an assertion in
``mdb_cursor_next``), so the damage is simulated one level up: every read transaction
of the WAL sees a ``records`` database whose cursors and gets raise
``lmdb.CorruptedError`` when they land on one of the ``bad`` keys (the keys of one
damaged page).
"""

from __future__ import annotations

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
        return real_read(
            seg, lambda txn: fn(_DamagedTxn(txn, seg.records, keys)), **kw
        )

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
