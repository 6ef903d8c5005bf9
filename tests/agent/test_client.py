"""agent.client against a fault-injecting aiohttp server, with an injected sleep.

Real sockets, fake time: every wait the client asks for is recorded by FakeSleep and
checked against the SPEC §7 jitter bounds instead of being slept.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flk_fast.agent.client import DeliveryClient, submit_url
from flk_fast.agent.retry import RetryPolicy, delay_bounds
from flk_fast.errors import ConfigError

from .faults import FakeSleep, FaultServer

TIMEOUT_S = 0.2  # the "slow" action answers after 1 s, well beyond it


def body(pcs_id: str) -> bytes:
    return json.dumps({"pcs_id": pcs_id}).encode()


@pytest.fixture
async def fault(aiohttp_server: Callable[..., Awaitable[Any]]) -> Any:
    fs = FaultServer()
    server = await aiohttp_server(fs.app())
    fs.url = str(server.make_url("/"))  # type: ignore[attr-defined]
    return fs


def make_client(fs: Any, sleep: FakeSleep, **kw: Any) -> DeliveryClient:
    kw.setdefault("timeout_s", TIMEOUT_S)
    return DeliveryClient(
        fs.url, sleep=sleep, rng=random.Random(1234), now=lambda: fs.now, **kw
    )


def assert_backoff_waits(waits: list[float], policy: RetryPolicy) -> None:
    for attempt, w in enumerate(waits):
        lo, hi = delay_bounds(policy, attempt)
        assert lo <= w <= hi, (attempt, w, lo, hi)


async def test_200_acks_first_time(fault: Any) -> None:
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    assert (r.outcome, r.status, r.attempts, r.waits) == ("acked", 200, 1, ())
    assert (r.accepted, r.escalated) == (True, False)
    assert json.loads(r.body)["pcs_id"] == "a"
    assert sleep.waits == []


async def test_202_is_an_ack_with_escalation(fault: Any) -> None:
    fault.script["a"] = ["202"]
    async with make_client(fault, FakeSleep()) as c:
        r = await c.submit(body("a"))
    assert (r.outcome, r.status, r.accepted, r.escalated) == ("acked", 202, True, True)


@pytest.mark.parametrize("failures", [1, 3, 5])
async def test_5xx_retried_then_acked(fault: Any, failures: int) -> None:
    fault.script["a"] = ["500", "502", "503", "504", "500"][:failures]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    assert r.outcome == "acked" and r.attempts == failures + 1
    assert list(r.waits) == sleep.waits and len(sleep.waits) == failures
    assert_backoff_waits(sleep.waits, c.policy)
    assert fault.outcomes("a")[-1] == "200"


async def test_5xx_exhausts_budget_then_dead(fault: Any) -> None:
    fault.script["a"] = ["500"] * 10
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    # SPEC §7: 5 retries → 6 sends, 5 waits with nominal 1, 2, 4, 8, 16 s ± 50 %.
    assert (r.outcome, r.status, r.attempts) == ("dead", 500, 6)
    assert len(sleep.waits) == 5
    assert_backoff_waits(sleep.waits, c.policy)
    assert "retries exhausted after 6 attempts" in r.reason and "HTTP 500" in r.reason
    assert fault.outcomes("a") == ["500"] * 6


async def test_custom_budget_respected(fault: Any) -> None:
    fault.script["a"] = ["503"] * 10
    sleep = FakeSleep()
    policy = RetryPolicy(base_s=0.5, max_retries=2)
    async with make_client(fault, sleep, policy=policy) as c:
        r = await c.submit(body("a"))
    assert (r.outcome, r.attempts, len(sleep.waits)) == ("dead", 3, 2)
    assert_backoff_waits(sleep.waits, policy)


@pytest.mark.parametrize(
    "status", ["401", "400", "403", "404", "409", "413", "415", "422"]
)
async def test_4xx_is_dead_without_retry(fault: Any, status: str) -> None:
    fault.script["a"] = [status]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    assert (r.outcome, r.status, r.attempts, r.waits) == ("dead", int(status), 1, ())
    assert r.reason.startswith(f"HTTP {status}") and "scripted" in r.reason
    assert json.loads(r.body) == {"error": f"scripted {status}"}
    assert fault.outcomes("a") == [status]


async def test_429_honours_retry_after_seconds(fault: Any) -> None:
    fault.script["a"] = ["429:3", "429:0", "429:120", "429:99999"]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    # SPEC §7: wait what the server asks, beyond the 60 s backoff cap (was cut to
    # 60 s, which only earned another 429); an absurd value is cut to an hour.
    assert r.outcome == "acked" and sleep.waits == [3.0, 0.0, 120.0, 3600.0]
    assert r.attempts == 5
    fault.script["b"] = ["429:120", "503:120"]
    policy = RetryPolicy(retry_after_cap_s=10.0)
    async with make_client(fault, sleep, policy=policy) as c:
        r = await c.submit(body("b"))
    assert r.outcome == "acked" and sleep.waits[-2:] == [10.0, 10.0]


async def test_429_honours_retry_after_http_date(fault: Any) -> None:
    fault.script["a"] = ["429:date"]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    assert r.outcome == "acked" and sleep.waits == [7.0]


async def test_429_without_header_uses_backoff(fault: Any) -> None:
    fault.script["a"] = ["429", "429"]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    assert r.outcome == "acked"
    assert_backoff_waits(sleep.waits, c.policy)


async def test_429_has_its_own_budget(fault: Any) -> None:
    # Seven 429s exceed the 5-retry budget for failures but not the rate-limit one.
    fault.script["a"] = ["429:1"] * 7
    async with make_client(fault, FakeSleep()) as c:
        r = await c.submit(body("a"))
    assert r.outcome == "acked" and r.attempts == 8
    fault.script["b"] = ["429:1"] * 10
    policy = RetryPolicy(max_rate_limited=3)
    async with make_client(fault, FakeSleep(), policy=policy) as c:
        r = await c.submit(body("b"))
    assert (r.outcome, r.status, r.attempts) == ("dead", 429, 4)
    assert "rate limited 4 times" in r.reason


async def test_503_retry_after_lengthens_the_wait(fault: Any) -> None:
    fault.script["a"] = ["503:30"]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
    assert r.outcome == "acked" and sleep.waits == [30.0]


async def test_connection_reset_retried(fault: Any) -> None:
    fault.script["a"] = ["reset", "reset"]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
        assert c.counters.connection_errors == 2
    assert r.outcome == "acked" and r.attempts == 3
    assert_backoff_waits(sleep.waits, c.policy)


async def test_resets_exhaust_to_dead_with_no_status(fault: Any) -> None:
    fault.script["a"] = ["reset"] * 6
    async with make_client(fault, FakeSleep()) as c:
        r = await c.submit(body("a"))
    assert (r.outcome, r.status, r.attempts) == ("dead", None, 6)
    assert "ServerDisconnectedError" in r.reason


async def test_slow_response_times_out_and_is_retried(fault: Any) -> None:
    fault.script["a"] = ["slow"]
    sleep = FakeSleep()
    async with make_client(fault, sleep) as c:
        r = await c.submit(body("a"))
        assert c.counters.timeouts == 1
    assert r.outcome == "acked" and r.attempts == 2 and len(sleep.waits) == 1
    # The server saw both sends: the first one may well have been judged, which is
    # why the server's dedup (not the client) guarantees one outcome per pcs_id.
    assert fault.outcomes("a") == ["slow", "200"]


async def test_connection_refused_is_retried_then_dead() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleep = FakeSleep()
    async with DeliveryClient(
        f"http://127.0.0.1:{port}", sleep=sleep, rng=random.Random(0), timeout_s=1
    ) as c:
        r = await c.submit(body("a"))
    assert (r.outcome, r.status, r.attempts, len(sleep.waits)) == ("dead", None, 6, 5)
    assert "connection error" in r.reason


async def test_body_factory_sees_attempt_numbers(fault: Any) -> None:
    fault.script["a"] = ["500", "reset", "429:1"]
    seen: list[int] = []

    def make(attempt: int) -> bytes:
        seen.append(attempt)
        return json.dumps({"pcs_id": "a", "attempt": attempt}).encode()

    async with make_client(fault, FakeSleep()) as c:
        r = await c.submit(make)
    assert r.acked and seen == [1, 2, 3, 4]
    assert [json.loads(b)["attempt"] for b in fault.bodies["a"]] == [1, 2, 3, 4]


async def test_bounded_concurrency_and_keep_alive(fault: Any) -> None:
    import asyncio

    async with make_client(fault, FakeSleep(), concurrency=3) as c:
        results = await asyncio.gather(*(c.submit(body(f"r{i}")) for i in range(40)))
    assert all(r.acked for r in results)
    assert 1 <= fault.max_inflight <= 3
    # Keep-alive: 40 requests reuse at most 3 pooled connections.
    assert len(fault.peers) <= 3


async def test_mixed_faults_nothing_lost(fault: Any) -> None:
    """Random scripts: every record's outcome is exactly predictable from its script."""
    import asyncio

    rnd = random.Random(99)
    menu = ["500", "503", "reset", "429:1", "401", "400", "202", "200"]
    expected: dict[str, tuple[str, int | None]] = {}
    for i in range(60):
        script = [rnd.choice(menu) for _ in range(rnd.randint(0, 7))]
        pid = f"m{i}"
        fault.script[pid] = list(script)
        retries = 0
        outcome: tuple[str, int | None] = ("acked", 200)
        for step in script + ["200"]:
            if step in ("200", "202"):
                outcome = ("acked", int(step))
                break
            if step in ("401", "400"):
                outcome = ("dead", int(step))
                break
            if step.startswith("429"):
                continue
            if retries == 5:
                outcome = ("dead", None if step == "reset" else int(step.split(":")[0]))
                break
            retries += 1
        expected[pid] = outcome
    async with make_client(fault, FakeSleep(), concurrency=4) as c:
        results = await asyncio.gather(*(c.submit(body(p)) for p in expected))
    got = {p: (r.outcome, r.status) for p, r in zip(expected, results, strict=True)}
    assert got == expected
    for p, r in zip(expected, results, strict=True):
        assert r.attempts == len(fault.outcomes(p))


