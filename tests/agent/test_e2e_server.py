"""The agent against the REAL server (``flk serve`` on LMDB) in subprocesses.

Crash tests: kill -9 the agent mid-drain, or the server (twice), restart, and check
that every window of the input was delivered and judged exactly once: the server's
dedup store holds exactly the expected pcs_ids (one per window, epochs 1..n) and
nothing else, and its accepted counter equals the number of windows.

The agent is the real CLI with the built-in (compiled) summarizer; the expected ids come
from the plain oracle of tests/agent/plainsum.py, so they also cross-check the two.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flk_fast.agent.source import parse_csv_block
from flk_fast.agent.windows import Windower

from . import plainsum
from .realserver import Server, env, metric

WINDOW = 250


def make_input(path: Path, n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as f:
        f.write("timestamp,x,y,z\n")
        for i in range(n):
            f.write(
                f"{i * 0.01:.2f},{rnd.random():.4f},{rnd.random():.4f},"
                f"{rnd.random():.4f}\n"
            )


def expected_ids(path: Path, shard: str = "s1") -> list[str]:
    b, _ = parse_csv_block(path.read_bytes())
    w = Windower(WINDOW)
    windows = w.push(b)
    last = w.flush()
    if last is not None:
        windows.append(last)
    return [
        plainsum.summarize(x.points, x.rows, shard_id=shard, epoch=e).pcs_id
        for e, x in enumerate(windows, 1)
    ]


def agent_cmd(server: Server, src: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flk_fast",
        "agent",
        "--endpoint",
        server.url,
        "--in",
        str(src),
        "--shard-id",
        "s1",
        "--window",
        str(WINDOW),
        "--data-dir",
        str(data),
        "--hmac-key-file",
        str(server.key),
        "--progress",
        "log",
        *extra,
    ]


def wait_for(pred, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_kill9_agent_mid_drain_then_restart(
    server: Server, tmp_path: Path, workers: str
) -> None:
    src = tmp_path / "events.csv"
    make_input(src, 40 * WINDOW + 17)  # 41 windows, the last one partial
    ids = expected_ids(src)
    data = tmp_path / "agent"
    # Slow delivery down (one request at a time, few in flight) so the kill lands
    # while PCS are both pending in the outbox and not yet made.
    cmd = agent_cmd(
        server, src, data, "--concurrency", "1", "--max-inflight", "2",
        "--workers", workers,
    )  # fmt: skip
    with open(tmp_path / "agent1.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env(), stdout=log, stderr=log)
        wait_for(lambda: metric(server.url, "flk_ingest_total") >= 8)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = metric(server.url, "flk_ingest_total")
    assert before < len(ids), "the agent finished before it was killed"
    out = subprocess.run(
        cmd + ["--exit-when-drained"], env=env(), capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    summary = out.stdout.decode()
    assert "dead_lettered=0" in summary
    # Every window judged once: accepted counts first judgements only (resends of a
    # PCS whose answer was lost are dedup hits).
    assert metric(server.url, "flk_accepted_total") + metric(
        server.url, "flk_escalated_total"
    ) == len(ids)
    server.stop()
    assert server.stored_outcomes(ids) == (len(ids), [True] * len(ids))


def test_kill9_server_mid_drain_twice(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    make_input(src, 60 * WINDOW, seed=1)
    ids = expected_ids(src)
    data = tmp_path / "agent"
    cmd = agent_cmd(
        server,
        src,
        data,
        "--concurrency",
        "2",
        "--max-inflight",
        "4",
        "--retry-base",
        "0.2",
        "--max-retries",
        "8",
        "--exit-when-drained",
    )
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # ingest_total restarts from 0 with each server process.
        for threshold in (10, 15):
            wait_for(lambda t=threshold: metric(server.url, "flk_ingest_total") >= t)
            server.kill9()
            time.sleep(0.3)
            server.start()
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "dead_lettered=0" in out.decode() and f"windows={len(ids)}" in out.decode()
    server.stop()
    # The store holds one outcome for each window's pcs_id and nothing else.
    assert server.stored_outcomes(ids) == (len(ids), [True] * len(ids))


def test_cli_malformed_skip_and_stop(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    make_input(src, 2 * WINDOW)
    with open(src, "a") as f:
        f.write("9.99,0.1,not-a-number,0.3\n9.99,0.1,0.2\n")
    data = tmp_path / "agent"
    stop = subprocess.run(
        agent_cmd(server, src, data, "--on-malformed", "stop", "--exit-when-drained"),
        env=env(),
        capture_output=True,
        timeout=60,
    )
    assert stop.returncode == 2
    assert (
        f"events.csv:{2 * WINDOW + 2}: a cell is not a number" in stop.stderr.decode()
    )
    assert "windows=2" in stop.stdout.decode()
    skip = subprocess.run(
        agent_cmd(server, src, data, "--exit-when-drained"),
        env=env(),
        capture_output=True,
        timeout=60,
    )
    assert skip.returncode == 0, skip.stderr.decode()
    err = skip.stderr.decode()
    assert (
        f"events.csv:{2 * WINDOW + 2}: skipped malformed line (a cell is not a number)"
        in err
    )
    assert (
        f"events.csv:{2 * WINDOW + 3}: skipped malformed line (expected 4 cells, got 3)"
        in err
    )
    assert "malformed=2" in skip.stdout.decode() and "windows=0" in skip.stdout.decode()


def test_agent_never_imports_numba(tmp_path: Path) -> None:
    """The embedded path (CLI, runner, client, built-in summarizer) leaves numba out."""
    code = (
        "import sys\n"
        "from flk_fast.cli import build_parser\n"
        "build_parser()\n"
        "import flk_fast.agent.runner, flk_fast.agent.client\n"
        "from flk_fast.agent.summarize import make_summarizer\n"
        "from flk_fast.agent.source import parse_csv_block\n"
        "from flk_fast.agent.windows import Windower\n"
        "from flk_fast.protocol.signing import HmacSigner\n"
        "b, _ = parse_csv_block(b'1,0.1,0.2,0.3\\n2,0.3,0.2,0.1\\n', 0, 2)\n"
        "w = Windower(10); w.push(b)\n"
        "make_summarizer(signer=HmacSigner(b'k'))(w.flush(), shard_id='s', epoch=1)\n"
        "assert 'numba' not in sys.modules, 'numba was imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()


def test_sigterm_in_follow_mode_exits_130_and_keeps_state(
    server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "events.csv"
    make_input(src, 3 * WINDOW + 10)
    data = tmp_path / "agent"
    # Follow mode without --exit-when-drained runs until a signal.
    cmd = agent_cmd(server, src, data, "--follow", "--poll", "0.05")
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: metric(server.url, "flk_accepted_total") >= 3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err.decode()[-2000:]
    # Appended events and the 10 waiting ones are summarised by the next run.
    with open(src, "a") as f:
        for i in range(WINDOW - 10):
            f.write(f"{100 + i},0.5,0.5,0.{i % 10}\n")
    again = subprocess.run(
        agent_cmd(
            server, src, data, "--follow", "--poll", "0.05", "--exit-when-drained"
        ),
        env=env(),
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert (
        "windows=1 " in again.stdout.decode()
        and f"events={WINDOW} " in again.stdout.decode()
    )
