"""Directional coherence coh★ / v★ with the legacy sampler of SPEC §4.3."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flk_fast.errors import KernelInputError

from . import _ext
from ._validate import as_points, int_values, threads

__all__ = ["Coherence", "coherence", "coherence_directions"]

_cy = _ext.load("_hist_cy")
_DEGENERATE = 1e-9  # SPEC §4.3: a projection range below this has coherence 1.0
# From this many points the min/max pass groups the rows by grid cell (int32 row
# numbers, no copy) and projects only the cells on each direction's supporting planes
# (see _flk_coh.h); below it the plain pass is as fast.
_CELL_MINMAX_MIN = 1 << 15


@dataclass(frozen=True, slots=True, eq=False)
class Coherence:
    """Result of :func:`coherence`: ``coh_star`` (rounded to 9 places) and the first
    direction ``v_star`` that reached it. (No ``==``: an array field has no truth
    value; compare the fields.)"""

    coh_star: float
    v_star: NDArray[np.float64]


def coherence_directions(d: int, n_directions: int, seed: int) -> NDArray[np.float64]:
    """Unit directions of the legacy sampler: successive ``standard_normal(d)`` draws of
    one ``numpy.random.RandomState(seed)``, each divided by ``numpy.linalg.norm``.

    One (m, d) draw is the same stream as m draws of d (the legacy Gaussian cache
    carries over between calls); normalising row by row keeps ``norm``'s exact
    arithmetic (a dot product), which a vectorised axis norm would not.
    """
    rs = np.random.RandomState(seed)
    raw = rs.standard_normal((n_directions, d))
    out = np.empty_like(raw)
    for j in range(n_directions):
        row = raw[j]
        out[j] = row / np.linalg.norm(row)
    return out


def coherence(
    points: ArrayLike,
    n_directions: int = 100,
    n_bins: int = 20,
    seed: int = 0,
    *,
    n_threads: int = 0,
) -> Coherence:
    """Directional coherence of SPEC §4.3, bit-compatible with the numpy loop.

    For each direction v: p = P @ v; coherence is 1.0 if ``max(p) - min(p) < 1e-9``,
    else the largest count of ``numpy.histogram(p, n_bins)`` divided by n. The
    projection, min/max and binning are fused (no n x n_directions matrix) and use
    up to ``n_threads`` threads (0: FLK_FAST_NUM_THREADS, else all cores). Points are
    computed in float64, as numpy promotes ``P @ v``.

    Parameters
    ----------
    points : array_like, shape (n, d)
        Finite coordinates.
    n_directions, n_bins : int
        At least 1 each.
    seed : int
        Seed of the direction sampler.

    Returns
    -------
    Coherence
        ``coh_star = round(max coherence, 9)`` and ``v_star``, the first direction
        reaching it. Empty input (n == 0) gives ``coh_star = 0.0`` and, as
        ``v_star``, the first direction drawn: a deliberate departure from the
        original implementation's zero vector, so that ``v_star`` is a unit vector
        for every input (no PCS has an empty window; see docs/kernels.md).

    Raises
    ------
    KernelInputError
        Not a finite 2-D array, n_directions or n_bins not an integer >= 1, or
        projections that overflow.

    Examples
    --------
    >>> c = coherence([[0.1, 0.2, 0.3], [0.15, 0.25, 0.35], [0.9, 0.1, 0.5]], seed=42)
    >>> c.coh_star
    0.666666667
    """
    pts = as_points(points, keep_f32=False)
    n_directions, n_bins, seed = int_values(
        (n_directions, n_bins, seed), "n_directions, n_bins and seed"
    )
    if n_directions < 1 or n_bins < 1:
        raise KernelInputError(
            f"n_directions and n_bins must be >= 1, got {n_directions}, {n_bins}"
        )
    n, d = pts.shape
    dirs = coherence_directions(d, n_directions, seed)
    if n == 0:
        return Coherence(0.0, dirs[0].copy())
    n_threads = threads(n_threads)
    if _CELL_MINMAX_MIN <= n < 2**31:
        mins, maxs = _cy.minmax_cells_f64(pts, dirs)
    else:
        mins, maxs = _cy.minmax_f64(pts, dirs, n_threads)
    with np.errstate(over="ignore"):
        spread = maxs - mins
    if not np.isfinite(spread).all():  # a projection or the range overflowed
        raise KernelInputError(
            "coherence: projections overflow float64; scale the points"
        )
    skip = spread < _DEGENERATE
    edges = np.zeros((n_directions, n_bins + 1))
    live = ~skip
    if live.any():
        # Exactly numpy.histogram's edges for range (min, max): linspace over arrays is
        # the same arithmetic per element as one call per direction, as long as no
        # step is 0, which a live direction's (spread >= 1e-9) cannot be.
        edges[live] = np.linspace(mins[live], maxs[live], n_bins + 1, axis=1)
    best = _cy.hist_max_f64(pts, dirs, edges, skip.view(np.uint8), n_threads)
    coh = np.where(skip, 1.0, best / n)
    j = int(np.argmax(coh))  # first direction reaching the maximum
    return Coherence(round(float(coh[j]), 9), dirs[j].copy())
