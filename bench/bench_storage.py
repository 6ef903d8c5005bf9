"""Storage: WAL group commit vs fsync per append, dedup ops/s, bytes on disk per PCS.

Run from the repository root (Redis and PostgreSQL up, see scripts/services.sh)::

    python -m bench.bench_storage [--repeat 3] [--size 1000000] [--json]

Cases, one JSON record each (medians over ``--repeat`` runs, plus ratios):

* ``wal_append/{group,single}``: ``--concurrency`` tasks ``await AsyncWal.append`` of a
  compact PCS body, fsync on every commit; appends/s and p50/p99 latency per append.
  ``group`` shares one commit among the queued appends, ``single`` commits each.
* ``dedup/<backend>``: ``put_if_absent`` of a new key then ``get`` of it (one op),
  ``--concurrency`` tasks; ops/s and p99 per op. LMDB is durable (fsync) on return.
* ``disk/{wal,lmdb_dedup}``: bytes on disk per PCS after ``--size`` entries, written
  in commits of 64 (a group commit under load; fsync off, which changes the speed
  but not the file). Huge single transactions would double the file: LMDB copies
  every touched page and frees the old copies only after the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bench._report import context
from bench.data import vector_doc
from flk_fast.storage import open_dedup
from flk_fast.storage.aio import AsyncWal
from flk_fast.storage.dedup_lmdb import LmdbDedup
from flk_fast.storage.wal_lmdb import LmdbWal

BATCH = 64  # entries per commit in the disk cases
REDIS_URL = os.environ.get("FLK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get(
    "FLK_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def pcs_body() -> bytes:
    """A compact PCS body as the server's inbox receives it (~600 bytes); random ids
    and signature so the bytes are as incompressible as real ones."""
    doc = vector_doc() | {
        "pcs_id": secrets.token_hex(32),
        "shard_id": f"shard-{secrets.randbelow(10_000):04d}",
        "epoch": secrets.randbelow(10**6),
        "merkle_root": secrets.token_hex(32),
        "sig": secrets.token_urlsafe(32),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def result_body(pcs_id: str) -> bytes:
    """A verification result as the dedup store keeps it (~170 bytes)."""
    return json.dumps(
        {
            "pcs_id": pcs_id,
            "accepted": True,
            "escalated": False,
            "recomputed_D_hat": 0.528320834,
            "recomputed_budget": 0.317807017,
            "reason": "",
        },
        separators=(",", ":"),
    ).encode()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def drive(
    op: Callable[[int], Awaitable[Any]], n: int, concurrency: int
) -> tuple[float, list[float]]:
    """Run ``op(i)`` for i < n with ``concurrency`` workers; (seconds, latencies)."""
    lat: list[float] = []
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            t0 = time.perf_counter()
            await op(i)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, lat


def record(label: str, params: dict[str, Any], runs: list[dict[str, float]]) -> dict:
    """Median of each metric over the runs, printed as one JSON line."""
    rec: dict[str, Any] = {"label": label, "params": params, "repeats": len(runs)}
    for key in runs[0]:
        rec[key] = statistics.median(r[key] for r in runs)
    print(json.dumps(rec), flush=True)
    return rec


async def _append_one(wal: AsyncWal, bodies: list[bytes], i: int) -> int:
    return await wal.append(bodies[i % len(bodies)])


async def _wal_run(mode: str, n: int, concurrency: int, bodies: list[bytes]) -> dict:
    path = tempfile.mkdtemp(prefix="flk-bench-wal-")
    wal = AsyncWal.open(path, group_commit=(mode == "group"))
    await wal.append(b"warm-up")
    secs, lat = await drive(partial(_append_one, wal, bodies), n, concurrency)
    batches, items = wal.commits
    await wal.close()
    shutil.rmtree(path)
    return {
        "appends_per_s": n / secs,
        "p50_ms": pct(lat, 0.50) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "records_per_commit": (items / batches) if batches else 1.0,
    }


async def bench_wal(n_group: int, n_single: int, concurrency: int, repeat: int) -> None:
    """Both modes, interleaved repeat by repeat: the fsync latency of a shared disk
    drifts by 10x within minutes, and interleaving exposes both modes to the same."""
    bodies = [pcs_body() for _ in range(256)]
    runs: dict[str, list[dict]] = {"group": [], "single": []}
    ratios: list[dict] = []
    for _ in range(repeat):
        g = await _wal_run("group", n_group, concurrency, bodies)
        s = await _wal_run("single", n_single, concurrency, bodies)
        runs["group"].append(g)
        runs["single"].append(s)
        ratios.append(
            {
                "appends_per_s_ratio": g["appends_per_s"] / s["appends_per_s"],
                "p99_ratio": g["p99_ms"] / s["p99_ms"],
            }
        )
    for mode, n in (("group", n_group), ("single", n_single)):
        params = {"n": n, "concurrency": concurrency, "sync": True, "body_bytes": 600}
        record(f"wal_append/{mode}", params, runs[mode])
    record("wal_append/ratio_group_vs_single", {"paired": True}, ratios)


async def bench_dedup(backend: str, n: int, concurrency: int, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        tag = f"b{uuid.uuid4().hex[:10]}"
        tmp = tempfile.mkdtemp(prefix="flk-bench-dedup-")
        url = {
            "lmdb": f"lmdb://{tmp}/d",
            "memory": "memory://",
            "redis": f"{REDIS_URL}?prefix={tag}:",
            "postgres": f"{POSTGRES_DSN}?schema={tag}",
        }[backend]
        store = open_dedup(url, timeout_s=30)
        await store.ping()
        keys = [secrets.token_hex(32) for _ in range(n)]
        warm = [secrets.token_hex(32) for _ in range(concurrency)]
        # fill the connection pools before timing (first use opens the connections)
        await asyncio.gather(*(store.put_if_absent(k, b"w") for k in warm))

        async def op(i: int, store: Any = store, keys: list[str] = keys) -> None:
            await store.put_if_absent(keys[i], result_body(keys[i]))
            await store.get(keys[i])

        secs, lat = await drive(op, n, concurrency)
        if backend == "redis":
            await store.delete_prefix()  # type: ignore[attr-defined]
        await store.close()
        if backend == "postgres":
            import asyncpg

            conn = await asyncpg.connect(POSTGRES_DSN)
            await conn.execute(f'DROP SCHEMA "{tag}" CASCADE')
            await conn.close()
        shutil.rmtree(tmp)
        runs.append(
            {
                "ops_per_s": n / secs,
                "p50_ms": pct(lat, 0.5) * 1e3,
                "p99_ms": pct(lat, 0.99) * 1e3,
            }
        )
    params = {"n": n, "concurrency": concurrency, "op": "put_if_absent+get"}
    return record(f"dedup/{backend}", params, runs)


def bench_disk(size: int) -> list[dict]:
    out = []
    path = tempfile.mkdtemp(prefix="flk-bench-disk-")
    wal = LmdbWal(f"{path}/wal", sync=False)
    body_bytes = 0
    for start in range(0, size, BATCH):
        batch = [pcs_body() for _ in range(min(BATCH, size - start))]
        body_bytes += sum(map(len, batch))
        wal.append_many(batch)
    st = wal.stats()
    wal.close()
    rec = {
        "label": "disk/wal",
        "params": {"entries": size},
        "bytes_per_pcs": st.disk_bytes / size,
        "payload_bytes_per_pcs": body_bytes / size,
        "disk_bytes": st.disk_bytes,
    }
    print(json.dumps(rec), flush=True)
    out.append(rec)
    dedup = LmdbDedup(f"{path}/dedup", sync=False)
    value_bytes = 0
    for start in range(0, size, BATCH):
        items = []
        for _ in range(min(BATCH, size - start)):
            key = secrets.token_hex(32)
            value = result_body(key)
            value_bytes += len(key) + len(value)
            items.append((key, value, 14 * 86400))
        dedup.put_many_if_absent(items)
    disk = dedup.disk_bytes()
    dedup.close()
    rec = {
        "label": "disk/lmdb_dedup",
        "params": {"entries": size},
        "bytes_per_pcs": disk / size,
        "payload_bytes_per_pcs": value_bytes / size,
        "disk_bytes": disk,
    }
    print(json.dumps(rec), flush=True)
    out.append(rec)
    shutil.rmtree(path)
    return out


async def amain(args: argparse.Namespace) -> None:
    if not args.json:
        print(json.dumps({"context": context()}), flush=True)
    await bench_wal(args.wal_n, args.wal_single_n, args.concurrency, args.repeat)
    for backend in args.backends.split(","):
        await bench_dedup(backend, args.dedup_n, args.concurrency, args.repeat)
    bench_disk(args.size)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--size",
        type=int,
        default=1_000_000,
        help="entries for the bytes-on-disk cases (default 1 M)",
    )
    ap.add_argument("--wal-n", type=int, default=20_000, help="group-commit appends")
    ap.add_argument(
        "--wal-single-n",
        type=int,
        default=2_000,
        help="appends with one fsync each (slow: fsync-bound)",
    )
    ap.add_argument("--dedup-n", type=int, default=5_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--backends", default="lmdb,memory,redis,postgres")
    ap.add_argument("--json", action="store_true", help="only the case records")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
