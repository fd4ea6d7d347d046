"""Exact policy laws (soft best-of-n, worst-of-n, best-of-Poisson, rewind-and-repeat,
calibrated tilt) against brute force, limits and closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiltlab
from tiltlab import policies as P


def _metrics(p, r, pi):
    """KL(pi||p), E_pi r, win rate (ties 1/2) straight from the outcome laws."""
    p, r, pi = map(np.asarray, (p, r, pi))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = float(np.sum(np.where(pi > 0, pi * np.log(pi / p), 0.0)))
    win = float(sum(pi[i] * p[k] * (1.0 if r[i] > r[k] else 0.5 if r[i] == r[k] else 0.0)
                    for i in range(r.size) for k in range(r.size)))
    return kl, float(pi @ r), win


def _check(law, p, r, ref, rtol=1e-12):
    got = np.exp(law.log_probs)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-300)
    kl, er, win = _metrics(p, r, ref)
    assert law.kl == pytest.approx(kl, rel=rtol * 10, abs=1e-14)
    assert law.expected_reward == pytest.approx(er, rel=rtol * 10, abs=1e-14)
    assert law.win_rate == pytest.approx(win, rel=rtol * 10)


def brute_soft(p, r, n, temperature):
    out = np.zeros(len(p))
    for tup in itertools.product(range(len(p)), repeat=n):
        pr = np.prod(p[list(tup)])
        w = np.exp((r[list(tup)] - r.max()) / temperature)
        for i, y in enumerate(tup):
            out[y] += pr * w[i] / w.sum()
    return out


def brute_extreme(p, r, n, worst=False):
    """Law of the argmax (argmin) of n draws, ties broken uniformly, by enumeration."""
    out = np.zeros(len(p))
    for tup in itertools.product(range(len(p)), repeat=n):
        pr = np.prod(p[list(tup)])
        vals = r[list(tup)]
        best = vals.min() if worst else vals.max()
        winners = [y for y, v in zip(tup, vals, strict=True) if v == best]
        for y in winners:
            out[y] += pr / len(winners)
    return out


@st.composite
def small_models(draw, max_v=4):
    v = draw(st.integers(2, max_v))
    p = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=v, max_size=v)))
    p /= p.sum()
    r = np.array(draw(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.3, 1.0, 2.5]),
                               min_size=v, max_size=v)))
    return p, r


@settings(max_examples=40)
@given(small_models(), st.integers(1, 4), st.floats(0.05, 20.0))
def test_soft_best_of_n_brute_force(model, n, temperature):
    p, r = model
    law = tiltlab.soft_best_of_n(np.log(p), r, n, temperature)
    _check(law, p, r, brute_soft(p, r, n, temperature), rtol=1e-11)
    if "quadrature_mass" in law.params:
        assert law.params["quadrature_mass"] == pytest.approx(1.0, abs=1e-11)


def test_soft_best_of_n_real_n_and_extreme_spread():
    p = np.array([0.2, 0.5, 0.3])
    r = np.array([0.0, 1.0, 2.0])
    # real n interpolates: check against the integral by mpmath
    import mpmath as mp

    n, t = 2.5, 0.7
    w = [mp.e ** ((x - 2.0) / t) for x in r]

    def level(j):
        def f(s):
            m = sum(pk * mp.e ** (-s * wk) for pk, wk in zip(p, w, strict=True))
            return mp.e ** (-s * w[j]) * m ** (n - 1)
        return n * p[j] * w[j] * mp.quad(f, [0, 1, 10, 100, mp.inf])

    ref = np.array([float(level(j)) for j in range(3)])
    law = tiltlab.soft_best_of_n(np.log(p), r, n, t)
    np.testing.assert_allclose(np.exp(law.log_probs), ref, rtol=1e-12)
    # reward spread / temperature = 1e4: no overflow, close to best-of-n (gaps e^-5000);
    # log-weights of order 1e4 cancel, so the accuracy is ~1e-16 * 1e4
    law = tiltlab.soft_best_of_n(np.log(p), r * 5000, 3, 1.0)
    bon = tiltlab.best_of_n(np.log(p), r, n=3)
    np.testing.assert_allclose(np.exp(law.log_probs), np.exp(bon.log_probs), rtol=1e-11)
    assert law.params["quadrature_mass"] == pytest.approx(1.0, abs=1e-11)


def test_soft_best_of_n_limits():
    rng = np.random.default_rng(3)
    lg = rng.normal(size=30)
    r = np.round(rng.normal(size=30), 1)
    bon = tiltlab.best_of_n(lg, r, n=5)
    # temperature -> 0 is best-of-n (reward gaps 0.1: error ~ e^{-0.1/T})
    cold = tiltlab.soft_best_of_n(lg, r, 5, 0.002)
    np.testing.assert_allclose(np.exp(cold.log_probs), np.exp(bon.log_probs), rtol=1e-9,
                               atol=1e-15)
    exact = tiltlab.soft_best_of_n(lg, r, 5, 0.0)
    np.testing.assert_allclose(exact.log_probs, bon.log_probs, rtol=1e-13)
    # temperature -> inf is p
    hot = tiltlab.soft_best_of_n(lg, r, 5, 1e9)
    p = np.exp(lg - np.logaddexp.reduce(lg))
    np.testing.assert_allclose(np.exp(hot.log_probs), p, rtol=1e-8)
    assert tiltlab.soft_best_of_n(lg, r, 5, np.inf).kl == 0.0
    # n -> inf is the tilt with lam = 1/temperature (self-normalised importance resampling)
    big = tiltlab.soft_best_of_n(lg, r, 1e7, 0.5)
    phi = np.exp(tiltlab.tilt(lg, r, 2.0))
    np.testing.assert_allclose(np.exp(big.log_probs), phi, rtol=1e-5)


@settings(max_examples=30)
@given(small_models(), st.integers(1, 4))
def test_worst_of_n_brute_force(model, n):
    p, r = model
    law = tiltlab.worst_of_n(np.log(p), r, n=n)
    _check(law, p, r, brute_extreme(p, r, n, worst=True))


def test_worst_of_n_mirrors_best_of_n():
    rng = np.random.default_rng(0)
    lg, r = rng.normal(size=50), rng.normal(size=50)
    w = tiltlab.worst_of_n(lg, r, log_n=40.0)
    b = tiltlab.best_of_n(lg, -r, log_n=40.0)
    np.testing.assert_allclose(w.log_probs, b.log_probs, rtol=1e-13)
    assert w.kl == pytest.approx(float(b.kl), rel=1e-13)
    assert w.win_rate == pytest.approx(1 - float(b.win_rate), rel=1e-13)


@settings(max_examples=30)
@given(small_models(), st.floats(0.0, 3.0))
def test_best_of_poisson_against_the_poisson_mixture(model, mu):
    p, r = model
    law = tiltlab.best_of_poisson(np.log(p), r, mu)
    # sum over N - 1 = k of Poisson(mu) weights times the best-of-(k+1) law
    ref = np.zeros(len(p))
    for k in range(80):
        wk = math.exp(-mu + k * math.log(mu) - math.lgamma(k + 1)) if mu > 0 else float(k == 0)
        if wk < 1e-300:
            continue
        if k + 1 <= 4:
            ref += wk * brute_extreme(p, r, k + 1)
        else:
            ref += wk * np.exp(tiltlab.best_of_n(np.log(p), r, n=k + 1).log_probs)
    _check(law, p, r, ref, rtol=1e-11)


def test_best_of_poisson_continuous_limit():
    """Without atoms U = F(Y) has density g(u) = e^{mu(u-1)} (1 + mu u)."""
    import mpmath as mp

    v, mu = 20_000, 3.0
    law = tiltlab.best_of_poisson(np.zeros(v), np.arange(v, dtype=float), mu)
    g = lambda u: mp.e ** (mu * (u - 1)) * (1 + mu * u)  # noqa: E731
    kl = float(mp.quad(lambda u: g(u) * mp.log(g(u)), [0, 1]))
    assert law.kl == pytest.approx(kl, abs=5e-4)
    win = float(mp.quad(lambda u: u * g(u), [0, 1]))
    assert law.win_rate == pytest.approx(win, abs=1e-4)
    assert tiltlab.best_of_poisson(np.zeros(5), np.arange(5.0), 0.0).kl == 0.0


def brute_rewind(p, r, eps):
    order = np.argsort(-r, kind="stable")
    out = np.zeros(len(p))
    left = eps
    for lvl in np.unique(r)[::-1]:
        idx = np.flatnonzero(r == lvl)
        mass = p[idx].sum()
        take = min(mass, left)
        out[idx] = p[idx] * take / mass
        left -= take
        if left <= 0:
            break
    del order
    return out / eps


@settings(max_examples=40)
@given(small_models(), st.floats(0.01, 1.0))
def test_rewind_and_repeat_brute_force(model, eps):
    p, r = model
    law = tiltlab.rewind_and_repeat(np.log(p), r, eps)
    _check(law, p, r, brute_rewind(p, r, eps), rtol=1e-11)


def test_rewind_and_repeat_kl_without_atoms():
    v = 1000
    for eps in (0.5, 0.1, 0.013):
        law = tiltlab.rewind_and_repeat(np.zeros(v), np.arange(v, dtype=float), eps)
        assert law.kl == pytest.approx(math.log(1 / eps), rel=1e-12)
        assert law.win_rate == pytest.approx(1 - eps / 2, rel=1e-9)
    assert tiltlab.rewind_and_repeat(np.zeros(4), np.arange(4.0), 1.0).kl == 0.0


@settings(max_examples=40)
@given(small_models(), st.floats(-5.0, 20.0))
def test_calibrated_tilt_brute_force(model, c):
    p, r = model
    q = np.array([p[r < x].sum() + 0.5 * p[r == x].sum() for x in r])
    ref = p * np.exp(c * q)
    ref /= ref.sum()
    law = tiltlab.calibrated_tilt(np.log(p), r, c)
    _check(law, p, r, ref, rtol=1e-11)


def test_calibrated_tilt_beats_every_policy_on_win_rate_at_equal_kl():
    rng = np.random.default_rng(7)
    lg, r = rng.normal(size=40), rng.integers(0, 6, size=40).astype(float)
    cs = np.linspace(0.0, 12.0, 200)
    cal = [tiltlab.calibrated_tilt(lg, r, c) for c in cs]
    kl_c = np.array([x.kl for x in cal])
    win_c = np.array([x.win_rate for x in cal])
    others = [tiltlab.best_of_n(lg, r, n=k) for k in (2, 4, 8)]
    others += [tiltlab.soft_best_of_n(lg, r, 4, t) for t in (0.3, 1.0)]
    lam = tiltlab.solve_lambda(lg, r, np.array([0.05, 0.2, 0.5]))
    st_ = tiltlab.tilt_stats(lg, r, lam)
    for kl, win in [(float(o.kl), float(o.win_rate)) for o in others] + [
            (float(k), P.calibrated_tilt(lg, r, 0.0).win_rate * 0 + _tilt_win(lg, r, lm))
            for k, lm in zip(st_.kl, lam, strict=True)]:
        assert win <= np.interp(kl, kl_c, win_c) + 1e-9


def _tilt_win(lg, r, lam):
    lv = tiltlab.reward_levels(lg, r)
    m = np.exp(lv.log_masses)
    q = m * np.exp(lam * lv.values)
    q /= q.sum()
    return float(q @ (np.concatenate([[0.0], np.cumsum(m)[:-1]]) + m / 2))


def test_policy_sampling_and_kl_to_tilted():
    from scipy import stats

    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    law = tiltlab.soft_best_of_n(lg, r, 4, 0.5)
    draws = law.sample(200_000, rng=1)
    counts = np.bincount(draws, minlength=3)
    res = stats.chisquare(counts, 200_000 * np.exp(law.log_probs))
    assert res.pvalue > 1e-4
    np.testing.assert_array_equal(law.sample(1000, rng=5, n_threads=1),
                                  law.sample(1000, rng=5, n_threads=2))
    lam = 0.7
    pi = np.exp(law.log_probs)
    direct = float(np.sum(pi * (law.log_probs - tiltlab.tilt(lg, r, lam))))
    assert law.kl_to_tilted(lam) == pytest.approx(direct, rel=1e-12)


def test_policy_outcomes_with_zero_probability():
    lg = np.array([0.0, -np.inf, 0.0, 1.0])
    r = np.array([0.0, 9.0, 1.0, 2.0])
    for law in (tiltlab.soft_best_of_n(lg, r, 3, 1.0), tiltlab.worst_of_n(lg, r, n=3),
                tiltlab.best_of_poisson(lg, r, 2.0), tiltlab.rewind_and_repeat(lg, r, 0.3),
                tiltlab.calibrated_tilt(lg, r, 3.0)):
        assert law.log_probs[1] == -np.inf
        assert np.exp(law.log_probs).sum() == pytest.approx(1.0, rel=1e-13)
        assert np.all(np.isfinite([law.kl, law.expected_reward, law.win_rate]))


@pytest.mark.parametrize("call, match", [
    (lambda lg, r: tiltlab.soft_best_of_n(lg, r, 0.5, 1.0), "n must be >= 1"),
    (lambda lg, r: tiltlab.soft_best_of_n(lg, r, 2, -1.0), "temperature must be >= 0"),
    (lambda lg, r: tiltlab.soft_best_of_n(lg, r, 2, 1e-9), "too small"),
    (lambda lg, r: tiltlab.soft_best_of_n(lg, r, np.nan, 1.0), "n"),
    (lambda lg, r: tiltlab.worst_of_n(lg, r), "exactly one of n and log_n"),
    (lambda lg, r: tiltlab.worst_of_n(lg, r, n=2, log_n=1), "exactly one"),
    (lambda lg, r: tiltlab.best_of_poisson(lg, r, -1.0), "mu must be >= 0"),
    (lambda lg, r: tiltlab.rewind_and_repeat(lg, r, 0.0), "eps must be > 0"),
    (lambda lg, r: tiltlab.rewind_and_repeat(lg, r, 1.5), "eps must be <= 1"),
    (lambda lg, r: tiltlab.calibrated_tilt(lg, r, np.inf), "c"),
    (lambda lg, r: tiltlab.calibrated_tilt(np.zeros((2, 3)), np.zeros((2, 3)), 1.0), "batch"),
    (lambda lg, r: tiltlab.calibrated_tilt(lg, [0.0, np.nan, 1.0], 1.0), "rewards"),
])
def test_policy_bad_input(call, match):
    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 30.0])
    with pytest.raises(ValueError, match=match):
        call(lg, r)


@pytest.mark.parametrize("method, grid, kw, single", [
    ("best_of_n", [1.0, 2.0, 7.5, 1e6], {}, lambda lg, r, x: tiltlab.best_of_n(lg, r, n=x)),
    ("worst_of_n", [1.0, 3.0, 1e3], {}, lambda lg, r, x: tiltlab.worst_of_n(lg, r, n=x)),
    ("soft_best_of_n", [0.0, 0.2, 1.0, np.inf], {"n": 6},
     lambda lg, r, x: tiltlab.soft_best_of_n(lg, r, 6, x)),
    ("soft_best_of_n", [1.0, 3.0, 50.0], {"temperature": 0.4},
     lambda lg, r, x: tiltlab.soft_best_of_n(lg, r, x, 0.4)),
    ("best_of_poisson", [0.0, 1.0, 30.0], {}, lambda lg, r, x: tiltlab.best_of_poisson(lg, r, x)),
    ("rewind_and_repeat", [1.0, 0.3, 0.01], {},
     lambda lg, r, x: tiltlab.rewind_and_repeat(lg, r, x)),
    ("calibrated_tilt", [-1.0, 0.0, 5.0], {}, lambda lg, r, x: tiltlab.calibrated_tilt(lg, r, x)),
])
def test_policy_frontier_matches_the_single_policies(method, grid, kw, single):
    rng = np.random.default_rng(11)
    lg, r = rng.normal(size=60), np.round(rng.normal(size=60), 1)
    f = tiltlab.policy_frontier(lg, r, method, grid, **kw)
    assert f.method == method and f.kl.shape == (len(grid),)
    for i, x in enumerate(grid):
        law = single(lg, r, x)
        assert f.kl[i] == pytest.approx(float(law.kl), rel=1e-12, abs=1e-15)
        assert f.expected_reward[i] == pytest.approx(float(law.expected_reward), rel=1e-12)
        assert f.win_rate[i] == pytest.approx(float(law.win_rate), rel=1e-12)


def test_policy_frontier_tilted_and_shape_of_the_comparison():
    rng = np.random.default_rng(2)
    lg, r = rng.normal(size=200), rng.normal(size=200)
    lam = np.array([0.0, 0.5, 2.0, np.inf])
    f = tiltlab.policy_frontier(lg, r, "tilted", lam)
    st_ = tiltlab.tilt_stats(lg, r, lam)
    np.testing.assert_allclose(f.kl, st_.kl, rtol=1e-13)
    np.testing.assert_allclose(f.expected_reward, st_.mean, rtol=1e-13)
    p_top = float(np.exp(lg[np.argmax(r)] - np.logaddexp.reduce(lg)))
    assert f.win_rate[0] == pytest.approx(0.5, rel=1e-14)
    assert f.win_rate[-1] == pytest.approx(1 - 0.5 * p_top, rel=1e-14)   # lam = inf
    for j in range(1, 3):
        assert f.win_rate[j] == pytest.approx(_tilt_win(lg, r, lam[j]), rel=1e-12)
    # the tilt is optimal for reward at equal KL: every other policy lies below it
    bon = tiltlab.policy_frontier(lg, r, "best_of_n", np.geomspace(1, 1e4, 20))
    ref = tiltlab.frontier(lg, r, bon.kl)
    assert np.all(bon.expected_reward <= ref + 1e-12)


@pytest.mark.parametrize("args, kw, match", [
    (("nope", [1.0]), {}, "method must be one of"),
    (("best_of_n", []), {}, "grid is empty"),
    (("best_of_n", [0.5]), {}, "N must be finite and >= 1"),
    (("soft_best_of_n", [1.0]), {}, "exactly one of n="),
    (("soft_best_of_n", [-1.0]), {"n": 4}, "temperatures must be >= 0"),
    (("rewind_and_repeat", [0.0]), {}, "eps"),
    (("best_of_poisson", [np.nan]), {}, "NaN"),
])
def test_policy_frontier_bad_input(args, kw, match):
    with pytest.raises(ValueError, match=match):
        tiltlab.policy_frontier(np.zeros(3), [0.0, 1.0, 2.0], *args, **kw)


@pytest.mark.parametrize("n, temperature", [(2, 1.0), (16, 0.3), (1000, 0.05), (3.5, 0.002)])
def test_soft_best_of_n_compiled_matches_reference(n, temperature):
    """The compiled soft best-of-n against the reference's own evaluation of the integral
    (tiltlab.reference.soft_best_of_n: a plain trapezoid rule, no shared code), and the
    compiled quadrature loops (csrc/tl_soft.c) against their NumPy twins in the same
    quadrature."""
    from tiltlab import policies, reference

    rng = np.random.default_rng(5)
    lg, r = rng.normal(size=3000) * 2, rng.normal(size=3000)
    got = tiltlab.soft_best_of_n(lg, r, n, temperature).log_probs
    want = reference.soft_best_of_n(lg, r, n, temperature)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    lv = policies._levels(lg, r)
    compiled = policies._soft_level_law(lv, float(n), float(temperature))
    twins = policies._soft_level_law(lv, float(n), float(temperature),
                                     stages=reference._SoftStagesNumpy())
    np.testing.assert_allclose(twins[0], compiled[0], rtol=1e-13, atol=1e-13)
    assert twins[1] == pytest.approx(compiled[1], rel=1e-14)
    one = tiltlab.soft_best_of_n(lg, r, n, temperature, n_threads=1).log_probs
    np.testing.assert_array_equal(got, one)                  # any thread count, same bits


def test_soft_best_of_n_large_vocabulary_mass_and_bracket():
    """V = 20000 distinct rewards: the law sums to 1 and sits between p and best-of-n."""
    rng = np.random.default_rng(9)
    lg, r = rng.normal(size=20_000), rng.normal(size=20_000)
    s = tiltlab.soft_best_of_n(lg, r, 8, 0.5)
    assert s.params["quadrature_mass"] == pytest.approx(1.0, abs=1e-12)
    bon = tiltlab.best_of_n(lg, r, n=8)
    p_mean = float(tiltlab.tilt_stats(lg, r, 0.0).mean)
    assert p_mean < s.expected_reward < float(bon.expected_reward)
    assert 0.0 < s.kl < float(bon.kl)


def test_soft_best_of_n_frontier_threads_give_the_serial_result():
    rng = np.random.default_rng(4)
    lg, r = rng.normal(size=2000), rng.normal(size=2000)
    grid = np.geomspace(0.02, 20.0, 9)
    one = tiltlab.policy_frontier(lg, r, "soft_best_of_n", grid, n=8, n_threads=1)
    two = tiltlab.policy_frontier(lg, r, "soft_best_of_n", grid, n=8, n_threads=2)
    for a, b in zip(one[1:], two[1:], strict=True):
        np.testing.assert_array_equal(a, b)
    for i in (0, 4, 8):
        law = tiltlab.soft_best_of_n(lg, r, 8, grid[i])
        assert one.kl[i] == pytest.approx(law.kl, rel=1e-13)


@pytest.mark.parametrize("p, r, n", [
    ([1e-14, 1.0], [0.0, 4.0], 1.05),          # branch points of M^(n-1) near the axis
    ([1e-8, 1.0], [0.0, 3.0], 1.05),
    ([1e-30, 1e-3, 1.0], [0.0, 2.0, 5.0], 1.5),
    ([0.3, 0.7], [0.0, 1.0], 2.5),
])
def test_soft_best_of_n_non_integer_n_against_mpmath(p, r, n):
    import mpmath as mp

    p = np.array(p) / np.sum(p)
    with mp.workdps(40):
        pm = [mp.mpf(x) for x in p]
        w = [mp.e ** (x - max(r)) for x in r]

        def level(j):
            def f(t):
                m = sum(pk * mp.e ** (-t * wk) for pk, wk in zip(pm, w, strict=True))
                return mp.e ** (-t * w[j]) * m ** (n - 1)
            pts = sorted({mp.mpf(0), *[mp.mpf(10) ** k / min(w) for k in range(-8, 4)]})
            return n * pm[j] * w[j] * mp.quad(f, [*pts, mp.inf])

        ref = np.array([float(level(j)) for j in range(len(p))])
    law = tiltlab.soft_best_of_n(np.log(p), r, n, 1.0)
    np.testing.assert_allclose(np.exp(law.log_probs), ref, rtol=1e-12)


def test_small_kl_keeps_relative_accuracy():
    lg, r = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    # best-of-Poisson, mu -> 0: w = (0.5 e^{-mu/2}, ...), KL = mu^2 / 8 + O(mu^3)
    assert tiltlab.best_of_poisson(lg, r, 1e-12).kl == pytest.approx(1.25e-25, rel=1e-9)
    # calibrated tilt, c -> 0: KL = c^2 Var_p(Q) / 2 with Var_p(Q) = 1/16
    assert tiltlab.calibrated_tilt(lg, r, 1e-8).kl == pytest.approx(3.125e-18, rel=1e-7)
    # soft best-of-n at a huge temperature: KL ~ Var_p(r / T)-sized
    law = tiltlab.soft_best_of_n(lg, r, 2, 1e6)
    pi = np.exp(law.log_probs)
    d = np.log(pi / 0.5)
    ref = float(np.sum(0.5 * (d * np.exp(d) - np.expm1(d))))
    assert law.kl == pytest.approx(ref, rel=1e-6) and law.kl > 0


def test_policy_argument_types():
    lg, r = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    with pytest.raises(TypeError, match="n must be a number"):
        tiltlab.soft_best_of_n(lg, r, True, 1.0)
    with pytest.raises(TypeError, match="temperature must be a number"):
        tiltlab.soft_best_of_n(lg, r, 2, True)
    with pytest.raises(ValueError, match="one-dimensional"):
        tiltlab.policy_frontier(lg, r, "best_of_n", [[1.0, 2.0]])
    with pytest.raises(ValueError, match="spread"):
        tiltlab.soft_best_of_n(np.zeros(2), [-1e308, 1e308], 2, 1e304)
