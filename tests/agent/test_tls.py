"""The agent over HTTPS + mTLS against the REAL ``flk serve`` (a subprocess).

One server (``--tls-cert/--tls-key --tls-client-ca``, certificates from a throwaway CA
made here, as tests/server/test_tls.py does) and the real ``flk agent`` CLI:

* the right CA and a client certificate: every window is delivered;
* no client certificate, a CA that did not sign the server, or no CA file (the system
  store): every send fails at the TLS layer, which the existing policy treats as a
  connection error (retried, then dead-lettered), so the run exits 1 with
  ``dead_lettered=N``;
* ``flk dlq retry --endpoint`` with the right options then delivers those letters.

Retries are made short (``--retry-base 0.01 --max-retries 1``) to keep the file fast.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from flk_fast.agent.client import DeliveryClient, tls_context
from flk_fast.errors import ConfigError
from tests.pki import issue_cert

from .realserver import Server, env

WINDOW = 10
N_WINDOWS = 3


class Pki:
    def __init__(self, tmp: Path) -> None:
        tmp.mkdir()
        self.ca, _, ca = issue_cert(tmp, "ca", None, ca=True)
        self.srv_crt, self.srv_key, _ = issue_cert(tmp, "server", ca, san="127.0.0.1")
        self.cli_crt, self.cli_key, _ = issue_cert(tmp, "client", ca)
        # A CA that signed nothing the server presents.
        self.other_ca, _, _ = issue_cert(tmp, "other-ca", None, ca=True)


class TlsServer(Server):
    """realserver.Server with HTTPS + mTLS; readiness is polled over mTLS too."""

    def __init__(self, tmp: Path, pki: Pki) -> None:
        super().__init__(tmp)
        self.key_args = [
            "--hmac-key-file", str(self.key),
            "--tls-cert", str(pki.srv_crt),
            "--tls-key", str(pki.srv_key),
            "--tls-client-ca", str(pki.ca),
        ]  # fmt: skip
        self.url = f"https://127.0.0.1:{self.port}"
        self._ctx = ssl.create_default_context(cafile=str(pki.ca))
        self._ctx.load_cert_chain(str(pki.cli_crt), str(pki.cli_key))

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "flk_fast", "serve",
                "--port", str(self.port), "--data-dir", str(self.data),
                *(self.key_args or []),
            ],
            stdout=self.log,
            stderr=self.log,
            env=env(),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._ready():
            assert self.proc.poll() is None, "server died at start-up"
            assert time.monotonic() < deadline, "server not ready in 30 s"
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                self.url + "/ready", timeout=2, context=self._ctx
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("tls")
    pki = Pki(tmp / "pki")
    srv = TlsServer(tmp, pki)
    srv.start()
    yield srv, pki
    srv.stop()


def _events(path: Path) -> Path:
    with open(path, "w") as f:
        f.write("timestamp,x,y,z\n")
        for i in range(WINDOW * N_WINDOWS):
            f.write(f"{i * 0.01:.2f},{i % 7 / 7:.4f},{i % 5 / 5:.4f},{i % 3 / 3:.4f}\n")
    return path


_FAST_RETRY = ["--retry-base", "0.01", "--retry-cap", "0.05", "--max-retries", "1"]
_FAST_RETRY += ["--timeout", "5"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flk_fast", *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _agent(srv: TlsServer, tmp: Path, shard: str, *tls_args: str) -> Any:
    data = tmp / f"agent-{shard}"
    out = _run(
        "agent", "--endpoint", srv.url, "--in", str(_events(tmp / f"{shard}.csv")),
        "--shard-id", shard, "--window", str(WINDOW), "--data-dir", str(data),
        "--hmac-key-file", str(srv.key), "--progress", "off", "--exit-when-drained",
        *_FAST_RETRY, *tls_args,
    )  # fmt: skip
    return out, data


def test_delivered_with_ca_and_client_cert(tls: Any, tmp_path: Path) -> None:
    srv, pki = tls
    out, _ = _agent(
        srv, tmp_path, "ok",
        "--tls-ca-file", str(pki.ca),
        "--tls-cert", str(pki.cli_crt), "--tls-key", str(pki.cli_key),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"sent={N_WINDOWS} accepted={N_WINDOWS} " in out.stdout
    assert "dead_lettered=0" in out.stdout


@pytest.mark.parametrize("case", ["no-client-cert", "wrong-ca", "system-store"])
def test_tls_failure_dead_letters_then_dlq_retry(
    tls: Any, tmp_path: Path, case: str
) -> None:
    srv, pki = tls
    client = ["--tls-cert", str(pki.cli_crt), "--tls-key", str(pki.cli_key)]
    bad = {
        "no-client-cert": ["--tls-ca-file", str(pki.ca)],
        "wrong-ca": ["--tls-ca-file", str(pki.other_ca), *client],
        # No --tls-ca-file: the system store does not know the private CA.
        "system-store": client,
    }[case]
    shard = case.replace("-", "")
    out, data = _agent(srv, tmp_path, shard, *bad)
    # A TLS failure is a connection error: retried (once here), then dead-lettered.
    assert out.returncode == 1, out.stderr[-2000:]
    assert f"sent={N_WINDOWS} accepted=0 " in out.stdout
    assert f"dead_lettered={N_WINDOWS} " in out.stdout
    assert f"retries={N_WINDOWS} " in out.stdout
    listed = _run("dlq", "list", "--data-dir", str(data))
    reasons = listed.stdout.splitlines()
    assert len(reasons) == N_WINDOWS
    assert all("retries exhausted after 2 attempts" in r for r in reasons)
    if case != "no-client-cert":
        assert all("CERTIFICATE_VERIFY_FAILED" in r for r in reasons), reasons

    retried = _run(
        "dlq", "retry", "--data-dir", str(data), "--all", "--endpoint", srv.url,
        "--tls-ca-file", str(pki.ca), *client,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert f"acknowledged {N_WINDOWS} " in retried.stdout


def test_cert_without_key_is_a_usage_error(tls: Any, tmp_path: Path) -> None:
    srv, pki = tls
    out, data = _agent(srv, tmp_path, "half", "--tls-cert", str(pki.cli_crt))
    assert out.returncode == 2
    assert "--tls-cert and --tls-key go together" in out.stderr
    assert not data.exists()  # refused before the outbox was created


def test_tls_context_checks(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    assert tls_context() is None
    ctx = tls_context(pki.ca, pki.cli_crt, pki.cli_key)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    # The CA file is the whole trust store: no system CA beside it.
    assert len(ctx.get_ca_certs()) == 1
    with pytest.raises(ConfigError, match="go together"):
        tls_context(pki.ca, key=pki.cli_key)
    with pytest.raises(ConfigError, match="--tls-ca-file"):
        tls_context(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="--tls-cert"):
        tls_context(pki.ca, pki.cli_crt, pki.srv_key)  # key of another cert
    enc = tmp_path / "enc.key"
    key = serialization.load_pem_private_key(pki.cli_key.read_bytes(), None)
    enc.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigError, match="encrypted"):  # never a terminal prompt
        tls_context(pki.ca, pki.cli_crt, enc)
    with pytest.raises(ConfigError, match="https://"):
        DeliveryClient("http://127.0.0.1:1", ssl_context=ctx)
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ConfigError, match="must verify"):
        DeliveryClient("https://127.0.0.1:1", ssl_context=unverified)
