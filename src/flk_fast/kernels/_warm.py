"""warm_up(): load and exercise every kernel once, before a server takes traffic."""

from __future__ import annotations

__all__ = ["warm_up"]


def warm_up() -> None:
    """Import every compiled kernel and run each on a tiny input.

    Loading a kernel resolves its shared library and OpenMP runtime; running it
    touches the code pages, so the first real request pays neither. There are no Numba
    kernels at present (the Cython ones measured faster), so nothing is JIT-compiled.

    Raises
    ------
    ImportError
        A compiled module is missing (with the build command).
    """
    import numpy as np

    from .boxcount import box_counts
    from .compress import compressibility
    from .histogram import coherence
    from .merkle import merkle_root
    from .robust import d_hat_batch, theil_sen

    pts = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    box_counts(pts, [2, 4])
    coherence(pts, n_directions=2, n_bins=4, seed=0)
    theil_sen([0.0, 1.0, 2.0], [0.0, 1.0, 3.0])
    d_hat_batch([2, 4, 8], [[3, 5, 9]])
    compressibility(b"warm")
    for scheme in ("sha256-hexcat", "sha256-rfc6962", "blake3-rfc6962"):
        merkle_root(b"warm up", scheme=scheme, chunk_size=4)
