"""Memoryless sequences with an additive reward: lattice laws, sequence best-of-N,
large deviations and scaled cumulants (SPEC section 4).

A :class:`Memoryless` model draws position ``i`` of a length-``n`` sequence independently
from ``p_i = softmax(logits_i)`` and scores the sequence by ``R = sum_i r_i(y_i)``.  When
every reward is ``o_i + h k`` with integer ``k`` (step ``h``), ``R`` lives on a lattice
and its law is computed exactly, in log space, by the *tilted FFT*: the per-position level
laws are tilted by a common ``theta``, convolved (a product tree of FFT or direct
convolutions, each result trimmed to where it is resolved) and untilted with
``log P(R = s) = log P_theta(R = s) - theta (s - E_theta R) - sum_i kl_i(theta)``.
Several tilts are stitched for the full range; best-of-N needs one, centred where the
maximum of N draws lives.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _lattice
from tiltlab import _validation as V
from tiltlab._streams import size_value
from tiltlab.bestofn import _generators, _log_n_param
from tiltlab.tilting import TiltStats, cumulants, solve_lambda, tilt_stats

__all__ = ["Memoryless", "LatticeLaw", "SequenceBestOfN", "Asymptotics"]

# Values of an FFT-computed window below this fraction of its peak are rounding noise
# and are dropped; values below _RESOLVED are kept for the arithmetic but not trusted
# (SPEC section 4).  Direct convolutions of positive numbers are exact to rounding, so
# their values are trusted down to underflow.
_TRIM = 1e-14
_RESOLVED = 1e-11
# ... and a full-range law reports only points within 1e-6 of the peak of some tilt
# (rounding error relative to the value < ~1e-10), unless computed exactly.
_RESOLVED_LAW = 1e-6
# Below this much work (lattice points squared) the whole law is computed by direct
# convolutions, which are exact to rounding at every point (no FFT noise floor).
_EXACT_WORK = 4e8
# ... trusted down to 1e-280 of the peak: below that, terms lost to underflow and
# subnormal rounding could matter
_LOG_EXACT_FLOOR = math.log(1e-280)
# Full-range laws stitch tilts so that every point is within e^-_CENTRAL of the peak of
# the tilt it is taken from (rounding error relative to the value then stays < 1e-12).
_CENTRAL = 8.0
# Best-of-N levels with log weight above this are the ones that matter (e^-50 ~ 2e-22).
_LIVE = -50.0
# Direct convolution when it is cheap; FFT otherwise.
_DIRECT_MIN = 64
_DIRECT_WORK = 1 << 15
_MAX_LATTICE = 1 << 31
_MAX_FULL_LAW = 1 << 27  # reward_log_pmf allocates a few arrays of this many points
_MAX_LEVEL_TABLE = 1 << 27  # positions x levels per position (1 GiB of float64)
SEQ_SAMPLE_WORK = 1 << 16  # tokens per sampling block (blocks are fixed: thread-independent)
SAMPLE_BLOCK = 65536


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT-friendly size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@dataclass
class _Law:
    """Law of a segment sum (lattice units) under one tilt, on a window of sums.

    ``P_theta(sum = lo + j) = vals[j] * exp(log_scale)``; ``vals`` peaks at 1.  ``exact``:
    every value is accurate to rounding relative to itself (only direct convolutions of
    positive numbers were used).  ``mean``/``var``: tilted moments of the sum.  ``zfac``:
    ``vals * zfac`` is the convolution of the children in their own units.
    """

    lo: int
    vals: np.ndarray
    log_scale: float
    exact: bool
    mean: float
    var: float
    zfac: float = 1.0


def _fft_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear convolution of two real arrays by FFT (absolute error ~1e-16 of the peak)."""
    m = a.size + b.size - 1
    size = _fast_len(m)
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:m]


def _convolve(a: _Law, b: _Law, exact: bool = False) -> _Law:
    na, nb = a.vals.size, b.vals.size
    direct = exact or min(na, nb) <= _DIRECT_MIN or na * nb <= _DIRECT_WORK
    c = np.convolve(a.vals, b.vals) if direct else _fft_convolve(a.vals, b.vals)
    exact = direct and a.exact and b.exact
    peak = float(c.max())
    c /= peak
    if exact:
        c[c < 0.0] = 0.0
    else:
        c[c < _TRIM] = 0.0
    nz = np.flatnonzero(c)
    c = c[nz[0]:nz[-1] + 1]
    return _Law(lo=a.lo + b.lo + int(nz[0]), vals=c, log_scale=a.log_scale + b.log_scale +
                math.log(peak), exact=exact, mean=a.mean + b.mean, var=a.var + b.var,
                zfac=peak)


class _Window(NamedTuple):
    """A tilt's root window: log P(K = lo + j) = logp[j] = q[j] + untilt[j], with q the
    tilted value relative to the window's peak (its "quality")."""

    lo: int
    logp: np.ndarray
    q: np.ndarray
    exact: bool
    law: _Law
    untilt: np.ndarray


class _Levels(NamedTuple):
    """The best-of-N level law on a window's resolved points (lattice units); with
    ``virtual`` the first level stands for the mass below the window."""

    values: np.ndarray
    log_w: np.ndarray
    a: np.ndarray
    metrics: tuple
    virtual: bool
    idx: np.ndarray  # window positions of the real levels

    @property
    def real_log_w(self) -> np.ndarray:
        return self.log_w[1:] if self.virtual else self.log_w


class LatticeLaw(NamedTuple):
    """Law of the sequence reward on its lattice.

    Attributes
    ----------
    values : ndarray
        Lattice values ``offset + step * k``.
    log_pmf : ndarray
        ``log P(R = value)``; ``-inf`` where the value is impossible, NaN where no tilt
        resolves it (SPEC section 4).
    resolved : ndarray of bool
        False exactly where ``log_pmf`` is NaN.
    """

    values: np.ndarray
    log_pmf: np.ndarray
    resolved: np.ndarray


