import numpy as np
from numpy.typing import NDArray

def box_counts_f64(
    points: NDArray[np.float64],
    scales: NDArray[np.int64],
    nthreads: int = 0,
    packed: bool = False,
) -> NDArray[np.int64]: ...
def box_counts_f32(
    points: NDArray[np.float32],
    scales: NDArray[np.int64],
    nthreads: int = 0,
    packed: bool = False,
) -> NDArray[np.int64]: ...
