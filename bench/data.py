"""Data generators shared by benchmarks (and usable by tests): seeded, no flk_fast
imports, so a benchmark's input never depends on the code it measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "canonical_rows",
    "nj_rows",
    "points",
    "random_bytes",
    "vector_doc",
    "xy_regression",
]


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


VECTOR = (
    Path(__file__).resolve().parents[1] / "tests" / "vectors" / "pcs_tiny_case_1.json"
)


def vector_doc() -> dict[str, Any]:
    """The reference PCS of SPEC §8 as a dict (read from the repository's copy)."""
    return json.loads(VECTOR.read_bytes())  # type: ignore[no-any-return]
