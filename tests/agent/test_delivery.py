"""agent/delivery.py: one client factory, one escalation rule, for the agent and
``flk outbox replay`` alike."""

from __future__ import annotations

import asyncio
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
