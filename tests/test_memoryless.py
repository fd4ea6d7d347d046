"""Memoryless sequences (SPEC section 4): the compiled lattice law, sequence best-of-N and
its sampler against the exact NumPy reference, exhaustive enumeration, closed forms
(binomial) and the paper's theorem."""

from __future__ import annotations

import math

import numpy as np
import oracle_seq
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_memoryless_reference import random_model

import tiltlab
from tiltlab import reference as ref

stats = pytest.importorskip("scipy.stats")

TERNARY = (np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0]))


@pytest.fixture(params=["exact", "fft"])
def mode(request, monkeypatch):
    """Small lattices are computed by direct convolutions (exact to rounding); larger ones
    by FFT.  Tests that take this fixture run both paths on the same model."""
    import tiltlab.sequences.memoryless as mm

    if request.param == "fft":
        monkeypatch.setattr(mm, "_EXACT_WORK", 0.0)
    return request.param


# ---------------------------------------------------------------------------------------
# the lattice law
# ---------------------------------------------------------------------------------------
def test_binomial_log_pmf_far_into_both_tails(mode):
    n = 10_000
    m = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], n)
    law = m.reward_log_pmf()
    assert law.resolved.all()
    assert_array_equal(law.values, np.arange(n + 1.0))
    exact = stats.binom.logpmf(np.arange(n + 1), n, 0.3)
    assert exact.min() < -3000 * math.log(10)  # probabilities down to 1e-3000 and beyond
    assert_allclose(law.log_pmf, exact, rtol=1e-10, atol=0)


def test_binomial_with_offset_and_step(mode):
    n = 1000
    m = tiltlab.Memoryless(np.log([0.7, 0.3]), [2.5, 4.0], n)
    assert m.step == 1.5 and m.offset == 2500.0
    law = m.reward_log_pmf()
    assert_allclose(law.values, 2500.0 + 1.5 * np.arange(n + 1))
    assert_allclose(law.log_pmf, stats.binom.logpmf(np.arange(n + 1), n, 0.3), rtol=1e-10)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("stationary", [True, False])
