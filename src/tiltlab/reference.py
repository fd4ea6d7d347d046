"""Plain-NumPy twins of the compiled kernels: the oracle in tests, the baseline in benchmarks.

Written for clarity, not speed: whole arrays, textbook formulas, no chunking, no shared
helpers with the compiled code.  Inputs are assumed valid (the public API validates);
outputs follow the same conventions as the public functions (float64, batch shapes
broadcast, outcomes on the last axis).

Numerical choices (deliberately different from the compiled kernels where it matters):
the tilted law is formed in log space as ``log p + lam r - logsumexp(log p + lam r)``;
for small tilts (``|lam| * reward range <= 1``) the log partition is
``lam c + log1p(sum p expm1(lam (r - c)))`` so that the KL does not cancel.
"""

from __future__ import annotations

from math import comb

import numpy as np

__all__ = [
    "logsumexp",
    "logsumexp_weighted",
    "softmax",
    "log_softmax",
    "tilt_stats",
    "tilt",
    "solve_lambda",
    "kl_max",
    "frontier",
    "cumulants",
    "kl_divergence",
    "reward_levels",
    "best_of_n",
    "sample_best_of_n",
    "simulate_best_of_n",
    "lattice_step",
    "lattice_log_pmf",
    "sequence_best_of_n",
    "sequence_kl_to_tilted",
    "scaled_cgf",
    "rate_function",
    "renyi_divergence",
    "renyi_cross_entropy",
    "markov_tilt_stats",
    "markov_tilted_policy",
    "markov_reward_law",
    "markov_best_of_n",
    "markov_sample_given_reward",
    "markov_period",
    "markov_scaled_cgf",
    "markov_rate_function",
    "markov_solve_lambda",
]


def logsumexp(a, axis=-1, keepdims=False):
    """``log(sum(exp(a)))`` by max-shifting; NaN -> NaN, +inf -> +inf, all -inf -> -inf."""
    a = np.asarray(a, dtype=np.float64)
    if axis is None:
        axis = tuple(range(a.ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    if any(a.shape[ax] == 0 for ax in axes):
        out = np.full(np.sum(a, axis=axis, keepdims=keepdims).shape, -np.inf)
        return out[()] if out.ndim == 0 else out
    m = np.max(a, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # log(count of maxima + rest) = log1p(count - 1 + rest): exact when one term dominates
        at_max = a == m
        count = np.sum(at_max, axis=axis, keepdims=True)
        rest = np.sum(np.where(at_max, 0.0, np.exp(a - shift)), axis=axis, keepdims=True)
        out = np.where(np.isfinite(m), np.log1p((count - 1) + rest) + shift, m)
    if not keepdims:
        out = np.squeeze(out, axis=axes)
    return out[()] if np.ndim(out) == 0 else out


def logsumexp_weighted(a, b, axis=None, return_sign=False):
    """``log|sum(b exp(a))|`` (and its sign) with SciPy's rules, summed directly: weight-0
    elements dropped, NaN -> NaN, +inf terms decide, a zero sum -> (-inf, 0)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    axes = tuple(range(a.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    with np.errstate(all="ignore"):
        keep = b != 0
        x = np.where(keep, a, -np.inf)
        w = np.where(keep, b, 0.0)
        nan = np.any(keep & (np.isnan(a) | np.isnan(b)), axis=axes)
        xs = np.where(np.isnan(x), -np.inf, x)
        m = np.max(xs, axis=axes, keepdims=True, initial=-np.inf)
        c = np.where(np.isfinite(m), m, 0.0)
        terms = np.where(xs > -np.inf, w * np.exp(xs - c), 0.0)
        s = np.sum(terms, axis=axes)
        out = np.log(np.abs(s)) + np.squeeze(c, axis=axes)
        sign = np.sign(s)
        out = np.where(nan, np.nan, out)
        sign = np.where(nan, np.nan, sign)
    if not return_sign:
        out = np.where(sign < 0, np.nan, out)
        return out[()] if out.ndim == 0 else out
    return (out[()], sign[()]) if out.ndim == 0 else (out, sign)


def _axes_of(x, axis):
    if axis is None:
        return tuple(range(x.ndim))
    return axis if isinstance(axis, tuple) else (axis,)


def softmax(x, axis=None):
    """``exp(x - max) / sum``, SciPy's special values (NaN, +inf or all -inf: NaN)."""
    x = np.asarray(x, dtype=np.float64)
    axes = _axes_of(x, axis)
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=axes, keepdims=True))
        return e / np.sum(e, axis=axes, keepdims=True)


def log_softmax(x, axis=None):
    """``(x - max) - log(sum exp(x - max))`` with SciPy's special values."""
    x = np.asarray(x, dtype=np.float64)
    axes = _axes_of(x, axis)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axes, keepdims=True)
        fin = np.isfinite(m)
        d = x - np.where(fin, m, 0.0)
        # the entries at the maximum counted apart: log1p keeps a dominant entry's accuracy
        top = d == 0
        count = np.sum(top, axis=axes, keepdims=True)
        rest = np.sum(np.where(top, 0.0, np.exp(d)), axis=axes, keepdims=True)
        log_sum = np.where(fin, np.log1p((count - 1) + rest),
                           np.log(np.sum(np.exp(d), axis=axes, keepdims=True)))
        return d - log_sum


def _broadcast(logits, rewards, *params):
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    params = [np.asarray(p, dtype=np.float64) for p in params]
    batch = np.broadcast_shapes(logits.shape[:-1], rewards.shape[:-1],
                                *[p.shape for p in params])
    v = logits.shape[-1]
    logits = np.broadcast_to(logits, batch + (v,))
    rewards = np.broadcast_to(rewards, batch + (v,))
    params = [np.broadcast_to(p, batch) for p in params]
    return logits, rewards, params


def _log_p(logits):
    return logits - logsumexp(logits)[..., None]


def _scalar(x):
    x = np.asarray(x, dtype=np.float64)
    return x[()] if x.ndim == 0 else x


def _extreme_set(logits, rewards, upper=True):
    """Mask of the argmax (upper) or argmin reward set of each row, on the support."""
    support = logits > -np.inf
    masked = np.where(support, rewards, -np.inf if upper else np.inf)
    star = masked.max(axis=-1) if upper else masked.min(axis=-1)
    return support & (rewards == star[..., None]), star


def _log_tilted(logits, rewards, lam):
    """(log phi, Lambda) for finite lam."""
    log_p = _log_p(logits)
    support = logits > -np.inf
    # shift rewards by the reward of the dominant outcome (argmax of log p + lam r): for
    # large lam the KL then involves no cancellation of terms of size lam * r
    with np.errstate(invalid="ignore", over="ignore"):
        # (for |lam| > 1 compared as log p / |lam| + sign(lam) r: lam r may overflow)
        big = np.abs(lam[..., None]) > 1.0
        score = np.where(big, log_p / np.where(big, np.abs(lam[..., None]), 1.0)
                         + np.sign(lam[..., None]) * rewards, log_p + lam[..., None] * rewards)
        dominant = np.argmax(np.where(support, score, -np.inf), -1)
        c = np.take_along_axis(rewards, dominant[..., None], axis=-1)[..., 0]
        u = lam[..., None] * (rewards - c[..., None])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        x = np.where(support, log_p + u, -np.inf)
        lc_log = logsumexp(x)
        span = np.abs(lam) * (np.where(support, rewards, -np.inf).max(-1)
                              - np.where(support, rewards, np.inf).min(-1))
        p = np.exp(log_p)
        small = np.sum(np.where(support, p * np.expm1(np.where(support, u, 0.0)), 0.0), axis=-1)
        lc = np.where(span <= 1.0, np.log1p(small), lc_log)
    log_phi = x - lc[..., None]
    return log_phi, lam * c + lc, lc, u, log_p


