"""`flk verify` and `flk keygen` as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

VECTOR = Path(__file__).parent / "vectors" / "pcs_tiny_case_1.json"


def flk(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flk_fast", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_text("testsecret\n")  # trailing newline as `echo` writes it
    return path


def test_vector_verifies_exit_0(key_file: Path) -> None:
    out = flk("verify", str(VECTOR), "--hmac-key-file", str(key_file))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accepted"] is True


def test_escalated_exits_1(key_file: Path) -> None:
    doc = json.loads(VECTOR.read_bytes())
    doc["regime"] = "sticky"  # unsigned, so the signature still holds
    out = flk(
        "verify", "-", "--hmac-key-file", str(key_file), stdin=json.dumps(doc).encode()
    )
    assert out.returncode == 1
    assert json.loads(out.stdout)["reason"] == "regime: claimed sticky, expected mixed"


def test_bad_signature_exits_2(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("nope")
    out = flk("verify", str(VECTOR), "--hmac-key-file", str(wrong))
    assert out.returncode == 2
    assert json.loads(out.stdout) == {
        "error": "signature",
        "detail": "sig: does not match any key",
    }


def test_invalid_pcs_exits_2_naming_the_field(key_file: Path) -> None:
    doc = json.loads(VECTOR.read_bytes())
    doc["epoch"] = -3
    out = flk(
        "verify", "-", "--hmac-key-file", str(key_file), stdin=json.dumps(doc).encode()
    )
    assert out.returncode == 2
    assert json.loads(out.stdout)["detail"] == "epoch: must be an integer >= 0, got -3"


def test_missing_file_is_one_clear_line(key_file: Path) -> None:
    out = flk("verify", "/nonexistent.json", "--hmac-key-file", str(key_file))
    assert out.returncode == 2
    assert (
        out.stderr.strip() == "flk: error: /nonexistent.json: No such file or directory"
    )


def test_keygen_ed25519_round_trip(tmp_path: Path) -> None:
    key = tmp_path / "agent.key"
    assert flk("keygen", str(key)).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = flk("keygen", str(key))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    lone_pub = tmp_path / "b.key.pub"
    lone_pub.write_text("keep me")
    assert flk("keygen", str(tmp_path / "b.key")).returncode == 2
    assert lone_pub.read_text() == "keep me" and not (tmp_path / "b.key").exists()

    import msgspec

    from flk_fast.protocol import decode_pcs
    from flk_fast.protocol.codec import encode_pcs
    from flk_fast.protocol.signing import Ed25519Signer, load_ed25519_private

    pcs = decode_pcs(VECTOR.read_bytes())
    signed = msgspec.structs.replace(
        pcs, sig=Ed25519Signer(load_ed25519_private(key)).sign(pcs)
    )
    pcs_file = tmp_path / "pcs.json"
    pcs_file.write_bytes(encode_pcs(signed))
    ok = flk("verify", str(pcs_file), "--ed25519-public-key-file", str(key) + ".pub")
    assert ok.returncode == 0, ok.stdout
    other = tmp_path / "other.key"
    flk("keygen", str(other))
    bad = flk("verify", str(pcs_file), "--ed25519-public-key-file", str(other) + ".pub")
    assert bad.returncode == 2


def test_every_command_has_help_with_examples() -> None:
    from flk_fast.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no subcommands registered"
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        assert p.epilog and "examples:" in p.epilog, f"flk {name} --help lacks examples"


# --- full recomputation: flk verify PCS --data WINDOW, and recompute_pcs ----------

needs_ext = pytest.mark.needs_ext


def _write_events(path: Path, n: int, seed: int, fmt: str) -> None:
    """Events as an instrument might write them: mixed precision, some integers."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = ["timestamp,x,y,z"] if fmt == "csv" else []
    for i in range(n):
        x, y, z = (f"{v:.{rng.integers(1, 8)}f}" for v in rng.random(3))
        if i % 17 == 0:
            x = str(int(rng.integers(0, 2)))
        t = f"{1000 + i * 0.25:.3f}"
        if fmt == "csv":
            lines.append(f"{t},{x},{y},{z}")
        else:
            lines.append(f'{{"timestamp": {t}, "x": {x}, "y": {y}, "z": {z}}}')
    path.write_text("\n".join(lines) + "\n")


