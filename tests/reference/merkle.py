"""Oracle of flk_fast.kernels.merkle: level-by-level trees with hashlib / blake3,
the whole input in memory (SPEC §5 and RFC 6962 §2.1)."""

from __future__ import annotations

import hashlib

import blake3


def _h(scheme: str, data: bytes) -> bytes:
    if scheme.startswith("blake3"):
        return blake3.blake3(data).digest()
    return hashlib.sha256(data).digest()


def ref_leaves(data: bytes, scheme: str, chunk_size: int) -> list[bytes]:
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    if scheme == "sha256-hexcat":
        return [hashlib.sha256(c).digest() for c in chunks]
    return [_h(scheme, b"\x00" + c) for c in chunks]


def ref_node(scheme: str, left: bytes, right: bytes) -> bytes:
    if scheme == "sha256-hexcat":
        return hashlib.sha256((left.hex() + right.hex()).encode()).digest()
    return _h(scheme, b"\x01" + left + right)


def ref_levels(data: bytes, scheme: str, chunk_size: int) -> list[list[bytes]]:
    level = ref_leaves(data, scheme, chunk_size)
    levels = [level]
    while len(level) > 1:
        nxt = [
            ref_node(scheme, level[i], level[i + 1])
            for i in range(0, len(level) - 1, 2)
        ]
        if (
            len(level) % 2
        ):  # legacy pairs the odd node with itself, RFC 6962 promotes it
            last = level[-1]
            nxt.append(
                ref_node(scheme, last, last) if scheme == "sha256-hexcat" else last
            )
        level = nxt
        levels.append(level)
    return levels


def ref_merkle_root(
    data: bytes, scheme: str = "sha256-hexcat", chunk_size: int = 64
) -> str:
    if not data:
        return "0" * 64 if scheme == "sha256-hexcat" else _h(scheme, b"").hex()
    return ref_levels(data, scheme, chunk_size)[-1][0].hex()


def ref_merkle_rfc6962(data: bytes, scheme: str, chunk_size: int) -> str:
    """RFC 6962 MTH by its recursive definition (largest power of two on the left), an
    independent check of the level-by-level promotion."""
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]

    def mth(items: list[bytes]) -> bytes:
        if not items:
            return _h(scheme, b"")
        if len(items) == 1:
            return _h(scheme, b"\x00" + items[0])
        k = 1
        while k * 2 < len(items):
            k *= 2
        return _h(scheme, b"\x01" + mth(items[:k]) + mth(items[k:]))

    return mth(chunks).hex()


def ref_merkle_proof(
    data: bytes, index: int, scheme: str, chunk_size: int
) -> list[str]:
    path = []
    i = index
    for level in ref_levels(data, scheme, chunk_size)[:-1]:
        if i ^ 1 < len(level):
            path.append(level[i ^ 1].hex())
        i //= 2
    return path
