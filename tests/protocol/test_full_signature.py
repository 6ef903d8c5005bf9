"""SPEC §3.1 (version 0.2 signs every judged field) and the §3.2 content digest."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flk_fast.errors import SignatureError
from flk_fast.protocol import Keyring, decode_pcs
from flk_fast.protocol.signing import (
    HmacSigner,
    canonical_payload,
    content_digest,
    full_payload,
    full_payload_reference,
    legacy_payload,
)

from .conftest import KEY, LEGACY_SIGNED, PROFILE, VECTOR_BYTES

BASE: dict[str, Any] = json.loads(VECTOR_BYTES)
RING = Keyring.hmac({"test": KEY})

#: The fields a resend may change: outside every payload (SPEC §3.1).
RESEND_FIELDS = ("sig", "attempt", "sent_at", "ft")
#: Every other field of SPEC §1: signed by 0.2 and part of the content digest.
FULL_FIELDS = tuple(k for k in BASE if k not in RESEND_FIELDS)

#: One shape-valid change per field of §1.
CHANGES: dict[str, Any] = {
    "pcs_id": "f" * 64,
    "schema": None,  # a Literal: no other valid value exists
    "version": "0.9",
    "shard_id": "another-shard",
    "epoch": 2,
    "attempt": 7,
    "sent_at": "2026-01-01T00:00:00Z",
    "seed": 43,
    "scales": [2, 4, 8],
    "N_j": {"2": 6, "4": 10, "8": 13, "16": 16},
    "coh_star": 0.5,
    "v_star": [1.0, 0.0, 0.0],
    "D_hat": 1.9,
    "r": 0.25,
    "regime": "sticky",
    "budget": 0.5,
    "merkle_root": "a" * 64,
    "sig": "AAAA",
    "ft": {"outbox_seq": 9, "degraded": True, "fallbacks": ["x"], "clock_skew_ms": 5},
}


def _signed(version: str) -> dict[str, Any]:
    pcs = msgspec.structs.replace(decode_pcs(VECTOR_BYTES), version=version)
    pcs = msgspec.structs.replace(pcs, sig=HmacSigner(KEY).sign(pcs))
    return json.loads(msgspec.json.encode(pcs))


def _verifies(doc: dict[str, Any]) -> bool:
    try:
        RING.verify(decode_pcs(json.dumps(doc)))
    except SignatureError:
        return False
    return True


def test_every_field_of_spec_1_has_a_change() -> None:
    assert set(CHANGES) == set(BASE)


@pytest.mark.parametrize("field", [f for f in CHANGES if f not in ("schema", "sig")])
def test_version_02_signs_every_field_but_the_resend_ones(field: str) -> None:
    doc = _signed("0.2")
    assert _verifies(doc)
    doc[field] = CHANGES[field]
    assert _verifies(doc) is (field in RESEND_FIELDS)


@pytest.mark.parametrize("field", [f for f in CHANGES if f not in ("schema", "sig")])
def test_version_01_signs_the_eight_legacy_fields_and_its_version(field: str) -> None:
    doc = _signed("0.1")
    assert doc["sig"] == BASE["sig"]  # the vector itself
    doc[field] = CHANGES[field]
    assert _verifies(doc) is (field not in (*LEGACY_SIGNED, "version"))


@pytest.mark.parametrize("field", ["N_j", "scales", "regime", "v_star", "seed"])
def test_a_02_signature_does_not_verify_when_relabelled_01(field: str) -> None:
    # The poisoning of the faults issue: a judged field changed and the version put
    # back to 0.1 to fall under the 8-field payload. The 0.2 signature covers neither.
    doc = _signed("0.2")
    doc[field], doc["version"] = CHANGES[field], "0.1"
    assert not _verifies(doc)


def test_the_payload_follows_the_version() -> None:
    for version, expected in (("0.1", legacy_payload), ("0.2", full_payload)):
        pcs = decode_pcs(json.dumps(_signed(version)))
        assert canonical_payload(pcs) == expected(pcs)


def test_full_payload_of_the_vector_spelled_out() -> None:
    pcs = decode_pcs(json.dumps(_signed("0.2")))
    v = BASE["v_star"]
    assert (
        full_payload(pcs)
        == (
            '{"D_hat":0.528320834,"N_j":{"16":15,"2":5,"4":10,"8":13},'
            '"budget":0.317807017,"coh_star":0.066666667,"epoch":1,'
            '"merkle_root":"e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112",'
            '"pcs_id":"c50bb25a7aff94164147b73c846f0e5e10890d75df204875ca70c448f52c6edf",'
            '"r":0.318421053,"regime":"mixed","scales":[2,4,8,16],'
            '"schema":"fractal-lba-kakeya","seed":42,"shard_id":"test-shard-001",'
            f'"v_star":[{",".join(repr(round(x, 9)) for x in v)}],"version":"0.2"}}'
        ).encode()
    )


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@PROFILE
@given(
    d_hat=finite,
    coh=finite | st.integers(-(2**53), 2**53),
    v_star=st.lists(finite | st.integers(-1000, 1000), max_size=6),
    n_j=st.dictionaries(
        st.integers(0, 10**18).map(str), st.integers(-(2**63), 2**63 - 1), max_size=6
    ),
    scales=st.lists(st.integers(1, 2**63 - 1), min_size=1, max_size=6, unique=True),
    seed=st.integers(-(2**63), 2**63 - 1),
    shard=st.text(min_size=1, max_size=20),
    version=st.text(min_size=1, max_size=8),
    regime=st.sampled_from(["sticky", "mixed", "non_sticky"]),
)
def test_full_payload_equals_json_dumps_reference(
    d_hat: float,
    coh: float,
    v_star: list[float],
    n_j: dict[str, int],
    scales: list[int],
    seed: int,
    shard: str,
    version: str,
    regime: str,
) -> None:
    doc = dict(
        BASE,
        D_hat=d_hat,
        coh_star=coh,
        v_star=v_star,
        N_j=n_j,
        scales=scales,
        seed=seed,
        shard_id=shard,
        version=version,
        regime=regime,
    )
    pcs = decode_pcs(json.dumps(doc))
    assert full_payload(pcs) == full_payload_reference(pcs)


@pytest.mark.parametrize("field", [f for f in CHANGES if f != "schema"])
def test_content_digest_ignores_only_the_resend_fields(field: str) -> None:
    doc = _signed("0.2")
    before = content_digest(decode_pcs(json.dumps(doc)))
    doc[field] = CHANGES[field]
    after = content_digest(decode_pcs(json.dumps(doc)))
    assert (before == after) is (field in RESEND_FIELDS)


def test_content_digest_is_the_same_for_both_versions_only_when_labelled_alike() -> (
    None
):
    # The digest covers the version too: a 0.1 and a 0.2 twin conflict (SPEC §3.2).
    one, two = (decode_pcs(json.dumps(_signed(v))) for v in ("0.1", "0.2"))
    assert content_digest(one) != content_digest(two)
    assert len(content_digest(two)) == 32
