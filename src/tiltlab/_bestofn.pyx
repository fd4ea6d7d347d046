# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Thin Cython drivers for best-of-N (csrc/tl_bon.h): levels, exact laws, samplers.

No validation here (tiltlab._validation does it); per-element status flags come back to
the Python layer.  Exact laws run one thread per distinct row (each with its own
workspace); samplers split the draws of every row into fixed blocks, each starting from
its own offset of the row's stream, or (draw_rows: a few draws per row) run the rows in
parallel, each from its own stream, so that results do not depend on the number of
threads.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport NAN, exp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np

from tiltlab._kernels cimport *

ctypedef fused floating:
    float
    double


cdef struct Workspace:
    uint64_t *keys
    uint64_t *kbuf
    int64_t *order
    int64_t *obuf
    int64_t *start
    double *values
    double *log_mass
    double *log_cdf
    double *log_sf
    double *ell
    double *a
    double *log_w


cdef int _ws_alloc(Workspace *w, Py_ssize_t n) noexcept nogil:
    """One block for the twelve arrays of length n + 1 (all 8-byte elements)."""
    cdef size_t m = <size_t> (n + 1)
    cdef char *block = <char *> malloc(12 * m * 8)
    w.keys = <uint64_t *> block
    if block == NULL:
        return -1
    w.kbuf = w.keys + m
    w.order = <int64_t *> (w.kbuf + m)
    w.obuf = w.order + m
    w.start = w.obuf + m
    w.values = <double *> (w.start + m)
    w.log_mass = w.values + m
    w.log_cdf = w.log_mass + m
    w.log_sf = w.log_cdf + m
    w.ell = w.log_sf + m
    w.a = w.ell + m
    w.log_w = w.a + m
    return 0


cdef void _ws_free(Workspace *w) noexcept nogil:
    free(w.keys)
    w.keys = NULL


cdef inline int _levels(const floating *l, const floating *r, Py_ssize_t V, Workspace *w,
                        tl_levels *lv, const tl_stop_flag *stop) noexcept nogil:
    if floating is double:
        return tl_levels_f64(l, r, V, w.keys, w.kbuf, w.order, w.obuf, w.values, w.log_mass,
                             w.start, lv, stop)
    else:
        return tl_levels_f32(l, r, V, w.keys, w.kbuf, w.order, w.obuf, w.values, w.log_mass,
                             w.start, lv, stop)


def reward_levels_row(const floating[::1] lb, const floating[::1] rb, Py_ssize_t loff,
                      Py_ssize_t roff, Py_ssize_t V):
    """(flags, values, log_masses) of one row."""
    cdef Workspace w
    cdef tl_levels lv
    cdef int fl
    cdef const tl_stop_flag *stop
    cdef _Interruptible guard = _Interruptible(<double> V)
    if _ws_alloc(&w, V) != 0:
        raise MemoryError("tiltlab: could not allocate work buffers")
    try:
        with nogil:
            stop = tl_stop_flag_here()
            fl = _levels(&lb[loff], &rb[roff], V, &w, &lv, stop)
        guard.finish()
        if fl:
            return fl, None, None
        values = np.array(<double[:lv.n_levels]> w.values, dtype=np.float64)
        log_mass = np.array(<double[:lv.n_levels]> w.log_mass, dtype=np.float64)
        return 0, values, log_mass
    finally:
        _ws_free(&w)