def tilt_stats(logits, rewards, lam):
    """Reference for :func:`tiltlab.tilt_stats`: returns (log_partition, mean, variance, kl)."""
    logits, rewards, (lam,) = _broadcast(logits, rewards, lam)
    fin = np.isfinite(lam)
    out = [np.empty(lam.shape) for _ in range(4)]
    if np.any(fin):
        lf = lam[fin]
        log_phi, lp, lc, u, log_p = _log_tilted(logits[fin], rewards[fin], lf)
        phi = np.exp(log_phi)
        phi /= phi.sum(axis=-1, keepdims=True)  # exact normalisation for the moments
        r = np.where(phi > 0, rewards[fin], 0.0)
        mean = np.sum(phi * r, axis=-1)
        var = np.sum(phi * (r - mean[..., None]) ** 2, axis=-1)
        # KL(phi || p) = sum phi (log phi - log p) = sum phi (u - lc)
        with np.errstate(invalid="ignore"):
            kl = np.sum(np.where(phi > 0, phi * (u - lc[..., None]), 0.0), axis=-1)
        for arr, val in zip(out, (lp, mean, var, np.maximum(kl, 0.0)), strict=True):
            arr[fin] = val
    if np.any(~fin):
        lg, rw, lm = logits[~fin], rewards[~fin], lam[~fin]
        log_p = _log_p(lg)
        up_mask, up_star = _extreme_set(lg, rw, True)
        lo_mask, lo_star = _extreme_set(lg, rw, False)
        up = lm > 0
        mask = np.where(up[..., None], up_mask, lo_mask)
        star = np.where(up, up_star, lo_star)
        log_mass = logsumexp(np.where(mask, log_p, -np.inf))
        with np.errstate(invalid="ignore"):
            lp = np.where(star == 0, log_mass, lm * star + log_mass)
        out[0][~fin] = lp
        out[1][~fin] = star
        out[2][~fin] = 0.0
        out[3][~fin] = -log_mass
    return tuple(_scalar(o) for o in out)


def tilt(logits, rewards, lam):
    """Reference for :func:`tiltlab.tilt`: normalised log-probabilities of phi_lam."""
    logits, rewards, (lam,) = _broadcast(logits, rewards, lam)
    out = np.empty(logits.shape)
    fin = np.isfinite(lam)
    if np.any(fin):
        out[fin] = _log_tilted(logits[fin], rewards[fin], lam[fin])[0]
    if np.any(~fin):
        lg, rw, lm = logits[~fin], rewards[~fin], lam[~fin]
        up_mask, _ = _extreme_set(lg, rw, True)
        lo_mask, _ = _extreme_set(lg, rw, False)
        mask = np.where((lm > 0)[..., None], up_mask, lo_mask)
        x = np.where(mask, lg, -np.inf)
        out[~fin] = x - logsumexp(x)[..., None]
    return out


def kl_max(logits, rewards):
    """Reference for :func:`tiltlab.kl_max`: ``-log p(argmax set)``."""
    logits, rewards, _ = _broadcast(logits, rewards)
    mask, _ = _extreme_set(logits, rewards, True)
    return _scalar(-logsumexp(np.where(mask, _log_p(logits), -np.inf)))


def solve_lambda(logits, rewards, kl, *, joint=False, max_iter=200):
    """Reference for :func:`tiltlab.solve_lambda`: Newton on kl(lam) with bisection fallback.

    Rows iterate in lockstep; each iteration evaluates :func:`tilt_stats` once.
    """
    if joint:
        logits, rewards, _ = _broadcast(logits, rewards)
        target = float(kl)
        top = float(np.sum(kl_max(logits, rewards)))
        if target >= top:
            return np.inf
        if target == 0:
            return 0.0
        lo, hi, lam = 0.0, np.inf, 1.0
        for _ in range(max_iter):
            _, _, var, k = tilt_stats(logits, rewards, lam)
            f = float(np.sum(k)) - target
            if abs(f) <= 1e-14 * target:  # kl is resolved to a few ulps only
                return lam
            if f < 0:
                lo = lam
            else:
                hi = lam
            d = lam * float(np.sum(var))
            nxt = lam - f / d if d > 0 else np.nan
            if not lo < nxt < hi:
                nxt = 2 * lam if hi == np.inf else 0.5 * (lo + hi)
            if abs(nxt - lam) <= 1e-14 * lam or (hi < np.inf and hi - lo <= 1e-15 * hi):
                return nxt
            lam = nxt
        return lam
    logits, rewards, (kl,) = _broadcast(logits, rewards, kl)
    shape, n = kl.shape, logits.shape[-1]
    lg, rw, target = logits.reshape(-1, n), rewards.reshape(-1, n), kl.reshape(-1)
    top = np.atleast_1d(kl_max(lg, rw))
    lam = np.where(target >= top, np.inf, np.where(target == 0, 0.0, 1.0))
    active = np.isfinite(lam) & (lam > 0)
    lo = np.zeros(target.shape)
    hi = np.full(target.shape, np.inf)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        _, _, var, k = tilt_stats(lg[idx], rw[idx], lam[idx])
        la = lam[idx]
        f = np.atleast_1d(k) - target[idx]
        lo[idx] = np.where(f < 0, la, lo[idx])
        hi[idx] = np.where(f >= 0, la, hi[idx])
        d = la * np.atleast_1d(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            nxt = np.where(d > 0, la - f / d, np.nan)
        bad = ~((nxt > lo[idx]) & (nxt < hi[idx]))
        nxt = np.where(bad, np.where(np.isinf(hi[idx]), 2 * la, 0.5 * (lo[idx] + hi[idx])), nxt)
        done = ((np.abs(nxt - la) <= 1e-14 * la) | (np.abs(f) <= 1e-14 * target[idx])
                | (np.isfinite(hi[idx]) & (hi[idx] - lo[idx] <= 1e-15 * hi[idx])))
        lam[idx] = np.where(np.abs(f) <= 1e-14 * target[idx], la, nxt)
        active[idx[done]] = False
    return _scalar(lam.reshape(shape))


def frontier(logits, rewards, kl):
    """Reference for :func:`tiltlab.frontier`: the tilted mean at lam(kl)."""
    lam = solve_lambda(logits, rewards, kl)
    return tilt_stats(logits, rewards, lam)[1]


def cumulants(logits, rewards, order, lam=0.0):
    """Reference for :func:`tiltlab.cumulants`: central moments of phi_lam, then
    ``kappa_k = c_k - sum_{m=2}^{k-2} C(k-1, m-1) kappa_m c_{k-m}``."""
    logits, rewards, (lam,) = _broadcast(logits, rewards, lam)
    log_phi = tilt(logits, rewards, lam)
    phi = np.exp(log_phi)
    phi /= phi.sum(axis=-1, keepdims=True)
    r = np.where(phi > 0, rewards, 0.0)
    mean = np.sum(phi * r, axis=-1)
    dev = r - mean[..., None]
    central = [np.ones(mean.shape), np.zeros(mean.shape)]
    for j in range(2, order + 1):
        central.append(np.sum(phi * dev**j, axis=-1))
    kappa = [None, mean]
    for k in range(2, order + 1):
        val = central[k].copy()
        for m in range(2, k - 1):
            val -= comb(k - 1, m - 1) * kappa[m] * central[k - m]
        kappa.append(val)
    return np.stack(kappa[1:], axis=-1)


def kl_divergence(logits_p, logits_q):
    """Reference for :func:`tiltlab.kl_divergence`: ``sum p (log p - log q)``."""
    lp, lq, _ = _broadcast(logits_p, logits_q)
    log_p = _log_p(lp)
    log_q = _log_p(lq)
    with np.errstate(invalid="ignore"):
        terms = np.where(lp > -np.inf, np.exp(log_p) * (log_p - log_q), 0.0)
    return _scalar(np.sum(terms, axis=-1))


# ------------------------------------------------------------------ best-of-N (SPEC 3)


def reward_levels(logits, rewards):
    """Reference for :func:`tiltlab.reward_levels` (one row): (values, log_masses)."""
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64) + 0.0
    support = logits > -np.inf
    log_p = logits[support] - logsumexp(logits[support])
    r = rewards[support]
    return _group_logsumexp(r, log_p)