@dataclass(frozen=True)
class Asymptotics:
    """First- and second-order predictions for sequence best-of-N with ``N = e^{n delta}``.

    Attributes
    ----------
    delta : float
        Per-token KL budget (``log N / n``).
    lam : float
        ``lam(delta)``, the tilt with per-token KL ``delta`` (common tilt for
        non-stationary rows).
    reward_per_token : float
        First order (the paper's theorem): ``E_{pi_N} R / n -> mean(lam)``.
    kl_per_token : float
        First order: ``KL(pi_N || p^n) / n -> delta``.
    kl_to_tilted_per_token : float
        First order: ``KL(pi_N || phi_lam^n) / n -> 0``.
    expected_reward : float
        Second order (not in the paper): ``n mean(lam) - log(n) / (2 lam)``, up to O(1).
    kl_to_tilted : float
        Second order: ``(1/2) log n``, up to O(1).
    length : int
        ``n``.
    """

    delta: float
    lam: float
    reward_per_token: float
    kl_per_token: float
    kl_to_tilted_per_token: float
    expected_reward: float
    kl_to_tilted: float
    length: int

    def labels(self) -> dict:
        """Each prediction with the formula it comes from."""
        return {
            "E R / n -> mean(lam)": self.reward_per_token,
            "KL(pi_N || p^n) / n -> delta": self.kl_per_token,
            "KL(pi_N || phi^n) / n -> 0": self.kl_to_tilted_per_token,
            "E R ~ n mean(lam) - log(n) / (2 lam)": self.expected_reward,
            "KL(pi_N || phi^n) ~ (1/2) log n": self.kl_to_tilted,
        }


def _detect_step(d: np.ndarray, scale: float) -> float:
    """Approximate gcd of the non-negative differences d (tolerant Euclid), refined by
    least squares; 0.0 when the rewards are not on a lattice."""
    vals = np.unique(d[d > 0])
    if vals.size == 0:
        return 1.0
    tol = 1e-9 * scale
    g = 0.0
    for x in vals[::-1]:
        a, b = (g, float(x)) if g > x else (float(x), g)
        while b > tol:
            r = abs(a - b * round(a / b))
            a, b = b, r
        g = a
        if g <= 1e-6 * scale:
            return 0.0
    k = np.rint(vals / g)
    h = float(np.dot(vals, k) / np.dot(k, k))
    if np.max(np.abs(vals - k * h)) > 1e-8 * scale:
        return 0.0
    return h


