"""Inputs shared by benchmarks: the SPEC §8 reference PCS. (The kernel benchmarks'
seeded inputs live with their baselines in flk_fast.benchsuite.kernel_baselines, which
``flk bench kernels`` uses too.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["VECTOR", "vector_doc"]


VECTOR = (
    Path(__file__).resolve().parents[1] / "tests" / "vectors" / "pcs_tiny_case_1.json"
)


def vector_doc() -> dict[str, Any]:
    """The reference PCS of SPEC §8 as a dict (read from the repository's copy)."""
    return json.loads(VECTOR.read_bytes())  # type: ignore[no-any-return]