cdef void _bon_row(const floating *l, const floating *r, Py_ssize_t V, Workspace *w,
                   const int64_t *elems, Py_ssize_t n_elems, const double *log_n,
                   double *metrics, double *logprobs, bint want_logprobs,
                   int32_t *flags, const tl_stop_flag *stop) noexcept nogil:
    """Levels of one row, then the law for each of its batch elements (locals are
    per call, hence per thread); returns early once `stop` is raised."""
    cdef tl_levels lv
    cdef tl_bon_metrics m
    cdef Py_ssize_t k, e, q
    if tl_stop_requested(stop):
        return
    cdef int fl = _levels(l, r, V, w, &lv, stop)
    for k in range(n_elems):
        if tl_stop_requested(stop):
            return
        e = elems[k]
        flags[e] = fl
        if fl != 0:
            for q in range(4):
                metrics[4 * e + q] = NAN
            continue
        tl_bon_law(w.values, w.log_mass, lv.n_levels, log_n[e], w.log_cdf, w.log_sf, w.ell,
                   w.a, w.log_w, want_logprobs, &m, stop)
        metrics[4 * e + 0] = m.kl
        metrics[4 * e + 1] = m.expected_reward
        metrics[4 * e + 2] = m.win_rate
        metrics[4 * e + 3] = m.total_mass
        if want_logprobs:
            if floating is double:
                tl_bon_logprobs_f64(l, V, w.order, w.start, lv.n_levels, w.log_mass, w.log_w,
                                    lv.norm_max, lv.norm_log, logprobs + e * V)
            else:
                tl_bon_logprobs_f32(l, V, w.order, w.start, lv.n_levels, w.log_mass, w.log_w,
                                    lv.norm_max, lv.norm_log, logprobs + e * V)


def bon_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] uloff,
             const int64_t[::1] uroff, Py_ssize_t V, const int64_t[::1] gstart,
             const int64_t[::1] gelem, const double[::1] log_n, double[:, ::1] metrics,
             double[:, ::1] logprobs, bint want_logprobs, int32_t[::1] flags, int n_threads):
    """Exact best-of-N law for every batch element.

    Distinct rows u (offsets uloff[u], uroff[u]) own the batch elements
    gelem[gstart[u]:gstart[u+1]]; each row's levels are built once, by one thread.
    metrics[e] = (kl, expected_reward, win_rate, total_mass); logprobs[e] = log pi_N
    (if wanted; logprobs must then have one row per batch element)."""
    cdef Py_ssize_t n_rows = uloff.shape[0]
    cdef Py_ssize_t u, t
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef int nt = n_threads if n_threads < n_rows else <int> n_rows
    if n_rows == 0:
        return
    if nt < 1:
        nt = 1
    cdef _Buffer ws_b = _Buffer(nt, sizeof(Workspace))
    cdef Workspace *ws = <Workspace *> ws_b.ptr
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef double *lpo = &logprobs[0, 0] if want_logprobs else NULL
    for t in range(nt):
        ws[t].keys = NULL
    cdef _Interruptible guard = _Interruptible(<double> (n_rows + gelem.shape[0]) * V)
    try:
        for t in range(nt):
            if _ws_alloc(&ws[t], V) != 0:
                raise MemoryError("tiltlab: could not allocate work buffers")
        with nogil:
            stop = tl_stop_flag_here()
            for u in prange(n_rows, num_threads=nt, schedule='dynamic'):
                _bon_row(lp + uloff[u], rp + uroff[u], V, &ws[threadid()], &gelem[gstart[u]],
                         gstart[u + 1] - gstart[u], &log_n[0], &metrics[0, 0], lpo,
                         want_logprobs, &flags[0], stop)
        guard.finish()
    finally:
        for t in range(nt):
            if ws[t].keys != NULL:
                _ws_free(&ws[t])


include "_buffer.pxi"
include "_guard.pxi"
include "_isa.pxi"


