"""Kernels vs their obvious NumPy / Python baselines, measured in the same run.

Run: ``python -m bench.bench_kernels [--size 1.0] [--repeat 5] [--json]``.
``--size`` scales every problem (0.1 for a quick check); baselines that take seconds
run ``max(1, repeat // 3)`` times. Prints one JSON record per case (median and best
seconds, throughput, the baseline's median and the speed-up), then a Markdown table.
The machine is shared: quote the ratios, not the absolute times. The inputs, the
baselines and the kernel calls are flk_fast.benchsuite.kernel_baselines' (shared with
``flk bench kernels``); this module picks the sizes, thread counts and timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._report import context
from flk_fast.benchsuite import kernel_baselines as kb


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
    n = int(1_000_000 * size)
    params = {"n": n, "d": 3, "scales": list(kb.BOX_SCALES)}
    for threads in (1, 0):
        kernel, baseline, what = kb.checked(
            kb.box_counts_pair(n, threads=threads), "box_counts"
        )
        k, b = _pair(kernel, baseline, repeat, max(1, repeat // 3))
        case(
            "box_counts",
            {**params, "threads": threads or "all"},
            k,
            b,
            what,
            target=">= 50x",
        )
    kernel, baseline, what = kb.box_counts_pair(n, threads=1, obvious=True)
    k, b = _pair(kernel, baseline, repeat, 1)
    case("box_counts", {**params, "threads": 1}, k, b, what, target=">= 50x")


def bench_coherence(size: float, repeat: int) -> None:
    n = int(1_000_000 * size)
    for threads in (1, 0):
        kernel, baseline, what = kb.checked(
            kb.coherence_pair(n, threads=threads), "coherence"
        )
        k, b = _pair(kernel, baseline, repeat, repeat)
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
            what,
            target=">= 20x",
        )


def bench_theil_sen(size: float, repeat: int) -> None:
    n = max(100, int(10_000 * size))
    kernel, baseline, what = kb.checked(kb.theil_sen_pair(n), "theil_sen")
    k, b = _pair(kernel, baseline, repeat, max(1, repeat // 3))
    case("theil_sen", {"n": n}, k, b, what, target=">= 100x")
    for big in (100_000, 1_000_000):
        m = max(1000, int(big * size))
        kernel, _, _ = kb.theil_sen_pair(m, seed=4)
        case(
            "theil_sen",
            {"n": m},
            _times(kernel, max(1, repeat // 2)),
            None,
            "(scipy needs n^2/2 slopes in memory)",
        )


def bench_merkle(size: float, repeat: int) -> None:
    nbytes = int(64 * 2**20 * size)
    chunk = 1024
    for scheme, target in (
        ("sha256-hexcat", ">= 0.7x hashlib"),
        ("sha256-rfc6962", ""),
        ("blake3-rfc6962", ">= 1 GB/s"),
    ):
        kernel, baseline, what = kb.merkle_pair(nbytes, scheme=scheme, chunk=chunk)
        k, b = _pair(kernel, baseline, repeat, repeat)
        case(
            f"merkle {scheme}",
            {"bytes": nbytes, "chunk": chunk},
            k,
            b,
            what,
            nbytes=nbytes,
            target=target,
        )
    # Two threads for the leaves (opt-in: n_threads / FLK_FAST_NUM_THREADS).
    kernel, _, _ = kb.merkle_pair(
        nbytes, scheme="blake3-rfc6962", chunk=chunk, threads=2
    )
    case(
        "merkle blake3-rfc6962, 2 threads",
        {"bytes": nbytes, "chunk": chunk},
        _times(kernel, repeat),
        None,
        "",
        nbytes=nbytes,
        target=">= 1 GB/s",
    )
    # The pure twin, for reference (what FLK_FAST_NO_EXTENSIONS=1 gives).
    from flk_fast.kernels import _merkle_py

    small = kb.random_bytes(nbytes // 8, seed=5)

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
    m = max(1000, int(100_000 * size))
    for threads in (1, 2):
        kernel, baseline, what = kb.checked(
            kb.d_hat_batch_pair(m, threads=threads), "d_hat_batch"
        )
        k, b = _pair(kernel, baseline, repeat, repeat)
        case(
            "d_hat_batch",
            {"pcs": m, "scales": 4, "threads": threads},
            k,
            b,
            what,
            target=">= 50x",
        )


def bench_compressibility(size: float, repeat: int) -> None:
    n_rows = max(1000, int(500_000 * size))
    kernel, baseline, what = kb.checked(
        kb.compressibility_pair(n_rows), "compressibility"
    )
    nbytes = len(b"\n".join(kb.canonical_rows(n_rows, seed=7)))
    k, b = _pair(kernel, baseline, repeat, repeat)
    case(
        "compressibility (row stream)",
        {"rows": n_rows},
        k,
        b,
        what,
        nbytes=nbytes,
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
