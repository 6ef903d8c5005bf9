"""The reference vector (SPEC §8) through the protocol core."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from flk_fast.errors import SignatureError
from flk_fast.protocol import Keyring, decode_pcs, encode_pcs_pretty, verify_pcs
from flk_fast.protocol.pcs import compute_pcs_id
from flk_fast.protocol.signing import HmacSigner, canonical_payload

from .conftest import KEY, LEGACY_SIGNED, VECTOR_BYTES


def _ring() -> Keyring:
    return Keyring.hmac({"test": KEY})


def test_vector_round_trips_byte_for_byte() -> None:
    assert encode_pcs_pretty(decode_pcs(VECTOR_BYTES)) == VECTOR_BYTES.decode()


def test_vector_signature_valid_accepted_clean() -> None:
    pcs = decode_pcs(VECTOR_BYTES)
    assert _ring().verify(pcs) == "test"
    result = verify_pcs(pcs)
    assert (result.accepted, result.escalated, result.reason) == (True, False, "")
    assert result.recomputed_D_hat == pcs.D_hat
    assert result.recomputed_budget == pcs.budget


def test_vector_id_and_signature_are_recomputable() -> None:
    pcs = decode_pcs(VECTOR_BYTES)
    assert compute_pcs_id(pcs.merkle_root, pcs.epoch, pcs.shard_id) == pcs.pcs_id
    assert HmacSigner(KEY).sign(pcs) == pcs.sig


def _mutated(doc: dict[str, Any], field: str) -> dict[str, Any]:
    value = doc[field]
    if isinstance(value, str):
        # keep the shape valid: hex stays hex, strings stay non-empty
        doc[field] = ("f" if value[0] != "f" else "e") + value[1:]
    elif isinstance(value, int):
        doc[field] = value + 1
    else:
        doc[field] = value + 0.001
    return doc


@pytest.mark.parametrize("field", LEGACY_SIGNED)
def test_changing_a_signed_field_breaks_the_signature(
    vector_doc: dict[str, Any], field: str
) -> None:
    pcs = decode_pcs(json.dumps(_mutated(vector_doc, field)))
    with pytest.raises(SignatureError, match="does not match"):
        _ring().verify(pcs)


@pytest.mark.parametrize(
    "field, value",
    [
        ("attempt", 7),
        ("sent_at", "2026-01-01T00:00:00Z"),
        ("seed", 43),
        ("v_star", [1.0, 0.0, 0.0]),
        ("regime", "sticky"),
        (
            "ft",
            {"outbox_seq": 9, "degraded": True, "fallbacks": ["x"], "clock_skew_ms": 5},
        ),
        ("N_j", {"2": 6, "4": 10, "8": 13, "16": 15}),
        ("scales", [2, 4, 8]),
    ],
)
def test_changing_an_unsigned_field_keeps_the_signature(
    vector_doc: dict[str, Any], field: str, value: object
) -> None:
    vector_doc[field] = value
    assert _ring().verify(decode_pcs(json.dumps(vector_doc))) == "test"


@pytest.mark.parametrize("version", ["0.2", "0.3", "0.1 "])
def test_relabelling_the_vector_breaks_its_signature(
    vector_doc: dict[str, Any], version: str
) -> None:
    # Any version other than "0.1" signs the full payload of SPEC §3.1, which holds
    # the version itself: a relabelled 0.1 PCS no longer verifies.
    vector_doc["version"] = version
    with pytest.raises(SignatureError, match="does not match"):
        _ring().verify(decode_pcs(json.dumps(vector_doc)))


def test_rounding_beyond_nine_places_does_not_change_the_signature(
    vector_doc: dict[str, Any],
) -> None:
    vector_doc["D_hat"] += 3e-11
    assert _ring().verify(decode_pcs(json.dumps(vector_doc))) == "test"


@pytest.mark.parametrize(
    "sig, message",
    [
        ("", "missing"),
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"x" * 31).decode(), "decodes to 31 bytes"),
        (base64.b64encode(b"x" * 32).decode(), "does not match"),
    ],
)
def test_bad_signatures_are_signature_errors(
    vector_doc: dict[str, Any], sig: str, message: str
) -> None:
    vector_doc["sig"] = sig
    with pytest.raises(SignatureError, match=message):
        _ring().verify(decode_pcs(json.dumps(vector_doc)))


def test_wrong_key_fails_and_rotation_accepts_either_key() -> None:
    pcs = decode_pcs(VECTOR_BYTES)
    with pytest.raises(SignatureError):
        Keyring.hmac({"other": b"not-the-key"}).verify(pcs)
    ring = Keyring.hmac({"next": b"new-secret", "current": KEY})
    assert ring.verify(pcs) == "current"


def test_canonical_payload_of_the_vector() -> None:
    payload = canonical_payload(decode_pcs(VECTOR_BYTES))
    assert payload == (
        b'{"D_hat":0.528320834,"budget":0.317807017,"coh_star":0.066666667,"epoch":1,'
        b'"merkle_root":"e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112",'
        b'"pcs_id":"c50bb25a7aff94164147b73c846f0e5e10890d75df204875ca70c448f52c6edf",'
        b'"r":0.318421053,"shard_id":"test-shard-001"}'
    )
