"""HTTPS and mTLS from --tls-cert/--tls-key/--tls-client-ca, on a real process."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import JSON, SUBMIT, VECTOR_BYTES
from .procs import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_factories=["uvloop"])]


_Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _issue(
    tmp: Path,
    name: str,
    issuer: _Issuer | None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> tuple[Path, Path, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, (cert, key)


async def test_https_and_mtls(tmp_path: Path) -> None:
    ca_crt, _, ca = _issue(tmp_path, "ca", None, ca=True)
    srv_crt, srv_key, _ = _issue(tmp_path, "server", ca, san="127.0.0.1")
    cli_crt, cli_key, _ = _issue(tmp_path, "client", ca)
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
