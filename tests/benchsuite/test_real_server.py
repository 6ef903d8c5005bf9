"""``flk bench load`` against the REAL ``flk serve`` (a subprocess): the signed bodies
are accepted, resends are dedup hits, the tenant header is sent, and HTTPS + mTLS
work as the agent's (same options, same refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flk_fast.cli import main
from tests.agent.test_tls import Pki
from tests.server.procs import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.needs_ext]  # bodies: agent kernels
KEY = b"testsecret"


def _load(tmp: Path, url: str, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    key = tmp / "bench.key"
    key.write_bytes(KEY)
    out = tmp / "out"
    code = main(
        ["bench", "load", url, "--rate", "100", "--duration", "1s", "--no-pictures"]
        + ["--hmac-key-file", str(key), "--out", str(out), "--max-lag", "500ms", *extra]
    )
    doc = json.loads((out / "report.json").read_text()) if code != 2 else {}
    return code, doc


def _metric(server: ServerProcess, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(server.url + "/metrics").read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.split(" ")[0].split("{")[0] in (name, name + "_total")
    )


def test_signed_bodies_are_accepted_and_resends_are_dedup_hits(tmp_path):
    server = ServerProcess(tmp_path, "srv")
    try:
        code, doc = _load(tmp_path, server.url, "--resend-ratio", "0.3")
        assert code == 0
        (r,) = doc["rates"]
        assert r["statuses"] == {"200": 100}, r
        assert r["escalation_ratio"] == 0.0
        # About 30 of 100 were resends: the server saw them as duplicates.
        assert 15 <= _metric(server, "flk_dedup_hits") <= 45
    finally:
        server.stop()


def test_a_wrong_key_is_reported_as_errors_and_misses_the_slo(tmp_path):
    server = ServerProcess(tmp_path, "srv", key=b"another-secret")
    try:
        code, doc = _load(tmp_path, server.url, "--max-error-ratio", "0.01")
        assert code == 1
        assert doc["rates"][0]["statuses"] == {"401": 100}
        assert doc["rates"][0]["error_ratio"] == 1.0
    finally:
        server.stop()


def test_https_with_mtls(tmp_path, capsys):
    pki = Pki(tmp_path / "pki")
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "acme.hmac").write_bytes(KEY)
    # The default tenant's key differs: only a request that names acme gets a 200.
    server = ServerProcess(
        tmp_path,
        "tls",
        "--tls-cert",
        str(pki.srv_crt),
        "--tls-key",
        str(pki.srv_key),
        "--tls-client-ca",
        str(pki.ca),
        "--tenants-dir",
        str(tenants),
        key=b"default-tenant-key",
    )
    url = f"https://127.0.0.1:{server.port}"
    try:
        code, doc = _load(
            tmp_path,
            url,
            "--tls-ca-file",
            str(pki.ca),
            "--tls-cert",
            str(pki.cli_crt),
            "--tls-key",
            str(pki.cli_key),
            "--tenant",
            "acme",
        )
        assert code == 0 and doc["rates"][0]["statuses"] == {"200": 100}
        # Without a client certificate the server refuses the handshake (under TLS 1.3
        # the client may learn it only at its first read): exit 2 either way.
        code, _ = _load(tmp_path, url, "--tls-ca-file", str(pki.ca))
        err = capsys.readouterr().err
        assert code == 2, err
        assert "cannot reach" in err or "no request got an HTTP answer" in err, err
        # A CA that did not sign the server's certificate: refused at connect.
        code, _ = _load(tmp_path, url, "--tls-ca-file", str(pki.other_ca))
        err = capsys.readouterr().err
        assert code == 2 and "(tls: " in err and "CERTIFICATE_VERIFY_FAILED" in err, err
        code, _ = _load(tmp_path, url, "--tls-cert", str(pki.cli_crt))
        assert code == 2
        assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    finally:
        server.stop()
