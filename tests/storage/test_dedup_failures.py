"""Every failure of a network store is a ``StorageError`` (the server answers it 503 +
Retry-After, never 500): issue 11, "PostgreSQL backend terminated -> 500".

Real failures where they can be provoked (``pg_terminate_backend`` from a second
connection, a lock that outlasts the timeout, a stopped or read-only redis-server);
the driver exceptions that cannot be provoked on demand are injected by
monkeypatching the driver call the store makes, one class at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
import redis.exceptions as rx
from asyncpg import exceptions as px

from flk_fast.errors import DedupUnavailableError, StorageError
from flk_fast.storage import open_dedup

from ._redis import DURABLE, ThrowawayRedis, throwaway_redis  # noqa: F401
from .conftest import drop_schema

pytestmark = pytest.mark.services
Start = Callable[..., ThrowawayRedis]


# --- PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def pg_app() -> str:
    """An application_name that marks this test's own backends, so that terminating
    them leaves the other users of the shared PostgreSQL alone."""
    return f"flk-t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pg_store(
    postgres_dsn: str, unique_prefix: str, pg_app: str
) -> AsyncIterator[Any]:
    store = open_dedup(
        f"{postgres_dsn}?schema={unique_prefix}&application_name={pg_app}",
        timeout_s=2.0,
    )
    assert await store.put_if_absent("warm", b"up") == (b"up", True)  # migrated
    yield store
    await store.close()
    await asyncio.to_thread(drop_schema, postgres_dsn, unique_prefix)


async def _terminate(admin: Any, app: str) -> int:
    """``pg_terminate_backend`` every backend named ``app``; how many."""
    n: int = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1 AND pid <> pg_backend_pid()",
        app,
    )
    return n


async def test_pg_backend_terminated_mid_statement(
    pg_store: Any, postgres_dsn: str, unique_prefix: str, pg_app: str
) -> None:
    # A second connection locks the table, so the store's put is inside PostgreSQL
    # when its backend is terminated (AdminShutdownError or a lost connection).
    admin = await asyncpg.connect(postgres_dsn)
    try:
        tx = admin.transaction()
        await tx.start()
        await admin.execute(
            f'LOCK TABLE "{unique_prefix}".flk_dedup IN ACCESS EXCLUSIVE MODE'
        )
        put = asyncio.ensure_future(pg_store.put_if_absent("k", b"v"))
        for _ in range(100):  # until the put waits on our lock
            waiting = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
                " AND wait_event_type = 'Lock'",
                pg_app,
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the put never reached the lock"
        assert await _terminate(admin, pg_app) >= 1
        with pytest.raises(StorageError) as caught:
            await put
        await tx.rollback()
    finally:
        await admin.close()
    assert isinstance(caught.value, DedupUnavailableError), caught.value
    assert isinstance(
        caught.value.__cause__,
        px.AdminShutdownError | px.ConnectionDoesNotExistError | OSError,
    ), repr(caught.value.__cause__)
    # ...and the pool recovers: the next call gets a new backend.
    assert await pg_store.put_if_absent("k", b"v2") == (b"v2", True)


async def test_pg_statement_outlasting_the_timeout(
    postgres_dsn: str, unique_prefix: str, pg_app: str
) -> None:
    store = open_dedup(
        f"{postgres_dsn}?schema={unique_prefix}&application_name={pg_app}",
        timeout_s=0.5,
    )
    admin = await asyncpg.connect(postgres_dsn)
    try:
        assert await store.put_if_absent("warm", b"up") == (b"up", True)
        async with admin.transaction():
            await admin.execute(
                f'LOCK TABLE "{unique_prefix}".flk_dedup IN ACCESS EXCLUSIVE MODE'
            )
            with pytest.raises(DedupUnavailableError, match="no answer within"):
                await store.put_if_absent("k", b"v")
    finally:
        await admin.close()
        await store.close()
        await asyncio.to_thread(drop_schema, postgres_dsn, unique_prefix)


async def test_pg_backends_terminated_under_load_only_storage_errors(
    pg_store: Any, postgres_dsn: str, pg_app: str
) -> None:
    # Concurrent puts and batches while every backend of the store is terminated
    # again and again: each call answers or raises a StorageError, nothing else
    # (the 500s of the issue were InternalClientError on pool release).
    admin = await asyncpg.connect(postgres_dsn)
    other: list[BaseException] = []
    storage = ok = 0
    stop = asyncio.Event()

    async def worker(w: int) -> None:
        nonlocal storage, ok
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 2:
                    await pg_store.put_if_absent(f"w{w}-{i}", b"v")
                else:
                    await pg_store.put_many_if_absent(
                        [(f"w{w}-{i}-{j}", b"v") for j in range(8)]
                    )
                ok += 1
            except StorageError:
                storage += 1
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                other.append(exc)

    try:
        tasks = [asyncio.ensure_future(worker(w)) for w in range(8)]
        terminated = 0
        for _ in range(15):
            await asyncio.sleep(0.1)
            terminated += await _terminate(admin, pg_app)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await admin.close()
    assert not other, [repr(e) for e in other[:5]]
    assert terminated >= 10 and storage >= 1 and ok >= 1, (terminated, storage, ok)


@pytest.mark.parametrize(
    "exc",
    [
        px.InternalClientError("cannot switch to state 15; previous state: 2"),
        px.ProtocolError("unexpected message"),
        px.InterfaceError("cannot perform operation: another operation in progress"),
        px.ConnectionDoesNotExistError("connection was closed in the middle"),
        px.AdminShutdownError("terminating connection due to administrator command"),
        px.CannotConnectNowError("the database system is starting up"),
        px.TooManyConnectionsError("sorry, too many clients already"),
        px.SerializationError("could not serialize access"),
        px.DeadlockDetectedError("deadlock detected"),
        px.QueryCanceledError("canceling statement due to statement timeout"),
        ConnectionResetError(104, "Connection reset by peer"),
        asyncio.IncompleteReadError(b"", 5),
        TimeoutError(),
        RuntimeError("anything else asyncpg lets escape"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("where", ["statement", "pool release"])
async def test_pg_driver_exception_is_a_storage_error(
    pg_store: Any, monkeypatch: pytest.MonkeyPatch, exc: BaseException, where: str
) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise exc

    if where == "statement":
        for name in ("fetchval", "fetch", "execute"):
            monkeypatch.setattr(asyncpg.connection.Connection, name, boom)
    else:  # the statements ran (and committed); giving the connection back fails
        monkeypatch.setattr(asyncpg.pool.PoolConnectionHolder, "release", boom)
    for call in (
        lambda: pg_store.get("k"),
        lambda: pg_store.put_if_absent("k", b"v"),
        lambda: pg_store.put_many_if_absent([("a", b"1"), ("b", b"2")]),
        lambda: pg_store.ping(),
    ):
        with pytest.raises(DedupUnavailableError) as caught:
            await call()
        assert caught.value.__cause__ is exc


async def test_pg_connection_refused_is_a_storage_error(closed_port: int) -> None:
    store = open_dedup(f"postgresql://postgres@127.0.0.1:{closed_port}/test")
    try:
        with pytest.raises(DedupUnavailableError, match="Connect"):
            await store.put_if_absent("k", b"v")
    finally:
        await store.close()


async def test_audit_shipping_maps_the_same_exceptions(
    postgres_dsn: str,
    unique_prefix: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flk_fast.storage import audit_postgres
    from flk_fast.storage.audit_postgres import AuditEntry, AuditLog

    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise px.InternalClientError("cannot switch to state 15")

    log = AuditLog(f"{postgres_dsn}?schema={unique_prefix}", tmp_path / "spool")
    try:
        await log.record(AuditEntry("p1", True, False, 1.0, "d"))
        monkeypatch.setattr(audit_postgres, "_insert_batch", boom)
        with pytest.raises(StorageError, match="InternalClientError"):
            await log.flush()
        assert await log.pending() == 1  # stays spooled for the next try
        monkeypatch.undo()
        assert await log.flush() == 1
    finally:
        await log.close()
        await asyncio.to_thread(drop_schema, postgres_dsn, unique_prefix)


# --- Redis -------------------------------------------------------------------------


async def test_redis_stopped_server_is_a_storage_error(throwaway_redis: Start) -> None:
    r = throwaway_redis(*DURABLE)
    store = open_dedup(r.url, timeout_s=1.0)
    try:
        assert await store.put_if_absent("k", b"v") == (b"v", True)
        r.stop()
        for call in (
            lambda: store.get("k"),
            lambda: store.put_if_absent("k", b"v"),
            lambda: store.put_many_if_absent([("a", b"1")]),
            lambda: store.ping(),
        ):
            with pytest.raises(DedupUnavailableError) as caught:
                await call()
            assert isinstance(caught.value.__cause__, rx.ConnectionError | OSError)
    finally:
        await store.close()


async def test_redis_read_only_replica_is_a_storage_error(
    throwaway_redis: Start,
) -> None:
    # What a store meets when it still talks to a primary demoted by a failover.
    primary = throwaway_redis(*DURABLE)
    replica = throwaway_redis(*DURABLE, "--replicaof", "127.0.0.1", str(primary.port))
    store = open_dedup(replica.url, timeout_s=1.0)
    try:
        with pytest.raises(DedupUnavailableError, match="read only replica") as caught:
            await store.put_if_absent("k", b"v")
        assert isinstance(caught.value.__cause__, rx.ReadOnlyError)
    finally:
        await store.close()


_REDIS_ERRORS = [
    rx.ConnectionError("Connection closed by server."),
    rx.TimeoutError("Timeout reading from socket"),
    rx.BusyLoadingError("Redis is loading the dataset in memory"),
    rx.ReadOnlyError("You can't write against a read only replica."),
    rx.ResponseError("MASTERDOWN Link with MASTER is down"),
    rx.ClusterDownError("The cluster is down"),
    rx.TryAgainError("Multiple keys request during rehashing of slot"),
    rx.MasterDownError("Link with MASTER is down and replica-serve-stale-data no"),
    rx.AuthenticationError("invalid username-password pair"),
    rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
    rx.MaxConnectionsError("Too many connections"),
    rx.RedisClusterException("Redis Cluster cannot be connected"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError(),
    KeyError("127.0.0.1:7000"),
    IndexError("list index out of range"),
]


@pytest.fixture
def redis_driver_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[BaseException], None]]:
    """``fail(exc)``: from now on every reply redis-py reads raises ``exc`` (commands,
    pipelines and the durability check alike, on any node)."""
    from redis.asyncio.connection import AbstractConnection

    def fail(exc: BaseException) -> None:
        async def boom(*args: Any, **kwargs: Any) -> Any:
            raise exc

        monkeypatch.setattr(AbstractConnection, "read_response", boom)

    yield fail


@pytest.mark.parametrize("exc", _REDIS_ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
async def test_redis_driver_exception_is_a_storage_error(
    dedup_url_for: Any,
    redis_driver_fails: Callable[[BaseException], None],
    backend: str,
    exc: BaseException,
) -> None:
    store = open_dedup(dedup_url_for(backend), timeout_s=1.0)
    try:
        assert await store.put_if_absent("warm", b"up") == (b"up", True)
        redis_driver_fails(exc)
        for call in (
            lambda: store.get("k"),
            lambda: store.get_many(["a", "b"]),
            lambda: store.put_if_absent("k", b"v"),
            lambda: store.put_many_if_absent([("a", b"1"), ("b", b"2")]),
            lambda: store.ping(),
        ):
            with pytest.raises(DedupUnavailableError) as caught:
                await call()
            cause = caught.value.__cause__
            # The cluster client wraps what a node raised in its own exceptions
            # (RedisClusterException "cannot be connected", ClusterError "TTL
            # exhausted") after trying the other nodes.
            assert cause is exc or (
                backend == "redis-cluster"
                and isinstance(cause, rx.RedisClusterException | rx.ClusterError)
            ), repr(cause)
    finally:
        await store.close()
