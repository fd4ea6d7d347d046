"""First-order Markov token models with an additive reward (SPEC section 9).

:class:`Markov` is the sequence model with memory: the token at position ``t + 1`` is drawn
from the row of a transition matrix picked by the token at position ``t``.  The optimal
KL-regularised policy over whole sequences is again a (position-dependent) Markov chain,
found by a backward recursion in log space; its statistics (log partition, mean, variance
and KL) come from the same single pass.

The backward pass is the private function :func:`_backward`, a call of the compiled
recursion (``tiltlab._markov``; its NumPy twin is ``tiltlab.reference.markov_tilt_stats``).
The exact law of the reward, best-of-N and its sampler are those of the lattice models
(:class:`~tiltlab.sequences._tilted.LatticeModel`), with the law of the level sum under
one tilt from :mod:`tiltlab.sequences._chain_law`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _lattice, _markov
from tiltlab import _validation as V
from tiltlab._common import entropy, generators, log_n_param, size_value
from tiltlab.sequences import _chain_law as CL
from tiltlab.sequences._tilted import (
    MAX_LATTICE,
    LatticeModel,
    SegmentLaw,
    detect_step,
    newton_for_mean,
)
from tiltlab.sequences.lattice import SAMPLE_BLOCK, LatticeLaw, SequenceBestOfN
from tiltlab.tilting import TiltStats, tilt_stats

__all__ = ["Markov"]


def _backward(log_tr, r, lam, length, n_threads, keep_policy=False):
    """The backward recursion of SPEC 9 for a batch of finite tilts ``lam`` (B,).

    Messages are kept centred: ``log beta_t = offset_t + centred_t`` with
    ``max_s centred_t(s) = 0``; the per-step shifts are summed pairwise at the end, so a
    long chain loses no more than ``log2(n)`` roundings.  Each step tilts every row of
    ``P`` with the reward ``g_t(s, s') = lam r(s, s') + centred_{t+1}(s')`` at tilt 1 (its
    log partition, by ``log1p`` at small tilts, and its KL as a sum of non-negative terms,
    which keeps its relative accuracy for small tilts), and carries backwards the
    conditional mean ``m_t`` and variance ``v_t`` of the reward still to come (rows of q
    renormalised to exact convex weights), and the conditional KL ``kappa_t`` still to
    come (the chain rule of SPEC 9).  The compiled kernel ``tl_markov_backward``
    (csrc/tl_markov.h) runs the recursion, one tilt per thread.

    Returns
    -------
    offset : ndarray (B,)
    centred, m, v, kappa : ndarray (B, V)
        At position 1 (all zero for ``length = 1``).
    log_q : list of ndarray (B, V, V)
        ``log q_t`` for t = 1 .. n-1 (only with ``keep_policy``).
    """
    offset, centred, m, v, kappa, log_q = _markov.backward(
        log_tr, r, np.ascontiguousarray(lam, dtype=np.float64), int(length), int(n_threads),
        bool(keep_policy))
    return offset, centred, m, v, kappa, (list(log_q) if keep_policy else [])


def _with_lam(a: np.ndarray, name: str, lam):
    """``a`` and the tilts ``lam`` broadcast together: (shape, a flat, lam flat)."""
    lam_a = V.param_array(lam, "lam", allow_inf=False)
    try:
        shape = np.broadcast_shapes(a.shape, lam_a.shape)
    except ValueError:
        raise ValueError(f"{name} and lam must broadcast together; got shapes {a.shape} "
                         f"and {lam_a.shape}") from None
    return (shape, np.broadcast_to(a, shape).reshape(-1),
            np.broadcast_to(lam_a, shape).reshape(-1))


class Markov(LatticeModel):
    """A first-order Markov token model with an additive reward (SPEC section 9).

    A sequence ``y = (y_1 .. y_n)`` of ``length`` tokens has probability
    ``p(y) = p0(y_1) prod_t P(y_t, y_{t+1})`` with ``p0 = softmax(initial_logits)`` and
    ``P(s, .) = softmax(transition_logits[s])``.  Its reward is
    ``R = sum_t rewards[y_t]`` (per-token rewards, shape (V,)) or
    ``R = initial_rewards[y_1] + sum_t rewards[y_t, y_{t+1}]`` (per-transition rewards,
    shape (V, V); ``initial_rewards`` defaults to 0).  The optimal policy
    ``phi_lam = p e^{lam R} / Z_n(lam)`` is a position-dependent Markov chain
    (:meth:`tilted_policy`).  A chain whose transition rows all equal ``p0`` with per-token
    rewards is the memoryless model ``Memoryless(initial_logits, rewards, length)``.

    Parameters
    ----------
    initial_logits : array_like, shape (V,)
        Logits of the first token; ``-inf`` marks an impossible first token.
    transition_logits : array_like, shape (V, V)
        Row ``s``: the logits of the token that follows ``s``; ``-inf`` marks an impossible
        transition.  Every row needs a finite entry (also a row never reached).
    rewards : array_like, shape (V,) or (V, V)
        Finite per-token or per-transition rewards (read only where possible).
    length : int
        Sequence length ``n >= 1``.
    initial_rewards : array_like, shape (V,), optional
        Reward of the first token, with per-transition rewards only (default 0).
    step : float, optional
        Lattice step ``h`` of the rewards, for the exact law and best-of-N.  By default
        detected over the initial and the transition rewards together (each minus its
        minimum an integer multiple of ``h`` to 1e-9 relative); when given, rewards are
        quantised to that lattice (largest change: ``quantisation_error``).  Either way
        reduced to the coarsest lattice.  Rewards on no lattice leave the statistics,
        policy and large deviations available; the law and best-of-N then raise.
    n_threads : int, optional
        Threads for the compiled kernels.

    Attributes
    ----------
    length : int
        ``n``.
    n_states : int
        ``V``.
    step, offset : float
        ``R = offset + step * K`` with integer ``K`` in ``[0, n_lattice)`` (``offset`` the
        smallest reachable reward).
    n_lattice : int
        Lattice points from the smallest to the largest reachable reward.
    quantisation_error : float
        Largest change made to a reward by ``step=`` (0 for lattice rewards).

    Raises
    ------
    ValueError
        Shapes that do not match, NaN/+inf logits, an all ``-inf`` row of
        ``initial_logits`` or ``transition_logits``, non-finite rewards, ``initial_rewards``
        with per-token rewards, a length below 1, a non-positive ``step``, a lattice of more
        than 2^31 points.
    TypeError
        A length that is not an integer.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> m = tiltlab.Markov(np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]]),
    ...                    [0.0, 1.0], length=100)
    >>> lam = m.solve_lambda(0.05)              # per-token KL budget 0.05 nats
    >>> st = m.tilt_stats(lam)
    >>> print(f"{lam:.6f} {st.kl / 100:.6f} {st.mean / 100:.4f}")
    0.275557 0.050000 0.7094
    """

    @interop.arrays("initial_logits", "transition_logits", "rewards", "initial_rewards",
                    results=False)
    def __init__(self, initial_logits: ArrayLike, transition_logits: ArrayLike,
                 rewards: ArrayLike, length: int, *, initial_rewards: ArrayLike | None = None,
                 step: float | None = None, n_threads: int | None = None):
        l0, lt, r0, r = V.markov_inputs(initial_logits, transition_logits, rewards,
                                        initial_rewards)
        self.length = V.length_value(length)
        self._n_threads = V.n_threads_value(n_threads)
        self.n_states = int(l0.shape[0])
        self.per_token = np.ndim(rewards) == 1
        mx0 = np.max(l0)
        # (l - max) first: exact, so an offset of the logits (1e5, 1e300) costs nothing
        self._log_p0 = V.readonly((l0 - mx0) - math.log(np.sum(np.exp(l0 - mx0))))
        mx = np.max(lt, axis=1, keepdims=True)
        self._log_tr = V.readonly((lt - mx) - np.log(np.sum(np.exp(lt - mx), axis=1,
                                                            keepdims=True)))
        # rewards where the initial token / the transition is impossible are never read
        self._r0 = V.readonly(np.where(np.isfinite(l0), r0, 0.0))
        self._r = V.readonly(np.where(np.isfinite(lt), r, 0.0))
        self._kl_max = None
        self._lattice(step)
        self._law_cache: tuple = (None, None)
        self._kstats_memo: dict = {}
        self._perron_k = None

    # ---- the reward lattice (SPEC section 9) ----
    def _lattice(self, step) -> None:
        """Integer levels ``k0`` (initial) and ``k`` (transitions) of one common step ``h``
        (detected, or ``step=`` to quantise), reduced to the coarsest lattice; the range of
        reachable level sums.  Without a lattice the model still has its statistics and
        policy; the law and best-of-N then raise."""
        s0, st = np.isfinite(self._log_p0), np.isfinite(self._log_tr)
        o0, o1 = float(np.min(self._r0[s0])), float(np.min(self._r[st]))
        d0, d1 = np.where(s0, self._r0 - o0, 0.0), np.where(st, self._r - o1, 0.0)
        pooled = np.concatenate([d0[s0], d1[st]])
        scale = float(max(np.max(pooled), 1e-300))
        self.quantisation_error = 0.0
        if step is None:
            h = detect_step(pooled, scale)
            if h == 0.0:
                self._no_lattice = ("the rewards are not on a lattice (no step h makes every "
                                    "reward o + h k with integer k); pass step= to quantise "
                                    "them to a lattice of that step")
                self.step = math.nan
                return
        else:
            h = V.param_array(step, "step", allow_inf=False)
            if h.ndim != 0 or not h > 0:
                raise ValueError(f"step must be a positive number; got {step!r}")
            h = float(h)
        with np.errstate(over="ignore"):
            k0 = np.where(s0, np.rint(d0 / h), 0.0)
            k = np.where(st, np.rint(d1 / h), 0.0)
        if not max(np.max(k0), np.max(k)) * self.length < MAX_LATTICE:
            raise ValueError(f"the law of R with step {h!r} has more than {MAX_LATTICE} lattice "
                             f"points (length {self.length}); pass a coarser step= to quantise "
                             f"the rewards, or a shorter length")
        g = int(np.gcd.reduce(np.concatenate([k0[s0], k[st]]).astype(np.int64)))
        if g > 1:
            k0, k, h = k0 // g, k // g, h * g
        if step is not None:
            r0q = np.where(s0, o0 + h * k0, 0.0)
            rq = np.where(st, o1 + h * k, 0.0)
            self.quantisation_error = float(max(np.max(np.abs(r0q - self._r0)),
                                                np.max(np.abs(rq - self._r))))
            self._r0, self._r = V.readonly(r0q), V.readonly(rq)
        self._no_lattice = None
        self.step = h
        self._k0 = k0.astype(np.int64)
        self._k = k.astype(np.int64)
        self._k0f = V.readonly(k0)
        self._kf = V.readonly(k)
        kmin, kmax = CL.level_range(self._log_p0, self._log_tr, self._k0, self._k, self.length)
        self._kmin = kmin
        self.offset = o0 + (self.length - 1) * o1 + h * kmin
        self.n_lattice = kmax - kmin + 1

    def _need_lattice(self) -> None:
        if self._no_lattice is not None:
            raise ValueError(self._no_lattice)

    @property
    def r_min(self) -> float:
        """The smallest reachable sequence reward."""
        self._need_lattice()
        return self.offset

    @property
    def r_max(self) -> float:
        """The largest reachable sequence reward."""
        self._need_lattice()
        return self.offset + self.step * (self.n_lattice - 1)

    @property
    def values(self) -> np.ndarray:
        """The lattice values of ``R`` from :attr:`r_min` to :attr:`r_max`."""
        self._need_lattice()
        return self.offset + self.step * np.arange(self.n_lattice, dtype=np.float64)

    def _stats(self, lam_flat, keep_policy=False, levels=False):
        """Statistics at the finite tilts ``lam_flat`` (B,), and the policy if asked; with
        ``levels`` those of the raw level sum (tilts in lattice units)."""
        r0, r = (self._k0f, self._kf) if levels else (self._r0, self._r)
        offset, centred, m, v, kappa, log_q = _backward(
            self._log_tr, r, lam_flat, self.length, self._n_threads, keep_policy)
        support = np.isfinite(self._log_p0)
        b = lam_flat.shape[0]
        g0 = np.where(support, lam_flat[:, None] * r0[None, :] + centred, 0.0)
        st = tilt_stats(np.broadcast_to(self._log_p0, g0.shape), g0, 1.0,
                        n_threads=self._n_threads)
        lp = np.asarray(st.log_partition).reshape(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_phi1 = np.where(support, self._log_p0 + g0 - lp[:, None], -np.inf)
        phi1 = np.exp(log_phi1)
        y0 = r0[None, :] + m
        mean = np.sum(phi1 * y0, axis=1)
        var = np.sum(phi1 * (v + (y0 - mean[:, None]) ** 2), axis=1)
        kl = np.asarray(st.kl).reshape(b) + np.sum(phi1 * kappa, axis=1)
        with np.errstate(over="ignore"):
            stats = TiltStats(offset + lp, mean, var, kl)
        return stats, log_phi1, log_q

    @interop.arrays("lam")
    def tilt_stats(self, lam: ArrayLike) -> TiltStats:
        """Sequence-level ``(log Z_n, E R, Var R, KL(phi_lam || p))`` (SPEC section 9).

        ``log Z_n(lam) = log E_p e^{lam R}`` from the log-space backward recursion;
        ``E R`` and ``Var R`` from its derivatives (conditional means and variances of the
        reward still to come, carried backwards); the KL by the chain rule, a sum of
        per-row single-step tilt KLs (no cancellation at small ``lam``).

        Parameters
        ----------
        lam : array_like
            Finite tilts (any shape).

        Returns
        -------
        TiltStats
            Fields shaped like ``lam`` (floats for a scalar ``lam``).

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[0.9, 0.1], [0.1, 0.9]]), [0.0, 1.0], 3)
        >>> st = m.tilt_stats([0.0, 1.0])
        >>> print(np.round(st.mean, 6), np.round(st.kl, 6))
        [1.5      2.743845] [0.      0.49257]
        """
        lam_a = V.param_array(lam, "lam", allow_inf=False)
        stats, _, _ = self._stats(lam_a.reshape(-1).astype(np.float64))
        out = [x.reshape(lam_a.shape) for x in stats]
        return TiltStats(*(x[()] if x.ndim == 0 else x for x in out))

    # ---- the exact law of R and best-of-N (SPEC section 9) ----
    # The direct DP replaces the doubling below this many flops (exact to rounding).
    _DIRECT_WORK = 3e8
    # Long chains: the law under a tilt from the transform's main lobe (None: doubling)
    _LOBE = True
    # ... and from this length on, Newton on the asymptotic mean to place the tilts
    _LONG = 2000

    def _kstats(self, theta_k) -> TiltStats:
        """Statistics of the level sum ``K = (R - offset) / step`` at the tilt ``theta_k``
        (lattice units)."""
        th = float(theta_k)
        if math.isinf(th):
            if th > 0:
                return TiltStats(math.nan, float(self.n_lattice - 1), 0.0, self.kl_max)
            return TiltStats(math.nan, 0.0, 0.0, math.nan)
        memo = self._kstats_memo
        if th not in memo:
            if len(memo) > 64:
                memo.clear()
            st, _, _ = self._stats(np.array([th]), levels=True)
            lz, mean, var, kl = (float(x[0]) for x in st)
            memo[th] = TiltStats(lz - th * self._kmin, mean - self._kmin, var, kl)
        return memo[th]

    def _solve_k(self, delta: float) -> float:
        """The tilt in lattice units whose per-token KL is delta."""
        return self._solve_one(self.length * delta) * self.step

    def _level_perron(self):
        """Perron machinery of the tilted matrix on the levels (None: reducible chain)."""
        if self._perron_k is None:
            from tiltlab.sequences import _perron

            if _perron.period(np.isfinite(self._log_tr)) == 0:
                self._perron_k = False
            else:
                self._perron_k = _perron.Tilted(self._log_tr, self._kf)
        return self._perron_k or None

    def _asymptotic_moments(self, theta: float):
        """``(n - 1) Lambda'`` and ``(n - 1) Lambda''`` of the raw level sum at theta (the
        Perron root of the tilted level matrix): the mean and variance of K up to O(1)."""
        chain = self._level_perron()
        th = np.array([theta])
        log_rho, log_v = chain.log_perron(th)
        _, d1, d2 = chain.moments(chain.doob(th, log_rho, log_v))
        return (self.length - 1) * float(d1[0]), (self.length - 1) * float(d2[0])

    def _long(self) -> bool:
        """Long irreducible chains take the asymptotic moments where O(1) is enough."""
        return self.length >= self._LONG and self._level_perron() is not None

    def _inside(self, goal: float) -> bool:
        """Whether a raw level sum is far enough from the ends of the lattice for the
        asymptotic moments (boundary terms O(1), far below a standard deviation)."""
        chain = self._level_perron()
        edge = 3.0 * math.sqrt(self.length) + float(np.max(self._k))
        span = self.length - 1
        return span * chain.c_min + edge < goal < span * chain.c_max - edge

    def _placement_moments(self, theta: float):
        """Mean and variance of the raw level sum at theta that place a window: the
        asymptotic ones for long chains away from the ends, else the exact ones."""
        if self._long():
            mean_raw, var = self._asymptotic_moments(theta)
            if math.isfinite(mean_raw) and math.isfinite(var) and self._inside(mean_raw):
                return mean_raw, var
        st = self._kstats(theta)
        return float(st.mean) + self._kmin, float(st.variance)

    def _theta_for_mean(self, target: float, theta: float = 0.0, rtol: float = 0.05) -> float:
        """A tilt whose mean level sum is within rtol standard deviations of target: for
        long chains Newton on the asymptotic mean ``(n - 1) Lambda'(theta)`` (its O(1)
        error is far below 0.05 standard deviations), else the exact statistics."""
        if not self._long():
            return super()._theta_for_mean(target, theta, rtol)
        goal = target + self._kmin
        # near the ends of the lattice the boundary terms matter (and a goal beyond the
        # extreme cycle means has no asymptotic tilt): the exact statistics there
        if not self._inside(goal):
            return super()._theta_for_mean(target, theta, rtol)
        # half the tolerance: the asymptotic mean is off by O(1)
        found = newton_for_mean(self._asymptotic_moments, goal, theta, 0.5 * rtol)
        if found is None:
            return super()._theta_for_mean(target, theta, rtol)
        return found

    def _chain_law(self, theta: float, keep: bool = False) -> CL.ChainLaw:
        """The law of the raw level sum at tilt theta: the direct DP when it is cheap (exact
        to rounding); for long chains the transform's main lobe; the doubling of the
        polynomial transition matrix otherwise (and for the sampler)."""
        key = (theta, keep)
        if self._law_cache[0] == key:
            return self._law_cache[1]
        nv = self.n_states
        support = np.isfinite(self._log_tr)
        nlev = np.unique(self._k[support]).size
        work = 0.5 * (self.length - 1) * nlev * nv * nv * self.n_lattice
        # centre the tilt on the integer nearest the tilted mean level per token
        mean_raw, var = self._placement_moments(theta)
        c = int(round(mean_raw / self.length))
        args = (self._log_p0, self._log_tr, self._k0, self._k, self.length, theta, c)
        if work <= self._DIRECT_WORK:
            law = CL.direct_law(*args, keep=keep)
        else:
            law = None
            if not keep and self._LOBE:
                law = CL.lobe_law(*args, mean_raw, math.sqrt(max(var, 0.0)))
            if law is None:
                law = CL.doubling_law(*args)
        self._law_cache = (key, law)
        return law

    def _root(self, theta: float) -> SegmentLaw:
        law = self._chain_law(theta)
        # the tilted moments of the window itself (what the stitching steps by)
        w = law.vals / np.sum(law.vals)
        j = np.arange(w.size, dtype=np.float64)
        mean = float(np.dot(w, j))
        var = float(np.dot(w, (j - mean) ** 2))
        return SegmentLaw(lo=law.lo - self._kmin, vals=law.vals, log_scale=law.log_scale,
                          exact=law.exact, mean=law.lo - self._kmin + mean, var=var,
                          centre=law.centre - self._kmin)

    def _reachable(self) -> np.ndarray:
        """Which lattice points have positive probability (bit sets; all points, i.e.
        unknown, when that is too costly: unresolved points are then NaN, not -inf)."""
        flags = CL.reachable_levels(self._log_p0, self._log_tr, self._k0, self._k,
                                    self.length, self._kmin, self._kmin + self.n_lattice - 1)
        return np.ones(self.n_lattice, dtype=bool) if flags is None else flags

    def _conditional_sequences(self, theta_k, cdf, guide, level_sums, sz, draws, rng, nt):
        """Sequences of p drawn conditionally on their level sums, the sums drawn from the
        level law of a best-of-N result (:meth:`SequenceBestOfN.sample`): (draws, n)."""
        n, nv = self.length, self.n_states
        V.check_memory(max(draws, 1) * (4 * n + 8), f"size={sz} sequences of length {n}")
        out = np.empty((max(draws, 1), n), dtype=np.int32)
        if not draws:
            return out
        sums = np.empty(draws, dtype=np.int64)
        blocks = -(-draws // SAMPLE_BLOCK)
        fails = _lattice.sample_sums(cdf, guide, level_sums, draws, SAMPLE_BLOCK,
                                     generators(rng, blocks), sums,
                                     V.threads_for_blocks(blocks, nt))
        if fails or np.any(sums < 0):
            raise RuntimeError("tiltlab: best-of-N level draws failed (internal error)")
        gen = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(entropy(rng), spawn_key=(1 << 30,))))
        law = self._chain_law(theta_k, keep=True)
        raw = sums + self._kmin
        if law.exact:
            chunk = draws
        else:   # the halving works on (draws, segments, V, levels) arrays
            width = int(np.max(self._k)) + 1
            chunk = max(1, int(2e7 // (n * nv * width)))
        for a in range(0, draws, chunk):
            part = raw[a:a + chunk]
            if law.exact:
                out[a:a + chunk] = CL.sample_direct(law, self._log_tr, self._k, theta_k, part,
                                                          gen)
            else:
                out[a:a + chunk] = CL.sample_doubling(law, self._k, part, gen)
        return out

    @interop.arrays("lam")
    def reward_log_pmf(self, lam: ArrayLike = 0.0) -> LatticeLaw:
        """The exact law of ``R`` on its lattice, in log space (SPEC section 9).

        Under each tilt the law of the level sum comes from the doubling of the polynomial
        transition matrix (FFT along the levels, one V x V complex product per
        frequency); several tilts are stitched, each lattice point taken from the tilt
        under which it is most central, so its error relative to its own value is
        typically 1e-13 however far in the tail it lies.  Small problems (up to ~3e8
        flops) use the direct dynamic program over (position, state, level) instead,
        exact to rounding down to about 1e-280 of each tilt's peak.  Points that no tilt
        resolves are NaN; unreachable points ``-inf`` (NaN too when the chain is too
        long to decide reachability cheaply).  With ``lam`` the law is that of ``R``
        under ``phi_lam``.

        Returns
        -------
        LatticeLaw
            ``(values, log_pmf, resolved)`` from :attr:`r_min` to :attr:`r_max`.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, -np.inf], np.log([[0.5, 0.5], [0.1, 0.9]]),
        ...                    [0.0, 1.0], 1000)
        >>> law = m.reward_log_pmf()      # R = visits to state 1 after a start in state 0
        >>> print(" ".join(f"{v:.4f}" for v in law.log_pmf[[0, 500, 999]] / np.log(10)))
        -300.7290 -49.9906 -45.9670
        >>> print(f"{999 * np.log10(0.5):.4f} {np.log10(0.5) + 998 * np.log10(0.9):.4f}")
        -300.7290 -45.9670
        """
        self._need_lattice()
        return self._full_law(V.scalar_param(lam, "lam"))

    @interop.arrays("n", "log_n")
    def best_of_n(self, n: float | None = None, *, log_n: float | None = None
                  ) -> SequenceBestOfN:
        """Exact best-of-N over whole sequences (SPEC sections 3 and 9).

        ``pi_N`` depends on a sequence through ``R`` only: the level machinery of SPEC
        section 3 runs on the lattice law of ``R`` under the tilt centred where the
        maximum of N draws lives.  Its :meth:`~SequenceBestOfN.sample` draws whole
        sequences exactly (the reward level by the order statistic, then the tokens from
        ``p`` conditioned on that level), without drawing N candidates.

        Parameters
        ----------
        n : float, optional
            Number of candidate sequences, ``N >= 1`` (real).
        log_n : float, optional
            ``log N >= 0``, e.g. ``0.3 * length``.

        Returns
        -------
        SequenceBestOfN

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[0.9, 0.1], [0.2, 0.8]]), [0.0, 1.0], 1000)
        >>> b = m.best_of_n(log_n=0.05 * 1000)
        >>> lam = m.solve_lambda(0.05)
        >>> print(f"{b.expected_reward / 1000:.4f} {m.tilt_stats(lam).mean / 1000:.4f}")
        0.6996 0.7091
        """
        self._need_lattice()
        ln = log_n_param(n, log_n)
        if ln.ndim != 0:
            raise ValueError(f"Markov.best_of_n takes one N (a scalar n or log_n); got shape "
                             f"{ln.shape}")
        return self._best_of_n(float(ln))

    def sample(self, size: int | None = None, lam: float = 0.0, rng=None) -> np.ndarray:
        """Whole sequences from the optimal policy ``phi_lam`` (``p`` at ``lam = 0``).

        One categorical draw per position from the rows of :meth:`tilted_policy`.

        Parameters
        ----------
        size : int, optional
            Number of sequences (None: one sequence, shape ``(length,)``).
        lam : float
            A finite tilt.
        rng : int, numpy.random.Generator or None
            Seed or generator.

        Returns
        -------
        ndarray of int32, shape ``(size, length)``

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[0.9, 0.1], [0.2, 0.8]]), [0.0, 1.0], 8)
        >>> m.sample(2, lam=1.0, rng=0).shape
        (2, 8)
        """
        sz = size_value(size)
        draws = 1 if sz is None else sz
        V.check_memory(max(draws, 1) * 4 * self.length, f"size={sz} sequences of length "
                                                         f"{self.length}")
        log_phi1, log_q = self.tilted_policy(lam)
        gen = np.random.default_rng(rng)
        out = np.empty((draws, self.length), dtype=np.int32)
        cdf0 = np.cumsum(np.exp(log_phi1))
        u = gen.random(draws)
        y = np.minimum(np.sum(cdf0[None, :] < (u * cdf0[-1])[:, None], axis=1),
                       self.n_states - 1)
        out[:, 0] = y
        for t in range(self.length - 1):
            cdf = np.cumsum(np.exp(log_q[t]), axis=1)              # (V, V)
            rows = cdf[y]
            u = gen.random(draws)
            y = np.minimum(np.sum(rows < (u * rows[:, -1])[:, None], axis=1),
                           self.n_states - 1)
            out[:, t + 1] = y
        return out[0] if sz is None else out

    @property
    def kl_max(self) -> float:
        """Total KL of the ``lam -> inf`` limit, ``-log P_p(R = R_max)`` (SPEC section 9).

        The max-plus form of the backward recursion: the best reward still to come from
        each state, and the log mass of the transitions that attain it.  Rewards within
        ``64 eps`` times the largest possible ``|R|`` of the best count as ties.
        """
        if self._kl_max is None:
            self._kl_max = self._max_plus()
        return self._kl_max

    def _max_plus(self) -> float:
        scale = (self.length * float(np.max(np.abs(self._r), initial=0.0))
                 + float(np.max(np.abs(self._r0), initial=0.0)))
        tol = 64 * np.finfo(np.float64).eps * scale
        return float(_markov.kl_max(self._log_p0, self._r0, self._log_tr, self._r,
                                    self.length, tol))

    def _solve_one(self, target: float) -> float:
        """The ``lam >= 0`` with ``KL(phi_lam || p) = target``: Newton on the KL (its
        derivative is ``lam Var R``) from the small-tilt guess, inside a bracket, bisection
        when Newton leaves it."""
        if target == 0.0:
            return 0.0
        if target >= self.kl_max:
            return math.inf
        # start from the small-tilt form KL ~ lam^2 Var_p(R) / 2
        var0 = float(self._stats(np.zeros(1))[0].variance[0])
        lo, hi = 0.0, math.inf
        lam = math.sqrt(2.0 * target / var0) if var0 > 0 else 1.0
        for _ in range(400):
            st, _, _ = self._stats(np.array([lam]))
            f = float(st.kl[0]) - target
            if f == 0.0:
                return lam
            if f < 0:
                lo = lam
            else:
                hi = lam
            d = lam * float(st.variance[0])
            nxt = lam - f / d if d > 0 else math.nan
            if not lo < nxt < hi:
                nxt = 2.0 * lam if math.isinf(hi) else 0.5 * (lo + hi)
            # below 1e-14 relative a step only follows the rounding of the KL
            if abs(nxt - lam) <= 1e-14 * lam or nxt in (lo, hi):
                return nxt
            lam = nxt
        return lam

    @interop.arrays("delta")
    def solve_lambda(self, delta: ArrayLike):
        """The tilt whose KL is ``length * delta``: a per-token budget (SPEC section 9).

        ``KL(phi_lam || p)`` grows from 0 at ``lam = 0`` to :attr:`kl_max`; at or above
        that, the result is ``inf``.

        Parameters
        ----------
        delta : array_like
            Per-token KL budgets (nats, ``>= 0``).

        Returns
        -------
        float or ndarray
            ``lam >= 0``, shaped like ``delta``.
        """
        d = V.nonnegative_param(delta, "delta")
        out = np.array([self._solve_one(self.length * float(x)) for x in d.ravel()],
                       dtype=np.float64).reshape(d.shape)
        return out[()] if out.ndim == 0 else out

    def tilted_policy(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """The optimal policy ``phi_lam`` as a position-dependent Markov chain (SPEC 9).

        Parameters
        ----------
        lam : float
            A finite tilt.

        Returns
        -------
        log_initial : ndarray, shape (V,)
            ``log phi_lam(y_1)``.
        log_transitions : ndarray, shape (length - 1, V, V)
            Entry ``t - 1`` holds ``log phi_lam(y_{t+1} = s' | y_t = s)``; each row a
            single-step tilt of the row of ``P`` with reward ``lam r(s, .)`` plus the log
            backward message of the next position.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[0.9, 0.1], [0.1, 0.9]]), [0.0, 1.0], 3)
        >>> l0, lq = m.tilted_policy(1.0)
        >>> print(np.round(np.exp(l0), 4), lq.shape)
        [0.0919 0.9081] (2, 2, 2)
        """
        lam_f = V.scalar_param(lam, "lam", allow_inf=False)
        _, log_phi1, log_q = self._stats(np.array([lam_f]), keep_policy=True)
        nv = self.n_states
        trans = (np.stack([x[0] for x in log_q]) if log_q
                 else np.empty((0, nv, nv)))
        return log_phi1[0], trans

    # ---- large deviations (SPEC section 9) ----
    def _ld_chain(self):
        """The tilted-matrix machinery of :mod:`tiltlab.sequences._perron` (cached); a
        reducible chain is a ValueError naming ``transition_logits``."""
        chain = getattr(self, "_ld_cache", None)
        if chain is None:
            from tiltlab.sequences import _perron

            _perron.require_irreducible(np.isfinite(self._log_tr))
            chain = _perron.Tilted(self._log_tr, self._r)
            self._ld_cache = chain
        return chain

    @property
    def period(self) -> int:
        """Period ``d`` of the transition graph (``transition_logits > -inf``): the gcd of
        its cycle lengths; 0 if the chain is reducible (SPEC section 9).

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> cycle = [[-np.inf, 0.0], [0.0, -np.inf]]
        >>> tiltlab.Markov([0.0, 0.0], cycle, [0.0, 1.0], 4).period
        2
        """
        from tiltlab.sequences import _perron

        return _perron.period(np.isfinite(self._log_tr))

    @property
    def stationary_distribution(self) -> np.ndarray:
        """Stationary law ``mu`` of the transition matrix, ``mu P = mu`` (the left Perron
        vector), shape (V,); the marginals of the memoryless model with the same stationary
        token frequencies are ``log mu``.  For an irreducible chain (periodic chains
        included: ``mu`` is then the long-run average occupation); a reducible chain is a
        ValueError naming ``transition_logits``.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[0.9, 0.1], [0.2, 0.8]]), [0.0, 1.0], 5)
        >>> np.round(m.stationary_distribution, 12)       # (b, a') / (a' + b), a' = 1 - a
        array([0.66666667, 0.33333333])
        """
        from tiltlab.sequences import _perron

        self._ld_chain()
        mu = _perron.stationary(np.exp(self._log_tr)[None])[0]
        return V.readonly(mu)

    def _log_rho(self, theta: np.ndarray) -> np.ndarray:
        """``Lambda(theta) = log rho(M_theta)`` at the finite tilts ``theta`` (flat),
        computed once per distinct value."""
        uniq, inv = np.unique(theta, return_inverse=True)
        log_rho, _ = self._ld_chain().log_perron(uniq)
        return log_rho[inv.reshape(-1)]

    @interop.arrays("t", "lam")
    def scaled_cgf(self, t: ArrayLike, lam: ArrayLike = 0.0) -> np.ndarray:
        """Scaled CGF of ``R`` under ``phi_lam``: ``Lambda(lam + t) - Lambda(lam)`` with
        ``Lambda = log rho(M_lam)``, the Perron root of the tilted transition matrix
        (SPEC section 9).

        Unlike :meth:`tiltlab.Memoryless.scaled_cgf`, which is ``(1/n) log E e^{tR}`` exactly
        for every ``n``, this is the ``n -> inf`` **limit**: ``(1/n) log Z_n(lam) =
        Lambda(lam) + O(1/n)`` (:meth:`tilt_stats` gives the finite-n value).  It depends
        on the transition matrix and the transition rewards only -- not on ``length``,
        ``initial_logits`` or ``initial_rewards`` -- and ``phi_lam`` means the limit of the
        tilted policies (the Doob transform of SPEC 9).  Periodic chains are accepted
        (``Lambda`` is still ``log rho``); a reducible chain is a ValueError naming
        ``transition_logits``.

        Each root comes from Noda's iteration on ``M_lam`` (diagonally scaled by a max-plus
        potential and by its largest entry, so nothing overflows at large ``|lam|``),
        warm-started along the sorted tilts and stopped when the Collatz-Wielandt bounds
        agree to 1e-14 relative (or stop narrowing at the rounding floor, below 1e-12).
        The difference is formed from the two roots: its accuracy is absolute, about
        ``1e-14 (1 + |Lambda|)``, not relative for tiny ``t``; ``t = 0`` gives exactly 0.

        Parameters
        ----------
        t : array_like
            Finite arguments of the CGF (any shape).
        lam : array_like, default 0.0
            Finite tilts of the sampling policy; broadcasts with ``t``.

        Returns
        -------
        float or ndarray
            ``Lambda(lam + t) - Lambda(lam)``, shaped like ``t`` and ``lam`` broadcast.

        Raises
        ------
        ValueError
            NaN or infinite ``t`` or ``lam``, shapes that do not broadcast, a reducible
            chain.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> a, b = 0.9, 0.2
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[a, 1 - a], [b, 1 - b]]), [0.0, 1.0], 10)
        >>> tau = a + (1 - b) * np.e                    # the two-state closed form of SPEC 9
        >>> rho = 0.5 * (tau + np.sqrt(tau ** 2 - 4 * (a - b) * np.e))
        >>> print(f"{m.scaled_cgf(1.0):.12f} {np.log(rho):.12f}")
        0.795676089048 0.795676089048
        """
        shape, tb, lb = _with_lam(V.param_array(t, "t", allow_inf=False), "t", lam)
        both = self._log_rho(np.concatenate([lb + tb, lb]))
        out = both[:tb.size] - both[tb.size:]
        out = np.where(tb == 0.0, 0.0, out)
        return V.shaped(out, shape)

    def _ld_moments(self, theta: np.ndarray):
        """Perron data at the finite tilts ``theta`` (B,): ``log rho``, ``log v``,
        ``log Q`` (the Doob transform), ``mu``, ``Lambda'`` and ``Lambda''``."""
        chain = self._ld_chain()
        log_rho, log_v = chain.log_perron(theta)
        q = chain.doob(theta, log_rho, log_v)
        mu, mean, var = chain.moments(q)
        return log_rho, log_v, mu, mean, var

    @property
    def cycle_mean_range(self) -> tuple[float, float]:
        """``(c_min, c_max)``: the smallest and largest mean reward of a cycle of the
        transition graph (Karp's algorithm; max-plus / min-plus eigenvalues), the limits of
        ``Lambda'(t)`` as ``t -> -inf / +inf`` and the ends of the range where
        :meth:`rate_function` is finite (SPEC section 9).

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> cycle = [[-np.inf, 0.0], [0.0, -np.inf]]
        >>> tiltlab.Markov([0.0, 0.0], cycle, [[0.0, 1.0], [3.0, 0.0]], 4).cycle_mean_range
        (2.0, 2.0)
        """
        chain = self._ld_chain()
        return float(chain.c_min), float(chain.c_max)

    def _endpoint_log_rho(self, upper: bool) -> float:
        """``lim_{t -> +-inf} Lambda(t) - t c`` = ``log rho`` of ``P`` on the critical
        cycles (those of mean ``c = c_max`` or ``c_min``)."""
        chain = self._ld_chain()
        crit = chain.crit_max if upper else chain.crit_min
        a = np.where(crit, np.exp(self._log_tr), 0.0)
        return float(np.log(np.max(np.abs(np.linalg.eigvals(a)))))

    @interop.arrays("x", "lam")
    def rate_function(self, x: ArrayLike, lam: ArrayLike = 0.0) -> np.ndarray:
        """Rate function of ``R / n`` under ``phi_lam`` (SPEC section 9), ``n -> inf``:
        ``I_lam(x) = sup_t {t x - Lambda(lam + t) + Lambda(lam)}``.

        Inside the open interval ``(c_min, c_max)`` of :attr:`cycle_mean_range`,
        ``I_lam(x) = sum_s mu_th(s) KL(Q_th(s, .) || Q_lam(s, .))`` (a sum of non-negative
        single-step tilt KLs, no cancellation near the mean) where ``Q`` is the Doob
        transform and ``th`` solves ``Lambda'(th) = x``: safeguarded Newton with
        ``Lambda'(th) = E_mu r`` (the stationary mean of the reward under ``Q_th``) and
        ``Lambda''(th)``, the asymptotic variance ``sum_s mu(s) Var_{Q(s,.)}[r(s, .) +
        h(.)]``, ``h`` the solution of the Poisson equation ``(I - Q) h = Q r - Lambda'``.
        At the ends ``x = c_max`` (``c_min``) the value is the limit ``Lambda(lam) - lam c
        - log rho(P_crit)``, ``P_crit`` the transition matrix restricted to the cycles of
        mean ``c`` (``0`` when every cycle has mean ``c``); outside ``[c_min, c_max]``,
        ``+inf``.  The ends are compared exactly with the computed cycle means.
        Periodic chains are accepted; a reducible chain is a ValueError naming
        ``transition_logits``.

        Parameters
        ----------
        x : array_like
            Values of the average reward ``R / n`` (any real or ``+-inf``).
        lam : array_like, default 0.0
            Finite tilts of the sampling policy; broadcasts with ``x``.

        Returns
        -------
        float or ndarray
            ``I_lam(x) >= 0`` in nats per token.

        Raises
        ------
        ValueError
            NaN in ``x``, NaN or infinite ``lam``, shapes that do not broadcast, a
            reducible chain.

        Examples
        --------
        >>> import numpy as np, tiltlab
        >>> m = tiltlab.Markov([0.0, 0.0], np.log([[0.9, 0.1], [0.2, 0.8]]), [0.0, 1.0], 10)
        >>> mean = m.stationary_distribution[1]                 # E_mu r = 1/3
        >>> print(np.round(m.rate_function([mean, 0.5, 1.0, 1.5]), 10))
        [0.         0.01010135 0.22314355        inf]
        """
        shape, xb, lb = _with_lam(V.param_array(x, "x"), "x", lam)
        chain = self._ld_chain()
        c_min, c_max = chain.c_min, chain.c_max
        out = np.full(xb.size, np.inf)
        ends = (xb == c_max) | (xb == c_min)
        if ends.any():
            lr = self._log_rho(lb[ends])
            up = xb[ends] == c_max
            c = np.where(up, c_max, c_min)
            lim = np.where(up, self._endpoint_log_rho(True), self._endpoint_log_rho(False))
            out[ends] = np.maximum(lr - lb[ends] * c - lim, 0.0)
        inside = (xb > c_min) & (xb < c_max)
        if inside.any():
            out[inside] = self._rate_inside(xb[inside], lb[inside])
        return V.shaped(out, shape)

    def _rate_inside(self, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """``I_lam(x)`` for ``c_min < x < c_max`` (flat arrays)."""
        from tiltlab.tilting import tilt_stats as _tilt_stats

        chain = self._ld_chain()
        ul, linv = np.unique(lam, return_inverse=True)
        linv = linv.reshape(-1)
        lr0, lv0, _, m0, v0 = self._ld_moments(ul)
        th = lam + (x - m0[linv]) / np.maximum(v0[linv], 1e-300)
        th = np.where(np.isfinite(th), th, lam)
        lo = np.full(x.size, -np.inf)
        hi = np.full(x.size, np.inf)
        active = np.arange(x.size)
        log_v = np.zeros((x.size, self.n_states))
        mu = np.zeros((x.size, self.n_states))
        for _ in range(200):
            if active.size == 0:
                break
            ta = th[active]
            _, lv, mu_a, mean, var = self._ld_moments(ta)
            log_v[active], mu[active] = lv, mu_a
            f = mean - x[active]
            lo[active] = np.where(f < 0, ta, lo[active])
            hi[active] = np.where(f > 0, ta, hi[active])
            with np.errstate(divide="ignore", invalid="ignore"):
                nxt = ta - f / var
            la, ha = lo[active], hi[active]
            bad = ~((nxt > la) & (nxt < ha))
            step = np.maximum(1.0, 2.0 * np.abs(ta - lam[active]))
            with np.errstate(invalid="ignore"):
                alt = np.where(np.isinf(ha), ta + step,
                               np.where(np.isinf(la), ta - step, 0.5 * (la + ha)))
            nxt = np.where(bad, alt, nxt)
            stop = (f == 0.0) | (np.abs(nxt - ta) <= 1e-15 * np.maximum(1.0, np.abs(ta)))
            stop |= (nxt == la) | (nxt == ha)
            # the last Newton step is below the rounding: keep its (converged) data
            th[active] = np.where(stop & (f == 0.0), ta, nxt)
            active = active[~stop]
        # the Doob data at the final th (one more evaluation for those moved last)
        _, log_v, mu, _, _ = self._ld_moments(th)
        support = chain.support
        g = np.where(support, (th - lam)[:, None, None] * chain.r
                     + (log_v - lv0[linv])[:, None, :], 0.0)
        q0 = chain.doob(ul, lr0, lv0)[linv]
        with np.errstate(divide="ignore"):
            log_q0 = np.where(support, np.log(q0), -np.inf)
        kl = np.asarray(_tilt_stats(log_q0, g, 1.0, n_threads=self._n_threads).kl)
        return np.maximum(np.sum(mu * kl, axis=1), 0.0)
