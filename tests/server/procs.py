"""Start real ``flk serve`` processes for the multi-process tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp


def serve_command(tmp: Path, *args: str, key: bytes = b"testsecret") -> list[str]:
    """``python -m flk_fast serve`` on a free port, keyed by ``tmp/hmac.key``."""
    key_file = tmp / "hmac.key"
    key_file.write_bytes(key)
    return [
        sys.executable,
        "-m",
        "flk_fast",
        "serve",
        "--port",
        "0",
        "--hmac-key-file",
        str(key_file),
        "--drain-timeout-s",
        "5",
        *args,
    ]


class ServerProcess:
    """One ``python -m flk_fast serve`` child; ``port`` is read from its ready line."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        key: bytes = b"testsecret",
        timeout: float = 30.0,
    ) -> None:
        self.log_path = tmp / f"{name}.log"
        cmd = serve_command(tmp, *args, key=key)
        if "--data-dir" not in args:
            cmd += ["--data-dir", str(tmp / f"{name}-data")]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.port = self._wait_ready(timeout)
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"event":"ready"' in line:
                    return int(json.loads(line)["port"])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError("server did not get ready:\n" + self.log_path.read_text())

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
