"""Pure-Python twin of ``_merkle_cy`` (hashlib / blake3), same API and results.

Selected when ``FLK_FAST_NO_EXTENSIONS=1`` or the extension is absent, so an agent
without a compiler can still build summaries. hashlib releases the GIL for inputs
over 2 KiB; small leaves do not.
"""

from __future__ import annotations

import hashlib

import blake3

__all__ = ["SCHEMES", "Builder", "leaf_hash", "level_up", "node_hash"]

SCHEMES = {"sha256-hexcat": 0, "sha256-rfc6962": 1, "blake3-rfc6962": 2}
_HEXCAT, _SHA_RFC, _B3_RFC = 0, 1, 2


def leaf_hash(scheme: int, chunk: bytes | bytearray | memoryview) -> bytes:
    """Digest of one leaf (32 raw bytes)."""
    if scheme == _HEXCAT:
        return hashlib.sha256(chunk).digest()
    if scheme == _SHA_RFC:
        return hashlib.sha256(b"\x00" + bytes(chunk)).digest()
    return blake3.blake3(b"\x00" + bytes(chunk)).digest()


def node_hash(scheme: int, left: bytes, right: bytes) -> bytes:
    """Digest of an inner node from its children's 32-byte digests."""
    if scheme == _HEXCAT:
        return hashlib.sha256((left.hex() + right.hex()).encode()).digest()
    if scheme == _SHA_RFC:
        return hashlib.sha256(b"\x01" + left + right).digest()
    return blake3.blake3(b"\x01" + left + right).digest()


def _empty_root(scheme: int) -> bytes:
    if scheme == _HEXCAT:
        return bytes(32)
    if scheme == _SHA_RFC:
        return hashlib.sha256(b"").digest()
    return blake3.blake3(b"").digest()


def level_up(level: bytes, scheme: int) -> bytes:
    """Parents of one level; legacy pairs an odd last node with itself, RFC 6962
    promotes it."""
    nodes = [level[i : i + 32] for i in range(0, len(level), 32)]
    out = [
        node_hash(scheme, nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)
    ]
    if len(nodes) % 2:
        last = nodes[-1]
        out.append(node_hash(scheme, last, last) if scheme == _HEXCAT else last)
    return b"".join(out)


class Builder:
    """Incremental Merkle root over a byte stream cut into ``chunk_size`` leaves."""

    def __init__(
        self, scheme: int, chunk_size: int, keep_leaves: bool = False, nthreads: int = 0
    ) -> None:
        self._scheme = scheme
        self._chunk = chunk_size
        self._partial = bytearray()
        self._stack: list[bytes | None] = []
        self._count = 0
        self._keep = keep_leaves
        self._leaves: list[bytes] = []

    def _push(self, leaf: bytes) -> None:
        if self._keep:
            self._leaves.append(leaf)
        self._count += 1
        node, h = leaf, 0
        while h < len(self._stack) and self._stack[h] is not None:
            node = node_hash(self._scheme, self._stack[h], node)  # type: ignore[arg-type]
            self._stack[h] = None
            h += 1
        if h == len(self._stack):
            self._stack.append(node)
        else:
            self._stack[h] = node

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to the stream."""
        view = memoryview(data).cast("B")
        pos = 0
        if self._partial:
            take = min(self._chunk - len(self._partial), len(view))
            self._partial += view[:take]
            pos = take
            if len(self._partial) == self._chunk:
                self._push(leaf_hash(self._scheme, bytes(self._partial)))
                self._partial.clear()
        while len(view) - pos >= self._chunk:
            self._push(leaf_hash(self._scheme, view[pos : pos + self._chunk]))
            pos += self._chunk
        self._partial += view[pos:]

    def finalize(self) -> bytes:
        """Root digest (32 raw bytes)."""
        if self._partial:
            self._push(leaf_hash(self._scheme, bytes(self._partial)))
            self._partial.clear()
        if self._count == 0:
            return _empty_root(self._scheme)
        levels = self._stack
        top = max(h for h, v in enumerate(levels) if v is not None)
        node: bytes | None = None
        for h in range(top + 1):
            here = levels[h]
            if self._scheme == _HEXCAT:
                if node is None:
                    if here is not None:
                        if h == top:
                            return here
                        node = node_hash(self._scheme, here, here)
                elif here is not None:
                    node = node_hash(self._scheme, here, node)
                else:
                    node = node_hash(self._scheme, node, node)
            elif here is not None:
                node = here if node is None else node_hash(self._scheme, here, node)
        assert node is not None
        return node

    @property
    def leaf_count(self) -> int:
        return self._count

    def leaves(self) -> bytes:
        """Concatenated leaf digests (only when built with keep_leaves=True)."""
        if not self._keep:
            raise ValueError("Builder was created without keep_leaves")
        return b"".join(self._leaves)
