"""HTTPS and mTLS from --tls-cert/--tls-key/--tls-client-ca, on a real process."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.pki import issue_cert

from .conftest import JSON, SUBMIT, VECTOR_BYTES
from .procs import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_factories=["uvloop"])]


async def test_https_and_mtls(tmp_path: Path) -> None:
    ca_crt, _, ca = issue_cert(tmp_path, "ca", None, ca=True)
    srv_crt, srv_key, _ = issue_cert(tmp_path, "server", ca, san="127.0.0.1")
    cli_crt, cli_key, _ = issue_cert(tmp_path, "client", ca)
    srv = ServerProcess(
        tmp_path,
        "tls",
        "--tls-cert",
        str(srv_crt),
        "--tls-key",
        str(srv_key),
        "--tls-client-ca",
        str(ca_crt),
    )
    url = f"https://127.0.0.1:{srv.port}"
    try:
        trust = ssl.create_default_context(cafile=str(ca_crt))
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):  # no client certificate: refused
                async with s.post(
                    url + SUBMIT, data=VECTOR_BYTES, headers=JSON, ssl=trust
                ) as resp:
                    await resp.read()
            trust.load_cert_chain(str(cli_crt), str(cli_key))
            async with s.post(
                url + SUBMIT, data=VECTOR_BYTES, headers=JSON, ssl=trust
            ) as resp:
                assert resp.status == 200
    finally:
        assert srv.stop() == 0