class Memoryless:
    """A memoryless token model with an additive reward (SPEC section 4).

    Position ``i`` of a sequence of ``length`` tokens is drawn independently from
    ``p_i = softmax(logits_i)``; the sequence reward is ``R = sum_i r_i(y_i)``.  The
    optimal KL-constrained policy for a total budget ``n delta`` is the product of
    per-position tilts with one common ``lam``; best-of-N over whole sequences depends on
    ``R`` only, and is computed exactly from the lattice law of ``R``.

    Parameters
    ----------
    logits : array_like, shape (V,) or (length, V)
        Per-token logits: one row (stationary model) or one row per position.
    rewards : array_like, shape (V,) or (length, V)
        Per-token rewards, finite (broadcast against ``logits``).
    length : int
        Sequence length ``n >= 1``.
    step : float, optional
        Lattice step ``h`` of the rewards.  By default detected (every reward of a row,
        minus the row's minimum, must be an integer multiple of ``h`` to 1e-9 relative);
        when given, rewards are quantised to ``o_i + h round((r - o_i) / h)`` and the
        largest change is ``quantisation_error``.  Either way the step is then reduced
        to the coarsest lattice holding the rewards (``step=1e-6`` on rewards
        ``0, 0.5, 1`` gives ``0.5``).
    n_threads : int, optional
        Threads for the compiled kernels.

    Attributes
    ----------
    length : int
        ``n``.
    stationary : bool
        One row for all positions.
    step, offset : float
        ``R = offset + step * K`` with integer ``K`` in ``[0, n_lattice)``.
    n_lattice : int
        Number of lattice points between ``r_min`` and ``r_max``.
    quantisation_error : float
        Largest change made to a reward by ``step=`` (0 for lattice rewards).

    Raises
    ------
    ValueError
        Shapes that do not match ``length``, NaN/+inf logits, rows of all ``-inf``,
        non-finite rewards, non-lattice rewards without ``step=``, a non-positive
        ``step``, or a lattice of more than 2^31 points.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> m = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], length=1000)
    >>> b = m.best_of_n(log_n=0.1 * 1000)
    >>> lam = m.solve_lambda(0.1)
    >>> print(f"{b.expected_reward / 1000:.4f} {m.tilt_stats(lam).mean / 1000:.4f}")
    0.5113 0.5146
    """

    @interop.arrays("logits", "rewards", results=False)
    def __init__(self, logits: ArrayLike, rewards: ArrayLike, length: int, *,
                 step: float | None = None, n_threads: int | None = None):
        lg, rw, stationary = V.memoryless_inputs(logits, rewards, length)
        self.length = V.length_value(length)
        self.stationary = stationary
        self._n_threads = V.n_threads_value(n_threads)
        support = np.isfinite(lg)
        big = np.finfo(np.float64).max
        offs = np.min(np.where(support, rw, big), axis=1)
        d = np.where(support, rw - offs[:, None], 0.0)
        scale = float(max(np.max(d), 1e-300))
        if step is None:
            h = _detect_step(d[support], scale)
            if h == 0.0:
                raise ValueError(
                    "rewards are not on a lattice (no step h makes every reward o_i + h k "
                    "with integer k); pass step= to quantise them to a lattice of that step")
        else:
            h = V.param_array(step, "step", allow_inf=False)
            if h.ndim != 0 or not h > 0:
                raise ValueError(f"step must be a positive number; got {step!r}")
            h = float(h)
        with np.errstate(over="ignore"):
            k = np.where(support, np.rint(d / h), 0.0)
        if not np.max(k) < _MAX_LATTICE:
            raise ValueError(f"the reward lattice with step {h!r} has too many points; pass a "
                             f"coarser step= to quantise")
        # the coarsest lattice that holds the (quantised) rewards: divide k by its gcd
        g = int(np.gcd.reduce(k[support].astype(np.int64)))
        if g > 1:
            k = np.where(support, np.floor_divide(k, g), 0.0)
            h = h * g
        kmax = k.max(axis=1).astype(np.int64)
        per_pos = kmax if not stationary else kmax * self.length
        total = int(np.sum(per_pos)) + 1
        if total > _MAX_LATTICE:
            raise ValueError(f"the law of R has {total} lattice points (length {self.length}, "
                             f"step {h!r}); pass a coarser step= to quantise the rewards, or a "
                             f"shorter length")
        if lg.shape[0] * (int(kmax.max()) + 1) > _MAX_LEVEL_TABLE:
            raise ValueError(f"the per-token reward lattice with step {h!r} has "
                             f"{int(kmax.max()) + 1} levels per position, too many to tabulate; "
                             f"pass a coarser step= to quantise the rewards")
        rq = offs[:, None] + h * k
        self.quantisation_error = float(np.max(np.abs(np.where(support, rq - rw, 0.0))))
        self.step = h
        self._logits = lg
        self._rewards = np.where(support, rq, 0.0)
        # Internally every tilt is in lattice units: theta_k = lam * step acts on the
        # integer levels k (R = offset + step * sum_i k_i), so no reward scale or offset
        # enters the arithmetic of the law.
        self._kf = np.where(support, k, 0.0)
        self._k = k.astype(np.int64)
        self._kmax = kmax
        self._support = support
        self.offset = float(np.sum(offs) * (self.length if stationary else 1))
        self.n_lattice = total
        # per-row level log masses: log p_i(level k), -inf at empty levels
        mx = np.max(lg, axis=1)
        w = np.where(support, np.exp(lg - mx[:, None]), 0.0)
        width = int(kmax.max()) + 1
        rows = np.arange(lg.shape[0])[:, None]
        flat = (rows * width + self._k).ravel()
        mass = np.bincount(flat, weights=w.ravel(), minlength=lg.shape[0] * width)
        mass = mass.reshape(lg.shape[0], width)
        with np.errstate(divide="ignore"):
            self._level_logmass = np.log(mass) - np.log(mass.sum(axis=1, keepdims=True))
        self._gapped = bool(np.any(np.isneginf(self._level_logmass)
                                   & (np.arange(width)[None, :] <= kmax[:, None])))
        self._exact = float(total) ** 2 <= _EXACT_WORK
        self._trees: dict = {}
        self._sampling_cache: tuple = (None, None)

    # ---- per-token statistics (SPEC sections 2 and 4) ----
    def _kstats(self, theta_k) -> TiltStats:
        """Sequence statistics of the level sum ``K = (R - offset) / step`` at the tilt
        ``theta_k`` (lattice units)."""
        return self._rows_stats(theta_k, _levels=True)

    def _rows_stats(self, lam, _levels: bool = False) -> TiltStats:
        """Sequence sums of the per-position statistics of R (or of K)."""
        lam_a = V.param_array(lam, "lam")
        rw = self._kf if _levels else self._rewards
        if self.stationary:
            s = tilt_stats(self._logits[0], rw[0], lam_a, n_threads=self._n_threads)
            n = self.length
            with np.errstate(over="ignore"):  # a sum beyond the double range is +-inf
                return TiltStats(n * s.log_partition, n * s.mean, n * s.variance, n * s.kl)
        s = tilt_stats(self._logits, rw, lam_a[..., None], n_threads=self._n_threads)
        # (lam = +-inf: Lambda_i of mixed signs; sums beyond the double range are +-inf)
        with np.errstate(invalid="ignore", over="ignore"):
            return TiltStats(*(np.sum(x, axis=-1) for x in s))

    @interop.arrays("lam")
    def tilt_stats(self, lam: ArrayLike) -> TiltStats:
        """Sequence-level ``(sum_i Lambda_i, E R, Var R, KL(phi_lam^n || p^n))`` under the
        product of per-position tilts with common ``lam`` (SPEC section 4)."""
        return self._rows_stats(lam)

    @property
    def kl_max(self) -> float:
        """Total KL of the ``lam -> inf`` limit: ``-sum_i log p_i(argmax set)``."""
        return float(self.tilt_stats(np.inf).kl)

    @property
    def r_min(self) -> float:
        """Smallest possible sequence reward."""
        return self.offset

    @property
    def r_max(self) -> float:
        """Largest possible sequence reward."""
        return self.offset + self.step * (self.n_lattice - 1)

    @property
    def values(self) -> np.ndarray:
        """All lattice values of ``R``."""
        return self.offset + self.step * np.arange(self.n_lattice, dtype=np.float64)

    def _solve_k(self, delta: float) -> float:
        """The common tilt in lattice units whose per-token KL is delta."""
        if self.stationary:
            return float(solve_lambda(self._logits[0], self._kf[0], delta,
                                      n_threads=self._n_threads))
        return float(solve_lambda(self._logits, self._kf, self.length * delta, joint=True,
                                  n_threads=self._n_threads))

    @interop.arrays("delta")
    def solve_lambda(self, delta: ArrayLike):
        """The common tilt whose per-token KL is ``delta`` (SPEC sections 2 and 4).

        Stationary: per-token ``kl(lam) = delta``.  Non-stationary: one ``lam`` with
        ``sum_i kl_i(lam) = length * delta`` (``solve_lambda(..., joint=True)``).
        ``inf`` when ``delta`` reaches the per-token ``kl_max``.
        """
        d = V.nonnegative_param(delta, "delta")
        # solved on the lattice levels (scale-free), then back to reward units
        if self.stationary:
            lam_k = solve_lambda(self._logits[0], self._kf[0], d, n_threads=self._n_threads)
        else:
            lam_k = np.array([self._solve_k(float(x)) for x in d.ravel()]).reshape(d.shape)
        out = np.asarray(lam_k, dtype=np.float64) / self.step
        return out[()] if out.ndim == 0 else out

    @interop.arrays("lam")
    def cumulants(self, order: int, lam: ArrayLike = 0.0) -> np.ndarray:
        """Cumulants ``kappa_1 .. kappa_order`` of ``R`` under ``phi_lam^n``:
        ``kappa_k(R) = sum_i Lambda_i^{(k)}(lam)`` (SPEC section 4)."""
        lam_a = V.param_array(lam, "lam")
        if self.stationary:
            c = cumulants(self._logits[0], self._rewards[0], order, lam_a,
                          n_threads=self._n_threads)
            return self.length * c
        c = cumulants(self._logits, self._rewards, order, lam_a[..., None],
                      n_threads=self._n_threads)
        return np.sum(c, axis=-2)

    @interop.arrays("lam")
    def scaled_cumulants(self, order: int, lam: ArrayLike = 0.0) -> np.ndarray:
        """``kappa_k(R) / length`` (SPEC section 4)."""
        return self.cumulants(order, lam) / self.length

    # ---- large deviations (SPEC section 4) ----
    @interop.arrays("x", "lam")
    def rate_function(self, x: ArrayLike, lam: ArrayLike = 0.0) -> np.ndarray:
        """Rate function ``I_lam(x)`` of ``R / length`` under ``phi_lam^n`` (SPEC section 4).

        Stationary: :func:`tiltlab.rate_function` of the token model.  Non-stationary: the
        Legendre transform of the averaged CGF ``(1/n) sum_i Lambda_i``.
        """
        from tiltlab import largedev

        if self.stationary:
            return largedev.rate_function(self._logits[0], self._rewards[0], x, lam)
        return largedev._rate_function_sequence(self._logits, self._rewards, x, lam)

    @interop.arrays("t", "lam")
    def scaled_cgf(self, t: ArrayLike, lam: ArrayLike = 0.0) -> np.ndarray:
        """``(1/n) log E_{phi_lam} exp(t R)`` (exact for every n; SPEC section 4)."""
        from tiltlab import largedev

        if self.stationary:
            return largedev.scaled_cgf(self._logits[0], self._rewards[0], t, lam)
        t_a = V.param_array(t, "t")
        lam_a = V.param_array(lam, "lam")
        shape = np.broadcast_shapes(t_a.shape, lam_a.shape)
        val = largedev.scaled_cgf(self._logits, self._rewards,
                                  np.broadcast_to(t_a, shape)[..., None],
                                  np.broadcast_to(lam_a, shape)[..., None])
        return np.mean(val, axis=-1)

    @interop.arrays("delta")
    def asymptotics(self, delta: float) -> Asymptotics:
        """First-order limits and second-order predictions for ``N = e^{n delta}``.

        The paper's theorem: ``E R / n -> mean(lam)`` and ``KL(pi_N || phi^n) / n -> 0``
        with ``lam = lam(delta)``; the finite-n refinement of SPEC section 4:
        ``E R = n mean(lam) - log(n) / (2 lam) + O(1)`` and
        ``KL(pi_N || phi^n) = (1/2) log n + O(1)``.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> a = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], 10_000).asymptotics(0.1)
        >>> print(f"{a.lam:.10f} {a.reward_per_token:.10f} {a.expected_reward:.2f}")
        0.9058310508 0.5146291211 5141.21
        """
        d = V.nonnegative_param(delta, "delta")
        if d.ndim != 0:
            raise ValueError(f"delta must be a single number; got an array of shape {d.shape}")
        d = float(d)
        lam = float(self.solve_lambda(d))
        st = self.tilt_stats(lam)
        n = self.length
        mean_tok = float(st.mean) / n
        # N = 1 (delta = 0) is the reference itself; beyond kl_max the optimal policy is
        # the argmax limit, whose per-token KL is kl_max / n
        live = 0.0 < lam < np.inf
        er2 = float(st.mean) - (math.log(n) / (2 * lam) if live else 0.0)
        return Asymptotics(delta=d, lam=lam, reward_per_token=mean_tok,
                           kl_per_token=min(d, self.kl_max / n), kl_to_tilted_per_token=0.0,
                           expected_reward=er2, kl_to_tilted=0.5 * math.log(n) if live else 0.0,
                           length=n)

    # ---- the lattice law under one tilt ----
    def _leaves(self, theta: float, rows=None) -> list:
        """Tilted per-position level laws (lattice units) of the given rows, vectorised."""
        rows = np.arange(self._logits.shape[0]) if rows is None else np.asarray(rows)
        lm = self._level_logmass[rows]
        kk = np.arange(lm.shape[1], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            lx = lm + theta * kk
        lx = np.where(np.isneginf(lm), -np.inf, lx)
        v = np.exp(lx - np.max(lx, axis=1, keepdims=True))
        v /= v.sum(axis=1, keepdims=True)
        mean = (v * kk).sum(axis=1)
        var = (v * (kk - mean[:, None]) ** 2).sum(axis=1)
        peak = v.max(axis=1)
        v /= peak[:, None]
        log_peak = np.log(peak)
        return [_Law(lo=0, vals=v[i, :self._kmax[r] + 1].copy(), log_scale=float(log_peak[i]),
                     exact=True, mean=float(mean[i]), var=float(var[i]))
                for i, r in enumerate(rows.tolist())]

    def _stationary_law(self, length: int, theta: float, memo: dict) -> _Law:
        if length in memo:
            return memo[length]
        if length == 1:
            law = self._leaves(theta, [0])[0]
        else:
            h = length // 2
            law = _convolve(self._stationary_law(h, theta, memo),
                            self._stationary_law(length - h, theta, memo), self._exact)
        memo[length] = law
        return law

    def _tree(self, theta: float) -> dict:
        """Segment-tree laws at tilt theta: stationary, keyed by segment length; otherwise
        keyed by (start, length) of the segment."""
        key = float(theta)
        if key in self._trees:
            return self._trees[key]
        memo: dict = {}
        if self.stationary:
            self._stationary_law(self.length, theta, memo)
        else:
            leaves = self._leaves(theta)

            def build(pos, length):
                if length == 1:
                    law = leaves[pos]
                else:
                    h = length // 2
                    law = _convolve(build(pos, h), build(pos + h, length - h), self._exact)
                memo[(pos, length)] = law
                return law
            build(0, self.length)
        if len(self._trees) > 8:
            self._trees.pop(next(iter(self._trees)))
        self._trees[key] = memo
        return memo

    def _root(self, theta: float) -> _Law:
        memo = self._tree(theta)
        return memo[self.length] if self.stationary else memo[(0, self.length)]

    def _window(self, theta: float) -> _Window:
        """The law of K at tilt theta on the root window, untilted (SPEC section 4)."""
        law = self._root(theta)
        st = self._kstats(theta)
        j = np.arange(law.vals.size, dtype=np.float64)
        untilt = law.log_scale - theta * (law.lo + j - float(st.mean)) - float(st.kl)
        with np.errstate(divide="ignore"):
            q = np.log(law.vals)
        return _Window(law.lo, q + untilt, q, law.exact, law, untilt)

    def _theta_for_mean(self, target: float, theta: float = 0.0, rtol: float = 0.05) -> float:
        """A tilt (lattice units) whose tilted mean of the level sum K is within rtol
        standard deviations of target."""
        lo, hi = -np.inf, np.inf
        for _ in range(200):
            st = self._kstats(theta)
            f = float(st.mean) - target
            sd = math.sqrt(max(float(st.variance), 0.0))
            if abs(f) <= rtol * max(sd, 1e-300) or (sd == 0.0 and abs(f) < 1e-9):
                return theta
            if f < 0:
                lo = theta
            else:
                hi = theta
            with np.errstate(over="ignore", divide="ignore"):
                nxt = theta - f / float(st.variance) if st.variance > 0 else np.nan
            if not (lo < nxt < hi):
                if np.isfinite(lo) and np.isfinite(hi):
                    nxt = 0.5 * (lo + hi)
                elif np.isfinite(lo):
                    nxt = lo + max(1.0, abs(lo))
                else:
                    nxt = hi - max(1.0, abs(hi))
            theta = nxt
        return theta

    # ---- the full law (SPEC section 4) ----
    @interop.arrays("lam")
    def reward_log_pmf(self, lam: ArrayLike = 0.0) -> LatticeLaw:
        """The exact law of ``R`` on its lattice, in log space (SPEC section 4).

        Tilted FFT with several tilts stitched: each lattice point is taken from the tilt
        under which it is most central, so its rounding error relative to its own value
        is typically 1e-13 however far in the tail it lies (e.g. ``1e-3000``), and at
        most ~1e-10 for points reported as resolved (within 1e-6 of the peak of some
        tilt).  Points that no tilt brings that close (a sub-lattice carrying far less
        mass than its neighbours) are NaN.  Small lattices (up to ~2e4 points) are
        computed by direct convolutions instead, exact to rounding everywhere.  On top of
        that, ``log_pmf`` carries an absolute error of about ``1e-16 * n`` from undoing the
        tilt (relative to ``log_pmf`` itself this is below 1e-13).  With ``lam`` the law is
        that of ``R`` under ``phi_lam^n``.

        Returns
        -------
        LatticeLaw
            ``(values, log_pmf, resolved)``; ``log_pmf`` is ``-inf`` at impossible values
            and NaN where no tilt resolves the value.

        Examples
        --------
        Binomial(10^4, 0.3) in log10, down to ``0.7^10000 = 10^-1549``:

        >>> import numpy as np, tiltlab
        >>> law = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], 10_000).reward_log_pmf()
        >>> print(" ".join(f"{v:.4f}" for v in law.log_pmf[[0, 3000, 10_000]] / np.log(10)))
        -1549.0196 -2.0602 -5228.7875
        """
        lam_f = V.scalar_param(lam, "lam")
        K = self.n_lattice
        if K > _MAX_FULL_LAW:
            raise ValueError(
                f"the full law of R has {K} lattice points (about {K * 40 / 2**30:.0f} GiB of "
                f"work arrays); best_of_n needs only a window of it, or pass a coarser step=")
        sw = _Stitch(self, 0, K - 1, _RESOLVED_LAW)
        sw.take(0.0)
        sw.sweep(0.0)
        best_ok, out = sw.ok, sw.logp
        unresolved = ~best_ok
        if np.any(unresolved):
            reach = self._reachable()
            out[unresolved & ~reach] = -np.inf
            out[unresolved & reach] = np.nan
            resolved = ~(unresolved & reach)
        else:
            resolved = np.ones(K, dtype=bool)
        if lam_f != 0.0:
            out = self._retilt(out, lam_f)
        return LatticeLaw(self.values, out, resolved)

    def _retilt(self, logp: np.ndarray, lam: float) -> np.ndarray:
        """log P_lam(R = s) = log P(R = s) + lam (s - E_lam R) + KL_lam (SPEC section 4)."""
        if np.isinf(lam):
            out = np.full_like(logp, -np.inf)
            out[-1 if lam > 0 else 0] = 0.0
            return out
        th = lam * self.step
        if np.isinf(th):
            return self._retilt(logp, th)
        st = self._kstats(th)
        k = np.arange(self.n_lattice, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return logp + th * (k - float(st.mean)) + float(st.kl)

    def _reachable(self) -> np.ndarray:
        """Which lattice points have positive probability (boolean sumset)."""
        def bconv(a, b):  # counts are integers: the FFT's rounding stays far below 0.5
            small = min(a.size, b.size) <= _DIRECT_MIN
            c = np.convolve(a, b) if small else _fft_convolve(a, b)
            return (c > 0.5).astype(np.float64)

        if not self._gapped:  # every level set is an interval: so is every sum
            return np.ones(self.n_lattice, dtype=bool)
        leaves = [np.isfinite(self._level_logmass[i, :self._kmax[i] + 1]).astype(np.float64)
                  for i in range(self._logits.shape[0])]
        if self.stationary:
            memo: dict = {1: leaves[0]}

            def power(n):
                if n not in memo:
                    memo[n] = bconv(power(n // 2), power(n - n // 2))
                return memo[n]
            return power(self.length) > 0.5

        def prod(pos, n):
            if n == 1:
                return leaves[pos]
            return bconv(prod(pos, n // 2), prod(pos + n // 2, n - n // 2))
        return prod(0, self.length) > 0.5

    def _sampling_tree(self, theta: float) -> dict:
        """Flat segment tree at tilt theta for the conditional sampler (one cached)."""
        if self._sampling_cache[0] != theta:
            self._sampling_cache = (theta, _build_sampling_tree(self, theta))
        return self._sampling_cache[1]

    # ---- best-of-N over sequences (SPEC section 4) ----
    @interop.arrays("n", "log_n")
    def best_of_n(self, n: float | None = None, *, log_n: float | None = None
                  ) -> SequenceBestOfN:
        """Exact best-of-N over whole sequences (SPEC sections 3 and 4).

        Best-of-N depends on ``R`` only: the level machinery of SPEC section 3 runs on the
        lattice law of ``R``, computed under the tilt centred where the maximum of N
        draws lives (``lam(log N / n)``, re-centred if needed).

        Parameters
        ----------
        n : float, optional
            Number of candidate sequences, ``N >= 1`` (real).
        log_n : float, optional
            ``log N >= 0``, e.g. ``0.3 * length`` (N far beyond float range).

        Returns
        -------
        SequenceBestOfN

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Memoryless(np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0], 10_000)
        >>> b = m.best_of_n(log_n=0.3 * 10_000)          # N = e^3000
        >>> lam = m.solve_lambda(0.3)
        >>> print(f"{b.expected_reward / 1e4:.4f} {m.tilt_stats(lam).mean / 1e4:.4f}")
        1.8556 1.8564
        >>> print(f"{b.kl_to_tilted(lam):.3f} {0.5 * np.log(1e4):.3f}")
        3.676 4.605
        """
        ln = _log_n_param(n, log_n)
        if ln.ndim != 0:
            raise ValueError(f"Memoryless.best_of_n takes one N (a scalar n or log_n); got "
                             f"shape {ln.shape}")
        ln = float(ln)
        if self.n_lattice == 1:
            return self._bon_point_mass(ln)
        per_tok = float(self._kstats(np.inf).kl) / self.length
        delta = ln / self.length
        theta = self._solve_k(min(delta, 0.999 * per_tok)) if delta > 0 else 0.0
        result = None
        for _ in range(8):
            result, better = self._bon_at(theta, ln)
            if better is None or abs(better - theta) <= 1e-12 * max(1.0, abs(theta)):
                break
            theta = better
        if result.unresolved_weight > 1e-10:
            warnings.warn(
                f"best_of_n: up to {result.unresolved_weight:.2g} of the best-of-N weight may "
                f"sit on lattice points that the FFT cannot resolve (a sub-lattice carrying "
                f"much less mass than its neighbours); the metrics may be off by about that "
                f"much.  A coarser step= (quantisation) or a shorter length avoids it.",
                RuntimeWarning, stacklevel=2)
        return result

    def _bon_point_mass(self, ln: float) -> SequenceBestOfN:
        """R takes one value: every policy is the reference."""
        zero = np.zeros(1)
        return SequenceBestOfN(
            kl=0.0, expected_reward=self.offset, win_rate=0.5, log_n=ln,
            kl_bound=ln + math.expm1(-ln), win_rate_bound=1.0 / (1.0 + math.exp(-ln)),
            values=np.array([self.offset]), log_probs=zero.copy(), total_mass=1.0, theta=0.0,
            unresolved_weight=0.0, _model=self, _a=zero.copy(), _virtual=False, _lo=0,
            _idx=np.zeros(1, dtype=np.int64), _er0=0.0)

    def _bon_at(self, theta: float, ln: float):
        """Best-of-N from the window at theta (lattice units): (result, None) when the
        window holds the law, else (result, a better-centred tilt)."""
        win = self._window(theta)
        lo, logp, q, exact, law = win.lo, win.logp, win.q, win.exact, win.law
        lv = self._bon_levels(lo, logp, q, exact, ln)
        # Levels that carry weight but sit in a tail of this tilt are recomputed under
        # tilts centred on them (stitching), so that log_probs keeps its relative
        # accuracy there too; the metrics barely move.
        heavy = lv.idx[lv.real_log_w > _LIVE]
        if not exact and heavy.size and np.min(q[heavy]) < -_CENTRAL:
            ka, kb = lo + int(heavy.min()), lo + int(heavy.max())
            st = _Stitch(self, ka, kb)
            st.take(theta)
            st.sweep(theta)
            sl = slice(ka - lo, kb - lo + 1)
            logp[sl], q[sl] = st.logp, st.q
            lv = self._bon_levels(lo, logp, q, exact, ln)
            heavy = lv.idx[lv.real_log_w > _LIVE]
        kl, er_k, wr, tm = lv.metrics
        # Weight that may hide on unresolved points of the window above the lowest level
        # that matters: w_s <= N P(R = s), and P(R = s) is below the resolution there.
        hidden = 0.0
        if not exact and heavy.size:
            j = np.arange(int(heavy.min()), q.size)
            un = j[~(q[j] >= math.log(_RESOLVED))]
            if un.size:
                bound = ln + math.log(_RESOLVED) + win.untilt[un]
                hidden = float(np.exp(min(np.logaddexp.reduce(bound), 0.0)))
        h = self.step
        values = lv.values[1:] if lv.virtual else lv.values
        result = SequenceBestOfN(
            kl=max(kl, 0.0), expected_reward=self.offset + h * er_k,
            win_rate=min(max(wr, 0.0), 1.0), log_n=ln,
            kl_bound=ln + math.expm1(-ln), win_rate_bound=1.0 / (1.0 + math.exp(-ln)),
            values=self.offset + h * values, log_probs=lv.real_log_w,
            total_mass=tm, theta=theta / h, unresolved_weight=hidden,
            _model=self, _a=lv.a, _virtual=lv.virtual, _lo=lo, _idx=lv.idx, _er0=er_k,
            _theta_k=theta)
        # the maximum must sit well inside the window: re-centre on its mean otherwise
        w = np.exp(lv.real_log_w)
        cen = float(np.sum(w * values) / max(w.sum(), 1e-300))
        sd = math.sqrt(max(law.var, 1e-300))
        below = math.exp(lv.log_w[0]) if lv.virtual else 0.0
        if below > 1e-14 or (abs(cen - law.mean) > 3.0 * sd and not exact):
            cen = min(cen, self.n_lattice - 1.5)
            return result, self._theta_for_mean(cen, theta)
        return result, None

    def _bon_levels(self, lo, logp, q, exact, ln) -> _Levels:
        """The level law on the resolved points of a window (values in lattice units)."""
        ok = (q >= math.log(_RESOLVED)) | (exact & (q >= _LOG_EXACT_FLOOR))
        idx = np.flatnonzero(ok)
        values = (lo + idx).astype(np.float64)
        log_mass = logp[idx]
        total = float(np.sum(np.exp(log_mass)))
        # A window that holds (nearly) all the mass is renormalised; otherwise the mass
        # outside it lies below it (theta >= 0 puts the upper tail inside) and becomes
        # one virtual level under the window, whose best-of-N weight F^N must vanish.
        virtual = total < 1.0 - 1e-9
        if virtual:
            values = np.concatenate(([values[0] - 1.0], values))
            log_mass = np.concatenate(([math.log1p(-total)], log_mass))
        else:
            log_mass = log_mass - math.log(total)
        log_w = np.empty(values.size)
        a = np.empty(values.size)
        metrics = _lattice.level_law(values, log_mass, ln, False, log_w, a)
        return _Levels(values, log_w, a, metrics, virtual, idx)


class _Stitch:
    """Per lattice point in [klo, khi], the value from the tilt under which it is most
    central (SPEC section 4: several tilts cover a wide range)."""

    def __init__(self, model: Memoryless, klo: int, khi: int, resolved: float = _RESOLVED):
        self.model, self.klo, self.khi = model, klo, khi
        self.log_res = math.log(resolved)
        n = khi - klo + 1
        self.q = np.full(n, -np.inf)
        self.ok = np.zeros(n, dtype=bool)
        self.logp = np.full(n, np.nan)
        self.last = None

    def take(self, theta: float) -> _Law:
        lo, logp, q, exact, law, _ = self.model._window(theta)
        a, b = max(lo, self.klo), min(lo + q.size, self.khi + 1)
        if a < b:
            src = slice(a - lo, b - lo)
            dst = slice(a - self.klo, b - self.klo)
            better = q[src] > self.q[dst]
            self.q[dst] = np.where(better, q[src], self.q[dst])
            self.logp[dst] = np.where(better, logp[src], self.logp[dst])
            ok = (q[src] >= self.log_res) | (exact & (q[src] >= _LOG_EXACT_FLOOR))
            self.ok[dst] = np.where(better, ok, self.ok[dst])
        self.last = (theta, law)
        return law

    def sweep(self, theta: float, directions=(1, -1)) -> None:
        """From the window at theta, add tilts outwards until both ends of the range are
        within e^-_CENTRAL of the peak of some tilt (or exactly resolved)."""
        model = self.model
        K = model.n_lattice
        theta0, law0 = self.last
        for direction in directions:
            law, theta = law0, theta0
            last_target = None
            edge = self.khi - self.klo if direction > 0 else 0
            for _ in range(100000):
                if self.q[edge] >= -_CENTRAL or (law.exact and self.ok[edge]):
                    break
                # exact (direct) windows are trusted down to underflow: step past all of
                # it; FFT windows only near their peak
                good = np.flatnonzero(self.ok if law.exact else self.q >= -0.5 * _CENTRAL)
                if good.size:
                    front = self.klo + (good.max() if direction > 0 else good.min())
                else:
                    front = law.mean
                sd = math.sqrt(max(law.var, 0.25))
                target = front + direction * (6.0 if law.exact else 2.5) * sd
                lim = K - 1.5 if direction > 0 else 0.5
                if direction * (target - lim) > 0:
                    target = lim
                if last_target is not None and direction * (target - last_target) <= 1e-9:
                    # at the end of the lattice: halve the remaining distance to the edge
                    target = last_target + 0.5 * (self.klo + edge - last_target)
                last_target = target
                theta = model._theta_for_mean(target, theta)
                law = self.take(theta)
        self._fill_gaps()

    def _fill_gaps(self, rounds: int = 20) -> None:
        """Tilts centred on runs of points that no window resolved yet (between two
        windows whose trusted ranges did not meet); runs that a centred tilt cannot
        resolve either (impossible values, or a sub-lattice far below its neighbours)
        are left alone."""
        tried: set = set()
        for _ in range(rounds):
            bad = np.flatnonzero(~self.ok)
            if bad.size == 0:
                return
            cuts = np.flatnonzero(np.diff(bad) > 1)
            runs = np.split(bad, cuts + 1)
            progress = False
            for run in runs:
                mid = self.klo + int(run[(run.size - 1) // 2])
                if mid in tried or not 0 < mid < self.model.n_lattice - 1:
                    continue
                tried.add(mid)
                before = int(np.count_nonzero(self.ok))
                theta = self.model._theta_for_mean(float(mid), self.last[0])
                self.take(theta)
                progress |= int(np.count_nonzero(self.ok)) > before
            if not progress:
                return


@dataclass
class SequenceBestOfN:
    """Exact best-of-N over the sequences of a :class:`Memoryless` model.

    Attributes
    ----------
    kl : float
        ``KL(pi_N || p^n) = sum_s w_s log(w_s / P(R = s))``.
    expected_reward : float
        ``E_{pi_N} R``.
    win_rate : float
        P(the best-of-N sequence beats one draw from p^n), ties 1/2.
    kl_bound, win_rate_bound : float
        ``log N - (N-1)/N`` and ``N / (N+1)``.
    log_n : float
        ``log N``.
    values, log_probs : ndarray
        Lattice values carrying best-of-N mass and ``log P_{pi_N}(R = value)``.
    total_mass : float
        ``sum_s w_s`` (1 up to rounding).
    theta : float
        The tilt (reward units) under which the law was computed.
    unresolved_weight : float
        An upper bound on the best-of-N weight that may sit on lattice points the FFT
        could not resolve (0 when the law was computed exactly; a RuntimeWarning is
        issued above 1e-10).
    """

    kl: float
    expected_reward: float
    win_rate: float
    log_n: float
    kl_bound: float
    win_rate_bound: float
    values: np.ndarray = field(repr=False)
    log_probs: np.ndarray = field(repr=False)
    total_mass: float
    theta: float
    unresolved_weight: float
    _model: Memoryless = field(repr=False)
    _a: np.ndarray = field(repr=False)
    _virtual: bool = field(repr=False)
    _lo: int = field(repr=False)
    _idx: np.ndarray = field(repr=False)
    _er0: float = field(repr=False, default=0.0)
    _theta_k: float = field(repr=False, default=0.0)

    def __post_init__(self):
        V.freeze(self)  # read-only arrays (SPEC section 1)

    @interop.arrays("lam")
    def kl_to_tilted(self, lam: ArrayLike):
        """``KL(pi_N || phi_lam^n) = KL(pi_N || p^n) - lam (E R - E_lam R) - KL_lam``
        (SPEC section 4; the centred form of the closeness identity)."""
        lam_a = V.param_array(lam, "lam")
        with np.errstate(over="ignore", invalid="ignore"):
            th = lam_a * self._model.step  # lattice units
        # th = +-inf (lam = +-inf, or lam * step beyond the double range): the lattice gap is
        # at least 1 in these units, so phi^n is exactly the limit there
        fin = np.isfinite(th)
        st = self._model._kstats(np.where(fin, th, 0.0))
        with np.errstate(invalid="ignore", over="ignore"):
            val = np.maximum(self.kl - th * (self._er0 - st.mean) - st.kl, 0.0)
        if not np.all(fin):
            # phi_{+-inf}^n is p^n on the top (bottom) value only: the KL is finite only
            # if pi_N lives there too, and then it is log(1 / 1) = 0
            on = np.isfinite(self.log_probs)
            top = on.sum() == 1 and on[-1] and self.values[-1] == self._model.r_max
            bottom = on.sum() == 1 and on[0] and self.values[0] == self._model.r_min
            val = np.where(fin, val, np.where(th > 0, 0.0 if top else np.inf,
                                              0.0 if bottom else np.inf))
        return val[()] if val.ndim == 0 else val

    @cached_property
    def _guide(self):
        cdf = np.empty(self._a.size)
        guide = np.empty(self._a.size, dtype=np.int64)
        _lattice.level_guide(self._a, cdf, guide)
        return cdf, guide

    def _level_sums(self) -> np.ndarray:
        """Lattice index of each level of the law (-1 for the mass below the window)."""
        sums = self._lo + self._idx
        if self._virtual:
            sums = np.concatenate(([-1], sums))
        return sums.astype(np.int64)

    def sample_rewards(self, size: int | None = None, rng=None, n_threads: int | None = None):
        """Rewards ``R`` of best-of-N sequences, by the order statistic on the lattice law
        (SPEC section 3; cost independent of N).

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> b = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], 10_000).best_of_n(log_n=1e3)
        >>> b.sample_rewards(3, rng=0)
        array([5141., 5140., 5141.])
        """
        sz = size_value(size)
        draws = 1 if sz is None else sz
        nt = V.n_threads_value(n_threads)
        # int64 sums and float64 values, one bit generator (~1 KiB) per block of draws
        V.check_memory(max(draws, 1) * 16 + -(-draws // SAMPLE_BLOCK) * 1024,
                       f"size={sz} sampled rewards")
        cdf, guide = self._guide
        k = np.empty(max(draws, 1), dtype=np.int64)
        if draws:
            blocks = -(-draws // SAMPLE_BLOCK)
            fails = _lattice.sample_sums(cdf, guide, self._level_sums(), draws, SAMPLE_BLOCK,
                                         _generators(rng, blocks), k,
                                         V.threads_for_blocks(blocks, nt))
            if fails:
                raise RuntimeError(f"tiltlab: {fails} best-of-N draws failed (internal error)")
        k = k[:draws]
        vals = self._model.offset + self._model.step * k.astype(np.float64)
        return float(vals[0]) if sz is None else vals

    def sample(self, size: int | None = None, rng=None, n_threads: int | None = None):
        """Token sequences from ``pi_N``, shape ``(size, length)`` (int32 token ids).

        The reward level of the maximum is drawn by the order statistic, then the tokens
        from ``p^n`` conditioned exactly on that total: a segment tree over positions
        holding the laws of segment sums splits the total between the two halves with
        probability ``P(left = a) P(right = s - a) / P(s)`` (SPEC section 4).  The same
        seed gives the same sequences for any number of threads.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> b = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], 10_000).best_of_n(log_n=1e3)
        >>> y = b.sample(2, rng=0)
        >>> y.shape, y.sum(axis=1)
        ((2, 10000), array([5141, 5141]))
        """
        sz = size_value(size)
        draws = 1 if sz is None else sz
        nt = V.n_threads_value(n_threads)
        model = self._model
        n = model.length
        # int32 tokens and int64 sums, one bit generator (~1 KiB) per block of draws, and
        # the segment tree over the positions (~400 bytes per position at its peak)
        V.check_memory(max(draws, 1) * (4 * n + 8) + -(-draws // max(1, SEQ_SAMPLE_WORK // n))
                       * 1024 + 512 * n,
                       f"size={sz} sequences of length {n} (with the sampling tree over "
                       f"the positions)")
        out = np.empty((max(draws, 1), n), dtype=np.int32)
        sums_out = np.empty(max(draws, 1), dtype=np.int64)
        if draws:
            tree = model._sampling_tree(self._theta_k)
            cdf, guide = self._guide
            block = max(1, SEQ_SAMPLE_WORK // n)
            blocks = -(-draws // block)
            gens = _generators(rng, blocks)
            fails = _lattice.sample_sequences(
                tree["nodes"], 0, tree["vals"], tree["ls_off"], tree["level_start"],
                tree["slot_off"], tree["slots"], cdf, guide, self._level_sums(), draws, block,
                gens, out, sums_out, V.threads_for_blocks(blocks, nt))
            if fails:
                raise RuntimeError(f"tiltlab: {fails} conditional draws failed (internal error)")
        out = out[:draws]
        return out[0] if sz is None else out


def _segments(n: int):
    """Breadth-first segment tree over n positions: arrays pos, length, left, right."""
    pos = [np.zeros(1, dtype=np.int64)]
    ln = [np.array([n], dtype=np.int64)]
    total = 1
    lefts, rights = [], []
    while True:
        p, L = pos[-1], ln[-1]
        internal = L > 1
        m = int(internal.sum())
        left = np.full(L.size, -1, dtype=np.int64)
        right = np.full(L.size, -1, dtype=np.int64)
        left[internal] = total + 2 * np.arange(m)
        right[internal] = left[internal] + 1
        lefts.append(left)
        rights.append(right)
        if m == 0:
            break
        h = L[internal] // 2
        cp = np.empty(2 * m, dtype=np.int64)
        cl = np.empty(2 * m, dtype=np.int64)
        cp[0::2] = p[internal]
        cl[0::2] = h
        cp[1::2] = p[internal] + h
        cl[1::2] = L[internal] - h
        pos.append(cp)
        ln.append(cl)
        total += 2 * m
    return (np.concatenate(pos), np.concatenate(ln), np.concatenate(lefts),
            np.concatenate(rights))


def _build_sampling_tree(model: Memoryless, theta: float) -> dict:
    memo = model._tree(theta)
    pos, length, left, right = _segments(model.length)
    # distinct laws and their offsets in one value buffer
    keys = ([int(x) for x in length] if model.stationary
            else list(zip(pos.tolist(), length.tolist(), strict=True)))
    law_index: dict = {}
    chunks = []
    offs = []
    off = 0
    node_off = np.empty(pos.size, dtype=np.int64)
    lo = np.empty(pos.size, dtype=np.int64)
    ln_ = np.empty(pos.size, dtype=np.int64)
    mean = np.empty(pos.size)
    var = np.empty(pos.size)
    zfac = np.empty(pos.size)
    for i, key in enumerate(keys):
        j = law_index.get(key)
        law = memo[key]
        if j is None:
            j = len(chunks)
            law_index[key] = j
            chunks.append(law.vals)
            offs.append(off)
            off += law.vals.size
        node_off[i] = offs[j]
        lo[i] = law.lo
        ln_[i] = law.vals.size
        mean[i] = law.mean
        var[i] = law.var
        zfac[i] = law.zfac
    nodes = np.zeros(pos.size, dtype=_lattice.SEG_NODE_DTYPE)
    nodes["left"] = left
    nodes["right"] = right
    nodes["pos"] = pos
    nodes["row"] = 0 if model.stationary else pos
    nodes["lo"] = lo
    nodes["len"] = ln_
    nodes["off"] = node_off
    # conditional centre of the left sum given the node's sum s: c0 + ratio * s
    internal = left >= 0
    li, ri = left[internal], right[internal]
    vs = var[li] + var[ri]
    ratio = np.where(vs > 0, var[li] / np.where(vs > 0, vs, 1.0), 0.5)
    nodes["ratio"][internal] = ratio
    nodes["c0"][internal] = mean[li] - ratio * (mean[li] + mean[ri])
    nodes["zfac"] = zfac
    # token tables: per row, support tokens grouped by level (stable), alias slots.  Row r
    # owns level_start[r W : (r + 1) W] with W = max levels + 1 (a uniform stride).
    n_rows, V_ = model._logits.shape
    W = int(model._kmax.max()) + 2
    flat = np.flatnonzero(model._support.ravel())           # r * V + token, row-major
    key = (flat // V_) * W + model._k.ravel()[flat]          # (row, level) cell
    flat_order = flat[np.argsort(key, kind="stable")].astype(np.int64)
    counts = np.bincount(key, minlength=n_rows * W)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    ls_off = (np.arange(n_rows, dtype=np.int64) * W)
    slots = np.zeros(flat_order.size, dtype=_lattice.SLOT_DTYPE)
    _lattice.token_slots(model._logits.ravel(), flat_order, starts, flat_order % V_, slots)
    return {"nodes": nodes, "vals": np.concatenate(chunks), "ls_off": ls_off,
            "level_start": starts, "slot_off": np.zeros(n_rows, dtype=np.int64),
            "slots": slots}

