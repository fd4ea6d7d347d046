"""The numbers behind ``tiltlab reproduce``: one function per figure (eight), exact.

Each experiment returns an :class:`Experiment` whose tables (columns of equal length) are
exactly what its figure plots and what the report writes as CSV.  Every number comes from the
public API (:class:`tiltlab.Memoryless`, :func:`tiltlab.tilt_stats`, ...); the tests recompute
a sample of them through that API.  The claims of figures 1-7 are those of SPEC section 4
(after arXiv 2404.01730) for a memoryless model ``p^n`` with additive reward ``R``; figure 8
(:func:`markov`) asks whether they carry over to a Markov model (SPEC section 9).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

import tiltlab
from tiltlab.tokenmodel import Model

__all__ = ["Sizes", "Experiment", "EXPERIMENTS", "MARKOV_DELTA", "default_delta",
           "win_rate_on_levels"]


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (``quick`` or ``full``)."""

    frontier_lengths: tuple = (1, 10, 100, 1000)
    kl_lengths: tuple = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    ld_lengths: tuple = (10, 100, 1000)
    cumulant_lengths: tuple = (10, 100, 1000)
    sample_length: int = 100
    sample_size: int = 100_000
    word_sequences: int = 1_000
    winrate_length: int = 100
    markov_lengths: tuple = (10, 30, 100, 300, 1000, 3000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls()

    @classmethod
    def full(cls) -> Sizes:
        return cls(frontier_lengths=(1, 10, 100, 1000, 10_000, 100_000),
                   kl_lengths=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000,
                               20_000, 50_000, 100_000),
                   ld_lengths=(10, 100, 1000, 10_000, 100_000),
                   cumulant_lengths=(10, 100, 1000, 10_000),
                   sample_length=1000, sample_size=1_000_000, word_sequences=10_000,
                   winrate_length=1000,
                   markov_lengths=(10, 30, 100, 300, 1000, 3000, 10_000))


@dataclass
class Experiment:
    """Tables of one figure, its caption and a one-line summary."""

    key: str
    title: str
    tables: dict = field(default_factory=dict)   # csv stem -> {column: 1-d array}
    caption: str = ""
    summary: str = ""
    notes: dict = field(default_factory=dict)    # scalars used by the caption / plot


Progress = Callable[[Iterable, str], Iterable]


def _no_progress(it: Iterable, desc: str) -> Iterable:
    return it


def default_delta(model: Model) -> float:
    """Per-token KL budget of the run: 0.3 nats, or a quarter of ``kl_max`` if that is less."""
    return float(min(0.3, 0.25 * tiltlab.kl_max(model.logits, model.rewards)))


class Context:
    """A model, the run's sizes and settings, and a cache of sequence models by length.

    ``markov_model`` is the Markov model of figure 8 (:func:`markov`): a
    :class:`tiltlab.app.models.MarkovModel`, or None for the default (``english-letters``
    if its data is installed, else ``sticky-ternary``).
    """

    def __init__(self, model: Model, sizes: Sizes, *, delta: float | None = None, seed: int = 0,
                 n_threads: int | None = None, progress: Progress = _no_progress,
                 markov_model=None):
        self.model, self.sizes, self.seed, self.n_threads = model, sizes, seed, n_threads
        self.progress = progress
        self.delta_given = delta is not None
        self._markov_model = markov_model
        self._markov = None
        self.delta = default_delta(model) if delta is None else float(delta)
        kmax = float(tiltlab.kl_max(model.logits, model.rewards)) + 0.0
        if kmax == 0.0:
            raise ValueError(f"the reward of model {model.name!r} is constant on the support "
                             "of p: there is nothing to align")
        if not 0 < self.delta < kmax:
            raise ValueError(f"delta must be in (0, kl_max = {kmax:.6g}) for model "
                             f"{model.name!r}; got {self.delta}")
        self.kl_max = kmax
        self.lam = float(tiltlab.solve_lambda(model.logits, model.rewards, self.delta))
        self._seq: dict = {}

    def seq(self, n: int) -> tiltlab.Memoryless:
        if n not in self._seq:
            self._seq[n] = tiltlab.Memoryless(self.model.logits, self.model.rewards, n,
                                              step=self.model.step, n_threads=self.n_threads)
        return self._seq[n]

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def markov(self) -> tuple:
        """(Markov model, why it was chosen, per-token budget) of figure 8, checked once.

        The budget is the run's ``delta`` if one was given, else :data:`MARKOV_DELTA`; a
        ValueError naming ``delta`` if it is not below the per-token ``kl_max`` of the Markov
        model and of its memoryless twin (at the shortest length of the run).
        """
        if self._markov is None:
            self._markov = _markov_setup(self)
        return self._markov


def _col(values, dtype=np.float64) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


# --------------------------------------------------------------------------------------
# 1. reward-KL frontier per token: tilt vs best-of-N with N = e^(n delta)
# --------------------------------------------------------------------------------------

