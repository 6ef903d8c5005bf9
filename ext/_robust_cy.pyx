"""Robust slopes: exact Theil-Sen selection without materialising the n^2 slopes, and
the batch D-hat of SPEC §4.2.

Theil-Sen (see docs/kernels.md for the argument):
* C(t) = #pairs whose slope is < t is the number of strict inversions of
  z_i(t) = y_i - t*x_i in x order (merge sort, O(n log n)).
* Pairs with slope in [lo, hi] are exactly the inversions between the z(lo) order and
  the z(hi) order; they can be counted, sampled uniformly (Fenwick tree) or enumerated.
* Randomised interval shrinking keeps the target ranks inside [lo, hi] until at most
  O(n) pairs remain, which are enumerated and their *floating-point* slopes
  (y_j - y_i) / (x_j - x_i), exactly as the brute force computes them, are selected.
z is evaluated in double-double (error ~2^-104 relative), and the interval ends are
pushed outwards by a relative 2^-40 so that the rounding of the brute force's slope
(<= 3 ulp) can never move a pair across them; the wrapper verifies that bound on the
answer and widens the interval otherwise.
"""
from cython.parallel cimport prange
from libc.math cimport fma, frexp, log2, fabs, rint, isnan, copysign, NAN, INFINITY
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport malloc, free, strtod
from libc.stdio cimport snprintf
import numpy as np


# ---------------------------------------------------------------- double-double keys

cdef inline void _z(double y, double x, double t, double *hi,
                    double *lo) noexcept nogil:
    # z = y - t*x as an unevaluated sum hi + lo: t*x = p + e exactly (FMA), y - p =
    # s + f exactly (TwoSum), then the small terms are folded in once.
    cdef double p = t * x
    cdef double e = fma(t, x, -p)
    cdef double s = y - p
    cdef double bb = s - y
    cdef double f = (y - (s - bb)) + (-p - bb)
    cdef double g = f - e
    cdef double h = s + g
    cdef double bv = h - s
    hi[0] = h
    lo[0] = (s - (h - bv)) + (g - bv)


cdef struct Keys:
    const double *zh
    const double *zl
    const double *x
    int xdesc


cdef inline bint _less(const Keys *k, int64_t a, int64_t b) noexcept nogil:
    # Order by z (double-double), then x (asc, or desc when xdesc), then index.
    if k.zh[a] != k.zh[b]:
        return k.zh[a] < k.zh[b]
    if k.zl[a] != k.zl[b]:
        return k.zl[a] < k.zl[b]
    if k.x[a] != k.x[b]:
        return (k.x[a] > k.x[b]) if k.xdesc else (k.x[a] < k.x[b])
    return a < b


cdef void _msort(const Keys *k, int64_t *idx, int64_t *tmp, int64_t n) noexcept nogil:
    # Bottom-up merge sort of point indices by _less.
    cdef int64_t width = 1, i, lft, m, r, a, b, o
    cdef int64_t *src = idx
    cdef int64_t *dst = tmp
    cdef int64_t *sw
    while width < n:
        i = 0
        while i < n:
            lft = i
            m = i + width if i + width < n else n
            r = i + 2 * width if i + 2 * width < n else n
            a = lft
            b = m
            o = lft
            while a < m and b < r:
                if _less(k, src[b], src[a]):
                    dst[o] = src[b]
                    b += 1
                else:
                    dst[o] = src[a]
                    a += 1
                o += 1
            while a < m:
                dst[o] = src[a]
                a += 1
                o += 1
            while b < r:
                dst[o] = src[b]
                b += 1
                o += 1
            i += 2 * width
        sw = src
        src = dst
        dst = sw
        width *= 2
    if src != idx:
        for i in range(n):
            idx[i] = src[i]


# ---------------------------------------------------------------- inversion machinery

