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