def sample_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                const int64_t[::1] roff, Py_ssize_t V, const double[::1] log_n,
                const int64_t[::1] n_candidates, bint naive, int64_t size, int64_t block,
                const uint64_t[:, ::1] seeds, int64_t[:, ::1] out, int32_t[::1] flags,
                int n_threads):
    """out[e, :size] = draws from the best-of-N law of batch element e.

    Element e draws from one PCG64 stream seeded by seeds[e] (four words, as
    numpy.random.PCG64 seeded from SeedSequence.generate_state(4)).  Order statistic
    (naive=False): one alias table over pi_N itself, draw d from word d.  Naive
    (naive=True): n_candidates[e] draws from p per sample (an alias table), first maximum
    kept, sample d from words d N .. d N + N - 1.  The draws are split into blocks of
    `block`, each starting from the stream advanced to its first word: the result depends on
    neither `block` nor the number of threads.  Returns the number of elements whose table
    could not be built (0 unless there is a bug; their draws are not written)."""
    cdef Py_ssize_t n_el = loff.shape[0]
    cdef int64_t n_blocks = (size + block - 1) // block if size > 0 else 0
    cdef Py_ssize_t e, b, L, ns, first
    cdef int fl, failed = 0
    cdef int64_t count
    cdef Workspace w
    cdef tl_levels lv
    cdef tl_pcg64 g0, g
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef const tl_stop_flag *stop
    cdef double work = 0.0
    cdef bint need_levels = naive
    if n_el == 0 or n_blocks == 0:
        return 0
    if seeds.shape[0] != n_el or seeds.shape[1] != 4:
        raise ValueError("internal: wrong shape of the stream seeds")
    cdef _Buffer wts_b = _Buffer(V, sizeof(double))
    cdef _Buffer pay_b = _Buffer(V, sizeof(int32_t))
    cdef _Buffer prob_b = _Buffer(V, sizeof(double))
    cdef _Buffer stack_b = _Buffer(V, sizeof(int32_t))
    cdef _Buffer slots_b = _Buffer(V, sizeof(tl_alias64))
    cdef double *wts = <double *> wts_b.ptr
    cdef int32_t *pay = <int32_t *> pay_b.ptr
    cdef double *prob = <double *> prob_b.ptr
    cdef int32_t *stack = <int32_t *> stack_b.ptr
    cdef tl_alias64 *slots = <tl_alias64 *> slots_b.ptr
    cdef _Buffer lpos_b = _Buffer(V if naive else 1, sizeof(int32_t))
    cdef _Buffer out_here_b = _Buffer(V if naive else 1, sizeof(int32_t))
    cdef _Buffer out_alias_b = _Buffer(V if naive else 1, sizeof(int32_t))
    cdef int32_t *level_of_pos = <int32_t *> lpos_b.ptr
    cdef int32_t *out_here = <int32_t *> out_here_b.ptr
    cdef int32_t *out_alias = <int32_t *> out_alias_b.ptr
    n_threads = tl_team_size(n_threads)
    cdef int nt = n_threads if n_threads < n_blocks else <int> n_blocks
    for e in range(n_el):  # draws (naive: candidates) plus the tables of each row
        work += <double> size * (<double> n_candidates[e] if naive else 1.0) + V
        if log_n[e] != 0.0:
            need_levels = True
    cdef _Interruptible guard = _Interruptible(work)
    w.keys = NULL
    if need_levels and _ws_alloc(&w, V) != 0:
        raise MemoryError("tiltlab: could not allocate work buffers")
    try:
        with nogil:
            stop = tl_stop_flag_here()
            for e in range(n_el):
                if tl_stop_requested(stop):
                    break
                tl_pcg64_seed(&g0, &seeds[e, 0])
                if naive:
                    fl = _levels(lp + loff[e], rp + roff[e], V, &w, &lv, stop)
                    flags[e] = fl
                    if fl != 0:
                        continue
                    L = lv.n_levels
                    ns = lv.n_support
                    # p over the support in level order; slots over positions, then levels
                    for b in range(ns):
                        wts[b] = <double> lp[loff[e] + w.order[b]]
                        pay[b] = <int32_t> b
                    _softmax_weights(wts, ns)
                    if tl_alias64_build(wts, pay, ns, slots, prob, stack) != 0:
                        failed += 1
                        continue
                    tl_bon_naive_relabel(slots, ns, w.order, w.start, L, level_of_pos,
                                         out_here, out_alias)
                    for b in prange(n_blocks, num_threads=nt, schedule='dynamic', chunksize=1):
                        if tl_stop_requested(stop):
                            continue
                        count = size - b * block if size - b * block < block else block
                        g = g0
                        tl_pcg64_advance(&g, tl_u128_mul64(<uint64_t> (b * block),
                                                           <uint64_t> n_candidates[e]))
                        tl_bon_simulate(&g, count, n_candidates[e], ns, slots, out_here,
                                        out_alias, &out[e, b * block], stop)
                    continue
                if log_n[e] == 0.0:  # N = 1: p itself, no levels
                    if floating is double:
                        fl = tl_softmax_weights_f64(lp + loff[e], rp + roff[e], V, wts, pay,
                                                    &ns)
                    else:
                        fl = tl_softmax_weights_f32(lp + loff[e], rp + roff[e], V, wts, pay,
                                                    &ns)
                    flags[e] = fl
                    if fl != 0:
                        continue
                else:
                    fl = _levels(lp + loff[e], rp + roff[e], V, &w, &lv, stop)
                    flags[e] = fl
                    if fl != 0:
                        continue
                    L = lv.n_levels
                    # level weights into prob (free until the alias table is built)
                    first = tl_bon_level_weights(w.values, w.log_mass, L, log_n[e], prob,
                                                 w.log_cdf, w.log_sf, w.ell, w.a, w.log_w, stop)
                    if first < 0:
                        break
                    if floating is double:
                        ns = tl_bon_outcome_weights_f64(lp + loff[e], w.order, w.start, L,
                                                        first, w.log_mass, prob, lv.norm_max,
                                                        lv.norm_log, wts, pay)
                    else:
                        ns = tl_bon_outcome_weights_f32(lp + loff[e], w.order, w.start, L,
                                                        first, w.log_mass, prob, lv.norm_max,
                                                        lv.norm_log, wts, pay)
                if ns < 1 or tl_alias64_build(wts, pay, ns, slots, prob, stack) != 0:
                    failed += 1
                    continue
                for b in prange(n_blocks, num_threads=nt, schedule='dynamic', chunksize=1):
                    if tl_stop_requested(stop):
                        continue
                    count = size - b * block if size - b * block < block else block
                    g = g0
                    tl_pcg64_advance(&g, tl_u128_mul64(<uint64_t> (b * block), 1))
                    tl_alias64_sample(&g, count, slots, ns, &out[e, b * block])
        guard.finish()
    finally:
        if w.keys != NULL:
            _ws_free(&w)
    return failed