def _group_logsumexp(keys, log_p):
    """Distinct keys (ascending) and the log-sum-exp of log_p over each."""
    order = np.argsort(keys, kind="stable")
    keys, log_p = keys[order], log_p[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    top = np.maximum.reduceat(log_p, starts)
    sizes = np.diff(np.append(starts, len(keys)))
    sums = np.add.reduceat(np.exp(log_p - np.repeat(top, sizes)), starts)
    return keys[starts], top + np.log(sums)


def _bon_level_law(log_mass, log_n):
    """log w_j of the level of the maximum of N draws, from a_j = N log F_j:
    ``w_j = F_j^N (1 - (F_{j-1} / F_j)^N)`` with ``N log(F_j / F_{j-1}) = -N log1p(-m_j / F_j)``
    taken in log space, so a level of tiny mass keeps its relative accuracy; N = 1 is p."""
    log_mass = np.asarray(log_mass, dtype=np.float64)
    log_f = np.logaddexp.accumulate(log_mass)
    log_f[-1] = 0.0
    if log_n == 0.0:
        return log_mass.copy(), log_f, log_f.copy()
    log_s = np.append(np.logaddexp.accumulate(log_mass[::-1])[::-1][1:], -np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.exp(log_s)
        # log(-log F): from the survival when F is close to 1, else from the CDF
        near_one = np.where(s < 1e-8, log_s + s / 2, np.log(-np.log1p(-s)))
        tail = log_s < np.log(0.5)
        ell = np.where(tail, near_one, np.log(-log_f))
        a = np.where(np.isneginf(ell), 0.0, -np.exp(log_n + ell))
        lf = np.where(tail, np.log1p(-s), log_f)              # log F_j
        lf_prev = np.append(-np.inf, lf[:-1])
        log_q = log_mass - lf                                # log(m_j / F_j)
        q = np.exp(log_q)
        log_g = np.where(q < 1e-8, log_q + q / 2,
                         np.where(q <= 0.5, np.log(-np.log1p(-q)), np.log(lf - lf_prev)))
        log_d = log_n + log_g                                # log(a_j - a_{j-1})
        log_w = np.where(log_d < -30.0, a + log_d, a + np.log(-np.expm1(-np.exp(log_d))))
    log_w[0] = a[0]
    return np.where(np.isnan(log_w), -np.inf, log_w), log_f, a


def best_of_n(logits, rewards, log_n):
    """Reference for :func:`tiltlab.best_of_n` with log N given: a dict of arrays
    ``kl, expected_reward, win_rate, total_mass, log_probs`` over the batch."""
    logits, rewards, (log_n,) = _broadcast(logits, rewards, log_n)
    shape, n = log_n.shape, logits.shape[-1]
    lg, rw, ln = logits.reshape(-1, n), rewards.reshape(-1, n), log_n.reshape(-1)
    out = {k: np.empty(len(ln)) for k in ("kl", "expected_reward", "win_rate", "total_mass")}
    out["log_probs"] = np.empty((len(ln), n))
    for i in range(len(ln)):
        values, log_mass = reward_levels(lg[i], rw[i])
        log_w, log_f, _ = _bon_level_law(log_mass, ln[i])
        w = np.exp(log_w)
        f_prev = np.append(0.0, np.exp(log_f[:-1]))
        out["kl"][i] = np.sum(np.where(w > 0, w * (log_w - log_mass), 0.0))
        out["expected_reward"][i] = np.sum(w * values)
        out["win_rate"][i] = np.sum(w * (f_prev + np.exp(log_mass) / 2))
        out["total_mass"][i] = np.sum(w)
        level = np.searchsorted(values, rw[i] + 0.0)
        log_p = lg[i] - logsumexp(lg[i])
        support = lg[i] > -np.inf
        lvl = np.clip(level, 0, len(values) - 1)
        out["log_probs"][i] = np.where(support, log_p + log_w[lvl] - log_mass[lvl], -np.inf)
    return {k: (v.reshape(shape + ((n,) if k == "log_probs" else ())))
            for k, v in out.items()}


def sample_best_of_n(logits, rewards, log_n, size, rng):
    """Reference sampler for one row: the level of the maximum by inverse CDF of F^N
    (np.searchsorted), the outcome within the level by Generator.choice."""
    rng = np.random.default_rng(rng)
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64) + 0.0
    values, log_mass = reward_levels(logits, rewards)
    _, _, a = _bon_level_law(log_mass, float(log_n))
    cdf = np.exp(a)
    levels = np.searchsorted(cdf, rng.random(size), side="right")
    out = np.empty(size, dtype=np.int64)
    p = np.exp(logits - logsumexp(logits))
    for j in np.unique(levels):
        members = np.flatnonzero((rewards == values[j]) & (logits > -np.inf))
        mask = levels == j
        out[mask] = rng.choice(members, size=int(mask.sum()), p=p[members] / p[members].sum())
    return out


def simulate_best_of_n(logits, rewards, n, size, rng):
    """Reference naive best-of-N for one row: Generator.choice draws n candidates per
    sample, the first of maximal reward is kept."""
    rng = np.random.default_rng(rng)
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    p = np.exp(logits - logsumexp(logits))
    cand = rng.choice(len(p), size=(size, int(n)), p=p)
    return cand[np.arange(size), np.argmax(rewards[cand], axis=1)]



def sample_categorical(logits, size, rng):
    """Reference categorical sampler for one row (SPEC 2.1): inverse CDF of
    softmax(logits) by np.searchsorted on the cumulative sums (the same law as
    tiltlab.sample_categorical, not the same draws)."""
    rng = np.random.default_rng(rng)
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - np.max(logits))
    cdf = np.cumsum(p)
    u = rng.random(size) * cdf[-1]
    out = np.searchsorted(cdf, u, side="right")
    # rounding past the total: the last outcome of positive probability
    return np.minimum(out, np.flatnonzero(p > 0)[-1]).astype(np.int64)


def sample_tilted(logits, rewards, lam, size, rng):
    """Reference sampler of the tilted policy phi_lam for one row (SPEC 2.1): the
    categorical sampler above on log phi_lam = tilt(logits, rewards, lam)."""
    return sample_categorical(tilt(logits, rewards, lam), size, rng)

# ------------------------------------------------------- memoryless sequences (SPEC 4)


def _gcd_with_tolerance(a, b, tol):
    """Euclid on floats; remainders at most ``tol`` count as zero. ``np.fmod`` is exact,
    and taking the nearer of the two remainders keeps ``k b - tiny`` from being a step."""
    a, b = max(a, b), min(a, b)
    while b > tol:
        rem = float(np.fmod(a, b))
        a, b = b, min(rem, b - rem)
    return a


