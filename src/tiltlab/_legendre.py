"""The Legendre-transform core of the large-deviation functions (SPEC section 4), private:
the exactly scaled frame of the tilted rows, the cumulant series for small ``t``, the
safeguarded Newton solve of ``mean(theta) = x`` behind every rate function, and the rate
function of a non-stationary memoryless sequence (:meth:`tiltlab.Memoryless.rate_function`).
:mod:`tiltlab.largedev` and :mod:`tiltlab.sequences` use it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _core
from tiltlab import _validation as V
from tiltlab._rowcalls import row_info
from tiltlab.tilting import cumulants

_EPS = np.finfo(np.float64).eps
_MAX_ITER = 200
# |t| * (r_max - r_min) below which the cumulant series of order SERIES_ORDER is used
# (truncation error ~ (|t| width)^(order - 1) relative)
SERIES_T = 1e-2
SERIES_ORDER = 8
# columns of _rowcalls.row_info: (log_norm, mean, variance, r_max, log_p_max, r_min, log_p_min)
_MEAN, _VAR, RMAX, _LPMAX, RMIN, _LPMIN = 1, 2, 3, 4, 5, 6


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------

def _range_exponent(width: np.ndarray) -> np.ndarray:
    """e with width / 2^e in [1, 2) (0 for a zero or non-finite width; at least -1020, so
    that 2^-e is a double): rewards divided by 2^e neither underflow nor overflow in the
    moments, for reward spreads from 5e-324 to 1.8e308 (SPEC section 2, exact scaling)."""
    w = np.asarray(width, dtype=np.float64)
    ok = np.isfinite(w) & (w > 0)
    e = np.frexp(np.where(ok, w, 1.0))[1].astype(np.int64) - 1
    return np.where(ok, np.maximum(e, -1020), 0)


def tilted_base(logits: np.ndarray, rewards: np.ndarray, info: np.ndarray, data_shape: tuple,
                 lam: np.ndarray, common_scale: bool = False):
    """The frame in which the large-deviation quantities are computed, exactly at any
    logit offset and reward scale.

    Returns ``(base, rw, e, bshape)``: the logits of ``phi_lam`` (unnormalised)
    ``base = (l - max l) + lam (r - c0)`` with ``c0 = r_max`` for ``lam > 0`` and ``r_min``
    otherwise, so that the outcomes that dominate ``phi_lam`` keep their logits exactly,
    ``lam (r - c0) <= 0`` cannot overflow to ``+inf`` and no logit offset enters; the
    rewards (broadcast, 0 off the support, where they are never used); the power of
    two ``2^e`` of the row's reward range (``common_scale``: one ``e`` for all rows, the
    largest, as a common tilt needs), in whose units (:func:`scaled`) no moment
    underflows or overflows; and the batch shape.  Infinite ``lam`` is replaced by 0
    (callers override those elements).
    """
    n_out = logits.shape[-1]
    bshape = np.broadcast_shapes(data_shape, lam.shape)
    lam_b = np.broadcast_to(lam, bshape)
    lam_f = np.where(np.isfinite(lam_b), lam_b, 0.0)
    r_max = np.broadcast_to(info[:, RMAX].reshape(data_shape), bshape)
    r_min = np.broadcast_to(info[:, RMIN].reshape(data_shape), bshape)
    c0 = np.where(lam_f > 0, r_max, r_min)
    e = _range_exponent(r_max - r_min)
    if common_scale:
        e = np.full(e.shape, int(np.max(e)) if e.size else 0)
    lg = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        top = np.max(lg, axis=-1, keepdims=True)
        lg = lg - np.where(np.isfinite(top), top, 0.0)
    support = np.broadcast_to(lg > -np.inf, bshape + (n_out,))
    rw = np.where(support, np.asarray(rewards, dtype=np.float64), 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        # lam (r - c) <= 0 is finite or -inf (an outcome phi_lam cannot produce), never NaN
        base = np.where(support, lg + lam_f[..., None] * (rw - c0[..., None]), -np.inf)
    return base, rw, e, bshape


def scaled(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``x 2^-e`` (exact scaling; ``e`` broadcasts over the leading axes of ``x``, which may
    have one more, trailing, axis)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.asarray(e)
    return np.ldexp(x, -(e[..., None] if x.ndim > e.ndim else e))


def flat_rows(arr: np.ndarray) -> np.ndarray:
    """(K, V) C-contiguous float64 copy-if-needed of a (..., V) array."""
    return np.ascontiguousarray(arr, dtype=np.float64).reshape(-1, arr.shape[-1])


def _group_mean(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Average of per-row ``values`` over each group's member rows (``members`` (m, n))."""
    if members.shape[1] == 1:
        return values[members[:, 0]]
    return values[members].mean(axis=1)


