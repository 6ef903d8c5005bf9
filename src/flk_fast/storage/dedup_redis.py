"""Dedup on Redis (redis-py asyncio, hiredis parser): shared by every server replica.

``put_if_absent`` is ONE command, ``SET key value NX PX ttl GET`` (Redis >= 7.0): the
server either stores our value and answers nil, or keeps the existing one and returns
it, atomically, so first write wins across processes and hosts with one round trip.

Key layout: ``<prefix>{<pcs_id>}``, default prefix ``flk:dedup:``. The braces are a
Redis Cluster hash tag: the slot is computed from the pcs_id alone, so keys spread
over the cluster by id while any future per-PCS key (say ``<prefix2>{<pcs_id>}``)
lands in the same slot and can join it in a multi-key command. Batches are pipelines
of single-key commands (no MGET), which the cluster client splits by slot.

``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://``
for TLS) talks to a Redis Cluster through ``redis.asyncio.cluster.RedisCluster``: the
hosts are startup nodes, the client learns the slot map from them and follows
MOVED/ASK redirections; a cluster has database 0 only.

``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
(``rediss+sentinel://`` for TLS to the primary) asks those Redis Sentinels for the
current primary of ``service`` and follows it through a failover (a call that meets
the old primary fails with ``DedupUnavailableError``, a 503, and the next one goes to
the new primary). The password is the primary's; the sentinels take none.

Durability: a Redis that acknowledges a write and then forgets it (a restart or kill
-9 with ``appendonly no``) would make the server judge, count and audit again PCS it
already answered, so the store refuses such a server. Every new connection (to a
restarted server, to a new primary after a failover, to a node the cluster added) first
runs ``CONFIG GET appendonly appendfsync`` in redis-py's connect callback, and so does
every ``ping()`` (``/ready``) and ``check_durability()`` (``flk serve`` at start-up, on
every primary of a cluster). Durable means ``appendonly yes`` with ``appendfsync
always`` (nothing acknowledged is lost) or ``everysec`` (a kill -9 of Redis loses
nothing, a crash of the machine up to the last ~1 s, 2 s when the disk stalls). A
server that is not durable, or that does not answer ``CONFIG`` (renamed away, or an
ACL without ``+config|get``), fails every call with ``RedisNotDurableError`` (a
``DedupUnavailableError``: 503) and ``check_durability()`` with ``ConfigError``, each
naming the setting and the fix. ``?durability=none`` in the URL skips the check,
logs a WARNING and sets ``durability_note``, which ``/ready`` shows.

Every call is bounded by ``timeout_s``: connection refused, a silent server or any
Redis error raises ``DedupUnavailableError`` (retryable, HTTP 503). ``_call`` is the
one place that maps redis-py's exceptions to ``StorageError``s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from flk_fast.errors import ConfigError, DedupUnavailableError, StorageError

from .base import DEFAULT_TTL_S, DedupKey, dedup_key

__all__ = ["DEFAULT_PREFIX", "RedisDedup", "RedisNotDurableError"]

DEFAULT_PREFIX = "flk:dedup:"
#: ``appendfsync`` values that count as durable (see the module docstring).
DURABLE_FSYNC = ("always", "everysec")
_T = TypeVar("_T")
_OURS = ("prefix", "durability")

log = logging.getLogger("flk_fast.storage.redis")


class RedisNotDurableError(DedupUnavailableError):
    """The Redis server does not promise to keep what it acknowledged (``appendonly``
    or ``appendfsync``), or cannot be asked (``CONFIG`` unavailable). HTTP 503 while
    serving; ``check_durability()`` raises it as a ``ConfigError`` at start-up."""


class _NotDurable(RedisError):
    """Raised inside redis-py's connect callback: a ``RedisError`` so that redis-py
    drops the connection, but no ``ConnectionError``, which it would retry."""


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """Separate flk_fast's own query options (``prefix``, ``durability``) from
    redis-py's."""
    parts = urlsplit(url)
    ours, theirs = {}, []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in _OURS:
            ours[k] = v
        else:
            theirs.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _text(x: Any) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def _settings(reply: Any) -> dict[str, str]:
    """A ``CONFIG GET`` reply (RESP2 flat list, RESP3 or redis-py's dict) as text."""
    pairs = (
        reply.items()
        if isinstance(reply, dict)
        else zip(reply[::2], reply[1::2], strict=False)
    )
    return {_text(k).lower(): _text(v).lower() for k, v in pairs}


