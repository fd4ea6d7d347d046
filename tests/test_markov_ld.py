"""Large deviations of Markov token models (SPEC section 9, issue 20 item 4):
Markov.period, stationary_distribution, scaled_cgf, rate_function, cycle_mean_range."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiltlab
from tiltlab import reference as ref


def _chain(v, seed, sparse=0.3, per_transition=True, n=10):
    rng = np.random.default_rng(seed)
    lt = rng.normal(size=(v, v)) * 1.5
    lt[rng.random((v, v)) < sparse] = -np.inf
    np.fill_diagonal(lt, 0.0)                        # aperiodic
    lt[np.arange(v), (np.arange(v) + 1) % v] = 0.0   # irreducible
    r = rng.normal(size=(v, v)) if per_transition else rng.normal(size=v)
    return tiltlab.Markov(rng.normal(size=v), lt, r, n), lt, r


def _close(got, want, tol=1e-13):
    """Agreement to ``tol`` relative to ``1 + |want|`` (relative and absolute)."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.all(np.abs(got - want) <= tol * (1 + np.abs(want))), np.max(np.abs(got - want))


CYCLE = [[-np.inf, 0.0], [0.0, -np.inf]]


@pytest.mark.parametrize("v,seed,per_transition", [(2, 0, True), (5, 1, False), (27, 2, True)])
def test_scaled_cgf_matches_reference(v, seed, per_transition):
    m, lt, r = _chain(v, seed, per_transition=per_transition)
    lam = np.array([-30.0, -3.0, -0.2, 0.0, 1e-9, 0.7, 4.0, 25.0])
    got = m.scaled_cgf(lam)
    want = np.array([ref.markov_scaled_cgf(lt, r, x) - ref.markov_scaled_cgf(lt, r, 0.0)
                     for x in lam])
    _close(got, want)
    # the tilt of the sampling policy: Lambda(lam + t) - Lambda(lam), broadcast
    t = np.array([[-1.0], [0.5]])
    got2 = m.scaled_cgf(t, lam=lam)
    lref = np.array([ref.markov_scaled_cgf(lt, r, x) for x in lam])
    for i, ti in enumerate(t[:, 0]):
        w2 = np.array([ref.markov_scaled_cgf(lt, r, x + ti) for x in lam]) - lref
        _close(got2[i], w2)
    assert m.scaled_cgf(0.0, lam=3.0) == 0.0


def test_many_values_sorted_or_not():
    m, lt, r = _chain(27, 5)
    t = np.random.default_rng(0).uniform(-8, 8, 1000)
    got = m.scaled_cgf(t)
    idx = np.arange(0, 1000, 97)
    want = np.array([ref.markov_scaled_cgf(lt, r, x) for x in t[idx]])
    want -= ref.markov_scaled_cgf(lt, r, 0.0)
    _close(got[idx], want)
    np.testing.assert_array_equal(m.scaled_cgf(t[::-1])[::-1], got)


def test_two_state_closed_form_and_cycle():
    for a, b in [(0.9, 0.2), (0.3, 0.6), (0.5, 0.5)]:
        m = tiltlab.Markov([0.0, 1.0], np.log([[a, 1 - a], [b, 1 - b]]), [0.0, 1.0], 7)
        lam = np.linspace(-5, 5, 21)
        el = np.exp(lam)
        tau = a + (1 - b) * el
        want = np.log(0.5 * (tau + np.sqrt(tau ** 2 - 4 * (a - b) * el)))
        np.testing.assert_allclose(m.scaled_cgf(lam), want, rtol=1e-14, atol=1e-14)
    x, y = 0.3, 2.5
    m = tiltlab.Markov([0.0, 0.0], CYCLE, [[0.0, x], [y, 0.0]], 6)
    assert m.period == 2
    lam = np.linspace(-40, 40, 17)
    np.testing.assert_allclose(m.scaled_cgf(lam), lam * (x + y) / 2, rtol=1e-14, atol=1e-13)
    assert m.cycle_mean_range == pytest.approx(((x + y) / 2,) * 2, abs=1e-15)
    np.testing.assert_array_equal(m.stationary_distribution, [0.5, 0.5])
    # every cycle has mean (x + y)/2: I = 0 there, +inf elsewhere
    c = m.cycle_mean_range[1]
    assert m.rate_function(c) == 0.0
    assert np.isinf(m.rate_function([c - 1e-9, c + 1e-9])).all()