def _build(events: Path, out: Path, *extra: str) -> None:
    key = events.with_name("build.key")
    key.write_text("k")
    res = flk(
        "build-pcs", "--in", str(events), "--hmac-key-file", str(key),
        "--shard-id", "shard-7", "--epoch", "11", "--out", str(out), *extra,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def _verify_data(*args: str) -> tuple[int, str, str]:
    """``flk verify ... --data ...`` in-process (the tamper matrix runs it often)."""
    import contextlib
    import io

    from flk_fast.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", *args])
    return code, out.getvalue(), err.getvalue()


@needs_ext
@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("csv", ()),
        ("jsonl", ()),
        ("csv", ("--merkle-scheme", "blake3-rfc6962", "--chunk-size", "100")),
    ],
)
def test_agent_built_pcs_recomputes_exactly(tmp_path: Path, fmt: str, extra) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / f"window.{fmt}"
    _write_events(events, 700, seed=len(extra) + len(fmt), fmt=fmt)
    pcs = tmp_path / "pcs.json"
    _build(events, pcs, "--seed", "7", "--scales", "2,4,8,16,32", *extra)
    out = flk("verify", str(pcs), "--data", str(events), "--json", *extra)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["match"] is True and report["mismatches"] == []
    assert report["events"] == 700
    assert [f["field"] for f in report["fields"]] == [
        "N_j", "D_hat", "coh_star", "v_star", "r", "regime", "budget",
        "merkle_root", "pcs_id",
    ]  # fmt: skip
    claimed = json.loads(pcs.read_bytes())
    for f in report["fields"]:
        assert f["claimed"] == f["recomputed"] == claimed[f["field"]]
    # The signature is checked too when a key is given.
    ok = flk("verify", str(pcs), "--data", str(events), "--hmac-key-env", "K", *extra)
    assert ok.returncode == 2 and "K" in ok.stdout + ok.stderr  # K is unset
    text = flk("verify", str(pcs), "--data", str(events), *extra)
    assert text.returncode == 0
    assert text.stdout.strip().endswith("700 events; all fields match")


def _tamper(doc: dict, field: str) -> None:  # type: ignore[type-arg]
    if field == "N_j":
        doc["N_j"]["8"] += 1
    elif field == "v_star":
        doc["v_star"][1] = -doc["v_star"][1]
    elif field == "regime":
        doc["regime"] = "sticky" if doc["regime"] != "sticky" else "mixed"
    elif field in ("merkle_root", "pcs_id"):
        doc[field] = ("0" if doc[field][0] != "0" else "1") + doc[field][1:]
    else:  # D_hat, coh_star, r, budget: off by one in the last kept digit
        doc[field] = round(doc[field] + 1e-9, 9)


