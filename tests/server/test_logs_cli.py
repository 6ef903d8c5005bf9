"""JSON log lines carry the request id; ``flk serve`` fails fast on bad keys/config."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from flk_fast.server.middleware import REQUEST_ID, JsonFormatter
from flk_fast.storage.dedup_memory import MemoryDedup

from .conftest import JSON, SUBMIT, VECTOR_BYTES


def test_json_formatter_adds_request_id_and_extras() -> None:
    fmt = JsonFormatter()
    rec = logging.LogRecord(
        "flk_fast.server", logging.INFO, __file__, 1, "hello %s", ("world",), None
    )
    rec.status = 200
    token = REQUEST_ID.set("abc-1")
    try:
        doc = json.loads(fmt.format(rec))
    finally:
        REQUEST_ID.reset(token)
    assert doc["msg"] == "hello world" and doc["request_id"] == "abc-1"
    assert doc["status"] == 200 and doc["level"] == "info"


async def test_access_log_line_per_request(make_client: Any, caplog: Any) -> None:
    client = await make_client(dedup=MemoryDedup(), access_log=True)
    with caplog.at_level(logging.INFO, logger="flk_fast.server.access"):
        resp = await client.post(
            SUBMIT, data=VECTOR_BYTES, headers={**JSON, "X-Request-Id": "req-42"}
        )
    assert resp.status == 200
    lines = [r for r in caplog.records if r.name == "flk_fast.server.access"]
    assert lines and lines[-1].request_id == "req-42" and lines[-1].status == 200
    assert "testsecret" not in caplog.text


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flk_fast", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_fails_fast_with_one_clear_line(tmp_path: Path) -> None:
    r = _serve("--data-dir", str(tmp_path), "--hmac-key-file", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("flk: error: ")
    assert "nope" in r.stderr
    r = _serve("--data-dir", str(tmp_path), "--sign-alg", "ed25519")
    assert r.returncode == 2 and "--ed25519-public-key-file" in r.stderr
    r = _serve("--port", "99999")
    assert r.returncode == 2 and "--port" in r.stderr
    key = tmp_path / "k"
    key.write_bytes(b"k")
    r = _serve(
        "--data-dir",
        str(tmp_path),
        "--hmac-key-file",
        str(key),
        "--workers",
        "2",
        "--tls-cert",
        str(tmp_path / "no.crt"),
        "--tls-key",
        str(tmp_path / "no.key"),
    )
    assert r.returncode == 2 and r.stderr.startswith("flk: error: TLS")