def series(kappa: np.ndarray, t: np.ndarray, what: str) -> np.ndarray:
    """Cumulant (Taylor) series at small ``t`` of the CGF increment and its relatives.

    ``kappa[..., k-1] = Lambda^{(k)}(lam)``.  ``cgf``: ``Lambda(lam+t) - Lambda(lam) =
    sum_k kappa_k t^k / k!``; ``mean``: ``mean(lam+t) - mean(lam) = sum_{k>=2} kappa_k
    t^(k-1) / (k-1)!``; ``var``: ``sum_{k>=2} kappa_k t^(k-2) / (k-2)!``; ``kl``:
    ``KL(phi_{lam+t} || phi_lam) = sum_{k>=2} (k-1) kappa_k t^k / k!``.  Each term is
    relative-accurate, so no first-order cancellation happens (the kernels' values for tiny
    ``t`` carry an absolute error of order ``eps * t`` when ``mean(lam)`` is near 0).
    """
    order = kappa.shape[-1]
    out = np.zeros(np.broadcast_shapes(kappa.shape[:-1], np.shape(t)))
    for k in range(order, 0, -1):  # smallest terms first
        c = kappa[..., k - 1] / float(math.factorial(k))
        if what == "cgf":
            out += c * t ** k
        elif what == "kl" and k >= 2:
            out += (k - 1) * c * t ** k
        elif what == "mean" and k >= 2:
            out += k * c * t ** (k - 1)
        elif what == "var" and k >= 2:
            out += k * (k - 1) * c * t ** (k - 2)
    return out


