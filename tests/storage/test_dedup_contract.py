"""The DedupStore contract, run on every backend (lmdb, memory, redis, postgres)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from flk_fast.errors import ConfigError, DedupUnavailableError
from flk_fast.storage import DedupStore, open_dedup
from flk_fast.storage.base import DEFAULT_TTL_S
from tests.conftest import RedisSentinelGroup

# Values with every byte value, an empty-looking JSON and a large body: results must
# come back byte-identical (SPEC §7 step 4).
VALUES = [bytes(range(256)), b'{"accepted":true}', b"\x00", b"x" * 70_000]


async def test_store_satisfies_protocol(dedup_url: str) -> None:
    store = open_dedup(dedup_url)
    try:
        assert isinstance(store, DedupStore)
        await store.ping()
    finally:
        await store.close()


async def test_missing_key_is_none(dedup_url: str) -> None:
    store = open_dedup(dedup_url)
    try:
        assert await store.get("0" * 64) is None
        assert await store.get_many(["a", "b"]) == [None, None]
        assert await store.get_many([]) == []
    finally:
        await store.close()


async def test_first_write_wins_byte_identical(dedup_url: str) -> None:
    store = open_dedup(dedup_url)
    try:
        for i, value in enumerate(VALUES):
            key = f"{i:064x}"
            assert await store.put_if_absent(key, value) == (value, True)
            assert await store.put_if_absent(key, b"loser") == (value, False)
            assert await store.get(key) == value
            # str and bytes spellings name the same entry
            assert await store.get(key.encode()) == value
    finally:
        await store.close()


async def test_similar_keys_stay_distinct(dedup_url: str) -> None:
    # LMDB stores a lowercase-hex pcs_id as raw bytes: no spelling may collide.
    hexkey = "ab" * 32
    keys: list[str | bytes] = [
        hexkey,
        hexkey.upper(),
        bytes.fromhex(hexkey),
        b"\x00" + bytes.fromhex(hexkey),
        "ab" * 31 + "a",
    ]
    store = open_dedup(dedup_url)
    try:
        for i, k in enumerate(keys):
            assert await store.put_if_absent(k, b"%d" % i) == (b"%d" % i, True)
        assert await store.get_many(keys) == [b"%d" % i for i in range(len(keys))]
    finally:
        await store.close()


async def test_batches_keep_order_and_first_occurrence_wins(dedup_url: str) -> None:
    store = open_dedup(dedup_url)
    try:
        assert await store.put_if_absent("old", b"old-v") == (b"old-v", True)
        got = await store.put_many_if_absent(
            [("n1", b"a"), ("old", b"x"), ("n1", b"b"), ("n2", b"c")]
        )
        assert got == [(b"a", True), (b"old-v", False), (b"a", False), (b"c", True)]
        assert await store.get_many(["n2", "nope", "n1", "old"]) == [
            b"c",
            None,
            b"a",
            b"old-v",
        ]
        assert await store.put_many_if_absent([]) == []
    finally:
        await store.close()


async def test_expiry_hides_then_allows_a_new_winner(dedup_url: str) -> None:
    store = open_dedup(dedup_url)
    try:
        assert await store.put_if_absent("short", b"v1", ttl_s=0.5) == (b"v1", True)
        assert await store.put_if_absent("long", b"L", ttl_s=60) == (b"L", True)
        assert await store.get("short") == b"v1"
        # LMDB rounds expiry up to the next whole second (never early): wait past it.
        await asyncio.sleep(1.6)
        assert await store.get("short") is None
        assert await store.get_many(["short", "long"]) == [None, b"L"]
        assert await store.put_if_absent("short", b"v2", ttl_s=60) == (b"v2", True)
        assert await store.get("short") == b"v2"
    finally:
        await store.close()


async def test_bad_input_is_rejected(dedup_url: str) -> None:
    store = open_dedup(dedup_url)
    try:
        with pytest.raises(TypeError):
            await store.put_if_absent("k", "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await store.put_if_absent("k", b"v", ttl_s=0)
        with pytest.raises(ValueError):
            await store.get("")
        with pytest.raises(ValueError):
            await store.get("k" * 1000)
        assert await store.get("k") is None  # nothing half-written
    finally:
        await store.close()


async def test_default_ttl_is_14_days() -> None:
    assert DEFAULT_TTL_S == 14 * 86400


async def test_lmdb_is_durable_across_reopen(dedup_url_for: object) -> None:
    url = dedup_url_for("lmdb")  # type: ignore[operator]
    store = open_dedup(url)
    assert (await store.put_if_absent("k", b"v"))[1]
    await store.close()
    store = open_dedup(url)
    try:
        assert await store.put_if_absent("k", b"other") == (b"v", False)
    finally:
        await store.close()


async def test_lmdb_grows_its_map(tmp_path: object) -> None:
    from flk_fast.storage.aio import AsyncLmdbDedup
    from flk_fast.storage.dedup_lmdb import LmdbDedup

    store = AsyncLmdbDedup(LmdbDedup(f"{tmp_path}/d", map_size=1 << 16))
    try:
        big = b"y" * 10_000
        got = await asyncio.gather(
            *(store.put_if_absent(f"k{i}", big) for i in range(300))
        )
        assert all(inserted for _, inserted in got)
        assert await store.get("k299") == big
        await store.ping()
    finally:
        await store.close()


async def test_lmdb_group_commit_batches(tmp_path: object) -> None:
    from flk_fast.storage.aio import AsyncLmdbDedup
    from flk_fast.storage.dedup_lmdb import LmdbDedup

    store = AsyncLmdbDedup(LmdbDedup(f"{tmp_path}/d"))
    try:
        await asyncio.gather(*(store.put_if_absent(f"k{i}", b"v") for i in range(200)))
        assert store._gc.items == 200
        assert store._gc.batches < 200  # several puts shared one commit
    finally:
        await store.close()


async def test_lmdb_sweep_removes_expired(tmp_path: object) -> None:
    from flk_fast.storage.dedup_lmdb import LmdbDedup

    now = [1_000_000.0]
    store = LmdbDedup(f"{tmp_path}/d", clock=lambda: now[0])
    try:
        store.put_many_if_absent(
            [(f"k{i}", b"v", 10) for i in range(100)] + [("keep", b"v", 1000)]
        )
        now[0] += 11
        assert store.get("k1") is None
        assert store.sweep() == 100
        assert store.count() == 1
        assert store.get("keep") == b"v"
    finally:
        store.close()


async def test_memory_snapshot_round_trip(tmp_path: object) -> None:
    snap = f"{tmp_path}/snap.bin"
    store = open_dedup(f"memory://{snap}")
    await store.put_if_absent("a", b"\x00\x01")
    await store.put_if_absent("gone", b"x", ttl_s=0.01)
    await asyncio.sleep(0.05)
    await store.close()
    store = open_dedup(f"memory://?snapshot={snap}")
    try:
        assert await store.get("a") == b"\x00\x01"
        assert await store.get("gone") is None
    finally:
        await store.close()


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown scheme"):
        open_dedup("mongodb://x")
    with pytest.raises(ConfigError, match="needs a path"):
        open_dedup("lmdb://")


@pytest.mark.parametrize("backend", ["redis", "redis-cluster", "postgres"])
@pytest.mark.parametrize("failure", ["refused", "silent"])
async def test_down_backend_raises_within_timeout(
    backend: str, failure: str, closed_port: int, silent_server: int
) -> None:
    port = closed_port if failure == "refused" else silent_server
    url = {
        "redis": f"redis://127.0.0.1:{port}/0",
        "redis-cluster": f"redis+cluster://127.0.0.1:{port}",
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/test",
    }[backend]
    store = open_dedup(url, timeout_s=0.5)
    try:
        for op in (store.get("k"), store.put_if_absent("k", b"v"), store.ping()):
            t0 = time.monotonic()
            with pytest.raises(DedupUnavailableError):
                await op
            assert time.monotonic() - t0 < 1.5
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _lmdb_write_lock_held(path: str) -> AsyncIterator[None]:
    """Another process holds LMDB's write lock on ``path`` (hung mid-transaction)
    until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import lmdb, sys, time\n"
            "env = lmdb.open(sys.argv[1], max_dbs=2)\n"
            "txn = env.begin(write=True)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


