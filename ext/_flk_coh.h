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

/* min/max of P @ v_j for every direction j over rows [r0, r1). mins/maxs are
 * accumulated into (callers seed them with +/-inf). */
#define FLK_MINMAX_DEF(NAME, PROJ, ATTR)                                             \
ATTR static void NAME(const double *P, int64_t r0, int64_t r1, int64_t d,            \
                      const double *V, int64_t m, double *mins, double *maxs)        \
{                                                                                    \
    int64_t t0, t1, i, j;                                                            \
    for (t0 = r0; t0 < r1; t0 += FLK_TILE) {                                         \
        t1 = t0 + FLK_TILE < r1 ? t0 + FLK_TILE : r1;                                \
        for (j = 0; j < m; j++) {                                                    \
            const double *v = V + j * d;                                             \
            double mn = mins[j], mx = maxs[j];                                       \
            if (d == 3) {                                                            \
                const double v0 = v[0], v1 = v[1], v2 = v[2];                        \
                for (i = t0; i < t1; i++) {                                          \
                    double p = 0.0 + fma(P[3 * i + 2], v2,                           \
                                         fma(P[3 * i], v0, P[3 * i + 1] * v1));      \
                    mn = p < mn ? p : mn;                                            \
                    mx = p > mx ? p : mx;                                            \
                }                                                                    \
            } else {                                                                 \
                for (i = t0; i < t1; i++) {                                          \
                    double p = PROJ(P + i * d, v, d);                                \
                    mn = p < mn ? p : mn;                                            \
                    mx = p > mx ? p : mx;                                            \
                }                                                                    \
            }                                                                        \
            mins[j] = mn; maxs[j] = mx;                                              \
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

/* Histogram of P @ v_j into nb bins with numpy.histogram's rules. counts is m x nb
 * and is accumulated into. Directions with skip[j] != 0 (degenerate range) are
 * skipped. Each tile runs simple loops (project, index, count) so that the first two
 * vectorise. */
#define FLK_HIST_DEF(NAME, PROJ, ATTR)                                               \
ATTR static void NAME(const double *P, int64_t r0, int64_t r1, int64_t d,            \
                      const double *V, int64_t m, const double *edges, int64_t nb,   \
                      const unsigned char *skip, int64_t *counts)                    \
{                                                                                    \
    int64_t t0, i, j, len;                                                           \
    double pt[FLK_TILE];                                                             \
    int32_t ib[FLK_TILE];                                                            \
    unsigned char amb[FLK_TILE];                                                     \
    const double nbf = (double)nb;                                                   \
    const int32_t nb32 = (int32_t)nb;                                                \
    for (t0 = r0; t0 < r1; t0 += FLK_TILE) {                                         \
        len = t0 + FLK_TILE < r1 ? FLK_TILE : r1 - t0;                               \
        const double *A = P + t0 * d;                                                \
        for (j = 0; j < m; j++) {                                                    \
            if (skip[j]) continue;                                                   \
            const double *v = V + j * d;                                             \
            const double *e = edges + j * (nb + 1);                                  \
            const double first = e[0], denom = e[nb] - e[0];                         \
            const double big = fabs(e[0]) > fabs(e[nb]) ? fabs(e[0]) : fabs(e[nb]); \
            const double ulp = nextafter(big, INFINITY) - big;                       \
            const int safe = (8.0 * ulp * nbf / denom + 64.0 * 2.220446049250313e-16 \
                              * nbf) < 1e-7;                                         \
            const double inv = nbf / denom;                                          \
            int64_t *c = counts + j * nb;                                            \
            if (d == 3) {                                                            \
                const double v0 = v[0], v1 = v[1], v2 = v[2];                        \
                for (i = 0; i < len; i++)                                            \
                    pt[i] = 0.0 + fma(A[3 * i + 2], v2,                              \
                                      fma(A[3 * i], v0, A[3 * i + 1] * v1));         \
            } else {                                                                 \
                for (i = 0; i < len; i++) pt[i] = PROJ(A + i * d, v, d);             \
            }                                                                        \
            if (safe) {                                                              \
                for (i = 0; i < len; i++) {                                          \
                    double f = (pt[i] - first) * inv;                                \
                    int32_t k = (int32_t)f;                                          \
                    double fr = f - (double)k;                                       \
                    ib[i] = k;                                                       \
                    amb[i] = (fr < FLK_EDGE_EPS) | (fr > 1.0 - FLK_EDGE_EPS) |       \
                             (k >= nb32);                                            \
                }                                                                    \
                for (i = 0; i < len; i++) {                                          \
                    if (__builtin_expect(amb[i], 0))                                 \
                        c[flk_numpy_bin(pt[i], e, nb32, first, denom)]++;            \
                    else                                                             \
                        c[ib[i]]++;                                                  \
                }                                                                    \
            } else {                                                                 \
                for (i = 0; i < len; i++)                                            \
                    c[flk_numpy_bin(pt[i], e, nb32, first, denom)]++;                \
            }                                                                        \
        }                                                                            \
    }                                                                                \
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FLK_HW_ATTR __attribute__((target("avx2,fma"), optimize("fp-contract=off")))
#define FLK_SW_ATTR __attribute__((optimize("fp-contract=off")))
FLK_PROJ_DEF(flk_proj_hw, FLK_HW_ATTR)
FLK_MINMAX_DEF(flk_minmax_hw, flk_proj_hw, FLK_HW_ATTR)
FLK_HIST_DEF(flk_hist_hw, flk_proj_hw, FLK_HW_ATTR)
static int flk_have_fma(void) { __builtin_cpu_init(); return __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"); }
#else
#define FLK_SW_ATTR
static int flk_have_fma(void) { return 0; }
#endif
/* Without hardware FMA, fma() is libm's correctly rounded software version: same
 * results, slower. */
FLK_PROJ_DEF(flk_proj_sw, FLK_SW_ATTR)
FLK_MINMAX_DEF(flk_minmax_sw, flk_proj_sw, FLK_SW_ATTR)
FLK_HIST_DEF(flk_hist_sw, flk_proj_sw, FLK_SW_ATTR)

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
    if (flk_have_fma()) { flk_hist_hw(P, r0, r1, d, V, m, edges, nb, skip, counts); return; }
#endif
    flk_hist_sw(P, r0, r1, d, V, m, edges, nb, skip, counts);
}

static double flk_coh_project_one(const double *a, const double *v, int64_t d)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (flk_have_fma()) return flk_proj_hw(a, v, d);
#endif
    return flk_proj_sw(a, v, d);
}
#endif
