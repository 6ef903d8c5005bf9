"""``flk outbox list/show`` and the ``flk dlq`` help texts, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flk_fast.agent.outbox import Outbox
from flk_fast.cli import main

from .pcsgen import make_body, make_pcs


def fill(data: Path, n: int, acked: int) -> list[int]:
    with Outbox(data) as ob:
        seqs = ob.wal.append_many([make_body(e) for e in range(1, n + 1)])
        ob.ack(seqs[:acked])
    return seqs


def test_list_shows_pending_and_the_last_acked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs = fill(tmp_path, 6, acked=4)
    assert main(["outbox", "list", "--data-dir", str(tmp_path), "--acked", "2",
                 "--json"]) == 0  # fmt: skip
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["seq"], d["state"], d["epoch"]) for d in docs] == [
        (seqs[2], "acked", 3), (seqs[3], "acked", 4),
        (seqs[4], "pending", 5), (seqs[5], "pending", 6),
    ]  # fmt: skip
    assert docs[0]["pcs_id"] == make_pcs(3).pcs_id
    assert docs[0]["appended_at"].endswith("Z")
    # Acked without a verdict (an older agent), and pending: none to show.
    assert [d["verdict"] for d in docs] == [None] * 4
    assert main(["outbox", "list", "--data-dir", str(tmp_path), "--acked", "1"]) == 0
    out, err = capsys.readouterr()
    assert [x.rsplit("\t", 1)[1] for x in out.splitlines()] == [
        "verdict=unknown", "verdict=-", "verdict=-",
    ]  # fmt: skip
    assert main(["outbox", "list", "--data-dir", str(tmp_path), "--acked", "0"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "2 pending, 0 acked shown" in err
    assert main(["outbox", "list", "--data-dir", str(tmp_path), "--acked", "-1"]) == 2


def test_show_prints_the_whole_pcs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs = fill(tmp_path, 2, acked=1)
    assert main(["outbox", "show", "--data-dir", str(tmp_path), str(seqs[1]),
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "pending" and doc["pcs"]["pcs_id"] == make_pcs(2).pcs_id
    assert doc["pcs"]["sig"] == make_pcs(2).sig
    assert main(["outbox", "show", "--data-dir", str(tmp_path), str(seqs[0])]) == 0
    out = capsys.readouterr().out
    assert "state: acked" in out and f'"pcs_id": "{make_pcs(1).pcs_id}"' in out
    assert main(["outbox", "show", "--data-dir", str(tmp_path), "999"]) == 2
    assert "no outbox record 999" in capsys.readouterr().err


def test_a_kept_verdict_that_is_not_an_object_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Outbox(tmp_path) as ob:
        seqs = ob.wal.append_many([make_body(e) for e in (1, 2, 3)])
        good = b'{"verdict": "accepted", "status": 200}'
        ob.ack_verdicts([(seqs[0], b"[1]"), (seqs[1], b"{not json"), (seqs[2], good)])
    assert main(["outbox", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["verdict"] for d in docs] == [
        None, None, {"verdict": "accepted", "status": 200}
    ]  # fmt: skip
    assert main(["outbox", "show", "--data-dir", str(tmp_path), str(seqs[1])]) == 0
    assert "verdict: unknown\n" in capsys.readouterr().out


def test_inspecting_a_mistyped_dir_creates_nothing(tmp_path: Path) -> None:
    assert main(["outbox", "list", "--data-dir", str(tmp_path / "nope")]) == 2
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("action", ["list", "retry", "drop"])
def test_dlq_help_has_a_description_and_examples(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dlq", action, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"flk dlq {action} --data-dir ./agent" in out.split("examples:")[1]
    assert len(out.split("options:")[0].splitlines()) > 4  # a description, wrapped
