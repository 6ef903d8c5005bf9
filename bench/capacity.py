"""Capacity model: what 10^4, 10^5 and 10^6 PCS/s need, from measured benchmark JSON.

Run from the repository root (docs/scale.md explains every row)::

    python -m bench.capacity [--results bench/results] [--rates 1e4,1e5,1e6]

Inputs, all measured on the benchmark machine and read from ``--results``:

* ``server.jsonl`` (``bench.bench_server --json``): server CPU µs per request, the
  saturation req/s of one server process;
* ``pg_writes.json`` (``bench.bench_pg_writes``): dedup puts/s of one PostgreSQL
  instance, WAL bytes and fsyncs per put, table bytes per entry; audit rows/s of the
  one hash chain, WAL bytes and table bytes per audit row;
* ``pg_sweep_10m.json`` (``bench.bench_pg_sweep``): expiry cost per row, DELETE vs
  partition drop, and the lookup latency of the partitioned table;
* ``replicas.jsonl`` (``bench.bench_replicas --stores redis-cluster``): Redis commands
  per request and Redis CPU per command (records ``replicas/redis-cluster/N``), Redis
  bytes per entry (``INFO memory``) and AOF bytes per entry (``redis-memory/cluster``),
  each the median over the records. Without them the Redis table is left out.

The rest are stated assumptions (flags): CPU utilisation target, cores per server
replica, request bytes, TTL and audit retention, resend share, usable memory per Redis
shard. The model is linear:
it says where each component saturates first, not how a real fleet behaves near it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

DAY = 86_400


def _redis(results: Path) -> dict[str, float] | None:
    """Medians of the Redis Cluster inputs in ``replicas.jsonl``; ``None`` if it has no
    Redis Cluster run or no memory record."""
    path = results / "replicas.jsonl"
    if not path.exists():
        return None
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [r for r in recs if r.get("label", "").startswith("replicas/redis-cluster/")]
    mem = [r for r in recs if r.get("label") == "redis-memory/cluster"]
    if not runs or not mem:
        return None
    try:
        return {
            "ops_per_req": statistics.median(r["redis_ops_per_req"] for r in runs),
            "cpu_us_per_op": statistics.median(r["redis_cpu_us_per_op"] for r in runs),
            "bytes_per_entry": statistics.median(
                r["used_memory_bytes_per_entry"] for r in mem
            ),
            "aof_bytes_per_entry": statistics.median(
                r["aof_bytes_per_entry"] for r in mem
            ),
            "runs": len(runs),
            "entries": max(r["entries"] for r in mem),
        }
    except KeyError as exc:
        raise SystemExit(f"{path}: a Redis record lacks {exc}") from None


def _load(results: Path) -> dict[str, Any]:
    server = [
        json.loads(line)
        for line in (results / "server.jsonl").read_text().splitlines()
        if line.strip()
    ]
    flk = [r for r in server if r.get("server") == "flk"]
    if not flk:
        raise SystemExit(f"{results}/server.jsonl has no record of server 'flk'")
    sat = [r for r in flk if r.get("offered") == "saturation"] or flk
    writes = {
        r["label"]: r
        for r in json.loads((results / "pg_writes.json").read_text())["records"]
    }
    sweep = {
        r["label"]: r
        for r in json.loads((results / "pg_sweep_10m.json").read_text())["records"]
    }
    return {
        "cpu_us_per_req": statistics.median(r["server_cpu_us_per_req"] for r in flk),
        "server_rps": max(r["req_per_s"] for r in sat),
        "put": writes["pg_write/dedup_put"],
        "audit": writes["pg_write/audit"],
        "sweep": sweep,
        "delete_s_per_row": sweep["sweep/delete"]["s_per_million_rows"] / 1e6,
        "redis": _redis(results),
    }


def _fmt(x: float, unit: str = "") -> str:
    for div, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def model(m: dict[str, Any], rate: float, a: argparse.Namespace) -> dict[str, str]:
    put, audit = m["put"], m["audit"]
    fresh = rate * (1 - a.resend)  # resends are answered from the stored verdict
    cores = rate * m["cpu_us_per_req"] / 1e6 / a.cpu_target
    replicas = math.ceil(cores / a.replica_cores)
    live_rows = fresh * a.ttl_days * DAY
    dedup_disk = live_rows * put["table_bytes_per_row"]
    pg_nodes = math.ceil(fresh / (put["ops_per_s"] * a.cpu_target))
    audit_rows = fresh * a.audit_days * DAY
    chains = math.ceil(fresh / (audit["rows_per_s"] * a.cpu_target))
    wal_bps = fresh * (put["wal_bytes_per_op"] + audit["wal_bytes_per_row"])
    iops = fresh * (put["wal_fsyncs_per_op"] + audit["wal_fsyncs_per_row"])
    net_in = rate * a.request_bytes
    return {
        "PCS/s": _fmt(rate),
        "server cores": f"{cores:,.0f}",
        f"replicas ({a.replica_cores} cores)": f"{replicas:,}",
        "ingress": _fmt(net_in * 8, "bit/s"),
        "dedup rows live": _fmt(live_rows),
        "dedup disk": _fmt(dedup_disk, "B"),
        "PG dedup shards": f"{pg_nodes:,}",
        "PG WAL": _fmt(wal_bps, "B/s"),
        "PG fsync/s": _fmt(iops),
        # the 0001 layout's DELETE sweep: seconds of deleting per second of ingest
        "DELETE sweep s/s": f"{fresh * m['delete_s_per_row']:.2g}",
        "audit disk": _fmt(audit_rows * audit["table_bytes_per_row"], "B"),
        "audit chains": f"{chains:,}",
        "first to saturate": _first(m, fresh, a),
    }


def redis_model(
    m: dict[str, Any], rate: float, a: argparse.Namespace
) -> dict[str, str]:
    """Dedup on Redis Cluster beside PostgreSQL: shards by command CPU (Redis runs
    commands on one thread a shard) and by memory, whichever needs more."""
    r, put = m["redis"], m["put"]
    fresh = rate * (1 - a.resend)
    ops = rate * r["ops_per_req"]  # a resend is one SET NX GET as well
    shard_ops = a.cpu_target / (r["cpu_us_per_op"] / 1e6)
    live = fresh * a.ttl_days * DAY
    mem = live * r["bytes_per_entry"]
    by_ops = math.ceil(ops / shard_ops)
    by_mem = math.ceil(mem / (a.redis_shard_gb * 1e9))
    return {
        "PCS/s": _fmt(rate),
        "Redis ops/s": _fmt(ops),
        "shards for ops": f"{by_ops:,}",
        "Redis memory": _fmt(mem, "B"),
        f"shards for memory ({a.redis_shard_gb:g} GB)": f"{by_mem:,}",
        "Redis Cluster shards": f"{max(by_ops, by_mem):,}"
        + (" (memory)" if by_mem >= by_ops else " (ops)"),
        "AOF write": _fmt(fresh * r["aof_bytes_per_entry"], "B/s"),
        "AOF disk (after rewrite)": _fmt(live * r["aof_bytes_per_entry"], "B"),
        "PG dedup shards": f"{math.ceil(fresh / (put['ops_per_s'] * a.cpu_target)):,}",
        "PG dedup disk": _fmt(live * put["table_bytes_per_row"], "B"),
    }


def _table(rows: list[dict[str, str]]) -> None:
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r[c] for c in cols) + " |")


def _first(m: dict[str, Any], fresh: float, a: argparse.Namespace) -> str:
    """The component with the least headroom on one unit of each."""
    load = {
        "one server replica": fresh
        * m["cpu_us_per_req"]
        / 1e6
        / (a.replica_cores * a.cpu_target),
        "one PG dedup instance": fresh / (m["put"]["ops_per_s"] * a.cpu_target),
        "one audit chain": fresh / (m["audit"]["rows_per_s"] * a.cpu_target),
    }
    name, x = max(load.items(), key=lambda kv: kv[1])
    return f"{name} ({x:,.0f}x)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(Path(__file__).with_name("results")))
    p.add_argument("--rates", default="1e4,1e5,1e6")
    p.add_argument("--cpu-target", type=float, default=0.6, help="utilisation aimed at")
    p.add_argument("--replica-cores", type=int, default=4)
    p.add_argument("--request-bytes", type=int, default=2048, help="PCS body + HTTP")
    p.add_argument("--ttl-days", type=float, default=14)
    p.add_argument("--audit-days", type=float, default=14, help="audit retention")
    p.add_argument("--resend", type=float, default=0.1, help="share of resends")
    p.add_argument(
        "--redis-shard-gb",
        type=float,
        default=25,
        help="usable dataset memory per Redis shard, GB (RAM less AOF-rewrite room)",
    )
    a = p.parse_args(argv)
    m = _load(Path(a.results))
    print(
        f"inputs: server {m['cpu_us_per_req']:.0f} us CPU/req "
        f"(one process {m['server_rps']:.0f} req/s); PG dedup put "
        f"{m['put']['ops_per_s']:.0f}/s per instance, "
        f"{m['put']['wal_bytes_per_op']:.0f} B WAL, "
        f"{m['put']['wal_fsyncs_per_op']:.2f} fsync, "
        f"{m['put']['table_bytes_per_row']:.0f} B/row; audit "
        f"{m['audit']['rows_per_s']:.0f} rows/s per chain, "
        f"{m['audit']['table_bytes_per_row']:.0f} B/row"
    )
    sw = m["sweep"]
    print(
        f"expiry at {sw['sweep/delete']['params']['rows']:,} rows: DELETE "
        f"{sw['sweep/delete']['s_per_million_rows']:.2f} s per million rows and "
        f"{sw['sweep/delete']['wal_bytes_per_row']:.0f} B WAL per row removed; "
        f"partition drop {sw['sweep/drop']['sweep_s'] * 1e3:.1f} ms for "
        f"{sw['sweep/drop']['rows_removed']:,} rows"
    )
    rates = [float(r) for r in a.rates.split(",")]
    _table([model(m, r, a) for r in rates])
    r = m["redis"]
    if r is None:
        print(
            f"\nRedis Cluster: no input in {a.results}/replicas.jsonl (run python -m "
            "bench.bench_replicas --stores redis-cluster --out ...); table left out"
        )
        return 0
    print(
        f"\nRedis Cluster dedup ({r['runs']} runs, {r['entries']:,} entries written): "
        f"{r['ops_per_req']:.3f} commands/req, {r['cpu_us_per_op']:.0f} us Redis CPU "
        f"per command (appendfsync always), {r['bytes_per_entry']:.0f} B of memory "
        f"and {r['aof_bytes_per_entry']:.0f} B of AOF per entry"
    )
    _table([redis_model(m, r, a) for r in rates])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
