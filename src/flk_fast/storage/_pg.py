"""Helpers shared by the PostgreSQL stores: DSN options and error mapping."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["connect", "split_dsn"]

# Query options flk_fast reads itself; asyncpg would send unknown ones to the server
# as settings, so they are removed from the DSN first.
_OURS = ("schema",)


def split_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """``postgresql://…?schema=s`` -> (DSN without our options, {"schema": "s"})."""
    parts = urlsplit(dsn)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in _OURS:
            ours[k] = v
        else:
            theirs.append((k, v))
    scheme = (
        "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    )
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(theirs))), ours


def server_settings(schema: str | None) -> dict[str, str]:
    """``search_path`` for ``schema``, quoted: the server folds an unquoted name to
    lower case (``Prod`` would become ``prod``) and splits it at commas."""
    if not schema:
        return {}
    from .migrations import quote_ident

    return {"search_path": quote_ident(schema)}


async def connect(dsn: str, *, timeout_s: float) -> tuple[Any, str | None]:
    """One asyncpg connection with the DSN's ``schema`` as search_path."""
    import asyncpg

    plain, opts = split_dsn(dsn)
    schema = opts.get("schema") or None
    conn = await asyncpg.connect(
        plain,
        timeout=timeout_s,
        command_timeout=timeout_s,
        server_settings=server_settings(schema),
    )
    return conn, schema
