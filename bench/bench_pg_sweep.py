"""PostgreSQL dedup expiry: DELETE sweep (schema 0001) vs dropping day partitions
(0004).

Run from the repository root (PostgreSQL up, see scripts/services.sh)::

    python -m bench.bench_pg_sweep [--rows 10000000] [--days 14] [--out FILE.json]

Both layouts get the same ``--rows`` entries, their expiry spread evenly over
``--days`` days starting one day ago, so one day's worth (1/days of the rows) has
expired. Cases, one JSON record each:

* ``sweep/delete``: the 0001 sweep (``DELETE … ORDER BY expires_at LIMIT 100000``
  repeated until nothing is left to delete), the only way that layout expires rows.
* ``sweep/drop``: ``partitions.drop_expired_dedup`` on the partitioned table.
* ``get/{delete,drop}``: median latency of ``--lookups`` live-key reads (a partitioned
  table probes each day's primary key index: the price of cheap expiry).

Each sweep record carries seconds, rows removed, WAL bytes written (what the disk and
the streaming replicas must absorb), and table bytes per row (for bench/capacity.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from typing import Any

import asyncpg

from bench._report import context
from flk_fast.storage import migrations
from flk_fast.storage.partitions import drop_expired_dedup

_OLD_SWEEP = """
DELETE FROM flk_dedup WHERE expires_at <= now() AND key IN (
    SELECT key FROM flk_dedup WHERE expires_at <= now() ORDER BY expires_at LIMIT $1)
"""
_CHUNK = 1_000_000


async def _load(conn: Any, rows: int, days: int, value_bytes: int) -> None:
    """rows entries; the key is sha256(i), expiries evenly over [now - 1 d, …)."""
    span = days * 86_400
    for lo in range(1, rows + 1, _CHUNK):
        hi = min(lo + _CHUNK - 1, rows)
        await conn.execute(
            "INSERT INTO flk_dedup SELECT sha256(int8send(i)),"
            " substring(convert_to(repeat(md5(i::text), $4), 'UTF8') from 1 for $3),"
            " now() - interval '1 day' + (i::float8 * $5 / $6) * interval '1 second'"
            " FROM generate_series($1::bigint, $2::bigint) AS i",
            lo,
            hi,
            value_bytes,
            value_bytes // 32 + 1,
            span,
            rows,
        )


async def _wal_lsn(conn: Any) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def _gets(conn: Any, rows: int, n: int) -> list[float]:
    rng = random.Random(7)
    out = []
    for _ in range(n):
        i = rng.randrange(1, rows + 1)
        t0 = time.perf_counter()
        await conn.fetchval(
            "SELECT value FROM flk_dedup WHERE key = sha256(int8send($1::bigint))"
            " AND expires_at > now()",
            i,
        )
        out.append(time.perf_counter() - t0)
    return out


async def _case(
    dsn: str, layout: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    schema = f"bench_sweep_{layout}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": f'"{schema}"'}, command_timeout=None
    )
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        if layout == "delete":
            await conn.execute(migrations.MIGRATIONS[0][2])
        else:
            await migrations.apply(conn, schema)
            await conn.execute(
                "SELECT flk_ensure_day_partition('flk_dedup', d::date) FROM"
                " generate_series(now() - interval '1 day', now() + $1 * interval"
                " '1 day', interval '1 day') AS d",
                args.days,
            )
        t0 = time.perf_counter()
        await _load(conn, args.rows, args.days, args.value_bytes)
        await conn.execute("ANALYZE flk_dedup")
        load_s = time.perf_counter() - t0
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r'",
            schema,
        )
        lookups = _gets(conn, args.rows, args.lookups)
        get_s = await lookups
        wal0, t0 = await _wal_lsn(conn), time.perf_counter()
        if layout == "delete":
            removed = 0
            while True:
                status = await conn.execute(_OLD_SWEEP, 100_000)
                n = int(status.split()[-1])
                removed += n
                if n == 0:
                    break
            what: Any = removed
        else:
            what = await drop_expired_dedup(conn)
        sweep_s = time.perf_counter() - t0
        wal = await _wal_lsn(conn) - wal0
        left = await conn.fetchval("SELECT count(*) FROM flk_dedup")
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    params = {"rows": args.rows, "days": args.days, "value_bytes": args.value_bytes}
    removed_rows = args.rows - left
    sweep = {
        "label": f"sweep/{layout}",
        "params": params,
        "sweep_s": sweep_s,
        "rows_removed": removed_rows,
        "dropped_partitions": what if layout == "drop" else None,
        "wal_bytes": wal,
        # drop removes whole past days, delete every expired row: compare per row
        "s_per_million_rows": sweep_s * 1e6 / max(removed_rows, 1),
        "wal_bytes_per_row": wal / max(removed_rows, 1),
        "load_s": load_s,
        "table_bytes": int(size),
        "bytes_per_row": int(size) / args.rows,
    }
    get = {
        "label": f"get/{layout}",
        "params": params,
        "median_s": statistics.median(get_s),
        "p99_s": sorted(get_s)[int(0.99 * (len(get_s) - 1))],
        "repeats": len(get_s),
    }
    return [sweep, get]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    records = []
    for layout in ("delete", "drop"):
        for rec in await _case(args.dsn, layout, args):
            print(json.dumps(rec), flush=True)
            records.append(rec)
    by = {r["label"]: r for r in records}
    ratio = {
        "sweep_delete_over_drop": by["sweep/delete"]["sweep_s"]
        / max(by["sweep/drop"]["sweep_s"], 1e-9),
        "get_drop_over_delete": by["get/drop"]["median_s"]
        / by["get/delete"]["median_s"],
    }
    print(json.dumps({"label": "ratios", **ratio}))
    return {"context": context(), "records": records, "ratios": ratio}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--value-bytes", type=int, default=200)
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--out", default="", help="also write the JSON report here")
    ns = p.parse_args()
    report = asyncio.run(main(ns))
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(report, f, indent=1)
