"""The agent: input → windows → signed PCS → durable outbox → delivery.

Threads and tasks
-----------------
* One *work thread* (a single-thread executor) does everything that touches LMDB or
  burns CPU: reading and parsing input, summarising windows, appending to the outbox,
  acknowledging and dead-lettering. LMDB write transactions are bound to a thread, and a
  single thread also makes the order of outbox writes the order of the input.
* The event loop runs the delivery workers (``concurrency`` of them, sharing one
  keep-alive ``DeliveryClient``), the ack batcher and the progress display. Work is
  handed to the thread one small step at a time (one input chunk, one batch of acks),
  so acknowledgements never wait behind a whole file.

Bounded memory: at most ``max_inflight`` PCS are created but not yet acknowledged or
dead-lettered; the reader waits when that many are outstanding. The windower holds at
most one window of events plus one input chunk.

Crash safety: see :mod:`flk_fast.agent.outbox`. Every PCS is durably appended with the
input checkpoint before it is sent; a restart resends what is pending and resumes the
input after the last summarised event.

Damage: at start the outbox is searched for pending records that cannot be read. Each
one whose origin (a WAL tag) names the input being read is summarised again from the
input's bytes, with its epoch, once the same canonical rows are found there; the rest
are dead-lettered as lost at ``drain()`` (``AgentSummary.lost``, exit 5 in the CLI).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import signal
import time
from collections.abc import AsyncIterable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from flk_fast.agent import delivery
from flk_fast.agent.outbox import Checkpoint, Damaged, Origin, Outbox, fingerprint
from flk_fast.agent.progress import Progress
from flk_fast.agent.pump import InputPump, rows_digest, window_rejected
from flk_fast.agent.retry import RetryPolicy, jittered
from flk_fast.agent.source import (
    EventBatch,
    FileSource,
    Malformed,
    StdinSource,
    parse_block,
)
from flk_fast.agent.windows import Window, Windower
from flk_fast.errors import ConfigError, FlkError, InputError, StorageError
from flk_fast.protocol.codec import decode_pcs, encode_pcs
from flk_fast.protocol.pcs import PCS

__all__ = ["Agent", "AgentConfig", "AgentSummary", "Summarizer"]

log = logging.getLogger("flk_fast.agent")

#: ``summarize(window, shard_id=..., epoch=...) -> PCS`` (signed, ``ft.outbox_seq`` 0).
Summarizer = Callable[..., PCS]
#: ``origins(windows, made) -> [Origin | None]``: where each window lies in its input.
_Origins = Callable[[list[Window], list[PCS]], list[Origin | None]]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything ``flk agent`` can be told; each field is a CLI option (docs/agent.md).

    Only ``endpoint``, ``shard_id`` and ``data_dir`` are required; the summarizer
    (signals, Merkle, signing) is configured separately and handed to :class:`Agent`.
    """

    endpoint: str
    shard_id: str
    data_dir: str | os.PathLike[str]
    window: int = 10_000
    window_seconds: float | None = None
    start_epoch: int = 1
    concurrency: int = 8
    timeout_s: float = 10.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    on_malformed: str = "skip"
    follow: bool = False
    poll_s: float = 0.25
    idle_flush_s: float | None = None
    exit_when_drained: bool = True
    sync: bool = True
    max_inflight: int = 256
    compact_after_s: float | None = 7 * 86400.0
    source_id: str | None = None
    restart_input: bool = False
    progress: str = "auto"
    log_every_s: float = 10.0
    workers: int = 0
    #: Coordinates beyond +-this are malformed lines (their voxel overflows int64 in
    #: the box counts); the CLI sets it from the largest scale. None: no check.
    max_abs_coordinate: float | None = None
    #: While running, delete acknowledged records older than ``compact_after_s``
    #: every this many seconds (a long --follow run would otherwise grow forever).
    compact_every_s: float = 3600.0
    #: https endpoints: a PEM CA bundle used as the only trust store (None: the
    #: system's), and the client certificate + key for mTLS (both or neither).
    tls_ca_file: str | os.PathLike[str] | None = None
    tls_cert: str | os.PathLike[str] | None = None
    tls_key: str | os.PathLike[str] | None = None
    #: Longest wait between two probes of a server that is down while transient dead
    #: letters wait to be re-driven (the waits double from the retry base up to it).
    redrive_max_wait_s: float = 60.0
    #: Sent as X-Tenant-Id (multi-tenant servers pick the key by it).
    tenant_id: str | None = None
    #: Prometheus metrics (agent/metrics.py): served on metrics_host:metrics_port
    #: and/or written to metrics_textfile (node-exporter), refreshed every
    #: metrics_every_s. None: off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_textfile: str | os.PathLike[str] | None = None
    metrics_every_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.shard_id:
            raise ConfigError("--shard-id must not be empty")
        if self.on_malformed not in ("skip", "stop"):
            raise ConfigError("--on-malformed must be 'skip' or 'stop'")
        if self.start_epoch < 0:
            raise ConfigError("--start-epoch must be >= 0")
        if self.max_inflight < 1:
            raise ConfigError("--max-inflight must be >= 1")
        if self.progress not in ("auto", "bar", "log", "off"):
            raise ConfigError("--progress must be auto, bar, log or off")
        if self.workers < 0:
            raise ConfigError("--workers must be >= 0")
        if self.idle_flush_s is not None and not self.idle_flush_s > 0:
            raise ConfigError("--idle-flush must be > 0 seconds")
        if not (math.isfinite(self.redrive_max_wait_s) and self.redrive_max_wait_s > 0):
            raise ConfigError("--redrive-max-wait must be a number of seconds > 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {self.metrics_port} is not a TCP port")
        if not (math.isfinite(self.metrics_every_s) and self.metrics_every_s > 0):
            raise ConfigError("--metrics-every must be a number of seconds > 0")
        if not self.compact_every_s > 0:
            raise ConfigError("compact_every_s must be > 0 seconds")
        if self.max_abs_coordinate is not None and not self.max_abs_coordinate > 0:
            raise ConfigError("max_abs_coordinate must be > 0")
        Windower(self.window, self.window_seconds)  # validates both
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")


