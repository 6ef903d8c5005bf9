"""/health, /ready, /metrics (+ Basic Auth), /openapi.json against the live server."""

from __future__ import annotations

import base64
import json
from typing import Any

from flk_fast.storage.dedup_memory import MemoryDedup

from .conftest import JSON, SUBMIT, VECTOR_BYTES


async def test_health_and_ready(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.text() == "OK"
    resp = await client.get("/ready")
    assert resp.status == 200


async def test_ready_is_503_when_dedup_down(make_client: Any) -> None:
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup)
    await dedup.close()  # a closed store raises DedupUnavailableError
    resp = await client.get("/ready")
    assert resp.status == 503 and resp.headers["Retry-After"]
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert (await client.get("/health")).status == 200


async def test_metrics_families(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    for _ in range(2):
        await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    text = await (await client.get("/metrics")).text()
    for family in (
        "flk_ingest_total 2.0",
        "flk_accepted_total 1.0",
        "flk_escalated_total 0.0",
        "flk_dedup_hits_total 1.0",
        "flk_signature_errors_total 0.0",
        "flk_wal_errors_total 0.0",
    ):
        assert family in text, family
    assert (
        'flk_request_duration_seconds_count{route="/v1/pcs/submit",status="200"} 2.0'
        in text
    )


async def test_metrics_basic_auth(make_client: Any, monkeypatch: Any) -> None:
    client = await make_client(
        dedup=MemoryDedup(), metrics_user="prom", metrics_password="pw"
    )
    resp = await client.get("/metrics")
    assert resp.status == 401 and "Basic" in resp.headers["WWW-Authenticate"]
    bad = base64.b64encode(b"prom:nope").decode()
    assert (
        await client.get("/metrics", headers={"Authorization": f"Basic {bad}"})
    ).status == 401
    good = base64.b64encode(b"prom:pw").decode()
    resp = await client.get("/metrics", headers={"Authorization": f"Basic {good}"})
    assert resp.status == 200 and "flk_ingest_total" in await resp.text()


async def test_openapi_matches_the_live_routes(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    live = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None
    }
    for path, ops in doc["paths"].items():
        for method in ops:
            assert (method.upper(), path) in live or ("*", path) in live, (method, path)
    # each documented operation answers one of its documented statuses
    probes = {
        ("/health", "get"): None,
        ("/ready", "get"): None,
        ("/metrics", "get"): None,
        ("/openapi.json", "get"): None,
        ("/v1/pcs/submit", "post"): VECTOR_BYTES,
    }
    for (path, method), body in probes.items():
        r = await client.request(
            method, path, data=body, headers=JSON if body else None
        )
        assert str(r.status) in doc["paths"][path][method]["responses"], (
            path,
            r.status,
        )
    bad = await client.post(SUBMIT, data=b"{}", headers=JSON)
    assert "400" in doc["paths"][SUBMIT]["post"]["responses"]
    assert set(json.loads(await bad.read())) <= set(
        doc["components"]["schemas"]["Error"]["properties"]
    )


async def test_unknown_route_is_404_not_500(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.get("/nope")
    assert resp.status == 404 and resp.headers["X-Request-Id"]
