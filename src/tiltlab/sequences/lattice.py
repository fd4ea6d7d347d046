"""The results of the sequence models on a lattice (SPEC section 4): the law of the
sequence reward on its lattice (:class:`LatticeLaw`), exact best-of-N over whole sequences
(:class:`SequenceBestOfN`) and the asymptotic predictions for ``N = e^{n delta}``
(:class:`Asymptotics`).  :class:`tiltlab.Memoryless` returns them; the top-level names
``tiltlab.LatticeLaw``, ``tiltlab.SequenceBestOfN`` and ``tiltlab.Asymptotics`` are these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _lattice
from tiltlab import _validation as V
from tiltlab._common import generators, size_value

if TYPE_CHECKING:
    from tiltlab.sequences._tilted import LatticeModel

__all__ = ["LatticeLaw", "SequenceBestOfN", "Asymptotics"]

SAMPLE_BLOCK = 65536  # best-of-N rewards drawn per block (blocks are fixed: thread-independent)


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


@dataclass
class SequenceBestOfN:
    """Exact best-of-N over the sequences of a sequence model (:class:`Memoryless`).

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
    _model: LatticeModel = field(repr=False)
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
                                         generators(rng, blocks), k,
                                         V.threads_for_blocks(blocks, nt))
            if fails:
                raise RuntimeError(f"tiltlab: {fails} best-of-N draws failed (internal error)")
        k = k[:draws]
        vals = self._model.offset + self._model.step * k.astype(np.float64)
        return float(vals[0]) if sz is None else vals

    def sample(self, size: int | None = None, rng=None, n_threads: int | None = None):
        """Token sequences from ``pi_N``, shape ``(size, length)`` (int32 token ids).

        The reward level of the maximum is drawn by the order statistic, then the tokens
        from ``p^n`` conditioned exactly on that total (:class:`Memoryless`: a segment tree
        over positions
        holding the laws of segment sums splits the total between the two halves with
        probability ``P(left = a) P(right = s - a) / P(s)``; SPEC section 4).  The same
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
        cdf, guide = self._guide
        out = self._model._conditional_sequences(self._theta_k, cdf, guide, self._level_sums(),
                                                 sz, draws, rng, nt)
        out = out[:draws]
        return out[0] if sz is None else out
