"""Tenant keys by X-Tenant-Id, Ed25519, reload without restart, tenant rate limits."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.signing import Ed25519Signer
from flk_fast.server.app import SERVICE
from flk_fast.storage.dedup_memory import MemoryDedup

from .conftest import JSON, SUBMIT, make_pcs, vector_doc


def _ed25519_body(priv: Ed25519PrivateKey, epoch: int) -> bytes:
    body = make_pcs(epoch)  # right pcs_id; the HMAC sig is replaced below
    doc = json.loads(body)
    doc["sig"] = ""
    doc["sig"] = Ed25519Signer(priv).sign(decode_pcs(json.dumps(doc).encode()))
    return json.dumps(doc).encode()


def _tenants(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    d = tmp_path / "tenants"
    d.mkdir()
    (d / "acme.hmac").write_bytes(b"acme-secret\n")
    (d / "README.txt").write_text("not a key")
    priv = Ed25519PrivateKey.generate()
    (d / "globex.pub").write_bytes(
        priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return d, priv


async def test_tenant_keys(make_client: Any, tmp_path: Path) -> None:
    d, priv = _tenants(tmp_path)
    client = await make_client(dedup=MemoryDedup(), tenants_dir=str(d))
    acme = {**JSON, "X-Tenant-Id": "acme"}
    globex = {**JSON, "X-Tenant-Id": "globex"}
    assert (
        await client.post(SUBMIT, data=make_pcs(1, key=b"acme-secret"), headers=acme)
    ).status == 200
    # acme's PCS under globex's key: 401
    assert (
        await client.post(SUBMIT, data=make_pcs(2, key=b"acme-secret"), headers=globex)
    ).status == 401
    assert (
        await client.post(SUBMIT, data=_ed25519_body(priv, 3), headers=globex)
    ).status == 200
    for bad in ("initech", "../etc", "a" * 65, "ac me"):
        resp = await client.post(
            SUBMIT, data=make_pcs(4), headers={**JSON, "X-Tenant-Id": bad}
        )
        assert resp.status == 401 and (await resp.json())["error"] == "unknown_tenant"
    # no header: the default key (testsecret) still applies
    assert (await client.post(SUBMIT, data=make_pcs(5), headers=JSON)).status == 200


async def test_key_rotation_by_reload(make_client: Any, tmp_path: Path) -> None:
    d, _ = _tenants(tmp_path)
    client = await make_client(
        dedup=MemoryDedup(), tenants_dir=str(d), hmac_key_file=""
    )
    service = client.app[SERVICE]
    acme = {**JSON, "X-Tenant-Id": "acme"}
    # no default key configured: a request without a tenant is refused
    assert (await client.post(SUBMIT, data=make_pcs(1), headers=JSON)).status == 401
    assert (
        await client.post(SUBMIT, data=make_pcs(2, key=b"new-secret"), headers=acme)
    ).status == 401
    (d / "acme.2026.hmac").write_bytes(b"new-secret")
    service.keys.reload()  # what SIGHUP does
    assert (
        await client.post(SUBMIT, data=make_pcs(3, key=b"new-secret"), headers=acme)
    ).status == 200
    assert (
        await client.post(SUBMIT, data=make_pcs(4, key=b"acme-secret"), headers=acme)
    ).status == 200  # both live while rotating
    (d / "acme.hmac").unlink()
    (d / "broken.pub").write_bytes(b"garbage")
    try:
        service.keys.reload()
    except Exception:
        pass
    # a failed reload keeps the old keys
    assert (
        await client.post(SUBMIT, data=make_pcs(5, key=b"acme-secret"), headers=acme)
    ).status == 200
    (d / "broken.pub").unlink()
    service.keys.reload()
    assert (
        await client.post(SUBMIT, data=make_pcs(6, key=b"acme-secret"), headers=acme)
    ).status == 401


async def test_ed25519_default_key(make_client: Any, tmp_path: Path) -> None:
    priv = Ed25519PrivateKey.generate()
    pub = tmp_path / "agent.pub"
    pub.write_bytes(
        priv.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    )
    client = await make_client(
        dedup=MemoryDedup(),
        sign_alg="ed25519",
        hmac_key_file="",
        ed25519_public_key_file=str(pub),
    )
    assert (
        await client.post(SUBMIT, data=_ed25519_body(priv, 1), headers=JSON)
    ).status == 200
    doc = json.loads(_ed25519_body(priv, 2))
    doc["sig"] = base64.b64encode(hashlib.sha512(b"x").digest()).decode()
    assert (await client.post(SUBMIT, data=json.dumps(doc), headers=JSON)).status == 401
    assert (await client.post(SUBMIT, data=make_pcs(3), headers=JSON)).status == 401


async def test_per_tenant_rate_limit(make_client: Any, tmp_path: Path) -> None:
    d, priv = _tenants(tmp_path)
    dedup = MemoryDedup()
    client = await make_client(
        dedup=dedup,
        tenants_dir=str(d),
        tenant_rate_limit=0.001,
        tenant_rate_burst=1,
    )
    acme = {**JSON, "X-Tenant-Id": "acme"}
    body = make_pcs(1, key=b"acme-secret")
    assert (await client.post(SUBMIT, data=body, headers=acme)).status == 200
    resp = await client.post(SUBMIT, data=body, headers=acme)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    # another tenant (the default one) has its own bucket
    assert (await client.post(SUBMIT, data=make_pcs(2), headers=JSON)).status == 200
    assert vector_doc()["epoch"] == 1
    # ... and so does a third (Ed25519) tenant, which then is limited on its own
    globex = {**JSON, "X-Tenant-Id": "globex"}
    assert (
        await client.post(SUBMIT, data=_ed25519_body(priv, 3), headers=globex)
    ).status == 200
    resp = await client.post(SUBMIT, data=_ed25519_body(priv, 4), headers=globex)
    assert resp.status == 429
    # a refused request is not judged: nothing stored for it
    assert (
        await dedup.get("globex\0" + json.loads(_ed25519_body(priv, 4))["pcs_id"])
        is None
    )
    # unknown tenants get 401, never a bucket of their own
    for i in range(5):
        resp = await client.post(
            SUBMIT, data=body, headers={**JSON, "X-Tenant-Id": f"nobody{i}"}
        )
        assert resp.status == 401
    assert set(client.app[SERVICE].limiter._tenants) == {"acme", "", "globex"}
    assert (await client.post(SUBMIT, data=body, headers=acme)).status == 429


async def test_tenants_have_separate_dedup_namespaces(
    make_client: Any, tmp_path: Path
) -> None:
    """Tenant B, knowing A's pcs_id, stores junk under it first: A still gets its own
    verdict, and B's replay of its own submission gets B's stored answer."""
    from flk_fast.protocol.signing import HmacSigner

    d, _ = _tenants(tmp_path)
    (d / "mallory.hmac").write_bytes(b"mallory-secret")
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup, tenants_dir=str(d))
    alice_body = make_pcs(7, key=b"acme-secret")
    alice_id = json.loads(alice_body)["pcs_id"]
    junk = vector_doc()
    junk.update(pcs_id=alice_id, D_hat=2.9, merkle_root="0" * 64, sig="")
    junk["sig"] = HmacSigner(b"mallory-secret").sign(
        decode_pcs(json.dumps(junk).encode())
    )
    junk_body = json.dumps(junk).encode()
    mallory = {**JSON, "X-Tenant-Id": "mallory"}
    first = await client.post(SUBMIT, data=junk_body, headers=mallory)
    junk_answer = (first.status, await first.read())
    resp = await client.post(
        SUBMIT, data=alice_body, headers={**JSON, "X-Tenant-Id": "acme"}
    )
    doc = await resp.json()
    assert resp.status == 200 and doc["accepted"] and not doc["escalated"], doc
    assert (resp.status, await resp.read()) != junk_answer
    again = await client.post(SUBMIT, data=junk_body, headers=mallory)
    assert (
        again.status,
        await again.read(),
    ) == junk_answer  # B's own dedup still works
    # the default tenant ("" = no header) keeps the bare pcs_id as its key
    plain = make_pcs(8)
    assert (await client.post(SUBMIT, data=plain, headers=JSON)).status == 200
    assert await dedup.get(json.loads(plain)["pcs_id"]) is not None
    assert await dedup.get("acme\0" + alice_id) is not None


async def test_sign_alg_none_has_one_rate_bucket(make_client: Any) -> None:
    """Without a tenants directory, --sign-alg none admits any X-Tenant-Id: a new one
    per request must not get a fresh bucket (nor a dedup namespace of its own)."""
    client = await make_client(
        dedup=MemoryDedup(),
        sign_alg="none",
        hmac_key_file="",
        tenant_rate_limit=0.001,
        tenant_rate_burst=1,
    )
    statuses = [
        (
            await client.post(
                SUBMIT, data=make_pcs(1), headers={**JSON, "X-Tenant-Id": f"x{i}"}
            )
        ).status
        for i in range(4)
    ]
    assert statuses == [200, 429, 429, 429]
    assert len(client.app[SERVICE].limiter._tenants) == 1
