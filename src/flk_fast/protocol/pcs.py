"""The PCS record (SPEC §1) and its identity (SPEC §2).

The struct's constraints are the wire *shape*; whether the values make sense is judged
by :mod:`flk_fast.protocol.verify`. Field order follows the reference vector so that
encoding a decoded PCS reproduces it.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec

__all__ = [
    "LIMITS",
    "PCS",
    "SCHEMA",
    "FaultTolerance",
    "compute_pcs_id",
]

SCHEMA = "fractal-lba-kakeya"
# \Z, not $: msgspec searches with Python re, where $ also matches before a final "\n".
_HEX64 = r"^[0-9a-f]{64}\Z"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

#: Sizes beyond which a field is "extra-large" and the body malformed. They bound the
#: work one request can cause (D̂ recomputation is quadratic in the number of scales).
LIMITS = {
    "version": 32,  # characters
    "shard_id": 256,  # characters
    "sig": 256,  # characters (an Ed25519 signature is 88)
    "scales": 64,  # entries
    "N_j": 64,  # entries
    "v_star": 1024,  # entries (one per dimension)
    "fallbacks": 64,  # entries, each at most 256 characters
}

Int64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]
Hex64 = Annotated[str, msgspec.Meta(pattern=_HEX64)]
Scale = Annotated[int, msgspec.Meta(ge=1, le=_INT64_MAX)]
DecimalKey = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]{0,18})\Z")]
# RFC 3339 in UTC; the calendar itself is checked after decoding (codec._check_sent_at).
SentAt = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)\Z"
    ),
]


class FaultTolerance(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """The ``ft`` object: how the agent got this PCS out."""

    outbox_seq: Int64
    degraded: bool
    fallbacks: Annotated[
        tuple[Annotated[str, msgspec.Meta(max_length=256)], ...],
        msgspec.Meta(max_length=LIMITS["fallbacks"]),
    ]
    clock_skew_ms: Int64


class PCS(msgspec.Struct, frozen=True):
    """A Proof-of-Computation Summary, as on the wire (SPEC §1)."""

    pcs_id: Hex64
    schema: Literal["fractal-lba-kakeya"]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS["version"])]
    shard_id: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS["shard_id"])]
    epoch: Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]
    attempt: Annotated[int, msgspec.Meta(ge=1, le=_INT64_MAX)]
    sent_at: SentAt
    seed: Int64
    scales: Annotated[
        tuple[Scale, ...], msgspec.Meta(min_length=1, max_length=LIMITS["scales"])
    ]
    N_j: Annotated[dict[DecimalKey, Int64], msgspec.Meta(max_length=LIMITS["N_j"])]
    coh_star: float
    v_star: Annotated[tuple[float, ...], msgspec.Meta(max_length=LIMITS["v_star"])]
    D_hat: float
    r: float
    regime: Literal["sticky", "mixed", "non_sticky"]
    budget: float
    merkle_root: Hex64
    sig: Annotated[str, msgspec.Meta(max_length=LIMITS["sig"])]
    ft: FaultTolerance


def compute_pcs_id(merkle_root: str, epoch: int, shard_id: str) -> str:
    """``hex(sha256(merkle_root|epoch|shard_id))`` — the dedup key (SPEC §2).

    Examples
    --------
    >>> root = "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112"
    >>> compute_pcs_id(root, 1, "test-shard-001")[:16]
    'c50bb25a7aff9416'
    """
    return hashlib.sha256(f"{merkle_root}|{epoch}|{shard_id}".encode()).hexdigest()
