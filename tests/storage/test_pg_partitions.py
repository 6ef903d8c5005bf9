"""PostgreSQL at scale: migrations, day partitions, audit retention, dedup expiry."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from flk_fast.cli import main as flk
from flk_fast.storage import audit_postgres, migrations
from flk_fast.storage.audit_postgres import (
    GENESIS,
    AuditEntry,
    AuditLog,
    row_hash,
    verify_chain,
)
from flk_fast.storage.dedup_postgres import PostgresDedup
from flk_fast.storage.partitions import day_partitions

from .conftest import drop_schema

pytestmark = pytest.mark.services

UTC = _dt.UTC


@pytest.fixture
def dsn(postgres_dsn: str, unique_prefix: str) -> Any:
    yield f"{postgres_dsn}?schema={unique_prefix}"
    drop_schema(postgres_dsn, unique_prefix)


async def _conn(dsn: str) -> Any:
    plain, schema = dsn.split("?schema=")
    conn = await asyncpg.connect(plain, server_settings={"search_path": f'"{schema}"'})
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    return conn


def _today() -> _dt.date:
    return _dt.datetime.now(UTC).date()


def entry(i: int, **kw: Any) -> AuditEntry:
    base: dict[str, Any] = dict(
        pcs_id=f"{i:064x}",
        accepted=i % 2 == 0,
        escalated=False,
        received_at=1_700_000_000 + i,
        request_digest=f"{i * 3:064x}",
        entry_id=f"e{i}",
    )
    base.update(kw)
    return AuditEntry(**base)


async def _ship_on(dsn: str, day: _dt.date | None, entries: list[AuditEntry]) -> int:
    """Append entries as the writer would, with its clock set to noon of ``day``."""
    saved = audit_postgres._CLOCK
    if day is not None:
        audit_postgres._CLOCK = f"'{day.isoformat()} 12:00:00+00'::timestamptz"
    conn = await _conn(dsn)
    try:
        await migrations.apply(conn, dsn.split("?schema=")[1])
        return await audit_postgres._insert_batch(conn, entries)
    finally:
        audit_postgres._CLOCK = saved
        await conn.close()


async def _apply_up_to(conn: Any, version: int) -> None:
    """The schema as it was at ``version`` (what a deployed database has)."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS flk_schema_migrations (version int PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for v, name, sql in migrations.MIGRATIONS:
        if v <= version:
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO flk_schema_migrations (version, name) VALUES ($1, $2)",
                v,
                name,
            )


async def _fill_0002(conn: Any, n: int) -> str:
    """n chained audit rows and some dedup rows in the 0001/0002 layout; head hash."""
    prev = GENESIS
    for i in range(1, n + 1):
        fields = {
            "entry_id": f"old{i}",
            "pcs_id": f"p{i}",
            "tenant": "t",
            "accepted": True,
            "escalated": False,
            "reason": "",
            "recomputed_d_hat": 1.5,
            "recomputed_budget": None,
            "received_at_us": 1_700_000_000_000_000 + i,
            "request_digest": "d",
        }
        h = row_hash(prev, i, fields)
        await conn.execute(
            "INSERT INTO flk_audit VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            " 'epoch'::timestamptz + $10::bigint * interval '1 microsecond',"
            " $11, $12, $13)",
            i,
            *(fields[k] for k in list(fields)[:8]),
            fields["received_at_us"],
            "d",
            prev,
            h,
        )
        prev = h
    await conn.execute(
        "INSERT INTO flk_dedup VALUES ('live', 'v1', now() + interval '3 days'),"
        " ('dead', 'v2', now() - interval '1 second')"
    )
    return prev.hex()


