"""Canonical signing of a PCS (SPEC §3). The only module that touches keys.

HMAC-SHA256 goes through the standard library's ``hmac`` (OpenSSL): the same primitive
that ``cryptography`` wraps and as fast, but without loading ``cryptography``, which
costs ~8 MB of RSS on an HMAC-only agent. Each key keeps its keyed state and every
signature starts from a copy of it: the one-shot ``hmac.digest`` looks the algorithm
up and runs the key schedule again on every call (2.0 vs 1.6 us per 230-byte
payload). Ed25519 uses ``cryptography``, imported only when an Ed25519 key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from flk_fast.errors import KeyLoadError, SignatureError
from flk_fast.protocol.pcs import PCS

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "LEGACY_VERSION",
    "SIG_VERSIONS",
    "Ed25519Key",
    "Ed25519Signer",
    "HmacKey",
    "HmacSigner",
    "Keyring",
    "Signer",
    "VerificationKey",
    "canonical_payload",
    "canonical_payload_reference",
    "content_digest",
    "full_payload",
    "full_payload_reference",
    "legacy_payload",
    "generate_ed25519",
    "load_ed25519_private",
    "load_ed25519_public",
    "load_hmac_key",
]

_HMAC_SIG_LEN = 32
_ED25519_SIG_LEN = 64
_dumps_str = json.JSONEncoder(ensure_ascii=True).encode


def _num(x: float) -> str:
    # json.dumps renders a float with float.__repr__ (shortest round-trip form).
    return float.__repr__(round(float(x), 9))


def _json_str(s: str) -> str:
    # Plain printable ASCII without quote or backslash is its own JSON text; anything
    # else goes through the json encoder (ensure_ascii escaping, as SPEC §3 asks).
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    return _dumps_str(s)


#: The version whose signature covers only the 8 fields of SPEC §3 (the vector of §8
#: and PCS of the original implementation). Every other version signs the full payload.
LEGACY_VERSION = "0.1"
#: The versions this project's agents and ``flk build-pcs`` can sign (SPEC §3.1).
SIG_VERSIONS = ("0.1", "0.2")


def canonical_payload(pcs: PCS) -> bytes:
    """The signed bytes of ``pcs``, chosen by its ``version`` (SPEC §3, §3.1).

    ``"0.1"`` signs the 8-field subset of §3; any other version the full payload of
    §3.1, so relabelling a PCS (a changed ``version``) also changes what is signed.
    """
    if pcs.version == LEGACY_VERSION:
        return legacy_payload(pcs)
    return full_payload(pcs)


def legacy_payload(pcs: PCS) -> bytes:
    """SPEC §3: 8 fields, keys sorted, no spaces, ASCII-only.

    Hand-assembled in sorted-key order (``D_hat`` sorts before the lowercase keys);
    ``canonical_payload_reference`` is the plain ``json.dumps`` it must always equal.
    """
    return (
        f'{{"D_hat":{_num(pcs.D_hat)},"budget":{_num(pcs.budget)},'
        f'"coh_star":{_num(pcs.coh_star)},"epoch":{pcs.epoch},'
        f'"merkle_root":{_json_str(pcs.merkle_root)},"pcs_id":{_json_str(pcs.pcs_id)},'
        f'"r":{_num(pcs.r)},"shard_id":{_json_str(pcs.shard_id)}}}'
    ).encode("ascii")


def full_payload(pcs: PCS) -> bytes:
    """SPEC §3.1: every field but ``sig``, ``attempt``, ``sent_at`` and ``ft``.

    Keys sorted (also inside ``N_j``, as strings), lists in order, the number fields
    of §1 rendered as floats rounded to 9 digits (a wire ``1`` for ``coh_star`` is
    ``1.0``, as in §3), integer fields plain. Hand-assembled like the legacy payload;
    ``full_payload_reference`` is the ``json.dumps`` oracle.
    """
    n_j = ",".join([f"{_json_str(k)}:{v}" for k, v in sorted(pcs.N_j.items())])
    scales = ",".join([str(s) for s in pcs.scales])
    v_star = ",".join([_num(v) for v in pcs.v_star])
    return (
        f'{{"D_hat":{_num(pcs.D_hat)},"N_j":{{{n_j}}},"budget":{_num(pcs.budget)},'
        f'"coh_star":{_num(pcs.coh_star)},"epoch":{pcs.epoch},'
        f'"merkle_root":{_json_str(pcs.merkle_root)},"pcs_id":{_json_str(pcs.pcs_id)},'
        f'"r":{_num(pcs.r)},"regime":{_json_str(pcs.regime)},"scales":[{scales}],'
        f'"schema":{_json_str(pcs.schema)},"seed":{pcs.seed},'
        f'"shard_id":{_json_str(pcs.shard_id)},"v_star":[{v_star}],'
        f'"version":{_json_str(pcs.version)}}}'
    ).encode("ascii")


def content_digest(pcs: PCS, payload: bytes | None = None) -> bytes:
    """SHA-256 of the full payload (SPEC §3.2): twins with equal digests are
    duplicates, different digests under one ``pcs_id`` a conflict, whatever the
    version. ``payload`` may pass ``full_payload(pcs)`` when it is already built."""
    return hashlib.sha256(full_payload(pcs) if payload is None else payload).digest()


def canonical_payload_reference(pcs: PCS) -> bytes:
    """SPEC §3 spelled out with ``json.dumps``: the oracle for ``legacy_payload``."""
    subset = {
        "pcs_id": pcs.pcs_id,
        "merkle_root": pcs.merkle_root,
        "epoch": pcs.epoch,
        "shard_id": pcs.shard_id,
        "D_hat": round(pcs.D_hat, 9),
        "coh_star": round(pcs.coh_star, 9),
        "r": round(pcs.r, 9),
        "budget": round(pcs.budget, 9),
    }
    return _dumps_canonical(subset)


def full_payload_reference(pcs: PCS) -> bytes:
    """SPEC §3.1 spelled out with ``json.dumps``: the oracle for ``full_payload``."""
    doc = {
        "pcs_id": pcs.pcs_id,
        "schema": pcs.schema,
        "version": pcs.version,
        "shard_id": pcs.shard_id,
        "epoch": pcs.epoch,
        "seed": pcs.seed,
        "scales": list(pcs.scales),
        "N_j": dict(pcs.N_j),
        "coh_star": round(float(pcs.coh_star), 9),
        "v_star": [round(float(v), 9) for v in pcs.v_star],
        "D_hat": round(float(pcs.D_hat), 9),
        "r": round(float(pcs.r), 9),
        "regime": pcs.regime,
        "budget": round(float(pcs.budget), 9),
        "merkle_root": pcs.merkle_root,
    }
    return _dumps_canonical(doc)


def _dumps_canonical(doc: dict[str, object]) -> bytes:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("utf-8")


# ------------------------------------------------------------------------- keys
def load_hmac_key(
    path: str | os.PathLike[str] | None = None,
    env: str | None = None,
    value: bytes | str | None = None,
) -> bytes:
    """Load an HMAC secret from exactly one of a file, an environment variable or bytes.

    One trailing newline is stripped from files and variables (``echo secret > f``).

    Raises
    ------
    KeyLoadError
        None or several sources given, the source is missing, or the key is empty.
    """
    given = [x is not None for x in (path, env, value)]
    if sum(given) != 1:
        raise KeyLoadError(
            "give exactly one HMAC key source: a file, an env var or a value"
        )
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise KeyLoadError(f"HMAC key file {path}: {exc.strerror}") from None
        where = f"HMAC key file {path}"
    elif env is not None:
        text = os.environ.get(env)
        if text is None:
            raise KeyLoadError(f"HMAC key variable {env} is not set")
        raw, where = text.encode(), f"HMAC key variable {env}"
    else:
        raw = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
        where = "HMAC key"
    key = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise KeyLoadError(f"{where} is empty")
    return key


def load_ed25519_private(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an Ed25519 private key: PEM (PKCS#8, unencrypted) or 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = _read_key_file(path, "Ed25519 private key")
    try:
        if raw.startswith(b"-----"):
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"Ed25519 private key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyLoadError(f"Ed25519 private key {path}: not an Ed25519 key")
    return key


def load_ed25519_public(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key: PEM (SubjectPublicKeyInfo) or 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = _read_key_file(path, "Ed25519 public key")
    try:
        if raw.startswith(b"-----"):
            key = serialization.load_pem_public_key(raw)
        else:
            key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"Ed25519 public key {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyLoadError(f"Ed25519 public key {path}: not an Ed25519 key")
    return key


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"{what} {path}: {exc.strerror}") from None


def generate_ed25519(private_path: Path, public_path: Path) -> None:
    """Write a fresh Ed25519 key pair as PEM; the private file is created mode 0600."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # O_EXCL: never overwrite an existing key (nor its public half); the private mode is
    # set at creation, so there is no moment at 0644.
    if public_path.exists():
        raise FileExistsError(f"{public_path} exists")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    with open(public_path, "xb") as f:
        f.write(public_pem)


