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
import re
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .base import DEFAULT_TTL_S, DedupStore, WalRecord, WalStats, WriteAheadLog

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TTL_S",
    "DedupStore",
    "WalRecord",
    "WalStats",
    "WriteAheadLog",
    "open_dedup",
    "redact",
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


# scheme://user:password@ — the password runs to the *last* "@" of the token, so a
# password holding "@" or "/" is masked whole (over-masking is fine, leaking is not).
_URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^\s:/@'\"]*:)\S*@")
_URL_PASSWORD_AT_START = re.compile(r"[A-Za-z][\w+.-]*://[^\s:/@'\"]*:(\S*)@")
# ?password=... / &passwd=... in a query, or password=... in a libpq keyword DSN.
_KEY_PASSWORD = re.compile(r"(?i)(\b(?:password|passwd)=)[^&\s'\"]*")
# Where URL parsers cut a password that holds them (urlsplit ends the authority at the
# first "/", "?" or "#" and reads what follows "user:" as a port).
_CUTS = re.compile(r"[/?#@\[\]]")


def _url_secrets(url: str) -> list[str]:
    """The passwords written in ``url``, and each piece of them a parser might quote
    on its own in an error, longest first."""
    found: set[str] = set()
    m = _URL_PASSWORD_AT_START.match(url)
    words = [m.group(1)] if m else []
    words += [k.group(0).partition("=")[2] for k in _KEY_PASSWORD.finditer(url)]
    for word in words:
        for w in (word, unquote(word)):
            found.add(w)
            found.update(_CUTS.split(w))
    return sorted((w for w in found if w), key=len, reverse=True)


def redact(text: object, url: str = "") -> str:
    """``str(text)`` with secrets masked; the one redactor of flk_fast.

    Masks any ``scheme://user:password@`` password and any ``password=``/``passwd=``
    value in the text, and, given the ``url`` the text is about, every password of
    that URL and every piece of one, wherever it appears: a parser's error quotes what
    it choked on (``redis://bob:pw/x@h`` gave "Port could not be cast to integer value
    as 'pw'"), so an error about a URL is passed through here with its URL.

    Examples
    --------
    >>> redact("redis://bob:s3cret@h:6379/0")
    'redis://bob:***@h:6379/0'
    >>> redact("value as 'Secr3tPW'", url="redis://bob:Secr3tPW/rest@h")
    "value as '***'"
    """
    out = str(text)
    for secret in _url_secrets(url) if url else ():
        out = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", "***", out)
    out = _URL_PASSWORD.sub(r"\1***@", out)
    return _KEY_PASSWORD.sub(r"\1***", out)


def _url_error(url: str, what: object) -> Any:
    """A ConfigError about dedup URL ``url``, secrets masked."""
    from flk_fast.errors import ConfigError

    return ConfigError(redact(f"dedup URL {url!r}: {what}", url))


def _check_network_url(url: str, parts: SplitResult) -> None:
    """Reject what the client libraries would only reject at the first call."""
    # PostgreSQL DSNs may list several hosts: ``postgresql://u@h1:5432,h2:5433/db``.
    # So may Redis Cluster and Sentinel URLs: ``redis+cluster://h1:7000,h2:7001``.
    scheme = parts.scheme.lower()
    hosts = parts.netloc.rpartition("@")[2].split(",")
    several = scheme.startswith("postgres") or scheme.endswith(
        ("+cluster", "+sentinel")
    )
    port = parts.netloc.rpartition(":")[2] if ":" in parts.netloc else ""
    if (
        "@" not in parts.netloc
        and "@" in url.partition("://")[2]
        and "[" not in parts.netloc
        and port
        and not port.isdigit()
    ):
        # "redis://bob:pa/ss@host": the authority ends at the first "/", "?" or "#",
        # so the password's tail looks like a path and its head like a port.
        raise _url_error(
            url,
            'the user name or password holds "/", "?" or "#": percent-encode them '
            "(%2F, %3F, %23)",
        )
    for host in hosts if several else [None]:
        try:
            (parts if host is None else urlsplit(f"//{host}")).port  # noqa: B018
        except ValueError as exc:  # "abc", or outside 0-65535
            raise _url_error(url, f"bad port ({exc})") from None


def open_dedup(
    url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, read_dsn: str = ""
) -> DedupStore:
    """Open the dedup store named by ``url`` (see the module docstring).

    Network backends connect lazily: a store for a server that is down opens fine and
    its first call raises ``DedupUnavailableError`` within ``timeout_s``.

    Raises
    ------
    flk_fast.errors.ConfigError
        Unknown scheme, an LMDB URL without a path, or a malformed network URL (a
        port that is not a number in 0-65535, a bad redis-py option, an empty
        ``?schema=``), at open time rather than at the first call; ``read_dsn``
        (a PostgreSQL read replica) with a store that is not PostgreSQL.
    """
    from flk_fast.errors import ConfigError

    if timeout_s <= 0:
        raise ConfigError(f"dedup timeout_s must be > 0, got {timeout_s}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced "[" in the host
        raise _url_error(url, f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if read_dsn and scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "a dedup read replica (--dedup-read-dsn) needs a postgresql:// dedup "
            f"store, not {scheme}://"
        )
    if scheme == "lmdb":
        from .aio import AsyncLmdbDedup
        from .dedup_lmdb import LmdbDedup

        path = parts.netloc + parts.path
        if not path:
            raise _url_error(url, "lmdb needs a path, e.g. lmdb:///var/lib/flk")
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
            raise _url_error(url, exc) from None
    if scheme in ("postgresql", "postgres"):
        from .dedup_postgres import PostgresDedup

        _check_network_url(url, parts)
        if read_dsn:
            _check_network_url(read_dsn, urlsplit(read_dsn))
        try:
            return PostgresDedup(url, timeout_s=timeout_s, read_dsn=read_dsn)
        except ValueError as exc:
            raise _url_error(url, exc) from None
    raise _url_error(
        url,
        f"unknown scheme {parts.scheme!r} (use lmdb:///path, memory://, redis://…, "
        "redis+cluster://…, redis+sentinel://… or postgresql://…)",
    )
