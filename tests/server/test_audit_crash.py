"""kill -9 between storing a verdict and spooling its audit entry: after restarts,
every stored verdict has exactly one audit row (issue: 82 stored verdicts had none).

The crash is placed by ``FLK_TEST_CRASH_AT=after-insert:N`` (the server SIGKILLs itself
right after its N-th dedup insert), so each round hits the gap for sure; the replay
finds its own origin in the stored outcome and spools the entry it lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from flk_fast.storage import open_dedup
from flk_fast.storage.audit_postgres import AuditLog

from ..storage.conftest import drop_schema
from .conftest import JSON, SUBMIT, assert_one_audit_row_each, make_pcs
from .procs import ServerProcess

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_factories=["uvloop"]),
]


async def _send_until_dead(srv: ServerProcess, bodies: list[bytes]) -> dict[str, int]:
    answers: dict[str, int] = {}
    queue = list(bodies)

    async def worker(s: aiohttp.ClientSession) -> None:
        while queue and srv.proc.poll() is None:
            body = queue.pop()
            try:
                async with s.post(srv.url + SUBMIT, data=body, headers=JSON) as r:
                    await r.read()
                    answers[json.loads(body)["pcs_id"]] = r.status
            except (aiohttp.ClientError, OSError):
                return

    async with aiohttp.ClientSession() as s:
        await asyncio.wait_for(
            asyncio.gather(*(worker(s) for _ in range(16))), timeout=60
        )
    return answers


@pytest.fixture
def dedup_schema(postgres_dsn: str, unique_prefix: str) -> Iterator[str]:
    yield f"{postgres_dsn}?schema={unique_prefix}_dedup"
    drop_schema(postgres_dsn, f"{unique_prefix}_dedup")


@pytest.mark.parametrize("backend", ["lmdb", "postgres", "redis"])
async def test_every_stored_verdict_has_one_audit_row_after_kill9(
    tmp_path: Path,
    audit_dsn: str,
    dedup_schema: str,
    redis_url: str,
    unique_prefix: str,
    backend: str,
) -> None:
    data = tmp_path / "data"
    dedup_url = {
        "lmdb": f"lmdb://{data}/dedup",
        "postgres": dedup_schema,
        "redis": f"{redis_url}?prefix={unique_prefix}:",
    }[backend]
    env = {"FLK_AUDIT_DSN": audit_dsn}
    sent: list[bytes] = []
    for r, crash_after in enumerate((3, 25, 60)):
        bodies = [make_pcs(10_000 * (r + 1) + i) for i in range(400)]
        sent += bodies
        srv = ServerProcess(
            tmp_path,
            f"round{r}",
            "--data-dir",
            str(data),
            "--dedup",
            dedup_url,
            env={**env, "FLK_TEST_CRASH_AT": f"after-insert:{crash_after}"},
        )
        await _send_until_dead(srv, bodies)
        assert srv.proc.wait(30) == -9, "the crash trigger did not fire"
        srv.kill()
    final = ServerProcess(
        tmp_path, "final", "--data-dir", str(data), "--dedup", dedup_url, env=env
    )
    assert final.stop() == 0  # replay done before ready; SIGTERM ships the spool
    # anything the last shutdown could not ship in time is still spooled: ship it
    audit = AuditLog(audit_dsn, data / "audit-spool" / "w0")
    try:
        await audit.flush()
    finally:
        await audit.close()

    store = open_dedup(dedup_url)
    try:
        ids = [json.loads(b)["pcs_id"] for b in sent]
        values = await store.get_many(ids)
    finally:
        await store.close()
    stored = {i for i, v in zip(ids, values, strict=True) if v is not None}
    await assert_one_audit_row_each(audit_dsn, stored)
