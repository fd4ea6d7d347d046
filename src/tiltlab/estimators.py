"""Sample estimators of KL(pi || p) and a harness that checks them against exact values.

Researchers estimate ``KL(pi || p)`` from draws ``x ~ pi`` with the log-ratio
``l(x) = log pi(x) - log p(x)``:

* ``k1 = mean(l)`` (unbiased, high variance, can be negative),
* ``k2 = mean(l^2) / 2`` (biased, low variance),
* ``k3 = mean((rho - 1) - log rho)`` with ``rho = p / pi = e^{-l}`` (unbiased when ``pi``
  has full support on ``p``'s support, and never negative).

:func:`estimator_study` draws repeatedly from a policy whose law, and hence KL, tiltlab
knows exactly (any :class:`~tiltlab.policies.PolicyLaw`, single-row
:class:`~tiltlab.BestOfN`, best-of-N over memoryless sequences, or the tilted sequence
policy), and tabulates bias, spread and RMSE of each estimator.  For memoryless sequences
it adds the per-token (Rao-Blackwellised) estimator, which sums the exact KL of each
position's conditional law along a sampled sequence (the chain rule makes it unbiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tiltlab import _interop as interop
from tiltlab import _validation as V
from tiltlab.bestofn import BestOfN, sample_best_of_n
from tiltlab.policies import PolicyLaw
from tiltlab.sequences import Memoryless, SequenceBestOfN
from tiltlab.tilting import tilt, tilt_stats

__all__ = ["KLEstimates", "EstimatorStudy", "kl_estimators", "estimator_study"]

_RB_WORK = 2e8      # largest n * lattice * levels for the per-token estimator of BoN


@dataclass(frozen=True)
class KLEstimates:
    """The three estimators of ``KL(pi || p)`` and their standard errors."""

    k1: float
    k2: float
    k3: float
    se_k1: float
    se_k2: float
    se_k3: float
    n_samples: int


def _per_sample(log_ratio: np.ndarray) -> dict:
    with np.errstate(over="ignore", invalid="ignore"):
        return {"k1": log_ratio, "k2": 0.5 * log_ratio**2,
                "k3": np.expm1(-log_ratio) + log_ratio}


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    m = float(np.mean(x))
    if not math.isfinite(m):
        return m, math.inf
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.inf
    return m, se


@interop.arrays("samples", "log_pi", "log_p")
def kl_estimators(samples, log_pi, log_p) -> KLEstimates:
    """The sample estimators k1, k2, k3 of ``KL(pi || p)`` (SPEC section 2; module docstring).

    Parameters
    ----------
    samples : array_like of int, or None
        Outcome indices drawn from ``pi``; then ``log_pi`` and ``log_p`` are the two log
        laws over the outcomes.  With ``None``, ``log_pi`` and ``log_p`` are already the
        per-sample values ``log pi(x_i)`` and ``log p(x_i)``.
    log_pi, log_p : array_like
        Log-probabilities (normalised) of ``pi`` and ``p``.

    Returns
    -------
    KLEstimates
        ``k1``, ``k2``, ``k3``, their standard errors (sample standard deviation over
        ``sqrt(n)``) and ``n_samples``.  A sample where ``p = 0`` makes k1, k2, k3 ``inf``
        (the KL is infinite).

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> lg, r = np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0]
    >>> law = tiltlab.best_of_n(lg, r, n=4)
    >>> x = law.sample(100_000, rng=0)
    >>> est = tiltlab.kl_estimators(x, law.log_probs, lg)
    >>> print(f"exact {float(law.kl):.4f}  k1 {est.k1:.4f} +- {est.se_k1:.4f}")
    exact 0.5598  k1 0.5561 +- 0.0026
    """
    # masks: a law over outcomes has impossible outcomes; per-sample values have none
    laws = samples is not None
    rule = V.MASK_IMPOSSIBLE if laws else V.MASK_REFUSE
    hint = "per-sample values have no outcome to exclude; drop masked samples from both arrays"
    lpi = V.as_real_array(log_pi, "log_pi", masked=rule, hint=hint).astype(np.float64)
    lp = V.as_real_array(log_p, "log_p", masked=rule, hint=hint).astype(np.float64)
    if laws:
        s = np.asarray(V.refuse_mask(samples, "samples", "drop the masked draws, e.g. "
                                     "samples.compressed()"))
        if s.size < 2:
            raise ValueError(f"need at least 2 samples; got {s.size}")
        if s.dtype.kind not in "iu":
            raise TypeError(f"samples must be integer outcome indices; got dtype {s.dtype}")
        if lpi.ndim != 1 or lp.shape != lpi.shape:
            raise ValueError(f"log_pi and log_p must be laws of the same shape (V,); got "
                             f"{lpi.shape} and {lp.shape}")
        s = s.reshape(-1)
        if s.size and (s.min() < 0 or s.max() >= lpi.size):
            raise ValueError(f"samples must be indices in [0, {lpi.size}); got values in "
                             f"[{s.min()}, {s.max()}]")
        lpi, lp = lpi[s], lp[s]
    elif lpi.shape != lp.shape:
        raise ValueError(f"per-sample log_pi and log_p differ in shape: {lpi.shape} and "
                         f"{lp.shape}")
    lpi, lp = lpi.reshape(-1), lp.reshape(-1)
    if lpi.size < 2:
        raise ValueError(f"need at least 2 samples; got {lpi.size}")
    if np.isnan(lpi).any() or np.isnan(lp).any():
        raise ValueError("log_pi and log_p must not contain NaN")
    if not np.all(np.isfinite(lpi)):
        raise ValueError("a sample has pi = 0 (log_pi not finite): it cannot come from pi")
    if np.isposinf(lp).any():
        raise ValueError("log_p contains +inf")
    per = _per_sample(lpi - lp)
    (k1, s1), (k2, s2), (k3, s3) = (_mean_se(per[k]) for k in ("k1", "k2", "k3"))
    return KLEstimates(k1, k2, k3, s1, s2, s3, int(lpi.size))


@dataclass(frozen=True)
class EstimatorStudy:
    """Bias, spread and RMSE of KL estimators against the exact KL, one row per estimator."""

    exact_kl: float
    estimator: tuple
    mean: np.ndarray
    bias: np.ndarray
    std: np.ndarray
    rmse: np.ndarray
    n_samples: int
    repeats: int
    policy: str

    def __post_init__(self):
        V.freeze(self)  # read-only arrays (SPEC section 1)

    def table(self) -> str:
        """The study as an aligned text table."""
        head = (f"{self.policy}: exact KL = {self.exact_kl:.6g}; {self.repeats} repeats of "
                f"{self.n_samples} samples")
        rows = [f"{'estimator':<22} {'mean':>12} {'bias':>12} {'std':>12} {'rmse':>12}"]
        for i, name in enumerate(self.estimator):
            rows.append(f"{name:<22} {self.mean[i]:>12.6g} {self.bias[i]:>+12.4g} "
                        f"{self.std[i]:>12.4g} {self.rmse[i]:>12.4g}")
        return "\n".join([head, *rows])

    def __str__(self) -> str:
        return self.table()


def _log_softmax(lg: np.ndarray) -> np.ndarray:
    """log p from the compiled tilt at lam = 0: exact at any logit offset."""
    return np.asarray(tilt(lg, np.zeros_like(lg), 0.0))


class _Source:
    """Draws per-sample log-ratios (and per-token estimates) from a policy with exact KL."""

    name: str
    exact: float
    fixed: dict      # estimators that do not depend on samples (e.g. the analytic bound)

    def draw(self, size: int, rng: np.random.Generator) -> dict:
        raise NotImplementedError


class _Outcomes(_Source):
    def __init__(self, name, log_pi, log_p, rewards, exact, fixed):
        self.name, self.exact, self.fixed = name, exact, fixed
        self.log_pi, self.log_p, self.rewards = log_pi, log_p, rewards

    def draw(self, size, rng):
        x = sample_best_of_n(self.log_pi, self.rewards, n=1.0, size=size, rng=rng)
        return _per_sample(self.log_pi[x] - self.log_p[x])


class _TiltedSequences(_Source):
    def __init__(self, model: Memoryless, lam: float):
        if not model.stationary:
            raise ValueError("estimator_study supports tilted stationary sequences only")
        self.model, self.lam = model, lam
        st = tilt_stats(model._logits[0], model._rewards[0], lam)
        self.kl_token = float(st.kl)
        self.log_z = float(st.log_partition)
        self.exact = model.length * self.kl_token
        self.name = f"tilted sequences (n = {model.length}, lam = {lam:g})"
        self.fixed = {}
        self.log_phi = np.asarray(tilt(model._logits[0], model._rewards[0], lam))

    def draw(self, size, rng):
        n = self.model.length
        x = sample_best_of_n(self.log_phi, self.model._rewards[0], n=1.0, size=size * n,
                             rng=rng).reshape(size, n)
        r = self.model._rewards[0][x].sum(axis=1)
        out = _per_sample(self.lam * r - n * self.log_z)
        out["per-token (RB)"] = np.full(size, self.exact)
        return out


class _BonSequences(_Source):
    def __init__(self, b: SequenceBestOfN):
        model = b._model
        if not model.stationary:
            raise ValueError("estimator_study supports best-of-N over stationary sequences "
                             "only")
        self.b, self.model = b, model
        self.exact = float(b.kl)
        n = model.length
        self.name = f"best-of-N sequences (n = {n}, log N = {b.log_n:g})"
        self.fixed = {"log N - (N-1)/N": float(b.kl_bound)}
        full = model.reward_log_pmf()
        self.values0, self.step = float(full.values[0]), model.step
        lp = np.where(np.isnan(full.log_pmf), -np.inf, full.log_pmf)
        # log g(K) = log w_K - log P(K) on the whole lattice (-inf off the BoN support)
        self.log_g = np.full(full.values.size, -np.inf)
        kb = self._k(b.values)
        self.log_g[kb] = b.log_probs - lp[kb]
        self.level_lm = model._level_logmass[0]                  # log P(token level = l)
        self.kmax = int(np.max(model._kmax))
        width = self.level_lm.size
        self.rb = n * full.values.size * width <= _RB_WORK
        if self.rb:
            self._per_token_tables(n, width)

    def _k(self, values):
        return np.rint((np.asarray(values) - self.values0) / self.step).astype(np.int64)

    def _per_token_tables(self, n, width):
        """KL of position i's conditional level law given the prefix level sum K."""
        lm = self.level_lm
        g_next = self.log_g                                     # G_n(K), K = 0..n kmax
        self.kl_tab = [None] * (n + 1)
        for i in range(n, 0, -1):
            size_prev = (i - 1) * self.kmax + 1
            # G_{i-1}(K) = sum_l m_l G_i(K + l), K = 0..(i-1) kmax
            idx = np.arange(size_prev)[:, None] + np.arange(width)[None, :]
            with np.errstate(invalid="ignore"):
                terms = lm[None, :] + g_next[np.minimum(idx, g_next.size - 1)]
            terms = np.where(idx < g_next.size, terms, -np.inf)
            g_prev = np.logaddexp.reduce(terms, axis=1)
            with np.errstate(invalid="ignore"):
                q = np.exp(terms - g_prev[:, None])             # conditional level law
                kl = np.sum(np.where(q > 0, q * (terms - g_prev[:, None] - lm[None, :]), 0.0),
                            axis=1)
            self.kl_tab[i] = np.where(np.isfinite(g_prev), kl, 0.0)
            g_next = g_prev

    def draw(self, size, rng):
        seq = self.b.sample(size, rng=rng)
        k = self.model._k[0][seq]                                # level per token
        ktot = k.sum(axis=1)
        # log pi(seq) - log p^n(seq) = log g(R): best-of-N reweights p^n through R only
        out = _per_sample(self.log_g[ktot])
        if self.rb:
            prefix = np.concatenate([np.zeros((size, 1), np.int64),
                                     np.cumsum(k, axis=1)[:, :-1]], axis=1)
            n = self.model.length
            out["per-token (RB)"] = sum(self.kl_tab[i + 1][prefix[:, i]] for i in range(n))
        return out


