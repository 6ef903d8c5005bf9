"""SPEC §3.1/§3.2 at the server: full signatures, conflicting twins (409), the
version-0.1 refusal, and stored outcomes that fail their checksum (503)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flk_fast.server.app import SERVICE
from flk_fast.server.outcome import (
    DamagedOutcomeError,
    decode_outcome,
    encode_outcome,
)
from flk_fast.storage.dedup_memory import MemoryDedup

from .conftest import JSON, SUBMIT, VECTOR_BYTES, make_pcs, vector_doc

#: Fields a §6 verdict depends on that the 0.1 signature leaves out.
JUDGED_UNSIGNED_IN_01 = {
    "regime": "sticky",
    "N_j": {"2": 1, "4": 1, "8": 1, "16": 1},
    "scales": [2, 4],
}


def _v02(i: int, **changes: Any) -> bytes:
    return make_pcs(i, version="0.2", **changes)


def _tampered(body: bytes, **changes: Any) -> bytes:
    """The body with fields changed and the signature kept (an attacker's twin)."""
    doc = json.loads(body)
    doc.update(changes)
    return json.dumps(doc).encode()


async def _post(client: Any, body: bytes) -> tuple[int, Any]:
    resp = await client.post(SUBMIT, data=body, headers=JSON)
    return resp.status, await resp.json()


@pytest.mark.parametrize("field", sorted(JUDGED_UNSIGNED_IN_01))
async def test_a_02_pcs_with_a_judged_field_changed_is_refused_401(
    make_client: Any, field: str
) -> None:
    client = await make_client(dedup=MemoryDedup())
    forged = _tampered(_v02(1), **{field: JUDGED_UNSIGNED_IN_01[field]})
    status, doc = await _post(client, forged)
    assert (status, doc["error"]) == (401, "signature")
    # nothing was stored: the genuine PCS is judged on its own merits afterwards
    status, doc = await _post(client, _v02(1))
    assert status == 200 and doc["accepted"] and not doc["escalated"]


@pytest.mark.parametrize("field", sorted(JUDGED_UNSIGNED_IN_01))
async def test_poisoning_first_write_of_a_01_twin_gives_409_not_its_verdict(
    make_client: Any, field: str
) -> None:
    # Holding a signed 0.1 PCS, an attacker sends it first with a judged field
    # changed (the 0.1 signature still verifies): it is stored, but the genuine PCS
    # then gets a 409, never the attacker's 202.
    client = await make_client(dedup=MemoryDedup())
    genuine = make_pcs(2)
    forged = _tampered(genuine, **{field: JUDGED_UNSIGNED_IN_01[field]})
    status, forged_answer = await _post(client, forged)
    assert status == 202
    status, doc = await _post(client, genuine)
    assert status == 409
    assert doc == {
        "error": "conflict",
        "pcs_id": json.loads(genuine)["pcs_id"],
        "detail": doc["detail"],
    }
    assert "reason" not in doc and forged_answer["reason"] not in json.dumps(doc)
    metrics = client.app[SERVICE].metrics
    assert metrics.dedup_conflicts._value.get() == 1
    assert metrics.dedup_hits._value.get() == 0


async def test_poisoning_the_other_way_an_escalating_pcs_is_not_whitewashed(
    make_client: Any,
) -> None:
    # The reverse: an escalating PCS (wrong regime) first stored genuinely; a twin
    # "corrected" to look clean gets 409, never "accepted, clean" nor a new verdict.
    client = await make_client(dedup=MemoryDedup())
    escalating = make_pcs(3, regime="sticky")
    status, first = await _post(client, escalating)
    assert status == 202 and first["escalated"]
    clean = _tampered(escalating, regime="mixed")
    status, doc = await _post(client, clean)
    assert (status, doc["error"]) == (409, "conflict")
    status, again = await _post(client, escalating)
    assert (status, again) == (202, first)


async def test_a_resend_changing_only_resend_fields_is_a_duplicate(
    make_client: Any,
) -> None:
    client = await make_client(dedup=MemoryDedup())
    body = _v02(4)
    status, first = await _post(client, body)
    assert status == 200
    ft = {"outbox_seq": 9, "degraded": True, "fallbacks": ["x"], "clock_skew_ms": 3}
    resend = _tampered(body, attempt=5, sent_at="2030-01-01T00:00:00Z", ft=ft)
    status, doc = await _post(client, resend)
    assert (status, doc) == (200, first)
    assert client.app[SERVICE].metrics.dedup_hits._value.get() == 1


async def test_a_relabelled_twin_is_a_conflict(make_client: Any) -> None:
    # The digest covers the version: a 0.2 twin of a stored 0.1 PCS conflicts.
    client = await make_client(dedup=MemoryDedup(), sign_alg="none", hmac_key_file="")
    assert (await _post(client, VECTOR_BYTES))[0] == 200
    relabelled = _tampered(VECTOR_BYTES, version="0.2")
    assert (await _post(client, relabelled))[0] == 409


async def test_refuse_sig_v01_answers_401_and_accepts_02(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup(), refuse_sig_v01=True)
    status, doc = await _post(client, VECTOR_BYTES)
    assert status == 401 and "--refuse-sig-v01" in doc["detail"]
    assert (await _post(client, _v02(5)))[0] == 200
    assert client.app[SERVICE].metrics.signature_errors._value.get() == 1


async def test_both_versions_verify_by_default(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    assert (await _post(client, VECTOR_BYTES))[0] == 200
    assert (await _post(client, _v02(6)))[0] == 200


# ---------------------------------------------------------------- damaged outcomes
def test_outcome_round_trip_and_every_flipped_byte_is_found() -> None:
    digest, body = bytes(range(32)), b'{"pcs_id":"x","accepted":true}'
    value = encode_outcome(202, digest, body, b"srv/w0/17")
    assert decode_outcome(value) == (202, digest, body, b"srv/w0/17")
    for i in range(len(value)):
        damaged = bytearray(value)
        damaged[i] ^= 0x10
        with pytest.raises(DamagedOutcomeError):
            decode_outcome(bytes(damaged))
    for cut in (0, 1, 5, 41, len(value) - 1):
        with pytest.raises(DamagedOutcomeError):
            decode_outcome(value[:cut])


def test_values_of_the_old_layout_are_still_read() -> None:
    assert decode_outcome(b'202{"a":1}') == (202, None, b'{"a":1}', b"")


async def test_a_damaged_stored_outcome_is_never_served(make_client: Any) -> None:
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup)
    body = _v02(7)
    status, first = await _post(client, body)
    assert status == 200
    pcs_id = json.loads(body)["pcs_id"]
    stored = await dedup.get(pcs_id)
    assert stored is not None
    damaged = stored[:-3] + b"X" + stored[-2:]  # one byte of the answer body
    expires, _ = dedup._data[pcs_id.encode()]
    dedup._data[pcs_id.encode()] = (expires, damaged)
    resp = await client.post(SUBMIT, data=body, headers=JSON)
    assert resp.status == 503 and resp.headers["Retry-After"]
    doc = await resp.json()
    assert doc["error"] == "stored_outcome_damaged"
    assert b"X" not in await resp.read()  # not the damaged bytes
    service = client.app[SERVICE]
    assert service.metrics.dedup_damaged._value.get() == 1
    ready = await client.get("/ready")
    assert ready.status == 200
    assert "failed their checksum" in (await ready.json())["warnings"][0]


async def test_unsigned_server_conflicts_are_counted_per_tenant_key(
    make_client: Any,
) -> None:
    # The default tenant's key is the bare pcs_id: a conflict is about that key only;
    # another PCS is judged normally in between.
    client = await make_client(dedup=MemoryDedup(), sign_alg="none", hmac_key_file="")
    doc = vector_doc()
    assert (await _post(client, VECTOR_BYTES))[0] == 200
    doc["seed"] = 7
    assert (await _post(client, json.dumps(doc).encode()))[0] == 409
    assert (await _post(client, make_pcs(8)))[0] == 200
    assert client.app[SERVICE].metrics.dedup_conflicts._value.get() == 1


def test_server_id_is_made_once_and_a_damaged_one_is_refused(tmp_path: Any) -> None:
    from flk_fast.errors import ConfigError
    from flk_fast.server.outcome import server_id

    first = server_id(tmp_path)
    assert first == server_id(tmp_path) and len(first) == 16
    (tmp_path / "server-id").write_bytes(b"\xff\x00garbage/../x\n")
    with pytest.raises(ConfigError, match="server-id is damaged"):
        server_id(tmp_path)
