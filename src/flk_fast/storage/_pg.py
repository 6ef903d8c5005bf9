"""Helpers shared by the PostgreSQL stores: DSN options and error mapping."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flk_fast.errors import StorageError

__all__ = ["connect", "split_dsn", "storage_error", "unavailable_errors"]

log = logging.getLogger("flk_fast.storage.postgres")


def unavailable_errors() -> tuple[type[Exception], ...]:
    """What asyncpg (and the OS under it) raises when the database or the connection
    fails, rather than our arguments: ``PostgresError`` (including a backend
    terminated by ``pg_terminate_backend``: ``AdminShutdownError``, SQLSTATE 57P01),
    ``InterfaceError`` (``ConnectionDoesNotExistError``: the connection was lost
    mid-call), ``InternalClientError`` (``cannot switch to state 15`` when a pool
    releases a connection its server just terminated; ``ProtocolError``), socket
    errors, ``EOFError`` (``IncompleteReadError``) and timeouts."""
    import asyncpg

    return (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        EOFError,
        TimeoutError,
    )


def storage_error(
    what: str, exc: Exception, timeout_s: float, cls: type[StorageError] = StorageError
) -> StorageError:
    """The one mapping from what asyncpg raises to ``StorageError``s (``cls``, e.g.
    ``DedupUnavailableError``), so that no PostgreSQL failure is ever answered 500.

    ``what`` names the store in the message. A ``StorageError`` passes unchanged;
    anything asyncpg raises outside ``unavailable_errors()`` is a failure of the
    store too (asyncpg has let others escape while a connection died), logged in
    one line.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, TimeoutError):
        return cls(f"{what}: no answer within {timeout_s} s")
    if not isinstance(exc, unavailable_errors()):
        log.error("%s: unexpected %s from asyncpg: %s", what, type(exc).__name__, exc)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return cls(f"{what}: {detail}")


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
