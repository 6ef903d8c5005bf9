"""Faults a hostile tester found in the default layout (the ledger), each against a
real ``flk serve`` over real LMDB (and, for the audit chain, a real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from pathlib import Path

import aiohttp
import lmdb
import pytest

from flk_fast.storage.ledger import Ledger
from flk_fast.storage.wal_lmdb import LmdbWal

from .conftest import JSON, SUBMIT, assert_one_audit_row_each, make_pcs
from .procs import ServerProcess, serve_command

pytestmark = [pytest.mark.asyncio(loop_factories=["uvloop"])]

#: PostgreSQL on a port nobody listens on: the audit entries stay in the spools.
_NO_PG = "postgresql://postgres@127.0.0.1:1/test"


async def _post_all(url: str, bodies: list[bytes]) -> list[int]:
    """Post every body, 16 at a time over fresh connections (so that both workers of
    a ``--workers 2`` group take some)."""
    queue = list(bodies)
    statuses: list[int] = []

    async def worker() -> None:
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:
            while queue:
                body = queue.pop()
                async with s.post(url + SUBMIT, data=body, headers=JSON) as r:
                    await r.read()
                    statuses.append(r.status)

    await asyncio.gather(*(worker() for _ in range(16)))
    return statuses


def _spooled(data: Path, worker: int, layout: str) -> int:
    """Audit entries waiting in worker ``worker``'s spool."""
    if layout == "lmdb":
        wal = LmdbWal(data / "audit-spool" / f"w{worker}")
        try:
            return len(list(wal.pending()))
        finally:
            wal.close()
    store = Ledger(data / "ledger", worker=worker)
    try:
        return store.audit_count()
    finally:
        store.close()


@pytest.mark.services
@pytest.mark.parametrize("layout", ["ledger", "lmdb"])
async def test_audit_spools_of_workers_gone_are_shipped(
    tmp_path: Path, audit_dsn: str, layout: str
) -> None:
    # --workers 2 while PostgreSQL is unreachable: both workers' spools fill. The next
    # start has one worker: worker 1's spool (audit/w1 in the ledger, audit-spool/w1
    # with --dedup lmdb://) has no owner any more, and its entries must still reach
    # PostgreSQL, once each.
    data = tmp_path / "data"
    layout_args = ["--data-dir", str(data)]
    if layout == "lmdb":
        layout_args += ["--dedup", f"lmdb://{data}/dedup"]
    bodies = [make_pcs(i) for i in range(120)]
    schema = audit_dsn.partition("?")[2]
    wide = ServerProcess(
        tmp_path,
        "wide",
        *layout_args,
        "--workers",
        "2",
        env={"FLK_AUDIT_DSN": f"{_NO_PG}?{schema}"},
    )
    try:
        assert set(await _post_all(wide.url, bodies)) == {200}
    finally:
        assert wide.stop() == 0
    assert _spooled(data, 1, layout) > 0, "worker 1 took no request: proves nothing"
    assert _spooled(data, 0, layout) + _spooled(data, 1, layout) == len(bodies)

    narrow = ServerProcess(
        tmp_path, "narrow", *layout_args, env={"FLK_AUDIT_DSN": audit_dsn}
    )
    try:
        async with aiohttp.ClientSession() as s:  # ready, and the resends are hits
            for body in bodies[:5]:
                async with s.post(narrow.url + SUBMIT, data=body, headers=JSON) as r:
                    assert r.status == 200
    finally:
        assert narrow.stop() == 0  # the shutdown ships what is spooled
    assert _spooled(data, 0, layout) == _spooled(data, 1, layout) == 0
    ids = {json.loads(b)["pcs_id"] for b in bodies}
    await assert_one_audit_row_each(audit_dsn, ids)


