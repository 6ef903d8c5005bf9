import numpy as np
from numpy.typing import NDArray
from typing_extensions import disjoint_base

@disjoint_base
class _Problem:
    xs: NDArray[np.float64]
    ys: NDArray[np.float64]
    def __init__(self, xs: NDArray[np.float64], ys: NDArray[np.float64]) -> None: ...
    def count_below(self, t: float, o1: NDArray[np.int64] | None = None) -> int: ...
    def band(
        self, lo: float, hi: float
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]: ...
    def count_band(self, seq_in: NDArray[np.int64]) -> int: ...
    def enumerate_band(
        self, o1_in: NDArray[np.int64], seq_in: NDArray[np.int64], k: int
    ) -> NDArray[np.float64]: ...
    def sample_band(
        self,
        o1_in: NDArray[np.int64],
        o2_in: NDArray[np.int64],
        seq_in: NDArray[np.int64],
        k: int,
        m: int,
        seed: int,
    ) -> NDArray[np.float64]: ...

def problem(xs: NDArray[np.float64], ys: NDArray[np.float64]) -> _Problem: ...
def d_hat_batch_i64(
    scales: NDArray[np.int64],
    n_j: NDArray[np.int64],
    shared_scales: bool,
    nthreads: int = 0,
) -> NDArray[np.float64]: ...
def round9(x: float) -> float: ...
