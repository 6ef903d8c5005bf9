"""A plain, SPEC-literal window → signed PCS (NumPy + hashlib + zlib).

Used by the agent tests as an injectable summarizer so that the delivery machinery is
tested independently of the compiled kernels, and as an oracle for them. The signals
come from the kernels' plain oracles in tests/reference (SPEC §4.1, §4.3, §4.4, §5).
"""

from __future__ import annotations

import msgspec
import numpy as np

from flk_fast.kernels.signals import budget, d_hat, regime
from flk_fast.protocol.pcs import PCS, SCHEMA, FaultTolerance, compute_pcs_id
from flk_fast.protocol.signing import HmacSigner
from tests.reference.boxcount import ref_box_counts
from tests.reference.compress import ref_compressibility
from tests.reference.histogram import ref_coherence
from tests.reference.merkle import ref_merkle_root

SCALES = (2, 4, 8, 16)


def summarize(
    points: np.ndarray,
    rows: bytes,
    *,
    shard_id: str,
    epoch: int,
    key: bytes = b"testsecret",
    seed: int = 42,
    version: str = "0.2",
) -> PCS:
    nj = ref_box_counts(points, SCALES)
    dh = d_hat(SCALES, nj)
    coh, v, _ = ref_coherence(points, seed=seed)
    r = ref_compressibility([rows])
    root = ref_merkle_root(rows)
    pcs = PCS(
        pcs_id=compute_pcs_id(root, epoch, shard_id),
        schema=SCHEMA,  # type: ignore[arg-type]  # the Literal's only value
        version=version,
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