# ---------------------------------------------------------------------- signers
class Signer(Protocol):
    key_id: str

    def sign_payload(self, payload: bytes) -> str: ...

    def sign(self, pcs: PCS) -> str: ...


@dataclass(frozen=True, slots=True)
class HmacSigner:
    """``sig = base64(HMAC_SHA256(key, payload))``.

    Examples
    --------
    >>> HmacSigner(b"testsecret").sign_payload(b"{}")
    'nTUVVCoPC9n19MruRpLGIbnvKfgDi4kbT1UJsEhR26M='
    """

    key: bytes
    key_id: str = "default"
    _keyed: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.key, digestmod="sha256"))

    def sign_payload(self, payload: bytes) -> str:
        return base64.b64encode(_hmac_sha256(self._keyed, payload)).decode("ascii")

    def sign(self, pcs: PCS) -> str:
        return self.sign_payload(canonical_payload(pcs))


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """``sig = base64(Ed25519_sign(private_key, sha256(payload)))``."""

    private_key: Ed25519PrivateKey
    key_id: str = "default"

    def sign_payload(self, payload: bytes) -> str:
        digest = hashlib.sha256(payload).digest()
        return base64.b64encode(self.private_key.sign(digest)).decode("ascii")

    def sign(self, pcs: PCS) -> str:
        return self.sign_payload(canonical_payload(pcs))


