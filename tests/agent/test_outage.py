"""SPEC §7 self-healing against the REAL server: ``flk serve`` down two minutes under a
running ``flk agent --follow`` with the default retry policy (every window made during
the outage exhausts its 31 s budget and is dead-lettered), then up again: every window
is delivered, the DLQ is empty, and the server holds exactly one verdict per window."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .realserver import Server, env, metric
from .test_e2e_server import WINDOW, agent_cmd, expected_ids, wait_for

#: How long the server stays down; the issue asks for about two minutes. An override
#: (seconds) only for trying the test out quickly; CI runs the full outage.
OUTAGE_S = float(os.environ.get("FLK_TEST_OUTAGE_S", "120"))


def append_rows(path: Path, start: int, n: int) -> None:
    rnd = random.Random(start)
    with open(path, "a") as f:
        if start == 0:
            f.write("timestamp,x,y,z\n")
        for i in range(start, start + n):
            f.write(
                f"{i * 0.01:.2f},{rnd.random():.4f},{rnd.random():.4f},"
                f"{rnd.random():.4f}\n"
            )


def flk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flk_fast", *args],
        env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(OUTAGE_S + 240)
def test_two_minute_outage_heals_by_itself(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    append_rows(src, 0, 4 * WINDOW)
    data = tmp_path / "agent"
    # The probe backoff is capped at 10 s (default 60) so that recovery is seen
    # within a bounded part of the test's time; the retry policy is the default.
    cmd = agent_cmd(server, src, data, "--follow", "--redrive-max-wait", "10")
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(cmd, env=env(), stdout=log, stderr=log)
    try:
        wait_for(lambda: metric(server.url, "flk_accepted_total") >= 4)
        server.kill9()
        t_down = time.monotonic()
        append_rows(src, 4 * WINDOW, 6 * WINDOW)  # six windows made while it is down
        wait_for(lambda: b"dead-lettered" in log_path.read_bytes(), timeout=90)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
        assert agent.poll() is None, "the agent stopped during the outage"

        def outbox() -> tuple[int, int]:  # read while the agent runs (no lock taken)
            doc = json.loads(flk("outbox", "status", "--data-dir", str(data),
                                 "--json").stdout)  # fmt: skip
            return doc["pending"], doc["dead_letters"]

        assert outbox() == (0, 6), "the outage did not dead-letter its six windows"
        server.start()
        # Every window acknowledged and nothing left in the DLQ, the agent still up.
        wait_for(lambda: outbox() == (0, 0), timeout=90)
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    text = log_path.read_text()
    assert text.count("dead-lettered:") >= 6, text[-3000:]
    assert "re-driving" in text, text[-3000:]
    dlq = flk("dlq", "list", "--data-dir", str(data), "--json")
    assert dlq.returncode == 0 and dlq.stdout.strip() == "", dlq.stdout + dlq.stderr
    ids = expected_ids(src)
    assert len(ids) == 10
    server.stop()
    assert server.stored_outcomes(ids) == (len(ids), [True] * len(ids))
