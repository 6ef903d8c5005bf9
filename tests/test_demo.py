"""The README's main job, `flk demo`: a real server and a real agent, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_delivers_every_window(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flk_fast",
            "demo",
            "--events",
            "30000",
            "--window",
            "5000",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sent=6 accepted=6 escalated=0 dead_lettered=0" in out.stdout
    assert "demo: server ingested=6 accepted=6 escalated=0" in out.stdout
    assert (tmp_path / "events.csv").read_text().count("\n") == 30001
    # It ends with one escalation and with where the data is.
    assert "demo: an escalation, on purpose" in out.stdout
    assert "got HTTP 202 accepted=False escalated=True" in out.stdout
    assert f"flk outbox list --data-dir {tmp_path / 'agent'}" in out.stdout
    # --keep reuses the data: the agent resumes, nothing new is sent.
    again = subprocess.run(
        [sys.executable, "-m", "flk_fast", "demo", "--events", "30000", "--window",
         "5000", "--dir", str(tmp_path), "--keep"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "sent=0 " in again.stdout and "windows=0 " in again.stdout
