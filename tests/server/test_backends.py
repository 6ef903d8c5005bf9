"""The pipeline over each dedup backend: LMDB (the default), Redis, a Redis Cluster, a
Sentinel-managed Redis and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flk_fast.server.app import SERVICE
from flk_fast.server.outcome import decode_outcome
from flk_fast.storage import open_dedup

from .conftest import JSON, SUBMIT, VECTOR_BYTES, make_pcs


async def _exercise(client: Any) -> None:
    first = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert first.status == 200
    second = await client.post(SUBMIT, data=VECTOR_BYTES, headers=JSON)
    assert second.status == 200 and await second.read() == await first.read()
    esc = make_pcs(9, budget=0.9)
    assert (await client.post(SUBMIT, data=esc, headers=JSON)).status == 202
    dedup = client.app[SERVICE].dedup
    stored = await dedup.get(json.loads(VECTOR_BYTES)["pcs_id"])
    assert stored is not None
    assert decode_outcome(stored)[::2] == (200, await first.read())
    assert (await client.get("/ready")).status == 200


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_lmdb_default(make_client: Any) -> None:
    client = await make_client()  # dedup URL defaults to lmdb://DATA_DIR/dedup
    await _exercise(client)


#: backend -> (the session fixture giving its URL, the query that isolates a test)
NETWORK_BACKENDS = {
    "redis": ("redis_url", "prefix={}:"),
    "redis-cluster": ("redis_cluster_url", "prefix={}:"),
    "redis-sentinel": ("redis_sentinel_url", "prefix={}:"),
    "postgres": ("postgres_dsn", "schema={}"),
}


@pytest.mark.services
@pytest.mark.asyncio(loop_factories=["uvloop"])
@pytest.mark.parametrize("backend", sorted(NETWORK_BACKENDS))
async def test_network_backend(
    make_client: Any, request: pytest.FixtureRequest, backend: str, unique_prefix: str
) -> None:
    fixture, query = NETWORK_BACKENDS[backend]
    url = request.getfixturevalue(fixture)
    client = await make_client(dedup=open_dedup(f"{url}?{query.format(unique_prefix)}"))
    await _exercise(client)
