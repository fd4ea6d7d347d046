# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Thin Cython drivers for memoryless sequences on a reward lattice (csrc/tl_lattice.h).

The lattice law itself is assembled in tiltlab.sequences from FFT convolutions; these
drivers run the per-lattice-point and per-sample loops: the level law of best-of-N on the
lattice (the finite-outcome kernel of csrc/tl_bon.h with levels = lattice points), the
order-statistic reward sampler and the conditional sequence sampler.  Draws are split
into fixed blocks, each with its own bit generator, so results do not depend on the
number of threads.
"""
from cython.parallel cimport prange
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int32_t, int64_t, uint64_t

import numpy as np

from tiltlab._kernels cimport *

include "_buffer.pxi"
include "_guard.pxi"
include "_isa.pxi"

SEG_NODE_DTYPE = np.dtype([
    ("left", np.int64), ("right", np.int64), ("pos", np.int64), ("row", np.int64),
    ("lo", np.int64), ("len", np.int64), ("off", np.int64),
    ("c0", np.float64), ("ratio", np.float64), ("zfac", np.float64),
])
SLOT_DTYPE = np.dtype([("prob", np.float64), ("here", np.int32), ("alias", np.int32)])
assert SEG_NODE_DTYPE.itemsize == sizeof(tl_seg_node)
assert SLOT_DTYPE.itemsize == sizeof(tl_alias_slot)


def level_law(const double[::1] values, const double[::1] log_mass, double log_n, bint full,
              double[::1] log_w, double[::1] a):
    """Best-of-N level law on sorted levels (tl_bon_law); returns (kl, E r, win rate, mass)."""
    cdef Py_ssize_t L = values.shape[0]
    cdef tl_bon_metrics m
    cdef _Buffer work = _Buffer(3 * L, sizeof(double))
    cdef double *w = <double *> work.ptr
    cdef const tl_stop_flag *stop
    cdef _Interruptible guard = _Interruptible(<double> L * 16)  # ~150 ns per level
    with nogil:
        stop = tl_stop_flag_here()
        tl_bon_law(&values[0], &log_mass[0], L, log_n, w, w + L, w + 2 * L, &a[0], &log_w[0],
                   full, &m, stop)
    guard.finish()
    return m.kl, m.expected_reward, m.win_rate, m.total_mass


def level_guide(const double[::1] a, double[::1] cdf, int64_t[::1] guide):
    """Inverse-CDF guide table of F^N over the levels (tl_bon_guide)."""
    with nogil:
        tl_bon_guide(&a[0], a.shape[0], &cdf[0], &guide[0], a.shape[0])


def token_slots(const double[::1] logits, const int64_t[::1] order, const int64_t[::1] start,
                const int64_t[::1] token, slots_out):
    """Alias slots over p restricted to each level: level j owns positions start[j] ..
    start[j+1] of `order` (indices into `logits`); the slots carry token[i] for position i."""
    cdef Py_ssize_t L = start.shape[0] - 1
    cdef Py_ssize_t ns = order.shape[0]
    cdef Py_ssize_t big = 1, j
    for j in range(L):
        if start[j + 1] - start[j] > big:
            big = start[j + 1] - start[j]
    cdef unsigned char[::1] so = slots_out.view(np.uint8).reshape(-1)
    cdef _Buffer prob_b = _Buffer(ns, sizeof(double))
    cdef _Buffer alias_b = _Buffer(ns, sizeof(int64_t))
    cdef _Buffer scratch_b = _Buffer(big, sizeof(double))
    cdef _Buffer small_b = _Buffer(big, sizeof(int64_t))
    cdef _Buffer large_b = _Buffer(big, sizeof(int64_t))
    with nogil:
        tl_level_alias_f64(&logits[0], &order[0], &start[0], L, <double *> prob_b.ptr,
                           <int64_t *> alias_b.ptr, <double *> scratch_b.ptr,
                           <int64_t *> small_b.ptr, <int64_t *> large_b.ptr)
        tl_pack_outcomes(<double *> prob_b.ptr, <int64_t *> alias_b.ptr, &token[0], ns,
                         <tl_alias_slot *> &so[0])


cdef bitgen_t **_bitgens(list bit_generators, _Buffer holder):
    cdef bitgen_t **gens = <bitgen_t **> holder.ptr
    cdef Py_ssize_t b
    for b in range(len(bit_generators)):
        gens[b] = <bitgen_t *> PyCapsule_GetPointer(bit_generators[b].capsule, "BitGenerator")
    return gens


cdef inline int64_t _draw_sum(bitgen_t *rng, const double *cdf, const int64_t *guide,
                              Py_ssize_t K, const int64_t *level_sum) noexcept nogil:
    """The lattice sum of the level of the maximum (order statistic).  Levels with
    level_sum < 0 stand for the mass below the window (< 1e-14) and are redrawn, a bounded
    number of times; -1 if that bound is hit."""
    cdef int64_t k = -1
    cdef int tries = 0
    while k < 0 and tries < 1000:
        k = level_sum[tl_level_draw(rng, cdf, guide, K)]
        tries += 1
    return k


def sample_sums(const double[::1] cdf, const int64_t[::1] guide, const int64_t[::1] level_sum,
                int64_t size, int64_t block, list bit_generators, int64_t[::1] out,
                int n_threads):
    """out[:size] = lattice sums of best-of-N rewards; block b of the draws uses
    bit_generators[b].  Returns the number of failed draws (0 unless there is a bug)."""
    cdef int64_t n_blocks = (size + block - 1) // block if size > 0 else 0
    cdef Py_ssize_t b
    cdef int64_t count, d
    cdef int64_t failures = 0
    cdef Py_ssize_t K = cdf.shape[0]
    cdef const tl_stop_flag *stop
    if n_blocks == 0:
        return 0
    if len(bit_generators) != n_blocks:
        raise ValueError("internal: wrong number of bit generators")
    cdef _Buffer holder = _Buffer(n_blocks, sizeof(bitgen_t *))
    cdef bitgen_t **gens = _bitgens(bit_generators, holder)
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> size)
    stop = tl_stop_flag_here()
    for b in prange(n_blocks, nogil=True, num_threads=n_threads, schedule='static'):
        if tl_stop_requested(stop):
            continue
        count = size - b * block if size - b * block < block else block
        for d in range(b * block, b * block + count):
            out[d] = _draw_sum(gens[b], &cdf[0], &guide[0], K, &level_sum[0])
            if out[d] < 0:
                failures += 1
    guard.finish()
    return failures


def sample_sequences(nodes, int64_t root, const double[::1] vals,
                     const int64_t[::1] ls_off, const int64_t[::1] level_start,
                     const int64_t[::1] slot_off, slots,
                     const double[::1] cdf, const int64_t[::1] guide,
                     const int64_t[::1] level_sum, int64_t size, int64_t block,
                     list bit_generators, int32_t[:, ::1] out, int64_t[::1] out_sum,
                     int n_threads):
    """Best-of-N sequences: per draw, the lattice sum of the maximum (_draw_sum), then the
    tokens given that total (tl_seg_sample).  Returns the number of
    draws the tree could not serve (0 unless there is a bug)."""
    cdef int64_t n_blocks = (size + block - 1) // block if size > 0 else 0
    cdef Py_ssize_t b
    cdef int64_t count, d, k
    cdef int st
    cdef int64_t failures = 0
    cdef Py_ssize_t K = cdf.shape[0]
    cdef const unsigned char[::1] nb = nodes.view(np.uint8).reshape(-1)
    cdef const unsigned char[::1] sb = slots.view(np.uint8).reshape(-1)
    cdef tl_token_tables tt
    if n_blocks == 0:
        return 0
    if len(bit_generators) != n_blocks:
        raise ValueError("internal: wrong number of bit generators")
    tt.ls_off = &ls_off[0]
    tt.level_start = &level_start[0]
    tt.slot_off = &slot_off[0]
    tt.slots = <const tl_alias_slot *> &sb[0]
    cdef const tl_seg_node *np_ = <const tl_seg_node *> &nb[0]
    cdef _Buffer holder = _Buffer(n_blocks, sizeof(bitgen_t *))
    cdef bitgen_t **gens = _bitgens(bit_generators, holder)
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> size * out.shape[1])
    stop = tl_stop_flag_here()
    for b in prange(n_blocks, nogil=True, num_threads=n_threads, schedule='dynamic'):
        if tl_stop_requested(stop):  # a block is a bounded number of tokens
            continue
        count = size - b * block if size - b * block < block else block
        for d in range(b * block, b * block + count):
            k = _draw_sum(gens[b], &cdf[0], &guide[0], K, &level_sum[0])
            out_sum[d] = k
            if k < 0:
                failures += 1
                continue
            st = tl_seg_sample(gens[b], np_, root, &vals[0], k, &tt, &out[d, 0])
            if st != 0:
                failures += 1
    guard.finish()
    return failures


SOFT_R = TL_SOFT_R


def _soft_exps(const double[::1] x):
    """e^x as an array if every |x| < 700 (normal results), else None."""
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        if not (-700.0 < x[i] < 700.0):
            return None
    return np.exp(np.asarray(x))


def soft_nodes(const double[::1] u, const int64_t[::1] bon, const int64_t[::1] boff,
               const double[::1] c, const double[::1] m0, const double[::1] P,
               double[::1] d, double[::1] md, int n_threads):
    """Soft best-of-n: active-bin sums at the quadrature nodes (tl_soft_nodes)."""
    cdef Py_ssize_t G = u.shape[0], ch, nchunk, CH = 2
    if G == 0 or c.shape[0] == 0:
        return
    ec_arr = _soft_exps(c)
    cdef const double[::1] ec
    cdef const double *ec_p = NULL
    if ec_arr is not None:
        ec = ec_arr
        ec_p = &ec[0]
    nchunk = (G + CH - 1) // CH
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> G * c.shape[0])
    stop = tl_stop_flag_here()
    for ch in prange(nchunk, nogil=True, num_threads=n_threads, schedule="dynamic"):
        if tl_stop_requested(stop):
            continue
        tl_soft_nodes(&u[0], &bon[0], &boff[0], ch * CH, min((ch + 1) * CH, G), &c[0], ec_p,
                      &m0[0], &P[0], &d[0], &md[0])
    guard.finish()


def soft_bins(const double[::1] u, const double[::1] logA, const int64_t[::1] wlo,
              const int64_t[::1] whi, const double[::1] c, double[::1] mx, double[::1] U,
              int n_threads):
    """Soft best-of-n: per-bin maxima and power sums over their windows (tl_soft_bins)."""
    cdef Py_ssize_t B = c.shape[0], ch, nchunk, CH = 16
    if B == 0 or u.shape[0] == 0:
        return
    ec_arr = _soft_exps(c)
    eu_arr = _soft_exps(u)
    cdef const double[::1] ec
    cdef const double[::1] eu
    cdef const double *ec_p = NULL
    cdef const double *eu_p = NULL
    if ec_arr is not None and eu_arr is not None:
        ec = ec_arr
        eu = eu_arr
        ec_p = &ec[0]
        eu_p = &eu[0]
    nchunk = (B + CH - 1) // CH
    cdef const tl_stop_flag *stop
    n_threads = tl_team_size(n_threads)
    cdef _Interruptible guard = _Interruptible(<double> B * u.shape[0])
    stop = tl_stop_flag_here()
    for ch in prange(nchunk, nogil=True, num_threads=n_threads, schedule="dynamic"):
        if tl_stop_requested(stop):
            continue
        tl_soft_bins(&u[0], eu_p, &logA[0], &wlo[0], &whi[0], &c[0], ec_p, ch * CH,
                     min((ch + 1) * CH, B), &mx[0], &U[0])
    guard.finish()
