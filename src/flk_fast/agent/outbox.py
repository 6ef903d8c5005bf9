"""The agent's durable outbox and dead-letter queue, on two LMDB WALs.

Layout of a data directory::

    DIR/outbox/     LmdbWal: one record per PCS (encoded JSON, signed), acked once
                    the server answered 200/202 or once the record went to the DLQ
    DIR/dlq/        LmdbWal: one DeadLetter record per PCS that cannot be delivered;
                    "acked" there means dropped by an operator or requeued
    DIR/agent.lock  held (flock) by the one process that sends from this directory

Exactly-once summarising. A PCS is appended *together with* the input checkpoint (how
far the input has been summarised) and the next epoch of its shard, in one LMDB
transaction. After any crash, kill -9 included, either both are on disk or neither is:
a restart resumes reading right after the last window that has a PCS in the outbox and
numbers the next window with the next epoch, so it never builds a second PCS for
events already summarised and never reuses an epoch.

At-least-once delivery. A record stays pending until acked; every start-up resends
everything pending. The server deduplicates on ``pcs_id`` so a resend after a lost
answer is judged once.

Damage. Every record, the agent state and each record's *origin* (a WAL tag: which
input bytes and epoch made it, see :class:`Origin`) carry checksums. A damaged state is
an error naming the file (:class:`OutboxDamagedError`), never a silent restart from the
first line. A damaged record is found at start-up (:meth:`Outbox.damaged`); the agent
summarises its window again from the input when its origin is intact and the input
still holds the same bytes (same epoch, so the same ``pcs_id``), and otherwise
dead-letters it as lost (:data:`DAMAGED_REASON`), which ``flk outbox status`` counts.

``ft.outbox_seq`` is stamped at send time (see :func:`stamp`): the seq is only known
once the append committed, and ``ft`` is outside the signed subset (SPEC §3), so the
stored bytes stay as signed and each send carries its seq, attempt and ``sent_at``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from flk_fast.errors import ConfigError, StorageError
from flk_fast.protocol.codec import decode_pcs, encode_pcs
from flk_fast.protocol.pcs import PCS
from flk_fast.storage.base import WalRecord
from flk_fast.storage.wal_lmdb import LmdbWal, WalDamagedError, WalFullError

__all__ = [
    "DAMAGED_REASON",
    "AgentState",
    "Checkpoint",
    "Damaged",
    "DeadLetter",
    "Origin",
    "Outbox",
    "OutboxBusyError",
    "OutboxDamagedError",
    "OutboxStatus",
    "fingerprint",
    "stamp",
    "utc_now",
]

#: Start of the reason of a dead letter whose outbox record was damaged and could not
#: be summarised again: its window was never delivered.
DAMAGED_REASON = "outbox record damaged"

_STATE = b"agent-state"  # -> AgentState JSON: every input checkpoint and shard epoch
_FROM = b"from-outbox:"  # (DLQ meta) + outbox seq -> b"1": dead-lettered already
#: Bytes of input hashed into a checkpoint's fingerprint: enough to notice that a file
#: was replaced or rewritten, cheap to recompute on every start.
FINGERPRINT_BYTES = 4096


class OutboxBusyError(StorageError):
    """Another process holds this data directory (an agent is running on it)."""


class OutboxDamagedError(StorageError):
    """The agent state (input checkpoints, next epochs) cannot be read back exactly.

    Resuming without it would summarise the input again under new epochs (every
    window judged twice), so the agent refuses and says what to do.
    """

    def __init__(self, data_dir: Path, detail: str) -> None:
        self.file = data_dir / "outbox" / "data.mdb"
        super().__init__(
            f"{self.file}: the agent state (input checkpoints and next epochs) is "
            f"damaged ({detail}). Restore {data_dir} from a backup; or move "
            f"{data_dir / 'outbox'} aside and start again with --start-epoch above the "
            "last epoch the server holds for each shard (the input is then summarised "
            "again from its start)"
        )


class Origin(msgspec.Struct, frozen=True):
    """Where an outbox record came from: enough to summarise its window again.

    ``start``/``end`` are the byte range of the input holding the window's events
    (from just after the previous window), ``line`` the line number at ``start``,
    ``rows`` the BLAKE3 of the window's canonical rows (proof that the input still
    holds the same events).
    """

    source: str
    shard: str
    epoch: int
    start: int
    end: int
    line: int
    events: int
    rows: str


@dataclass(frozen=True, slots=True)
class Damaged:
    """A pending outbox record that cannot be read: ``origin`` None if unknown."""

    seq: int
    reason: str
    origin: Origin | None


class Checkpoint(msgspec.Struct, frozen=True):
    """How far one input has been summarised.

    ``offset`` is the byte offset just after the last event of the last window that
    has a PCS (0 for sources that cannot seek, such as stdin), ``line`` the 1-based
    line number of that event, ``events`` the events summarised so far and
    ``fingerprint`` the hash of the input's first bytes (see :func:`fingerprint`).
    """

    offset: int = 0
    line: int = 0
    events: int = 0
    fingerprint: str = ""
    windows: int = 0


class DeadLetter(msgspec.Struct, frozen=True):
    """A PCS that could not be delivered, with why."""

    outbox_seq: int
    pcs_id: str
    shard_id: str
    epoch: int
    status: int | None
    reason: str
    attempts: int
    dead_at: float
    response: str
    pcs: msgspec.Raw
    dlq_seq: int = 0  # filled in when read back
    #: Dead for a failure that may heal (429, 5xx, no answer): the agent re-drives it
    #: by itself once the server answers (SPEC §7). False for letters written before
    #: this field existed: they wait for an operator, as they always did.
    transient: bool = False

    def body(self) -> bytes:
        """The PCS bytes as they sat in the outbox."""
        raw = bytes(self.pcs)
        # A body that was not JSON is kept as a JSON string (see Outbox.dead_letter).
        return msgspec.json.decode(raw).encode() if raw.startswith(b'"') else raw


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox record as ``flk outbox list/show`` shows it."""

    seq: int
    state: str  # "pending" or "acked"
    appended_at: float
    pcs_id: str
    shard_id: str
    epoch: int
    body: bytes
    #: Of an acked record: the server's verdict kept with the ack
    #: (``{"verdict": "accepted"|"escalated", "status": N, "reason": …}``); None when
    #: pending, or acked by an agent that did not keep it.
    verdict: dict[str, Any] | None = None

    @classmethod
    def of(cls, rec: WalRecord, verdict: bytes | None = None) -> OutboxEntry:
        try:
            pcs = decode_pcs(rec.data)
            pcs_id, shard, epoch = pcs.pcs_id, pcs.shard_id, pcs.epoch
        except Exception:  # noqa: BLE001 - shown as unreadable, never fatal here
            pcs_id, shard, epoch = "", "", -1
        state = "acked" if rec.acked else "pending"
        doc = None
        if verdict is not None:
            try:
                doc = msgspec.json.decode(verdict)
            except msgspec.DecodeError:
                doc = None
        return cls(
            rec.seq, state, rec.appended_at, pcs_id, shard, epoch, rec.data,
            doc if isinstance(doc, dict) else None,
        )  # fmt: skip