async def test_lmdb_stuck_writer_raises_within_timeout(tmp_path: object) -> None:
    # Our put must give up with DedupUnavailableError in time, and complete once the
    # lock is free.
    path = f"{tmp_path}/d"
    store = open_dedup(f"lmdb://{path}", timeout_s=0.5)
    await store.put_if_absent("before", b"v")
    async with _lmdb_write_lock_held(path):
        t0 = time.monotonic()
        # One batch is stuck on the lock; the puts queued behind it fail with it,
        # within one timeout, instead of each waiting out its own.
        first = asyncio.ensure_future(store.put_if_absent("k", b"v"))
        await asyncio.sleep(0.05)
        queued = [store.put_if_absent(f"q{i}", b"v") for i in range(3)]
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        assert all(isinstance(r, DedupUnavailableError) for r in results), results
        assert "no answer within 0.5 s" in str(results[0])
        # < 2 timeouts: the queued puts were not sent on to wait out a second one
        assert time.monotonic() - t0 < 0.95
        assert await store.get("before") == b"v"  # reads are not blocked by the lock
    assert await store.put_if_absent("k2", b"v2") == (b"v2", True)
    await store.close()


async def test_lmdb_close_with_a_stuck_writer_returns(tmp_path: object) -> None:
    # Shutdown must not hang on a writer stuck behind another process's LMDB write
    # lock: close gives up after timeout_s, logs it, and leaves the env open (closing
    # it under a live transaction would be undefined behaviour).
    path = f"{tmp_path}/d"
    store = open_dedup(f"lmdb://{path}", timeout_s=0.5)
    await store.put_if_absent("before", b"v")
    async with _lmdb_write_lock_held(path):
        with pytest.raises(DedupUnavailableError):
            await store.put_if_absent("k", b"v")
        t0 = time.monotonic()
        await asyncio.wait_for(store.close(), 10)  # was: blocked until the lock freed
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(DedupUnavailableError):
            await store.put_if_absent("after", b"v")  # closed means closed


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:abc/0",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
        "postgresql://postgres@127.0.0.1:abc/test",
        "postgres://postgres@127.0.0.1:70000/test",
        "postgresql://postgres@h1:5432,h2:x/test",
    ],
)
def test_malformed_network_url_is_a_config_error_at_open(url: str) -> None:
    # documented: a bad URL is a ConfigError from open_dedup, not a ValueError (or a
    # 503-looking DedupUnavailableError) at the first call
    with pytest.raises(ConfigError, match="dedup URL"):
        open_dedup(url)


