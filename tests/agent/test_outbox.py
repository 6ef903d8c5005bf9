"""agent.outbox: durable PCS records, resume state, DLQ, compaction, process lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flk_fast.agent.outbox import Checkpoint, Outbox, OutboxBusyError, stamp
from flk_fast.errors import ConfigError
from flk_fast.protocol.codec import decode_pcs

from .pcsgen import make_body, make_pcs


def test_append_pending_ack_survive_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        seqs = ob.append([make_body(1), make_body(2)], shard_id="s1", next_epoch=3)
        assert seqs == [1, 2]
        ob.ack([1])
    with Outbox(tmp_path) as ob:
        assert [(r.seq, decode_pcs(r.data).epoch) for r in ob.pending()] == [(2, 2)]
        assert ob.next_epoch("s1", default=1) == 3
        assert ob.next_epoch("other", default=1) == 1


def test_checkpoint_written_with_the_record(tmp_path: Path) -> None:
    ck = Checkpoint(offset=123, line=10, events=9, fingerprint="ab", windows=1)
    with Outbox(tmp_path) as ob:
        assert ob.checkpoint("/in.csv") is None
        ob.append(
            [make_body(1)],
            shard_id="s1",
            next_epoch=2,
            source_id="/in.csv",
            checkpoint=ck,
        )
        ob.append([make_body(1, "s2")], shard_id="s2", next_epoch=2)
    with Outbox(tmp_path) as ob:
        assert ob.checkpoint("/in.csv") == ck
        st = ob.status()
        assert st.pending == 2 and st.first_pending == 1
        assert st.epochs == {"s1": 2, "s2": 2}
        assert st.checkpoints == {"/in.csv": ck}


def test_save_checkpoint_without_record(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        ob.save_checkpoint("x", Checkpoint(offset=5, line=2))
    with Outbox(tmp_path) as ob:
        assert ob.checkpoint("x") == Checkpoint(offset=5, line=2)
        assert list(ob.pending()) == []


def test_stamp_sets_unsigned_fields_only() -> None:
    pcs = make_pcs(4)
    wire = decode_pcs(
        stamp(pcs, outbox_seq=17, attempt=3, sent_at="2026-01-01T00:00:00Z")
    )
    assert (wire.ft.outbox_seq, wire.attempt, wire.sent_at) == (
        17,
        3,
        "2026-01-01T00:00:00Z",
    )
    assert (wire.sig, wire.pcs_id, wire.D_hat) == (pcs.sig, pcs.pcs_id, pcs.D_hat)


def test_dead_letter_exact_and_idempotent(tmp_path: Path) -> None:
    body = make_body(7)
    with Outbox(tmp_path) as ob:
        (seq,) = ob.append([body], shard_id="s1", next_epoch=8)
        ob.dead_letter(
            seq,
            body,
            status=401,
            reason="HTTP 401: bad sig",
            attempts=1,
            response=b'{"error":"signature"}',
        )
        # A crash between the DLQ append and the outbox ack replays the dead-lettering.
        ob.dead_letter(seq, body, status=401, reason="HTTP 401: bad sig", attempts=1)
        assert list(ob.pending()) == []
        (d,) = ob.dead_letters()
    assert (d.outbox_seq, d.pcs_id, d.shard_id, d.epoch) == (
        seq,
        make_pcs(7).pcs_id,
        "s1",
        7,
    )
    assert (d.status, d.reason, d.attempts) == (401, "HTTP 401: bad sig", 1)
    assert d.response == '{"error":"signature"}' and d.body() == body
    assert d.dlq_seq == 1


def test_dead_letter_keeps_undecodable_body(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        (seq,) = ob.append([b"not json"], shard_id="s1", next_epoch=1)
        ob.dead_letter(seq, b"not json", status=400, reason="HTTP 400", attempts=1)
        (d,) = ob.dead_letters()
    assert d.pcs_id == "" and d.epoch == -1 and d.body() == b"not json"


def test_dlq_json_is_readable(tmp_path: Path) -> None:
    body = make_body(1)
    with Outbox(tmp_path) as ob:
        (seq,) = ob.append([body], shard_id="s1", next_epoch=2)
        ob.dead_letter(seq, body, status=None, reason="timeout", attempts=6)
        (rec,) = list(ob.dlq.pending())
    doc = json.loads(rec.data)
    assert doc["pcs"]["pcs_id"] == make_pcs(1).pcs_id and doc["status"] is None


def test_dlq_retry_and_drop(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        seqs = ob.append([make_body(e) for e in (1, 2, 3)], shard_id="s1", next_epoch=4)
        for s in seqs:
            ob.dead_letter(s, make_body(s), status=500, reason="x", attempts=6)
        letters = ob.dead_letters()
        assert [d.epoch for d in letters] == [1, 2, 3]
        new = ob.dlq_retry([letters[0].dlq_seq])
        assert new == [4]
        assert [decode_pcs(r.data).epoch for r in ob.pending()] == [1]
        assert ob.dlq_drop([letters[1].dlq_seq]) == 1
        assert [d.epoch for d in ob.dead_letters()] == [3]
        assert len(ob.dead_letters(include_dropped=True)) == 3
        with pytest.raises(ConfigError, match="no pending dead letter"):
            ob.dlq_drop([letters[1].dlq_seq])
        assert ob.dlq_retry() == [5]
        assert ob.dead_letters() == []


def test_compact_removes_only_acked(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        ob.append([make_body(e) for e in (1, 2, 3)], shard_id="s1", next_epoch=4)
        ob.ack([1, 2])
        assert ob.compact(3600) == (0, 0)  # too young
        assert ob.compact(0) == (2, 0)
        assert [r.seq for r in ob.pending()] == [3]
        assert ob.status().acked == 0
        # seqs never repeat after compaction
        assert ob.append([make_body(4)], shard_id="s1", next_epoch=5) == [4]


def test_lock_is_exclusive(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, lock=True)
    try:
        with pytest.raises(OutboxBusyError, match="in use"):
            Outbox(tmp_path / ".", lock=True).close()
    finally:
        ob.close()
    Outbox(tmp_path, lock=True).close()  # released on close
