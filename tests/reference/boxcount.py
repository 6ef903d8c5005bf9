"""Oracle of flk_fast.kernels.box_counts (SPEC §4.1): a set of voxel tuples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ref_box_counts(points: np.ndarray, scales: Sequence[int]) -> list[int]:
    """Distinct ``floor(points * s)`` rows per scale; ``s`` is a Python int so float32
    points multiply in float32, as the kernel does."""
    out = []
    for s in scales:
        vox = np.floor(points * int(s)).astype(np.int64)
        out.append(len({tuple(row) for row in vox.tolist()}))
    return out
