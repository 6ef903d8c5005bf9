"""Start-up replay of the inbox WAL: unacked records are judged, stored ones only acked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flk_fast.server.app import SERVICE, make_app
from flk_fast.server.handlers import frame_record
from flk_fast.storage.dedup_memory import MemoryDedup
from flk_fast.storage.wal_lmdb import LmdbWal

from .conftest import JSON, SUBMIT, make_cfg, make_pcs, wait_ready


def _wal(tmp_path: Path, index: int) -> LmdbWal:
    return LmdbWal(tmp_path / "data" / "inbox" / f"w{index}", rotate_daily=True,
                   retention_days=14)


async def test_replay_judges_pending_and_acks(aiohttp_client: Any, tmp_path: Path) -> None:
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
        assert stored is not None and stored.startswith(b"200")
    metrics = app[SERVICE].metrics
    assert metrics.accepted._value.get() == 2  # fresh + orphan, judged once each
    await client.close()

    for index in (0, 5):
        with _wal(tmp_path, index) as wal:
            assert list(wal.pending()) == []
