"""Adopt a data directory written by the layout before the ledger (flk_fast <= 0.6).

That layout kept the inbox WALs in ``DATA_DIR/inbox/w<i>``, the outcomes in
``DATA_DIR/dedup`` and the audit spools in ``DATA_DIR/audit-spool/w<i>``. The ledger
(``DATA_DIR/ledger``) holds all three now. At start-up, under an exclusive lock (every
worker tries; the first one does the work):

1. every live outcome of ``dedup`` is copied into the ledger, with its expiry, unless
   the ledger already has that key (so a repeat after a crash changes nothing);
2. every unacked inbox record is judged as the old server would have (outcome into the
   ledger, audit entry into its spool), exactly like a start-up replay used to be;
3. every audit entry still spooled is moved into the ledger's spool of this worker;
4. each adopted directory is renamed ``<name>.migrated-<UTC time>``, after which it is
   never read again (delete it when you no longer want it).

Each step is logged. A step that fails leaves its directory where it is, so the next
start-up tries again; nothing is lost and nothing is read twice in a way that matters
(outcomes are first-write-wins, audit entries are idempotent on their id).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from flk_fast.storage.ledger import ledger_path

log = logging.getLogger("flk_fast.server")

__all__ = ["adopt_old_layout", "move_spool"]


async def adopt_old_layout(cfg: Any, service: Any, index: int, workers: int) -> int:
    """Adopt what an older layout left in ``cfg.data_dir``; return the inbox records
    judged. A no-op (two ``stat`` calls) for a data dir that never had one."""
    root = Path(cfg.data_dir)
    parts = [root / "dedup", root / "inbox", root / "audit-spool"]
    if not any(p.exists() for p in parts):
        return 0
    lock = await _lock(ledger_path(root) / "adopt.lock")
    try:
        judged = 0
        if (root / "dedup").exists():
            await _adopt_outcomes(service, root / "dedup")
        if (root / "inbox").exists():
            judged = await _adopt_inbox(cfg, service, root / "inbox")
        if (root / "audit-spool").exists() and service.audit is not None:
            await _adopt_spools(service, root / "audit-spool")
        return judged
    finally:
        os.close(lock)  # releases the lock


async def _lock(path: Path) -> int:
    """An exclusive flock on ``path``, polled on the loop: a start-up cancelled while
    it waits leaves no thread behind that would take the lock later and keep it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                await asyncio.sleep(0.05)  # another worker is adopting
    except BaseException:
        os.close(fd)
        raise


def _retire(path: Path) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.migrated-{stamp}")
    os.rename(path, dest)
    log.info(
        "old layout: %s adopted into the ledger and renamed %s (delete it when you "
        "no longer need it)",
        path,
        dest.name,
        extra={"event": "migrated"},
    )


async def _adopt_outcomes(service: Any, path: Path) -> None:
    from flk_fast.storage.dedup_lmdb import LmdbDedup

    old = LmdbDedup(path)
    try:
        n = await service.ledger.run(service.ledger.store.adopt_outcomes, old)
    finally:
        old.close()
    log.info("old layout: %d outcomes copied from %s", n, path)
    _retire(path)


async def _adopt_inbox(cfg: Any, service: Any, root: Path) -> int:
    from flk_fast.storage.aio import AsyncWal
    from flk_fast.storage.wal_lmdb import LmdbWal

    from .app import _chunks

    judged = 0
    left = 0
    for entry in sorted(os.listdir(root)):
        if not (entry.startswith("w") and entry[1:].isdigit()):
            continue
        wal = AsyncWal(
            LmdbWal(
                root / entry, sync=cfg.wal_sync, rotate_daily=True, retention_days=14
            )
        )
        service.wal = wal  # the replay acks go to the old WAL
        try:
            judged += await service.replay(_chunks(wal))
            left += (await wal.stats()).pending
        finally:
            service.wal = None
            await wal.close()
    log.info("old layout: %d unacked inbox records of %s judged", judged, root)
    if left:
        log.warning(
            "old layout: %d records of %s could not be judged yet; kept for the next "
            "start-up",
            left,
            root,
        )
        return judged
    _retire(root)
    return judged


async def move_spool(spool: Any, path: Path) -> int:
    """Move every pending entry of the audit spool WAL at ``path`` into ``spool``;
    return how many. Appended there first, acked here after: a crash in between
    spools an entry twice, which PostgreSQL keeps once (its id is its origin)."""
    from flk_fast.storage.wal_lmdb import LmdbWal

    wal = LmdbWal(path)
    try:
        recs = list(wal.pending())
        for rec in recs:
            await spool.append(rec.data)
        wal.ack_many([r.seq for r in recs])
        return len(recs)
    finally:
        wal.close()


async def _adopt_spools(service: Any, root: Path) -> None:
    moved = 0
    for entry in sorted(os.listdir(root)):
        if not (entry.startswith("w") and entry[1:].isdigit()):
            continue
        moved += await move_spool(service.ledger.spool, root / entry)
    log.info("old layout: %d spooled audit entries of %s moved", moved, root)
    if moved:
        service.audit.spooled()
    _retire(root)