async def test_migrate_from_empty_then_up_to_date(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(flk, ["db", "migrate", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "applied: 0001_dedup, 0002_audit, 0003_audit_partitioned" in out, out
    assert "flk_audit_p" in out and "flk_dedup_p" in out, out
    assert await asyncio.to_thread(flk, ["db", "migrate", "--dsn", dsn]) == 0
    assert "schema is up to date" in capsys.readouterr().out
    conn = await _conn(dsn)
    try:
        for parent in ("flk_audit", "flk_dedup"):
            days = [d for d, _ in await day_partitions(conn, parent)]
            for n in range(3):  # today and the two days ahead (default)
                assert _today() + _dt.timedelta(days=n) in days, (parent, days)
    finally:
        await conn.close()


async def test_migrate_keeps_data_of_the_unpartitioned_schema(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = await _conn(dsn)
    try:
        await _apply_up_to(conn, 2)
        head = await _fill_0002(conn, 30)
    finally:
        await conn.close()
    assert await asyncio.to_thread(flk, ["db", "migrate", "--dsn", dsn]) == 0
    assert "0003_audit_partitioned, 0004_dedup_partitioned" in capsys.readouterr().out
    report = await verify_chain(dsn)
    assert report.ok and report.rows == 30 and report.head_hash == head, report
    async with PostgresDedup(dsn) as store:
        assert await store.get("live") == b"v1"
        assert await store.get("dead") is None
        assert await store.put_if_absent("live", b"other") == (b"v1", False)
        assert await store.put_if_absent("dead", b"new") == (b"new", True)
    # the chain goes on from the migrated rows
    audit = AuditLog(dsn, tmp_path / "spool")
    for i in range(5):
        await audit.record(entry(i))
    await audit.close()
    report = await verify_chain(dsn)
    assert report.ok and report.rows == 35, report


# Someone waits for a lock on the audit table.
_WAITING = (
    "SELECT count(*) FROM pg_locks WHERE NOT granted"
    " AND relation = 'flk_audit'::regclass"
)


def test_migrate_killed_mid_way_leaves_the_old_schema(
    dsn: str, postgres_dsn: str
) -> None:
    async def prepare() -> None:
        conn = await _conn(dsn)
        try:
            await _apply_up_to(conn, 2)
            await _fill_0002(conn, 10)
        finally:
            await conn.close()

    asyncio.run(prepare())
    schema = dsn.split("?schema=")[1]

    async def hold_and_kill() -> None:
        # A reader holds the old audit table, so the migration blocks inside its
        # transaction at DROP TABLE; then it is killed -9.
        blocker = await _conn(dsn)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT count(*) FROM flk_audit")
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("flk")), "db", "migrate", "--dsn", dsn]
        )
        try:
            for _ in range(1200):  # the CLI may take a while to start on a busy host
                assert proc.poll() is None, "flk db migrate exited instead of waiting"
                waiting = await blocker.fetchval(_WAITING)
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert waiting, "the migration never reached the lock"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            await tx.rollback()
            await blocker.close()

    asyncio.run(hold_and_kill())

    async def check() -> None:
        conn = await _conn(dsn)
        try:
            for _ in range(100):  # the killed client's backend notices and aborts
                left = await conn.fetchval(_WAITING)
                if not left:
                    break
                await asyncio.sleep(0.05)
            versions = [
                r[0]
                for r in await conn.fetch(
                    "SELECT version FROM flk_schema_migrations ORDER BY 1"
                )
            ]
            assert versions == [1, 2]
            assert await conn.fetchval("SELECT count(*) FROM flk_audit") == 10
        finally:
            await conn.close()

    asyncio.run(check())
    assert flk(["db", "migrate", "--dsn", dsn]) == 0
    report = asyncio.run(verify_chain(dsn))
    assert report.ok and report.rows == 10, (report, schema)


async def test_two_migrations_racing_apply_each_once(dsn: str) -> None:
    codes = await asyncio.gather(
        *(asyncio.to_thread(flk, ["db", "migrate", "--dsn", dsn]) for _ in range(3))
    )
    assert codes == [0, 0, 0]
    conn = await _conn(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM flk_schema_migrations")
    finally:
        await conn.close()
    assert sorted(r[0] for r in rows) == [v for v, _, _ in migrations.MIGRATIONS]


async def test_audit_chain_across_partitions_and_retention(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    days = [_today() - _dt.timedelta(days=n) for n in (20, 10, 3)] + [None]
    for k, day in enumerate(days):
        assert await _ship_on(dsn, day, [entry(10 * k + i) for i in range(10)]) == 10
    conn = await _conn(dsn)
    try:
        names = [n for _, n in await day_partitions(conn, "flk_audit")]
        counts = [await conn.fetchval(f'SELECT count(*) FROM "{n}"') for n in names]
    finally:
        await conn.close()
    assert [c for c in counts if c] == [10, 10, 10, 10], (names, counts)
    report = await verify_chain(dsn)
    assert report.ok and report.rows == 40 and report.anchor_id is None, report

    # a resend of an entry whose row is in an older partition is not stored twice
    assert await _ship_on(dsn, None, [entry(3), entry(25)]) == 0

    args = ["db", "maintain", "--dsn", dsn, "--audit-retention-days", "5"]
    assert await asyncio.to_thread(flk, args) == 0
    out = capsys.readouterr().out
    assert (_today() - _dt.timedelta(days=20)).strftime("flk_audit_p%Y%m%d") in out
    assert (_today() - _dt.timedelta(days=3)).strftime("flk_audit_p%Y%m%d") not in out
    assert await asyncio.to_thread(flk, ["audit", "verify", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "audit chain OK: 20 rows" in out and "from id 21" in out, out

    # a row removed right after the anchor is still found
    conn = await _conn(dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM flk_audit WHERE id = 21")
    finally:
        await conn.close()
    assert await asyncio.to_thread(flk, ["audit", "verify", "--dsn", dsn]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at id 22" in out and "rows missing" in out, out


async def test_chain_goes_on_after_every_partition_was_dropped(dsn: str) -> None:
    old = _today() - _dt.timedelta(days=30)
    assert await _ship_on(dsn, old, [entry(i) for i in range(5)]) == 5
    conn = await _conn(dsn)
    try:
        from flk_fast.storage.partitions import drop_audit_before

        assert len(await drop_audit_before(conn, 7)) >= 1
        assert await conn.fetchval("SELECT count(*) FROM flk_audit") == 0
    finally:
        await conn.close()
    assert await _ship_on(dsn, None, [entry(i) for i in range(5, 8)]) == 3
    report = await verify_chain(dsn)
    assert report.ok and report.rows == 3 and report.anchor_id == 5, report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--audit-retention-days", "0"], "expected a whole number >= 1"),
        (["--days-ahead", "x"], "expected a whole number >= 1"),
    ],
)
def test_maintain_refuses_bad_numbers(
    dsn: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        flk(["db", "maintain", "--dsn", dsn, *args])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_maintain_with_database_down_is_one_clear_line(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    assert flk(["db", "maintain", "--dsn", down, "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flk: error: db maintain:") and err.count("\n") == 1, err


async def test_dedup_first_write_wins_across_expiry_partitions(dsn: str) -> None:
    day = 86_400.0
    a, b = PostgresDedup(dsn, max_size=4), PostgresDedup(dsn, max_size=4)
    try:
        assert await a.put_if_absent("k", b"first", ttl_s=1.5 * day) == (b"first", True)
        # a longer TTL would put the row in another partition: it must still lose
        assert await b.put_if_absent("k", b"second", ttl_s=5 * day) == (b"first", False)
        assert await b.put_many_if_absent([("k", b"x"), ("j", b"y")], 9 * day) == [
            (b"first", False),
            (b"y", True),
        ]
        # racing puts of fresh keys with TTLs on different days: one winner per key
        keys = [f"race{i}" for i in range(40)]
        outs = await asyncio.gather(
            *(
                store.put_if_absent(k, f"{k}-{n}".encode(), ttl_s=(1 + n) * day)
                for k in keys
                for n, store in enumerate((a, b, a, b))
            )
        )
        for i, k in enumerate(keys):
            four = outs[4 * i : 4 * i + 4]
            assert len({w for w, _ in four}) == 1, four
            assert sum(ins for _, ins in four) == 1, four
            assert await a.get(k) == four[0][0]
    finally:
        await a.close()
        await b.close()
    conn = await _conn(dsn)
    try:
        parts = await day_partitions(conn, "flk_dedup")
        used = [
            n for _, n in parts if await conn.fetchval(f'SELECT count(*) FROM "{n}"')
        ]
    finally:
        await conn.close()
    assert len(used) >= 4, used  # the rows really are spread over partitions


async def test_dedup_sweep_drops_only_past_days(dsn: str) -> None:
    async with PostgresDedup(dsn) as store:
        assert await store.put_if_absent("live", b"v", ttl_s=60) == (b"v", True)
        assert await store.put_if_absent("short", b"s", ttl_s=0.05) == (b"s", True)
        conn = await _conn(dsn)
        try:
            past = _today() - _dt.timedelta(days=2)
            await conn.execute("SELECT flk_ensure_day_partition('flk_dedup', $1)", past)
            await conn.execute(
                "INSERT INTO flk_dedup SELECT ('old' || i)::bytea, 'v',"
                " $1::date + interval '1 hour' FROM generate_series(1, 1000) i",
                past,
            )
            await asyncio.sleep(0.1)
            assert await store.get("short") is None  # hidden at once by the read
            assert await store.sweep() >= 1
            left = [d for d, _ in await day_partitions(conn, "flk_dedup")]
            assert all(d >= _today() for d in left), left
            assert await conn.fetchval("SELECT count(*) FROM flk_dedup") == 2
        finally:
            await conn.close()
        assert await store.get("live") == b"v"
        # an expired key can be written again (its dead row stays until its day ends)
        assert await store.put_if_absent("short", b"again", ttl_s=60) == (
            b"again",
            True,
        )


async def test_dedup_writer_creates_the_partition_of_a_new_day(dsn: str) -> None:
    async with PostgresDedup(dsn) as store:
        far = 40 * 86_400.0  # beyond what migrate creates ahead
        assert await store.put_if_absent("far", b"v", ttl_s=far) == (b"v", True)
        assert await store.get("far") == b"v"
    conn = await _conn(dsn)
    try:
        days = [d for d, _ in await day_partitions(conn, "flk_dedup")]
    finally:
        await conn.close()
    later = (_dt.datetime.now(UTC) + _dt.timedelta(seconds=far)).date()
    assert later in days or later - _dt.timedelta(days=1) in days, days


async def test_dedup_put_recreates_a_partition_dropped_behind_its_back(
    dsn: str,
) -> None:
    async with PostgresDedup(dsn) as store:
        assert await store.put_if_absent("a", b"1", ttl_s=60) == (b"1", True)
        conn = await _conn(dsn)
        try:
            for _, name in await day_partitions(conn, "flk_dedup"):
                await conn.execute(f'DROP TABLE "{name}"')
        finally:
            await conn.close()
        assert await store.put_if_absent("b", b"2", ttl_s=60) == (b"2", True)
        assert await store.get("b") == b"2"