@dataclass(slots=True)
class AgentSummary:
    """Counters of one agent run (the ``--exit-when-drained`` line)."""

    events: int = 0
    windows: int = 0
    resent: int = 0
    sent: int = 0
    accepted: int = 0
    escalated: int = 0
    dead_lettered: int = 0
    malformed: int = 0
    requests: int = 0
    retries: int = 0
    #: Pending outbox records found damaged at start; of those, summarised again from
    #: the input, and dead-lettered as lost (their window was not delivered).
    damaged: int = 0
    resummarized: int = 0
    lost: int = 0
    #: Transient dead letters sent back to the outbox once the server answered.
    redriven: int = 0
    elapsed_s: float = 0.0

    @property
    def in_dlq(self) -> int:
        """Dead letters of this run still in the DLQ (not re-driven); the letters of
        an earlier run re-driven in this one do not make it negative."""
        return max(0, self.dead_lettered - self.redriven)

    def line(self) -> str:
        rate = self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"sent={self.sent} accepted={self.accepted} escalated={self.escalated} "
            f"dead_lettered={self.dead_lettered} redriven={self.redriven} "
            f"lost={self.lost} "
            f"windows={self.windows} "
            f"resent={self.resent} events={self.events} malformed={self.malformed} "
            f"retries={self.retries} damaged={self.damaged} "
            f"resummarized={self.resummarized} elapsed={self.elapsed_s:.2f}s "
            f"rate={rate:,.0f} events/s"
        )