def test_log_pmf_matches_direct_convolution(seed, stationary, mode):
    length = 1 + seed % 9 + (seed // 3) * 7
    logits, rewards = random_model(seed, length, stationary)
    m = tiltlab.Memoryless(logits, rewards, length)
    law = m.reward_log_pmf()
    values, lp = ref.lattice_log_pmf(logits, rewards, length)
    assert_allclose(law.values, values, rtol=1e-13, atol=1e-9)
    assert law.resolved.all()
    assert_array_equal(np.isneginf(law.log_pmf), np.isneginf(lp))
    fin = np.isfinite(lp)
    assert_allclose(law.log_pmf[fin], lp[fin], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("length", [200, 1500])
def test_law_matches_direct_convolution_with_gaps(length, mode):
    # rewards {0, 3, 5}: lattice points near both ends are impossible
    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([0.0, 3.0, 5.0]) * 0.5 - 7.0
    law = tiltlab.Memoryless(logits, rewards, length).reward_log_pmf()
    values, lp = ref.lattice_log_pmf(logits, rewards, length)
    assert_array_equal(np.isneginf(law.log_pmf), np.isneginf(lp))
    assert law.resolved.all()
    fin = np.isfinite(lp)
    assert_allclose(law.log_pmf[fin], lp[fin], rtol=1e-10)


def test_log_pmf_small_cases_equal_enumeration():
    logits, rewards = np.log([0.2, 0.5, 0.3]), np.array([-1.0, 0.5, 2.0])
    law = tiltlab.Memoryless(logits, rewards, 5).reward_log_pmf()
    exact = oracle_seq.enumerate_sequences(logits, rewards, 5)
    got = {round(v, 9): lp for v, lp in zip(law.values, law.log_pmf, strict=True)
           if np.isfinite(lp)}
    assert set(got) == set(exact)
    for v, p in exact.items():
        assert got[v] == pytest.approx(float(np.log(float(p))), rel=1e-13, abs=1e-14)


@pytest.mark.parametrize("lam", [-2.0, 0.4, 3.0])
def test_tilted_log_pmf(lam):
    m = tiltlab.Memoryless(*TERNARY, 300)
    law = m.reward_log_pmf(lam)
    p = np.exp(law.log_pmf)
    st = m.tilt_stats(lam)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p @ law.values == pytest.approx(st.mean, rel=1e-12)
    assert p @ (law.values - st.mean) ** 2 == pytest.approx(st.variance, rel=1e-10)


def test_tilted_log_pmf_infinite_lam():
    m = tiltlab.Memoryless(*TERNARY, 4)
    law = m.reward_log_pmf(np.inf)
    assert law.log_pmf[-1] == 0.0 and np.all(np.isneginf(law.log_pmf[:-1]))


# ---------------------------------------------------------------------------------------
# lattice detection
# ---------------------------------------------------------------------------------------
def test_step_detection_and_quantisation():
    m = tiltlab.Memoryless(np.zeros(4), [0.1, 0.3, 0.7, -0.2], 3)
    assert m.step == pytest.approx(0.1, rel=1e-12)
    assert m.offset == pytest.approx(-0.6)
    assert m.quantisation_error < 1e-15
    assert m.step == pytest.approx(ref.lattice_step([0.1, 0.3, 0.7, -0.2]), rel=1e-12)
    with pytest.raises(ValueError, match="step="):
        tiltlab.Memoryless(np.zeros(3), [0.0, 1.0, math.sqrt(2)], 4)
    q = tiltlab.Memoryless(np.zeros(3), [0.0, 1.0, math.sqrt(2)], 4, step=0.5)
    assert q.step == 0.5
    assert q.quantisation_error == pytest.approx(1.5 - math.sqrt(2))
    # a -inf logit's reward is ignored by the lattice
    m = tiltlab.Memoryless([0.0, 0.0, -np.inf], [0.0, 2.0, math.pi], 3)
    assert m.step == 2.0 and m.r_max == 6.0


# ---------------------------------------------------------------------------------------
# per-token statistics add up
# ---------------------------------------------------------------------------------------
def test_sequence_statistics_are_sums(ternary):
    logits, rewards = ternary
    n = 37
    m = tiltlab.Memoryless(logits, rewards, n)
    tok = tiltlab.tilt_stats(logits, rewards, 0.8)
    seq = m.tilt_stats(0.8)
    for a, b in zip(seq, tok, strict=True):
        assert a == pytest.approx(n * b, rel=1e-14)
    assert_allclose(m.cumulants(6, 0.8), n * tiltlab.cumulants(logits, rewards, 6, 0.8),
                    rtol=1e-13)
    assert_allclose(m.scaled_cumulants(6, 0.8), tiltlab.cumulants(logits, rewards, 6, 0.8),
                    rtol=1e-13)
    assert m.solve_lambda(0.3) == pytest.approx(tiltlab.solve_lambda(logits, rewards, 0.3),
                                                rel=1e-14)
    assert m.kl_max == pytest.approx(n * tiltlab.kl_max(logits, rewards), rel=1e-14)


def test_non_stationary_statistics():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(9, 5))
    rewards = rng.integers(-2, 3, size=(9, 5)).astype(float)
    m = tiltlab.Memoryless(logits, rewards, 9)
    assert not m.stationary
    lam = m.solve_lambda(0.2)
    assert lam == pytest.approx(tiltlab.solve_lambda(logits, rewards, 9 * 0.2, joint=True),
                                rel=1e-13)
    st = m.tilt_stats(lam)
    assert st.kl == pytest.approx(9 * 0.2, rel=1e-12)
    assert_allclose(m.cumulants(4, lam),
                    tiltlab.cumulants(logits, rewards, 4, lam).sum(axis=0), rtol=1e-13)
    # the law's moments are the summed cumulants
    law = m.reward_log_pmf()
    p = np.exp(law.log_pmf)
    k = m.cumulants(3)
    assert p @ law.values == pytest.approx(k[0], rel=1e-12)
    assert p @ (law.values - k[0]) ** 3 == pytest.approx(k[2], rel=1e-9, abs=1e-11)


# ---------------------------------------------------------------------------------------
# sequence best-of-N
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("N", [1, 2, 3])
def test_bon_against_brute_force(seed, N):
    length = 1 + seed % 4 + (seed > 5)
    stationary = seed % 2 == 0
    logits, rewards = random_model(100 + seed, length, stationary)
    m = tiltlab.Memoryless(logits, rewards, length)
    b = m.best_of_n(n=N)
    lam = 0.7
    exact = oracle_seq.brute_force_sequence_bon(logits, rewards, length, N, lam=lam)
    assert b.expected_reward == pytest.approx(float(exact["expected_reward"]), rel=1e-12)
    assert b.kl == pytest.approx(float(exact["kl"]), rel=1e-12, abs=1e-14)
    assert b.kl_to_tilted(lam) == pytest.approx(float(exact["kl_to_tilted"]), rel=1e-12,
                                                abs=1e-13)
    assert b.win_rate == pytest.approx(float(exact["win_rate"]), rel=1e-12)


@pytest.mark.parametrize("length,log_n", [(500, 0.0), (500, 3.0), (2000, 200.0),
                                          (2000, 2000.0), (20, 1e4)])
def test_bon_against_reference(length, log_n, mode):
    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    m = tiltlab.Memoryless(logits, rewards, length)
    b = m.best_of_n(log_n=log_n)
    r = ref.sequence_best_of_n(logits, rewards, length, log_n)
    assert b.expected_reward == pytest.approx(r["expected_reward"], rel=1e-11)
    assert b.kl == pytest.approx(r["kl"], rel=1e-10, abs=1e-13)
    assert b.win_rate == pytest.approx(r["win_rate"], rel=1e-12)
    lam = m.solve_lambda(min(log_n / length, 0.5))
    assert b.kl_to_tilted(lam) == pytest.approx(
        ref.sequence_kl_to_tilted(r, logits, rewards, length, lam), rel=1e-9, abs=1e-10)
    # the law itself where it carries mass
    want = dict(zip(np.round(r["values"], 9), r["log_probs"], strict=True))
    got = b.log_probs > -30
    for v, lp in zip(np.round(b.values[got], 9), b.log_probs[got], strict=True):
        assert lp == pytest.approx(want[v], rel=1e-9, abs=1e-10)


def test_bon_basic_facts(ternary):
    m = tiltlab.Memoryless(*ternary, 100)
    b1 = m.best_of_n(n=1)
    assert b1.kl == 0.0 and b1.win_rate == pytest.approx(0.5, abs=1e-15)
    assert b1.expected_reward == pytest.approx(100 * 0.9, rel=1e-14)
    prev = b1
    for ln in [0.5, 5.0, 50.0, 150.0]:
        b = m.best_of_n(log_n=ln)
        assert b.kl <= b.kl_bound + 1e-12
        assert b.win_rate <= b.win_rate_bound + 1e-15
        assert b.expected_reward > prev.expected_reward and b.kl > prev.kl
        assert b.total_mass == pytest.approx(1.0, abs=1e-12)
        prev = b
    # beyond kl_max: everything on the top value
    top = m.best_of_n(log_n=10 * m.kl_max)
    assert top.expected_reward == m.r_max
    assert top.kl == pytest.approx(m.kl_max, rel=1e-14)
    assert top.kl_to_tilted(np.inf) == 0.0
    assert m.best_of_n(log_n=5.0).kl_to_tilted(np.inf) == np.inf


def test_bon_large_sizes_are_ordinary():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50)
    rewards = rng.integers(0, 101, size=50).astype(float)
    n = 100_000
    m = tiltlab.Memoryless(logits, rewards, n)
    b = m.best_of_n(log_n=0.3 * n)  # N = e^30000
    lam = m.solve_lambda(0.3)
    st = m.tilt_stats(lam)
    assert b.total_mass == pytest.approx(1.0, abs=1e-11)
    assert b.kl / n == pytest.approx(0.3, abs=1e-4)
    assert abs(b.expected_reward / n - st.mean / n) < 3e-3
    # the second-order prediction n mean - log(n) / (2 lam) is within O(1)
    assert abs(b.expected_reward - m.asymptotics(0.3).expected_reward) < 1.0
    gap = b.kl_to_tilted(lam) - 0.5 * math.log(n)
    assert -3 < gap < 1


