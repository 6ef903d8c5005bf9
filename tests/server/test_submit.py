"""POST /v1/pcs/submit over real HTTP on loopback (SPEC §7), both event loops."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flk_fast.server.app import SERVICE
from flk_fast.server.outcome import decode_outcome
from flk_fast.storage.dedup_memory import MemoryDedup

from .conftest import JSON, SUBMIT, VECTOR_BYTES, make_pcs, signed, vector_doc


async def test_vector_is_accepted(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 200
    body = await resp.json()
    assert body["accepted"] is True and body["escalated"] is False
    assert body["pcs_id"] == vector_doc()["pcs_id"]
    assert resp.headers["X-Request-Id"]


async def test_duplicate_answers_identical_bytes(make_client: Any) -> None:
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup)
    first = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    raw1 = await first.read()
    second = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    raw2 = await second.read()
    assert (first.status, raw1) == (second.status, raw2) == (200, raw1)
    service = client.app[SERVICE]
    assert service.metrics.dedup_hits._value.get() == 1
    assert service.metrics.accepted._value.get() == 1
    stored = await dedup.get(vector_doc()["pcs_id"])
    assert stored is not None and decode_outcome(stored)[::2] == (200, raw1)


async def test_escalated_answers_202_and_is_stored(make_client: Any) -> None:
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup)
    body = make_pcs(7, regime="sticky")  # wrong regime: accepted but escalated
    resp = await client.post(SUBMIT, data=body, headers=JSON)
    assert resp.status == 202
    doc = await resp.json()
    assert doc["accepted"] is True and doc["escalated"] is True and doc["reason"]
    again = await client.post(SUBMIT, data=body, headers=JSON)
    assert again.status == 202 and await again.read() == await resp.read()


@pytest.mark.parametrize(
    "field,value",
    [("D_hat", 0.6), ("epoch", 2), ("budget", 0.5), ("shard_id", "other")],
)
async def test_tampered_field_is_401_and_never_stored(
    make_client: Any, field: str, value: Any
) -> None:
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup)
    doc = vector_doc()
    doc[field] = value
    resp = await client.post(SUBMIT, data=json.dumps(doc), headers=JSON)
    assert resp.status == 401
    assert (await resp.json())["error"] == "signature"
    assert await dedup.get(doc["pcs_id"]) is None
    # never cached: the genuine PCS with the same id is still judged afresh
    ok = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert ok.status == 200


async def test_wrong_key_is_401(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.post(SUBMIT, data=make_pcs(1, key=b"not-the-key"), headers=JSON)
    assert resp.status == 401


_MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"{nope"),
    ("array", b"[]"),
    ("string", b'"x"'),
    ("null", b"null"),
    ("invalid utf8", b'{"pcs_id": "\xff\xfe"}'),
    ("nan", VECTOR_BYTES.replace(b'"D_hat": 0.528320834', b'"D_hat": NaN')),
    ("infinity", VECTOR_BYTES.replace(b'"r": 0.318421053', b'"r": Infinity')),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
    (
        "missing field",
        json.dumps({k: v for k, v in vector_doc().items() if k != "epoch"}).encode(),
    ),
    ("epoch as float", VECTOR_BYTES.replace(b'"epoch": 1', b'"epoch": 1.0')),
    ("epoch as bool", VECTOR_BYTES.replace(b'"epoch": 1', b'"epoch": true')),
    (
        "coh_star as string",
        VECTOR_BYTES.replace(b'"coh_star": 0.066666667', b'"coh_star": "0.07"'),
    ),
    ("bad schema", VECTOR_BYTES.replace(b'"fractal-lba-kakeya"', b'"other"')),
    ("bad pcs_id", VECTOR_BYTES.replace(b'"c50bb25a', b'"C50BB25A')),
    ("huge int", VECTOR_BYTES.replace(b'"seed": 42', b'"seed": ' + b"9" * 400)),
    ("bad regime", VECTOR_BYTES.replace(b'"regime": "mixed"', b'"regime": "wobbly"')),
    ("ft missing key", VECTOR_BYTES.replace(b'"degraded": false,', b"")),
]


@pytest.mark.parametrize("name,body", _MALFORMED, ids=[n for n, _ in _MALFORMED])
async def test_malformed_is_400_naming_a_field(
    make_client: Any, name: str, body: bytes
) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.post(SUBMIT, data=body, headers=JSON)
    assert resp.status == 400, await resp.text()
    doc = await resp.json()
    assert doc["error"] == "invalid_pcs" and doc["field"]
    # the server still answers, and still judges good input
    ok = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert ok.status == 200
    assert (await client.get("/health")).status == 200


async def test_method_type_and_size_refusals(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup(), max_body=4096)
    resp = await client.get(SUBMIT)
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    resp = await client.put(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 405
    resp = await client.post(
        SUBMIT, data=VECTOR_BYTES, headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    resp = await client.post(SUBMIT, data=VECTOR_BYTES)  # no content type at all
    assert resp.status == 415
    resp = await client.post(
        SUBMIT,
        data=VECTOR_BYTES,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == 200
    big = b" " * 5000 + VECTOR_BYTES
    resp = await client.post(SUBMIT, data=big, headers=JSON)
    assert resp.status == 413
    assert (await resp.json())["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: enforced live
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post(SUBMIT, data=chunks(), headers=JSON)
    assert resp.status == 413
    ok = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert ok.status == 200


async def test_default_max_body_is_one_mib(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.post(
        SUBMIT, data=io.BytesIO(b" " * (1 << 20) + b"{}"), headers=JSON
    )
    assert resp.status == 413
    resp = await client.post(
        SUBMIT, data=io.BytesIO(b" " * ((1 << 20) - 2) + b"{}"), headers=JSON
    )
    assert resp.status == 400


async def test_rate_limit_global_and_per_tenant(
    make_client: Any, tmp_path: Any
) -> None:
    client = await make_client(dedup=MemoryDedup(), rate_limit=0.001, rate_burst=2)
    statuses = [
        (await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)).status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1


async def test_not_ready_is_503_with_retry_after(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    client.app[SERVICE].ready = False  # as while the replay runs
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await client.get("/ready")).status == 503
    assert (await client.get("/health")).status == 200


async def test_sign_alg_none_skips_signature(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup(), sign_alg="none", hmac_key_file="")
    doc = vector_doc()
    doc["sig"] = ""
    resp = await client.post(SUBMIT, data=json.dumps(doc), headers=JSON)
    assert resp.status == 200


async def test_request_id_is_echoed(make_client: Any) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.post(
        SUBMIT, data=signed(vector_doc()), headers={**JSON, "X-Request-Id": "abc-123"}
    )
    assert resp.headers["X-Request-Id"] == "abc-123"


async def test_content_encoding(make_client: Any) -> None:
    import asyncio
    import gzip

    client = await make_client(dedup=MemoryDedup())
    # raw bytes: aiohttp closes the connection after a broken payload, which its own
    # client may see before the (sent) answer
    reader, writer = await asyncio.open_connection(client.host, client.port)
    junk = b"not gzip at all"
    writer.write(
        b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(junk), junk)
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    headers = {**JSON, "Content-Encoding": "gzip"}
    resp = await client.post(SUBMIT, data=gzip.compress(VECTOR_BYTES), headers=headers)
    assert resp.status == 200
    # an encoding aiohttp does not decode would be judged as plain JSON: 415
    for enc in ("foo", "x-gzip", "gzip, foo"):
        resp = await client.post(
            SUBMIT, data=VECTOR_BYTES, headers={**JSON, "Content-Encoding": enc}
        )
        assert resp.status == 415, enc
        assert (await resp.json())["error"] == "unsupported_content_encoding"
    resp = await client.post(
        SUBMIT, data=VECTOR_BYTES, headers={**JSON, "Content-Encoding": "identity"}
    )
    assert resp.status == 200


async def _slow_upload(client: Any) -> tuple[Any, Any]:
    """Open a connection that sends the headers and one byte of a 1000-byte body."""
    import asyncio

    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def test_slow_body_is_408_and_uploads_are_capped(make_client: Any) -> None:
    import asyncio

    client = await make_client(
        dedup=MemoryDedup(), body_timeout_s=0.5, max_inflight_bodies=2
    )
    slow = [await _slow_upload(client) for _ in range(2)]
    await asyncio.sleep(0.1)
    # a third body while two are still arriving: refused at once
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"] == "too_many_uploads"
    for reader, writer in slow:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        writer.close()
    # the slots are free again
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 200


async def test_big_invalid_body_skips_the_slow_explainer(make_client: Any) -> None:
    """A ~1 MiB body msgspec rejects is answered with msgspec's message (naming the
    field from its path) instead of the Python explainer, which blocks the loop for
    0.1-0.4 s per such body."""
    client = await make_client(dedup=MemoryDedup())
    doc = vector_doc()
    doc["v_star"] = [[[[[[[[1]]]]]]]] * 60000
    body = json.dumps(doc).encode()
    assert 64 * 1024 < len(body) < 1 << 20
    resp = await client.post(SUBMIT, data=body, headers=JSON)
    assert resp.status == 400
    err = await resp.json()
    assert err["field"] == "v_star" and err["rule"].startswith("malformed PCS:"), err
    # small bodies still get the precise explanation
    doc["v_star"] = [[1]] * 3
    resp = await client.post(SUBMIT, data=json.dumps(doc), headers=JSON)
    err = await resp.json()
    assert resp.status == 400 and err["field"].startswith("v_star")
    assert not err["rule"].startswith("malformed PCS:"), err


@pytest.mark.parametrize("body", ["valid", "invalid"])
async def test_wal_failure_is_503_and_nothing_is_stored_or_counted(
    make_client: Any, body: str
) -> None:
    # SPEC §7 step 1 comes first: when the inbox append fails, the request is not
    # judged at all: no dedup entry, no counter but flk_wal_errors, a 503.
    dedup = MemoryDedup()
    client = await make_client(dedup=dedup)
    service = client.app[SERVICE]

    def broken_commit(items: Any) -> Any:
        raise OSError(28, "No space left on device")

    service.wal._gc._commit = broken_commit
    data = VECTOR_BYTES if body == "valid" else b'{"epoch": -3}'
    resp = await client.post(SUBMIT, data=data, headers=JSON)
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert (await resp.json())["error"] == "wal_unavailable"
    assert await dedup.get(vector_doc()["pcs_id"]) is None
    m = service.metrics
    assert m.wal_errors._value.get() == 1
    for counter in (m.ingest, m.accepted, m.invalid, m.signature_errors):
        assert counter._value.get() == 0
    # a closed WAL is refused before anything is assessed
    await service.wal.close()
    resp = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert resp.status == 503 and m.wal_errors._value.get() == 2
    assert (await client.get("/health")).status == 200
