"""kill -9 inside and right after the ledger's batch commit (the default layout: inbox
record, outcome and audit entry in one transaction), 1 and 2 workers.

``FLK_TEST_CRASH_AT=in-commit:N`` kills the worker inside its N-th batch transaction,
just before LMDB commits it; ``after-commit:N`` right after the N-th durable commit,
before any of its answers leave. Every round also resends PCS answered in earlier
rounds. Afterwards: every answered PCS keeps its exact status and bytes, its body is in
the inbox, and every stored verdict has exactly one audit row.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aiohttp
import pytest

from flk_fast.storage.aio import AsyncLedger
from flk_fast.storage.audit_postgres import AuditLog
from flk_fast.storage.ledger import Ledger

from .conftest import JSON, SUBMIT, assert_one_audit_row_each, make_pcs
from .procs import ServerProcess

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_factories=["uvloop"]),
]

Answer = tuple[int, bytes]


async def _send(url: str, bodies: list[bytes], answers: dict[bytes, Answer]) -> None:
    """Post ``bodies`` 16 at a time until they are gone or the server is; keep the
    200/202 answers (a resend must get the answer it got the first time)."""
    queue = list(bodies)

    async def worker(s: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            try:
                async with s.post(url + SUBMIT, data=body, headers=JSON) as r:
                    got = (r.status, await r.read())
            except (aiohttp.ClientError, OSError):
                continue  # a worker died mid-request: try the next body
            if got[0] in (200, 202):
                first = answers.setdefault(body, got)
                assert first == got, "a resend got other bytes than the first answer"

    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        await asyncio.wait_for(
            asyncio.gather(*(worker(s) for _ in range(16))), timeout=90
        )


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("point", ["in-commit", "after-commit"])
async def test_kill9_in_the_batch_commit_loses_nothing(
    tmp_path: Path, audit_dsn: str, workers: int, point: str
) -> None:
    data = tmp_path / "data"
    env = {"FLK_AUDIT_DSN": audit_dsn}
    args = ["--data-dir", str(data), "--workers", str(workers)]
    rng = random.Random(f"{point}{workers}")
    answers: dict[bytes, Answer] = {}
    sent: list[bytes] = []
    for r in range(3):
        fresh = [make_pcs(10_000 * (r + 1) + i) for i in range(250)]
        resends = rng.sample(sorted(answers), min(40, len(answers)))
        sent += fresh
        srv = ServerProcess(
            tmp_path,
            f"round{r}",
            *args,
            env={**env, "FLK_TEST_CRASH_AT": f"{point}:{rng.randint(2, 12)}"},
        )
        try:
            await _send(srv.url, fresh + resends, answers)
            if workers > 1:  # the supervisor restarts the worker that killed itself
                for _ in range(100):
                    if any("restarting" in x.get("msg", "") for x in srv.log_lines()):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the crash trigger did not fire")
        finally:
            srv.kill()
        if workers == 1:
            assert srv.proc.returncode == -9, "the crash trigger did not fire"
    assert answers, "nothing was answered before the crashes"

    final = ServerProcess(tmp_path, "final", *args, env=env)
    try:
        again: dict[bytes, Answer] = dict(answers)
        await _send(final.url, sorted(answers), again)  # asserts identical bytes
    finally:
        assert final.stop() == 0

    # ship whatever the last shutdown left in any worker's spool (one LMDB handle of
    # an environment per process at a time)
    for w in range(workers):
        ledger = AsyncLedger(Ledger(data / "ledger", worker=w))
        audit = AuditLog(
            audit_dsn, tmp_path / f"q{w}", spool=ledger.spool, timeout_s=60
        )
        try:
            await audit.flush()
        finally:
            await audit.close()
            await ledger.close()
    store = Ledger(data / "ledger")
    try:
        inbox = {rec.data[1:] for rec in store.inbox()}
        for body in answers:
            assert body in inbox, "an answered request is missing from the inbox"
        ids = [json.loads(b)["pcs_id"] for b in sent]
        stored = {i for i, v in zip(ids, store.get_many(ids), strict=True) if v}
    finally:
        store.close()
    await assert_one_audit_row_each(audit_dsn, stored)
