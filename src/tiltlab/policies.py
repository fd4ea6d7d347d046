"""Exact laws of inference-time policies on a finite outcome set (SPEC sections 2-3).

Every policy here acts on the reward levels of ``p`` (:func:`tiltlab.reward_levels`): it
assigns a weight ``w_j`` to level ``j`` and spreads it over the level's outcomes in
proportion to ``p`` (``pi(y) = p(y) w_j / m_j``), exactly as best-of-N does.  The metrics
then follow from the level law alone:

``KL(pi || p) = sum_j w_j log(w_j / m_j)``, ``E_pi r = sum_j w_j v_j`` and
``win rate = sum_j w_j (F_{j-1} + m_j / 2)`` (ties count 1/2).

Policies:

* :func:`soft_best_of_n` - draw ``n`` candidates from ``p``, return candidate ``i`` with
  probability ``∝ exp(r_i / temperature)``; exact law by
  ``P(level j) = n m_j w_j ∫_0^∞ exp(-t w_j) M(t)^(n-1) dt`` with ``w = exp(r/temperature)``
  and ``M(t) = E_p exp(-t w(Y))`` (from ``1/x = ∫_0^∞ e^{-tx} dt`` applied to the chosen
  candidate's share ``w_i / sum_k w_k``), evaluated by the trapezoid rule in ``u = log t``.
* :func:`worst_of_n` - the minimum of ``N`` draws (ties uniform): best-of-N of ``-r``.
* :func:`best_of_poisson` - best-of-N with ``N - 1 ~ Poisson(mu)``:
  ``P(max <= level j) = F_j exp(mu (F_j - 1))``.
* :func:`rewind_and_repeat` - ``p`` conditioned on the top ``eps`` reward quantile, the
  boundary level split so that exactly ``eps`` of ``p``'s mass is kept.
* :func:`calibrated_tilt` - ``p(y) exp(c Q(r(y)))`` with ``Q`` the reference mid-CDF
  ``F_{j-1} + m_j / 2``: the win rate is ``E_pi Q``, so this tilt maximises win rate at
  its KL (the Lagrangian of ``max E_pi Q - KL / c``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _lattice
from tiltlab import _validation as V
from tiltlab.bestofn import reward_levels, sample_best_of_n
from tiltlab.tilting import tilt_stats

__all__ = ["PolicyLaw", "Frontier", "METHODS", "policy_frontier", "soft_best_of_n",
           "worst_of_n", "best_of_poisson", "rewind_and_repeat", "calibrated_tilt"]


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(-x)) for x >= 0, accurate on both sides of ln 2 (SPEC section 3)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(x < math.log(2.0), np.log(-np.expm1(-x)), np.log1p(-np.exp(-x)))


@dataclass(frozen=True)
class _Levels:
    values: np.ndarray        # v_j ascending
    log_mass: np.ndarray      # log m_j
    mass: np.ndarray          # m_j
    below: np.ndarray         # F_{j-1} = sum_{k<j} m_k
    above: np.ndarray         # S_j = sum_{k>j} m_k (summed from the top)
    log_cdf: np.ndarray       # log F_j (log-space prefix sums)


def _levels(logits, rewards) -> _Levels:
    lv = reward_levels(logits, rewards)
    if isinstance(lv, list):
        raise ValueError("logits and rewards must be one distribution of shape (V,) here; "
                         "got a batch")
    lm = np.asarray(lv.log_masses, dtype=np.float64)
    m = np.exp(lm)
    below = np.concatenate([[0.0], np.cumsum(m)[:-1]])
    above = np.concatenate([np.cumsum(m[::-1])[::-1][1:], [0.0]])
    return _Levels(np.asarray(lv.values, dtype=np.float64), lm, m, below, above,
                   np.logaddexp.accumulate(lm))


@dataclass(frozen=True)
class PolicyLaw:
    """The exact law of a policy over the outcomes of ``p`` and its metrics.

    Attributes
    ----------
    method : str
        Which policy (``soft_best_of_n``, ``worst_of_n``, ...).
    params : dict
        Its parameters.
    kl : float
        ``KL(pi || p)``.
    expected_reward : float
        ``E_pi r``.
    win_rate : float
        P(an outcome of pi beats an independent draw from p), ties 1/2.
    level_values, level_log_weights : ndarray
        The reward levels of ``p`` and ``log pi(level)``.
    log_probs : ndarray, shape (V,)
        ``log pi(y)`` (``-inf`` where ``pi`` or ``p`` is 0), computed on first access.
    """

    method: str
    params: dict
    kl: float
    expected_reward: float
    win_rate: float
    level_values: np.ndarray = field(repr=False)
    level_log_weights: np.ndarray = field(repr=False)
    _logits: np.ndarray = field(repr=False)
    _rewards: np.ndarray = field(repr=False)
    _log_mass: np.ndarray = field(repr=False)

    @cached_property
    def log_probs(self) -> np.ndarray:
        lp = self._logits - np.logaddexp.reduce(self._logits)
        j = np.clip(np.searchsorted(self.level_values, self._rewards), 0,
                    self.level_values.size - 1)
        with np.errstate(invalid="ignore"):
            out = lp - self._log_mass[j] + self.level_log_weights[j]
        out[~np.isfinite(lp)] = -np.inf
        return np.where(np.isnan(out), -np.inf, out)

    def kl_to_tilted(self, lam: ArrayLike):
        """``KL(pi || phi_lam) = KL(pi || p) - lam E_pi r + Lambda(lam)`` (SPEC section 2)."""
        lam_a = V.param_array(lam, "lam", allow_inf=False)
        lz = np.asarray(tilt_stats(self._logits, self._rewards, lam_a).log_partition)
        out = self.kl - lam_a * self.expected_reward + lz
        return float(out) if out.ndim == 0 else out

    def sample(self, size: int | None = None, rng=None, n_threads: int | None = None):
        """Outcome indices drawn from the exact law (the compiled guide/alias sampler)."""
        return sample_best_of_n(self.log_probs, self._rewards, n=1.0, size=size, rng=rng,
                                n_threads=n_threads)


def _level_metrics(lv: _Levels, log_w: np.ndarray) -> tuple[float, float, float]:
    """KL(pi || p), E_pi r and the win rate of a level law (module docstring)."""
    w = np.exp(log_w)
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_terms = np.where(w > 0, w * (log_w - lv.log_mass), 0.0)
    return (max(float(np.sum(kl_terms)), 0.0), float(np.dot(w, lv.values)),
            float(np.dot(w, lv.below + 0.5 * lv.mass)))


def _finish(method: str, params: dict, logits, rewards, lv: _Levels,
            log_w: np.ndarray) -> PolicyLaw:
    log_w = np.asarray(log_w, dtype=np.float64)
    kl, er, win = _level_metrics(lv, log_w)
    lg = np.asarray(logits, dtype=np.float64)
    rw = np.asarray(rewards, dtype=np.float64)
    return PolicyLaw(method, params, kl, er, win, lv.values, log_w, lg, rw, lv.log_mass)


def _real(x, name: str, *, lo: float | None = None, lo_open: bool = False,
          allow_inf: bool = False) -> float:
    v = V.scalar_param(x, name, allow_inf=allow_inf)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {v}")
    return v


# --------------------------------------------------------------------------------------
# worst-of-N, best-of-Poisson, rewind-and-repeat, calibrated tilt: closed forms on levels
# --------------------------------------------------------------------------------------

def worst_of_n(logits: ArrayLike, rewards: ArrayLike, n: float | None = None, *,
               log_n: float | None = None) -> PolicyLaw:
    """The law of the minimum-reward outcome of N draws from p, ties uniform (SPEC 3).

    It is best-of-N for the reward ``-r`` (computed by the same compiled level law):
    ``w_j = S_{j-1}^N - S_j^N`` with ``S`` the upper tail of ``p``.

    Parameters
    ----------
    logits, rewards : array_like, shape (V,)
        The reference ``p = softmax(logits)`` and finite rewards.
    n : float, optional
        Number of draws N >= 1 (real).  Give either ``n`` or ``log_n``.
    log_n : float, optional
        ``log N >= 0``.

    Returns
    -------
    PolicyLaw

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> w = tiltlab.worst_of_n(np.log([0.5, 0.5]), [0.0, 1.0], n=2)
    >>> print(np.exp(w.log_probs), w.win_rate)       # P(min = 1) = 1/4
    [0.75 0.25] 0.375
    """
    ln = _log_n(n, log_n)
    lv = _levels(logits, rewards)
    return _finish("worst_of_n", {"log_n": ln}, logits, rewards, lv, _w_worst(lv, ln))


def _w_bon(values: np.ndarray, log_mass: np.ndarray, log_n: float) -> np.ndarray:
    """The compiled best-of-N level law (tl_bon_law) on ascending levels."""
    vals = np.ascontiguousarray(values, dtype=np.float64)
    log_w = np.empty_like(vals)
    a = np.empty_like(vals)
    _lattice.level_law(vals, np.ascontiguousarray(log_mass, dtype=np.float64), log_n, True,
                       log_w, a)
    return log_w


def _w_worst(lv: _Levels, log_n: float) -> np.ndarray:
    return _w_bon(-lv.values[::-1], lv.log_mass[::-1], log_n)[::-1].copy()


def _log_n(n, log_n) -> float:
    if (n is None) == (log_n is None):
        raise ValueError("give exactly one of n and log_n")
    if n is not None:
        nv = _real(n, "n", lo=1.0, allow_inf=False)
        return math.log(nv)
    return _real(log_n, "log_n", lo=0.0, allow_inf=False)


def best_of_poisson(logits: ArrayLike, rewards: ArrayLike, mu: float) -> PolicyLaw:
    """Best-of-N with a random number of draws, ``N - 1 ~ Poisson(mu)`` (SPEC 3).

    ``P(max <= v_j) = E F_j^N = F_j exp(-mu S_j)``, so the level law is
    ``w_j = G_j - G_{j-1}`` with ``G_j = F_j exp(-mu S_j)``, evaluated in log space as
    ``log w_j = log G_j + log1mexp(log(F_j / F_{j-1}) + mu m_j)``.

    Parameters
    ----------
    logits, rewards : array_like, shape (V,)
        The reference ``p`` and finite rewards.
    mu : float
        Mean of ``N - 1``, ``>= 0`` (``mu = 0`` is ``p``).

    Returns
    -------
    PolicyLaw

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> b = tiltlab.best_of_poisson(np.log([0.5, 0.5]), [0.0, 1.0], mu=1.0)
    >>> print(np.round(np.exp(b.log_probs), 12))     # P(max = 0) = 0.5 e^{-0.5}
    [0.30326533 0.69673467]
    """
    mu_v = _real(mu, "mu", lo=0.0)
    lv = _levels(logits, rewards)
    return _finish("best_of_poisson", {"mu": mu_v}, logits, rewards, lv, _w_poisson(lv, mu_v))


def _w_poisson(lv: _Levels, mu_v: float) -> np.ndarray:
    if mu_v == 0.0:
        return lv.log_mass.copy()                   # N = 1: p itself, exactly
    log_g = lv.log_cdf - mu_v * lv.above
    # log(F_j / F_{j-1}) = log1p(m_j / F_{j-1}) = softplus(log m_j - log F_{j-1})
    with np.errstate(divide="ignore"):
        prev = np.concatenate([[-np.inf], lv.log_cdf[:-1]])
    ratio = np.logaddexp(0.0, lv.log_mass - prev)
    log_w = log_g + _log1mexp(ratio + mu_v * lv.mass)
    log_w[0] = log_g[0]
    return log_w


def rewind_and_repeat(logits: ArrayLike, rewards: ArrayLike, eps: float) -> PolicyLaw:
    """``p`` conditioned on its top ``eps`` reward quantile (SPEC 3).

    Outcomes are kept from the top reward down until ``eps`` of ``p``'s mass is kept; the
    level at the boundary is kept only in part (its share ``(eps - S_j) / m_j``), so the
    policy is ``p`` restricted to exactly ``eps`` of mass, renormalised.  Without atoms
    ``KL = log(1 / eps)``.

    Parameters
    ----------
    logits, rewards : array_like, shape (V,)
        The reference ``p`` and finite rewards.
    eps : float
        Kept mass, ``0 < eps <= 1`` (``eps = 1`` is ``p``).

    Returns
    -------
    PolicyLaw

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> rr = tiltlab.rewind_and_repeat(np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0], eps=0.4)
    >>> print(np.round(np.exp(rr.log_probs), 12), round(rr.kl, 12))
    [0.  0.5 0.5] 0.71355817782
    """
    e = _real(eps, "eps", lo=0.0, lo_open=True)
    if e > 1.0:
        raise ValueError(f"eps must be <= 1; got {e}")
    lv = _levels(logits, rewards)
    return _finish("rewind_and_repeat", {"eps": e}, logits, rewards, lv, _w_rewind(lv, e))


def _w_rewind(lv: _Levels, e: float) -> np.ndarray:
    if e == 1.0:
        return lv.log_mass.copy()
    log_e = math.log(e)
    with np.errstate(divide="ignore"):
        log_w = np.full(lv.values.size, -np.inf)
        inside = lv.above + lv.mass <= e        # the whole level fits in the top eps
        log_w[inside] = lv.log_mass[inside] - log_e
        j = np.flatnonzero(~inside)
        if j.size:
            b = int(j[-1])                          # the boundary level
            log_w[b] = math.log(max(e - lv.above[b], 0.0)) - log_e if e > lv.above[b] \
                else -np.inf
    return log_w


def calibrated_tilt(logits: ArrayLike, rewards: ArrayLike, c: float) -> PolicyLaw:
    """The win-rate-optimal policy at its KL: ``pi ∝ p exp(c Q(r))`` (SPEC 3).

    ``Q_j = F_{j-1} + m_j / 2`` is the mid-CDF of the reward under ``p``; the win rate of
    any level policy is ``sum_j w_j Q_j``, so the tilt of ``p`` by ``Q`` maximises it at a
    given KL, as the exponential tilt by ``r`` maximises the expected reward.

    Parameters
    ----------
    logits, rewards : array_like, shape (V,)
        The reference ``p`` and finite rewards.
    c : float
        Strength (any real; ``c = 0`` is ``p``).

    Returns
    -------
    PolicyLaw

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> ct = tiltlab.calibrated_tilt(np.log([0.5, 0.5]), [0.0, 1.0], c=2.0)
    >>> print(round(ct.win_rate, 12))            # (0.25 + 0.75 e) / (1 + e)
    0.615529289315
    """
    cv = _real(c, "c")
    lv = _levels(logits, rewards)
    return _finish("calibrated_tilt", {"c": cv}, logits, rewards, lv, _w_calibrated(lv, cv))


def _w_calibrated(lv: _Levels, cv: float) -> np.ndarray:
    s = lv.log_mass + cv * (lv.below + 0.5 * lv.mass)
    return s - np.logaddexp.reduce(s)


# --------------------------------------------------------------------------------------
# soft best-of-n: the integral identity by the trapezoid rule in u = log t
# --------------------------------------------------------------------------------------

_H = 0.25            # lattice step in u; the rule converges like exp(-pi^2 / h) (~1e-17)
_LEFT = 50.0         # a level is 'not yet switched off' while n t w < e^-50
_RIGHT = 7.0         # ... and 'switched off' once t w > e^7 (exp(-t w) < 1e-476)
_WIN_LO = 41.5       # per-level window: exp(-t w_j) == 1 in double below t w_j < e^-41.5
_MAX_SPREAD = 1e5    # (r_max - r_min) / temperature beyond which the T -> 0 limit is exact


def _soft_level_law(lv: _Levels, n: float, temperature: float) -> tuple[np.ndarray, float]:
    """log P(level j) of soft best-of-n, and the quadrature's total mass (1 up to rounding)."""
    with np.errstate(over="ignore"):       # e^{u + lw} = inf means 'switched off': exact
        return _soft_level_law_impl(lv, n, temperature)


