import numpy as np
from numpy.typing import NDArray

def minmax_f64(
    points: NDArray[np.float64], dirs: NDArray[np.float64], nthreads: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
def hist_max_f64(
    points: NDArray[np.float64],
    dirs: NDArray[np.float64],
    edges: NDArray[np.float64],
    skip: NDArray[np.uint8],
    nthreads: int = 0,
) -> NDArray[np.int64]: ...
def project_f64(
    points: NDArray[np.float64], v: NDArray[np.float64]
) -> NDArray[np.float64]: ...
def minmax_cells_f64(
    points: NDArray[np.float64], dirs: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
