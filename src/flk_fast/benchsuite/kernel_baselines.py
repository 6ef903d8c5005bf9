"""The kernel benchmarks' cases, in one place: seeded inputs, the plain baseline a user
would otherwise write, and the kernel call.

Two commands measure them: ``flk bench kernels`` (:mod:`.kernel_cases`,
pytest-benchmark, ``--save`` / ``--compare``) and ``python -m bench.bench_kernels``
(kernel and baseline interleaved, medians, the repository's fuller study). Both build
their pairs here, so a baseline or an input changes for both at once. A pair is
``(kernel, baseline, what)``: two zero-argument callables and the baseline's
description; :func:`checked` runs both once and refuses a pair whose answers differ,
so that a fast wrong kernel cannot pass. Inputs depend only on their seed, never on
the code measured.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "KEY",
    "Pair",
    "box_counts_pair",
    "canonical_rows",
    "checked",
    "coherence_pair",
    "compressibility_pair",
    "d_hat_batch_pair",
    "merkle_pair",
    "nj_rows",
    "parse_verify_pair",
    "points",
    "random_bytes",
    "theil_sen_pair",
    "xy_regression",
]

KEY = b"flk-bench-kernels"
Pair = tuple[Callable[[], Any], Callable[[], Any], str]


# ---- seeded inputs -------------------------------------------------------------------


def points(n: int, d: int = 3, seed: int = 0) -> np.ndarray:
    """n x d float64 points, uniform in the unit cube (the agent's usual data)."""
    return np.random.default_rng(seed).random((n, d))


def xy_regression(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy line with 5 % gross outliers: what Theil-Sen is for."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = 0.7 * x + 0.1 * rng.standard_normal(n)
    bad = rng.random(n) < 0.05
    y[bad] += 50 * rng.standard_normal(bad.sum())
    return x, y


def canonical_rows(n: int, seed: int = 0) -> list[bytes]:
    """SPEC §4.4 rows of n events with 3-6 decimal coordinates, as CSV writers make."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.random(n) * 0.01)
    xyz = np.round(rng.random((n, 3)), rng.integers(3, 7))
    return [
        f"{ti:.9f},{x},{y},{z}".encode()
        for ti, (x, y, z) in zip(t.tolist(), xyz.tolist(), strict=True)
    ]


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes (hash throughput does not depend on content)."""
    return np.random.default_rng(seed).bytes(size)


def nj_rows(m: int, k: int = 4, seed: int = 0) -> np.ndarray:
    """m rows of k plausible, increasing box counts (one PCS each)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(1, 50, (m, 1))
    growth = np.cumprod(rng.uniform(1.2, 3.0, (m, k)), axis=1)
    return np.maximum(1, (base * growth).astype(np.int64))


# ---- pairs ---------------------------------------------------------------------------


def checked(pair: Pair, name: str) -> Pair:
    """``pair`` after one run of each side; AssertionError when the answers differ."""
    kernel, baseline, _ = pair
    got, want = kernel(), baseline()
    if got != want:
        raise AssertionError(f"{name}: kernel gave {got!r}, baseline {want!r}")
    return pair


BOX_SCALES = (2, 4, 8, 16, 32)


def box_counts_pair(n: int, *, threads: int = 1, obvious: bool = False) -> Pair:
    """box_counts over scales 2..32 vs a set of voxel tuples per scale (tuned: rows
    through ``tolist()``, ~3.5x the obvious loop; ``obvious``: a tuple per numpy row,
    the issue's 7.1 s figure)."""
    from flk_fast.kernels import box_counts

    pts = points(n, 3, seed=1)
    scales = list(BOX_SCALES)

    def tuned() -> list[int]:
        return [
            len(set(map(tuple, np.floor(pts * s).astype(np.int64).tolist())))
            for s in scales
        ]

    def one_per_row() -> list[int]:
        out = []
        for s in scales:
            vox = np.floor(pts * s).astype(np.int64)
            out.append(len({tuple(row) for row in vox}))
        return out

    return (
        lambda: box_counts(pts, scales, n_threads=threads).tolist(),
        one_per_row if obvious else tuned,
        "set of tuples, one per numpy row" if obvious else "set of tuples via tolist()",
    )


def coherence_pair(
    n: int, *, threads: int = 1, n_directions: int = 100, n_bins: int = 20
) -> Pair:
    """coherence vs the SPEC §4.3 loop: numpy.histogram per direction."""
    from flk_fast.kernels import coherence

    pts = points(n, 3, seed=2)

    def baseline() -> float:
        rs = np.random.RandomState(42)
        best = -1.0
        for _ in range(n_directions):
            v = rs.standard_normal(3)
            v = v / np.linalg.norm(v)
            p = pts @ v
            if p.max() - p.min() < 1e-9:
                c = 1.0
            else:
                h, _ = np.histogram(p, bins=n_bins)
                c = h.max() / n
            best = max(best, c)
        return round(best, 9)

    return (
        lambda: coherence(pts, n_directions, n_bins, 42, n_threads=threads).coh_star,
        baseline,
        "numpy.histogram per direction",
    )


def theil_sen_pair(n: int, seed: int = 3) -> Pair:
    """theil_sen vs ``scipy.stats.theilslopes`` (slope and intercept must be equal)."""
    from scipy import stats

    from flk_fast.kernels import theil_sen

    x, y = xy_regression(n, seed=seed)

    def kernel() -> tuple[float, float]:
        r = theil_sen(x, y)
        return r.slope, r.intercept

    def baseline() -> tuple[float, float]:
        r = stats.theilslopes(y, x)
        return float(r.slope), float(r.intercept)

    return kernel, baseline, "scipy.stats.theilslopes"


def d_hat_batch_pair(
    m: int, *, threads: int = 1, scales: Sequence[int] = (2, 4, 8, 16)
) -> Pair:
    """d_hat_batch over m PCS vs a Python loop over d_hat."""
    from flk_fast.kernels import d_hat, d_hat_batch

    sc = list(scales)
    nj = nj_rows(m, len(sc), seed=6)
    rows = nj.tolist()
    return (
        lambda: d_hat_batch(sc, nj, n_threads=threads).tolist(),
        lambda: [d_hat(sc, r) for r in rows],
        "Python loop over d_hat",
    )


def _stream(new: Callable[[], Any], blob: bytes, chunk: int) -> str:
    h = new()
    view = memoryview(blob)
    for i in range(0, len(blob), chunk):
        h.update(view[i : i + chunk])
    return str(h.hexdigest())


def merkle_pair(
    nbytes: int,
    *,
    scheme: str = "sha256-hexcat",
    chunk: int = 1024,
    threads: int | None = None,
) -> Pair:
    """merkle_root vs streaming the same bytes through the scheme's hash in 1 KiB
    updates (hashlib.sha256, or the blake3 package for blake3-rfc6962).

    Not the same answer (a tree root vs a stream digest): both hash every byte once
    more or less, which is the cost compared; both sides return their hex length."""
    from flk_fast.kernels import merkle_root

    blob = random_bytes(nbytes, seed=5)
    if scheme.startswith("blake3"):
        import blake3

        new: Callable[[], Any] = blake3.blake3
        what = "blake3 package streaming (1 KiB updates)"
    else:
        new = hashlib.sha256
        what = "hashlib.sha256 streaming (1 KiB updates)"
    return (
        lambda: len(
            merkle_root(blob, scheme=scheme, chunk_size=chunk, n_threads=threads)
        ),
        lambda: len(_stream(new, blob, chunk)),
        what,
    )


def compressibility_pair(n_rows: int) -> Pair:
    """compressibility over a stream of rows vs join + zlib.compress(6), both giving
    SPEC §4.4's rounded ratio."""
    from flk_fast.kernels import compressibility

    rows = canonical_rows(n_rows, seed=7)

    def baseline() -> float:
        raw = b"\n".join(rows)
        return round(min(1.0, len(zlib.compress(raw, 6)) / len(raw)), 9)

    return (
        lambda: compressibility(iter(rows)),
        baseline,
        "join + zlib.compress(6)",
    )


def plain_pcs(doc: dict[str, Any]) -> Any:
    """The PCS struct from an already checked plain JSON value (no msgspec decode):
    the plain baselines' way to a PCS."""
    from flk_fast.protocol.pcs import PCS

    fields = {**doc, "scales": tuple(doc["scales"]), "v_star": tuple(doc["v_star"])}
    return PCS(**{**fields, "ft": None})


def parse_verify_pair() -> Pair:
    """Decode, HMAC-verify and judge one signed v0.2 PCS vs json.loads, the plain
    checks and the cryptography package's HMAC."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as crypto_hmac

    from flk_fast.benchsuite.bodies import BodySource
    from flk_fast.protocol.codec import _validate_plain, decode_pcs
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
        pcs = plain_pcs(doc)
        h = crypto_hmac.HMAC(KEY, hashes.SHA256())
        h.update(full_payload_reference(pcs))
        h.verify(base64.b64decode(doc["sig"]))
        return verify_pcs(pcs).accepted

    return kernel, baseline, "json.loads + plain checks + cryptography HMAC"
