"""The verification engine of SPEC §6: judge a well-formed, authentic PCS.

The server trusts nothing the agent claims: it recomputes D̂ from the box counts and
checks bounds, regime and budget. The rules run in the order SPEC §6 lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from flk_fast.kernels.signals import BudgetParams, RegimeParams, budget, d_hat, regime
from flk_fast.protocol.pcs import PCS, compute_pcs_id

__all__ = ["VerifyParams", "VerifyResult", "verify_pcs"]


@dataclass(frozen=True, slots=True)
class VerifyParams:
    """Tolerances and weights of SPEC §6 / §4.5 (defaults are the spec's)."""

    tol_d: float = 0.15
    tol_coh: float = 0.05
    tol_budget: float = 0.01
    budget: BudgetParams = field(default_factory=BudgetParams)
    regime: RegimeParams = field(default_factory=RegimeParams)


class VerifyResult(msgspec.Struct, frozen=True):
    """The verdict, in the field order of SPEC §6's result JSON."""

    pcs_id: str
    accepted: bool
    escalated: bool
    recomputed_D_hat: float | None
    recomputed_budget: float
    reason: str

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)


_ENCODER = msgspec.json.Encoder()
_DEFAULT = VerifyParams()


def verify_pcs(pcs: PCS, params: VerifyParams = _DEFAULT) -> VerifyResult:
    """Judge ``pcs`` by SPEC §6.

    Examples
    --------
    >>> from flk_fast.protocol.codec import decode_pcs
    >>> import json
    >>> doc = {"pcs_id": "0" * 64, "schema": "fractal-lba-kakeya", "version": "0.1",
    ...        "shard_id": "s", "epoch": 0, "attempt": 1, "seed": 0,
    ...        "sent_at": "2025-01-19T12:00:00Z", "scales": [2, 4],
    ...        "N_j": {"2": 4, "4": 16}, "coh_star": 0.1, "v_star": [1.0],
    ...        "D_hat": 2.0, "r": 0.5, "regime": "mixed", "budget": 0.27,
    ...        "merkle_root": "0" * 64, "sig": "", "ft": {"outbox_seq": 0,
    ...        "degraded": False, "fallbacks": [], "clock_skew_ms": 0}}
    >>> verify_pcs(decode_pcs(json.dumps(doc))).reason
    'pcs_id: does not match sha256(merkle_root|epoch|shard_id)'
    """
    claimed_budget = budget(pcs.D_hat, pcs.coh_star, pcs.r, params.budget)
    recomputed: float | None
    try:
        recomputed = d_hat(pcs.scales, [pcs.N_j[str(s)] for s in pcs.scales])
        d_error = ""
    except KeyError as missing:
        recomputed, d_error = None, f"N_j: no entry for scale {missing.args[0]}"
    except ValueError as exc:
        recomputed, d_error = None, str(exc)

    def verdict(accepted: bool, reason: str) -> VerifyResult:
        return VerifyResult(
            pcs_id=pcs.pcs_id,
            accepted=accepted,
            escalated=bool(reason),
            recomputed_D_hat=recomputed,
            recomputed_budget=claimed_budget,
            reason=reason,
        )

    # 1. identity
    if pcs.pcs_id != compute_pcs_id(pcs.merkle_root, pcs.epoch, pcs.shard_id):
        return verdict(
            False, "pcs_id: does not match sha256(merkle_root|epoch|shard_id)"
        )
    # 2-3. D̂ recomputed from the box counts
    if recomputed is None:
        return verdict(False, f"D_hat: cannot be recomputed: {d_error}")
    if abs(pcs.D_hat - recomputed) > params.tol_d:
        return verdict(
            False,
            f"D_hat: claimed {pcs.D_hat!r} differs from recomputed {recomputed!r} "
            f"by more than {params.tol_d!r}",
        )
    # 4. bounds
    if not 0.0 <= pcs.coh_star <= 1.0 + params.tol_coh:
        return verdict(
            False, f"coh_star: {pcs.coh_star!r} outside [0, {1.0 + params.tol_coh!r}]"
        )
    if not 0.0 <= pcs.r <= 1.0:
        return verdict(False, f"r: {pcs.r!r} outside [0, 1]")
    # 5-6. consistency of the claimed classification: accepted, but escalated
    reasons = []
    expected_regime = regime(pcs.D_hat, pcs.coh_star, params.regime)
    if pcs.regime != expected_regime:
        reasons.append(f"regime: claimed {pcs.regime}, expected {expected_regime}")
    if abs(pcs.budget - claimed_budget) > params.tol_budget:
        reasons.append(
            f"budget: claimed {pcs.budget!r}, expected {claimed_budget!r} "
            f"(tolerance {params.tol_budget!r})"
        )
    return verdict(True, "; ".join(reasons))