def frontier(ctx: Context) -> Experiment:
    m = ctx.model
    deltas = ctx.delta * np.array([0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.4, 1.8, 2.4, 3.0])
    deltas = np.union1d(deltas[deltas < 0.9 * ctx.kl_max], [ctx.delta])
    rows = {k: [] for k in ("n", "delta", "log_n", "kl_per_token", "reward_per_token",
                            "frontier_reward_per_token", "win_rate")}
    for n in ctx.progress(ctx.sizes.frontier_lengths, "frontier: best-of-N per length"):
        s = ctx.seq(n)
        for d in deltas:
            b = s.best_of_n(log_n=n * d)
            rows["n"].append(n)
            rows["delta"].append(d)
            rows["log_n"].append(n * d)
            rows["kl_per_token"].append(b.kl / n)
            rows["reward_per_token"].append(b.expected_reward / n)
            rows["win_rate"].append(b.win_rate)
    kl = np.array(rows["kl_per_token"])
    rows["frontier_reward_per_token"] = tiltlab.frontier(m.logits, m.rewards, kl)
    bon = {k: _col(v) for k, v in rows.items()}
    bon["n"] = bon["n"].astype(np.int64)
    # the figure's lower panel: how far below the optimal frontier, at its own KL
    bon["reward_below_frontier_per_token"] = (bon["frontier_reward_per_token"]
                                              - bon["reward_per_token"])
    top = max(float(deltas[-1]), float(kl.max()))
    grid = np.linspace(0.0, top, 81)
    lam = tiltlab.solve_lambda(m.logits, m.rewards, grid)
    st = tiltlab.tilt_stats(m.logits, m.rewards, lam)
    tilted = {"kl_per_token": _col(st.kl), "reward_per_token": _col(st.mean), "lam": _col(lam)}
    gap = bon["reward_below_frontier_per_token"]
    at = np.isclose(bon["delta"], ctx.delta)
    gaps = {int(n): float(g) for n, g in zip(bon["n"][at], gap[at], strict=True)}
    n_lo, n_hi = min(gaps), max(gaps)
    caption = (
        "**Claim** (arXiv 2404.01730, SPEC 4): for a memoryless model, best-of-N with "
        "N = e^(n Δ) has per-token reward and per-token KL(π_N‖pⁿ) converging to the optimal "
        "KL-constrained policy's frontier (the exponential tilt φ_λ, black curve) as n grows. "
        "Below: each best-of-N point's reward per token below the frontier at its own KL "
        "(log scale), where the curves that merge above come apart. "
        f"**Numbers**: at Δ = {ctx.delta:.3g} the reward gap to the frontier at the same KL is "
        f"{gaps[n_lo]:.4g} per token at n = {n_lo} and {gaps[n_hi]:.3g} at n = {n_hi}; "
        f"the largest gap over the Δ grid at n = {n_hi} is "
        f"{float(gap[bon['n'] == n_hi].max()):.3g}.")
    return Experiment(
        "frontier", "Reward–KL frontier per token: tilt vs best-of-N",
        {"frontier_tilted": tilted, "frontier_best_of_n": bon}, caption,
        f"frontier: gap to the optimal frontier at Δ={ctx.delta:.3g}: "
        f"{gaps[n_lo]:.3g} (n={n_lo}) -> {gaps[n_hi]:.3g} (n={n_hi})",
        {"gaps": gaps})


# --------------------------------------------------------------------------------------
# 2. KL(pi_N || phi_lam^n) against n
# --------------------------------------------------------------------------------------

def kl_to_tilt(ctx: Context) -> Experiment:
    m = ctx.model
    deltas = [ctx.delta, ctx.delta / 3]
    rows = {k: [] for k in ("delta", "lam", "n", "kl_to_tilted", "kl_to_tilted_per_token",
                            "kl_minus_half_log_n", "reward_deficit", "half_log_n")}
    lams = tiltlab.solve_lambda(m.logits, m.rewards, np.array(deltas))
    means = tiltlab.tilt_stats(m.logits, m.rewards, lams).mean
    for d, lam, mean in zip(deltas, lams, means, strict=True):
        for n in ctx.progress(ctx.sizes.kl_lengths, f"KL to the tilt, delta={d:.3g}"):
            b = ctx.seq(n).best_of_n(log_n=n * d)
            kl = float(b.kl_to_tilted(lam))
            rows["delta"].append(d)
            rows["lam"].append(lam)
            rows["n"].append(n)
            rows["kl_to_tilted"].append(kl)
            rows["kl_to_tilted_per_token"].append(kl / n)
            rows["kl_minus_half_log_n"].append(kl - 0.5 * math.log(n))
            rows["reward_deficit"].append(n * mean - b.expected_reward)
            rows["half_log_n"].append(0.5 * math.log(n))
    t = {k: _col(v) for k, v in rows.items()}
    t["n"] = t["n"].astype(np.int64)
    sel = t["delta"] == deltas[0]
    ns, kls = t["n"][sel], t["kl_to_tilted"][sel]
    i0 = int(np.searchsorted(ns, ns[-1] / 10))
    slope = (kls[-1] - kls[i0]) / math.log(ns[-1] / ns[i0]) if ns[-1] > ns[i0] else math.nan
    const = float(t["kl_minus_half_log_n"][sel][-1])
    caption = (
        "**Claim** (SPEC 4): KL(π_N‖φ_λⁿ)/n → 0 (left), the sense in which best-of-N and "
        "the optimal policy become equivalent; the finite-n refinement derived for tiltlab is "
        "KL(π_N‖φ_λⁿ) = ½ log n + O(1) once nΔ ≫ 1 (right, dashed: ½ log n + c with c "
        "fitted at the largest n, drawn where it is positive, as a KL is). **Numbers**: "
        f"at Δ = {deltas[0]:.3g} "
        f"(λ = {lams[0]:.4g}) the per-token KL falls to {kls[-1] / ns[-1]:.3g} at "
        f"n = {ns[-1]}; the slope of the total KL against "
        f"log n between n = {ns[i0]} and {ns[-1]} is {slope:.4f} (predicted 0.5), "
        f"with c = {const:.3f}.")
    return Experiment("kl_to_tilt", "KL(π_N‖φ_λⁿ) against the sequence length",
                      {"kl_to_tilt": t}, caption,
                      f"kl_to_tilt: KL/n = {kls[-1] / ns[-1]:.3g} at n={ns[-1]}; "
                      f"slope vs log n {slope:.3f} (theory 0.5)",
                      {"slope": slope, "const": const})


# --------------------------------------------------------------------------------------
# 3. large deviations from the exact lattice law
# --------------------------------------------------------------------------------------

