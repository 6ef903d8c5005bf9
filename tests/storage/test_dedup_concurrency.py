"""Many writers race on the same keys: exactly one winner per key, seen by everyone.

Two processes x 1000 concurrent ``put_if_absent`` on the same 100 keys, per backend.
``memory://`` is one process's dict by design, so it races 2 x 1000 tasks in-process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from flk_fast.storage import open_dedup

from .conftest import backend_params

ROOT = Path(__file__).resolve().parents[2]
N, KEYS = 1000, 100


def check(results: list[list[object]]) -> None:
    winners: dict[str, set[str]] = defaultdict(set)
    inserted: dict[str, int] = defaultdict(int)
    for key, winner, ins in results:
        winners[str(key)].add(str(winner))
        inserted[str(key)] += bool(ins)
    assert len(winners) == KEYS
    assert all(len(w) == 1 for w in winners.values()), "callers saw different winners"
    assert set(inserted.values()) == {1}, "not exactly one insert per key"
    for key, (w,) in winners.items():
        # the value everyone sees is the one its inserting caller wrote
        assert any(r[0] == key and r[1] == w and r[2] for r in results)


@pytest.mark.parametrize(
    "backend", backend_params(("lmdb", "redis", "redis-cluster", "postgres"))
)
async def test_two_processes_race(backend: str, dedup_url_for: object) -> None:
    url = dedup_url_for(backend)  # type: ignore[operator]
    store = open_dedup(url, timeout_s=30)
    await store.ping()  # create the schema once, before the race
    await store.close()
    start_at = time.time() + 1.5  # both children are up (imports done) by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage._workers",
                "dedup",
                url,
                tag,
                str(N),
                str(KEYS),
                str(start_at),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    results: list[list[object]] = []
    try:
        for p in procs:
            out, err = await asyncio.to_thread(p.communicate, timeout=120)
            assert p.returncode == 0, err
            results += json.loads(out.splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert len(results) == 2 * N
    check(results)
    # and the store agrees with what the callers were told
    store = open_dedup(url)
    try:
        stored = await store.get_many([f"{i:064x}" for i in range(KEYS)])
    finally:
        await store.close()
    told = {r[0]: r[1] for r in results}
    assert [(s or b"").decode() for s in stored] == [
        told[f"{i:064x}"] for i in range(KEYS)
    ]


async def test_memory_in_process_race() -> None:
    # memory:// is one process's dict: two processes would be two stores, so two
    # groups of 1000 tasks race on one store instead.
    store = open_dedup("memory://")

    async def one(tag: str, i: int) -> list[object]:
        key = f"{i % KEYS:064x}"
        await asyncio.sleep(0)
        winner, ins = await store.put_if_absent(key, f"{tag}-{i}".encode())
        return [key, winner.decode(), ins]

    results = await asyncio.gather(*(one(t, i) for t in ("p1", "p2") for i in range(N)))
    check(list(results))
    await store.close()
