"""Crash test: SIGKILL a child that is appending, 20 times, then check every promise.

The child prints a line only after ``append`` returned (durable), so every printed seq
must be present with its exact payload after the kill; nothing present may be corrupt
without being reported, and appends keep working across rounds. Kill times are drawn
from the seeded ``rng`` fixture (its seed shows in a failure). Bounded: ~10 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flk_fast.storage.wal_lmdb import LmdbWal

from ._workers import payload

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20


def _collect(child: subprocess.Popen[str], lines: list[str]) -> None:
    assert child.stdout is not None
    lines.extend(child.stdout)


@pytest.mark.slow
def test_sigkill_never_loses_a_returned_append(tmp_path: Path, rng: object) -> None:
    promised: dict[int, tuple[int, int]] = {}
    corrupt: list[tuple[int, str]] = []
    for round_ in range(ROUNDS):
        err_file = open(tmp_path.parent / f"child-{round_}.err", "w+")  # noqa: SIM115
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage._workers",
                "wal",
                str(tmp_path),
                str(round_),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=_collect, args=(child, lines))
        reader.start()
        # wait for the first append so the kill lands while appending, not at import
        deadline = time.monotonic() + 30
        while not lines and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.25)))  # type: ignore[attr-defined]
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone (and reaped): judged by its exit status below
        child.wait(timeout=30)
        reader.join(timeout=30)
        child.stdout.close()  # type: ignore[union-attr]
        err_file.seek(0)
        err = err_file.read()[-3000:]
        err_file.close()
        # The worker never exits by itself: a status >= 0 is an exception in it (a
        # bug, shown with its stderr). Death by any signal is a crash, and the
        # promises below must hold after any crash.
        assert child.returncode < 0, (
            f"round {round_}: child exited {child.returncode}\n{err}"
        )
        for line in lines:
            if line.endswith("\n"):  # a line cut by the kill was never promised
                seq, r, i = (int(x) for x in line.split())
                promised[seq] = (r, i)

        with LmdbWal(
            tmp_path, on_corrupt=lambda s, why: corrupt.append((s, why))
        ) as wal:
            present = {rec.seq: rec.data for rec in wal.replay()}
            for seq, (r, i) in promised.items():
                assert present.get(seq) == payload(r, i), (
                    f"round {round_}: seq {seq} lost"
                )
            # seqs are dense: nothing vanished in the middle
            assert sorted(present) == list(range(1, len(present) + 1))
            ckpt = wal.get_meta(b"checkpoint")
            assert ckpt is None or int(ckpt) >= 0
    # LMDB commits are atomic, so a kill never leaves a torn record; had one appeared
    # it would have been reported here (and skipped) instead of returned.
    assert corrupt == []
    assert len(promised) > ROUNDS
