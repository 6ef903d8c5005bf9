"""Box counts N_j of SPEC §4.1: distinct voxels ``floor(P * s)`` per scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _ext
from ._validate import as_points, as_scales, threads

__all__ = ["box_counts"]

_cy = _ext.load("_boxcount_cy")
_INT64_LIMIT = 2.0**63


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
    ValueError
        Not a finite 2-D real array, a scale < 1, or a voxel coordinate that does not
        fit int64 (``max|P| * max(scales) >= 2**63``).

    Examples
    --------
    >>> box_counts([[0.1, 0.2], [0.15, 0.25], [0.9, 0.9]], [2, 4]).tolist()
    [2, 3]
    """
    pts = as_points(points)
    sc = as_scales(scales)
    if pts.shape[0] and sc.size:
        amax = float(np.abs(pts).max())
        # A small relative margin covers float32 products rounding up to 2**63.
        if amax * float(sc.max()) * (1.0 + 2.0**-20) >= _INT64_LIMIT:
            raise ValueError(
                f"box_counts: voxel coordinates overflow int64 (max |coordinate| "
                f"{amax:g} x scale {int(sc.max())} >= 2**63)"
            )
    # Small voxels (every coordinate within +-2**20, d <= 3) pack into one 64-bit
    # word: a smaller, faster table. The margin covers float32 rounding.
    packed = bool(
        pts.shape[1] <= 3
        and pts.shape[0]
        and sc.size
        and float(np.abs(pts).max()) * float(sc.max()) * (1.0 + 2.0**-20) < 2.0**20 - 2
    )
    run = _cy.box_counts_f32 if pts.dtype == np.float32 else _cy.box_counts_f64
    return run(pts, sc, threads(n_threads), packed)