class AgentState(msgspec.Struct):
    """Everything an agent needs to resume, stored as one meta value so that it is
    replaced atomically with each append. Small: one entry per input and per shard."""

    checkpoints: dict[str, Checkpoint] = msgspec.field(default_factory=dict)
    epochs: dict[str, int] = msgspec.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """``damaged``: pending records that cannot be read (the next agent run on their
    input summarises them again, or dead-letters them as lost); ``lost``: dead
    letters of damaged records that could not be summarised again."""

    pending: int
    acked: int
    first_pending: int | None
    dead_letters: int
    disk_bytes: int
    checkpoints: dict[str, Checkpoint]
    epochs: dict[str, int]
    damaged: int = 0
    lost: int = 0


def fingerprint(head: bytes) -> str:
    """Identity of an input from its first ``FINGERPRINT_BYTES`` bytes."""
    return hashlib.sha256(head[:FINGERPRINT_BYTES]).hexdigest()


def utc_now(clock: float | None = None) -> str:
    """RFC 3339 UTC with second precision, like the reference vector."""
    t = time.time() if clock is None else clock
    return _dt.datetime.fromtimestamp(int(t), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(pcs: PCS, *, outbox_seq: int, attempt: int, sent_at: str) -> bytes:
    """The wire bytes of one send: the stored PCS with this send's unsigned fields."""
    ft = msgspec.structs.replace(pcs.ft, outbox_seq=outbox_seq)
    return encode_pcs(
        msgspec.structs.replace(pcs, attempt=attempt, sent_at=sent_at, ft=ft)
    )


_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(AgentState)
_dl_encoder = msgspec.json.Encoder()
_dl_decoder = msgspec.json.Decoder(DeadLetter)
_origin_decoder = msgspec.json.Decoder(Origin)


class Outbox:
    """Outbox + DLQ of one data directory.

    Parameters
    ----------
    data_dir : path
        Created if missing.
    sync : bool
        fsync each commit (default). ``False`` survives a process crash but not a
        machine crash.
    lock : bool
        Take the directory's exclusive lock (the sending agent does; read-only
        inspection such as ``flk outbox status`` does not).
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], *, sync: bool = True, lock: bool = False
    ) -> None:
        self.dir = Path(data_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--data-dir {self.dir}: {exc.strerror}") from None
        self._lock_fd: int | None = None
        self._corrupt: dict[int, str] = {}
        try:
            if lock:
                self.acquire_lock()
            self.wal = LmdbWal(self.dir / "outbox", sync=sync, on_corrupt=self._seen)
            try:
                self.dlq = LmdbWal(self.dir / "dlq", sync=sync)
            except BaseException:
                self.wal.close()
                raise
        except OSError as exc:
            self._unlock()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise WalFullError(self.dir, exc.strerror or str(exc)) from None
            raise
        except BaseException:
            self._unlock()
            raise
        try:
            self._state = self._read_state()
        except BaseException:
            self.close()
            raise
        self._pending_state = self._state

    def _read_state(self) -> AgentState:
        try:
            raw = self.wal.get_meta(_STATE)
            return AgentState() if raw is None else _state_decoder.decode(raw)
        except WalDamagedError as exc:
            raise OutboxDamagedError(self.dir, exc.detail) from None
        except msgspec.DecodeError as exc:  # a format-1 value damaged before migration
            raise OutboxDamagedError(self.dir, f"not a valid state: {exc}") from None

    def _seen(self, seq: int, reason: str) -> None:
        self._corrupt[seq] = reason

    # -- process lock ------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Hold the directory for this process. The kernel drops an flock when the
        process dies, kill -9 included, so a crash never leaves a stale lock."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxBusyError(
                f"{self.dir} is in use by another agent process (agent.lock is held)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        self.wal.close()
        self.dlq.close()
        self._unlock()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state kept beside the records ----------------------------------------------
    def checkpoint(self, source_id: str) -> Checkpoint | None:
        return self._state.checkpoints.get(source_id)

    def next_epoch(self, shard_id: str, default: int) -> int:
        return max(default, self._state.epochs.get(shard_id, default))

    # -- writes -----------------------------------------------------------------------
    def _state_meta(
        self,
        shard_id: str | None,
        next_epoch: int | None,
        source_id: str | None,
        checkpoint: Checkpoint | None,
    ) -> dict[bytes, bytes]:
        state = AgentState(dict(self._state.checkpoints), dict(self._state.epochs))
        if shard_id is not None and next_epoch is not None:
            state.epochs[shard_id] = next_epoch
        if source_id is not None and checkpoint is not None:
            state.checkpoints[source_id] = checkpoint
        self._pending_state = state
        return {_STATE: _state_encoder.encode(state)}

    def append(
        self,
        pcs_bodies: Sequence[bytes],
        *,
        shard_id: str,
        next_epoch: int,
        source_id: str | None = None,
        checkpoint: Checkpoint | None = None,
        origins: Sequence[Origin | None] | None = None,
    ) -> list[int]:
        """Durably append PCS bodies with the shard's next epoch, the input
        checkpoint and each body's origin, in one transaction (one fsync). Returns
        their seqs."""
        meta = self._state_meta(shard_id, next_epoch, source_id, checkpoint)
        tags = None if origins is None else [_tag(o) for o in origins]
        seqs = self.wal.append_many(list(pcs_bodies), meta, tags=tags)
        # Only a committed state becomes the in-memory one.
        self._state = self._pending_state
        return seqs

    def save_checkpoint(self, source_id: str, checkpoint: Checkpoint) -> None:
        """Record progress without a PCS (e.g. malformed lines skipped at the end)."""
        meta = self._state_meta(None, None, source_id, checkpoint)
        self.wal.append_many([], meta)
        self._state = self._pending_state

    def ack(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.wal.ack_many(list(seqs))

    def ack_verdicts(self, acks: Sequence[tuple[int, bytes]]) -> None:
        """Acknowledge ``(seq, verdict)`` pairs, each verdict (``delivery.verdict``)
        kept with its ack in the same transaction, for ``flk outbox list/show``."""
        if acks:
            self.wal.ack_many([s for s, _ in acks], [v for _, v in acks])

    def dead_letter(
        self,
        seq: int,
        body: bytes,
        *,
        status: int | None,
        reason: str,
        attempts: int,
        response: bytes = b"",
        transient: bool = False,
        pcs: PCS | None = None,
    ) -> None:
        """Move outbox record ``seq`` to the DLQ (DLQ append first, then outbox ack).

        ``pcs`` is the decoded ``body`` when the caller has it (no second decode).
        A crash between the two leaves the record pending in the outbox; the DLQ's
        ``from-outbox`` marker makes the second dead-lettering a no-op, so the DLQ never
        holds the same record twice.
        """
        try:
            if pcs is None:
                pcs = decode_pcs(body)
            pcs_id, shard, epoch = pcs.pcs_id, pcs.shard_id, pcs.epoch
        except Exception:  # noqa: BLE001 - a DLQ must take even an undecodable body
            pcs_id, shard, epoch = "", "", -1
        self._dead(
            seq,
            body,
            status=status,
            reason=reason,
            attempts=attempts,
            response=response,
            pcs_id=pcs_id,
            shard=shard,
            epoch=epoch,
            transient=transient and bool(pcs_id),
        )
        self.wal.ack(seq)

    def _dead(
        self,
        seq: int,
        body: bytes,
        *,
        status: int | None,
        reason: str,
        attempts: int,
        pcs_id: str,
        shard: str,
        epoch: int,
        response: bytes = b"",
        transient: bool = False,
    ) -> None:
        marker = _FROM + str(seq).encode()
        if self.dlq.get_meta(marker) is None:
            if pcs_id:
                raw = msgspec.Raw(body)
            else:  # kept as a JSON string (see DeadLetter.body)
                raw = msgspec.Raw(msgspec.json.encode(body.decode("utf-8", "replace")))
            letter = DeadLetter(
                outbox_seq=seq,
                pcs_id=pcs_id,
                shard_id=shard,
                epoch=epoch,
                status=status,
                reason=reason,
                attempts=attempts,
                dead_at=time.time(),
                response=response.decode("utf-8", "replace"),
                pcs=raw,
                transient=transient,
            )
            self.dlq.append(_dl_encoder.encode(letter), meta={marker: b"1"})

    # -- damaged records --------------------------------------------------------------
    def damaged(self) -> list[Damaged]:
        """Every pending record that cannot be read, with its origin when intact.

        Reads all pending records (their checksums) and looks for origins whose
        record is gone (a garbled key, a page LMDB lost). Seq 0 stands for keys that
        are not a seq at all: such a record has no origin and cannot be acked.
        """
        self._corrupt.clear()
        readable = {rec.seq for rec in self.wal.pending()}
        found = dict(self._corrupt)
        for seq, acked in self.wal.tagged():
            if not acked and seq not in readable:
                found.setdefault(seq, "the record is missing or unreadable")
        out = []
        for seq, reason in sorted(found.items()):
            origin = None
            if seq:
                tag = self.wal.get_tag(seq)
                if tag is not None:
                    try:
                        origin = _origin_decoder.decode(tag)
                    except msgspec.DecodeError:
                        origin = None
            out.append(Damaged(seq, reason, origin))
        return out

    def replace_damaged(self, d: Damaged, body: bytes) -> int:
        """Append ``body``, the PCS summarised again for ``d``, then retire ``d``.
        A crash in between leaves ``d`` to be summarised again: the same PCS, which
        the server's dedup absorbs."""
        (seq,) = self.wal.append_many([body], tags=[_tag(d.origin)])
        self._retire(d.seq)
        return seq

    def dead_letter_damaged(self, d: Damaged, why: str) -> None:
        """Record a damaged record that cannot be summarised again as a dead letter
        (``flk dlq list`` shows it; status counts it as lost)."""
        if not d.seq:
            return  # no seq: nothing to mark, and its DLQ marker would not be unique
        o = d.origin
        where = f" ({o.source} bytes {o.start}-{o.end}, epoch {o.epoch})" if o else ""
        self._dead(
            d.seq,
            b"",
            status=None,
            reason=f"{DAMAGED_REASON} ({d.reason}){where}: {why}",
            attempts=0,
            pcs_id="",
            shard=o.shard if o else "",
            epoch=o.epoch if o else -1,
        )
        self._retire(d.seq)

    def _retire(self, seq: int) -> None:
        try:
            self.wal.ack(seq)
        except WalDamagedError:
            pass  # its page cannot be read: it stays damaged, reported next time too
        self.wal.drop_tags([seq])

    # -- reads ------------------------------------------------------------------------
    def pending(self, start: int = 0) -> Iterator[WalRecord]:
        """Records not yet acknowledged (nor dead-lettered), from seq ``start`` on."""
        return self.wal.pending(start)

    def entries(self, *, acked: int = 20) -> list[OutboxEntry]:
        """Every pending record and the last ``acked`` acknowledged ones, by seq."""
        recent: deque[WalRecord] = deque(maxlen=max(0, acked))
        pending: list[WalRecord] = []
        for rec in self.wal.replay(include_acked=True):
            (recent if rec.acked else pending).append(rec)
        verdicts = self.wal.ack_values([r.seq for r in recent])
        return [
            OutboxEntry.of(r, verdicts.get(r.seq))
            for r in sorted([*pending, *recent], key=_seq)
        ]

    def entry(self, seq: int) -> OutboxEntry | None:
        rec = self.wal.get(seq)
        if rec is None:
            return None
        verdict = self.wal.ack_values([seq]).get(seq) if rec.acked else None
        return OutboxEntry.of(rec, verdict)

    def dead_letters(self, *, include_dropped: bool = False) -> list[DeadLetter]:
        out = []
        for rec in self.dlq.replay(include_acked=include_dropped):
            letter = _dl_decoder.decode(rec.data)
            out.append(msgspec.structs.replace(letter, dlq_seq=rec.seq))
        return out

    def _select(self, seqs: Iterable[int] | None) -> list[DeadLetter]:
        letters = self.dead_letters()
        if seqs is None:
            return letters
        wanted = set(seqs)
        chosen = [d for d in letters if d.dlq_seq in wanted]
        missing = wanted - {d.dlq_seq for d in chosen}
        if missing:
            raise ConfigError(f"no pending dead letter with seq {sorted(missing)}")
        return chosen

    def dlq_retry(self, seqs: Iterable[int] | None = None) -> list[int]:
        """Requeue dead letters (all when ``seqs`` is None) into the outbox; the next
        delivery round sends them again. Returns the new outbox seqs."""
        chosen = self._select(seqs)
        new: list[int] = []
        for d in chosen:
            # Outbox append first: a crash before the DLQ ack leaves the record in both,
            # and a duplicate send is absorbed by the server's dedup.
            new.extend(self.wal.append_many([d.body()]))
            self.dlq.ack(d.dlq_seq)
        return new

    def redrive_transient(self) -> list[tuple[int, bytes]]:
        """Requeue every transient dead letter (see :attr:`DeadLetter.transient`) into
        the outbox, as :meth:`dlq_retry` does; returns ``(new outbox seq, body)``."""
        chosen = [d for d in self.dead_letters() if d.transient]
        if not chosen:
            return []
        new = self.dlq_retry(d.dlq_seq for d in chosen)
        return list(zip(new, (d.body() for d in chosen), strict=True))

    def dlq_drop(self, seqs: Iterable[int] | None = None) -> int:
        """Drop dead letters for good (compaction deletes them later)."""
        chosen = self._select(seqs)
        self.dlq.ack_many([d.dlq_seq for d in chosen])
        return len(chosen)

    def compact(self, older_than_s: float) -> tuple[int, int]:
        """Delete acked records and dropped dead letters older than the horizon."""
        return self.wal.compact(older_than_s), self.dlq.compact(older_than_s)

    def status(self) -> OutboxStatus:
        """Counts by reading the records, not LMDB's entry counters: those sit in
        pages that can be damaged too (a flipped bit made "pending -67108664")."""
        st = self.wal.stats()
        dl = self.dlq.stats()
        pending = 0
        first: int | None = None
        for rec in self.wal.pending():
            pending += 1
            first = rec.seq if first is None else first
        damaged = self.damaged()
        letters = self.dead_letters()
        return OutboxStatus(
            pending=pending + len(damaged),
            acked=max(0, st.count - pending - len(damaged)),
            first_pending=first,
            dead_letters=len(letters),
            disk_bytes=st.disk_bytes + dl.disk_bytes,
            checkpoints=dict(self._state.checkpoints),
            epochs=dict(self._state.epochs),
            damaged=len(damaged),
            lost=sum(d.reason.startswith(DAMAGED_REASON) for d in letters),
        )


def _seq(rec: WalRecord) -> int:
    return rec.seq


def _tag(origin: Origin | None) -> bytes | None:
    return None if origin is None else msgspec.json.encode(origin)