cdef extern from "tl_bon.h" nogil:
    enum:
        TL_DRAW_MAX
        TL_DRAW_EXACT
    size_t tl_bon_draw_scratch_bytes(Py_ssize_t n)
    void tl_bon_draw_scratch_init(void *scratch, Py_ssize_t n)
    Py_ssize_t tl_bon_draw_row_f64(const double *l, const double *r, Py_ssize_t n, double log_n,
                                   const uint64_t *words, int nd, int64_t *out, void *scratch)
    Py_ssize_t tl_bon_draw_row_f32(const float *l, const float *r, Py_ssize_t n, double log_n,
                                   const uint64_t *words, int nd, int64_t *out, void *scratch)

#: draws per row up to which sample_best_of_n draws in one pass over the row (draw_rows)
DRAW_MAX = TL_DRAW_MAX


cdef void _draw_row(const floating *l, const floating *r, Py_ssize_t V, double log_n,
                    const uint64_t *seed, int nd, int64_t *out, int32_t *flag,
                    uint8_t *exact, void *scratch) noexcept nogil:
    """The nd draws of one row from its stream (words 0 .. 2 nd - 1), or exact[0] = 1 when
    the row needs the alias-table path."""
    cdef tl_pcg64 g
    cdef uint64_t words[32]  # 2 TL_DRAW_MAX
    cdef Py_ssize_t fl
    tl_pcg64_seed(&g, seed)
    tl_pcg64_words(&g, words, 2 * nd)
    if floating is double:
        fl = tl_bon_draw_row_f64(l, r, V, log_n, words, nd, out, scratch)
    else:
        fl = tl_bon_draw_row_f32(l, r, V, log_n, words, nd, out, scratch)
    if fl == TL_DRAW_EXACT:
        exact[0] = 1
        flag[0] = 0
    else:
        exact[0] = 0
        flag[0] = <int32_t> fl


