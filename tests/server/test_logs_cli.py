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


def test_cli_refuses_a_bad_dedup_url(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"k")
    base = ("--data-dir", str(tmp_path), "--hmac-key-file", str(key), "--port", "0")
    for url, word in (
        ("foo://x", "unknown scheme"),
        ("lmdb://", "lmdb needs a path"),
        ("redis://h:abc/0", "bad port"),
        ("postgresql://u:pw@h:99999/db", "bad port"),
    ):
        r = _serve(*base, "--dedup", url)
        assert r.returncode == 2, (url, r.stderr)
        assert r.stderr.startswith("flk: error: --dedup") and word in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "pw" not in r.stderr


async def test_fatal_start_up_error_stops_the_process(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """An unexpected error while opening the store is logged and ends serve() with 1
    instead of leaving /ready 503 forever."""
    import asyncio

    from flk_fast.errors import ConfigError
    from flk_fast.server import runner

    from .conftest import make_cfg

    def broken(url: str, **kw: Any) -> Any:
        raise ConfigError("dedup URL 'x://': refused")

    monkeypatch.setattr("flk_fast.storage.open_dedup", broken)
    monkeypatch.setattr(runner, "_warm_up", lambda: None)
    monkeypatch.setattr("gc.freeze", lambda: None)
    cfg = make_cfg(tmp_path, port=0, dedup=f"lmdb://{tmp_path}/dedup")
    code = await asyncio.wait_for(
        runner._serve(cfg, 0, 1, reuse_port=False, ready_conn=None), 10
    )
    assert code == 1
    assert any(
        "start-up failed" in r.getMessage() and "refused" in r.getMessage()
        for r in caplog.records
    )


def test_memory_dedup_needs_the_unsafe_flag(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"k")
    base = ("--data-dir", str(tmp_path), "--hmac-key-file", str(key), "--port", "0")
    r = _serve(*base, "--dedup", "memory://")
    assert r.returncode == 2 and "--unsafe-memory-dedup" in r.stderr
    r = _serve(*base, "--dedup", "memory://", "--unsafe-memory-dedup", "--workers", "2")
    assert r.returncode == 2 and "--workers" in r.stderr


async def test_malformed_http_is_counted_not_logged_with_a_traceback(
    make_client: Any, caplog: Any
) -> None:
    import asyncio

    client = await make_client(dedup=MemoryDedup())
    caplog.set_level(logging.INFO)
    for junk in (
        b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\n",
    ):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(junk)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.split(b" ", 2)[1] == b"400", head
    await asyncio.sleep(0.05)
    noisy = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert noisy == [], [r.getMessage() for r in noisy]
    text = await (await client.get("/metrics")).text()
    assert "flk_bad_http_total 2.0" in text
