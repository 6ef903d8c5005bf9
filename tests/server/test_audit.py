"""The server writes every stored verdict to the PostgreSQL audit chain."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from flk_fast.server.app import SERVICE
from flk_fast.storage.audit_postgres import verify_chain

from .conftest import JSON, SUBMIT, audit_rows, make_pcs

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_factories=["asyncio"])]


async def _rows(dsn: str) -> list[Any]:
    return await audit_rows(
        dsn, "pcs_id, accepted, escalated, reason, request_digest, tenant"
    )


async def test_each_stored_verdict_is_audited_once(
    make_client: Any, audit_dsn: str
) -> None:
    client = await make_client(audit_dsn=audit_dsn)
    bodies = [make_pcs(1), make_pcs(2, regime="sticky")]
    statuses = []
    for body in bodies + bodies:  # the second round is dedup hits: no new entries
        resp = await client.post(SUBMIT, data=body, headers=JSON)
        statuses.append(resp.status)
        await resp.read()
    bad = await client.post(SUBMIT, data=make_pcs(7, key=b"wrong"), headers=JSON)
    assert bad.status == 401  # a rejected signature is never audited
    assert statuses == [200, 202, 200, 202]
    audit = client.app[SERVICE].audit
    await audit.flush()
    rows = await _rows(audit_dsn)
    assert [(r["accepted"], r["escalated"]) for r in rows] == [
        (True, False),
        (True, True),
    ]
    assert [r["request_digest"] for r in rows] == [
        hashlib.sha256(b).hexdigest() for b in bodies
    ]
    assert rows[1]["reason"].startswith("regime: claimed sticky")
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 2, report


async def test_postgres_down_does_not_delay_answers(
    make_client: Any, tmp_path: Any
) -> None:
    # Nothing listens on port 1: shipping fails, entries stay spooled, answers go on.
    client = await make_client(audit_dsn="postgresql://postgres@127.0.0.1:1/test")
    resp = await asyncio.wait_for(
        client.post(SUBMIT, data=make_pcs(1), headers=JSON), timeout=5
    )
    assert resp.status == 200
    assert await client.app[SERVICE].audit.pending() == 1


async def test_the_server_creates_the_partition_of_a_new_day(
    make_client: Any, audit_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``flk db maintain`` ran: the day's audit partition is made by the server's
    own writer when the first entry of that day is shipped (issue #16)."""
    import datetime as _dt

    import asyncpg

    from flk_fast.storage import audit_postgres
    from flk_fast.storage.partitions import day_partitions

    client = await make_client(audit_dsn=audit_dsn)
    audit = client.app[SERVICE].audit
    base, _, schema = audit_dsn.partition("?schema=")

    async def partitions() -> dict[_dt.date, int]:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            return {
                day: await conn.fetchval(f'SELECT count(*) FROM "{name}"')
                for day, name in await day_partitions(conn, "flk_audit")
            }
        finally:
            await conn.close()

    resp = await client.post(SUBMIT, data=make_pcs(1), headers=JSON)
    assert resp.status == 200
    await audit.flush()
    ahead = await partitions()
    later = max(ahead) + _dt.timedelta(days=30)  # a day nothing created ahead
    monkeypatch.setattr(
        audit_postgres, "_CLOCK", f"'{later.isoformat()} 00:00:01+00'::timestamptz"
    )
    resp = await client.post(SUBMIT, data=make_pcs(2), headers=JSON)
    assert resp.status == 200
    await audit.flush()
    after = await partitions()
    assert set(after) == set(ahead) | {later}, (sorted(ahead), sorted(after))
    assert after[later] == 1 and sum(after.values()) == 2
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 2, report
