import numpy as np
from numpy.typing import NDArray

def box_counts_f64(
    points: NDArray[np.float64],
    scales: NDArray[np.int64],
    nthreads: int = 0,
    packed: bool = False,
    lo: NDArray[np.int64] | None = None,
    ext: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]: ...
def box_counts_f32(
    points: NDArray[np.float32],
    scales: NDArray[np.int64],
    nthreads: int = 0,
    packed: bool = False,
    lo: NDArray[np.int64] | None = None,
    ext: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]: ...
def colrange_f64(
    points: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def colrange_f32(
    points: NDArray[np.float32],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
