/* Fused projection + min/max + histogram passes of the legacy coherence sampler
 * (SPEC §4.3), in plain C so that the projection can use hardware FMA through a
 * function-level target attribute while the rest of the module stays baseline x86-64.
 *
 * Bit compatibility: numpy computes P @ v with OpenBLAS dgemv_t (row-major n x d
 * matrix, d = number of dgemv "rows"). Measured on this machine's OpenBLAS 0.3.31
 * (Haswell/SkylakeX kernels) the per-row arithmetic is:
 *   lanes l_k = a_k*v_k (k < 4), then l_{k mod 4} = fma(a_k, v_k, l_{k mod 4}) for the
 *   rest of the largest multiple of 4 columns; h = (l0 + l2) + (l1 + l3) (0 if d < 4);
 *   tail r = d mod 4 at column b: r=1: fma(a_b, v_b, h); r=2: h + fma(a_b, v_b, a_{b+1} v_{b+1});
 *   r=3: h + fma(a_{b+2}, v_{b+2}, fma(a_b, v_b, a_{b+1} v_{b+1})).
 * flk_proj reproduces exactly that order. Contraction of the explicit * and + into
 * extra FMAs would break it, hence fp-contract=off on every function here. Another
 * BLAS may round differently in the last bit; tests/kernels/test_coherence.py reports
 * such a case explicitly (it can only change a count when a projection sits within
 * rounding of a bin edge).
 *
 * Inputs are validated by flk_fast.kernels.coherence (finite, C-contiguous, n >= 1,
 * d >= 1, edges strictly from numpy.linspace).
 */
#ifndef FLK_COH_H
#define FLK_COH_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FLK_TILE 256

#define FLK_PROJ_DEF(NAME, ATTR)                                                    \
ATTR static inline double NAME(const double *a, const double *v, int64_t d)          \
{                                                                                    \
    int64_t base = d - (d & 3), k;                                                   \
    double h = 0.0;                                                                  \
    if (base) {                                                                      \
        double l0 = a[0] * v[0], l1 = a[1] * v[1], l2 = a[2] * v[2], l3 = a[3] * v[3];\
        for (k = 4; k < base; k += 4) {                                              \
            l0 = fma(a[k], v[k], l0);                                                \
            l1 = fma(a[k + 1], v[k + 1], l1);                                        \
            l2 = fma(a[k + 2], v[k + 2], l2);                                        \
            l3 = fma(a[k + 3], v[k + 3], l3);                                        \
        }                                                                            \
        h = (l0 + l2) + (l1 + l3);                                                   \
    }                                                                                \
    switch (d & 3) {                                                                 \
    case 1: return fma(a[base], v[base], h);                                         \
    case 2: return h + fma(a[base], v[base], a[base + 1] * v[base + 1]);             \
    case 3: return h + fma(a[base + 2], v[base + 2],                                 \
                           fma(a[base], v[base], a[base + 1] * v[base + 1]));        \
    default: return h;                                                               \
    }                                                                                \
}

/* Projections of one tile of rows onto v, from the tile transposed to columns
 * (cols[k * FLK_TILE + i] = row i, coordinate k): the same operation order as
 * PROJ, but every step is an elementwise loop that the compiler vectorises. */
#define FLK_TILEPROJ_DEF(NAME, ATTR)                                                 \
ATTR static void NAME(const double *cols, int64_t len, int64_t d, const double *v,  \
                      double *pt)                                                    \
{                                                                                    \
    int64_t i, k, base = d - (d & 3), b;                                             \
    double l0[FLK_TILE], l1[FLK_TILE], l2[FLK_TILE], l3[FLK_TILE];                   \
    const double *c0, *c1, *c2, *c3;                                                 \
    if (base) {                                                                      \
        c0 = cols; c1 = cols + FLK_TILE; c2 = cols + 2 * FLK_TILE;                   \
        c3 = cols + 3 * FLK_TILE;                                                    \
        for (i = 0; i < len; i++) {                                                  \
            l0[i] = c0[i] * v[0]; l1[i] = c1[i] * v[1];                              \
            l2[i] = c2[i] * v[2]; l3[i] = c3[i] * v[3];                              \
        }                                                                            \
        for (k = 4; k < base; k += 4) {                                              \
            c0 = cols + k * FLK_TILE; c1 = c0 + FLK_TILE; c2 = c1 + FLK_TILE;        \
            c3 = c2 + FLK_TILE;                                                      \
            for (i = 0; i < len; i++) {                                              \
                l0[i] = fma(c0[i], v[k], l0[i]);                                     \
                l1[i] = fma(c1[i], v[k + 1], l1[i]);                                 \
                l2[i] = fma(c2[i], v[k + 2], l2[i]);                                 \
                l3[i] = fma(c3[i], v[k + 3], l3[i]);                                 \
            }                                                                        \
        }                                                                            \
        for (i = 0; i < len; i++) l0[i] = (l0[i] + l2[i]) + (l1[i] + l3[i]);         \
    } else {                                                                         \
        /* d < 4: h is 0.0 (the 0.0 + keeps dgemv's sign of zero) */                \
        c0 = cols; c1 = cols + FLK_TILE; c2 = cols + 2 * FLK_TILE;                   \
        switch (d) {                                                                 \
        case 1:                                                                      \
            for (i = 0; i < len; i++) pt[i] = fma(c0[i], v[0], 0.0);                 \
            return;                                                                  \
        case 2:                                                                      \
            for (i = 0; i < len; i++) pt[i] = 0.0 + fma(c0[i], v[0], c1[i] * v[1]);  \
            return;                                                                  \
        default:                                                                     \
            for (i = 0; i < len; i++)                                                \
                pt[i] = 0.0 + fma(c2[i], v[2], fma(c0[i], v[0], c1[i] * v[1]));     \
            return;                                                                  \
        }                                                                            \
    }                                                                                \
    b = base;                                                                        \
    c0 = cols + b * FLK_TILE;                                                        \
    switch (d & 3) {                                                                 \
    case 1:                                                                          \
        for (i = 0; i < len; i++) pt[i] = fma(c0[i], v[b], l0[i]);                   \
        break;                                                                       \
    case 2:                                                                          \
        c1 = c0 + FLK_TILE;                                                          \
        for (i = 0; i < len; i++)                                                    \
            pt[i] = l0[i] + fma(c0[i], v[b], c1[i] * v[b + 1]);                      \
        break;                                                                       \
    case 3:                                                                          \
        c1 = c0 + FLK_TILE; c2 = c1 + FLK_TILE;                                      \
        for (i = 0; i < len; i++)                                                    \
            pt[i] = l0[i] + fma(c2[i], v[b + 2], fma(c0[i], v[b], c1[i] * v[b + 1]));\
        break;                                                                       \
    default:                                                                         \
        for (i = 0; i < len; i++) pt[i] = l0[i];                                     \
    }                                                                                \
}

static inline void flk_transpose_tile(const double *A, int64_t len, int64_t d,
                                      double *cols)
{
    int64_t i, k;
    for (i = 0; i < len; i++)
        for (k = 0; k < d; k++) cols[k * FLK_TILE + i] = A[i * d + k];
}

/* min/max of P @ v_j for every direction j over rows [r0, r1). mins/maxs are
 * accumulated into (callers seed them with +/-inf). */
/* min/max of a tile's projections, folded into *mn / *mx. The sign of a zero
 * extreme does not matter: edges and bins come out the same for -0.0 and +0.0. */
