"""``Ledger.commit`` against a plain model: first-write-wins with expiry, the inbox
records of every item, and audit entries only for the outcomes that were stored."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk_fast.errors import LmdbDamagedError
from flk_fast.storage.ledger import Ledger, LedgerItem

TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _item(led: Ledger, n: int, key: bytes, value: bytes) -> LedgerItem:
    return LedgerItem(
        led.record_key(n),
        b"\x00rec-%d" % n,
        led.prepare(key, value, TTL),
        b"audit-%d" % n,
    )


# a batch: (key index, clock advance before the batch); keys from a small set so that
# hits, in-batch repeats and expiries all happen
batches = st.lists(
    st.tuples(
        st.lists(st.integers(0, 5), min_size=1, max_size=8),
        st.sampled_from([0.0, 0.4, 3.0, TTL + 1.0]),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches)
def test_commit_matches_a_first_write_wins_model(tmp_path: Path, plan: list) -> None:
    clock = Clock()
    led = Ledger(
        tempfile.mkdtemp(dir=tmp_path), sync=False, clock=clock
    )  # one per example
    model: dict[bytes, tuple[bytes, float]] = {}  # key -> (value, expires at)
    spooled: list[bytes] = []
    n = 0
    try:
        for keys, advance in plan:
            clock.now += advance
            items, want = [], []
            for k in keys:
                n += 1
                key, value = b"k%d" % k, b"v%d" % n
                items.append(_item(led, n, key, value))
                live = model.get(key)
                if live is not None and live[1] > clock.now:
                    want.append((live[0], False))
                else:
                    # expiry rounds up to a whole second (never early)
                    model[key] = (value, math.ceil(clock.now + TTL))
                    want.append((value, True))
                    spooled.append(b"audit-%d" % n)
            assert led.commit(items) == want
        assert [r.data for r in led.inbox()] == [
            b"\x00rec-%d" % i for i in range(1, n + 1)
        ]
        assert [r.data for r in led.audit_pending(10_000)] == spooled
    finally:
        led.close()


def test_handles_with_other_boot_ids_keep_every_inbox_record(tmp_path: Path) -> None:
    """Record keys start with the handle's random boot id (a worker or a restart), so
    a later handle's keys may sort before an earlier one's: none is lost."""
    want = []
    for h in range(4):
        led = Ledger(tmp_path / "led", sync=False, worker=h % 2)
        for n in range(1, 4):
            led.commit([LedgerItem(led.record_key(n), b"h%d-%d" % (h, n), None)])
            want.append(b"h%d-%d" % (h, n))
        led.close()
    led = Ledger(tmp_path / "led", sync=False)
    try:
        assert sorted(r.data for r in led.inbox()) == sorted(want)
    finally:
        led.close()


def _spool(led: Ledger, entries: list[bytes]) -> None:
    led.commit([LedgerItem(None, None, None, e) for e in entries])


def test_adopt_spools_moves_only_the_spools_of_indexes_gone(tmp_path: Path) -> None:
    """Spools of worker indexes >= ``workers`` move into the caller's, in seq order
    after its own; a live worker's spool stays; a spool, once emptied, never reuses a
    seq when its worker comes back."""
    for w, entries in [(0, [b"a0"]), (1, [b"b0", b"b1"]), (2, [b"c0"]), (3, [])]:
        led = Ledger(tmp_path / "led", sync=False, worker=w)
        _spool(led, entries)
        led.close()
    led = Ledger(tmp_path / "led", sync=False, worker=0)
    try:
        assert led.adopt_spools(2) == 1  # w2 only: w1 still runs in a 2-worker group
        assert [r.data for r in led.audit_pending(10)] == [b"a0", b"c0"]
        assert led.adopt_spools(1) == 2
        assert [r.data for r in led.audit_pending(10)] == [b"a0", b"c0", b"b0", b"b1"]
        assert led.adopt_spools(1) == 0  # nothing left: repeating changes nothing
    finally:
        led.close()
    back = Ledger(tmp_path / "led", sync=False, worker=1)
    try:
        assert back.audit_count() == 0
        _spool(back, [b"b2"])
        assert [r.seq for r in back.audit_pending(10)] == [3]  # after b0, b1
    finally:
        back.close()


def test_an_empty_data_file_of_a_used_ledger_is_refused(tmp_path: Path) -> None:
    (tmp_path / "led").mkdir()
    (tmp_path / "led" / "data.mdb").write_bytes(b"")
    with pytest.raises(LmdbDamagedError, match="0 bytes"):
        Ledger(tmp_path / "led", sync=False, used=True)
    Ledger(tmp_path / "led", sync=False).close()  # not known to be used: created
    assert (tmp_path / "led" / "data.mdb").stat().st_size > 0
