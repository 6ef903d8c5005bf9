"""The compiled judge gives the Python judge's verdict byte for byte (issue #10).

``PythonJudge`` is the oracle: on generated, mutated and tampered bodies both must
return equal status, answer bytes, dedup key, content digest and result. The compiled
judge counts which path each call took, so the tests also show that every well-formed
body (accepted, escalated, each §6 rule, bad signature, refused 0.1) is judged in C.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flk_fast import _env

# Imported directly: FLK_FAST_NO_EXTENSIONS=1 changes which judge ``Judge`` picks, not
# whether the compiled one can be compared with its oracle here.
from flk_fast.kernels import _judge_cy
from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.pcs import compute_pcs_id
from flk_fast.protocol.signing import Ed25519Signer, HmacSigner, canonical_payload
from flk_fast.protocol.verify import VerifyParams
from flk_fast.server import judge as judge_mod
from flk_fast.server.judge import PythonJudge, Verdict
from flk_fast.server.keys import KeyStore, UnknownTenantError

from .conftest import KEY, VECTOR_BYTES, make_cfg, vector_doc
from .test_mutations import _cases


class Pair:
    """A compiled judge and its oracle over the same keys and parameters."""

    def __init__(self, keys: KeyStore, refuse_v01: bool = False, **params: Any) -> None:
        self.py = PythonJudge(keys, VerifyParams(**params), refuse_v01)
        self.cy = _judge_cy.CompiledJudge(self.py)

    def same(self, body: bytes, tenant: str = "") -> Verdict:
        """Both verdicts, checked equal field by field; returns the compiled one."""
        want, got = self.py(tenant, body), self.cy(tenant, body)
        assert got.status == want.status
        assert got.body == want.body
        assert got.key == want.key
        assert got.digest == want.digest
        assert got.result == want.result
        assert got == want
        return got

    def compiled(self, body: bytes, tenant: str = "") -> Verdict:
        """As ``same``, and the compiled judge must not have asked the oracle."""
        before = self.cy.oracle_calls, self.cy.compiled_calls
        got = self.same(body, tenant)
        assert (self.cy.oracle_calls, self.cy.compiled_calls) == (
            before[0],
            before[1] + 1,
        ), "a well-formed body was handed to the oracle"
        return got


@pytest.fixture(scope="module")
def hmac_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(make_cfg(tmp_path_factory.mktemp("hmac")))


@pytest.fixture(scope="module")
def pair(hmac_keys: KeyStore) -> Pair:
    return Pair(hmac_keys)


def _body(doc: dict[str, Any], key: bytes | None = KEY, fix_id: bool = True) -> bytes:
    doc = json.loads(json.dumps(doc))
    if fix_id:
        doc["pcs_id"] = compute_pcs_id(
            doc["merkle_root"], doc["epoch"], doc["shard_id"]
        )
    doc["sig"] = ""
    if key is not None:
        doc["sig"] = HmacSigner(key).sign(decode_pcs(json.dumps(doc).encode()))
    return json.dumps(doc).encode()


def _doc(**changes: Any) -> dict[str, Any]:
    doc = vector_doc()
    doc.update(changes)
    return doc


# ------------------------------------------------------------------ §6 rule by rule
RULES = {
    "accepted": ({}, 200, ""),
    "accepted-0.2": ({"version": "0.2"}, 200, ""),
    "identity": ({"pcs_id": "a" * 64, "_keep_id": True}, 202, "pcs_id:"),
    "N_j missing": ({"N_j": {"2": 5, "4": 10, "8": 13}}, 202, "D_hat: cannot"),
    "one scale": ({"scales": [2], "N_j": {"2": 5}}, 202, "D_hat: cannot"),
    "count <= 0": ({"N_j": {"2": 5, "4": 0, "8": 13, "16": 15}}, 202, "D_hat: cannot"),
    "no two scales differ": (
        {"scales": [2**62, 2**62 + 1], "N_j": {str(2**62): 3, str(2**62 + 1): 4}},
        202,
        "D_hat: cannot",
    ),
    "D_hat off": ({"D_hat": 1.9}, 202, "D_hat: claimed"),
    "coh_star high": ({"coh_star": 1.2}, 202, "coh_star:"),
    "coh_star low": ({"coh_star": -0.1}, 202, "coh_star:"),
    "r out": ({"r": 1.5}, 202, "r:"),
    "regime": ({"regime": "sticky"}, 202, "regime:"),
    "budget": ({"budget": 0.9}, 202, "budget:"),
    "regime and budget": ({"regime": "sticky", "budget": 0.9}, 202, "regime:"),
}


@pytest.mark.parametrize("version", ["0.1", "0.2"])
@pytest.mark.parametrize("case", sorted(RULES))
def test_every_rule_is_judged_compiled(pair: Pair, case: str, version: str) -> None:
    changes, status, reason = RULES[case]
    changes = dict(changes)
    keep_id = changes.pop("_keep_id", False)
    changes.setdefault("version", version)
    got = pair.compiled(_body(_doc(**changes), fix_id=not keep_id))
    assert got.status == status
    assert got.result is not None and got.result.reason.startswith(reason)
    if case == "regime and budget":
        assert "; budget:" in got.result.reason


def test_vector_answer_is_compiled(pair: Pair) -> None:
    got = pair.compiled(VECTOR_BYTES)
    assert got.status == 200
    assert got.key == json.loads(VECTOR_BYTES)["pcs_id"]
    assert len(got.digest) == 32


# ------------------------------------------------------------- signatures, tenants
@pytest.mark.parametrize("version", ["0.1", "0.2"])
@pytest.mark.parametrize(
    "sig",
    [
        "",
        "not base64!",
        "AAAA",  # decodes to 3 bytes
        "A" * 43 + "=",  # 32 bytes, wrong
        "A" * 86 + "==",  # 64 bytes: no key of that length
        "é",
    ],
)
def test_bad_signatures_are_compiled(pair: Pair, sig: str, version: str) -> None:
    doc = json.loads(_body(_doc(version=version)))
    doc["sig"] = sig
    got = pair.compiled(json.dumps(doc).encode())
    assert got.status == 401


@pytest.mark.parametrize("version", ["0.1", "0.2"])
def test_wrong_key_and_tampered_field(pair: Pair, version: str) -> None:
    assert pair.compiled(_body(_doc(version=version), key=b"other")).status == 401
    doc = json.loads(_body(_doc(version=version)))
    doc["epoch"] += 1  # signed field changed after signing
    assert pair.compiled(json.dumps(doc).encode()).status == 401
    doc = json.loads(_body(_doc(version=version)))
    doc["regime"] = "sticky"  # signed by 0.2 only
    assert pair.compiled(json.dumps(doc).encode()).status == (
        401 if version == "0.2" else 202
    )


def test_refused_v01_is_compiled(hmac_keys: KeyStore) -> None:
    refusing = Pair(hmac_keys, refuse_v01=True)
    got = refusing.compiled(_body(_doc(version="0.1")))
    assert got.status == 401 and b"refuse-sig-v01" in got.body
    assert refusing.compiled(_body(_doc(version="0.2"))).status == 200


def test_tenants(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "acme.hmac").write_bytes(b"acme-secret")
    (tenants / "acme.new.hmac").write_bytes(b"acme-next")
    pair = Pair(
        KeyStore(make_cfg(tmp_path, hmac_key_file="", tenants_dir=str(tenants)))
    )
    for key in (b"acme-secret", b"acme-next"):
        got = pair.compiled(_body(_doc(version="0.2"), key=key), tenant="acme")
        assert got.status == 200 and got.key.startswith("acme\0")
    assert pair.compiled(_body(_doc(), key=KEY), tenant="acme").status == 401
    for judge in (pair.py, pair.cy):
        with pytest.raises(UnknownTenantError):
            judge("other", _body(_doc()))
        with pytest.raises(UnknownTenantError):
            judge("", _body(_doc()))


def test_ed25519(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pub = tmp_path / "ed.pub"
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    )
    pair = Pair(
        KeyStore(
            make_cfg(tmp_path, sign_alg="ed25519", ed25519_public_key_file=str(pub))
        )
    )
    for version in ("0.1", "0.2"):
        doc = json.loads(_body(_doc(version=version), key=None))
        doc["sig"] = Ed25519Signer(private).sign(decode_pcs(json.dumps(doc).encode()))
        assert pair.compiled(json.dumps(doc).encode()).status == 200
        doc["epoch"] += 1
        assert pair.compiled(json.dumps(doc).encode()).status == 401


def test_no_signature_check(tmp_path: Path) -> None:
    pair = Pair(KeyStore(make_cfg(tmp_path, sign_alg="none", hmac_key_file="")))
    assert pair.compiled(_body(_doc(), key=None)).status == 200


# ------------------------------------------------------------------ unusual bodies
@pytest.mark.parametrize(("name", "body"), _cases())
def test_mutation_corpus(pair: Pair, name: str, body: bytes) -> None:
    pair.same(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{",
        b"\xff\xfe",
        b"x" * (70 * 1024),
        json.dumps(
            {**vector_doc(), "v_star": [1.0] * 2000}
        ).encode(),  # over LIMITS["v_star"]
        VECTOR_BYTES.replace(b'"epoch": 1', b'"epoch": 1e999'),
        VECTOR_BYTES.replace(b'"D_hat": ', b'"D_hat": 1e999, "x": '),
        VECTOR_BYTES.replace(
            b"2025-01-19T12:00:00Z", "2025-01-19T12:00:0\u0663Z".encode()
        ),
        VECTOR_BYTES.replace(b"2025-01-19T12:00:00Z", b"2025-01-19T12:00:00.5+00:00"),
        VECTOR_BYTES.replace(b"2025-01-19T12:00:00Z", b"2025-02-30T12:00:00Z"),
        VECTOR_BYTES.replace(b'"scales": [2, 4', b'"scales": [2, 2'),
        VECTOR_BYTES.replace(b'"shard_id": "', b'"shard_id": "\\u00e9\\"'),
        VECTOR_BYTES.replace(b'"2": 5', b'"02": 5'),
    ],
)
def test_odd_bodies(pair: Pair, body: bytes) -> None:
    pair.same(body)


def test_compiled_path_for_valid_fraction_timestamp(pair: Pair) -> None:
    doc = _doc(sent_at="2025-01-19T12:00:00.123456789+00:00", version="0.2")
    assert pair.compiled(_body(doc)).status == 200


# ------------------------------------------------------------------ generated bodies
_floats = st.floats(min_value=-0.5, max_value=3.5, allow_nan=False)
_shard = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
) | st.sampled_from(["s", "test-shard-001", "a b"])


@st.composite
def pcs_docs(draw: st.DrawFn) -> tuple[dict[str, Any], bool, bool]:
    scales = draw(st.lists(st.integers(1, 2**40), min_size=1, max_size=8, unique=True))
    counts = {str(s): draw(st.integers(-2, 2**50)) for s in scales}
    if draw(st.booleans()) and len(counts) > 1:
        counts.pop(str(scales[-1]))  # a scale without its count
    doc = _doc(
        version=draw(st.sampled_from(["0.1", "0.2", "0.3"])),
        shard_id=draw(_shard),
        epoch=draw(st.integers(0, 2**63 - 1)),
        seed=draw(st.integers(-(2**63), 2**63 - 1)),
        scales=scales,
        N_j=counts,
        coh_star=draw(_floats),
        v_star=draw(
            st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5)
        ),
        D_hat=draw(_floats),
        r=draw(_floats),
        regime=draw(st.sampled_from(["sticky", "mixed", "non_sticky"])),
        budget=draw(st.floats(0, 1)),
    )
    if draw(st.booleans()):  # make the claim consistent so the accepted rules run
        from flk_fast.kernels.signals import budget, d_hat, regime

        try:
            doc["D_hat"] = d_hat(scales, [counts[str(s)] for s in scales])
        except (KeyError, ValueError):
            pass
        doc["regime"] = regime(doc["D_hat"], doc["coh_star"])
        doc["budget"] = budget(doc["D_hat"], doc["coh_star"], doc["r"])
    return doc, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pcs_docs())
def test_generated_bodies(pair: Pair, drawn: tuple[dict[str, Any], bool, bool]) -> None:
    doc, fix_id, right_key = drawn
    body = _body(doc, key=KEY if right_key else b"wrong", fix_id=fix_id)
    if (
        doc["shard_id"].isascii()
        and doc["shard_id"].isprintable()
        and '"' not in doc["shard_id"]
        and "\\" not in doc["shard_id"]
    ):
        pair.compiled(body)  # plain strings: never the oracle
    else:
        pair.same(body)


# ------------------------------------------------------------------ selection
def test_judge_in_use_follows_the_switch(hmac_keys: KeyStore) -> None:
    j = judge_mod.Judge(hmac_keys, VerifyParams(), False)
    if _env.NO_EXTENSIONS:
        assert not judge_mod.COMPILED
        assert type(j) is PythonJudge
    else:
        assert judge_mod.COMPILED
        assert isinstance(j, _judge_cy.CompiledJudge)
        assert isinstance(j.oracle, PythonJudge)
    assert j("", _body(_doc())).status == 200


def test_no_extensions_selects_python() -> None:
    code = (
        "from flk_fast.server import judge as j; from flk_fast.server.keys import "
        "KeyStore; from flk_fast.server.config import ServerConfig; "
        "from flk_fast.protocol.verify import VerifyParams; "
        "k = KeyStore(ServerConfig(sign_alg='none', hmac_key_file='')); "
        "print(j.COMPILED, type(j.Judge(k, VerifyParams(), False)).__name__)"
    )
    env = {**os.environ, "FLK_FAST_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "PythonJudge"]
    env.pop("FLK_FAST_NO_EXTENSIONS")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["True", "CompiledJudge"]


def test_payload_is_the_signed_one(pair: Pair) -> None:
    # The content digest the compiled judge returns is over the §3.1 full payload.
    import hashlib

    from flk_fast.protocol.signing import full_payload

    body = _body(_doc(version="0.1"))
    pcs = decode_pcs(body)
    assert pair.compiled(body).digest == hashlib.sha256(full_payload(pcs)).digest()
    assert canonical_payload(pcs) != full_payload(pcs)


_any_float = st.floats(allow_nan=False, allow_infinity=False) | st.integers(
    -(2**70), 2**70
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_any_float, min_size=4, max_size=4), st.booleans())
def test_any_finite_number_renders_alike(
    pair: Pair, numbers: list[float], legacy: bool
) -> None:
    # Signed payloads and answers carry round(x, 9) and repr of every number field.
    d, c, r, b = numbers
    doc = _doc(D_hat=d, coh_star=c, r=r, budget=b, version="0.1" if legacy else "0.2")
    pair.compiled(_body(doc))