cdef inline size_t _draw_scratch_per(Py_ssize_t V) noexcept nogil:
    return (tl_bon_draw_scratch_bytes(V) + 127) & ~(<size_t> 63)


def draw_scratch_bytes(Py_ssize_t V):
    """Bytes of the per-thread scratch of draw_rows for rows of V outcomes."""
    return _draw_scratch_per(V)


def draw_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
              const int64_t[::1] roff, Py_ssize_t V, const double[::1] log_n, int size,
              const uint64_t[:, ::1] seeds, int64_t[:, ::1] out, int32_t[::1] flags,
              uint8_t[::1] exact, int n_threads):
    """out[e, :size] = draws from the best-of-N law of batch element e in one pass over its
    row (csrc/tl_bon.h, tl_bon_draw_row), for 1 <= size <= DRAW_MAX: element e reads words
    0 .. 2 size - 1 of the PCG64 stream seeded by seeds[e] (draw d: words 2d and 2d + 1).
    Rows run in parallel, one per thread at a time, each with the thread's workspace: the
    draws do not depend on the number of threads.  flags[e] gets the row's TL_FLAG_* bits;
    exact[e] = 1 marks a row left to the alias-table path (sample_rows), its draws not
    written."""
    cdef Py_ssize_t n_el = loff.shape[0]
    cdef Py_ssize_t e
    cdef int t
    cdef const tl_stop_flag *stop
    if n_el == 0:
        return
    if size < 1 or size > TL_DRAW_MAX:
        raise ValueError("internal: draw_rows takes 1 .. DRAW_MAX draws per row")
    if seeds.shape[0] != n_el or seeds.shape[1] != 4 or out.shape[0] != n_el \
            or out.shape[1] < size:
        raise ValueError("internal: wrong shape of the stream seeds or of out")
    n_threads = tl_team_size(n_threads)
    cdef int nt = n_threads if n_threads < n_el else <int> n_el
    if nt < 1:
        nt = 1
    cdef size_t per = _draw_scratch_per(V)
    cdef _Buffer scratch_b = _Buffer(nt, per)
    cdef char *base = <char *> ((<size_t> scratch_b.ptr + 63) & ~(<size_t> 63))
    for t in range(nt):
        tl_bon_draw_scratch_init(base + <size_t> t * per, V)
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef _Interruptible guard = _Interruptible(<double> n_el * V)
    with nogil:
        stop = tl_stop_flag_here()
        for e in prange(n_el, num_threads=nt, schedule='dynamic', chunksize=1):
            if tl_stop_requested(stop):
                continue
            t = threadid()
            _draw_row(lp + loff[e], rp + roff[e], V, log_n[e], &seeds[e, 0], size,
                      &out[e, 0], &flags[e], &exact[e], base + <size_t> t * per)
    guard.finish()


def pcg64_words(const uint64_t[::1] seed, uint64_t offset_hi, uint64_t offset_lo,
                uint64_t[::1] out):
    """out = the words offset .. offset + len(out) - 1 of the samplers' stream seeded by
    `seed` (four words; offset = offset_hi 2^64 + offset_lo): for tests against NumPy's
    PCG64."""
    cdef tl_pcg64 g
    cdef tl_u128 off
    if out.shape[0] == 0:
        return
    off.hi = offset_hi
    off.lo = offset_lo
    with nogil:
        tl_pcg64_seed(&g, &seed[0])
        tl_pcg64_advance(&g, off)
        tl_pcg64_words(&g, &out[0], out.shape[0])


