"""Best-of-N on finite outcome sets (SPEC section 3): brute force, oracle tables, bounds
and invariances, extreme N against mpmath, and the samplers against the exact law."""

from __future__ import annotations

import itertools

import mpmath as mp
import numpy as np
import oracle
import pytest
from conftest import rows
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref

stats = pytest.importorskip("scipy.stats")


def brute_force(p, r, n):
    """Law of the first maximum among n iid draws, by enumerating all n-tuples."""
    law = np.zeros(len(p))
    for tup in itertools.product(range(len(p)), repeat=n):
        prob = np.prod([p[i] for i in tup])
        if prob == 0:
            continue
        best = tup[int(np.argmax([r[i] for i in tup]))]
        law[best] += prob
    return law


def metrics_of(law, p, r):
    support = law > 0
    kl = np.sum(law[support] * np.log(law[support] / p[support]))
    less = (r[:, None] > r[None, :]).astype(float)
    equal = (r[:, None] == r[None, :]).astype(float)
    win = law @ (less + equal / 2) @ p
    return kl, law @ r, win


# ---------------------------------------------------------------- brute force


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_whole_law_matches_brute_force(n, seed):
    rng = np.random.default_rng(seed)
    v = int(rng.integers(2, 6))
    logits = rng.normal(size=v)
    if seed == 3:
        logits[1] = -np.inf  # impossible outcome
    rewards = rng.integers(0, 3, size=v).astype(float)  # ties included
    p = np.exp(logits - tiltlab.logsumexp(logits, axis=-1))
    law = brute_force(p, rewards, n)
    b = tiltlab.best_of_n(logits, rewards, n=n)
    assert_allclose(np.exp(b.log_probs), law, rtol=0, atol=1e-14)
    kl, er, win = metrics_of(law, p, rewards)
    assert_allclose([b.kl, b.expected_reward, b.win_rate], [kl, er, win], rtol=1e-13,
                    atol=1e-15)


# ---------------------------------------------------------------- SPEC 8 tables


def test_uniform_tables():
    two = tiltlab.best_of_n(np.zeros(2), [0.0, 1.0], n=[2, 4, 16])
    assert_allclose(two.kl, [0.1308120359, 0.4593555219, 0.6929626965], atol=5e-11)
    assert_allclose(two.win_rate[:2], [0.625, 0.71875], rtol=1e-15)
    ten = tiltlab.best_of_n(np.zeros(10), np.arange(10.0), n=[2, 16, 1000])
    assert_allclose(ten.kl, [0.1893181949, 1.7330632293, 2.3025850930], atol=5e-11)


def test_bernoulli_and_closed_forms():
    p1 = 0.3
    logits, rewards = np.log([1 - p1, p1]), np.array([0.0, 1.0])
    n = np.array([1.0, 2.0, 2.5, 7.0, 1000.0])
    b = tiltlab.best_of_n(logits, rewards, n=n)
    bottom = (1 - p1) ** n  # P(max = 0)
    top = -np.expm1(n * np.log1p(-p1))  # P(max = 1)
    assert_allclose(b.expected_reward, top, rtol=1e-14)
    assert_allclose(np.exp(b.log_probs[:, 1]), top, rtol=1e-14)
    assert_allclose(np.exp(b.log_probs[:, 0]), bottom, rtol=1e-12)
    kl = bottom * np.log(bottom / (1 - p1)) + top * np.log(top / p1)
    assert_allclose(b.kl, kl, rtol=1e-12, atol=1e-16)


def test_real_n_interpolates_f_to_the_n():
    L = 7
    b = tiltlab.best_of_n(np.zeros(L), np.arange(float(L)), n=2.5)
    cdf = np.arange(1, L + 1) / L
    w = cdf**2.5 - np.append(0, cdf[:-1]) ** 2.5
    assert_allclose(np.exp(b.log_probs), w, rtol=1e-13)


