"""Scalar signal rules of SPEC §4.2 (single D̂) and §4.5 (regime, budget).

These run once per PCS on a handful of scales, where a call into numpy costs more than
the arithmetic; plain Python floats are both exact and fastest here. The batch form of
D̂ over many PCS lives with the compiled robust kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flk_fast.errors import KernelInputError

from ._validate import finite_float, int_values

__all__ = [
    "REGIMES",
    "BudgetParams",
    "RegimeParams",
    "budget",
    "d_hat",
    "regime",
]

REGIMES = ("sticky", "mixed", "non_sticky")
_MIN_DX = 1e-9  # SPEC §4.2: pairs whose log2-scales differ by less are skipped


@dataclass(frozen=True, slots=True)
class BudgetParams:
    """Weights of SPEC §4.5: ``base + alpha(1-r) + beta·max(0, D̂-d0) + gamma·coh★``."""

    base: float = 0.10
    alpha: float = 0.30
    beta: float = 0.50
    gamma: float = 0.20
    d0: float = 2.2


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """Thresholds of SPEC §4.5."""

    sticky_coh: float = 0.70
    sticky_d: float = 1.5
    non_sticky_d: float = 2.6


_DEFAULT_BUDGET = BudgetParams()
_DEFAULT_REGIME = RegimeParams()


def d_hat(scales: Sequence[int], n_j: Sequence[int]) -> float:
    """Theil-Sen slope of ``log2 N_j`` against ``log2 s`` (SPEC §4.2), to 9 places.

    Parameters
    ----------
    scales : sequence of int
        Box scales, in the order given by the PCS.
    n_j : sequence of int
        Box counts, ``n_j[i]`` belonging to ``scales[i]``.

    Returns
    -------
    float
        The upper median of all pairwise slopes, ``round(., 9)``.

    Raises
    ------
    KernelInputError
        Fewer than 2 scales, lengths differ, a scale or count that is not a finite
        integer (``12.7``, NaN, inf), a count or scale <= 0, or no pair of distinct
        scales.

    Examples
    --------
    >>> d_hat([2, 4, 8, 16], [5, 10, 13, 15])
    0.528320834
    """
    k = len(scales)
    if k < 2:
        raise KernelInputError(f"D_hat needs at least 2 scales, got {k}")
    if len(n_j) != k:
        raise KernelInputError(
            f"D_hat needs one N_j per scale: {k} scales, {len(n_j)} counts"
        )
    xs = []
    ys = []
    for s, n in zip(scales, n_j, strict=True):
        if type(s) is not int or type(n) is not int:  # rare: numpy ints, 12.0, bad
            return d_hat(int_values(scales, "scales"), int_values(n_j, "N_j"))
        if s <= 0:
            raise KernelInputError(f"D_hat: scale must be >= 1, got {s}")
        if n <= 0:
            raise KernelInputError(f"D_hat: N_j for scale {s} must be > 0, got {n}")
        xs.append(math.log2(s))
        ys.append(math.log2(n))
    slopes = []
    for i in range(k):
        xi, yi = xs[i], ys[i]
        for j in range(i + 1, k):
            dx = xs[j] - xi
            if abs(dx) >= _MIN_DX:
                slopes.append((ys[j] - yi) / dx)
    if not slopes:
        raise KernelInputError("D_hat: no two scales differ")
    slopes.sort()
    return round(slopes[len(slopes) // 2], 9)


def regime(
    d_hat: float, coh_star: float, params: RegimeParams = _DEFAULT_REGIME
) -> str:
    """Classify a summary (SPEC §4.5); KernelInputError unless both inputs are finite
    numbers.

    Examples
    --------
    >>> regime(1.2, 0.8), regime(2.7, 0.1), regime(2.0, 0.5)
    ('sticky', 'non_sticky', 'mixed')
    """
    d_hat = finite_float(d_hat, "d_hat")
    coh_star = finite_float(coh_star, "coh_star")
    if coh_star >= params.sticky_coh and d_hat <= params.sticky_d:
        return "sticky"
    if d_hat >= params.non_sticky_d:
        return "non_sticky"
    return "mixed"


def budget(
    d_hat: float, coh_star: float, r: float, params: BudgetParams = _DEFAULT_BUDGET
) -> float:
    """Verification budget of SPEC §4.5, clamped to [0, 1] and rounded to 9 places;
    KernelInputError unless every input is a finite number.

    Examples
    --------
    >>> budget(0.528320834, 0.066666667, 0.318421053)
    0.317807017
    """
    d_hat = finite_float(d_hat, "d_hat")
    coh_star = finite_float(coh_star, "coh_star")
    r = finite_float(r, "r")
    value = (
        params.base
        + params.alpha * (1.0 - r)
        + params.beta * max(0.0, d_hat - params.d0)
        + params.gamma * coh_star
    )
    return round(min(1.0, max(0.0, value)), 9)
