"""deploy/systemd/flk-agent.service: systemd itself accepts it, it is hardened, and
its ExecStart is a command line ``flk agent`` accepts."""

from __future__ import annotations

import argparse
import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import _require

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "flk-agent.service"


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    _require("systemd-analyze", None if tool else "it is not installed (apt systemd)")
    assert tool is not None
    return subprocess.run(
        [tool, "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


def service() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    cp.read_string(UNIT.read_text().replace("\\\n", " "))
    return cp["Service"]


def test_systemd_analyze_verify_accepts_the_unit() -> None:
    out = verify(UNIT)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    bad = tmp_path / "flk-agent.service"
    bad.write_text(UNIT.read_text().replace("ProtectSystem=", "ProtectSytem="))
    assert "Unknown key 'ProtectSytem'" in verify(bad).stderr


def test_the_unit_is_hardened() -> None:
    s = service()
    assert s["DynamicUser"] == "yes" and s["StateDirectory"] == "flk-agent"
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["Restart"] == "on-failure" and s["RestartPreventExitStatus"] == "2"
    assert s["CapabilityBoundingSet"] == ""


def test_exec_start_is_a_valid_agent_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from flk_fast.cli import agent as cli_agent

    argv = shlex.split(service()["ExecStart"])
    assert argv[:3] == ["/usr/bin/env", "flk", "agent"]
    parser = argparse.ArgumentParser()
    cli_agent.register(parser.add_subparsers())
    args = parser.parse_args(argv[2:])  # argparse exits on an unknown flag
    assert (args.data_dir, args.hmac_key_file) == ("%S/flk-agent", "%d/hmac.key")
    assert args.follow is True and args.log_format == "json"
