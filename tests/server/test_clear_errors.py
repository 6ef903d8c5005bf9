"""Clear errors a first-time user met (issue 11), each against a real server.

``flk serve`` processes (``procs.ServerProcess`` or the CLI in a subprocess) where the
answer depends on the process (start-up, the CLI, aiohttp's own error answers); the
in-process loopback server of ``make_client`` where a broken collaborator is injected.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flk_fast.errors import ConfigError
from flk_fast.server.config import ServerConfig, check_dedup_url
from flk_fast.server.middleware import JsonFormatter
from flk_fast.storage import open_dedup, redact
from flk_fast.storage.dedup_memory import MemoryDedup

from .conftest import JSON, KEY, SUBMIT, make_pcs
from .procs import ServerProcess

ONE_LOOP = pytest.mark.asyncio(loop_factories=["asyncio"])
SECRET = "Secr3tPW"
#: Every scheme open_dedup knows, with a password holding "/" (which no URL parser
#: reads as a password) and one holding "?" and "#".
SCHEMES = (
    "redis://bob:{pw}@127.0.0.1:6379",
    "rediss://bob:{pw}@127.0.0.1:6379/0",
    "unix://bob:{pw}@/tmp/redis.sock",
    "redis+cluster://bob:{pw}@127.0.0.1:7000,127.0.0.1:7001",
    "rediss+cluster://bob:{pw}@127.0.0.1:7000",
    "redis+sentinel://bob:{pw}@127.0.0.1:26379/svc",
    "rediss+sentinel://bob:{pw}@127.0.0.1:26379/svc",
    "postgresql://bob:{pw}@127.0.0.1:5432/db",
    "postgres://bob:{pw}@127.0.0.1:5432,127.0.0.1:5433/db",
    "lmdb://bob:{pw}@",
    "nosuch://bob:{pw}@127.0.0.1",
)
PASSWORDS = (f"{SECRET}/rest", f"{SECRET}?x#y", f"{SECRET}@x/y")


def _flk(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flk_fast", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------- URL passwords
@pytest.mark.parametrize("pw", PASSWORDS)
@pytest.mark.parametrize("template", SCHEMES)
def test_no_dedup_url_error_shows_the_password(
    template: str, pw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: "... bad port (Port could not be cast to integer value as 'Secr3tPW')".
    monkeypatch.chdir(tmp_path)  # lmdb://bob:...@ is a relative path: made here
    url = template.format(pw=pw)
    try:
        check_dedup_url(url)
        store = open_dedup(url)
    except ConfigError as exc:
        text = str(exc)
    else:
        close = getattr(store, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                asyncio.run(res)
        text = redact(repr(store), url)
    assert SECRET not in text, text


def test_a_password_holding_a_slash_is_told_to_percent_encode_it(
    tmp_path: Path,
) -> None:
    r = _flk(
        "--dedup",
        f"redis://bob:{SECRET}/rest@127.0.0.1:6379",
        "--sign-alg",
        "none",
        "--data-dir",
        str(tmp_path / "d"),
    )
    assert r.returncode != 0
    assert SECRET not in r.stdout + r.stderr
    assert "percent-encode" in r.stderr and "***" in r.stderr, r.stderr


def test_the_one_redactor_masks_pieces_of_the_password() -> None:
    url = f"redis://bob:{SECRET}/rest@h:1"
    assert redact(f"value as '{SECRET}'", url) == "value as '***'"
    assert redact(f"postgresql://u:{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert redact(f"host=h password={SECRET} user=u") == "host=h password=*** user=u"
    assert redact("port 'restless'", url) == "port 'restless'"  # whole pieces only


# ------------------------------------------------------------- start-up
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_log(path: Path, needle: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [
            json.loads(line)
            for line in path.read_text(errors="replace").splitlines()
            if line.startswith("{")
        ]
        if any(needle in json.dumps(d) for d in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged:\n{path.read_text()}")


@pytest.fixture
def flk_proc(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: Path) -> subprocess.Popen[bytes]:
        key = tmp_path / "hmac.key"
        key.write_bytes(KEY)
        with open(log, "wb") as out:
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flk_fast",
                    "serve",
                    "--hmac-key-file",
                    str(key),
                    "--drain-timeout-s",
                    "2",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        if resp.content_type != "application/json":
            return resp.status, {}
        return resp.status, await resp.json()


@ONE_LOOP
async def test_unreachable_redis_is_named_at_start_and_no_ready_line(
    tmp_path: Path, flk_proc: Any
) -> None:
    # Was: "event: ready" logged while /ready answered 503.
    dead, port = _free_port(), _free_port()
    log = tmp_path / "serve.log"
    flk_proc(
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "d"),
        "--dedup",
        f"redis://:{SECRET}@127.0.0.1:{dead}/0",
        log=log,
    )
    lines = _wait_log(log, '"event": "waiting"')
    msg = next(d["msg"] for d in lines if d.get("event") == "waiting")
    assert f"127.0.0.1:{dead}" in msg and "unreachable" in msg, msg
    assert "refused" in msg.lower(), msg  # the cause, not a class name
    assert SECRET not in log.read_text()
    status, doc = await _get(f"http://127.0.0.1:{port}/ready")
    assert status == 503 and "unreachable" in doc["detail"], doc
    assert "refused" in doc["detail"].lower(), doc
    assert (await _get(f"http://127.0.0.1:{port}/health"))[0] == 200
    assert '"event":"ready"' not in log.read_text()
    assert not any(d.get("event") == "ready" for d in lines)

    server = shutil.which("redis-server")
    if server is None:
        return
    # ... and goes ready once Redis answers (durable, as start-up demands).
    redis = subprocess.Popen(
        [
            server,
            "--port",
            str(dead),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(tmp_path),
            "--requirepass",
            SECRET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_log(log, '"event": "ready"', timeout=30)
        assert (await _get(f"http://127.0.0.1:{port}/ready"))[0] == 200
    finally:
        redis.terminate()
        redis.wait(10)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--data-dir", "{tmp}/afile"), "--data-dir {tmp}/afile: is a file"),
        (("--data-dir", "{tmp}/afile/sub"), "--data-dir {tmp}/afile/sub: a parent"),
        (("--host", "10.0.0.999"), "--host 10.0.0.999: not an address"),
        (("--host", "10.0.0.999", "--workers", "2"), "--host 10.0.0.999: not an"),
    ],
)
def test_os_errors_at_start_name_the_option(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    (tmp_path / "afile").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--data-dir" not in argv:
        argv += ["--data-dir", str(tmp_path / "d")]
    r = _flk("--sign-alg", "none", *argv)
    assert r.returncode != 0
    assert expected.format(tmp=tmp_path) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "[Errno" not in r.stderr, r.stderr


@ONE_LOOP
async def test_a_disk_full_restart_says_so_in_ready(
    tmp_path: Path, tiny_disk: Path, flk_proc: Any
) -> None:
    # Was: /ready said "replaying inbox WAL" for as long as the disk stayed full.
    data = tiny_disk / "data"
    empty, first = f"lmdb://{tiny_disk}/empty", f"lmdb://{tiny_disk}/first"
    # An empty dedup store for the restart, made beforehand: LMDB creating a fresh
    # one on a full tmpfs dies of SIGBUS (reported; dedup_lmdb.py is not ours here).
    ServerProcess(tmp_path, "prep", "--data-dir", str(data), "--dedup", empty).stop()
    # A run killed right after storing its first verdict, before the WAL ack: the
    # restart has a record to replay, and its verdict to write into the empty store.
    srv = ServerProcess(
        tmp_path,
        "first",
        "--data-dir",
        str(data),
        "--dedup",
        first,
        env={"FLK_TEST_CRASH_AT": "after-insert:1"},
    )
    try:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.post(srv.url + SUBMIT, data=make_pcs(1), headers=JSON):
                    pass
        assert srv.proc.wait(10) == -signal.SIGKILL
    finally:
        srv.kill()
    with open(tiny_disk / "fill", "wb") as f:  # leave no room at all
        try:
            while True:
                f.write(bytes(65536))
                f.flush()
        except OSError:
            pass
    port = _free_port()
    log = tmp_path / "second.log"
    flk_proc("--port", str(port), "--data-dir", str(data), "--dedup", empty, log=log)
    deadline = time.monotonic() + 20
    status, doc = 0, {}
    while time.monotonic() < deadline:
        try:
            status, doc = await _get(f"http://127.0.0.1:{port}/ready")
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
            continue
        if "disk full" in doc.get("detail", ""):
            break
        await asyncio.sleep(0.1)
    assert status == 503, doc
    assert doc["detail"].startswith("disk full"), (doc, log.read_text()[-2000:])
    assert "No space left on device" in doc["detail"], doc
    assert "disk full" in log.read_text()  # and the log says it too


# ------------------------------------------------------------- request errors
class _Broken(MemoryDedup):
    async def put_if_absent(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the store\nwith a second line")


async def test_a_failed_request_logs_one_short_line(make_client: Any) -> None:
    # Was: a 1.6 KB traceback per request.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("flk_fast.server")
    logger.addHandler(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        client = await make_client(dedup=_Broken())
        for i in range(3):
            resp = await client.post(SUBMIT, data=make_pcs(i), headers=JSON)
            assert resp.status == 500
            assert (await resp.json())["error"] == "internal"
    finally:
        logger.removeHandler(handler)
        root.setLevel(level)
    lines = [ln for ln in out.getvalue().splitlines() if "unhandled error" in ln]
    assert len(lines) == 3, out.getvalue()
    for line in lines:
        doc = json.loads(line)
        assert len(line) < 600, line
        assert "Traceback" not in line
        assert doc["exc"] == "RuntimeError: a bug in the store with a second line"
        assert doc["at"].endswith("put_if_absent"), doc


async def test_404_and_405_are_json_without_aiohttp_server_header(
    make_client: Any,
) -> None:
    client = await make_client(dedup=MemoryDedup())
    resp = await client.get("/nope")
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["error"] == "not_found"
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        resp = await client.post(path, data=b"x")
        assert resp.status == 405, path
        assert resp.content_type == "application/json", path
        doc = await resp.json()
        assert doc["error"] == "method_not_allowed" and "GET" in doc["detail"], doc
        assert "GET" in resp.headers["Allow"]
        assert resp.headers["X-Request-Id"]
    for resp in (await client.get("/health"), await client.get("/nope")):
        assert resp.headers["Server"] == "flk", resp.headers
    resp = await client.put(SUBMIT, data=b"{}", headers=JSON)
    assert resp.status == 405 and resp.headers["Server"] == "flk"


@ONE_LOOP
async def test_flk_serve_never_sends_the_aiohttp_server_header(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path, "hdr", "--sign-alg", "none")
    try:
        answers = []
        for raw in (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
            b"BREW /\x00 HTCPCP/9\r\n\r\n",  # answered by aiohttp's parser itself
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(raw)
            await writer.drain()
            answers.append(await reader.readuntil(b"\r\n\r\n"))
            writer.close()
        assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"404", b"400"]
        for head in answers:
            assert b"\r\nServer: flk\r\n" in head, head
            assert b"aiohttp" not in head.lower() and b"python" not in head.lower()
    finally:
        srv.stop()


# ------------------------------------------------------------- tenants
@ONE_LOOP
async def test_unknown_tenant_says_what_to_do(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, "single")
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                srv.url + SUBMIT,
                data=make_pcs(1),
                headers={**JSON, "X-Tenant-Id": "acme"},
            ) as resp,
        ):
            assert resp.status == 401
            doc = await resp.json()
    finally:
        srv.stop()
    assert doc["error"] == "unknown_tenant"
    assert "omit the X-Tenant-Id header" in doc["detail"], doc
    assert "--ignore-tenant-header" in doc["detail"], doc
    assert "--tenants-dir" in doc["detail"], doc


@ONE_LOOP
async def test_ignore_tenant_header_takes_any_as_the_default_tenant(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path, "ignore", "--ignore-tenant-header")
    try:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for i, tenant in enumerate(("acme", "other-sdk", "not valid!", "")):
                headers = {**JSON, "X-Tenant-Id": tenant} if tenant else JSON
                async with s.post(
                    srv.url + SUBMIT, data=make_pcs(5), headers=headers
                ) as resp:
                    statuses.append(resp.status)
                    assert (await resp.json())["pcs_id"], i
    finally:
        srv.stop()
    # One PCS, four headers: one tenant, so one dedup entry answered four times.
    assert statuses == [200] * 4


def test_ignore_tenant_header_is_not_for_a_multi_tenant_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--ignore-tenant-header"):
        ServerConfig(ignore_tenant_header=True, tenants_dir=str(tmp_path))


@ONE_LOOP
async def test_the_ledger_on_a_full_disk_answers_503_then_recovers(
    tmp_path: Path, tiny_disk: Path
) -> None:
    # The default layout: a full disk under a running server must give 503 (nothing
    # of the request stored), never a 500 or a dead process, and the answers given
    # before must survive it byte for byte.
    srv = ServerProcess(tmp_path, "full", "--data-dir", str(tiny_disk / "data"))
    fill = tiny_disk / "fill"
    try:
        async with aiohttp.ClientSession() as s:

            async def post(body: bytes) -> tuple[int, bytes]:
                async with s.post(srv.url + SUBMIT, data=body, headers=JSON) as r:
                    return r.status, await r.read()

            before = {make_pcs(i): await post(make_pcs(i)) for i in range(20)}
            assert {a[0] for a in before.values()} == {200}
            with open(fill, "wb") as f:  # leave no room at all
                try:
                    while True:
                        f.write(bytes(65536))
                        f.flush()
                except OSError:
                    pass
            seen: dict[int, bytes] = {}
            for i in range(100, 1600):
                status, raw = await post(make_pcs(i))
                seen.setdefault(status, raw)
                if status == 503:
                    break
            assert 503 in seen and set(seen) <= {200, 503}, seen  # never a 500
            assert json.loads(seen[503])["error"] == "wal_unavailable", seen
            async with s.get(srv.url + "/health") as r:
                assert r.status == 200
            fill.unlink()
            for body, answer in before.items():  # what was answered is still there
                assert await post(body) == answer
            assert (await post(make_pcs(5000)))[0] == 200  # and it serves again
    finally:
        assert srv.stop() == 0
