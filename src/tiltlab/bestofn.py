"""Best-of-N on a finite outcome set, exactly (SPEC section 3).

Draw N outcomes from ``p = softmax(logits)`` and keep one of maximal reward (ties broken
uniformly).  Outcomes with p > 0 fall into reward levels ``v_1 < ... < v_L`` with masses
``m_j`` and CDF ``F_j``; the maximum lands in level j with probability
``w_j = F_j^N - F_{j-1}^N`` and the best-of-N law is ``pi_N(y) = p(y) w_j / m_j``.
tiltlab evaluates it in log space from ``N log F_j`` (with the survival ``S_j`` summed from
the top), so it is exact for any real ``N >= 1`` up to ``N = e^(10^5)`` and beyond: every
entry point takes ``n`` or ``log_n = log N``.

The law depends on the rewards only through their order; ties count as one level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _bestofn
from tiltlab import _interop as interop
from tiltlab import _validation as V
from tiltlab._common import log_n_param, size_value, small_log_n, stream_seeds
from tiltlab._rowcalls import tilt_shift

__all__ = [
    "BestOfN",
    "RewardLevels",
    "best_of_n",
    "sample_best_of_n",
    "simulate_best_of_n",
    "beirami_kl_estimate",
    "reward_levels",
]

#: draws per block of work of the samplers (any value gives the same draws)
SAMPLE_BLOCK = 65536


class RewardLevels(NamedTuple):
    """Distinct rewards of the support (ascending) and the log of their masses under p."""

    values: np.ndarray
    log_masses: np.ndarray


def _group_rows(rows: V.Rows):
    """Distinct (logits row, rewards row) pairs and the batch elements of each."""
    pairs = np.stack([rows.first_off, rows.second_off], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    gelem = np.argsort(inverse, kind="stable").astype(np.int64)
    counts = np.bincount(inverse, minlength=len(uniq))
    gstart = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (np.ascontiguousarray(uniq[:, 0]), np.ascontiguousarray(uniq[:, 1]), gstart, gelem)


def _run_law(rows: V.Rows, want_logprobs: bool, n_threads):
    nt = V.threads_for_work(rows.n_rows * rows.n_outcomes, V.n_threads_value(n_threads))
    n = rows.n_rows
    if want_logprobs:
        V.check_memory(n * rows.n_outcomes * 8,
                       f"log_probs of the batch shape {rows.batch_shape} x {rows.n_outcomes} "
                       f"outcomes")
    metrics = np.empty((n, 4), dtype=np.float64)
    logprobs = (np.empty((n, rows.n_outcomes), dtype=np.float64) if want_logprobs
                else np.empty((1, 1), dtype=np.float64))
    flags = np.zeros(n, dtype=np.int32)
    if n:
        uloff, uroff, gstart, gelem = _group_rows(rows)
        _bestofn.bon_rows(rows.first, rows.second, uloff, uroff, rows.n_outcomes, gstart,
                          gelem, rows.params["log_n"], metrics, logprobs, want_logprobs, flags,
                          nt)
    V.raise_for_flags(flags, rows)
    return metrics, (logprobs if want_logprobs else None)


@dataclass(frozen=True, eq=False)
class BestOfN:
    """The exact best-of-N policy ``pi_N`` of one or a batch of distributions.

    The attributes are arrays over the broadcast batch shape.

    Attributes
    ----------
    kl : ndarray
        ``KL(pi_N || p) = sum_j w_j log(w_j / m_j)``.
    expected_reward : ndarray
        ``E_{pi_N} r = sum_j w_j v_j``.
    win_rate : ndarray
        Probability that a best-of-N outcome beats one independent draw from p, ties
        counted 1/2: ``sum_j w_j (F_{j-1} + m_j / 2)``.
    kl_bound : ndarray
        ``log N - (N-1)/N``, the usual analytical value (an upper bound, attained only
        without atoms).
    win_rate_bound : ndarray
        ``N / (N+1)``, the win rate without ties (an upper bound).
    log_n : ndarray
        ``log N``.
    log_probs : ndarray, shape (batch..., V)
        The law ``log pi_N`` over outcomes (computed on first access).
    """

    kl: np.ndarray
    expected_reward: np.ndarray
    win_rate: np.ndarray
    kl_bound: np.ndarray
    win_rate_bound: np.ndarray
    log_n: np.ndarray
    _rows: V.Rows = field(repr=False)
    _n_threads: int | None = field(repr=False, default=None)

    def __post_init__(self):
        V.freeze(self)  # read-only arrays; its own copy of the inputs (SPEC section 1)

    @cached_property
    def log_probs(self) -> np.ndarray:
        _, lp = _run_law(self._rows, True, self._n_threads)
        return V.readonly(lp).reshape(self._rows.batch_shape + (self._rows.n_outcomes,))

    @interop.arrays("lam")
    def kl_to_tilted(self, lam: ArrayLike):
        """``KL(pi_N || phi_lam)`` by the closeness identity of SPEC section 2.

        ``KL(pi || phi_lam) = KL(pi || p) - lam (E_pi r - c) + (Lambda(lam) - lam c)``, with
        ``c`` the reward of the outcome that dominates ``phi_lam``, so that no term of the
        size of ``lam r`` enters (``lam`` up to 1.8e308).  Where the metric ``E_pi r``
        would not resolve ``E_pi r - c`` to the accuracy the result needs (large
        ``|lam r|``), ``E_pi (r - c)`` is summed over the law ``log_probs`` itself.  For
        ``lam = +-inf`` the KL is computed directly (finite only where pi_N lives on the
        argmax set).

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> b = tiltlab.best_of_n(np.log([0.5, 0.5]), [0.0, 1.0], n=4)
        >>> print(f"{b.kl_to_tilted(np.log(15)):.10f}")
        0.0000000000
        """
        from tiltlab.divergence import kl_divergence
        from tiltlab.tilting import tilt

        logits, rewards = self._rows.originals
        lam_a = V.param_array(lam, "lam")
        out_shape = np.broadcast_shapes(self._rows.batch_shape, lam_a.shape)
        lam_b = np.broadcast_to(lam_a, out_shape)
        finite = np.isfinite(lam_b)
        lam_f = np.where(finite, lam_b, 0.0)
        c, lc = (np.broadcast_to(x, out_shape) for x in
                 tilt_shift(logits, rewards, lam_f, n_threads=self._n_threads))
        kl = np.broadcast_to(self.kl, out_shape)
        er = np.broadcast_to(self.expected_reward, out_shape)
        eps = np.finfo(np.float64).eps
        with np.errstate(invalid="ignore", over="ignore"):
            value = (kl - lam_f * (er - c)) + lc
            # rounding of E_pi r (eps |E r|) and of the difference, times |lam|
            err = 4 * eps * (np.abs(lam_f) * (np.abs(er) + np.abs(c)) + np.abs(kl)
                             + np.abs(lc))
        exact = finite & ~(err <= 1e-13 * np.maximum(np.abs(value), 1.0))
        if np.any(exact):
            lp = np.broadcast_to(self.log_probs, out_shape + (self._rows.n_outcomes,))
            rw = np.broadcast_to(np.asarray(rewards, dtype=np.float64), lp.shape)
            with np.errstate(invalid="ignore", over="ignore"):
                gap = np.sum(np.where(lp > -np.inf, np.exp(lp) * (rw - c[..., None]), 0.0),
                             axis=-1)
                value = np.where(exact, (kl - lam_f * gap) + lc, value)
        value = np.where(finite, np.maximum(value, 0.0), np.nan)
        if not np.all(finite):
            lp = np.broadcast_to(self.log_probs, out_shape + (self._rows.n_outcomes,))
            direct = kl_divergence(lp, tilt(logits, rewards, lam_b))
            value = np.where(finite, value, direct)
        return value[()] if np.ndim(value) == 0 else value

    def sample(self, size: int | None = None, rng=None, n_threads: int | None = None):
        """Draws from ``pi_N`` (see :func:`sample_best_of_n`)."""
        logits, rewards = self._rows.originals
        return sample_best_of_n(logits, rewards, log_n=self.log_n, size=size, rng=rng,
                                n_threads=n_threads)


@interop.arrays("logits", "rewards", "n", "log_n")
def best_of_n(logits: ArrayLike, rewards: ArrayLike, n: ArrayLike | None = None, *,
              log_n: ArrayLike | None = None, n_threads: int | None = None) -> BestOfN:
    """The exact best-of-N law and its KL, expected reward and win rate (SPEC section 3).

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        The reference ``p = softmax(logits)`` (``-inf`` = impossible) and finite rewards.
    n : array_like, optional
        Number of draws N >= 1, real (non-integer N is the natural interpolation
        ``F^N``); broadcasts with the batch axes.  Give either ``n`` or ``log_n``.
    log_n : array_like, optional
        ``log N >= 0`` (for N beyond float range, e.g. ``log_n = 1e5``).
    n_threads : int, optional
        Threads (one per distinct row; default: all cores, honouring OMP_NUM_THREADS and
        threadpoolctl limits).  Small plain arrays with a scalar N take a fast path on the
        calling thread, with the same results.

    Returns
    -------
    BestOfN
        Metrics over the batch shape, the lazily computed ``log_probs``,
        ``kl_to_tilted(lam)`` and ``sample(size, rng)``.

    Raises
    ------
    ValueError
        Both or neither of n and log_n, N < 1, and the input errors of
        :func:`tiltlab.tilt_stats`.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> b = tiltlab.best_of_n(np.zeros(2), [0.0, 1.0], n=[2, 4, 16])
    >>> print(" ".join(f"{v:.10f}" for v in b.kl), b.win_rate[:2])
    0.1308120359 0.4593555219 0.6929626965 [0.625   0.71875]
    >>> print(f"{tiltlab.best_of_n(np.zeros(10), np.arange(10.0), log_n=1e5).kl:.10f}")
    2.3025850930
    """
    small = V.small_pair(logits, rewards)
    if small is not None:
        lg_f = small_log_n(n, log_n)
        if lg_f is not None:
            return _best_of_n_small(logits, rewards, lg_f, small, n_threads)
    lg = log_n_param(n, log_n)
    rows = V.prepare_rows(logits, rewards, {"log_n": lg})
    metrics, _ = _run_law(rows, False, n_threads)
    return _best_of_n_result(rows, metrics, n_threads)


# the serial drivers of small calls by dtype (V.small_pair admits these two only)
_BON_SMALL = {np.dtype(np.float64): _bestofn.bon_small_f64,
              np.dtype(np.float32): _bestofn.bon_small_f32}


def _best_of_n_small(logits, rewards, log_n: float, small: tuple, n_threads) -> BestOfN:
    """best_of_n of a V.small_pair with one scalar log N: the same values and errors as
    the general path, on one thread without an OpenMP region."""
    V.small_threads(n_threads)
    n_rows, n_out = small
    metrics = np.empty((n_rows, 4), dtype=np.float64)
    flags = _BON_SMALL[logits.dtype](logits.reshape(-1), rewards.reshape(-1), n_rows, n_out,
                                     log_n, metrics)
    if flags:
        V.raise_flag_bits(flags, (logits, rewards))
    return _best_of_n_result(V.small_owned_rows(logits, rewards, small, {"log_n": log_n}),
                             metrics, n_threads)


def _best_of_n_result(rows: V.Rows, metrics: np.ndarray, n_threads) -> BestOfN:
    bs = rows.batch_shape
    ln = rows.params["log_n"]
    kl_bound = ln + np.expm1(-ln)  # log N - (N-1)/N
    win_bound = 1.0 / (1.0 + np.exp(-ln))  # N / (N+1)
    return BestOfN(
        kl=V.shaped(metrics[:, 0].copy(), bs),
        expected_reward=V.shaped(metrics[:, 1].copy(), bs),
        win_rate=V.shaped(metrics[:, 2].copy(), bs),
        kl_bound=V.shaped(kl_bound, bs),
        win_rate_bound=V.shaped(win_bound, bs),
        log_n=V.shaped(ln.copy(), bs),
        _rows=rows,
        _n_threads=n_threads,
    )


@interop.arrays("logits", "rewards")
def reward_levels(logits: ArrayLike, rewards: ArrayLike):
    """Distinct rewards of the support with their log masses (SPEC section 3).

    Parameters
    ----------
    logits, rewards : array_like, shape (V,) or (..., V)

    Returns
    -------
    RewardLevels or list of RewardLevels
        ``(values, log_masses)``, values ascending; a flat list over the batch for
        batched input.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> lv = tiltlab.reward_levels(np.log([0.2, 0.5, 0.3]), [1.0, 0.0, 1.0])
    >>> lv.values, np.round(np.exp(lv.log_masses), 12)
    (array([0., 1.]), array([0.5, 0.5]))
    """
    rows = V.prepare_rows(logits, rewards)
    out = []
    flags = np.zeros(rows.n_rows, dtype=np.int32)
    for i in range(rows.n_rows):
        fl, values, log_mass = _bestofn.reward_levels_row(
            rows.first, rows.second, int(rows.first_off[i]), int(rows.second_off[i]),
            rows.n_outcomes)
        flags[i] = fl
        out.append(RewardLevels(values, log_mass))
    V.raise_for_flags(flags, rows)
    return out[0] if rows.batch_shape == () else out


def _draw_exact_rows(first, second, loff, roff, n_out, log_n, draws, seeds, out, flags, exact,
                     n_threads) -> int:
    """The rows marked ``exact`` by _bestofn.draw_rows drawn again by the alias-table path
    (their own streams); returns the number of rows without a table (0 unless a bug)."""
    idx = np.flatnonzero(exact)
    if not len(idx):
        return 0
    sub = np.empty((len(idx), draws), dtype=np.int64)
    sub_flags = np.zeros(len(idx), dtype=np.int32)
    failed = _bestofn.sample_rows(first, second, np.ascontiguousarray(loff[idx]),
                                  np.ascontiguousarray(roff[idx]), n_out,
                                  np.ascontiguousarray(log_n[idx]),
                                  np.ones(len(idx), dtype=np.int64), False, draws, SAMPLE_BLOCK,
                                  np.ascontiguousarray(seeds[idx]), sub, sub_flags,
                                  V.threads_for_blocks(len(idx), n_threads))
    out[idx, :draws] = sub
    flags[idx] = sub_flags
    return failed


def _sample(rows: V.Rows, naive: bool, n_candidates, size, rng, n_threads):
    nt = V.n_threads_value(n_threads)
    if rows.n_outcomes > np.iinfo(np.int32).max:
        raise ValueError(f"the samplers support up to {np.iinfo(np.int32).max} outcomes per "
                         f"row; got {rows.n_outcomes}")
    draws = 1 if size is None else size
    n_el = rows.n_rows
    V.check_memory(n_el * max(draws, 1) * 8,
                   f"size={size} draws for each of the {n_el} rows of the batch shape "
                   f"{rows.batch_shape}")
    out = np.empty((n_el, max(draws, 1)), dtype=np.int64)
    flags = np.zeros(n_el, dtype=np.int32)
    failed = 0
    k = max(draws, 1)  # size 0 still reads every row once: the errors of any other size
    if n_el and not naive and k <= _bestofn.DRAW_MAX:
        # a few draws per row: one pass over each row, rows in parallel
        seeds = stream_seeds(rng, n_el)
        exact = np.zeros(n_el, dtype=np.uint8)
        log_n = rows.params["log_n"]
        nt_draw = V.threads_for_work(n_el * rows.n_outcomes, nt)
        V.check_memory(nt_draw * _bestofn.draw_scratch_bytes(rows.n_outcomes),
                       f"the draws' work space for rows of {rows.n_outcomes} outcomes on "
                       f"{nt_draw} threads")
        _bestofn.draw_rows(rows.first, rows.second, rows.first_off, rows.second_off,
                           rows.n_outcomes, log_n, k, seeds, out, flags, exact, nt_draw)
        V.raise_for_flags(flags, rows)
        failed = _draw_exact_rows(rows.first, rows.second, rows.first_off, rows.second_off,
                                  rows.n_outcomes, log_n, k, seeds, out, flags, exact, nt)
    elif n_el:
        # the blocks of draws are the parallel work: no more threads than blocks
        blocks = -(-k // SAMPLE_BLOCK)
        failed = _bestofn.sample_rows(rows.first, rows.second, rows.first_off,
                                      rows.second_off, rows.n_outcomes, rows.params["log_n"],
                                      n_candidates, naive, k, SAMPLE_BLOCK,
                                      stream_seeds(rng, n_el), out, flags,
                                      V.threads_for_blocks(n_el * blocks, nt))
    V.raise_for_flags(flags, rows)
    if failed:
        raise RuntimeError(f"tiltlab: internal error: no sampling table for {failed} rows")
    out = out[:, :draws]
    if size is None:
        return V.shaped(out[:, 0].copy(), rows.batch_shape)
    return out.reshape(rows.batch_shape + (draws,))


@interop.arrays("logits", "rewards", "n", "log_n")
def sample_best_of_n(logits: ArrayLike, rewards: ArrayLike, n: ArrayLike | None = None, *,
                     log_n: ArrayLike | None = None, size: int | None = None, rng=None,
                     n_threads: int | None = None):
    """Outcome indices drawn from the best-of-N law by the order statistic (SPEC section 3).

    The maximum of N draws falls in reward level j with probability
    ``w_j = F_j^N - F_{j-1}^N`` and is, within the level, an outcome drawn from p restricted
    to it: ``pi_N(y) = p(y) w_j / m_j``, at a cost per draw that does not depend on N.  Two
    routes, chosen by ``size`` (and, for a few rows, the data), never by the number of
    threads or the SIMD variant:

    * a few draws per row (``size`` None or at most 16): one pass over each row, rows in
      parallel.  A draw's level is the lowest one whose survival ``P_p(r > v)`` is at most
      ``t = 1 - U^(1/N)`` (a weighted quantile of the rewards, found through a histogram of
      the weights ``e^(l - max l)`` by reward bins, without sorting the row), and the
      outcome within it is drawn with probability ``p(y) / m_j`` by a second uniform; draw d
      reads words 2d and 2d + 1 of the stream.  Rows whose finite logits span more than 708
      nats with ``log N > 600`` take the second route (their tail weights are below the
      double range of the one-pass weights).
    * more draws: ``pi_N`` laid out once per row as one alias table over the outcomes of
      positive weight; draw d takes word d of the stream and one table lookup.

    Every batch element draws from its own PCG64 stream (NumPy's generator, seeded from
    ``rng``): same seed, same draws, whatever the number of threads or the SIMD variant, and
    a shorter run is a prefix of a longer one on the same route (both at most 16 draws, or
    both more).  (Changed: earlier versions drew ``size`` None and up to 16 draws per row
    through the alias table too: for those sizes the draws of a given seed differ from
    theirs; the law is the same.  Earlier still, the level was drawn by a guide table, with
    one or two words per draw from a bit generator per block of draws.)

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`best_of_n`.
    n, log_n : array_like
        N (real, >= 1) or log N; exactly one.
    size : int, optional
        Draws per batch element (None: one draw, and no trailing axis).
    rng : None, int or numpy.random.Generator
        Source of randomness (NumPy convention).
    n_threads : int, optional
        Threads: for at most 16 draws per row, rows in parallel (a batch of fewer than 2^17
        elements on the calling thread); for more, the draws of a row are split into blocks
        of 65536, at most one thread per block (a single block runs on the calling thread).

    Returns
    -------
    ndarray of int64, shape (batch...,) or (batch..., size)
        Indices into the last axis.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> y = tiltlab.sample_best_of_n(np.zeros(3), [0.0, 1.0, 2.0], log_n=50, size=5, rng=0)
    >>> y.tolist()
    [2, 2, 2, 2, 2]
    """
    small = V.small_pair(logits, rewards)
    if small is not None and (size is None or (type(size) is int and 0 <= size <= SAMPLE_BLOCK)):
        lg_f = small_log_n(n, log_n)
        if lg_f is not None:
            return _sample_small(logits, rewards, lg_f, small, size, rng, n_threads)
    lg = log_n_param(n, log_n)
    size = size_value(size)
    rows = V.prepare_rows(logits, rewards, {"log_n": lg})
    cand = np.ones(rows.n_rows, dtype=np.int64)
    return _sample(rows, False, cand, size, rng, n_threads)


def _sample_small(logits, rewards, log_n: float, small: tuple, size, rng, n_threads):
    """sample_best_of_n of a V.small_pair with one scalar log N and at most one block of
    draws per row: the same draws and errors as the general path, on one thread."""
    V.small_threads(n_threads)
    n_rows, n_out = small
    draws = 1 if size is None else size
    out = np.empty((n_rows, max(draws, 1)), dtype=np.int64)
    k = max(draws, 1)  # size 0 still reads every row once: the errors of any other size
    flags = np.zeros(n_rows, dtype=np.int32)
    off = np.arange(0, n_rows * n_out, n_out, dtype=np.int64)
    lg, rw = logits.reshape(-1), rewards.reshape(-1)
    log_ns = np.full(n_rows, log_n)
    seeds = stream_seeds(rng, n_rows)
    if k <= _bestofn.DRAW_MAX:
        exact = np.zeros(n_rows, dtype=np.uint8)
        _bestofn.draw_rows(lg, rw, off, off, n_out, log_ns, k, seeds, out, flags, exact,
                           1)
        if flags.any():
            V.raise_flag_bits(int(np.bitwise_or.reduce(flags)), (logits, rewards))
        failed = _draw_exact_rows(lg, rw, off, off, n_out, log_ns, k, seeds, out, flags,
                                  exact, 1)
    else:
        failed = _bestofn.sample_rows(lg, rw, off, off, n_out, log_ns,
                                      np.ones(n_rows, dtype=np.int64), False, k,
                                      SAMPLE_BLOCK, seeds, out, flags, 1)
    if flags.any():
        V.raise_flag_bits(int(np.bitwise_or.reduce(flags)), (logits, rewards))
    if failed:
        raise RuntimeError(f"tiltlab: internal error: no sampling table for {failed} rows")
    bs = logits.shape[:-1]
    if size is None:
        return V.shaped(out[:, 0].copy(), bs)
    return out[:, :draws].reshape(bs + (draws,))


@interop.arrays("logits", "rewards", "n")
def simulate_best_of_n(logits: ArrayLike, rewards: ArrayLike, n: ArrayLike, *,
                       size: int | None = None, rng=None, n_threads: int | None = None):
    """Naive best-of-N Monte Carlo: n candidates from p per sample, first maximum kept.

    The independent check of the exact law (and what large-sample scripts run): each
    sample costs ``n`` draws from an alias table over p (O(1) each, one 64-bit random word
    each: sample d uses words ``d n .. d n + n - 1`` of the batch element's PCG64 stream, so
    the draws do not depend on the number of threads).  Integer ``n`` only; use
    :func:`sample_best_of_n` for real or astronomically large N.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`best_of_n`.
    n : int or array_like of int
        Candidates per sample (>= 1).
    size, rng, n_threads
        As in :func:`sample_best_of_n`.

    Returns
    -------
    ndarray of int64, shape (batch...,) or (batch..., size)

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> y = tiltlab.simulate_best_of_n(np.zeros(4), [0.0, 1.0, 1.0, 0.5], 8, size=10, rng=1)
    >>> sorted(set(y.tolist()) - {1, 2})
    []
    """
    n_arr = V.param_array(n, "n", allow_inf=False)
    if np.any(n_arr != np.round(n_arr)):
        bad = n_arr[n_arr != np.round(n_arr)].flat[0]
        raise ValueError(f"n must be an integer for the naive sampler; got {bad!r} "
                         "(sample_best_of_n draws from the exact law for real N)")
    if np.any(n_arr < 1):
        raise ValueError(f"n must be >= 1; got {n_arr[n_arr < 1].flat[0]!r}")
    if np.any(n_arr >= 2.0**63):
        raise ValueError(f"n must be below 2^63 for the naive sampler (n draws per sample); "
                         f"got {n_arr[n_arr >= 2.0**63].flat[0]!r} (sample_best_of_n draws "
                         f"from the exact law for any N)")
    size = size_value(size)
    rows = V.prepare_rows(logits, rewards, {"log_n": np.log(n_arr)})
    cand = np.ascontiguousarray(
        np.broadcast_to(n_arr, rows.batch_shape).reshape(-1).astype(np.int64))
    return _sample(rows, True, cand, size, rng, n_threads)


@interop.arrays("eps", "n")
def beirami_kl_estimate(eps: ArrayLike, n: ArrayLike):
    """Beirami et al.'s KL of best-of-N for a reward law with one top atom (SPEC section 3).

    ``D(eps) = (1-eps)^N (log N + (N-1) log(1-eps) - (N-1)/N)
    + (1 - (1-eps)^N) log((1 - (1-eps)^N) / eps)``: the exact KL when the reward is
    continuous except for one top atom of mass ``eps``; ``eps -> 0`` gives
    ``log N - (N-1)/N``.

    Parameters
    ----------
    eps : array_like
        Mass of the top atom, in (0, 1].
    n : array_like
        N >= 1.

    Returns
    -------
    ndarray or float

    Examples
    --------
    >>> import tiltlab
    >>> print(f"{tiltlab.beirami_kl_estimate(1e-12, 16):.10f}")
    1.8350887222
    """
    e = V.param_array(eps, "eps", allow_inf=False)
    nn = V.param_array(n, "n")
    if np.any((e <= 0) | (e > 1)):
        raise ValueError("eps must be in (0, 1]")
    if np.any(nn < 1):
        raise ValueError("n must be >= 1")
    try:
        np.broadcast_shapes(e.shape, nn.shape)
    except ValueError:
        raise ValueError(f"cannot broadcast eps of shape {e.shape} with n of shape "
                         f"{nn.shape}") from None
    with np.errstate(divide="ignore", invalid="ignore"):
        log1m = np.log1p(-e)
        nlog = nn * log1m
        q = np.exp(nlog)  # (1 - eps)^N
        one_minus_q = -np.expm1(nlog)
        head = np.where(q > 0, q * (np.log(nn) + (nn - 1) * log1m - (nn - 1) / nn), 0.0)
        tail = one_minus_q * (np.log(one_minus_q) - np.log(e))
        out = head + tail
    return out[()] if np.ndim(out) == 0 else out
