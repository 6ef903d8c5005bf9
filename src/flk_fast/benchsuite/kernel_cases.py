"""The kernel and protocol microbenchmarks of ``flk bench kernels`` (pytest-benchmark).

Each case is a pair measured in the same run: the kernel and the plain baseline a
user would otherwise write (NumPy, the standard library, scipy). Before timing, each
pair is checked to compute the same answer, so a fast wrong kernel cannot pass.
Not collected by the project's test run (it lives in the package, outside tests/);
``flk bench kernels`` runs it with ``pytest.main``. Problem sizes scale with the
``bench_size`` fixture (``--size``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

KEY = b"flk-bench-kernels"
Pair = tuple[Callable[[], Any], Callable[[], Any], str]


def _box_counts(size: float) -> Pair:
    from flk_fast.kernels import box_counts

    pts = np.random.default_rng(1).random((max(1000, int(200_000 * size)), 3))
    scales = [2, 4, 8, 16, 32]

    def baseline() -> list[int]:
        return [
            len(set(map(tuple, np.floor(pts * s).astype(np.int64).tolist())))
            for s in scales
        ]

    return (
        lambda: box_counts(pts, scales, n_threads=1).tolist(),
        baseline,
        "set of voxel tuples per scale",
    )


def _coherence(size: float) -> Pair:
    from flk_fast.kernels import coherence

    n = max(1000, int(200_000 * size))
    pts = np.random.default_rng(2).random((n, 3))

    def baseline() -> float:
        rs = np.random.RandomState(42)
        best = -1.0
        for _ in range(100):
            v = rs.standard_normal(3)
            p = pts @ (v / np.linalg.norm(v))
            h, _ = np.histogram(p, bins=20)
            best = max(best, h.max() / n)
        return round(best, 9)

    return (
        lambda: coherence(pts, 100, 20, 42, n_threads=1).coh_star,
        baseline,
        "numpy.histogram per direction",
    )


def _xy(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(n)
    return x, 0.7 * x + 0.1 * rng.standard_normal(n)


def _theil_sen(size: float) -> Pair:
    from scipy import stats

    from flk_fast.kernels import theil_sen

    x, y = _xy(max(100, int(3000 * size)))

    def kernel() -> tuple[float, float]:
        r = theil_sen(x, y)
        return r.slope, r.intercept

    def baseline() -> tuple[float, float]:
        r = stats.theilslopes(y, x)
        return r.slope, r.intercept

    return kernel, baseline, "scipy.stats.theilslopes"


def _d_hat_batch(size: float) -> Pair:
    from flk_fast.kernels import d_hat, d_hat_batch

    m = max(1000, int(100_000 * size))
    rng = np.random.default_rng(6)
    growth = np.cumprod(rng.uniform(1.2, 3.0, (m, 4)), axis=1)
    nj = np.maximum(1, (rng.integers(1, 50, (m, 1)) * growth).astype(np.int64))
    rows = nj.tolist()
    scales = [2, 4, 8, 16]
    return (
        lambda: d_hat_batch(scales, nj, n_threads=1).tolist(),
        lambda: [d_hat(scales, r) for r in rows],
        "Python loop over d_hat",
    )


def _merkle(size: float) -> Pair:
    from flk_fast.kernels import merkle_root

    blob = np.random.default_rng(5).bytes(max(2**16, int(16 * 2**20 * size)))
    chunk = 1024

    def baseline() -> str:
        h = hashlib.sha256()
        view = memoryview(blob)
        for i in range(0, len(blob), chunk):
            h.update(view[i : i + chunk])
        return h.hexdigest()

    # Not the same answer (a tree root vs a stream digest): both hash every byte once
    # more or less, which is the cost compared. The check below compares lengths.
    return (
        lambda: len(merkle_root(blob, scheme="sha256-hexcat", chunk_size=chunk)),
        lambda: len(baseline()),
        "hashlib.sha256 streaming, 1 KiB updates",
    )


def _parse_verify(size: float) -> Pair:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as crypto_hmac

    from flk_fast.benchsuite.bodies import BodySource
    from flk_fast.protocol.codec import _validate_plain, decode_pcs
    from flk_fast.protocol.pcs import PCS
    from flk_fast.protocol.signing import HmacSigner, Keyring, full_payload_reference
    from flk_fast.protocol.verify import verify_pcs

    body = BodySource(HmacSigner(KEY)).next()
    ring = Keyring.hmac({"k": KEY})

    def kernel() -> bool:
        pcs = decode_pcs(body)
        ring.verify(pcs)
        return verify_pcs(pcs).accepted

    def baseline() -> bool:
        doc = json.loads(body)
        _validate_plain(doc)
        fields = {**doc, "scales": tuple(doc["scales"]), "v_star": tuple(doc["v_star"])}
        pcs = PCS(**{**fields, "ft": None})
        h = crypto_hmac.HMAC(KEY, hashes.SHA256())
        h.update(full_payload_reference(pcs))
        h.verify(base64.b64decode(doc["sig"]))
        return verify_pcs(pcs).accepted

    return kernel, baseline, "json.loads + plain checks + cryptography HMAC"


#: case name -> builder(size) of (kernel, baseline, baseline description)
CASES: dict[str, Callable[[float], Pair]] = {
    "box_counts": _box_counts,
    "coherence": _coherence,
    "theil_sen": _theil_sen,
    "d_hat_batch": _d_hat_batch,
    "merkle": _merkle,
    "parse_verify": _parse_verify,
}
_built: dict[tuple[str, float], Pair] = {}


def _pair(case: str, size: float) -> Pair:
    key = (case, size)
    if key not in _built:
        kernel, baseline, what = CASES[case](size)
        got, want = kernel(), baseline()
        if got != want:
            raise AssertionError(f"{case}: kernel gave {got!r}, baseline {want!r}")
        _built[key] = (kernel, baseline, what)
    return _built[key]


@pytest.mark.parametrize("role", ["kernel", "baseline"])
@pytest.mark.parametrize("case", list(CASES))
def test_case(benchmark: Any, bench_size: float, case: str, role: str) -> None:
    kernel, baseline, what = _pair(case, bench_size)
    benchmark.group = case
    benchmark.extra_info.update(role=role, baseline=what, size=bench_size)
    fn = kernel if role == "kernel" else baseline
    t0 = time.perf_counter()
    fn()  # warm-up: libraries, caches, thread pools
    if time.perf_counter() - t0 < 0.01:
        benchmark(fn)  # calibrated: many calls per round for fast functions
    else:
        benchmark.pedantic(fn, rounds=3)  # slow baselines: a few rounds suffice
