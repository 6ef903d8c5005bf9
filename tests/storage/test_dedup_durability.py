"""A Redis that may forget what it acknowledged is refused (issue 11, "Redis that
forgets"): at start-up (``check_durability``), on every new connection and on
``ping``; ``?durability=none`` opts out loudly. Real redis-server processes only."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from flk_fast.errors import ConfigError, DedupUnavailableError, StorageError
from flk_fast.storage import open_dedup
from flk_fast.storage.dedup_redis import RedisNotDurableError
from tests.conftest import RedisSentinelGroup

from ._redis import (  # noqa: F401
    DURABLE,
    ThrowawayRedis,
    aof_back_on,
    throwaway_redis,
)

pytestmark = pytest.mark.services
Start = Callable[..., ThrowawayRedis]


async def _refused_everywhere(url: str, *needles: str) -> None:
    """check_durability -> ConfigError, calls -> RedisNotDurableError (a 503), each
    message containing every needle."""
    store = open_dedup(url, timeout_s=2.0)
    try:
        with pytest.raises(ConfigError) as start:
            await store.check_durability()
        assert not isinstance(start.value, StorageError)  # fatal at start, no retry
        for op in (store.ping, lambda: store.put_if_absent("k", b"v"), store.ping):
            with pytest.raises(RedisNotDurableError) as run:
                await op()
            assert isinstance(run.value, DedupUnavailableError)  # 503 + Retry-After
        for msg in (str(start.value), str(run.value)):
            for needle in needles:
                assert needle in msg, (needle, msg)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ("--appendonly", "no"),
            ["appendonly is 'no'", "CONFIG SET appendonly yes", "?durability=none"],
        ),
        (
            ("--appendonly", "yes", "--appendfsync", "no"),
            ["appendfsync is 'no'", "CONFIG SET appendfsync always"],
        ),
    ],
    ids=["appendonly-no", "appendfsync-no"],
)
async def test_a_server_that_may_forget_is_refused(
    throwaway_redis: Start, args: tuple[str, ...], needles: list[str]
) -> None:
    r = throwaway_redis(*args)
    await _refused_everywhere(r.url, f"127.0.0.1:{r.port}", *needles)
    assert r.cli("DBSIZE") == "0"  # nothing was written to it


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_appendonly_with_always_or_everysec_is_durable(
    throwaway_redis: Start, fsync: str
) -> None:
    r = throwaway_redis("--appendonly", "yes", "--appendfsync", fsync)
    store = open_dedup(r.url)
    try:
        await store.check_durability()
        await store.ping()
        assert await store.put_if_absent("k", b"v") == (b"v", True)
        assert store.durability_note == ""  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_durability_none_opts_out_loudly(
    throwaway_redis: Start, caplog: pytest.LogCaptureFixture
) -> None:
    r = throwaway_redis("--appendonly", "no")
    with caplog.at_level(logging.WARNING, logger="flk_fast.storage.redis"):
        store = open_dedup(f"{r.url}?durability=none&prefix=p:")
    try:
        warned = [m for m in caplog.records if m.levelno == logging.WARNING]
        assert len(warned) == 1 and "durability=none" in warned[0].getMessage()
        note = store.durability_note  # type: ignore[attr-defined]
        assert "durability=none" in note and "lose" in note
        await store.check_durability()
        await store.ping()
        assert await store.put_if_absent("k", b"v") == (b"v", True)
        assert r.cli("EXISTS", "p:{k}") == "1"  # prefix= still understood beside it
    finally:
        await store.close()


@pytest.mark.parametrize("value", ["", "off", "aof", "None"])
def test_durability_takes_only_none(value: str) -> None:
    with pytest.raises(ConfigError, match="the only value is 'none'"):
        open_dedup(f"redis://127.0.0.1:6379/0?durability={value}")


async def test_config_renamed_away_needs_the_opt_out(throwaway_redis: Start) -> None:
    r = throwaway_redis(*DURABLE, "--rename-command", "CONFIG", "")
    await _refused_everywhere(
        r.url, "CONFIG unavailable", "unknown command", "?durability=none"
    )
    store = open_dedup(f"{r.url}?durability=none")
    try:
        await store.check_durability()
        assert await store.put_if_absent("k", b"v") == (b"v", True)
    finally:
        await store.close()


async def test_config_denied_by_an_acl_needs_the_opt_out(
    throwaway_redis: Start,
) -> None:
    r = throwaway_redis(*DURABLE)
    r.cli("ACL", "SETUSER", "flk", "on", ">pw", "~*", "+@all", "-config")
    url = f"redis://flk:pw@127.0.0.1:{r.port}/0"
    await _refused_everywhere(url, "CONFIG unavailable", "NoPermissionError")


async def test_settings_changed_under_a_running_store_are_refused(
    throwaway_redis: Start,
) -> None:
    # Durable at start; then AOF is turned off. A reconnect (the server dropped our
    # connections) is checked before its first command, a live connection at the
    # next ping; once AOF is back on, the store serves again.
    r = throwaway_redis(*DURABLE)
    store = open_dedup(r.url)
    try:
        await store.check_durability()
        assert await store.put_if_absent("a", b"1") == (b"1", True)
        r.cli("CONFIG", "SET", "appendonly", "no")
        with pytest.raises(RedisNotDurableError, match="appendonly is 'no'"):
            await store.ping()  # same pooled connection, asked again
        r.cli("CLIENT", "KILL", "TYPE", "normal")  # every connection but the cli's
        with pytest.raises(RedisNotDurableError, match="appendonly is 'no'"):
            await store.put_if_absent("b", b"2")  # redis-py reconnects: checked
        assert r.cli("EXISTS", "flk:dedup:{b}") == "0"
        r.aof_back_on()
        assert await store.put_if_absent("b", b"2") == (b"2", True)
        await store.ping()
    finally:
        await store.close()


async def test_a_restarted_server_is_checked_again(throwaway_redis: Start) -> None:
    # The server comes back on the same address without AOF (a config file lost,
    # say): the store's dead pooled connection is replaced, and the new one refused.
    r = throwaway_redis(*DURABLE)
    store = open_dedup(r.url, timeout_s=1.0)
    try:
        assert await store.put_if_absent("a", b"1") == (b"1", True)
        r.stop()
        throwaway_redis("--appendonly", "no", port=r.port)
        with pytest.raises(RedisNotDurableError, match="appendonly is 'no'"):
            await store.put_if_absent("b", b"2")
    finally:
        await store.close()


async def test_every_primary_of_a_cluster_is_checked(redis_cluster_url: str) -> None:
    import redis

    nodes = redis_cluster_url.removeprefix("redis+cluster://").split(",")
    host, port = nodes[1].split(":")
    bad = redis.Redis(host=host, port=int(port))
    try:
        bad.config_set("appendonly", "no")
        store = open_dedup(redis_cluster_url)
        try:
            with pytest.raises(ConfigError, match=f"{nodes[1]} is not durable"):
                await store.check_durability()
            # A fresh store's connection to that node is checked as it opens: a
            # batch spread over every node fails (and is answered 503).
            with pytest.raises(RedisNotDurableError, match="appendonly is 'no'"):
                await store.put_many_if_absent([(f"k{i}", b"v") for i in range(64)])
        finally:
            await store.close()
    finally:
        aof_back_on(bad.execute_command)
        bad.close()
    store = open_dedup(redis_cluster_url)
    try:
        await store.check_durability()
    finally:
        await store.close()


async def test_the_sentinel_primary_is_checked(
    redis_sentinel: RedisSentinelGroup,
) -> None:
    group = redis_sentinel
    port = group.primary_port()
    assert port is not None
    group.ask(port, "config", "set", "appendonly", "no")
    try:
        await _refused_everywhere(group.url, f"127.0.0.1:{port}", "appendonly is 'no'")
    finally:
        import redis

        primary = redis.Redis(port=port)
        aof_back_on(primary.execute_command)
        primary.close()
    store = open_dedup(group.url)
    try:
        await store.check_durability()
    finally:
        await store.close()
