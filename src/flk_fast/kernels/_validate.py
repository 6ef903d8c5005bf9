"""Input checks shared by the kernel wrappers (kernels never see unchecked input)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["as_points", "as_scales", "threads"]


def threads(n_threads: int) -> int:
    """``n_threads`` if given (> 0), else FLK_FAST_NUM_THREADS, else 0 (the kernel's
    own default: all cores)."""
    from flk_fast import _env

    return n_threads if n_threads > 0 else max(0, _env.NUM_THREADS)


def as_points(
    points: ArrayLike, *, name: str = "points", keep_f32: bool = True
) -> NDArray[np.floating]:
    """Return ``points`` as a finite C-contiguous (n, d) float array, d >= 1."""
    arr = np.asarray(points)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {arr.shape}")
    if arr.dtype == np.float32 and keep_f32:
        out = np.ascontiguousarray(arr)
    elif arr.dtype.kind in "fiub":
        out = np.ascontiguousarray(arr, dtype=np.float64)
    else:
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if out.size and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(
            f"{name} must be finite; row {bad[0]} column {bad[1]} is "
            f"{out[bad[0], bad[1]]}"
        )
    return out


def as_scales(scales: ArrayLike) -> NDArray[np.int64]:
    """Return ``scales`` as a 1-D int64 array of integers >= 1."""
    arr = np.asarray(scales)
    if arr.ndim != 1:
        raise ValueError(f"scales must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if (
            arr.dtype.kind == "f"
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"scales must be integers, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.size and out.min() < 1:
        raise ValueError(f"scales must be >= 1, got {out.min()}")
    return out