cdef int64_t _count_inv(int64_t *seq, int64_t *tmp, int64_t n,
                        const double *pts_x, const double *pts_y,
                        const int64_t *point_of, const int64_t *point_of2,
                        double *out, int64_t out_cap) noexcept nogil:
    # Strict inversions of a permutation seq (values distinct) by bottom-up merge sort.
    # seq is destroyed. When out is not NULL, the slope of every inverted pair is
    # written there: the pair is (point_of[value of the larger], point_of2[position
    # key]) -- see _band for how values map to points. Returns the count.
    cdef int64_t width = 1, i, lft, m, r, a, b, o, c, total = 0, w = 0
    cdef int64_t *src = seq
    cdef int64_t *dst = tmp
    cdef int64_t *sw
    cdef int64_t pa, pb
    while width < n:
        i = 0
        while i < n:
            lft = i
            m = i + width if i + width < n else n
            r = i + 2 * width if i + 2 * width < n else n
            a = lft
            b = m
            o = lft
            while a < m and b < r:
                if src[b] < src[a]:
                    total += m - a
                    if out != NULL:
                        pb = point_of[src[b]]
                        for c in range(a, m):
                            pa = point_of[src[c]]
                            out[w] = (pts_y[pb] - pts_y[pa]) / (pts_x[pb] - pts_x[pa])
                            w += 1
                    dst[o] = src[b]
                    b += 1
                else:
                    dst[o] = src[a]
                    a += 1
                o += 1
            while a < m:
                dst[o] = src[a]
                a += 1
                o += 1
            while b < r:
                dst[o] = src[b]
                b += 1
                o += 1
            i += 2 * width
        sw = src
        src = dst
        dst = sw
        width *= 2
    return total


cdef inline uint64_t _splitmix(uint64_t *state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef class _Problem:
    """x-sorted points and scratch buffers shared by every round."""
    cdef readonly object xs, ys
    cdef const double[::1] x
    cdef const double[::1] y
    cdef int64_t n
    cdef bint distinct_x

    def __init__(self, xs, ys):
        self.xs = xs
        self.ys = ys
        self.x = xs
        self.y = ys
        self.n = xs.shape[0]
        # Sorted input: equal x values are adjacent.
        self.distinct_x = bool(self.n < 2 or (np.diff(xs) != 0).all())

    cdef object _order(self, double t, int xdesc, bint infinite):
        # Points sorted by z(t) with the tie rules of _less; t = -inf / +inf mean
        # "every pair above" / "every pair below", i.e. plain x order asc / desc.
        cdef int64_t n = self.n, i
        zh_a = np.zeros(n)
        zl_a = np.zeros(n)
        idx_a = np.arange(n, dtype=np.int64)
        tmp_a = np.empty(n, dtype=np.int64)
        cdef double[::1] zh = zh_a, zl = zl_a
        cdef int64_t[::1] idx = idx_a, tmp = tmp_a
        cdef Keys k
        with nogil:
            if not infinite:
                for i in range(n):
                    _z(self.y[i], self.x[i], t, &zh[i], &zl[i])
            k.zh = &zh[0]
            k.zl = &zl[0]
            k.x = &self.x[0]
            k.xdesc = xdesc
            _msort(&k, &idx[0], &tmp[0], n)
        return idx_a

    def count_below(self, double t, o1=None):
        """#pairs (distinct x) whose real slope is < t, from double-double z(t).
        ``o1`` may pass band(t, ...)[0], the same z(t) order, to skip a sort."""
        cdef int64_t n = self.n, i
        cdef double[::1] zh, zl
        if t == -INFINITY:
            return 0
        # Inversions of the z rank (ties: x asc, so slope == t never counts) read in
        # x order; equal-x runs are read in z order so they never count.
        zorder = self._order(t, 0, False) if o1 is None else o1
        rank = np.empty(n, dtype=np.int64)
        rank[zorder] = np.arange(n, dtype=np.int64)
        if self.distinct_x:
            seq_a = rank
        else:
            zh_a = np.zeros(n)
            zl_a = np.zeros(n)
            zh = zh_a
            zl = zl_a
            with nogil:
                for i in range(n):
                    _z(self.y[i], self.x[i], t, &zh[i], &zl[i])
            order_xz = np.lexsort((np.arange(n), zl_a, zh_a, self.xs))
            seq_a = np.ascontiguousarray(rank[order_xz])
        tmp_a = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] seq = seq_a, tmp = tmp_a
        cdef int64_t c
        with nogil:
            c = _count_inv(&seq[0], &tmp[0], n, NULL, NULL, NULL, NULL, NULL, 0)
        return c

    def band(self, double lo, double hi):
        """(O1 order, O2 order, seq) for the pairs with slope in [lo, hi]: seq[q] is
        the O1 rank of the q-th point in O2 order; inversions of seq are the pairs."""
        o1 = self._order(lo, 0, lo == -INFINITY)
        o2 = self._order(hi, 1, hi == INFINITY)
        n = self.n
        rank1 = np.empty(n, dtype=np.int64)
        rank1[o1] = np.arange(n, dtype=np.int64)
        return o1, o2, np.ascontiguousarray(rank1[o2])

    def count_band(self, seq_in):
        cdef int64_t[::1] seq = seq_in.copy()
        tmp_a = np.empty(self.n, dtype=np.int64)
        cdef int64_t[::1] tmp = tmp_a
        cdef int64_t c
        with nogil:
            c = _count_inv(&seq[0], &tmp[0], self.n, NULL, NULL, NULL, NULL, NULL, 0)
        return c

    def enumerate_band(self, o1_in, seq_in, int64_t k):
        """Floating-point slopes of the k pairs of the band, as the brute force
        computes them."""
        cdef int64_t[::1] seq = seq_in.copy()
        cdef const int64_t[::1] o1 = o1_in
        tmp_a = np.empty(self.n, dtype=np.int64)
        out_a = np.empty(k if k > 0 else 1)
        cdef int64_t[::1] tmp = tmp_a
        cdef double[::1] out = out_a
        with nogil:
            _count_inv(&seq[0], &tmp[0], self.n, &self.x[0], &self.y[0], &o1[0],
                       NULL, &out[0], k)
        return out_a[:k]

    def sample_band(self, o1_in, o2_in, seq_in, int64_t k, int64_t m, uint64_t seed):
        """Slopes of m pairs drawn uniformly (with replacement) from the k band
        pairs."""
        cdef int64_t n = self.n, q, v, i, pos, want, step, c_q, s_i = 0
        cdef const int64_t[::1] o1 = o1_in, o2 = o2_in, seq = seq_in
        cdef uint64_t state = seed
        draws_a = np.empty(m, dtype=np.int64)
        cdef int64_t[::1] draws = draws_a
        for i in range(m):
            draws[i] = <int64_t> (_splitmix(&state) % <uint64_t> k)
        draws_a.sort()
        fen_a = np.zeros(n + 1, dtype=np.int64)
        out_a = np.empty(m)
        cdef int64_t[::1] fen = fen_a
        cdef double[::1] out = out_a
        cdef int64_t prefix = 0, le, pa, pb, top = 1
        while top * 2 <= n:
            top *= 2
        with nogil:
            for q in range(n):
                v = seq[q]
                # le = #inserted values < v
                le = 0
                i = v
                while i > 0:
                    le += fen[i]
                    i -= i & (-i)
                c_q = q - le
                while s_i < m and draws[s_i] < prefix + c_q:
                    # The (le + offset)-th smallest inserted value (0-based) is the
                    # offset-th inserted value greater than v.
                    want = le + (draws[s_i] - prefix) + 1
                    pos = 0
                    step = top
                    while step > 0:
                        if pos + step <= n and fen[pos + step] < want:
                            pos += step
                            want -= fen[pos]
                        step >>= 1
                    pa = o1[pos]  # value pos (0-based) = O1 rank pos
                    pb = o2[q]
                    out[s_i] = (self.y[pb] - self.y[pa]) / (self.x[pb] - self.x[pa])
                    s_i += 1
                prefix += c_q
                i = v + 1
                while i <= n:
                    fen[i] += 1
                    i += i & (-i)
        return out_a