@pytest.mark.services
async def test_postgres_schema_name_keeps_its_case(
    postgres_dsn: str, unique_prefix: str
) -> None:
    import asyncpg

    schema = f"Prod_{unique_prefix}"  # unquoted, PostgreSQL would fold it to prod_…
    store = open_dedup(f"{postgres_dsn}?schema={schema}", timeout_s=10)
    try:
        assert await store.put_if_absent("k", b"v") == (b"v", True)
        assert await store.get("k") == b"v"
    finally:
        await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1"
            " AND tablename = 'flk_dedup'",
            schema,
        )
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    assert found == 1


async def test_redis_call_timing_out_in_the_queue_leaves_no_coroutine(
    closed_port: int,
) -> None:
    import gc
    import warnings

    from flk_fast.storage.dedup_redis import RedisDedup

    store = RedisDedup(f"redis://127.0.0.1:{closed_port}/0", timeout_s=0.05)
    for _ in range(32):  # every slot taken: callers time out while queued
        await store._slots.acquire()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in (
            lambda: store.get("k"),
            lambda: store.put_if_absent("k", b"v"),
            lambda: store.get_many(["a", "b"]),
            lambda: store.put_many_if_absent([("a", b"v")]),
            store.ping,
        ):
            with pytest.raises(DedupUnavailableError, match="no answer"):
                await call()
        gc.collect()
    assert [str(w.message) for w in caught] == []  # "coroutine … never awaited"
    await store.close()


