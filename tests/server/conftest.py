"""Fixtures of the server tests: loop factories, signed PCS bodies, a ready client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient

from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.pcs import compute_pcs_id
from flk_fast.protocol.signing import HmacSigner
from flk_fast.server.app import SERVICE, make_app
from flk_fast.server.config import ServerConfig

_HERE = Path(__file__).resolve()
_CANDIDATES = [_HERE.parents[1] / "vectors", Path("/work/shared/vectors")]
VECTORS = next(
    (p for p in _CANDIDATES if (p / "pcs_tiny_case_1.json").exists()), _CANDIDATES[0]
)
VECTOR_BYTES = (VECTORS / "pcs_tiny_case_1.json").read_bytes()
KEY = b"testsecret"
SUBMIT = "/v1/pcs/submit"
JSON = {"Content-Type": "application/json"}


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Any]:
    # Every async server test runs on both loops unless it narrows the choice with
    # @pytest.mark.asyncio(loop_factories=[...]) (done for the slow multi-process ones).
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def vector_doc() -> dict[str, Any]:
    return json.loads(VECTOR_BYTES)


def signed(doc: dict[str, Any], key: bytes = KEY) -> bytes:
    """Fix ``pcs_id`` for the doc's identity fields, sign it, return the JSON body."""
    doc = dict(doc)
    doc["pcs_id"] = compute_pcs_id(doc["merkle_root"], doc["epoch"], doc["shard_id"])
    doc["sig"] = ""
    doc["sig"] = HmacSigner(key).sign(decode_pcs(json.dumps(doc).encode()))
    return json.dumps(doc).encode()


def make_pcs(i: int, key: bytes = KEY, **changes: Any) -> bytes:
    """A distinct valid signed PCS per ``i`` (the vector at epoch ``i``)."""
    doc = vector_doc()
    doc["epoch"] = i
    doc.update(changes)
    return signed(doc, key)


def make_cfg(tmp_path: Path, **kw: Any) -> ServerConfig:
    base: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "hmac_key_file": str(_key_file(tmp_path)),
        "drain_timeout_s": 2.0,
    }
    base.update(kw)
    return ServerConfig(**base)


def _key_file(tmp_path: Path) -> Path:
    p = tmp_path / "hmac.key"
    if not p.exists():
        p.write_bytes(KEY)
    return p


async def wait_ready(app: web.Application, timeout: float = 10.0) -> None:
    service = app[SERVICE]
    deadline = asyncio.get_running_loop().time() + timeout
    while not service.ready:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"server not ready: {service.loading_reason}")
        await asyncio.sleep(0.01)


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(
    aiohttp_client: Any, tmp_path: Path
) -> AsyncIterator[ClientFactory]:
    """``await make_client(dedup=..., **cfg_overrides)``: client of a ready server."""

    async def factory(
        *, dedup: Any = None, ready: bool = True, **kw: Any
    ) -> TestClient:
        app = make_app(make_cfg(tmp_path, **kw), dedup=dedup)
        client = await aiohttp_client(app)
        if ready:
            await wait_ready(app)
        return client

    yield factory


@pytest.fixture
def audit_dsn(postgres_dsn: str, unique_prefix: str) -> Iterator[str]:
    """A PostgreSQL audit DSN in a schema of its own, dropped afterwards."""
    from ..storage.conftest import drop_schema

    yield f"{postgres_dsn}?schema={unique_prefix}"
    drop_schema(postgres_dsn, unique_prefix)


async def audit_rows(dsn: str, columns: str = "pcs_id") -> list[Any]:
    """The rows of the audit table of ``audit_dsn``, in chain order."""
    import asyncpg

    base, _, schema = dsn.partition("?schema=")
    conn = await asyncpg.connect(base)
    try:
        return await conn.fetch(
            f'SELECT {columns} FROM "{schema}".flk_audit ORDER BY id'
        )
    finally:
        await conn.close()


async def assert_one_audit_row_each(dsn: str, stored: set[str]) -> None:
    """Every stored verdict (``stored``: their pcs_ids) has exactly one audit row, no
    other verdict has one, and the chain verifies."""
    from flk_fast.storage.audit_postgres import verify_chain

    audited = [r["pcs_id"] for r in await audit_rows(dsn)]
    assert stored, "nothing was stored before the crashes"
    assert len(audited) == len(set(audited)), "a verdict was audited twice"
    assert set(audited) == stored  # every stored verdict, and only those
    report = await verify_chain(dsn)
    assert report.ok and report.rows == len(stored), report
