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
from libc.float cimport DBL_MAX, DBL_MIN
from libc.math cimport INFINITY, NAN, fabs, isnan, ldexp, sqrt
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

cdef inline Py_ssize_t _prescan_chunk(const floating *lp, const floating *rp, Py_ssize_t V,
                                      Py_ssize_t k, double lam, double *lo, double *hi,
                                      double *lmax) noexcept nogil:
    """tl_prescan over chunk k of the row at lp, rp."""
    cdef Py_ssize_t start = k * TL_CHUNK
    if floating is double:
        return tl_prescan_f64(lp + start, rp + start, _chunk_len(V, k), lam, lo, hi, lmax)
    else:
        return tl_prescan_f32(lp + start, rp + start, _chunk_len(V, k), lam, lo, hi, lmax)


cdef void _prescan_merge(const floating *lp, const floating *rp, Py_ssize_t nch, double lam,
                         const Py_ssize_t *arg, const double *rlo, const double *rhi,
                         const double *lmx, tl_tilt_row *prm) noexcept nogil:
    """Merges the chunk results of one row's first pass in chunk order (a later candidate
    wins only if strictly better) and fills prm."""
    cdef Py_ssize_t j = -1, jk, k
    cdef double lo = INFINITY, hi = -INFINITY, lmax = -INFINITY
    for k in range(nch):
        if rlo[k] < lo:
            lo = rlo[k]
        if rhi[k] > hi:
            hi = rhi[k]
        if lmx[k] > lmax:
            lmax = lmx[k]
        jk = arg[k]
        if jk < 0:
            continue
        jk = jk + k * TL_CHUNK
        if j < 0 or tl_tilted_diff(<double> lp[jk], <double> rp[jk], <double> lp[j],
                                   <double> rp[j], lam) > 0.0:
            j = jk
    if j >= 0:
        tl_tilt_row_init(prm, <double> lp[j], <double> rp[j], lo, hi, lmax)
    else:  # no support: the main pass reports the empty row
        tl_tilt_row_init(prm, 0.0, 0.0, 0.0, 0.0, -INFINITY)
    prm.lam = lam
    prm.lc = 0.0