def test_period_matches_reference():
    rng = np.random.default_rng(3)
    for _ in range(30):
        v = int(rng.integers(2, 7))
        lt = np.where(rng.random((v, v)) < 0.45, 0.0, -np.inf)
        lt[np.arange(v), rng.integers(0, v, v)] = 0.0
        m = tiltlab.Markov(np.zeros(v), lt, np.zeros(v), 3)
        assert m.period == ref.markov_period(lt)
    three = np.full((3, 3), -np.inf)
    three[[0, 1, 2], [1, 2, 0]] = 0.0
    assert tiltlab.Markov(np.zeros(3), three, np.zeros(3), 3).period == 3


def test_equal_rows_is_memoryless():
    rng = np.random.default_rng(4)
    row, rw = rng.normal(size=6), rng.integers(0, 5, 6).astype(np.float64)
    rw[:2] = [0.0, 4.0]
    m = tiltlab.Markov(row, np.tile(row, (6, 1)), rw, 9)
    t, lam = np.linspace(-3, 3, 13), 0.4
    np.testing.assert_allclose(m.scaled_cgf(t, lam), tiltlab.scaled_cgf(row, rw, t, lam),
                               rtol=1e-13, atol=1e-14)
    mem = tiltlab.Memoryless(row, rw, 9)
    np.testing.assert_allclose(m.scaled_cgf(t), mem.scaled_cgf(t), rtol=1e-13, atol=1e-14)
    p = np.exp(row - np.logaddexp.reduce(row))
    np.testing.assert_allclose(m.stationary_distribution, p, rtol=1e-14)
    xs = np.linspace(rw.min() + 0.05, rw.max() - 0.05, 7)
    np.testing.assert_allclose(m.rate_function(xs, lam), mem.rate_function(xs, lam),
                               rtol=1e-10, atol=1e-15)
    ends = [rw.min(), rw.max()]
    np.testing.assert_allclose(m.rate_function(ends, lam), mem.rate_function(ends, lam),
                               rtol=1e-12)


def test_finite_n_converges_at_rate_one_over_n():
    m, lt, r = _chain(4, 6, per_transition=False)
    lam = 0.8
    big = m.scaled_cgf(lam)
    errs = []
    for n in (200, 400, 800):
        mn = tiltlab.Markov(np.zeros(4), lt, r, n)
        errs.append(n * (mn.tilt_stats(lam).log_partition / n - big))
    # n (log Z_n / n - Lambda) -> the O(1) constant: differences shrink geometrically
    assert abs(errs[2] - errs[1]) < 1e-9 and abs(errs[1] - errs[0]) < 1e-9
    assert abs(errs[0]) > 1e-3                       # a genuine O(1) term, not zero


def test_derivatives_match_finite_differences():
    m, lt, r = _chain(6, 7)
    for th in (-1.5, 0.0, 0.9):
        _, _, mu, mean, var = m._ld_moments(np.array([th]))
        h = 1e-4
        f = m.scaled_cgf(np.array([-h, h]), th)
        d1 = (f[1] - f[0]) / (2 * h)
        d2 = (f[1] + f[0]) / h ** 2
        assert mean[0] == pytest.approx(d1, rel=1e-7)
        assert var[0] == pytest.approx(d2, rel=1e-5)
        # and the n -> inf limit of Var R / n from the exact finite-n recursion
        mn = tiltlab.Markov(np.zeros(6), lt, r, 1200)
        s1 = tiltlab.Markov(np.zeros(6), lt, r, 600).tilt_stats(th)
        s2 = mn.tilt_stats(th)
        assert var[0] == pytest.approx((s2.variance - s1.variance) / 600, rel=1e-9)
        assert mean[0] == pytest.approx((s2.mean - s1.mean) / 600, rel=1e-11)


