"""Fused projection + min/max + histogram for the legacy coherence sampler (SPEC §4.3).

The arithmetic lives in _flk_coh.h (it needs a per-function FMA target); this module
splits rows into chunks over OpenMP threads, gives each thread private min/max and
count buffers, and reduces them. No n x M projection matrix is ever materialised.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.math cimport INFINITY
cimport openmp

import numpy as np

cdef extern from "_flk_coh.h" nogil:
    void flk_coh_minmax(const double *P, int64_t r0, int64_t r1, int64_t d,
                        const double *V, int64_t m, double *mins, double *maxs)
    void flk_coh_hist(const double *P, int64_t r0, int64_t r1, int64_t d,
                      const double *V, int64_t m, const double *edges, int64_t nb,
                      const unsigned char *skip, int64_t *counts)
    double flk_coh_project_one(const double *a, const double *v, int64_t d)
    int flk_coh_minmax_cells(const double *P, int64_t n, int64_t d, const double *V,
                             int64_t m, double *mins, double *maxs)

# Rows per parallel work item: large enough to amortise scheduling, small enough to
# balance two threads on 1e5 rows.
cdef int64_t _CHUNK = 16384


cdef int _threads(int64_t n, int nthreads) noexcept nogil:
    # Threads only pay off above a few chunks; nthreads <= 0 means "all cores".
    cdef int t = nthreads if nthreads > 0 else openmp.omp_get_max_threads()
    cdef int64_t chunks = (n + _CHUNK - 1) // _CHUNK
    if chunks < t:
        t = <int>chunks if chunks > 0 else 1
    return t


def minmax_f64(const double[:, ::1] points, const double[:, ::1] dirs, int nthreads=0):
    """Per-direction min and max of ``points @ dirs[j]``.

    Unchecked: points is (n, d) with n >= 1, dirs is (m, d), all finite
    (flk_fast.kernels.coherence guarantees it).
    """
    cdef int64_t n = points.shape[0], d = points.shape[1], m = dirs.shape[0]
    cdef int t = _threads(n, nthreads)
    cdef int64_t nchunks = (n + _CHUNK - 1) // _CHUNK, c, j, r0, r1, k
    mins_out = np.full(m, np.inf)
    maxs_out = np.full(m, -np.inf)
    cdef double[::1] mins = mins_out, maxs = maxs_out
    cdef double *buf = <double *> malloc(2 * t * m * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    cdef double *tb
    try:
        with nogil:
            for k in range(t * m):
                buf[k] = INFINITY
                buf[t * m + k] = -INFINITY
            for c in prange(nchunks, num_threads=t, schedule="static"):
                r0 = c * _CHUNK
                r1 = r0 + _CHUNK if r0 + _CHUNK < n else n
                tb = buf + openmp.omp_get_thread_num() * m
                flk_coh_minmax(&points[0, 0], r0, r1, d, &dirs[0, 0], m,
                               tb, tb + t * m)
            for k in range(t):
                for j in range(m):
                    if buf[k * m + j] < mins[j]:
                        mins[j] = buf[k * m + j]
                    if buf[t * m + k * m + j] > maxs[j]:
                        maxs[j] = buf[t * m + k * m + j]
    finally:
        free(buf)
    return mins_out, maxs_out


def hist_max_f64(const double[:, ::1] points, const double[:, ::1] dirs,
                 const double[:, ::1] edges, const unsigned char[::1] skip,
                 int nthreads=0):
    """Largest bin count of each direction's histogram (0 where ``skip`` is set).

    Unchecked: edges[j] are numpy.linspace(min_j, max_j, nb + 1) of the projections
    computed by minmax_f64 on the same points and dirs, so every projection falls in
    [edges[j, 0], edges[j, nb]] (flk_fast.kernels.coherence guarantees it).
    """
    cdef int64_t n = points.shape[0], d = points.shape[1], m = dirs.shape[0]
    cdef int64_t nb = edges.shape[1] - 1
    cdef int t = _threads(n, nthreads)
    cdef int64_t nchunks = (n + _CHUNK - 1) // _CHUNK, c, j, b, k, r0, r1, best
    out = np.zeros(m, dtype=np.int64)
    cdef int64_t[::1] res = out
    cdef int64_t *counts = <int64_t *> malloc(t * m * nb * sizeof(int64_t))
    if counts == NULL:
        raise MemoryError()
    try:
        with nogil:
            for k in range(t * m * nb):
                counts[k] = 0
            for c in prange(nchunks, num_threads=t, schedule="static"):
                r0 = c * _CHUNK
                r1 = r0 + _CHUNK if r0 + _CHUNK < n else n
                flk_coh_hist(&points[0, 0], r0, r1, d, &dirs[0, 0], m, &edges[0, 0],
                             nb, &skip[0],
                             counts + openmp.omp_get_thread_num() * m * nb)
            for j in range(m):
                best = 0
                for b in range(nb):
                    c = 0
                    for k in range(t):
                        c = c + counts[k * m * nb + j * nb + b]
                    if c > best:
                        best = c
                res[j] = best
    finally:
        free(counts)
    return out


def project_f64(const double[:, ::1] points, const double[::1] v):
    """``points @ v`` with the kernel's arithmetic (for tests and diagnostics)."""
    cdef int64_t n = points.shape[0], d = points.shape[1], i
    out = np.empty(n)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = flk_coh_project_one(&points[i, 0], &v[0], d)
    return out



def minmax_cells_f64(const double[:, ::1] points, const double[:, ::1] dirs):
    """Same answer as :func:`minmax_f64`, projecting for each direction only the
    points of the grid cells whose box can hold an extreme (see _flk_coh.h); one
    thread, a few passes over the points. Unchecked as minmax_f64, and n < 2**31."""
    cdef int64_t n = points.shape[0], d = points.shape[1], m = dirs.shape[0]
    cdef int rc
    mins_out = np.empty(m)
    maxs_out = np.empty(m)
    cdef double[::1] mins = mins_out, maxs = maxs_out
    with nogil:
        rc = flk_coh_minmax_cells(&points[0, 0], n, d, &dirs[0, 0], m, &mins[0],
                                  &maxs[0])
    if rc != 0:
        raise MemoryError()
    return mins_out, maxs_out