def solve_rate(base2d: np.ndarray, rewards2d: np.ndarray, members: np.ndarray, x: np.ndarray,
                n_threads: int) -> np.ndarray:
    """Rate function core shared by the stationary and the sequence cases.

    Data rows ``k`` are ``phi_{k,lam}`` (logits ``base2d[k]``) with rewards ``rewards2d[k]``.
    Element ``e`` is the average over its member rows ``members[e]`` (``n`` positions):
    ``I(x) = (1/n) sum_i KL(phi_{i,lam+t} || phi_{i,lam})`` with ``t`` solving
    ``(1/n) sum_i mean_i(lam + t) = x`` (SPEC section 4); ``n = 1`` is the stationary case.

    ``t`` is found for all elements at once by a safeguarded Newton iteration: each
    iteration is one call of the compiled tilt kernel on the rows of the unconverged
    elements; the derivative is the (average) variance.  The Newton step is taken on
    ``log(distance of the mean to the reward bound nearer to x)``, which is nearly linear
    in ``t`` near the bounds (the approach is exponential), with bracketing, expansion and
    (geometric) bisection as fall-backs.  Rewards are shifted by that bound (``r - r_max``
    or ``r - r_min``), so the kernel returns the distance to the bound with relative
    accuracy and ``x`` close to ``r_max`` (``t`` of 1e3 .. 1e8) is resolved.
    """
    n_rows, n_out = base2d.shape
    m = x.shape[0]
    out = np.full(m, np.nan)
    if m == 0:
        return out
    _, info = row_info(base2d, rewards2d, n_threads)
    r_hi = _group_mean(info[:, RMAX], members)
    r_lo = _group_mean(info[:, RMIN], members)
    mean0 = _group_mean(info[:, _MEAN], members)
    var0 = _group_mean(info[:, _VAR], members)
    out[(x > r_hi) | (x < r_lo)] = np.inf
    at_lo = x == r_lo
    out[at_lo] = _group_mean(-info[:, _LPMIN], members)[at_lo]
    at_hi = x == r_hi
    out[at_hi] = _group_mean(-info[:, _LPMAX], members)[at_hi]
    inner = np.flatnonzero((x > r_lo) & (x < r_hi))
    if inner.size == 0:
        return out

    # rewards shifted by the row's upper bound (rows 0..K-1) and lower bound (K..2K-1)
    second = np.concatenate([rewards2d - info[:, RMAX, None],
                             rewards2d - info[:, RMIN, None]]).reshape(-1)
    first = np.ascontiguousarray(base2d).reshape(-1)
    xi = x[inner]
    upper = r_hi[inner] - xi <= xi - r_lo[inner]   # frame: the reward bound nearer to x
    bound = np.where(upper, r_hi[inner], r_lo[inner])
    xs = xi - bound                     # target in the shifted frame (< 0 upper, > 0 lower)
    ascending = xi >= mean0[inner]      # t > 0
    mem = members[inner]
    first_off = mem * n_out
    second_off = (mem + np.where(upper, 0, n_rows)[:, None]) * n_out
    n = mem.shape[1]
    width = r_hi[inner] - r_lo[inner]

    # start: one log-Newton step from t = 0 (mean(0) = mean0, derivative var0)
    ms0 = mean0[inner] - bound
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = -ms0 * np.log1p((ms0 - xs) / xs) / var0[inner]
    lo = np.where(ascending, 0.0, -np.inf)
    hi = np.where(ascending, np.inf, 0.0)
    bad = ~np.isfinite(t) | (t < lo) | (t > hi)
    t[bad] = np.where(ascending, 1.0, -1.0)[bad] / width[bad]

    result = np.full(inner.size, np.nan)
    active = np.arange(inner.size)
    stats = np.empty((inner.size * n, 5), dtype=np.float64)
    grow = np.zeros(inner.size, dtype=np.int64)    # consecutive expansions
    stall = np.zeros(inner.size, dtype=np.int64)   # steps since the bracket last halved
    last_w = np.full(inner.size, np.inf)          # bracket size at the last halving
    for _ in range(_MAX_ITER):
        k = active.size
        lam_rows = np.repeat(t[active], n)
        flags = np.zeros(k * n, dtype=np.int32)
        buf = stats[:k * n]
        _core.tilt_rows(first, second, np.ascontiguousarray(first_off[active].reshape(-1)),
                        np.ascontiguousarray(second_off[active].reshape(-1)), n_out, lam_rows,
                        buf, flags, V.threads_for_work(k * n * n_out, n_threads))
        ms = buf[:, 1].reshape(k, n).mean(axis=1)
        var = buf[:, 2].reshape(k, n).mean(axis=1)
        kl = buf[:, 3].reshape(k, n).mean(axis=1)
        ta, xa = t[active], xs[active]
        res = ms - xa
        lo[active] = np.where(res < 0, ta, lo[active])
        hi[active] = np.where(res > 0, ta, hi[active])
        la, ha = lo[active], hi[active]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t_new = ta - ms * np.log1p(res / xa) / var
        inside = np.isfinite(t_new) & (t_new > la) & (t_new < ha)
        # a Newton step counts only while the bracket keeps halving (in ratio across
        # decades, else in width); after three steps without, a bisection is forced
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            a_lo, a_hi = np.minimum(np.abs(la), np.abs(ha)), np.maximum(np.abs(la), np.abs(ha))
            w_now = np.where((la * ha > 0) & (a_hi > 4 * a_lo), np.log(a_hi / a_lo),
                             (ha - la) / a_hi)
            w_now = np.where(np.isfinite(w_now), w_now, np.inf)
        halved = w_now <= 0.5 * last_w[active]
        last_w[active] = np.where(halved, w_now, last_w[active])
        stall[active] = np.where(halved, 0, stall[active] + 1)
        inside &= stall[active] < 3
        # fall-backs: expand an open bracket (by 8, 16, 256, ...: doubly exponential, so a
        # theta of 1e300 is bracketed in ~10 steps), else bisect geometrically across
        # decades (between the ends, or between 1/width and the far end when the other end
        # is 0)
        grow_up = np.isposinf(ha)
        grow_dn = np.isneginf(la)
        expand = (grow_up | grow_dn) & ~inside
        grow[active] = np.where(expand, np.minimum(grow[active] + 1, 10), 0)
        factor = np.ldexp(1.0, np.left_shift(1, grow[active]).astype(np.int64))
        factor = np.maximum(factor, 8.0)
        s0 = 1.0 / width[active]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            far = np.where(np.abs(ha) > np.abs(la), ha, la)
            near = np.where(la * ha > 0, np.where(far == ha, la, ha), s0)
            near = np.abs(near)
            geo = np.sign(far) * np.sqrt(np.abs(far)) * np.sqrt(near)
            spread = (np.abs(far) > 4.0 * near) & (np.abs(geo) > np.minimum(np.abs(la),
                                                                           np.abs(ha)))
            mid = np.where(spread, geo, 0.5 * la + 0.5 * ha)
            fallback = np.where(grow_up, factor * la + s0,
                                np.where(grow_dn, factor * ha - s0, mid))
        t_next = np.where(inside, t_new, fallback)
        bisected = ~inside & ~grow_up & ~grow_dn
        stall[active] = np.where(bisected, 0, stall[active])
        last_w[active] = np.where(bisected, w_now, last_w[active])
        t_next = np.clip(t_next, -np.finfo(np.float64).max, np.finfo(np.float64).max)
        collapsed = ha - la <= 4 * _EPS * np.maximum(np.abs(la), np.abs(ha))
        done = ((res == 0) | (np.abs(res) <= 8 * _EPS * np.abs(xa))
                | (inside & (np.abs(t_new - ta) <= 4 * _EPS * np.abs(ta)))
                | (np.isfinite(ha - la) & collapsed))
        result[active[done]] = kl[done]
        t[active] = t_next
        active = active[~done]
        if active.size == 0:
            break
    else:
        warnings.warn(
            f"rate_function: {active.size} of {inner.size} solves of mean(theta) = x stopped "
            f"at the iteration limit; their value is at the last bracketed theta",
            RuntimeWarning, stacklevel=3)
        result[active] = kl[~done]

    # x close to mean(lam): refine t and evaluate KL by the cumulant series, which keeps
    # KL ~ var t^2 / 2 relative-accurate (the remaining error is the rounding of mean(lam))
    small = np.flatnonzero(np.abs(t) * width <= SERIES_T)
    if small.size:
        used, where = np.unique(mem[small], return_inverse=True)
        kap = np.asarray(cumulants(base2d[used], rewards2d[used], SERIES_ORDER,
                                   n_threads=n_threads)).reshape(-1, SERIES_ORDER)
        kbar = kap[where.reshape(small.size, n)].mean(axis=1)
        d = xi[small] - kbar[:, 0]
        ts = t[small]
        for _ in range(4):
            with np.errstate(divide="ignore", invalid="ignore"):
                step = (series(kbar, ts, "mean") - d) / series(kbar, ts, "var")
            ts = np.where(np.isfinite(step), ts - step, ts)
        result[small] = series(kbar, ts, "kl")
    out[inner] = np.maximum(result, 0.0)
    return out


