"""The public surface, spelled out: a change to it must be deliberate."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "flk_fast.agent": [
        "Agent",
        "AgentConfig",
        "AgentSummary",
        "DeadLetter",
        "DeliveryClient",
        "DeliveryResult",
        "Outbox",
        "RetryPolicy",
        "delays",
    ],
    "flk_fast.kernels": [
        "BudgetParams",
        "Coherence",
        "MERKLE_SCHEMES",
        "MerkleProof",
        "RegimeParams",
        "TheilSen",
        "box_counts",
        "budget",
        "coherence",
        "compressibility",
        "d_hat",
        "d_hat_batch",
        "merkle_proof",
        "merkle_root",
        "merkle_root_file",
        "merkle_verify",
        "regime",
        "theil_sen",
        "warm_up",
    ],
    "flk_fast.server": ["ServerConfig", "load_config", "make_app", "serve"],
    "flk_fast.storage": [
        "DEFAULT_TIMEOUT_S",
        "DEFAULT_TTL_S",
        "DedupStore",
        "WalRecord",
        "WalStats",
        "WriteAheadLog",
        "open_dedup",
        "redact",
    ],
    "flk_fast": ["__version__", "agent", "kernels", "protocol", "server", "storage"],
    "flk_fast.errors": [
        "ConfigError",
        "DedupUnavailableError",
        "FlkError",
        "InputError",
        "KernelInputError",
        "KernelTypeError",
        "KeyLoadError",
        "LmdbDamagedError",
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
