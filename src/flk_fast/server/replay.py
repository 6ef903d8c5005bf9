"""WAL acks and the replay of unacked inbox records (the ``--dedup URL`` layout, and the
adoption of an older data dir): a record whose fate is final is acked, in batches off
the response path; one still unacked is re-judged at start-up and by the maintenance
task, which is idempotent because the store hands back an already-stored outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from flk_fast.errors import StorageError
from flk_fast.metrics import ServerMetrics

from .keys import UnknownTenantError
from .outcome import DamagedOutcomeError
from .pipeline import unframe_record

__all__ = ["Replay"]

log = logging.getLogger("flk_fast.server")

#: Write WAL acks at most this often (seconds) unless ACK_BATCH of them are waiting.
ACK_INTERVAL_S = 0.25
ACK_BATCH = 4096
#: Compact (delete) acked WAL records at most this often, right after an ack flush.
COMPACT_EVERY_S = 1.0


class Replay:
    """Acks, drain and replay of ``IngestService`` (whose state they use)."""

    metrics: ServerMetrics
    wal: Any
    _acks: list[int]
    _ack_now: asyncio.Event
    _flush_all: bool
    _last_compact: float
    _ack_task: asyncio.Task[None] | None
    _inflight: int
    _idle: asyncio.Event

    if TYPE_CHECKING:  # defined by Pipeline

        async def judge(
            self, tenant: str, body: bytes, seq: int, *, count: bool = True
        ) -> tuple[int, bytes]: ...

    def _ack(self, seq: int) -> None:
        # Acks only shorten the next replay, and every ack transaction is an fsync on
        # the WAL's one writer thread, queued in front of the appends that requests are
        # waiting for. So they are collected and written rarely: one transaction per
        # ACK_INTERVAL_S (or ACK_BATCH acks), nobody waiting for it.
        self._acks.append(seq)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())
        elif len(self._acks) >= ACK_BATCH:
            self._ack_now.set()

    async def _flush_acks(self) -> None:
        while self._acks:
            if not self._flush_all and len(self._acks) < ACK_BATCH:
                self._ack_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ack_now.wait(), ACK_INTERVAL_S)
            batch, self._acks = self._acks, []
            try:
                await self.wal.ack_many(batch)
                now = time.monotonic()
                if now - self._last_compact >= COMPACT_EVERY_S:
                    # Delete every acked record right away: it is final, and small
                    # frequent runs keep each one short (the appends queue behind it
                    # on the WAL writer thread). Scanning only acked-and-deletable
                    # records also keeps a run's cost proportional to its work.
                    self._last_compact = now
                    await self.wal.compact(0.0)
            except Exception:
                # Unacked records are only re-judged at the next start: harmless.
                self.metrics.wal_errors.inc()
                log.exception(
                    "inbox WAL ack/compaction failed (%d records)", len(batch)
                )

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight pipelines (bounded) and for the last acks."""
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        self._flush_all = True  # the ack flusher stops waiting for a full batch
        self._ack_now.set()
        try:
            if self._ack_task is not None:
                await asyncio.wait(
                    {self._ack_task}, timeout=max(0.5, deadline - time.monotonic())
                )
        finally:
            self._flush_all = False

    # ------------------------------------------------------------------ replay
    async def replay(
        self,
        records: Callable[[], Awaitable[list[tuple[int, bytes]]]],
        concurrency: int = 64,
        *,
        drain: bool = True,
    ) -> int:
        """Re-judge unacked WAL records; ``records()`` yields the next chunk (empty at
        the end). Returns how many were judged to a final state."""
        judged = 0
        sem = asyncio.Semaphore(concurrency)

        async def one(seq: int, data: bytes) -> None:
            nonlocal judged
            async with sem:
                try:
                    tenant, body = unframe_record(data)
                except (IndexError, UnicodeDecodeError):
                    self._ack(seq)  # not our framing: can never be judged
                    return
                try:
                    await self.judge(tenant, body, seq, count=False)
                except UnknownTenantError:
                    pass
                except DamagedOutcomeError as exc:
                    # Left unacked and start-up goes on: one damaged value must not
                    # hold every other record (and the port) hostage.
                    log.error("replay of WAL record %d: %s", seq, exc)
                    return
                except StorageError:
                    raise  # the store is down: start-up retries the whole replay
                except Exception:
                    # A bug must not block start-up forever; the record stays unacked
                    # and is tried again at the next start.
                    log.exception("replay of WAL record %d failed", seq)
                    return
                self._ack(seq)
                self.metrics.replayed.inc()
                judged += 1

        while True:
            chunk = await records()
            if not chunk:
                break
            await asyncio.gather(*(one(s, d) for s, d in chunk))
        if drain:
            await self.drain(5.0)
        return judged
