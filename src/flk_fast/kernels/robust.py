"""Robust slopes: exact Theil-Sen for large n, and D̂ (SPEC §4.2) over many PCS."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flk_fast.errors import KernelInputError

from . import _ext
from ._validate import as_int_array, check_finite, threads

__all__ = ["TheilSen", "d_hat_batch", "theil_sen"]

_cy = _ext.load("_robust_cy")

# Interval ends are pushed outwards by this relative amount so that no pair whose real
# slope lies beyond an end can have a floating-point slope (<= 3 ulp from the real
# one) on the other side of the selected value; see _bound_ok.
_PUSH = 2.0**-40
_SLACK = 2.0**-50  # 4 ulp and change: the rounding of fl(fl(dy) / fl(dx))
_TINY = 1e-300  # absolute slack for subnormal slopes


@dataclass(frozen=True, slots=True)
class TheilSen:
    """Theil-Sen estimate: median pairwise ``slope`` and the ``intercept`` reported by
    ``scipy.stats.theilslopes`` with the same method."""

    slope: float
    intercept: float


def _down(t: float) -> float:
    return t - abs(t) * _PUSH - _TINY


def _up(t: float) -> float:
    return t + abs(t) * _PUSH + _TINY


def _bound_ok(v: float, lo: float, hi: float) -> bool:
    # Every pair counted below lo has a computed slope < lo + slack and every pair
    # above hi one > hi - slack; v inside both bounds has the rank the count says.
    return (lo == -math.inf or v >= lo + abs(lo) * _SLACK + _TINY) and (
        hi == math.inf or v <= hi - abs(hi) * _SLACK - _TINY
    )


def _select(prob: Any, n: int, total: int, ranks: list[int]) -> list[float]:
    """Values at 0-based ``ranks`` among the ``total`` floating-point pair slopes."""
    lo, hi = -math.inf, math.inf
    below, k = 0, total
    o1, o2, seq = prob.band(lo, hi)
    cap = max(4 * n, 4096)  # pairs enumerated at the end: O(n) memory
    m = max(2 * n, 4096)  # sample size per shrinking round
    seed = 0x5EED
    stall = 0
    while True:
        if k <= cap or stall >= 3:
            slopes = prob.enumerate_band(o1, seq, k)
            local = [r - below for r in ranks]
            vals = [float(v) for v in np.partition(slopes, local)[local]]
            if all(_bound_ok(v, lo, hi) for v in vals):
                return vals
            # A target sits within rounding of an end: widen that end and retry.
            if not all(
                lo == -math.inf or v >= lo + abs(lo) * _SLACK + _TINY for v in vals
            ):
                lo = lo - abs(lo) * 2.0**-20 - 1e-200
                below = prob.count_below(lo)
            if not all(
                hi == math.inf or v <= hi - abs(hi) * _SLACK - _TINY for v in vals
            ):
                hi = hi + abs(hi) * 2.0**-20 + 1e-200
            o1, o2, seq = prob.band(lo, hi)
            k = prob.count_band(seq)
            continue
        msize = min(m, k)
        sample = np.sort(prob.sample_band(o1, o2, seq, k, msize, seed))
        seed += 1
        fa = (ranks[0] - below) / k
        fb = (ranks[-1] - below + 1) / k
        delta = 3.0 / math.sqrt(msize)
        ia = math.floor((fa - delta) * msize)
        ib = math.ceil((fb + delta) * msize)
        new_lo = _down(float(sample[ia])) if ia >= 0 else lo
        new_hi = _up(float(sample[ib])) if ib < msize else hi
        n_o1, n_o2, n_seq = prob.band(new_lo, new_hi)
        # band's first order is the z(new_lo) order count_below needs: one sort saved.
        new_below = prob.count_below(new_lo, n_o1) if new_lo != lo else below
        if new_below > ranks[0]:  # unlucky sample: keep the old lower end
            new_lo, new_below = lo, below
            n_o1, n_o2, n_seq = prob.band(new_lo, new_hi)
        new_k = prob.count_band(n_seq)
        if new_below + new_k <= ranks[-1]:  # unlucky sample: keep the old upper end
            new_hi = hi
            n_o1, n_o2, n_seq = prob.band(new_lo, new_hi)
            new_k = prob.count_band(n_seq)
        stall = stall + 1 if new_k * 2 > k else 0
        lo, hi, below, k = new_lo, new_hi, new_below, new_k
        o1, o2, seq = n_o1, n_o2, n_seq


def theil_sen(
    x: ArrayLike, y: ArrayLike, *, method: Literal["separate", "joint"] = "separate"
) -> TheilSen:
    """Exact Theil-Sen slope without materialising the n² pairwise slopes.

    The slope is the median (mean of the two middle values for an even count) of
    ``(y_i - y_j) / (x_i - x_j)`` over all pairs with ``x_i > x_j``, computed in float64
    exactly as ``scipy.stats.theilslopes`` does, ties included; the intercept is
    ``median(y) - slope * median(x)`` (``method="separate"``, scipy's default) or
    ``median(y - slope * x)`` (``"joint"``). Expected O(n log n) time and O(n) memory:
    randomised interval shrinking with inversion counting, then selection among the
    O(n) remaining pairs. If Θ(n²) pairs share (nearly) one slope, e.g. collinear
    points, the final step enumerates them: O(n²) time and memory in that case.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Finite values (float64 arithmetic), n >= 2, not all x equal.
    method : {"separate", "joint"}
        Intercept rule, as in scipy.

    Returns
    -------
    TheilSen

    Raises
    ------
    KernelInputError
        Shapes differ, fewer than 2 points, non-finite values, all x equal, values
        so large that differences could overflow (|value| >= 1e300), or a possible
        slope beyond 1e300 (``(max y - min y) / smallest x gap``).

    References
    ----------
    Dillencourt, Mount, Netanyahu (1992), "A randomized algorithm for slope selection".

    Examples
    --------
    >>> theil_sen([0, 1, 2, 3, 4], [1, 3, 5, 7, 100])
    TheilSen(slope=2.0, intercept=1.0)
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise KernelInputError(
            f"x and y must have the same length, got {xa.size} and {ya.size}"
        )
    n = xa.size
    if n < 2:
        raise KernelInputError(f"theil_sen needs at least 2 points, got {n}")
    check_finite(xa, "x")
    check_finite(ya, "y")
    if max(float(np.abs(xa).max()), float(np.abs(ya).max())) >= 1e300:
        raise KernelInputError(
            "theil_sen: |values| must be < 1e300 (differences overflow)"
        )
    if method not in ("separate", "joint"):
        raise KernelInputError(f"method must be 'separate' or 'joint', got {method!r}")
    order = np.argsort(xa, kind="stable")
    xs = np.ascontiguousarray(xa[order])
    ys = np.ascontiguousarray(ya[order])
    _, groups = np.unique(xs, return_counts=True)
    total = n * (n - 1) // 2 - int((groups * (groups - 1) // 2).sum())
    if total == 0:
        raise KernelInputError("theil_sen: all x are equal, no slope is defined")
    # The selection brackets slopes by value, so none may overflow: the steepest
    # possible slope is (max y - min y) / (smallest gap between distinct x).
    ux = np.unique(xs)
    with np.errstate(over="ignore"):
        steepest = (float(ys.max()) - float(ys.min())) / float(np.diff(ux).min())
    if not steepest < 1e300:
        raise KernelInputError(
            "theil_sen: slopes may overflow float64 (x values too close "
            "for the spread of y); rescale x or y"
        )
    ranks = [total // 2] if total % 2 else [total // 2 - 1, total // 2]
    vals = _select(_cy.problem(xs, ys), n, total, ranks)
    slope = vals[0] if len(vals) == 1 else (vals[0] + vals[1]) / 2.0
    with np.errstate(over="ignore", invalid="ignore"):  # scipy's inf/nan, unwarned
        if method == "separate":
            intercept = float(np.median(ya) - slope * np.median(xa))
        else:
            intercept = float(np.median(ya - slope * xa))
    return TheilSen(float(slope), intercept)


def d_hat_batch(
    scales: ArrayLike, n_j: ArrayLike, *, n_threads: int = 0
) -> NDArray[np.float64]:
    """D̂ of SPEC §4.2 for many PCS at once; NaN where a row is invalid.

    Each row gives the same value as :func:`flk_fast.kernels.d_hat` (upper median of
    the pairwise log2 slopes, ``round(., 9)`` with Python's rounding) or NaN where
    that function would raise (a count or scale <= 0, no two distinct scales).

    Parameters
    ----------
    scales : array_like of int, shape (k,) or (m, k)
        Shared scales, or one row of scales per PCS.
    n_j : array_like of int, shape (m, k)
        Box counts, one row per PCS.
    n_threads : int, optional
        0: FLK_FAST_NUM_THREADS, else 2 threads from 65 536 rows, 1 below.

    Returns
    -------
    numpy.ndarray of float64, shape (m,)

    Raises
    ------
    KernelInputError
        A count or scale that is not a finite integer (``12.7``, NaN; integral
        floats pass, as in :func:`~flk_fast.kernels.d_hat`), or shapes that do not
        fit together.

    Examples
    --------
    >>> d_hat_batch([2, 4, 8, 16], [[5, 10, 13, 15], [1, 2, 0, 8]]).tolist()
    [0.528320834, nan]
    """
    nj64 = as_int_array(n_j, "n_j")
    sc = as_int_array(scales, "scales")
    if nj64.ndim != 2:
        raise KernelInputError(f"n_j must be 2-D (m, k), got shape {nj64.shape}")
    if sc.ndim == 1:
        shared = True
        sc64 = np.ascontiguousarray(sc.reshape(1, -1))
    elif sc.ndim == 2:
        shared = False
        sc64 = sc
        if sc64.shape[0] != nj64.shape[0]:
            raise KernelInputError(
                f"scales has {sc64.shape[0]} rows but n_j has {nj64.shape[0]}"
            )
    else:
        raise KernelInputError(f"scales must be 1-D or 2-D, got shape {sc.shape}")
    if sc64.shape[1] != nj64.shape[1]:
        raise KernelInputError(
            f"scales has {sc64.shape[1]} columns but n_j has {nj64.shape[1]}"
        )
    if nj64.shape[0] == 0:
        return np.empty(0)
    if nj64.shape[1] == 0:
        return np.full(nj64.shape[0], np.nan)
    return _cy.d_hat_batch_i64(sc64, nj64, shared, threads(n_threads))
