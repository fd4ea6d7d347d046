# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Thin Cython drivers for first-order Markov token models (csrc/tl_markov.h).

The backward recursion of the optimal policy runs one tilt per thread (a batch of tilts
in parallel; each tilt is computed by one thread, so results do not depend on the number
of threads), and the max-plus recursion of the lam -> inf limit.
"""
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t

import numpy as np

from tiltlab._kernels cimport *

include "_buffer.pxi"
include "_guard.pxi"
include "_isa.pxi"


def backward(const double[:, ::1] log_tr, const double[:, ::1] r, const double[::1] lam,
             int64_t length, int n_threads, bint keep_policy):
    """The backward pass (tl_markov_backward) at every tilt of ``lam`` (B,).

    Returns offset (B,), centred, m, v, kappa (B, V) and log_q (length - 1, B, V, V) (None
    without keep_policy)."""
    cdef Py_ssize_t nb = lam.shape[0], nv = log_tr.shape[0]
    cdef int64_t steps = length - 1 if length > 1 else 0
    offset = np.zeros(nb)
    centred = np.zeros((nb, nv))
    m = np.zeros((nb, nv))
    v = np.zeros((nb, nv))
    kappa = np.zeros((nb, nv))
    log_q = np.empty((steps, nb, nv, nv)) if keep_policy else None
    cdef double[::1] off_v = offset
    cdef double[:, ::1] c_v = centred, m_v = m, v_v = v, k_v = kappa
    cdef double *q_ptr = NULL
    cdef double[:, :, :, ::1] q_v
    if keep_policy and steps > 0 and nb > 0:
        q_v = log_q
        q_ptr = &q_v[0, 0, 0, 0]
    if nb == 0:
        return offset, centred, m, v, kappa, log_q
    n_threads = tl_team_size(n_threads)
    if n_threads > nb:
        n_threads = <int> nb
    cdef Py_ssize_t ws = tl_markov_work_size(nv, length)
    cdef _Buffer work = _Buffer(ws * n_threads, sizeof(double))
    cdef double *wp = <double *> work.ptr
    cdef Py_ssize_t b
    cdef Py_ssize_t q_stride = nb * nv * nv
    cdef const tl_stop_flag *stop
    cdef _Interruptible guard = _Interruptible(<double> nb * steps * nv * nv)
    stop = tl_stop_flag_here()
    for b in prange(nb, nogil=True, num_threads=n_threads, schedule='static'):
        tl_markov_backward(&log_tr[0, 0], &r[0, 0], nv, lam[b], length, &off_v[b],
                           &c_v[b, 0], &m_v[b, 0], &v_v[b, 0], &k_v[b, 0],
                           q_ptr + b * nv * nv if q_ptr != NULL else NULL, q_stride,
                           wp + threadid() * ws, stop)
    guard.finish()
    return offset, centred, m, v, kappa, log_q


def kl_max(const double[::1] log_p0, const double[::1] r0, const double[:, ::1] log_tr,
           const double[:, ::1] r, int64_t length, double tol):
    """``-log P_p(R = R_max)`` by the max-plus recursion (tl_markov_kl_max)."""
    cdef Py_ssize_t nv = log_p0.shape[0]
    cdef _Buffer work = _Buffer(4 * nv, sizeof(double))
    cdef double out
    with nogil:
        out = tl_markov_kl_max(&log_p0[0], &r0[0], &log_tr[0, 0], &r[0, 0], nv, length, tol,
                               <double *> work.ptr)
    return out
