"""A data directory of the layout before the ledger (separate ``inbox/w<i>`` WAL and
``dedup`` store) is adopted once at start-up: outcomes copied, unacked inbox records
judged, directories renamed; every answer given before stays byte-identical."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from flk_fast.server.handlers import frame_record
from flk_fast.storage.aio import AsyncWal
from flk_fast.storage.ledger import Ledger
from flk_fast.storage.wal_lmdb import LmdbWal

from .conftest import JSON, SUBMIT, make_pcs
from .procs import ServerProcess, metric

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_factories=["uvloop"])]


async def _post_all(url: str, bodies: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
    out = {}
    async with aiohttp.ClientSession() as s:
        for body in bodies:
            async with s.post(url + SUBMIT, data=body, headers=JSON) as r:
                out[body] = (r.status, await r.read())
    return out


async def test_old_layout_is_adopted_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = ServerProcess(
        tmp_path, "old", "--data-dir", str(data), "--dedup", f"lmdb://{data}/dedup"
    )
    try:
        answered = await _post_all(old.url, [make_pcs(i) for i in range(40)])
    finally:
        assert old.stop() == 0
    assert {a[0] for a in answered.values()} == {200}
    # records the old server logged but never judged (as a kill -9 leaves them)
    unjudged = [make_pcs(1000 + i) for i in range(5)]
    wal = AsyncWal(LmdbWal(data / "inbox" / "w0", rotate_daily=True, retention_days=14))
    for body in unjudged:
        await wal.append(frame_record("", body))
    await wal.close()

    new = ServerProcess(tmp_path, "new", "--data-dir", str(data))
    try:
        again = await _post_all(new.url, list(answered))
        assert again == answered  # the same status and bytes as before the upgrade
        resent = await _post_all(new.url, unjudged)
        async with aiohttp.ClientSession() as s:
            dedup_hits = await metric(s, new.url, "flk_dedup_hits_total")
        hits = [x for x in new.log_lines() if "migrated" in x.get("event", "")]
    finally:
        assert new.stop() == 0
    log = new.log_path.read_text()
    assert "5 unacked inbox records" in log and "40 outcomes copied" in log, log
    assert len(hits) == 2, hits  # dedup and inbox renamed, each logged
    assert not (data / "dedup").exists() and not (data / "inbox").exists()
    assert sorted(p.name.split(".migrated-")[0] for p in data.glob("*.migrated-*")) == [
        "dedup",
        "inbox",
    ]
    # the unjudged records were judged by the adoption: their resends are hits too
    assert {a[0] for a in resent.values()} == {200}
    assert dedup_hits == len(answered) + len(unjudged)
    led = Ledger(data / "ledger")
    try:
        ids = [json.loads(b)["pcs_id"] for b in [*answered, *unjudged]]
        assert all(v is not None for v in led.get_many(ids))
    finally:
        led.close()

    # a second start finds nothing to adopt
    third = ServerProcess(tmp_path, "third", "--data-dir", str(data))
    try:
        await asyncio.sleep(0.2)
    finally:
        assert third.stop() == 0
    assert "old layout" not in third.log_path.read_text()