def rate_function_sequence(logits2d: ArrayLike, rewards2d: ArrayLike, x: ArrayLike,
                            lam: float = 0.0, *, n_threads: int | None = None) -> np.ndarray:
    """Rate function of ``R/n`` for a non-stationary memoryless sequence (SPEC section 4).

    Row ``i`` of ``logits2d`` / ``rewards2d`` (shape (n, V)) is position ``i``; all positions
    are tilted by the common ``lam``.
    ``I(x) = sup_t { t x - (1/n) sum_i [Lambda_i(lam + t) - Lambda_i(lam)] }
    = (1/n) sum_i KL(phi_{i,theta} || phi_{i,lam})`` with ``(1/n) sum_i mean_i(theta) = x``;
    the end points are the averages of the per-row extreme rewards (values: the averages of
    ``-log phi_{i,lam}(argmax_i)``), ``+inf`` outside.  Returns an array of ``x``'s shape.
    """
    x_a = V.param_array(x, "x")
    lam_a = V.param_array(lam, "lam")
    if lam_a.ndim != 0:
        raise ValueError(f"lam must be a scalar (one common tilt); got shape {lam_a.shape}")
    nt = V.n_threads_value(n_threads)
    rows = V.prepare_rows(logits2d, rewards2d)
    if len(rows.batch_shape) != 1:
        raise ValueError(
            f"logits2d and rewards2d must broadcast to shape (n, V), one row per position; "
            f"got batch shape {rows.batch_shape}"
        )
    nt = V.threads_for_work(max(x_a.size, 1) * rows.n_rows * rows.n_outcomes, nt)
    first, second = rows.originals
    data_rows, info = row_info(first, second, nt)
    n_pos = data_rows.n_rows
    if n_pos == 0:
        raise ValueError("logits2d has no rows (positions)")
    xf = x_a.reshape(-1)
    lam_v = float(lam_a)
    if np.isinf(lam_v):
        star = np.mean(info[:, RMAX] if lam_v > 0 else info[:, RMIN])
        return np.where(xf == star, 0.0, np.inf).reshape(x_a.shape)
    base, rw, e, _ = tilted_base(first, second, info, data_rows.batch_shape, lam_a,
                                      common_scale=True)
    # one scale for all positions (a common tilt)
    rw_s = np.where(base > -np.inf, scaled(rw, e), 0.0)
    with np.errstate(over="ignore"):
        x_s = scaled(xf, e[:1])
    members = np.broadcast_to(np.arange(n_pos, dtype=np.int64), (xf.size, n_pos))
    out = solve_rate(flat_rows(base), flat_rows(rw_s), members, x_s, nt)
    return out.reshape(x_a.shape)
