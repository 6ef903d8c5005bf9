"""Load benchmark of ``flk serve`` (full durable pipeline, LMDB WAL + LMDB dedup, HMAC)
next to the ceiling: a bare aiohttp + uvloop endpoint that only reads the body.

Run (as root it installs wrk itself; otherwise ``apt-get install -y wrk`` first)::

    python -m bench.bench_server                      # both servers, all cases
    python -m bench.bench_server --duration 10 --rates 1000,2500 --json out.jsonl

The server under test is pinned to ``--server-core`` and every load generator to
``--load-core`` with ``taskset``. Cases per server: fixed offered rates (an open-loop
Python generator that schedules each request at its due time and measures latency from
that due time, so a stalled server cannot hide queueing: no coordinated omission), then
saturation (wrk, closed loop, ``--connections``). Each request carries a distinct signed
PCS, so the pipeline judges and stores every one (no dedup hits). Then ``resends``:
wrk again at saturation over the bodies that round's saturation case sent, so every
request is a dedup hit (``dedup_hit_share`` in the record, from the server's
metrics), still judged for its signature and logged durably (SPEC §7). Not collected
by pytest (STYLE §8).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY = b"testsecret"
SATURATION_GUESS = 12_000  # req/s the bodies file is sized for at saturation
ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("submit.lua")

# The reference vector's fields (SPEC §8); epoch varies per request, which changes
# pcs_id and the signature but keeps the verdict (200).
BASE: dict[str, Any] = {
    "schema": "fractal-lba-kakeya",
    "version": "0.1",
    "shard_id": "bench-shard",
    "epoch": 0,
    "attempt": 1,
    "sent_at": "2025-01-19T12:00:00Z",
    "seed": 42,
    "scales": [2, 4, 8, 16],
    "N_j": {"2": 5, "4": 10, "8": 13, "16": 15},
    "coh_star": 0.066666667,
    "v_star": [0.6000020458127243, -0.16701530057610703, 0.7823703946303298],
    "D_hat": 0.528320834,
    "r": 0.318421053,
    "regime": "mixed",
    "budget": 0.317807017,
    "merkle_root": "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112",
    "ft": {"outbox_seq": 0, "degraded": False, "fallbacks": [], "clock_skew_ms": 0},
}


# --------------------------------------------------------------------- bodies
def make_bodies(n: int, start: int, path: Path) -> None:
    """``n`` distinct signed PCS, one compact JSON per line."""
    from flk_fast.protocol.codec import decode_pcs
    from flk_fast.protocol.pcs import compute_pcs_id
    from flk_fast.protocol.signing import canonical_payload

    with open(path, "w") as f:
        for i in range(start, start + n):
            doc = dict(BASE, epoch=i)
            doc["pcs_id"] = compute_pcs_id(doc["merkle_root"], i, doc["shard_id"])
            doc["sig"] = ""
            payload = canonical_payload(decode_pcs(json.dumps(doc).encode()))
            doc["sig"] = base64.b64encode(hmac.digest(KEY, payload, "sha256")).decode()
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------- servers
def ceiling_main(port: int) -> None:
    """The ceiling: aiohttp + uvloop, read the body, answer a small JSON."""
    import uvloop
    from aiohttp import web

    body = b'{"accepted":true}'

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, headers={"Content-Type": "application/json"})

    app = web.Application()
    app.router.add_post("/v1/pcs/submit", handle)
    app.router.add_get("/health", lambda r: handle(r))
    uvloop.run(
        web._run_app(
            app,
            host="127.0.0.1",
            port=port,
            access_log=None,
            print=None,
            handle_signals=True,
        )
    )


def floor_main(port: int, data_dir: str) -> None:
    """The design's floor: aiohttp + uvloop and the ledger's LMDB shape with nothing
    else. Each body is put in an inbox database and an outcome keyed by its SHA-256
    (random keys, like pcs_ids) is put first-write-wins, one write transaction and
    one fsync per batch on a writer thread; no judge, no checks, no metrics. What is
    left between ``flk`` and this is the judge and the product's own Python."""
    import hashlib
    import queue
    import threading

    import lmdb
    import uvloop
    from aiohttp import web

    env = lmdb.open(data_dir, map_size=1 << 32, max_dbs=4, sync=True)
    inbox, outcomes = env.open_db(b"inbox"), env.open_db(b"kv")
    jobs: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
    waiting: list[Any] = []  # requests that arrived while a commit was running
    state = {"busy": False, "seq": 0}
    answer = b'{"accepted":true}'

    def write(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            batch = jobs.get()
            with env.begin(write=True) as txn:
                for key, body, _ in batch:
                    state["seq"] += 1
                    txn.put(state["seq"].to_bytes(8, "big"), body, db=inbox)
                    txn.put(key, answer, db=outcomes, overwrite=False)
            loop.call_soon_threadsafe(settle, batch)

    def settle(batch: list[Any]) -> None:
        for *_, fut in batch:
            fut.set_result(None)
        if waiting:
            jobs.put(waiting[:])
            waiting.clear()
        else:
            state["busy"] = False

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        fut = asyncio.get_running_loop().create_future()
        item = (hashlib.sha256(body).digest(), body, fut)
        if state["busy"]:
            waiting.append(item)
        else:
            state["busy"] = True
            jobs.put([item])
        await fut
        return web.Response(body=answer, headers={"Content-Type": "application/json"})

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=write, args=(loop,), daemon=True).start()
        app = web.Application()
        app.router.add_post("/v1/pcs/submit", handle)
        app.router.add_get("/health", lambda r: handle_health())
        await web._run_app(
            app, host="127.0.0.1", port=port, access_log=None, print=None
        )

    async def handle_health() -> web.Response:
        return web.Response(text="OK")

    uvloop.run(serve())


