"""The pipeline over each dedup backend: LMDB (the default), Redis, a Redis Cluster, a
Sentinel-managed Redis and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flk_fast.server.app import SERVICE
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
    assert stored == b"200" + await first.read()
    assert (await client.get("/ready")).status == 200


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_lmdb_default(make_client: Any) -> None:
    client = await make_client()  # dedup URL defaults to lmdb://DATA_DIR/dedup
    await _exercise(client)


@pytest.mark.services
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_redis(make_client: Any, redis_url: str, unique_prefix: str) -> None:
    client = await make_client(dedup=open_dedup(f"{redis_url}?prefix={unique_prefix}:"))
    await _exercise(client)


@pytest.mark.services
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_redis_cluster(
    make_client: Any, redis_cluster_url: str, unique_prefix: str
) -> None:
    client = await make_client(
        dedup=open_dedup(f"{redis_cluster_url}?prefix={unique_prefix}:")
    )
    await _exercise(client)


@pytest.mark.services
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_redis_sentinel(
    make_client: Any, redis_sentinel_url: str, unique_prefix: str
) -> None:
    client = await make_client(
        dedup=open_dedup(f"{redis_sentinel_url}?prefix={unique_prefix}:")
    )
    await _exercise(client)


@pytest.mark.services
@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_postgres(
    make_client: Any, postgres_dsn: str, unique_prefix: str
) -> None:
    client = await make_client(
        dedup=open_dedup(f"{postgres_dsn}?schema={unique_prefix}")
    )
    await _exercise(client)