cdef int _prescan(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                  const int64_t[::1] roff, Py_ssize_t V, const double *lam,
                  const int64_t *rows, Py_ssize_t nrows, tl_tilt_row *prm,
                  int n_threads) except -1 nogil:
    """The first pass over rows[0:nrows] (tl_prescan), filling prm[row]: the dominant
    outcome at lam[row] (lam = NULL: at 0), whose logit and reward become the row's anchor
    and shift, the reward range of the support, which sets the power of two of the moment
    sums (TL_FLAG_REWARD_RANGE in prm[row].flags if that range overflows), and the largest
    logit.  Chunks are parallel work items whose candidates merge in chunk order (a later
    one wins only if strictly better), so the choice does not depend on the thread count."""
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t w, i, k, row
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    if nrows == 0:
        return 0
    cdef char *block = <char *> _alloc(1, nitems * (sizeof(Py_ssize_t) + 3 * sizeof(double)))
    cdef Py_ssize_t *arg = <Py_ssize_t *> block
    cdef double *rlo = <double *> (block + nitems * sizeof(Py_ssize_t))
    cdef double *rhi = rlo + nitems
    cdef double *lmx = rhi + nitems
    for w in prange(nitems, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        i = w // nch
        k = w - i * nch
        row = rows[i]
        arg[w] = _prescan_chunk(lp + loff[row], rp + roff[row], V, k,
                                lam[row] if lam != NULL else 0.0, &rlo[w], &rhi[w], &lmx[w])
    if tl_stop_requested(stop):  # the chunk results are incomplete: discarded
        free(block)
        return 0
    for i in range(nrows):
        row = rows[i]
        _prescan_merge(lp + loff[row], rp + roff[row], nch, lam[row] if lam != NULL else 0.0,
                       &arg[i * nch], &rlo[i * nch], &rhi[i * nch], &lmx[i * nch], &prm[row])
    free(block)
    return 0


cdef inline void _tilt_chunk_call(const floating *lp, const floating *rp, Py_ssize_t V,
                                  Py_ssize_t k, const tl_tilt_row *prm, int mode,
                                  tl_tilt_acc *acc) noexcept nogil:
    cdef Py_ssize_t start = k * TL_CHUNK
    if floating is double:
        tl_tilt_chunk_f64(lp + start, rp + start, _chunk_len(V, k), prm, mode, acc)
    else:
        tl_tilt_chunk_f32(lp + start, rp + start, _chunk_len(V, k), prm, mode, acc)


cdef inline int _tilt_stage_step(tl_tilt_acc *a, tl_tilt_row *prm, int stage,
                                 tl_tilt_result *res) noexcept nogil:
    """After the chunks of one stage are merged into a: the row's next stage (-1: done).
    Stage 0 is a product-mode pass; stage 1 a KL pass when kl cancelled in stage 0
    (tl_tilt_kl_pass_advised); stage 2 the standard mode when |lam| * reward range is too
    large for the product mode."""
    cdef int mode = _stage_mode(stage)
    if stage == 1:
        res.kl = tl_tilt_kl_value(a)
        return -1
    if stage == 0 and (a.flags & TL_FLAGS_INPUT) == 0 and not tl_tilt_product_ok(a, prm.lam):
        return 2
    tl_tilt_finalize(a, prm, mode, res)
    if stage == 0 and tl_tilt_kl_pass_advised(res, prm.lam):
        prm.lc = res.lc
        return 1
    return -1


cdef void _tilt_row(const floating *lp, const floating *rp, Py_ssize_t V, double lam,
                    tl_tilt_row *prm, tl_tilt_result *res, tl_tilt_acc *acc,
                    Py_ssize_t *arg, double *rlo, double *rhi, double *lmx,
                    const tl_stop_flag *stop) noexcept nogil:
    """One whole row on the calling thread: first pass, then the stages, with the same
    chunk results merged in the same order as the chunk-parallel schedule (bitwise the
    same result).  The second pass reads the row back from cache, not from memory."""
    cdef Py_ssize_t nch = tl_num_chunks(V), k
    cdef int stage = 0, mode
    for k in range(nch):
        arg[k] = _prescan_chunk(lp, rp, V, k, lam, &rlo[k], &rhi[k], &lmx[k])
    _prescan_merge(lp, rp, nch, lam, arg, rlo, rhi, lmx, prm)
    if not tl_tilt_row_product_ok(prm):
        stage = 2
    while stage >= 0:
        if tl_stop_requested(stop):
            return
        mode = _stage_mode(stage)
        for k in range(nch):
            _tilt_chunk_call(lp, rp, V, k, prm, mode, &acc[k])
        for k in range(1, nch):
            tl_tilt_merge(acc, &acc[k], mode)
        stage = _tilt_stage_step(acc, prm, stage, res)


# Rows per thread from which _tilt_pass gives each thread whole rows (the second pass then
# reads each row from cache); below it the chunks of all rows are the parallel items.
cdef enum:
    ROWS_PER_THREAD = 4


cdef int _tilt_pass(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                    const int64_t[::1] roff, Py_ssize_t V, const double *lam,
                    const int64_t *rows, Py_ssize_t nrows, tl_tilt_result *res,
                    tl_tilt_row *prm, int n_threads) except -1 nogil:
    """Tilted statistics of rows[0:nrows] (finite lam); res, prm and lam are indexed by row.

    With at least ROWS_PER_THREAD rows per thread every thread takes whole rows
    (_tilt_row); otherwise the chunks of all rows are parallel work items, merged per row in
    chunk order: the first pass (_prescan) fixes each row's anchor, shift and scale, then
    the stages of _tilt_stage_step.  Both schedules compute the same chunk results and merge
    them in the same order, so the result does not depend on the thread count."""
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t w, i, k, row, pending
    cdef int attempt, mode
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    if nrows == 0:
        return 0
    cdef char *block
    cdef Py_ssize_t *arg
    cdef double *rlo
    cdef tl_tilt_acc *acc
    cdef int *stage
    if n_threads == 1 or nrows >= ROWS_PER_THREAD * n_threads:
        block = <char *> _alloc(1, nitems * (sizeof(tl_tilt_acc) + sizeof(Py_ssize_t)
                                             + 3 * sizeof(double)))
        acc = <tl_tilt_acc *> block
        arg = <Py_ssize_t *> (block + nitems * sizeof(tl_tilt_acc))
        rlo = <double *> (block + nitems * (sizeof(tl_tilt_acc) + sizeof(Py_ssize_t)))
        for i in prange(nrows, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            row = rows[i]
            _tilt_row(lp + loff[row], rp + roff[row], V, lam[row], &prm[row], &res[row],
                      &acc[i * nch], &arg[i * nch], &rlo[i * nch], &rlo[nitems + i * nch],
                      &rlo[2 * nitems + i * nch], stop)
        free(block)
        return 0
    _prescan(lb, rb, loff, roff, V, lam, rows, nrows, prm, n_threads)
    if tl_stop_requested(stop):
        return 0
    # one block for all work arrays (freed below; _alloc raises MemoryError)
    block = <char *> _alloc(1, nitems * sizeof(tl_tilt_acc) + nrows * sizeof(int))
    acc = <tl_tilt_acc *> block
    stage = <int *> (block + nitems * sizeof(tl_tilt_acc))
    for i in range(nrows):
        stage[i] = 0 if tl_tilt_row_product_ok(&prm[rows[i]]) else 2
    for attempt in range(3):
        for w in prange(nitems, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            i = w // nch
            if stage[i] < 0:
                continue
            k = w - i * nch
            row = rows[i]
            _tilt_chunk_call(lp + loff[row], rp + roff[row], V, k, &prm[row],
                             _stage_mode(stage[i]), &acc[w])
        if tl_stop_requested(stop):
            break
        for i in prange(nrows, num_threads=n_threads, schedule='static'):
            if stage[i] < 0:
                continue
            row = rows[i]
            mode = _stage_mode(stage[i])
            for k in range(1, nch):
                tl_tilt_merge(&acc[i * nch], &acc[i * nch + k], mode)
            stage[i] = _tilt_stage_step(&acc[i * nch], &prm[row], stage[i], &res[row])
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
                    const int64_t[::1] roff, Py_ssize_t V, const int64_t *rows,
                    Py_ssize_t nrows, tl_info_result *res, tl_tilt_row *prm,
                    int n_threads) except -1 nogil:
    """Normaliser, base mean/variance and extreme reward sets of rows[0:nrows] (res and
    prm indexed by row; prm gets the first pass at lam = 0)."""
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t w, i, k, row, start
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef tl_info_acc *acc
    cdef const tl_stop_flag *stop = tl_stop_flag_here()
    if nrows == 0:
        return 0
    _prescan(lb, rb, loff, roff, V, NULL, rows, nrows, prm, n_threads)
    if tl_stop_requested(stop):
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
                              _chunk_len(V, k), &prm[row], &acc[w])
        else:
            tl_info_chunk_f32(lp + loff[row] + start, rp + roff[row] + start,
                              _chunk_len(V, k), &prm[row], &acc[w])
    for i in prange(nrows, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        row = rows[i]
        for k in range(1, nch):
            tl_info_merge(&acc[i * nch], &acc[i * nch + k])
        tl_info_finalize(&acc[i * nch], &prm[row], &res[row])
    free(acc)
    return 0


cdef void _limit_result(const tl_info_result *info, double lam, tl_tilt_result *out) noexcept nogil:
    """Tilted statistics in the lam -> +-inf limit: phi is p restricted to the argmax
    (lam > 0) or argmin (lam < 0) reward set.  For the log-probabilities (tl_limit_logprobs)
    the set's log-sum-exp of logits is carried as (anchor, z) = (its max, log of the sum
    relative to it)."""
    cdef double r_star = info.r_max if lam > 0 else info.r_min
    cdef double log_p = info.log_p_max if lam > 0 else info.log_p_min
    out.flags = info.flags
    out.log_norm = info.log_norm
    out.mean = r_star
    out.variance = 0.0
    out.mean_s = 0.0
    out.var_s = 0.0
    out.e = info.e
    out.kl = -log_p
    # Lambda(lam) = lam r_star + log p(star set) (exact in the limit)
    if r_star == 0.0:
        out.log_partition = log_p
    else:
        out.log_partition = lam * r_star + log_p
    out.lc = log_p
    out.anchor = info.m_max if lam > 0 else info.m_min
    out.z = info.ls_max if lam > 0 else info.ls_min
    out.shift = r_star
    out.r_min = info.r_min
    out.r_max = info.r_max


cdef int _tilt_all(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                   const int64_t[::1] roff, Py_ssize_t V, const double[::1] lam,
                   tl_tilt_result *res, int *limit, int n_threads) except -1 nogil:
    """Tilted statistics for every row; rows with infinite lam get the limit and
    limit[row] = 1."""
    cdef Py_ssize_t nrows = loff.shape[0]
    cdef Py_ssize_t i, nfin = 0, ninf = 0
    # fin, inf (row lists), then the row constants and info (the limit rows)
    cdef char *block = <char *> _alloc(1, nrows * (2 * sizeof(int64_t) + sizeof(tl_tilt_row)
                                                   + sizeof(tl_info_result)))
    cdef int64_t *fin = <int64_t *> block
    cdef int64_t *inf = fin + nrows
    cdef tl_tilt_row *prm = <tl_tilt_row *> (inf + nrows)
    cdef tl_info_result *info = <tl_info_result *> (prm + nrows)
    for i in range(nrows):
        limit[i] = 0
        if lam[i] == INFINITY or lam[i] == -INFINITY:
            inf[ninf] = i
            ninf += 1
        else:
            fin[nfin] = i
            nfin += 1
    try:
        _tilt_pass(lb, rb, loff, roff, V, &lam[0], fin, nfin, res, prm, n_threads)
        if tl_stop_requested(tl_stop_flag_here()):
            return 0
        if ninf > 0:
            _info_pass(lb, rb, loff, roff, V, inf, ninf, info, prm, n_threads)
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
    """out[i] = (log_partition, mean, variance, kl, log_norm) of row i at lam[i], and, if
    out has 7 columns, (shift c, Lambda - lam c): the reward of the dominant outcome and
    the log partition relative to it (what the closeness identity needs for huge lam)."""
    cdef Py_ssize_t nrows = loff.shape[0], i
    cdef bint wide = out.shape[1] >= 7
    if out.shape[1] < 5:
        raise ValueError("out needs 5 or 7 columns")
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
            if wide:
                out[i, 5] = res[i].shift
                out[i, 6] = res[i].lc
            flags[i] = res[i].flags
    guard.finish()


def info_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
              const int64_t[::1] roff, Py_ssize_t V, double[:, ::1] out, int32_t[::1] flags,
              int n_threads):
    """out[i] = (log_norm, mean, variance, r_max, log_p_max, r_min, log_p_min) under p."""
    cdef Py_ssize_t nrows = loff.shape[0], i
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_info_result))
    cdef _Buffer prm_b = _Buffer(nrows, sizeof(tl_tilt_row))
    cdef _Buffer rows_b = _Buffer(nrows, sizeof(int64_t))
    cdef tl_info_result *res = <tl_info_result *> res_b.ptr
    cdef int64_t *rows = <int64_t *> rows_b.ptr
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        for i in range(nrows):
            rows[i] = i
        _info_pass(lb, rb, loff, roff, V, rows, nrows, res, <tl_tilt_row *> prm_b.ptr,
                   n_threads)
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


