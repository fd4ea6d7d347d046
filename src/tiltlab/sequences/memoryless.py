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

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _lattice
from tiltlab import _validation as V
from tiltlab._common import generators, log_n_param
from tiltlab._legendre import rate_function_sequence
from tiltlab.sequences._tilted import (
    DIRECT_MIN,
    MAX_LATTICE,
    LatticeModel,
    SegmentLaw,
    convolve,
    detect_step,
    fft_convolve,
)
from tiltlab.sequences.lattice import Asymptotics, LatticeLaw, SequenceBestOfN
from tiltlab.tilting import TiltStats, cumulants, solve_lambda, tilt_stats

# LatticeLaw, SequenceBestOfN and Asymptotics (tiltlab.sequences.lattice) are also found here
__all__ = ["Memoryless", "LatticeLaw", "SequenceBestOfN", "Asymptotics"]


# Below this much work (lattice points squared) the whole law is computed by direct
# convolutions, which are exact to rounding at every point (no FFT noise floor).
_EXACT_WORK = 4e8
_MAX_LEVEL_TABLE = 1 << 27  # positions x levels per position (1 GiB of float64)
SEQ_SAMPLE_WORK = 1 << 16  # tokens per sampling block (blocks are fixed: thread-independent)


class Memoryless(LatticeModel):
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
            h = detect_step(d[support], scale)
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
        if not np.max(k) < MAX_LATTICE:
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
        if total > MAX_LATTICE:
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
        return rate_function_sequence(self._logits, self._rewards, x, lam)

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
        return [SegmentLaw(lo=0, vals=v[i, :self._kmax[r] + 1].copy(), log_scale=float(log_peak[i]),
                     exact=True, mean=float(mean[i]), var=float(var[i]))
                for i, r in enumerate(rows.tolist())]

    def _stationary_law(self, length: int, theta: float, memo: dict) -> SegmentLaw:
        if length in memo:
            return memo[length]
        if length == 1:
            law = self._leaves(theta, [0])[0]
        else:
            h = length // 2
            law = convolve(self._stationary_law(h, theta, memo),
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
                    law = convolve(build(pos, h), build(pos + h, length - h), self._exact)
                memo[(pos, length)] = law
                return law
            build(0, self.length)
        if len(self._trees) > 8:
            self._trees.pop(next(iter(self._trees)))
        self._trees[key] = memo
        return memo

    def _root(self, theta: float) -> SegmentLaw:
        memo = self._tree(theta)
        return memo[self.length] if self.stationary else memo[(0, self.length)]

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
        return self._full_law(V.scalar_param(lam, "lam"))

    def _reachable(self) -> np.ndarray:
        """Which lattice points have positive probability (boolean sumset)."""
        def bconv(a, b):  # counts are integers: the FFT's rounding stays far below 0.5
            small = min(a.size, b.size) <= DIRECT_MIN
            c = np.convolve(a, b) if small else fft_convolve(a, b)
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

    def _conditional_sequences(self, theta_k, cdf, guide, level_sums, sz, draws, rng, nt):
        """Token sequences of ``p^n`` drawn conditionally on their level sums, the sums drawn
        from the level law ``(cdf, guide, level_sums)`` of a best-of-N result at the tilt
        ``theta_k`` (:meth:`SequenceBestOfN.sample`): ``(max(draws, 1), length)`` int32."""
        n = self.length
        # int32 tokens and int64 sums, one bit generator (~1 KiB) per block of draws, and
        # the segment tree over the positions (~400 bytes per position at its peak)
        V.check_memory(max(draws, 1) * (4 * n + 8) + -(-draws // max(1, SEQ_SAMPLE_WORK // n))
                       * 1024 + 512 * n,
                       f"size={sz} sequences of length {n} (with the sampling tree over "
                       f"the positions)")
        out = np.empty((max(draws, 1), n), dtype=np.int32)
        sums_out = np.empty(max(draws, 1), dtype=np.int64)
        if draws:
            tree = self._sampling_tree(theta_k)
            block = max(1, SEQ_SAMPLE_WORK // n)
            blocks = -(-draws // block)
            gens = generators(rng, blocks)
            fails = _lattice.sample_sequences(
                tree["nodes"], 0, tree["vals"], tree["ls_off"], tree["level_start"],
                tree["slot_off"], tree["slots"], cdf, guide, level_sums, draws, block,
                gens, out, sums_out, V.threads_for_blocks(blocks, nt))
            if fails:
                raise RuntimeError(f"tiltlab: {fails} conditional draws failed (internal error)")
        return out

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
        ln = log_n_param(n, log_n)
        if ln.ndim != 0:
            raise ValueError(f"Memoryless.best_of_n takes one N (a scalar n or log_n); got "
                             f"shape {ln.shape}")
        return self._best_of_n(float(ln))


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

