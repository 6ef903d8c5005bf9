"""A plain, SPEC-literal window → signed PCS (NumPy + hashlib + zlib).

Used by the agent tests as an injectable summarizer so that the delivery machinery is
tested independently of the compiled kernels, and as an oracle for them. Mirrors
SPEC §4.1 (box counts), §4.3 (legacy coherence sampler), §4.4 (r), §5 (legacy Merkle).
"""

from __future__ import annotations

import hashlib
import zlib

import msgspec
import numpy as np

from flk_fast.kernels.signals import budget, d_hat, regime
from flk_fast.protocol.pcs import PCS, SCHEMA, FaultTolerance, compute_pcs_id
from flk_fast.protocol.signing import HmacSigner

SCALES = (2, 4, 8, 16)


def box_counts(p: np.ndarray, scales: tuple[int, ...] = SCALES) -> list[int]:
    return [
        len({tuple(v) for v in np.floor(p * s).astype(np.int64).tolist()})
        for s in scales
    ]


def coherence(p: np.ndarray, seed: int, n_dir: int = 100, n_bins: int = 20):  # type: ignore[no-untyped-def]
    n, d = p.shape
    rs = np.random.RandomState(seed)
    best, best_v = -1.0, np.zeros(d)
    if n == 0:
        return 0.0, best_v
    for _ in range(n_dir):
        v = np.asarray(rs.standard_normal(d), dtype=np.float64)
        v = v / np.linalg.norm(v)
        proj = p @ v
        if proj.max() - proj.min() < 1e-9:
            c = 1.0
        else:
            h, _ = np.histogram(proj, bins=n_bins, range=(proj.min(), proj.max()))
            c = float(h.max() / n)
        if c > best:
            best, best_v = c, v
    return round(float(best), 9), best_v


def compressibility(raw: bytes) -> float:
    if not raw:
        return 1.0
    return round(min(1.0, max(0.0, len(zlib.compress(raw, 6)) / len(raw))), 9)


def merkle_hexcat(raw: bytes, chunk: int = 64) -> str:
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


def summarize(
    points: np.ndarray,
    rows: bytes,
    *,
    shard_id: str,
    epoch: int,
    key: bytes = b"testsecret",
    seed: int = 42,
) -> PCS:
    nj = box_counts(points)
    dh = d_hat(SCALES, nj)
    coh, v = coherence(points, seed)
    r = compressibility(rows)
    root = merkle_hexcat(rows)
    pcs = PCS(
        pcs_id=compute_pcs_id(root, epoch, shard_id),
        schema=SCHEMA,  # type: ignore[arg-type]  # the Literal's only value
        version="0.1",
        shard_id=shard_id,
        epoch=epoch,
        attempt=1,
        sent_at="2025-01-19T12:00:00Z",
        seed=seed,
        scales=SCALES,
        N_j={str(s): n for s, n in zip(SCALES, nj, strict=True)},
        coh_star=coh,
        v_star=tuple(float(x) for x in v),
        D_hat=dh,
        r=r,
        regime=regime(dh, coh),  # type: ignore[arg-type]
        budget=budget(dh, coh, r),
        merkle_root=root,
        sig="",
        ft=FaultTolerance(outbox_seq=0, degraded=False, fallbacks=(), clock_skew_ms=0),
    )
    return msgspec.structs.replace(pcs, sig=HmacSigner(key).sign(pcs))


def factory(args):  # type: ignore[no-untyped-def]
    """``flk agent --summarizer tests.agent.plainsum:factory``: the plain summarizer
    keyed like the CLI says, so subprocess tests don't depend on the kernels build."""
    from flk_fast.protocol.signing import load_hmac_key

    key = load_hmac_key(path=args.hmac_key_file)

    def run(w, *, shard_id: str, epoch: int) -> PCS:  # type: ignore[no-untyped-def]
        return summarize(
            w.points, w.rows, shard_id=shard_id, epoch=epoch, key=key, seed=args.seed
        )

    return run
