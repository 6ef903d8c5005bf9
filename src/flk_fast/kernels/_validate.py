"""Input checks shared by the kernel wrappers (kernels never see unchecked input).

Every kernel refuses bad input through these, so the rules and the wording are the
same everywhere: ``<name> must be finite; <where> is nan`` and ``<name> must be
integers; <where> is 12.7``, raised as :class:`~flk_fast.errors.KernelInputError`
(both a ``FlkError`` and a ``ValueError``). Integral floats (``12.0``) count as
integers; bools do not.

numpy is imported inside the array checks only: the scalar ones serve
:mod:`flk_fast.kernels.signals`, which stays numpy-free (protocol.verify imports it).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from flk_fast.errors import KernelInputError, KernelTypeError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "as_int_array",
    "as_points",
    "as_scales",
    "byte_pieces",
    "check_finite",
    "finite_float",
    "int_values",
    "threads",
]


def threads(n_threads: int) -> int:
    """``n_threads`` if given (> 0), else FLK_FAST_NUM_THREADS, else 0 (the kernel's
    own default: all cores)."""
    from flk_fast import _env

    return n_threads if n_threads > 0 else _env.NUM_THREADS


Bytes = bytes | bytearray | memoryview


def byte_pieces(
    data: Iterable[Any], name: str, unit: str, hint: str
) -> Iterator[Bytes]:
    """The pieces of a stream of bytes, each checked: KernelTypeError for text, a
    non-iterable or a piece that is not bytes-like (``bytes(3)`` would silently be
    three zero bytes)."""
    if isinstance(data, str):
        raise KernelTypeError(
            f"{name} takes bytes or an iterable of bytes {unit}, not str; {hint}"
        )
    try:
        pieces = iter(data)
    except TypeError:
        raise KernelTypeError(
            f"{name} takes bytes or an iterable of bytes {unit}, not "
            f"{type(data).__name__}"
        ) from None
    for piece in pieces:
        if not isinstance(piece, Bytes):
            raise KernelTypeError(
                f"{name}: every {unit[:-1]} must be bytes-like, got "
                f"{type(piece).__name__}"
                + (" (encode it first)" if isinstance(piece, str) else "")
            )
        yield piece


def _where(index: tuple[int, ...]) -> str:
    if len(index) == 2:
        return f"row {index[0]} column {index[1]}"
    return f"item {index[0]}" if len(index) == 1 else "the value"


def check_finite(arr: NDArray[Any], name: str) -> None:
    """KernelInputError naming the first non-finite item of a float array."""
    import numpy as np

    if arr.size and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise KernelInputError(f"{name} must be finite; {_where(bad)} is {arr[bad]}")


def as_int_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    """``values`` as an int64 array: integer dtypes, or finite integral floats."""
    import numpy as np

    arr = np.asarray(values)
    if arr.size == 0 or arr.dtype.kind in "iu":
        return np.ascontiguousarray(arr, dtype=np.int64)
    if arr.dtype.kind != "f":
        raise KernelInputError(f"{name} must be integers, got dtype {arr.dtype}")
    check_finite(arr, name)
    frac = arr != np.round(arr)
    if frac.any():
        bad = tuple(int(i) for i in np.argwhere(frac)[0])
        raise KernelInputError(f"{name} must be integers; {_where(bad)} is {arr[bad]}")
    if np.abs(arr).max() >= 2.0**63:
        raise KernelInputError(f"{name} must fit int64, got {np.abs(arr).max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _is_number(v: Any) -> bool:
    # numpy's integer and floating scalars register with these ABCs; bools (Python's
    # and numpy's) are refused: True is not a count.
    if isinstance(v, bool) or type(v).__name__ == "bool":  # numpy.bool is "bool" too
        return False
    return isinstance(v, numbers.Real)


def int_values(values: Sequence[Any], name: str) -> list[int]:
    """A short sequence (a PCS's scales or counts) as Python ints, by the rules of
    :func:`as_int_array`, without numpy's per-call cost (D̂ runs once per PCS)."""
    if all(type(v) is int for v in values):  # the common case, kept cheap
        return list(values)
    out = []
    for i, v in enumerate(values):
        if type(v) is int:
            out.append(v)
            continue
        if not _is_number(v):
            raise KernelInputError(
                f"{name} must be integers; item {i} is {v!r} ({type(v).__name__})"
            )
        if isinstance(v, numbers.Integral):
            out.append(int(v))
            continue
        f = float(v)
        if not math.isfinite(f):
            raise KernelInputError(f"{name} must be finite; item {i} is {f}")
        if not f.is_integer():
            raise KernelInputError(f"{name} must be integers; item {i} is {f!r}")
        out.append(int(f))
    return out


def finite_float(value: Any, name: str) -> float:
    """``value`` as a finite float (the scalar inputs of regime and budget)."""
    if not _is_number(value):
        raise KernelInputError(
            f"{name} must be a finite number, got {value!r} ({type(value).__name__})"
        )
    f = float(value)
    if not math.isfinite(f):
        raise KernelInputError(f"{name} must be finite, got {f}")
    return f


def as_points(
    points: ArrayLike, *, name: str = "points", keep_f32: bool = True
) -> NDArray[np.floating]:
    """Return ``points`` as a finite C-contiguous (n, d) float array, d >= 1."""
    import numpy as np

    arr = np.asarray(points)
    if arr.ndim != 2:
        raise KernelInputError(
            f"{name} must be a 2-D (n, d) array, got shape {arr.shape}"
        )
    if arr.shape[1] < 1:
        raise KernelInputError(
            f"{name} must have at least one column, got shape {arr.shape}"
        )
    if arr.dtype == np.float32 and keep_f32:
        out = np.ascontiguousarray(arr)
    elif arr.dtype.kind in "fiub":
        out = np.ascontiguousarray(arr, dtype=np.float64)
    else:
        raise KernelInputError(
            f"{name} must be a real numeric array, got dtype {arr.dtype}"
        )
    check_finite(out, name)
    return out


def as_scales(scales: ArrayLike) -> NDArray[np.int64]:
    """Return ``scales`` as a 1-D int64 array of integers >= 1."""
    import numpy as np

    arr = np.asarray(scales)
    if arr.ndim != 1:
        raise KernelInputError(f"scales must be 1-D, got shape {arr.shape}")
    out = as_int_array(arr, "scales")
    if out.size and out.min() < 1:
        raise KernelInputError(f"scales must be >= 1, got {out.min()}")
    return out