def sampler_table(const double[::1] logits, const double[::1] rewards, double log_n,
                  bint naive=False):
    """The alias table of one float64 row, as the samplers build it (for tests): (flags,
    thresh, here, alias) over the outcomes of positive weight of pi_N (order statistic),
    or over the support in level order (naive: here/alias are outcomes, not levels)."""
    cdef Py_ssize_t V = logits.shape[0]
    slots = np.empty(max(V, 1), dtype=np.dtype([("thresh", np.uint64), ("here", np.int32),
                                                  ("alias", np.int32)]))
    assert slots.dtype.itemsize == sizeof(tl_alias64)
    cdef Workspace w
    cdef tl_levels lv
    cdef int fl
    cdef Py_ssize_t ns = 0, first, b
    cdef _Buffer wts_b = _Buffer(V, sizeof(double))
    cdef _Buffer pay_b = _Buffer(V, sizeof(int32_t))
    cdef _Buffer prob_b = _Buffer(V, sizeof(double))
    cdef _Buffer stack_b = _Buffer(V, sizeof(int32_t))
    cdef double *wts = <double *> wts_b.ptr
    cdef int32_t *pay = <int32_t *> pay_b.ptr
    cdef unsigned char[::1] so = slots.view(np.uint8)
    if _ws_alloc(&w, V) != 0:
        raise MemoryError("tiltlab: could not allocate work buffers")
    try:
        if log_n == 0.0 and not naive:
            fl = tl_softmax_weights_f64(&logits[0], &rewards[0], V, wts, pay, &ns)
        else:
            fl = tl_levels_f64(&logits[0], &rewards[0], V, w.keys, w.kbuf, w.order, w.obuf,
                               w.values, w.log_mass, w.start, &lv, NULL)
            if fl == 0 and naive:
                ns = lv.n_support
                for b in range(ns):
                    wts[b] = logits[w.order[b]]
                    pay[b] = <int32_t> w.order[b]
                _softmax_weights(wts, ns)
            elif fl == 0:
                first = tl_bon_level_weights(w.values, w.log_mass, lv.n_levels, log_n,
                                             <double *> prob_b.ptr, w.log_cdf, w.log_sf, w.ell,
                                             w.a, w.log_w, NULL)
                ns = tl_bon_outcome_weights_f64(&logits[0], w.order, w.start, lv.n_levels,
                                                first, w.log_mass, <double *> prob_b.ptr,
                                                lv.norm_max, lv.norm_log, wts, pay)
        if fl != 0:
            return fl, None, None, None
        if tl_alias64_build(wts, pay, ns, <tl_alias64 *> &so[0], <double *> prob_b.ptr,
                            <int32_t *> stack_b.ptr) != 0:
            raise RuntimeError("internal: no alias table")
    finally:
        _ws_free(&w)
    slots = slots[:ns]
    return 0, slots["thresh"].copy(), slots["here"].copy(), slots["alias"].copy()


cdef void _softmax_weights(double *x, Py_ssize_t n) noexcept nogil:
    """x <- exp(x - max x) in place (alias weights need not be normalised)."""
    cdef Py_ssize_t i
    cdef double mx = x[0]
    for i in range(1, n):
        if x[i] > mx:
            mx = x[i]
    for i in range(n):
        x[i] = exp(x[i] - mx)


# --------------------------------------------------------------------------------------
# small calls: exact laws on one thread, and the samplers' bit generators
# --------------------------------------------------------------------------------------

cdef int _bon_serial(const floating[::1] lb, const floating[::1] rb, Py_ssize_t nrows,
                     Py_ssize_t V, double log_n, double[:, ::1] metrics) except -1:
    """bon_rows for the rows of dense (nrows, V) arrays (row i at i * V) with one log N,
    on this thread without an OpenMP region; returns the rows' flags or-ed together."""
    cdef Workspace w
    cdef Py_ssize_t i
    cdef int64_t elem = 0
    cdef int32_t fl
    cdef int flags = 0
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    if _ws_alloc(&w, V) != 0:
        raise MemoryError("tiltlab: could not allocate work buffers")
    with nogil:
        for i in range(nrows):
            # the row is its own group of one element (distinct rows in a dense batch)
            _bon_row(lp + i * V, rp + i * V, V, &w, &elem, 1, &log_n, &metrics[i, 0], NULL,
                     0, &fl, stop)
            flags = flags | fl
        _ws_free(&w)
    return flags