def _log_tails(log_pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log P(R >= s) and log P(R <= s) for every lattice point (log-space cumulative sums)."""
    lp = np.where(np.isnan(log_pmf), -np.inf, log_pmf)
    # log-space accumulation: tails like 1e-3000 stay exact (linear cumsums would underflow)
    return np.logaddexp.accumulate(lp[::-1])[::-1], np.logaddexp.accumulate(lp)


def large_deviations(ctx: Context) -> Experiment:
    m = ctx.model
    st0 = tiltlab.tilt_stats(m.logits, m.rewards, 0.0)
    mean = float(st0.mean)
    finite = np.isfinite(m.logits)
    r_lo, r_hi = float(m.rewards[finite].min()), float(m.rewards[finite].max())
    xs = np.linspace(r_lo, r_hi, 201)
    rate = {"x": xs, "rate": _col(tiltlab.rate_function(m.logits, m.rewards, xs))}
    rows = {k: [] for k in ("n", "x", "tail", "minus_log_tail_over_n", "rate")}
    worst = {}
    for n in ctx.progress(ctx.sizes.ld_lengths, "large deviations: exact laws"):
        law = ctx.seq(n).reward_log_pmf()
        up, down = _log_tails(law.log_pmf)
        x = law.values / n
        # keep at most 240 points per n, evenly spread in x, for the table and the plot
        idx = np.unique(np.clip(np.searchsorted(x, np.linspace(r_lo, r_hi, 240)), 0,
                                x.size - 1))
        upper = x[idx] >= mean
        tail_lp = np.where(upper, up[idx], down[idx])
        keep = np.isfinite(tail_lp)
        idx, upper, tail_lp = idx[keep], upper[keep], tail_lp[keep]
        xi = x[idx]
        y = -tail_lp / n
        rr = tiltlab.rate_function(m.logits, m.rewards, xi)
        rows["n"].extend([n] * idx.size)
        rows["x"].extend(xi)
        rows["tail"].extend(np.where(upper, "upper", "lower"))
        rows["minus_log_tail_over_n"].extend(y)
        rows["rate"].extend(rr)
        inner = (xi > r_lo + 0.05 * (r_hi - r_lo)) & (xi < r_hi - 0.05 * (r_hi - r_lo))
        worst[n] = float(np.max(np.abs(y - rr)[inner])) if inner.any() else math.nan
    t = {k: (np.array(v) if k == "tail" else _col(v)) for k, v in rows.items()}
    t["n"] = t["n"].astype(np.int64)
    ns = sorted(worst)
    caption = (
        "**Claim** (Cramér; SPEC 4): −(1/n) log P(R/n ≥ x) → I(x) for x above the mean and "
        "−(1/n) log P(R/n ≤ x) → I(x) below it, with I the Legendre transform of the token "
        "CGF (black); below, the distance −(1/n) log P − I(x) on a log scale (zero at "
        "the mean, where both vanish, so not drawn there). Tail probabilities are summed "
        "from the exact lattice law (no sampling; "
        "they go far below 1e-300). **Numbers**: the largest distance to I over the inner 90% "
        "of the range is " + ", ".join(f"{worst[n]:.3g} (n = {n})" for n in ns) +
        "; the Bahadur–Rao correction to the exponent is (½ log n + O(1))/n on compact "
        "subsets of the interior.")
    return Experiment("large_deviations", "Large deviations of the sequence reward",
                      {"large_deviations": t, "rate_function": rate}, caption,
                      "large_deviations: sup |-(1/n) log P - I| " +
                      " -> ".join(f"{worst[n]:.3g}" for n in ns) + f" (n={ns[0]}..{ns[-1]})",
                      {"worst": worst, "mean": mean})


# --------------------------------------------------------------------------------------
# 4. scaled cumulants and the scaled CGF (Rényi cross entropy form)
# --------------------------------------------------------------------------------------

def _law_cumulants(values: np.ndarray, log_pmf: np.ndarray, order: int = 6) -> np.ndarray:
    """kappa_1..kappa_order of a lattice law from its central moments."""
    lp = np.where(np.isnan(log_pmf), -np.inf, log_pmf)
    w = np.exp(lp - np.max(lp))
    w /= w.sum()
    mu1 = float(np.dot(w, values))
    c = values - mu1
    mom = [1.0, 0.0] + [float(np.dot(w, c**k)) for k in range(2, order + 1)]
    # cumulants from central moments (kappa_1 = mean)
    kap = np.zeros(order)
    kap[0] = mu1
    for k in range(2, order + 1):
        # kappa_k = mu_k - sum_{j=1}^{k-1} C(k-1, j-1) kappa_j mu_{k-j} for the centred law
        # (its kappa_1 = 0; higher cumulants do not depend on the centre)
        s = mom[k]
        for j in range(2, k):
            s -= math.comb(k - 1, j - 1) * kap[j - 1] * mom[k - j]
        kap[k - 1] = s
    return kap


def cumulants(ctx: Context) -> Experiment:
    m = ctx.model
    order = 6
    exact = tiltlab.cumulants(m.logits, m.rewards, order=order)
    rows = {k: [] for k in ("n", "k", "scaled_cumulant", "token_cumulant")}
    t_grid = np.concatenate([np.linspace(-0.9, 3.0, 40), [0.0]])
    t_grid.sort()
    cgf_rows = {k: [] for k in ("n", "t", "scaled_cgf_exact_law")}
    logz_r = float(np.log(np.sum(np.exp(m.rewards - m.rewards.max()))) + m.rewards.max())
    renyi = np.array([0.0 if t == 0 else t * (logz_r - float(
        tiltlab.renyi_cross_entropy(m.logits, m.rewards, 1.0 + t))) for t in t_grid])
    errs = {}
    for n in ctx.progress(ctx.sizes.cumulant_lengths, "cumulants and CGF: exact laws"):
        law = ctx.seq(n).reward_log_pmf()
        kap = _law_cumulants(law.values, law.log_pmf, order) / n
        rows["n"].extend([n] * order)
        rows["k"].extend(range(1, order + 1))
        rows["scaled_cumulant"].extend(kap)
        rows["token_cumulant"].extend(exact)
        lp = np.where(np.isnan(law.log_pmf), -np.inf, law.log_pmf)
        cg = np.array([float(tiltlab.logsumexp(lp + t * law.values)) / n for t in t_grid])
        cgf_rows["n"].extend([n] * t_grid.size)
        cgf_rows["t"].extend(t_grid)
        cgf_rows["scaled_cgf_exact_law"].extend(cg)
        errs[n] = float(np.max(np.abs(cg - renyi) / np.maximum(1.0, np.abs(renyi))))
    t = {k: _col(v) for k, v in rows.items()}
    t["n"] = t["n"].astype(np.int64)
    t["k"] = t["k"].astype(np.int64)
    cg = {k: _col(v) for k, v in cgf_rows.items()}
    cg["n"] = cg["n"].astype(np.int64)
    formula = {"t": t_grid, "scaled_cgf_renyi": renyi,
               "scaled_cgf_compiled": _col(tiltlab.scaled_cgf(m.logits, m.rewards, t_grid))}
    # relative to the natural scale of kappa_k, max(|kappa_k|, kappa_2^(k/2)) (some
    # cumulants vanish, e.g. the odd ones of a symmetric reward)
    scale = np.maximum(np.abs(t["token_cumulant"]), max(exact[1], 1e-300) ** (t["k"] / 2.0))
    rel = np.abs(t["scaled_cumulant"] - t["token_cumulant"]) / scale
    k6 = t["k"] == order
    caption = (
        "**Claim** (SPEC 4): for a memoryless model the cumulants of R are additive, "
        "κ_k(R)/n = κ_k(r) for every n, and the scaled CGF (1/n) log E e^{tR} equals "
        "t·(log Σ_y e^{r(y)} − H_{1+t}(p; softmax r)) with H_α the Rényi cross entropy "
        "(t > −1). Left: κ_k(R)/n computed from the exact law of R for several n (markers) "
        "against the token cumulants (bars); right: the CGF of the exact law against the "
        "Rényi formula. **Numbers**: largest relative deviation of κ_1..κ_6 over all n: "
        f"{float(rel.max()):.2g} relative to max(|κ_k|, κ_2^(k/2)) (κ_6 alone: "
        f"{float(rel[k6].max()):.2g}; central moments cancel most of its digits at large n); "
        "CGF vs Rényi formula: "
        + ", ".join(f"{errs[n]:.2g} (n = {n})" for n in sorted(errs)) + ".")
    return Experiment("cumulants", "Scaled cumulants and the scaled CGF",
                      {"cumulants": t, "scaled_cgf_exact_law": cg, "scaled_cgf_formula": formula},
                      caption,
                      f"cumulants: max rel. dev. of kappa_1..6 {float(rel.max()):.2g}; "
                      f"CGF vs Rényi {max(errs.values()):.2g}",
                      {"rel": float(rel.max())})


# --------------------------------------------------------------------------------------
# 5. samples: sampled best-of-N rewards over the exact law, and the tokens BoN raises
# --------------------------------------------------------------------------------------

def _index_on(values: np.ndarray, grid: np.ndarray, step: float) -> np.ndarray:
    return np.rint((values - grid[0]) / step).astype(np.int64)


def token_marginal(ctx: Context, n: int, b) -> np.ndarray:
    """Exact probability of each token at one position of a best-of-N sequence of length n.

    ``pi_N(y_1..y_n) = p^n(y) g(R)`` with ``g(s) = pi_N(R = s) / P(R = s)``, so the marginal
    of one position is ``p(y) sum_s P_{n-1}(R' = s - r(y)) g(s)``.  The denominator is
    formed from the same ``n - 1`` law, ``P(R = s) = sum_j m_j P_{n-1}(R' = s - l_j)`` over
    the token reward levels ``l_j`` of mass ``m_j``, so the marginal sums to 1 by
    construction; everything is summed in log space.
    """
    m = ctx.model
    if n == 1:
        return np.exp(np.asarray(tiltlab.best_of_n(m.logits, m.rewards, log_n=b.log_n).log_probs))
    step = ctx.seq(n).step
    rest = ctx.seq(n - 1).reward_log_pmf()
    rest_lp = np.where(np.isnan(rest.log_pmf), -np.inf, rest.log_pmf)
    live = np.isfinite(m.logits)
    levels, inverse = np.unique(m.rewards[live], return_inverse=True)
    log_mass = np.array([float(tiltlab.logsumexp(m.logits[live][inverse == j]))
                         for j in range(levels.size)])
    # terms[j, s] = log P_{n-1}(R' = s - l_j)
    terms = np.full((levels.size, b.values.size), -np.inf)
    for j, r in enumerate(levels):
        idx = _index_on(b.values - r, rest.values, step)
        ok = (idx >= 0) & (idx < rest.values.size)
        terms[j, ok] = rest_lp[idx[ok]]
    with np.errstate(invalid="ignore"):
        log_pn = tiltlab.logsumexp(terms + log_mass[:, None], axis=0)
        log_g = np.where(np.isfinite(log_pn), b.log_probs - log_pn, -np.inf)
    log_m = tiltlab.logsumexp(terms + log_g[None, :], axis=1)
    out = np.zeros(m.vocab_size)
    out[live] = np.exp(m.logits[live] + log_m[inverse])
    return out / out.sum()


def samples(ctx: Context) -> Experiment:
    m = ctx.model
    n, size = ctx.sizes.sample_length, ctx.sizes.sample_size
    s = ctx.seq(n)
    b = s.best_of_n(log_n=n * ctx.delta)
    draws = b.sample_rewards(size, rng=ctx.rng(5), n_threads=ctx.n_threads)
    k = np.clip(np.searchsorted(b.values, draws), 0, b.values.size - 1)
    if not np.allclose(b.values[k], draws, rtol=0, atol=1e-6 * s.step):
        raise RuntimeError("sampled rewards off the best-of-N support")  # a sampler bug
    counts = np.bincount(k, minlength=b.values.size)
    exact = np.exp(b.log_probs)
    show = (exact > 1e-9) | (counts > 0)
    hist = {"reward": b.values[show], "exact_prob": exact[show],
            "sampled_count": counts[show].astype(np.int64),
            "sampled_freq": counts[show] / size}
    expect = exact * size
    big = expect >= 5
    chi2 = float(np.sum((counts[big] - expect[big]) ** 2 / expect[big]))
    dof = int(big.sum()) - 1
    z = (chi2 - dof) / math.sqrt(2 * dof) if dof > 0 else math.nan
    chi_text = (f"chi-square over {dof + 1} cells with ≥ 5 expected counts: {chi2:.1f} on "
                f"{dof} degrees of freedom (z = {z:+.2f})" if dof > 0 else
                "too few cells with ≥ 5 expected counts for a chi-square test")
    # tokens: the exact one-position marginal of best-of-N, the tilt, and sampled sequences
    with np.errstate(divide="ignore"):
        marg = token_marginal(ctx, n, b)
    phi = np.exp(tiltlab.tilt(m.logits, m.rewards, ctx.lam))
    p = np.exp(m.logits)
    seqs = b.sample(ctx.sizes.word_sequences, rng=ctx.rng(6), n_threads=ctx.n_threads)
    sampled = np.bincount(seqs.ravel(), minlength=m.vocab_size) / seqs.size
    raise_ = marg - p
    top = np.argsort(-raise_, kind="stable")[: min(15, m.vocab_size)]
    words = {"token": m.names[top], "reward": m.rewards[top], "p": p[top],
             "best_of_n_exact": marg[top], "best_of_n_sampled": sampled[top],
             "tilted": phi[top]}
    tv = 0.5 * float(np.abs(marg - phi).sum())
    caption = (
        "**Claim** (SPEC 3–4): the samplers draw exactly from the best-of-N law, and (an "
        "illustration of the paper's equivalence at the level of single tokens, not a claim "
        "of the paper) a token of a best-of-N sequence is distributed close to φ_λ. "
        f"Left: {size:,} rewards R of best-of-N sequences (n = {n}, N = e^(nΔ), "
        f"Δ = {ctx.delta:.3g}) from the order-statistic sampler (bars) against the exact law "
        "(black steps). "
        "Right: the tokens whose frequency best-of-N raises most: p, the exact one-position "
        f"marginal of best-of-N sequences, its frequency in {seqs.shape[0]:,} sequences drawn "
        f"by the exact conditional sampler, and the tilt φ_λ (λ = {ctx.lam:.4g}). "
        f"**Numbers**: {chi_text}; total variation between the exact token marginal and "
        f"φ_λ is {tv:.3g} at n = {n}.")
    return Experiment("samples", "Samples: best-of-N rewards and the tokens it favours",
                      {"samples_histogram": hist, "samples_tokens": words}, caption,
                      f"samples: {size:,} BoN rewards, chi2 z = {z:+.2f} ({dof} dof); "
                      f"TV(token marginal, tilt) = {tv:.3g}",
                      {"chi2": chi2, "dof": dof, "z": z, "tv": tv, "n": n})


# --------------------------------------------------------------------------------------
# 6. win rate against KL
# --------------------------------------------------------------------------------------

def win_rate_on_levels(values_lp_p: np.ndarray, values_lp_q: np.ndarray) -> float:
    """Win rate of one law over another on the same sorted reward levels.

    Parameters
    ----------
    values_lp_p, values_lp_q : ndarray, shape (K,)
        Log pmfs of the reference law ``p`` and of the policy's law ``q`` on the same ``K``
        increasing reward levels (NaN reads as ``-inf``), e.g. the ``log_pmf`` of two
        :meth:`tiltlab.Memoryless.reward_log_pmf` results of one model.

    Returns
    -------
    float
        ``P(Y_q > Y_p) + P(Y_q = Y_p) / 2`` for independent ``Y_p ~ p`` and ``Y_q ~ q``
        (a RuntimeWarning when more than 1e-9 of either law's mass is unresolved).
    """
    p = np.exp(np.where(np.isnan(values_lp_p), -np.inf, values_lp_p))
    q = np.exp(np.where(np.isnan(values_lp_q), -np.inf, values_lp_q))
    missing = max(abs(1.0 - p.sum()), abs(1.0 - q.sum()))
    if missing > 1e-9:
        warnings.warn(f"win rate: {missing:.2g} of the probability mass is unresolved; the "
                      "value is computed from the resolved part", RuntimeWarning, stacklevel=2)
    below = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    return float(np.dot(q, below + 0.5 * p))


def win_rate(ctx: Context) -> Experiment:
    m = ctx.model
    log_ns = np.linspace(0.0, math.log(1e4), 40)
    b1 = tiltlab.best_of_n(m.logits, m.rewards, log_n=log_ns)
    ns = np.exp(log_ns)
    top = min(max(float(np.max(b1.kl)), 0.02), 0.999 * ctx.kl_max)
    lam1 = tiltlab.solve_lambda(m.logits, m.rewards, np.linspace(0.0, top, 40))
    st1 = tiltlab.policy_frontier(m.logits, m.rewards, "tilted", lam1)
    wr1 = st1.win_rate
    L = ctx.sizes.winrate_length
    s = ctx.seq(L)
    law0 = s.reward_log_pmf()
    seq_bon = {k: [] for k in ("log_n", "kl", "win_rate")}
    for ln in ctx.progress(log_ns[1:], f"win rate: best-of-N, n={L}"):
        b = s.best_of_n(log_n=ln)
        seq_bon["log_n"].append(ln)
        seq_bon["kl"].append(b.kl)
        seq_bon["win_rate"].append(b.win_rate)
    kl_seq_top = min(max(seq_bon["kl"]) / L, 0.999 * ctx.kl_max)
    lam_s = tiltlab.solve_lambda(m.logits, m.rewards, np.linspace(0.0, kl_seq_top, 25))
    st_s = tiltlab.tilt_stats(m.logits, m.rewards, lam_s)
    seq_tilt = {"lam": _col(lam_s), "kl": L * _col(st_s.kl), "win_rate": []}
    for lam in ctx.progress(lam_s, f"win rate: tilted laws, n={L}"):
        lawl = s.reward_log_pmf(float(lam))
        seq_tilt["win_rate"].append(win_rate_on_levels(law0.log_pmf, lawl.log_pmf))
    seq_tilt["win_rate"] = _col(seq_tilt["win_rate"])
    tables = {
        "win_rate_token": {
            "policy": np.array(["best_of_n"] * ns.size + ["tilted"] * lam1.size),
            "parameter": np.concatenate([ns, lam1]),
            "kl": np.concatenate([np.asarray(b1.kl, float), np.asarray(st1.kl, float)]),
            "win_rate": np.concatenate([np.asarray(b1.win_rate, float), _col(wr1)])},
        "win_rate_sequence": {
            "policy": np.array(["best_of_n"] * len(seq_bon["kl"]) + ["tilted"] * lam_s.size),
            "parameter": np.concatenate([np.exp(seq_bon["log_n"]), lam_s]),
            "kl": np.concatenate([_col(seq_bon["kl"]), seq_tilt["kl"]]),
            "win_rate": np.concatenate([_col(seq_bon["win_rate"]), seq_tilt["win_rate"]])},
        "win_rate_bound": {"n": ns, "kl": ns * 0 + np.log(ns) - (ns - 1) / ns,
                           "win_rate": ns / (ns + 1)},
    }
    # best-of-N's win rate minus the tilt's at equal KL (tilt interpolated in KL)
    def diff(kl_b, wr_b, kl_t, wr_t):
        d = np.asarray(wr_b) - np.interp(kl_b, kl_t, wr_t)
        inside = np.asarray(kl_b) <= np.max(kl_t)
        return float(d[inside].min()), float(d[inside].max())

    tok = diff(np.asarray(b1.kl, float), np.asarray(b1.win_rate, float),
               np.asarray(st1.kl, float), _col(wr1))
    seqd = diff(_col(seq_bon["kl"]), _col(seq_bon["win_rate"]), seq_tilt["kl"],
                seq_tilt["win_rate"])
    n_seq = np.exp(seq_bon["log_n"])
    bound_gap = float(np.max(np.abs(_col(seq_bon["win_rate"]) - n_seq / (n_seq + 1))))
    if bound_gap < 0.01:
        near = f"best-of-N's win rate is within {bound_gap:.2g} of N/(N+1)"
    else:
        near = (f"best-of-N's win rate is still up to {bound_gap:.2g} away from N/(N+1) "
                "(reward atoms remain at this n)")
    caption = (
        "**Claim**: without reward atoms best-of-N lies on the curve (log N − (N−1)/N, "
        "N/(N+1)). The tilt maximises expected reward at a given KL, not win rate, and "
        "best-of-N is known to be close to win-rate-optimal (Gui et al., arXiv 2406.00832; "
        "not a result of 2404.01730). Left: one token, where reward atoms matter; right: "
        f"sequences of n = {L}. **Numbers**: for n = {L}, {near}; best-of-N's win rate minus "
        f"the tilt's at equal KL ranges over [{seqd[0]:.3g}, {seqd[1]:.3g}] (one token: "
        f"[{tok[0]:.3g}, {tok[1]:.3g}]).")
    return Experiment("win_rate", "Win rate against KL", tables, caption,
                      f"win_rate: n={L} BoN within {bound_gap:.2g} of N/(N+1); "
                      f"BoN - tilt at equal KL {seqd[0]:.3g}..{seqd[1]:.3g}",
                      {"token_diff": tok, "sequence_diff": seqd, "bound_gap": bound_gap,
                       "L": L})


# --------------------------------------------------------------------------------------
# 7. one token: every policy family against the two optimal ones
# --------------------------------------------------------------------------------------

def _calibrated_win_rate(lg, rw, kl: np.ndarray) -> np.ndarray:
    """Win rate of the calibrated tilt whose KL is ``kl`` (elementwise; c >= 0 by bisection,
    all targets at once: KL is increasing in c)."""
    kl = np.asarray(kl, dtype=np.float64)

    def kl_at(c):
        return np.asarray(tiltlab.policy_frontier(lg, rw, "calibrated_tilt", c).kl)

    lo, hi = np.zeros_like(kl), np.ones_like(kl)
    for _ in range(40):                           # bracket: KL(hi) >= kl
        short = kl_at(hi) < kl
        if not short.any():
            break
        hi = np.where(short, 2.0 * hi, hi)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        below = kl_at(mid) < kl
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    win = np.asarray(tiltlab.policy_frontier(lg, rw, "calibrated_tilt", hi).win_rate)
    return np.where(kl > 0, win, 0.5)


def policies(ctx: Context) -> Experiment:
    m = ctx.model
    lg, rw = m.logits, m.rewards
    top = float(min(0.9 * ctx.kl_max, 3.0))
    big = math.exp(top + 1.0)
    spread = float(np.ptp(rw[np.isfinite(lg)])) or 1.0
    grids = {
        "tilted": np.asarray(tiltlab.solve_lambda(lg, rw, np.linspace(0.0, top, 40))),
        "calibrated_tilt": np.concatenate([[0.0], np.geomspace(0.05, 400.0, 45)]),
        "best_of_n": np.geomspace(1.0, big, 30),
        "soft_best_of_n": np.concatenate([[np.inf], spread * np.geomspace(30.0, 0.003, 30),
                                          [0.0]]),
        "best_of_poisson": np.concatenate([[0.0], np.geomspace(0.02, big, 30)]),
        "rewind_and_repeat": np.geomspace(1.0, math.exp(-top), 30),
    }
    n_soft = 64.0
    rows = {k: [] for k in ("method", "parameter", "kl", "expected_reward", "win_rate")}
    for method in ctx.progress(list(grids), "policies: exact laws on one token"):
        kw = {"n": n_soft} if method == "soft_best_of_n" else {}
        f = tiltlab.policy_frontier(lg, rw, method, grids[method], **kw)
        keep = f.kl <= 1.02 * top
        rows["method"].extend([method] * int(keep.sum()))
        for k in ("parameter", "kl", "expected_reward", "win_rate"):
            rows[k].extend(np.asarray(getattr(f, k))[keep])
    t = {k: (np.array(v) if k == "method" else _col(v)) for k, v in rows.items()}
    # each row's distance to the optimum at its own KL (the lower panels of the figure,
    # where curves that coincide above come apart): the tilt's reward there exactly
    # (tiltlab.frontier), the calibrated tilt's win rate there with c solved by bisection
    t["reward_below_tilt"] = _col(tiltlab.frontier(lg, rw, t["kl"])) - t["expected_reward"]
    t["win_rate_below_calibrated_tilt"] = _calibrated_win_rate(lg, rw, t["kl"]) - t["win_rate"]
    d = min(ctx.delta, 0.5 * top)

    def at(method):
        """(reward, win rate) of the family's member with KL exactly d: its parameter is
        bracketed by the grid and refined by bisection (KL is monotone in it)."""
        kw = {"n": n_soft} if method == "soft_best_of_n" else {}
        s = t["method"] == method
        kl, par = t["kl"][s], t["parameter"][s]
        above = np.flatnonzero(kl >= d)
        below = np.flatnonzero(kl < d)
        if above.size == 0 or below.size == 0:
            return math.nan, math.nan
        a, b = float(par[below[np.argmax(kl[below])]]), float(par[above[np.argmin(kl[above])]])
        geometric = a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)
        for _ in range(60):
            mid = math.sqrt(a * b) if geometric else 0.5 * (a + b)
            if not math.isfinite(mid) or mid in (a, b):
                break
            f = tiltlab.policy_frontier(lg, rw, method, [mid], **kw)
            if f.kl[0] < d:
                a = mid
            else:
                b = mid
        f = tiltlab.policy_frontier(lg, rw, method, [b], **kw)
        return float(f.expected_reward[0]), float(f.win_rate[0])

    names = [k for k in grids if np.any(t["method"] == k)]
    exact = {k: at(k) for k in names}
    reward = {k: v[0] for k, v in exact.items()}
    win = {k: v[1] for k, v in exact.items()}
    best_r, best_w = reward["tilted"], win["calibrated_tilt"]
    caption = (
        "**Claim** (SPEC 2–3): at a given KL(π‖p) the exponential tilt maximises the expected "
        "reward and the calibrated tilt p·e^{cQ(r)} (Q the mid-CDF of r under p) maximises "
        "the win rate against p; best-of-N is close to win-rate-optimal (Gui et al., arXiv "
        "2406.00832). Every curve is an exact law on one token (no sampling); soft best-of-n "
        f"uses n = {n_soft:g} and sweeps the temperature. Lower panels: each family's "
        "distance below the optimum at its own KL (log scale; the tilt's reward from "
        "tiltlab.frontier, the calibrated tilt's win rate with c solved for that KL), where "
        f"curves that coincide above come apart. **Numbers** at KL = {d:.3g} "
        "(each family's parameter solved for that KL): "
        "reward " + ", ".join(f"{k} {reward[k]:.4g}" for k in names) +
        f" (tilt optimal: {best_r:.4g}); win rate " +
        ", ".join(f"{k} {win[k]:.4f}" for k in names) +
        f" (calibrated tilt optimal: {best_w:.4f}).")
    gap_bon = best_w - win.get("best_of_n", math.nan)
    return Experiment("policies", "Inference-time policies on one token: reward and win rate",
                      {"policies": t}, caption,
                      f"policies: at KL={d:.3g} BoN win rate {gap_bon:.2g} below the optimum; "
                      f"BoN reward {best_r - reward.get('best_of_n', math.nan):.2g} below the tilt",
                      {"kl": d, "reward": reward, "win": win})


# --------------------------------------------------------------------------------------
# 8. a Markov model: does best-of-N still approach the tilt per token, and how fast?
# --------------------------------------------------------------------------------------

#: per-token KL budget of figure 8 when the run does not give one
MARKOV_DELTA = 0.1


def _markov_setup(ctx: Context) -> tuple:
    from tiltlab.app import models

    mm, why = ctx._markov_model, "given"
    if mm is None:
        try:
            mm, why = models.english_letter_bigrams(), "real data"
        except models.MissingDependency as exc:
            mm, why = models.sticky_ternary(), f"english-letters unavailable: {exc}"
    p0 = np.exp(mm.initial_logits)
    if not np.allclose(p0 @ np.exp(mm.transition_logits), p0, rtol=0, atol=1e-12):
        raise ValueError(f"the initial law of Markov model {mm.name!r} is not stationary: "
                         "its memoryless twin (the stationary marginal) would differ at "
                         "every position")
    d = ctx.delta if ctx.delta_given else MARKOV_DELTA
    n0 = min(ctx.sizes.markov_lengths)
    kmax = min(float(mm.sequence(n0).kl_max) / n0,
               float(tiltlab.kl_max(mm.initial_logits, mm.rewards)))
    if not 0 < d < kmax:
        raise ValueError(f"delta must be in (0, {kmax:.6g}) for the Markov model "
                         f"{mm.name!r} of figure 8 (its per-token kl_max at n = {n0}, or its "
                         f"memoryless twin's); got {d}")
    return mm, why, float(d)


def _last_decade_slope(ns: np.ndarray, kl: np.ndarray) -> tuple[float, int]:
    """Slope of ``kl`` against log n between n_max / 10 (or the nearest length above) and
    n_max, and the index of that first length."""
    i0 = int(np.searchsorted(ns, ns[-1] / 10))
    if ns[-1] <= ns[i0]:
        return math.nan, i0
    return float((kl[-1] - kl[i0]) / math.log(ns[-1] / ns[i0])), i0


def markov(ctx: Context) -> Experiment:
    mm, why, d = ctx.markov()
    twin = (mm.initial_logits, mm.rewards)
    kinds = {"markov": lambda n: mm.sequence(n, n_threads=ctx.n_threads),
             "memoryless": lambda n: tiltlab.Memoryless(*twin, n, n_threads=ctx.n_threads)}
    cols = ("model", "n", "delta", "lam", "log_n", "tilt_reward_per_token",
            "best_of_n_reward_per_token", "reward_gap_per_token", "kl_to_p_per_token",
            "kl_deficit_per_token", "kl_to_tilted", "kl_to_tilted_per_token",
            "kl_minus_half_log_n", "reward_variance_per_token")
    rows = {k: [] for k in cols}
    for kind, make in kinds.items():
        for n in ctx.progress(ctx.sizes.markov_lengths, f"Markov vs memoryless: {kind}"):
            s = make(n)
            lam = float(s.solve_lambda(d))
            tilt = s.tilt_stats(lam)
            b = s.best_of_n(log_n=n * d)
            kl = float(b.kl_to_tilted(lam))
            rows["model"].append(kind)
            rows["n"].append(n)
            rows["delta"].append(d)
            rows["lam"].append(lam)
            rows["log_n"].append(n * d)
            rows["tilt_reward_per_token"].append(float(tilt.mean) / n)
            rows["best_of_n_reward_per_token"].append(b.expected_reward / n)
            rows["reward_gap_per_token"].append((float(tilt.mean) - b.expected_reward) / n)
            rows["kl_to_p_per_token"].append(b.kl / n)
            rows["kl_deficit_per_token"].append(d - b.kl / n)
            rows["kl_to_tilted"].append(kl)
            rows["kl_to_tilted_per_token"].append(kl / n)
            rows["kl_minus_half_log_n"].append(kl - 0.5 * math.log(n))
            rows["reward_variance_per_token"].append(float(s.tilt_stats(0.0).variance) / n)
    t = {k: (np.array(v) if k == "model" else _col(v)) for k, v in rows.items()}
    t["n"] = t["n"].astype(np.int64)
    per = {}
    for kind in kinds:
        s = t["model"] == kind
        ns = t["n"][s]
        slope, i0 = _last_decade_slope(ns, t["kl_to_tilted"][s])
        per[kind] = {k: float(t[k][s][-1]) for k in cols if k not in ("model", "n")}
        per[kind].update(slope=slope, n0=int(ns[i0]), n=int(ns[-1]))
    mk, ml = per["markov"], per["memoryless"]
    n_hi, n0 = mk["n"], mk["n0"]
    ratio = mk["kl_to_tilted_per_token"] / ml["kl_to_tilted_per_token"]
    if abs(ratio - 1.0) < 0.005:
        pace = "as fast as its memoryless twin (the same per-token KL to within 0.5 %)"
    else:
        pace = (f"{'slower' if ratio > 1 else 'faster'} than its memoryless twin: its "
                f"per-token KL is {ratio:.3g} times the twin's")
    # from which length on the order of the two per-token KLs is that of the largest n
    sign = np.sign(t["kl_to_tilted"][t["model"] == "markov"]
                   - t["kl_to_tilted"][t["model"] == "memoryless"])
    same = np.flatnonzero(sign != sign[-1])
    n_from = int(t["n"][t["model"] == "markov"][same[-1] + 1 if same.size else 0])
    order = (f"{'larger' if sign[-1] > 0 else 'smaller' if sign[-1] < 0 else 'equal'} at "
             f"every n from {n_from:,} on" if n_from < n_hi else f"only at n = {n_hi:,}")
    notes_order = {"n_from": n_from, "sign": float(sign[-1])}
    dc = mk["kl_minus_half_log_n"] - ml["kl_minus_half_log_n"]
    source = ("estimated from the wordfreq word list" if why == "real data" else
              "built in (synthetic; install the data extra, pip install \"tiltlab[data]\", "
              "for the English-letters model)" if why != "given" else "given to the run")
    caption = (
        "**Claim** (SPEC 4 and 9): for a memoryless model best-of-N with N = e^(nΔ) "
        "approaches the optimal tilt φ_λ per token, KL(π_N‖φ_λ) = ½ log n + O(1) so "
        "KL(π_N‖φ_λ)/n → 0, and the per-token rewards meet; the paper proves it for "
        "memoryless models only. Here the same exact numbers for the Markov model "
        f"**{mm.name}** ({source}; {mm.n_states} states, initial law = its stationary law) "
        "and for its memoryless twin, the memoryless model with the same stationary marginal "
        f"and the same rewards, at Δ = {d:.3g} nats per token (λ solved per model and length: "
        "KL(φ_λ‖p) = nΔ). Left: KL(π_N‖φ_λ)/n (dashed: (½ log n + c)/n, c fitted at the "
        "largest n) and, below, KL(π_N‖φ_λ) − ½ log n. Middle: expected reward per token of "
        "the tilt (lines) and of best-of-N (markers) and, below, their gap. Right: "
        "KL(π_N‖p)/n against Δ and, below, Δ − KL(π_N‖p)/n (dotted: 1/n, its value without "
        f"reward atoms). **Numbers**: at n = {n_hi:,} the per-token KL to the tilt is "
        f"{mk['kl_to_tilted_per_token']:.3g} for the Markov model and "
        f"{ml['kl_to_tilted_per_token']:.3g} for its twin, so the Markov model converges "
        f"{pace} (the Markov model's is the {order}). The slope of KL(π_N‖φ_λ) against "
        f"log n between n = {n0:,} and {n_hi:,} is "
        f"{mk['slope']:.4f} (Markov) and {ml['slope']:.4f} (memoryless; predicted 0.5), "
        f"with c = {mk['kl_minus_half_log_n']:.3f} and {ml['kl_minus_half_log_n']:.3f} "
        f"(difference {dc:+.3f} nats). The per-token reward gap between the tilt and "
        f"best-of-N is {mk['reward_gap_per_token']:.3g} (Markov) and "
        f"{ml['reward_gap_per_token']:.3g} (memoryless); Δ − KL(π_N‖p)/n is "
        f"{mk['kl_deficit_per_token']:.3g} and {ml['kl_deficit_per_token']:.3g}. The two "
        "models do not gain the same reward from the same budget: the tilt's reward per "
        f"token is {mk['tilt_reward_per_token']:.4g} (Markov, λ = {mk['lam']:.4g}) against "
        f"{ml['tilt_reward_per_token']:.4g} (memoryless, λ = {ml['lam']:.4g}), because "
        f"Var_p R/n is {mk['reward_variance_per_token']:.3f} against "
        f"{ml['reward_variance_per_token']:.3f} (the same mean reward per token under p).")
    return Experiment(
        "markov", f"A Markov model ({mm.name}) against its memoryless twin", {"markov": t},
        caption,
        f"markov: {mm.name}, KL(π_N‖φ_λ)/n at n={n_hi}: {mk['kl_to_tilted_per_token']:.3g} "
        f"(Markov) vs {ml['kl_to_tilted_per_token']:.3g} (memoryless), slopes "
        f"{mk['slope']:.3f} / {ml['slope']:.3f}",
        {"model": mm.name, "why": why, "delta": d, "per_model": per, "ratio": ratio,
         **notes_order})


EXPERIMENTS = {
    "frontier": frontier,
    "kl_to_tilt": kl_to_tilt,
    "large_deviations": large_deviations,
    "cumulants": cumulants,
    "samples": samples,
    "win_rate": win_rate,
    "policies": policies,
    "markov": markov,
}
