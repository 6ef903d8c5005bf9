"""The PCS protocol core: record model, codec, canonical signing, verification."""

from __future__ import annotations

from flk_fast.protocol.codec import decode_pcs, encode_pcs, encode_pcs_pretty
from flk_fast.protocol.pcs import PCS, SCHEMA, FaultTolerance, compute_pcs_id
from flk_fast.protocol.signing import (
    Ed25519Signer,
    HmacSigner,
    Keyring,
    canonical_payload,
)
from flk_fast.protocol.verify import VerifyParams, VerifyResult, verify_pcs

__all__ = [
    "PCS",
    "SCHEMA",
    "Ed25519Signer",
    "FaultTolerance",
    "HmacSigner",
    "Keyring",
    "VerifyParams",
    "VerifyResult",
    "canonical_payload",
    "compute_pcs_id",
    "decode_pcs",
    "encode_pcs",
    "encode_pcs_pretty",
    "verify_pcs",
]