async def test_postgres_timed_out_pool_creation_leaves_no_connection() -> None:
    # Suspected leak: create_pool cancelled by the call timeout. asyncpg (0.32)
    # terminates a pool's connections when its initialisation is cancelled; this
    # keeps it so: every connection the timed-out opens made is closed again.
    import socket
    import threading

    from flk_fast.storage.dedup_postgres import PostgresDedup

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    port = sock.getsockname()[1]
    store = PostgresDedup(f"postgresql://postgres@127.0.0.1:{port}/test", timeout_s=0.2)
    for _ in range(3):
        with pytest.raises(DedupUnavailableError):
            await store.get("k")
    await store.close()
    await asyncio.sleep(0.2)
    sock.close()
    assert len(accepted) == 3
    for conn in accepted:  # the client side hung up: reading reaches EOF
        conn.settimeout(2)
        while conn.recv(65536):
            pass
        conn.close()


@pytest.mark.services
async def test_redis_cluster_spreads_keys_over_its_nodes(
    redis_cluster_url: str, unique_prefix: str
) -> None:
    # The hash tag is the pcs_id: different ids land on different nodes, so the
    # cluster client (not a single-node client that happens to work) is in use.
    import redis

    store = open_dedup(f"{redis_cluster_url}?prefix={unique_prefix}:")
    try:
        keys = [f"{i:064x}" for i in range(60)]
        got = await store.put_many_if_absent([(k, b"v" + k.encode()) for k in keys])
        assert all(inserted for _, inserted in got)
        assert await store.get_many(keys) == [b"v" + k.encode() for k in keys]
    finally:
        await store.close()
    per_node = []
    for node in redis_cluster_url.removeprefix("redis+cluster://").split(","):
        host, port = node.split(":")
        client = redis.Redis(host=host, port=int(port))
        try:
            per_node.append(len(list(client.scan_iter(match=f"{unique_prefix}:*"))))
        finally:
            client.close()
    assert sum(per_node) == len(keys) and all(per_node), per_node


@pytest.mark.parametrize(
    "url,problem",
    [
        ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000?socket_timeout=1", "not supported"),
        ("redis+cluster://127.0.0.1:7000,:7001", "empty host"),
        ("redis+cluster://127.0.0.1:7000,h:abc", "bad port"),
        ("redis+sentinel://127.0.0.1:26379", "names the service"),
        ("redis+sentinel://127.0.0.1:26379/svc/0/extra", "names the service"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "must be a number"),
        ("redis+sentinel://127.0.0.1:26379/svc?db=1", "not supported"),
        ("redis+sentinel://127.0.0.1:26379,:1/svc", "empty host"),
    ],
)
def test_bad_redis_cluster_or_sentinel_url_is_a_config_error(
    url: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        open_dedup(url)


@pytest.mark.services
async def test_redis_sentinel_follows_a_failover(
    redis_sentinel: RedisSentinelGroup, unique_prefix: str
) -> None:
    # The store asks the sentinel for the primary: after a failover it writes to the
    # new primary, and what was stored before is still there (it was replicated).
    group = redis_sentinel
    store = open_dedup(f"{group.url}?prefix={unique_prefix}:")
    try:
        assert await store.put_if_absent("before", b"v1") == (b"v1", True)
        group.wait(group.replica_in_sync, "replica not in sync")
        old = group.primary_port()
        group.ask(group.sentinel, "sentinel", "failover", group.SERVICE)
        group.wait(lambda: group.primary_port() not in (None, old), "no failover")
        deadline = time.monotonic() + 20
        while True:  # the first calls may meet the old primary (now a replica)
            try:
                got = await store.put_if_absent("after", b"v2")
                break
            except DedupUnavailableError:
                assert time.monotonic() < deadline, "never reached the new primary"
                await asyncio.sleep(0.2)
        assert got == (b"v2", True)
        assert await store.put_if_absent("before", b"x") == (b"v1", False)
    finally:
        await store.close()