def bon_small_f64(const double[::1] lb, const double[::1] rb, Py_ssize_t nrows, Py_ssize_t V,
                  double log_n, double[:, ::1] metrics):
    """metrics[i] = (kl, expected_reward, win_rate, total_mass) of row i (at i * V) as
    bon_rows computes them, without an OpenMP region (small work); returns the or-ed
    flags.  The caller guarantees the sizes (metrics of shape (nrows, 4))."""
    return _bon_serial(lb, rb, nrows, V, log_n, metrics)


def bon_small_f32(const float[::1] lb, const float[::1] rb, Py_ssize_t nrows, Py_ssize_t V,
                  double log_n, double[:, ::1] metrics):
    """float32 rows: as bon_small_f64."""
    return _bon_serial(lb, rb, nrows, V, log_n, metrics)


from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from libc.stdint cimport uint32_t


cdef extern from "numpy/random/bitgen.h" nogil:
    # the interface with its members (tiltlab._kernels declares bitgen_t opaque)
    ctypedef struct _bitgen_fns "bitgen_t":
        void *state
        uint64_t (*next_uint64)(void *st) nogil
        uint32_t (*next_uint32)(void *st) nogil
        double (*next_double)(void *st) nogil
        uint64_t (*next_raw)(void *st) nogil


cdef extern from "tl_rng.h" nogil:
    ctypedef struct tl_pcg64_state:
        int has_uint32
        uint32_t uinteger
    ctypedef struct tl_rng_pcg64:
        tl_pcg64_state st
        bitgen_t bitgen
    void tl_pcg64_init(tl_rng_pcg64 *g, const uint64_t *words)
    void tl_pcg64_get(const tl_rng_pcg64 *g, uint64_t *out)
    void tl_seed_entropy(const uint32_t *seed, Py_ssize_t n_seed, uint64_t *out)
    void tl_pcg64_child(tl_rng_pcg64 *g, const uint64_t *entropy, uint64_t index)
    void tl_seedseq_state(const uint32_t *entropy, Py_ssize_t n_entropy, const uint32_t *key,
                          Py_ssize_t n_key, uint64_t *out)
    uint64_t tl_pcg64_next64(void *st)


cdef class PCG64Stream:
    """A PCG64 bit generator made in C (csrc/tl_rng.h): what the samplers' kernels read
    through ``capsule`` (a ``"BitGenerator"`` capsule, as NumPy's bit generators carry), for
    one block of draws.  Its draws are those of ``numpy.random.PCG64`` in the same state."""
    cdef tl_rng_pcg64 g
    cdef readonly object capsule

    @property
    def state(self):
        """The state as ``numpy.random.PCG64().state`` shows it."""
        cdef uint64_t s[4]
        tl_pcg64_get(&self.g, s)
        return {"bit_generator": "PCG64",
                "state": {"state": (int(s[0]) << 64) | int(s[1]),
                          "inc": (int(s[2]) << 64) | int(s[3])},
                "has_uint32": int(self.g.st.has_uint32), "uinteger": int(self.g.st.uinteger)}


cdef PCG64Stream _stream():
    cdef PCG64Stream s = PCG64Stream.__new__(PCG64Stream)
    s.capsule = PyCapsule_New(&s.g.bitgen, "BitGenerator", NULL)
    return s


def pcg64_children(entropy, Py_ssize_t count):
    """``[PCG64(SeedSequence(entropy, spawn_key=(b,))) for b in range(count)]`` as
    PCG64Stream objects, for four integers ``entropy`` in [0, 2^64)."""
    cdef uint64_t ent[4]
    cdef Py_ssize_t b
    cdef PCG64Stream s
    if len(entropy) != 4:
        raise ValueError("internal: entropy must be four integers")
    for b in range(4):
        ent[b] = entropy[b]
    out = []
    for b in range(count):
        s = _stream()
        tl_pcg64_child(&s.g, ent, <uint64_t> b)
        out.append(s)
    return out