@pytest.mark.parametrize("logits,rewards,length,log_n", [
    ([0.0, -40.0, -60.0], [0.0, 1.0, 10.0], 200, 100.0),
    ([0.0, -56.0, -44.0], [0.0, 26.0, 1.0], 32, 195.0),
    ([0.0, -31.5, -40.0, -47.0], [0.0, 19.0, 7.0, 31.0], 41, 18.5),
])
def test_bon_with_a_rare_sub_lattice(logits, rewards, length, log_n, monkeypatch):
    # A rare token off the dominant sub-lattice puts heavy best-of-N weight on points
    # that are ~1e-17 of every tilt's peak: exact (direct) convolution gets them right,
    # the FFT path cannot and says so.
    import tiltlab.sequences.memoryless as mm

    lg, rw = np.array(logits), np.array(rewards)
    r = ref.sequence_best_of_n(lg, rw, length, log_n)
    b = tiltlab.Memoryless(lg, rw, length).best_of_n(log_n=log_n)
    assert b.unresolved_weight == 0.0
    assert b.kl == pytest.approx(r["kl"], rel=1e-11)
    assert b.expected_reward == pytest.approx(r["expected_reward"], rel=1e-12)
    monkeypatch.setattr(mm, "_EXACT_WORK", 0.0)
    m = tiltlab.Memoryless(lg, rw, length)
    with pytest.warns(RuntimeWarning, match="unresolved|resolve"):
        b = m.best_of_n(log_n=log_n)
    assert b.unresolved_weight > 1e-10
    assert np.isnan(m.reward_log_pmf().log_pmf).any()  # honest: NaN, not a wrong number


