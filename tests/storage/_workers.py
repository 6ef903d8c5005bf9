"""Child-process workers for the storage tests.

Run as ``python -m tests.storage._workers CMD ...``:

``dedup URL TAG N KEYS START_AT``: N concurrent put_if_absent over KEYS keys, starting
at wall time START_AT so both processes overlap; prints one JSON list of
``[key, winner, inserted]``.

``wal PATH ROUND``: appends forever; after each append RETURNS it prints
``seq round index`` and flushes, so every printed line is a durable promise.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


def payload(round_: int, i: int) -> bytes:
    """Deterministic record body (varying length) so the parent can check it."""
    return (f"r{round_}-i{i}-".encode() * (1 + i % 37))[: 40 + (i * 97) % 3000]


async def dedup(url: str, tag: str, n: int, keys: int, start_at: float) -> None:
    from flk_fast.storage import open_dedup

    store = open_dedup(url, timeout_s=60)
    await store.ping()
    await asyncio.sleep(max(0.0, start_at - time.time()))

    async def one(i: int) -> list[object]:
        key = f"{i % keys:064x}"
        winner, inserted = await store.put_if_absent(key, f"{tag}-{i}".encode())
        return [key, winner.decode(), inserted]

    out = await asyncio.gather(*(one(i) for i in range(n)))
    await store.close()
    print(json.dumps(out))


def wal(path: str, round_: int) -> None:
    from flk_fast.storage.wal_lmdb import LmdbWal

    w = LmdbWal(path, map_size=1 << 16)  # tiny map: kills also land during growth
    i = 0
    while True:
        data = payload(round_, i)
        if i % 5 == 4:
            seqs = w.append_many(
                [data, payload(round_, i + 1)],
                meta={b"checkpoint": str(i + 1).encode()},
            )
            print(f"{seqs[0]} {round_} {i}\n{seqs[1]} {round_} {i + 1}", flush=True)
            i += 2
        else:
            seq = w.append(data)
            print(f"{seq} {round_} {i}", flush=True)
            i += 1


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "dedup":
        asyncio.run(dedup(args[0], args[1], int(args[2]), int(args[3]), float(args[4])))
    elif cmd == "wal":
        wal(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown worker {cmd}")