_UNTOUCHED = -37.0   # for z = u + lw < -37, 1 - exp(-e^z) = e^z to relative 5e-17
_OFF = 6.7           # for z > 6.7, exp(-e^z) < 1e-350: the level is switched off


def _log_m_nodes(u: np.ndarray, lw: np.ndarray, lv: _Levels) -> np.ndarray:
    """log M(e^u) at the nodes, M(t) = sum_k m_k exp(-t w_k), in relative precision.

    Per node the levels split into untouched (``e^{u+lw} < e^-37``: they contribute
    ``m_k e^{u + lw_k}`` to ``D = 1 - M``, a log-space prefix sum), switched off
    (``e^{u+lw} > e^6.7``: ``m_k``, a suffix sum) and active (computed term by term).
    ``log M = log1p(-D)`` while ``D < 1/2``, else the log of ``M`` summed directly.
    """
    m = lv.mass
    k_on = np.searchsorted(lw, _UNTOUCHED - u, side="left")     # [0, k_on) untouched
    k_off = np.searchsorted(lw, _OFF - u, side="right")         # [k_off, L) switched off
    off_mass = np.concatenate([np.cumsum(m[::-1])[::-1], [0.0]])    # sum_{k >= i} m_k
    on_mass = np.concatenate([[0.0], np.cumsum(m)])                 # sum_{k < i} m_k
    with np.errstate(divide="ignore"):
        log_pw = np.concatenate([[-np.inf], np.logaddexp.accumulate(lv.log_mass + lw)])
    d = off_mass[k_off] + np.exp(u + log_pw[k_on])
    md = on_mass[k_on] - np.exp(u + log_pw[k_on])       # M from untouched levels
    width = k_off - k_on
    total = int(width.sum())
    if total:
        # all (node, active level) pairs, in chunks of nodes
        bounds = np.searchsorted(np.cumsum(width), np.arange(0, total, 4_000_000), "left")
        bounds = np.unique(np.concatenate([bounds, [u.size]]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            wv = width[a:b]
            node = np.repeat(np.arange(a, b), wv)
            starts = np.repeat(k_on[a:b] - (np.cumsum(wv) - wv), wv)
            k = starts + np.arange(node.size)
            x = np.exp(u[node] + lw[k])
            d[a:b] += np.bincount(node - a, weights=m[k] * -np.expm1(-x), minlength=b - a)
            md[a:b] += np.bincount(node - a, weights=m[k] * np.exp(-x), minlength=b - a)
    with np.errstate(divide="ignore"):
        return np.where(d < 0.5, np.log1p(-np.minimum(d, 0.5)), np.log(np.maximum(md, 0.0)))


def _soft_level_law_impl(lv: _Levels, n: float, temperature: float):
    lw = (lv.values - lv.values[-1]) / temperature          # log w_j <= 0, ascending
    m, L = lv.mass, lv.values.size
    logn = math.log(n)
    h = _H
    # the lattice u_i = i h; explicit nodes only where some level is switching off
    lo = np.floor((-lw - _LEFT - logn) / h).astype(np.int64)
    hi = np.ceil((-lw + _RIGHT) / h).astype(np.int64)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    blocks = []                                             # merged [a, b] index ranges
    a, b = int(lo[0]), int(hi[0])
    for x, y in zip(lo[1:].tolist(), hi[1:].tolist(), strict=True):
        if x <= b + 1:
            b = max(b, y)
        else:
            blocks.append((a, b))
            a, b = x, y
    blocks.append((a, b))
    idx = np.concatenate([np.arange(p, q + 1, dtype=np.int64) for p, q in blocks])
    u = idx * h
    log_m = _log_m_nodes(u, lw, lv)
    logA = u + (n - 1.0) * log_m + math.log(h)              # log of h e^u M^(n-1) at nodes
    # gaps between blocks: every level is either untouched or switched off, so the
    # integrand is h e^{u_i} M_gap^(n-1) with M_gap the untouched mass; a geometric sum
    pieces = []                                             # (log value, position) in order
    pos_node = np.empty(u.size, dtype=np.int64)
    start = 0
    for bi, (p, q) in enumerate(blocks):
        count = q - p + 1
        if bi == 0:
            # nodes i < p: all levels untouched (M = 1): sum_{i<p} h e^{ih} = h e^{ph}/(e^h - 1)
            pieces.append(math.log(h) + p * h - math.log(math.expm1(h)))
        else:
            pq = blocks[bi - 1][1]
            g0, g1 = pq + 1, p - 1                          # gap nodes
            if g1 >= g0:
                ug = g0 * h
                # untouched levels at the gap: e^{u + lw} < e^-50 / n, i.e. lw < -u - 50 - logn
                k = int(np.searchsorted(lw, -ug - _LEFT - logn))
                mass = float(np.sum(m[:k]))
                if mass > 0:
                    cnt = g1 - g0 + 1
                    # log(e^{cnt h} - 1) = cnt h + log(1 - e^{-cnt h})
                    lg = (math.log(h) + ug + (n - 1.0) * math.log(mass) + cnt * h +
                          math.log(-math.expm1(-cnt * h)) - math.log(math.expm1(h)))
                    pieces.append(lg)
                else:
                    pieces.append(-np.inf)
        seg = logA[start:start + count]
        pos_node[start:start + count] = len(pieces) + np.arange(count)
        pieces.extend(seg.tolist())
        start += count
    pieces = np.asarray(pieces)
    cum = np.logaddexp.accumulate(pieces)                   # log prefix integrals
    # per level: I_j = prefix(before its window) + window sum with the factor exp(-t w_j)
    w_lo = np.searchsorted(u, -lw - _WIN_LO, side="left")    # first node of the window
    w_hi = np.searchsorted(u, -lw + _RIGHT, side="right")    # one past its last node
    width = int(np.max(w_hi - w_lo)) if L else 0
    log_i = np.empty(L)
    chunk = max(1, int(4_000_000 // max(width, 1)))
    for c0 in range(0, L, chunk):
        sl = slice(c0, c0 + chunk)
        base = w_lo[sl, None] + np.arange(width)[None, :]
        ok = base < w_hi[sl, None]
        bi_ = np.minimum(base, u.size - 1)
        t_w = np.exp(u[bi_] + lw[sl, None])
        terms = np.where(ok, logA[bi_] - t_w, -np.inf)
        win = np.logaddexp.reduce(terms, axis=1)
        # the prefix (factor exp(-t w_j) == 1) runs to the piece before the window's first
        # node; the window lies inside the level's own block of explicit nodes
        before = pos_node[np.minimum(w_lo[sl], u.size - 1)] - 1
        pre = np.where(before >= 0, cum[np.maximum(before, 0)], -np.inf)
        log_i[sl] = np.logaddexp(pre, win)
    log_p = logn + lv.log_mass + lw + log_i
    total = float(np.exp(np.logaddexp.reduce(log_p)))
    return log_p, total


def soft_best_of_n(logits: ArrayLike, rewards: ArrayLike, n: float,
                   temperature: float) -> PolicyLaw:
    """Soft best-of-n: n candidates from p, candidate i returned ``∝ exp(r_i / temperature)``.

    The exact law (module docstring) is
    ``P(level j) = n m_j w_j ∫_0^∞ exp(-t w_j) M(t)^(n-1) dt`` with ``w_j = exp((v_j - v_max)
    / temperature)`` (scaled so that no weight overflows) and ``M(t) = sum_k m_k e^{-t w_k}``.
    With ``t = e^u`` the integrand is analytic and decays doubly exponentially, so the
    trapezoid rule on the lattice ``u = i h`` converges like ``exp(-pi^2 / h)``; nodes are
    evaluated only where some level switches off, the rest is summed in closed form
    (geometric series), all in log space.  The result is renormalised; the quadrature's
    own total mass is in ``params['quadrature_mass']`` (1 to about 1e-13).

    Parameters
    ----------
    logits, rewards : array_like, shape (V,)
        The reference ``p`` and finite rewards.
    n : float
        Number of candidates, real ``>= 1``.
    temperature : float
        ``> 0``; ``0`` is best-of-n and ``inf`` is ``p`` (both exact).  The reward spread
        over the temperature may be up to 1e5; log-weights of that size cancel in the
        integral, so the relative accuracy is about ``1e-16 * max(1, spread / temperature)``.

    Returns
    -------
    PolicyLaw

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> s = tiltlab.soft_best_of_n(np.log([0.5, 0.5]), [0.0, 1.0], n=2, temperature=1.0)
    >>> print(f"{np.exp(s.log_probs)[1]:.12f}")     # 1/4 + 2 (1/4) e/(1+e)
    0.615529289315
    """
    nv = _real(n, "n", lo=1.0)
    t = V.scalar_param(temperature, "temperature", allow_inf=True)
    if not t >= 0:
        raise ValueError(f"temperature must be >= 0; got {t}")
    lv = _levels(logits, rewards)
    params = {"n": nv, "temperature": t}
    log_w, total = _w_soft(lv, nv, t)
    if total is not None:
        params["quadrature_mass"] = total
    return _finish("soft_best_of_n", params, logits, rewards, lv, log_w)


def _w_soft(lv: _Levels, nv: float, t: float):
    spread = float(lv.values[-1] - lv.values[0])
    if t == math.inf or nv == 1.0 or lv.values.size == 1:
        return lv.log_mass.copy(), None
    if t == 0.0:
        return _w_bon(lv.values, lv.log_mass, math.log(nv)), None
    if spread / t > _MAX_SPREAD:
        raise ValueError(f"temperature={t} is too small for the reward spread {spread:g} "
                         f"(spread/temperature > {_MAX_SPREAD:g}); use temperature=0, "
                         "which is best-of-n exactly")
    log_p, total = _soft_level_law(lv, nv, t)
    return log_p - math.log(total), total


# --------------------------------------------------------------------------------------
# one frontier API for all policies
# --------------------------------------------------------------------------------------

class Frontier(NamedTuple):
    """KL, expected reward and win rate of one policy family over a parameter grid."""

    method: str
    parameter: np.ndarray
    kl: np.ndarray
    expected_reward: np.ndarray
    win_rate: np.ndarray


METHODS = ("tilted", "best_of_n", "worst_of_n", "soft_best_of_n", "best_of_poisson",
           "rewind_and_repeat", "calibrated_tilt")


def policy_frontier(logits: ArrayLike, rewards: ArrayLike, method: str, grid: ArrayLike, *,
                    n: float | None = None, temperature: float | None = None) -> Frontier:
    """(KL, expected reward, win rate) of a policy family over a grid of its parameter.

    One API for every policy of SPEC sections 2-3, computed exactly on the reward levels of
    ``p`` (which are found once).  ``grid`` is the family's own parameter:

    ``tilted``: lam; ``best_of_n`` and ``worst_of_n``: N; ``soft_best_of_n``: the
    temperature at fixed ``n=``, or n at fixed ``temperature=``; ``best_of_poisson``: mu;
    ``rewind_and_repeat``: eps; ``calibrated_tilt``: c.

    Parameters
    ----------
    logits, rewards : array_like, shape (V,)
        The reference ``p`` and finite rewards.
    method : str
        One of ``tiltlab.policies.METHODS``.
    grid : array_like, 1-d
        Parameter values.
    n, temperature : float, optional
        The fixed parameter of ``soft_best_of_n`` (exactly one).

    Returns
    -------
    Frontier
        ``method``, ``parameter`` (the grid) and arrays ``kl``, ``expected_reward`` and
        ``win_rate`` of the same length.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> lg, r = np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0]
    >>> f = tiltlab.policy_frontier(lg, r, "best_of_n", [1, 2, 4])
    >>> np.round(f.win_rate, 6).tolist()
    [0.5, 0.64, 0.7726]
    >>> g = tiltlab.policy_frontier(lg, r, "calibrated_tilt", [0.0, 2.0])
    >>> np.round(g.kl, 6).tolist()
    [0.0, 0.139954]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    g = V.as_real_array(grid, "grid").astype(np.float64).reshape(-1)
    if g.size == 0:
        raise ValueError("grid is empty")
    if np.isnan(g).any():
        raise ValueError("grid contains NaN")
    if method == "tilted":
        lam = g
        st = tilt_stats(logits, rewards, lam)
        lv = _levels(logits, rewards)
        win = np.array([_level_metrics(lv, _w_tilt(lv, x))[2] for x in lam])
        return Frontier(method, g, np.asarray(st.kl, float).reshape(-1),
                        np.asarray(st.mean, float).reshape(-1), win)
    lv = _levels(logits, rewards)
    if method == "soft_best_of_n":
        if (n is None) == (temperature is None):
            raise ValueError("soft_best_of_n needs exactly one of n= (grid over the "
                             "temperature) and temperature= (grid over n)")
        if n is not None:
            nv = _real(n, "n", lo=1.0)
            laws = []
            for t in g:
                if not t >= 0:
                    raise ValueError(f"temperatures must be >= 0; got {t}")
                laws.append(_w_soft(lv, nv, float(t))[0])
        else:
            t = V.scalar_param(temperature, "temperature", allow_inf=True)
            if not t >= 0:
                raise ValueError(f"temperature must be >= 0; got {t}")
            if np.any(g < 1) or not np.all(np.isfinite(g)):
                raise ValueError("the grid of n must be finite and >= 1")
            laws = [_w_soft(lv, float(x), t)[0] for x in g]
    elif method in ("best_of_n", "worst_of_n"):
        if np.any(g < 1) or not np.all(np.isfinite(g)):
            raise ValueError("the grid of N must be finite and >= 1")
        fn = _w_worst if method == "worst_of_n" else (
            lambda lv_, ln: _w_bon(lv_.values, lv_.log_mass, ln))
        laws = [fn(lv, math.log(x)) for x in g]
    elif method == "best_of_poisson":
        if np.any(g < 0) or not np.all(np.isfinite(g)):
            raise ValueError("the grid of mu must be finite and >= 0")
        laws = [_w_poisson(lv, float(x)) for x in g]
    elif method == "rewind_and_repeat":
        if np.any(g <= 0) or np.any(g > 1):
            raise ValueError("the grid of eps must lie in (0, 1]")
        laws = [_w_rewind(lv, float(x)) for x in g]
    else:
        if not np.all(np.isfinite(g)):
            raise ValueError("the grid of c must be finite")
        laws = [_w_calibrated(lv, float(x)) for x in g]
    out = np.array([_level_metrics(lv, w) for w in laws]).reshape(-1, 3)
    return Frontier(method, g, out[:, 0], out[:, 1], out[:, 2])


def _w_tilt(lv: _Levels, lam: float) -> np.ndarray:
    """Level law of the exponential tilt (used for its win rate)."""
    if lam == math.inf or lam == -math.inf:
        keep = lv.values.size - 1 if lam > 0 else 0
        out = np.full(lv.values.size, -np.inf)
        out[keep] = 0.0
        return out
    s = lv.log_mass + lam * (lv.values - lv.values[-1])
    return s - np.logaddexp.reduce(s)
