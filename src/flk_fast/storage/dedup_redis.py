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

Every call is bounded by ``timeout_s``: connection refused, a silent server or any
Redis error raises ``DedupUnavailableError`` (retryable, HTTP 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from flk_fast.errors import DedupUnavailableError

from .base import DEFAULT_TTL_S, DedupKey, dedup_key

__all__ = ["RedisDedup", "DEFAULT_PREFIX"]

DEFAULT_PREFIX = "flk:dedup:"
_T = TypeVar("_T")


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """Separate flk_fast's own query options (``prefix``) from redis-py's."""
    parts = urlsplit(url)
    ours, theirs = {}, []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "prefix":
            ours[k] = v
        else:
            theirs.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


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


def _cluster_client(url: str, timeout_s: float, max_connections: int) -> Any:
    """A ``RedisCluster`` for ``redis+cluster://[user:pw@]h1:p1,h2:p2[/0]``.

    Raises ``ValueError`` (a bad URL) at once; the client itself connects lazily.
    """
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry as AsyncRetry

    u = _multi_host_url(url, 6379, "cluster node")
    if u.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has database 0 only, got {u.path!r}")
    nodes = [ClusterNode(h, p, max_connections=max_connections) for h, p in u.hosts]
    return RedisCluster(
        startup_nodes=nodes,
        username=u.username,
        password=u.password,
        ssl=u.ssl,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=max_connections,
        # As for one server: one immediate retry, more would pass the timeout.
        retry=AsyncRetry(NoBackoff(), 1),
    )


def _sentinel_client(
    url: str, timeout_s: float, max_connections: int
) -> tuple[Any, list[Any]]:
    """The primary's client for ``redis+sentinel://[u:pw@]h1:p1,h2:p2/service[/db]``
    and the sentinel clients to close with it.

    Raises ``ValueError`` (a bad URL) at once; nothing connects before the first call.
    """
    from redis.asyncio.retry import Retry as AsyncRetry
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
        retry=AsyncRetry(NoBackoff(), 1),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return client, list(sentinel.sentinels)


class RedisDedup:
    """``DedupStore`` on Redis. ``url``: ``redis://[:password@]host:port/db[?prefix=…]``
    (``rediss://`` for TLS, ``unix:///path.sock`` for a socket), or
    ``redis+cluster://host:port[,host:port...][?prefix=…]`` for a Redis Cluster, or
    ``redis+sentinel://host:port[,host:port...]/service[/db][?prefix=…]`` for a
    primary managed by Redis Sentinel."""

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
        scheme = urlsplit(plain).scheme.lower()
        if scheme.endswith("+cluster"):
            self.client = _cluster_client(plain, timeout_s, max_connections)
            return
        if scheme.endswith("+sentinel"):
            self.client, self._also_close = _sentinel_client(
                plain, timeout_s, max_connections
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
            # more would only push the answer past the caller's timeout.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
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
        except TimeoutError as exc:
            raise DedupUnavailableError(
                f"redis dedup: no answer within {self.timeout_s} s"
            ) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise DedupUnavailableError(f"redis dedup: {exc}") from exc

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

    async def ping(self) -> None:
        await self._call(self.client.ping)

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
