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
        "  flk db migrate --dsn 'postgresql://u@db/flk?schema=prod'",
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
    mig.set_defaults(func=_migrate)
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


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _migrate(args: argparse.Namespace) -> int:
    from flk_fast.storage import migrations
    from flk_fast.storage._pg import connect

    async def run() -> list[str]:
        conn, schema = await connect(args.dsn, timeout_s=args.timeout)
        try:
            return await migrations.apply(conn, schema)
        finally:
            try:  # bounded: a server that stopped answering must not hang the CLI
                async with asyncio.timeout(args.timeout):
                    await conn.close()
            except Exception:
                conn.terminate()

    try:
        done = asyncio.run(run())
    except Exception as exc:  # connection refused, auth, bad DSN: one clear line
        return fail(f"db migrate: {type(exc).__name__}: {exc}")
    print("applied: " + ", ".join(done) if done else "schema is up to date")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from flk_fast.storage.audit_postgres import verify_chain

    try:
        report = asyncio.run(verify_chain(args.dsn, timeout_s=args.timeout))
    except Exception as exc:
        return fail(f"audit verify: {type(exc).__name__}: {exc}")
    if report.ok:
        print(f"audit chain OK: {report.rows} rows, head {report.head_hash}")
        return 0
    print(
        f"audit chain BROKEN at id {report.broken_id}: {report.reason} "
        f"({report.rows} rows verified before it)"
    )
    return 1
