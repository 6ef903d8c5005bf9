"""agent/delivery.py: one client factory, one escalation rule, for the agent and
``flk outbox replay`` alike."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flk_fast.agent import delivery
from flk_fast.agent.client import ACKED, DEAD, DeliveryResult
from flk_fast.agent.outbox import Outbox
from flk_fast.agent.runner import Agent
from flk_fast.cli import main

from .pcsgen import make_body
from .test_runner import cfg, fault, summarize, write_csv
from .test_runner import client as fake_client

__all__ = ["fault"]


@pytest.mark.parametrize(
    ("status", "verdict", "expected"),
    [(200, None, False), (202, None, True), (202, False, False), (200, True, True)],
)
def test_escalated_rule(status: int, verdict: bool | None, expected: bool) -> None:
    res = DeliveryResult(ACKED, status, 1, "", escalated=verdict)
    assert delivery.escalated(res) is expected


def test_transient_results() -> None:
    assert DeliveryResult(DEAD, None, 6, "timeout").transient
    assert DeliveryResult(DEAD, 503, 6, "x").transient
    assert not DeliveryResult(DEAD, 401, 1, "x").transient
    assert not DeliveryResult(ACKED, 200, 1, "").transient


async def test_agent_built_client_sends_the_tenant(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)
    async with Agent(cfg(fault, tmp_path, tenant_id="acme"), summarize=summarize) as a:
        await a.run_file(src)
        await a.drain()
    assert fault.tenants == ["acme", "acme"]


async def test_replay_counts_a_bare_202_as_escalated(
    fault: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same rule as the agent's: a 202 without verdict JSON is an escalation."""
    data = tmp_path / "data"
    with Outbox(data) as ob:
        ob.wal.append_many([make_body(1), make_body(2)])
    from .pcsgen import make_pcs

    fault.script[make_pcs(1).pcs_id] = ["202:0"]  # a 202 whose JSON has no verdict
    argv = ["outbox", "replay", "--data-dir", str(data), "--endpoint", fault.url,
            "--tenant-id", "t1"]  # fmt: skip
    # In a thread: the fault server answers on this test's event loop.
    assert await asyncio.to_thread(main, argv) == 0
    assert "escalated 1" in capsys.readouterr().out
    assert fault.tenants == ["t1", "t1"]
    # The verdicts were kept with the acks, by the same rule.
    assert main(["outbox", "list", "--data-dir", str(data), "--json"]) == 0
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["epoch"], d["state"], d["verdict"]) for d in docs] == [
        (1, "acked", {"verdict": "escalated", "status": 202}),
        (2, "acked", {"verdict": "accepted", "status": 200}),
    ]


async def test_the_agent_keeps_each_verdict_with_its_ack(
    fault: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flk_fast.agent.source import parse_csv_block
    from flk_fast.agent.windows import Windower

    src = tmp_path / "in.csv"
    write_csv(src, 150)  # three windows of 50
    batch, _ = parse_csv_block(src.read_bytes())
    ids = [
        summarize(w, shard_id="s1", epoch=e).pcs_id
        for e, w in enumerate(Windower(50).push(batch), 1)
    ]
    fault.script[ids[1]] = ["202"]  # escalated, "regime mismatch"
    fault.script[ids[2]] = ["500", "200"]  # accepted on the second try
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=fake_client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert (a.summary.accepted, a.summary.escalated) == (2, 1)
    data = str(tmp_path / "data")
    assert main(["outbox", "list", "--data-dir", data, "--json"]) == 0
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["epoch"], d["verdict"]) for d in docs] == [
        (1, {"verdict": "accepted", "status": 200}),
        (2, {"verdict": "escalated", "status": 202, "reason": "regime mismatch"}),
        (3, {"verdict": "accepted", "status": 200}),
    ]
    assert main(["outbox", "list", "--data-dir", data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.rsplit("\t", 1)[1] for x in lines] == [
        "verdict=accepted",
        "verdict=escalated: regime mismatch",
        "verdict=accepted",
    ]
    assert main(["outbox", "show", "--data-dir", data, str(docs[1]["seq"])]) == 0
    out = capsys.readouterr().out
    assert "verdict: escalated: regime mismatch (HTTP 202)" in out