def lattice_step(rewards, logits=None, *, rtol=1e-9):
    """Reference lattice detection (SPEC 4): the largest ``h > 0`` such that, in every row,
    ``r(y) - min r`` (over the outcomes with a finite logit) is an integer multiple of ``h``.

    Rows share one ``h`` but each has its own offset (its minimum). The tolerance is
    absolute, ``tol = rtol * max |r|``: differences within ``tol`` of each other are equal.
    ``h`` comes from Euclid's algorithm with that tolerance, refined to ``d_max / k_max``
    and checked on every difference. All rewards equal: ``h = 1.0``.

    Any real set is within ``tol`` of a fine enough lattice, so a step below ``1000 tol``
    (more than ``~1e-3 / rtol`` lattice points per row) is rejected as non-lattice.

    Raises ValueError for non-lattice rewards, suggesting ``step=`` (quantisation).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if logits is None:
        logits = np.zeros(rewards.shape[-1:])
    logits = np.asarray(logits, dtype=np.float64)
    shape = np.broadcast_shapes(logits.shape, rewards.shape)
    lg = np.broadcast_to(logits, shape).reshape(-1, shape[-1])
    rw = np.broadcast_to(rewards, shape).reshape(-1, shape[-1])
    support = lg > -np.inf
    scale = float(np.max(np.abs(np.where(support, rw, 0.0))))
    tol = rtol * scale
    low = np.where(support, rw, np.inf).min(axis=-1)
    diffs = (np.where(support, rw, low[:, None]) - low[:, None]).ravel()
    diffs = np.unique(diffs[diffs > tol])
    if diffs.size == 0:
        return 1.0
    h = float(diffs[0])
    for d in diffs[1:]:
        h = _gcd_with_tolerance(h, float(d), tol)
    k_max = np.rint(diffs[-1] / h)
    h = float(diffs[-1] / k_max) if k_max > 0 else h
    residual = np.abs(diffs - np.rint(diffs / h) * h)
    if h < 1000 * tol or np.any(residual > tol):
        raise ValueError(
            f"rewards are not on a lattice: no step h > {1000 * tol:.3g} makes every reward "
            f"minus its row minimum an integer multiple of h within rtol={rtol:g}; pass step= "
            "to quantise the rewards to a lattice of that step")
    return h


def _lattice_rows(logits, rewards, length, step):
    """Per-position data on the lattice: (stationary, log_p rows, integer k rows, offsets, h).

    1-D ``logits`` and ``rewards`` give one stationary row; otherwise rows are broadcast to
    ``(length, V)``. With ``step`` given, rewards are quantised: ``k = rint((r - o) / step)``.
    Entries of ``k`` where the logit is ``-inf`` are 0 (unused).
    """
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    stationary = logits.ndim == 1 and rewards.ndim == 1
    v = max(logits.shape[-1], rewards.shape[-1])
    rows = (1, v) if stationary else (int(length), v)
    lg = np.broadcast_to(logits, rows)
    rw = np.broadcast_to(rewards, rows)
    h = lattice_step(rw, lg) if step is None else float(step)
    support = lg > -np.inf
    offsets = np.where(support, rw, np.inf).min(axis=-1)
    k = np.where(support, np.rint((rw - offsets[:, None]) / h), 0).astype(np.int64)
    log_p = lg - logsumexp(lg)[:, None]
    return stationary, log_p, k, offsets, h


def _level_law(log_p, k):
    """log P(k) for k = 0..max k of one row (outcomes with -inf log p contribute nothing)."""
    support = log_p > -np.inf
    levels, log_mass = _group_logsumexp(k[support], log_p[support])
    law = np.full(int(levels.max()) + 1, -np.inf)
    law[levels] = log_mass
    return law


def _log_convolve(a, b, block=1 << 20):
    """Exact log-space convolution ``out[s] = logsumexp_u (a[u] + b[s - u])``.

    Row s of a sliding window over ``b`` padded with -inf holds ``b[s - u]`` for all u
    (reversed); blocks of rows are reduced by :func:`logsumexp` (max-shifted sums of exp).
    """
    if len(a) > len(b):
        a, b = b, a
    na, nb = len(a), len(b)
    pad = np.full(na - 1, -np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, b, pad]), na)
    a_rev = a[::-1]
    out = np.empty(na + nb - 1)
    rows = max(1, block // na)
    for start in range(0, len(out), rows):
        out[start:start + rows] = logsumexp(windows[start:start + rows] + a_rev, axis=1)
    return out


def lattice_log_pmf(logits, rewards, length, step=None):
    """Reference law of ``R = sum_i r_i(y_i)`` on its lattice (SPEC 4), by exact log-space
    direct convolution (no FFT): slow, for tests.

    ``logits`` and ``rewards`` are ``(V,)`` (stationary: the same row at each of ``length``
    positions, law raised to the power ``length`` by repeated squaring) or ``(length, V)``
    (one row per position, either may be ``(V,)``; positions folded in one by one).
    Row i's rewards are ``o_i + h k`` with ``o_i`` its minimum over outcomes with finite
    logit, ``h`` = ``step`` (quantising the rewards) or :func:`lattice_step`.

    Returns ``(values, log_pmf)`` with ``values = sum_i o_i + h * arange(sum_i K_i + 1)`` and
    ``log_pmf = log P(R = values)``, ``-inf`` where the probability is exactly zero.
    """
    stationary, log_p, k, offsets, h = _lattice_rows(logits, rewards, length, step)
    length = int(length)
    if stationary:
        base = _level_law(log_p[0], k[0])
        law = np.zeros(1)
        n = length
        while n:
            if n & 1:
                law = _log_convolve(law, base)
            n >>= 1
            if n:
                base = _log_convolve(base, base)
        origin = length * offsets[0]
    else:
        law = np.zeros(1)
        for i in range(length):
            law = _log_convolve(law, _level_law(log_p[i], k[i]))
        origin = float(np.sum(offsets))
    return origin + h * np.arange(len(law)), law


def sequence_best_of_n(logits, rewards, length, log_n, step=None):
    """Reference best-of-N over length-n memoryless sequences (SPEC 4), on the lattice law of
    R from :func:`lattice_log_pmf` with the level machinery of SPEC 3 (levels = lattice
    points of positive mass).

    Returns a dict: ``values`` (the lattice), ``log_probs`` (``log pi_N(R = value)``, -inf
    off the levels), ``expected_reward``, ``kl`` (``KL(pi_N || p^n) = sum_s w_s log(w_s/m_s)``),
    ``win_rate`` (ties half), ``total_mass`` (``sum_s w_s``).
    """
    values, log_pmf = lattice_log_pmf(logits, rewards, length, step)
    return _lattice_best_of_n(values, log_pmf, log_n)


def _lattice_best_of_n(values, log_pmf, log_n):
    """Best-of-N on a lattice law of R (the dict of :func:`sequence_best_of_n`)."""
    levels = log_pmf > -np.inf
    vals, log_mass = values[levels], log_pmf[levels]
    # the convolved law sums to 1 only to ~length * eps: renormalise so that F_L = 1 holds
    log_mass = log_mass - logsumexp(log_mass)
    log_w, log_f, _ = _bon_level_law(log_mass, float(log_n))
    w = np.exp(log_w)
    f_prev = np.append(0.0, np.exp(log_f[:-1]))
    log_probs = np.full(len(values), -np.inf)
    log_probs[levels] = log_w
    with np.errstate(invalid="ignore"):
        kl = np.sum(np.where(w > 0, w * (log_w - log_mass), 0.0))
    return {
        "values": values,
        "log_probs": log_probs,
        "expected_reward": float(np.sum(w * vals)),
        "kl": float(kl),
        "win_rate": float(np.sum(w * (f_prev + np.exp(log_mass) / 2))),
        "total_mass": float(np.sum(w)),
    }


def sequence_kl_to_tilted(result, logits, rewards, length, lam, step=None):
    """``KL(pi_N || phi_lam^n) = KL(pi_N || p^n) - lam E R + sum_i Lambda_i(lam)`` (SPEC 4)
    for a :func:`sequence_best_of_n` result (finite ``lam``; same ``logits``, ``rewards``,
    ``length``, ``step``).

    Rewards are measured from the row offsets, ``r_i = o_i + h k``: the identity is applied to
    ``h k`` (``E[R] - sum_i o_i = h E[k]`` from the lattice index, ``Lambda_i`` of ``h k``),
    which avoids cancelling terms of size ``lam * sum_i o_i``.
    """
    stationary, log_p, k, _, h = _lattice_rows(logits, rewards, length, step)
    log_partition = np.atleast_1d(tilt_stats(log_p, h * k, float(lam))[0])
    total = int(length) * log_partition[0] if stationary else np.sum(log_partition)
    index = np.arange(len(result["log_probs"]))
    mean_index = np.sum(np.exp(result["log_probs"]) * index)
    return float(result["kl"] - lam * h * mean_index + total)


# ---- large deviations and Rényi quantities (SPEC section 4), one distribution ----
def scaled_cgf(logits, rewards, t, lam=0.0):
    """Reference for :func:`tiltlab.scaled_cgf` (one row, scalar t and lam):
    ``Lambda(lam + t) - Lambda(lam)``."""
    return tilt_stats(logits, rewards, lam + t)[0] - tilt_stats(logits, rewards, lam)[0]


def rate_function(logits, rewards, x, lam=0.0, *, max_iter=400):
    """Reference for :func:`tiltlab.rate_function` (one row, scalar x and finite lam):
    ``(theta - lam) x - Lambda(theta) + Lambda(lam)`` with ``mean(theta) = x`` found by
    bisection; the end points give ``-log phi_lam(extreme set)``, outside ``inf``."""
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    support = logits > -np.inf
    r_lo, r_hi = rewards[support].min(), rewards[support].max()
    if x < r_lo or x > r_hi:
        return np.inf
    if x == r_hi or x == r_lo:
        mask = support & (rewards == x)
        log_phi = tilt(logits, rewards, lam)
        return float(-logsumexp(np.where(mask, log_phi, -np.inf)))
    lo, hi = -1.0, 1.0
    while tilt_stats(logits, rewards, lam + lo)[1] > x:
        lo *= 2.0
    while tilt_stats(logits, rewards, lam + hi)[1] < x:
        hi *= 2.0
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if tilt_stats(logits, rewards, lam + mid)[1] < x:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    return float(t * x - scaled_cgf(logits, rewards, t, lam))


def _normalised(logits):
    logits = np.asarray(logits, dtype=np.float64)
    return logits - logsumexp(logits)


def renyi_divergence(logits_p, logits_q, alpha):
    """Reference for :func:`tiltlab.renyi_divergence` (one pair, scalar alpha), straight
    from the definitions: ``(1/(alpha-1)) log sum P^alpha Q^(1-alpha)``; KL at 1, the log
    of the largest ratio at inf, ``-log Q(supp P)`` at 0."""
    lp, lq = _normalised(logits_p), _normalised(logits_q)
    on = lp > -np.inf
    if alpha == 1.0:
        return kl_divergence(logits_p, logits_q)
    if np.isinf(alpha):
        return float(np.max(lp[on] - lq[on]))
    if alpha == 0.0:
        return float(-logsumexp(np.where(on, lq, -np.inf)))
    if alpha > 1.0 and np.any(on & (lq == -np.inf)):
        return np.inf
    both = on & (lq > -np.inf)
    s = logsumexp(np.where(both, alpha * lp + (1.0 - alpha) * np.where(both, lq, 0.0), -np.inf))
    return float(s / (alpha - 1.0))


def renyi_cross_entropy(logits_p, logits_q, alpha):
    """Reference for :func:`tiltlab.renyi_cross_entropy` (one pair, scalar alpha):
    ``(1/(1-alpha)) log sum P Q^(alpha-1)``, the Shannon cross entropy at 1 and
    ``-log max_{supp P} Q`` at inf."""
    lp, lq = _normalised(logits_p), _normalised(logits_q)
    on = lp > -np.inf
    if alpha <= 1.0 and np.any(on & (lq == -np.inf)):
        return np.inf
    if np.isinf(alpha):
        return float(-np.max(lq[on]))
    if alpha == 1.0:
        return float(-np.sum(np.exp(lp[on]) * lq[on]))
    both = on & (lq > -np.inf)
    s = logsumexp(np.where(both, lp + (alpha - 1.0) * np.where(both, lq, 0.0), -np.inf))
    return float(s / (1.0 - alpha))


# ---- soft best-of-n (tiltlab.policies): the two quadrature loops in NumPy, and the law ----

class _SoftStagesNumpy:
    """NumPy twins of csrc/tl_soft.c, the two hot loops of tiltlab.policies' quadrature
    (tests/test_policies.py runs that quadrature with these in place of the compiled loops;
    :func:`soft_best_of_n` below is an independent evaluation of the law)."""

    @staticmethod
    def nodes(u, bon, boff, c, m0, P, d, md):
        R = P.size // max(c.size, 1)
        P = P.reshape(c.size, R)
        width = boff - bon
        total = int(width.sum())
        if not total:
            return
        bounds = np.searchsorted(np.cumsum(width), np.arange(0, total, 2_000_000), "left")
        bounds = np.unique(np.concatenate([bounds, [u.size]]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            wv = width[a:b]
            node = np.repeat(np.arange(a, b), wv)
            k = np.repeat(bon[a:b] - (np.cumsum(wv) - wv), wv) + np.arange(node.size)
            y = -np.exp(u[node] + c[k])
            poly = np.zeros(node.size)
            for r in range(R - 1, -1, -1):
                poly = (poly + P[k, r]) * y
            e = np.exp(y)
            d[a:b] += np.bincount(node - a, weights=m0[k] * -np.expm1(y) - e * poly,
                                  minlength=b - a)
            md[a:b] += np.bincount(node - a, weights=e * (m0[k] + poly), minlength=b - a)

    @staticmethod
    def bins(u, logA, wlo, whi, c, mx, U):
        B = c.size
        R = U.size // max(B, 1) - 1
        U = U.reshape(B, R + 1)
        width = int(np.max(whi - wlo)) if B else 0
        chunk = max(1, int(2_000_000 // max(width, 1)))
        for c0 in range(0, B, chunk):
            sl = slice(c0, c0 + chunk)
            base = wlo[sl, None] + np.arange(width)[None, :]
            ok = base < whi[sl, None]
            bi = np.minimum(base, u.size - 1)
            with np.errstate(over="ignore"):
                y = -np.exp(u[bi] + c[sl, None])
                v = np.where(ok, logA[bi] + y, -np.inf)
            top = v.max(axis=1)
            mx[sl] = top
            with np.errstate(invalid="ignore"):
                w = np.where(ok, np.exp(v - top[:, None]), 0.0)
            for r in range(R + 1):
                U[sl, r] = np.sum(np.where(ok, w * y**r, 0.0), axis=1)


def soft_best_of_n(logits, rewards, n, temperature):
    """log pi(y) of soft best-of-n (twin of tiltlab.soft_best_of_n for 0 < temperature < inf,
    n > 1), from the integral form written out directly:
    ``P(level j) ∝ m_j w_j ∫_0^∞ exp(-t w_j) M(t)^(n-1) dt``, ``M(t) = sum_k m_k e^{-t w_k}``,
    ``w_j = exp((v_j - v_max) / temperature)``, by the trapezoid rule in ``u = log t`` over
    the whole line (step 1/16, 1/32 for non-integer n), every node in log space; shares
    nothing with tiltlab.policies' quadrature (no blocks, bins or series)."""
    lg = np.asarray(logits, dtype=np.float64)
    values, log_m = reward_levels(logits, rewards)
    keep = log_m > -np.inf
    values, log_m = values[keep], log_m[keep]
    m = np.exp(log_m)
    n = float(n)
    h = 1.0 / 16 if n == int(n) else 1.0 / 32
    lw = (values - values[-1]) / float(temperature)     # log w_j <= 0, ascending
    # below u = -60 - log n every level is on (n t w_k < e^-60): there M = 1 and
    # exp(-t w_j) = 1, so those nodes are a geometric series; above -lw_0 + 8 all are off
    i_lo = int(np.floor((-60.0 - np.log(n)) / h))
    i_hi = int(np.ceil((-lw[0] + 8.0) / h))
    u = np.arange(i_lo, i_hi + 1) * h
    # log M(u): levels with u + lw_k < -40 count whole (exp(-e^x) = 1 to 4e-18), those above
    # 40 not at all (exp(-e^40) = 0 in double), the band in between term by term
    csum = np.concatenate([[0.0], np.cumsum(m)])
    first = np.searchsorted(lw, -40.0 - u, side="left")
    last = np.searchsorted(lw, 40.0 - u, side="right")
    log_M = np.empty(u.size)
    rows = max(1, (1 << 20) // max(1, int(np.max(last - first))))
    for a in range(0, u.size, rows):
        fa, la = first[a:a + rows], last[a:a + rows]
        k = fa[:, None] + np.arange(max(1, int(np.max(la - fa))))[None, :]
        ok = k < la[:, None]
        k = np.minimum(k, lw.size - 1)
        with np.errstate(over="ignore", divide="ignore"):
            ex = np.where(ok, np.exp(u[a:a + rows, None] + lw[k]), np.inf)
            # 1 - M (the mass switched off), accurate while small; else M summed directly
            gone = np.sum(np.where(ok, m[k] * -np.expm1(-ex), 0.0), axis=1) + csum[-1] - csum[la]
            direct = np.logaddexp(np.log(csum[fa]), logsumexp(log_m[k] - ex, axis=1))
            log_M[a:a + rows] = np.where(gone < 0.5, np.log1p(-np.minimum(gone, 0.5)), direct)
    # Every sum is kept in a frame near the nodes it adds (the values of u reach
    # spread / temperature, up to 1e5: adding them to log-weights would lose ~1e-11).
    # Node i weighs h e^(u_i) M_i^(n-1); r_i is its log without e^(u_i).
    r = np.log(h) + (n - 1.0) * log_M
    # q[i] = log sum_{i' < i} h e^(u_i' - u_i) M_i'^(n-1): prefix sums in the frame of node
    # i, by blocks of 1024 nodes (within a block in the frame of its first node), with the
    # nodes below u_lo (M = 1) as the geometric series h e^-h / (1 - e^-h)
    q = np.empty(u.size + 1)
    carry = np.log(h) - np.log(np.expm1(h))             # frame: node i_lo
    for a in range(0, u.size + 1, 1024):
        b = min(a + 1024, u.size + 1)
        d = np.arange(b - a) * h                         # u_i - u_a, exact
        local = np.logaddexp.accumulate(np.concatenate([[-np.inf], r[a:b - 1] + d[:b - a - 1]])
                                        if b - 1 > a else [-np.inf])
        q[a:b] = np.logaddexp(carry, local[:b - a]) - d
        if b <= u.size:
            carry = np.logaddexp(carry, logsumexp(r[a:b] + d)) - (b - a) * h
    starts = np.searchsorted(u, -40.0 - lw, side="left")  # before: exp(-t w_j) = 1 to 4e-18
    ends = np.searchsorted(u, 8.0 - lw, side="right")     # after: exp(-t w_j) < e^-2980
    # level j in its own frame x = u + lw_j (u_i and -lw_j nearly cancel: exactly)
    u_ext = np.append(u, u[-1] + h)
    head = (u_ext[starts] + lw) + q[starts]              # the nodes before the band
    width = max(1, int(np.max(ends - starts)))
    band = np.empty(lw.size)
    rows = max(1, (1 << 20) // width)
    for a in range(0, lw.size, rows):
        sa, ea = starts[a:a + rows], ends[a:a + rows]
        i = sa[:, None] + np.arange(width)[None, :]
        ok = i < ea[:, None]
        i = np.minimum(i, u.size - 1)
        x = u[i] + lw[a:a + rows, None]
        with np.errstate(over="ignore"):
            band[a:a + rows] = logsumexp(np.where(ok, r[i] + x - np.exp(x), -np.inf), axis=1)
    log_s = np.logaddexp(head, band)
    log_p = log_m + log_s
    log_pi = log_p - logsumexp(log_p)
    lp = lg - logsumexp(lg)
    j = np.searchsorted(values, np.asarray(rewards, dtype=np.float64))
    j = np.clip(j, 0, values.size - 1)
    out = lp - log_m[j] + log_pi[j]
    return np.where(np.isfinite(lp), out, -np.inf)


# ---------------------------------------------------------------------------------------
# Markov token models (SPEC section 9): backward recursions, the (position, state, reward)
# dynamic program, the Perron root.  Plain loops over positions, whole arrays per position.


def _markov_inputs(initial_logits, transition_logits, rewards, initial_rewards=None):
    """(log p0 (V,), log P (V, V), r0 (V,), r (V, V)) of SPEC 9; rewards where the initial
    token or the transition is impossible are set to 0 (never read)."""
    l0 = np.asarray(initial_logits, dtype=np.float64)
    lt = np.asarray(transition_logits, dtype=np.float64)
    rw = np.asarray(rewards, dtype=np.float64)
    log_p0 = l0 - logsumexp(l0)
    log_tr = lt - logsumexp(lt, axis=-1)[:, None]
    if rw.ndim == 1:                       # per token: r0 = r, r(s, s') = r(s')
        r0 = rw.copy()
        r = np.broadcast_to(rw, lt.shape).copy()
    else:                                  # per transition: r0 = initial_rewards or 0
        r = rw.copy()
        r0 = (np.zeros(l0.shape) if initial_rewards is None
              else np.asarray(initial_rewards, dtype=np.float64).copy())
    r0 = np.where(log_p0 > -np.inf, r0, 0.0)
    r = np.where(log_tr > -np.inf, r, 0.0)
    return log_p0, log_tr, r0, r


def _log_mean_exp(log_w, g):
    """``log sum_j e^{log_w_j + g_j}`` over the last axis for normalised rows ``log_w``; rows
    whose ``|g| <= 1`` take ``log1p(sum w expm1(g))``, so a small result (a small tilt)
    keeps its relative accuracy and ``g = 0`` gives exactly 0."""
    support = log_w > -np.inf
    g = np.where(support, g, 0.0)
    small = np.max(np.abs(g), axis=-1) <= 1.0
    direct = logsumexp(np.where(support, log_w + g, -np.inf), axis=-1)
    with np.errstate(all="ignore"):        # (the branch not taken may overflow)
        near = np.log1p(np.sum(np.where(support, np.exp(log_w) * np.expm1(g), 0.0), axis=-1))
    return np.where(small, near, direct)


def _expm1_minus_x(x):
    """``e^x - 1 - x`` without cancellation (series below |x| = 0.1)."""
    x = np.asarray(x, dtype=np.float64)
    series = np.zeros(x.shape)
    term = x.copy()
    for j in range(2, 20):
        term = term * x / j
        series = series + term
    return np.where(np.abs(x) < 0.1, series, np.expm1(x) - x)


def _row_kl(log_w, g):
    """``KL(q || w)`` of each row, ``q proportional to w e^g`` (normalised rows ``log_w``).
    Rows with ``|g - E_w g| <= 1`` use the centred second-order form (no first-order
    cancellation): with ``h = g - E_w g``, ``S1 = E_w h`` (rounding only),
    ``S2 = E_w h expm1(h)``, ``S3 = E_w (expm1(h) - h)``, ``A = log1p(S1 + S3)``:
    ``KL = S2 e^-A + S1 expm1(-A) - S3 - (log1p(S1 + S3) - S1 - S3)``."""
    support = log_w > -np.inf
    w = np.where(support, np.exp(log_w), 0.0)
    g = np.where(support, g, 0.0)
    direct = np.asarray(tilt_stats(log_w, g, 1.0)[3])
    h = np.where(support, g - np.sum(w * g, axis=-1, keepdims=True), 0.0)
    s1 = np.sum(w * h, axis=-1)
    with np.errstate(all="ignore"):        # (the branch not taken may overflow)
        s2 = np.sum(w * h * np.expm1(h), axis=-1)
        s3 = np.sum(w * _expm1_minus_x(h), axis=-1)
        y = s1 + s3
        a = np.log1p(y)
        d = np.where(np.abs(y) < 0.1, _log1p_minus_x(y), a - y)
        near = s2 * np.exp(-a) + s1 * np.expm1(-a) - s3 - d
    small = np.max(np.abs(h), axis=-1) <= 1.0
    return np.where(small, np.maximum(near, 0.0), direct)


def _log1p_minus_x(y):
    """``log1p(y) - y`` for |y| < 0.1 by its series."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros(y.shape)
    power = y.copy()
    for j in range(2, 24):
        power = power * y
        out = out + (-1) ** (j + 1) * power / j
    return out


def _markov_backward(log_tr, r, length, lam):
    """Backward pass at a finite tilt: lists (index t = 1 .. n-1, 0-based t-1) of the log
    tilted transition rows ``log q_t`` and the per-row tilt rewards ``g_t``, and the arrays
    ``log beta_1``, ``m_1``, ``v_1`` (SPEC 9)."""
    v = log_tr.shape[0]
    support = log_tr > -np.inf
    log_beta = np.zeros(v)
    m = np.zeros(v)
    var = np.zeros(v)
    log_q, g_rows = [], []
    for _ in range(length - 1):
        g = np.where(support, lam * r + log_beta[None, :], 0.0)
        x = np.where(support, log_tr + g, -np.inf)
        new_log_beta = _log_mean_exp(log_tr, g)
        lq = x - new_log_beta[:, None]
        q = np.exp(lq)
        y = r + m[None, :]
        new_m = np.sum(q * y, axis=1)
        new_var = np.sum(q * (var[None, :] + (y - new_m[:, None]) ** 2), axis=1)
        log_q.append(lq)
        g_rows.append(g)
        log_beta, m, var = new_log_beta, new_m, new_var
    return log_q[::-1], g_rows[::-1], log_beta, m, var


def markov_tilt_stats(initial_logits, transition_logits, rewards, length, lam, *,
                      initial_rewards=None):
    """Reference for ``Markov.tilt_stats`` (SPEC 9): ``(log Z_n, E R, Var R, KL)`` under
    ``phi_lam = p e^{lam R} / Z_n`` over whole sequences of a first-order Markov chain.

    Parameters
    ----------
    initial_logits : array_like, shape (V,)
        Logits of the first token.
    transition_logits : array_like, shape (V, V)
        Row ``s``: logits of the token that follows ``s``.
    rewards : array_like, shape (V,) or (V, V)
        Per-token rewards (``R = sum_t r(y_t)``) or per-transition rewards
        (``R = r0(y_1) + sum_t r(y_t, y_{t+1})``).
    length : int
        Sequence length ``n >= 1``.
    lam : float
        Finite tilt.
    initial_rewards : array_like, shape (V,), optional
        ``r0`` for per-transition rewards (default 0: the first token earns nothing).

    Returns
    -------
    tuple of float
        ``log Z_n(lam)`` from the log-space backward recursion; ``E R`` and ``Var R`` from
        its first and second derivatives (conditional means and variances carried
        backwards); ``KL(phi_lam || p)`` by the chain rule, a sum of per-row single-step
        tilt KLs (non-negative terms, no cancellation at small ``lam``).

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> lz, mean, var, kl = ref.markov_tilt_stats(np.log([0.7, 0.3]),
    ...                                           np.log([[0.7, 0.3], [0.7, 0.3]]),
    ...                                           [0.0, 1.0], 2, 1.0)
    >>> print(f"{lz:.10f} {kl:.10f}")           # twice the Bernoulli values of SPEC 8
    0.8314704437 0.2447326088
    """
    log_p0, log_tr, r0, r = _markov_inputs(initial_logits, transition_logits, rewards,
                                           initial_rewards)
    length = int(length)
    lam = float(lam)
    log_q, g_rows, log_beta, m, var = _markov_backward(log_tr, r, length, lam)
    support0 = log_p0 > -np.inf
    g0 = np.where(support0, lam * r0 + log_beta, 0.0)
    x0 = np.where(support0, log_p0 + g0, -np.inf)
    log_z = float(_log_mean_exp(log_p0, g0))
    phi1 = np.exp(x0 - log_z)
    y0 = r0 + m
    mean = float(np.sum(phi1 * y0))
    variance = float(np.sum(phi1 * (var + (y0 - mean) ** 2)))
    # KL by the chain rule: the first token's tilt, then each position's rows weighted by
    # the phi-marginal pi_t of the state they leave
    kl = float(_row_kl(log_p0, g0))
    pi = phi1
    for lq, g in zip(log_q, g_rows, strict=True):
        row_kl = _row_kl(log_tr, g)
        kl += float(np.sum(np.where(pi > 0, pi * row_kl, 0.0)))
        pi = pi @ np.exp(lq)
    return log_z, mean, variance, kl


def markov_tilted_policy(initial_logits, transition_logits, rewards, length, lam, *,
                         initial_rewards=None):
    """Reference for the optimal policy of ``Markov`` (SPEC 9): ``phi_lam`` as a
    position-dependent Markov chain.

    Returns
    -------
    log_initial : ndarray, shape (V,)
        ``log phi_lam(y_1)``.
    log_transitions : ndarray, shape (length - 1, V, V)
        Entry ``t - 1`` holds ``log q_t(s, s') = log phi_lam(y_{t+1} = s' | y_t = s)``.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> l0, lq = ref.markov_tilted_policy([0.0, 0.0], np.log([[0.9, 0.1], [0.1, 0.9]]),
    ...                                   [0.0, 1.0], 3, 0.0)
    >>> np.allclose(np.exp(lq[1]), [[0.9, 0.1], [0.1, 0.9]])     # lam = 0: p itself
    True
    """
    log_p0, log_tr, r0, r = _markov_inputs(initial_logits, transition_logits, rewards,
                                           initial_rewards)
    log_q, _, log_beta, _, _ = _markov_backward(log_tr, r, int(length), float(lam))
    x0 = np.where(log_p0 > -np.inf, log_p0 + float(lam) * r0 + log_beta, -np.inf)
    v = log_tr.shape[0]
    trans = np.stack(log_q) if log_q else np.empty((0, v, v))
    return x0 - logsumexp(x0), trans


def _markov_lattice(log_p0, log_tr, r0, r, step):
    """(k0, k, offset_initial, offset_transition, h) of SPEC 9's lattice: integer levels of
    the initial and transition rewards over their supports, reduced to the coarsest lattice."""
    s0, st = log_p0 > -np.inf, log_tr > -np.inf
    o0, o1 = float(r0[s0].min()), float(r[st].min())
    d0, d1 = np.where(s0, r0 - o0, 0.0), np.where(st, r - o1, 0.0)
    if step is None:
        pooled = np.concatenate([d0[s0], d1[st]])
        h = lattice_step(pooled, np.zeros(pooled.shape))
    else:
        h = float(step)
    k0 = np.where(s0, np.rint(d0 / h), 0).astype(np.int64)
    k = np.where(st, np.rint(d1 / h), 0).astype(np.int64)
    g = int(np.gcd.reduce(np.concatenate([k0[s0], k[st]])))
    if g > 1:
        k0, k, h = k0 // g, k // g, h * g
    return k0, k, o0, o1, h


def _markov_forward_tables(log_p0, log_tr, k0, k, length):
    """The (position, state, reward) DP of SPEC 9: list of ``L_t`` (V, K_t + 1) arrays,
    ``L_t[s, j] = log P(y_t = s, K_{<=t} = j)``."""
    v = log_p0.shape[0]
    kmax0 = int(k0.max())
    kmax = int(np.where(log_tr > -np.inf, k, 0).max())
    table = np.full((v, kmax0 + 1), -np.inf)
    table[np.arange(v), k0] = log_p0
    tables = [table]
    for _ in range(length - 1):
        width = table.shape[1] + kmax
        j = np.arange(width)
        idx = j[None, None, :] - k[:, :, None]                       # (s, s', j)
        ok = (idx >= 0) & (idx < table.shape[1])
        gathered = np.take_along_axis(table[:, None, :], np.clip(idx, 0, table.shape[1] - 1),
                                      axis=2)
        x = np.where(ok, gathered + log_tr[:, :, None], -np.inf)
        table = logsumexp(x, axis=0)                                 # (s', j)
        tables.append(table)
    return tables


def markov_reward_law(initial_logits, transition_logits, rewards, length, *, step=None,
                      initial_rewards=None):
    """Reference law of ``R`` for a Markov chain (SPEC 9) by the exact log-space dynamic
    program over (position, state, reward): slow (``O(n V^2 K)``), for tests.

    Rewards must lie on a lattice ``o0 + h k0`` (initial) and ``o1 + h k`` (transitions)
    with one step ``h`` (detected by :func:`lattice_step` on the pooled differences, or
    ``step=`` to quantise; then reduced to the coarsest lattice), so that
    ``R = o0 + (n - 1) o1 + h K``.  Only sums of positive terms in log space: every
    probability keeps its relative accuracy, down to 1e-300 and far below.

    Returns
    -------
    values, log_pmf : ndarray
        The lattice values from the smallest to the largest reachable ``R`` and
        ``log P(R = value)`` (``-inf`` at unreachable points between them).

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> values, log_pmf = ref.markov_reward_law([0.0, -np.inf], [[0.0, 0.0], [-np.inf, 0.0]],
    ...                                         [0.0, 1.0], 3)
    >>> values.tolist(), np.round(np.exp(log_pmf), 12).tolist()
    ([0.0, 1.0, 2.0], [0.25, 0.25, 0.5])
    """
    log_p0, log_tr, r0, r = _markov_inputs(initial_logits, transition_logits, rewards,
                                           initial_rewards)
    length = int(length)
    k0, k, o0, o1, h = _markov_lattice(log_p0, log_tr, r0, r, step)
    law = logsumexp(_markov_forward_tables(log_p0, log_tr, k0, k, length)[-1], axis=0)
    reach = np.flatnonzero(law > -np.inf)
    lo, hi = int(reach[0]), int(reach[-1])
    values = o0 + (length - 1) * o1 + h * np.arange(lo, hi + 1, dtype=np.float64)
    return values, law[lo:hi + 1]


def markov_best_of_n(initial_logits, transition_logits, rewards, length, log_n, *,
                     step=None, initial_rewards=None):
    """Reference best-of-N over Markov sequences (SPEC 9): the level machinery of SPEC 3 on
    the law of R from :func:`markov_reward_law`; the dict of :func:`sequence_best_of_n`.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> b = ref.markov_best_of_n([0.0, 0.0], np.zeros((2, 2)), [0.0, 1.0], 2, np.log(2.0))
    >>> round(b["expected_reward"], 12)          # E max of 2 Binomial(2, 1/2) = 22/16
    1.375
    """
    values, log_pmf = markov_reward_law(initial_logits, transition_logits, rewards, length,
                                        step=step, initial_rewards=initial_rewards)
    return _lattice_best_of_n(values, log_pmf, log_n)


def markov_sample_given_reward(initial_logits, transition_logits, rewards, length, value,
                               size, rng, *, step=None, initial_rewards=None):
    """Reference exact sampler of sequences from ``p`` conditioned on ``R = value``
    (SPEC 9), backwards through the DP tables; ``value`` must be a reachable lattice value.

    Returns an int64 array of shape ``(size, length)``.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> ref.markov_sample_given_reward([0.0, 0.0], np.zeros((2, 2)), [0.0, 1.0], 4, 4.0,
    ...                                size=2, rng=0).tolist()
    [[1, 1, 1, 1], [1, 1, 1, 1]]
    """
    log_p0, log_tr, r0, r = _markov_inputs(initial_logits, transition_logits, rewards,
                                           initial_rewards)
    length = int(length)
    k0, k, o0, o1, h = _markov_lattice(log_p0, log_tr, r0, r, step)
    tables = _markov_forward_tables(log_p0, log_tr, k0, k, length)
    target = int(np.rint((float(value) - o0 - (length - 1) * o1) / h))
    rng = np.random.default_rng(rng)
    out = np.empty((int(size), length), dtype=np.int64)

    def draw(log_w):
        w = np.exp(log_w - logsumexp(log_w))
        return int(rng.choice(w.size, p=w / w.sum()))

    for i in range(int(size)):
        j = target
        s_next = draw(tables[-1][:, j])
        out[i, -1] = s_next
        for t in range(length - 2, -1, -1):
            table = tables[t]
            idx = j - k[:, s_next]
            ok = (idx >= 0) & (idx < table.shape[1])
            log_w = np.where(ok, table[np.arange(table.shape[0]), np.clip(idx, 0, None)
                                       .clip(max=table.shape[1] - 1)] + log_tr[:, s_next],
                             -np.inf)
            s = draw(log_w)
            j -= int(k[s, s_next])
            out[i, t] = s
            s_next = s
    return out


def markov_period(transition_logits):
    """Period of the chain's transition graph (``transition_logits > -inf``) if it is
    strongly connected, else 0 (reducible).

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> ref.markov_period([[-np.inf, 0.0], [0.0, -np.inf]]), ref.markov_period(np.zeros((3, 3)))
    (2, 1)
    """
    adj = np.asarray(transition_logits, dtype=np.float64) > -np.inf
    v = adj.shape[0]
    reach = adj | np.eye(v, dtype=bool)
    for _ in range(max(1, int(np.ceil(np.log2(max(v, 2)))))):
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    if not reach.all():
        return 0
    level = np.full(v, -1)
    level[0] = 0
    frontier = [0]
    while frontier:
        nxt = []
        for s in frontier:
            for s2 in np.flatnonzero(adj[s]):
                if level[s2] < 0:
                    level[s2] = level[s] + 1
                    nxt.append(int(s2))
        frontier = nxt
    d = 0
    for s, s2 in zip(*np.nonzero(adj), strict=True):
        d = int(np.gcd(d, int(level[s] + 1 - level[s2])))
    return d


def markov_scaled_cgf(transition_logits, rewards, lam, *, tol=1e-14, max_iter=10000):
    """Reference scaled CGF ``Lambda(lam) = lim_n (1/n) log E e^{lam R} = log rho(M_lam)``
    (SPEC 9), ``M_lam(s, s') = P(s, s') e^{lam r(s, s')}``, for an irreducible chain.

    The tilted matrix is scaled by its largest entry; the Perron vector of an
    eigendecomposition is refined by power iteration in log space on ``rho_hat I + M``
    (primitive, so periodic chains converge too) until the Collatz-Wielandt bounds
    ``min (M x)/x <= rho <= max (M x)/x`` agree to ``tol`` in ``log rho``.

    Raises ValueError (naming ``transition_logits``) for a reducible chain, where the
    limit depends on the initial law and ``Lambda`` may have kinks.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> cycle = [[-np.inf, 0.0], [0.0, -np.inf]]            # deterministic 2-cycle
    >>> float(np.round(ref.markov_scaled_cgf(cycle, [[0.0, 1.0], [3.0, 0.0]], 0.5), 12))
    1.0
    """
    lt = np.asarray(transition_logits, dtype=np.float64)
    rw = np.asarray(rewards, dtype=np.float64)
    if markov_period(lt) == 0:
        raise ValueError("transition_logits: the chain is reducible (its states do not all "
                         "communicate); the scaled CGF needs an irreducible chain")
    log_tr = lt - logsumexp(lt, axis=-1)[:, None]
    support = log_tr > -np.inf
    r = np.broadcast_to(rw, lt.shape) if rw.ndim == 1 else rw
    log_m = np.where(support, log_tr + float(lam) * np.where(support, r, 0.0), -np.inf)
    c = float(log_m[support].max())
    log_m = log_m - c
    vals, vecs = np.linalg.eig(np.exp(log_m))
    lead = int(np.argmax(vals.real))
    with np.errstate(divide="ignore"):
        x = np.log(np.abs(vecs[:, lead].real))
    x = np.where(np.isfinite(x), x, np.min(x[np.isfinite(x)], initial=0.0) - 50.0)
    x -= x.max()
    lo, hi = -np.inf, np.inf
    for _ in range(max_iter):
        y = logsumexp(log_m + x[None, :], axis=1)       # log (M x)
        ratio = y - x
        lo, hi = float(ratio.min()), float(ratio.max())
        if hi - lo <= tol:
            break
        est = 0.5 * (lo + hi)
        x = np.logaddexp(x + est, y)                   # (rho_hat I + M) x
        x -= x.max()
    return c + 0.5 * (lo + hi)


def markov_solve_lambda(initial_logits, transition_logits, rewards, length, delta, *,
                        initial_rewards=None, max_iter=200):
    """Reference per-token budget solve (SPEC 9): the ``lam >= 0`` with
    ``KL(phi_lam || p) = length * delta``, by bisection (geometric expansion first).
    Returns ``inf`` at or above the ``lam -> inf`` limit ``-log P(R = R_max)``."""
    args = (initial_logits, transition_logits, rewards, length)
    target = float(length) * float(delta)
    if target == 0.0:
        return 0.0
    values, log_pmf = markov_reward_law(*args, initial_rewards=initial_rewards)
    if target >= -log_pmf[-1]:
        return np.inf

    def kl(lam):
        return markov_tilt_stats(*args, lam, initial_rewards=initial_rewards)[3]

    lo, hi = 0.0, 1.0
    while kl(hi) < target:
        lo, hi = hi, 2.0 * hi
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if kl(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def markov_rate_function(transition_logits, rewards, x, lam=0.0, *, tol=1e-12):
    """Reference rate function of ``R / n`` under ``phi_lam`` for an irreducible Markov
    chain (SPEC 9): ``I(x) = sup_t {t x - Lambda(lam + t) + Lambda(lam)}`` maximised by
    golden-section search over ``t`` with :func:`markov_scaled_cgf` (concave objective),
    after doubling a bracket until the objective decreases on both sides.  Slow; for one
    scalar ``x`` strictly inside the range of cycle means (where the supremum is attained).

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab import reference as ref
    >>> lt = np.log([[0.9, 0.1], [0.2, 0.8]])
    >>> print(f"{ref.markov_rate_function(lt, [0.0, 1.0], 0.5):.8f}")
    0.01010135
    """
    x = float(x)
    lam = float(lam)
    base = markov_scaled_cgf(transition_logits, rewards, lam)

    def obj(t):
        return t * x - (markov_scaled_cgf(transition_logits, rewards, lam + t) - base)

    lo, hi = -1.0, 1.0
    while obj(2.0 * hi) > obj(hi):
        hi *= 2.0
    while obj(2.0 * lo) > obj(lo):
        lo *= 2.0
    lo, hi = 2.0 * lo, 2.0 * hi
    g = 0.5 * (np.sqrt(5.0) - 1.0)
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = obj(a), obj(b)
    while hi - lo > tol * max(1.0, abs(hi) + abs(lo)):
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = obj(b)
        else:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = obj(a)
    return max(fa, fb, 0.0)
