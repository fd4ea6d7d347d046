# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Thin Cython driver of the fused categorical samplers (csrc/tl_cat.h).

No validation here (tiltlab.sampling does it through tiltlab._validation); per-row status
flags come back to the Python layer.  Rows run in parallel, one row per thread at a time
with that thread's scratch; when there are fewer rows than threads and a row has several
blocks of draws, the row is prepared once and its blocks of draws run in parallel.  Draw d
of row e always uses word d of the row's PCG64 stream (seeds[e]), so the draws depend on
neither the number of threads nor the block size.
"""
from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t, uint64_t

import numpy as np

from tiltlab._kernels cimport *

ctypedef fused floating:
    float
    double


cdef extern from "tl_cat.h" nogil:
    enum:
        TL_CAT_PLAIN
        TL_CAT_TILT
    ctypedef struct tl_cat_row:
        int mode
        double total
        Py_ssize_t nb
    Py_ssize_t tl_cat_blocks(Py_ssize_t n)
    int tl_cat_prepare_f64(const double *l, const double *r, Py_ssize_t n, int mode,
                           double lam, tl_cat_row *row, double *bmax, double *bscale,
                           double *cum)
    int tl_cat_prepare_f32(const float *l, const float *r, Py_ssize_t n, int mode,
                           double lam, tl_cat_row *row, double *bmax, double *bscale,
                           double *cum)
    void tl_cat_draw_f64(const double *l, const double *r, Py_ssize_t n,
                         const tl_cat_row *row, const double *bmax, const double *bscale,
                         const double *cum, const tl_pcg64 *g, int64_t count, int64_t *out,
                         const tl_stop_flag *stop)
    void tl_cat_draw_f32(const float *l, const float *r, Py_ssize_t n,
                         const tl_cat_row *row, const double *bmax, const double *bscale,
                         const double *cum, const tl_pcg64 *g, int64_t count, int64_t *out,
                         const tl_stop_flag *stop)
    Py_ssize_t tl_cat_weights_f64(const double *l, const double *r, Py_ssize_t n,
                                  const tl_cat_row *row, const double *bmax,
                                  const double *bscale, double *w, int32_t *payload)
    Py_ssize_t tl_cat_weights_f32(const float *l, const float *r, Py_ssize_t n,
                                  const tl_cat_row *row, const double *bmax,
                                  const double *bscale, double *w, int32_t *payload)


include "_buffer.pxi"
include "_guard.pxi"
include "_isa.pxi"


# returned in a row's flags when its alias table could not be built (a bug, never input)
cdef enum:
    _FLAG_INTERNAL = 1048576
FLAG_INTERNAL = _FLAG_INTERNAL
#: mode of plain logits / of tilted logits l + lam r
PLAIN = TL_CAT_PLAIN
TILT = TL_CAT_TILT


cdef struct Scratch:
    tl_cat_row row
    double *bmax
    double *bscale
    double *cum
    double *w            # the alias table's weights and workspace (alias only)
    double *prob
    int32_t *payload
    int32_t *stack
    tl_alias64 *slots
    Py_ssize_t k         # slots of the alias table


cdef int _prepare(const floating *l, const floating *r, Py_ssize_t V, int mode, double lam,
                  bint alias, Scratch *s) noexcept nogil:
    """The pass over one row (and its alias table); returns its flags."""
    cdef int fl
    if floating is double:
        fl = tl_cat_prepare_f64(l, r, V, mode, lam, &s.row, s.bmax, s.bscale, s.cum)
    else:
        fl = tl_cat_prepare_f32(l, r, V, mode, lam, &s.row, s.bmax, s.bscale, s.cum)
    if fl != 0 or not alias:
        return fl
    if floating is double:
        s.k = tl_cat_weights_f64(l, r, V, &s.row, s.bmax, s.bscale, s.w, s.payload)
    else:
        s.k = tl_cat_weights_f32(l, r, V, &s.row, s.bmax, s.bscale, s.w, s.payload)
    if s.k < 1 or tl_alias64_build(s.w, s.payload, s.k, s.slots, s.prob, s.stack) != 0:
        return _FLAG_INTERNAL
    return 0


cdef void _draw(const floating *l, const floating *r, Py_ssize_t V, bint alias,
                const Scratch *s, const tl_pcg64 *g, int64_t count, int64_t *out,
                const tl_stop_flag *stop) noexcept nogil:
    """count draws of a prepared row from the stream at g."""
    if alias:
        tl_alias64_sample(g, count, s.slots, s.k, out)
    elif floating is double:
        tl_cat_draw_f64(l, r, V, &s.row, s.bmax, s.bscale, s.cum, g, count, out, stop)
    else:
        tl_cat_draw_f32(l, r, V, &s.row, s.bmax, s.bscale, s.cum, g, count, out, stop)


cdef int _row(const floating *l, const floating *r, Py_ssize_t V, int mode, double lam,
              const uint64_t *seed, int64_t draws, bint alias, int64_t *out, Scratch *s,
              const tl_stop_flag *stop) noexcept nogil:
    """One whole row on the calling thread; returns its flags."""
    cdef tl_pcg64 g
    if tl_stop_requested(stop):
        return 0
    cdef int fl = _prepare(l, r, V, mode, lam, alias, s)
    if fl != 0:
        return fl
    tl_pcg64_seed(&g, seed)
    _draw(l, r, V, alias, s, &g, draws, out, stop)
    return 0


def sample_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                const int64_t[::1] roff, Py_ssize_t V, int mode, const double[::1] lam,
                const uint64_t[:, ::1] seeds, int64_t draws, bint alias, int64_t block,
                int64_t[:, ::1] out, int32_t[::1] flags, int n_threads):
    """out[e, :draws] = draws from softmax(z) of batch element e (tl_cat.h).

    mode PLAIN: z = the logits row lb[loff[e]:loff[e] + V] (rb, roff and lam unused);
    TILT: the tilted logits with the rewards row of roff[e] and lam[e].  Element e draws
    from one PCG64 stream seeded by seeds[e] (four words), draw d from word d, by the
    block search or (alias) an alias table over the row's weights.  When the rows are
    fewer than the threads, the draws of a row run in blocks of `block` in parallel.
    Rows whose flags are not 0 are not drawn."""
    cdef Py_ssize_t n_el = loff.shape[0]
    if n_el == 0 or draws <= 0:
        return
    if seeds.shape[0] != n_el or seeds.shape[1] != 4 or out.shape[0] != n_el:
        raise ValueError("internal: wrong shape of the stream seeds or of the output")
    n_threads = tl_team_size(n_threads)
    cdef int64_t n_blocks = (draws + block - 1) // block
    cdef bint by_draws = n_el < n_threads and n_blocks > 1
    cdef int nt = n_threads
    if not by_draws and nt > n_el:
        nt = <int> n_el
    if by_draws and nt > n_blocks:
        nt = <int> n_blocks
    cdef int n_scratch = 1 if by_draws else nt
    cdef Py_ssize_t nb = tl_cat_blocks(V)
    cdef Py_ssize_t na = V if alias else 1
    cdef _Buffer scr_b = _Buffer(n_scratch, sizeof(Scratch))
    cdef _Buffer blk_b = _Buffer(3 * nb * n_scratch, sizeof(double))
    cdef _Buffer w_b = _Buffer(2 * na * n_scratch, sizeof(double))
    cdef _Buffer i_b = _Buffer(2 * na * n_scratch, sizeof(int32_t))
    cdef _Buffer sl_b = _Buffer(na * n_scratch, sizeof(tl_alias64))
    cdef Scratch *scr = <Scratch *> scr_b.ptr
    cdef Py_ssize_t t, e, b
    for t in range(n_scratch):
        scr[t].bmax = <double *> blk_b.ptr + 3 * nb * t
        scr[t].bscale = scr[t].bmax + nb
        scr[t].cum = scr[t].bscale + nb
        scr[t].w = <double *> w_b.ptr + 2 * na * t
        scr[t].prob = scr[t].w + na
        scr[t].payload = <int32_t *> i_b.ptr + 2 * na * t
        scr[t].stack = scr[t].payload + na
        scr[t].slots = <tl_alias64 *> sl_b.ptr + na * t
        scr[t].k = 0
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0] if mode != TL_CAT_PLAIN else NULL
    cdef const tl_stop_flag *stop
    cdef int fl
    cdef int64_t count
    cdef tl_pcg64 g0, g
    cdef double work = <double> n_el * (<double> V + <double> draws)
    cdef _Interruptible guard = _Interruptible(work)
    with nogil:
        stop = tl_stop_flag_here()
        if not by_draws:
            if nt <= 1:
                for e in range(n_el):
                    flags[e] = _row(lp + loff[e], rp + roff[e] if rp != NULL else NULL, V,
                                    mode, lam[e] if mode != TL_CAT_PLAIN else 0.0,
                                    &seeds[e, 0], draws, alias, &out[e, 0], &scr[0], stop)
            else:
                for e in prange(n_el, num_threads=nt, schedule='dynamic', chunksize=1):
                    flags[e] = _row(lp + loff[e], rp + roff[e] if rp != NULL else NULL, V,
                                    mode, lam[e] if mode != TL_CAT_PLAIN else 0.0,
                                    &seeds[e, 0], draws, alias, &out[e, 0],
                                    &scr[threadid()], stop)
        else:
            for e in range(n_el):
                if tl_stop_requested(stop):
                    break
                fl = _prepare(lp + loff[e], rp + roff[e] if rp != NULL else NULL, V, mode,
                              lam[e] if mode != TL_CAT_PLAIN else 0.0, alias, &scr[0])
                flags[e] = fl
                if fl != 0:
                    continue
                tl_pcg64_seed(&g0, &seeds[e, 0])
                for b in prange(n_blocks, num_threads=nt, schedule='dynamic', chunksize=1):
                    if tl_stop_requested(stop):
                        continue
                    count = draws - b * block if draws - b * block < block else block
                    g = g0
                    tl_pcg64_advance(&g, tl_u128_mul64(<uint64_t> (b * block), 1))
                    _draw(lp + loff[e], rp + roff[e] if rp != NULL else NULL, V, alias,
                          &scr[0], &g, count, &out[e, b * block], stop)
    guard.finish()



cdef int _small(const floating *l, const floating *r, Py_ssize_t n_rows, Py_ssize_t V,
                int mode, double lam, const uint64_t *seeds, int64_t draws, bint alias,
                int64_t *out) noexcept nogil:
    """sample_rows of n_rows contiguous rows with one lam, on the calling thread (small
    calls: no OpenMP region, one allocation); returns the or of the rows' flags, or -1 if
    the scratch could not be allocated."""
    cdef Scratch s
    cdef Py_ssize_t nb = tl_cat_blocks(V), na = V if alias else 1, e
    cdef int fl = 0
    cdef char *mem = <char *> malloc(<size_t> (3 * nb + 2 * na) * sizeof(double)
                                     + <size_t> (2 * na) * sizeof(int32_t)
                                     + <size_t> na * sizeof(tl_alias64))
    if mem == NULL:
        return -1
    s.slots = <tl_alias64 *> mem
    s.bmax = <double *> (s.slots + na)
    s.bscale = s.bmax + nb
    s.cum = s.bscale + nb
    s.w = s.cum + nb
    s.prob = s.w + na
    s.payload = <int32_t *> (s.prob + na)
    s.stack = s.payload + na
    s.k = 0
    for e in range(n_rows):
        fl |= _row(l + e * V, r + e * V if mode != TL_CAT_PLAIN else NULL, V, mode, lam,
                   seeds + 4 * e, draws, alias, out + e * draws, &s, NULL)
    free(mem)
    return fl


def small_f64(const double[::1] lb, const double[::1] rb, Py_ssize_t n_rows, Py_ssize_t V,
              int mode, double lam, const uint64_t[:, ::1] seeds, int64_t draws, bint alias,
              int64_t[:, ::1] out):
    """sample_rows of n_rows C-contiguous float64 rows (lb, and rb for TILT) with one scalar
    lam, on the calling thread, for small calls (the same draws); returns the or of the
    rows' flags."""
    cdef int fl
    with nogil:
        fl = _small(&lb[0], &rb[0], n_rows, V, mode, lam, &seeds[0, 0], draws, alias,
                    &out[0, 0])
    if fl < 0:
        raise MemoryError("tiltlab: could not allocate work buffers")
    return fl


def small_f32(const float[::1] lb, const float[::1] rb, Py_ssize_t n_rows, Py_ssize_t V,
              int mode, double lam, const uint64_t[:, ::1] seeds, int64_t draws, bint alias,
              int64_t[:, ::1] out):
    """float32 rows: as small_f64."""
    cdef int fl
    with nogil:
        fl = _small(&lb[0], &rb[0], n_rows, V, mode, lam, &seeds[0, 0], draws, alias,
                    &out[0, 0])
    if fl < 0:
        raise MemoryError("tiltlab: could not allocate work buffers")
    return fl