@needs_ext
@pytest.mark.parametrize(
    "field",
    ["N_j", "D_hat", "coh_star", "v_star", "r", "regime", "budget", "merkle_root",
     "pcs_id"],
)  # fmt: skip
def test_each_tampered_field_is_reported_as_that_field(
    tmp_path: Path, field: str
) -> None:
    events = tmp_path / "window.csv"
    _write_events(events, 300, seed=3, fmt="csv")
    pcs = tmp_path / "pcs.json"
    _build(events, pcs)
    doc = json.loads(pcs.read_bytes())
    _tamper(doc, field)
    pcs.write_text(json.dumps(doc))
    code, out, err = _verify_data(str(pcs), "--data", str(events), "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["match"] is False
    assert report["mismatches"] == [field]
    bad = next(f for f in report["fields"] if f["field"] == field)
    assert bad["claimed"] == doc[field] and bad["claimed"] != bad["recomputed"]
    code, text, _ = _verify_data(str(pcs), "--data", str(events))
    assert code == 1 and text.strip().endswith(f"MISMATCH: {field}")
    assert any(
        line.startswith(field) and line.endswith("NO") for line in text.splitlines()
    )


@needs_ext
def test_events_of_another_window_mismatch(tmp_path: Path) -> None:
    events = tmp_path / "window.csv"
    _write_events(events, 300, seed=4, fmt="csv")
    pcs = tmp_path / "pcs.json"
    _build(events, pcs)
    lines = events.read_text().splitlines()
    dropped = tmp_path / "short.csv"
    dropped.write_text("\n".join(lines[:-1]) + "\n")  # the last event is missing
    code, out, _ = _verify_data(str(pcs), "--data", str(dropped), "--json")
    assert code == 1
    assert {"r", "merkle_root", "pcs_id"} <= set(json.loads(out)["mismatches"])
    truncated = tmp_path / "cut.csv"
    truncated.write_bytes(events.read_bytes()[:-7])  # cut inside the last line
    code, out, err = _verify_data(str(pcs), "--data", str(truncated))
    assert code in (1, 2) and "all fields match" not in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no events"),
        (b"timestamp,x,y,z\n", "no events"),
        (b"timestamp,x,y,z\n1,0.1,0.2\n", ":2: "),
        (b"timestamp,x,y,z\n1,0.1,nan,0.3\n", ":2: "),
        (b"when,x,y,z\n1,0.1,0.2,0.3\n", "timestamp,x,y,z"),
    ],
)
def test_bad_window_is_exit_2_with_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    data = tmp_path / "w.csv"
    data.write_bytes(content)
    code, out, err = _verify_data(str(VECTOR), "--data", str(data))
    assert code == 2 and out == ""
    assert err.startswith("flk: error: ") and message in err and err.count("\n") == 1


def test_data_with_a_bad_pcs_or_missing_window_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"pcs_id": 3}')
    code, out, _ = _verify_data(str(bad), "--data", str(VECTOR))
    assert code == 2 and json.loads(out)["error"] == "invalid"
    code, _, err = _verify_data(str(VECTOR), "--data", str(tmp_path / "none.csv"))
    assert code == 2 and "none.csv: cannot read" in err
    code, _, err = _verify_data(str(VECTOR))
    assert code == 2 and "--data WINDOW" in err


@needs_ext
def test_vector_recomputes_from_its_csv() -> None:
    window = VECTOR.parent / "tiny_case_1.csv"
    code, out, _ = _verify_data(str(VECTOR), "--data", str(window), "--json")
    assert code == 0 and json.loads(out)["events"] == 15


@needs_ext
def test_recompute_pcs_from_python(tmp_path: Path) -> None:
    import doctest

    import numpy as np

    from flk_fast.agent import recompute
    from flk_fast.agent.source import read_batch
    from flk_fast.protocol.codec import decode_pcs

    result = doctest.testmod(recompute, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    events = tmp_path / "w.jsonl"
    _write_events(events, 200, seed=5, fmt="jsonl")
    pcs_file = tmp_path / "pcs.json"
    _build(events, pcs_file)
    pcs = decode_pcs(pcs_file.read_bytes())
    by_path = recompute.recompute_pcs(events, pcs)
    by_batch = recompute.recompute_pcs(read_batch(events), pcs)
    assert by_path.ok and by_batch.ok and by_path == by_batch
    assert isinstance(by_path["coh_star"], recompute.FieldCheck)
    # From an array: the point signals still match; the rows are repr text, which
    # differs from this file's text, so r / merkle_root / pcs_id say so.
    batch = read_batch(events)
    arr = np.column_stack([batch.t, batch.xyz])
    from_array = recompute.recompute_pcs(arr, pcs)
    assert {"N_j", "D_hat", "coh_star", "v_star"}.isdisjoint(from_array.mismatches)
    assert "merkle_root" in from_array.mismatches
    with pytest.raises(ValueError, match=r"\(n, 4\) array"):
        recompute.recompute_pcs(np.zeros((3, 3)), pcs)
    with pytest.raises(ValueError, match="no events"):
        recompute.recompute_pcs(np.zeros((0, 4)), pcs)
