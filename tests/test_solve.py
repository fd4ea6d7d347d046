"""solve_lambda, kl_max and frontier (SPEC section 2: optimality and the frontier)."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from conftest import rows
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref
from tiltlab.tilting import _solve


def test_bernoulli_oracle(bernoulli):
    lam = tiltlab.solve_lambda(*bernoulli, [0.1, 0.5])
    assert_allclose(lam, [0.9058310508, 2.1387560656], atol=5e-11)
    assert_allclose(tiltlab.frontier(*bernoulli, 0.1), 0.5146291211, atol=5e-11)


@given(rows(max_rows=4, logit_scale=5.0), st.floats(1e-9, 1.0), st.integers(0, 2**31))
def test_solution_hits_the_budget(data, frac, seed):
    logits, rewards = data
    top = tiltlab.kl_max(logits, rewards)
    rng = np.random.default_rng(seed)
    budget = top * frac * rng.uniform(0.5, 1.0, size=top.shape)
    lam = tiltlab.solve_lambda(logits, rewards, budget)
    assert np.all(lam >= 0)
    inside = budget < top
    assert np.all(np.isinf(lam[~inside]))
    got = tiltlab.tilt_stats(logits, rewards, lam).kl
    # 1e-12 relative, except where kl has saturated within rounding of kl_max
    ok = np.abs(got - budget) <= 1e-12 * budget + 4e-16 * top * (lam > 30)
    assert np.all(ok[inside]), (got[inside], budget[inside], lam[inside])


@pytest.mark.parametrize("delta", [1e-14, 1e-10, 1e-6, 1e-3, 0.1, 1.0, 1.2, 1.2039728])
def test_bernoulli_budgets_across_scales(bernoulli, delta):
    lam = tiltlab.solve_lambda(*bernoulli, delta)
    s = tiltlab.tilt_stats(*bernoulli, lam)
    assert_allclose(s.kl, delta, rtol=1e-12)
    # lam itself is known to the conditioning of kl(lam): d lam = d kl / (lam var)
    cond = 1e-14 * delta / (lam * lam * s.variance)
    assert_allclose(lam, float(oracle.solve_lambda(*bernoulli, delta)), rtol=1e-12 + cond)


def test_budget_at_and_beyond_kl_max_gives_infinity(bernoulli, ternary):
    for model in (bernoulli, ternary):
        top = tiltlab.kl_max(*model)
        lam = tiltlab.solve_lambda(*model, [top, top * 1.5, np.inf])
        assert_array_equal(lam, [np.inf, np.inf, np.inf])
        assert_allclose(tiltlab.frontier(*model, top), model[1].max(), rtol=0)
    assert tiltlab.solve_lambda(*bernoulli, 0.0) == 0.0
    assert_allclose(tiltlab.frontier(*bernoulli, 0.0), 0.3, rtol=1e-15)


def test_constant_rewards():
    # one reward level: kl_max = 0, every budget is "at kl_max"
    lam = tiltlab.solve_lambda(np.zeros(4), np.ones(4), [0.0, 0.3])
    assert_array_equal(lam, [np.inf, np.inf])
    assert_array_equal(tiltlab.frontier(np.zeros(4), np.ones(4), [0.0, 0.3]), [1.0, 1.0])


def test_saturating_budget_close_to_kl_max(ternary):
    top = tiltlab.kl_max(*ternary)
    for gap in (1e-3, 1e-6, 1e-9):
        budget = top * (1 - gap)
        lam, passes = _solve(*ternary, budget, False, None)[1:]
        kl = tiltlab.tilt_stats(*ternary, lam[0]).kl
        assert_allclose(kl, budget, rtol=1e-12)
        assert passes[0] <= 12, passes


def test_few_passes_over_the_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 1000)) * 2
    rewards = rng.normal(size=(64, 1000))
    budget = rng.uniform(0.01, 1.0, 64)
    _, lam, passes = _solve(logits, rewards, budget, False, None)
    assert np.all(passes <= 10), passes
    _, lam_j, passes_j = _solve(logits, rewards, 5.0, True, None)
    assert passes_j[0] <= 10


def test_joint_mode_equals_stationary_closed_form(ternary):
    """n equal rows with a total budget n * delta: the common lam is the single-row lam."""
    logits, rewards = ternary
    n = 7
    stacked = np.broadcast_to(logits, (n, 3)), np.broadcast_to(rewards, (n, 3))
    for delta in (1e-4, 0.05, 0.3, 0.9):
        single = tiltlab.solve_lambda(logits, rewards, delta)
        joint = tiltlab.solve_lambda(*stacked, n * delta, joint=True)
        assert isinstance(joint, float)
        assert_allclose(joint, single, rtol=1e-12)


def test_joint_mode_sums_the_kl_of_different_rows():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 30))
    rewards = rng.normal(size=(5, 30))
    total = 0.7
    lam = tiltlab.solve_lambda(logits, rewards, total, joint=True)
    kl = tiltlab.tilt_stats(logits, rewards, lam).kl
    assert_allclose(kl.sum(), total, rtol=1e-12)
    assert_allclose(lam, ref.solve_lambda(logits, rewards, total, joint=True), rtol=1e-10)
    top = tiltlab.kl_max(logits, rewards).sum()
    assert tiltlab.solve_lambda(logits, rewards, top, joint=True) == np.inf


def test_frontier_slope_is_one_over_lambda(ternary):
    for delta in (0.05, 0.3, 0.8):
        h = 1e-5
        f_up, f_down = tiltlab.frontier(*ternary, [delta + h, delta - h])
        lam = tiltlab.solve_lambda(*ternary, delta)
        assert_allclose((f_up - f_down) / (2 * h), 1 / lam, rtol=1e-6)


def test_frontier_vectorised_and_monotone(ternary):
    budgets = np.linspace(0, tiltlab.kl_max(*ternary) * 1.1, 50)
    f = tiltlab.frontier(*ternary, budgets)
    assert f.shape == (50,)
    assert np.all(np.diff(f) >= -1e-15)
    assert_allclose(f, ref.frontier(*ternary, budgets), rtol=1e-11)


def test_frontier_is_the_inverse_cramer_function(ternary):
    """I_0(mean(lam)) = kl(lam): the optimal frontier inverts the rate function under p."""
    lam = np.array([0.2, 1.0, 3.0])
    s = tiltlab.tilt_stats(*ternary, lam)
    assert_allclose(tiltlab.frontier(*ternary, s.kl), s.mean, rtol=1e-12)


def test_solve_matches_reference_on_batches():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(6, 50)) * 3
    rewards = rng.integers(0, 5, size=(6, 50)).astype(float)
    budget = tiltlab.kl_max(logits, rewards) * rng.uniform(0.01, 0.99, 6)
    assert_allclose(tiltlab.solve_lambda(logits, rewards, budget),
                    ref.solve_lambda(logits, rewards, budget), rtol=1e-10)
    assert_allclose(tiltlab.kl_max(logits, rewards), ref.kl_max(logits, rewards), rtol=1e-13)
