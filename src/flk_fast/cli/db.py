"""``flk db migrate`` and ``flk audit verify``: PostgreSQL schema and audit chain."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ._common import add_command, fail

__all__ = ["register"]


def register(sub: Any) -> None:
    db = add_command(
        sub,
        "db",
        help="manage the PostgreSQL schema used by the dedup store and audit log",
        examples="  flk db migrate --dsn postgresql://postgres@127.0.0.1:5432/flk\n"
        "  flk db migrate --dsn 'postgresql://u@db/flk?schema=prod'\n"
        "  flk db maintain --dsn postgresql://postgres@127.0.0.1:5432/flk"
        " --audit-retention-days 14",
    )
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    mig = db_sub.add_parser(
        "migrate",
        help="apply the missing schema migrations (idempotent; safe while servers run)",
    )
    mig.add_argument(
        "--dsn", required=True, help="postgresql://user@host:port/db[?schema=NAME]"
    )
    mig.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    _days_ahead(mig)
    mig.set_defaults(func=_migrate)
    mnt = db_sub.add_parser(
        "maintain",
        help="create day partitions ahead, drop expired dedup partitions and (with "
        "--audit-retention-days) audit partitions older than the retention; run daily",
    )
    mnt.add_argument(
        "--dsn", required=True, help="postgresql://user@host:port/db[?schema=NAME]"
    )
    mnt.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    _days_ahead(mnt)
    mnt.add_argument(
        "--audit-retention-days",
        type=_positive_int,
        default=None,
        help="drop audit partitions that ended more than N days ago "
        "(default: keep all)",
    )
    mnt.set_defaults(func=_maintain)
    db.set_defaults(func=lambda a: _usage(db))

    audit = add_command(
        sub,
        "audit",
        help="check the hash-chained audit log in PostgreSQL",
        examples="  flk audit verify --dsn postgresql://postgres@127.0.0.1:5432/flk",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    ver = audit_sub.add_parser(
        "verify", help="walk the chain; exit 0 if intact, 1 at the first broken link"
    )
    ver.add_argument(
        "--dsn", required=True, help="postgresql://user@host:port/db[?schema=NAME]"
    )
    ver.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    ver.set_defaults(func=_verify)
    audit.set_defaults(func=lambda a: _usage(audit))


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _days_ahead(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days-ahead",
        type=_positive_int,
        default=2,
        help="create the day partitions up to N days after today, UTC (default 2)",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _on_db(args: argparse.Namespace, what: str, fn: Any) -> tuple[int, Any]:
    """Run ``await fn(conn, schema)`` on a migrated connection; (exit code, result)."""
    from flk_fast.storage import migrations
    from flk_fast.storage._pg import connect

    async def run() -> Any:
        conn, schema = await connect(args.dsn, timeout_s=args.timeout)
        try:
            applied = await migrations.apply(conn, schema)
            return applied, await fn(conn)
        finally:
            try:  # bounded: a server that stopped answering must not hang the CLI
                async with asyncio.timeout(args.timeout):
                    await conn.close()
            except Exception:
                conn.terminate()

    try:
        return 0, asyncio.run(run())
    except Exception as exc:  # connection refused, auth, bad DSN: one clear line
        return fail(f"db {what}: {type(exc).__name__}: {exc}"), None


def _migrate(args: argparse.Namespace) -> int:
    from flk_fast.storage.partitions import ensure_ahead

    code, out = _on_db(args, "migrate", lambda c: ensure_ahead(c, args.days_ahead))
    if code:
        return code
    done, created = out
    print("applied: " + ", ".join(done) if done else "schema is up to date")
    if created:
        print("partitions created: " + ", ".join(created))
    return 0


def _maintain(args: argparse.Namespace) -> int:
    from flk_fast.storage.partitions import maintain

    code, out = _on_db(
        args,
        "maintain",
        lambda c: maintain(
            c,
            days_ahead=args.days_ahead,
            audit_retention_days=args.audit_retention_days,
        ),
    )
    if code:
        return code
    _, report = out
    print("partitions created: " + (", ".join(report.created) or "none"))
    print("partitions dropped: " + (", ".join(report.dropped) or "none"))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from flk_fast.storage.audit_postgres import verify_chain

    try:
        report = asyncio.run(verify_chain(args.dsn, timeout_s=args.timeout))
    except Exception as exc:
        return fail(f"audit verify: {type(exc).__name__}: {exc}")
    if report.ok:
        since = (
            f" (from id {report.anchor_id + 1}; older rows dropped by retention)"
            if report.anchor_id is not None
            else ""
        )
        print(f"audit chain OK: {report.rows} rows, head {report.head_hash}{since}")
        return 0
    print(
        f"audit chain BROKEN at id {report.broken_id}: {report.reason} "
        f"({report.rows} rows verified before it)"
    )
    return 1
