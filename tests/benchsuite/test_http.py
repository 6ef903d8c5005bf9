"""The generator's HTTP pool against hostile or odd servers (raw asyncio servers on
127.0.0.1 in the test's own loop): garbage answers, ``Connection: close``, a server
that never answers, one that closes mid-request, and the pool's bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from flk_fast.benchsuite.http import HttpPool, RequestFailed
from flk_fast.errors import ConfigError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return True


async def _serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    connections: list[int] = []

    async def counted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(r, w)
        finally:
            w.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/pcs/submit", connections


async def test_keep_alive_reuses_one_connection():
    async def handler(r, w):
        while await _read_request(r):
            w.write(OK)

    server, url, conns = await _serve(handler)
    pool = HttpPool(url, connections=1, headers={"X-Tenant-Id": "t"})
    assert [await pool.post(b"{}") for _ in range(20)] == [200] * 20
    assert len(conns) == 1
    pool.close()
    server.close()


async def test_connection_close_opens_a_new_connection_each_time():
    async def handler(r, w):
        if await _read_request(r):
            w.write(
                b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )

    server, url, conns = await _serve(handler)
    pool = HttpPool(url, connections=2)
    assert [await pool.post(b"{}") for _ in range(5)] == [503] * 5
    assert len(conns) == 5
    pool.close()
    server.close()


async def test_a_garbage_answer_is_a_bad_response():
    async def handler(r, w):
        if await _read_request(r):
            w.write(b"SMTP ready\r\n\r\n")

    server, url, _ = await _serve(handler)
    pool = HttpPool(url, connections=1)
    with pytest.raises(RequestFailed) as exc:
        await pool.post(b"{}")
    assert exc.value.kind == "bad-response"
    pool.close()
    server.close()


async def test_a_server_that_closes_mid_request_is_a_connection_failure():
    async def handler(r, w):
        await r.readuntil(b"\r\n\r\n")  # then hang up without answering

    server, url, _ = await _serve(handler)
    pool = HttpPool(url, connections=1)
    with pytest.raises(RequestFailed) as exc:
        await pool.post(b"{}")
    assert exc.value.kind in ("connection-closed", "connection-lost")
    # The slot came back: the next request gets a fresh connection (and fails alike).
    with pytest.raises(RequestFailed):
        await pool.post(b"{}")
    pool.close()
    server.close()


async def test_a_timeout_frees_the_slot_for_the_requests_queued_behind():
    answered = asyncio.Event()

    async def handler(r, w):
        # The first connection never answers; later ones answer at once.
        if not answered.is_set():
            answered.set()
            await asyncio.sleep(30)
            return
        while await _read_request(r):
            w.write(OK)

    server, url, conns = await _serve(handler)
    pool = HttpPool(url, connections=1)
    stuck = asyncio.create_task(asyncio.wait_for(pool.post(b"{}"), 0.2))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(pool.post(b"{}")) for _ in range(3)]
    with pytest.raises(TimeoutError):
        await stuck
    assert await asyncio.gather(*queued) == [200, 200, 200]
    assert len(conns) == 2
    pool.close()
    server.close()


@pytest.mark.parametrize("url", ["ftp://x/", "not a url", "http:///nohost"])
def test_bad_urls_are_refused(url):
    with pytest.raises(ConfigError, match="http:// or https://|URL"):
        HttpPool(url, connections=1)


async def test_a_connection_the_server_closed_while_idle_is_replaced():
    async def handler(r, w):
        if await _read_request(r):  # one answer, then close (an idle timeout)
            w.write(OK)

    server, url, conns = await _serve(handler)
    pool = HttpPool(url, connections=1)
    assert await pool.post(b"{}") == 200
    await asyncio.sleep(0.1)  # the close arrives while the connection is idle
    assert await pool.post(b"{}") == 200
    assert len(conns) == 2
    pool.close()
    server.close()
