"""Day partitions of ``flk_audit`` and ``flk_dedup`` (migrations 0003 and 0004).

A partition ``<table>_pYYYYMMDD`` holds the rows whose partition key (``logged_at``
for the audit log, ``expires_at`` for dedup) falls on that UTC day; it ends at the
next day's 00:00 UTC. Partitions are created ahead by ``flk db migrate`` and
``flk db maintain`` and, when a new day starts, by the writers themselves
(``flk_ensure_day_partition``, safe to race). Dropping a partition is the only way
rows leave either table: dedup partitions once their day has passed (every entry in
them has expired), audit partitions once older than the retention, oldest first, each
leaving its last row in ``flk_audit_retention`` as the anchor of the kept chain.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

from .migrations import quote_ident

__all__ = [
    "AUDIT",
    "DEDUP",
    "MaintenanceReport",
    "day_partitions",
    "drop_audit_before",
    "drop_expired_dedup",
    "ensure_ahead",
    "maintain",
]

AUDIT = "flk_audit"
DEDUP = "flk_dedup"
# Same key as audit_postgres._LOCK: dropping audit partitions waits for the writers.
_CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('flk_audit:' || current_schema()))"
_DAY = re.compile(r"_p(\d{8})$")


def _utc_today() -> _dt.date:
    return _dt.datetime.now(_dt.UTC).date()


async def day_partitions(conn: Any, parent: str) -> list[tuple[_dt.date, str]]:
    """``(day, name)`` of ``parent``'s partitions in the current schema, oldest
    first."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(format('%I.%I', current_schema(), $1::text))",
        parent,
    )
    out = []
    for r in rows:
        m = _DAY.search(r["relname"])
        if m:
            out.append(
                (_dt.datetime.strptime(m.group(1), "%Y%m%d").date(), r["relname"])
            )
    return sorted(out)


async def ensure_ahead(conn: Any, days: int) -> list[str]:
    """Create the partitions of both tables for today .. today + ``days`` (UTC)."""
    if days < 0:
        raise ValueError(f"days ahead must be >= 0, got {days}")
    made = []
    today = _utc_today()
    for parent in (AUDIT, DEDUP):
        have = {d for d, _ in await day_partitions(conn, parent)}
        for n in range(days + 1):
            day = today + _dt.timedelta(days=n)
            if day not in have:
                async with conn.transaction():
                    made.append(
                        await conn.fetchval(
                            "SELECT flk_ensure_day_partition($1, $2)", parent, day
                        )
                    )
    return made


async def drop_expired_dedup(conn: Any) -> list[str]:
    """Drop the dedup partitions whose day has passed: all their entries are dead."""
    today = _utc_today()
    dropped = []
    for day, name in await day_partitions(conn, DEDUP):
        if day < today:
            await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
            dropped.append(name)
    return dropped


async def drop_audit_before(conn: Any, retention_days: int) -> list[str]:
    """Drop the audit partitions that ended more than ``retention_days`` days ago,
    oldest first, recording each one's last row as the anchor of what is kept."""
    if retention_days < 1:
        raise ValueError(f"audit retention must be >= 1 day, got {retention_days}")
    cutoff = _utc_today() - _dt.timedelta(days=retention_days)
    dropped = []
    for day, name in await day_partitions(conn, AUDIT):
        if day + _dt.timedelta(days=1) > cutoff:
            break
        async with conn.transaction():
            await conn.execute(_CHAIN_LOCK)
            last = await conn.fetchrow(
                f"SELECT id, row_hash FROM {quote_ident(name)} ORDER BY id DESC LIMIT 1"
            )
            if last is not None:
                await conn.execute(
                    "INSERT INTO flk_audit_retention"
                    " (partition, last_id, last_row_hash) VALUES ($1, $2, $3)"
                    " ON CONFLICT (partition) DO NOTHING",
                    name,
                    last["id"],
                    last["row_hash"],
                )
            await conn.execute(f"DROP TABLE {quote_ident(name)}")
        dropped.append(name)
    return dropped


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


async def maintain(
    conn: Any, *, days_ahead: int = 2, audit_retention_days: int | None = None
) -> MaintenanceReport:
    """Create partitions ahead, drop expired dedup partitions and, with a retention,
    old audit partitions."""
    created = await ensure_ahead(conn, days_ahead)
    dropped = await drop_expired_dedup(conn)
    if audit_retention_days is not None:
        dropped += await drop_audit_before(conn, audit_retention_days)
    return MaintenanceReport(created, dropped)