def test_rate_function_vs_reference_and_shape():
    m, lt, r = _chain(4, 8)
    c_min, c_max = m.cycle_mean_range
    xs = np.linspace(c_min, c_max, 7)[1:-1]
    for lam in (0.0, 0.6):
        got = m.rate_function(xs, lam)
        want = np.array([ref.markov_rate_function(lt, r, x, lam) for x in xs])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-13)
    # zero at the stationary mean of phi_lam, convex, +inf outside, finite limits at the ends
    _, _, _, mean, _ = m._ld_moments(np.array([0.6]))
    assert m.rate_function(mean[0], 0.6) == pytest.approx(0.0, abs=1e-14)
    grid = np.linspace(c_min, c_max, 41)[1:-1]
    vals = m.rate_function(grid)
    assert (np.diff(vals, 2) > -1e-12).all() and (vals >= 0).all()
    assert np.isinf(m.rate_function([c_min - 1e-9, c_max + 1e-6, np.inf, -np.inf])).all()
    end = m.rate_function([c_min, c_max])
    near = m.rate_function([c_min + 1e-7, c_max - 1e-7])
    assert np.isfinite(end).all()
    np.testing.assert_allclose(near, end, rtol=1e-4)
    assert m.rate_function([[0.1], [0.2]], [0.0, 1.0]).shape == (2, 2)


def test_rate_function_against_finite_n_tails():
    # -(1/n) log P(R >= n x) -> I(x) above the mean; integer rewards, a loose convergence check
    lt = np.log([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.1, 0.5]])
    r = np.array([0.0, 1.0, 2.0])
    x = 1.3
    m = tiltlab.Markov(np.zeros(3), lt, r, 10)
    rate = m.rate_function(x)
    gaps = []
    for n in (60, 240):
        values, log_pmf = ref.markov_reward_law(np.zeros(3), lt, r, n)
        tail = np.logaddexp.reduce(log_pmf[values >= n * x - 1e-9])
        gaps.append(abs(-tail / n - rate))
    assert gaps[1] < gaps[0] < 0.05 and gaps[1] < 0.02


def test_reducible_chain_raises_naming_the_argument():
    lt = np.array([[0.0, 0.0, -np.inf], [0.0, 0.0, -np.inf], [0.0, 0.0, 0.0]])
    m = tiltlab.Markov(np.zeros(3), lt, np.zeros(3), 4)
    assert m.period == 0
    for call in (lambda: m.scaled_cgf(1.0), lambda: m.rate_function(0.1),
                 lambda: m.stationary_distribution, lambda: m.cycle_mean_range):
        with pytest.raises(ValueError, match=r"transition_logits.*reducible.*\[0, 1\], \[2\]"):
            call()


@pytest.mark.parametrize("bad,name", [(np.nan, "t"), (np.inf, "t")])
def test_bad_t(bad, name):
    m, _, _ = _chain(3, 9)
    with pytest.raises(ValueError, match=name):
        m.scaled_cgf([0.0, bad])
    with pytest.raises(ValueError, match="lam"):
        m.scaled_cgf(0.1, lam=np.nan)
    with pytest.raises(ValueError, match="x"):
        m.rate_function(np.nan)
    with pytest.raises(ValueError, match="lam"):
        m.rate_function(0.1, lam=np.inf)
    with pytest.raises(ValueError, match="broadcast"):
        m.scaled_cgf(np.zeros(3), lam=np.zeros(2))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(-5, 5), st.floats(-2, 2))
def test_reward_shift_shifts_lambda(seed, c, lam):
    m, lt, r = _chain(4, seed)
    shifted = tiltlab.Markov(np.zeros(4), lt, r + c, 5)
    base = m.scaled_cgf(lam)
    assert shifted.scaled_cgf(lam) == pytest.approx(base + lam * c, rel=1e-12, abs=1e-12)
    lo, hi = m.cycle_mean_range
    lo2, hi2 = shifted.cycle_mean_range
    assert lo2 == pytest.approx(lo + c, abs=1e-12) and hi2 == pytest.approx(hi + c, abs=1e-12)
    x = 0.5 * (lo + hi) + 0.1 * (hi - lo)
    assert shifted.rate_function(x + c) == pytest.approx(m.rate_function(x), rel=1e-8,
                                                         abs=1e-13)