def _cli(where: str) -> str:
    host, sep, port = where.rpartition(":")
    return f"redis-cli -h {host} -p {port}" if sep and port.isdigit() else "redis-cli"


def _durability_problem(where: str, reply: Any) -> str | None:
    """``None`` if ``CONFIG GET appendonly appendfsync`` promises durability, else the
    message naming the setting and the fix."""
    got = _settings(reply)
    aof, fsync = got.get("appendonly", "?"), got.get("appendfsync", "?")
    if aof != "yes":
        what = (
            f"appendonly is {aof!r}: a restart or kill -9 of Redis loses every write "
            "since the last RDB save"
        )
    elif fsync not in DURABLE_FSYNC:
        what = (
            f"appendfsync is {fsync!r}: a crash of the machine loses what the OS "
            "had not yet written"
        )
    else:
        return None
    cli = _cli(where)
    return (
        f"redis dedup {where} is not durable, {what}, and verdicts already "
        f"acknowledged would be judged again. Fix: {cli} CONFIG SET "
        f"appendonly yes && {cli} CONFIG SET appendfsync always (and CONFIG REWRITE), "
        "or start redis-server with --appendonly yes --appendfsync always; or add "
        "?durability=none to the dedup URL to accept the loss"
    )


def _config_refused(exc: ResponseError) -> bool:
    """``CONFIG`` renamed away (unknown command) or denied by an ACL (NOPERM)."""
    return isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower()


def _config_unavailable(where: str, exc: BaseException) -> str:
    return (
        f"redis dedup {where}: CONFIG unavailable ({type(exc).__name__}: {exc}), so "
        "appendonly / "
        "appendfsync cannot be checked. Make sure the server runs with "
        "--appendonly yes --appendfsync always, then add ?durability=none to the "
        "dedup URL (or allow CONFIG GET: rename-command / ACL +config|get)"
    )


async def _ask_durability(conn: Any, where: str) -> None:
    """Run ``CONFIG GET`` on one connection; raise ``_NotDurable`` unless durable."""
    await conn.send_command("CONFIG", "GET", "appendonly", "appendfsync")
    try:
        reply = await conn.read_response()
    except ResponseError as exc:
        if not _config_refused(exc):
            raise  # LOADING, MASTERDOWN...: the server is not ready, say so as such
        raise _NotDurable(_config_unavailable(where, exc)) from exc
    problem = _durability_problem(where, reply)
    if problem:
        raise _NotDurable(problem)


def _where(conn: Any) -> str:
    path = getattr(conn, "path", None)
    return str(path) if path else f"{conn.host}:{conn.port}"


async def _on_connect(conn: Any) -> None:
    """redis-py's connect callback: the usual handshake (AUTH, SELECT...), then the
    durability check, before the first command runs on the new connection."""
    await conn.on_connect_check_health(check_health=True)
    await _ask_durability(conn, _where(conn))


class _MultiHostUrl(NamedTuple):
    """``redis+cluster://`` or ``redis+sentinel://``, taken apart."""

    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    ssl: bool
    path: str


def _multi_host_url(url: str, default_port: int, kind: str) -> _MultiHostUrl:
    """Parse ``scheme://[user:pw@]h1:p1,h2:p2/path``; ``kind`` names it in errors.

    Raises ``ValueError``: an empty host, or a query (only flk_fast's own ``prefix=``
    is understood, and it is taken off before this).
    """
    parts = urlsplit(url)
    if parts.query:
        raise ValueError(
            f"options {parts.query!r} are not supported on a {kind} URL "
            "(only flk_fast's own prefix=)"
        )
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = []
    for host in netloc.split(","):
        hp = urlsplit(f"//{host}")
        if not hp.hostname:
            raise ValueError(f"empty host in the {kind} list {netloc!r}")
        hosts.append((hp.hostname, hp.port or default_port))
    return _MultiHostUrl(
        hosts,
        unquote(username) or None,
        unquote(password) or None,
        parts.scheme.lower().startswith("rediss"),
        parts.path,
    )


