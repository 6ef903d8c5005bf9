"""SPEC §7 self-healing: transient dead letters are re-driven once the server answers;
4xx dead letters stay for an operator. Against the fault-injecting server."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from flk_fast.agent.client import DeliveryClient
from flk_fast.agent.outbox import Outbox
from flk_fast.agent.retry import RetryPolicy, delay_bounds, is_transient
from flk_fast.agent.runner import Agent, AgentConfig

from .faults import FakeSleep
from .pcsgen import make_body, make_pcs
from .test_runner import cfg, client, fault, summarize, write_csv

__all__ = ["fault"]  # the fixture, imported for pytest

FAST = RetryPolicy(max_retries=2)


def fast_client(fs: Any) -> DeliveryClient:
    """Sends a record at most 3 times (FAST), never really sleeping."""
    return DeliveryClient(fs.url, policy=FAST, sleep=FakeSleep(), rng=random.Random(5))


def test_transient_statuses() -> None:
    assert [
        s
        for s in (None, 400, 401, 404, 409, 413, 429, 500, 503, 599)
        if is_transient(s)
    ] == [None, 429, 500, 503, 599]


def seed_dlq(data: Path) -> tuple[str, str]:
    """One transient (503) and one final (401) dead letter, as an earlier run left."""
    with Outbox(data) as ob:
        seqs = ob.wal.append_many([make_body(1), make_body(2)])
        ob.dead_letter(
            seqs[0],
            make_body(1),
            status=503,
            reason="retries exhausted",
            attempts=6,
            transient=True,
        )
        ob.dead_letter(seqs[1], make_body(2), status=401, reason="HTTP 401", attempts=1)
    return make_pcs(1).pcs_id, make_pcs(2).pcs_id


async def test_redriver_probes_with_backoff_until_ready(
    fault: Any, tmp_path: Path
) -> None:
    transient_id, final_id = seed_dlq(tmp_path / "data")
    fault.ready = [503, 503, 503]  # three probes say "not yet", the fourth 200
    sleep = FakeSleep()
    config = cfg(fault, tmp_path, redrive_max_wait_s=3.0)
    async with Agent(
        config, summarize=summarize, client=client(fault), sleep=sleep
    ) as a:
        for _ in range(500):
            if fault.outcomes(transient_id):
                break
            await asyncio.sleep(0.01)
        await a.drain()
        s = a.summary
    assert fault.outcomes(transient_id) == ["200"] and fault.outcomes(final_id) == []
    assert fault.probes == 4 and s.redriven == 1 and s.accepted == 1
    # One wait before each probe: 1, 2, then capped at 3 s, jittered.
    probes = RetryPolicy(cap_s=3.0)
    assert len(sleep.waits) == 4
    for attempt, wait in enumerate(sleep.waits):
        lo, hi = delay_bounds(probes, attempt)
        assert lo <= wait <= hi, (attempt, wait)
    with Outbox(tmp_path / "data") as ob:
        left = ob.dead_letters()
        assert list(ob.pending()) == []
    assert [(d.pcs_id, d.status, d.transient) for d in left] == [(final_id, 401, False)]


async def test_outage_then_recovery_at_drain(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)
    # Both windows fail with 500 through their whole budget (1 + 2 retries).
    from flk_fast.agent.source import parse_csv_block
    from flk_fast.agent.windows import Windower

    b, _ = parse_csv_block(src.read_bytes())
    ids = [
        summarize(w, shard_id="s1", epoch=e).pcs_id
        for e, w in enumerate(Windower(50).push(b), 1)
    ]
    for pcs_id in ids:
        fault.script[pcs_id] = ["500"] * 3
    fault.ready = [503]  # the probe at drain: still down
    async with Agent(
        cfg(fault, tmp_path, policy=FAST),
        summarize=summarize,
        client=fast_client(fault),
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert (a.summary.dead_lettered, a.summary.redriven, a.summary.in_dlq) == (2, 0, 2)
    with Outbox(tmp_path / "data") as ob:
        assert [(d.status, d.transient) for d in ob.dead_letters()] == [
            (500, True),
            (500, True),
        ]
    # The next run (nothing new to read) finds them and, the server being back,
    # delivers them: nothing is left in the DLQ.
    async with Agent(
        cfg(fault, tmp_path, policy=FAST),
        summarize=summarize,
        client=fast_client(fault),
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert (a.summary.redriven, a.summary.accepted, a.summary.in_dlq) == (2, 2, 0)
    assert [fault.outcomes(i) for i in ids] == [["500"] * 3 + ["200"]] * 2
    with Outbox(tmp_path / "data") as ob:
        assert ob.dead_letters() == [] and list(ob.pending()) == []


async def test_no_ack_after_a_redrive_stops_drain(fault: Any, tmp_path: Path) -> None:
    """A server whose /ready says 200 but whose submits fail must not keep drain()
    re-driving forever: one round without an ack ends it."""
    src = tmp_path / "in.csv"
    write_csv(src, 50)
    from flk_fast.agent.source import parse_csv_block
    from flk_fast.agent.windows import Windower

    b, _ = parse_csv_block(src.read_bytes())
    (w,) = Windower(50).push(b)
    pcs_id = summarize(w, shard_id="s1", epoch=1).pcs_id
    fault.script[pcs_id] = ["502"] * 30
    async with Agent(
        cfg(fault, tmp_path, policy=FAST),
        summarize=summarize,
        client=fast_client(fault),
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert fault.outcomes(pcs_id) == ["502"] * 6  # first round + one re-drive
    assert (a.summary.dead_lettered, a.summary.redriven, a.summary.in_dlq) == (2, 1, 1)


async def test_probe_of_a_server_that_is_not_there(tmp_path: Path) -> None:
    async with DeliveryClient(
        "http://127.0.0.1:9", sleep=FakeSleep(), rng=random.Random(1), timeout_s=0.5
    ) as c:
        assert await c.probe() is False


def test_redrive_max_wait_is_checked(tmp_path: Path) -> None:
    import pytest

    from flk_fast.errors import ConfigError

    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--redrive-max-wait"):
            AgentConfig(
                endpoint="http://h",
                shard_id="s",
                data_dir=tmp_path,
                redrive_max_wait_s=bad,
            )