def _start(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    cmd = serve_command(tmp_path, "--data-dir", str(data))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


async def test_an_emptied_ledger_file_is_refused_not_taken_as_new(
    tmp_path: Path,
) -> None:
    # A data.mdb cut to 0 bytes (a botched copy or restore, a filesystem repair) was
    # opened as a brand-new store: every acknowledged verdict gone without a word, a
    # resend judged again, a conflicting twin stored as if first. It is a truncation
    # like any other: exit 1 naming the file and the fix.
    data = tmp_path / "data"
    srv = ServerProcess(tmp_path, "fill", "--data-dir", str(data))
    try:
        assert set(await _post_all(srv.url, [make_pcs(i) for i in range(30)])) == {200}
    finally:
        assert srv.stop() == 0
    victim = data / "ledger" / "data.mdb"
    victim.write_bytes(b"")
    done = _start(tmp_path, data)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert str(victim) in out and "0 bytes" in out, out
    assert "move" in out and "aside" in out, out
    assert "Traceback" not in out, out
    assert victim.stat().st_size == 0  # left as found, for the operator to look at


async def test_an_empty_ledger_file_of_a_first_start_is_created(tmp_path: Path) -> None:
    # The same 0-byte file is also what a kill -9 inside LMDB's very first open leaves
    # (the file created, its first pages not written yet). Nothing was ever stored in
    # that data dir (no DATA_DIR/server-id, made before the first verdict is stored):
    # the next start makes the store and serves.
    data = tmp_path / "data"
    (data / "ledger").mkdir(parents=True)
    (data / "ledger" / "data.mdb").write_bytes(b"")
    srv = ServerProcess(tmp_path, "first", "--data-dir", str(data))
    try:
        assert await _post_all(srv.url, [make_pcs(1)]) == [200]
    finally:
        assert srv.stop() == 0


def _inbox_root_page(ledger: Path) -> tuple[int, int]:
    """(root page number, page size) of the ledger's inbox database of today: its
    record in LMDB's main database is an ``MDB_db``, whose last 8 bytes are the root."""
    env = lmdb.open(str(ledger), max_dbs=256, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor() if bytes(k).startswith(b"inbox/")]
            assert len(names) == 1, names
            rec = txn.get(names[0])
        return struct.unpack_from("<Q", rec, len(rec) - 8)[0], env.stat()["psize"]
    finally:
        env.close()


async def test_pages_damaged_while_serving_turn_ready_503_naming_the_file(
    tmp_path: Path,
) -> None:
    # Damage that start-up cannot see (a page of the inbox, read only by a write):
    # every commit then fails with MDB_CORRUPTED. That was answered 503
    # wal_unavailable while /ready said 200 "ready" and the log only warned "ledger
    # commit failed" per request, so a load balancer kept the server in rotation
    # and nobody was told which file to restore. Now the damage is an
    # LmdbDamagedError: logged as an error naming data.mdb and the fix, and /ready
    # answers 503 with the same words, until a restart after the repair.
    data = tmp_path / "data"
    srv = ServerProcess(tmp_path, "fill", "--data-dir", str(data))
    try:
        assert set(await _post_all(srv.url, [make_pcs(i) for i in range(50)])) == {200}
    finally:
        assert srv.stop() == 0
    victim = data / "ledger" / "data.mdb"
    page, psize = _inbox_root_page(data / "ledger")
    with open(victim, "r+b") as fh:
        # the page's flags (bytes 10-11 of LMDB's page header) zeroed: neither branch
        # nor leaf, which LMDB reports as MDB_CORRUPTED. Garbage over the whole page
        # could send LMDB to a page past the end of the file instead: SIGBUS, tested
        # apart (test_a_bus_error_is_not_silent)
        fh.seek(page * psize + 10)
        fh.write(b"\x00\x00")

    srv = ServerProcess(tmp_path, "damaged", "--data-dir", str(data))
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(100, 103):
                body = make_pcs(i)
                async with s.post(srv.url + SUBMIT, data=body, headers=JSON) as r:
                    assert r.status == 503, await r.text()
                    assert r.headers["Retry-After"]
                    assert (await r.json())["error"] == "wal_unavailable"
            async with s.get(srv.url + "/ready") as r:
                assert r.status == 503
                detail = (await r.json())["detail"]
            assert str(victim) in detail and "aside" in detail, detail
            async with s.get(srv.url + "/health") as r:
                assert r.status == 200  # alive: the damage is not a crash
    finally:
        assert srv.stop() == 0
    errors = [x for x in srv.log_lines() if x.get("level") == "error"]
    named = [x for x in errors if str(victim) in x["msg"] and "damaged" in x["msg"]]
    assert named, errors


@pytest.mark.parametrize(
    "damage",
    ["garbage", "too-long", "directory"],
)
async def test_a_damaged_server_id_stops_the_start_never_a_500(
    tmp_path: Path, damage: str
) -> None:
    # DATA_DIR/server-id (the first part of every stored origin) was read at the
    # first judged request: damaged, every judged request got a 500 while /ready said
    # 200. It is read before the server is ready now: exit 1, the file named.
    data = tmp_path / "data"
    data.mkdir()
    sid = data / "server-id"
    if damage == "directory":
        sid.mkdir()
    else:
        sid.write_bytes(b"\xff\xfe../x\n" if damage == "garbage" else b"a" * 100_000)
    done = _start(tmp_path, data)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert str(sid) in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("what", ["ledger", "ledger/data.mdb", "ledger/lock.mdb"])
async def test_a_ledger_path_of_the_wrong_kind_is_named(
    tmp_path: Path, what: str
) -> None:
    # DATA_DIR/ledger a file was "cannot start: [Errno 17] File exists: ..."; its
    # data.mdb or lock.mdb a directory was a traceback from lmdb.open.
    data = tmp_path / "data"
    (data / "ledger").mkdir(parents=True)
    odd = data / what
    if what == "ledger":
        odd.rmdir()
        odd.write_text("x")
    else:
        odd.mkdir()
    done = _start(tmp_path, data)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert str(odd) in out, out
    assert "Traceback" not in out and "[Errno" not in out, out


def _flk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flk_fast", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_damaged_outcome_in_the_ledger_can_be_forgotten(
    tmp_path: Path,
) -> None:
    # A stored outcome that fails its checksum is answered 503 stored_outcome_damaged
    # until an operator deletes it; docs/server.md said how for Redis and PostgreSQL,
    # but the default store, the ledger, had no way short of moving it all aside.
    # `flk dedup forget` deletes it (while the server runs); the resend is judged
    # again and answered as it was the first time.
    data = tmp_path / "data"
    body = make_pcs(7)
    pcs_id = json.loads(body)["pcs_id"]
    srv = ServerProcess(tmp_path, "forget", "--data-dir", str(data))
    try:
        async with aiohttp.ClientSession() as s:

            async def post() -> tuple[int, bytes]:
                async with s.post(srv.url + SUBMIT, data=body, headers=JSON) as r:
                    return r.status, await r.read()

            first = await post()
            assert first[0] == 200
            env = lmdb.open(str(data / "ledger"), max_dbs=256)
            try:  # flip the last byte of the stored value (the answer's last byte)
                kv = env.open_db(b"kv")
                key = b"\x00" + bytes.fromhex(pcs_id)
                with env.begin(write=True, db=kv) as txn:
                    raw = bytes(txn.get(key))
                    txn.put(key, raw[:-1] + bytes([raw[-1] ^ 1]))
            finally:
                env.close()
            status, answer = await post()
            assert status == 503
            assert json.loads(answer)["error"] == "stored_outcome_damaged"

            done = _flk("dedup", "forget", "--data-dir", str(data), pcs_id)
            assert done.returncode == 0, done.stderr
            assert await post() == first

            again = _flk("dedup", "forget", "--data-dir", str(data), "0" * 64)
            assert again.returncode == 1 and "not stored" in again.stdout
    finally:
        assert srv.stop() == 0
    wrongs = (["nothex"], ["--tenant", "a b", pcs_id], ["--dedup", "redis://x", pcs_id])
    for bad in wrongs:
        wrong = _flk("dedup", "forget", "--data-dir", str(data), *bad)
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
    nowhere = _flk("dedup", "forget", "--data-dir", str(tmp_path / "none"), pcs_id)
    assert nowhere.returncode == 2 and "no LMDB store" in nowhere.stderr
    assert not (tmp_path / "none").exists()  # nothing created