# ---------------------------------------------------------------- ablations
# Where does a request's time go? ``--servers flk-nojudge`` etc. run ``flk serve`` with
# one part of the pipeline replaced by an instant stand-in. Diagnostic only: an
# ablated server is not durable, and its answers are not verdicts.
def _ablate_judge() -> None:
    from flk_fast.server.handlers import IngestService, Verdict

    def assess(self: Any, tenant: str, body: bytes) -> Verdict:
        return Verdict(200, b'{"accepted":true}')  # a final answer: nothing to store

    async def judge(
        self: Any, tenant: str, body: bytes, *_: Any, **__: Any
    ) -> tuple[int, bytes]:
        return 200, b'{"accepted":true}'

    IngestService.assess = assess  # type: ignore[method-assign]
    IngestService.judge = judge  # type: ignore[method-assign]


def _ablate_commit() -> None:
    import asyncio

    from flk_fast.storage.aio import AsyncLedger

    def commit(self: Any, item: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None if item.put is None else (item.put[1], True))
        return fut

    AsyncLedger.commit = commit  # type: ignore[method-assign]


def _ablate_store() -> None:
    from flk_fast.storage.aio import AsyncLmdbDedup

    async def put_if_absent(
        self: Any, key: str | bytes, value: bytes, ttl_s: float = 0.0
    ) -> tuple[bytes, bool]:
        return value, True

    AsyncLmdbDedup.put_if_absent = put_if_absent  # type: ignore[method-assign]


def _ablate_wal() -> None:
    import itertools

    from flk_fast.storage.aio import AsyncWal

    seqs = itertools.count(1)

    async def append(self: Any, data: bytes, meta: Any = None) -> int:
        return next(seqs)

    AsyncWal.append = append  # type: ignore[method-assign]


ABLATIONS = {
    "nojudge": _ablate_judge,  # no decode, signature, engine; inbox record only
    "nocommit": _ablate_commit,  # no ledger commit (no LMDB transaction, no fsync)
    # with --dedup lmdb:// (the separate stores of the older layout) only:
    "nostore": _ablate_store,  # no LMDB dedup write (its commit and fsync)
    "nowal": _ablate_wal,  # no inbox WAL append (its commit and fsync)
}


