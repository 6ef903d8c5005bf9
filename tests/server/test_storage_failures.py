"""A real ``flk serve`` over failing or forgetful network stores (issue 11): backends
terminated under load are answered 503 + Retry-After, never 500; a Redis that may
forget is refused at start-up, and ``?durability=none`` is shown in ``/ready``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ..storage._redis import throwaway_redis  # noqa: F401  (a fixture)
from ..storage.conftest import drop_schema
from .conftest import JSON, SUBMIT, make_pcs
from .procs import ServerProcess

pytestmark = pytest.mark.services


async def _post(s: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Any]:
    async with s.post(url + SUBMIT, data=body, headers=JSON) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


@pytest.mark.slow
async def test_pg_backends_terminated_under_load_never_500(
    tmp_path: Path, postgres_dsn: str, unique_prefix: str
) -> None:
    app = f"flk-t-{uuid.uuid4().hex[:10]}"  # marks the server's own backends
    srv = ServerProcess(
        tmp_path,
        "pg",
        "--dedup",
        f"{postgres_dsn}?schema={unique_prefix}&application_name={app}",
    )
    admin = await asyncpg.connect(postgres_dsn)
    statuses: Counter[int] = Counter()
    retry_after_missing = 0
    unanswered: list[bytes] = []
    stop = asyncio.Event()

    async def sender(s: aiohttp.ClientSession, w: int) -> None:
        nonlocal retry_after_missing
        i = 0
        while not stop.is_set():
            i += 1
            escalating = {"budget": 0.9} if i % 5 else {}
            body = make_pcs(1_000_000 * (w + 1) + i, **escalating)
            status, retry_after = await _post(s, srv.url, body)
            statuses[status] += 1
            if status == 503:
                retry_after_missing += retry_after is None
                unanswered.append(body)

    try:
        async with aiohttp.ClientSession() as s:
            assert (await _post(s, srv.url, make_pcs(1)))[0] == 200  # pool is up
            senders = [asyncio.ensure_future(sender(s, w)) for w in range(8)]
            terminated = 0
            for _ in range(25):
                await asyncio.sleep(0.08)
                terminated += await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    app,
                )
            stop.set()
            await asyncio.gather(*senders)
            # Once PostgreSQL is left alone, what was answered 503 gets its verdict.
            for body in unanswered[:50]:
                assert (await _post(s, srv.url, body))[0] in (200, 202)
        assert terminated >= 10, terminated
        assert set(statuses) <= {200, 202, 503}, statuses
        assert statuses[503] >= 1 and statuses[200] + statuses[202] >= 1, statuses
        assert retry_after_missing == 0
        internal = [
            line
            for line in srv.log_lines()
            if '"internal"' in json.dumps(line) or line.get("status") == 500
        ]
        assert not internal, internal[:3]
    finally:
        await admin.close()
        srv.stop()
        await asyncio.to_thread(drop_schema, postgres_dsn, unique_prefix)


def test_a_redis_that_may_forget_is_refused_at_start(
    tmp_path: Path, throwaway_redis: Any
) -> None:
    r = throwaway_redis("--appendonly", "no")
    with pytest.raises(AssertionError, match="server did not get ready") as caught:
        ServerProcess(tmp_path, "forgetful", "--dedup", r.url, timeout=20)
    log = str(caught.value)
    assert "appendonly is 'no'" in log and "CONFIG SET appendonly yes" in log, log
    assert "durability=none" in log
    assert r.cli("DBSIZE") == "0"


async def test_durability_none_is_shown_in_ready(
    tmp_path: Path, throwaway_redis: Any
) -> None:
    r = throwaway_redis("--appendonly", "no")
    srv = ServerProcess(tmp_path, "optout", "--dedup", f"{r.url}?durability=none")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(srv.url + "/ready") as resp:
                assert resp.status == 200
                doc = await resp.json()
            assert (await _post(s, srv.url, make_pcs(7)))[0] == 200
        assert any("durability=none" in w for w in doc.get("warnings", [])), doc
        warned = [
            line
            for line in srv.log_lines()
            if line.get("level") in ("WARNING", "warning")
            and "durability=none" in json.dumps(line)
        ]
        assert warned, srv.log_path.read_text()[-2000:]
    finally:
        srv.stop()
