"""Small valid signed PCS for the agent tests, built from the protocol layer only."""

from __future__ import annotations

import msgspec

from flk_fast.protocol.codec import encode_pcs
from flk_fast.protocol.pcs import PCS, SCHEMA, FaultTolerance, compute_pcs_id
from flk_fast.protocol.signing import HmacSigner

KEY = b"testsecret"


def make_pcs(epoch: int, shard: str = "s1", *, key: bytes = KEY) -> PCS:
    root = f"{epoch:064x}"
    pcs = PCS(
        pcs_id=compute_pcs_id(root, epoch, shard),
        schema=SCHEMA,  # type: ignore[arg-type]  # the Literal's only value
        version="0.1",
        shard_id=shard,
        epoch=epoch,
        attempt=1,
        sent_at="2025-01-19T12:00:00Z",
        seed=42,
        scales=(2, 4, 8, 16),
        N_j={"2": 5, "4": 10, "8": 13, "16": 15},
        coh_star=0.066666667,
        v_star=(0.6, -0.167, 0.782),
        D_hat=0.528320834,
        r=0.318421053,
        regime="mixed",
        budget=0.317807017,
        merkle_root=root,
        sig="",
        ft=FaultTolerance(outbox_seq=0, degraded=False, fallbacks=(), clock_skew_ms=0),
    )
    return msgspec.structs.replace(pcs, sig=HmacSigner(key).sign(pcs))


def make_body(epoch: int, shard: str = "s1") -> bytes:
    return encode_pcs(make_pcs(epoch, shard))
