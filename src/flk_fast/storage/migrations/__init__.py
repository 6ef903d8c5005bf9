"""PostgreSQL schema migrations, shipped as ``NNNN_name.sql`` files in this package.

``apply(conn, schema)`` runs the missing ones in order, each recorded in
``flk_schema_migrations``, all under one transaction-scoped advisory lock so that
several processes opening the store at once (or ``flk db migrate`` racing a server)
apply each migration exactly once. It is idempotent: ``flk db migrate`` runs it, and so
does every store when it first connects.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

__all__ = ["MIGRATIONS", "apply", "quote_ident"]

# pg_advisory_xact_lock key: an arbitrary constant reserved for flk_fast migrations.
_LOCK_KEY = 0x466C6B4D6967  # "FlkMig"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _load() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(__name__).iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(found)


#: ``(version, name, sql)`` of every shipped migration, in order.
MIGRATIONS: list[tuple[int, str, str]] = _load()


def quote_ident(name: str) -> str:
    """Quote a PostgreSQL identifier (schema names come from a URL)."""
    return '"' + name.replace('"', '""') + '"'


async def apply(conn: Any, schema: str | None = None) -> list[str]:
    """Apply the missing migrations on an asyncpg connection; return their names.

    With ``schema``, it is created if missing and must already be the connection's
    ``search_path`` (the stores set it when they connect).
    """
    done: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        if schema:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS flk_schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            r[0] for r in await conn.fetch("SELECT version FROM flk_schema_migrations")
        }
        for version, name, sql in MIGRATIONS:
            if version in applied:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO flk_schema_migrations (version, name) VALUES ($1, $2)",
                version,
                name,
            )
            done.append(f"{version:04d}_{name}")
    return done
