"""``flk agent`` signing with Ed25519, and with a tenant's key (multi-tenant server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flk_fast.cli import main

from .realserver import Server, metric


def _events(path: Path, n: int = 250) -> None:
    path.write_text(
        "".join(f"{i},0.{i % 97:02d},0.5,0.{i % 13:02d}\n" for i in range(n))
    )


def test_ed25519(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", str(tmp_path / "agent.key")]) == 0
    srv = Server(
        tmp_path,
        [
            "--sign-alg",
            "ed25519",
            "--ed25519-public-key-file",
            str(tmp_path / "agent.key.pub"),
        ],
    )
    srv.start()
    try:
        _events(tmp_path / "ev.csv")
        code = main(
            [
                "agent",
                "--endpoint",
                srv.url,
                "--in",
                str(tmp_path / "ev.csv"),
                "--shard-id",
                "s1",
                "--window",
                "100",
                "--data-dir",
                str(tmp_path / "a"),
                "--ed25519-key-file",
                str(tmp_path / "agent.key"),
                "--progress",
                "off",
                "--exit-when-drained",
            ]
        )
        assert code == 0, capsys.readouterr().err
        assert "sent=3 accepted=3" in capsys.readouterr().out
        assert metric(srv.url, "flk_signature_errors_total") == 0
    finally:
        srv.stop()


def test_tenant_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "acme.hmac").write_bytes(b"acme-secret")
    srv = Server(tmp_path, ["--tenants-dir", str(tenants)])
    srv.start()
    try:
        _events(tmp_path / "ev.csv")
        key = tmp_path / "acme.key"
        key.write_bytes(b"acme-secret")
        base = [
            "agent",
            "--endpoint",
            srv.url,
            "--in",
            str(tmp_path / "ev.csv"),
            "--shard-id",
            "s1",
            "--window",
            "100",
            "--hmac-key-file",
            str(key),
            "--progress",
            "off",
            "--exit-when-drained",
        ]
        # Without the tenant header the server has no key for us: 401, dead-lettered.
        assert main([*base, "--data-dir", str(tmp_path / "a1")]) == 1
        assert "dead_lettered=3" in capsys.readouterr().out
        assert (
            main([*base, "--data-dir", str(tmp_path / "a2"), "--tenant-id", "acme"])
            == 0
        )
        assert "sent=3 accepted=3" in capsys.readouterr().out
    finally:
        srv.stop()


def test_rate_limited_server_delays_but_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"testsecret")
    # A bucket of 3 requests: eight concurrent senders get 429 + Retry-After (1 s).
    srv = Server(
        tmp_path,
        ["--hmac-key-file", str(key), "--rate-limit", "20", "--rate-burst", "3"],
    )
    srv.start()
    try:
        _events(tmp_path / "ev.csv", 1200)
        code = main(
            [
                "agent",
                "--endpoint",
                srv.url,
                "--in",
                str(tmp_path / "ev.csv"),
                "--shard-id",
                "s1",
                "--window",
                "100",
                "--data-dir",
                str(tmp_path / "a"),
                "--hmac-key-file",
                str(key),
                "--progress",
                "off",
                "--exit-when-drained",
                "--concurrency",
                "8",
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert "sent=12 accepted=12" in out and "dead_lettered=0" in out
        assert metric(srv.url, "flk_rate_limited_total") > 0
    finally:
        srv.stop()
