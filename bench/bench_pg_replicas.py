"""N ``flk serve`` replicas on one PostgreSQL dedup store, fresh PCS plus resends.

Run from the repository root (PostgreSQL up, see scripts/services.sh)::

    python -m bench.bench_pg_replicas [--replicas 1,2] [--duration 5] [--out FILE]

For each N, N servers (each its own data dir, all on one ``?schema=``) take
``--concurrency`` closed-loop clients for ``--duration`` s: a request is a fresh signed
PCS sent to replica ``i % N``, or (a ``--resend`` share) a resend of a PCS first
accepted by another replica. Reported per N: req/s, p50/p99, server CPU µs per request
(summed over the replicas), and the checks: every PCS has exactly one row in
``flk_dedup`` and every resend got the first answer byte for byte. The load generator
shares the machine's cores with the servers, so the scaling figure is bounded; CPU per
request is the one to project (docs/scale.md).
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

from bench.bench_server import (
    KEY,
    ROOT,
    _free_port,
    _wait_http,
    cpu_seconds,
    make_bodies,
    stop_server,
)

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
                b = next(fresh, None)
                if b is None:
                    return
                replica = b % len(urls)
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
    }


async def _rows(dsn: str, schema: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        r = await conn.fetchrow(
            f'SELECT count(*), count(DISTINCT key) FROM "{schema}".flk_dedup'
        )
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        return int(r[0]), int(r[1])
    finally:
        await conn.close()


def run(n: int, bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_rep_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="flk-bench-rep-"))
    procs = []
    try:
        for i in range(n):
            procs.append(_start(work, i, f"{args.dsn}?schema={schema}"))
        cpu0 = sum(cpu_seconds(p.pid) for p, _ in procs)
        rec = asyncio.run(_load([u for _, u in procs], bodies, args))
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - cpu0
    finally:
        for p, _ in procs:
            stop_server(p)
        shutil.rmtree(work, ignore_errors=True)
    rows, keys = asyncio.run(_rows(args.dsn, schema))
    rec.update(
        label=f"replicas/pg/{n}",
        replicas=n,
        server_cpu_us_per_req=cpu / max(rec["requests"], 1) * 1e6,
        dedup_rows=rows,
        one_row_per_pcs=rows == keys,
    )
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--replicas", default="1,2")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--resend", type=float, default=0.2)
    p.add_argument("--bodies", type=int, default=30_000)
    p.add_argument("--out", default="", help="append the records (JSON lines) here")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flk-bench-bodies-"))
    make_bodies(args.bodies, 0, tmp / "bodies")
    bodies = [line.encode() for line in (tmp / "bodies").read_text().splitlines()]
    shutil.rmtree(tmp)
    records = []
    for n in (int(x) for x in args.replicas.split(",")):
        rec = run(n, bodies, args)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    if args.out:
        with open(args.out, "a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
    one = records[0]["req_per_s"]
    for r in records[1:]:
        print(
            f"{r['replicas']} replicas: {r['req_per_s'] / one:.2f}x the req/s of "
            f"{records[0]['replicas']}; CPU/req {r['server_cpu_us_per_req']:.0f} us"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