def problem(xs, ys):
    """Wrap x-sorted float64 arrays (see flk_fast.kernels.robust.theil_sen)."""
    return _Problem(xs, ys)


# ---------------------------------------------------------------- batch D-hat

cdef double _round9(double x) noexcept nogil:
    # Python's round(x, 9): the double nearest to the decimal rounding (half-even on
    # the exact binary value) of x to 9 places. N = that decimal * 1e9 is found from
    # the exact product x*1e9 = p + e (FMA); fl(N / 1e9) is then the correctly rounded
    # value of N * 10^-9, as Python's strtod would give.
    cdef double p, e, c, d
    cdef char buf[64]
    if isnan(x) or x == INFINITY or x == -INFINITY:
        return x
    p = x * 1e9
    if fabs(p) >= 4503599627370496.0:  # 2^52: rare, take the exact slow path
        snprintf(buf, 64, "%.9f", x)
        return strtod(buf, NULL)
    c = rint(p)  # half-even on p
    d = p - c    # exact: |p| < 2^52
    if d != 0.5 and d != -0.5:  # no tie on p: the rounding error of p cannot matter
        r = c / 1e9
        return r if r != 0.0 else copysign(0.0, x)
    e = fma(x, 1e9, -p)  # a library call on baseline x86-64: only for ties
    if d == 0.5 and e > 0:
        c += 1.0
    elif d == -0.5 and e < 0:
        c -= 1.0
    elif (d == 0.5 and e < 0) or (d == -0.5 and e > 0):
        pass  # the exact value is nearer to c, which rint already chose
    elif d == 0.5 or d == -0.5:
        pass  # exact tie: rint's even choice is Python's
    r = c / 1e9
    return r if r != 0.0 else copysign(0.0, x)  # Python keeps the sign of zero