def test_continuous_limit_reaches_the_bounds():
    v = 200_000
    rng = np.random.default_rng(0)
    b = tiltlab.best_of_n(rng.normal(size=v), rng.normal(size=v), n=[2, 16, 1000])
    assert_allclose(b.kl, b.kl_bound, rtol=1e-3)
    assert_allclose(b.kl_bound[1], 1.8350887222, atol=5e-11)
    assert_allclose(b.win_rate, b.win_rate_bound, rtol=1e-4)
    assert_allclose(b.win_rate_bound, [2 / 3, 16 / 17, 1000 / 1001], rtol=1e-15)


# ---------------------------------------------------------------- properties


@given(rows(max_rows=3, logit_scale=5.0), st.floats(0.0, 12.0))
def test_bounds_hold(data, log_n):
    logits, rewards = data
    b = tiltlab.best_of_n(logits, rewards, log_n=log_n)
    assert np.all(b.kl <= b.kl_bound + 1e-12)
    assert np.all(b.win_rate <= b.win_rate_bound + 1e-12)
    assert np.all(b.kl >= 0)
    assert_allclose(tiltlab.logsumexp(b.log_probs, axis=-1), 0.0, atol=1e-13)


@given(rows(max_rows=3, logit_scale=5.0))
def test_n_equal_one_is_p(data):
    logits, rewards = data
    b = tiltlab.best_of_n(logits, rewards, n=1)
    log_p = logits - tiltlab.logsumexp(logits, axis=-1)[:, None]
    fin = np.isfinite(log_p)
    assert_array_equal(np.isfinite(b.log_probs), fin)
    assert_allclose(b.log_probs[fin], log_p[fin], atol=1e-13)
    assert np.all(np.abs(b.kl) <= 1e-15)
    assert_allclose(b.win_rate, 0.5, atol=1e-15)


@given(rows(max_rows=2, logit_scale=3.0), st.floats(0.0, 30.0))
def test_law_depends_on_reward_order_only(data, log_n):
    logits, _ = data
    rng = np.random.default_rng(int(log_n * 1000))
    rewards = rng.integers(-3, 4, size=logits.shape).astype(float)
    base = tiltlab.best_of_n(logits, rewards, log_n=log_n)
    for transformed in (np.exp(rewards / 3), 7 * rewards + 100, rewards**3 + 0.5 * rewards):
        other = tiltlab.best_of_n(logits, transformed, log_n=log_n)
        assert_array_equal(other.log_probs, base.log_probs)
        assert_array_equal(other.kl, base.kl)
        assert_array_equal(other.win_rate, base.win_rate)


@given(rows(max_rows=3, logit_scale=5.0), st.floats(0.0, 40.0))
def test_matches_reference(data, log_n):
    logits, rewards = data
    got = tiltlab.best_of_n(logits, rewards, log_n=log_n)
    want = ref.best_of_n(logits, rewards, log_n)
    assert_allclose(want["total_mass"], 1.0, atol=1e-13)
    for key in ("kl", "expected_reward", "win_rate"):
        scale = 1 + np.abs(rewards).max() if key == "expected_reward" else 1.0
        assert_allclose(getattr(got, key), want[key], rtol=1e-12, atol=1e-13 * scale)
    fin = np.isfinite(want["log_probs"])
    assert_array_equal(np.isfinite(got.log_probs), fin)
    assert_allclose(np.exp(got.log_probs), np.exp(want["log_probs"]), atol=1e-13)


def test_monotone_in_n():
    rng = np.random.default_rng(2)
    logits, rewards = rng.normal(size=40), rng.integers(0, 6, size=40).astype(float)
    b = tiltlab.best_of_n(logits, rewards, log_n=np.linspace(0, 20, 41))
    assert np.all(np.diff(b.kl) >= -1e-14)
    assert np.all(np.diff(b.expected_reward) >= -1e-14)
    assert np.all(np.diff(b.win_rate) >= -1e-14)
    # the limit N -> inf: p restricted to the argmax set
    top = tiltlab.best_of_n(logits, rewards, log_n=np.inf)
    assert_allclose(top.kl, tiltlab.kl_max(logits, rewards), rtol=1e-14)
    assert top.expected_reward == rewards.max()


