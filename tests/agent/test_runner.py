"""agent.runner against the fault-injecting server: windows → outbox → delivery."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flk_fast.agent.client import DeliveryClient
from flk_fast.agent.outbox import Outbox
from flk_fast.agent.retry import RetryPolicy
from flk_fast.agent.runner import Agent, AgentConfig
from flk_fast.agent.windows import Window
from flk_fast.errors import ConfigError, InputError
from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.pcs import PCS

from . import plainsum
from .faults import FakeSleep, FaultServer, ManualClock


def summarize(w: Window, *, shard_id: str, epoch: int) -> PCS:
    return plainsum.summarize(w.points, w.rows, shard_id=shard_id, epoch=epoch)


def write_csv(path: Path, n: int, *, start: int = 0, header: bool = True) -> bytes:
    rnd = random.Random(start)
    lines = ["timestamp,x,y,z"] if header else []
    for i in range(start, start + n):
        lines.append(
            f"{i * 0.01:.2f},{rnd.random():.4f},{rnd.random():.4f},{rnd.random():.4f}"
        )
    data = ("\n".join(lines) + "\n").encode()
    with open(path, "ab") as f:
        f.write(data)
    return data


@pytest.fixture
async def fault(aiohttp_server: Callable[..., Awaitable[Any]]) -> Any:
    fs = FaultServer()
    server = await aiohttp_server(fs.app())
    fs.url = str(server.make_url("/"))  # type: ignore[attr-defined]
    return fs


def cfg(fs: Any, tmp_path: Path, **kw: Any) -> AgentConfig:
    kw.setdefault("window", 50)
    kw.setdefault("progress", "off")
    return AgentConfig(endpoint=fs.url, shard_id="s1", data_dir=tmp_path / "data", **kw)


def client(fs: Any, sleep: FakeSleep | None = None) -> DeliveryClient:
    return DeliveryClient(
        fs.url, sleep=sleep or FakeSleep(), rng=random.Random(5), timeout_s=0.5
    )


def delivered(fs: Any) -> dict[int, dict[str, Any]]:
    """epoch -> last body the server answered 200/202 for."""
    out = {}
    for pcs_id, bodies in fs.bodies.items():
        if fs.outcomes(pcs_id)[-1] in ("200", "202", "slow"):
            doc = json.loads(bodies[-1])
            out[doc["epoch"]] = doc
    return out


async def test_file_delivered_once_per_window(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 230)
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
        s = a.summary
    assert (s.events, s.windows, s.sent, s.accepted, s.dead_lettered) == (
        230,
        5,
        5,
        5,
        0,
    )
    got = delivered(fault)
    assert sorted(got) == [1, 2, 3, 4, 5]
    # ft.outbox_seq names the outbox record; attempt and sent_at are stamped per send.
    assert sorted(d["ft"]["outbox_seq"] for d in got.values()) == [1, 2, 3, 4, 5]
    assert all(d["attempt"] == 1 for d in got.values())
    with Outbox(tmp_path / "data") as ob:
        assert list(ob.pending()) == []
        ck = ob.checkpoint(str(src.resolve()))
        assert ck is not None and (ck.offset, ck.events, ck.windows) == (
            src.stat().st_size,
            230,
            5,
        )
        assert ob.next_epoch("s1", 1) == 6


async def test_rerun_on_same_file_makes_no_new_pcs(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)
    for _ in range(2):
        async with Agent(
            cfg(fault, tmp_path), summarize=summarize, client=client(fault)
        ) as a:
            await a.run_file(src)
            await a.drain()
    assert a.summary.windows == 0 and len(fault.bodies) == 2
    # Appended events are summarised with the next epochs.
    write_csv(src, 120, start=100, header=False)
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert a.summary.windows == 3 and a.summary.events == 120
    assert sorted(delivered(fault)) == [1, 2, 3, 4, 5]


async def test_retries_and_dead_letters(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 200)
    # Precompute the ids: same summarizer, epochs 1..4.
    from flk_fast.agent.source import parse_csv_block
    from flk_fast.agent.windows import Windower

    b, _ = parse_csv_block(src.read_bytes())
    ws = Windower(50).push(b)
    ids = [summarize(w, shard_id="s1", epoch=e).pcs_id for e, w in enumerate(ws, 1)]
    fault.script[ids[0]] = ["500", "reset", "429:2"]
    fault.script[ids[1]] = ["401"]
    fault.script[ids[2]] = ["503"] * 6
    fault.script[ids[3]] = ["202"]
    sleep = FakeSleep()
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault, sleep)
    ) as a:
        await a.run_file(src)
        await a.drain()
        s = a.summary
    # Epoch 3 exhausted its retries on 503s (transient): the server answered the
    # probe at drain, so it went out again and was accepted (SPEC §7). The 401 stays.
    assert (s.sent, s.accepted, s.escalated, s.dead_lettered, s.redriven) == (
        5,
        2,
        1,
        2,
        1,
    )
    assert fault.outcomes(ids[2]) == ["503"] * 6 + ["200"]
    with Outbox(tmp_path / "data") as ob:
        assert list(ob.pending()) == []
        dl = {d.epoch: d for d in ob.dead_letters()}
    assert sorted(dl) == [2]
    assert (dl[2].status, dl[2].attempts, dl[2].pcs_id) == (401, 1, ids[1])
    assert not dl[2].transient
    assert decode_pcs(dl[2].body()).pcs_id == ids[1]
    # The retried record carried its attempt number.
    assert [json.loads(x)["attempt"] for x in fault.bodies[ids[0]]] == [1, 2, 3, 4]


async def test_pending_resent_on_start(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)
    # First run: nothing listens, and the backoff is long, so both PCS are appended
    # and left pending when the agent stops.
    dead = AgentConfig(
        endpoint="http://127.0.0.1:9",
        shard_id="s1",
        data_dir=tmp_path / "data",
        window=50,
        progress="off",
    )
    slow = DeliveryClient(
        "http://127.0.0.1:9", timeout_s=0.2, policy=RetryPolicy(base_s=100.0)
    )
    async with Agent(dead, summarize=summarize, client=slow) as a:
        await a.run_file(src)
    with Outbox(tmp_path / "data") as ob:
        assert [r.seq for r in ob.pending()] == [1, 2]
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
        assert (a.summary.windows, a.summary.resent, a.summary.accepted) == (0, 2, 2)
    assert sorted(delivered(fault)) == [1, 2]
    with Outbox(tmp_path / "data") as ob:
        assert list(ob.pending()) == []


async def test_malformed_skip_reports_positions(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(
        b"timestamp,x,y,z\n1,0.1,0.2,0.3\n2,0.2,oops,0.4\n3,0.3,0.4\n4,0.5,0.5,0.5\n"
    )
    async with Agent(
        cfg(fault, tmp_path, window=10), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert a.summary.malformed == 2 and a.summary.events == 2
    assert [(m.line, m.reason) for m in a.malformed] == [
        (3, "a cell is not a number"),
        (4, "expected 4 cells, got 3"),
    ]


async def test_malformed_stop(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 120)
    with open(src, "ab") as f:
        f.write(b"1.0,bad,2,3\n")
    write_csv(src, 10, start=500, header=False)
    c = cfg(fault, tmp_path, on_malformed="stop")
    async with Agent(c, summarize=summarize, client=client(fault)) as a:
        with pytest.raises(InputError, match=r"in\.csv:122: a cell is not a number"):
            await a.run_file(src)
        await a.drain()
    # The two complete windows before the bad line were summarised and delivered; the
    # partial window (events 101-120) was not, so fixing the file resumes at line 102.
    assert a.summary.windows == 2
    with Outbox(tmp_path / "data") as ob:
        ck = ob.checkpoint(str(src.resolve()))
    assert ck is not None and ck.line == 101 and ck.events == 100


async def test_replaced_input_is_refused(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
    src.unlink()
    write_csv(src, 100, start=7)
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        with pytest.raises(InputError, match="replaced or rewritten"):
            await a.run_file(src)
    async with Agent(
        cfg(fault, tmp_path, restart_input=True),
        summarize=summarize,
        client=client(fault),
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert a.summary.windows == 2 and sorted(delivered(fault)) == [1, 2, 3, 4]


async def test_feed_api_windows_and_checkpoint(fault: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    async with Agent(
        cfg(fault, tmp_path, window=40), summarize=summarize, client=client(fault)
    ) as a:
        assert await a.feed(rng.random((30, 3))) == 0
        assert await a.feed(rng.random((60, 3))) == 2
        assert await a.flush() == 1
        await a.drain()
        ck = a.checkpoint()
    assert ck is not None and ck.events == 90
    assert a.summary.windows == 3 and a.summary.accepted == 3
    with pytest.raises(InputError, match="not finite"):
        async with Agent(
            cfg(fault, tmp_path), summarize=summarize, client=client(fault)
        ) as a:
            await a.feed(np.array([[0.0, 1, 2, 3], [1.0, np.nan, 0, 0]]))


async def test_feed_stream_async_iterator(fault: Any, tmp_path: Path) -> None:
    async def gen():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield np.column_stack(
                [np.arange(i * 20, i * 20 + 20), np.full((20, 3), i / 10)]
            )

    async with Agent(
        cfg(fault, tmp_path, window=30), summarize=summarize, client=client(fault)
    ) as a:
        assert await a.feed_stream(gen()) == 4
        await a.drain()
    assert a.summary.events == 100 and a.summary.accepted == 4


async def test_backpressure_bounds_outstanding(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 500)
    async with Agent(
        cfg(fault, tmp_path, window=10, max_inflight=3, concurrency=2),
        summarize=summarize,
        client=client(fault),
    ) as a:
        seen = []
        orig = a._enqueue

        async def spy(seq: int, pcs: PCS) -> None:
            await orig(seq, pcs)
            seen.append(a._outstanding)

        a._enqueue = spy  # type: ignore[method-assign]
        await a.run_file(src)
        await a.drain()
    # One input step may append several windows at once; the bound holds per step.
    assert a.summary.windows == 50 and max(seen) <= 3


def test_config_validation(tmp_path: Path) -> None:
    for kw in (
        {"window": 0},
        {"on_malformed": "ignore"},
        {"shard_id": ""},
        {"window_seconds": -1.0},
        {"max_inflight": 0},
        {"progress": "x"},
    ):
        base = {"endpoint": "http://h", "shard_id": "s", "data_dir": tmp_path}
        with pytest.raises(ConfigError):
            AgentConfig(**{**base, **kw})  # type: ignore[arg-type]


async def test_follow_mode_reads_appended_lines(fault: Any, tmp_path: Path) -> None:
    # The agent's clock and sleep are a ManualClock: the pump's polls and the idle
    # flush happen when the test moves the clock, not after real seconds.
    src = tmp_path / "in.csv"
    write_csv(src, 60)
    poll, idle = 0.25, 1.0  # binary fractions: the sums below are exact
    c = cfg(
        fault,
        tmp_path,
        follow=True,
        exit_when_drained=False,
        poll_s=poll,
        idle_flush_s=idle,
    )
    clock = ManualClock()
    async with Agent(
        c, summarize=summarize, client=client(fault), clock=clock, sleep=clock.sleep
    ) as a:
        task = asyncio.create_task(a.run_file(src))
        await clock.sleeping()  # caught up with the file: the pump polls
        assert a.summary.windows == 1  # 60 events: one window of 50, 10 waiting
        with open(src, "ab") as f:
            f.write(b"100.0,0.5,0.5,0.5\n100.1,0.5,0.5")  # the writer is mid-line
        await clock.advance(poll)
        await clock.sleeping()
        assert (a.summary.windows, a.summary.events) == (1, 50)
        with open(src, "ab") as f:
            f.write(b",0.6\n")
        write_csv(
            src, 45, start=200, header=False
        )  # 10 + 2 + 45 = 57 → one more window
        await clock.advance(poll)
        await clock.sleeping()
        assert a.summary.windows == 2 and a.summary.events == 100
        # 7 events left; once --idle-flush seconds passed without data (not before)
        # they are summarised.
        for _ in range(3):
            await clock.advance(poll)
            await clock.sleeping()
        assert a.summary.windows == 2  # 0.75 s of the 1 s
        await clock.advance(poll)
        await clock.sleeping()
        assert a.summary.windows == 3 and a.summary.events == 107
        await clock.advance(poll)  # quiet, nothing pending: nothing more
        await clock.sleeping()
        assert a.summary.windows == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await a.drain()
    assert a.summary.malformed == 0 and sorted(delivered(fault)) == [1, 2, 3]
    assert set(clock.waits) == {poll}  # every wait was a poll


async def test_follow_exit_when_caught_up(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 120)
    with open(src, "ab") as f:
        f.write(b"5,0.1,0.2")  # unterminated: not an event yet in follow mode
    c = cfg(fault, tmp_path, follow=True, exit_when_drained=True, poll_s=0.02)
    async with Agent(c, summarize=summarize, client=client(fault)) as a:
        await a.run_file(src)
        await a.drain()
    assert a.summary.events == 120 and a.summary.windows == 3
    with Outbox(tmp_path / "data") as ob:
        ck = ob.checkpoint(str(src.resolve()))
    assert ck is not None and ck.offset == src.stat().st_size - len(b"5,0.1,0.2")


async def test_stdin_pipe(fault: Any, tmp_path: Path) -> None:
    import os
    import threading

    r, w = os.pipe()
    data = b"".join(b"%d,0.%d,0.5,0.25\n" % (i, i % 10) for i in range(130))

    def writer() -> None:
        for i in range(0, len(data), 700):
            os.write(w, data[i : i + 700])
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_stdin(fd=r)
        await a.drain()
    t.join()
    os.close(r)
    assert (a.summary.events, a.summary.windows, a.summary.accepted) == (130, 3, 3)


async def test_time_windows_from_file(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)  # t = 0.00 .. 0.99
    async with Agent(
        cfg(fault, tmp_path, window=1000, window_seconds=0.25),
        summarize=summarize,
        client=client(fault),
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert a.summary.windows == 4 and a.summary.events == 100


async def test_stdin_idle_flush(fault: Any, tmp_path: Path) -> None:
    import asyncio
    import os

    r, w = os.pipe()
    os.write(w, b"".join(b"%d,0.%d,0.5,0.25\n" % (i, i % 10) for i in range(70)))
    c = cfg(fault, tmp_path, idle_flush_s=0.2)
    async with Agent(c, summarize=summarize, client=client(fault)) as a:
        task = asyncio.create_task(a.run_stdin(fd=r))
        await asyncio.sleep(0.1)
        assert a.summary.windows == 1  # 50 of 70; 20 wait for more input
        await asyncio.sleep(0.4)
        assert a.summary.windows == 2 and a.summary.events == 70
        os.close(w)  # EOF ends the run
        await asyncio.wait_for(task, 5)
        await a.drain()
    os.close(r)
    assert a.summary.accepted == 2


@pytest.mark.parametrize("workers", [0, 2])
async def test_window_the_kernels_reject_stops_with_its_lines(
    fault: Any, tmp_path: Path, workers: int
) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 100)  # lines 2-101: two good windows
    with open(src, "ab") as f:
        f.write(b"9,1e300,0.5,0.5\n")  # finite, but voxel indices overflow int64
    write_csv(src, 60, start=300, header=False)
    from flk_fast.agent.summarize import make_summarizer
    from flk_fast.protocol.signing import HmacSigner

    real = make_summarizer(signer=HmacSigner(b"testsecret"))
    async with Agent(cfg(fault, tmp_path), summarize=real, client=client(fault)) as a:
        with pytest.raises(
            InputError, match=r"in\.csv:102: the window of lines 102-151"
        ):
            await a.run_file(src)
        await a.drain()
    assert a.summary.windows == 2 and a.summary.accepted == 2
    with Outbox(tmp_path / "data") as ob:
        ck = ob.checkpoint(str(src.resolve()))
    assert ck is not None and (ck.line, ck.events, ck.windows) == (101, 100, 2)


async def test_jsonl_file(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"t": i * 0.5, "x": i / 100, "y": 0.5, "z": 0.25}) for i in range(60)
    ]
    lines.insert(10, '{"t": 1, "x": "oops", "y": 0, "z": 0}')
    src.write_text("\n".join(lines) + "\n")
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert (a.summary.events, a.summary.windows, a.summary.malformed) == (60, 2, 1)
    assert a.malformed[0].line == 11


async def test_feed_per_shard_epochs(fault: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    async with Agent(
        cfg(fault, tmp_path, window=20), summarize=summarize, client=client(fault)
    ) as a:
        await a.feed(rng.random((40, 3)), shard_id="a", source_id="a")
        await a.feed(rng.random((20, 3)), shard_id="b", source_id="b")
        await a.drain()
    shards = sorted(
        (d["shard_id"], d["epoch"])
        for d in (json.loads(b[-1]) for b in fault.bodies.values())
    )
    assert shards == [("a", 1), ("a", 2), ("b", 1)]
    with Outbox(tmp_path / "data") as ob:
        assert ob.next_epoch("a", 1) == 3 and ob.next_epoch("b", 1) == 2


def test_progress_bar_on_a_terminal_and_log_lines_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import io
    import logging

    from flk_fast.agent.progress import Progress
    from flk_fast.agent.runner import AgentSummary

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = AgentSummary(events=5000, windows=5, accepted=4, elapsed_s=2.0)
    tty = Tty()
    bar = Progress("auto", 10.0, tty)
    bar.update(s, total_bytes=1000, done_bytes=500, force=True)
    bar.close()
    out = tty.getvalue()
    assert out.startswith("\r[##########          ]  50.0% 5,000 ev") and out.endswith(
        "\n"
    )
    assert "2,500 ev/s" in out
    plain = io.StringIO()
    with caplog.at_level(logging.INFO, logger="flk_fast.agent"):
        lg = Progress("auto", 10.0, plain)
        lg.update(s, 0, 0, force=True)
        lg.update(s, 0, 0)  # within 10 s of the last line: nothing
    assert plain.getvalue() == ""
    msgs = [r.getMessage() for r in caplog.records if r.name == "flk_fast.agent"]
    assert msgs == [
        "progress: events=5000 windows=5 acked=4 dead=0 pending=1 rate=2500/s"
    ]


async def test_large_backlog_is_resent_under_max_inflight(
    fault: Any, tmp_path: Path
) -> None:
    from .pcsgen import make_body

    with Outbox(tmp_path / "data") as ob:
        ob.append([make_body(e) for e in range(1, 601)], shard_id="s1", next_epoch=601)
    async with Agent(
        cfg(fault, tmp_path, max_inflight=8), summarize=summarize, client=client(fault)
    ) as a:
        seen = []
        orig = a._enqueue

        async def spy(seq: int, pcs: PCS) -> None:
            await orig(seq, pcs)
            seen.append(a._outstanding)

        a._enqueue = spy  # type: ignore[method-assign]
        await a.drain()
    assert a.summary.resent == 600 and a.summary.accepted == 600
    assert max(seen) <= 8
    assert len(fault.bodies) == 600


async def test_unexpected_sender_failure_surfaces_in_drain(tmp_path: Path) -> None:
    class Broken:
        counters = None

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def submit(self, body: Any) -> Any:
            raise KeyError("bug")

    c = AgentConfig(
        endpoint="http://127.0.0.1:9",
        shard_id="s1",
        data_dir=tmp_path / "data",
        window=10,
        progress="off",
    )
    async with Agent(c, summarize=summarize, client=Broken()) as a:
        await a.feed(np.random.default_rng(0).random((10, 3)))
        with pytest.raises(RuntimeError, match="the agent stopped: KeyError"):
            await asyncio.wait_for(a.drain(), 5)
    with Outbox(tmp_path / "data") as ob:  # the PCS is still pending for the next run
        assert [r.seq for r in ob.pending()] == [1]


@pytest.mark.parametrize("workers", [0, 1, 3])
async def test_summarising_threads_change_nothing_but_speed(
    fault: Any, tmp_path: Path, workers: int
) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 1017)
    from flk_fast.agent.source import parse_csv_block
    from flk_fast.agent.windows import Windower

    b, _ = parse_csv_block(src.read_bytes())
    w = Windower(50)
    ws = w.push(b)
    last = w.flush()
    assert last is not None
    ws.append(last)
    expected = {
        summarize(x, shard_id="s1", epoch=e).pcs_id for e, x in enumerate(ws, 1)
    }
    async with Agent(
        cfg(fault, tmp_path, workers=workers, max_inflight=5),
        summarize=summarize,
        client=client(fault),
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert a.summary.windows == 21 and set(fault.bodies) == expected
    with Outbox(tmp_path / "data") as ob:
        ck = ob.checkpoint(str(src.resolve()))
        assert ob.next_epoch("s1", 1) == 22
    assert ck is not None and (ck.events, ck.windows, ck.offset) == (
        1017,
        21,
        src.stat().st_size,
    )


class _HangClient:
    """Never answers: every PCS stays outstanding."""

    counters = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def submit(self, body: Any) -> Any:
        await asyncio.sleep(3600)


async def test_time_windows_respect_max_inflight(tmp_path: Path) -> None:
    # One input step used to cut up to --window time windows (one per event here):
    # 999 PCS outstanding with max_inflight 4.
    src = tmp_path / "in.csv"
    src.write_text(
        "timestamp,x,y,z\n"
        + "".join(f"{2 * i},0.{i % 10}1,0.2,0.3\n" for i in range(3000))
    )
    c = AgentConfig(
        endpoint="http://127.0.0.1:9",
        shard_id="s",
        data_dir=tmp_path / "data",
        window=1000,
        window_seconds=1.0,
        max_inflight=4,
        progress="off",
    )
    async with Agent(c, summarize=summarize, client=_HangClient()) as a:
        task = asyncio.create_task(a.run_file(src))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if a.summary.windows >= 4:
                break
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert a.summary.windows == 4 and a._outstanding == 4


async def test_outbox_compacted_while_running(fault: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, 200)
    c = cfg(fault, tmp_path, follow=True, compact_after_s=0.0, compact_every_s=0.05)
    async with Agent(c, summarize=summarize, client=client(fault)) as a:
        task = asyncio.create_task(a.run_file(src))
        assert a.outbox is not None
        for _ in range(200):
            await asyncio.sleep(0.02)
            st = a.outbox.wal.stats()
            if a.summary.accepted == 4 and st.count == 0:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Every acknowledged record was deleted although the agent never restarted.
        assert a.summary.accepted == 4 and a.outbox.wal.stats().count == 0


async def test_overlong_line_and_huge_coordinates_are_malformed_lines(
    fault: Any, tmp_path: Path
) -> None:
    from flk_fast.agent.summarize import make_summarizer
    from flk_fast.protocol.signing import HmacSigner

    src = tmp_path / "in.csv"
    write_csv(src, 100)
    with open(src, "ab") as f:
        f.write(b"9,1e300,0.5,0.5\n")  # finite, but its voxel overflows int64
        f.write(b"9," + b"1" * (2 << 20) + b",0.5,0.5\n")  # 2 MiB line
    write_csv(src, 60, start=300, header=False)
    real = make_summarizer(signer=HmacSigner(b"testsecret"))
    c = cfg(fault, tmp_path, max_abs_coordinate=2.0**62 / 16)
    async with Agent(c, summarize=real, client=client(fault)) as a:
        await a.run_file(src)
        await a.drain()
    # Before: the 1e300 window stopped the run (exit 2 on every restart, whatever
    # --on-malformed said), and the long line was held whole in memory.
    assert [(m.line, m.reason.split(" (")[0]) for m in a.malformed] == [
        (102, "a coordinate is beyond +-2.8823e+17"),
        (103, "line longer than 1048576 bytes"),
    ]
    assert a.summary.events == 160 and a.summary.accepted == 4


async def test_deeply_nested_jsonl_line_is_skipped(fault: Any, tmp_path: Path) -> None:
    # Was: RecursionError out of the parser, exit 4, and the same on every restart.
    src = tmp_path / "in.jsonl"
    good = [json.dumps({"t": i, "x": i / 100, "y": 0.5, "z": 0.25}) for i in range(60)]
    deep = '{"t": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + ', "y": 1, "z": 1}'
    src.write_text("\n".join([*good[:30], deep, *good[30:]]) + "\n")
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        await a.run_file(src)
        await a.drain()
    assert [(m.line, m.reason) for m in a.malformed] == [(31, "JSON nested too deeply")]
    assert a.summary.events == 60 and a.summary.accepted == 2


@pytest.mark.parametrize("header", ["x,y,z,timestamp", "timestamp,x,y,z,extra"])
async def test_csv_header_must_be_timestamp_x_y_z(
    fault: Any, tmp_path: Path, header: str
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(header + "\n" + "1,0.1,0.2,0.3,0.4\n" * 3)
    async with Agent(
        cfg(fault, tmp_path), summarize=summarize, client=client(fault)
    ) as a:
        with pytest.raises(InputError, match=r"in\.csv:1: the header must be exactly"):
            await a.run_file(src)
        await a.drain()
    assert a.summary.windows == 0 and a.summary.malformed == 0
