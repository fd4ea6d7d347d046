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

from tiltlab import _interop as interop
from tiltlab import _lattice
from tiltlab import _validation as V
from tiltlab._rowcalls import tilt_shift
from tiltlab.bestofn import reward_levels, sample_best_of_n
from tiltlab.tilting import tilt, tilt_stats

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
    """The reward levels of p that carry mass in double precision.

    A level whose log mass is -inf (logits so far below the maximum, e.g. -1.7e308 next to
    1.7e308, that ``l - max l`` overflows) has probability 0 under p, so under every policy
    here: it is left out, and so are the NaNs of ``-inf - -inf`` its weights would bring
    into the level laws and the KL."""
    lv = reward_levels(logits, rewards)
    if isinstance(lv, list):
        raise ValueError("logits and rewards must be one distribution of shape (V,) here; "
                         "got a batch")
    lm = np.asarray(lv.log_masses, dtype=np.float64)
    keep = lm > -np.inf
    lm = lm[keep]
    m = np.exp(lm)
    below = np.concatenate([[0.0], np.cumsum(m)[:-1]])
    above = np.concatenate([np.cumsum(m[::-1])[::-1][1:], [0.0]])
    return _Levels(np.asarray(lv.values, dtype=np.float64)[keep], lm, m, below, above,
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

    def __post_init__(self):
        V.freeze(self)  # read-only arrays (SPEC section 1)

    @cached_property
    def log_probs(self) -> np.ndarray:
        # log p from the compiled tilt at lam = 0: exact at any logit offset
        lp = tilt(self._logits, np.zeros_like(self._logits), 0.0)
        j = np.clip(np.searchsorted(self.level_values, self._rewards), 0,
                    self.level_values.size - 1)
        with np.errstate(invalid="ignore"):
            out = lp - self._log_mass[j] + self.level_log_weights[j]
        out[~np.isfinite(lp)] = -np.inf
        # (a level of one outcome gives its weight to rounding: never above log 1 = 0)
        return V.readonly(np.minimum(np.where(np.isnan(out), -np.inf, out), 0.0))

    @interop.arrays("lam")
    def kl_to_tilted(self, lam: ArrayLike):
        """``KL(pi || phi_lam)`` by the closeness identity of SPEC section 2.

        ``KL(pi || phi_lam) = KL(pi || p) - lam (E_pi r - c) + (Lambda(lam) - lam c)`` with
        ``c`` the reward of the outcome that dominates ``phi_lam`` and ``E_pi (r - c)``
        summed over the level law, so no term of the size of ``lam r`` enters (``lam`` up
        to 1.8e308, finite)."""
        lam_a = V.param_array(lam, "lam", allow_inf=False)
        c, lc = tilt_shift(self._logits, self._rewards, lam_a)
        w = np.exp(self.level_log_weights)
        gap = np.sum(w * (self.level_values - np.asarray(c)[..., None]), axis=-1)
        with np.errstate(over="ignore"):
            out = np.maximum((self.kl - lam_a * gap) + lc, 0.0)
        return float(out) if out.ndim == 0 else out

    def sample(self, size: int | None = None, rng=None, n_threads: int | None = None):
        """Outcome indices drawn from the exact law (the compiled guide/alias sampler)."""
        return sample_best_of_n(self.log_probs, self._rewards, n=1.0, size=size, rng=rng,
                                n_threads=n_threads)


def _kl_phi(d: np.ndarray) -> np.ndarray:
    """phi(d) = d e^d - (e^d - 1) >= 0, with its series for small |d| and phi(-inf) = 1."""
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        direct = d * np.exp(d) - np.expm1(d)
        # sum_{k >= 2} (k - 1) d^k / k!
        series = d * d * (0.5 + d * (1 / 3 + d * (1 / 8 + d * (1 / 30 + d / 144))))
    out = np.where(np.abs(d) < 1e-2, series, direct)
    return np.where(np.isneginf(d), 1.0, out)


def _level_metrics(lv: _Levels, log_w: np.ndarray) -> tuple[float, float, float]:
    """KL(pi || p), E_pi r and the win rate of a level law (module docstring).

    The KL is summed as ``sum_j m_j phi(log(w_j / m_j))`` with ``phi(d) = d e^d - expm1(d)``:
    the same value (both laws sum to 1) with no cancellation, so small KLs keep their
    relative accuracy."""
    w = np.exp(log_w)
    with np.errstate(invalid="ignore"):
        d = log_w - lv.log_mass
    kl = float(np.sum(lv.mass * _kl_phi(d)))
    return (max(kl, 0.0), float(np.dot(w, lv.values)),
            float(np.dot(w, lv.below + 0.5 * lv.mass)))


def _finish(method: str, params: dict, logits, rewards, lv: _Levels,
            log_w: np.ndarray) -> PolicyLaw:
    log_w = np.asarray(log_w, dtype=np.float64)
    kl, er, win = _level_metrics(lv, log_w)
    lg, rw = V.owned_outcomes(logits, rewards)  # the law's own copies, masks applied
    return PolicyLaw(method, params, kl, er, win, lv.values, log_w, lg, rw, lv.log_mass)


def _real(x, name: str, *, lo: float | None = None, lo_open: bool = False,
          allow_inf: bool = False) -> float:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number; got {x!r}")
    v = V.scalar_param(x, name, allow_inf=allow_inf)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {v}")
    return v


# --------------------------------------------------------------------------------------
# worst-of-N, best-of-Poisson, rewind-and-repeat, calibrated tilt: closed forms on levels
# --------------------------------------------------------------------------------------

@interop.arrays("logits", "rewards", "n", "log_n")
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


@interop.arrays("logits", "rewards", "mu")
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


@interop.arrays("logits", "rewards", "eps")
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


@interop.arrays("logits", "rewards", "c")
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

_H = 0.25            # lattice step in u; for integer n the rule converges like exp(-pi^2 / h)
_H_MIN = _H / 16     # finest step tried for non-integer n (see _w_soft)
_SOFT_TOL = 1e-11    # agreement of successive halvings accepted as converged
_LEFT = 50.0         # a level is 'not yet switched off' while n t w < e^-50
_RIGHT = 7.0         # ... and 'switched off' once t w > e^7 (exp(-t w) < 1e-476)
_MAX_SPREAD = 1e5    # (r_max - r_min) / temperature beyond which the T -> 0 limit is exact


class _Compiled:
    """The two hot loops of the quadrature in C (csrc/tl_soft.h), threads over outputs."""

    def __init__(self, n_threads: int):
        self.nt = n_threads

    def nodes(self, u, bon, boff, c, m0, P, d, md):
        _lattice.soft_nodes(u, bon, boff, c, m0, P, d, md, self.nt)

    def bins(self, u, logA, wlo, whi, c, mx, U):
        _lattice.soft_bins(u, logA, wlo, whi, c, mx, U, self.nt)


def _soft_level_law(lv: _Levels, n: float, temperature: float, stages=None,
                    n_threads: int | None = None, h: float = _H) -> tuple[np.ndarray, float]:
    """log P(level j) of soft best-of-n, and the quadrature's total mass (1 up to rounding).

    ``stages`` supplies the two loops over (node, level) pairs: compiled by default, the
    NumPy versions in :mod:`tiltlab.reference`."""
    if stages is None:
        nt = V.n_threads_value(n_threads)
        stages = _Compiled(V.threads_for_work(lv.values.size * 64, nt))
    with np.errstate(over="ignore"):       # e^{u + lw} = inf means 'switched off': exact
        return _soft_level_law_impl(lv, n, temperature, stages, h)


_SERIES = -8.0      # for z = u + lw < -8, exp(-e^z) = sum_{r <= 5} (-e^z)^r / r! (x^6/720 < 1e-22)
_TERMS = 5
_OFF = 6.7           # for z > 6.7, exp(-e^z) < 1e-350: the level is switched off


def _log_prefixes(lv: _Levels, lw: np.ndarray) -> dict:
    """r -> log sum_{k < i} m_k e^{r lw_k} for i = 0..L, r = 1.._TERMS (log-space prefix
    sums; plain sums when no term can underflow: r lw > -600 and m_k > 1e-200)."""
    out = {}
    plain = _TERMS * lw[0] > -600.0 and lv.log_mass.min() > -460.0
    e1 = np.exp(lw) if plain else None
    term = lv.mass.copy()
    with np.errstate(divide="ignore"):
        for r in range(1, _TERMS + 1):
            if plain:
                term *= e1
                out[r] = np.log(np.concatenate([[0.0], np.cumsum(term)]))
            else:
                out[r] = np.concatenate([[-np.inf],
                                         np.logaddexp.accumulate(lv.log_mass + r * lw)])
    return out


_DELTA = 0.04        # bin width in lw: offsets |eps| <= 0.02 inside a bin
_R = _lattice.SOFT_R  # order of the expansion in eps (csrc/tl_soft.h)


def _stirling2(order: int) -> np.ndarray:
    """Stirling numbers of the second kind S(r, k), 0 <= k <= r <= order."""
    s2 = np.zeros((order + 1, order + 1))
    s2[0, 0] = 1.0
    for r in range(1, order + 1):
        for k in range(1, r + 1):
            s2[r, k] = k * s2[r - 1, k] + s2[r - 1, k - 1]
    return s2


_S2 = _stirling2(_R)
_FACT = np.array([math.factorial(r) for r in range(_R + 1)], dtype=np.float64)


@dataclass(frozen=True)
class _Bins:
    first: np.ndarray     # index of each bin's first level, then L
    c: np.ndarray         # centres
    m0: np.ndarray        # masses
    P: np.ndarray         # (B, R): P_k = sum_{r >= k} S(r, k) M_r / r!, M_r = sum m eps^r
    of: np.ndarray        # bin of each level
    eps: np.ndarray       # lw - c[bin] per level


def _bin_levels(lw: np.ndarray, m: np.ndarray) -> _Bins:
    key = np.floor((lw - lw[0]) / _DELTA)
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    end = np.concatenate([first[1:], [lw.size]])
    c = 0.5 * (lw[first] + lw[end - 1])
    of = np.repeat(np.arange(first.size), end - first)
    eps = lw - c[of]
    mom = np.empty((first.size, _R + 1))
    pw = m.copy()
    for r in range(_R + 1):
        mom[:, r] = np.add.reduceat(pw, first) / _FACT[r]
        pw *= eps
    P = mom[:, 1:] @ _S2[1:, 1:]                         # P[:, k-1] = sum_r S(r,k) mom_r
    return _Bins(np.concatenate([first, [lw.size]]), c, mom[:, 0].copy(),
                 np.ascontiguousarray(P), of, eps)


def _log_m_nodes(u: np.ndarray, lw: np.ndarray, lv: _Levels, bins: _Bins,
                 stages) -> np.ndarray:
    """log M(e^u) at the nodes, M(t) = sum_k m_k exp(-t w_k), in relative precision.

    Per node the levels split into far (``z = u + lw < -8``: five terms of the series of
    ``1 - exp(-e^z)``, from log-space prefix sums of ``m_k e^{r lw_k}``), switched off
    (``z > 6.7``: ``m_k``, a suffix sum) and active, summed bin by bin (compiled) with the
    expansion of csrc/tl_soft.h.  ``log M = log1p(-D)`` with ``D = 1 - M`` while
    ``D < 1/2``, else the log of ``M`` summed directly.
    """
    m = lv.mass
    half = 0.5 * _DELTA
    bon = np.searchsorted(bins.c, _SERIES - u - half, side="left")    # [0, bon) far
    boff = np.searchsorted(bins.c, _OFF - u + half, side="right")     # [boff, B) off
    k_on, k_off = bins.first[bon], bins.first[boff]
    off_mass = np.concatenate([np.cumsum(m[::-1])[::-1], [0.0]])    # sum_{k >= i} m_k
    on_mass = np.concatenate([[0.0], np.cumsum(m)])                 # sum_{k < i} m_k
    # sum_far m_k (1 - exp(-x_k)) = -sum_{r=1..5} (-1)^r e^{r u} S_r / r!; smallest first
    series = np.zeros(u.size)
    for r, log_s in sorted(_log_prefixes(lv, lw).items(), reverse=True):
        series -= (-1) ** r * np.exp(r * u + log_s[k_on]) / math.factorial(r)
    d = off_mass[k_off] + series
    md = on_mass[k_on] - series                         # sum_far m_k exp(-x_k)
    stages.nodes(u, bon.astype(np.int64), boff.astype(np.int64), bins.c, bins.m0,
                 bins.P.reshape(-1), d, md)
    with np.errstate(divide="ignore"):
        return np.where(d < 0.5, np.log1p(-np.minimum(d, 0.5)), np.log(np.maximum(md, 0.0)))


def _log_geometric(first: np.ndarray, count: np.ndarray, rate: float) -> np.ndarray:
    """log sum_{i=0}^{count-1} e^{rate (first + i)} for rate > 0, count >= 1 (arrays)."""
    y = rate * count
    return rate * first + y + np.log(-np.expm1(-y)) - math.log(math.expm1(rate))


def _soft_level_law_impl(lv: _Levels, n: float, temperature: float, stages, h: float):
    lw = (lv.values - lv.values[-1]) / temperature          # log w_j <= 0, ascending
    m, L = lv.mass, lv.values.size
    logn = math.log(n)
    # lattice u_i = i h; explicit nodes only where some level is switching off: the
    # union of [-lw - 50 - log n, -lw + 7] over levels, merged into blocks
    # lw ascending, so both ends descend with the level index: reversed, they ascend
    lo = np.floor((-lw[::-1] - _LEFT - logn) / h).astype(np.int64)
    hi = np.ceil((-lw[::-1] + _RIGHT) / h).astype(np.int64)
    reach = np.maximum.accumulate(hi)
    new = np.concatenate([[True], lo[1:] > reach[:-1] + 1])
    first = np.flatnonzero(new)
    ba = lo[first]                                           # block starts
    bb = reach[np.concatenate([first[1:] - 1, [L - 1]])]    # block ends (inclusive)
    counts = bb - ba + 1
    noff = np.cumsum(counts) - counts                       # first node of each block
    idx = np.repeat(ba - noff, counts) + np.arange(int(counts.sum()), dtype=np.int64)
    u = idx * h
    bins = _bin_levels(lw, m)
    log_m = _log_m_nodes(u, lw, lv, bins, stages)
    logA = u + (n - 1.0) * log_m + math.log(h)              # log of h e^u M^(n-1) at nodes
    # pieces in lattice order: before each block one closed-form piece (for the first
    # block all nodes below it, M = 1; later the gap since the previous block, where every
    # level is far or switched off, so M is the far mass), then the block's nodes.  For
    # the per-level series below, piece sums of h e^{u} M^(n-1) e^{r u}, r = 0..5.
    nb = ba.size
    ppos = noff + np.arange(nb)                              # position of block b's piece
    node_pos = np.repeat(ppos + 1 - noff, counts) + np.arange(u.size)
    far_mass = np.ones(nb)
    gap_first = np.empty(nb, dtype=np.int64)
    gap_count = np.empty(nb, dtype=np.int64)
    if nb > 1:
        g0 = bb[:-1] + 1
        on_mass = np.concatenate([[0.0], np.cumsum(m)])
        far_mass[1:] = on_mass[np.searchsorted(lw, -g0 * h - _LEFT - logn)]
        gap_first[1:], gap_count[1:] = g0, ba[1:] - g0
    pieces = np.empty((_TERMS + 1, nb + u.size))
    with np.errstate(divide="ignore"):
        log_far = (n - 1.0) * np.log(far_mass)
    for r in range(_TERMS + 1):
        rate = (1.0 + r) * h
        pieces[r, node_pos] = logA + r * u
        # first block: sum_{i < ba[0]} e^{rate i} = e^{rate ba[0]} / (e^rate - 1)
        pieces[r, ppos[0]] = math.log(h) + rate * ba[0] - math.log(math.expm1(rate))
        if nb > 1:
            pieces[r, ppos[1:]] = (math.log(h) + log_far[1:] +
                                   _log_geometric(gap_first[1:], gap_count[1:], rate))
    cum = np.logaddexp.accumulate(pieces, axis=1)            # log prefix sums, r = 0..5
    # per level j: nodes with u + c_b in [-8, 7] (+- half a bin) by the compiled bin sums,
    # expanded in eps_j = lw_j - c_b; below, the factor exp(-x) = sum_{r <= 5} (-x)^r / r!
    # with x = e^{u + lw_j} < e^-8 on the prefix
    half = 0.5 * _DELTA
    w_lo = np.searchsorted(u, -bins.c + _SERIES - half, side="left")
    w_hi = np.searchsorted(u, -bins.c + _RIGHT + half, side="right")
    nbins = bins.c.size
    mx = np.empty(nbins)
    U = np.empty((nbins, _R + 1))
    stages.bins(u, np.ascontiguousarray(logA), w_lo.astype(np.int64), w_hi.astype(np.int64),
                bins.c, mx, U.reshape(-1))
    T = U @ (_S2 / _FACT[:, None]).T                # T[b, r] = sum_k S(r, k) U[b, k] / r!
    Tl = T[bins.of]
    poly = Tl[:, _R].copy()
    for r in range(_R - 1, -1, -1):
        poly = poly * bins.eps + Tl[:, r]
    with np.errstate(divide="ignore", invalid="ignore"):
        win = np.where(poly > 0, mx[bins.of] + np.log(np.maximum(poly, 1e-300)), -np.inf)
    before = (node_pos[np.minimum(w_lo, u.size - 1)] - 1)[bins.of]
    c = cum[:, before]
    with np.errstate(invalid="ignore", over="ignore"):
        corr = np.zeros(L)
        for r in range(_TERMS, 0, -1):
            corr += (-1) ** r * np.exp(r * lw + c[r] - c[0]) / math.factorial(r)
        pre = np.where(np.isfinite(c[0]), c[0] + np.log1p(np.nan_to_num(corr)), -np.inf)
    log_i = np.logaddexp(pre, win)
    log_p = logn + lv.log_mass + lw + log_i
    total = float(np.exp(np.logaddexp.reduce(log_p)))
    return log_p, total


@interop.arrays("logits", "rewards", "n", "temperature")
def soft_best_of_n(logits: ArrayLike, rewards: ArrayLike, n: float,
                   temperature: float, *, n_threads: int | None = None) -> PolicyLaw:
    """Soft best-of-n: n candidates from p, candidate i returned ``∝ exp(r_i / temperature)``.

    The exact law (module docstring) is
    ``P(level j) = n m_j w_j ∫_0^∞ exp(-t w_j) M(t)^(n-1) dt`` with ``w_j = exp((v_j - v_max)
    / temperature)`` (scaled so that no weight overflows) and ``M(t) = sum_k m_k e^{-t w_k}``.
    With ``t = e^u`` the integrand is analytic and decays doubly exponentially, so the
    trapezoid rule on the lattice ``u = i h`` converges like ``exp(-pi^2 / h)``; nodes are
    evaluated only where some level switches off, the rest is summed in closed form
    (geometric series), all in log space.  The result is renormalised; the quadrature's
    own total mass is in ``params['quadrature_mass']`` (1 to about 1e-13, 1e-16 * spread /
    temperature at worst).  For integer ``n`` the rule converges like ``exp(-pi^2 / h)``
    already at ``h = 1/4``; for non-integer ``n`` (where ``M^(n-1)`` has complex branch
    points near the axis when level masses differ by many orders of magnitude) the step is
    halved, down to ``1/64``, until two lattices agree to 1e-11, and a RuntimeWarning gives
    the remaining difference if they never do.

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
    n_threads : int, optional
        Threads for the compiled quadrature loops (None: all cores).

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
    t = _real(temperature, "temperature", allow_inf=True)
    if not t >= 0:
        raise ValueError(f"temperature must be >= 0; got {t}")
    lv = _levels(logits, rewards)
    params = {"n": nv, "temperature": t}
    log_w, total = _w_soft(lv, nv, t, n_threads)
    if total is not None:
        params["quadrature_mass"] = total
    return _finish("soft_best_of_n", params, logits, rewards, lv, log_w)


def _normalised(log_p: np.ndarray, total: float) -> np.ndarray:
    """The quadrature's level law renormalised; a level holding all the mass gets 0, not
    a rounding error above it (log-probabilities are <= 0)."""
    return np.minimum(log_p - math.log(total), 0.0)


def _w_soft(lv: _Levels, nv: float, t: float, n_threads: int | None = None):
    with np.errstate(over="ignore"):
        spread = float(lv.values[-1] - lv.values[0])
    if not math.isfinite(spread):
        raise ValueError("the reward spread r_max - r_min overflows double; rescale the "
                         "rewards (soft best-of-n depends on r / temperature only)")
    if t == math.inf or nv == 1.0 or lv.values.size == 1:
        return lv.log_mass.copy(), None
    if t == 0.0:
        return _w_bon(lv.values, lv.log_mass, math.log(nv)), None
    if spread / t > _MAX_SPREAD:
        raise ValueError(f"temperature={t} is too small for the reward spread {spread:g} "
                         f"(spread/temperature > {_MAX_SPREAD:g}); use temperature=0, "
                         "which is best-of-n exactly")
    # For integer n the integrand is entire in u and the trapezoid rule converges like
    # exp(-pi^2 / h).  For non-integer n, M(t)^(n-1) has branch points at the complex zeros of
    # M, which come close to the real axis when level masses differ by many orders of
    # magnitude; there the step is halved until two successive lattices agree.
    h = _H
    log_p, total = _soft_level_law(lv, nv, t, n_threads=n_threads, h=h)
    if nv == round(nv):
        return _normalised(log_p, total), total
    err = math.inf
    while h > _H_MIN:
        h /= 2
        finer, total = _soft_level_law(lv, nv, t, n_threads=n_threads, h=h)
        with np.errstate(invalid="ignore"):
            rel = np.abs(np.expm1(finer - log_p))
        err = float(np.max(np.where(np.isfinite(finer), rel, 0.0)))
        log_p = finer
        if err <= _SOFT_TOL:
            break
    if err > _SOFT_TOL:
        import warnings

        warnings.warn(f"soft_best_of_n: the quadrature for n = {nv:g} changed the level "
                      f"probabilities by up to {err:.1e} (relative) at the finest step; they "
                      "are accurate to about that", RuntimeWarning, stacklevel=3)
    return _normalised(log_p, total), total


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


@interop.arrays("logits", "rewards", "grid", "n", "temperature")
def policy_frontier(logits: ArrayLike, rewards: ArrayLike, method: str, grid: ArrayLike, *,
                    n: float | None = None, temperature: float | None = None,
                    n_threads: int | None = None) -> Frontier:
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
    n_threads : int, optional
        Threads (None: all cores); soft best-of-n grid points run concurrently, one thread
        each, and give the same results as one by one.

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
    V.n_threads_value(n_threads)  # checked for every method, not only soft_best_of_n
    g = V.as_real_array(grid, "grid")
    if g.dtype.kind == "b":
        raise TypeError("grid must hold real numbers, not booleans; got dtype bool")
    g = g.astype(np.float64)
    if g.ndim > 1:
        raise ValueError(f"grid must be one-dimensional; got shape {g.shape}")
    g = g.reshape(-1)
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
            if not np.all(g >= 0):
                raise ValueError(f"temperatures must be >= 0; got {g[~(g >= 0)][0]}")
            points = [(nv, float(t)) for t in g]
        else:
            t = V.scalar_param(temperature, "temperature", allow_inf=True)
            if not t >= 0:
                raise ValueError(f"temperature must be >= 0; got {t}")
            if np.any(g < 1) or not np.all(np.isfinite(g)):
                raise ValueError("the grid of n must be finite and >= 1")
            points = [(float(x), t) for x in g]
        laws = _soft_points(lv, points, n_threads)
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


def _soft_points(lv: _Levels, points: list, n_threads: int | None) -> list:
    """Soft best-of-n level laws at several (n, temperature) points; with more than one
    thread, points run concurrently, each single-threaded (the compiled loops release the
    GIL), so the results are those of the serial loop."""
    nt = V.n_threads_value(n_threads)
    if nt == 1 or len(points) < 2:
        return [_w_soft(lv, nv, t, nt)[0] for nv, t in points]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(nt, len(points))) as pool:
        return list(pool.map(lambda p: _w_soft(lv, p[0], p[1], 1)[0], points))


def _w_tilt(lv: _Levels, lam: float) -> np.ndarray:
    """Level law of the exponential tilt (used for its win rate)."""
    if lam == math.inf or lam == -math.inf:
        keep = lv.values.size - 1 if lam > 0 else 0
        out = np.full(lv.values.size, -np.inf)
        out[keep] = 0.0
        return out
    # shift by the reward the tilt favours (the largest for lam > 0, the smallest for
    # lam < 0) so that lam * (v - ref) <= 0: no +inf (and no inf - inf = NaN) for |lam| ~ 1e308
    ref = lv.values[-1] if lam >= 0 else lv.values[0]
    s = lv.log_mass + lam * (lv.values - ref)
    return s - np.logaddexp.reduce(s)
