"""The public surface, spelled out: a change to it must be deliberate."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "flk_fast": ["__version__", "agent", "kernels", "protocol", "server", "storage"],
    "flk_fast.errors": [
        "ConfigError",
        "DedupUnavailableError",
        "FlkError",
        "InputError",
        "KeyLoadError",
        "PCSValidationError",
        "SignatureError",
        "StorageError",
        "WalCorruptionError",
    ],
    "flk_fast.protocol": [
        "Ed25519Signer",
        "FaultTolerance",
        "HmacSigner",
        "Keyring",
        "PCS",
        "SCHEMA",
        "VerifyParams",
        "VerifyResult",
        "canonical_payload",
        "compute_pcs_id",
        "decode_pcs",
        "encode_pcs",
        "encode_pcs_pretty",
        "verify_pcs",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(EXPECTED[name])
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.{attr} is exported but missing"


def test_errors_share_one_base() -> None:
    errors = importlib.import_module("flk_fast.errors")
    for attr in errors.__all__:
        assert issubclass(getattr(errors, attr), errors.FlkError)