def ablated_main(name: str, serve_args: list[str]) -> int:
    ABLATIONS[name]()
    from flk_fast.cli import main as flk_main

    return flk_main(serve_args)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def dedup_hits(url: str) -> float | None:
    """``flk_dedup_hits_total`` from a flk server's /metrics (None for the others)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^flk_dedup_hits_total(?:\{[^}]*\})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _pin(core: int, nice: int) -> list[str]:
    """taskset to one core; with ``nice`` < 0 (root) also a higher priority, so that
    other jobs on a shared machine do not preempt the measured processes."""
    prefix = ["taskset", "-c", str(core)]
    return ["nice", "-n", str(nice), *prefix] if nice else prefix


def start_server(
    kind: str, core: int, workdir: Path, nice: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    if kind == "ceiling":
        cmd = [sys.executable, "-m", "bench.bench_server", "--serve-ceiling", str(port)]
        ready = f"http://127.0.0.1:{port}/health"
    elif kind == "floor":
        data = workdir / "data-floor"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        cmd = [
            sys.executable, "-m", "bench.bench_server", "--serve-floor", str(port),
            str(data),
        ]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/health"
    else:
        key = workdir / "hmac.key"
        key.write_bytes(KEY)
        data = workdir / f"data-{kind}"  # its own: the servers all stay up
        shutil.rmtree(data, ignore_errors=True)
        launcher = ["-m", "flk_fast"]
        # flk-lmdb: the older layout (a separate inbox WAL and LMDB dedup store, two
        # commits per request), the baseline of the ledger's one commit per batch
        older = kind in ("flk-lmdb", "flk-nostore", "flk-nowal")
        extra = ["--dedup", f"lmdb://{data}/dedup"] if older else []
        if kind not in ("flk", "flk-lmdb"):
            launcher = [
                "-m",
                "bench.bench_server",
                "--ablate",
                kind.removeprefix("flk-"),
            ]
        cmd = [
            sys.executable,
            *launcher,
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--hmac-key-file",
            str(key),
            "--log-level",
            "warning",
            *extra,
        ]
        ready = f"http://127.0.0.1:{port}/ready"
    # exec chain nice -> taskset -> python keeps one pid: cpu_seconds() reads it
    proc = subprocess.Popen([*_pin(core, nice), *cmd], cwd=ROOT)
    _wait_http(ready)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------- load
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (taskset execs, so this is the server itself);
    threads included. CPU per request is robust to a noisy neighbour on the load
    generator's core, where req/s is not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    bodies: Path,
    core: int,
    duration: float,
    connections: int,
    offset: int,
    nice: int = 0,
) -> dict[str, Any]:
    cmd = [
        *_pin(core, nice),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies),
        str(offset),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"WRKJSON (\{.*\})", out)
    if m is None:
        raise RuntimeError("wrk printed no result:\n" + out)
    r = json.loads(m.group(1))
    return {
        "offered": "saturation",
        "connections": connections,
        "req_per_s": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p95_ms": r["p95_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "requests": r["requests"],
        "non_2xx": r["non_2xx"],
        "errors": r["socket_errors"],
    }


def fixed_rate_main(
    url: str, bodies_path: str, rate: float, duration: float, offset: int
) -> None:
    """Open-loop generator (run pinned, in its own process): prints one JSON line."""
    import aiohttp
    import uvloop

    bodies = Path(bodies_path).read_bytes().splitlines()[offset:]
    n = int(rate * duration)
    if n > len(bodies):
        raise SystemExit(f"need {n} bodies, have {len(bodies)}")

    async def main() -> dict[str, Any]:
        lat: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0
        conn = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=conn) as s:
            headers = {"Content-Type": "application/json"}
            loop = asyncio.get_running_loop()
            clock = time.perf_counter  # uvloop's loop.time() ticks in whole ms

            async def one(body: bytes, due: float) -> None:
                nonlocal errors
                try:
                    async with s.post(
                        url + "/v1/pcs/submit", data=body, headers=headers
                    ) as r:
                        await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                except (aiohttp.ClientError, OSError):
                    errors += 1
                    return
                lat.append(clock() - due)  # from the due time: no coordinated omission

            # warm the connection pool so connects are not in the numbers
            await asyncio.gather(*(one(bodies[-1 - i], clock()) for i in range(32)))
            lat.clear()
            statuses.clear()
            t0 = clock() + 0.05
            tasks = []
            for i in range(n):
                due = t0 + i / rate
                delay = due - clock()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                tasks.append(loop.create_task(one(bodies[i], due)))
            sent_done = clock()
            await asyncio.gather(*tasks)
            elapsed = clock() - t0
        lat.sort()

        def q(p: float) -> float:
            return (
                lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
                if lat
                else float("nan")
            )

        return {
            "offered": rate,
            "req_per_s": len(lat) / elapsed,
            "p50_ms": q(0.50),
            "p95_ms": q(0.95),
            "p99_ms": q(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan"),
            "requests": len(lat),
            "statuses": statuses,
            "errors": errors,
            "send_lag_ms": max(0.0, (sent_done - (t0 + (n - 1) / rate)) * 1000),
        }

    # No collector pauses in the generator: a gen-2 pass over its thousands of tasks
    # would show up as the server's tail latency (the run is short, memory bounded).
    import gc

    gc.freeze()
    gc.disable()
    print("RATEJSON " + json.dumps(uvloop.run(main())), flush=True)


def run_fixed(
    url: str,
    bodies: Path,
    core: int,
    rate: float,
    duration: float,
    offset: int,
    nice: int = 0,
) -> dict[str, Any]:
    cmd = [
        *_pin(core, nice),
        sys.executable,
        "-m",
        "bench.bench_server",
        "--fixed-rate",
        url,
        str(bodies),
        str(rate),
        str(duration),
        str(offset),
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    m = re.search(r"RATEJSON (\{.*\})", out)
    if m is None:
        raise RuntimeError("load generator printed no result:\n" + out)
    return dict(json.loads(m.group(1)))


def run_flk_bench(
    url: str, core: int, rate: float, duration: float, work: Path, nice: int = 0
) -> dict[str, Any]:
    """``--engine flk-bench``: the installed ``flk bench load`` generator instead of
    the one above (it signs its own bodies); its report mapped to this file's record."""
    key, out = work / "bench.key", work / "flk-bench-report"
    key.write_bytes(KEY)
    cmd = [
        *_pin(core, nice), sys.executable, "-m", "flk_fast", "bench", "load", url,
        "--rate", str(rate), "--duration", f"{duration}s", "--hmac-key-file", str(key),
        "--out", str(out), "--no-pictures",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    (r,) = json.loads((out / "report.json").read_text())["rates"]
    lat = r["latency_ms"]
    return {
        "offered": rate,
        "engine": "flk-bench",
        "req_per_s": r["achieved_rate"],
        "p50_ms": lat["p50"],
        "p90_ms": lat["p90"],
        "p95_ms": float("nan"),  # flk bench reports p90 and p99
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "requests": r["requests"],
        "statuses": r["statuses"],
        "errors": sum(r["failures"].values()),
        "send_lag_ms": r["start_lag_p99_ms"],
        "valid": r["valid"],
    }


# --------------------------------------------------------------------- driver
def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk: apt-get install -y wrk", file=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL
        )
        return
    raise SystemExit("wrk is missing: run 'sudo apt-get install -y wrk'")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ablate"]:
        return ablated_main(argv[1], argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per case")
    p.add_argument("--rates", default="1000,2500", help="fixed offered rates, req/s")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each fixed-rate case (tails are noisy on a shared machine)",
    )
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--load-core", type=int, default=1)
    p.add_argument(
        "--servers",
        default="ceiling,flk",
        help="which servers to run: ceiling, floor (aiohttp + the ledger's LMDB "
        "shape, nothing else: the design's floor), flk, flk-lmdb (the older layout: "
        "--dedup lmdb://, two commits per request), and the diagnostic flk-nojudge, "
        "flk-nocommit, and for flk-lmdb flk-nostore, flk-nowal (that part replaced by "
        "an instant stand-in)",
    )
    p.add_argument("--json", help="append the records to this JSON-lines file")
    p.add_argument(
        "--no-resends",
        dest="resends",
        action="store_false",
        help="skip the resends case (wrk over the bodies each saturation run had "
        "acknowledged: every request a dedup hit)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers and load generators at this nice level (e.g. -10 as root on "
        "a shared machine; the same for both servers)",
    )
    p.add_argument(
        "--engine",
        choices=("builtin", "flk-bench"),
        default="builtin",
        help="fixed-rate load generator: this file's (builtin) or the installed "
        "'flk bench load' (flk-bench); saturation is always wrk",
    )
    p.add_argument("--serve-ceiling", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-floor", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--fixed-rate", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_ceiling:
        ceiling_main(args.serve_ceiling)
        return 0
    if args.serve_floor:
        floor_main(int(args.serve_floor[0]), args.serve_floor[1])
        return 0
    if args.fixed_rate:
        url, path, rate, dur, off = args.fixed_rate
        fixed_rate_main(url, path, float(rate), float(dur), int(off))
        return 0

    ensure_wrk()
    kinds = args.servers.split(",")
    for kind in kinds:
        if (
            kind not in ("ceiling", "floor", "flk", "flk-lmdb")
            and kind.removeprefix("flk-") not in ABLATIONS
        ):
            p.error(
                f"unknown server {kind!r}; known: ceiling, floor, flk, flk-lmdb, "
                + ", ".join("flk-" + a for a in ABLATIONS)
            )
    rates = [float(r) for r in args.rates.split(",") if r]
    work = Path(tempfile.mkdtemp(prefix="flk-bench-"))
    # Every case runs --repeat times, and each round runs every server once, one after
    # the other, so a noisy neighbour weighs on all of them alike (all servers stay up;
    # an idle one costs nothing). Saturation is a case like the fixed rates.
    resends = ["resends"] if args.resends else []
    cases: list[float | str | None] = [*rates, None, *resends]

    def need(rate: float | str | None) -> int:
        # fixed rate: exactly rate * duration (+ the warm-up); saturation: room for
        # SATURATION_GUESS req/s (wrk cycles through the file if it outruns it);
        # resends send bodies already sent
        if rate == "resends":
            return 0
        return int((rate or SATURATION_GUESS) * args.duration * 1.1) + 100

    # bodies for every case of one server, never reused within a server's run
    total = args.repeat * sum(need(r) for r in cases)
    bodies = work / "bodies.jsonl"
    t0 = time.perf_counter()
    make_bodies(total, 1, bodies)
    print(f"# {total} signed PCS in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ctx = {
        "nice": args.nice,
        "python": sys.version.split()[0],
        "cores": os.cpu_count(),
        "server_core": args.server_core,
        "load_core": args.load_core,
        "duration_s": args.duration,
    }
    try:
        import aiohttp
        import uvloop

        ctx.update(aiohttp=aiohttp.__version__, uvloop=uvloop.__version__)
    except ImportError:
        pass
    records = []
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    offsets = dict.fromkeys(kinds, 0)
    acked: dict[tuple[str, int], Path] = {}  # (server, round) -> bodies it acknowledged
    try:
        for kind in kinds:
            servers[kind] = start_server(kind, args.server_core, work, args.nice)
        for rate in cases:
            for round_ in range(args.repeat):
                for kind in kinds:
                    proc, url = servers[kind]
                    if rate == "resends":
                        hits0 = dedup_hits(url)
                        r = run_case(url, acked[kind, round_], None, 0, proc.pid, args)
                        hits1 = dedup_hits(url)
                        r["offered"] = "resends"
                        if hits0 is not None and hits1 is not None:
                            r["dedup_hit_share"] = (hits1 - hits0) / max(
                                1, r["requests"]
                            )
                    else:
                        r = run_case(url, bodies, rate, offsets[kind], proc.pid, args)
                    if rate is None and args.resends:
                        acked[kind, round_] = _sent_bodies(
                            bodies, offsets[kind], r, work / f"acked-{kind}-{round_}"
                        )
                    offsets[kind] += need(rate)
                    records.append({"server": kind, "round": round_, **r, **ctx})
                    print(json.dumps(records[-1]), flush=True)
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
    print_report(records)
    return 0


def _sent_bodies(bodies: Path, offset: int, r: dict[str, Any], out: Path) -> Path:
    """The first bodies a saturation run sent, as many as it had answered 2xx, in a
    file of their own (wrk cycles through it: a resend run sends nothing else)."""
    lines = bodies.read_bytes().splitlines()
    n = r["requests"] - r["non_2xx"] - r["errors"]
    sent = [lines[(offset + i) % len(lines)] for i in range(min(n, len(lines)))]
    if not sent:
        raise RuntimeError("the saturation run had no 2xx answer: nothing to resend")
    out.write_bytes(b"\n".join(sent) + b"\n")
    return out


def run_case(
    url: str,
    bodies: Path,
    rate: float | None,
    offset: int,
    pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One measurement: wrk at saturation (``rate`` None) or the open-loop generator."""
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    if rate is None:
        r = run_wrk(
            url,
            bodies,
            args.load_core,
            args.duration,
            args.connections,
            offset,
            args.nice,
        )
    elif args.engine == "flk-bench":
        r = run_flk_bench(
            url, args.load_core, rate, args.duration, bodies.parent, args.nice
        )
    else:
        r = run_fixed(
            url, bodies, args.load_core, rate, args.duration, offset, args.nice
        )
    cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - t0
    r["server_cpu_us_per_req"] = cpu / max(1, r["requests"]) * 1e6
    r["server_cpu_util"] = cpu / wall
    return r


def print_report(records: list[dict[str, Any]]) -> None:
    """The table of every run, then the medians of saturation against the ceiling."""
    print(
        "\n| server | offered | req/s | p50 ms | p95 ms | p99 ms | server CPU "
        "us/req | non-2xx/errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        bad = r.get(
            "non_2xx",
            sum(v for k, v in r.get("statuses", {}).items() if not 200 <= int(k) < 300),
        ) + r.get("errors", 0)
        print(
            f"| {r['server']} | {r['offered']} | {r['req_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['server_cpu_us_per_req']:.0f} | {bad} |"
        )
    for case in ("saturation", "resends"):
        _print_medians(case, records)


def _print_medians(case: str, records: list[dict[str, Any]]) -> None:
    """Medians of ``case`` per server, each against the ceiling's run of the same
    case and round (the ceiling has no dedup: its resends are echoes like the rest)."""
    sat: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["offered"] == case:
            sat.setdefault(r["server"], []).append(r)
    if "ceiling" not in sat:
        return
    ceil = sat["ceiling"]
    print(f"\n{case}, medians over rounds (ratio per round, then its median):")
    for kind, runs in sat.items():
        rps = statistics.median(r["req_per_s"] for r in runs)
        cpu = statistics.median(r["server_cpu_us_per_req"] for r in runs)
        line = f"  {kind:<16} {rps:8.0f} req/s  {cpu:6.0f} us CPU/req"
        if kind != "ceiling":
            by_rps = statistics.median(
                r["req_per_s"] / c["req_per_s"] for r, c in zip(runs, ceil, strict=True)
            )
            by_cpu = statistics.median(
                c["server_cpu_us_per_req"] / r["server_cpu_us_per_req"]
                for r, c in zip(runs, ceil, strict=True)
            )
            line += f"  = {by_rps:.0%} of the ceiling by req/s, {by_cpu:.0%} by CPU"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