def test_submit_url() -> None:
    assert submit_url("http://h:1") == "http://h:1/v1/pcs/submit"
    assert submit_url("http://h:1/") == "http://h:1/v1/pcs/submit"
    assert submit_url("https://h/custom/submit") == "https://h/custom/submit"
    for bad in ("ftp://h/", "h:1", "", "http://"):
        with pytest.raises(ConfigError):
            submit_url(bad)


def test_bad_client_config() -> None:
    with pytest.raises(ConfigError):
        DeliveryClient("http://h", concurrency=0)
    with pytest.raises(ConfigError):
        DeliveryClient("http://h", timeout_s=0)


async def test_response_body_read_is_bounded() -> None:
    # A 200 whose body is announced as 100 MB and never finishes: the client used to
    # read it whole (memory) and here waited for the timeout, retried, dead-lettered.
    import asyncio

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
            + b'{"accepted": true}'
            + b" " * 200_000
        )
        await writer.drain()
        await asyncio.sleep(30)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        async with DeliveryClient(
            f"http://127.0.0.1:{port}",
            policy=RetryPolicy(max_retries=0),
            timeout_s=2.0,
            sleep=FakeSleep(),
        ) as c:
            r = await asyncio.wait_for(c.submit(b"{}"), 5)
    finally:
        srv.close()
    assert (r.outcome, r.status, r.attempts) == ("acked", 200, 1)
    assert len(r.body) <= 4096
