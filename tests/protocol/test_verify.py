"""The verification engine, SPEC §6: one case per rule, in order, plus properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk_fast.kernels.signals import budget, regime
from flk_fast.protocol import decode_pcs, verify_pcs
from flk_fast.protocol.verify import VerifyParams

from .conftest import VECTOR_BYTES

BASE: dict[str, Any] = json.loads(VECTOR_BYTES)


def _judge(params: VerifyParams | None = None, **changes: Any) -> Any:
    doc = dict(BASE, **changes)
    pcs = decode_pcs(json.dumps(doc))
    return verify_pcs(pcs, params) if params else verify_pcs(pcs)


def _consistent(d_hat: float, coh: float, r: float) -> dict[str, Any]:
    """Claims whose regime and budget agree with themselves (rules 5-6 stay quiet)."""
    return {
        "D_hat": d_hat,
        "coh_star": coh,
        "r": r,
        "regime": regime(d_hat, coh),
        "budget": budget(d_hat, coh, r),
    }


def test_rule_7_clean_vector() -> None:
    res = _judge()
    assert (res.accepted, res.escalated, res.reason) == (True, False, "")


def test_rule_1_wrong_id_escalates_not_accepted() -> None:
    res = _judge(pcs_id="0" * 64)
    assert (res.accepted, res.escalated) == (False, True)
    assert res.reason == "pcs_id: does not match sha256(merkle_root|epoch|shard_id)"


@pytest.mark.parametrize(
    "changes, reason",
    [
        (
            {"N_j": {"2": 5, "4": 10, "8": 13}},
            "D_hat: cannot be recomputed: N_j: no entry for scale 16",
        ),
        (
            {"N_j": {"2": 0, "4": 10, "8": 13, "16": 15}},
            "D_hat: cannot be recomputed: D_hat: N_j for scale 2 must be > 0, got 0",
        ),
        (
            {"scales": [4]},
            "D_hat: cannot be recomputed: D_hat needs at least 2 scales, got 1",
        ),
    ],
)
def test_rule_2_unrecomputable_d_hat(changes: dict[str, Any], reason: str) -> None:
    res = _judge(**changes)
    assert (res.accepted, res.escalated, res.reason) == (False, True, reason)
    assert res.recomputed_D_hat is None


def test_rule_3_d_hat_beyond_tolerance() -> None:
    res = _judge(**_consistent(0.528320834 + 0.16, 0.066666667, 0.318421053))
    assert (res.accepted, res.escalated) == (False, True)
    assert res.reason.startswith(
        "D_hat: claimed 0.688320834 differs from recomputed 0.528320834"
    )


@pytest.mark.parametrize(
    "coh, r, field",
    [
        (1.06, 0.3, "coh_star"),
        (-0.01, 0.3, "coh_star"),
        (0.5, 1.01, "r"),
        (0.5, -0.2, "r"),
    ],
)
def test_rule_4_bounds(coh: float, r: float, field: str) -> None:
    res = _judge(**_consistent(0.528320834, coh, r))
    assert (res.accepted, res.escalated) == (False, True)
    assert res.reason.startswith(f"{field}: ")


def test_rule_4_coherence_slack_is_inclusive() -> None:
    res = _judge(**_consistent(0.528320834, 1.05, 0.3))
    assert (res.accepted, res.escalated, res.reason) == (True, False, "")


def test_rule_5_regime_mismatch_is_accepted_but_escalated() -> None:
    res = _judge(regime="sticky")
    assert (res.accepted, res.escalated) == (True, True)
    assert res.reason == "regime: claimed sticky, expected mixed"


def test_rule_6_budget_mismatch_is_accepted_but_escalated() -> None:
    res = _judge(budget=0.337807017)
    assert (res.accepted, res.escalated) == (True, True)
    assert res.reason.startswith("budget: claimed 0.337807017, expected 0.317807017")


def test_rules_5_and_6_report_both() -> None:
    res = _judge(regime="non_sticky", budget=0.9)
    assert res.accepted and res.escalated
    assert res.reason.count(";") == 1


def test_tolerances_are_configurable() -> None:
    changes = _consistent(0.528320834 + 0.1, 0.066666667, 0.318421053)
    assert _judge(**changes).accepted
    assert not _judge(VerifyParams(tol_d=0.05), **changes).accepted


def test_result_json_shape() -> None:
    body = json.loads(_judge().to_json())
    assert list(body) == [
        "pcs_id",
        "accepted",
        "escalated",
        "recomputed_D_hat",
        "recomputed_budget",
        "reason",
    ]


@settings(derandomize=True, max_examples=200, deadline=None)
@given(delta=st.floats(-0.3, 0.3))
def test_d_hat_tolerance_boundary(delta: float) -> None:
    claimed = 0.528320834 + delta
    res = _judge(**_consistent(claimed, 0.066666667, 0.318421053))
    assert res.accepted == (abs(claimed - 0.528320834) <= 0.15)
    assert res.escalated == (not res.accepted)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    d=st.floats(0, 4),
    coh=st.floats(0, 1),
    r=st.floats(0, 1),
    regime_claim=st.sampled_from(["sticky", "mixed", "non_sticky"]),
    budget_claim=st.floats(0, 1),
)
def test_engine_matches_plain_rules(
    d: float, coh: float, r: float, regime_claim: str, budget_claim: float
) -> None:
    """With D̂ matching the box counts, rules 5-6 alone decide escalation."""
    scales = [2, 4, 8]
    n_j = {str(s): max(1, round(s**d)) for s in scales}
    from flk_fast.kernels.signals import d_hat

    true_d = d_hat(scales, list(n_j.values()))
    res = _judge(
        scales=scales,
        N_j=n_j,
        D_hat=true_d,
        coh_star=coh,
        r=r,
        regime=regime_claim,
        budget=budget_claim,
    )
    want_escalated = (
        regime_claim != regime(true_d, coh)
        or abs(budget_claim - budget(true_d, coh, r)) > 0.01
    )
    # pcs_id still matches: scales/N_j are not part of the identity
    assert res.accepted
    assert res.escalated == want_escalated