static void flk_tile_minmax_sw(const double *pt, int64_t len, double *mn, double *mx)
{
    int64_t i;
    double a = *mn, b = *mx;
    for (i = 0; i < len; i++) {
        a = pt[i] < a ? pt[i] : a;
        b = pt[i] > b ? pt[i] : b;
    }
    *mn = a;
    *mx = b;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
__attribute__((target("avx2")))
static void flk_tile_minmax_hw(const double *pt, int64_t len, double *mn, double *mx)
{
    int64_t i = 0;
    double lo[4], hi[4];
    __m256d a = _mm256_set1_pd(*mn), b = _mm256_set1_pd(*mx);
    __m256d a2 = a, b2 = b;
    for (; i + 8 <= len; i += 8) {
        __m256d x = _mm256_loadu_pd(pt + i), y = _mm256_loadu_pd(pt + i + 4);
        a = _mm256_min_pd(a, x);
        b = _mm256_max_pd(b, x);
        a2 = _mm256_min_pd(a2, y);
        b2 = _mm256_max_pd(b2, y);
    }
    _mm256_storeu_pd(lo, _mm256_min_pd(a, a2));
    _mm256_storeu_pd(hi, _mm256_max_pd(b, b2));
    *mn = lo[0] < lo[1] ? lo[0] : lo[1];
    *mn = lo[2] < *mn ? lo[2] : *mn;
    *mn = lo[3] < *mn ? lo[3] : *mn;
    *mx = hi[0] > hi[1] ? hi[0] : hi[1];
    *mx = hi[2] > *mx ? hi[2] : *mx;
    *mx = hi[3] > *mx ? hi[3] : *mx;
    flk_tile_minmax_sw(pt + i, len - i, mn, mx);
}
#endif

#define FLK_MINMAX_DEF(NAME, TPROJ, TMINMAX, ATTR)                                   \
ATTR static void NAME(const double *P, int64_t r0, int64_t r1, int64_t d,            \
                      const double *V, int64_t m, double *mins, double *maxs)        \
{                                                                                    \
    int64_t t0, j, len;                                                              \
    double pt[FLK_TILE];                                                             \
    double *cols = (double *)malloc(sizeof(double) * FLK_TILE * (size_t)d);          \
    if (cols == NULL) return; /* caller sees +/-inf and reports overflow */          \
    for (t0 = r0; t0 < r1; t0 += FLK_TILE) {                                         \
        len = t0 + FLK_TILE < r1 ? FLK_TILE : r1 - t0;                               \
        flk_transpose_tile(P + t0 * d, len, d, cols);                                \
        for (j = 0; j < m; j++) {                                                    \
            TPROJ(cols, len, d, V + j * d, pt);                                      \
            TMINMAX(pt, len, mins + j, maxs + j);                                    \
        }                                                                            \
    }                                                                                \
    free(cols);                                                                      \
}

/* min/max of P[rows[t]] @ v_j, for each direction j whose bit is set in mask (words
 * 64-bit words), folded into mins[j] / maxs[j]: the rows are gathered a tile at a
 * time into cols (FLK_TILE * d doubles) and projected with the tile projection, the
 * same arithmetic as every other pass. */
#define FLK_ROWS_MINMAX_DEF(NAME, TPROJ, TMINMAX, ATTR)                              \
ATTR static void NAME(const double *P, const int32_t *rows, int64_t nr, int64_t d,  \
                      const double *V, const uint64_t *mask, int64_t words,         \
                      double *cols, double *mins, double *maxs)                     \
{                                                                                    \
    int64_t t0, t, k, w, j, len;                                                     \
    double pt[FLK_TILE];                                                             \
    for (t0 = 0; t0 < nr; t0 += FLK_TILE) {                                          \
        len = t0 + FLK_TILE < nr ? FLK_TILE : nr - t0;                               \
        for (t = 0; t < len; t++)                                                    \
            for (k = 0; k < d; k++)                                                  \
                cols[k * FLK_TILE + t] = P[(int64_t)rows[t0 + t] * d + k];           \
        for (w = 0; w < words; w++) {                                                \
            uint64_t bits = mask[w];                                                 \
            while (bits) {                                                           \
                j = w * 64 + __builtin_ctzll(bits);                                  \
                bits &= bits - 1;                                                    \
                TPROJ(cols, len, d, V + j * d, pt);                                  \
                TMINMAX(pt, len, mins + j, maxs + j);                                \
            }                                                                        \
        }                                                                            \
    }                                                                                \
}

/* numpy.histogram's uniform-bin index of p (the exact procedure): index from
 * ((p - first) / (last - first)) * nb, truncated; p == last goes to the last bin; then
 * one-step corrections against the linspace edges (decrement if p < e[i], increment
 * if p >= e[i+1] unless i is the last bin). */
static inline int32_t flk_numpy_bin(double p, const double *e, int32_t nb, double first,
                                    double denom)
{
    int32_t k = (int32_t)(((p - first) / denom) * (double)nb);
    k -= (k == nb);
    k -= (p < e[k]);
    k += (k != nb - 1) & (p >= e[k + 1]);
    return k;
}

/* Fast path, same answer: when the edges are well conditioned (an edge's rounding is
 * < 1e-7 of a bin width, checked per direction) and f = (p - first) * (nb / denom) is
 * at least 1e-6 of a bin away from an integer, p is strictly inside bin floor(f) by
 * the edges, which is also where numpy's procedure ends (its first guess is within
 * one bin and the corrections move it to the edge-defined bin). Only the rare
 * ambiguous points take the exact path above. */
#define FLK_EDGE_EPS 1e-6
/* Bins handled by the fast path's interleaved counters (more: the exact path). */
#define FLK_MAXBINS 64

/* Fast-path bin guess of every projection of a tile: ib[i] = (int)((p - first) * inv).
 * Returns nonzero when some point is ambiguous (within FLK_EDGE_EPS of a bin boundary
 * in units of bins, or at/after the last edge); flk_ambiguous says which. */
static inline int flk_ambiguous(double p, double first, double inv, int32_t nb)
{
    double f = (p - first) * inv;
    int32_t k = (int32_t)f;
    double fr = f - (double)k;
    return (fr < FLK_EDGE_EPS) | (fr > 1.0 - FLK_EDGE_EPS) | (k >= nb);
}

static int flk_tile_index_sw(const double *pt, int64_t len, double first, double inv,
                             int32_t nb, int32_t *ib)
{
    int64_t i;
    int any = 0;
    for (i = 0; i < len; i++) {
        ib[i] = (int32_t)((pt[i] - first) * inv);
        any |= flk_ambiguous(pt[i], first, inv, nb);
    }
    return any;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2")))
static int flk_tile_index_hw(const double *pt, int64_t len, double first, double inv,
                             int32_t nb, int32_t *ib)
{
    int64_t i = 0;
    int any = 0;
    const __m256d vfirst = _mm256_set1_pd(first), vinv = _mm256_set1_pd(inv);
    const __m256d lo = _mm256_set1_pd(FLK_EDGE_EPS), hi = _mm256_set1_pd(1.0 - FLK_EDGE_EPS);
    const __m128i vnb = _mm_set1_epi32(nb - 1);
    for (; i + 4 <= len; i += 4) {
        /* same operations as the scalar path: subtract, multiply, truncate */
        __m256d f = _mm256_mul_pd(_mm256_sub_pd(_mm256_loadu_pd(pt + i), vfirst), vinv);
        __m128i k = _mm256_cvttpd_epi32(f);
        __m256d fr = _mm256_sub_pd(f, _mm256_cvtepi32_pd(k));
        __m256d bad = _mm256_or_pd(_mm256_cmp_pd(fr, lo, _CMP_LT_OQ),
                                   _mm256_cmp_pd(fr, hi, _CMP_GT_OQ));
        any |= _mm256_movemask_pd(bad);
        any |= _mm_movemask_epi8(_mm_cmpgt_epi32(k, vnb));
        _mm_storeu_si128((__m128i *)(ib + i), k);
    }
    return any | flk_tile_index_sw(pt + i, len - i, first, inv, nb, ib + i);
}
#endif

/* Byte counters: when nb <= FLK_BYTEBINS, a tile's bin guesses are stored as bytes
 * and counted 32 at a time per bin (compare with the bin number, subtract the -1
 * mask into byte accumulators, which cannot overflow: a lane sees at most
 * FLK_TILE / 32 = 8 points). That is nb * (FLK_TILE / 32) * 2 vector operations per
 * tile instead of one load-add-store per point, the bottleneck of the scalar
 * counters; beyond ~32 bins the scalar counters win again. */
#define FLK_BYTEBINS 32

static void flk_count_bytes_sw(const uint8_t *ib, int64_t len, int64_t nb, int64_t *c)
{
    int64_t i;
    (void)nb;
    for (i = 0; i < len; i++) c[ib[i]]++;
}

/* The byte path's test (see flk_tile_index8_hw): bin guess trunc(g) with
 * g = fma(p, inv, eps - first * inv), ambiguous when frac(g) < 2 eps or the guess is
 * out of [0, nb). fma() is correctly rounded, so this scalar form gives the vector
 * form's g bit for bit, and flags exactly the same points. */
static inline int flk_ambiguous8(double p, double inv, double c, int32_t nb, int32_t *k)
{
    double g = fma(p, inv, c);
    *k = (int32_t)g;
    return (g - (double)*k < 2.0 * FLK_EDGE_EPS) | (*k >= nb) | (*k < 0);
}

static int flk_tile_index8_sw(const double *pt, int64_t len, double inv, double c,
                              int32_t nb, uint8_t *ib)
{
    int64_t i;
    int any = 0;
    for (i = 0; i < len; i++) {
        int32_t k;
        any |= flk_ambiguous8(pt[i], inv, c, nb, &k);
        ib[i] = (uint8_t)(k < 0 ? 0 : (k > 255 ? 255 : k));
    }
    return any;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2")))
static inline int64_t flk_hsum_sad(__m256i acc)
{
    __m256i s = _mm256_sad_epu8(acc, _mm256_setzero_si256()); /* 4 x u64 partials */
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
}

__attribute__((target("avx2")))
static void flk_count_bytes_hw(const uint8_t *ib, int64_t len, int64_t nb, int64_t *c)
{
    int64_t i, b, full = len & ~(int64_t)31;
    const __m256i zero = _mm256_setzero_si256();
    if (len == FLK_TILE) { /* the common case: the tile's 8 vectors stay in registers */
        const __m256i *v = (const __m256i *)ib;
        const __m256i x0 = _mm256_loadu_si256(v), x1 = _mm256_loadu_si256(v + 1),
                      x2 = _mm256_loadu_si256(v + 2), x3 = _mm256_loadu_si256(v + 3),
                      x4 = _mm256_loadu_si256(v + 4), x5 = _mm256_loadu_si256(v + 5),
                      x6 = _mm256_loadu_si256(v + 6), x7 = _mm256_loadu_si256(v + 7);
        for (b = 0; b < nb; b++) {
            const __m256i key = _mm256_set1_epi8((char)b);
            __m256i a = _mm256_add_epi8(_mm256_cmpeq_epi8(x0, key), _mm256_cmpeq_epi8(x1, key));
            __m256i a2 = _mm256_add_epi8(_mm256_cmpeq_epi8(x2, key), _mm256_cmpeq_epi8(x3, key));
            a = _mm256_add_epi8(a, _mm256_add_epi8(_mm256_cmpeq_epi8(x4, key),
                                                   _mm256_cmpeq_epi8(x5, key)));
            a2 = _mm256_add_epi8(a2, _mm256_add_epi8(_mm256_cmpeq_epi8(x6, key),
                                                     _mm256_cmpeq_epi8(x7, key)));
            /* each byte is minus the number of matches (0..8) in its lane */
            c[b] += flk_hsum_sad(_mm256_sub_epi8(zero, _mm256_add_epi8(a, a2)));
        }
        return;
    }
    for (b = 0; b < nb; b++) {
        const __m256i key = _mm256_set1_epi8((char)b);
        __m256i acc = zero;
        for (i = 0; i < full; i += 32)
            acc = _mm256_sub_epi8(
                acc, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(ib + i)), key));
        c[b] += flk_hsum_sad(acc);
    }
    for (i = full; i < len; i++) c[ib[i]]++;
}

/* Bin guesses as bytes, 16 per step. g = p * inv + (eps - first * inv) in one FMA is
 * (p - first) * inv + eps to within |p * inv| * 2**-52 bins, below 1e-8 bins whenever
 * the edges pass the "safe" test, so: if frac(g) >= 2 eps the point is more than
 * ~eps from both ends of bin trunc(g) and that is its bin (flk_ambiguous's rule,
 * shifted by eps so one comparison does); otherwise it is flagged for the exact
 * procedure. Guesses outside [0, nb) always come with a flag; packing saturates. */
__attribute__((target("avx2,fma")))
static int flk_tile_index8_hw(const double *pt, int64_t len, double inv, double c,
                              int32_t nb, uint8_t *ib)
{
    int64_t i = 0, q;
    int any;
    const __m256d vinv = _mm256_set1_pd(inv);
    const __m256d vc = _mm256_set1_pd(c);
    const __m256d two_eps = _mm256_set1_pd(2.0 * FLK_EDGE_EPS);
    const __m128i vnb = _mm_set1_epi32(nb - 1);
    __m256d bad = _mm256_setzero_pd();
    __m128i kmax = _mm_setzero_si128();
    __m128i k[4];
    for (; i + 16 <= len; i += 16) {
        for (q = 0; q < 4; q++) {
            __m256d g = _mm256_fmadd_pd(_mm256_loadu_pd(pt + i + 4 * q), vinv, vc);
            k[q] = _mm256_cvttpd_epi32(g);
            bad = _mm256_or_pd(bad, _mm256_cmp_pd(_mm256_sub_pd(g, _mm256_cvtepi32_pd(k[q])),
                                                  two_eps, _CMP_LT_OQ));
            kmax = _mm_max_epi32(kmax, k[q]);
        }
        _mm_storeu_si128((__m128i *)(ib + i),
                         _mm_packus_epi16(_mm_packs_epi32(k[0], k[1]),
                                          _mm_packs_epi32(k[2], k[3])));
    }
    any = _mm256_movemask_pd(bad) | _mm_movemask_epi8(_mm_cmpgt_epi32(kmax, vnb));
    return any | flk_tile_index8_sw(pt + i, len - i, inv, c, nb, ib + i);
}

/* AVX-512 forms of the two byte-path steps (same arithmetic: the same FMA, the same
 * truncation, so the same bytes and flags), for CPUs that have AVX-512 BW. */
#define FLK_512_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
FLK_512_ATTR
static int flk_tile_index8_512(const double *pt, int64_t len, double inv, double c,
                               int32_t nb, uint8_t *ib)
{
    int64_t i = 0;
    const __m512d vinv = _mm512_set1_pd(inv), vc = _mm512_set1_pd(c);
    const __m512d two_eps = _mm512_set1_pd(2.0 * FLK_EDGE_EPS);
    __mmask8 bad = 0;
    __m512i kmax = _mm512_setzero_si512();
    for (; i + 16 <= len; i += 16) {
        __m512d g0 = _mm512_fmadd_pd(_mm512_loadu_pd(pt + i), vinv, vc);
        __m512d g1 = _mm512_fmadd_pd(_mm512_loadu_pd(pt + i + 8), vinv, vc);
        __m256i k0 = _mm512_cvttpd_epi32(g0), k1 = _mm512_cvttpd_epi32(g1);
        bad |= _mm512_cmp_pd_mask(_mm512_sub_pd(g0, _mm512_cvtepi32_pd(k0)), two_eps,
                                  _CMP_LT_OQ);
        bad |= _mm512_cmp_pd_mask(_mm512_sub_pd(g1, _mm512_cvtepi32_pd(k1)), two_eps,
                                  _CMP_LT_OQ);
        __m512i k = _mm512_inserti64x4(_mm512_castsi256_si512(k0), k1, 1);
        kmax = _mm512_max_epi32(kmax, k);
        _mm_storeu_si128((__m128i *)(ib + i), _mm512_cvtusepi32_epi8(k));
    }
    int any = bad != 0;
    any |= _mm512_cmpgt_epi32_mask(kmax, _mm512_set1_epi32(nb - 1)) != 0;
    return any | flk_tile_index8_sw(pt + i, len - i, inv, c, nb, ib + i);
}

/* Byte counts of a tile into c[0..nb). A full tile counts by comparison, so bytes >= nb
 * are left out, and returns the number counted; a partial one counts every byte (all
 * must be < nb) and returns len. */
FLK_512_ATTR
static int64_t flk_count_bytes_512_n(const uint8_t *ib, int64_t len, int64_t nb, int64_t *c)
{
    int64_t i, b, total = 0;
    if (len == FLK_TILE) {
        const __m512i x0 = _mm512_loadu_si512(ib), x1 = _mm512_loadu_si512(ib + 64),
                      x2 = _mm512_loadu_si512(ib + 128), x3 = _mm512_loadu_si512(ib + 192);
        for (b = 0; b < nb; b++) {
            const __m512i key = _mm512_set1_epi8((char)b);
            const int64_t k = __builtin_popcountll(_mm512_cmpeq_epi8_mask(x0, key))
                              + __builtin_popcountll(_mm512_cmpeq_epi8_mask(x1, key))
                              + __builtin_popcountll(_mm512_cmpeq_epi8_mask(x2, key))
                              + __builtin_popcountll(_mm512_cmpeq_epi8_mask(x3, key));
            c[b] += k;
            total += k;
        }
        return total;
    }
    for (i = 0; i < len; i++) c[ib[i]]++;
    return len;
}

FLK_512_ATTR
static void flk_count_bytes_512(const uint8_t *ib, int64_t len, int64_t nb, int64_t *c)
{
    (void)flk_count_bytes_512_n(ib, len, nb, c);
}
#endif

/* Histogram of P @ v_j into nb bins with numpy.histogram's rules. counts is m x nb
 * and is accumulated into. Directions with skip[j] != 0 (degenerate range) are
 * skipped. Each tile runs simple loops (project, index, count) so that the first two
 * vectorise. */
/* A fused d = 3 project-and-guess step for the byte path, or NULL (see flk_fused3_512). */
typedef void (*flk_amax3_fn)(const double *, int64_t, double *);
typedef void (*flk_fused3_fn)(const double *, int64_t, const double *, const double *,
                              double, double, int32_t, const double *, double, double,
                              uint8_t *);
typedef void (*flk_pair_fn)(const uint8_t *, const uint8_t *, int64_t, uint64_t *);
#define FLK_HIST_DEF(NAME, TPROJ, TINDEX, TINDEX8, TCOUNT8, FUSED3, AMAX3, PAIR, ATTR) \
ATTR static void NAME(const double *P, int64_t r0, int64_t r1, int64_t d,            \
                      const double *V, int64_t m, const double *edges, int64_t nb,   \
                      const unsigned char *skip, int64_t *counts)                    \
{                                                                                    \
    int64_t t0, i, j, len;                                                           \
    double pt[FLK_TILE];                                                             \
    int32_t ib[FLK_TILE];                                                            \
    uint8_t ib8[FLK_TILE];                                                           \
    double amax[3] = {0.0, 0.0, 0.0};                                                \
    int fused = 0;                                                                   \
    int64_t c4[4 * FLK_MAXBINS] = {0};                                               \
    const double nbf = (double)nb;                                                   \
    const int32_t nb32 = (int32_t)nb;                                                \
    double *cols = (double *)malloc(sizeof(double) * FLK_TILE * (size_t)d);          \
    /* per direction, once: 1/bin width, the byte path's offset, edges well-conditioned */\
    double *dinv = (double *)malloc(sizeof(double) * 8 * (size_t)(m > 0 ? m : 1));   \
    double maxinv = 0.0, maxc = 0.0; /* over the directions the fused step may take */\
    /* the fused path's directions (byte bins, well-conditioned, not skipped), counted \
     * in pairs into bit-sliced accumulators: 32 bins x 8 qwords per pair */         \
    int64_t *elig = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m > 0 ? m : 1));   \
    uint64_t *acc = NULL;                                                            \
    int64_t nel = 0, npair = 0, fused_rows = 0, pq, *base = NULL;                    \
    uint8_t pa[FLK_TILE], pb[FLK_TILE];                                              \
    if (cols == NULL || dinv == NULL || elig == NULL) {                              \
        free(cols); free(dinv); free(elig); return;                                  \
    }                                                                                \
    for (j = 0; j < m; j++) {                                                        \
        const double *e = edges + j * (nb + 1);                                      \
        const double denom = e[nb] - e[0];                                           \
        const double big = fabs(e[0]) > fabs(e[nb]) ? fabs(e[0]) : fabs(e[nb]);     \
        const double ulp = nextafter(big, INFINITY) - big;                           \
        double *dj = dinv + 8 * j;                                                   \
        dj[0] = nbf / denom;                                                         \
        /* computed here (fp-contract off) for both the vector and scalar tests */   \
        dj[1] = FLK_EDGE_EPS - e[0] * dj[0];                                         \
        dj[2] = (8.0 * ulp * nbf / denom + 64.0 * 2.220446049250313e-16 * nbf) < 1e-7;\
        if (FUSED3 != NULL && d == 3) { /* flk_fused3_512's weights and offset */    \
            dj[3] = V[3 * j] * dj[0] * 16777216.0;                                   \
            dj[4] = V[3 * j + 1] * dj[0] * 16777216.0;                               \
            dj[5] = V[3 * j + 2] * dj[0] * 16777216.0;                               \
            dj[6] = dj[1] * 16777216.0 + 128.0;                                      \
            if (!skip[j] && dj[2] != 0.0) {                                          \
                maxinv = dj[0] > maxinv ? dj[0] : maxinv;                            \
                maxc = fabs(dj[1]) > maxc ? fabs(dj[1]) : maxc;                      \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    if (FUSED3 != NULL && d == 3 && nb <= FLK_BYTEBINS) {                             \
        for (j = 0; j < m; j++)                                                      \
            if (!skip[j] && dinv[8 * j + 2] != 0.0) elig[nel++] = j;                 \
        npair = (nel + 1) / 2;                                                       \
        acc = (uint64_t *)calloc((size_t)(npair > 0 ? npair : 1) * 32 * 8, sizeof(uint64_t));\
        /* the counts as they came in: the fallback below recounts from them */      \
        base = (int64_t *)malloc(sizeof(int64_t) * (size_t)(m * nb > 0 ? m * nb : 1));\
        if (acc == NULL || base == NULL) {                                           \
            free(acc); free(base); free(cols); free(dinv); free(elig); return;       \
        }                                                                            \
        memcpy(base, counts, sizeof(int64_t) * (size_t)(m * nb));                    \
    }                                                                                \
    memset(pb, 0xFF, sizeof pb); /* the partner of an odd last direction: no bin */  \
    for (t0 = r0; t0 < r1; t0 += FLK_TILE) {                                         \
        len = t0 + FLK_TILE < r1 ? FLK_TILE : r1 - t0;                               \
        flk_transpose_tile(P + t0 * d, len, d, cols);                                \
        if (FUSED3 != NULL && d == 3) { /* flk_fused3_512's error bound, |v_k| <= 1 */\
            AMAX3(cols, len, amax);                                                  \
            fused = 16.0 * 1.1102230246251565e-16                                    \
                        * (1.01 * maxinv * (amax[0] + amax[1] + amax[2]) + maxc      \
                           + nbf + 2.0) <= 1e-7;                                     \
        }                                                                            \
        if (fused && acc != NULL) {                                                  \
            for (pq = 0; pq < npair; pq++) {                                         \
                const int64_t ja = elig[2 * pq], jb = 2 * pq + 1 < nel ? elig[2 * pq + 1] : -1;\
                const double *ea = edges + ja * (nb + 1);                            \
                FUSED3(cols, len, dinv + 8 * ja + 3, V + ja * d, dinv[8 * ja],       \
                       dinv[8 * ja + 1], nb32, ea, ea[0], ea[nb] - ea[0], pa);       \
                if (jb >= 0) {                                                       \
                    const double *eb = edges + jb * (nb + 1);                        \
                    FUSED3(cols, len, dinv + 8 * jb + 3, V + jb * d, dinv[8 * jb],   \
                           dinv[8 * jb + 1], nb32, eb, eb[0], eb[nb] - eb[0], pb);   \
                }                                                                    \
                PAIR(pa, pb, nb, acc + pq * 32 * 8);                                 \
            }                                                                        \
            fused_rows += len;                                                       \
        }                                                                            \
        for (j = 0; j < m; j++) {                                                    \
            if (skip[j]) continue;                                                   \
            if (fused && acc != NULL && dinv[8 * j + 2] != 0.0) continue; /* done */ \
            const double *v = V + j * d;                                             \
            const double *e = edges + j * (nb + 1);                                  \
            const double first = e[0], denom = e[nb] - e[0];                         \
            const double inv = dinv[8 * j];                                          \
            const int safe = dinv[8 * j + 2] != 0.0;                                 \
            int64_t *c = counts + j * nb;                                            \
            if (safe && nb <= FLK_BYTEBINS) {                                        \
                const double c8 = dinv[8 * j + 1];                                   \
                int flagged;                                                         \
                TPROJ(cols, len, d, v, pt);                                          \
                flagged = TINDEX8(pt, len, inv, c8, nb32, ib8);                      \
                if (flagged) {                                                       \
                    int32_t k8;                                                      \
                    for (i = 0; i < len; i++)                                        \
                        if (flk_ambiguous8(pt[i], inv, c8, nb32, &k8))               \
                            ib8[i] = (uint8_t)flk_numpy_bin(pt[i], e, nb32, first,   \
                                                            denom);                  \
                }                                                                    \
                TCOUNT8(ib8, len, nb, c);                                            \
                continue;                                                            \
            }                                                                        \
            TPROJ(cols, len, d, v, pt);                                              \
            if (safe && nb <= FLK_MAXBINS) {                                         \
                if (TINDEX(pt, len, first, inv, nb32, ib))                           \
                    for (i = 0; i < len; i++)                                        \
                        if (flk_ambiguous(pt[i], first, inv, nb32))                  \
                            ib[i] = flk_numpy_bin(pt[i], e, nb32, first, denom);     \
                /* four interleaved counters: no store-to-load chain on one bin */   \
                for (i = 0; i + 3 < len; i += 4) {                                   \
                    c4[ib[i]]++;                                                     \
                    c4[FLK_MAXBINS + ib[i + 1]]++;                                   \
                    c4[2 * FLK_MAXBINS + ib[i + 2]]++;                               \
                    c4[3 * FLK_MAXBINS + ib[i + 3]]++;                               \
                }                                                                    \
                for (; i < len; i++) c4[ib[i]]++;                                    \
                for (i = 0; i < nb; i++) {                                           \
                    c[i] += c4[i] + c4[FLK_MAXBINS + i] + c4[2 * FLK_MAXBINS + i]    \
                            + c4[3 * FLK_MAXBINS + i];                               \
                    c4[i] = c4[FLK_MAXBINS + i] = c4[2 * FLK_MAXBINS + i]            \
                          = c4[3 * FLK_MAXBINS + i] = 0;                             \
                }                                                                    \
            } else {                                                                 \
                for (i = 0; i < len; i++)                                            \
                    c[flk_numpy_bin(pt[i], e, nb32, first, denom)]++;                \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    /* fold the pairs' accumulators into the counts; a direction whose fused tiles do \
     * not add up to fused_rows had a byte outside its bins (cannot happen while the  \
     * projections lie within their edges): its counts for [r0, r1) are redone the    \
     * plain way, from what they were on entry */                                    \
    for (pq = 0; acc != NULL && pq < npair; pq++) {                                  \
        int64_t h, q, tot[2] = {0, 0}, bin;                                          \
        for (h = 0; h < 2 && 2 * pq + h < nel; h++) {                                \
            const int64_t jj = elig[2 * pq + h];                                     \
            for (bin = 0; bin < nb; bin++) {                                         \
                int64_t sum = 0;                                                     \
                for (q = 0; q < 4; q++) sum += (int64_t)acc[pq * 256 + bin * 8 + 4 * h + q];\
                counts[jj * nb + bin] += sum;                                        \
                tot[h] += sum;                                                       \
            }                                                                        \
            if (tot[h] != fused_rows) {                                              \
                const double *e = edges + jj * (nb + 1);                             \
                const double inv = dinv[8 * jj], c8 = dinv[8 * jj + 1];              \
                int32_t k8;                                                          \
                /* the whole range again (its plain-path tiles too), from base */    \
                for (bin = 0; bin < nb; bin++) counts[jj * nb + bin] = base[jj * nb + bin];\
                for (t0 = r0; t0 < r1; t0 += FLK_TILE) {                             \
                    len = t0 + FLK_TILE < r1 ? FLK_TILE : r1 - t0;                   \
                    flk_transpose_tile(P + t0 * d, len, d, cols);                    \
                    TPROJ(cols, len, d, V + jj * d, pt);                             \
                    for (i = 0; i < len; i++)                                        \
                        counts[jj * nb + (flk_ambiguous8(pt[i], inv, c8, nb32, &k8)   \
                                          ? flk_numpy_bin(pt[i], e, nb32, e[0],      \
                                                          e[nb] - e[0])              \
                                          : k8)]++;                                  \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    free(acc);                                                                       \
    free(base);                                                                      \
    free(elig);                                                                      \
    free(cols);                                                                      \
    free(dinv);                                                                      \
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FLK_HW_ATTR __attribute__((target("avx2,fma"), optimize("fp-contract=off")))
#define FLK_SW_ATTR __attribute__((optimize("fp-contract=off")))
FLK_PROJ_DEF(flk_proj_hw, FLK_HW_ATTR)
FLK_TILEPROJ_DEF(flk_tproj_hw, FLK_HW_ATTR)
FLK_MINMAX_DEF(flk_minmax_hw, flk_tproj_hw, flk_tile_minmax_hw, FLK_HW_ATTR)
FLK_ROWS_MINMAX_DEF(flk_rows_minmax_hw, flk_tproj_hw, flk_tile_minmax_hw, FLK_HW_ATTR)
FLK_HIST_DEF(flk_hist_hw, flk_tproj_hw, flk_tile_index_hw, flk_tile_index8_hw,
             flk_count_bytes_hw, ((flk_fused3_fn)NULL), ((flk_amax3_fn)NULL),
             ((flk_pair_fn)NULL), FLK_HW_ATTR)
#define FLK_H512_ATTR                                                               \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vpopcntdq,gfni,avx2,fma,"     \
                          "prefer-vector-width=512"),                                \
                   optimize("fp-contract=off")))
FLK_TILEPROJ_DEF(flk_tproj_512, FLK_H512_ATTR)

/* The byte path's bin of one exact projection p: flk_ambiguous8's guess, or numpy's
 * exact procedure where it flags p. */
static inline uint8_t flk_settle8(double p, double inv, double c, int32_t nb,
                                  const double *e, double first, double denom)
{
    int32_t k;
    if (flk_ambiguous8(p, inv, c, nb, &k)) return (uint8_t)flk_numpy_bin(p, e, nb, first, denom);
    return (uint8_t)k;
}

/* Largest |x| of each of a d = 3 tile's columns (for flk_fused3_512's error bound). */
FLK_H512_ATTR
static void flk_amax3_512(const double *cols, int64_t len, double *amax)
{
    int64_t k, i;
    for (k = 0; k < 3; k++) {
        const double *c = cols + k * FLK_TILE;
        __m512d a = _mm512_setzero_pd();
        double m;
        for (i = 0; i + 8 <= len; i += 8) a = _mm512_max_pd(a, _mm512_abs_pd(_mm512_loadu_pd(c + i)));
        m = _mm512_reduce_max_pd(a);
        for (; i < len; i++) m = fabs(c[i]) > m ? fabs(c[i]) : m;
        amax[k] = m;
    }
}

/* d == 3, byte path: one tile's bins for one direction straight from the coordinates,
 * without the projection, in fixed point (the caller counts them, flk_count_pair_512):
 *   T = fma(c2, w2, fma(c0, w0, fma(c1, w1, C))),  w_k = (v_k * inv) * 2^24,
 *   C = c * 2^24 + 128,
 * i.e. 2^24 g + 128 for flk_ambiguous8's g = fma(p, inv, c) up to an error D (in bins)
 * of at most 8u (inv S + |c| + nb + 2), u = 2^-53, S = sum_k max|c_k| |v_k| over the
 * tile: the w_k and C roundings, three FMA roundings, and the 3-term projection's own
 * (BLAS) rounding, each at most u times those magnitudes. The caller's edges are
 * "safe", and it takes this path only when 16u (...) <= 1e-7 with the largest inv
 * and |c| of its directions and S <= sum_k max|c_k| (|v_k| <= 1), checked once per
 * tile (else it projects and uses flk_tile_index8_512); wc holds w0, w1, w2 and C,
 * computed once per direction. q = trunc(T) as int64. Every projection lies in
 * [e[0], e[nb]] (the edges come from its own min and max), so 0 < T < (nb + 1) 2^24
 * <= 2^32: byte 3 of q is the bin guess k = q >> 24 and bytes 1-2 are 2^24 frac(g)
 * shifted by 128, in units of 256. One permute takes byte 3 of 16 points into bytes
 * 0-15 and bytes 1-2 into words 8-23; one word test flags a point when its bytes 1-2
 * are zero (T mod 2^24 < 256). With D <= 1e-7 (1.7 in units of 2^-24):
 *   - every point flk_ambiguous8 flags for its fraction (g in [k, k + 2 eps),
 *     2 eps = 33.6 units) has T mod 2^24 in [126, 164): flagged;
 *   - a kept point has g in [k + 126/2^24, k + 1 - 126/2^24): frac(g) >= 7.5e-6 >
 *     2 eps, so flk_ambiguous8 keeps it too, with the same bin k, if k < nb.
 * A flagged point (about 1.5e-5 of them) is settled on the spot from its exact
 * projection (flk_tproj's d = 3 expression, flk_settle8). The top edge itself
 * (g = nb + eps) is flagged by the fraction test; a kept k >= nb would need
 * g >= nb + 7.5e-6, beyond any projection, and is guarded all the same: such a byte
 * is in no bin, so the direction's counts fall short and the caller recounts it. A
 * partial tile is padded with 0xFF (in no bin either). */
FLK_H512_ATTR
static void flk_fused3_512(const double *cols, int64_t len, const double *wc,
                           const double *v, double inv, double c, int32_t nb,
                           const double *e, double first, double denom, uint8_t *ib)
{
    int64_t i = 0;
    const double *c0 = cols, *c1 = cols + FLK_TILE, *c2 = cols + 2 * FLK_TILE;
    const __m512d w0 = _mm512_set1_pd(wc[0]), w1 = _mm512_set1_pd(wc[1]),
                  w2 = _mm512_set1_pd(wc[2]), vc = _mm512_set1_pd(wc[3]);
    /* bytes 0-15: byte 3 of each qword of a then of b; bytes 16-47: bytes 1-2 of each */
    const __m512i pick = _mm512_set_epi64(0, 0, 0x7A7972716A696261LL, 0x5A5952514A494241LL,
                                          0x3A3932312A292221LL, 0x1A1912110A090201LL,
                                          0x7B736B635B534B43LL, 0x3B332B231B130B03LL);
    for (; i + 16 <= len; i += 16) {
        __m512d t0 = _mm512_fmadd_pd(_mm512_loadu_pd(c2 + i), w2,
                     _mm512_fmadd_pd(_mm512_loadu_pd(c0 + i), w0,
                     _mm512_fmadd_pd(_mm512_loadu_pd(c1 + i), w1, vc)));
        __m512d t1 = _mm512_fmadd_pd(_mm512_loadu_pd(c2 + i + 8), w2,
                     _mm512_fmadd_pd(_mm512_loadu_pd(c0 + i + 8), w0,
                     _mm512_fmadd_pd(_mm512_loadu_pd(c1 + i + 8), w1, vc)));
        __m512i r = _mm512_permutex2var_epi8(_mm512_cvttpd_epi64(t0), pick,
                                             _mm512_cvttpd_epi64(t1));
        __mmask32 bad = _mm512_mask_testn_epi16_mask(0x00FFFF00u, r, r);
        _mm_storeu_si128((__m128i *)(ib + i), _mm512_castsi512_si128(r));
        if (bad) { /* rare: settle the flagged points */
            uint32_t b = (uint32_t)bad >> 8;
            while (b) {
                int64_t at = i + __builtin_ctz(b);
                b &= b - 1;
                ib[at] = flk_settle8(0.0 + fma(c2[at], v[2], fma(c0[at], v[0], c1[at] * v[1])),
                                     inv, c, nb, e, first, denom);
            }
        }
    }
    for (; i < len; i++) /* the tail: the same, point by point */
        ib[i] = flk_settle8(0.0 + fma(c2[i], v[2], fma(c0[i], v[0], c1[i] * v[1])), inv, c,
                            nb, e, first, denom);
    for (; i < FLK_TILE; i++) ib[i] = 0xFF; /* a partial tile: padding no bin counts */
}

/* Bin counts of two directions' full tiles of bytes (a, b: FLK_TILE each; 0xFF pads),
 * bit-sliced: GF2P8AFFINEQB turns each group of 8 bytes into its 8 bit planes, byte
 * permutes and lane shuffles align plane k of all 512 points in X_k (lanes: a's
 * points 0-127, 128-255, then b's), a ternary-logic tree over X_0..X_4 (and H, any
 * of bits 5-7 set) gives for bin b the mask of points equal to b, and VPOPCNTQ counts
 * it into acc[b] (8 qwords: 0-3 for a, 4-7 for b). About 100 vector operations for
 * the pair instead of ~360 compares and mask moves. Bytes >= nb are in no bin (the
 * caller checks the totals). */
FLK_H512_ATTR
static void flk_count_pair_512(const uint8_t *a, const uint8_t *b, int64_t nb,
                               uint64_t *acc)
{
    const __m512i C = _mm512_set1_epi64(0x8040201008040201LL);
    /* byte 16 m + g: byte m (lo) or m + 4 (hi) of qword g of (x, y) */
    const __m512i lo = _mm512_set_epi64(
        0x7B736B635B534B43LL, 0x3B332B231B130B03LL, 0x7A726A625A524A42LL,
        0x3A322A221A120A02LL, 0x7971696159514941LL, 0x3931292119110901LL,
        0x7870686058504840LL, 0x3830282018100800LL);
    const __m512i hi = _mm512_add_epi8(lo, _mm512_set1_epi8(4));
    __m512i T[8], L[4], H[4], X[8];
    int64_t q, k, bin, np;
    for (q = 0; q < 4; q++) {
        T[q] = _mm512_gf2p8affine_epi64_epi8(C, _mm512_loadu_si512(a + 64 * q), 0);
        T[4 + q] = _mm512_gf2p8affine_epi64_epi8(C, _mm512_loadu_si512(b + 64 * q), 0);
    }
    for (q = 0; q < 4; q++) {
        L[q] = _mm512_permutex2var_epi8(T[2 * q], lo, T[2 * q + 1]);
        H[q] = _mm512_permutex2var_epi8(T[2 * q], hi, T[2 * q + 1]);
    }
    for (k = 0; k < 2; k++) { /* 4 x 4 transpose of 128-bit lanes */
        const __m512i *S = k ? H : L;
        __m512i p0 = _mm512_shuffle_i64x2(S[0], S[1], 0x44), p1 = _mm512_shuffle_i64x2(S[0], S[1], 0xEE);
        __m512i p2 = _mm512_shuffle_i64x2(S[2], S[3], 0x44), p3 = _mm512_shuffle_i64x2(S[2], S[3], 0xEE);
        X[4 * k + 0] = _mm512_shuffle_i64x2(p0, p2, 0x88);
        X[4 * k + 1] = _mm512_shuffle_i64x2(p0, p2, 0xDD);
        X[4 * k + 2] = _mm512_shuffle_i64x2(p1, p3, 0x88);
        X[4 * k + 3] = _mm512_shuffle_i64x2(p1, p3, 0xDD);
    }
    const __m512i Hm = _mm512_ternarylogic_epi64(X[5], X[6], X[7], 0xFE);
    const __m512i Y0 = _mm512_ternarylogic_epi64(X[4], Hm, Hm, 0x03); /* ~x4 & ~h */
    const __m512i Y1 = _mm512_ternarylogic_epi64(X[4], Hm, Hm, 0x30); /* x4 & ~h */
    np = (nb + 3) >> 2;
    for (q = 0; q < np; q++) { /* q = bits 4..2 of the bin */
        const __m512i Y = (q >> 2) ? Y1 : Y0;
        __m512i Pq;
        switch (q & 3) { /* immediates must be constants */
        case 0: Pq = _mm512_ternarylogic_epi64(Y, X[3], X[2], 0x10); break;
        case 1: Pq = _mm512_ternarylogic_epi64(Y, X[3], X[2], 0x20); break;
        case 2: Pq = _mm512_ternarylogic_epi64(Y, X[3], X[2], 0x40); break;
        default: Pq = _mm512_ternarylogic_epi64(Y, X[3], X[2], 0x80); break;
        }
        for (k = 0; k < 4 && 4 * q + k < nb; k++) {
            __m512i Lb;
            bin = 4 * q + k;
            switch (k) {
            case 0: Lb = _mm512_ternarylogic_epi64(Pq, X[1], X[0], 0x10); break;
            case 1: Lb = _mm512_ternarylogic_epi64(Pq, X[1], X[0], 0x20); break;
            case 2: Lb = _mm512_ternarylogic_epi64(Pq, X[1], X[0], 0x40); break;
            default: Lb = _mm512_ternarylogic_epi64(Pq, X[1], X[0], 0x80); break;
            }
            _mm512_storeu_si512(acc + 8 * bin,
                                _mm512_add_epi64(_mm512_loadu_si512(acc + 8 * bin),
                                                 _mm512_popcnt_epi64(Lb)));
        }
    }
}

FLK_HIST_DEF(flk_hist_512, flk_tproj_512, flk_tile_index_hw, flk_tile_index8_512,
             flk_count_bytes_512, flk_fused3_512, flk_amax3_512, flk_count_pair_512,
             FLK_H512_ATTR)
static int flk_have_512(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512vbmi")
                && __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("gfni");
    }
    return known;
}
/* CPU features, looked up once (flk_coh_project_one runs in inner loops). */
static int flk_have_fma(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
    }
    return known;
}
#else
#define FLK_SW_ATTR
static int flk_have_fma(void) { return 0; }
#endif
/* Without hardware FMA, fma() is libm's correctly rounded software version: same
 * results, slower. */
FLK_PROJ_DEF(flk_proj_sw, FLK_SW_ATTR)
FLK_TILEPROJ_DEF(flk_tproj_sw, FLK_SW_ATTR)
FLK_MINMAX_DEF(flk_minmax_sw, flk_tproj_sw, flk_tile_minmax_sw, FLK_SW_ATTR)
FLK_ROWS_MINMAX_DEF(flk_rows_minmax_sw, flk_tproj_sw, flk_tile_minmax_sw, FLK_SW_ATTR)
FLK_HIST_DEF(flk_hist_sw, flk_tproj_sw, flk_tile_index_sw, flk_tile_index8_sw,
             flk_count_bytes_sw, ((flk_fused3_fn)NULL), ((flk_amax3_fn)NULL),
             ((flk_pair_fn)NULL), FLK_SW_ATTR)

static void flk_coh_minmax(const double *P, int64_t r0, int64_t r1, int64_t d,
                           const double *V, int64_t m, double *mins, double *maxs)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma()) { flk_minmax_hw(P, r0, r1, d, V, m, mins, maxs); return; }
#endif
    flk_minmax_sw(P, r0, r1, d, V, m, mins, maxs);
}

static void flk_coh_hist(const double *P, int64_t r0, int64_t r1, int64_t d,
                         const double *V, int64_t m, const double *edges, int64_t nb,
                         const unsigned char *skip, int64_t *counts)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma() && flk_have_512()) {
        flk_hist_512(P, r0, r1, d, V, m, edges, nb, skip, counts);
        return;
    }
    if (flk_have_fma()) { flk_hist_hw(P, r0, r1, d, V, m, edges, nb, skip, counts); return; }
#endif
    flk_hist_sw(P, r0, r1, d, V, m, edges, nb, skip, counts);
}

static void flk_coh_rows_minmax(const double *P, const int32_t *rows, int64_t nr,
                                int64_t d, const double *V, const uint64_t *mask,
                                int64_t words, double *cols, double *mins, double *maxs)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma()) {
        flk_rows_minmax_hw(P, rows, nr, d, V, mask, words, cols, mins, maxs);
        return;
    }
