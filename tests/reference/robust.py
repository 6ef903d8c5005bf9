"""Oracles of flk_fast.kernels.theil_sen (brute force over all pairs, as
scipy.stats.theilslopes) and d_hat_batch (a loop over the scalar SPEC §4.2 rule)."""

from __future__ import annotations

import math

import numpy as np


def ref_theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """scipy.stats.theilslopes' slope and 'separate' intercept, materialising every
    pair: slopes (y_i - y_j) / (x_i - x_j) for x_i > x_j, median = mean of the two
    middle values for an even count."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    dx = xa[:, None] - xa
    dy = ya[:, None] - ya
    slopes = np.sort(dy[dx > 0] / dx[dx > 0])
    slope = float(np.median(slopes))
    return slope, float(np.median(ya) - slope * np.median(xa))


def ref_d_hat(scales: list[int], n_j: list[int]) -> float:
    """SPEC §4.2 literally; NaN where the rule has no answer (the batch convention)."""
    if len(scales) < 2 or len(n_j) != len(scales):
        return math.nan
    if any(s <= 0 for s in scales) or any(n <= 0 for n in n_j):
        return math.nan
    pts = [(math.log2(s), math.log2(n)) for s, n in zip(scales, n_j, strict=True)]
    slopes = sorted(
        (pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0])
        for i in range(len(pts))
        for j in range(i + 1, len(pts))
        if abs(pts[j][0] - pts[i][0]) >= 1e-9
    )
    if not slopes:
        return math.nan
    return round(slopes[len(slopes) // 2], 9)


def ref_d_hat_batch(scales: np.ndarray, n_j: np.ndarray) -> np.ndarray:
    sc = np.asarray(scales)
    rows = [
        ref_d_hat((sc if sc.ndim == 1 else sc[i]).tolist(), list(map(int, row)))
        for i, row in enumerate(np.asarray(n_j).tolist())
    ]
    return np.array(rows, dtype=np.float64)
