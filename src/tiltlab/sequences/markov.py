"""First-order Markov token models with an additive reward (SPEC section 9).

:class:`Markov` is the sequence model with memory: the token at position ``t + 1`` is drawn
from the row of a transition matrix picked by the token at position ``t``.  The optimal
KL-regularised policy over whole sequences is again a (position-dependent) Markov chain,
found by a backward recursion in log space; its statistics (log partition, mean, variance
and KL) come from the same single pass.

The backward pass is the private function :func:`_backward` (one step per position, all
tilts of a batch at once); the compiled kernel that replaces it keeps its signature.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _markov
from tiltlab import _validation as V
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


class Markov:
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
    n_threads : int, optional
        Threads for the compiled kernels.

    Attributes
    ----------
    length : int
        ``n``.
    n_states : int
        ``V``.

    Raises
    ------
    ValueError
        Shapes that do not match, NaN/+inf logits, an all ``-inf`` row of
        ``initial_logits`` or ``transition_logits``, non-finite rewards, ``initial_rewards``
        with per-token rewards, a length below 1.
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
                 n_threads: int | None = None):
        l0, lt, r0, r = V.markov_inputs(initial_logits, transition_logits, rewards,
                                        initial_rewards)
        self.length = V.length_value(length)
        self._n_threads = V.n_threads_value(n_threads)
        self.n_states = int(l0.shape[0])
        self.per_token = np.ndim(rewards) == 1
        mx0 = np.max(l0)
        self._log_p0 = V.readonly(l0 - (mx0 + math.log(np.sum(np.exp(l0 - mx0)))))
        mx = np.max(lt, axis=1, keepdims=True)
        self._log_tr = V.readonly(lt - (mx + np.log(np.sum(np.exp(lt - mx), axis=1,
                                                            keepdims=True))))
        # rewards where the initial token / the transition is impossible are never read
        self._r0 = V.readonly(np.where(np.isfinite(l0), r0, 0.0))
        self._r = V.readonly(np.where(np.isfinite(lt), r, 0.0))
        self._kl_max = None

    def _stats(self, lam_flat, keep_policy=False):
        """Statistics at the finite tilts ``lam_flat`` (B,), and the policy if asked."""
        offset, centred, m, v, kappa, log_q = _backward(
            self._log_tr, self._r, lam_flat, self.length, self._n_threads, keep_policy)
        support = np.isfinite(self._log_p0)
        b = lam_flat.shape[0]
        g0 = np.where(support, lam_flat[:, None] * self._r0[None, :] + centred, 0.0)
        st = tilt_stats(np.broadcast_to(self._log_p0, g0.shape), g0, 1.0,
                        n_threads=self._n_threads)
        lp = np.asarray(st.log_partition).reshape(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_phi1 = np.where(support, self._log_p0 + g0 - lp[:, None], -np.inf)
        phi1 = np.exp(log_phi1)
        y0 = self._r0[None, :] + m
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
