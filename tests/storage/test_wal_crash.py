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


def _index(data: bytes) -> tuple[int, int]:
    """``(round, index)`` of a worker payload (it starts ``r<round>-i<index>-``)."""
    r, i = data.split(b"-", 2)[:2]
    return int(r[1:]), int(i[1:])


def _in_pair(i: int) -> bool:
    """The worker appends index i with i % 5 == 4 together with i + 1 (one
    append_many carrying ``checkpoint = i + 1``); every other index alone."""
    return i % 5 == 4 or (i % 5 == 0 and i > 0)


def _check_checkpoint(
    present: dict[int, bytes], ckpt: bytes | None, round_: int
) -> None:
    """The meta checkpoint is committed with its records, atomically: it names the
    second record of the newest pair on disk, and the first record is there too."""
    pairs = [s for s in sorted(present) if _in_pair(_index(present[s])[1])]
    if not pairs:
        assert ckpt is None, f"round {round_}: checkpoint {ckpt!r} without its records"
        return
    assert ckpt is not None, f"round {round_}: records of a pair but no checkpoint"
    last = pairs[-1]
    r, i = _index(present[last])
    assert i == int(ckpt), (
        f"round {round_}: checkpoint {ckpt!r} but the newest pair ends at seq {last}"
        f" = (round {r}, index {i})"
    )
    assert _index(present[last - 1]) == (r, i - 1), (
        f"round {round_}: checkpoint {ckpt!r} committed without its first record"
    )


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
            _check_checkpoint(present, wal.get_meta(b"checkpoint"), round_)
    # LMDB commits are atomic, so a kill never leaves a torn record; had one appeared
    # it would have been reported here (and skipped) instead of returned.
    assert corrupt == []
    assert len(promised) > ROUNDS
