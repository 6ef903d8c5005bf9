"""Outbox damage with the real agent (issue 11): flipped bytes in ``outbox/data.mdb``,
a changed byte in the agent state, a full disk. Each test damages a real outbox file
written by ``flk agent`` and runs ``flk agent`` / ``flk outbox status`` on it again.

Pending records are made by an agent whose server is down (a closed port, long
backoff), stopped with SIGTERM once every window is in the outbox.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flk_fast.agent.outbox import Outbox

from .realserver import Server, env, free_port, metric
from .test_e2e_server import WINDOW, expected_ids, make_input

N_WINDOWS = 12


def agent_cmd(url: str, src: Path, data: Path, key: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "flk_fast", "agent", "--endpoint", url,
        "--in", str(src), "--shard-id", "s1", "--window", str(WINDOW),
        "--data-dir", str(data), "--hmac-key-file", str(key),
        "--summarizer", "tests.agent.plainsum:factory", "--progress", "off", *extra,
    ]  # fmt: skip


def pending_count(data: Path) -> int:
    if not (data / "outbox" / "data.mdb").exists():
        return 0
    with Outbox(data) as ob:
        return sum(1 for _ in ob.pending())


def make_pending(tmp_path: Path, key: Path, n_windows: int = N_WINDOWS) -> Path:
    """An input of ``n_windows`` windows, all pending in ``tmp_path/agent``."""
    src = tmp_path / "events.csv"
    make_input(src, n_windows * WINDOW)
    data = tmp_path / "agent"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cmd = agent_cmd(down, src, data, key, "--retry-base", "60", "--max-retries", "50")
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while pending_count(data) < n_windows:
            assert proc.poll() is None, "the agent died before it was stopped"
            assert time.monotonic() < deadline, "windows not appended in 60 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err.decode()[-2000:]
    return src


def flip_in_file(path: Path, needle: bytes, *, at: int = 0) -> int:
    """Change one byte at ``at`` within every copy of ``needle`` in ``path``."""
    raw = bytearray(path.read_bytes())
    n, i = 0, raw.find(needle)
    while i >= 0:
        raw[i + at] ^= 0x01
        n += 1
        i = raw.find(needle, i + 1)
    path.write_bytes(bytes(raw))
    return n


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env(), capture_output=True, text=True, timeout=timeout
    )


def status(data: Path) -> dict[str, object]:
    out = run([sys.executable, "-m", "flk_fast", "outbox", "status", "--data-dir",
               str(data), "--json"])  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_damaged_records_are_summarised_again_or_reported_lost(
    server: Server, tmp_path: Path
) -> None:
    # Was: every corrupt pending record logged "skipped", its window never delivered,
    # exit 0 with dead_lettered=0.
    src = make_pending(tmp_path, server.key)
    data = tmp_path / "agent"
    ids = expected_ids(src)
    mdb = data / "outbox" / "data.mdb"
    # Damage the records of epochs 3 and 7 (one byte of their pcs_id), then rewrite
    # one event of window 7 in the input: 3 can be summarised again, 7 cannot.
    for epoch in (3, 7):
        assert flip_in_file(mdb, ids[epoch - 1].encode(), at=5) >= 1
    lines = src.read_bytes().split(b"\n")
    line = lines[6 * WINDOW + 10]  # an event of window 7 (line 1 is the header)
    lines[6 * WINDOW + 10] = line[:-1] + (b"1" if line[-1:] != b"1" else b"2")
    src.write_bytes(b"\n".join(lines))  # same length: the input is not truncated
    st = status(data)
    assert (st["pending"], st["damaged"], st["lost"]) == (N_WINDOWS, 2, 0)

    out = run(agent_cmd(server.url, src, data, server.key, "--exit-when-drained"))
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 5, out.stderr[-3000:]  # some windows lost
    assert "damaged=2 resummarized=1" in out.stdout
    assert "lost=1 " in out.stdout and "dead_lettered=0 " in out.stdout
    assert "outbox record" in out.stderr and "lost" in out.stderr
    server.stop()
    got = server.stored_outcomes(ids)
    assert got == (N_WINDOWS - 1, [e != 7 for e in range(1, N_WINDOWS + 1)])

    st = status(data)
    assert (st["pending"], st["damaged"], st["lost"]) == (0, 0, 1)
    listing = run([sys.executable, "-m", "flk_fast", "dlq", "list", "--data-dir",
                   str(data)])  # fmt: skip
    assert "outbox record damaged" in listing.stdout and "epoch=7" in listing.stdout
    plain = run([sys.executable, "-m", "flk_fast", "outbox", "status", "--data-dir",
                 str(data)])  # fmt: skip
    assert "lost 1:" in plain.stdout


@pytest.mark.parametrize("seed", range(6))
def test_hundred_flipped_bytes_never_a_traceback(
    server: Server, tmp_path: Path, seed: int
) -> None:
    # Was: every start exited 4 with struct.error (wal_lmdb._probe_past) and
    # ``flk outbox status`` printed a traceback.
    src = make_pending(tmp_path, server.key)
    data = tmp_path / "agent"
    mdb = data / "outbox" / "data.mdb"
    raw = bytearray(mdb.read_bytes())
    rnd = random.Random(seed)
    for _ in range(100):
        raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
    mdb.write_bytes(bytes(raw))
    st = run([sys.executable, "-m", "flk_fast", "outbox", "status", "--data-dir",
              str(data), "--json"])  # fmt: skip
    assert "Traceback" not in st.stderr, st.stderr[-3000:]
    assert st.returncode in (0, 4), st.stderr[-3000:]
    if st.returncode == 4:  # damaged beyond reading: the file and the fix are named
        assert str(mdb) in st.stderr
        assert "aside" in st.stderr or "backup" in st.stderr
    out = run(agent_cmd(server.url, src, data, server.key, "--exit-when-drained"))
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode in (0, 4, 5), out.stderr[-3000:]
    if out.returncode == 4:
        assert str(mdb) in out.stderr
        return
    # Every window is delivered (summarised again if need be) or counted lost.
    summary = dict(
        kv.split("=", 1) for kv in out.stdout.split(": ", 1)[1].split() if "=" in kv
    )
    judged = metric(server.url, "flk_accepted_total") + metric(
        server.url, "flk_escalated_total"
    )
    assert judged + int(summary["lost"]) >= N_WINDOWS, out.stdout
    assert (out.returncode == 5) == (int(summary["lost"]) > 0)


def test_changed_byte_in_agent_state_is_an_error_not_a_restart(
    server: Server, tmp_path: Path
) -> None:
    # Was: the agent read the whole input again under new epochs (4 000 verdicts for
    # 2 000 windows) and exited 0.
    src = tmp_path / "events.csv"
    make_input(src, 4 * WINDOW)
    data = tmp_path / "agent"
    out = run(agent_cmd(server.url, src, data, server.key, "--exit-when-drained"))
    assert out.returncode == 0, out.stderr[-2000:]
    before = metric(server.url, "flk_ingest_total")
    mdb = data / "outbox" / "data.mdb"
    # Every copy LMDB keeps of the state (live and freed pages): '"events":1000'.
    assert flip_in_file(mdb, b'"events":%d' % (4 * WINDOW), at=9) >= 1
    for cmd in (
        agent_cmd(server.url, src, data, server.key, "--exit-when-drained"),
        [sys.executable, "-m", "flk_fast", "outbox", "status", "--data-dir", str(data)],
    ):
        out = run(cmd)
        assert out.returncode == 4, (out.stdout, out.stderr[-2000:])
        assert "Traceback" not in out.stderr
        assert str(mdb) in out.stderr and "agent state" in out.stderr
        assert "--start-epoch" in out.stderr  # the way out is said
    assert metric(server.url, "flk_ingest_total") == before  # nothing sent again


@pytest.fixture
def tiny_disk(mount_tmpfs: Callable[[str], Path]) -> Path:
    """2 MiB: less than the 4 000 PCS of the disk-full test need."""
    return mount_tmpfs("2m")


def test_disk_full_mid_run_and_at_start_same_message_exit_4(
    server: Server, tmp_path: Path, tiny_disk: Path
) -> None:
    # Was: mid-run an uncaught lmdb.Error traceback and exit 1 ("some PCS were
    # dead-lettered"); at start exit 4 with a bare "[Errno 28]".
    src = tmp_path / "events.csv"
    make_input(src, 40_000)
    data = tiny_disk / "agent"
    cmd = agent_cmd(server.url, src, data, server.key, "--exit-when-drained")
    i = cmd.index("--window")
    cmd[i + 1] = "10"  # 4 000 PCS of ~1 KB: more than 2 MiB
    mid = run(cmd)
    assert mid.returncode == 4, (mid.stdout, mid.stderr[-2000:])
    assert "Traceback" not in mid.stderr
    assert "no space left on the device" in mid.stderr
    accepted = metric(server.url, "flk_accepted_total")
    assert accepted > 0  # it was mid-run: PCS had been delivered

    shutil.rmtree(data)
    filler = tiny_disk / "fill"
    with open(filler, "wb") as f:  # leave no room at all
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    start = run(cmd)
    assert start.returncode == 4, (start.stdout, start.stderr[-2000:])
    assert "Traceback" not in start.stderr
    assert "no space left on the device" in start.stderr