def pcg64_from_state(words):
    """A PCG64Stream seeded as ``PCG64`` seeds itself from
    ``SeedSequence.generate_state(4, numpy.uint64)`` = ``words`` (for tests)."""
    cdef uint64_t w[4]
    cdef Py_ssize_t b
    for b in range(4):
        w[b] = words[b]
    cdef PCG64Stream s = _stream()
    tl_pcg64_init(&s.g, w)
    return s


def seed_entropy(seed):
    """``tuple(int(v) for v in numpy.random.default_rng(seed).integers(0, 2**63, size=4))``
    for an int ``0 <= seed < 2^128``, without NumPy's objects."""
    cdef uint32_t words[4]
    cdef uint64_t out[4]
    cdef Py_ssize_t n = _int_words(seed, words)
    tl_seed_entropy(words, n, out)
    return (out[0], out[1], out[2], out[3])


cdef Py_ssize_t _int_words(object v, uint32_t *words) except -1:
    """v (0 <= v < 2^128) as NumPy coerces an int entropy: 32-bit words, least significant
    first, at least one."""
    cdef Py_ssize_t n = 0
    if not 0 <= v < (1 << 128):
        raise ValueError("internal: seed or entropy out of range")
    while True:
        words[n] = v & 0xffffffff
        n += 1
        v >>= 32
        if v == 0:
            return n


def stream_entropy_int(seed):
    """``numpy.random.PCG64(numpy.random.SeedSequence(seed)).random_raw(2)`` as two ints, for
    an int ``0 <= seed < 2^128``, without NumPy's objects (the samplers' stream seeds)."""
    cdef uint32_t words[4]
    cdef uint64_t st[4]
    cdef tl_rng_pcg64 g
    cdef Py_ssize_t n = _int_words(seed, words)
    tl_seedseq_state(words, n, NULL, 0, st)
    tl_pcg64_init(&g, st)
    cdef uint64_t a = tl_pcg64_next64(&g.st)
    cdef uint64_t b = tl_pcg64_next64(&g.st)
    return a, b


def seedseq_state4(entropy):
    """``numpy.random.SeedSequence(entropy).generate_state(4, numpy.uint64)`` as a (1, 4)
    uint64 array, for an int ``0 <= entropy < 2^128``."""
    cdef uint32_t words[4]
    cdef Py_ssize_t n = _int_words(entropy, words)
    out = np.empty((1, 4), dtype=np.uint64)
    cdef uint64_t[:, ::1] o = out
    tl_seedseq_state(words, n, NULL, 0, &o[0, 0])
    return out


def bitgen_draws(bit_generator, Py_ssize_t n, str kind):
    """n draws through the bitgen_t interface of any object with a ``capsule`` (NumPy's bit
    generators, PCG64Stream): kind "uint64", "uint32", "double" or "raw" (for tests)."""
    cdef _bitgen_fns *bg = <_bitgen_fns *> PyCapsule_GetPointer(bit_generator.capsule,
                                                                "BitGenerator")
    cdef Py_ssize_t i
    out = np.empty(n, dtype=np.float64 if kind == "double" else np.uint64)
    cdef uint64_t[::1] u
    cdef double[::1] d
    if kind == "double":
        d = out
        for i in range(n):
            d[i] = bg.next_double(bg.state)
        return out
    u = out
    for i in range(n):
        if kind == "uint64":
            u[i] = bg.next_uint64(bg.state)
        elif kind == "uint32":
            u[i] = bg.next_uint32(bg.state)
        elif kind == "raw":
            u[i] = bg.next_raw(bg.state)
        else:
            raise ValueError(f"unknown kind {kind!r}")
    return out