@pytest.mark.parametrize("logits,rewards", [([0.0], [5.0]), ([0.0, -np.inf, -np.inf], [1, 2, 3]),
                                            (np.log([0.7, 0.3]), [0.0, 0.0])])
def test_single_lattice_point(logits, rewards):
    m = tiltlab.Memoryless(logits, rewards, 5)
    assert m.n_lattice == 1
    b = m.best_of_n(log_n=0.5)
    assert b.kl == 0.0 and b.win_rate == 0.5 and b.expected_reward == m.r_min
    assert b.sample_rewards(3, rng=0).tolist() == [m.r_min] * 3
    assert b.sample(2, rng=0).shape == (2, 5)
    assert m.reward_log_pmf().log_pmf.tolist() == [0.0]


@pytest.mark.parametrize("scale", [1e155, 1e-160, 1e6])
def test_best_of_n_depends_on_the_order_of_rewards_only(scale):
    m = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, scale], 30)
    b = m.best_of_n(log_n=3.0)
    b1 = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], 30).best_of_n(log_n=3.0)
    assert b.kl == pytest.approx(b1.kl, rel=1e-13)
    assert b.win_rate == pytest.approx(b1.win_rate, rel=1e-13)
    assert b.expected_reward == pytest.approx(scale * b1.expected_reward, rel=1e-13)