DEF _LOG2_TABLE_N = 4096
# log2 of small counts, filled once with the same libm log2 (so values are identical);
# box counts are usually small and log2 is most of the per-row cost.
cdef double _LOG2_TABLE[_LOG2_TABLE_N]
cdef int _ti
for _ti in range(1, _LOG2_TABLE_N):
    _LOG2_TABLE[_ti] = log2(<double> _ti)


cdef double _dhat_row(const double *xs, const int64_t *nj, int64_t k,
                      double *ys, double *sl) noexcept nogil:
    # SPEC §4.2 for one PCS given log2 of its scales (NaN marks a scale <= 0); NaN
    # for an invalid row. ys holds k doubles, sl k(k-1)/2.
    cdef int64_t i, j, m = 0, a
    cdef double dx, v
    if k < 2:
        return NAN
    for i in range(k):
        if nj[i] <= 0 or isnan(xs[i]):
            return NAN
        ys[i] = _LOG2_TABLE[nj[i]] if nj[i] < _LOG2_TABLE_N else log2(<double> nj[i])
    for i in range(k):
        for j in range(i + 1, k):
            dx = xs[j] - xs[i]
            if fabs(dx) >= 1e-9:
                sl[m] = (ys[j] - ys[i]) / dx
                m += 1
    if m == 0:
        return NAN
    for i in range(1, m):  # insertion sort: m is k(k-1)/2 with k a handful of scales
        v = sl[i]
        a = i - 1
        while a >= 0 and sl[a] > v:
            sl[a + 1] = sl[a]
            a -= 1
        sl[a + 1] = v
    return _round9(sl[m // 2])


DEF _STACK_K = 16  # rows with up to this many scales use stack scratch, no malloc


cdef double _dhat_row_any(const int64_t *s, const double *xs_shared, const int64_t *nj,
                          int64_t k) noexcept nogil:
    cdef double xs_buf[_STACK_K]
    cdef double ys_buf[_STACK_K]
    cdef double sl_buf[120]  # _STACK_K * (_STACK_K - 1) / 2
    cdef double *heap
    cdef const double *xs
    cdef double *xw
    cdef double r
    cdef int64_t i
    if k <= _STACK_K:
        if xs_shared != NULL:
            xs = xs_shared
        else:
            for i in range(k):
                xs_buf[i] = log2(<double> s[i]) if s[i] > 0 else NAN
            xs = xs_buf
        return _dhat_row(xs, nj, k, ys_buf, sl_buf)
    heap = <double *> malloc((2 * k + k * (k - 1) // 2 + 1) * sizeof(double))
    if heap == NULL:
        return NAN
    if xs_shared != NULL:
        xs = xs_shared
    else:
        xw = heap + k + k * (k - 1) // 2 + 1
        for i in range(k):
            xw[i] = log2(<double> s[i]) if s[i] > 0 else NAN
        xs = xw
    r = _dhat_row(xs, nj, k, heap, heap + k)
    free(heap)
    return r


def d_hat_batch_i64(const int64_t[:, ::1] scales, const int64_t[:, ::1] n_j,
                    bint shared_scales, int nthreads=0):
    """D-hat per row of n_j. scales has one row (shared_scales) or one row per PCS.

    Unchecked: scales.shape[1] == n_j.shape[1] >= 1 and, unless shared_scales,
    scales.shape[0] == n_j.shape[0] (flk_fast.kernels.robust.d_hat_batch checks).
    """
    cdef int64_t m = n_j.shape[0], k = n_j.shape[1], r, i
    out_a = np.empty(m)
    cdef double[::1] out = out_a
    cdef int t = nthreads if nthreads > 0 else 2
    xs_a = np.empty(k)
    cdef double[::1] xs = xs_a
    cdef const double *xsp = NULL
    if m == 0:
        return out_a
    if shared_scales:  # log2 of the scales once, not once per row
        for i in range(k):
            xs[i] = log2(<double> scales[0, i]) if scales[0, i] > 0 else NAN
        xsp = &xs[0]
    # auto: one thread below a million rows; a row costs ~40 ns, and on a shared
    # machine a parallel region of a few ms often waits for a preempted thread
    if nthreads <= 0 and m < 1048576:
        t = 1
    if shared_scales and 2 <= k <= 8 and not np.isnan(xs_a).any():
        _dhat_shared(n_j, k, xs_a, out, t)
        return out_a
    with nogil:
        for r in prange(m, num_threads=t, schedule="static"):
            out[r] = _dhat_row_any(&scales[0 if shared_scales else r, 0], xsp,
                                   &n_j[r, 0], k)
    return out_a


cdef inline void _cx(double *s, int i, int j) noexcept nogil:
    # compare-exchange: s[i] <= s[j] afterwards (minsd/maxsd, no branch to mispredict;
    # the slopes are finite, so min/max order them exactly as the sort does)
    cdef double a = s[i], b = s[j]
    s[i] = a if a < b else b
    s[j] = b if a < b else a


cdef inline double _upper_median6(double *s) noexcept nogil:
    # s[3] of the sorted six, by a 12-exchange sorting network (all 64 inputs of 0s and
    # 1s come out sorted, so by the 0-1 principle every input does); random slopes
    # made the insertion sort's branches mispredict several times per row
    _cx(s, 0, 5); _cx(s, 1, 3); _cx(s, 2, 4)
    _cx(s, 1, 2); _cx(s, 3, 4)
    _cx(s, 0, 3); _cx(s, 2, 5)
    _cx(s, 0, 1); _cx(s, 2, 3); _cx(s, 4, 5)
    _cx(s, 1, 2); _cx(s, 3, 4)
    return s[3]


cdef double _dhat_shared_row(const int64_t *nj, int64_t k, const int *pi, const int *pj,
                             const double *pdx, const double *pinv,
                             int npair) noexcept nogil:
    # One row of _dhat_shared, with local scratch so rows can run on several threads.
    cdef double ys[8]
    cdef double sl[28]
    cdef double v
    cdef int64_t i, v_n
    cdef int a, b
    if npair == 0:
        return NAN
    for i in range(k):
        v_n = nj[i]
        if v_n <= 0:
            return NAN
        ys[i] = _LOG2_TABLE[v_n] if v_n < _LOG2_TABLE_N else log2(<double> v_n)
    for a in range(npair):
        # a power-of-two dx: multiplying by its exact inverse is the division's own
        # result (both exact scalings), without a division's latency
        v = ys[pj[a]] - ys[pi[a]]
        sl[a] = v * pinv[a] if pinv[a] != 0.0 else v / pdx[a]
    if npair == 6:  # four distinct scales, the usual PCS: a branch-free network
        return _round9(_upper_median6(sl))
    for a in range(1, npair):  # insertion sort, as _dhat_row
        v = sl[a]
        b = a - 1
        while b >= 0 and sl[b] > v:
            sl[b + 1] = sl[b]
            b -= 1
        sl[b + 1] = v
    return _round9(sl[npair // 2])


cdef void _dhat_shared(const int64_t[:, ::1] n_j, int64_t k, xs_a, double[::1] out,
                       int t):
    # Shared scales (the server's case): the pairs with distinct log2 scales and their
    # dx are the same for every row, so they are found once; each row is then only
    # lookups, divisions, the sort and the rounding, in _dhat_row's order.
    # Unchecked: 2 <= k <= 8 and every scale > 0 (d_hat_batch_i64 checks).
    cdef const double[::1] xs = xs_a
    cdef int pi[28]
    cdef int pj[28]
    cdef double pdx[28]
    cdef double pinv[28]  # 1/dx where dx is a power of two (else 0: divide)
    cdef int npair = 0, ex
    cdef int64_t i, j, r, m = n_j.shape[0]
    cdef double dx
    for i in range(k):
        for j in range(i + 1, k):
            dx = xs[j] - xs[i]
            if fabs(dx) >= 1e-9:
                pi[npair] = <int> i
                pj[npair] = <int> j
                pdx[npair] = dx
                # |mantissa| 0.5 exactly: a power of two, whose inverse is exact;
                # kept within the normal range so the product never rounds
                pinv[npair] = (1.0 / dx if fabs(frexp(dx, &ex)) == 0.5
                               and -1000 < ex < 1000 else 0.0)
                npair += 1
    with nogil:
        for r in prange(m, num_threads=t, schedule="static"):
            out[r] = _dhat_shared_row(&n_j[r, 0], k, pi, pj, pdx, pinv, npair)


def round9(double x):
    """Python's round(x, 9) in C (exposed for tests)."""
    return _round9(x)