async def test_a_bus_error_is_not_silent(tmp_path: Path) -> None:
    # data.mdb truncated under a running server (an operator's mistake, a full
    # thin volume): LMDB's next touch of a page past the new end is SIGBUS inside C,
    # which no Python code can catch. The process dies, but no longer without a
    # word: the stacks of its threads are on stderr, naming the ledger's frames, and
    # the next start refuses the truncated file naming it and the fix.
    data = tmp_path / "data"
    srv = ServerProcess(tmp_path, "bus", "--data-dir", str(data))
    try:
        assert set(await _post_all(srv.url, [make_pcs(i) for i in range(200)])) == {200}
        victim = data / "ledger" / "data.mdb"
        with open(victim, "r+b") as fh:
            fh.truncate(2 * 4096)  # the two meta pages: every tree page is gone
        async with aiohttp.ClientSession() as s:
            for i in range(1000, 1020):
                try:
                    async with s.post(
                        srv.url + SUBMIT, data=make_pcs(i), headers=JSON
                    ) as r:
                        await r.read()
                except aiohttp.ClientError:
                    break  # the server is gone
        code = srv.proc.wait(20)
    finally:
        srv.kill()
    assert code == -7  # SIGBUS
    log = srv.log_path.read_text(errors="replace")
    assert "Fatal Python error: Bus error" in log
    assert "storage/ledger.py" in log or "storage/dedup_lmdb.py" in log, log
    again = subprocess.run(
        serve_command(tmp_path, "--data-dir", str(data)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1
    assert "data.mdb" in again.stderr and "truncated" in again.stderr, again.stderr
