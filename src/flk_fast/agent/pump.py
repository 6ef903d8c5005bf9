"""The input pump: one file or standard input → windows → PCS in the outbox.

:class:`InputPump` is the input half of an :class:`~flk_fast.agent.runner.Agent`: it
uses the agent's work thread, its room under ``max_inflight``, its windower and its
outbox, and hands every appended PCS to the agent's delivery queue
(``Agent._publish``). One pump reads one input, from its checkpoint, once.

One turn of :meth:`InputPump.run`:

1. wait for room (fewer than ``max_inflight`` PCS outstanding);
2. on the work thread, :meth:`~InputPump.step`: read one chunk (unless parsed events
   are carried over from the last turn), parse it, and cut at most ``room`` windows;
3. summarise them (on the work thread, or on the CPU threads with ``workers`` > 0:
   then they are *in flight* until :meth:`~InputPump.land` appends them, oldest
   first);
4. at the end of the input: return, or in follow mode poll (``sleep(poll_s)``) and
   summarise a partial window once the input has been quiet for ``idle_flush_s``
   (measured on the injected ``clock``).

Why the state is kept here and not in the windower: the windower only cuts windows;
what an *input* adds is where each window lies (its :class:`Origin`, used to summarise
a damaged record again) and the checkpoint after it (offset, line, events, windows and
the fingerprint of the file's head), which must never run ahead of the outbox. Every
append carries the checkpoint after its last window, in one transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import blake3
import numpy as np

from flk_fast.agent.outbox import Checkpoint, Origin, fingerprint
from flk_fast.agent.source import CHUNK, EventBatch, LineSplitter, parse_block
from flk_fast.agent.windows import Window
from flk_fast.errors import InputError
from flk_fast.protocol.pcs import PCS

if TYPE_CHECKING:
    from flk_fast.agent.runner import Agent

__all__ = ["InputPump", "Step", "rows_digest", "window_rejected"]

#: How much of a file's head its checkpoint fingerprints (a replaced file is caught).
_HEAD = 4096


@dataclass(frozen=True, slots=True)
class Step:
    """What one :meth:`InputPump.step` did."""

    windows: list[Window]  # cut, not yet summarised
    eof: bool  # the input is at its (current) end and nothing is carried over
    got: bool  # the step read new bytes
    stop: InputError | None  # a malformed line under --on-malformed stop


@dataclass(slots=True)
class _Flight:
    """Windows being summarised on the CPU threads, with the epoch of the first."""

    windows: list[Window]
    futures: list[asyncio.Future[PCS]]
    first_epoch: int


class InputPump:
    """Read one input into the agent's outbox (see the module docstring).

    Parameters
    ----------
    agent : Agent
        Started; its outbox is open.
    src : FileSource or StdinSource
        ``read(n) -> (bytes, eof)``; a file also has ``head(n)``.
    fmt : str
        ``csv`` or ``jsonl``.
    source_id : str
        The checkpoint's name.
    ck : Checkpoint, optional
        Where a file resumes (and the counts a restart continues from).
    where : str
        The input's name in messages (a path, or ``<stdin>``).
    stdin : bool
        A pipe: never resumed by position, no origins, no head fingerprint.
    clock, sleep
        Monotonic seconds and the wait between two polls of a file at its end, injected
        so that follow-mode tests need not sleep.
    """

    def __init__(
        self,
        agent: Agent,
        src: Any,
        fmt: str,
        source_id: str,
        ck: Checkpoint | None,
        where: str,
        *,
        stdin: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.agent = agent
        self.cfg = agent.cfg
        self.src = src
        self.fmt = fmt
        self.source_id = source_id
        self.where = where
        self.stdin = stdin
        self.clock = clock
        self.sleep = sleep
        self.shard = self.cfg.shard_id
        self.windower = agent._windower(self.shard)
        resume = not stdin and ck is not None
        self.splitter = LineSplitter(
            offset=ck.offset if resume and ck else 0,
            line=ck.line + 1 if resume and ck else 1,
        )
        # What the checkpoint counts: events and windows *appended* (events parsed but
        # not yet in a window sit in the windower, and in no checkpoint).
        self.events = ck.events if ck else 0
        self.windows = ck.windows if ck else 0
        self.head = b""  # the file's first bytes, for the checkpoint's fingerprint
        # Where the next window to be appended starts (its Origin).
        self.next_offset = self.splitter.offset
        self.next_line = self.splitter.line
        # Parsed events not yet pushed into the windower: a chunk can hold thousands
        # of windows' worth of events (small windows), and pushing them in slices
        # keeps the PCS made per step within the room left under max_inflight.
        self.carry: EventBatch | None = None
        # Of the chunk last read: it reached the input's current end; the input is
        # over (no follow), so the last partial window is flushed with it; a malformed
        # line under --on-malformed stop ends the run once the carry is used up.
        self.eof = False
        self.final = False
        self.stop: InputError | None = None
        # Windows being summarised on the CPU threads, oldest first. They are appended
        # strictly in this order, each group with the checkpoint after its last
        # window, so the outbox and the checkpoints never run ahead of each other.
        self.flight: deque[_Flight] = deque()
        self.idle_since = 0.0

    # -- work thread --------------------------------------------------------------
    def origins(self, done: list[Window], made: list[PCS]) -> list[Origin | None]:
        """Work thread: where each window about to be appended lies in the input."""
        out: list[Origin | None] = []
        for w, pcs in zip(done, made, strict=True):
            out.append(
                Origin(
                    source=self.source_id,
                    shard=pcs.shard_id,
                    epoch=pcs.epoch,
                    start=self.next_offset,
                    end=w.end_offset,
                    line=self.next_line,
                    events=len(w),
                    rows=rows_digest(w.rows),
                )
            )
            self.next_offset, self.next_line = w.end_offset, w.end_line + 1
        return out

    def checkpoint(self, done: list[Window]) -> Checkpoint:
        """Work thread: the checkpoint after ``done``, the windows about to be
        appended (counted here: call it once per append)."""
        self.events += sum(len(x) for x in done)
        self.windows += len(done)
        w = done[-1]
        off = 0 if self.stdin else w.end_offset
        if not self.stdin and len(self.head) < min(off, _HEAD):
            self.head = self.src.head(_HEAD)
        return Checkpoint(
            offset=off,
            line=w.end_line,
            events=self.events,
            fingerprint="" if self.stdin else fingerprint(self.head[: min(off, _HEAD)]),
            windows=self.windows,
        )

    def step(self, room: int, busy: bool) -> Step:
        """Work thread: read one chunk (unless events are carried over), parse it and
        cut at most ``room`` windows. ``busy``: windows are still being summarised
        (the input checkpoint must not move past them)."""
        got = self._read(busy) if self.carry is None else False
        batch = self.carry
        windows: list[Window] = []
        w = self.windower
        while batch is not None and len(batch) and len(windows) < room:
            take = min(len(batch), w.count - w.pending)
            made, used = w.push_some(batch.slice(0, take), room - len(windows))
            windows += made
            batch = batch.slice(used, len(batch))
        done = batch is None or not len(batch)
        self.carry = None if done else batch
        if done and self.final:
            last = w.flush()
            if last is not None:
                windows.append(last)
        return Step(windows, done and self.eof, got, self.stop if done else None)

    def _read(self, busy: bool) -> bool:
        """Work thread: read and parse one chunk into :attr:`carry`; report its
        malformed lines. Returns whether it read any bytes."""
        cfg, splitter = self.cfg, self.splitter
        data, eof = self.src.read(CHUNK)
        final = eof and not cfg.follow
        block, off, line = splitter.feed(data, final=final)
        self.agent._bytes_done += len(data)
        batch, bad = parse_block(
            self.fmt, block, off, line, source=self.where,
            max_abs=cfg.max_abs_coordinate,
        )  # fmt: skip
        if splitter.overlong:  # they precede every line of the block
            bad = splitter.overlong + bad
            splitter.overlong = []
        stop: InputError | None = None
        if bad and cfg.on_malformed == "stop":
            # Summarise what precedes the first bad line (complete windows only), then
            # stop: the checkpoint stays before it, so a fixed file resumes right there.
            first = bad[0]
            batch = batch.slice(0, int(np.searchsorted(batch.lines, first.line)))
            stop = InputError(
                f"{first.reason}: {first.text!r}",
                source=self.where,
                position=first.line,
            )
            bad = bad[:1]
            final = False
        self.agent._report(bad, self.where)
        self.carry, self.eof, self.stop, self.final = batch, eof, stop, final
        if (
            bad
            and stop is None
            and not len(batch)
            and self.windower.pending == 0
            and not busy
            and not self.stdin
        ):
            # Only malformed lines since the last window: remember we passed them, so
            # that a restart does not report them again.
            self._save_position()
        return bool(data)

    def _save_position(self) -> None:
        """Work thread: a checkpoint at the splitter's position, no window appended."""
        outbox = self.agent.outbox
        assert outbox is not None
        off = self.splitter.offset
        outbox.save_checkpoint(
            self.source_id,
            Checkpoint(
                offset=off,
                line=self.splitter.line - 1,
                events=self.events,
                windows=self.windows,
                fingerprint=fingerprint(self.src.head(_HEAD)[: min(off, _HEAD)]),
            ),
        )

    def _append_summarised(
        self, windows: list[Window], made: list[PCS], next_epoch: int
    ) -> list[tuple[int, PCS]]:
        """Work thread: append PCS summarised on the CPU threads, with their
        checkpoint."""
        return self.agent._append(
            windows, made, self.shard, next_epoch, self.source_id, self.checkpoint,
            None if self.stdin else self.origins,
        )  # fmt: skip

    # -- event loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Read the input to its end (follow mode: until cancelled, or until caught up
        with ``exit_when_drained``)."""
        agent, cfg = self.agent, self.cfg
        if not self.stdin:
            self.head = await agent._run_io(self.src.head, _HEAD)
        self.idle_since = self.clock()
        while not agent._stopping:
            await agent._wait_for_room()
            room = cfg.max_inflight - agent._outstanding - self.in_flight()
            if room <= 0:
                await self.land(force=True)
                continue
            step = await agent._run_io(self.step, room, bool(self.flight))
            if step.windows:
                if agent._cpu is None:
                    await self._append_windows(step.windows)
                else:
                    self.flight.append(self._launch(step.windows))
            # Keep about one window per CPU thread ahead of the appends.
            await self.land(
                force=not step.got
                or step.eof
                or step.stop is not None
                or self.in_flight() > agent._cpu_workers
            )
            if step.stop is not None:
                raise step.stop
            if step.got:
                self.idle_since = self.clock()
            if step.eof and not cfg.follow:
                return  # the step already summarised the last partial window
            if step.got or self.carry is not None:
                continue
            # Caught up with a growing file, or a quiet pipe.
            if step.eof and cfg.exit_when_drained:
                await self.flush_partial()
                return
            if (
                cfg.idle_flush_s is not None
                and self.windower.pending
                and self.clock() - self.idle_since >= cfg.idle_flush_s
            ):
                await self.flush_partial()
            if step.eof:
                # A file at its current end: poll. (A pipe's read already waited.)
                await self.sleep(cfg.poll_s)

    def in_flight(self) -> int:
        """Windows being summarised on the CPU threads."""
        return sum(len(g.windows) for g in self.flight)

    async def flush_partial(self) -> None:
        """Summarise and append the partial window now."""
        w = self.windower.flush()
        if w is not None:
            await self._append_windows([w])

    async def _append_windows(self, windows: list[Window]) -> None:
        await self.agent._append_io(
            windows, self.shard, self.source_id, self.checkpoint, self.where,
            None if self.stdin else self.origins,
        )  # fmt: skip

    def _launch(self, windows: list[Window]) -> _Flight:
        """Start summarising ``windows`` on the CPU threads with the next epochs."""
        agent, shard = self.agent, self.shard
        assert agent.outbox is not None and agent._cpu is not None
        first = agent._assigned.get(shard)
        if first is None:
            first = agent._epochs.get(shard) or agent.outbox.next_epoch(
                shard, self.cfg.start_epoch
            )
        agent._assigned[shard] = first + len(windows)
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(
                agent._cpu,
                partial(agent._summarize, w, shard_id=shard, epoch=first + i),
            )
            for i, w in enumerate(windows)
        ]
        return _Flight(windows, futures, first)

    async def land(self, force: bool) -> None:
        """Append the summarised groups at the head of :attr:`flight` (all: force)."""
        flight, agent = self.flight, self.agent
        while flight and (force or all(f.done() for f in flight[0].futures)):
            g = flight.popleft()
            made: list[PCS] = []
            failure: InputError | None = None
            for w, fut in zip(g.windows, g.futures, strict=True):
                try:
                    made.append(await fut)
                except (ValueError, ArithmeticError) as exc:
                    failure = window_rejected(w, exc, self.where)
                    break
            if made:
                done = g.windows[: len(made)]
                items = await agent._run_io(
                    self._append_summarised, done, made, g.first_epoch + len(made)
                )
                await agent._publish(items, sum(len(w) for w in done))
            if failure is not None:
                for later in flight:
                    for f in later.futures:
                        f.cancel()
                flight.clear()
                raise failure


def window_rejected(w: Window, exc: BaseException, where: str) -> InputError:
    """The error that ends a run whose window the kernels reject, naming its lines."""
    lines = f"lines {w.first_line}-{w.end_line}" if w.end_line else "events"
    return InputError(
        f"the window of {lines} cannot be summarised: {exc}",
        source=where,
        position=w.first_line,
    )


def rows_digest(rows: bytes) -> str:
    """BLAKE3 of a window's canonical rows, 128 bits: the origin's proof of identity."""
    return blake3.blake3(rows).hexdigest(16)
