"""Storage: write-ahead logs, the dedup store and the audit log (bytes in, bytes out).

Importing this package is cheap; each backend (lmdb, redis, asyncpg) is imported only
when it is used. ``open_dedup(url)`` picks the dedup backend from one URL-like setting:

================================================  =====================================
``lmdb:///var/lib/flk/dedup[?sync=0]``             embedded LMDB (default, durable)
``memory://`` / ``memory:///path/snapshot.bin``    in-process dict, optional snapshot
``redis://host:6379/0[?prefix=flk:dedup:]``        Redis >= 7 (also ``rediss://``,
                                                   ``unix://``)
``redis+cluster://h1:7000,h2:7001[?prefix=...]``   Redis Cluster >= 7 (also
                                                   ``rediss+cluster://``)
``redis+sentinel://h1:26379,h2:26379/svc[/0]``     Redis >= 7 behind Sentinel (also
                                                   ``rediss+sentinel://``)
``postgresql://user@host:5432/db[?schema=s]``      PostgreSQL (also ``postgres://``)
================================================  =====================================
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .base import DEFAULT_TTL_S, DedupStore, WalRecord, WalStats, WriteAheadLog

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TTL_S",
    "DedupStore",
    "WalRecord",
    "WalStats",
    "WriteAheadLog",
    "open_dedup",
]

#: How long a dedup call may take before it raises DedupUnavailableError.
DEFAULT_TIMEOUT_S = 2.0

_LAZY = {
    "LmdbWal": "wal_lmdb",
    "AsyncWal": "aio",
    "AsyncLmdbDedup": "aio",
    "LmdbDedup": "dedup_lmdb",
    "MemoryDedup": "dedup_memory",
    "RedisDedup": "dedup_redis",
    "PostgresDedup": "dedup_postgres",
    "AuditLog": "audit_postgres",
    "AuditEntry": "audit_postgres",
    "verify_chain": "audit_postgres",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _redact(url: str) -> str:
    """``url`` with any password masked (errors end up in logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _check_network_url(url: str, parts: SplitResult) -> None:
    """Reject what the client libraries would only reject at the first call."""
    from flk_fast.errors import ConfigError

    # PostgreSQL DSNs may list several hosts: ``postgresql://u@h1:5432,h2:5433/db``.
    # So may Redis Cluster and Sentinel URLs: ``redis+cluster://h1:7000,h2:7001``.
    scheme = parts.scheme.lower()
    hosts = parts.netloc.rpartition("@")[2].split(",")
    several = scheme.startswith("postgres") or scheme.endswith(
        ("+cluster", "+sentinel")
    )
    for host in hosts if several else [None]:
        try:
            (parts if host is None else urlsplit(f"//{host}")).port  # noqa: B018
        except ValueError as exc:  # "abc", or outside 0-65535
            raise ConfigError(f"dedup URL {_redact(url)!r}: bad port ({exc})") from exc


def open_dedup(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DedupStore:
    """Open the dedup store named by ``url`` (see the module docstring).

    Network backends connect lazily: a store for a server that is down opens fine and
    its first call raises ``DedupUnavailableError`` within ``timeout_s``.

    Raises
    ------
    flk_fast.errors.ConfigError
        Unknown scheme, an LMDB URL without a path, or a malformed network URL (a
        port that is not a number in 0-65535, a bad redis-py option, an empty
        ``?schema=``), at open time rather than at the first call.
    """
    from flk_fast.errors import ConfigError

    if timeout_s <= 0:
        raise ConfigError(f"dedup timeout_s must be > 0, got {timeout_s}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme == "lmdb":
        from .aio import AsyncLmdbDedup
        from .dedup_lmdb import LmdbDedup

        path = parts.netloc + parts.path
        if not path:
            raise ConfigError(
                f"dedup URL {url!r}: lmdb needs a path, e.g. lmdb:///var/lib/flk"
            )
        store = LmdbDedup(path, sync=_flag(query.get("sync", "1")))
        return AsyncLmdbDedup(store, timeout_s=timeout_s)
    if scheme == "memory":
        from .dedup_memory import MemoryDedup

        snapshot = query.get("snapshot") or (parts.netloc + parts.path) or None
        return MemoryDedup(snapshot)
    if scheme in (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
        "redis+sentinel",
        "rediss+sentinel",
    ):
        from .dedup_redis import RedisDedup

        _check_network_url(url, parts)
        try:  # redis-py parses the URL (port, db, query options) right here
            return RedisDedup(url, timeout_s=timeout_s)
        except ValueError as exc:
            raise ConfigError(f"dedup URL {_redact(url)!r}: {exc}") from exc
    if scheme in ("postgresql", "postgres"):
        from .dedup_postgres import PostgresDedup

        _check_network_url(url, parts)
        return PostgresDedup(url, timeout_s=timeout_s)
    raise ConfigError(
        f"dedup URL {url!r}: unknown scheme {parts.scheme!r} "
        "(use lmdb:///path, memory://, redis://…, redis+cluster://…, "
        "redis+sentinel://… or postgresql://…)"
    )