cdef inline void _phi_params(const tl_tilt_result *res, double lam,
                             tl_phi_params *p) noexcept nogil:
    """log phi = ((l - anchor) + lam (r - c)) - z, and the scaled moments' centre and
    spread: the largest |d_s - mean_s| on the support, so that |z| <= 1."""
    cdef double up, down, spread
    p.lam = lam
    p.c = res.shift
    p.anchor = res.anchor
    p.z = res.z
    p.inv_scale = ldexp(1.0, -res.e)
    p.center = res.mean_s
    up = (res.r_max - res.shift) * p.inv_scale - res.mean_s
    down = res.mean_s - (res.r_min - res.shift) * p.inv_scale
    spread = up if up > down else down
    p.inv_spread = 1.0 / spread if spread > 0 else 0.0


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
    cdef _Buffer phi_b = _Buffer(nrows, sizeof(tl_phi_params))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    cdef int *limit = <int *> limit_b.ptr
    cdef tl_phi_params *phi = <tl_phi_params *> phi_b.ptr
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
            flags[i] = res[i].flags
            _phi_params(&res[i], lam[i], &phi[i])
        for w in prange(nitems, num_threads=n_threads, schedule='static'):
            if tl_stop_requested(stop):
                continue
            i = w // nch
            k = w - i * nch
            start = k * TL_CHUNK
            if flags[i] != 0:
                continue
            if limit[i]:
                # log p restricted to the extreme set
                if floating is double:
                    tl_limit_logprobs_f64(lp + loff[i] + start, rp + roff[i] + start,
                                          _chunk_len(V, k), res[i].mean, res[i].anchor,
                                          res[i].z, op + i * V + start)
                else:
                    tl_limit_logprobs_f32(lp + loff[i] + start, rp + roff[i] + start,
                                          _chunk_len(V, k), res[i].mean, res[i].anchor,
                                          res[i].z, op + i * V + start)
            else:
                if floating is double:
                    tl_tilt_logprobs_f64(lp + loff[i] + start, rp + roff[i] + start,
                                         _chunk_len(V, k), &phi[i], op + i * V + start)
                else:
                    tl_tilt_logprobs_f32(lp + loff[i] + start, rp + roff[i] + start,
                                         _chunk_len(V, k), &phi[i], op + i * V + start)
    guard.finish()


