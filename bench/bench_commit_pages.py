"""Where a durable batch commit's CPU goes: scattered pages, not the number of bytes.

Run from the repository root::

    python -m bench.bench_commit_pages [--repeat 3] [--commits 400] [--batch 32]
        [--json]

Each case commits ``--commits`` write transactions of ``--batch`` requests with fsync,
the ledger's shape (per request: an inbox record of ~1 KiB under a sequential key and a
264-byte outcome put first-write-wins) into a store prefilled with 60 000 outcomes.
It reports user and system CPU per request and the device's write I/Os per commit
(``/proc/diskstats``, the whole machine: run it on a quiet disk), medians over
interleaved rounds:

* ``lmdb/random``: outcomes under random 32-byte keys, as pcs_ids are (the ledger);
* ``lmdb/held-reader``: the same, with a read transaction held open, so LMDB cannot
  reuse freed pages and appends every dirty page at the end of the file: the pages of
  a commit are contiguous and the kernel merges them into a few I/Os (the file grows:
  a measurement, not a design);
* ``lmdb/sequential``: outcomes under increasing keys (few leaves dirtied);
* ``sqlite-wal/ckpt=N``: SQLite in WAL mode, ``synchronous=FULL`` (commits append
  their pages to the WAL; checkpoints every N pages write them back coalesced).

What it showed (docs/server.md "The design's floor"): the random-key commit costs
~2–3× the system time of the same writes made contiguous.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import lmdb

from bench._report import context

PREFILL = 60_000
OUTCOME = os.urandom(264)  # the ledger's outcome value size (answer + checksum)
RECORD = os.urandom(1056)  # an inbox record of a compact PCS


def disk_write_ios() -> int:
    """Write I/Os completed by every whole disk (field 8 of /proc/diskstats); the
    disks are /sys/block's entries, less loop, RAM and device-mapper ones."""
    disks = {
        d
        for d in os.listdir("/sys/block")
        if not d.startswith(("loop", "ram", "zram", "dm-"))
    }
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] in disks:
                total += int(fields[7])
    return total


def _lmdb_case(kind: str, root: str, commits: int, batch: int) -> Callable[[], None]:
    env = lmdb.open(root, map_size=1 << 33, max_dbs=4, sync=True)
    kv, inbox = env.open_db(b"kv"), env.open_db(b"inbox")

    def key(i: int) -> bytes:
        return i.to_bytes(32, "big") if kind == "sequential" else os.urandom(32)

    with env.begin(write=True) as txn:
        for i in range(PREFILL):
            txn.put(key(i), OUTCOME, db=kv)
    held = env.begin() if kind == "held-reader" else None

    def run() -> None:
        seq = PREFILL
        for _ in range(commits):
            with env.begin(write=True) as txn:
                txn.cursor(db=inbox).putmulti(
                    [((seq + j).to_bytes(8, "big"), RECORD) for j in range(batch)]
                )
                for j in range(batch):
                    txn.put(key(seq + j), OUTCOME, db=kv, overwrite=False)
            seq += batch
        if held is not None:
            held.abort()
        env.close()

    return run


def _sqlite_case(ckpt: int, root: str, commits: int, batch: int) -> Callable[[], None]:
    db = sqlite3.connect(os.path.join(root, "ledger.db"), isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=full")
    db.execute(f"pragma wal_autocheckpoint={ckpt}")
    db.execute("create table kv(k blob primary key, v blob) without rowid")
    db.execute("create table inbox(seq integer primary key, body blob)")
    db.execute("begin")
    db.executemany(
        "insert into kv values(?, ?)",
        ((os.urandom(32), OUTCOME) for _ in range(PREFILL)),
    )
    db.execute("commit")
    db.execute("pragma wal_checkpoint(truncate)")

    def run() -> None:
        seq = 0
        for _ in range(commits):
            db.execute("begin")
            db.executemany(
                "insert into inbox values(?, ?)",
                [(seq + j, RECORD) for j in range(batch)],
            )
            db.executemany(
                "insert or ignore into kv values(?, ?)",
                [(os.urandom(32), OUTCOME) for _ in range(batch)],
            )
            db.execute("commit")
            seq += batch
        db.close()

    return run


CASES: dict[str, Callable[[str, int, int], Callable[[], None]]] = {
    "lmdb/random": lambda r, c, b: _lmdb_case("random", r, c, b),
    "lmdb/held-reader": lambda r, c, b: _lmdb_case("held-reader", r, c, b),
    "lmdb/sequential": lambda r, c, b: _lmdb_case("sequential", r, c, b),
    "sqlite-wal/ckpt=1000": lambda r, c, b: _sqlite_case(1000, r, c, b),
    "sqlite-wal/ckpt=10000": lambda r, c, b: _sqlite_case(10_000, r, c, b),
}


def measure(name: str, commits: int, batch: int, parent: str) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="flk-pages-", dir=parent)
    try:
        run = CASES[name](root, commits, batch)  # prefill outside the measurement
        r0, w0, t0 = (
            resource.getrusage(resource.RUSAGE_SELF),
            disk_write_ios(),
            time.perf_counter(),
        )
        run()
        r1, w1, t1 = (
            resource.getrusage(resource.RUSAGE_SELF),
            disk_write_ios(),
            time.perf_counter(),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = commits * batch
    return {
        "user_us_per_req": 1e6 * (r1.ru_utime - r0.ru_utime) / n,
        "sys_us_per_req": 1e6 * (r1.ru_stime - r0.ru_stime) / n,
        "write_ios_per_commit": (w1 - w0) / commits,
        "wall_us_per_req": 1e6 * (t1 - t0) / n,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--commits", type=int, default=400, help="commits per case (400)")
    ap.add_argument("--batch", type=int, default=32, help="requests per commit (32)")
    ap.add_argument("--dir", default=".", help="where the stores go (a real disk; .)")
    ap.add_argument("--json", action="store_true", help="one JSON record per case")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.commits < 1 or args.batch < 1:
        ap.error("--repeat, --commits and --batch must be >= 1")
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    for _ in range(args.repeat):
        for name in CASES:
            rounds[name].append(measure(name, args.commits, args.batch, args.dir))
    ctx = context()
    for name, runs in rounds.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rec: dict[str, Any] = {"label": f"commit_pages/{name}", **med, "runs": runs}
        if args.json:
            print(json.dumps(rec | {"context": ctx, "batch": args.batch}))
        else:
            print(
                f"{name:22s} user {med['user_us_per_req']:5.1f} µs/req  sys "
                f"{med['sys_us_per_req']:5.1f} µs/req  write I/Os per commit "
                f"{med['write_ios_per_commit']:6.1f}  "
                f"wall {med['wall_us_per_req']:6.1f} µs/req"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