class Agent:
    """Turn events into delivered PCS (see the module docstring for the design).

    Use as ``async with Agent(config, summarize=...) as agent:`` then
    ``await agent.feed(array)``, ``await agent.run_file(path)`` or
    ``await agent.run_stdin()``; finish with ``await agent.drain()``.

    Parameters
    ----------
    config : AgentConfig
    summarize : callable
        ``summarize(window, shard_id=, epoch=) -> PCS``, signed.
    client : DeliveryClient, optional
        Injected in tests (fake clock/sleep); by default one is built from the config.
    progress_stream : file, optional
        Where the progress bar goes (default stderr).
    sleep, clock : optional
        The agent's own waits (re-drive probes, polls of a followed file at its end)
        and its monotonic clock (``--idle-flush``), injected in tests.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        summarize: Summarizer,
        client: Any = None,
        progress_stream: Any = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = config
        self._sleep = sleep
        self._clock = clock
        self._summarize = summarize
        self._client = client
        self._own_client = client is None
        self.summary = AgentSummary()
        self._progress = Progress(config.progress, config.log_every_s, progress_stream)
        self._io = ThreadPoolExecutor(1, thread_name_prefix="flk-agent-io")
        # Summarising on threads of its own lets parsing (which holds the GIL) overlap
        # zlib, hashing and the kernels (which release it) on hosts with spare cores.
        # Off by default: on the 2-core benchmark host it showed no gain, because
        # coherence and box counts already spread over every core by themselves.
        self._cpu_workers = config.workers or 0
        self._cpu = (
            ThreadPoolExecutor(self._cpu_workers, thread_name_prefix="flk-agent-cpu")
            if self._cpu_workers
            else None
        )
        self._assigned: dict[str, int] = {}  # next epoch to give, per shard
        self.outbox: Outbox | None = None
        self._queue: asyncio.Queue[tuple[int, PCS] | None] = asyncio.Queue()
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Condition()
        self._acks: list[tuple[int, bytes]] = []  # (seq, verdict) to record
        self._ack_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._windowers: dict[str, Windower] = {}
        self._epochs: dict[str, int] = {}
        self._t0 = time.monotonic()
        self._bytes_total = 0
        self._bytes_done = 0
        self._stopping = False
        self.malformed: list[Malformed] = []  # the first 1000, for callers and tests
        self._closed = False
        self._resend_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._api_fed: dict[str, int] = {}  # events given to feed() per source
        self._api_done: dict[str, int] = {}  # of those, events summarised
        self._damaged: dict[int, Damaged] = {}  # found at start, not yet dealt with
        self._why_lost: dict[int, str] = {}  # why one could not be summarised again
        self._redrive_wake = asyncio.Event()  # set: transient dead letters may wait
        # Only when asked for: prometheus_client costs memory the agent is measured on.
        self.metrics: Any = None
        if config.metrics_port is not None or config.metrics_textfile is not None:
            from flk_fast.agent.metrics import AgentMetrics

            self.metrics = AgentMetrics(lambda: self.summary)
        self._metrics_server: Any = None

    # -- life cycle -------------------------------------------------------------------
    async def _run_io(self, fn: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, partial(fn, *args, **kw))

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the outbox (locking the data dir), connect, resend all pending."""
        cfg = self.cfg
        self.outbox = await self._run_io(Outbox, cfg.data_dir, sync=cfg.sync, lock=True)
        if cfg.compact_after_s is not None:
            removed = await self._run_io(self.outbox.compact, cfg.compact_after_s)
            if any(removed):
                log.info("compacted %d outbox and %d DLQ records", *removed)
        for d in await self._run_io(self.outbox.damaged):
            self._damaged[d.seq] = d
            log.error(
                "outbox record %d is damaged (%s); %s",
                d.seq,
                d.reason,
                f"its window ({d.origin.source}, epoch {d.origin.epoch}) will be "
                "summarised again from the input if it still holds it"
                if d.origin
                else "its origin is unknown: it is lost",
            )
        self.summary.damaged = len(self._damaged)
        if self._client is None:
            self._client = delivery.make_client(
                cfg.endpoint,
                policy=cfg.policy,
                concurrency=cfg.concurrency,
                timeout_s=cfg.timeout_s,
                tenant_id=cfg.tenant_id,
                tls_ca_file=cfg.tls_ca_file,
                tls_cert=cfg.tls_cert,
                tls_key=cfg.tls_key,
            )
        await self._client.start()
        for _ in range(cfg.concurrency):
            self._tasks.append(self._guard(self._sender))
        self._tasks.append(self._guard(self._ack_batcher))
        if cfg.compact_after_s is not None:
            self._tasks.append(self._guard(self._compactor, cfg.compact_after_s))
        letters = await self._run_io(self.outbox.dead_letters)
        if any(d.transient for d in letters):  # left by an earlier run's outage
            self._redrive_wake.set()
        self._tasks.append(self._guard(self._redriver))
        if cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            try:
                self._metrics_server, _ = start_http_server(
                    cfg.metrics_port, addr=cfg.metrics_host,
                    registry=self.metrics.registry,
                )  # fmt: skip
            except OSError as exc:
                raise ConfigError(
                    f"--metrics-port {cfg.metrics_port}: cannot listen on "
                    f"{cfg.metrics_host}: {exc.strerror or exc}"
                ) from None
        if cfg.metrics_port is not None or cfg.metrics_textfile is not None:
            try:
                await self._refresh_metrics()
            except OSError as exc:
                raise ConfigError(
                    f"--metrics-textfile {cfg.metrics_textfile}: cannot write it: "
                    f"{exc.strerror or exc}"
                ) from None
            self._tasks.append(self._guard(self._metrics_refresher))
        # Resend what a previous run left pending, streamed under max_inflight like
        # new PCS (a long outage can leave a large backlog). Only records that existed
        # at start-up: the ones appended from now on are enqueued by their producer.
        last = (await self._run_io(self.outbox.wal.stats)).last_seq or 0
        self._resend_task = self._guard(self._resend, last)

    async def _resend(self, last_seq: int) -> None:
        assert self.outbox is not None
        outbox = self.outbox
        start, total = 0, 0

        def chunk(start: int) -> list[tuple[int, bytes]]:
            out: list[tuple[int, bytes]] = []
            for rec in outbox.pending(start):
                if rec.seq > last_seq or len(out) == 256:
                    break
                out.append((rec.seq, rec.data))
            return out

        while True:
            batch = await self._run_io(chunk, start)
            if not batch:
                break
            if total == 0:
                log.info("resending the PCS pending in %s", self.cfg.data_dir)
            for seq, body in batch:
                await self._wait_for_room()
                try:
                    pcs = decode_pcs(body)
                except Exception as exc:  # noqa: BLE001 - unreadable: dead, not fatal
                    await self._run_io(
                        outbox.dead_letter,
                        seq,
                        body,
                        status=None,
                        reason=f"outbox record unreadable: {exc}",
                        attempts=0,
                    )
                    self.summary.dead_lettered += 1
                    self._count_dead("unreadable")
                    continue
                self.summary.resent += 1
                await self._enqueue(seq, pcs)
            total += len(batch)
            start = batch[-1][0] + 1

    async def close(self) -> None:
        """Stop sending (pending records stay in the outbox) and release everything."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        for _ in range(self.cfg.concurrency):
            self._queue.put_nowait(None)
        tasks = self._tasks + ([self._resend_task] if self._resend_task else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.outbox is not None and self._acks:
            acks, self._acks = self._acks, []
            try:
                await self._run_io(self.outbox.ack_verdicts, acks)
            except StorageError as exc:  # they stay pending: resent, deduplicated
                log.warning("the last %d acks were not recorded: %s", len(acks), exc)
        if self._client is not None:  # started by start(), injected or not
            await self._client.close()
        if self.outbox is not None and self.cfg.metrics_textfile is not None:
            try:  # the last word: what this run left behind
                await self._refresh_metrics()
            except (OSError, StorageError) as exc:
                log.warning("metrics textfile not written: %s", exc)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self.outbox is not None:
            await self._run_io(self.outbox.close)
        if self._cpu is not None:
            self._cpu.shutdown(wait=True, cancel_futures=True)
        self._io.shutdown(wait=True)
        self._progress.close()

    # -- delivery ---------------------------------------------------------------------
    async def _enqueue(self, seq: int, pcs: PCS) -> None:
        self._outstanding += 1
        self._idle.clear()
        self._queue.put_nowait((seq, pcs))

    async def _done_one(self) -> None:
        self._outstanding -= 1
        async with self._room:
            self._room.notify_all()
        if self._outstanding == 0 and not self._acks:
            self._idle.set()

    def _guard(self, fn: Callable[..., Any], *args: Any) -> asyncio.Task[None]:
        """A background task whose unexpected failure stops the agent instead of
        leaving ``drain()`` waiting forever for a record nobody will finish.

        Takes the coroutine *function*: a coroutine object made here and cancelled
        before it ran would be reported as never awaited."""

        async def run() -> None:
            try:
                await fn(*args)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported through drain()
                if isinstance(exc, FlkError):  # e.g. a full disk: said once, plainly
                    log.error("agent background task failed: %s", exc)
                else:
                    log.exception("agent background task failed")
                self._fatal = exc
                self._idle.set()
                async with self._room:
                    self._room.notify_all()

        return asyncio.create_task(run())

    async def _sender(self) -> None:
        assert self._client is not None and self.outbox is not None
        while True:
            item = await self._queue.get()
            if item is None:
                return
            seq, pcs = item

            t0 = time.monotonic()
            result = await delivery.send(self._client, seq, pcs)
            if self.metrics is not None:
                self.metrics.delivered(time.monotonic() - t0, acked=result.acked)
            self.summary.sent += 1
            self.summary.requests += result.attempts
            self.summary.retries += len(result.waits)
            if result.acked:
                if delivery.escalated(result):
                    self.summary.escalated += 1
                else:
                    self.summary.accepted += 1
                self._acks.append((seq, delivery.verdict(result)))
                self._ack_wake.set()
            else:
                log.warning(
                    "PCS epoch %d (outbox seq %d) dead-lettered: %s",
                    pcs.epoch,
                    seq,
                    result.reason,
                )
                await self._run_io(
                    delivery.dead_letter, self.outbox, seq, encode_pcs(pcs), pcs, result
                )
                self.summary.dead_lettered += 1
                self._count_dead("transient" if result.transient else "rejected")
                if result.transient:
                    self._redrive_wake.set()
                await self._done_one()

    def _count_dead(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dead(reason)

    def _outbox_gauges(self) -> tuple[int, int]:
        assert self.outbox is not None
        ob = self.outbox
        disk = ob.wal.stats().disk_bytes + ob.dlq.stats().disk_bytes
        return len(ob.dead_letters()), disk

    async def _refresh_metrics(self) -> None:
        m, cfg = self.metrics, self.cfg
        m.dlq_entries, m.outbox_bytes = await self._run_io(self._outbox_gauges)
        if cfg.metrics_textfile is not None:
            await self._run_io(m.write_textfile, os.fspath(cfg.metrics_textfile))

    async def _metrics_refresher(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.metrics_every_s)
            try:
                await self._refresh_metrics()
            except OSError as exc:  # e.g. a full disk: metrics wait, delivery goes on
                log.warning("metrics textfile not written: %s", exc)

    async def _redrive(self) -> int:
        """If the server answers, put every transient dead letter back into the outbox
        and the send queue (SPEC §7); returns how many, or -1 if it does not answer."""
        assert self._client is not None and self.outbox is not None
        if not await self._client.probe():
            return -1
        self._redrive_wake.clear()  # before the read: a later dead letter sets it again
        items = await self._run_io(self.outbox.redrive_transient)
        if items:
            log.info("the server answers again: re-driving %d dead letters", len(items))
        for seq, body in items:
            await self._wait_for_room()
            self.summary.redriven += 1
            await self._enqueue(seq, decode_pcs(body))
        return len(items)

    async def _redriver(self) -> None:
        """Probe a server that is down with backoff while transient dead letters wait;
        the retry policy's base, doubling up to ``redrive_max_wait_s``, jittered."""
        probes = RetryPolicy(
            base_s=self.cfg.policy.base_s,
            cap_s=self.cfg.redrive_max_wait_s,
            jitter=self.cfg.policy.jitter,
        )
        rng = random.Random()
        failed = 0
        while True:
            await self._redrive_wake.wait()
            await self._sleep(jittered(probes, failed, rng))
            failed = failed + 1 if await self._redrive() < 0 else 0

    async def _ack_batcher(self) -> None:
        """Acks are batched: a lost ack only causes a resend that the server dedups, so
        one commit per ~20 ms instead of one fsync per PCS is safe and much cheaper."""
        assert self.outbox is not None
        while True:
            await self._ack_wake.wait()
            await asyncio.sleep(0.02)
            self._ack_wake.clear()
            acks, self._acks = self._acks, []
            if acks:
                await self._run_io(self.outbox.ack_verdicts, acks)
                for _ in acks:
                    await self._done_one()

    async def _compactor(self, older_than_s: float) -> None:
        """Compact now and then, not only at start-up: an agent following a file for
        months would otherwise keep every acknowledged record."""
        assert self.outbox is not None
        while True:
            await asyncio.sleep(self.cfg.compact_every_s)
            removed = await self._run_io(self.outbox.compact, older_than_s)
            if any(removed):
                log.info("compacted %d outbox and %d DLQ records", *removed)

    async def drain(self) -> None:
        """Wait until every PCS made or found is acknowledged or dead-lettered.

        Damaged records not summarised again by now are dead-lettered as lost."""
        await self._settle_damaged()
        if self._resend_task is not None:
            await self._resend_task
        acked_at_redrive = -1
        while True:
            while self._outstanding or self._acks:
                self._raise_fatal()
                await self._idle.wait()
                self._raise_fatal()
                if self._outstanding or self._acks:
                    await asyncio.sleep(0.01)
            # Dead letters of an outage that is over go out now rather than wait for
            # the next run; a server still down leaves them for that run, and so does
            # a round that got no ack at all (the server answers /ready, not submits).
            acked = self.summary.accepted + self.summary.escalated
            if (
                acked == acked_at_redrive
                or not self._redrive_wake.is_set()
                or await self._redrive() <= 0
            ):
                break
            acked_at_redrive = acked
        self._tick(force=True)

    async def _settle_damaged(self) -> None:
        assert self.outbox is not None
        for seq, d in sorted(self._damaged.items()):
            why = self._why_lost.get(seq) or (
                f"its input {d.origin.source} was not read in this run"
                if d.origin
                else "its origin is unknown (damaged too, or not a file input)"
            )
            await self._run_io(self.outbox.dead_letter_damaged, d, why)
            log.error("outbox record %d lost: %s", seq, why)
            self.summary.lost += 1
            self._count_dead("lost")
        self._damaged.clear()

    async def _recover(self, path: Path, fmt: str, source_id: str) -> None:
        """Summarise again the damaged records whose origin is this input."""
        for seq, d in sorted(self._damaged.items()):
            if d.origin is None or d.origin.source != source_id:
                continue
            await self._wait_for_room()
            try:
                new_seq, pcs = await self._run_io(self._resummarize, path, fmt, d)
            except _Uncovered as exc:
                self._why_lost[seq] = str(exc)
                continue
            del self._damaged[seq]
            log.warning(
                "outbox record %d summarised again from %s bytes %d-%d (epoch %d) "
                "as record %d",
                seq,
                path,
                d.origin.start,
                d.origin.end,
                d.origin.epoch,
                new_seq,
            )
            self.summary.resummarized += 1
            await self._enqueue(new_seq, pcs)

    def _resummarize(self, path: Path, fmt: str, d: Damaged) -> tuple[int, PCS]:
        """Work thread: the window of ``d`` from the input, summarised and appended.

        The bytes must give exactly the events whose canonical rows were hashed into
        the origin; anything else (a rewritten or truncated input) is not the window.
        """
        assert self.outbox is not None and d.origin is not None
        o = d.origin
        with open(path, "rb") as f:
            f.seek(o.start)
            block = f.read(max(0, o.end - o.start))
        if len(block) != o.end - o.start:
            raise _Uncovered(f"{path} ends before byte {o.end}")
        batch, _bad = parse_block(
            fmt, block, o.start, o.line, source=str(path),
            max_abs=self.cfg.max_abs_coordinate,
        )  # fmt: skip
        windower = Windower(max(o.events, 1))
        windows = windower.push(batch)
        last = windower.flush()
        if last is not None:
            windows.append(last)
        if len(windows) != 1 or rows_digest(windows[0].rows) != o.rows:
            raise _Uncovered(
                f"{path} bytes {o.start}-{o.end} no longer hold its events"
            )
        try:
            pcs = self._summarize(windows[0], shard_id=o.shard, epoch=o.epoch)
        except (ValueError, ArithmeticError) as exc:
            raise _Uncovered(f"its window cannot be summarised: {exc}") from None
        return self.outbox.replace_damaged(d, encode_pcs(pcs)), pcs

    def _raise_fatal(self) -> None:
        if isinstance(self._fatal, StorageError):
            raise self._fatal  # the CLI maps it (exit 4 with its message)
        if self._fatal is not None:
            raise RuntimeError(f"the agent stopped: {self._fatal!r}") from self._fatal

    async def _wait_for_room(self) -> None:
        async with self._room:
            await self._room.wait_for(
                lambda: (
                    self._outstanding < self.cfg.max_inflight or self._fatal is not None
                )
            )
        self._raise_fatal()

    # -- producing PCS ----------------------------------------------------------------
    def _windower(self, shard: str) -> Windower:
        w = self._windowers.get(shard)
        if w is None:
            w = self._windowers[shard] = Windower(
                self.cfg.window, self.cfg.window_seconds
            )
        return w

    def _make_and_append(
        self,
        windows: list[Window],
        shard: str,
        source_id: str | None,
        checkpoint: Callable[[list[Window]], Checkpoint] | None,
        where: str = "",
        origins: _Origins | None = None,
    ) -> tuple[list[tuple[int, PCS]], int]:
        """Work thread: summarise windows and append them in one transaction.

        Returns the ``(seq, pcs)`` made and their number of events. A window the
        kernels reject (e.g. coordinates so large that voxel indices overflow) ends the
        run with an InputError naming its lines, after the windows before it were
        appended: their PCS are good and the checkpoint stays before the bad window.
        """
        assert self.outbox is not None
        if not windows:
            return [], 0
        epoch = self._assigned.get(shard, self._epochs.get(shard))
        if epoch is None:
            epoch = self.outbox.next_epoch(shard, self.cfg.start_epoch)
        made: list[PCS] = []
        failure: InputError | None = None
        for w in windows:
            try:
                made.append(self._summarize(w, shard_id=shard, epoch=epoch))
            except (ValueError, ArithmeticError) as exc:
                failure = window_rejected(w, exc, where or (source_id or ""))
                break
            epoch += 1
        done = windows[: len(made)]
        items: list[tuple[int, PCS]] = []
        if made:
            items = self._append(
                done, made, shard, epoch, source_id, checkpoint, origins
            )
            self._assigned[shard] = epoch
        n_events = sum(len(w) for w in done)
        if failure is not None:
            raise _PartialAppend(items, n_events, failure)
        return items, n_events

    def _append(
        self,
        windows: list[Window],
        made: list[PCS],
        shard: str,
        next_epoch: int,
        source_id: str | None,
        checkpoint: Callable[[list[Window]], Checkpoint] | None,
        origins: _Origins | None,
    ) -> list[tuple[int, PCS]]:
        """Work thread: append the PCS ``made`` of ``windows`` in one transaction,
        with the input's checkpoint after them and where each lies in the input."""
        assert self.outbox is not None
        seqs = self.outbox.append(
            [encode_pcs(p) for p in made],
            shard_id=shard,
            next_epoch=next_epoch,
            source_id=source_id,
            checkpoint=checkpoint(windows) if checkpoint is not None else None,
            origins=origins(windows, made) if origins is not None else None,
        )
        self._epochs[shard] = next_epoch
        return list(zip(seqs, made, strict=True))

    async def _append_io(self, *args: Any) -> None:
        """Run ``_make_and_append`` on the work thread and publish what it made."""
        try:
            items, n_events = await self._run_io(self._make_and_append, *args)
        except _PartialAppend as part:
            await self._publish(part.items, part.n_events)
            raise part.error from None
        await self._publish(items, n_events)

    async def _publish(self, items: list[tuple[int, PCS]], n_events: int) -> None:
        self.summary.windows += len(items)
        self.summary.events += n_events
        for seq, pcs in items:
            await self._enqueue(seq, pcs)
        self._tick()

    def _tick(self, *, force: bool = False) -> None:
        self.summary.elapsed_s = time.monotonic() - self._t0
        c = getattr(self._client, "counters", None)
        if c is not None:
            self.summary.requests = c.requests
        self._progress.update(
            self.summary, self._bytes_total, self._bytes_done, force=force
        )

    async def feed(
        self, events: Any, *, shard_id: str | None = None, source_id: str = "api"
    ) -> int:
        """Add events: an ``(n, 4)`` array of ``t, x, y, z`` (or ``(n, 3)`` of
        ``x, y, z``
        with ``t`` = running event index). Returns the number of windows completed.

        The checkpoint of ``source_id`` counts the events summarised so far
        (``agent.checkpoint(source_id).events``), so a caller that can replay its source
        knows where to resume after a crash.
        """
        arr = np.asarray(events, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] not in (3, 4):
            raise InputError(
                f"expected an (n, 4) or (n, 3) array, got shape {arr.shape}"
            )
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise InputError(
                "a value is not finite", source=source_id, position=bad + 1
            )
        if source_id not in self._api_done:
            prev = self.checkpoint(source_id)
            self._api_done[source_id] = self._api_fed[source_id] = (
                prev.events if prev else 0
            )
        shard = shard_id or self.cfg.shard_id
        n = len(arr)
        if arr.shape[1] == 3:
            base = self._api_fed[source_id]
            arr = np.column_stack([np.arange(base, base + n, dtype=np.float64), arr])
        self._api_fed[source_id] += n
        xyz = np.ascontiguousarray(arr[:, 1:])
        # Original text for the canonical rows: Python's shortest repr of each float
        # (``%a`` of a float is its repr), formatted in one C loop.
        tails = (
            ((b"%a,%a,%a\n" * n) % tuple(xyz.ravel().tolist()))[:-1].split(b"\n")
            if n
            else []
        )
        zeros = np.zeros(n, np.int64)
        batch = EventBatch(arr[:, 0].copy(), xyz, tails, zeros, zeros)
        windows = self._windower(shard).push(batch)
        for w in windows:
            await self._append_windows([w], shard, source_id)
        return len(windows)

    async def _append_windows(
        self, windows: list[Window], shard: str, source_id: str
    ) -> None:
        await self._wait_for_room()

        def ck(done: list[Window]) -> Checkpoint:
            self._api_done[source_id] += sum(len(w) for w in done)
            return Checkpoint(events=self._api_done[source_id])

        await self._append_io(windows, shard, source_id, ck, source_id)

    async def feed_stream(
        self,
        batches: AsyncIterable[Any] | Iterable[Any],
        *,
        shard_id: str | None = None,
    ) -> int:
        """Feed every array of an (async) iterator, flush at its end; return windows."""
        total = 0
        if hasattr(batches, "__aiter__"):
            async for arr in batches:
                total += await self.feed(arr, shard_id=shard_id)
        else:
            for arr in batches:
                total += await self.feed(arr, shard_id=shard_id)
        total += await self.flush(shard_id=shard_id)
        return total

    async def flush(
        self, *, shard_id: str | None = None, source_id: str = "api"
    ) -> int:
        """Summarise the partial window of a shard now (the end of a fed stream)."""
        shard = shard_id or self.cfg.shard_id
        w = self._windower(shard).flush()
        if w is None:
            return 0
        self._api_done.setdefault(source_id, 0)
        await self._append_windows([w], shard, source_id)
        return 1

    def checkpoint(self, source_id: str = "api") -> Checkpoint | None:
        return self.outbox.checkpoint(source_id) if self.outbox else None

    # -- file and stdin inputs --------------------------------------------------------
    def _report(self, bad: list[Malformed], where: str) -> None:
        for m in bad:
            self.summary.malformed += 1
            if len(self.malformed) < 1000:
                self.malformed.append(m)
            verb = "stopped at" if self.cfg.on_malformed == "stop" else "skipped"
            log.warning(
                "%s:%d: %s malformed line (%s): %r",
                where,
                m.line,
                verb,
                m.reason,
                m.text[:120],
            )

    async def run_file(
        self, path: str | os.PathLike[str], *, fmt: str | None = None
    ) -> None:
        """Summarise a file from its checkpoint; in follow mode keep reading as it grows
        (until cancelled, or until idle when ``exit_when_drained``)."""
        from flk_fast.agent.source import guess_format

        p = Path(path)
        fmt = fmt or guess_format(str(p))
        source_id = self.cfg.source_id or str(p.resolve())
        ck = None if self.cfg.restart_input else self.checkpoint(source_id)
        start = ck.offset if ck else 0
        src = await self._run_io(FileSource, p, start=start)
        try:
            if ck is not None and ck.offset:
                head = await self._run_io(src.head, min(ck.offset, 4096))
                if fingerprint(head) != ck.fingerprint:
                    raise InputError(
                        "does not start like the input checkpointed in "
                        f"{self.cfg.data_dir} (replaced or rewritten?); "
                        "use --restart-input to summarise it from the start",
                        source=str(p),
                    )
                log.info(
                    "%s: resuming at line %d (byte %d, %d events already summarised)",
                    p,
                    ck.line + 1,
                    ck.offset,
                    ck.events,
                )
            await self._recover(p, fmt, source_id)
            self._bytes_total = os.path.getsize(p)
            self._bytes_done = start
            await self._pump(src, fmt, source_id, ck, str(p)).run()
        finally:
            await self._run_io(src.close)

    async def run_stdin(self, *, fmt: str = "csv", fd: int | None = None) -> None:
        """Summarise standard input until EOF. A pipe cannot be re-read, so stdin is
        never resumed by position: a restart treats what arrives as new events."""
        src = StdinSource(fd)
        source_id = self.cfg.source_id or "stdin"
        prev = self.checkpoint(source_id)
        base = Checkpoint(events=prev.events, windows=prev.windows) if prev else None
        await self._pump(src, fmt, source_id, base, "<stdin>", stdin=True).run()

    def _pump(self, *args: Any, stdin: bool = False) -> InputPump:
        """The input pump of one file or stdin (``InputPump``'s arguments), on this
        agent's clock and sleep."""
        return InputPump(self, *args, stdin=stdin, clock=self._clock, sleep=self._sleep)


class _Uncovered(Exception):  # noqa: N818 - internal, turned into a "lost" reason
    """The input no longer holds a damaged record's window."""


class _PartialAppend(Exception):  # noqa: N818 - internal carrier, never escapes
    """Windows before a failing one were appended: publish them, raise ``error``."""

    def __init__(self, items: list[tuple[int, PCS]], n_events: int, error: InputError):
        super().__init__(str(error))
        self.items, self.n_events, self.error = items, n_events, error


def install_signal_handlers(task: asyncio.Task[Any]) -> None:
    """SIGTERM/SIGINT cancel the run; pending PCS stay in the outbox."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, task.cancel)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
