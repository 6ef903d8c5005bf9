"""PostgreSQL write costs per PCS: dedup puts and audit rows (the inputs of
bench/capacity.py).

Run from the repository root (PostgreSQL up, see scripts/services.sh)::

    python -m bench.bench_pg_writes [--puts 20000] [--audit 50000] [--out FILE.json]

Cases, one JSON record each:

* ``pg_write/dedup_put``: ``--puts`` ``put_if_absent`` of fresh keys (200-byte values,
  the 14-day TTL) from ``--concurrency`` tasks on one ``PostgresDedup``: ops/s, WAL
  bytes and WAL fsyncs per put, table bytes per entry.
* ``pg_write/audit``: ``--audit`` audit entries appended in batches of ``--batch`` (what
  the shipper does): rows/s, WAL bytes and WAL fsyncs per row, table bytes per row.

WAL figures are instance-wide: run it on an instance nothing else writes to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg

from bench._report import context
from flk_fast.storage import audit_postgres, migrations
from flk_fast.storage.audit_postgres import AuditEntry
from flk_fast.storage.dedup_postgres import PostgresDedup


async def _counters(conn: Any) -> tuple[int, int]:
    """(WAL bytes, WAL fsyncs) so far: instance-wide, so run on an idle instance."""
    wal = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    syncs = await conn.fetchval("SELECT wal_sync FROM pg_stat_wal")
    return int(wal), int(syncs)


async def _schema_bytes(conn: Any, schema: str, like: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1"
            " AND c.relkind = 'r' AND c.relname LIKE $2",
            schema,
            like,
        )
    )


async def dedup_case(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_w_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    store = PostgresDedup(f"{dsn}?schema={schema}", timeout_s=30, max_size=16)
    try:
        await store.put_if_absent("warm", b"v")
        keys = iter(range(args.puts))
        value = b"v" * 200

        async def worker() -> None:
            for i in keys:
                await store.put_if_absent(f"{i:064x}", value)

        await asyncio.sleep(0.5)  # let pg_stat_database catch up with the warm-up
        (wal0, c0), t0 = await _counters(admin), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        secs = time.perf_counter() - t0
        await asyncio.sleep(0.7)  # statistics are flushed at most once per 0.5 s
        wal1, c1 = await _counters(admin)
        size = await _schema_bytes(admin, schema, "flk_dedup%")
    finally:
        await store.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    n = args.puts
    return {
        "label": "pg_write/dedup_put",
        "params": {"puts": n, "concurrency": args.concurrency, "value_bytes": 200},
        "ops_per_s": n / secs,
        "wal_bytes_per_op": (wal1 - wal0) / n,
        "wal_fsyncs_per_op": (c1 - c0) / n,
        "table_bytes_per_row": size / (n + 1),
    }


async def audit_case(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_a_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": f'"{schema}"'}, command_timeout=None
    )
    admin = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await migrations.apply(conn, schema)
        now = time.time()
        entries = [
            AuditEntry(
                pcs_id=f"{i:064x}",
                accepted=i % 10 != 0,
                escalated=i % 10 == 0,
                received_at=now,
                request_digest=f"{i * 7:064x}",
                reason="" if i % 10 else "regime mismatch",
                tenant="tenant-a",
                recomputed_d_hat=1.25,
                recomputed_budget=0.5,
            )
            for i in range(args.audit)
        ]
        await asyncio.sleep(0.7)
        (wal0, c0), t0 = await _counters(admin), time.perf_counter()
        for lo in range(0, len(entries), args.batch):
            await audit_postgres._insert_batch(conn, entries[lo : lo + args.batch])
        secs = time.perf_counter() - t0
        await asyncio.sleep(0.7)
        wal1, c1 = await _counters(admin)
        size = await _schema_bytes(admin, schema, "flk_audit%")
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
        await admin.close()
    n = args.audit
    return {
        "label": "pg_write/audit",
        "params": {"rows": n, "batch": args.batch},
        "rows_per_s": n / secs,
        "wal_bytes_per_row": (wal1 - wal0) / n,
        "wal_fsyncs_per_row": (c1 - c0) / n,
        "table_bytes_per_row": size / n,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    records = [await dedup_case(args.dsn, args), await audit_case(args.dsn, args)]
    for r in records:
        print(json.dumps(r), flush=True)
    return {"context": context(), "records": records}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--puts", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--audit", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--out", default="", help="also write the JSON report here")
    ns = p.parse_args()
    report = asyncio.run(main(ns))
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(report, f, indent=1)
