"""LmdbWal and AsyncWal: append/replay/ack/compact, meta, rotation, corruption."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from flk_fast.errors import StorageError, WalCorruptionError
from flk_fast.storage.aio import AsyncWal
from flk_fast.storage.wal_lmdb import LmdbWal

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0


def test_append_get_replay_ack(tmp_path: Path) -> None:
    with LmdbWal(tmp_path) as wal:
        assert wal.append(b"a") == 1
        assert wal.append_many([b"b", b"c"]) == [2, 3]
        assert wal.append_many([]) == []
        rec = wal.get(2)
        assert rec is not None and rec.data == b"b" and not rec.acked
        assert wal.get(99) is None
        wal.ack(2)
        assert [r.seq for r in wal.pending()] == [1, 3]
        assert [(r.seq, r.acked) for r in wal.replay(include_acked=True)] == [
            (1, False),
            (2, True),
            (3, False),
        ]
        assert [r.seq for r in wal.replay(start=3)] == [3]
        wal.ack_many([1, 3, 77])  # an unknown seq is ignored
        assert list(wal.pending()) == []
        st = wal.stats()
        assert (st.count, st.acked, st.pending, st.first_seq, st.last_seq) == (
            3,
            3,
            0,
            1,
            3,
        )
        assert st.disk_bytes > 0 and st.used_bytes > 0
    with pytest.raises(StorageError):
        wal.append(b"closed")


def test_rejects_non_bytes(tmp_path: Path) -> None:
    with LmdbWal(tmp_path) as wal, pytest.raises(TypeError):
        wal.append("text")  # type: ignore[arg-type]


def test_meta_is_written_with_the_record(tmp_path: Path) -> None:
    with LmdbWal(tmp_path) as wal:
        assert wal.get_meta(b"ckpt") is None
        wal.append(b"x", meta={b"ckpt": b"10"})
        wal.append_many([b"y", b"z"], meta={b"ckpt": b"12", b"other": b"o"})
        assert wal.get_meta(b"ckpt") == b"12"
    with LmdbWal(tmp_path) as wal:  # and it survives a reopen
        assert wal.get_meta(b"ckpt") == b"12"
        assert [r.data for r in wal.replay()] == [b"x", b"y", b"z"]


def test_compact_keeps_seqs_monotonic(tmp_path: Path) -> None:
    now = [1_000_000.0]
    with LmdbWal(tmp_path, clock=lambda: now[0]) as wal:
        wal.append_many([b"%d" % i for i in range(10)])
        wal.ack_many(range(1, 11))
        assert wal.compact(older_than_s=60) == 0  # too young
        now[0] += 61
        wal.append(b"young")  # seq 11, unacked
        assert wal.compact(older_than_s=60) == 10
        assert wal.stats().count == 1
        assert wal.append(b"next") == 12  # never reuses a compacted seq
    with LmdbWal(tmp_path) as wal:
        assert wal.append(b"after reopen") == 13


def test_map_grows_without_map_full(tmp_path: Path) -> None:
    with LmdbWal(tmp_path, map_size=1 << 16) as wal:
        big = b"z" * 50_000
        for _ in range(100):  # 5 MB through a 64 KiB initial map
            wal.append(big)
        assert wal.stats().count == 100
        assert all(r.data == big for r in wal.replay())


def test_daily_rotation_and_retention(tmp_path: Path) -> None:
    now = [20_000 * DAY + 3600]
    wal = LmdbWal(tmp_path, rotate_daily=True, retention_days=2, clock=lambda: now[0])
    s1 = wal.append(b"day0")
    now[0] += DAY
    s2 = wal.append(b"day1")
    assert s2 > s1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2024-10-04", "2024-10-05"]
    assert [r.data for r in wal.replay()] == [b"day0", b"day1"]
    wal.ack(s1)
    assert [r.data for r in wal.pending()] == [b"day1"]
    assert wal.get(s1).acked  # type: ignore[union-attr]
    now[0] += DAY  # day 2: day 0 falls out of the 2-day retention
    s3 = wal.append(b"day2")
    assert s3 > s2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2024-10-05", "2024-10-06"]
    assert [r.data for r in wal.replay()] == [b"day1", b"day2"]
    assert wal.get(s1) is None
    assert wal.stats().segments == 2
    wal.ack(s2)
    now[0] += 10
    assert wal.compact(older_than_s=0) == 1  # and the emptied past day is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2024-10-06"]
    wal.close()
    with pytest.raises(ValueError):
        LmdbWal(tmp_path / "x", retention_days=3)


def _raw_put(path: Path, seq: int, value: bytes) -> None:
    """Overwrite a record's bytes behind the WAL's back (bit flip, torn write)."""
    env = lmdb.open(str(path), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(seq.to_bytes(8, "big"), value, db=env.open_db(b"records", txn=txn))
    env.close()


def _raw_get(path: Path, seq: int) -> bytes:
    env = lmdb.open(str(path), max_dbs=4, readonly=True)
    with env.begin() as txn:
        raw = txn.get(seq.to_bytes(8, "big"), db=env.open_db(b"records", txn=txn))
        assert raw is not None, f"no record {seq}"
        value = bytes(raw)
    env.close()
    return value


@pytest.mark.parametrize("damage", ["bitflip", "torn", "truncated-header", "version"])
def test_corrupt_record_is_reported_and_skipped(tmp_path: Path, damage: str) -> None:
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"rec-%d" % i * 20 for i in range(1, 6)])
    raw = _raw_get(tmp_path, 3)
    bad = {
        "bitflip": raw[:-5] + bytes([raw[-5] ^ 0x10]) + raw[-4:],
        "torn": raw[:-7],
        "truncated-header": raw[:9],
        "version": b"\x09" + raw[1:],
    }[damage]
    _raw_put(tmp_path, 3, bad)
    seen: list[tuple[int, str]] = []
    with LmdbWal(tmp_path, on_corrupt=lambda seq, why: seen.append((seq, why))) as wal:
        # the records after the bad one are not hidden
        assert [r.seq for r in wal.replay()] == [1, 2, 4, 5]
        assert [s for s, _ in seen] == [3]
        with pytest.raises(WalCorruptionError) as info:
            wal.get(3)
        assert info.value.seq == 3
        assert wal.stats().corrupt_seen == 2


def test_flipped_bit_in_the_data_file_is_found(tmp_path: Path) -> None:
    marker = b"MARKER-%d-" * 1
    with LmdbWal(tmp_path) as wal:
        for i in range(1, 21):
            wal.append((marker % i) * 30)
    data = bytearray((tmp_path / "data.mdb").read_bytes())
    # Copy-on-write leaves stale copies of pages in the file: damage every copy so
    # the live one is hit too.
    pos, hits = data.find(marker % 7 * 2), 0
    while pos >= 0:
        data[pos + 3] ^= 0x01
        pos, hits = data.find(marker % 7 * 2, pos + 1), hits + 1
    assert hits > 0
    (tmp_path / "data.mdb").write_bytes(bytes(data))
    seen: list[int] = []
    with LmdbWal(tmp_path, on_corrupt=lambda seq, why: seen.append(seq)) as wal:
        assert [r.seq for r in wal.replay()] == [i for i in range(1, 21) if i != 7]
    assert seen == [7]


def test_torn_tail_is_detected(tmp_path: Path) -> None:
    # What a crash under sync=False (or a torn sector) can leave: the last record
    # half-written. It is reported; everything before it replays.
    with LmdbWal(tmp_path) as wal:
        wal.append_many([b"a" * 100, b"b" * 100, b"c" * 100])
    _raw_put(tmp_path, 3, _raw_get(tmp_path, 3)[:60])
    seen: list[int] = []
    with LmdbWal(tmp_path, on_corrupt=lambda seq, why: seen.append(seq)) as wal:
        assert [r.data for r in wal.replay()] == [b"a" * 100, b"b" * 100]
        assert wal.append(b"d") == 4  # appending after a torn tail still works
    assert seen == [3]


def test_two_processes_append_to_one_wal(tmp_path: Path) -> None:
    # ~1.5 MB each through a 64 KiB map: both grow it and adopt each other's growth.
    code = (
        "import sys; from flk_fast.storage.wal_lmdb import LmdbWal\n"
        "w = LmdbWal(sys.argv[1], map_size=1 << 16)\n"
        "for i in range(200): w.append(b'%s-%d-' % (sys.argv[2].encode(), i) * 300)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag])
        for tag in ("a", "b")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with LmdbWal(tmp_path) as wal:
        recs = list(wal.replay())
    assert [r.seq for r in recs] == list(range(1, 401))
    for tag in (b"a", b"b"):  # each writer's records are all there, in its order
        mine = [r.data for r in recs if r.data.startswith(tag)]
        assert mine == [b"%s-%d-" % (tag, i) * 300 for i in range(200)]


async def test_async_wal_group_commit(tmp_path: Path) -> None:
    wal = AsyncWal.open(tmp_path)
    seqs = await asyncio.gather(
        *(wal.append(b"r%d" % i, meta={b"ck": b"%d" % i}) for i in range(300))
    )
    assert sorted(seqs) == list(range(1, 301))
    batches, items = wal.commits
    assert items == 300 and batches < 300  # appends shared commits
    assert await wal.get_meta(b"ck") == b"299"  # the last caller's checkpoint wins
    rec = await wal.get(seqs[5])
    assert rec is not None and rec.data == b"r5"
    await wal.ack_many(seqs[:100])
    assert [r.seq for r in await wal.pending(limit=5)] == seqs[100:105]
    assert len([r async for r in wal.replay(chunk=64)]) == 200
    assert len([r async for r in wal.replay(include_acked=True, chunk=64)]) == 300
    assert (await wal.stats()).pending == 200
    assert await wal.append_many([b"x", b"y"]) == [301, 302]
    await wal.close()
    await wal.close()  # idempotent


async def test_async_wal_without_group_commit(tmp_path: Path) -> None:
    wal = AsyncWal.open(tmp_path, group_commit=False, sync=False)
    seqs = await asyncio.gather(*(wal.append(b"r%d" % i) for i in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    await wal.close()
    with pytest.raises(StorageError):
        await wal.append(b"closed")


async def test_bad_meta_fails_only_its_own_append(tmp_path: Path) -> None:
    wal = AsyncWal.open(tmp_path)
    await wal.append(b"warm")
    # queued behind one commit: without the check in the caller, the str value
    # failed the shared transaction and every good append of the batch with it
    first = asyncio.ensure_future(wal.append(b"g0"))
    results = await asyncio.gather(
        wal.append(b"g1"),
        wal.append(b"bad", meta={b"k": "not-bytes"}),  # type: ignore[dict-item]
        wal.append(b"g2", meta={b"ck": b"2"}),
        return_exceptions=True,
    )
    await first
    assert isinstance(results[1], TypeError)
    assert [r.data for r in await wal.pending()] == [b"warm", b"g0", b"g1", b"g2"]
    assert await wal.get_meta(b"ck") == b"2"
    for meta in ({"k": b"v"}, {b"": b"v"}, {b"k" * 512: b"v"}, [(b"k", b"v")]):
        with pytest.raises((TypeError, ValueError)):
            await wal.append(b"x", meta=meta)  # type: ignore[arg-type]
    await wal.close()
    with LmdbWal(tmp_path) as sync_wal, pytest.raises(TypeError):
        sync_wal.append(b"x", meta={b"k": 1})  # type: ignore[dict-item]


def test_meta_survives_the_day_that_wrote_it(tmp_path: Path) -> None:
    # The checkpoint lives in the segment of its append; retention and compaction
    # delete whole past days, and must not take the latest meta with them.
    now = [20_000 * DAY + 3600]
    wal = LmdbWal(tmp_path, rotate_daily=True, retention_days=2, clock=lambda: now[0])
    s0 = wal.append(b"day0", meta={b"ck": b"0", b"only-day0": b"a", b"empty": b""})
    now[0] += DAY
    wal.append(b"day1", meta={b"ck": b"1"})
    now[0] += DAY  # day 0 falls out of retention
    wal.append(b"day2")
    assert wal.get(s0) is None
    assert wal.get_meta(b"ck") == b"1"  # the newest value, not the dropped day's
    assert wal.get_meta(b"only-day0") == b"a"
    assert wal.get_meta(b"empty") == b""
    wal.close()
    with LmdbWal(tmp_path, rotate_daily=True, clock=lambda: now[0]) as wal:
        assert wal.get_meta(b"ck") == b"1"
        assert wal.get_meta(b"only-day0") == b"a"

    # compaction removing an emptied past day
    now = [30_000 * DAY + 3600]
    other = tmp_path / "c"
    with LmdbWal(other, rotate_daily=True, clock=lambda: now[0]) as wal:
        s = wal.append(b"x", meta={b"ck": b"7"})
        wal.ack(s)
        now[0] += DAY
        assert wal.compact(older_than_s=0) == 1
        assert [p.name for p in other.iterdir()] == ["2052-02-21"]
        assert wal.get_meta(b"ck") == b"7"


def _fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import os

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")
def test_new_segment_and_snapshot_directories_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _fsynced_paths(monkeypatch)
    now = [20_000 * DAY + 3600]
    with LmdbWal(tmp_path / "wal", rotate_daily=True, clock=lambda: now[0]) as wal:
        now[0] += DAY
        wal.append(b"new day")  # a new segment directory
    day = tmp_path / "wal" / "2024-10-05"
    assert str(day) in synced and str(day.parent) in synced

    from flk_fast.storage.dedup_memory import MemoryDedup

    synced.clear()
    MemoryDedup(tmp_path / "snap" / "s.bin").save()
    assert str(tmp_path / "snap") in synced  # the rename into place is durable


def test_ack_values_are_kept_with_the_ack_and_checked(tmp_path: Path) -> None:
    with LmdbWal(tmp_path) as wal:
        seqs = wal.append_many([b"a", b"b", b"c", b"d"])
        wal.ack_many(seqs[:2], [b'{"v":1}', b""])  # an empty value: a plain ack
        wal.ack(seqs[2])
        assert wal.ack_values(seqs) == {seqs[0]: b'{"v":1}'}
        assert [r.seq for r in wal.pending()] == [seqs[3]]
        with pytest.raises(ValueError, match="2 seqs but 1 ack values"):
            wal.ack_many(seqs[2:], [b"x"])
        assert [r.seq for r in wal.pending()] == [seqs[3]]  # nothing acked by it
        # A value that fails its checksum is left out, the ack itself stays.
        seg = wal._segment(0, create=False)
        assert seg is not None
        key = seqs[0].to_bytes(8, "big")
        with seg.env.begin(write=True) as txn:
            raw = bytearray(txn.get(key, db=seg.acks))
            raw[-1] ^= 0x01
            txn.put(key, bytes(raw), db=seg.acks)
        assert wal.ack_values(seqs) == {}
        assert wal.get(seqs[0]).acked  # type: ignore[union-attr]
        # Compaction deletes the value with its record.
        wal.ack_many([seqs[3]], [b"kept"])
        assert wal.ack_values([seqs[3]]) == {seqs[3]: b"kept"}
        assert wal.compact(older_than_s=-1.0) == 4
        assert wal.ack_values(seqs) == {}
