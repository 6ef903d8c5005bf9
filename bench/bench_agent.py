"""Agent throughput: a CSV of events → delivered, acknowledged PCS, and peak RSS.

Two pipelines run in the same invocation, each in its own process pinned to one CPU,
against the same real server (``flk serve`` on LMDB, pinned to another CPU when there is
one), each with its own shard id so that neither benefits from the other's dedup:

* ``flk agent``: the CLI end to end (imports, parse, kernels, Merkle, HMAC, fsynced
  LMDB outbox, aiohttp delivery with acks), ``--exit-when-drained``;
* ``plain``: the same pipeline written plainly with the csv module, NumPy, hashlib and
  ``requests`` (no outbox: it does less, so it is a generous baseline).

Events/s counts from process start to exit (imports included). Peak RSS is the child's
``ru_maxrss`` from ``wait4``.

Run: ``python -m bench.bench_agent`` (1 M events, windows of 10 000);
``--size 200000`` for a quick look; ``--json`` for JSON records only.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = b"bench-secret"


# ----------------------------------------------------------------------------- data
def make_csv(path: Path, n: int, seed: int = 7) -> None:
    """``timestamp,x,y,z`` with millisecond timestamps and 4-decimal coordinates."""
    rnd = random.Random(seed)
    t0 = 1_700_000_000.0
    with open(path, "w") as f:
        f.write("timestamp,x,y,z\n")
        buf = []
        for i in range(n):
            buf.append(
                f"{t0 + i * 0.001:.3f},{rnd.random():.4f},{rnd.random():.4f},"
                f"{rnd.random():.4f}\n"
            )
            if len(buf) == 50_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


# ------------------------------------------------------------------ plain pipeline
def _plain_box_counts(p: Any, scales: tuple[int, ...]) -> list[int]:
    import numpy as np

    return [
        int(np.unique(np.floor(p * s).astype(np.int64), axis=0).shape[0])
        for s in scales
    ]


def _plain_coherence(p: Any, seed: int) -> tuple[float, list[float]]:
    import numpy as np

    n, d = p.shape
    rs = np.random.RandomState(seed)
    best, best_v = -1.0, np.zeros(d)
    for _ in range(100):
        v = rs.standard_normal(d)
        v = v / np.linalg.norm(v)
        proj = p @ v
        lo, hi = proj.min(), proj.max()
        if hi - lo < 1e-9:
            c = 1.0
        else:
            c = np.histogram(proj, bins=20, range=(lo, hi))[0].max() / n
        if c > best:
            best, best_v = float(c), v
    return round(best, 9), [float(x) for x in best_v]


def _plain_d_hat(scales: tuple[int, ...], nj: list[int]) -> float:
    import math

    xs = [math.log2(s) for s in scales]
    ys = [math.log2(v) for v in nj]
    slopes = sorted(
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if abs(xs[j] - xs[i]) >= 1e-9
    )
    return round(slopes[len(slopes) // 2], 9)


def _plain_merkle(raw: bytes, chunk: int = 64) -> str:
    level = [
        hashlib.sha256(raw[i : i + chunk]).hexdigest()
        for i in range(0, len(raw), chunk)
    ]
    if not level:
        return "0" * 64
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [
            hashlib.sha256((level[i] + level[i + 1]).encode()).hexdigest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


def plain_summarize(
    rows_text: list[str],
    pts: Any,
    *,
    shard: str,
    epoch: int,
    scales: tuple[int, ...] = (2, 4, 8, 16),
    seed: int = 42,
) -> dict[str, Any]:
    raw = "\n".join(rows_text).encode()
    nj = _plain_box_counts(pts, scales)
    dh = _plain_d_hat(scales, nj)
    coh, v = _plain_coherence(pts, seed)
    r = (
        round(min(1.0, max(0.0, len(zlib.compress(raw, 6)) / len(raw))), 9)
        if raw
        else 1.0
    )
    root = _plain_merkle(raw)
    regime = (
        "sticky"
        if coh >= 0.70 and dh <= 1.5
        else "non_sticky"
        if dh >= 2.6
        else "mixed"
    )
    budget = round(
        min(
            1.0,
            max(0.0, 0.10 + 0.30 * (1 - r) + 0.50 * max(0.0, dh - 2.2) + 0.20 * coh),
        ),
        9,
    )
    pcs_id = hashlib.sha256(f"{root}|{epoch}|{shard}".encode()).hexdigest()
    signed = {
        "pcs_id": pcs_id,
        "merkle_root": root,
        "epoch": epoch,
        "shard_id": shard,
        "D_hat": round(dh, 9),
        "coh_star": round(coh, 9),
        "r": round(r, 9),
        "budget": round(budget, 9),
    }
    payload = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    sig = base64.b64encode(hmac.new(KEY, payload, "sha256").digest()).decode()
    return {
        "pcs_id": pcs_id,
        "schema": "fractal-lba-kakeya",
        "version": "0.1",
        "shard_id": shard,
        "epoch": epoch,
        "attempt": 1,
        "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "scales": list(scales),
        "N_j": {str(s): n for s, n in zip(scales, nj, strict=True)},
        "coh_star": coh,
        "v_star": v,
        "D_hat": dh,
        "r": r,
        "regime": regime,
        "budget": budget,
        "merkle_root": root,
        "sig": sig,
        "ft": {"outbox_seq": 0, "degraded": False, "fallbacks": [], "clock_skew_ms": 0},
    }


def plain_main(path: str, endpoint: str, shard: str, window: int) -> None:
    """The plain pipeline: stream the CSV, one PCS per window, POST with requests."""
    import numpy as np
    import requests

    session = requests.Session()
    url = endpoint.rstrip("/") + "/v1/pcs/submit"
    epoch = 1
    rows: list[str] = []
    pts: list[tuple[float, float, float]] = []
    ok = 0

    def flush() -> None:
        nonlocal epoch, ok, rows, pts
        pcs = plain_summarize(rows, np.asarray(pts), shard=shard, epoch=epoch)
        for attempt in range(6):
            try:
                resp = session.post(
                    url,
                    data=json.dumps(pcs),
                    timeout=10,
                    headers={"Content-Type": "application/json"},
                )
            except requests.RequestException:
                time.sleep(2**attempt)
                continue
            if resp.status_code in (200, 202):
                ok += 1
                break
            if resp.status_code < 500 and resp.status_code != 429:
                raise SystemExit(f"plain: HTTP {resp.status_code}: {resp.text}")
            time.sleep(2**attempt)
        epoch += 1
        rows, pts = [], []

    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for t, x, y, z in reader:
            rows.append(f"{float(t):.9f},{x},{y},{z}")
            pts.append((float(x), float(y), float(z)))
            if len(rows) == window:
                flush()
    if rows:
        flush()
    print(json.dumps({"acked": ok}))


# ---------------------------------------------------------------------------- runs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpu: int | set[int]) -> Any:
    cpus = {cpu} if isinstance(cpu, int) else cpu

    def pre() -> None:
        usable = {c for c in cpus if c < (os.cpu_count() or 1)}
        if hasattr(os, "sched_setaffinity") and usable:
            os.sched_setaffinity(0, usable)

    return pre


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return e


def _run_measured(
    cmd: list[str], cpu: int | set[int]
) -> tuple[float, float, int, int, str, str]:
    """Wall seconds, CPU seconds (user + sys), peak RSS (bytes), exit code, stdout and
    stderr of one pinned child. CPU time is what the pipeline itself consumed; on a
    shared machine wall time also counts the time other processes held the core."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, env=_env(), preexec_fn=_pin(cpu)
        )  # noqa: PLW1509 - pinning only
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss * 1024,
            proc.returncode,
            out.read().decode(),
            err.read().decode(),
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=1_000_000, help="events (1 000 000)")
    ap.add_argument(
        "--window", type=int, default=10_000, help="events per PCS (10 000)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per pipeline (1)")
    ap.add_argument("--json", action="store_true", help="print only JSON records")
    ap.add_argument(
        "--agent-args",
        default="",
        help="extra flk agent arguments, e.g. '--merkle-scheme blake3-rfc6962'",
    )
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument(
        "--two-cores",
        action="store_true",
        help="also run flk agent allowed on CPUs 0 and 1 (its summarising thread then "
        "overlaps parsing; the server shares CPU 1)",
    )
    ap.add_argument(
        "--plain",
        nargs=4,
        metavar=("CSV", "URL", "SHARD", "WINDOW"),
        help=argparse.SUPPRESS,
    )  # the plain pipeline's child process
    args = ap.parse_args()
    if args.plain:
        plain_main(args.plain[0], args.plain[1], args.plain[2], int(args.plain[3]))
        return

    sys.path.insert(0, str(ROOT))
    from bench._report import context

    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="flk-bench-agent-"))
    data = work / f"events_{args.size}.csv"
    say(f"generating {args.size:,} events in {data} ...")
    make_csv(data, args.size)
    key = work / "key"
    key.write_bytes(KEY)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ncpu = os.cpu_count() or 1
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flk_fast",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(work / "srv"),
            "--hmac-key-file",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        preexec_fn=_pin(1 if ncpu > 1 else 0),  # noqa: PLW1509
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready")
            time.sleep(0.1)
        n_windows = -(-args.size // args.window)
        records = []
        for rep in range(args.repeat):

            def agent_cmd(tag: str, rep: int = rep) -> list[str]:
                shard = f"bench-{tag}-{rep}-{time.time_ns()}"
                return [
                    sys.executable, "-m", "flk_fast", "agent", "--endpoint", url,
                    "--in", str(data), "--shard-id", shard,
                    "--window", str(args.window), "--data-dir",
                    str(work / f"{tag}{rep}"), "--hmac-key-file", str(key),
                    "--exit-when-drained", "--progress", "off",
                    "--log-level", "warning", *args.agent_args.split(),
                ]  # fmt: skip

            cases: list[tuple[str, list[str], int | set[int]]] = [
                ("flk agent", agent_cmd("agent"), 0)
            ]
            if args.two_cores:
                cases.append(("flk agent, 2 CPUs", agent_cmd("agent2"), {0, 1}))
            if not args.skip_plain:
                plain = [
                    sys.executable, str(Path(__file__).resolve()), "--plain", str(data),
                    url, f"bench-plain-{rep}-{time.time_ns()}", str(args.window),
                ]  # fmt: skip
                cases.append(("plain numpy+requests", plain, 0))
            for label, cmd, cpus in cases:
                wall, cpu_s, rss, code, out, err = _run_measured(cmd, cpus)
                if code != 0:
                    raise SystemExit(f"{label} failed ({code}):\n{err[-3000:]}")
                if (
                    label == "flk agent"
                    and f"accepted={n_windows}" not in out
                    and (f"sent={n_windows}" not in out or "dead_lettered=0" not in out)
                ):
                    raise SystemExit(f"flk agent did not deliver every window:\n{out}")
                rec = {
                    "label": label,
                    "params": {
                        "events": args.size,
                        "window": args.window,
                        "windows": n_windows,
                        "repeat": rep,
                    },
                    "seconds": round(wall, 3),
                    "events_per_s": round(args.size / wall),
                    "cpu_seconds": round(cpu_s, 3),
                    "events_per_cpu_s": round(args.size / cpu_s),
                    "peak_rss_mb": round(rss / 2**20, 1),
                    "context": context(),
                }
                records.append(rec)
                print(json.dumps(rec))
        if not args.json:
            say("")
            say(
                "| pipeline | events | wall s | events/s (wall) | CPU s | events/CPU-s "
                "| peak RSS |"
            )
            say("|---|---:|---:|---:|---:|---:|---:|")
            for r in records:
                say(
                    f"| {r['label']} | {r['params']['events']:,} "
                    f"| {r['seconds']:.2f} | "
                    f"{r['events_per_s']:,} | {r['cpu_seconds']:.2f} | "
                    f"{r['events_per_cpu_s']:,} | {r['peak_rss_mb']:.0f} MB |"
                )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