#endif
    flk_rows_minmax_sw(P, rows, nr, d, V, mask, words, cols, mins, maxs);
}

static double flk_coh_project_one(const double *a, const double *v, int64_t d)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma()) return flk_proj_hw(a, v, d);
#endif
    return flk_proj_sw(a, v, d);
}

/* ---- min/max by grid cells ----------------------------------------------------------
 * The min/max pass reads every projection only to keep two of them. Points are put
 * in grid cells of about 4 * FLK_TILE points (over the first min(d, 3) coordinates); each
 * cell keeps the exact box [lo_k, hi_k] of its points, which bounds every projection
 * in it: a . v <= sum_k max(lo_k v_k, hi_k v_k) (min for the lower end), up to the
 * rounding of a d-term dot product, far below the slack
 * 1e-10 * sum_k max(|lo_k|, |hi_k|) |v_k| used here. Each cell also keeps the rows
 * holding its box's faces; their projections are attained values, so those of the
 * cells with the highest and lowest bounds give a floor under the true max (and a
 * ceiling over the min). Only cells
 * whose bound reaches past that floor or ceiling can hold an extreme: one sequential
 * pass projects just their points, for just the directions that selected them. The
 * result is the same projections of the same points as the full pass, hence the same
 * min and max. (A counting sort of rows by cell was measured first: its random
 * writes cost more than the projections they saved.) */

