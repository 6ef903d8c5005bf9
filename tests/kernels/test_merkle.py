"""Merkle roots and proofs vs the level-by-level hashlib/blake3 oracle, for the
compiled module and the pure twin (``merkle_impl`` runs each test twice)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reference.merkle import (
    ref_merkle_proof,
    ref_merkle_rfc6962,
    ref_merkle_root,
)

from ._hyp import HYP

SCHEMES = ["sha256-hexcat", "sha256-rfc6962", "blake3-rfc6962"]
VECTOR_ROOT = "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112"


def vector_rows() -> bytes:
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "data", "tiny_case_1_rows.txt"), "rb") as fh:
        return fh.read()


def test_vector_root(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_root

    assert merkle_root(vector_rows(), chunk_size=64) == VECTOR_ROOT


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 128, 64 * 5 + 3, 64 * 8, 5000])
@pytest.mark.parametrize("chunk_size", [1, 64, 1000, 1024])
def test_root_matches_oracle(merkle_impl, scheme, n, chunk_size) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_root

    data = os.urandom(n)
    expected = ref_merkle_root(data, scheme, chunk_size)
    assert merkle_root(data, scheme=scheme, chunk_size=chunk_size) == expected
    if scheme != "sha256-hexcat":
        assert expected == ref_merkle_rfc6962(data, scheme, chunk_size)


def test_empty_roots(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_root

    assert merkle_root(b"") == "0" * 64
    assert merkle_root([], scheme="sha256-rfc6962") == ref_merkle_root(
        b"", "sha256-rfc6962"
    )
    assert merkle_root(b"", scheme="blake3-rfc6962") == ref_merkle_root(
        b"", "blake3-rfc6962"
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_streaming_pieces_and_files(merkle_impl, scheme, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_root, merkle_root_file

    data = os.urandom(3 * (1 << 20) + 777)  # > 1 MiB: the parallel leaf path
    expected = ref_merkle_root(data, scheme, 1024)
    pieces = [data[i : i + 5003] for i in range(0, len(data), 5003)]
    assert merkle_root(pieces, scheme=scheme, chunk_size=1024) == expected
    assert (
        merkle_root(iter([memoryview(data)]), scheme=scheme, chunk_size=1024)
        == expected
    )
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert merkle_root_file(path, scheme=scheme, chunk_size=1024) == expected
    assert (
        merkle_root_file(io.BytesIO(data), scheme=scheme, chunk_size=1024) == expected
    )


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("leaves", [1, 2, 3, 5, 7, 8, 9, 16, 17])
def test_proofs_for_every_leaf(merkle_impl, scheme, leaves) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_proof, merkle_root, merkle_verify

    data = os.urandom(16 * leaves - 5)
    root = merkle_root(data, scheme=scheme, chunk_size=16)
    for i in range(leaves):
        proof = merkle_proof(data, i, scheme=scheme, chunk_size=16)
        assert list(proof.path) == ref_merkle_proof(data, i, scheme, 16)
        chunk = data[16 * i : 16 * i + 16]
        assert merkle_verify(root, chunk, proof, scheme=scheme)
        assert not merkle_verify(root, chunk + b"x", proof, scheme=scheme)
        if leaves > 1:
            other = (i + 1) % leaves
            moved = type(proof)(
                proof.scheme, proof.chunk_size, other, proof.leaf_count, proof.path
            )
            assert not merkle_verify(root, chunk, moved, scheme=scheme)


def test_domain_separation_blocks_node_as_leaf(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    # Legacy weakness: the hex text of two leaf digests is itself a valid "leaf" whose
    # one-leaf tree has the parent's root. The RFC 6962 schemes tell them apart.
    from flk_fast.kernels import merkle_root

    data = os.urandom(128)
    forged = (
        merkle_root(data[:64], chunk_size=64) + merkle_root(data[64:], chunk_size=64)
    ).encode()
    # Legacy: a one-leaf tree over the parent's preimage has the two-leaf tree's root.
    assert merkle_root(forged, chunk_size=len(forged)) == merkle_root(
        data, chunk_size=64
    )
    for scheme in ("sha256-rfc6962", "blake3-rfc6962"):
        assert merkle_root(data, scheme=scheme, chunk_size=64) != merkle_root(
            forged, scheme=scheme, chunk_size=len(forged)
        )


def test_malformed_proofs_verify_false(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import MerkleProof, merkle_proof, merkle_root, merkle_verify

    data = os.urandom(100)
    root = merkle_root(data, scheme="sha256-rfc6962", chunk_size=10)
    good = merkle_proof(data, 3, scheme="sha256-rfc6962", chunk_size=10)
    chunk = data[30:40]
    assert merkle_verify(root, chunk, good, scheme="sha256-rfc6962")
    bad = [
        MerkleProof(good.scheme, 10, 3, good.leaf_count, good.path[:-1]),
        MerkleProof(good.scheme, 10, 3, good.leaf_count, (*good.path, good.path[0])),
        MerkleProof(good.scheme, 10, 3, good.leaf_count, ("zz",) + good.path[1:]),
        MerkleProof(good.scheme, 10, 3, good.leaf_count, ("ab",) + good.path[1:]),
        MerkleProof(good.scheme, 10, 99, good.leaf_count, good.path),
    ]
    for proof in bad:
        assert not merkle_verify(root, chunk, proof, scheme="sha256-rfc6962")


def test_bad_arguments(merkle_impl) -> None:  # type: ignore[no-untyped-def]
    from flk_fast.kernels import merkle_proof, merkle_root

    with pytest.raises(ValueError, match="unknown Merkle scheme"):
        merkle_root(b"x", scheme="md5")
    with pytest.raises(ValueError, match="chunk_size"):
        merkle_root(b"x", chunk_size=0)
    with pytest.raises(TypeError, match="not str"):
        merkle_root("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        merkle_root([b"a", 1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="out of range"):
        merkle_proof(b"abc", 5, chunk_size=1)


@HYP
@given(
    data=st.binary(max_size=700),
    cuts=st.lists(st.integers(0, 700), max_size=6),
    chunk_size=st.integers(1, 70),
    scheme=st.sampled_from(SCHEMES),
)
def test_hypothesis_roots_and_proofs(data, cuts, chunk_size, scheme) -> None:  # type: ignore[no-untyped-def]
    import importlib

    from flk_fast.kernels import merkle

    expected = ref_merkle_root(data, scheme, chunk_size)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    impls = ["flk_fast.kernels._merkle_py"]
    try:
        importlib.import_module("flk_fast.kernels._merkle_cy")
        impls.append("flk_fast.kernels._merkle_cy")
    except ImportError:
        pass
    saved = merkle._impl
    try:
        for name in impls:
            merkle._impl = importlib.import_module(name)
            assert (
                merkle.merkle_root(pieces, scheme=scheme, chunk_size=chunk_size)
                == expected
            )
            if data:
                i = len(data) // chunk_size // 2
                proof = merkle.merkle_proof(
                    data, i, scheme=scheme, chunk_size=chunk_size
                )
                assert list(proof.path) == ref_merkle_proof(data, i, scheme, chunk_size)
                leaf = data[i * chunk_size : (i + 1) * chunk_size]
                assert merkle.merkle_verify(expected, leaf, proof, scheme=scheme)
    finally:
        merkle._impl = saved


def test_no_extensions_env_selects_the_twin() -> None:
    code = "from flk_fast.kernels import merkle; print(merkle._impl.__name__)"
    env = dict(os.environ, FLK_FAST_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert out == "flk_fast.kernels._merkle_py"


@pytest.mark.parametrize(
    "chunk_size", [1, 63, 64, 65, 1023, 1024, 1025, 2048, 3000, 5000]
)
def test_blake3_eight_lane_leaves(merkle_impl, chunk_size) -> None:  # type: ignore[no-untyped-def]
    # >= 8 full leaves in one update take the 8-lane BLAKE3 path (several BLAKE3 chunks
    # and a subtree per leaf for the larger sizes), plus a short tail leaf.
    from flk_fast.kernels import merkle_root

    data = os.urandom(chunk_size * 19 + 7)
    assert merkle_root(data, scheme="blake3-rfc6962", chunk_size=chunk_size) == (
        ref_merkle_root(data, "blake3-rfc6962", chunk_size)
    )
