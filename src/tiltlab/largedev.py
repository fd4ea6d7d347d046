"""Large deviations of memoryless sequences and Rényi quantities (SPEC section 4).

For a length-``n`` memoryless sequence with linear reward ``R = sum_i r_i(y_i)`` drawn from
the tilted policy ``phi_lam`` (stationary: every position draws from the same row):

- scaled CGF ``(1/n) log E_phi exp(t R) = Lambda(lam + t) - Lambda(lam)`` (exact for every n)
- Cramér / LDP rate function of ``R/n``:
  ``I_lam(x) = sup_t { t x - Lambda(lam + t) + Lambda(lam) } = KL(phi_theta || phi_lam)``
  with ``mean(theta) = x``
- Rényi cross entropy ``H_alpha(P; Q)`` and Rényi divergence ``D_alpha(P || Q)``; the scaled
  CGF is ``t * (log sum_y exp r(y) - H_{1+t}(phi_lam; softmax r))``.

Every function broadcasts the leading (batch) axes of its arrays and scalar parameters
NumPy-style; outcomes are on the last axis; results are float64.  All quantities come from
the tilted statistics of the compiled core (``tilt_stats``: log partition, mean, variance,
KL of ``phi_lam`` tilted further by ``t``) and, for tiny ``t``, from the cumulant series
``sum_k kappa_k t^k / k!``, so nothing small is formed as a difference of large numbers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _validation as V
from tiltlab._legendre import (
    RMAX,
    RMIN,
    SERIES_ORDER,
    SERIES_T,
    flat_rows,
    scaled,
    series,
    solve_rate,
    tilted_base,
)
from tiltlab._rowcalls import row_info
from tiltlab.divergence import kl_divergence
from tiltlab.tilting import cumulants, tilt_stats

__all__ = [
    "rate_function",
    "scaled_cgf",
    "renyi_cross_entropy",
    "renyi_divergence",
]

# --------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------

@interop.arrays("logits", "rewards", "x", "lam")
def rate_function(logits: ArrayLike, rewards: ArrayLike, x: ArrayLike, lam: ArrayLike = 0.0, *,
                  n_threads: int | None = None):
    """Cramér rate function of ``R/n`` under ``phi_lam`` (SPEC section 4).

    For a stationary memoryless sequence drawn from ``phi_lam`` (``lam = 0``: from ``p``),
    ``P(R/n ~ x) ~ exp(-n I_lam(x))`` with

    ``I_lam(x) = sup_t { t x - Lambda(lam + t) + Lambda(lam) } = KL(phi_theta || phi_lam)``,
    ``mean(theta) = x``, for ``r_min < x < r_max`` (rewards over the support of ``p``).
    At the end points it is ``-log phi_lam(argmax set)`` (resp. argmin set), and ``+inf``
    outside ``[r_min, r_max]``.  ``I_lam >= 0`` is convex with ``I_lam(mean(lam)) = 0``, and
    ``I_0(mean(lam)) = kl(lam)``: the optimal reward-KL frontier is the inverse of the
    Cramér function.

    ``theta`` is solved for all ``x`` at once (safeguarded Newton, one compiled tilt pass
    per iteration) and the KL is evaluated directly as the KL of ``phi_lam`` tilted by
    ``theta - lam``, so ``I`` keeps its relative accuracy close to ``mean(lam)``, where it
    is of order ``(x - mean)^2``, and close to ``r_max`` / ``r_min``, where ``theta`` is
    large.  Near ``mean(lam)`` the accuracy is limited by the rounding of ``mean(lam)``
    itself: the relative error of ``I`` is about ``eps * max|r| / |x - mean(lam)|``.

    Parameters
    ----------
    logits : array_like, shape (..., V)
        Unnormalised log-probabilities of ``p``; ``-inf`` marks an impossible outcome.
    rewards : array_like, shape (..., V)
        Finite per-token rewards.
    x : array_like
        Values of the average reward ``R/n``; any real or ``+-inf``.  Broadcasts with the
        batch axes (e.g. logits (V,) and x (m,) give m values).
    lam : array_like, default 0.0
        Tilt of the sampling policy, any real or ``+-inf``; broadcasts with the batch axes.
        For ``lam = +inf`` (``-inf``), ``phi`` is ``p`` restricted to the argmax (argmin)
        set and ``I`` is 0 at ``x = r_max`` (``r_min``) and ``+inf`` elsewhere.
    n_threads : int, optional
        Threads for the compiled kernels (default: all cores, honouring OMP_NUM_THREADS).

    Returns
    -------
    ndarray or float
        ``I_lam(x)`` in nats, with the broadcast batch shape.

    Raises
    ------
    ValueError
        NaN in ``x`` or ``lam``, shapes that do not broadcast, and the input errors of
        :func:`tiltlab.tilt_stats`.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab.largedev import rate_function
    >>> lg, r = np.log([0.7, 0.3]), [0.0, 1.0]
    >>> print(f"{rate_function(lg, r, 0.7, lam=1.0):.10f}")
    0.0546543660
    >>> [f"{v:.10f}" for v in rate_function(lg, r, [-0.5, 0.5, 1.0])]  # r_max: -log 0.3
    ['inf', '0.0871766936', '1.2039728043']
    """
    x_a = V.param_array(x, "x")
    lam_a = V.param_array(lam, "lam")
    nt = V.n_threads_value(n_threads)
    rows = V.prepare_rows(logits, rewards, {"x": x_a, "lam": lam_a})
    nt = V.threads_for_work(rows.n_rows * rows.n_outcomes, nt)
    first, second = rows.originals
    data_rows, info = row_info(first, second, nt)
    data_shape = data_rows.batch_shape
    base, rw, e, bshape = tilted_base(first, second, info, data_shape, lam_a)
    # in units of the row's reward range: I is invariant under r -> r 2^-e, x -> x 2^-e
    # (exact), and nothing under- or overflows (not shifted: x - mean keeps its digits)
    rw_s = np.where(base > -np.inf, scaled(rw, e), 0.0)
    eshape = rows.batch_shape
    n_data = int(np.prod(bshape, dtype=np.int64))
    members = np.broadcast_to(np.arange(n_data, dtype=np.int64).reshape(bshape),
                              eshape).reshape(-1, 1)
    xf = np.broadcast_to(x_a, eshape).reshape(-1)
    with np.errstate(over="ignore"):
        x_s = scaled(xf, np.broadcast_to(e, eshape).reshape(-1))
    out = solve_rate(flat_rows(base), flat_rows(rw_s), members, x_s, nt)
    lam_e = np.broadcast_to(lam_a, eshape).reshape(-1)
    if np.isinf(lam_e).any():
        r_max = np.broadcast_to(info[:, RMAX].reshape(data_shape), eshape).reshape(-1)
        r_min = np.broadcast_to(info[:, RMIN].reshape(data_shape), eshape).reshape(-1)
        star = np.where(lam_e > 0, r_max, r_min)
        lim = np.isinf(lam_e)
        out[lim] = np.where(xf[lim] == star[lim], 0.0, np.inf)
    return V.shaped(out, eshape)


@interop.arrays("logits", "rewards", "t", "lam")
def scaled_cgf(logits: ArrayLike, rewards: ArrayLike, t: ArrayLike, lam: ArrayLike = 0.0, *,
               n_threads: int | None = None):
    """Scaled cumulant generating function of ``R`` under ``phi_lam`` (SPEC section 4).

    ``(1/n) log E_{phi_lam} exp(t R) = Lambda(lam + t) - Lambda(lam) = log E_{phi_lam} e^{t r}``,
    exact for every ``n`` for a stationary memoryless sequence.  It is computed as the log
    partition of ``phi_lam`` tilted by ``t`` (never as a difference), so it is relative-
    accurate for tiny ``t`` (where it is ``t mean(lam) + O(t^2)``).  Equivalently (the Rényi
    form of SPEC section 4, ``t > -1``):
    ``t * (log sum_y exp r(y) - H_{1+t}(phi_lam; softmax r))``.

    Infinite arguments give the limits: ``t = +inf`` gives
    ``lim (t r_max + log phi_lam(argmax set))``, i.e. ``+inf`` if ``r_max > 0``, ``-inf`` if
    ``r_max < 0`` and ``log phi_lam(argmax set)`` if ``r_max = 0`` (``t = -inf`` likewise with
    ``r_min``); ``lam = +inf`` (``-inf``) concentrates ``phi`` on the argmax (argmin) set and
    gives ``t * r_max`` (``t * r_min``), with ``t * 0 = 0``.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tiltlab.tilt_stats`.
    t : array_like
        Argument of the CGF, any real or ``+-inf``; broadcasts with the batch axes.
    lam : array_like, default 0.0
        Tilt of the sampling policy, any real or ``+-inf``; broadcasts with the batch axes.
    n_threads : int, optional
        Threads for the compiled kernels.

    Returns
    -------
    ndarray or float
        ``Lambda(lam + t) - Lambda(lam)`` with the broadcast batch shape.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab.largedev import scaled_cgf
    >>> lg, r = np.log([0.7, 0.3]), [0.0, 1.0]
    >>> print(f"{scaled_cgf(lg, r, 1.0):.10f}")           # Lambda(1) = log(0.7 + 0.3 e)
    0.4157352218
    >>> print(f"{scaled_cgf(lg, r, 1e-12, lam=1.0):.6e}")  # ~ t * mean(1)
    5.381015e-13
    """
    t_a = V.param_array(t, "t")
    lam_a = V.param_array(lam, "lam")
    nt = V.n_threads_value(n_threads)
    rows = V.prepare_rows(logits, rewards, {"t": t_a, "lam": lam_a})
    nt = V.threads_for_work(rows.n_rows * rows.n_outcomes, nt)
    first, second = rows.originals
    data_rows, info = row_info(first, second, nt)
    data_shape = data_rows.batch_shape
    base, rw, e, _ = tilted_base(first, second, info, data_shape, lam_a)
    eshape = rows.batch_shape
    # in units of the row's reward range (exact scaling): log E_phi e^{t r} is the log
    # partition of phi tilted by t 2^e along r 2^-e, so a reward spread of 5e-324 or 1e300
    # and t of 1e300 or 5e-324 give the same well-scaled problem
    r_s = np.where(base > -np.inf, scaled(rw, e), 0.0)
    e_b = np.broadcast_to(e, eshape)
    t_b = np.broadcast_to(t_a, eshape)
    with np.errstate(over="ignore"):
        t_s = np.ldexp(t_b, e_b)
    fin_t = np.isfinite(t_b)
    res = np.asarray(tilt_stats(base, r_s, np.where(fin_t, t_s, 0.0),
                                n_threads=nt).log_partition, dtype=np.float64)
    res = np.array(np.broadcast_to(res, eshape), dtype=np.float64).reshape(-1)
    # tiny |t|: the cumulant series sum_k kappa_k t^k / k! (relative-accurate term by term)
    span = np.broadcast_to((info[:, RMAX] - info[:, RMIN]).reshape(data_shape), e.shape)
    width = np.broadcast_to(scaled(span, e), eshape)
    t_e = t_s.reshape(-1)
    small = fin_t.reshape(-1).copy()
    small[small] = np.abs(t_e[small]) * width.reshape(-1)[small] <= SERIES_T
    if small.any():
        kap = np.asarray(cumulants(base, r_s, SERIES_ORDER, n_threads=nt))
        kap = np.broadcast_to(kap, eshape + (SERIES_ORDER,)).reshape(-1, SERIES_ORDER)
        res[small] = series(kap[small], t_e[small], "cgf")
    # t = +-inf: t r* + log phi_lam(r = r*) with r* = r_max (r_min), t 0 = 0
    if not fin_t.all():
        inf_t = ~fin_t.reshape(-1)
        tv = t_b.reshape(-1)[inf_t]
        r_max = np.broadcast_to(info[:, RMAX].reshape(data_shape), eshape).reshape(-1)
        r_min = np.broadcast_to(info[:, RMIN].reshape(data_shape), eshape).reshape(-1)
        star = np.where(tv > 0, r_max[inf_t], r_min[inf_t])
        kl_inf = np.broadcast_to(tilt_stats(base, r_s, np.where(t_b > 0, np.inf, -np.inf),
                                            n_threads=nt).kl, eshape).reshape(-1)[inf_t]
        with np.errstate(invalid="ignore"):
            res[inf_t] = np.where(star == 0.0, -kl_inf, tv * star - kl_inf)
    lam_e = np.broadcast_to(lam_a, eshape).reshape(-1)
    if np.isinf(lam_e).any():
        r_max = np.broadcast_to(info[:, RMAX].reshape(data_shape), eshape).reshape(-1)
        r_min = np.broadcast_to(info[:, RMIN].reshape(data_shape), eshape).reshape(-1)
        lim = np.isinf(lam_e)
        star = np.where(lam_e > 0, r_max, r_min)[lim]
        with np.errstate(invalid="ignore"):
            res[lim] = np.where(star == 0.0, 0.0, t_b.reshape(-1)[lim] * star)
    return V.shaped(res, eshape)


def _check_distribution(arr: np.ndarray, name: str) -> None:
    """NaN / +inf logits and all -inf rows are errors (SPEC section 1)."""
    a = np.asarray(arr, dtype=np.float64)
    if np.isnan(a).any() or (a == np.inf).any():
        V.check_logit_values(a, name)
    if a.size and np.all(a == -np.inf, axis=-1).any():
        V.check_empty_rows(a, name)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities, ``log1p``-accurate for outcomes of probability ~1."""
    m = np.max(logits, axis=-1, keepdims=True)
    z = logits - m
    e = np.exp(z)
    # sum of exp(z) minus the 1 of one maximising outcome, so log(sum) = log1p(rest)
    top = np.argmax(z, axis=-1)[..., None]
    np.put_along_axis(e, top, 0.0, axis=-1)
    return z - np.log1p(np.sum(e, axis=-1, keepdims=True))


def _renyi_prepare(logits_p, logits_q, alpha):
    alpha_a = V.nonnegative_param(alpha, "alpha")
    rows = V.prepare_rows(logits_p, logits_q, {"alpha": alpha_a},
                          names=("logits_p", "logits_q"), second_is_logits=True)
    lp0, lq0 = rows.originals
    _check_distribution(lp0, "logits_p")
    _check_distribution(lq0, "logits_q")
    bshape = rows.batch_shape
    n_out = rows.n_outcomes
    full = bshape + (n_out,)
    lp = np.broadcast_to(_log_softmax(np.asarray(lp0, dtype=np.float64)), full).reshape(-1, n_out)
    lq = np.broadcast_to(_log_softmax(np.asarray(lq0, dtype=np.float64)), full).reshape(-1, n_out)
    al = np.broadcast_to(alpha_a, bshape).reshape(-1)
    return lp, lq, al, bshape, (lp0, lq0)


def _renyi_core(lp: np.ndarray, w: np.ndarray, al: np.ndarray, n_threads: int):
    """``(log P(S) + log E_{P|S} exp(eps w)) / eps`` with ``eps = alpha - 1`` and
    ``S = {P > 0, w finite}`` (finite ``alpha``); ``eps = 0`` gives ``E_P w``.

    ``log E_{P|S} exp(eps w)`` is the log partition of ``P|S`` tilted by ``eps`` along
    ``w``, relative-accurate for tiny ``eps``, so the quotient is continuous at alpha = 1.
    Rows with an empty ``S`` give ``-inf / eps`` (sign of ``-eps``, ``nan`` for eps = 0).
    """
    supp = lp > -np.inf
    keep = supp & np.isfinite(w)
    empty = ~keep.any(axis=-1)
    lp_s = np.where(keep, lp, -np.inf)
    lp_s[empty] = 0.0
    w_s = np.where(keep, w, 0.0)
    eps = al - 1.0
    # |eps| > 1 (alpha > 2): eps w may overflow (alpha = 1e308), so w is measured from its
    # extreme w* on S in the direction of eps: (1/eps) log E e^{eps w} = w* + (1/eps)
    # log E e^{eps (w - w*)}, whose exponent is <= 0
    big = np.abs(eps) > 1.0
    w_star = np.zeros(lp.shape[0])
    if big.any():
        hi = np.max(np.where(keep, w, -np.inf), axis=-1)
        lo = np.min(np.where(keep, w, np.inf), axis=-1)
        w_star = np.where(big & ~empty, np.where(eps > 0, hi, lo), 0.0)
        w_s = np.where(keep, w_s - w_star[:, None], 0.0)
    st = tilt_stats(lp_s, w_s, eps, n_threads=n_threads)
    lpart = np.asarray(st.log_partition, dtype=np.float64).reshape(-1)
    mean = np.asarray(st.mean, dtype=np.float64).reshape(-1)
    # log P(S): exactly 0 when S is all of supp P; log1p(-P(supp P \ S)) when S has most
    # of the mass (lp is normalised, so these sums do not overflow)
    partial = (keep != supp).any(axis=-1) & ~empty
    log_ps = np.zeros(lp.shape[0])
    if partial.any():
        ls_in = np.where(keep[partial], lp[partial], -np.inf)
        mx = np.max(ls_in, axis=-1, keepdims=True)
        log_in = mx[:, 0] + np.log(np.sum(np.exp(ls_in - mx), axis=-1))
        p_out = np.sum(np.exp(np.where(keep[partial], -np.inf, lp[partial])), axis=-1)
        log_ps[partial] = np.where(p_out < 0.5, np.log1p(-np.minimum(p_out, 0.5)), log_in)
    log_ps[empty] = -np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        val = (log_ps + lpart) / eps + w_star
    zero = eps == 0.0
    val[zero] = mean[zero]
    return val, supp, keep, empty


@interop.arrays("logits_p", "logits_q", "alpha")
def renyi_cross_entropy(logits_p: ArrayLike, logits_q: ArrayLike, alpha: ArrayLike, *,
                        n_threads: int | None = None):
    """Rényi cross entropy ``H_alpha(P; Q)`` of order ``alpha >= 0`` (SPEC section 4).

    ``H_alpha(P; Q) = (1/(1-alpha)) log sum_y P(y) Q(y)^(alpha-1)`` for
    ``P = softmax(logits_p)``, ``Q = softmax(logits_q)``; ``alpha = 1``: the Shannon cross
    entropy ``-sum_y P(y) log Q(y)``; ``alpha = inf``: the limit
    ``-log max_{P(y)>0} Q(y)``.  With ``eps = alpha - 1`` and ``w = log Q``,
    ``log sum P e^{eps w}`` is the log partition of ``P`` tilted by ``eps`` along ``w``,
    relative-accurate for tiny ``eps``, so ``H`` is continuous through ``alpha = 1``
    (``|alpha - 1| = 1e-12`` agrees with the Shannon value to ~1e-12).

    Where ``Q(y) = 0 < P(y)``: ``H = +inf`` for ``alpha <= 1``; for ``alpha > 1`` those
    terms vanish (``+inf`` if ``Q`` is zero on all of the support of ``P``).  It is the
    identity behind the scaled CGF:
    ``Lambda(lam+t) - Lambda(lam) = t * (log sum exp r - H_{1+t}(phi_lam; softmax r))``.

    Parameters
    ----------
    logits_p, logits_q : array_like, shape (..., V)
        Logits of ``P`` and ``Q``; leading axes broadcast.
    alpha : array_like
        Order, ``>= 0`` (``inf`` allowed); broadcasts with the batch axes.
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray or float
        ``H_alpha(P; Q)`` in nats.

    Raises
    ------
    ValueError
        ``alpha`` negative or NaN, NaN / +inf logits, a row of all ``-inf``, or shapes that
        do not broadcast.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab.largedev import renyi_cross_entropy
    >>> lp, lq = np.log([0.5, 0.5]), np.log([0.9, 0.1])
    >>> [f"{v:.10f}" for v in renyi_cross_entropy(lp, lq, [0.0, 1.0, 2.0, np.inf])]
    ['1.7147984281', '1.2039728043', '0.6931471806', '0.1053605157']
    """
    nt = V.n_threads_value(n_threads)
    lp, lq, al, bshape, _ = _renyi_prepare(logits_p, logits_q, alpha)
    nt = V.threads_for_work(lp.size, nt)
    out = np.empty(al.shape[0])
    if out.size == 0:
        return V.shaped(out, bshape)
    fin = np.isfinite(al)
    val, supp, keep, empty = _renyi_core(lp, lq, np.where(fin, al, 1.0), nt)
    out[:] = -val
    missing = (supp & ~keep).any(axis=-1)      # Q = 0 somewhere on supp P
    out[missing & (al <= 1.0)] = np.inf
    out[empty] = np.inf
    if (~fin).any():
        q_on = np.where(supp[~fin], lq[~fin], -np.inf)
        out[~fin] = -np.max(q_on, axis=-1)
    return V.shaped(out, bshape)


@interop.arrays("logits_p", "logits_q", "alpha")
def renyi_divergence(logits_p: ArrayLike, logits_q: ArrayLike, alpha: ArrayLike, *,
                     n_threads: int | None = None):
    """Rényi divergence ``D_alpha(P || Q)`` of order ``alpha >= 0`` (SPEC section 4).

    ``D_alpha(P || Q) = (1/(alpha-1)) log sum_y P(y)^alpha Q(y)^(1-alpha)`` for
    ``P = softmax(logits_p)``, ``Q = softmax(logits_q)``; ``alpha = 1``: ``KL(P || Q)``;
    ``alpha = inf``: ``log max_y P(y)/Q(y)``; ``alpha = 0``: ``-log Q(supp P)``.  It is
    non-decreasing in ``alpha``.  With ``eps = alpha - 1`` and ``w = log P - log Q`` on
    ``S = supp P ∩ supp Q``, ``log sum = log P(S) + log E_{P|S} e^{eps w}``, the latter the
    log partition of ``P|S`` tilted by ``eps`` along ``w`` (relative-accurate for tiny
    ``eps``, so ``D`` is continuous through ``alpha = 1``).  If ``Q = 0 < P`` somewhere,
    ``D = +inf`` for ``alpha >= 1`` and finite (from ``log P(S)``) for ``alpha < 1``, unless
    ``S`` is empty.

    Parameters
    ----------
    logits_p, logits_q : array_like, shape (..., V)
        Logits of ``P`` and ``Q``; leading axes broadcast.
    alpha : array_like
        Order, ``>= 0`` (``inf`` allowed); broadcasts with the batch axes.
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray or float
        ``D_alpha(P || Q)`` in nats (``>= 0``).

    Raises
    ------
    ValueError
        ``alpha`` negative or NaN, NaN / +inf logits, a row of all ``-inf``, or shapes that
        do not broadcast.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab.largedev import renyi_divergence
    >>> lp, lq = np.log([0.5, 0.5]), np.log([0.9, 0.1])
    >>> [f"{v:.10f}" for v in renyi_divergence(lp, lq, [0.5, 1.0, 2.0, np.inf])]
    ['0.2231435513', '0.5108256238', '1.0216512475', '1.6094379124']
    >>> float(renyi_divergence([0.0, 0.0], [0.0, -np.inf], 0.0))   # -log Q(supp P)
    0.0
    """
    nt = V.n_threads_value(n_threads)
    lp, lq, al, bshape, (lp0, lq0) = _renyi_prepare(logits_p, logits_q, alpha)
    nt = V.threads_for_work(lp.size, nt)
    out = np.empty(al.shape[0])
    if out.size == 0:
        return V.shaped(out, bshape)
    fin = np.isfinite(al)
    with np.errstate(invalid="ignore"):
        w = lp - lq                          # +inf where Q = 0 < P; NaN off supp P
    val, supp, keep, empty = _renyi_core(lp, w, np.where(fin, al, 1.0), nt)
    out[:] = val
    missing = (supp & ~keep).any(axis=-1)
    one = al == 1.0
    if one.any():  # KL from the raw logits: keeps its relative accuracy for nearby P, Q
        kl = np.broadcast_to(kl_divergence(lp0, lq0, n_threads=nt), bshape).reshape(-1)
        out[one] = kl[one]
    out[missing & (al >= 1.0)] = np.inf
    out[empty] = np.inf
    if (~fin).any():
        w_on = np.where(supp[~fin], w[~fin], -np.inf)
        out[~fin] = np.max(w_on, axis=-1)
    return V.shaped(np.maximum(out, 0.0), bshape)