/* Smallest and largest of each of the first kd <= 3 coordinates over the n >= 1 rows
 * (exact: min and max only compare). */
static void flk_bbox_sw(const double *P, int64_t n, int64_t d, int64_t kd, double *cmin,
                        double *cmax)
{
    int64_t i, k;
    for (k = 0; k < kd; k++) {
        double lo = P[k], hi = P[k];
        for (i = 1; i < n; i++) {
            double x = P[i * d + k];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        cmin[k] = lo;
        cmax[k] = hi;
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* d == 3: 8 rows are 3 vectors whose lane l always holds coordinate (8 r + l) mod 3
 * (r = 0, 1, 2), so three running min/max vectors and a final per-coordinate fold. */
__attribute__((target("avx512f,avx2,fma")))
static void flk_bbox_512(const double *P, int64_t n, int64_t d, int64_t kd, double *cmin,
                         double *cmax)
{
    int64_t i, r, l;
    double lo[24], hi[24];
    if (d != 3 || n < 8) { flk_bbox_sw(P, n, d, kd, cmin, cmax); return; }
    __m512d a0 = _mm512_loadu_pd(P), a1 = _mm512_loadu_pd(P + 8), a2 = _mm512_loadu_pd(P + 16);
    __m512d b0 = a0, b1 = a1, b2 = a2;
    for (i = 8; i + 8 <= n; i += 8) {
        const double *q = P + 3 * i;
        __m512d x0 = _mm512_loadu_pd(q), x1 = _mm512_loadu_pd(q + 8),
                x2 = _mm512_loadu_pd(q + 16);
        a0 = _mm512_min_pd(a0, x0); b0 = _mm512_max_pd(b0, x0);
        a1 = _mm512_min_pd(a1, x1); b1 = _mm512_max_pd(b1, x1);
        a2 = _mm512_min_pd(a2, x2); b2 = _mm512_max_pd(b2, x2);
    }
    _mm512_storeu_pd(lo, a0); _mm512_storeu_pd(lo + 8, a1); _mm512_storeu_pd(lo + 16, a2);
    _mm512_storeu_pd(hi, b0); _mm512_storeu_pd(hi + 8, b1); _mm512_storeu_pd(hi + 16, b2);
    for (l = 0; l < 3; l++) { cmin[l] = lo[l]; cmax[l] = hi[l]; }
    for (r = 3; r < 24; r++) {
        cmin[r % 3] = lo[r] < cmin[r % 3] ? lo[r] : cmin[r % 3];
        cmax[r % 3] = hi[r] > cmax[r % 3] ? hi[r] : cmax[r % 3];
    }
    for (; i < n; i++)
        for (l = 0; l < 3; l++) {
            double x = P[3 * i + l];
            cmin[l] = x < cmin[l] ? x : cmin[l];
            cmax[l] = x > cmax[l] ? x : cmax[l];
        }
}
#endif

static void flk_coh_bbox(const double *P, int64_t n, int64_t d, int64_t kd, double *cmin,
                         double *cmax)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma() && flk_have_512()) { flk_bbox_512(P, n, d, kd, cmin, cmax); return; }
#endif
    flk_bbox_sw(P, n, d, kd, cmin, cmax);
}

/* Grid cell of every row, over its first kd coordinates: cell[i] = sum of clamped
 * trunc((x_k - cmin_k) * scale_k) in base g. A loop of its own (no stores into the
 * boxes) so that it vectorises; d == 3 gets constant strides. */
#define FLK_CELL_IDS_DEF(NAME, ATTR)                                                 \
ATTR static void NAME(const double *P, int64_t n, int64_t d, int64_t kd, int64_t g,  \
                      const double *cmin, const double *scale, int32_t *cell)        \
{                                                                                    \
    int64_t i, k;                                                                    \
    const int32_t top = (int32_t)g - 1, g32 = (int32_t)g;                            \
    if (d == 3) {                                                                    \
        const double m0 = cmin[0], m1 = cmin[1], m2 = cmin[2];                       \
        const double s0 = scale[0], s1 = scale[1], s2 = scale[2];                    \
        for (i = 0; i < n; i++) {                                                    \
            int32_t b0 = (int32_t)((P[3 * i] - m0) * s0);                            \
            int32_t b1 = (int32_t)((P[3 * i + 1] - m1) * s1);                        \
            int32_t b2 = (int32_t)((P[3 * i + 2] - m2) * s2);                        \
            b0 = b0 < 0 ? 0 : (b0 > top ? top : b0);                                 \
            b1 = b1 < 0 ? 0 : (b1 > top ? top : b1);                                 \
            b2 = b2 < 0 ? 0 : (b2 > top ? top : b2);                                 \
            cell[i] = (b0 * g32 + b1) * g32 + b2;                                    \
        }                                                                            \
        return;                                                                      \
    }                                                                                \
    for (i = 0; i < n; i++) {                                                        \
        int32_t id = 0;                                                              \
        for (k = 0; k < kd; k++) {                                                   \
            int32_t b = (int32_t)((P[i * d + k] - cmin[k]) * scale[k]);              \
            b = b < 0 ? 0 : (b > top ? top : b);                                     \
            id = id * g32 + b;                                                       \
        }                                                                            \
        cell[i] = id;                                                                \
    }                                                                                \
}
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
FLK_CELL_IDS_DEF(flk_cell_ids_512, __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))))
#endif
FLK_CELL_IDS_DEF(flk_cell_ids_sw, )
static void flk_coh_cell_ids(const double *P, int64_t n, int64_t d, int64_t kd, int64_t g,
                             const double *cmin, const double *scale, int32_t *cell)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma() && flk_have_512()) {
        flk_cell_ids_512(P, n, d, kd, g, cmin, scale, cell);
        return;
    }
