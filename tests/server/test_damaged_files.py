"""A truncated LMDB file of the server (dedup store or inbox WAL) never kills it
silently (SIGBUS): ``flk serve`` exits 1 with a message naming the file and the fix."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest

from .conftest import JSON, SUBMIT, make_pcs
from .procs import ServerProcess, serve_command


async def _fill(tmp_path: Path, data: Path, *args: str) -> None:
    srv = ServerProcess(tmp_path, "fill", "--data-dir", str(data), *args)
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(300):
                async with s.post(
                    srv.url + SUBMIT, data=make_pcs(i), headers=JSON
                ) as r:
                    assert r.status == 200
    finally:
        assert srv.stop() == 0


def _start(tmp_path: Path, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = serve_command(tmp_path, "--data-dir", str(data), *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("which", ["ledger", "dedup", "inbox"])
def test_truncated_lmdb_file_exits_1_naming_it(tmp_path: Path, which: str) -> None:
    # "ledger": the default layout; "dedup", "inbox": with --dedup lmdb://, a
    # separate dedup store and inbox WAL
    data = tmp_path / "data"
    args = () if which == "ledger" else ("--dedup", f"lmdb://{data}/dedup")
    asyncio.run(_fill(tmp_path, data, *args))
    root = data / which
    files = sorted(root.rglob("data.mdb"), key=lambda p: p.stat().st_size)
    assert files, f"no data.mdb under {root}"
    victim = files[-1]
    size = victim.stat().st_size
    with open(victim, "r+b") as fh:
        fh.truncate(size // 3)
    done = _start(tmp_path, data, *args)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert str(victim) in out and "truncated" in out, out
    assert "move" in out and "aside" in out, out  # says what to do
    assert "Traceback" not in out, out
