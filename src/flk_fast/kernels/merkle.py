"""Merkle roots and inclusion proofs over chunked byte streams (SPEC §5).

Schemes
-------
``sha256-hexcat``
    The legacy scheme the vectors use: leaf = sha256(chunk) as hex text, parent =
    sha256(utf8(left_hex + right_hex)), an odd last node paired with itself, no chunks
    -> 64 zeros. It has no leaf/node domain separation, so a parent can be passed off
    as a leaf (second preimage); prefer the schemes below for new deployments.
``sha256-rfc6962`` / ``blake3-rfc6962``
    RFC 6962 (Certificate Transparency) trees: leaf = H(0x00 || chunk), node =
    H(0x01 || left || right) over raw digests, an odd last node promoted unchanged
    (the "largest power of two on the left" shape), no chunks -> H(b"").

Input is hashed as it streams: bytes, any iterable of bytes-like pieces (re-cut into
``chunk_size`` leaves, so the root depends only on the concatenated bytes) or a file.
Memory is O(chunk_size + log n); proofs additionally keep 32 bytes per leaf. The
compiled implementation hashes without the GIL (OpenSSL SHA-256, a built-in BLAKE3);
``FLK_FAST_NO_EXTENSIONS=1`` selects the pure-Python twin, which gives equal results.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Any

from flk_fast import _env
from flk_fast.errors import KernelInputError, KernelTypeError

from . import _ext
from ._validate import byte_pieces

__all__ = [
    "MERKLE_SCHEMES",
    "MerkleProof",
    "merkle_proof",
    "merkle_root",
    "merkle_root_file",
    "merkle_verify",
]

MERKLE_SCHEMES = ("sha256-hexcat", "sha256-rfc6962", "blake3-rfc6962")
#: The scheme every function of this module defaults to: the legacy one, because it
#: is what a PCS's merkle_root uses (SPEC §5, §8) and a root must not change under a
#: caller who never named a scheme.
DEFAULT_SCHEME = MERKLE_SCHEMES[0]
_CODES = {name: i for i, name in enumerate(MERKLE_SCHEMES)}
_READ_SIZE = 1 << 20  # file reads: large enough for the parallel leaf path


def _load_impl() -> ModuleType:
    if _env.NO_EXTENSIONS:
        from . import _merkle_py

        return _merkle_py
    return _ext.load("_merkle_cy")


#: The implementation in use (``_merkle_cy`` or ``_merkle_py``); tests swap it.
_impl: ModuleType = _load_impl()

Data = bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview]


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """Inclusion proof of leaf ``index`` among ``leaf_count`` leaves.

    ``path`` lists the sibling digests (lowercase hex) from the leaf level up; levels
    where the node has no sibling (self-paired in the legacy scheme, promoted in the
    RFC 6962 ones) contribute nothing, as the verifier knows from index and count.
    """

    scheme: str
    chunk_size: int
    index: int
    leaf_count: int
    path: tuple[str, ...]


def _code(scheme: str) -> int:
    try:
        return _CODES[scheme]
    except KeyError:
        raise KernelInputError(
            f"unknown Merkle scheme {scheme!r}; "
            f"expected one of {', '.join(MERKLE_SCHEMES)}"
        ) from None


def _check_chunk(chunk_size: int) -> int:
    if (
        not isinstance(chunk_size, int)
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise KernelInputError(
            f"chunk_size must be an integer >= 1, got {chunk_size!r}"
        )
    return chunk_size


def _feed(builder: Any, data: Data) -> None:
    if isinstance(data, bytes | bytearray | memoryview):
        builder.update(data)
        return
    hint = "use merkle_root_file for a path, or encode the text"
    for piece in byte_pieces(data, "merkle", "pieces", hint):
        builder.update(piece)


def _file_pieces(source: str | os.PathLike[str] | IO[bytes]) -> Iterable[bytes]:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            while piece := fh.read(_READ_SIZE):
                yield piece
    else:
        while piece := source.read(_READ_SIZE):
            yield piece


def _threads(n_threads: int | None) -> int:
    # One thread by default: a second OpenMP thread only pays on an idle machine (see
    # docs/kernels.md); FLK_FAST_NUM_THREADS or n_threads opts in.
    if n_threads is not None:
        return max(1, n_threads)
    return _env.NUM_THREADS if _env.NUM_THREADS > 0 else 1


def merkle_root(
    data: Data,
    *,
    scheme: str = DEFAULT_SCHEME,
    chunk_size: int = 64,
    n_threads: int | None = None,
) -> str:
    """Merkle root (lowercase hex) of a byte stream cut into ``chunk_size`` leaves.

    Parameters
    ----------
    data : bytes-like or iterable of bytes-like
        The stream; pieces may have any length.
    scheme : {"sha256-hexcat", "sha256-rfc6962", "blake3-rfc6962"}
    chunk_size : int
        Leaf size in bytes (the last leaf may be shorter).
    n_threads : int, optional
        Threads hashing the leaves of large pieces (>= 1 MiB); default
        ``FLK_FAST_NUM_THREADS`` or 1.

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    KernelInputError
        Unknown scheme or chunk_size < 1.

    Examples
    --------
    >>> merkle_root(b"")
    '0000000000000000000000000000000000000000000000000000000000000000'
    >>> merkle_root([b"ab", b"c"], chunk_size=2) == merkle_root(b"abc", chunk_size=2)
    True
    """
    builder = _impl.Builder(
        _code(scheme), _check_chunk(chunk_size), False, _threads(n_threads)
    )
    _feed(builder, data)
    return builder.finalize().hex()


def merkle_root_file(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    scheme: str = DEFAULT_SCHEME,
    chunk_size: int = 64,
    n_threads: int | None = None,
) -> str:
    """Merkle root of a file (path or binary file object), read in 1 MiB pieces."""
    return merkle_root(
        _file_pieces(source), scheme=scheme, chunk_size=chunk_size, n_threads=n_threads
    )


def merkle_proof(
    data: Data, index: int, *, scheme: str = DEFAULT_SCHEME, chunk_size: int = 64
) -> MerkleProof:
    """Inclusion proof for leaf ``index`` of the stream (see :class:`MerkleProof`);
    the proof records its scheme and chunk size.

    Examples
    --------
    >>> data = bytes(range(200))
    >>> proof = merkle_proof(data, 2, chunk_size=64)
    >>> merkle_verify(merkle_root(data), data[128:192], proof)
    True
    """
    code = _code(scheme)
    builder = _impl.Builder(code, _check_chunk(chunk_size), True)
    _feed(builder, data)
    builder.finalize()
    count = builder.leaf_count
    if isinstance(index, bool) or not isinstance(index, int):
        raise KernelTypeError(f"leaf index must be an int, got {index!r}")
    if not 0 <= index < count:
        raise KernelInputError(f"leaf index {index} out of range for {count} leaves")
    level = builder.leaves()
    path: list[str] = []
    i, n = index, count
    while n > 1:
        sibling = i ^ 1
        if sibling < n:
            path.append(level[32 * sibling : 32 * sibling + 32].hex())
        level = _impl.level_up(level, code)
        i //= 2
        n = (n + 1) // 2
    return MerkleProof(scheme, chunk_size, index, count, tuple(path))


def merkle_verify(
    root: str, chunk: bytes, proof: MerkleProof, *, scheme: str = DEFAULT_SCHEME
) -> bool:
    """True when ``chunk`` is leaf ``proof.index`` of a tree whose root is ``root``.

    ``scheme`` is the scheme ``root`` was built with (the same default as
    :func:`merkle_root`). A proof of another scheme can never verify, so it raises
    KernelInputError naming both schemes rather than answering a silent False.
    Malformed proofs (bad index, wrong path length, non-hex digests) verify False.
    The final comparison is constant time.

    Examples
    --------
    >>> data = bytes(range(200))
    >>> proof = merkle_proof(data, 0, scheme="sha256-rfc6962")
    >>> merkle_verify(merkle_root(data), data[:64], proof)
    Traceback (most recent call last):
      ...
    flk_fast.errors.KernelInputError: merkle_verify: the proof is a sha256-rfc6962 ...
    """
    _code(scheme)
    if proof.scheme != scheme:
        raise KernelInputError(
            f"merkle_verify: the proof is a {proof.scheme} proof but the root is "
            f"taken as {scheme}; pass scheme={proof.scheme!r} if the root was built "
            "with it"
        )
    try:
        code = _code(proof.scheme)
        node = _impl.leaf_hash(code, bytes(chunk))
        i, n = proof.index, proof.leaf_count
        if not 0 <= i < n:
            return False
        path = iter(proof.path)
        used = 0
        while n > 1:
            if i ^ 1 < n:
                sib = bytes.fromhex(next(path))
                used += 1
                if len(sib) != 32:
                    return False
                node = (
                    _impl.node_hash(code, node, sib)
                    if i % 2 == 0
                    else _impl.node_hash(code, sib, node)
                )
            elif code == 0:
                node = _impl.node_hash(code, node, node)  # legacy self-pairing
            i //= 2
            n = (n + 1) // 2
        if used != len(proof.path):
            return False
        return hmac.compare_digest(node.hex(), root.lower())
    except (StopIteration, ValueError, TypeError):
        return False
