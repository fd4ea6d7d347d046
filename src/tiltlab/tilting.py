"""The optimal KL-constrained policy: exponential tilting of one distribution (SPEC section 2).

For a distribution ``p = softmax(logits)`` over outcomes with rewards ``r`` and a tilt
``lam`` (the inverse temperature; ``lam = 1/beta`` for the objective ``E r - beta KL``):

- cumulant generating function ``Lambda(lam) = log sum_y p(y) exp(lam r(y))``
- tilted policy ``phi_lam(y) = p(y) exp(lam r(y) - Lambda(lam))``
- ``mean = Lambda'``, ``variance = Lambda''``, ``kl = KL(phi_lam || p) = lam mean - Lambda``

Every function broadcasts the leading (batch) axes of ``logits``, ``rewards`` and its
scalar parameters NumPy-style; outcomes are on the last axis.  float32 inputs are
computed in float64 and their results rounded to float32 once; CPU torch tensors are
accepted and give torch tensors (SPEC section 1).  ``lam`` may be ``+inf`` or ``-inf`` (the
limits: ``p`` restricted to the outcomes of maximal / minimal reward).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _core
from tiltlab import _interop as interop
from tiltlab import _validation as V
from tiltlab._rowcalls import kernel_call, row_info

__all__ = [
    "TiltStats",
    "tilt_stats",
    "tilt",
    "solve_lambda",
    "kl_max",
    "frontier",
    "cumulants",
]


class TiltStats(NamedTuple):
    """Statistics of the tilted policy ``phi_lam`` (arrays over the batch shape).

    Attributes
    ----------
    log_partition : ndarray
        ``Lambda(lam) = log E_p exp(lam r)``, relative to the normalised ``p``.
    mean : ndarray
        ``E_phi r = Lambda'(lam)``.
    variance : ndarray
        ``Var_phi r = Lambda''(lam)``.
    kl : ndarray
        ``KL(phi_lam || p) = lam * mean - Lambda(lam)`` in nats.
    """

    log_partition: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    kl: np.ndarray


@interop.arrays("logits", "rewards", "lam")
def tilt_stats(logits: ArrayLike, rewards: ArrayLike, lam: ArrayLike, *,
               n_threads: int | None = None) -> TiltStats:
    """Log partition, mean, variance and KL of the tilted policy (SPEC section 2).

    Computes ``Lambda(lam)``, ``E_phi r``, ``Var_phi r`` and ``KL(phi_lam || p)`` for
    ``phi_lam = p exp(lam r - Lambda(lam))``, ``p = softmax(logits)``, in one fused pass
    over each row (running maximum, weighted centred sums).  As ``lam -> 0`` the KL keeps
    its relative accuracy (the partition function is accumulated as ``1 + sum p expm1(...)``).
    Exact at any logit offset and reward scale (SPEC section 1): logits are read relative to
    the dominant outcome, rewards in units of a power of two of their range, and ``lam``
    may be any double (a value beyond the double range, such as the variance of rewards
    spread over 1e300, is ``inf``).

    Parameters
    ----------
    logits : array_like, shape (..., V)
        Unnormalised log-probabilities; ``-inf`` marks an impossible outcome.
    rewards : array_like, shape (..., V)
        Finite rewards (also where the logit is ``-inf``).
    lam : array_like
        Tilt, any real or ``+-inf``; broadcasts with the batch axes.
    n_threads : int, optional
        Threads for the compiled kernel (default: all cores, honouring OMP_NUM_THREADS and
        threadpoolctl limits).  Inputs of fewer than 2^17 elements run on the calling thread
        whatever it says; small plain arrays (one float64/float32 dtype, 1-d or 2-d,
        C-contiguous) take a fast path of a few microseconds with the same results.

    Returns
    -------
    TiltStats
        Named tuple ``(log_partition, mean, variance, kl)`` of float64 arrays with the
        broadcast batch shape (NumPy scalars for a single row); float32 for float32
        inputs, torch tensors for tensor inputs (SPEC section 1).

    Raises
    ------
    ValueError
        NaN or +inf logits, a row of all ``-inf``, non-finite rewards, NaN ``lam``, or
        shapes that do not broadcast.
    TypeError
        Complex or non-numeric inputs.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> s = tiltlab.tilt_stats(np.log([0.7, 0.3]), [0.0, 1.0], 1.0)
    >>> print(f"{s.log_partition:.10f} {s.mean:.10f} {s.kl:.10f}")
    0.4157352218 0.5381015262 0.1223663044
    """
    small = V.small_pair(logits, rewards)
    if small is not None:
        lam_f = V.small_scalar(lam)
        if lam_f is not None:
            return _tilt_stats_small(logits, rewards, lam_f, small, n_threads)
    lam_a = V.param_array(lam, "lam")
    rows = V.prepare_rows(logits, rewards, {"lam": lam_a}, row_bytes=8 * 9)
    nt = V.n_threads_value(n_threads)
    out = np.empty((rows.n_rows, 5), dtype=np.float64)
    kernel_call(_core.tilt_rows, rows, rows.params["lam"], out, n_threads=nt)
    bs = rows.batch_shape
    return TiltStats(
        V.shaped(out[:, 0].copy(), bs),
        V.shaped(out[:, 1].copy(), bs),
        V.shaped(out[:, 2].copy(), bs),
        V.shaped(out[:, 3].copy(), bs),
    )


# the serial drivers of small calls by dtype (V.small_pair admits these two only)
_TILT_SMALL = {np.dtype(np.float64): _core.tilt_small_f64,
               np.dtype(np.float32): _core.tilt_small_f32}


def _tilt_stats_small(logits, rewards, lam: float, small: tuple, n_threads) -> TiltStats:
    """tilt_stats of a V.small_pair at a finite scalar lam: the same values and errors as
    the general path, without its layout work and without an OpenMP region."""
    V.small_threads(n_threads)
    n_rows, n_out = small
    out = np.empty((4, n_rows), dtype=np.float64)
    if logits.ndim == 1:
        flags = _TILT_SMALL[logits.dtype](logits, rewards, 1, n_out, lam, out)
        if flags:
            V.raise_flag_bits(flags, (logits, rewards))
        return TiltStats(out[0, 0], out[1, 0], out[2, 0], out[3, 0])
    flags = _TILT_SMALL[logits.dtype](logits.reshape(-1), rewards.reshape(-1), n_rows, n_out,
                                      lam, out)
    if flags:
        V.raise_flag_bits(flags, (logits, rewards))
    return TiltStats(out[0], out[1], out[2], out[3])


@interop.arrays("logits", "rewards", "lam")
def tilt(logits: ArrayLike, rewards: ArrayLike, lam: ArrayLike, *,
         n_threads: int | None = None) -> np.ndarray:
    """Normalised log-probabilities of the tilted policy ``phi_lam`` (SPEC section 2).

    ``log phi_lam(y) = log p(y) + lam r(y) - Lambda(lam)``; for ``lam = +inf`` (``-inf``)
    the limit: ``log p`` renormalised on the outcomes of maximal (minimal) reward,
    ``-inf`` elsewhere.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tilt_stats`.
    lam : array_like
        Tilt per batch element.
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray, shape (batch..., V)
        float64 log-probabilities; each row log-sum-exps to 0.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> np.exp(tiltlab.tilt(np.log([0.7, 0.3]), [0.0, 1.0], np.log(7 / 3)))
    array([0.5, 0.5])
    """
    lam_a = V.param_array(lam, "lam")
    rows = V.prepare_rows(logits, rewards, {"lam": lam_a}, outcome_bytes=8)
    nt = V.n_threads_value(n_threads)
    out = np.empty((rows.n_rows, rows.n_outcomes), dtype=np.float64)
    kernel_call(_core.tilt_logprobs_rows, rows, rows.params["lam"], out, n_threads=nt)
    return out.reshape(rows.batch_shape + (rows.n_outcomes,))


@interop.arrays("logits", "rewards")
def kl_max(logits: ArrayLike, rewards: ArrayLike, *, n_threads: int | None = None):
    """Largest KL a tilt can reach: ``-log p(argmax set)`` (SPEC section 2).

    It is ``KL(phi_inf || p)``, where ``phi_inf`` is ``p`` restricted to the outcomes of
    maximal reward.  Budgets at or above it give ``lam = inf`` in :func:`solve_lambda`.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tilt_stats`.
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray or float
        One value per batch element.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> print(f"{tiltlab.kl_max(np.log([0.7, 0.3]), [0.0, 1.0]):.10f}")
    1.2039728043
    """
    rows, out = row_info(logits, rewards, n_threads)
    return V.shaped(-out[:, 4], rows.batch_shape)


# statuses of the compiled solver (csrc/tl_solve.h)
_OVERFLOW, _UNDERFLOW = 2, 3


def _solve(logits, rewards, kl, joint, n_threads):
    """Solve for lam; returns (rows, lam per row, passes over the data per row)."""
    kl_a = V.nonnegative_param(kl, "kl")
    if joint:
        if kl_a.size != 1:
            raise ValueError(
                f"with joint=True, kl is the total budget over all rows and must be a "
                f"scalar; got shape {kl_a.shape}"
            )
        rows = V.prepare_rows(logits, rewards, {"kl": kl_a.reshape(())})
        if rows.n_rows == 0:
            raise ValueError("joint=True needs at least one row; the batch is empty")
    else:
        rows = V.prepare_rows(logits, rewards, {"kl": kl_a})
    nt = V.n_threads_value(n_threads)
    lam = np.empty(rows.n_rows, dtype=np.float64)
    passes = np.zeros(rows.n_rows, dtype=np.int32)
    converged = np.ones(rows.n_rows, dtype=np.int32)
    kernel_call(_core.solve_rows, rows, rows.params["kl"], bool(joint), lam, passes,
                 converged, n_threads=nt)
    for status, side, bound in ((_OVERFLOW, "above", "the largest float64, 1.8e308"),
                                (_UNDERFLOW, "below", "the smallest normal float64, 2.2e-308")):
        out = converged == status
        if np.any(out):
            at = int(np.flatnonzero(out)[0])
            where = "" if joint or rows.batch_shape == () else \
                f" at batch index {V.index_str(np.unravel_index(at, rows.batch_shape))}"
            budget = float(rows.params["kl"][at])
            raise ValueError(
                f"solve_lambda: the tilt lam with kl(lam) = {budget!r}{where} is {side} "
                f"{bound}, so it has no float64 value; lam scales as 1 / reward: rescale the "
                f"rewards (e.g. divide them by their range) and scale the returned lam back")
    if not np.all(converged):
        warnings.warn(
            f"solve_lambda: {int(np.sum(converged == 0))} of {converged.size} solves stopped "
            f"at the iteration limit; their lam is the best bracketed value",
            RuntimeWarning, stacklevel=3)
    return rows, lam, passes


@interop.arrays("logits", "rewards", "kl")
def solve_lambda(logits: ArrayLike, rewards: ArrayLike, kl: ArrayLike, *, joint: bool = False,
                 n_threads: int | None = None):
    """The tilt ``lam >= 0`` of the optimal policy at a KL budget (SPEC section 2).

    For ``0 <= kl < kl_max`` the maximiser of ``E_phi r`` subject to
    ``KL(phi || p) <= kl`` is ``phi_lam`` with ``KL(phi_lam || p) = kl``; this returns
    that unique ``lam`` (safeguarded Newton with derivative ``lam * variance``, typically
    fewer than 10 passes over the data, bounded for any input).  For ``kl >= kl_max`` it
    returns ``inf``.  The iteration sees the rewards in units of their range, so the root
    is found to 1e-12 relative in KL at any reward scale (1e-300 .. 1e300, subnormal
    spreads included) -- or, where ``lam`` itself has no float64 value (above 1.8e308, or
    below the smallest normal double, 2.2e-308), a ValueError says so.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tilt_stats`.
    kl : array_like
        Budget in nats, ``>= 0`` (``inf`` allowed); broadcasts with the batch axes.
    joint : bool, default False
        If True, one common ``lam`` for all rows whose KLs sum to the scalar ``kl`` (a
        memoryless sequence with one row per position, SPEC section 4).
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray or float
        ``lam`` per batch element; a float with ``joint=True``.

    Raises
    ------
    ValueError
        Negative or NaN ``kl``, non-scalar ``kl`` with ``joint=True``, a root ``lam``
        outside the float64 range (rescale the rewards: ``lam`` scales as 1 / reward), and
        the input errors of :func:`tilt_stats`.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> print(f"{tiltlab.solve_lambda(np.log([0.7, 0.3]), [0.0, 1.0], 0.1):.10f}")
    0.9058310508
    """
    rows, lam, _ = _solve(logits, rewards, kl, joint, n_threads)
    if joint:
        return float(lam[0])
    return V.shaped(lam, rows.batch_shape)


@interop.arrays("logits", "rewards", "kl")
def frontier(logits: ArrayLike, rewards: ArrayLike, kl: ArrayLike, *,
             n_threads: int | None = None):
    """Optimal expected reward at a KL budget: ``mean(lam(kl))`` (SPEC section 2).

    The reward-KL frontier of the KL-constrained problem; its slope in ``kl`` is
    ``1 / lam``.  For ``kl >= kl_max`` it is the maximal reward.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tilt_stats`.
    kl : array_like
        Budgets (>= 0); broadcasts with the batch axes, e.g. shape (K,) for one row.
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray or float
        Expected reward of the optimal policy per budget.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> [f"{v:.10f}" for v in tiltlab.frontier(np.log([0.7, 0.3]), [0.0, 1.0], [0.0, 0.1, 5.0])]
    ['0.3000000000', '0.5146291211', '1.0000000000']
    """
    rows, lam, _ = _solve(logits, rewards, kl, False, n_threads)
    first, second = rows.originals
    lam_b = lam.reshape(rows.batch_shape)
    return tilt_stats(first, second, lam_b, n_threads=n_threads).mean


@interop.arrays("logits", "rewards", "lam")
def cumulants(logits: ArrayLike, rewards: ArrayLike, order: int, lam: ArrayLike = 0.0, *,
              n_threads: int | None = None) -> np.ndarray:
    """Cumulants ``kappa_1`` to ``kappa_order`` of the reward under ``phi_lam`` (SPEC section 2).

    ``kappa_k = Lambda^{(k)}(lam)``, from the tilted central moments ``c_j`` by
    ``kappa_k = c_k - sum_{m=2}^{k-2} C(k-1, m-1) kappa_m c_{k-m}``
    (``kappa_1`` = mean, ``kappa_2`` = variance).  Moments are accumulated on the
    standardised reward, so high orders do not overflow for well-scaled rewards.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tilt_stats`.
    order : int
        Highest cumulant, 1 <= order <= 32.
    lam : array_like, default 0.0
        Tilt (0 gives the cumulants under ``p``).
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray, shape (batch..., order)

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> np.round(tiltlab.cumulants(np.log([0.7, 0.3]), [0.0, 1.0], 3), 12)
    array([0.3  , 0.21 , 0.084])
    """
    k = V.order_value(order)
    lam_a = V.param_array(lam, "lam")
    rows = V.prepare_rows(logits, rewards, {"lam": lam_a}, row_bytes=8 * k)
    nt = V.n_threads_value(n_threads)
    out = np.empty((rows.n_rows, k), dtype=np.float64)
    kernel_call(_core.cumulant_rows, rows, rows.params["lam"], k, out, n_threads=nt)
    return out.reshape(rows.batch_shape + (k,))
