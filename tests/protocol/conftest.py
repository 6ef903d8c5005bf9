from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_BYTES = (VECTORS / "pcs_tiny_case_1.json").read_bytes()
KEY = b"testsecret"
#: The 8 fields a version 0.1 signature covers (SPEC §3).
LEGACY_SIGNED = (
    "pcs_id",
    "merkle_root",
    "epoch",
    "shard_id",
    "D_hat",
    "coh_star",
    "r",
    "budget",
)
#: Hypothesis settings of the protocol properties: reproducible, no deadline.
PROFILE = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture
def vector_doc() -> dict[str, Any]:
    """A fresh, mutable copy of the reference PCS."""
    return json.loads(VECTOR_BYTES)