def test_step_is_reduced_to_the_coarsest_lattice():
    m = tiltlab.Memoryless(np.log([0.5, 0.3, 0.2]), [0.0, 0.5, 1.0], 20, step=1e-6)
    assert m.step == pytest.approx(0.5) and m.n_lattice == 41


def test_sampler_is_thread_independent_on_many_draws():
    b = tiltlab.Memoryless(*TERNARY, 16).best_of_n(log_n=4.8)
    assert_array_equal(b.sample(200_000, rng=8, n_threads=1),
                       b.sample(200_000, rng=8, n_threads=2))


# ---------------------------------------------------------------------------------------
# the theorem (and the second-order refinement)
# ---------------------------------------------------------------------------------------
def convergence_table(delta=0.3, ns=(10, 100, 1000, 10_000)):
    logits, rewards = TERNARY
    rows = []
    for n in ns:
        m = tiltlab.Memoryless(logits, rewards, n)
        lam = m.solve_lambda(delta)
        b = m.best_of_n(log_n=n * delta)
        rows.append((n, b.expected_reward / n, b.kl_to_tilted(lam) / n,
                     b.kl_to_tilted(lam) - 0.5 * math.log(n),
                     m.tilt_stats(lam).mean - b.expected_reward, lam,
                     float(tiltlab.tilt_stats(logits, rewards, lam).mean)))
    return rows


def test_theorem_convergence_ternary():
    rows = convergence_table()
    mean_lam = rows[0][6]
    err = [abs(r[1] - mean_lam) for r in rows]
    kl_tok = [r[2] for r in rows]
    assert all(a > b for a, b in zip(err, err[1:], strict=False))
    assert all(a > b for a, b in zip(kl_tok, kl_tok[1:], strict=False))
    assert err[-1] < 1e-3 and kl_tok[-1] < 1e-3
    # second order: slopes in log n between n = 10^3 and 10^4
    lam = rows[0][5]
    dlog = math.log(10)
    kl_slope = (rows[3][2] * 1e4 - rows[2][2] * 1e3) / dlog
    er_slope = (rows[3][4] - rows[2][4]) / dlog
    assert abs(kl_slope - 0.5) < 0.05
    assert abs(er_slope - 1 / (2 * lam)) < 0.05
    a = tiltlab.Memoryless(*TERNARY, 10_000).asymptotics(0.3)
    assert a.lam == pytest.approx(lam) and a.reward_per_token == pytest.approx(mean_lam)
    assert a.kl_to_tilted == pytest.approx(0.5 * math.log(1e4))
    assert a.expected_reward == pytest.approx(1e4 * mean_lam - math.log(1e4) / (2 * lam))
    assert len(a.labels()) == 5


@pytest.mark.parametrize("x", [0.1, 0.5])
def test_large_deviations_of_the_exact_law(x):
    # -(1/n) log P(R/n beyond x) -> I(x), with the Bahadur-Rao correction (1/2) log(n) / n:
    # n (excess over I) - (1/2) log n settles to a constant
    logits, rewards = np.log([0.7, 0.3]), np.array([0.0, 1.0])
    out = []
    for n in (1000, 10_000):
        m = tiltlab.Memoryless(logits, rewards, n)
        law = m.reward_log_pmf()
        tail = law.values >= n * x if x > 0.3 else law.values <= n * x
        excess = -np.logaddexp.reduce(law.log_pmf[tail]) / n - m.rate_function(x)
        assert 0 < excess < math.log(n) / n
        out.append(n * excess - 0.5 * math.log(n))
    assert abs(out[1] - out[0]) < 0.01