def _cluster_client(
    url: str, timeout_s: float, max_connections: int, on_connect: Any
) -> Any:
    """A ``RedisCluster`` for ``redis+cluster://[user:pw@]h1:p1,h2:p2[/0]``;
    ``on_connect`` (or ``None``) runs on every new connection to any node.

    Raises ``ValueError`` (a bad URL) at once; the client itself connects lazily.
    """
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    u = _multi_host_url(url, 6379, "cluster node")
    if u.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has database 0 only, got {u.path!r}")
    nodes = [ClusterNode(h, p, max_connections=max_connections) for h, p in u.hosts]
    client = RedisCluster(
        startup_nodes=nodes,
        username=u.username,
        password=u.password,
        ssl=u.ssl,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=max_connections,
        # As for one server: one immediate retry, more would pass the timeout.
        retry=Retry(NoBackoff(), 1),
    )
    if on_connect is not None:
        # RedisCluster takes no connect callback (it sets one itself only for
        # read_from_replicas, which we never use), so put it where every node gets
        # its connection options: the shared kwargs of the nodes manager (nodes found
        # later) and the startup nodes made from them. redis-py's own maintenance
        # notifications handler is injected the same way.
        client.nodes_manager.connection_kwargs["redis_connect_func"] = on_connect
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_kwargs["redis_connect_func"] = on_connect
    return client


def _sentinel_client(
    url: str, timeout_s: float, max_connections: int, on_connect: Any
) -> tuple[Any, list[Any]]:
    """The primary's client for ``redis+sentinel://[u:pw@]h1:p1,h2:p2/service[/db]``
    and the sentinel clients to close with it.

    Raises ``ValueError`` (a bad URL) at once; nothing connects before the first call.
    """
    from redis.asyncio.sentinel import Sentinel

    u = _multi_host_url(url, 26379, "sentinel")
    path = [p for p in u.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(
            f"a sentinel URL names the service, and optionally a database: "
            f".../service[/db], got path {u.path!r}"
        )
    service, db = path[0], path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"database must be a number, got {db!r}")
    sentinel = Sentinel(
        u.hosts,
        sentinel_kwargs={
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        },
    )
    client = sentinel.master_for(
        service,
        db=int(db),
        username=u.username,
        password=u.password,
        ssl=u.ssl,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 1),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        redis_connect_func=on_connect,  # on every connection to the primary of the day
    )
    return client, list(sentinel.sentinels)


