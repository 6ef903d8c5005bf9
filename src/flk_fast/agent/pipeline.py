"""The agent's summarizer: ``agent.summarize`` plus what only the agent knows.

``flk_fast.agent.summarize.make_summarizer`` turns a window (``.points``, ``.rows``)
into a signed PCS, exactly as ``flk build-pcs`` does. This wrapper adds
``ft.degraded``/``ft.fallbacks`` when a slower path is in use, which ``ft`` may carry
after signing because it is outside the signed subset (SPEC §3).

numba is never imported: the kernels used are compiled (Cython), and on a small host
``import numba`` alone costs ~90 MB and half a second (tested in
tests/agent/test_e2e_server.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from flk_fast.protocol.pcs import PCS, FaultTolerance

__all__ = ["make_summarizer"]


def _fallbacks() -> tuple[str, ...]:
    """Which slower paths are in use, for ``ft.fallbacks`` (``ft.degraded`` when any).

    Today the only one is the pure-Python Merkle twin (``FLK_FAST_NO_EXTENSIONS=1``);
    the numeric kernels have no fallback and fail loudly instead.
    """
    from flk_fast.kernels import merkle

    impl = getattr(merkle, "_impl", None)
    if impl is not None and impl.__name__.endswith("_merkle_py"):
        return ("merkle:pure-python",)
    return ()


def make_summarizer(
    *,
    signer: Any,
    scales: Sequence[int] = (2, 4, 8, 16),
    seed: int = 42,
    merkle_scheme: str = "sha256-hexcat",
    chunk_size: int = 64,
    n_threads: int = 1,
) -> Callable[..., PCS]:
    """Build ``summarize(window, *, shard_id, epoch) -> PCS`` (signed).

    ``n_threads`` (default 1) is handed to the box-count and coherence kernels: the
    agent usually shares its host (and the benchmark's 2 cores) with the server and
    others, where a second kernel thread mostly waits for a core; 0 lets the kernels
    use ``FLK_FAST_NUM_THREADS`` or every core. Results are the same either way.

    Raises
    ------
    ConfigError
        The compiled kernels are not built (at start-up, not at the first window).
    """
    from flk_fast.agent.summarize import make_summarizer as base

    found = base(
        signer=signer,
        scales=tuple(scales),
        seed=seed,
        merkle_scheme=merkle_scheme,
        chunk_size=chunk_size,
        n_threads=n_threads,
    )
    fallbacks = _fallbacks()
    if not fallbacks:
        return found
    ft = FaultTolerance(
        outbox_seq=0, degraded=True, fallbacks=fallbacks, clock_skew_ms=0
    )

    def flagged(window: Any, *, shard_id: str, epoch: int) -> PCS:
        pcs = found(window, shard_id=shard_id, epoch=epoch)
        return msgspec.structs.replace(pcs, ft=ft)

    return flagged