# ---------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------
def _chi2_pvalue(counts, probs):
    keep = probs * counts.sum() >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(probs[keep], probs[~keep].sum()) * counts.sum()
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def test_sample_rewards_follow_the_exact_law():
    m = tiltlab.Memoryless(*TERNARY, 60)
    b = m.best_of_n(log_n=12.0)
    r = b.sample_rewards(200_000, rng=7)
    idx = np.rint((r - b.values[0]) / m.step).astype(int)
    counts = np.bincount(idx, minlength=b.values.size)
    assert _chi2_pvalue(counts, np.exp(b.log_probs)) > 1e-4
    assert isinstance(b.sample_rewards(rng=1), float)
    assert_array_equal(b.sample_rewards(1000, rng=3), b.sample_rewards(1000, rng=3))


@pytest.mark.parametrize("stationary", [True, False])
def test_sequence_sampler_reward_law(stationary):
    rng = np.random.default_rng(5)
    n = 40
    logits = rng.normal(size=(1 if stationary else n, 4))
    rewards = rng.integers(0, 4, size=(1 if stationary else n, 4)).astype(float)
    if stationary:
        logits, rewards = logits[0], rewards[0]
    m = tiltlab.Memoryless(logits, rewards, n)
    b = m.best_of_n(n=5.0)
    y = b.sample(40_000, rng=11)
    assert y.shape == (40_000, n) and y.dtype == np.int32
    R = np.take_along_axis(np.broadcast_to(rewards, (n, 4)), y.T.astype(np.intp), axis=1)
    R = R.sum(axis=0)
    idx = np.rint((R - b.values[0]) / m.step).astype(int)
    counts = np.bincount(idx, minlength=b.values.size)
    assert counts.size == b.values.size
    assert _chi2_pvalue(counts, np.exp(b.log_probs)) > 1e-4


def test_sequence_sampler_conditional_token_counts():
    # given R, the tokens follow p^n conditioned on R: compare the law of the first
    # two positions' tokens given R with enumeration
    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    n = 4
    m = tiltlab.Memoryless(logits, rewards, n)
    b = m.best_of_n(n=3)
    y = b.sample(100_000, rng=3)
    R = rewards[y].sum(axis=1)
    p = np.exp(logits)
    import itertools
    for target in (4.0, 6.0):
        sel = y[R == target]
        # exact conditional law of (y_0, y_3) given R = target
        joint = np.zeros((3, 3))
        for seq in itertools.product(range(3), repeat=n):
            if rewards[list(seq)].sum() == target:
                joint[seq[0], seq[3]] += np.prod(p[list(seq)])
        joint /= joint.sum()
        counts = np.zeros((3, 3))
        np.add.at(counts, (sel[:, 0], sel[:, 3]), 1)
        assert _chi2_pvalue(counts.ravel(), joint.ravel()) > 1e-4


def test_sequence_sampler_token_counts_given_the_reward():
    # given R, the vector of token counts is multinomial(n, p) conditioned on R
    import itertools
    from math import factorial

    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    n = 6
    b = tiltlab.Memoryless(logits, rewards, n).best_of_n(n=2.5)
    y = b.sample(200_000, rng=12)
    counts = np.stack([(y == t).sum(axis=1) for t in range(3)], axis=1)
    R = counts @ rewards
    p = np.exp(logits)
    for target in (3.0, 5.0, 7.0):
        cells = [c for c in itertools.product(range(n + 1), repeat=3)
                 if sum(c) == n and np.dot(c, rewards) == target]
        w = np.array([factorial(n) / np.prod([factorial(k) for k in c]) * np.prod(p ** c)
                      for c in cells])
        sel = counts[R == target]
        obs = np.array([np.all(sel == c, axis=1).sum() for c in cells])
        assert obs.sum() == sel.shape[0] > 1000
        assert _chi2_pvalue(obs, w / w.sum()) > 1e-4


