"""Real ``flk serve`` processes: shared Redis/PostgreSQL, kill -9 + replay, drain,
``--workers``, SIGHUP. The slowest server tests, so they run on uvloop only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from flk_fast.server.outcome import decode_outcome
from flk_fast.storage.dedup_lmdb import LmdbDedup
from flk_fast.storage.ledger import Ledger
from flk_fast.storage.wal_lmdb import LmdbWal

from .conftest import JSON, SUBMIT, VECTOR_BYTES, make_pcs
from .procs import ServerProcess, metric

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_factories=["uvloop"])]


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> tuple[int, bytes]:
    async with session.post(url + SUBMIT, data=body, headers=JSON) as resp:
        return resp.status, await resp.read()


async def _shared_store_race(tmp_path: Path, dedup_url: str) -> None:
    a = ServerProcess(tmp_path, "a", "--dedup", dedup_url)
    b = ServerProcess(tmp_path, "b", "--dedup", dedup_url)
    try:
        bodies = [make_pcs(5000 + i) for i in range(15)] + [make_pcs(6000, budget=0.9)]
        async with aiohttp.ClientSession() as s:
            for body in bodies:
                answers = await asyncio.gather(
                    *(_post(s, srv.url, body) for srv in (a, b, a, b, a, b))
                )
                assert len(set(answers)) == 1, answers
                assert answers[0][0] in (200, 202)
            judged = sum(
                [await metric(s, srv.url, "flk_accepted_total") for srv in (a, b)]
            )
            assert judged == len(bodies)  # one stored outcome per PCS, across processes
    finally:
        assert a.stop() == 0 and b.stop() == 0


@pytest.mark.services
async def test_two_servers_share_redis(
    tmp_path: Path, redis_url: str, unique_prefix: str
) -> None:
    await _shared_store_race(tmp_path, f"{redis_url}?prefix={unique_prefix}:")


@pytest.mark.services
async def test_two_servers_share_postgres(
    tmp_path: Path, postgres_dsn: str, unique_prefix: str
) -> None:
    await _shared_store_race(tmp_path, f"{postgres_dsn}?schema={unique_prefix}")


async def _load_until_killed(
    srv: ServerProcess,
    bodies: list[bytes],
    seconds: float,
    acked: dict[bytes, tuple[int, bytes]],
) -> None:
    queue = list(bodies)

    async def worker(s: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            try:
                status, raw = await _post(s, srv.url, body)
            except (aiohttp.ClientError, OSError):
                return
            if status in (200, 202):
                acked[body] = (status, raw)

    async with aiohttp.ClientSession() as s:
        tasks = [asyncio.ensure_future(worker(s)) for _ in range(32)]
        await asyncio.sleep(seconds)
        srv.proc.kill()  # SIGKILL: no drain, no flush, mid-commit
        srv.proc.wait()
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
    srv.kill()


@pytest.mark.parametrize("layout", ["ledger", "lmdb-url"])
async def test_kill9_under_load_then_restart(tmp_path: Path, layout: str) -> None:
    # "ledger": the default, one commit per batch for inbox + outcome, so a kill
    # leaves nothing to replay. "lmdb-url": --dedup lmdb://..., a separate inbox WAL
    # and dedup store, whose in-flight records the replay judges.
    data = tmp_path / "data"
    extra = [] if layout == "ledger" else ["--dedup", f"lmdb://{data}/dedup"]
    acked: dict[bytes, tuple[int, bytes]] = {}
    rounds = 2
    started = []
    for r in range(rounds):
        srv = ServerProcess(tmp_path, f"round{r}", "--data-dir", str(data), *extra)
        started.append(srv)
        bodies = [make_pcs(100_000 * (r + 1) + i) for i in range(4000)]
        await _load_until_killed(srv, bodies, 0.6 + 0.3 * r, acked)
    assert acked, "no request was answered before the kill"

    srv = ServerProcess(tmp_path, "final", "--data-dir", str(data), *extra)
    async with aiohttp.ClientSession() as s:
        judged_by_replay = await metric(s, srv.url, "flk_accepted_total")
        sample = list(acked.items())[:: max(1, len(acked) // 300)]
        for body, answer in sample:
            assert await _post(s, srv.url, body) == answer  # same status, same bytes
        # answering acknowledged PCS judged nothing again
        assert await metric(s, srv.url, "flk_accepted_total") == judged_by_replay
    assert srv.stop() == 0
    replayed = sum(
        x.get("replayed", 0)
        for p in [*started[1:], srv]
        for x in p.log_lines()
        if x.get("event") == "replayed"
    )
    if layout == "ledger":
        assert replayed == 0  # a crash leaves a request all committed or not at all
        led = Ledger(data / "ledger")
        try:
            records = list(led.inbox())
            bodies_in = {r.data[1:] for r in records}  # u8 0 = the default tenant
            ids = [json.loads(b)["pcs_id"] for b in bodies_in]
            assert all(v is not None for v in led.get_many(ids))
            for body, (status, raw) in acked.items():
                assert body in bodies_in  # the exact bytes of every answered request
                stored_value = led.get(json.loads(body)["pcs_id"])
                assert stored_value is not None
                assert decode_outcome(stored_value)[::2] == (status, raw)
        finally:
            led.close()
        return
    assert replayed > 0  # requests in flight at the kill were judged by the replay

    # every WAL record (acknowledged or not) now has its outcome, and none is pending
    wal = LmdbWal(data / "inbox" / "w0", rotate_daily=True, retention_days=14)
    dedup = LmdbDedup(data / "dedup")
    try:
        assert list(wal.pending()) == []
        records = list(wal.replay(include_acked=True))  # acked ones may be compacted
        ids = [json.loads(r.data[1:])["pcs_id"] for r in records]
        stored = dedup.get_many(ids)
        assert all(v is not None for v in stored)
        for body, (status, raw) in acked.items():
            stored_value = dedup.get(json.loads(body)["pcs_id"])
            assert stored_value is not None
            assert decode_outcome(stored_value)[::2] == (status, raw)
    finally:
        wal.close()
        dedup.close()


async def test_sigterm_drains_in_flight(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, "drain")
    body = VECTOR_BYTES
    sock = socket.create_connection(("127.0.0.1", srv.port))
    head = (
        f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:100])  # the handler is now waiting for the rest
    await asyncio.sleep(0.3)
    srv.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    sock.sendall(body[100:])
    sock.settimeout(5)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert srv.proc.wait(10) == 0
    srv.kill()  # closes the log file
    assert "testsecret" not in srv.log_path.read_text()  # no secret is ever logged
    events = [line.get("event") for line in srv.log_lines()]
    assert events.count("ready") == 1 and "draining" in events and "stopped" in events


async def test_workers_share_port_metrics_and_reload(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "acme.hmac").write_bytes(b"acme-1")
    srv = ServerProcess(
        tmp_path, "workers", "--workers", "2", "--tenants-dir", str(tenants)
    )
    try:
        readies = [x for x in srv.log_lines() if x.get("event") == "ready"]
        assert len(readies) == 1 and readies[0]["workers"] == 2
        # a second group on the same port (another data dir) must not share it, nor
        # a second server the same data dir
        for args in (
            ["--port", str(srv.port), "--data-dir", str(tmp_path / "other")],
            ["--port", "0", "--data-dir", str(tmp_path / "workers-data")],
        ):
            second = subprocess.run(
                [sys.executable, "-m", "flk_fast", "serve", "--workers", "2", *args],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "FLK_HMAC_KEY": "k"},
            )
            assert second.returncode == 2, second.stderr
            assert "in use" in second.stderr and second.stderr.startswith("flk: error")
        n = 40
        async with aiohttp.ClientSession() as s:
            answers = await asyncio.gather(
                *(_post(s, srv.url, make_pcs(7000 + i)) for i in range(n))
            )
            assert {a[0] for a in answers} == {200}
            # any worker's /metrics sums every worker's counters
            assert await metric(s, srv.url, "flk_ingest_total") == n
        acme = {**JSON, "X-Tenant-Id": "acme"}
        (tenants / "acme.2.hmac").write_bytes(b"acme-2")
        srv.signal(signal.SIGHUP)
        # A fresh connection per request, so the kernel spreads them over both
        # workers; the request id's prefix is the answering worker's pid, and both
        # must have accepted the new key.
        deadline = time.monotonic() + 15
        reloaded: set[str] = set()
        i = 0
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as fresh:
            while len(reloaded) < 2 and time.monotonic() < deadline:
                i += 1
                async with fresh.post(
                    srv.url + SUBMIT,
                    headers=acme,
                    data=make_pcs(8000 + i, key=b"acme-2"),
                ) as resp:
                    if resp.status == 200:
                        reloaded.add(resp.headers["X-Request-Id"].split("-")[0])
                    else:
                        await asyncio.sleep(0.05)
        assert len(reloaded) == 2, (reloaded, i)
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_drain_keeps_to_one_deadline(
    tmp_path: Path, workers: str
) -> None:
    """A body that never finishes holds the drain for --drain-timeout-s once, not
    once per shutdown stage."""
    srv = ServerProcess(
        tmp_path, "deadline", "--drain-timeout-s", "2", "--workers", workers
    )
    socks = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(
            f"POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        socks.append(sock)
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    code = srv.proc.wait(30)
    elapsed = time.monotonic() - t0
    for sock in socks:
        sock.close()
    srv.kill()
    assert code == 0
    assert 1.5 < elapsed < 3.5, elapsed


async def test_sighup_during_start_up_is_not_fatal(tmp_path: Path) -> None:
    """SIGHUPs sent while the server starts (before its loop's reload handler exists)
    neither kill it nor get lost: the keys are reloaded once it runs."""
    data = tmp_path / "hup-data"
    log_path = tmp_path / "hup.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flk_fast", "serve", "--port", "0"]
            + ["--data-dir", str(data)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FLK_HMAC_KEY": "k"},
        )
    try:
        deadline = time.monotonic() + 30
        while not (data / "serve.lock").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.02)
            ready = '"event":"ready"' in log_path.read_text()
        assert proc.poll() is None and ready, log_path.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "keys reloaded" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _answering_pids(url: str, start: int, want: int) -> tuple[set[str], int]:
    """Post fresh PCS on fresh connections until ``want`` distinct workers answered;
    return their pids (the request id prefix) and the next unused PCS number."""
    pids: set[str] = set()
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True)
    ) as fresh:
        while len(pids) < want and time.monotonic() < deadline:
            async with fresh.post(
                url + SUBMIT, data=make_pcs(start), headers=JSON
            ) as resp:
                assert resp.status == 200, await resp.text()
                pids.add(resp.headers["X-Request-Id"].split("-")[0])
            start += 1
    return pids, start


async def test_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path, "killw", "--workers", "2")
    try:
        pids, n = await _answering_pids(srv.url, 9000, 2)
        assert len(pids) == 2, pids
        acked: dict[bytes, tuple[int, bytes]] = {}
        async with aiohttp.ClientSession() as s:
            for i in range(9100, 9120):
                body = make_pcs(i)
                acked[body] = await _post(s, srv.url, body)
        victim = sorted(pids)[0]
        os.kill(int(victim, 16), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = srv.log_path.read_text(errors="replace")
            if f"(pid {int(victim, 16)}) exited with -9; restarting" in text:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no restart logged:\n" + text)
        # the group keeps serving, and the replacement worker answers too
        after, _ = await _answering_pids(srv.url, n, 2)
        assert len(after) == 2 and victim not in after, (victim, after)
        async with aiohttp.ClientSession() as s:
            for body, answer in acked.items():  # same bytes: nothing acknowledged lost
                assert await _post(s, srv.url, body) == answer
            assert await metric(s, srv.url, "flk_dedup_hits_total") >= len(acked)
    finally:
        code = srv.stop()
    assert code == 0  # the replacement stopped cleanly: the group exits 0


async def test_idle_keepalive_connection_is_closed_after_the_timeout(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path, "keepalive", "--keepalive-timeout-s", "0.5")
    try:

        def idle_close_after() -> float:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(
                    b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
                )
                reply = b""
                while b"\r\n\r\nOK" not in reply:
                    reply += sock.recv(4096)
                t0 = time.monotonic()
                assert sock.recv(4096) == b""  # blocks until the server closes
                return time.monotonic() - t0

        waited = await asyncio.to_thread(idle_close_after)
        assert 0.3 < waited < 3.0, waited
    finally:
        assert srv.stop() == 0


async def test_trickled_headers_are_cut_off_by_the_keepalive_timeout(
    tmp_path: Path,
) -> None:
    # A client that never finishes its request headers (slowloris) holds a connection
    # only until --keepalive-timeout-s runs out, however steadily it trickles bytes.
    srv = ServerProcess(tmp_path, "slowloris", "--keepalive-timeout-s", "0.5")
    try:

        def trickle() -> float:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                t0 = time.monotonic()
                sock.sendall(b"POST /v1/pcs/submit HTTP/1.1\r\nHost: x\r\n")
                try:
                    for i in range(100):  # 10 s of headers, one every 0.1 s
                        sock.sendall(b"X-Slow-%d: y\r\n" % i)
                        time.sleep(0.1)
                except OSError:  # reset by the server: closed while we were sending
                    return time.monotonic() - t0
                sock.settimeout(5)
                assert sock.recv(4096) == b""
                return time.monotonic() - t0

        held = await asyncio.to_thread(trickle)
        assert held < 3.0, held
        # and the server still serves everyone else
        async with aiohttp.ClientSession() as s, s.get(srv.url + "/health") as r:
            assert r.status == 200
    finally:
        assert srv.stop() == 0
