"""Box counts N_j of SPEC §4.1: distinct voxels ``floor(P * s)`` per scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flk_fast.errors import KernelInputError

from . import _ext
from ._validate import as_points, as_scales, threads

__all__ = ["box_counts"]

_cy = _ext.load("_boxcount_cy")
_INT64_LIMIT = 2.0**63


def _bitmap_boxes(
    cmin: NDArray[np.floating],
    cmax: NDArray[np.floating],
    scales: NDArray[np.int64],
    n: int,
    dtype: np.dtype[Any],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per scale, the voxel box spanned by the column minima and maxima (floor is
    monotone, so it holds every voxel), computed with the kernel's dtype arithmetic.
    ext[j, 0] = 0 sends scale j to the hash set: its box would need more than
    max(2**22, 64 n) bits, i.e. more memory traffic than hashing."""
    m, d = scales.size, cmin.size
    lo = np.zeros((m, d), dtype=np.int64)
    ext = np.zeros((m, d), dtype=np.int64)
    budget = max(2**22, 64 * n)
    for j, s in enumerate(scales.tolist()):
        # Python int s: float32 columns multiply in float32, like the kernel.
        a = np.floor(cmin.astype(dtype) * dtype.type(s)).astype(np.int64)
        b = np.floor(cmax.astype(dtype) * dtype.type(s)).astype(np.int64)
        sizes = [int(x) for x in (b - a + 1).tolist()]
        cells = 1
        for size in sizes:
            cells *= size
        if cells <= budget:
            lo[j] = a
            ext[j] = sizes
    return lo, ext


def box_counts(
    points: ArrayLike, scales: Sequence[int] | ArrayLike, *, n_threads: int = 0
) -> NDArray[np.int64]:
    """Number of distinct voxels of ``points`` at each scale (SPEC §4.1).

    The voxel of a point at scale ``s`` is ``floor(point * s)`` per coordinate, the
    product rounded in the input dtype (float32 input stays float32, as numpy's
    ``floor(P * s)`` with a Python int ``s`` does; other dtypes become float64).

    Parameters
    ----------
    points : array_like, shape (n, d)
        Finite coordinates, any d >= 1.
    scales : sequence of int
        Scales >= 1 (duplicates allowed).
    n_threads : int, optional
        Threads (one scale each); 0: FLK_FAST_NUM_THREADS, else up to 2.

    Returns
    -------
    numpy.ndarray of int64, shape (len(scales),)
        ``N_j``; all zeros when n == 0.

    Raises
    ------
    KernelInputError
        Not a finite 2-D real array, a scale < 1, or a voxel coordinate that does not
        fit int64 (``max|P| * max(scales) >= 2**63``).

    Examples
    --------
    >>> box_counts([[0.1, 0.2], [0.15, 0.25], [0.9, 0.9]], [2, 4]).tolist()
    [2, 3]
    """
    pts = as_points(points)
    sc = as_scales(scales)
    n, d = pts.shape
    lo = ext = None
    packed = False
    if n and sc.size:
        # One pass in C: numpy's axis-0 reductions over 3 columns are ~10x slower.
        colrange = _cy.colrange_f32 if pts.dtype == np.float32 else _cy.colrange_f64
        cmin, cmax = colrange(pts)
        amax = float(max(np.abs(cmin).max(), np.abs(cmax).max()))
        # A small relative margin covers float32 products rounding up to 2**63.
        if amax * float(sc.max()) * (1.0 + 2.0**-20) >= _INT64_LIMIT:
            raise KernelInputError(
                f"box_counts: voxel coordinates overflow int64 (max |coordinate| "
                f"{amax:g} x scale {int(sc.max())} >= 2**63)"
            )
        # Small voxels (every coordinate within +-2**20, d <= 3) pack into one 64-bit
        # word: a smaller, faster hash table. The margin covers float32 rounding.
        packed = d <= 3 and amax * float(sc.max()) * (1.0 + 2.0**-20) < 2.0**20 - 2
        lo, ext = _bitmap_boxes(cmin, cmax, sc, n, pts.dtype)
    run = _cy.box_counts_f32 if pts.dtype == np.float32 else _cy.box_counts_f64
    return run(pts, sc, threads(n_threads), packed, lo, ext)