def _source(policy, lam) -> _Source:
    if isinstance(policy, PolicyLaw):
        return _Outcomes(f"{policy.method} {policy.params}", policy.log_probs,
                         _log_softmax(policy._logits), policy._rewards, policy.kl, {})
    if isinstance(policy, BestOfN):
        if np.ndim(policy.kl) != 0:
            raise ValueError("estimator_study takes a single best-of-N row, not a batch")
        lg, rw = policy._rows.originals
        lg = np.asarray(lg, dtype=np.float64)
        return _Outcomes(f"best-of-N (log N = {float(policy.log_n):g})",
                         np.asarray(policy.log_probs, dtype=np.float64), _log_softmax(lg),
                         np.asarray(rw, dtype=np.float64), float(policy.kl),
                         {"log N - (N-1)/N": float(policy.kl_bound)})
    if isinstance(policy, SequenceBestOfN):
        return _BonSequences(policy)
    if isinstance(policy, Memoryless):
        if lam is None:
            raise ValueError("for a Memoryless model give lam= (the tilted policy phi_lam^n)")
        return _TiltedSequences(policy, V.scalar_param(lam, "lam", allow_inf=False))
    raise TypeError("policy must be a PolicyLaw, a single-row BestOfN, a SequenceBestOfN or "
                    f"a Memoryless model with lam=; got {type(policy).__name__}")


