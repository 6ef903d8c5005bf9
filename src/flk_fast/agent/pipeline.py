"""The built-in summarizer: a window's events → a signed PCS (SPEC §2-5).

This is glue: the signals come from ``flk_fast.kernels`` (box counts, the legacy
coherence sampler, compressibility, Merkle root, D̂, regime, budget) and the signature
from ``flk_fast.protocol.signing``. When ``flk_fast.agent.summarize`` (the kernels
engineers' window → PCS function) is installed it is preferred, so the agent and
``flk build-pcs`` compute PCS the same way.

numba is never imported: the kernels used here are compiled (Cython), and on a small
host ``import numba`` alone costs ~90 MB and half a second (tested in
tests/agent/test_e2e_server.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from flk_fast.errors import ConfigError
from flk_fast.protocol.pcs import PCS, SCHEMA, FaultTolerance, compute_pcs_id

__all__ = ["PCS_VERSION", "make_summarizer"]

PCS_VERSION = "0.1"
_PLACEHOLDER_SENT_AT = "1970-01-01T00:00:00Z"  # replaced at every send (outbox.stamp)


def _from_summarize_module(**kw: Any) -> Callable[..., PCS] | None:
    try:
        mod = importlib.import_module("flk_fast.agent.summarize")
    except ImportError:
        return None
    factory = getattr(mod, "make_summarizer", None)
    if factory is None:
        return None
    return factory(**kw)  # type: ignore[no-any-return]


def _fallbacks() -> tuple[str, ...]:
    """Which slower paths are in use, for ``ft.fallbacks`` (``ft.degraded`` when any).

    Today the only one is the pure-Python Merkle twin (``FLK_FAST_NO_EXTENSIONS=1`` or a
    missing extension); the numeric kernels have no fallback and fail loudly instead.
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
) -> Callable[..., PCS]:
    """Build ``summarize(window, *, shard_id, epoch) -> PCS`` (signed).

    Raises
    ------
    ConfigError
        The kernels are not available (the extension was never built).
    """
    kw = dict(signer=signer, scales=tuple(scales), seed=seed, merkle_scheme=merkle_scheme,
              chunk_size=chunk_size)
    found = _from_summarize_module(**kw)
    if found is not None:
        return found
    try:
        import msgspec

        from flk_fast import kernels

        box_counts = kernels.box_counts
        coherence = kernels.coherence
        compressibility = kernels.compressibility
        merkle_root = kernels.merkle_root
        d_hat, regime, budget = kernels.d_hat, kernels.regime, kernels.budget
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"the signal kernels are not available: {exc}") from None

    scale_t = tuple(int(s) for s in scales)
    keys = [str(s) for s in scale_t]
    ft = FaultTolerance(outbox_seq=0, degraded=False, fallbacks=_fallbacks(),
                        clock_skew_ms=0)
    ft = msgspec.structs.replace(ft, degraded=bool(ft.fallbacks))

    def summarize(window: Any, *, shard_id: str, epoch: int) -> PCS:
        pts = window.points
        n_j = [int(v) for v in box_counts(pts, scale_t)]
        dh = d_hat(scale_t, n_j)
        coh = coherence(pts, seed=seed)
        r = compressibility(window.rows)
        root = merkle_root(window.rows, scheme=merkle_scheme, chunk_size=chunk_size)
        coh_star = float(coh.coh_star)
        pcs = PCS(
            pcs_id=compute_pcs_id(root, epoch, shard_id), schema=SCHEMA,
            version=PCS_VERSION, shard_id=shard_id, epoch=epoch, attempt=1,
            sent_at=_PLACEHOLDER_SENT_AT, seed=seed, scales=scale_t,
            N_j=dict(zip(keys, n_j, strict=True)), coh_star=coh_star,
            v_star=tuple(float(v) for v in coh.v_star), D_hat=dh, r=r,
            regime=regime(dh, coh_star), budget=budget(dh, coh_star, r),
            merkle_root=root, sig="", ft=ft,
        )
        return msgspec.structs.replace(pcs, sig=signer.sign(pcs))

    return summarize