def test_broadcasting_over_n_and_rows():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 1, 12))
    rewards = rng.integers(0, 4, size=(12,)).astype(float)
    n = np.array([1.0, 5.0, 50.0, 1e6])
    b = tiltlab.best_of_n(logits, rewards, n=n)
    assert b.kl.shape == (3, 4) and b.log_probs.shape == (3, 4, 12)
    for i in range(3):
        for k in range(4):
            single = tiltlab.best_of_n(logits[i, 0], rewards, n=n[k])
            assert single.kl == b.kl[i, k]
            assert_array_equal(single.log_probs, b.log_probs[i, k])


def test_reward_levels():
    lv = tiltlab.reward_levels([np.log(0.2), np.log(0.5), np.log(0.3), -np.inf],
                               [1.0, -0.0, 1.0, 5.0])
    assert_array_equal(lv.values, [0.0, 1.0])  # -0.0 == 0.0; p = 0 outcome excluded
    assert_allclose(np.exp(lv.log_masses), [0.5, 0.5], rtol=1e-15)
    batch = tiltlab.reward_levels(np.zeros((2, 3)), [[0.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    assert len(batch) == 2 and len(batch[1].values) == 1
    rv, rl = ref.reward_levels(np.log([0.2, 0.5, 0.3]), [1.0, 0.0, 1.0])
    assert_allclose(rl, tiltlab.reward_levels(np.log([0.2, 0.5, 0.3]), [1.0, 0.0, 1.0])[1])


def test_kl_to_tilted_closeness_identity():
    rng = np.random.default_rng(5)
    logits, rewards = rng.normal(size=30), rng.normal(size=30)
    b = tiltlab.best_of_n(logits, rewards, n=[3.0, 40.0])
    for lam in (0.0, 0.7, 3.0, -1.0):
        direct = tiltlab.kl_divergence(b.log_probs, tiltlab.tilt(logits, rewards, lam))
        assert_allclose(b.kl_to_tilted(lam), direct, rtol=1e-10, atol=1e-13)
    assert np.all(np.isinf(b.kl_to_tilted(np.inf)))
    top = tiltlab.best_of_n(logits, rewards, log_n=np.inf)
    assert top.kl_to_tilted(np.inf) == 0.0


# ---------------------------------------------------------------- extreme N


def test_extreme_n_on_a_million_outcomes():
    rng = np.random.default_rng(11)
    v = 1_000_000
    logits = rng.normal(size=v) * 3
    rewards = rng.normal(size=v)
    rewards[rng.integers(0, v, 1000)] = 0.25  # some ties
    log_n = np.array([0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5])
    b = tiltlab.best_of_n(logits, rewards, log_n=log_n)
    total = np.exp(tiltlab.logsumexp(b.log_probs, axis=-1)) - 1
    assert np.all(np.abs(total) <= 1e-14), total
    # the level weights summed by the metrics kernel (no log-probs): compensated sums
    from tiltlab import _validation
    from tiltlab.bestofn import _run_law

    metrics, _ = _run_law(_validation.prepare_rows(logits, rewards, {"log_n": log_n}), False,
                          None)
    assert np.all(np.abs(metrics[:, 3] - 1) <= 1e-14), metrics[:, 3] - 1
    assert np.all(np.isfinite(b.kl)) and np.all(np.isfinite(b.expected_reward))
    assert not np.any(np.isnan(b.log_probs))
    assert np.all(np.diff(b.kl) >= -1e-12)
    assert np.all(b.kl <= b.kl_bound + 1e-12)


@pytest.mark.parametrize("case", range(6))
def test_extreme_n_against_mpmath(case):
    rng = np.random.default_rng(100 + case)
    v = int(rng.integers(3, 7))
    # a tail of tiny masses where the maximum of e^500 draws lives
    logits = np.sort(rng.normal(size=v))[::-1] * 2
    logits[-2:] -= [480.0, 505.0]
    rewards = np.arange(float(v))
    if case % 2:
        rewards[1] = rewards[0]  # a tie
    log_n = 500.0
    logp, kl, er, win = oracle.best_of_n(logits, rewards, log_n)
    b = tiltlab.best_of_n(logits, rewards, log_n=log_n)
    assert_allclose(b.kl, float(kl), rtol=1e-12)
    assert_allclose(b.expected_reward, float(er), rtol=1e-13)
    assert_allclose(b.win_rate, float(win), rtol=1e-13)
    for got, want in zip(b.log_probs, logp, strict=True):
        if want == -mp.inf or float(want) < -700:
            assert got == -np.inf or got < -690
        else:
            assert_allclose(got, float(want), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- samplers


def _chi2_pvalue(counts, probs):
    expected = probs * counts.sum()
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp_ = np.append(expected[keep], expected[~keep].sum())
    if exp_[-1] < 5:
        obs[-2] += obs[-1]
        exp_[-2] += exp_[-1]
        obs, exp_ = obs[:-1], exp_[:-1]
    if len(obs) == 1:  # the law sits (to < 5 / draws) on a few outcomes: all draws there
        return 1.0 if counts[~keep].sum() == 0 else 0.0
    return stats.chisquare(obs, exp_).pvalue


MODEL = (np.log([0.3, 0.2, 0.15, 0.15, 0.1, 0.06, 0.04]),
         np.array([0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0]))


@pytest.mark.parametrize("log_n", [0.0, np.log(7), np.log(1000), 50.0])
def test_order_statistic_sampler_matches_the_exact_law(log_n):
    logits, rewards = MODEL
    draws = tiltlab.sample_best_of_n(logits, rewards, log_n=log_n, size=1_000_000, rng=7)
    law = np.exp(tiltlab.best_of_n(logits, rewards, log_n=log_n).log_probs)
    counts = np.bincount(draws, minlength=len(logits))
    assert _chi2_pvalue(counts, law) > 1e-4


@pytest.mark.parametrize("n,size", [(1, 1_000_000), (7, 1_000_000), (1000, 20_000)])
def test_naive_sampler_matches_the_exact_law_and_the_order_statistic(n, size):
    logits, rewards = MODEL
    naive = tiltlab.simulate_best_of_n(logits, rewards, n, size=size, rng=3)
    law = np.exp(tiltlab.best_of_n(logits, rewards, n=n).log_probs)
    counts = np.bincount(naive, minlength=len(logits))
    assert _chi2_pvalue(counts, law) > 1e-4
    exact = tiltlab.sample_best_of_n(logits, rewards, n=n, size=size, rng=4)
    table = np.array([counts, np.bincount(exact, minlength=len(logits))])
    table = table[:, table.sum(axis=0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-4


def test_naive_sampler_against_numpy_choice_reference():
    logits, rewards = MODEL
    a = tiltlab.simulate_best_of_n(logits, rewards, 5, size=200_000, rng=1)
    b = ref.simulate_best_of_n(logits, rewards, 5, 200_000, 2)
    table = np.array([np.bincount(a, minlength=7), np.bincount(b, minlength=7)])
    assert stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue > 1e-4
    c = ref.sample_best_of_n(logits, rewards, np.log(5), 200_000, 3)
    law = np.exp(tiltlab.best_of_n(logits, rewards, n=5).log_probs)
    assert _chi2_pvalue(np.bincount(c, minlength=7), law) > 1e-4


def test_same_seed_same_draws_for_any_thread_count():
    rng = np.random.default_rng(0)
    logits, rewards = rng.normal(size=(2, 500)), rng.integers(0, 20, size=(2, 500)).astype(float)
    for sampler, kw in ((tiltlab.sample_best_of_n, {"log_n": 30.0}),
                        (tiltlab.simulate_best_of_n, {"n": 9})):
        one = sampler(logits, rewards, size=200_000, rng=42, n_threads=1, **kw)
        two = sampler(logits, rewards, size=200_000, rng=42, n_threads=2, **kw)
        assert_array_equal(one, two)
        assert one.shape == (2, 200_000)
        other = sampler(logits, rewards, size=1000, rng=43, **kw)
        assert not np.array_equal(one[:, :1000], other)


def test_rng_argument_forms_and_shapes():
    logits, rewards = MODEL
    a = tiltlab.sample_best_of_n(logits, rewards, n=3, size=10, rng=5)
    b = tiltlab.sample_best_of_n(logits, rewards, n=3, size=10, rng=np.random.default_rng(5))
    assert_array_equal(a, b)
    c = tiltlab.sample_best_of_n(logits, rewards, n=3, size=10, rng=None)
    assert c.shape == (10,) and c.dtype == np.int64
    one = tiltlab.sample_best_of_n(logits, rewards, n=3, rng=1)
    assert np.ndim(one) == 0
    assert tiltlab.sample_best_of_n(logits, rewards, n=3, size=0, rng=1).shape == (0,)
    res = tiltlab.best_of_n(logits, rewards, n=3)
    assert res.sample(5, rng=5).shape == (5,)
    # support only: impossible outcomes are never drawn
    lg = logits.copy()
    lg[-1] = -np.inf
    y = tiltlab.sample_best_of_n(lg, rewards, log_n=20, size=10_000, rng=0)
    assert not np.any(y == len(lg) - 1)


# ---------------------------------------------------------------- Beirami et al.


def test_beirami_estimate():
    n = np.array([2.0, 16.0, 1000.0])
    assert_allclose(tiltlab.beirami_kl_estimate(1e-14, n), n * 0 + np.log(n) - (n - 1) / n,
                    rtol=1e-9)
    assert tiltlab.beirami_kl_estimate(1.0, 5.0) == 0.0
    # exact for a reward law continuous except for one top atom of mass eps
    v = 100_000
    eps = 0.05
    logits = np.log(np.append(np.full(v, (1 - eps) / v), eps))
    rewards = np.arange(v + 1.0)
    exact = tiltlab.best_of_n(logits, rewards, n=n).kl
    assert_allclose(tiltlab.beirami_kl_estimate(eps, n), exact, rtol=2e-4)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("call,exc,match", [
    (lambda: tiltlab.best_of_n(*MODEL, n=0.5), ValueError, "n must be >= 1"),
    (lambda: tiltlab.best_of_n(*MODEL, n=2, log_n=1.0), ValueError, "both were given"),
    (lambda: tiltlab.best_of_n(*MODEL), ValueError, "exactly one of n"),
    (lambda: tiltlab.best_of_n(*MODEL, log_n=-1.0), ValueError, "log_n must be >= 0"),
    (lambda: tiltlab.best_of_n(*MODEL, n=np.nan), ValueError, "n contains NaN"),
    (lambda: tiltlab.simulate_best_of_n(*MODEL, 2.5), ValueError, "must be an integer"),
    (lambda: tiltlab.simulate_best_of_n(*MODEL, 0), ValueError, "n must be >= 1"),
    (lambda: tiltlab.simulate_best_of_n(*MODEL, np.inf), ValueError, "n contains"),
    (lambda: tiltlab.sample_best_of_n(*MODEL, n=2, size=-1), ValueError, "size must be >= 0"),
    (lambda: tiltlab.sample_best_of_n(*MODEL, n=2, size=2.0), TypeError, "size must be"),
    (lambda: tiltlab.best_of_n(MODEL[0], MODEL[1][:3], n=2), ValueError, "rewards has 3"),
    (lambda: tiltlab.best_of_n(MODEL[0], np.append(MODEL[1][:-1], np.nan), n=2), ValueError,
     "rewards contains NaN"),
    (lambda: tiltlab.sample_best_of_n(np.full(3, -np.inf), [0, 1, 2], n=2), ValueError,
     "all -inf"),
    (lambda: tiltlab.beirami_kl_estimate(0.0, 3), ValueError, "eps must be in"),
    (lambda: tiltlab.reward_levels([0.0, np.nan], [0.0, 1.0]), ValueError, "logits contains NaN"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