def _storage_error(exc: Exception, timeout_s: float) -> StorageError:
    """The one mapping from what redis-py (and the OS under it) raises to
    ``StorageError``s, so that no Redis failure is ever answered 500.

    Besides ``RedisError`` (connection refused or reset, ``TimeoutError``,
    ``BusyLoadingError``, ``ReadOnlyError`` and other ``ResponseError``s met during
    a failover, ``ClusterDownError``, ``TryAgainError``...) and
    ``RedisClusterException`` (no node reachable), redis-py has let other
    exceptions escape while a node or the connection dies (``IndexError`` or
    ``KeyError`` from a slot map being rebuilt, ``AttributeError`` on a connection
    closed under it): those are a failure of the store as well, logged in one line.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, _NotDurable):
        return RedisNotDurableError(str(exc))
    if isinstance(exc, TimeoutError):
        return DedupUnavailableError(f"redis dedup: no answer within {timeout_s} s")
    if isinstance(exc, RedisError | RedisClusterException | OSError):
        return DedupUnavailableError(f"redis dedup: {exc or type(exc).__name__}")
    log.error("redis dedup: unexpected %s from redis-py: %s", type(exc).__name__, exc)
    return DedupUnavailableError(f"redis dedup: {type(exc).__name__}: {exc}")


class RedisDedup:
    """``DedupStore`` on Redis. ``url``: ``redis://[:password@]host:port/db[?prefix=…]``
    (``rediss://`` for TLS, ``unix:///path.sock`` for a socket), or
    ``redis+cluster://host:port[,host:port...][?prefix=…]`` for a Redis Cluster, or
    ``redis+sentinel://host:port[,host:port...]/service[/db][?prefix=…]`` for a
    primary managed by Redis Sentinel. ``?durability=none`` skips the durability
    check (see the module docstring).

    Attributes
    ----------
    durability_note : str
        Empty while the check is on; with ``?durability=none``, one sentence saying
        that acknowledged verdicts may be lost (``/ready`` shows it).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        prefix: str | None = None,
        max_connections: int = 32,
    ) -> None:
        plain, opts = _split_url(url)
        self.timeout_s = timeout_s
        self.prefix = (
            prefix if prefix is not None else opts.get("prefix", DEFAULT_PREFIX)
        ).encode()
        self._url = plain
        self._slots = asyncio.Semaphore(max_connections)
        self.client: Any
        self._also_close: list[Any] = []  # the sentinel clients, if any
        durability = opts.get("durability")
        if durability not in (None, "none"):
            raise ValueError(
                f"durability={durability!r}: the only value is 'none' (skip the "
                "check that Redis runs with appendonly yes and appendfsync "
                "always|everysec)"
            )
        self.durability_note = ""
        on_connect: Any = _on_connect
        if durability == "none":
            on_connect = None
            self.durability_note = (
                "durability not checked (?durability=none): a restart of Redis "
                "may lose acknowledged verdicts unless it runs with appendonly yes"
            )
            log.warning("redis dedup: %s", self.durability_note)
        scheme = urlsplit(plain).scheme.lower()
        self._kind = scheme.rpartition("+")[2] if "+" in scheme else "single"
        if self._kind == "cluster":
            self.client = _cluster_client(plain, timeout_s, max_connections, on_connect)
            return
        if self._kind == "sentinel":
            self.client, self._also_close = _sentinel_client(
                plain, timeout_s, max_connections, on_connect
            )
            return
        # A blocking pool: under a burst, callers wait (within timeout_s) for one of
        # ``max_connections`` connections instead of failing with "Too many
        # connections" as the default pool does.
        pool = aioredis.BlockingConnectionPool.from_url(
            plain,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One immediate retry replaces a pooled connection the server dropped;
            # more would only push the answer past the caller's timeout. (The async
            # Retry: redis.retry.Retry "retried" the coroutine's creation, not its
            # run, so a dropped connection failed the call.)
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
            redis_connect_func=on_connect,
        )
        # from_pool: the client owns the pool and closes it with itself
        self.client = aioredis.Redis.from_pool(pool)

    def key(self, key: DedupKey) -> bytes:
        """The Redis key of a dedup key (see the module docstring)."""
        return self.prefix + b"{" + dedup_key(key) + b"}"

    async def _call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``make()`` within ``timeout_s``.

        ``make`` builds the command's coroutine only once a slot is ours: a coroutine
        built before the wait and abandoned by a timeout is never awaited
        (RuntimeWarning, an error under ``filterwarnings = error``).
        """
        try:
            async with asyncio.timeout(self.timeout_s):
                # The semaphore queues callers first-come first-served before they
                # reach the pool: redis-py's blocking pool wakes waiters in no fixed
                # order, and with more callers than connections some starved for
                # ~0.4 s (bench p99). Now the pool itself never has waiters.
                async with self._slots:
                    return await make()
        except Exception as exc:
            raise _storage_error(exc, self.timeout_s) from exc

    async def get(self, key: DedupKey) -> bytes | None:
        k = self.key(key)
        value: bytes | None = await self._call(lambda: self.client.get(k))
        return value

    async def get_many(self, keys: Sequence[DedupKey]) -> list[bytes | None]:
        if not keys:
            return []
        ks = [self.key(k) for k in keys]

        async def run() -> list[bytes | None]:
            async with self.client.pipeline(transaction=False) as pipe:
                for k in ks:
                    pipe.get(k)
                return await pipe.execute()

        result: list[bytes | None] = await self._call(run)
        return result

    @staticmethod
    def _ttl_ms(ttl_s: float) -> int:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        return max(1, round(ttl_s * 1000))

    async def put_if_absent(
        self, key: DedupKey, value: bytes, ttl_s: float = DEFAULT_TTL_S
    ) -> tuple[bytes, bool]:
        if not isinstance(value, bytes):
            raise TypeError(f"dedup values are bytes, not {type(value).__name__}")
        k, ttl_ms = self.key(key), self._ttl_ms(ttl_s)
        old = await self._call(
            lambda: self.client.set(k, value, nx=True, px=ttl_ms, get=True)
        )
        return (value, True) if old is None else (old, False)

    async def put_many_if_absent(
        self, items: Sequence[tuple[DedupKey, bytes]], ttl_s: float = DEFAULT_TTL_S
    ) -> list[tuple[bytes, bool]]:
        if not items:
            return []
        ttl_ms = self._ttl_ms(ttl_s)
        prepared = []
        for k, v in items:
            if not isinstance(v, bytes):
                raise TypeError(f"dedup values are bytes, not {type(v).__name__}")
            prepared.append((self.key(k), v))

        async def run() -> list[bytes | None]:
            # Pipelined commands run in order, so a key repeated in the batch is won
            # by its first occurrence, as with the other backends.
            async with self.client.pipeline(transaction=False) as pipe:
                for k, v in prepared:
                    pipe.set(k, v, nx=True, px=ttl_ms, get=True)
                return await pipe.execute()

        olds: list[bytes | None] = await self._call(run)
        return [
            (v, True) if old is None else (old, False)
            for (_, v), old in zip(prepared, olds, strict=True)
        ]

    async def _ask_all(self) -> None:
        """``CONFIG GET`` on the server, the primary of the day or every primary."""
        if self._kind != "cluster":
            async with self.client.client() as one:  # holds one pooled connection
                await _ask_durability(one.connection, _where(one.connection))
            return
        await self.client.initialize()  # no-op once the slot map is known
        for node in self.client.get_primaries():
            try:
                reply = await node.execute_command(
                    "CONFIG GET", "appendonly", "appendfsync"
                )
            except ResponseError as exc:
                if not _config_refused(exc):
                    raise
                raise _NotDurable(_config_unavailable(node.name, exc)) from exc
            problem = _durability_problem(node.name, reply)
            if problem:
                raise _NotDurable(problem)

    async def check_durability(self) -> None:
        """Ask the server now whether it keeps what it acknowledges (every primary
        of a cluster; nothing with ``?durability=none``). ``flk serve`` calls this at
        start-up, so that a Redis with ``appendonly no`` is refused before it serves.

        Raises
        ------
        flk_fast.errors.ConfigError
            The server is not durable, or does not answer ``CONFIG``; the message
            names the setting and the fix.
        flk_fast.errors.DedupUnavailableError
            The server cannot be reached (then every new connection is checked).
        """
        if self.durability_note:
            return
        try:
            await self._call(self._ask_all)
        except RedisNotDurableError as exc:
            raise ConfigError(str(exc)) from exc

    async def ping(self) -> None:
        """A round trip; with the check on, ``CONFIG GET`` on every primary, so that
        ``/ready`` fails with ``RedisNotDurableError`` once durability is turned off
        on a live server."""
        await self._call(self.client.ping if self.durability_note else self._ask_all)

    async def delete_prefix(self) -> int:
        """Delete every key under this store's prefix (tests and tooling; uses SCAN)."""
        n = 0
        async for k in self.client.scan_iter(match=self.prefix + b"*", count=1000):
            n += await self._call(partial(self.client.delete, k))
        return n

    async def close(self) -> None:
        await self.client.aclose()
        for client in self._also_close:
            await client.aclose()

    async def __aenter__(self) -> RedisDedup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