cdef inline void _moments_chunk_call(const floating *lp, const floating *rp, Py_ssize_t V,
                                     Py_ssize_t k, const tl_phi_params *phi, int order,
                                     double *sums) noexcept nogil:
    cdef Py_ssize_t start = k * TL_CHUNK
    if floating is double:
        tl_moments_chunk_f64(lp + start, rp + start, _chunk_len(V, k), phi, order, sums)
    else:
        tl_moments_chunk_f32(lp + start, rp + start, _chunk_len(V, k), phi, order, sums)


def cumulant_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
                  const int64_t[::1] roff, Py_ssize_t V, const double[::1] lam, int order,
                  double[:, ::1] out, int32_t[::1] flags, int n_threads):
    """out[i, k-1] = k-th cumulant of the reward under phi_lam[i] (k = 1..order).

    Moments are summed in the row's scaled units (rewards (r - c) 2^-e, centred on the
    tilted mean and divided by the largest deviation on the support), so no power
    overflows or underflows there; kappa_k is scaled back by 2^(k e) at the end, which
    gives +-inf (0) exactly where the true value is beyond (below) the double range."""
    cdef Py_ssize_t nrows = loff.shape[0]
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t i, k, w, j, start
    cdef int stride = order + 1
    cdef double spread
    if order < 1 or order > TL_MAX_ORDER:
        raise ValueError(f"order must be between 1 and {TL_MAX_ORDER}; got {order}")
    if out.shape[1] < order:
        raise ValueError("out has fewer columns than order")
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_tilt_result))
    cdef _Buffer limit_b = _Buffer(nrows, sizeof(int))
    cdef _Buffer phi_b = _Buffer(nrows, sizeof(tl_phi_params))
    cdef _Buffer sums_b = _Buffer(nitems * stride, sizeof(double))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    cdef int *limit = <int *> limit_b.ptr
    cdef tl_phi_params *phi = <tl_phi_params *> phi_b.ptr
    cdef double *sums = <double *> sums_b.ptr
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    cdef bint whole_rows = n_threads == 1 or nrows >= ROWS_PER_THREAD * n_threads
    for i in range(nrows):
        if lam[i] == INFINITY or lam[i] == -INFINITY:
            whole_rows = False  # the limit rows take the general path
    cdef _Buffer prm_b, tacc_b, scan_b
    cdef tl_tilt_row *prm = NULL
    cdef tl_tilt_acc *tacc = NULL
    cdef Py_ssize_t *arg = NULL
    cdef double *rlo = NULL
    if whole_rows:
        # every thread takes whole rows: first pass, tilt stages, then the moment chunks
        # (the later passes read the row back from cache); the same chunk results merged
        # in the same order as the chunk-parallel schedule below
        prm_b = _Buffer(nrows, sizeof(tl_tilt_row))
        tacc_b = _Buffer(nitems, sizeof(tl_tilt_acc))
        scan_b = _Buffer(nitems, sizeof(Py_ssize_t) + 3 * sizeof(double))
        prm = <tl_tilt_row *> prm_b.ptr
        tacc = <tl_tilt_acc *> tacc_b.ptr
        arg = <Py_ssize_t *> scan_b.ptr
        rlo = <double *> (arg + nitems)
    with nogil:
        stop = tl_stop_flag_here()
        if whole_rows:
            for i in prange(nrows, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                limit[i] = 0
                _tilt_row(lp + loff[i], rp + roff[i], V, lam[i], &prm[i], &res[i],
                          &tacc[i * nch], &arg[i * nch], &rlo[i * nch],
                          &rlo[nitems + i * nch], &rlo[2 * nitems + i * nch], stop)
                flags[i] = res[i].flags
                _phi_params(&res[i], lam[i], &phi[i])
                if flags[i] != 0:
                    continue
                for k in range(nch):
                    _moments_chunk_call(lp + loff[i], rp + roff[i], V, k, &phi[i], order,
                                        sums + (i * nch + k) * stride)
        else:
            _tilt_all(lb, rb, loff, roff, V, lam, res, limit, n_threads)
            for i in range(nrows):
                flags[i] = res[i].flags
                _phi_params(&res[i], lam[i], &phi[i])
            for w in prange(nitems, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                i = w // nch
                k = w - i * nch
                if flags[i] != 0 or limit[i]:
                    continue
                _moments_chunk_call(lp + loff[i], rp + roff[i], V, k, &phi[i], order,
                                    sums + w * stride)
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
                spread = 1.0 / phi[i].inv_spread if phi[i].inv_spread > 0 else 0.0
                # in scaled units into the output row, then scaled back in place
                tl_cumulants_from_moments(sums + i * nch * stride, order, res[i].mean_s,
                                          spread, &out[i, 0])
                out[i, 0] = res[i].shift + ldexp(out[i, 0], res[i].e)
                for j in range(1, order):
                    out[i, j] = ldexp(out[i, j], (j + 1) * res[i].e)
    guard.finish()


cdef inline double _lam_sq_var(double lam, int e, double var_s) noexcept nogil:
    """lam^2 variance = (lam 2^e)^2 (variance 2^-2e): d kl / d log lam, dimensionless (no
    variance underflow for a subnormal reward spread, none overflow for 1e300)."""
    cdef double t = ldexp(lam, e)
    if var_s == 0.0:
        return 0.0
    return (t * var_s) * t


def solve_rows(const floating[::1] lb, const floating[::1] rb, const int64_t[::1] loff,
               const int64_t[::1] roff, Py_ssize_t V, const double[::1] target, bint joint,
               double[::1] out_lam, int32_t[::1] out_iter, int32_t[::1] out_converged,
               int32_t[::1] flags, int n_threads):
    """lam >= 0 with kl(lam) = target per row, or one lam for the summed kl (joint).

    The iteration sees the derivative only as lam^2 variance, formed in each row's units of
    its reward range (tl_solve.h), so it is the same at every reward scale.  Per-row solves
    run in lockstep: every iteration is one parallel pass over the rows still iterating.
    out_iter counts the passes over each row's data (including the first pass that finds
    kl_max and the base variance); out_converged is the TL_NEWTON_* status."""
    cdef Py_ssize_t nrows = loff.shape[0], i, nact
    cdef tl_newton joint_st
    cdef double kl_max_sum, var_sum, kl_sum, d_sum, t
    cdef int bad = 0, E, have
    if nrows == 0:
        return
    cdef _Buffer res_b = _Buffer(nrows, sizeof(tl_tilt_result))
    cdef _Buffer info_b = _Buffer(nrows, sizeof(tl_info_result))
    cdef _Buffer st_b = _Buffer(nrows, sizeof(tl_newton))
    cdef _Buffer prm_b = _Buffer(nrows, sizeof(tl_tilt_row))
    cdef _Buffer lam_b = _Buffer(nrows, sizeof(double))
    cdef _Buffer rows_b = _Buffer(nrows, sizeof(int64_t))
    cdef tl_tilt_result *res = <tl_tilt_result *> res_b.ptr
    cdef tl_info_result *info = <tl_info_result *> info_b.ptr
    cdef tl_newton *st = <tl_newton *> st_b.ptr
    cdef tl_tilt_row *prm = <tl_tilt_row *> prm_b.ptr
    cdef double *lam = <double *> lam_b.ptr
    cdef int64_t *rows = <int64_t *> rows_b.ptr
    cdef const tl_stop_flag *stop
    # once SIGINT stops the passes the loops below end at once; the results are discarded
    # (guard.finish raises)
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * V)
    with nogil:
        stop = tl_stop_flag_here()
        for i in range(nrows):
            rows[i] = i
        _info_pass(lb, rb, loff, roff, V, rows, nrows, info, prm, n_threads)
        if tl_stop_requested(stop):
            bad = 1
        for i in range(nrows):
            flags[i] = info[i].flags
            bad = bad | info[i].flags
        if bad == 0 and not joint:
            for i in range(nrows):
                # start: kl ~ lam^2 var / 2 (scaled units, then back)
                t = sqrt(2.0 * target[i] / info[i].var_s) if info[i].var_s > 0 else 1.0
                tl_newton_init(&st[i], target[i], -info[i].log_p_max,
                               ldexp(t, -info[i].e))
            while True:
                nact = 0
                for i in range(nrows):
                    if not st[i].done:
                        rows[nact] = i
                        lam[i] = st[i].lam
                        nact += 1
                if nact == 0:
                    break
                _tilt_pass(lb, rb, loff, roff, V, lam, rows, nact, res, prm, n_threads)
                if tl_stop_requested(stop):
                    break
                for i in range(nact):
                    tl_newton_step(&st[rows[i]], res[rows[i]].kl,
                                   _lam_sq_var(lam[rows[i]], res[rows[i]].e,
                                               res[rows[i]].var_s))
            for i in range(nrows):
                out_lam[i] = st[i].lam
                out_iter[i] = st[i].iter + 1
                out_converged[i] = st[i].converged
        elif bad == 0:
            # the start in the units of the largest reward range among the rows
            E = 0
            have = 0
            for i in range(nrows):
                if info[i].r_max > info[i].r_min and (not have or info[i].e > E):
                    E = info[i].e
                    have = 1
            kl_max_sum = 0.0
            var_sum = 0.0
            for i in range(nrows):
                kl_max_sum = kl_max_sum + (-info[i].log_p_max)
                var_sum = var_sum + ldexp(info[i].var_s, 2 * (info[i].e - E))
            t = sqrt(2.0 * target[0] / var_sum) if var_sum > 0 else 1.0
            tl_newton_init(&joint_st, target[0], kl_max_sum, ldexp(t, -E))
            while not joint_st.done:
                for i in range(nrows):
                    lam[i] = joint_st.lam
                _tilt_pass(lb, rb, loff, roff, V, lam, rows, nrows, res, prm, n_threads)
                if tl_stop_requested(stop):
                    break
                kl_sum = 0.0
                d_sum = 0.0
                for i in range(nrows):
                    kl_sum = kl_sum + res[i].kl
                    d_sum = d_sum + _lam_sq_var(lam[i], res[i].e, res[i].var_s)
                tl_newton_step(&joint_st, kl_sum, d_sum)
            for i in range(nrows):
                out_lam[i] = joint_st.lam
                out_iter[i] = joint_st.iter + 1
                out_converged[i] = joint_st.converged
    guard.finish()


cdef inline void _kl_shift_row(const floating *pp, const floating *qp, Py_ssize_t V,
                               double *c) noexcept nogil:
    """c[0:4] = (p_ref, q_ref, c, p_max) of one row (see tl_kl.h)."""
    if floating is double:
        tl_kl_shift_f64(pp, qp, V, &c[0], &c[1])
    else:
        tl_kl_shift_f32(pp, qp, V, &c[0], &c[1])
    # the first maximum of p (tl_kl_shift's p*; 0 without support, then the chunks' fast
    # path never applies: they see no finite logit of p)
    c[3] = c[0]
    # p and q at nearly the same offset (|q* - p*| <= 1): no shift, c = q* - p*, so
    # d - c = (lq - lp) - c is exact for nearby rows (small KLs keep their relative
    # accuracy); otherwise (offsets apart, or huge logits) shift each by its own reference
    # and c = 0: nothing of the size of the offsets cancels
    if fabs(c[1] - c[0]) > 1.0 or fabs(c[0]) > TL_KL_HUGE or fabs(c[1]) > TL_KL_HUGE:
        c[2] = 0.0
    else:
        c[2] = c[1] - c[0]
        c[0] = 0.0
        c[1] = 0.0


cdef inline void _kl_chunk_call(const floating *pp, const floating *qp, Py_ssize_t V,
                                Py_ssize_t k, const double *c, double ltot, int mode,
                                tl_kl_acc *acc) noexcept nogil:
    cdef Py_ssize_t start = k * TL_CHUNK
    if floating is double:
        tl_kl_chunk_f64(pp + start, qp + start, _chunk_len(V, k), c[0], c[1], c[3], c[2],
                        ltot, mode, acc)
    else:
        tl_kl_chunk_f32(pp + start, qp + start, _chunk_len(V, k), c[0], c[1], c[3], c[2],
                        ltot, mode, acc)


cdef inline int _kl_stage_step(tl_kl_acc *a, const double *c, int stage, double *out,
                               int32_t *flags, double *ltot, double *q_out) noexcept nogil:
    """After the chunks of one stage are merged into a: the row's next stage (-1: done).
    Stage 0 is a product-mode pass; stage 1 a KL pass (sum of non-negative terms) when
    stage 0 cancelled; stage 2 the standard mode when log(q/p) spreads over more than the
    product mode allows."""
    cdef int fl = 0, advise = 0
    if stage == 0 and not tl_kl_product_ok(a):
        return 2
    out[0] = tl_kl_finalize(a, c[2], _stage_mode(stage), &fl, ltot, q_out, &advise)
    flags[0] = fl
    if stage == 0 and advise and fl == 0:
        return 1
    return -1


def kl_rows(const floating[::1] pb, const floating[::1] qb, const int64_t[::1] poff,
            const int64_t[::1] qoff, Py_ssize_t V, double[::1] out, int32_t[::1] flags,
            int n_threads):
    """out[i] = KL(p_i || q_i) for logits rows p_i, q_i.

    Stages as in _kl_stage_step.  With at least ROWS_PER_THREAD rows per thread every
    thread takes whole rows (the chunk pass then reads p back from cache); otherwise the
    chunks of all rows are the parallel items.  Both schedules compute the same chunk
    results and merge them in the same order: the result does not depend on the thread
    count."""
    cdef Py_ssize_t nrows = poff.shape[0]
    cdef Py_ssize_t nch = tl_num_chunks(V)
    cdef Py_ssize_t nitems = nrows * nch
    cdef Py_ssize_t i, k, w, pending
    cdef int attempt, mode, st
    if nrows == 0:
        return
    cdef _Buffer acc_b = _Buffer(nitems, sizeof(tl_kl_acc))
    cdef _Buffer stage_b = _Buffer(nrows, sizeof(int))
    cdef _Buffer c_b = _Buffer(4 * nrows, sizeof(double))  # (p_ref, q_ref, c, p_max) per row
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
        if n_threads == 1 or nrows >= ROWS_PER_THREAD * n_threads:
            for i in prange(nrows, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                ltot[i] = 0.0
                q_out[i] = 0.0
                _kl_shift_row(pp + poff[i], qp + qoff[i], V, &c[4 * i])
                st = 0
                while st >= 0 and not tl_stop_requested(stop):
                    mode = _stage_mode(st)
                    for k in range(nch):
                        _kl_chunk_call(pp + poff[i], qp + qoff[i], V, k, &c[4 * i], ltot[i],
                                       mode, &acc[i * nch + k])
                    for k in range(1, nch):
                        tl_kl_merge(&acc[i * nch], &acc[i * nch + k], mode)
                    st = _kl_stage_step(&acc[i * nch], &c[4 * i], st, &out[i], &flags[i],
                                        &ltot[i], &q_out[i])
        else:
            for i in prange(nrows, num_threads=n_threads, schedule='static'):
                stage[i] = 0
                if tl_stop_requested(stop):
                    continue
                ltot[i] = 0.0
                q_out[i] = 0.0
                _kl_shift_row(pp + poff[i], qp + qoff[i], V, &c[4 * i])
            for attempt in range(3):
                for w in prange(nitems, num_threads=n_threads, schedule='static'):
                    if tl_stop_requested(stop):
                        continue
                    i = w // nch
                    if stage[i] < 0:
                        continue
                    k = w - i * nch
                    _kl_chunk_call(pp + poff[i], qp + qoff[i], V, k, &c[4 * i], ltot[i],
                                   _stage_mode(stage[i]), &acc[w])
                if tl_stop_requested(stop):
                    break
                for i in prange(nrows, num_threads=n_threads, schedule='static'):
                    if stage[i] < 0:
                        continue
                    mode = _stage_mode(stage[i])
                    for k in range(1, nch):
                        tl_kl_merge(&acc[i * nch], &acc[i * nch + k], mode)
                    stage[i] = _kl_stage_step(&acc[i * nch], &c[4 * i], stage[i], &out[i],
                                              &flags[i], &ltot[i], &q_out[i])
                pending = 0
                for i in range(nrows):
                    if stage[i] >= 0:
                        pending += 1
                if pending == 0:
                    break
    guard.finish()


# --------------------------------------------------------------------------------------
# test hook: the exponential family of csrc/tl_exp.h as one named variant compiled it
# --------------------------------------------------------------------------------------

cdef extern from "tl_mathcheck.h" nogil:
    int tl_mathcheck_isa(int isa, const double *x, Py_ssize_t n, int func, double *out)

# in the order of the TL_MC_* codes of tl_mathcheck.h
_MATHCHECK_FUNCTIONS = ("exp", "expm1", "emx_e", "emx_em", "emx_emx", "kl_term",
                        "expm1_minus_x", "vexp", "vexp_w", "vexp3_e", "vexp3_em", "vexp3_emx",
                        "vkl_term", "vexpf_w", "vexp_det", "exp_det")


def _mathcheck(str variant, str function, const double[::1] x, double[::1] out):
    """Private test hook: ``out[i] = f(x[i])`` for a function of csrc/tl_exp.h ("exp",
    "expm1", "emx_e"/"emx_em"/"emx_emx" for the three outputs of tl_exp_expm1_emx,
    "kl_term", "expm1_minus_x") or a vector function of csrc/tl_simd.h ("vexp", "vexp_w",
    "vexp3_e"/"vexp3_em"/"vexp3_emx", "vkl_term", "vexpf_w" on float32(x)) or the
    variant-invariant exponential of csrc/tl_det.h ("vexp_det", "exp_det") as compiled
    for `variant` ("portable", "avx2", "avx512"),
    whichever variant the kernels use.  Raises ValueError for an unknown name, a variant
    this build or CPU lacks, or arrays of different lengths."""
    cdef int isa = -1, func, rc, k
    for k in range(TL_ISA_COUNT):
        if tl_isa_name(k).decode("ascii") == variant:
            isa = k
    if isa < 0:
        raise ValueError(f"unknown variant {variant!r}")
    if function not in _MATHCHECK_FUNCTIONS:
        raise ValueError(f"unknown function {function!r}")
    if x.shape[0] != out.shape[0]:
        raise ValueError("x and out differ in length")
    func = _MATHCHECK_FUNCTIONS.index(function)
    with nogil:
        rc = tl_mathcheck_isa(isa, &x[0] if x.shape[0] else NULL, x.shape[0], func,
                              &out[0] if out.shape[0] else NULL)
    if rc == -2:
        raise ValueError(f"variant {variant!r} is not compiled into this build")
    if rc == -3:
        raise ValueError(f"this CPU cannot run the {variant!r} variant")
    if rc != 0:
        raise ValueError(f"tl_mathcheck_isa failed ({rc})")


# --------------------------------------------------------------------------------------
# small calls: one thread, no OpenMP region
# --------------------------------------------------------------------------------------
#
# The drivers above open OpenMP parallel regions even on one thread, and every region
# costs a team set-up and a futex wake-up: microseconds, far more than the work of a row
# of a few hundred outcomes.  The serial drivers below run the same C calls in the same
# order for rows of dense (nrows, V) arrays (row i at i * V): the chunks of a row one after
# the other, each merged into the row's first chunk as soon as it is done, which is the
# left-to-right merge of the parallel drivers, so the results are bitwise the same.  They
# are meant for small work (below _validation.SMALL_WORK elements): they have no Ctrl-C
# guard, since they return within a millisecond.

# chunks of a row on the serial path (rows of the fast path are below SMALL_WORK = 2^17
# elements: at most 8 chunks)
cdef enum:
    SERIAL_MAX_CHUNKS = 16


cdef inline void _tilt_row_serial(const floating *lp, const floating *rp, Py_ssize_t V,
                                  double lam, tl_tilt_result *res) noexcept nogil:
    """Tilted statistics of one row at a finite lam: _tilt_row on this thread."""
    cdef tl_tilt_row prm
    cdef tl_tilt_acc acc[SERIAL_MAX_CHUNKS]
    cdef Py_ssize_t arg[SERIAL_MAX_CHUNKS]
    cdef double rlo[SERIAL_MAX_CHUNKS]
    cdef double rhi[SERIAL_MAX_CHUNKS]
    cdef double lmx[SERIAL_MAX_CHUNKS]
    _tilt_row(lp, rp, V, lam, &prm, res, acc, arg, rlo, rhi, lmx, NULL)


cdef int _tilt_serial(const floating[::1] lb, const floating[::1] rb, Py_ssize_t nrows,
                      Py_ssize_t V, double lam, double[:, ::1] out) noexcept:
    cdef Py_ssize_t i
    cdef int flags = 0
    cdef tl_tilt_result res
    cdef const floating *lp = &lb[0]
    cdef const floating *rp = &rb[0]
    with nogil:
        for i in range(nrows):
            _tilt_row_serial(lp + i * V, rp + i * V, V, lam, &res)
            out[0, i] = res.log_partition
            out[1, i] = res.mean
            out[2, i] = res.variance
            out[3, i] = res.kl
            flags = flags | res.flags
    return flags


def tilt_small_f64(const double[::1] lb, const double[::1] rb, Py_ssize_t nrows,
                   Py_ssize_t V, double lam, double[:, ::1] out):
    """out[:, i] = (log_partition, mean, variance, kl) of row i (at i * V) at the finite lam,
    on this thread without an OpenMP region; returns the rows' flags or-ed together.
    The caller guarantees nrows * V <= the sizes of lb and rb and out of shape (4, nrows)."""
    if tl_num_chunks(V) > SERIAL_MAX_CHUNKS:
        raise ValueError("rows too long for the serial path")
    return _tilt_serial(lb, rb, nrows, V, lam, out)


def tilt_small_f32(const float[::1] lb, const float[::1] rb, Py_ssize_t nrows,
                   Py_ssize_t V, double lam, double[:, ::1] out):
    """float32 rows: as tilt_small_f64."""
    if tl_num_chunks(V) > SERIAL_MAX_CHUNKS:
        raise ValueError("rows too long for the serial path")
    return _tilt_serial(lb, rb, nrows, V, lam, out)


cdef void _lse_serial(const floating *x, Py_ssize_t nrows, Py_ssize_t n,
                      double *out) noexcept nogil:
    cdef Py_ssize_t i, k
    cdef tl_lse_acc a, b
    for i in range(nrows):
        for k in range(tl_num_chunks(n)):
            if floating is double:
                tl_lse_chunk_f64(x + i * n + k * TL_CHUNK, _chunk_len(n, k), &a if k == 0 else &b)
            else:
                tl_lse_chunk_f32(x + i * n + k * TL_CHUNK, _chunk_len(n, k), &a if k == 0 else &b)
            if k > 0:
                tl_lse_merge(&a, &b)
        out[i] = tl_lse_finalize(&a)


def logsumexp_small_f64(const double[::1] x, Py_ssize_t nrows, Py_ssize_t n, double[::1] out):
    """out[i] = logsumexp(x[i*n:(i+1)*n]) (n >= 1) as logsumexp_rows, on this thread without
    an OpenMP region."""
    with nogil:
        _lse_serial(&x[0], nrows, n, &out[0])


def logsumexp_small_f32(const float[::1] x, Py_ssize_t nrows, Py_ssize_t n, double[::1] out):
    """float32 rows: as logsumexp_small_f64."""
    with nogil:
        _lse_serial(&x[0], nrows, n, &out[0])


# ======================================================================================
# softmax / log_softmax of rows (tiltlab.special; csrc/tl_softmax.h)
# ======================================================================================

from cython.parallel cimport threadid

cdef extern from "tl_softmax.h" nogil:
    ctypedef struct tl_sm_acc:
        double m
        double count
        double rest
        int flags
    void tl_softmax_chunk_f64(const double *x, Py_ssize_t n, double *out, tl_sm_acc *acc)
    void tl_softmax_chunk_f32(const float *x, Py_ssize_t n, float *out, tl_sm_acc *acc)
    void tl_softmax_scale_f64(double *out, Py_ssize_t n, const tl_sm_acc *chunk,
                              const tl_sm_acc *row)
    void tl_softmax_scale_f32(float *out, Py_ssize_t n, const tl_sm_acc *chunk,
                              const tl_sm_acc *row)
    void tl_log_softmax_write_f64(const double *x, Py_ssize_t n, double *out,
                                  const tl_sm_acc *row)
    void tl_log_softmax_write_f32(const float *x, Py_ssize_t n, float *out,
                                  const tl_sm_acc *row)
    void tl_softmax_merge(tl_sm_acc *into, const tl_sm_acc *other)


cdef inline void _sm_pass1(const floating *x, Py_ssize_t n, floating *out, bint log,
                           Py_ssize_t k, tl_sm_acc *acc) noexcept nogil:
    """Pass 1 over chunk k of the row x (softmax: its terms written to out)."""
    cdef Py_ssize_t off = k * TL_CHUNK
    if floating is double:
        tl_softmax_chunk_f64(x + off, _chunk_len(n, k), NULL if log else out + off, acc)
    else:
        tl_softmax_chunk_f32(x + off, _chunk_len(n, k), NULL if log else out + off, acc)


cdef inline void _sm_pass2(const floating *x, Py_ssize_t n, floating *out, bint log,
                           Py_ssize_t k, const tl_sm_acc *acc,
                           const tl_sm_acc *row) noexcept nogil:
    """Pass 2 over chunk k (acc: its pass-1 state; row: the merged state of the row)."""
    cdef Py_ssize_t off = k * TL_CHUNK
    if floating is double:
        if log:
            tl_log_softmax_write_f64(x + off, _chunk_len(n, k), out + off, row)
        else:
            tl_softmax_scale_f64(out + off, _chunk_len(n, k), acc, row)
    else:
        if log:
            tl_log_softmax_write_f32(x + off, _chunk_len(n, k), out + off, row)
        else:
            tl_softmax_scale_f32(out + off, _chunk_len(n, k), acc, row)


cdef inline void _sm_merge_row(const tl_sm_acc *acc, Py_ssize_t nch,
                               tl_sm_acc *row) noexcept nogil:
    cdef Py_ssize_t k
    row.m = acc[0].m
    row.count = acc[0].count
    row.rest = acc[0].rest
    row.flags = acc[0].flags
    for k in range(1, nch):
        tl_softmax_merge(row, &acc[k])


cdef void _sm_row(const floating *x, Py_ssize_t n, floating *out, bint log,
                  tl_sm_acc *acc, Py_ssize_t nch) noexcept nogil:
    """One whole row on this thread (both passes while the row is in cache); acc holds
    nch states."""
    cdef Py_ssize_t k
    cdef tl_sm_acc row
    for k in range(nch):
        _sm_pass1(x, n, out, log, k, &acc[k])
    _sm_merge_row(acc, nch, &row)
    for k in range(nch):
        _sm_pass2(x, n, out, log, k, &acc[k], &row)


def softmax_rows(const floating[::1] x, floating[::1] out, Py_ssize_t nrows, Py_ssize_t n,
                 bint log, int n_threads):
    """out[i*n:(i+1)*n] = softmax (log=False) or log_softmax (log=True) of the row
    x[i*n:(i+1)*n], in the input's type (float32 rows: double arithmetic, float32 output).

    Rows are split into TL_CHUNK chunks whose states merge left to right: the same bits for
    any thread count.  With at least as many rows as threads each thread takes whole rows
    (both passes while the row is in cache); otherwise the chunks of the rows are shared
    out, pass by pass.  The caller guarantees nrows * n elements in x and out."""
    cdef Py_ssize_t nch = tl_num_chunks(n)
    cdef Py_ssize_t i, k, w, t
    cdef Py_ssize_t nitems = nrows * nch
    cdef tl_sm_acc *acc
    cdef tl_sm_acc *rows
    cdef const floating *xb
    cdef floating *ob
    cdef const tl_stop_flag *stop
    if nrows == 0 or n == 0:
        return
    xb = &x[0]
    ob = &out[0]
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> nrows * n)
    with nogil:
        stop = tl_stop_flag_here()
        if n_threads <= 1:
            acc = <tl_sm_acc *> _alloc(nch, sizeof(tl_sm_acc))
            for i in range(nrows):
                if tl_stop_requested(stop):
                    break
                _sm_row(xb + i * n, n, ob + i * n, log, acc, nch)
            free(acc)
        elif nrows >= n_threads or nch == 1:
            acc = <tl_sm_acc *> _alloc(n_threads * nch, sizeof(tl_sm_acc))
            for i in prange(nrows, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                t = threadid()
                _sm_row(xb + i * n, n, ob + i * n, log, acc + t * nch, nch)
            free(acc)
        else:  # a few long rows: their chunks shared out, pass by pass
            acc = <tl_sm_acc *> _alloc(nitems, sizeof(tl_sm_acc))
            rows = <tl_sm_acc *> _alloc(nrows, sizeof(tl_sm_acc))
            for w in prange(nitems, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                i = w // nch
                _sm_pass1(xb + i * n, n, ob + i * n, log, w - i * nch, &acc[w])
            for i in range(nrows):
                _sm_merge_row(acc + i * nch, nch, &rows[i])
            for w in prange(nitems, num_threads=n_threads, schedule='static'):
                if tl_stop_requested(stop):
                    continue
                i = w // nch
                k = w - i * nch
                _sm_pass2(xb + i * n, n, ob + i * n, log, k, &acc[w], &rows[i])
            free(rows)
            free(acc)
    guard.finish()
