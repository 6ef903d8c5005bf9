"""Replay of the inbox WAL: unacked records are judged, stored ones only acked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flk_fast.server.app import SERVICE, make_app
from flk_fast.server.handlers import frame_record
from flk_fast.server.outcome import decode_outcome
from flk_fast.storage.dedup_memory import MemoryDedup
from flk_fast.storage.wal_lmdb import LmdbWal

from .conftest import JSON, SUBMIT, make_cfg, make_pcs, wait_ready


def _wal(tmp_path: Path, index: int) -> LmdbWal:
    return LmdbWal(
        tmp_path / "data" / "inbox" / f"w{index}", rotate_daily=True, retention_days=14
    )


async def test_replay_judges_pending_and_acks(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    fresh, done, bad, orphan = make_pcs(1), make_pcs(2), b"{garbage", make_pcs(3)
    done_id = json.loads(done)["pcs_id"]
    with _wal(tmp_path, 0) as wal:
        wal.append_many([frame_record("", b) for b in (fresh, done, bad)])
    with _wal(tmp_path, 5) as wal:  # left by an earlier run with 6 workers
        wal.append(frame_record("", orphan))
    dedup = MemoryDedup()
    marker = b'202{"stored":"before the crash"}'
    await dedup.put_if_absent(done_id, marker)

    app = make_app(make_cfg(tmp_path), dedup=dedup)
    client = await aiohttp_client(app)
    await wait_ready(app)
    assert app[SERVICE].replayed_at_start == 4
    # the stored outcome was not judged again
    assert await dedup.get(done_id) == marker
    resp = await client.post(SUBMIT, data=done, headers=JSON)
    assert resp.status == 202 and await resp.read() == marker[3:]
    for body in (fresh, orphan):
        stored = await dedup.get(json.loads(body)["pcs_id"])
        assert stored is not None and decode_outcome(stored).status == 200
    metrics = app[SERVICE].metrics
    assert metrics.accepted._value.get() == 2  # fresh + orphan, judged once each
    # the stored one and the garbage were answered (and counted) before the crash:
    # their replay moves no counter (the HTTP re-post of `done` above is one hit)
    assert metrics.dedup_hits._value.get() == 1
    assert metrics.invalid._value.get() == 0
    await client.close()

    for index in (0, 5):
        with _wal(tmp_path, index) as wal:
            assert list(wal.pending()) == []


class _Flaky:
    """A MemoryDedup that can be switched down (DedupUnavailableError) and up."""

    def __init__(self) -> None:
        self.inner = MemoryDedup()
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def call(*a: Any, **kw: Any) -> Any:
            if self.down and name != "close":
                from flk_fast.errors import DedupUnavailableError

                raise DedupUnavailableError("switched off by the test")
            return await attr(*a, **kw)

        return call


async def test_outage_is_caught_up_while_serving(
    aiohttp_client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    import asyncio

    from flk_fast.server import app as app_module
    from flk_fast.server import replay as handlers

    monkeypatch.setattr(app_module, "TICK_S", 0.05)
    monkeypatch.setattr(handlers, "COMPACT_EVERY_S", 0.0)
    monkeypatch.setattr(handlers, "ACK_INTERVAL_S", 0.02)
    monkeypatch.setattr(app_module, "CATCH_UP_EVERY_S", 0.0)
    monkeypatch.setattr(app_module, "CATCH_UP_OLDER_THAN_S", 0.0)
    dedup = _Flaky()
    app = make_app(make_cfg(tmp_path), dedup=dedup)
    client = await aiohttp_client(app)
    await wait_ready(app)
    dedup.down = True
    body = make_pcs(42)
    resp = await client.post(SUBMIT, data=body, headers=JSON)
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert (await client.get("/ready")).status == 503
    dedup.down = False
    pcs_id = json.loads(body)["pcs_id"]
    for _ in range(200):  # the maintenance task judges it without a client retry
        if await dedup.inner.get(pcs_id) is not None:
            break
        await asyncio.sleep(0.02)
    stored = await dedup.inner.get(pcs_id)
    assert stored is not None and decode_outcome(stored).status == 200
    assert app[SERVICE].metrics.accepted._value.get() == 1
    for _ in range(100):  # and compaction removes the acked records
        stats = await app[SERVICE].wal.stats()
        if stats.count == 0:
            break
        await asyncio.sleep(0.02)
    assert stats.count == 0, stats
    await client.close()
