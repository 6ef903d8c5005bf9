"""Kernels vs their obvious NumPy / Python baselines, measured in the same run.

Run: ``python -m bench.bench_kernels [--size 1.0] [--repeat 5] [--json]``.
``--size`` scales every problem (0.1 for a quick check); baselines that take seconds
run ``max(1, repeat // 3)`` times. Prints one JSON record per case (median and best
seconds, throughput, the baseline's median and the speed-up), then a Markdown table.
The machine is shared: quote the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench import data
from bench._report import context


def _times(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # load libraries, warm caches and thread pools outside the timing
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _pair(
    kernel: Callable[[], Any], baseline: Callable[[], Any], rk: int, rb: int
) -> tuple[list[float], list[float]]:
    """Kernel and baseline timed alternately (k, b, k, b, ...), so that load from other
    users of a shared machine hits both alike and the ratio stays meaningful."""
    kernel()
    tk: list[float] = []
    tb: list[float] = []
    for i in range(max(rk, rb)):
        if i < rk:
            t0 = time.perf_counter()
            kernel()
            tk.append(time.perf_counter() - t0)
        if i < rb:
            t0 = time.perf_counter()
            baseline()
            tb.append(time.perf_counter() - t0)
    return tk, tb


ROWS: list[dict[str, Any]] = []


def case(
    label: str,
    params: dict[str, Any],
    kernel: list[float],
    baseline: list[float] | None,
    baseline_name: str,
    *,
    nbytes: int | None = None,
    quiet: bool = False,
    target: str = "",
) -> None:
    med = statistics.median(kernel)
    rec: dict[str, Any] = {
        "label": label,
        "params": params,
        "median_s": med,
        "best_s": min(kernel),
        "repeats": len(kernel),
        "baseline": baseline_name,
    }
    if nbytes:
        rec["gb_per_s"] = nbytes / med / 1e9
    if baseline:
        bmed = statistics.median(baseline)
        rec["baseline_median_s"] = bmed
        rec["baseline_repeats"] = len(baseline)
        rec["speedup"] = bmed / med
        if nbytes:
            rec["baseline_gb_per_s"] = nbytes / bmed / 1e9
    rec["target"] = target
    ROWS.append(rec)
    print(json.dumps(rec), flush=True)


def bench_box_counts(size: float, repeat: int) -> None:
    from flk_fast.kernels import box_counts

    n = int(1_000_000 * size)
    pts = data.points(n, 3, seed=1)
    scales = [2, 4, 8, 16, 32]

    def baseline() -> list[int]:
        # Tuned pure Python: rows to tuples through tolist(), ~3.5x the obvious loop.
        return [
            len(set(map(tuple, np.floor(pts * s).astype(np.int64).tolist())))
            for s in scales
        ]

    def obvious() -> list[int]:
        # The obvious version (the 7.1 s figure): a tuple per numpy row.
        out = []
        for s in scales:
            vox = np.floor(pts * s).astype(np.int64)
            out.append(len({tuple(row) for row in vox}))
        return out

    assert box_counts(pts, scales).tolist() == baseline()
    for threads in (1, 0):
        k, b = _pair(
            lambda t=threads: box_counts(pts, scales, n_threads=t),
            baseline,
            repeat,
            max(1, repeat // 3),
        )
        case(
            "box_counts",
            {"n": n, "d": 3, "scales": scales, "threads": threads or "all"},
            k,
            b,
            "set of tuples via tolist()",
            target=">= 50x",
        )
    k, b = _pair(lambda: box_counts(pts, scales, n_threads=1), obvious, repeat, 1)
    case(
        "box_counts",
        {"n": n, "d": 3, "scales": scales, "threads": 1},
        k,
        b,
        "set of tuples, one per numpy row",
        target=">= 50x",
    )


def bench_coherence(size: float, repeat: int) -> None:
    from flk_fast.kernels import coherence

    n = int(1_000_000 * size)
    pts = data.points(n, 3, seed=2)

    def baseline() -> float:
        rs = np.random.RandomState(42)
        best = -1.0
        for _ in range(100):
            v = rs.standard_normal(3)
            v = v / np.linalg.norm(v)
            p = pts @ v
            if p.max() - p.min() < 1e-9:
                c = 1.0
            else:
                h, _ = np.histogram(p, bins=20)
                c = h.max() / n
            best = max(best, c)
        return round(best, 9)

    assert coherence(pts, 100, 20, 42).coh_star == baseline()
    for threads in (1, 0):
        k, b = _pair(
            lambda t=threads: coherence(pts, 100, 20, 42, n_threads=t),
            baseline,
            repeat,
            repeat,
        )
        case(
            "coherence",
            {
                "n": n,
                "d": 3,
                "directions": 100,
                "bins": 20,
                "threads": threads or "all",
            },
            k,
            b,
            "numpy.histogram per direction",
            target=">= 20x",
        )


def bench_theil_sen(size: float, repeat: int) -> None:
    from scipy import stats

    from flk_fast.kernels import theil_sen

    n = max(100, int(10_000 * size))
    x, y = data.xy_regression(n, seed=3)
    k, b = _pair(
        lambda: theil_sen(x, y),
        lambda: stats.theilslopes(y, x),
        repeat,
        max(1, repeat // 3),
    )
    ref = stats.theilslopes(y, x)
    got = theil_sen(x, y)
    assert (got.slope, got.intercept) == (ref.slope, ref.intercept)
    case("theil_sen", {"n": n}, k, b, "scipy.stats.theilslopes", target=">= 100x")
    for big in (100_000, 1_000_000):
        m = max(1000, int(big * size))
        xb, yb = data.xy_regression(m, seed=4)
        case(
            "theil_sen",
            {"n": m},
            _times(lambda xb=xb, yb=yb: theil_sen(xb, yb), max(1, repeat // 2)),
            None,
            "(scipy needs n^2/2 slopes in memory)",
        )


def bench_merkle(size: float, repeat: int) -> None:
    from flk_fast.kernels import merkle_root

    nbytes = int(64 * 2**20 * size)
    blob = data.random_bytes(nbytes, seed=5)
    chunk = 1024

    def hashlib_stream() -> str:
        h = hashlib.sha256()
        view = memoryview(blob)
        for i in range(0, len(blob), chunk):
            h.update(view[i : i + chunk])
        return h.hexdigest()

    def blake3_stream() -> str:
        import blake3

        h = blake3.blake3()
        view = memoryview(blob)
        for i in range(0, len(blob), chunk):
            h.update(view[i : i + chunk])
        return h.hexdigest()

    for scheme, baseline, bname, target in (
        (
            "sha256-hexcat",
            hashlib_stream,
            "hashlib.sha256 streaming (1 KiB updates)",
            ">= 0.7x hashlib",
        ),
        (
            "sha256-rfc6962",
            hashlib_stream,
            "hashlib.sha256 streaming (1 KiB updates)",
            "",
        ),
        (
            "blake3-rfc6962",
            blake3_stream,
            "blake3 package streaming (1 KiB updates)",
            ">= 1 GB/s",
        ),
    ):
        k, b = _pair(
            lambda s=scheme: merkle_root(blob, scheme=s, chunk_size=chunk),
            baseline,
            repeat,
            repeat,
        )
        case(
            f"merkle {scheme}",
            {"bytes": nbytes, "chunk": chunk},
            k,
            b,
            bname,
            nbytes=nbytes,
            target=target,
        )
    # Two threads for the leaves (opt-in: n_threads / FLK_FAST_NUM_THREADS).
    k = _times(
        lambda: merkle_root(
            blob, scheme="blake3-rfc6962", chunk_size=chunk, n_threads=2
        ),
        repeat,
    )
    case(
        "merkle blake3-rfc6962, 2 threads",
        {"bytes": nbytes, "chunk": chunk},
        k,
        None,
        "",
        nbytes=nbytes,
        target=">= 1 GB/s",
    )
    # The pure twin, for reference (what FLK_FAST_NO_EXTENSIONS=1 gives).
    from flk_fast.kernels import _merkle_py

    small = blob[: nbytes // 8]

    def twin() -> bytes:
        b = _merkle_py.Builder(0, chunk)
        b.update(small)
        return b.finalize()

    case(
        "merkle sha256-hexcat (pure twin)",
        {"bytes": len(small), "chunk": chunk},
        _times(twin, max(1, repeat // 2)),
        None,
        "",
        nbytes=len(small),
    )


def bench_d_hat_batch(size: float, repeat: int) -> None:
    from flk_fast.kernels import d_hat, d_hat_batch

    m = max(1000, int(100_000 * size))
    scales = [2, 4, 8, 16]
    nj = data.nj_rows(m, 4, seed=6)
    rows = nj.tolist()
    assert d_hat_batch(scales, nj).tolist() == [d_hat(scales, r) for r in rows]
    for threads in (1, 2):
        k, b = _pair(
            lambda t=threads: d_hat_batch(scales, nj, n_threads=t),
            lambda: [d_hat(scales, r) for r in rows],
            repeat,
            repeat,
        )
        case(
            "d_hat_batch",
            {"pcs": m, "scales": 4, "threads": threads},
            k,
            b,
            "Python loop over d_hat",
            target=">= 50x",
        )


def bench_compressibility(size: float, repeat: int) -> None:
    import zlib

    from flk_fast.kernels import compressibility

    rows = data.canonical_rows(max(1000, int(500_000 * size)), seed=7)
    raw = b"\n".join(rows)
    k, b = _pair(
        lambda: compressibility(iter(rows)),
        lambda: len(zlib.compress(b"\n".join(rows), 6)),
        repeat,
        repeat,
    )
    case(
        "compressibility (row stream)",
        {"rows": len(rows)},
        k,
        b,
        "join + zlib.compress(6)",
        nbytes=len(raw),
    )


CASES = {
    "box_counts": bench_box_counts,
    "coherence": bench_coherence,
    "theil_sen": bench_theil_sen,
    "merkle": bench_merkle,
    "d_hat_batch": bench_d_hat_batch,
    "compressibility": bench_compressibility,
}


def table() -> str:
    lines = [
        "| kernel | size | flk_fast median | baseline | baseline median | ratio "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        size = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "scales")
        med = f"{r['median_s'] * 1e3:.1f} ms"
        if "gb_per_s" in r:
            med += f" ({r['gb_per_s']:.2f} GB/s)"
        if "baseline_median_s" in r:
            bmed = f"{r['baseline_median_s'] * 1e3:.1f} ms"
            if "baseline_gb_per_s" in r:
                bmed += f" ({r['baseline_gb_per_s']:.2f} GB/s)"
            ratio = f"{r['speedup']:.1f}x"
        else:
            bmed, ratio = "-", "-"
        lines.append(
            f"| {r['label']} | {size} | {med} | {r['baseline'] or '-'} | "
            f"{bmed} | {ratio} | {r['target'] or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=float, default=1.0, help="problem size factor")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per kernel")
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(CASES),
        help="run only these cases (repeatable)",
    )
    ap.add_argument("--json", action="store_true", help="print only the JSON records")
    args = ap.parse_args()
    print(json.dumps({"context": context()}), flush=True)
    for name, fn in CASES.items():
        if args.only and name not in args.only:
            continue
        fn(args.size, args.repeat)
    if not args.json:
        print()
        print(table())


if __name__ == "__main__":
    main()
