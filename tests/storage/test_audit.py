"""PostgreSQL audit log: chain, tampering found by `flk audit verify`, spooling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from flk_fast.cli import main as flk
from flk_fast.storage.audit_postgres import AuditEntry, AuditLog, verify_chain

from .conftest import drop_schema

pytestmark = pytest.mark.services


@pytest.fixture
def audit_dsn(postgres_dsn: str, unique_prefix: str) -> object:
    yield f"{postgres_dsn}?schema={unique_prefix}"
    drop_schema(postgres_dsn, unique_prefix)


def entry(i: int, **kw: object) -> AuditEntry:
    base: dict[str, object] = dict(
        pcs_id=f"{i:064x}",
        accepted=i % 3 != 0,
        escalated=i % 3 == 0,
        received_at=time.time(),
        request_digest=f"{i * 7:064x}",
        reason="" if i % 3 else "regime mismatch",
        tenant=f"tenant-{i % 2}",
        recomputed_d_hat=1.0 + i / 7,
        recomputed_budget=None if i == 2 else 0.1 * i,
    )
    base.update(kw)
    return AuditEntry(**base)  # type: ignore[arg-type]


async def test_chain_is_written_and_verifies(audit_dsn: str, tmp_path: Path) -> None:
    audit = AuditLog(audit_dsn, tmp_path / "spool", flush_interval_s=0.01)
    await asyncio.gather(*(audit.record(entry(i)) for i in range(50)))
    assert await audit.flush() + audit.shipped >= 50
    await audit.close()
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 50, report
    conn = await asyncpg.connect(
        audit_dsn.split("?")[0],
        server_settings={"search_path": audit_dsn.split("=")[-1]},
    )
    try:
        row = await conn.fetchrow(
            "SELECT * FROM flk_audit WHERE pcs_id = $1", f"{4:064x}"
        )
        assert row["tenant"] == "tenant-0" and row["accepted"] and not row["escalated"]
        # append-only: an ordinary UPDATE or DELETE is refused by the trigger
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE flk_audit SET accepted = false WHERE id = 1")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM flk_audit WHERE id = 1")
    finally:
        await conn.close()


async def _tamper(dsn: str, sql: str) -> None:
    plain, schema = dsn.split("?schema=")
    conn = await asyncpg.connect(plain, server_settings={"search_path": schema})
    try:
        # A superuser can switch triggers off; the chain must still catch the edit.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("sql", "broken_id", "why"),
    [
        (
            "UPDATE flk_audit SET accepted = NOT accepted WHERE id = 7",
            7,
            "contents changed",
        ),
        ("UPDATE flk_audit SET reason = 'x' WHERE id = 12", 12, "contents changed"),
        ("DELETE FROM flk_audit WHERE id = 5", 6, "rows missing"),
    ],
)
async def test_tampering_is_found_by_flk_audit_verify(
    audit_dsn: str,
    tmp_path: Path,
    sql: str,
    broken_id: int,
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    audit = AuditLog(audit_dsn, tmp_path / "spool")
    for i in range(20):
        await audit.record(entry(i))
    await audit.close()
    assert await asyncio.to_thread(flk, ["audit", "verify", "--dsn", audit_dsn]) == 0
    assert "audit chain OK: 20 rows" in capsys.readouterr().out
    await _tamper(audit_dsn, sql)
    assert await asyncio.to_thread(flk, ["audit", "verify", "--dsn", audit_dsn]) == 1
    out = capsys.readouterr().out
    assert f"BROKEN at id {broken_id}" in out and why in out, out


async def test_entries_queue_while_postgres_is_down(
    audit_dsn: str, tmp_path: Path, closed_port: int
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    audit = AuditLog(down, tmp_path / "spool", timeout_s=0.5, flush_interval_s=0.01)
    t0 = time.monotonic()
    for i in range(30):
        await audit.record(entry(i))  # never blocked by the dead database
    assert time.monotonic() - t0 < 5
    await asyncio.sleep(0.1)  # the shipper tries and fails in the background
    assert await audit.pending() == 30
    await audit.close(flush_timeout_s=0.5)  # entries stay spooled
    # the database "comes back": a new AuditLog on the same spool ships everything
    audit = AuditLog(audit_dsn, tmp_path / "spool")
    assert await audit.flush() == 30
    assert await audit.pending() == 0
    await audit.close()
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 30


async def test_two_writers_extend_one_chain(audit_dsn: str, tmp_path: Path) -> None:
    logs = [AuditLog(audit_dsn, tmp_path / f"spool{k}", batch_size=7) for k in (0, 1)]
    for i in range(40):
        await logs[i % 2].record(entry(i))
    await asyncio.gather(*(a.flush() for a in logs))
    await asyncio.gather(*(a.close() for a in logs))
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 40, report


async def test_reshipping_is_idempotent(audit_dsn: str, tmp_path: Path) -> None:
    e = entry(1)
    for _ in range(2):  # as if the spool ack was lost after PostgreSQL committed
        audit = AuditLog(audit_dsn, tmp_path / f"spool{_}")
        await audit.record(e)
        await audit.close()
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 1


def test_flk_db_migrate_is_idempotent(
    audit_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flk(["db", "migrate", "--dsn", audit_dsn]) == 0
    assert "applied: 0001_dedup, 0002_audit" in capsys.readouterr().out
    assert flk(["db", "migrate", "--dsn", audit_dsn]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_reports_unreachable_database(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    assert flk(["audit", "verify", "--dsn", dsn, "--timeout", "1"]) == 2
    assert flk(["db", "migrate", "--dsn", dsn, "--timeout", "1"]) == 2
    assert "flk: error:" in capsys.readouterr().err