# -------------------------------------------------------------------- verifiers
class VerificationKey(Protocol):
    @property
    def sig_len(self) -> int: ...

    def matches(self, payload: bytes, sig: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class HmacKey:
    secret: bytes
    sig_len: int = _HMAC_SIG_LEN
    _keyed: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.secret, digestmod="sha256"))

    def matches(self, payload: bytes, sig: bytes) -> bool:
        return hmac.compare_digest(_hmac_sha256(self._keyed, payload), sig)


def _hmac_sha256(keyed: hmac.HMAC, payload: bytes) -> bytes:
    """HMAC-SHA256 of ``payload`` from a copy of the keyed state (the key schedule
    is done once per key, not once per message)."""
    h = keyed.copy()
    h.update(payload)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Ed25519Key:
    public_key: Ed25519PublicKey
    sig_len: int = _ED25519_SIG_LEN

    def matches(self, payload: bytes, sig: bytes) -> bool:
        try:
            self.public_key.verify(sig, hashlib.sha256(payload).digest())
        except _invalid_signature():
            return False
        return True


def _invalid_signature() -> type[Exception]:
    from cryptography.exceptions import InvalidSignature

    return InvalidSignature


class Keyring:
    """The keys a verifier accepts, by key id. Two keys may be live during a rotation:
    a signature is valid if any key matches.

    Examples
    --------
    >>> ring = Keyring({"old": HmacKey(b"old-secret"), "new": HmacKey(b"new-secret")})
    >>> ring.key_ids
    ('old', 'new')
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        if not keys:
            raise KeyLoadError("a keyring needs at least one key")
        self._keys = tuple(keys.items())

    @classmethod
    def hmac(cls, secrets: Mapping[str, bytes] | Iterable[bytes]) -> Keyring:
        if isinstance(secrets, Mapping):
            return cls({kid: HmacKey(s) for kid, s in secrets.items()})
        return cls({f"key{i}": HmacKey(s) for i, s in enumerate(secrets)})

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self._keys)

    def verify(self, pcs: PCS, payload: bytes | None = None) -> str:
        """Return the id of the key that signed ``pcs``. ``payload`` may pass
        ``canonical_payload(pcs)`` when the caller has already built it.

        Raises
        ------
        SignatureError
            Empty, undecodable, wrong-length or non-matching signature.
        """
        if not pcs.sig:
            raise SignatureError("sig: missing (empty)")
        try:
            sig = base64.b64decode(pcs.sig, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("sig: not valid base64") from None
        if payload is None:
            payload = canonical_payload(pcs)
        right_length = False
        for key_id, key in self._keys:
            if len(sig) != key.sig_len:
                continue
            right_length = True
            if key.matches(payload, sig):
                return key_id
        if not right_length:
            lengths = sorted({k.sig_len for _, k in self._keys})
            raise SignatureError(
                f"sig: decodes to {len(sig)} bytes, expected {lengths}"
            )
        raise SignatureError("sig: does not match any key")
