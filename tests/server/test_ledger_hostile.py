"""Faults a hostile tester found in the default layout (the ledger), each against a
real ``flk serve`` over real LMDB (and, for the audit chain, a real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from flk_fast.storage.ledger import Ledger

from .conftest import JSON, SUBMIT, assert_one_audit_row_each, make_pcs
from .procs import ServerProcess

pytestmark = [pytest.mark.asyncio(loop_factories=["uvloop"])]

#: PostgreSQL on a port nobody listens on: the audit entries stay in the spools.
_NO_PG = "postgresql://postgres@127.0.0.1:1/test"


async def _post_all(url: str, bodies: list[bytes]) -> list[int]:
    """Post every body, 16 at a time over fresh connections (so that both workers of
    a ``--workers 2`` group take some)."""
    queue = list(bodies)
    statuses: list[int] = []

    async def worker() -> None:
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:
            while queue:
                body = queue.pop()
                async with s.post(url + SUBMIT, data=body, headers=JSON) as r:
                    await r.read()
                    statuses.append(r.status)

    await asyncio.gather(*(worker() for _ in range(16)))
    return statuses


def _spooled(data: Path, worker: int) -> int:
    store = Ledger(data / "ledger", worker=worker)
    try:
        return store.audit_count()
    finally:
        store.close()


@pytest.mark.services
async def test_audit_spools_of_workers_gone_are_shipped(
    tmp_path: Path, audit_dsn: str
) -> None:
    # --workers 2 while PostgreSQL is unreachable: both workers' spools fill. The next
    # start has one worker: worker 1's spool (audit/w1) has no owner any more, and
    # its entries must still reach PostgreSQL, once each.
    data = tmp_path / "data"
    bodies = [make_pcs(i) for i in range(120)]
    schema = audit_dsn.partition("?")[2]
    wide = ServerProcess(
        tmp_path,
        "wide",
        "--data-dir",
        str(data),
        "--workers",
        "2",
        env={"FLK_AUDIT_DSN": f"{_NO_PG}?{schema}"},
    )
    try:
        assert set(await _post_all(wide.url, bodies)) == {200}
    finally:
        assert wide.stop() == 0
    assert _spooled(data, 1) > 0, "worker 1 took no request: the test proves nothing"
    assert _spooled(data, 0) + _spooled(data, 1) == len(bodies)

    narrow = ServerProcess(
        tmp_path, "narrow", "--data-dir", str(data), env={"FLK_AUDIT_DSN": audit_dsn}
    )
    try:
        async with aiohttp.ClientSession() as s:  # ready, and the resends are hits
            for body in bodies[:5]:
                async with s.post(narrow.url + SUBMIT, data=body, headers=JSON) as r:
                    assert r.status == 200
    finally:
        assert narrow.stop() == 0  # the shutdown ships what is spooled
    assert _spooled(data, 0) == _spooled(data, 1) == 0
    ids = {json.loads(b)["pcs_id"] for b in bodies}
    await assert_one_audit_row_each(audit_dsn, ids)
