"""Triggers for crashes seen in LMDB bindings (kept as in py-lmdb's crash_test.py):
use after close, iterators that outlive writes or their handle, resizes mid-read.
Each must raise a clean error or keep working, never segfault."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from flk_fast.errors import StorageError
from flk_fast.storage.aio import AsyncLmdbDedup
from flk_fast.storage.dedup_lmdb import LmdbDedup
from flk_fast.storage.wal_lmdb import LmdbWal


def test_replay_generator_survives_writes_acks_and_compaction(tmp_path: Path) -> None:
    with LmdbWal(tmp_path, map_size=1 << 16) as wal:
        wal.append_many([b"%d" % i for i in range(2000)])
        it = wal.replay()
        first = [next(it) for _ in range(10)]
        # grow the map, ack and compact behind the suspended generator
        wal.append_many([b"x" * 10_000 for _ in range(50)])
        wal.ack_many(range(1, 1500))
        wal.compact(older_than_s=-1)
        rest = list(it)
    seqs = [r.seq for r in first + rest]
    assert seqs == sorted(set(seqs))  # in order, no duplicates
    assert seqs[-1] == 2050


def test_closing_under_a_suspended_replay_raises_cleanly(tmp_path: Path) -> None:
    wal = LmdbWal(tmp_path)
    wal.append_many([b"a"] * 1500)  # more than one read chunk
    it = wal.replay()
    next(it)
    wal.close()
    with pytest.raises(StorageError):
        list(it)


def test_use_after_close(tmp_path: Path) -> None:
    wal = LmdbWal(tmp_path)
    wal.close()
    wal.close()  # twice is fine
    for call in (lambda: wal.append(b"x"), lambda: wal.get(1), lambda: wal.stats()):
        with pytest.raises(StorageError):
            call()


async def test_lmdb_dedup_use_after_close(tmp_path: Path) -> None:
    store = AsyncLmdbDedup(LmdbDedup(tmp_path))
    await store.put_if_absent("k", b"v")
    await store.close()
    await store.close()
    with pytest.raises(StorageError):
        await store.put_if_absent("k", b"v")
    with pytest.raises(StorageError):
        await store.get("k")


def test_a_new_lmdb_dedup_on_a_full_disk_is_refused_not_a_sigbus(
    tiny_disk: Path,
) -> None:
    # Fill the tmpfs, then create a store on it: LMDB would map pages the full file
    # cannot hold and die of SIGBUS; the store refuses first, saying why.
    with open(tiny_disk / "filler", "wb") as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    with pytest.raises(StorageError, match="no space left on the device"):
        LmdbDedup(tiny_disk / "dedup")
