"""Key loading: every source, every failure named."""

from __future__ import annotations

from pathlib import Path

import pytest

from flk_fast.errors import KeyLoadError
from flk_fast.protocol.signing import (
    Keyring,
    generate_ed25519,
    load_ed25519_private,
    load_ed25519_public,
    load_hmac_key,
)


def test_hmac_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "k"
    f.write_bytes(b"testsecret\r\n")
    assert load_hmac_key(path=f) == b"testsecret"
    monkeypatch.setenv("FLK_TEST_KEY", "testsecret\n")
    assert load_hmac_key(env="FLK_TEST_KEY") == b"testsecret"
    assert load_hmac_key(value="testsecret") == b"testsecret"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"value": b"a", "env": "X"}, "exactly one"),
        ({"env": "FLK_SURELY_UNSET_VAR"}, "FLK_SURELY_UNSET_VAR is not set"),
        ({"path": "/nonexistent/key"}, "No such file"),
        ({"value": b"\n"}, "is empty"),
    ],
)
def test_hmac_key_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(KeyLoadError, match=message):
        load_hmac_key(**kwargs)  # type: ignore[arg-type]


def test_ed25519_pem_and_raw(tmp_path: Path) -> None:
    priv, pub = tmp_path / "a.key", tmp_path / "a.pub"
    generate_ed25519(priv, pub)
    private = load_ed25519_private(priv)
    public = load_ed25519_public(pub)
    raw = tmp_path / "raw.pub"
    from cryptography.hazmat.primitives import serialization

    raw.write_bytes(
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert load_ed25519_public(raw).public_bytes_raw() == public.public_bytes_raw()
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
    with pytest.raises(FileExistsError):
        generate_ed25519(priv, pub)


def test_ed25519_garbage_is_a_key_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyLoadError, match="bad.pub"):
        load_ed25519_public(bad)
    bad.write_bytes(b"short")
    with pytest.raises(KeyLoadError):
        load_ed25519_public(bad)


def test_empty_keyring_is_refused() -> None:
    with pytest.raises(KeyLoadError):
        Keyring({})