@interop.arrays("policy")
def estimator_study(policy, n_samples: int, repeats: int, rng=None, *,
                    lam: float | None = None) -> EstimatorStudy:
    """Bias, spread and RMSE of the KL estimators against the exact KL (SPEC sections 2-4).

    Parameters
    ----------
    policy : PolicyLaw, BestOfN, SequenceBestOfN or Memoryless
        The policy ``pi`` (its reference ``p`` is the model it was built on).  A
        :class:`~tiltlab.Memoryless` model with ``lam=`` means the tilted policy
        ``phi_lam^n``.
    n_samples : int
        Samples per estimate (>= 2).
    repeats : int
        Independent estimates (>= 2).
    rng : None, int or numpy.random.Generator
        Source of randomness.
    lam : float, optional
        Tilt, for a :class:`~tiltlab.Memoryless` policy.

    Returns
    -------
    EstimatorStudy
        Rows ``k1``, ``k2``, ``k3``; ``per-token (RB)`` for sequences (for best-of-N when
        ``n * lattice * levels <= 2e8``); and the analytic ``log N - (N-1)/N`` for best-of-N
        (no spread).  ``table()`` formats it.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> lg, r = np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0]
    >>> study = tiltlab.estimator_study(tiltlab.best_of_n(lg, r, n=16), 1000, 50, rng=0)
    >>> study.estimator
    ('k1', 'k2', 'k3', 'log N - (N-1)/N')
    >>> print(f"{study.exact_kl:.4f} {study.bias[3]:+.4f}")   # the bound is 0.37 nats high
    1.4696 +0.3654
    """
    for val, name in ((n_samples, "n_samples"), (repeats, "repeats")):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise TypeError(f"{name} must be an integer; got {val!r}")
        if val < 2:
            raise ValueError(f"{name} must be >= 2; got {val}")
    src = _source(policy, lam)
    # per sample: the draw and the per-sample estimates (and the tokens of a sequence);
    # per repeat: one Python float per estimator in the lists and the result arrays
    length = getattr(getattr(src, "model", None), "length", 0)
    V.check_memory(int(n_samples) * (64 + 32 * length),
                   f"n_samples={n_samples} samples per estimate")
    V.check_memory(int(repeats) * 320, f"repeats={repeats} estimates")
    gen = np.random.default_rng(rng)
    draws: dict = {}
    for _ in range(int(repeats)):
        per = src.draw(int(n_samples), gen)
        for k, v in per.items():
            draws.setdefault(k, []).append(float(np.mean(v)))
    names = list(draws) + list(src.fixed)
    est = [np.array(draws[k]) for k in draws] + [np.full(int(repeats), v)
                                                 for v in src.fixed.values()]
    mean = np.array([float(np.mean(e)) for e in est])
    std = np.array([float(np.std(e, ddof=1)) for e in est])
    rmse = np.array([float(np.sqrt(np.mean((e - src.exact) ** 2))) for e in est])
    return EstimatorStudy(float(src.exact), tuple(names), mean, mean - src.exact, std, rmse,
                          int(n_samples), int(repeats), src.name)