#endif
    flk_cell_ids_sw(P, n, d, kd, g, cmin, scale, cell);
}

/* Same answer as flk_coh_minmax over all n >= 1 rows (n < 2**31). Returns 0, or -1
 * when out of memory. */
static int flk_coh_minmax_cells(const double *P, int64_t n, int64_t d, const double *V,
                                int64_t m, double *mins, double *maxs)
{
    int64_t k, i, j, q, kd = d < 3 ? d : 3, g = 1, cells = 1, words = (m + 63) / 64;
    double cmin[3] = {0, 0, 0}, cmax[3] = {0, 0, 0}, scale[3] = {0, 0, 0};
    /* cells of ~4 tiles: their boxes (cells x d x 2 doubles) stay in L1/L2 */
    while (g < 1024 && pow((double)(g + 1), (double)kd) <= (double)n / (4 * FLK_TILE)) g++;
    for (k = 0; k < kd; k++) cells *= g;
    flk_coh_bbox(P, n, d, kd, cmin, cmax);
    for (k = 0; k < kd; k++)
        scale[k] = cmax[k] > cmin[k] ? (double)g / (cmax[k] - cmin[k]) : 0.0;
    int32_t *cell = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    double *lo = (double *)malloc(sizeof(double) * (size_t)(cells * d));
    double *hi = (double *)malloc(sizeof(double) * (size_t)(cells * d));
    int32_t *rep = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * cells * d));
    uint64_t *sel = (uint64_t *)calloc((size_t)(cells * words), sizeof(uint64_t));
    double *ub = (double *)malloc(sizeof(double) * (size_t)(2 * cells)), *lb = ub + cells;
    int64_t *cnt = (int64_t *)calloc((size_t)(2 * cells), sizeof(int64_t)), *pos = cnt + cells;
    double *cols = (double *)malloc(sizeof(double) * FLK_TILE * (size_t)d);
    int32_t *rows = NULL;
    if (!cell || !lo || !hi || !rep || !sel || !ub || !cnt || !cols) {
        free(cell); free(lo); free(hi); free(rep); free(sel); free(ub); free(cnt);
        free(cols);
        return -1;
    }
    for (i = 0; i < cells * d; i++) { lo[i] = INFINITY; hi[i] = -INFINITY; }
    for (i = 0; i < 2 * cells * d; i++) rep[i] = -1;
    flk_coh_cell_ids(P, n, d, kd, g, cmin, scale, cell);
    for (i = 0; i < n; i++) {
        const double *a = P + i * d;
        int64_t id = cell[i];
        cnt[id]++;
        for (k = 0; k < d; k++) {
            if (a[k] < lo[id * d + k]) { lo[id * d + k] = a[k]; rep[2 * (id * d + k)] = (int32_t)i; }
            if (a[k] > hi[id * d + k]) { hi[id * d + k] = a[k]; rep[2 * (id * d + k) + 1] = (int32_t)i; }
        }
    }
    for (j = 0; j < m; j++) {
        const double *v = V + j * d;
        double floor_ = -INFINITY, ceil_ = INFINITY, top = -INFINITY, bottom = INFINITY;
        int64_t qtop = -1, qbottom = -1;
        for (q = 0; q < cells; q++) {
            double u = 0.0, l = 0.0, mag = 0.0;
            if (rep[2 * q * d] < 0) { ub[q] = -INFINITY; lb[q] = INFINITY; continue; }
            for (k = 0; k < d; k++) {
                double a = lo[q * d + k], b = hi[q * d + k];
                double pa = a * v[k], pb = b * v[k], aa = fabs(a), ab = fabs(b);
                u += pa > pb ? pa : pb;
                l += pa < pb ? pa : pb;
                mag += (aa > ab ? aa : ab) * fabs(v[k]);
            }
            ub[q] = u + 1e-10 * mag + 1e-300;
            lb[q] = l - 1e-10 * mag - 1e-300;
            if (ub[q] > top) { top = ub[q]; qtop = q; }
            if (lb[q] < bottom) { bottom = lb[q]; qbottom = q; }
        }
        /* the face rows of the most promising cells: attained values near the ends */
        for (i = 0; i < 2 * d; i++) {
            double p = flk_coh_project_one(P + (int64_t)rep[2 * qtop * d + i] * d, v, d);
            floor_ = p > floor_ ? p : floor_;
            ceil_ = p < ceil_ ? p : ceil_;
            p = flk_coh_project_one(P + (int64_t)rep[2 * qbottom * d + i] * d, v, d);
            floor_ = p > floor_ ? p : floor_;
            ceil_ = p < ceil_ ? p : ceil_;
        }
        mins[j] = ceil_;
        maxs[j] = floor_;
        for (q = 0; q < cells; q++)
            if (ub[q] > floor_ || lb[q] < ceil_)
                sel[q * words + j / 64] |= (uint64_t)1 << (j % 64);
    }
    /* the rows of the selected cells, cell by cell (offsets, then one pass over
     * cell[]; pos[q] = -1 for a cell no direction chose), then each cell's rows for
     * its directions with the tile projection */
    int64_t total = 0;
    for (q = 0; q < cells; q++) {
        uint64_t any = 0;
        for (k = 0; k < words; k++) any |= sel[q * words + k];
        pos[q] = any ? total : -1;
        total += any ? cnt[q] : 0;
    }
    rows = (int32_t *)malloc(sizeof(int32_t) * (size_t)(total + 1));
    if (!rows) {
        free(cell); free(lo); free(hi); free(rep); free(sel); free(ub); free(cnt);
        free(cols);
        return -1;
    }
    for (i = 0; i < n; i++) { /* branch-free: unselected rows go to the spare slot */
        int64_t at = pos[cell[i]];
        rows[at >= 0 ? at : total] = (int32_t)i;
        pos[cell[i]] = at + (at >= 0);
    }
    for (q = 0; q < cells; q++)
        if (pos[q] >= 0) /* pos[q] now ends the cell's rows */
            flk_coh_rows_minmax(P, rows + pos[q] - cnt[q], cnt[q], d, V, sel + q * words,
                                words, cols, mins, maxs);
    free(cell); free(lo); free(hi); free(rep); free(sel); free(ub); free(cnt); free(cols);
    free(rows);
    return 0;
}

#endif