def test_sequence_sampler_threads_and_seeds(mode):
    rng = np.random.default_rng(1)
    m = tiltlab.Memoryless(rng.normal(size=20), rng.integers(0, 30, size=20), 300)
    b = m.best_of_n(log_n=30.0)
    a1 = b.sample(500, rng=9, n_threads=1)
    a2 = b.sample(500, rng=9, n_threads=2)
    assert_array_equal(a1, a2)
    assert not np.array_equal(a1, b.sample(500, rng=10))
    assert_array_equal(b.sample_rewards(70_000, rng=4, n_threads=1),
                       b.sample_rewards(70_000, rng=4, n_threads=2))
    assert b.sample(rng=1).shape == (300,)
    assert b.sample(0, rng=1).shape == (0, 300)


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,kwargs,match", [
    ((np.zeros(3), [0, 1, 2], 0), {}, "length"),
    ((np.zeros(3), [0, 1, 2], 2.5), {}, "length"),
    ((np.zeros((3, 3)), [0, 1, 2], 4), {}, "rows"),
    ((np.zeros(3), [0, 1], 4), {}, "outcomes"),
    (([0.0, np.nan], [0, 1], 4), {}, "NaN"),
    (([0.0, 0.0], [0, np.inf], 4), {}, "rewards"),
    (([-np.inf, -np.inf], [0, 1], 4), {}, "all -inf"),
    ((np.zeros(2), [0, 1], 4), {"step": -1.0}, "step"),
    ((np.zeros(2), [0, 1], 4), {"step": 1e-12}, "coarser step"),
    ((np.zeros((2, 2, 2)), [0, 1], 4), {}, "shape"),
    (([], [], 3), {}, "no outcomes"),
    ((np.zeros(2), [0, 1], 10**20), {}, "length"),
    ((np.zeros(2), [0, 1], 4), {"step": 5e-324}, "step"),
])
def test_bad_input(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tiltlab.Memoryless(*args, **kwargs)


def test_bad_bon_arguments(ternary):
    m = tiltlab.Memoryless(*ternary, 5)
    with pytest.raises(ValueError, match="exactly one"):
        m.best_of_n(n=2, log_n=1.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        m.best_of_n(n=0.5)
    with pytest.raises(ValueError, match="log_n"):
        m.best_of_n(log_n=-1.0)
    with pytest.raises(ValueError, match="scalar"):
        m.best_of_n(n=[2, 3])
    with pytest.raises(ValueError, match="delta"):
        m.solve_lambda(-0.1)
    with pytest.raises(ValueError, match="lam"):
        m.reward_log_pmf([1.0, 2.0])
    with pytest.raises(ValueError, match="delta"):
        m.asymptotics([0.1, 0.2])
    b = m.best_of_n(n=2)
    with pytest.raises(ValueError, match="size"):
        b.sample(-1)
    with pytest.raises(TypeError, match="size"):
        b.sample_rewards(2.5)


def test_dtypes_views_and_read_only_inputs():
    want = tiltlab.Memoryless(*TERNARY, 50).best_of_n(n=4).kl
    big = np.zeros((50, 6))
    big[:, ::2] = TERNARY[0]
    view = big[:, ::2]
    view.flags.writeable = False
    r = np.array([0, 1, 3], dtype=np.int64)
    assert tiltlab.Memoryless(view, r, 50).best_of_n(n=4).kl == pytest.approx(want, rel=1e-14)
    f32 = tiltlab.Memoryless(TERNARY[0].astype(np.float32), r, 50).best_of_n(n=4).kl
    assert f32 == pytest.approx(want, rel=1e-6)
    with pytest.raises(TypeError, match="logits"):
        tiltlab.Memoryless(np.array(["a", "b"]), [0, 1], 3)
    with pytest.raises(TypeError, match="real"):
        tiltlab.Memoryless(np.array([1 + 1j, 2]), [0, 1], 3)
    m = tiltlab.Memoryless([0.0, 0.0], [0, 1], 3)
    for call, name in ((lambda: m.best_of_n(n=np.nan), "n"),
                       (lambda: m.rate_function(np.nan), "x"),
                       (lambda: m.best_of_n(n=2).kl_to_tilted(np.nan), "lam")):
        with pytest.raises(ValueError, match=name):
            call()
