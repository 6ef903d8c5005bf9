"""``flk agent``, ``flk outbox …`` and ``flk dlq …`` in-process, against the real
server.

Scenario: the server has a different key than the agent, so every PCS is refused with
401 and dead-lettered without retry; the operator fixes the server's key and requeues
the dead letters, which are then accepted.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from flk_fast.agent.outbox import Outbox
from flk_fast.cli import main

from .pcsgen import make_body
from .realserver import Server, metric


def make_input(path: Path, n: int) -> None:
    rnd = random.Random(4)
    lines = [
        f"{i},{rnd.random():.3f},{rnd.random():.3f},{rnd.random():.3f}"
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")


def agent_args(server: Server, src: Path, data: Path, key: Path) -> list[str]:
    return [
        "agent",
        "--endpoint",
        server.url,
        "--in",
        str(src),
        "--shard-id",
        "s1",
        "--window",
        "100",
        "--data-dir",
        str(data),
        "--hmac-key-file",
        str(key),
        "--summarizer",
        "tests.agent.plainsum:factory",
        "--progress",
        "off",
        "--exit-when-drained",
    ]


def test_401_dead_letters_then_dlq_retry(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "ev.csv"
    make_input(src, 300)
    agent_key = tmp_path / "agent.key"
    agent_key.write_bytes(b"a-different-secret")
    data = tmp_path / "agent"
    assert main(agent_args(server, src, data, agent_key)) == 1  # some dead-lettered
    out = capsys.readouterr().out
    assert "sent=3 accepted=0 escalated=0 dead_lettered=3" in out
    # 401 is final: one request per PCS, never retried.
    assert metric(server.url, "flk_signature_errors_total") == 3

    assert main(["dlq", "list", "--data-dir", str(data)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(
        "status=401" in x and "attempts=1" in x for x in lines
    )
    assert main(["dlq", "list", "--data-dir", str(data), "--json"]) == 0
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["epoch"] for d in docs] == [1, 2, 3]
    assert all(d["pcs"]["pcs_id"] == d["pcs_id"] for d in docs)

    assert main(["outbox", "status", "--data-dir", str(data), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["pending"], st["dead_letters"], st["epochs"]) == (0, 3, {"s1": 4})
    (ck,) = st["checkpoints"].values()
    assert (ck["events"], ck["windows"]) == (300, 3)

    # The operator gives the server the agent's key and requeues.
    server.stop()
    server.key.write_bytes(b"a-different-secret")
    server.log = open(server.data.parent / "server2.log", "ab")  # noqa: SIM115
    server.start()
    assert main(["dlq", "drop", "--data-dir", str(data), str(docs[2]["dlq_seq"])]) == 0
    assert (
        main(
            ["dlq", "retry", "--data-dir", str(data), "--all", "--endpoint", server.url]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "requeued 2 PCS" in out and "acknowledged 2" in out
    with Outbox(data) as ob:
        assert list(ob.pending()) == [] and ob.dead_letters() == []
        assert len(ob.dead_letters(include_dropped=True)) == 3
    assert (
        metric(server.url, "flk_accepted_total")
        + metric(server.url, "flk_escalated_total")
        == 2
    )
    assert (
        main(["outbox", "compact", "--data-dir", str(data), "--older-than", "0"]) == 0
    )
    assert (
        "removed 5 acknowledged outbox records and 3 dropped" in capsys.readouterr().out
    )


def test_outbox_replay(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "agent"
    with Outbox(data) as ob:
        ob.append([make_body(e) for e in (1, 2, 3)], shard_id="s1", next_epoch=4)
    assert (
        main(["outbox", "replay", "--data-dir", str(data), "--endpoint", server.url])
        == 0
    )
    assert "replayed 3: acknowledged 3" in capsys.readouterr().out
    with Outbox(data) as ob:
        assert list(ob.pending()) == []
    # With an agent holding the directory, replay refuses (exit 3).
    with Outbox(data, lock=True):
        assert (
            main(
                ["outbox", "replay", "--data-dir", str(data), "--endpoint", server.url]
            )
            == 3
        )
    assert "in use by another agent" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"k")
    src = tmp_path / "ev.csv"
    make_input(src, 10)

    def agent(*extra: str) -> int:
        return main(
            [
                "agent",
                "--shard-id",
                "s1",
                "--data-dir",
                str(tmp_path / "d"),
                "--summarizer",
                "tests.agent.plainsum:factory",
                *extra,
            ]
        )

    ok = ["--endpoint", "http://127.0.0.1:9", "--hmac-key-file", str(key)]
    assert agent(*ok, "--in", str(tmp_path / "missing.csv")) == 2
    assert "no such file" in capsys.readouterr().err
    assert (
        agent("--endpoint", "ftp://x", "--hmac-key-file", str(key), "--in", str(src))
        == 2
    )
    assert "must be an http:// or https:// URL" in capsys.readouterr().err
    assert (
        agent(
            "--endpoint",
            "http://h",
            "--hmac-key-file",
            str(tmp_path / "no"),
            "--in",
            str(src),
        )
        == 2
    )
    assert "HMAC key file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dlq", "retry"])
    with pytest.raises(SystemExit):
        agent(*ok, "--in", str(src), "--window", "0")
    assert main(["dlq", "drop", "--data-dir", str(tmp_path / "d")]) == 2
    assert "give SEQ numbers or --all" in capsys.readouterr().err
    assert main(["outbox", "status", "--data-dir", str(tmp_path / "nothing")]) == 2
    for cmd in (["dlq", "list"], ["dlq", "drop", "--all"], ["outbox", "compact"]):
        assert main([*cmd, "--data-dir", str(tmp_path / "nothing")]) == 2
        assert "no agent outbox there" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_outbox_replay_streams_and_writes_off_the_event_loop(
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Was: every pending record loaded at once, one coroutine each, and each ack
    # fsynced on the event loop's thread.
    import threading

    data = tmp_path / "agent"
    with Outbox(data) as ob:
        ob.append([make_body(e) for e in range(1, 601)], shard_id="s1", next_epoch=601)
    held: list[int] = []
    writers: set[str] = set()
    pending, ack = Outbox.pending, Outbox.ack_verdicts

    def spy_pending(self: Outbox, start: int = 0):  # type: ignore[no-untyped-def]
        n = 0
        for rec in pending(self, start):
            n += 1
            held.append(n)
            yield rec

    def spy_ack(self: Outbox, acks: list[tuple[int, bytes]]) -> None:
        writers.add(threading.current_thread().name)
        ack(self, acks)

    monkeypatch.setattr(Outbox, "pending", spy_pending)
    monkeypatch.setattr(Outbox, "ack_verdicts", spy_ack)
    argv = ["outbox", "replay", "--data-dir", str(data), "--endpoint", server.url]
    assert main(argv) == 0
    assert "replayed 600: acknowledged 600" in capsys.readouterr().out
    assert max(held) <= 256
    assert writers and all(n.startswith("flk-replay-io") for n in writers)
    monkeypatch.undo()
    with Outbox(data) as ob:
        assert list(ob.pending()) == []


def test_agent_kernel_threads_reach_the_summarizer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    import flk_fast.agent.summarize as pipeline
    from flk_fast.cli import agent as cli_agent

    seen: dict[str, object] = {}
    monkeypatch.setattr(pipeline, "make_summarizer", lambda **kw: seen.update(kw))
    monkeypatch.setattr(cli_agent, "_load_signer", lambda args: "signer")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_agent.register(sub)
    base = ["agent", "--endpoint", "http://x", "--in", "-", "--shard-id", "s"]
    base += ["--data-dir", "d", "--hmac-key-env", "K"]

    def parsed(argv: list[str]) -> argparse.Namespace:
        ns = parser.parse_args(argv)
        cli_agent._resolve(ns)  # env and TOML fill what the flags leave out
        return ns

    cli_agent._summarizer(parsed(base))
    assert seen.pop("n_threads") == 1  # the agent's default: one kernel thread
    cli_agent._summarizer(parsed([*base, "--kernel-threads", "0"]))
    assert seen.pop("n_threads") == 0


@pytest.mark.parametrize("version", [None, "0.1", "0.2"])
def test_agent_signs_the_requested_sig_version(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    # The built-in summarizer (not plainsum): --sig-version must reach it, the PCS in
    # the outbox carry it, and the server verifies each under that version.
    from flk_fast.protocol.codec import decode_pcs

    src = tmp_path / "ev.csv"
    make_input(src, 300)
    data = tmp_path / "agent"
    argv = agent_args(server, src, data, server.key)
    i = argv.index("--summarizer")
    del argv[i : i + 2]
    if version is not None:
        argv += ["--sig-version", version]
    assert main(argv) == 0
    assert "accepted=3" in capsys.readouterr().out
    with Outbox(data) as ob:
        got = [decode_pcs(r.data).version for r in ob.wal.replay(include_acked=True)]
    assert got == [version or "0.2"] * 3
    with pytest.raises(SystemExit):
        main([*argv, "--sig-version", "0.3"])


_ARENAS_PROBE = """
import ctypes, sys, threading
from flk_fast.cli.agent import cap_malloc_arenas
capped = cap_malloc_arenas() if sys.argv[1] == "cap" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
done = threading.Barrier(4)
def alloc():  # all four alive at once, so none can inherit an exited one's arena
    libc.malloc(1 << 12)
    done.wait()
threads = [threading.Thread(target=alloc) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(capped, flush=True)
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.parametrize(
    ("mode", "env", "capped", "arenas"),
    [
        ("cap", {}, "True", 1),  # flk agent: every thread on the main arena
        ("none", {}, "None", 5),  # glibc's default: one more per allocating thread
        ("cap", {"MALLOC_ARENA_MAX": "3"}, "False", 3),  # the operator's value wins
    ],
)
def test_the_agent_caps_malloc_arenas_unless_the_operator_set_them(
    mode: str, env: dict[str, str], capped: str, arenas: int
) -> None:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    res = subprocess.run(
        [sys.executable, "-c", _ARENAS_PROBE, mode],
        capture_output=True,
        text=True,
        env=base | env,
        check=True,
    )
    assert res.stdout.strip() == capped
    assert res.stderr.count("Arena ") == arenas, res.stderr
