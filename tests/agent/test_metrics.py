"""``flk_agent_*`` metrics: served on a port and written as a node-exporter textfile;
the values follow what the run did (against the fault-injecting server)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flk_fast.agent.runner import Agent
from flk_fast.errors import ConfigError

from .test_redrive import fast_client
from .test_runner import cfg, fault, summarize, write_csv

__all__ = ["fault"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


async def test_metrics_port_and_textfile(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 200)  # four windows
    from flk_fast.agent.source import parse_csv_block
    from flk_fast.agent.windows import Windower

    b, _ = parse_csv_block(src.read_bytes())
    ids = [
        summarize(w, shard_id="s1", epoch=e).pcs_id
        for e, w in enumerate(Windower(50).push(b), 1)
    ]
    fault.script[ids[0]] = ["401"]
    fault.script[ids[1]] = ["503"] * 3  # dead, transient; the probe says still down
    fault.script[ids[2]] = ["202"]
    fault.ready = [503] * 50
    port, prom = free_port(), tmp_path / "agent.prom"
    config = cfg(
        fault, tmp_path, metrics_port=port, metrics_textfile=prom, metrics_every_s=0.05
    )
    before = time.time()
    async with Agent(config, summarize=summarize, client=fast_client(fault)) as a:
        await a.run_file(src)
        await a.drain()
        await asyncio.sleep(0.2)  # a refresh of the outbox gauges
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
    m = samples(text)
    assert m[("flk_agent_events_total", ())] == 200
    assert m[("flk_agent_windows_total", ())] == 4
    assert m[("flk_agent_acked_total", ())] == 2
    assert m[("flk_agent_escalated_total", ())] == 1
    assert m[("flk_agent_retries_total", ())] == 2
    assert m[("flk_agent_dead_lettered_total", (("reason", "rejected"),))] == 1
    assert m[("flk_agent_dead_lettered_total", (("reason", "transient"),))] == 1
    assert m[("flk_agent_dead_lettered_total", (("reason", "lost"),))] == 0
    assert m[("flk_agent_dlq_entries", ())] == 2
    assert m[("flk_agent_pending", ())] == 0
    assert m[("flk_agent_outbox_bytes", ())] > 0
    assert m[("flk_agent_delivery_seconds_count", ())] == 4
    assert before <= m[("flk_agent_last_delivery_timestamp_seconds", ())] <= time.time()
    # The textfile written at close holds the same counters.
    t = samples(prom.read_text())
    assert (
        t[("flk_agent_acked_total", ())] == 2 and t[("flk_agent_dlq_entries", ())] == 2
    )
    # The port is closed with the agent.
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


async def test_metrics_port_in_use_and_unwritable_textfile(
    fault: Any, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agent = Agent(
            cfg(fault, tmp_path, metrics_port=port),
            summarize=summarize,
            client=fast_client(fault),
        )
        with pytest.raises(ConfigError, match=f"--metrics-port {port}: cannot listen"):
            await agent.start()
        await agent.close()
    agent = Agent(
        cfg(fault, tmp_path, metrics_textfile=tmp_path / "no" / "dir" / "a.prom"),
        summarize=summarize,
        client=fast_client(fault),
    )
    with pytest.raises(ConfigError, match="--metrics-textfile .*cannot write"):
        await agent.start()
    await agent.close()


@pytest.mark.parametrize("fmt", ["json", "auto"])  # auto: stderr is a pipe here
def test_logs_are_json_lines_off_a_terminal(tmp_path: Path, fmt: str) -> None:
    import json
    import subprocess
    import sys

    from .realserver import env

    src = tmp_path / "in.csv"
    src.write_text("")
    key = tmp_path / "k"
    key.write_bytes(b"secret")
    out = subprocess.run(
        [sys.executable, "-m", "flk_fast", "agent", "--endpoint", "http://127.0.0.1:9",
         "--in", str(src), "--shard-id", "s", "--data-dir", str(tmp_path / "d"),
         "--hmac-key-file", str(key), "--progress", "log", "--log-format", fmt],
        env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    docs = [json.loads(x) for x in lines]  # every line is one JSON object
    assert docs and {"ts", "level", "logger", "msg"} <= set(docs[0])
    assert any(d["msg"].startswith("progress: events=0") for d in docs)
