# distutils: libraries = crypto
"""Streaming Merkle roots for the schemes of SPEC §5, hashing without the GIL.

Leaves of one ``update`` call are hashed in parallel (OpenMP) into a scratch array,
then pushed through a binary-counter stack of complete subtrees, so memory is
O(chunk_size + log n) whatever the input size (plus 32 bytes per leaf only when the
caller asks to keep leaves, for inclusion proofs).
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

cdef extern from "_flk_merkle.h" nogil:
    int FLK_HEXCAT, FLK_SHA256_RFC, FLK_BLAKE3_RFC
    void flk_leaf(int scheme, const uint8_t *p, size_t len, uint8_t out[32])
    void flk_leaves(int scheme, const uint8_t *p, size_t chunk_size, int64_t count,
                    uint8_t *out)
    void flk_node(int scheme, const uint8_t *l, const uint8_t *r, uint8_t out[32])
    void flk_empty_root(int scheme, uint8_t out[32])

# Leaves hashed per parallel batch; bounds the scratch array (32 B per leaf).
cdef int64_t _BATCH = 8192
# Below this many bytes per update, threads cost more than they save.
cdef int64_t _PARALLEL_MIN_BYTES = 1 << 20
DEF _MAX_DEPTH = 64

SCHEMES = {"sha256-hexcat": 0, "sha256-rfc6962": 1, "blake3-rfc6962": 2}


cdef class Builder:
    """Incremental Merkle root over a byte stream cut into ``chunk_size`` leaves.

    Unchecked: ``scheme`` is a value of SCHEMES and ``chunk_size >= 1``
    (flk_fast.kernels.merkle validates both).
    """

    cdef int scheme
    cdef int64_t chunk_size, partial_len, nleaves
    cdef uint8_t *partial
    cdef uint8_t stack[_MAX_DEPTH][32]
    cdef uint8_t occupied[_MAX_DEPTH]
    cdef bint keep_leaves
    cdef uint8_t *leafbuf
    cdef int64_t leaves_cap
    cdef int nthreads

    def __cinit__(self, int scheme, int64_t chunk_size, bint keep_leaves=False,
                  int nthreads=0):
        self.scheme = scheme
        self.chunk_size = chunk_size
        self.partial_len = 0
        self.nleaves = 0
        self.keep_leaves = keep_leaves
        self.leafbuf = NULL
        self.leaves_cap = 0
        # One thread unless asked: hashing is memory-light, and on a shared machine a
        # second OpenMP thread measured slower than one (it waits for its core).
        self.nthreads = nthreads if nthreads > 0 else 1
        for i in range(_MAX_DEPTH):
            self.occupied[i] = 0
        self.partial = <uint8_t *> malloc(chunk_size)
        if self.partial == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.partial)
        free(self.leafbuf)

    cdef int _push(self, const uint8_t *leaf) except -1 nogil:
        # Binary counter: a completed subtree at height h waits in stack[h] for its
        # right sibling; equal heights merge immediately, as in level-by-level pairing.
        cdef uint8_t node[32]
        cdef int h = 0
        cdef int64_t need
        memcpy(node, leaf, 32)
        if self.keep_leaves:
            if (self.nleaves + 1) * 32 > self.leaves_cap:
                need = self.leaves_cap * 2 if self.leaves_cap else 32 * 1024
                self.leafbuf = <uint8_t *> realloc(self.leafbuf, need)
                if self.leafbuf == NULL:
                    with gil:
                        raise MemoryError()
                self.leaves_cap = need
            memcpy(self.leafbuf + self.nleaves * 32, leaf, 32)
        self.nleaves += 1
        while self.occupied[h]:
            flk_node(self.scheme, self.stack[h], node, node)
            self.occupied[h] = 0
            h += 1
        memcpy(self.stack[h], node, 32)
        self.occupied[h] = 1
        return 0

    def update(self, const uint8_t[::1] data not None):
        """Append bytes to the stream (any length; chunk boundaries are kept)."""
        cdef int64_t n = data.shape[0], pos = 0, take, full, b, k, nb
        cdef const uint8_t *p
        cdef uint8_t *scratch
        cdef int t
        if n == 0:
            return
        p = &data[0]
        with nogil:
            if self.partial_len:
                take = self.chunk_size - self.partial_len
                if take > n:
                    take = n
                memcpy(self.partial + self.partial_len, p, take)
                self.partial_len += take
                pos = take
                if self.partial_len == self.chunk_size:
                    scratch = <uint8_t *> malloc(32)
                    flk_leaf(self.scheme, self.partial, self.chunk_size, scratch)
                    self._push(scratch)
                    free(scratch)
                    self.partial_len = 0
            # Whole chunks straight from the caller's buffer, never copied.
            full = (n - pos) // self.chunk_size
            if full > 0:
                t = self.nthreads if (n - pos) >= _PARALLEL_MIN_BYTES else 1
                scratch = <uint8_t *> malloc(32 * (_BATCH if full > _BATCH else full))
                b = 0
                while b < full:
                    nb = full - b if full - b < _BATCH else _BATCH
                    # Groups of 8 leaves: one AVX2 BLAKE3 call per group.
                    for k in prange((nb + 7) // 8, num_threads=t, schedule="static"):
                        flk_leaves(self.scheme,
                                   p + pos + (b + 8 * k) * self.chunk_size,
                                   self.chunk_size, 8 if nb - 8 * k > 8 else nb - 8 * k,
                                   scratch + 32 * 8 * k)
                    for k in range(nb):
                        self._push(scratch + 32 * k)
                    b += nb
                free(scratch)
                pos += full * self.chunk_size
            if pos < n:
                memcpy(self.partial, p + pos, n - pos)
                self.partial_len = n - pos

    def finalize(self):
        """Root digest (32 raw bytes). The builder must not be updated afterwards."""
        cdef uint8_t out[32]
        cdef uint8_t node[32]
        cdef int h, top = -1
        cdef bint have = False
        if self.partial_len:  # the last, short chunk is a leaf too
            flk_leaf(self.scheme, self.partial, self.partial_len, out)
            self._push(out)
            self.partial_len = 0
        if self.nleaves == 0:
            flk_empty_root(self.scheme, out)
            return bytes(out[:32])
        for h in range(_MAX_DEPTH):
            if self.occupied[h]:
                top = h
        for h in range(top + 1):
            if self.scheme == FLK_HEXCAT:
                # Legacy: an odd node at the end of a level is paired with itself.
                if not have:
                    if self.occupied[h]:
                        if h == top:
                            return bytes(self.stack[h][:32])
                        flk_node(self.scheme, self.stack[h], self.stack[h], node)
                        have = True
                else:
                    if self.occupied[h]:
                        flk_node(self.scheme, self.stack[h], node, node)
                    else:
                        flk_node(self.scheme, node, node, node)
            else:
                # RFC 6962: an odd node is promoted unchanged.
                if self.occupied[h]:
                    if not have:
                        memcpy(node, self.stack[h], 32)
                        have = True
                    else:
                        flk_node(self.scheme, self.stack[h], node, node)
        return bytes(node[:32])

    @property
    def leaf_count(self):
        return self.nleaves

    def leaves(self):
        """Concatenated leaf digests (only when built with keep_leaves=True)."""
        if not self.keep_leaves:
            raise ValueError("Builder was created without keep_leaves")
        if self.nleaves == 0:
            return b""
        return bytes(self.leafbuf[:self.nleaves * 32])


def level_up(const uint8_t[::1] level not None, int scheme):
    """Parents of one tree level (concatenated 32-byte digests), legacy pairing the odd
    last node with itself and the RFC 6962 schemes promoting it."""
    cdef int64_t n = level.shape[0] // 32, m = (n + 1) // 2, i
    out = bytearray(32 * m)
    cdef uint8_t[::1] o = out
    if n == 0:
        return b""
    with nogil:
        for i in range(n // 2):
            flk_node(scheme, &level[64 * i], &level[64 * i + 32], &o[32 * i])
        if n % 2:
            if scheme == FLK_HEXCAT:
                flk_node(scheme, &level[32 * (n - 1)], &level[32 * (n - 1)],
                         &o[32 * (m - 1)])
            else:
                memcpy(&o[32 * (m - 1)], &level[32 * (n - 1)], 32)
    return bytes(out)


def leaf_hash(int scheme, const uint8_t[::1] chunk not None):
    """Digest of one leaf."""
    cdef uint8_t out[32]
    cdef const uint8_t *p = &chunk[0] if chunk.shape[0] else <const uint8_t *> b""
    with nogil:
        flk_leaf(scheme, p, chunk.shape[0], out)
    return bytes(out[:32])


def node_hash(int scheme, const uint8_t[::1] left not None,
              const uint8_t[::1] right not None):
    """Digest of an inner node. Unchecked: both digests are 32 bytes (the wrapper's
    proof verifier checks lengths)."""
    cdef uint8_t out[32]
    with nogil:
        flk_node(scheme, &left[0], &right[0], out)
    return bytes(out[:32])
