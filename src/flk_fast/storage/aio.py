"""Async facades over the LMDB stores, with group commit on one writer thread.

LMDB binds a write transaction to the thread that began it, so every write of a store
runs on one dedicated writer thread owned by its facade, never on the loop's default
pool (py-lmdb 2.3.0 fixed exactly this bug in its own ``lmdb/aio.py``).

Group commit: callers that ``await append(...)`` (or ``put_if_absent``) while a commit
is in flight are queued; when the commit finishes, the whole queue goes down in ONE
transaction and ONE fsync. No timer is involved, so a lone caller pays one fsync and
nothing more, and under load the batch size adapts to the fsync latency. Every caller
is answered only after the commit that holds its record returned, so ``append`` is as
durable as ``LmdbWal.append``. ``group_commit=False`` gives one transaction per call
(for benchmarks and comparison).

A facade belongs to the event loop it is first used on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import lmdb

from flk_fast.errors import DedupUnavailableError, LmdbDamagedError, StorageError

from .base import DEFAULT_TTL_S, DedupKey, WalRecord, WalStats
from .dedup_lmdb import LmdbDedup
from .ledger import Ledger, LedgerItem
from .wal_lmdb import LmdbWal, check_meta

#: LMDB errors that say the file's pages are damaged: nothing but a repair (restore,
#: or move the directory aside) makes them go away. Not MDB_BAD_TXN, which a failed
#: write can leave behind, nor MDB_PANIC, which a failed meta-page write (a full
#: disk) leaves in the handle, not in the file: advising to move the ledger aside
#: would then throw good data away (a restart is the cure; /ready says 503 anyway).
_PAGE_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError)

__all__ = [
    "AsyncLedger",
    "AsyncLmdbDedup",
    "AsyncWal",
    "DEFAULT_MAX_BATCH",
    "LedgerSpool",
]

#: Most records one group commit may carry; bigger queues are split.
DEFAULT_MAX_BATCH = 4096
#: How long ``AsyncWal.close`` waits for a busy writer thread (seconds).
CLOSE_TIMEOUT_S = 30.0
log = logging.getLogger("flk_fast.storage")
_T = TypeVar("_T")


class _WriterThread:
    """One OS thread that runs jobs in submission order for the event loop.

    Cheaper per job than ``loop.run_in_executor``: a queue put on the way in and one
    ``call_soon_threadsafe`` on the way out, with no ``concurrent.futures.Future`` to
    chain (that chaining was ~10 % of the loop thread's time at 1 000 req/s).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # A daemon, so that a facade never closed cannot hang interpreter exit; an
        # exit mid-commit leaves LMDB as a kill -9 would: consistent.
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def call(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: Any
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, fut, fn, args = job
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def stop(self, timeout: float) -> bool:
        """Let the queued jobs finish, then end the thread. False if it is still busy
        after ``timeout`` s (a job is stuck, e.g. on a lock another process holds)."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():  # the caller gave up (timeout): the job still ran
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


class _GroupCommitter:
    """Queue of (payload, future) drained in batches by ``commit`` on one thread.

    With ``timeout_s``, a batch whose commit does not return in time fails, with the
    exception ``on_timeout()`` returns, together with every item queued behind it (the
    writer is stuck; they would only wait out the same timeout). One timer per batch,
    not one per caller.
    """

    def __init__(
        self,
        name: str,
        commit: Callable[[list[Any]], list[Any]],
        max_batch: int,
        *,
        timeout_s: float | None = None,
        on_timeout: Callable[[], BaseException] | None = None,
    ) -> None:
        self._writer = _WriterThread(name)
        self._commit = commit
        self._max_batch = max_batch
        self._timeout_s = timeout_s
        self._on_timeout = on_timeout or (lambda: StorageError("writer timed out"))
        self._queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        # Bound on first use: asyncio.get_running_loop() costs a getpid() system call
        # on Python 3.11, and submit() is on every request's path.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.batches = 0  # commits done, for stats and tests
        self.items = 0

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        if self.closed:
            raise StorageError("store is closed")
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the writer thread (after everything queued before)."""
        result: _T = await self._writer.call(self._bound_loop(), fn, args)
        return result

    def submit(self, item: Any) -> asyncio.Future[Any]:
        loop = self._bound_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((item, fut))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        loop = self._bound_loop()
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                done = self._writer.call(
                    loop, self._commit, ([item for item, _ in batch],)
                )
                try:
                    if self._timeout_s is None:
                        results = await done
                    else:
                        results = await asyncio.wait_for(done, self._timeout_s)
                except BaseException as exc:  # every waiter of the batch learns why
                    if isinstance(exc, TimeoutError):
                        exc = self._on_timeout()
                        batch += self._queue
                        self._queue = []
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self.batches += 1
                self.items += len(batch)
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():  # a cancelled caller: its record is still stored
                        fut.set_result(result)
        finally:
            self._task = None

    async def close(self, timeout: float) -> bool:
        """Commit what is queued and end the writer thread, within ``timeout`` s.

        Returns False when the writer is still stuck in a job by then: the caller
        must not close the store under it. The thread is a daemon, so it cannot
        hold up the exit of the process.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), max(0.0, deadline - loop.time())
                )
            except TimeoutError:
                break
        self.closed = True
        return await asyncio.to_thread(
            self._writer.stop, max(0.0, deadline - loop.time())
        )


class AsyncWal:
    """``await``-able ``LmdbWal`` whose concurrent appends share one commit and fsync.

    Parameters
    ----------
    wal
        The WAL to drive; the facade owns it from now on (``close`` closes it).
    group_commit
        Batch concurrent appends (default). ``False``: one transaction per append.
    max_batch
        Largest batch in one transaction.

    Examples
    --------
    >>> import asyncio, tempfile
    >>> async def demo():
    ...     wal = AsyncWal(LmdbWal(tempfile.mkdtemp()))
    ...     seqs = await asyncio.gather(*(wal.append(b"x%d" % i) for i in range(3)))
    ...     await wal.close()
    ...     return seqs
    >>> asyncio.run(demo())
    [1, 2, 3]
    """

    def __init__(
        self,
        wal: LmdbWal,
        *,
        group_commit: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.wal = wal
        self.group_commit = group_commit
        self._gc = _GroupCommitter("flk-wal-writer", self._commit, max_batch)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        group_commit: bool = True,
        **wal_options: Any,
    ) -> AsyncWal:
        """Open ``LmdbWal(path, **wal_options)`` behind a facade."""
        return cls(LmdbWal(path, **wal_options), group_commit=group_commit)

    def _commit(
        self, items: list[tuple[bytes, Mapping[bytes, bytes] | None]]
    ) -> list[int]:
        meta: dict[bytes, bytes] = {}
        for _, m in items:
            if m:
                meta.update(m)  # later callers win, as if they had committed later
        return self.wal.append_many([data for data, _ in items], meta or None)

    async def append(
        self, data: bytes, meta: Mapping[bytes, bytes] | None = None
    ) -> int:
        """Append one record durably (see ``LmdbWal.append``); return its seq."""
        if not isinstance(data, bytes):
            raise TypeError(f"WAL records are bytes, not {type(data).__name__}")
        # Checked here, in the caller: a bad meta inside a group commit would fail
        # the whole batch, i.e. every other caller's append.
        check_meta(meta)
        if not self.group_commit:
            return await self._gc.run(self.wal.append, data, meta)
        return int(await self._gc.submit((data, meta)))

    async def append_many(
        self, items: Sequence[bytes], meta: Mapping[bytes, bytes] | None = None
    ) -> list[int]:
        """Append several records in one transaction (bypasses the queue)."""
        return await self._gc.run(self.wal.append_many, list(items), meta)

    async def ack(self, seq: int) -> None:
        await self._gc.run(self.wal.ack, seq)

    async def ack_many(self, seqs: Sequence[int]) -> None:
        await self._gc.run(self.wal.ack_many, list(seqs))

    async def get(self, seq: int) -> WalRecord | None:
        return await self._gc.run(self.wal.get, seq)

    async def get_meta(self, key: bytes) -> bytes | None:
        return await self._gc.run(self.wal.get_meta, key)

    async def pending(self, limit: int = 1000, start: int = 0) -> list[WalRecord]:
        """Up to ``limit`` unacked records from ``start``, in order."""
        return await self._gc.run(_take, self.wal.pending(start), limit)

    async def replay(
        self, start: int = 0, include_acked: bool = False, chunk: int = 512
    ) -> AsyncIterator[WalRecord]:
        """Async iterator over ``LmdbWal.replay``, ``chunk`` records per fetch."""
        pos = start
        while True:
            recs = await self._gc.run(_take, self.wal.replay(pos, include_acked), chunk)
            for rec in recs:
                yield rec
            if len(recs) < chunk:
                return
            pos = recs[-1].seq + 1

    async def compact(self, older_than_s: float) -> int:
        return await self._gc.run(self.wal.compact, older_than_s)

    async def stats(self) -> WalStats:
        return await self._gc.run(self.wal.stats)

    @property
    def commits(self) -> tuple[int, int]:
        """``(group commits, records they carried)`` since the facade was made."""
        return self._gc.batches, self._gc.items

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Finish queued appends, then close the WAL; if the writer is stuck (a hung
        disk) longer than ``timeout`` s, leave the WAL open and say so."""
        if self._gc.closed:
            return
        if await self._gc.close(timeout):
            self.wal.close()
        else:
            log.error(
                "WAL %s: writer still busy after %.0f s; not closed",
                self.wal.path,
                timeout,
            )


def _take(it: Any, limit: int) -> list[Any]:
    out = []
    for rec in it:
        out.append(rec)
        if len(out) >= limit:
            break
    return out


class AsyncLmdbDedup:
    """The LMDB ``DedupStore``: group-committed ``put_if_absent``, reads on the loop.

    Concurrent ``put_if_absent`` calls share one transaction and one fsync; each
    returns once its entry is durable. Reads are answered from LMDB's memory map on
    the calling thread (microseconds, no lock shared with commits). LMDB errors and a
    writer that does not answer within ``timeout_s`` raise ``DedupUnavailableError``.
    """

    def __init__(
        self,
        store: LmdbDedup,
        *,
        timeout_s: float = 5.0,
        group_commit: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.group_commit = group_commit
        #: The first page damage a transaction ran into while serving (it stays:
        #: ``ping`` raises it, so /ready says which file to repair until a restart).
        self.damage: LmdbDamagedError | None = None
        self._gc = _GroupCommitter(
            "flk-dedup-writer",
            self._put_batch,
            max_batch,
            timeout_s=timeout_s,
            on_timeout=self._no_answer,
        )

    def _no_answer(self) -> DedupUnavailableError:
        return DedupUnavailableError(
            f"lmdb dedup {self.store.path}: no answer within {self.timeout_s} s"
        )

    def _unavailable(self, exc: Exception) -> Exception:
        """The error a caller sees for ``exc``: LMDB and I/O failures are an
        unavailable store (-> 503); anything else is a bug and stays itself."""
        if isinstance(exc, DedupUnavailableError):
            return exc
        if isinstance(exc, _PAGE_DAMAGE):
            return self._damaged(exc)
        if isinstance(exc, (OSError, StorageError)) or type(exc).__module__.startswith(
            "lmdb"
        ):
            return DedupUnavailableError(f"lmdb dedup {self.store.path}: {exc}")
        return exc

    def _damaged(self, exc: Exception) -> LmdbDamagedError:
        """``exc`` (page damage met while serving) as the ``LmdbDamagedError`` that
        names the file and the fix; the first one is logged and kept in ``damage``."""
        damage = self.store._damaged(f"{exc} (found while serving)")
        if self.damage is None:
            self.damage = damage
            log.error("%s", damage, extra={"event": "damaged"})
        return damage

    def _put_batch(self, items: list[Any]) -> list[Any]:
        """One group commit, on the writer thread."""
        try:
            return self._commit_batch(items)
        except Exception as exc:
            mapped = self._unavailable(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _commit_batch(self, items: list[Any]) -> list[Any]:
        return self.store.put_prepared(items)

    async def _guard(self, aw: Awaitable[_T]) -> _T:
        """Await ``aw`` within ``timeout_s``, mapping failures as ``_unavailable``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await aw
        except TimeoutError as exc:
            raise self._no_answer() from exc
        except Exception as exc:
            mapped = self._unavailable(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def get(self, key: DedupKey) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]:
        async def read() -> list[bytes | None]:
            return self.store.get_many(keys)

        return await self._guard(read())

    async def put_if_absent(
        self, key: DedupKey, value: bytes, ttl_s: float = DEFAULT_TTL_S
    ) -> tuple[bytes, bool]:
        # Validated here, in the caller: bad input inside a group commit would fail
        # every other caller of the batch.
        item = self.store.prepare(key, value, ttl_s)
        if self._gc.closed:
            raise DedupUnavailableError(f"lmdb dedup {self.store.path}: closed")
        if not self.group_commit:
            return (await self._guard(self._gc.run(self._put_batch, [item])))[0]
        result: tuple[bytes, bool] = await self._gc.submit(item)
        return result

    async def put_many_if_absent(
        self, items: Sequence[tuple[DedupKey, bytes]], ttl_s: float = DEFAULT_TTL_S
    ) -> list[tuple[bytes, bool]]:
        batch = [self.store.prepare(k, v, ttl_s) for k, v in items]
        return await self._guard(self._gc.run(self._put_batch, batch))

    async def sweep(self, limit: int = 100_000) -> int:
        """Delete up to ``limit`` expired entries; return how many."""
        n: int = await self._guard(self._gc.run(self.store.sweep, limit))
        return n

    async def ping(self) -> None:
        if self.damage is not None:
            raise self.damage
        await self._guard(self._gc.run(self.store.count))

    async def close(self) -> None:
        """Finish queued puts, then close the store; if the writer is stuck (another
        process holds LMDB's write lock) longer than ``timeout_s``, leave it open."""
        if self._gc.closed:
            return
        if await self._gc.close(self.timeout_s):
            self.store.close()
        else:
            log.error(
                "lmdb dedup %s: writer still busy after %.0f s; not closed",
                self.store.path,
                self.timeout_s,
            )

    async def __aenter__(self) -> AsyncLmdbDedup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncLedger(AsyncLmdbDedup):
    """The ``Ledger`` behind one writer thread: concurrent ``commit`` calls (and
    ``put_if_absent``) share one transaction and one fsync, like ``AsyncLmdbDedup``.

    It is a full ``DedupStore`` too (``put_if_absent`` stores an outcome with no inbox
    record), so replays of an older data directory's inbox go through it.
    """

    store: Ledger

    def __init__(self, store: Ledger, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.spool = LedgerSpool(self)

    def _commit_batch(self, items: list[Any]) -> list[Any]:
        # put_if_absent of the DedupStore API queues bare PreparedPuts: no inbox record
        return self.store.commit(
            [
                it if isinstance(it, LedgerItem) else LedgerItem(None, None, it)
                for it in items
            ]
        )

    def commit(self, item: LedgerItem) -> asyncio.Future[Any]:
        """Queue ``item`` for the next group commit; the future gives ``(winner,
        inserted)`` of its put (None without one) once the commit is durable."""
        if self._gc.closed:
            raise DedupUnavailableError(f"ledger {self.store.path}: closed")
        return self._gc.submit(item)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the writer thread (maintenance: ``drop_days``...)."""
        return await self._guard(self._gc.run(fn, *args))


class LedgerSpool:
    """The ledger's audit spool, with the part of ``AsyncWal`` that ``AuditLog`` uses
    (entries are written by ``Ledger.commit``, in the same transaction as the outcome
    they record; shipped ones are deleted at once, so ``compact`` has nothing to do)."""

    def __init__(self, ledger: AsyncLedger) -> None:
        self._ledger = ledger

    async def append(self, data: bytes, meta: Any = None) -> int:
        await self._ledger.commit(LedgerItem(None, None, None, data))
        return 0

    async def pending(self, limit: int = 1000, start: int = 0) -> list[WalRecord]:
        return await self._ledger.run(self._ledger.store.audit_pending, limit, start)

    async def ack_many(self, seqs: Sequence[int]) -> None:
        await self._ledger.run(self._ledger.store.audit_done, list(seqs))

    async def compact(self, older_than_s: float = 0.0) -> int:
        return 0

    async def stats(self) -> WalStats:
        n = await self._ledger.run(self._ledger.store.audit_count)
        return WalStats(
            count=n,
            pending=n,
            acked=0,
            used_bytes=0,
            disk_bytes=0,
            first_seq=None,
            last_seq=None,
            segments=1,
            corrupt_seen=0,
        )

    async def close(self, timeout: float = 0.0) -> None:
        """The ledger is closed by its owner (the app), not by the audit log."""
