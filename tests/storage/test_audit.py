"""PostgreSQL audit log: chain, tampering found by `flk audit verify`, spooling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from flk_fast.cli import main as flk
from flk_fast.errors import StorageError
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


async def _until(cond: object, seconds: float = 5.0) -> bool:
    """Poll an async predicate until it holds (the shipper works in the background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize(
    "bad",
    [
        {"reason": "bad\x00nul"},
        {"tenant": "t\x00"},
        {"tenant": "\ud800"},
        {"pcs_id": "x" * 5000},
        {"received_at": 1e300},
        {"received_at": float("nan")},
        {"received_at": "now"},
        {"accepted": 1},
        {"recomputed_d_hat": "1.0"},
    ],
)
async def test_record_rejects_what_postgres_could_never_store(
    tmp_path: Path, closed_port: int, bad: dict[str, object]
) -> None:
    audit = AuditLog(f"postgresql://postgres@127.0.0.1:{closed_port}/x", tmp_path)
    with pytest.raises((ValueError, TypeError), match="audit entry"):
        await audit.record(entry(1, **bad))
    assert await audit.pending() == 0  # nothing spooled to block the others
    await audit.close(flush_timeout_s=0.2)


async def _spool_raw(audit: AuditLog, e: AuditEntry) -> None:
    """Spool without record()'s checks, as an older version (or a bug) could have."""
    await audit.spool.append(e.to_bytes())


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "db-refuses"])
async def test_a_refused_entry_is_quarantined_and_the_rest_ship(
    audit_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    import base64
    import json

    from flk_fast.storage import audit_postgres

    if not checked:  # let the bad entries reach PostgreSQL, which refuses them
        monkeypatch.setattr(audit_postgres, "check_entry", lambda e: None)
    audit = AuditLog(audit_dsn, tmp_path / "spool", batch_size=4)
    bad = [entry(3, reason="bad\x00nul"), entry(7, tenant="\ud800")]
    for i in range(10):
        await _spool_raw(audit, bad[0] if i == 3 else bad[1] if i == 7 else entry(i))
    if checked:
        await audit.spool.append(b"{not json")  # a damaged spool entry
    assert await audit.flush() == 8
    assert await audit.pending() == 0
    n_bad = 3 if checked else 2
    assert audit.quarantined == n_bad and audit.shipped == 8
    quarantined = [json.loads(r.data) async for r in audit.quarantine.replay()]
    assert [base64.b64decode(q["raw_b64"]) for q in quarantined[:2]] == [
        b.to_bytes() for b in bad
    ]
    assert all(q["reason"] for q in quarantined)
    await audit.close()
    report = await verify_chain(audit_dsn)
    assert report.ok and report.rows == 8, report


async def test_shipper_survives_any_error_and_is_restarted(
    audit_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flk_fast.storage import audit_postgres

    real = audit_postgres._insert_batch
    calls = [0]

    async def flaky(conn: object, entries: object) -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("unexpected")  # not a storage error
        return await real(conn, entries)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_postgres, "_insert_batch", flaky)
    audit = AuditLog(
        audit_dsn, tmp_path / "spool", flush_interval_s=0.01, max_backoff_s=0.05
    )
    await audit.record(entry(1))

    async def drained() -> bool:
        return await audit.pending() == 0

    assert await _until(drained), "the shipper died on an unexpected error"
    assert calls[0] >= 2

    async def boom() -> None:
        raise OverflowError("shipper died")

    audit._task = asyncio.get_running_loop().create_task(boom())  # a dead shipper
    await asyncio.sleep(0)
    await audit.record(entry(2))  # restarts it
    assert await _until(drained), "record() did not restart a dead shipper"
    await audit.close()
    assert (await verify_chain(audit_dsn)).rows == 2


async def test_entries_left_in_the_spool_ship_on_open(
    audit_dsn: str, tmp_path: Path, closed_port: int
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    audit = AuditLog(down, tmp_path / "spool", timeout_s=0.2)
    for i in range(5):
        await audit.record(entry(i))
    await audit.close(flush_timeout_s=0.2)
    audit = AuditLog(audit_dsn, tmp_path / "spool", flush_interval_s=0.01)

    async def drained() -> bool:
        return await audit.pending() == 0

    # no record() and no flush(): the shipper started with the log
    assert await _until(drained), "spooled entries waited for the next record()"
    await audit.close()
    assert (await verify_chain(audit_dsn)).rows == 5


async def test_close_always_closes_the_spool(
    tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = AuditLog(f"postgresql://postgres@127.0.0.1:{closed_port}/x", tmp_path)

    async def broken_flush() -> int:
        raise OverflowError("Python int too large to convert to C int")

    async def boom() -> None:
        raise OverflowError("shipper died")

    audit._task = asyncio.get_running_loop().create_task(boom())
    await asyncio.sleep(0)
    monkeypatch.setattr(audit, "flush", broken_flush)
    await audit.close(flush_timeout_s=0.2)  # logs, does not raise
    with pytest.raises(StorageError):
        await audit.spool.append(b"x")  # closed
    with pytest.raises(StorageError):
        await audit.record(entry(1))


async def test_shipped_entries_are_compacted_and_not_rescanned(
    audit_dsn: str, tmp_path: Path
) -> None:
    audit = AuditLog(audit_dsn, tmp_path / "spool", batch_size=50)
    starts: list[int] = []
    real_pending = audit.spool.pending

    async def pending(limit: int = 1000, start: int = 0) -> list[object]:
        starts.append(start)
        return await real_pending(limit, start)  # type: ignore[return-value]

    audit.spool.pending = pending  # type: ignore[method-assign, assignment]
    for i in range(120):
        await audit.record(entry(i))
    assert await audit.flush() + audit.shipped >= 120
    st = await audit.spool.stats()
    assert (st.count, st.pending) == (0, 0)  # shipped entries deleted from the spool
    starts.clear()
    for i in range(120, 130):
        await audit.record(entry(i))
    await audit.flush()
    # each read starts after what was acked, never again from seq 0
    assert starts and min(starts) > 120, starts
    st = await audit.spool.stats()
    assert st.pending == 0 and st.count == 10  # compacted at most once a minute
    await audit.close()
    assert (await verify_chain(audit_dsn)).rows == 130


async def test_close_does_not_hang_on_a_silent_connection(
    audit_dsn: str, tmp_path: Path
) -> None:
    audit = AuditLog(audit_dsn, tmp_path / "spool", timeout_s=0.3)
    await audit.record(entry(1))
    await audit.flush()
    real = audit._conn
    terminated: list[bool] = []

    class Silent:  # the server stopped answering: close() never returns
        def is_closed(self) -> bool:
            return False

        async def close(self) -> None:
            await asyncio.sleep(3600)

        def terminate(self) -> None:
            terminated.append(True)
            real.terminate()

    audit._conn = Silent()
    t0 = time.monotonic()
    await asyncio.wait_for(audit.close(flush_timeout_s=0.3), 5)  # was: hung
    assert time.monotonic() - t0 < 2 and terminated == [True]
