# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Thin Cython drivers over the C kernels of csrc/.

Nothing here validates: the Python layer (tiltlab._validation) hands over contiguous
arrays and per-row offsets, and turns the per-row status flags returned here into
exceptions.  Every driver splits its rows into TL_CHUNK-sized work items, runs them with
``prange`` (GIL released), and merges the partial states of each row left to right, so
results are bitwise identical for any number of threads.

Row layout used throughout: row ``i`` of the logits is ``lbase[loff[i] : loff[i] + V]``
and of the rewards ``rbase[roff[i] : roff[i] + V]``; offsets let broadcast rows share
memory instead of being copied.
"""
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, fabs, sqrt, isnan
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from tiltlab._kernels cimport *

ctypedef fused floating:
    float
    double


def openmp_enabled():
    """True if the module was compiled with OpenMP."""
    return bool(tl_openmp_enabled())


def max_threads():
    """Threads a kernel uses by default: OpenMP's default (honours OMP_NUM_THREADS), or 1 in
    a process forked from one that had imported tiltlab (see forked_child)."""
    return tl_team_size(tl_max_threads())


def forked_child():
    """True in a process forked (os.fork, multiprocessing's fork start method) from one
    that had imported tiltlab: the parent's OpenMP thread pool does not exist there, so every
    kernel runs on one thread (results do not depend on the thread count)."""
    return bool(tl_forked_child())


def effective_threads(int n):
    """The threads a kernel asked for n threads uses: n, or 1 in a forked child."""
    return tl_team_size(n)


def chunk_size():
    """Elements per work item (the unit of determinism)."""
    return TL_CHUNK


cdef inline Py_ssize_t _chunk_len(Py_ssize_t V, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t start = k * TL_CHUNK
    return TL_CHUNK if V - start > TL_CHUNK else V - start


cdef void *_alloc(Py_ssize_t count, size_t size) except NULL nogil:
    cdef void *p = malloc((count if count > 0 else 1) * size)
    if p == NULL:
        with gil:
            raise MemoryError("tiltlab: could not allocate work buffers")
    return p


include "_buffer.pxi"
include "_guard.pxi"
include "_isa.pxi"


# --------------------------------------------------------------------------------------
# log-sum-exp
# --------------------------------------------------------------------------------------

def logsumexp_rows(const floating[::1] x, Py_ssize_t nrows, Py_ssize_t n, double[::1] out,
                   int n_threads):
    """out[i] = logsumexp(x[i*n:(i+1)*n]) with SciPy semantics for nan/inf/empty rows."""
    cdef Py_ssize_t nch = tl_num_chunks(n)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t w, i, k
    cdef tl_lse_acc *acc
    cdef const floating *base
    cdef const tl_stop_flag *stop
    if nrows == 0:
        return
    if n == 0:
        for i in range(nrows):
            out[i] = -INFINITY
        return
    base = &x[0]
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * n)
    with nogil:
        stop = tl_stop_flag_here()
        acc = <tl_lse_acc *> _alloc(nitems, sizeof(tl_lse_acc))
        for w in prange(nitems, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            i = w // nch
            k = w - i * nch
            if floating is double:
                tl_lse_chunk_f64(base + i * n + k * TL_CHUNK, _chunk_len(n, k), &acc[w])
            else:
                tl_lse_chunk_f32(base + i * n + k * TL_CHUNK, _chunk_len(n, k), &acc[w])
        for i in prange(nrows, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            for k in range(1, nch):
                tl_lse_merge(&acc[i * nch], &acc[i * nch + k])
            out[i] = tl_lse_finalize(&acc[i * nch])
        free(acc)
    guard.finish()


# --------------------------------------------------------------------------------------
# shared passes
# --------------------------------------------------------------------------------------

cdef void _shifts(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                  const int64_t[::1] roff, Py_ssize_t V, const int64_t *rows, Py_ssize_t nrows,
                  double *c, int n_threads) noexcept nogil:
    """c[row] = reward of the most likely outcome of each listed row (0 for a row without
    support): the shift of the row-information pass."""
    cdef Py_ssize_t i, j, row
    cdef double best
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    for i in prange(nrows, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        row = rows[i]
        if floating is double:
            j = tl_argmax_tilted_f64(lp + loff[row], rp + roff[row], V, 0.0, &best)
        else:
            j = tl_argmax_tilted_f32(lp + loff[row], rp + roff[row], V, 0.0, &best)
        c[row] = <double> rp[roff[row] + j] if j >= 0 else 0.0


cdef int _tilt_pass(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                    const int64_t[::1] roff, Py_ssize_t V, const double *lam,
                    const int64_t *rows, Py_ssize_t nrows, tl_tilt_result *res,
                    int n_threads) except -1 nogil:
    """Tilted statistics of rows[0:nrows] (finite lam); res and lam are indexed by row.

    The chunks of all rows are parallel work items, merged per row in chunk order: the
    shift is the reward of the dominant outcome (argmax of l + lam r, merged over chunks
    in order); stage 0 is a product-mode pass; stage 1 a KL pass when kl cancelled in
    stage 0 (tl_tilt_kl_pass_advised); stage 2 the standard mode when |lam| * reward
    range is too large for the product mode."""
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t w, i, k, row, start, pending, j
    cdef int attempt, mode
    cdef double bx
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef tl_tilt_acc *a
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    if nrows == 0:
        return 0
    # one block for all work arrays (freed below; _alloc raises MemoryError)
    cdef char *block = <char *> _alloc(1, nitems * (sizeof(tl_tilt_acc) + sizeof(double)
                                                    + sizeof(Py_ssize_t))
                                       + nrows * (sizeof(int) + sizeof(double)))
    cdef tl_tilt_acc *acc = <tl_tilt_acc *> block
    cdef double *best = <double *> (block + nitems * sizeof(tl_tilt_acc))
    cdef Py_ssize_t *arg = <Py_ssize_t *> (<char *> best + nitems * sizeof(double))
    cdef double *cl = <double *> (<char *> arg + nitems * sizeof(Py_ssize_t))
    cdef int *stage = <int *> (<char *> cl + nrows * sizeof(double))
    # the dominant outcome of each row: chunk maxima, then "larger wins, earlier on ties"
    for w in prange(nitems, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        i = w // nch
        k = w - i * nch
        row = rows[i]
        start = k * TL_CHUNK
        if floating is double:
            arg[w] = tl_argmax_tilted_f64(lp + loff[row] + start, rp + roff[row] + start,
                                          _chunk_len(V, k), lam[row], &best[w])
        else:
            arg[w] = tl_argmax_tilted_f32(lp + loff[row] + start, rp + roff[row] + start,
                                          _chunk_len(V, k), lam[row], &best[w])
    if tl_stop_requested(stop):  # arg and best are incomplete: the results are discarded
        free(block)
        return 0
    for i in range(nrows):
        stage[i] = 0
        cl[i] = 0.0
        bx = -INFINITY
        j = -1
        for k in range(nch):
            if arg[i * nch + k] >= 0 and (best[i * nch + k] > bx or j < 0):
                bx = best[i * nch + k]
                j = k * TL_CHUNK + arg[i * nch + k]
        if j >= 0:
            cl[i] = <double> rp[roff[rows[i]] + j]
    for attempt in range(3):
        for w in prange(nitems, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            i = w // nch
            if stage[i] < 0:
                continue
            k = w - i * nch
            row = rows[i]
            start = k * TL_CHUNK
            mode = _stage_mode(stage[i])
            if floating is double:
                tl_tilt_chunk_f64(lp + loff[row] + start, rp + roff[row] + start,
                                  _chunk_len(V, k), lam[row], cl[i],
                                  res[row].lc if mode == TL_MODE_KL else 0.0, mode, &acc[w])
            else:
                tl_tilt_chunk_f32(lp + loff[row] + start, rp + roff[row] + start,
                                  _chunk_len(V, k), lam[row], cl[i],
                                  res[row].lc if mode == TL_MODE_KL else 0.0, mode, &acc[w])
        if tl_stop_requested(stop):
            break
        for i in prange(nrows, num_threads=n_threads, schedule='static'):
            if stage[i] < 0:
                continue
            row = rows[i]
            a = &acc[i * nch]
            mode = _stage_mode(stage[i])
            for k in range(1, nch):
                tl_tilt_merge(a, &acc[i * nch + k], mode)
            if stage[i] == 1:
                res[row].kl = tl_tilt_kl_value(a)
                stage[i] = -1
                continue
            if (stage[i] == 0 and (a.flags & TL_FLAGS_INPUT) == 0
                    and not tl_tilt_product_ok(a, lam[row])):
                stage[i] = 2
                continue
            tl_tilt_finalize(a, lam[row], cl[i], mode, &res[row])
            if stage[i] == 0 and tl_tilt_kl_pass_advised(&res[row], lam[row]):
                stage[i] = 1
            else:
                stage[i] = -1
        pending = 0
        for i in range(nrows):
            if stage[i] >= 0:
                pending += 1
        if pending == 0:
            break
    free(block)
    return 0


cdef inline int _stage_mode(int stage) noexcept nogil:
    if stage == 0:
        return TL_MODE_PRODUCT
    if stage == 1:
        return TL_MODE_KL
    return TL_MODE_STANDARD


cdef int _info_pass(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                    const int64_t[::1] roff, Py_ssize_t V, const double *c,
                    const int64_t *rows, Py_ssize_t nrows, tl_info_result *res,
                    int n_threads) except -1 nogil:
    """Normaliser, base mean/variance and extreme reward sets of rows[0:nrows]."""
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t w, i, k, row, start
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef tl_info_acc *acc
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    if nrows == 0:
        return 0
    acc = <tl_info_acc *> _alloc(nitems, sizeof(tl_info_acc))
    for w in prange(nitems, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        i = w // nch
        k = w - i * nch
        row = rows[i]
        start = k * TL_CHUNK
        if floating is double:
            tl_info_chunk_f64(lp + loff[row] + start, rp + roff[row] + start,
                              _chunk_len(V, k), c[row], &acc[w])
        else:
            tl_info_chunk_f32(lp + loff[row] + start, rp + roff[row] + start,
                              _chunk_len(V, k), c[row], &acc[w])
    for i in prange(nrows, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        row = rows[i]
        for k in range(1, nch):
            tl_info_merge(&acc[i * nch], &acc[i * nch + k])
        tl_info_finalize(&acc[i * nch], c[row], &res[row])
    free(acc)
    return 0


cdef void _limit_result(const tl_info_result *info, double lam, tl_tilt_result *out) noexcept nogil:
    """Tilted statistics in the lam -> +-inf limit (or where lam * reward saturates):
    phi is p restricted to the argmax (lam > 0) or argmin (lam < 0) reward set."""
    cdef double r_star = info.r_max if lam > 0 else info.r_min
    cdef double log_p = info.log_p_max if lam > 0 else info.log_p_min
    out.flags = info.flags
    out.log_norm = info.log_norm
    out.mean = r_star
    out.variance = 0.0
    out.kl = -log_p
    # Lambda(lam) = lam r_star + log p(star set) (exact in the limit)
    if r_star == 0.0:
        out.log_partition = log_p
    else:
        out.log_partition = lam * r_star + log_p
    # for limit rows, lc carries log sum exp(l) over the extreme set (used by the writer)
    out.lc = info.lse_max if lam > 0 else info.lse_min
    out.shift = r_star
    out.r_min = info.r_min
    out.r_max = info.r_max


cdef int _tilt_all(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                   const int64_t[::1] roff, Py_ssize_t V, const double[::1] lam,
                   tl_tilt_result *res, int *limit, int n_threads) except -1 nogil:
    """Tilted statistics for every row; rows with infinite lam (or saturated lam * r) get
    the limit and limit[row] = 1."""
    cdef Py_ssize_t nrows = loff.shape[0]
    cdef Py_ssize_t i, nfin = 0, ninf = 0
    # fin, inf (row lists), then c and info (used only by the limit rows)
    cdef char *block = <char *> _alloc(1, nrows * (2 * sizeof(int64_t) + sizeof(double)
                                                   + sizeof(tl_info_result)))
    cdef int64_t *fin = <int64_t *> block
    cdef int64_t *inf = fin + nrows
    cdef double *c = <double *> (inf + nrows)
    cdef tl_info_result *info = <tl_info_result *> (c + nrows)
    for i in range(nrows):
        limit[i] = 0
        if lam[i] == INFINITY or lam[i] == -INFINITY:
            inf[ninf] = i
            ninf += 1
        else:
            fin[nfin] = i
            nfin += 1
    try:
        _tilt_pass(lb, rb, loff, roff, V, &lam[0], fin, nfin, res, n_threads)
        if tl_stop_requested(tl_stop_flag_here()):
            return 0
        for i in range(nfin):
            if res[fin[i]].flags & TL_FLAG_SATURATED:
                inf[ninf] = fin[i]
                ninf += 1
        if ninf > 0:
            _shifts(lb, rb, loff, roff, V, inf, ninf, c, n_threads)
            _info_pass(lb, rb, loff, roff, V, c, inf, ninf, info, n_threads)
            for i in range(ninf):
                _limit_result(&info[inf[i]], lam[inf[i]], &res[inf[i]])
                limit[inf[i]] = 1
    finally:
        free(block)
    return 0


# --------------------------------------------------------------------------------------
# public drivers
# --------------------------------------------------------------------------------------

def tilt_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
              const int64_t[::1] roff, Py_ssize_t V, const double[::1] lam, double[:, ::1] out,
              int32_t[::1] flags, int n_threads):
    """out[i] = (log_partition, mean, variance, kl, log_norm) of row i at lam[i]."""
    cdef Py_ssize_t nrows = loff.shape[0], i
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_tilt_result))
    cdef _Buffer limit_b = _Buffer(nrows, sizeof(int))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        _tilt_all(lb, rb, loff, roff, V, lam, res, <int *> limit_b.ptr, n_threads)
        for i in range(nrows):
            out[i, 0] = res[i].log_partition
            out[i, 1] = res[i].mean
            out[i, 2] = res[i].variance
            out[i, 3] = res[i].kl
            out[i, 4] = res[i].log_norm
            flags[i] = res[i].flags & ~TL_FLAG_SATURATED
    guard.finish()


def info_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
              const int64_t[::1] roff, Py_ssize_t V, double[:, ::1] out, int32_t[::1] flags,
              int n_threads):
    """out[i] = (log_norm, mean, variance, r_max, log_p_max, r_min, log_p_min) under p."""
    cdef Py_ssize_t nrows = loff.shape[0], i
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_info_result))
    cdef _Buffer c_b = _Buffer(3 * nrows, sizeof(double))  # (p_ref, q_ref, c) per row
    cdef _Buffer rows_b = _Buffer(nrows, sizeof(int64_t))
    cdef tl_info_result *res = <tl_info_result *> res_b.ptr
    cdef double *c = <double *> c_b.ptr
    cdef int64_t *rows = <int64_t *> rows_b.ptr
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        for i in range(nrows):
            rows[i] = i
        _shifts(lb, rb, loff, roff, V, rows, nrows, c, n_threads)
        _info_pass(lb, rb, loff, roff, V, c, rows, nrows, res, n_threads)
        for i in range(nrows):
            out[i, 0] = res[i].log_norm
            out[i, 1] = res[i].mean
            out[i, 2] = res[i].variance
            out[i, 3] = res[i].r_max
            out[i, 4] = res[i].log_p_max
            out[i, 5] = res[i].r_min
            out[i, 6] = res[i].log_p_min
            flags[i] = res[i].flags
    guard.finish()


def tilt_logprobs_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                       const int64_t[::1] roff, Py_ssize_t V, const double[::1] lam,
                       double[:, ::1] out, int32_t[::1] flags, int n_threads):
    """out[i, :] = log phi_lam[i] of row i (normalised log-probabilities)."""
    cdef Py_ssize_t nrows = loff.shape[0]
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t i, k, w, start
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_tilt_result))
    cdef _Buffer limit_b = _Buffer(nrows, sizeof(int))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    cdef int *limit = <int *> limit_b.ptr
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef double *op = &out[0, 0]
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        stop = tl_stop_flag_here()
        _tilt_all(lb, rb, loff, roff, V, lam, res, limit, n_threads)
        for i in range(nrows):
            flags[i] = res[i].flags & ~TL_FLAG_SATURATED
        for w in prange(nitems, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            i = w // nch
            k = w - i * nch
            start = k * TL_CHUNK
            if flags[i] != 0:
                continue
            if limit[i]:
                # log p restricted to the extreme set: l - log sum exp(l over the set)
                if floating is double:
                    tl_limit_logprobs_f64(lp + loff[i] + start, rp + roff[i] + start,
                                          _chunk_len(V, k), res[i].mean, res[i].lc,
                                          op + i * V + start)
                else:
                    tl_limit_logprobs_f32(lp + loff[i] + start, rp + roff[i] + start,
                                          _chunk_len(V, k), res[i].mean, res[i].lc,
                                          op + i * V + start)
            else:
                if floating is double:
                    tl_tilt_logprobs_f64(lp + loff[i] + start, rp + roff[i] + start,
                                         _chunk_len(V, k), lam[i], res[i].shift,
                                         res[i].log_norm, res[i].lc, op + i * V + start)
                else:
                    tl_tilt_logprobs_f32(lp + loff[i] + start, rp + roff[i] + start,
                                         _chunk_len(V, k), lam[i], res[i].shift,
                                         res[i].log_norm, res[i].lc, op + i * V + start)
    guard.finish()


cdef inline double _moment_scale(const tl_tilt_result *res) noexcept nogil:
    """Largest |r - mean| on the support: the moments of (r - mean) / scale stay <= 1."""
    cdef double up = res.r_max - res.mean, down = res.mean - res.r_min
    return up if up > down else down


def cumulant_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                  const int64_t[::1] roff, Py_ssize_t V, const double[::1] lam, int order,
                  double[:, ::1] out, int32_t[::1] flags, int n_threads):
    """out[i, k-1] = k-th cumulant of the reward under phi_lam[i] (k = 1..order)."""
    cdef Py_ssize_t nrows = loff.shape[0]
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t i, k, w, j, start
    cdef int stride = order + 1
    cdef double scale
    if order < 1 or order > TL_MAX_ORDER:
        raise ValueError(f"order must be between 1 and {TL_MAX_ORDER}; got {order}")
    if out.shape[1] < order:
        raise ValueError("out has fewer columns than order")
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_tilt_result))
    cdef _Buffer limit_b = _Buffer(nrows, sizeof(int))
    cdef _Buffer sums_b = _Buffer(nitems * stride, sizeof(double))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    cdef int *limit = <int *> limit_b.ptr
    cdef double *sums = <double *> sums_b.ptr
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        stop = tl_stop_flag_here()
        _tilt_all(lb, rb, loff, roff, V, lam, res, limit, n_threads)
        for i in range(nrows):
            flags[i] = res[i].flags & ~TL_FLAG_SATURATED
        for w in prange(nitems, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            i = w // nch
            k = w - i * nch
            start = k * TL_CHUNK
            if flags[i] != 0 or limit[i]:
                continue
            scale = _moment_scale(&res[i])
            if floating is double:
                tl_moments_chunk_f64(lp + loff[i] + start, rp + roff[i] + start,
                                     _chunk_len(V, k), lam[i], res[i].shift,
                                     res[i].log_norm, res[i].lc, res[i].mean,
                                     1.0 / scale if scale > 0 else 0.0, order, sums + w * stride)
            else:
                tl_moments_chunk_f32(lp + loff[i] + start, rp + roff[i] + start,
                                     _chunk_len(V, k), lam[i], res[i].shift,
                                     res[i].log_norm, res[i].lc, res[i].mean,
                                     1.0 / scale if scale > 0 else 0.0, order, sums + w * stride)
        for i in prange(nrows, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            if flags[i] != 0:
                for j in range(order):
                    out[i, j] = NAN
            elif limit[i]:
                out[i, 0] = res[i].mean
                for j in range(1, order):
                    out[i, j] = 0.0
            else:
                for k in range(1, nch):
                    for j in range(stride):
                        sums[i * nch * stride + j] += sums[(i * nch + k) * stride + j]
                tl_cumulants_from_moments(sums + i * nch * stride, order, res[i].mean,
                                          _moment_scale(&res[i]), &out[i, 0])
    guard.finish()


def solve_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
               const int64_t[::1] roff, Py_ssize_t V, const double[::1] target, bint joint,
               double[::1] out_lam, int32_t[::1] out_iter, int32_t[::1] out_converged,
               int32_t[::1] flags, int n_threads):
    """lam >= 0 with kl(lam) = target per row, or one lam for the summed kl (joint).

    Per-row solves run in lockstep: every iteration is one parallel pass over the rows
    still iterating.  out_iter counts the passes over each row's data (including the
    first pass that finds kl_max and the base variance)."""
    cdef Py_ssize_t nrows = loff.shape[0], i, nact
    cdef tl_newton joint_st
    cdef double kl_max_sum, var_sum, kl_sum
    cdef int bad = 0
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_tilt_result))
    cdef _Buffer info_b = _Buffer(nrows, sizeof(tl_info_result))
    cdef _Buffer st_b = _Buffer(nrows, sizeof(tl_newton))
    cdef _Buffer c_b = _Buffer(3 * nrows, sizeof(double))  # (p_ref, q_ref, c) per row
    cdef _Buffer lam_b = _Buffer(nrows, sizeof(double))
    cdef _Buffer rows_b = _Buffer(nrows, sizeof(int64_t))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    cdef tl_info_result *info = <tl_info_result *> info_b.ptr
    cdef tl_newton *st = <tl_newton *> st_b.ptr
    cdef double *c = <double *> c_b.ptr
    cdef double *lam = <double *> lam_b.ptr
    cdef int64_t *rows = <int64_t *> rows_b.ptr
    # once SIGINT stops the passes, every pass returns at once and the loops below end
    # within their iteration limit; the results are discarded (guard.finish raises)
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        for i in range(nrows):
            rows[i] = i
        _shifts(lb, rb, loff, roff, V, rows, nrows, c, n_threads)
        _info_pass(lb, rb, loff, roff, V, c, rows, nrows, info, n_threads)
        for i in range(nrows):
            flags[i] = info[i].flags
            bad = bad | info[i].flags
        if bad == 0 and not joint:
            for i in range(nrows):
                tl_newton_init(&st[i], target[i], -info[i].log_p_max, info[i].variance)
            while True:
                nact = 0
                for i in range(nrows):
                    if not st[i].done:
                        rows[nact] = i
                        lam[i] = st[i].lam
                        nact += 1
                if nact == 0:
                    break
                _tilt_pass(lb, rb, loff, roff, V, lam, rows, nact, res, n_threads)
                for i in range(nact):
                    if res[rows[i]].flags & TL_FLAG_SATURATED:
                        tl_newton_step(&st[rows[i]], -info[rows[i]].log_p_max, 0.0)
                    else:
                        tl_newton_step(&st[rows[i]], res[rows[i]].kl, res[rows[i]].variance)
            for i in range(nrows):
                out_lam[i] = st[i].lam
                out_iter[i] = st[i].iter + 1
                out_converged[i] = st[i].converged
        elif bad == 0:
            kl_max_sum = 0.0
            var_sum = 0.0
            for i in range(nrows):
                kl_max_sum = kl_max_sum + (-info[i].log_p_max)
                var_sum = var_sum + info[i].variance
            tl_newton_init(&joint_st, target[0], kl_max_sum, var_sum)
            while not joint_st.done:
                for i in range(nrows):
                    lam[i] = joint_st.lam
                _tilt_pass(lb, rb, loff, roff, V, lam, rows, nrows, res, n_threads)
                kl_sum = 0.0
                var_sum = 0.0
                for i in range(nrows):
                    if res[i].flags & TL_FLAG_SATURATED:
                        kl_sum = kl_sum + (-info[i].log_p_max)
                    else:
                        kl_sum = kl_sum + res[i].kl
                        var_sum = var_sum + res[i].variance
                tl_newton_step(&joint_st, kl_sum, var_sum)
            for i in range(nrows):
                out_lam[i] = joint_st.lam
                out_iter[i] = joint_st.iter + 1
                out_converged[i] = joint_st.converged
    guard.finish()


def kl_rows(const floating[::1] pb, const floating[::1] qb, const int64_t[::1] poff,
            const int64_t[::1] qoff, Py_ssize_t V, double[::1] out, int32_t[::1] flags,
            int n_threads):
    """out[i] = KL(p_i || q_i) for logits rows p_i, q_i.

    Stage 0 is a product-mode pass; stage 1 a KL pass (sum of non-negative terms) when
    stage 0 cancelled; stage 2 the standard mode when log(q/p) spreads over more than
    the product mode allows."""
    cdef Py_ssize_t nrows = poff.shape[0]
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t i, k, w, start, pending
    cdef int attempt, fl, advise, mode
    cdef tl_kl_acc *a
    if nrows == 0:
        return
    cdef _Buffer acc_b = _Buffer(nitems, sizeof(tl_kl_acc))
    cdef _Buffer stage_b = _Buffer(nrows, sizeof(int))
    cdef _Buffer c_b = _Buffer(3 * nrows, sizeof(double))  # (p_ref, q_ref, c) per row
    cdef _Buffer ltot_b = _Buffer(nrows, sizeof(double))
    cdef _Buffer q_out_b = _Buffer(nrows, sizeof(double))
    cdef tl_kl_acc *acc = <tl_kl_acc *> acc_b.ptr
    cdef int *stage = <int *> stage_b.ptr
    cdef double *c = <double *> c_b.ptr
    cdef double *ltot = <double *> ltot_b.ptr
    cdef double *q_out = <double *> q_out_b.ptr
    cdef const floating *pp = &pb[0]
    cdef const floating *qp = &qb[0]
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        stop = tl_stop_flag_here()
        for i in prange(nrows, num_threads=n_threads, schedule='static'):
            stage[i] = 0
            if tl_stop_requested(stop):
                continue
            ltot[i] = 0.0
            q_out[i] = 0.0
            if floating is double:
                tl_kl_shift_f64(pp + poff[i], qp + qoff[i], V, &c[3 * i], &c[3 * i + 1])
            else:
                tl_kl_shift_f32(pp + poff[i], qp + qoff[i], V, &c[3 * i], &c[3 * i + 1])
            # moderate logits: no shift, c = q* - p* (exact small KLs); huge ones: shift
            # by the pair and c = 0 (nothing of the size of the logits cancels)
            if fabs(c[3 * i]) > TL_KL_HUGE or fabs(c[3 * i + 1]) > TL_KL_HUGE:
                c[3 * i + 2] = 0.0
            else:
                c[3 * i + 2] = c[3 * i + 1] - c[3 * i]
                c[3 * i] = 0.0
                c[3 * i + 1] = 0.0
        for attempt in range(3):
            for w in prange(nitems, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                i = w // nch
                if stage[i] < 0:
                    continue
                k = w - i * nch
                start = k * TL_CHUNK
                mode = _stage_mode(stage[i])
                if floating is double:
                    tl_kl_chunk_f64(pp + poff[i] + start, qp + qoff[i] + start,
                                    _chunk_len(V, k), c[3 * i], c[3 * i + 1], c[3 * i + 2],
                                    ltot[i], mode, &acc[w])
                else:
                    tl_kl_chunk_f32(pp + poff[i] + start, qp + qoff[i] + start,
                                    _chunk_len(V, k), c[3 * i], c[3 * i + 1], c[3 * i + 2],
                                    ltot[i], mode, &acc[w])
            if tl_stop_requested(stop):
                break
            for i in prange(nrows, num_threads=n_threads, schedule='static'):
                if stage[i] < 0:
                    continue
                a = &acc[i * nch]
                mode = _stage_mode(stage[i])
                for k in range(1, nch):
                    tl_kl_merge(a, &acc[i * nch + k], mode)
                if stage[i] == 0 and not tl_kl_product_ok(a):
                    stage[i] = 2
                    continue
                fl = 0
                advise = 0
                out[i] = tl_kl_finalize(a, c[3 * i + 2], mode, &fl, &ltot[i], &q_out[i],
                                        &advise)
                flags[i] = fl
                if stage[i] == 0 and advise and fl == 0:
                    stage[i] = 1
                else:
                    stage[i] = -1
            pending = 0
            for i in range(nrows):
                if stage[i] >= 0:
                    pending += 1
            if pending == 0:
                break
    guard.finish()
