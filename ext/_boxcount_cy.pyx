"""Distinct-voxel counts per scale (SPEC §4.1).

When the box spanned by the data's voxels at a scale is small (at most
max(2**22, 64 n) cells: the usual case, unit-cube data and scales <= 64), a bitmap of
that box counts them with one bit test per point and no hashing. Otherwise an
open-addressing hash set does.

The set stores the voxel coordinates themselves (d int64 per slot, contiguous) with a
hash tag per slot, and grows by doubling at load 1/2, so it stays as small as the
number of distinct voxels: for the usual unit-cube data and scales <= 32 it fits in
cache whatever n is.
Scales run in parallel (one private set each); every row is read once per scale.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy
cimport cython

import numpy as np

ctypedef fused floating:
    float
    double


cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    # splitmix64 finaliser: voxel coordinates are small, highly regular integers, so
    # they need full avalanche before masking to a table index.
    h ^= h >> 30
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= 0x94D049BB133111EBULL
    h ^= h >> 31
    return h


cdef inline int64_t _floor_i64(double x) noexcept nogil:
    # floor(x) as int64 without a libm call (baseline x86-64 has no roundsd): truncate,
    # then step down for negative non-integers. Exact for |x| < 2**63: above 2**52
    # every double is an integer, so t == x and no step is taken.
    cdef int64_t t = <int64_t> x
    return t - (x < <double> t)


cdef inline uint64_t _combine(uint64_t h, int64_t v) noexcept nogil:
    # One multiply per coordinate; _mix at the end gives the avalanche.
    h = (h ^ <uint64_t> v) * 0x9E3779B97F4A7C15ULL
    return (h << 29) | (h >> 35)


cdef int _grow(int64_t **keys, uint64_t **tags, uint64_t *cap,
               int64_t d) noexcept nogil:
    # Double the table; tags (hash | 1, 0 = empty) let rehashing skip the keys' hash.
    cdef uint64_t old_cap = cap[0], new_cap = old_cap * 2, i, slot
    cdef int64_t *old_keys = keys[0]
    cdef uint64_t *old_tags = tags[0]
    cdef int64_t *nk = <int64_t *> malloc(new_cap * d * sizeof(int64_t))
    cdef uint64_t *nt = <uint64_t *> calloc(new_cap, sizeof(uint64_t))
    if nk == NULL or nt == NULL:
        free(nk)
        free(nt)
        return -1
    for i in range(old_cap):
        if old_tags[i]:
            slot = old_tags[i] & (new_cap - 1)
            while nt[slot]:
                slot = (slot + 1) & (new_cap - 1)
            nt[slot] = old_tags[i]
            memcpy(nk + slot * d, old_keys + i * d, d * sizeof(int64_t))
    free(old_keys)
    free(old_tags)
    keys[0] = nk
    tags[0] = nt
    cap[0] = new_cap
    return 0


cdef int64_t _count_d3(const floating *P, int64_t n, floating s, int64_t **keys_p,
                       uint64_t **tags_p, uint64_t *cap_p) noexcept nogil:
    # d == 3 (the agent's x, y, z): coordinates stay in registers, same table layout
    # and hash as the general loop. Returns the count or -1 when out of memory.
    cdef uint64_t cap = cap_p[0], slot, h, tag
    cdef int64_t *keys = keys_p[0]
    cdef uint64_t *tags = tags_p[0]
    cdef int64_t count = 0, i, a, b, c
    cdef int64_t *key
    for i in range(n):
        # The product is rounded in the input dtype, as numpy's floor(P * s) is;
        # widening a float32 product to double is exact.
        a = _floor_i64(P[3 * i] * s)
        b = _floor_i64(P[3 * i + 1] * s)
        c = _floor_i64(P[3 * i + 2] * s)
        h = _combine(_combine(_combine(0x243F6A8885A308D3ULL, a), b), c)
        tag = _mix(h) | 1
        slot = tag & (cap - 1)
        while tags[slot]:
            if tags[slot] == tag:
                key = keys + 3 * slot
                if key[0] == a and key[1] == b and key[2] == c:
                    break
            slot = (slot + 1) & (cap - 1)
        else:
            tags[slot] = tag
            key = keys + 3 * slot
            key[0] = a
            key[1] = b
            key[2] = c
            count += 1
            if <uint64_t> count * 2 > cap:
                if _grow(&keys, &tags, &cap, 3) != 0:
                    count = -1
                    break
    keys_p[0] = keys
    tags_p[0] = tags
    cap_p[0] = cap
    return count


cdef int _grow_packed(uint64_t **tab, uint64_t *cap) noexcept nogil:
    cdef uint64_t old_cap = cap[0], new_cap = old_cap * 2, i, slot
    cdef uint64_t *old = tab[0]
    cdef uint64_t *nt = <uint64_t *> calloc(new_cap, sizeof(uint64_t))
    if nt == NULL:
        return -1
    for i in range(old_cap):
        if old[i]:
            slot = _mix(old[i]) & (new_cap - 1)
            while nt[slot]:
                slot = (slot + 1) & (new_cap - 1)
            nt[slot] = old[i]
    free(old)
    tab[0] = nt
    cap[0] = new_cap
    return 0


cdef int64_t _count_packed(const floating *P, int64_t n, int64_t d,
                           floating s) noexcept nogil:
    # d <= 3 and every voxel coordinate in [-2**20, 2**20) (box_counts checks
    # max|P| * scale < 2**20 - 1): the voxel packs into one word, 21 bits per
    # coordinate plus bit 63 as "occupied", so a slot is 8 bytes and a probe is one
    # compare. The tables of the usual scales then fit in L2.
    cdef uint64_t cap = 1024, slot, key
    cdef uint64_t *tab = <uint64_t *> calloc(cap, sizeof(uint64_t))
    cdef int64_t count = 0, i, k
    if tab == NULL:
        return -1
    for i in range(n):
        key = 1ULL << 63
        for k in range(d):
            key |= (<uint64_t> (_floor_i64(P[i * d + k] * s) + (1 << 20))) << (21 * k)
        slot = _mix(key) & (cap - 1)
        while tab[slot]:
            if tab[slot] == key:
                break
            slot = (slot + 1) & (cap - 1)
        else:
            tab[slot] = key
            count += 1
            if <uint64_t> count * 2 > cap:
                if _grow_packed(&tab, &cap) != 0:
                    count = -1
                    break
    free(tab)
    return count


@cython.cdivision(True)
cdef int64_t _count_one(const floating *P, int64_t n, int64_t d,
                        int64_t scale) noexcept nogil:
    # Returns the distinct count, or -1 when out of memory.
    # Unchecked: floor(P * scale) fits int64 for every cell (flk_fast.kernels.box_counts
    # checks max|P| * max(scale) < 2**63) and P is finite.
    # The table stores each voxel's d coordinates plus a tag (its full hash | 1); a
    # probe compares tags first, so a miss rarely touches the keys.
    cdef uint64_t cap = 1024, slot, h, tag
    cdef int64_t *keys = <int64_t *> malloc(cap * d * sizeof(int64_t))
    cdef uint64_t *tags = <uint64_t *> calloc(cap, sizeof(uint64_t))
    cdef int64_t *vox = <int64_t *> malloc(d * sizeof(int64_t))
    cdef int64_t count = 0, i, k
    cdef int64_t *key
    cdef bint same
    cdef floating s = <floating> scale
    if keys == NULL or tags == NULL or vox == NULL:
        free(keys)
        free(tags)
        free(vox)
        return -1
    if d == 3:
        count = _count_d3(P, n, s, &keys, &tags, &cap)
        free(keys)
        free(tags)
        free(vox)
        return count
    for i in range(n):
        h = 0x243F6A8885A308D3ULL
        for k in range(d):
            # The product is rounded in the input dtype, as numpy's floor(P * s) is.
            vox[k] = _floor_i64(P[i * d + k] * s)
            h = _combine(h, vox[k])
        tag = _mix(h) | 1
        slot = tag & (cap - 1)
        while tags[slot]:
            if tags[slot] == tag:
                key = keys + slot * d
                same = True
                for k in range(d):
                    if key[k] != vox[k]:
                        same = False
                        break
                if same:
                    break
            slot = (slot + 1) & (cap - 1)
        else:
            tags[slot] = tag
            memcpy(keys + slot * d, vox, d * sizeof(int64_t))
            count += 1
            if <uint64_t> count * 2 > cap:
                if _grow(&keys, &tags, &cap, d) != 0:
                    count = -1
                    break
    free(keys)
    free(tags)
    free(vox)
    return count


cdef int64_t _count_bitmap(const floating *P, int64_t n, int64_t d, floating s,
                           const int64_t *lo, const int64_t *ext) noexcept nogil:
    # The voxels of this scale lie in the box lo[k] .. lo[k] + ext[k] - 1 (floor is
    # monotone, so the voxels of the column minima and maxima bound all others): one
    # bit per cell of that box, no hashing. Returns -1 when out of memory.
    # Unchecked: prod(ext) fits the bitmap budget (box_counts computes lo and ext
    # with the same dtype arithmetic and decides).
    cdef int64_t cells = 1, i, k, idx, count = 0
    cdef uint64_t *bits
    cdef uint64_t bit
    for k in range(d):
        cells *= ext[k]
    bits = <uint64_t *> calloc((cells + 63) // 64, sizeof(uint64_t))
    if bits == NULL:
        return -1
    for i in range(n):
        idx = 0
        for k in range(d):
            idx = idx * ext[k] + (_floor_i64(P[i * d + k] * s) - lo[k])
        bit = 1ULL << (idx & 63)
        if not (bits[idx >> 6] & bit):
            bits[idx >> 6] |= bit
            count += 1
    free(bits)
    return count


def _boxes(scales, points, lo, ext):
    # No bitmap boxes given: every scale takes a hash set (ext[:, 0] == 0).
    if lo is None or ext is None:
        z = np.zeros((scales.shape[0], max(1, points.shape[1])), dtype=np.int64)
        return z, z
    return lo, ext


cdef object _box_counts(const floating[:, ::1] points, const int64_t[::1] scales,
                        int nthreads, bint packed, const int64_t[:, ::1] lo,
                        const int64_t[:, ::1] ext):
    cdef int64_t n = points.shape[0], d = points.shape[1], m = scales.shape[0], j
    out = np.zeros(m, dtype=np.int64)
    cdef int64_t[::1] res = out
    cdef int t = nthreads if nthreads > 0 else 2
    if n == 0 or m == 0:
        return out
    if m < t:
        t = <int> m
    with nogil:
        for j in prange(m, num_threads=t, schedule="dynamic"):
            if ext[j, 0] > 0:
                res[j] = _count_bitmap(&points[0, 0], n, d, <floating> scales[j],
                                       &lo[j, 0], &ext[j, 0])
            elif packed:
                res[j] = _count_packed(&points[0, 0], n, d, <floating> scales[j])
            else:
                res[j] = _count_one(&points[0, 0], n, d, scales[j])
    if (out < 0).any():
        raise MemoryError("box_counts: out of memory for the voxel hash set")
    return out


cdef object _colrange(const floating[:, ::1] points):
    cdef int64_t n = points.shape[0], d = points.shape[1], i, k
    lo_a = np.array(points[0], dtype=np.float64)
    hi_a = lo_a.copy()
    cdef double[::1] lo = lo_a, hi = hi_a
    cdef double v
    with nogil:
        for i in range(n):
            for k in range(d):
                v = points[i, k]
                if v < lo[k]:
                    lo[k] = v
                if v > hi[k]:
                    hi[k] = v
    return lo_a, hi_a


def colrange_f64(const double[:, ::1] points):
    """Per-column minimum and maximum (float64 arrays). Unchecked: n >= 1."""
    return _colrange(points)


def colrange_f32(const float[:, ::1] points):
    """Per-column minimum and maximum, as float64 (exact). Unchecked: n >= 1."""
    return _colrange(points)


def box_counts_f64(const double[:, ::1] points, const int64_t[::1] scales,
                   int nthreads=0, bint packed=False, lo=None, ext=None):
    """Distinct ``floor(points * s)`` rows for each scale ``s`` (float64 points).

    Unchecked: with ``packed``, d <= 3 and max|points| * max(scales) < 2**20 - 1;
    ``lo``/``ext`` (m, d) int64, where ``ext[j, 0] > 0``, bound every voxel of scale j
    and their product fits the bitmap budget (flk_fast.kernels.box_counts decides)."""
    lo_a, ext_a = _boxes(scales, points, lo, ext)
    cdef const int64_t[:, ::1] lo_v = lo_a
    cdef const int64_t[:, ::1] ext_v = ext_a
    return _box_counts(points, scales, nthreads, packed, lo_v, ext_v)


def box_counts_f32(const float[:, ::1] points, const int64_t[::1] scales,
                   int nthreads=0, bint packed=False, lo=None, ext=None):
    """Distinct ``floor(points * s)`` rows for each scale ``s`` (float32 products).

    Unchecked: as box_counts_f64."""
    lo_a, ext_a = _boxes(scales, points, lo, ext)
    cdef const int64_t[:, ::1] lo_v = lo_a
    cdef const int64_t[:, ::1] ext_v = ext_a
    return _box_counts(points, scales, nthreads, packed, lo_v, ext_v)
