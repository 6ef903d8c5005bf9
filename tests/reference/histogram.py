"""Oracle of flk_fast.kernels.coherence: the legacy sampler of SPEC §4.3, literally."""

from __future__ import annotations

import numpy as np


def ref_coherence_directions(d: int, n_directions: int, seed: int) -> np.ndarray:
    """One RandomState; ``standard_normal(d)`` per direction, divided by its norm."""
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(n_directions):
        v = rs.standard_normal(d)
        out.append(v / np.linalg.norm(v))
    return np.array(out).reshape(n_directions, d)


def ref_coherence(
    points: np.ndarray, n_directions: int = 100, n_bins: int = 20, seed: int = 0
) -> tuple[float, np.ndarray, list[float]]:
    """(coh_star, v_star, per-direction coherences) with numpy's ``P @ v`` and
    ``numpy.histogram``; the first direction reaching the maximum wins (strictly
    greater replaces)."""
    pts = np.asarray(points, dtype=np.float64)
    dirs = ref_coherence_directions(pts.shape[1], n_directions, seed)
    if pts.shape[0] == 0:
        return 0.0, dirs[0], [0.0] * n_directions
    best, best_v, per = -1.0, dirs[0], []
    for v in dirs:
        p = pts @ v
        if p.max() - p.min() < 1e-9:
            c = 1.0
        else:
            hist, _ = np.histogram(p, bins=n_bins)
            c = float(hist.max() / len(p))
        per.append(c)
        if c > best:
            best, best_v = c, v
    return round(best, 9), best_v, per
