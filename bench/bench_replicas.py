"""N ``flk serve`` replicas on one shared dedup store, fresh PCS plus resends.

Run from the repository root (PostgreSQL up, see scripts/services.sh; the Redis Cluster
is started here, three nodes, by ``tests/services.RedisCluster``, and stopped after)::

    python -m bench.bench_replicas [--stores pg,redis-cluster] [--replicas 1,2]
        [--duration 5] [--memory-entries 100000] [--out FILE]

For each store and each N, N servers (each its own data dir, all on one PostgreSQL
``?schema=`` or one Redis Cluster ``?prefix=``) take ``--concurrency`` closed-loop
clients for ``--duration`` s: a request is a fresh signed PCS sent to replica
``i % N``, or (a ``--resend`` share) a resend of a PCS first accepted by another
replica. Reported per N: req/s, p50/p99, server CPU µs per request (summed over the
replicas), and the checks: every PCS has exactly one stored verdict, that verdict's
body is the answer the PCS first got, and every resend got that answer byte for byte.
On Redis also: commands per request (``INFO commandstats``), Redis CPU per request and
per command, and ``MEMORY USAGE`` per entry. After the runs, ``--memory-entries``
entries written by ``RedisDedup`` itself (real keys, the stored outcomes of the run as
values, the server's TTL) give Redis bytes per entry from ``INFO memory`` and the AOF
bytes per entry (record ``redis-memory/cluster``; bench/capacity.py reads it).

The load generator shares the machine's cores with the servers and the stores, so the
scaling figure is bounded; CPU per request is the one to project (docs/scale.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis
from tests.services import RedisCluster

from bench.bench_server import (
    BASE,
    KEY,
    ROOT,
    _free_port,
    _wait_http,
    cpu_seconds,
    make_bodies,
    stop_server,
)
from flk_fast.protocol.pcs import compute_pcs_id
from flk_fast.server.judge import dedup_key
from flk_fast.server.outcome import decode_outcome
from flk_fast.storage.base import DEFAULT_TTL_S
from flk_fast.storage.dedup_redis import DEFAULT_PREFIX, RedisDedup

_JSON = {"Content-Type": "application/json"}


def _start(work: Path, i: int, dedup: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    key = work / "hmac.key"
    key.write_bytes(KEY)
    cmd = [
        sys.executable,
        "-m",
        "flk_fast",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(work / f"data{i}"),
        "--hmac-key-file",
        str(key),
        "--dedup",
        dedup,
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _wait_http(f"http://127.0.0.1:{port}/ready")
    return proc, f"http://127.0.0.1:{port}/v1/pcs/submit"


async def _load(
    urls: list[str], bodies: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(1)
    fresh = iter(range(len(bodies)))
    first: dict[int, tuple[int, bytes]] = {}  # body -> (replica, first answer)
    lat: list[float] = []
    mismatched = errors = resends = 0
    deadline = time.monotonic() + args.duration

    async def client(s: aiohttp.ClientSession) -> None:
        nonlocal mismatched, errors, resends
        while time.monotonic() < deadline:
            done = list(first)
            if done and len(urls) > 1 and rng.random() < args.resend:
                b = rng.choice(done)
                replica = (first[b][0] + 1) % len(urls)  # another replica
            else:
                nxt = next(fresh, None)
                if nxt is None:
                    return
                b, replica = nxt, nxt % len(urls)
            t0 = time.perf_counter()
            async with s.post(urls[replica], data=bodies[b], headers=_JSON) as r:
                text = await r.read()
                status = r.status
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
            elif b in first:
                resends += 1
                mismatched += text != first[b][1]
            else:
                first[b] = (replica, text)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(client(s) for _ in range(args.concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "requests": len(lat),
        "req_per_s": len(lat) / wall,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3,
        "pcs": len(first),
        "resends": resends,
        "resend_mismatches": mismatched,
        "non_200": errors,
        "first_answers": sorted(t for _, t in first.values()),
    }


def _checks(rec: dict[str, Any], stored: list[bytes]) -> None:
    """``stored``: the value of every stored entry. One verdict per PCS, and it is the
    answer the PCS first got."""
    first = rec.pop("first_answers")
    bodies = sorted(decode_outcome(v).body for v in stored)
    rec.update(
        stored_verdicts=len(stored),
        one_verdict_per_pcs=len(stored) == rec["pcs"],
        stored_is_first_answer=bodies == first,
    )


class PgStore:
    """One PostgreSQL ``?schema=`` per run, dropped after it."""

    name = "pg"

    def __init__(self, args: argparse.Namespace) -> None:
        self.dsn = args.dsn
        self.schema = ""

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def url(self) -> str:
        self.schema = f"bench_rep_{uuid.uuid4().hex[:8]}"
        return f"{self.dsn}?schema={self.schema}"

    def before_load(self) -> None:
        pass

    def after_load(self, rec: dict[str, Any]) -> None:
        rows, keys, stored = asyncio.run(self._rows())
        _checks(rec, stored)
        rec.update(dedup_rows=rows, one_row_per_pcs=rows == keys == rec["pcs"])

    async def _rows(self) -> tuple[int, int, list[bytes]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            table = f'"{self.schema}".flk_dedup'
            r = await conn.fetchrow(
                f"SELECT count(*), count(DISTINCT key) FROM {table}"
            )
            values = [row[0] for row in await conn.fetch(f"SELECT value FROM {table}")]
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            return int(r[0]), int(r[1]), values
        finally:
            await conn.close()


class RedisClusterStore:
    """One three-node Redis Cluster for all runs, one ``?prefix=`` per run."""

    name = "redis-cluster"

    def __init__(self, args: argparse.Namespace) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="flk-bench-cluster-"))
        self.cluster = RedisCluster(self.work)
        self.prefix = ""
        self.cpu0 = 0.0
        self.values: list[bytes] = []  # the stored outcomes of the last run

    def __enter__(self) -> RedisClusterStore:
        self.cluster.start()
        self.nodes = [redis.Redis(port=p) for p in self.cluster.ports]
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.close()
        self.cluster.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def url(self) -> str:
        self.prefix = f"bench_rep_{uuid.uuid4().hex[:8]}:"
        return f"{self.cluster.url}?prefix={self.prefix}"

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.cluster.procs)

    def before_load(self) -> None:
        for node in self.nodes:
            node.config_resetstat()
        self.cpu0 = self.cpu()

    def _scan(self, prefix: str, limit: int | None = None) -> list[tuple[Any, bytes]]:
        """``(node, key)`` of the keys under ``prefix``, at most ``limit`` a node."""
        keys = []
        for node in self.nodes:
            for i, k in enumerate(node.scan_iter(match=prefix + "*", count=1000)):
                if limit is not None and i >= limit:
                    break
                keys.append((node, k))
        return keys

    @staticmethod
    def _each(keys: list[tuple[Any, bytes]], call: str, *args: Any) -> list[Any]:
        """``node.<call>(key, *args)`` for every key, one pipeline a node."""
        out = []
        for node in {id(n): n for n, _ in keys}.values():
            pipe = node.pipeline(transaction=False)
            for n, k in keys:
                if n is node:
                    getattr(pipe, call)(k, *args)
            out += pipe.execute()
        return out

    def after_load(self, rec: dict[str, Any]) -> None:
        cpu = self.cpu() - self.cpu0
        calls: dict[str, int] = {}
        for node in self.nodes:
            for name, st in node.info("commandstats").items():
                cmd = name.removeprefix("cmdstat_")
                if cmd not in ("info", "config|resetstat"):  # ours
                    calls[cmd] = calls.get(cmd, 0) + int(st["calls"])
        ops = sum(calls.values())
        keys = self._scan(self.prefix)
        keys.sort(key=lambda nk: (self.nodes.index(nk[0]), nk[1]))
        stored = self._each(keys, "get")
        usage = self._each(keys, "memory_usage", 0)
        _checks(rec, stored)
        self.values = stored or self.values
        req = max(rec["requests"], 1)
        rec.update(
            redis_commands=calls,
            redis_ops_per_req=ops / req,
            redis_cpu_us_per_req=cpu / req * 1e6,
            redis_cpu_us_per_op=cpu / max(ops, 1) * 1e6,
            redis_memory_usage_bytes_per_entry=sum(usage) / max(len(usage), 1),
            redis_keys_per_node=[
                sum(n is node for n, _ in keys) for node in self.nodes
            ],
        )

    def memory(self, entries: int) -> dict[str, Any]:
        """Write ``entries`` entries with ``RedisDedup`` (the server's code, keys and
        TTL); Redis bytes and AOF bytes per entry from ``INFO`` before and after."""
        prefix = DEFAULT_PREFIX  # the real layout; this cluster is ours alone
        values = self.values

        def totals() -> tuple[int, int]:
            mem = [n.info("memory")["used_memory"] for n in self.nodes]
            aof = [n.info("persistence")["aof_current_size"] for n in self.nodes]
            return sum(mem), sum(aof)

        async def fill() -> None:
            async with RedisDedup(self.cluster.url, prefix=prefix) as store:
                for start in range(0, entries, 500):
                    batch = [
                        (
                            dedup_key(
                                "",
                                compute_pcs_id(
                                    BASE["merkle_root"], i, BASE["shard_id"]
                                ),
                            ),
                            values[i % len(values)],
                        )
                        for i in range(start, min(start + 500, entries))
                    ]
                    await store.put_many_if_absent(batch, DEFAULT_TTL_S)

        mem0, aof0 = totals()
        t0 = time.perf_counter()
        asyncio.run(fill())
        wall = time.perf_counter() - t0
        mem1, aof1 = totals()
        sample = self._scan(prefix, limit=2000)
        usage = self._each(sample, "memory_usage", 0)
        return {
            "label": "redis-memory/cluster",
            "entries": entries,
            "nodes": len(self.nodes),
            "value_bytes_mean": sum(map(len, values)) / len(values),
            "key_bytes": len(prefix) + 2 + 64,
            "used_memory_bytes_per_entry": (mem1 - mem0) / entries,
            "memory_usage_bytes_per_entry": sum(usage) / max(len(usage), 1),
            "aof_bytes_per_entry": (aof1 - aof0) / entries,
            "fill_puts_per_s": entries / wall,
        }


def run(
    store: PgStore | RedisClusterStore,
    n: int,
    bodies: list[bytes],
    args: argparse.Namespace,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="flk-bench-rep-"))
    url = store.url()
    procs = []
    try:
        for i in range(n):
            procs.append(_start(work, i, url))
        store.before_load()
        cpu0 = sum(cpu_seconds(p.pid) for p, _ in procs)
        rec = asyncio.run(_load([u for _, u in procs], bodies, args))
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - cpu0
    finally:
        for p, _ in procs:
            stop_server(p)
        shutil.rmtree(work, ignore_errors=True)
    store.after_load(rec)
    rec.update(
        label=f"replicas/{store.name}/{n}",
        replicas=n,
        server_cpu_us_per_req=cpu / max(rec["requests"], 1) * 1e6,
    )
    return rec


STORES: dict[str, type[PgStore | RedisClusterStore]] = {
    "pg": PgStore,
    "redis-cluster": RedisClusterStore,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stores", default="pg,redis-cluster", help=", ".join(STORES))
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--replicas", default="1,2")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--resend", type=float, default=0.2)
    p.add_argument("--bodies", type=int, default=30_000)
    p.add_argument(
        "--memory-entries",
        type=int,
        default=100_000,
        help="entries written for Redis bytes per entry (0: skip)",
    )
    p.add_argument("--out", default="", help="append the records (JSON lines) here")
    args = p.parse_args()
    stores = args.stores.split(",")
    unknown = [s for s in stores if s not in STORES]
    if unknown:
        p.error(f"--stores: unknown {', '.join(unknown)} (known: {', '.join(STORES)})")
    tmp = Path(tempfile.mkdtemp(prefix="flk-bench-bodies-"))
    make_bodies(args.bodies, 0, tmp / "bodies")
    bodies = [line.encode() for line in (tmp / "bodies").read_text().splitlines()]
    shutil.rmtree(tmp)
    records = []
    for name in stores:
        with STORES[name](args) as store:
            mine = []
            for n in (int(x) for x in args.replicas.split(",")):
                rec = run(store, n, bodies, args)
                print(json.dumps(rec), flush=True)
                mine.append(rec)
            records += mine
            if isinstance(store, RedisClusterStore) and args.memory_entries > 0:
                rec = store.memory(args.memory_entries)
                print(json.dumps(rec), flush=True)
                records.append(rec)
        one = mine[0]["req_per_s"]
        for r in mine[1:]:
            print(
                f"{name}: {r['replicas']} replicas: {r['req_per_s'] / one:.2f}x the "
                f"req/s of {mine[0]['replicas']}; CPU/req "
                f"{r['server_cpu_us_per_req']:.0f} us"
            )
    if args.out:
        with open(args.out, "a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
    bad = [
        r["label"]
        for r in records
        if "pcs" in r
        and not (
            r["one_verdict_per_pcs"]
            and r["stored_is_first_answer"]
            and r["resend_mismatches"] == 0
        )
    ]
    if bad:
        print(f"CHECK FAILED: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
