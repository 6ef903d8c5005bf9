"""Schedule-keeping of the ``flk bench load`` generator against the echo endpoint.

Run::

    python -m bench.bench_loadgen                         # 5k, 10k, 15k, 20k req/s
    python -m bench.bench_loadgen --rates 15000 --duration 10 --repeat 3

The echo endpoint (``python -m flk_fast.benchsuite.endpoint --echo``) is pinned to
``--server-core`` and the generator (the real ``flk bench load`` command) to
``--gen-core`` with ``taskset``, so the generator has exactly one core. Per offered
rate it reports the achieved rate, the p99 start lag (how late requests left against
their schedule; > 10 ms marks a run invalid), the generator's CPU share and the
latency percentiles. The target (issue #14): the schedule is kept up to at least
15 000 req/s offered. Medians over ``--repeat`` rounds. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from flk_fast.benchsuite.endpoint import spawn

ROOT = Path(__file__).resolve().parents[1]


def run_generator(
    url: str, rates: list[int], duration: float, core: int, connections: int, tmp: Path
) -> list[dict]:  # type: ignore[type-arg]
    key = tmp / "hmac.key"
    key.write_bytes(b"bench-loadgen")
    out = tmp / "report"
    cmd = [
        "taskset",
        "-c",
        str(core),
        sys.executable,
        "-m",
        "flk_fast",
        "bench",
        "load",
        url,
        "--rate",
        ",".join(map(str, rates)),
        "--duration",
        f"{duration}s",
        "--hmac-key-file",
        str(key),
        "--connections",
        str(connections),
        "--out",
        str(out),
        "--no-pictures",
    ]
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    return list(json.loads((out / "report.json").read_text())["rates"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="5000,10000,15000,20000")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per rate (5)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; medians (1)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--gen-core", type=int, default=0)
    ap.add_argument("--server-core", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write the rows here")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    rounds: list[list[dict]] = []  # type: ignore[type-arg]
    proc, url = spawn(
        "--echo", prefix=["taskset", "-c", str(args.server_core)], cwd=str(ROOT)
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                rounds.append(
                    run_generator(
                        url,
                        rates,
                        args.duration,
                        args.gen_core,
                        args.connections,
                        Path(tmp),
                    )
                )
    finally:
        proc.terminate()
        proc.wait(10)
    rows = []
    for i, rate in enumerate(rates):
        runs = [rnd[i] for rnd in rounds]

        def med(key: str, runs: list[dict] = runs) -> float:  # type: ignore[type-arg]
            return statistics.median(r[key] for r in runs)

        rows.append(
            {
                "offered": rate,
                "achieved": med("achieved_rate"),
                "start_lag_p99_ms": med("start_lag_p99_ms"),
                "generator_cpu": med("generator_cpu"),
                "valid_runs": f"{sum(r['valid'] for r in runs)}/{len(runs)}",
                "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
                "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
                "errors": med("error_ratio"),
            }
        )
    print(
        "| offered req/s | achieved | p99 start lag ms | generator CPU | valid "
        "| p50 ms | p99 ms | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['offered']} | {r['achieved']:.0f} | {r['start_lag_p99_ms']:.2f} | "
            f"{r['generator_cpu']:.0%} | {r['valid_runs']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']:.2%} |"
        )
    if args.json:
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
