"""Large deviations and Rényi quantities (SPEC section 4): rate function, scaled CGF,
Rényi cross entropy and divergence against mpmath oracles, identities and properties."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import oracle
import pytest
from conftest import lams, rows
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import tiltlab
from tiltlab._legendre import rate_function_sequence
from tiltlab.largedev import (
    rate_function,
    renyi_cross_entropy,
    renyi_divergence,
    scaled_cgf,
)

EPS = np.finfo(np.float64).eps
DPS = 40
NT = 1  # tiny inputs: threads only add start-up cost (threading is tested elsewhere)

# --------------------------------------------------------------------------------------
# mpmath oracles (independent of the kernels: plain sums at DPS digits)
# --------------------------------------------------------------------------------------


def _mp_row(logits, rewards):
    return oracle._row(logits, rewards)


def _mp_cgf(row, t):
    shift = max(t * b for _, b in row)
    return mp.log(mp.fsum(p * mp.exp(t * b - shift) for p, b in row)) + shift


def _mp_mean(row, t):
    shift = max(t * b for _, b in row)
    w = [(p * mp.exp(t * b - shift), b) for p, b in row]
    return mp.fsum(a * b for a, b in w) / mp.fsum(a for a, _ in w)


def _mp_stats(row, t):
    shift = max(t * b for _, b in row)
    w = [(p * mp.exp(t * b - shift), b) for p, b in row]
    z = mp.fsum(a for a, _ in w)
    mean = mp.fsum(a * b for a, b in w) / z
    return mean, mp.fsum(a * (b - mean) ** 2 for a, b in w) / z


def _mp_legendre(rows_, x, lam):
    """sup_t { t x - (1/n) sum_i [Lambda_i(lam + t) - Lambda_i(lam)] } by maximising the
    concave objective: bracketed Newton on its derivative; returns (value, theta = lam + t)."""
    with mp.workdps(DPS):
        x, lam = mp.mpf(float(x)), mp.mpf(lam)
        n = len(rows_)

        def slope(t):  # derivative and minus second derivative of the objective
            st_ = [_mp_stats(r, lam + t) for r in rows_]
            return x - mp.fsum(m for m, _ in st_) / n, mp.fsum(v for _, v in st_) / n

        lo, hi = mp.mpf(0), mp.mpf(1)
        if slope(0)[0] > 0:
            while slope(hi)[0] > 0:
                lo, hi = hi, 2 * hi
        else:
            lo, hi = -mp.mpf(1), mp.mpf(0)
            while slope(lo)[0] < 0:
                lo, hi = 2 * lo, lo
        t = (lo + hi) / 2
        for _ in range(300):
            g, v = slope(t)
            if g > 0:
                lo = t
            else:
                hi = t
            t_new = t + g / v
            if not lo < t_new < hi:
                t_new = (lo + hi) / 2
            if abs(t_new - t) <= mp.mpf(10) ** (8 - DPS) * (abs(t) + mp.mpf(10) ** -30):
                t = t_new
                break
            t = t_new
        val = t * x - mp.fsum(_mp_cgf(r, lam + t) - _mp_cgf(r, lam) for r in rows_) / n
        return val, lam + t


def _mp_rate(logits, rewards, x, lam):
    return _mp_legendre([_mp_row(logits, rewards)], x, lam)


def _mp_renyi(logits_p, logits_q, alpha, kind):
    """D_alpha(P || Q) (kind 'D') or H_alpha(P; Q) (kind 'H') by direct sums."""
    with mp.workdps(DPS):
        p = [x for x, _ in _mp_row(logits_p, np.zeros(len(logits_p)))]
        pi = [i for i, v in enumerate(logits_p) if v != -np.inf]
        p = dict(zip(pi, p, strict=True))
        q = [x for x, _ in _mp_row(logits_q, np.zeros(len(logits_q)))]
        qi = [i for i, v in enumerate(logits_q) if v != -np.inf]
        q = dict(zip(qi, q, strict=True))
        supp = list(p)
        missing = any(i not in q for i in supp)
        a = mp.mpf(alpha) if alpha != np.inf else mp.inf
        if kind == "D":
            if a == mp.inf:
                return mp.inf if missing else max(mp.log(p[i] / q[i]) for i in supp)
            if a == 1:
                return mp.inf if missing else mp.fsum(p[i] * mp.log(p[i] / q[i]) for i in supp)
            if a > 1 and missing:
                return mp.inf
            s = mp.fsum(p[i] ** a * q[i] ** (1 - a) for i in supp if i in q)
            return mp.inf if s == 0 else mp.log(s) / (a - 1)
        if a == mp.inf:
            vals = [q[i] for i in supp if i in q]
            return -mp.log(max(vals)) if vals else mp.inf
        if a == 1:
            return mp.inf if missing else -mp.fsum(p[i] * mp.log(q[i]) for i in supp)
        if a < 1 and missing:
            return mp.inf
        s = mp.fsum(p[i] * q[i] ** (a - 1) for i in supp if i in q)
        return mp.inf if s == 0 else mp.log(s) / (1 - a)


def _rel(got, want):
    want = mp.mpf(want)
    if want == 0:
        return abs(float(got))
    return float(abs((mp.mpf(float(got)) - want) / want))


# --------------------------------------------------------------------------------------
# rate function
# --------------------------------------------------------------------------------------


def test_spec8_oracle(bernoulli):
    lg, r = bernoulli
    got = rate_function(lg, r, 0.7, lam=1.0)
    assert_allclose(got, 0.0546543660, rtol=0, atol=6e-11)
    m = 0.5381015262  # mean(1): the rate is the binary KL d(0.7 || mean(1))
    d = 0.7 * math.log(0.7 / m) + 0.3 * math.log(0.3 / (1 - m))
    assert_allclose(got, d, rtol=1e-8)
    want, _ = _mp_rate(lg, r, 0.7, 1.0)
    assert _rel(got, want) < 1e-13


def _x_grid(logits, rewards, lam):
    s = tiltlab.tilt_stats(logits, rewards, lam, n_threads=NT)
    m = float(s.mean)
    fin = logits > -np.inf
    r_max, r_min = rewards[fin].max(), rewards[fin].min()
    xs = [m + 1e-5, m - 1e-3, m + 0.25 * (r_max - m), m - 0.5 * (m - r_min),
          r_max - 1e-3 * (r_max - r_min), r_max - 1e-9 * (r_max - r_min),
          r_min + 1e-7 * (r_max - r_min), 0.5 * (r_max + r_min)]
    return m, np.array([x for x in xs if r_min < x < r_max]), max(abs(r_max), abs(r_min))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0, 1.5, -2.0])
def test_rate_matches_legendre_transform(seed, lam):
    rng = np.random.default_rng(seed)
    lg = rng.normal(size=6)
    r = np.round(rng.normal(size=6) * 2, 3)
    if seed == 3:
        lg[2] = -np.inf
        r[4] = r[1]  # a tie
    m, xs, scale = _x_grid(lg, r, lam)
    got = rate_function(lg, r, xs, lam)
    assert got.shape == xs.shape
    for x, g in zip(xs, got, strict=True):
        want, theta = _mp_rate(lg, r, x, lam)
        # mean(lam) is known to ~eps*scale only: relative error ~ eps*scale/|x - mean|
        tol = 1e-11 + 16 * EPS * scale / abs(x - m)
        assert _rel(g, want) < tol, (x, g, want)
        # and it is KL(phi_theta || phi_lam)
        kl = tiltlab.kl_divergence(lg + float(theta) * r, lg + lam * r, n_threads=NT)
        assert_allclose(g, kl, rtol=1e-8 + tol, atol=0)


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_rate_very_close_to_mean_keeps_relative_accuracy(lam):
    # a model whose mean is exact in binary: I ~ d^2 / (2 var) down to I ~ 1e-20
    lg = np.log([0.25, 0.5, 0.25])
    r = np.array([-1.0, 0.0, 1.0])
    m = float(tiltlab.tilt_stats(lg, r, lam, n_threads=NT).mean)
    d = np.array([1e-10, -1e-8, 1e-6, -1e-4])
    got = rate_function(lg, r, m + d, lam)
    assert np.all(got > 0)
    for x, g in zip(m + d, got, strict=True):
        want, _ = _mp_rate(lg, r, x, lam)
        tol = 1e-11 + 16 * EPS / abs(x - m)
        assert _rel(g, want) < tol, (x, g, want)
    if lam == 0.0:  # m = 0 exactly: relative 1e-10 all the way down
        for x, g in zip(m + d, got, strict=True):
            assert _rel(g, _mp_rate(lg, r, x, lam)[0]) < 1e-10


def test_rate_near_r_max_with_large_theta():
    # rewards 1e-6 apart: theta of 1e6 .. 1e7 near r_max
    lg = np.log([0.4, 0.1, 0.3, 0.2])
    r = np.array([0.0, 1.0, 1.0 - 1e-6, 1.0 - 2e-6])
    xs = np.array([1 - 1e-7, 1 - 1e-9, 1 - 1e-11, 1 - 1e-13, 2e-6, 0.5])
    got = rate_function(lg, r, xs)
    for x, g in zip(xs, got, strict=True):
        want, theta = _mp_rate(lg, r, x, 0.0)
        assert _rel(g, want) < 1e-10, (x, g, want, theta)
    # approaches the end-point value -log p(argmax) = log 10
    assert rate_function(lg, r, 1.0) == pytest.approx(math.log(10.0), rel=1e-15)
    assert abs(got[3] - math.log(10)) < 1e-5


def test_rate_when_mean_sits_at_an_end():
    # p(r_min) = e^-151: var(0) ~ 1e-65, the first Newton step from mean(0) is ~1e64
    lg = np.array([-80.67027939, 70.14464342])
    r = np.array([-2.38321674, 4.81303646])
    b = math.exp(lg[0] - lg[1]) / (1 + math.exp(lg[0] - lg[1]))
    u = np.array([1e-3, 0.25, 0.5, 0.9, 1 - 1e-9])
    x = r[0] + u * (r[1] - r[0])
    got = rate_function(lg, r, x)
    a = (r[1] - x) / (r[1] - r[0])  # phi_theta(r_min): a binary KL d(a || b)
    want = a * np.log(a / b) + (1 - a) * np.log1p(-a)
    assert_allclose(got, want, rtol=1e-12)


def test_rate_boundaries_and_outside(ternary):
    lg, r = ternary
    for lam in (0.0, 0.7, -1.3):
        phi = tiltlab.tilt(lg, r, lam, n_threads=NT)
        got = rate_function(lg, r, [3.0, 0.0, 3.0 + 1e-12, -1e-300, np.inf, -np.inf], lam)
        assert_allclose(got[:2], [-phi[2], -phi[0]], rtol=1e-14)
        assert np.all(got[2:] == np.inf)
    # Bernoulli at lam = 1: -log phi_1(1)
    got = rate_function(np.log([0.7, 0.3]), [0.0, 1.0], [1.0, 0.0], 1.0)
    assert_allclose(got, [-math.log(0.5381015262), -math.log(1 - 0.5381015262)], rtol=1e-9)


def test_rate_infinite_lambda(ternary):
    lg, r = ternary
    x = np.array([0.0, 1.0, 3.0, 4.0])
    assert np.array_equal(rate_function(lg, r, x, np.inf), [np.inf, np.inf, 0.0, np.inf])
    assert np.array_equal(rate_function(lg, r, x, -np.inf), [0.0, np.inf, np.inf, np.inf])
    # mixed finite and infinite lam in one call
    got = rate_function(lg, r, 3.0, [np.inf, 0.0, -np.inf])
    assert_allclose(got, [0.0, -math.log(0.2), np.inf])


def test_rate_degenerate_and_single_outcome():
    assert rate_function([0.0], [2.0], [2.0, 1.0, 3.0]).tolist() == [0.0, np.inf, np.inf]
    # every support outcome has the same reward
    assert rate_function([0.0, 1.0, -np.inf], [1.0, 1.0, 5.0], [1.0, 5.0]).tolist() == [
        0.0, np.inf]


def test_rate_broadcasting(ternary):
    lg, r = ternary
    lg2 = np.stack([lg, lg[::-1]])                                  # (2, 3)
    x = np.array([0.5, 1.0, 2.5])
    got = rate_function(lg2, r, x[:, None])                         # (3, 2)
    assert got.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert got[i, j] == pytest.approx(float(rate_function(lg2[j], r, x[i])), rel=1e-14)
    got = rate_function(lg, r, x, [0.0, 1.0, -1.0])                 # lam (3,) with x (3,)
    for i in range(3):
        assert got[i] == pytest.approx(float(rate_function(lg, r, x[i], [0.0, 1.0, -1.0][i])),
                                       rel=1e-14)
    assert isinstance(rate_function(lg, r, 1.0), float)
    assert rate_function(lg, r, np.empty((0,))).shape == (0,)
    # float32 and integer inputs are computed in float64
    got32 = rate_function(lg.astype(np.float32), r.astype(np.int64), 1.0)
    assert got32 == pytest.approx(
        float(rate_function(lg.astype(np.float32).astype(np.float64), r, 1.0)), rel=1e-14)


@given(rows(max_rows=2, max_outcomes=8), st.floats(-3, 3))
def test_rate_properties(data, lam):
    lg, r = data
    s = tiltlab.tilt_stats(lg, r, lam, n_threads=NT)
    fin = lg > -np.inf
    r_hi = np.where(fin, r, -np.inf).max(-1)
    r_lo = np.where(fin, r, np.inf).min(-1)
    u = np.linspace(0.0, 1.0, 13)[:, None]
    x = r_lo + u * (r_hi - r_lo)                                    # (13, rows)
    x[0], x[-1] = r_lo, r_hi
    got = rate_function(lg, r, x, lam)
    assert np.all(got >= 0)
    assert np.all(np.isfinite(got))
    # zero at the mean (up to the rounding of the mean)
    at_mean = rate_function(lg, r, s.mean, lam)
    scale = np.maximum(np.abs(r_hi), np.abs(r_lo))
    var = np.where(s.variance > 0, s.variance, 1.0)
    assert np.all(at_mean <= (64 * EPS * scale) ** 2 / var + 1e-300)
    # convex: second differences on the grid are >= 0 (up to rounding)
    d2 = got[:-2] - 2 * got[1:-1] + got[2:]
    assert np.all(d2 >= -1e-9 * (1 + np.max(got, axis=0)))


@given(rows(max_rows=2, max_outcomes=8), lams)
def test_cramer_at_tilted_mean_is_kl(data, lam):
    """I_0(mean(lam)) = kl(lam): the frontier is the inverse of the Cramér function."""
    lg, r = data
    s = tiltlab.tilt_stats(lg, r, lam, n_threads=NT)
    got = rate_function(lg, r, s.mean)
    fin = lg > -np.inf
    scale = np.abs(np.where(fin, r, 0)).max(-1)
    # x = mean(lam) is rounded: I moves by lam * dx (+ dx^2 / (2 var) at lam ~ 0)
    dx = 64 * EPS * scale
    var = np.where(s.variance > 0, s.variance, np.inf)
    tol = 1e-9 * s.kl + np.minimum(abs(lam), 1e300) * dx + dx**2 / var + 1e-300
    assert np.all(np.abs(got - s.kl) <= tol)


def test_rate_is_continuous_and_monotone_towards_the_ends(ternary):
    lg, r = ternary
    m = float(tiltlab.tilt_stats(lg, r, 0.0, n_threads=NT).mean)
    up = m + (3.0 - m) * (1 - np.logspace(-14, 0, 60))
    got = rate_function(lg, r, up[::-1])
    assert np.all(np.diff(got) >= 0)
    assert abs(got[-1] - (-math.log(0.2))) < 1e-12


# --------------------------------------------------------------------------------------
# non-stationary sequences
# --------------------------------------------------------------------------------------


def test_sequence_identical_rows_equal_stationary(ternary):
    lg, r = ternary
    x = np.array([-0.1, 0.0, 0.2, 1.0, 2.9, 3.0, 3.5])
    for lam in (0.0, 0.8, -1.0, np.inf):
        seq = rate_function_sequence(np.tile(lg, (5, 1)), np.tile(r, (5, 1)), x, lam)
        assert_allclose(seq, rate_function(lg, r, x, lam), rtol=1e-13)


def test_sequence_two_rows_is_legendre_of_averaged_cgf():
    lg = np.log([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    r = np.array([[0.0, 1.0, 3.0], [-1.0, 0.5, 2.0]])
    lam = 0.4
    rows_ = [_mp_row(lg[i], r[i]) for i in range(2)]
    x = np.array([0.2, 0.9, 1.1, 2.4, 2.5 - 1e-9])
    got = rate_function_sequence(lg, r, x, lam)
    for xi, g in zip(x, got, strict=True):
        want, _ = _mp_legendre(rows_, xi, lam)
        assert _rel(g, want) < 1e-11, (xi, g, want)
    # end points: averages of the per-row extremes and of -log phi_{i,lam}(extreme set)
    phi = tiltlab.tilt(lg, r, lam, n_threads=NT)
    ends = rate_function_sequence(lg, r, [2.5, -0.5, 2.6, -0.6], lam)
    assert_allclose(ends[:2], [-(phi[0, 2] + phi[1, 2]) / 2, -(phi[0, 0] + phi[1, 0]) / 2],
                    rtol=1e-14)
    assert np.all(ends[2:] == np.inf)
    assert rate_function_sequence(lg, r, np.array([[2.5]]), np.inf).tolist() == [[0.0]]


# --------------------------------------------------------------------------------------
# scaled CGF
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 1.0, -2.5, 40.0])
def test_scaled_cgf_matches_mpmath(ternary, lam):
    lg, r = ternary
    t = np.array([-1e-12, 1e-12, 1e-6, -0.3, 2.0, -50.0, 300.0])
    got = scaled_cgf(lg, r, t, lam)
    row = _mp_row(lg, r)
    with mp.workdps(DPS):
        for ti, g in zip(t, got, strict=True):
            want = _mp_cgf(row, mp.mpf(lam) + mp.mpf(ti)) - _mp_cgf(row, mp.mpf(lam))
            assert _rel(g, want) < 1e-12, (ti, g, want)


def test_scaled_cgf_bernoulli_and_limits(bernoulli, ternary):
    lg, r = bernoulli
    assert scaled_cgf(lg, r, 1.0) == pytest.approx(0.4157352218, abs=1e-10)
    assert scaled_cgf(lg, r, 0.0, 1.0) == 0.0
    # t = +-inf: r_max = 1 > 0 -> +inf; r_min = 0 -> log phi_lam(argmin set)
    got = scaled_cgf(lg, r, [np.inf, -np.inf], 1.0)
    assert got[0] == np.inf
    assert got[1] == pytest.approx(math.log(1 - 0.5381015262), rel=1e-9)
    lg3, r3 = ternary
    assert scaled_cgf(lg3, r3 - 5.0, np.inf) == -np.inf
    # lam = +-inf: phi on the argmax / argmin set, t * r_star (0 * inf = 0)
    got = scaled_cgf(lg3, r3, [2.0, -np.inf, np.inf], np.inf)
    assert got.tolist() == [6.0, -np.inf, np.inf]
    assert scaled_cgf(lg3, r3, [2.0, np.inf], -np.inf).tolist() == [0.0, 0.0]
    assert scaled_cgf(lg3, r3, [[0.5], [1.0]], [np.inf, 0.0]).shape == (2, 2)
    # a single reward value: exactly t * r, limits included
    got = scaled_cgf([0.0, 1.0], [2.0, 2.0], [1e-9, -3.0, np.inf, -np.inf])
    assert got.tolist() == [2e-9, -6.0, np.inf, -np.inf]
    assert scaled_cgf([0.0, 1.0], [0.0, 0.0], [np.inf, -np.inf]).tolist() == [0.0, 0.0]


@settings(max_examples=60)
@given(rows(max_rows=2, max_outcomes=8, reward_scale=2.0), st.floats(-0.99, 3.0),
       st.floats(-3, 3))
def test_scaled_cgf_renyi_identity(data, t, lam):
    """Lambda(lam+t) - Lambda(lam) = t (log sum e^r - H_{1+t}(phi_lam; softmax r))."""
    lg, r = data
    got = scaled_cgf(lg, r, t, lam)
    phi = tiltlab.tilt(lg, r, lam, n_threads=NT)
    lse = tiltlab.logsumexp(r, axis=-1, n_threads=NT)
    h = renyi_cross_entropy(phi, r, 1.0 + t)
    want = t * (lse - h)
    assert np.all(np.abs(got - want) <= 1e-11 * (abs(t) * (np.abs(lse) + np.abs(h)) + 1e-300))


def test_scaled_cgf_is_relative_accurate_for_tiny_t(bernoulli):
    lg, r = bernoulli
    for lam in (0.0, 1.0):
        m = float(tiltlab.tilt_stats(lg, r, lam, n_threads=NT).mean)
        for t in (1e-15, -1e-10, 1e-8):
            got = scaled_cgf(lg, r, t, lam)
            assert got == pytest.approx(t * m, rel=1e-7)
    # CGF of a zero-mean reward: ~ t^2 var / 2
    got = scaled_cgf(np.zeros(2), [-1.0, 1.0], 1e-9)
    assert got == pytest.approx(0.5e-18, rel=1e-9)


# --------------------------------------------------------------------------------------
# Rényi cross entropy and divergence
# --------------------------------------------------------------------------------------

ALPHAS = [0.0, 0.5, 1 - 1e-9, 1.0, 1 + 1e-12, 2.0, 5.0, np.inf]

PAIRS = [
    (np.log([0.5, 0.5]), np.log([0.9, 0.1])),
    (np.array([0.3, -1.0, 2.0, 0.0]), np.array([1.0, 0.5, -0.5, 0.2])),
    (np.array([0.0, -np.inf, 1.0, 2.0]), np.array([0.5, 0.0, -1.0, 1.0])),   # P = 0 somewhere
    (np.array([0.0, 1.0, 2.0]), np.array([0.5, -np.inf, 1.0])),              # Q = 0 < P
    (np.array([0.0, -np.inf]), np.array([-np.inf, 0.0])),                    # disjoint
    (np.array([5.0, -3.0, 0.0]), np.array([5.001, -3.002, 0.0005])),         # nearby
]


@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_renyi_matches_mpmath(pair):
    lp, lq = PAIRS[pair]
    d = renyi_divergence(lp, lq, ALPHAS)
    h = renyi_cross_entropy(lp, lq, ALPHAS)
    for a, dv, hv in zip(ALPHAS, d, h, strict=True):
        for got, kind in ((dv, "D"), (hv, "H")):
            want = _mp_renyi(lp, lq, a, kind)
            if want == mp.inf:
                assert got == np.inf, (a, kind)
            else:
                # nearby P, Q (D ~ 1e-7): alpha != 1 has absolute accuracy ~ eps max|log p|
                tol = 1e-12 if kind == "H" or pair != 5 or a == 1 else 1e-8
                assert _rel(got, want) < tol, (a, kind, got, want)


def test_renyi_continuous_through_one():
    lp, lq = PAIRS[1]
    kl = tiltlab.kl_divergence(lp, lq, n_threads=NT)
    assert renyi_divergence(lp, lq, 1.0) == kl
    ce = float(renyi_cross_entropy(lp, lq, 1.0))
    for a in (1 - 1e-12, 1 + 1e-12, 1 - 1e-15, 1 + 1e-15):
        assert renyi_divergence(lp, lq, a) == pytest.approx(kl, rel=2e-12)
        assert renyi_cross_entropy(lp, lq, a) == pytest.approx(ce, rel=2e-12)


@given(rows(max_rows=2, max_outcomes=10, logit_scale=5.0),
       rows(max_rows=2, max_outcomes=10, logit_scale=5.0))
def test_renyi_divergence_monotone_and_kl(a, b):
    lp = a[0]
    lq = np.resize(b[0], lp.shape)
    lq[..., 0] = 0.0  # keep every row of q non-empty after the resize
    alphas = np.array([0.0, 0.25, 0.5, 0.9, 1 - 1e-9, 1.0, 1 + 1e-9, 1.5, 2.0, 5.0, 20.0,
                       np.inf])
    d = renyi_divergence(lp[:, None, :], lq[:, None, :], alphas)       # (rows, alphas)
    assert np.all(d >= 0)
    fin = np.where(np.isfinite(d), d, 1e300)
    assert np.all(np.diff(fin, axis=1) >= -1e-12 * (1 + np.abs(fin[:, 1:])))
    kl = tiltlab.kl_divergence(lp, lq, n_threads=NT)
    assert np.array_equal(d[:, 5], kl)
    fin_kl = np.isfinite(kl)
    assert np.allclose(d[fin_kl, 4], kl[fin_kl], rtol=1e-7, atol=1e-15)


@given(rows(max_rows=2, max_outcomes=10, logit_scale=5.0), st.sampled_from(ALPHAS))
def test_renyi_uniform_and_entropy_relations(a, alpha):
    lp = a[0]
    v = lp.shape[-1]
    u = np.zeros_like(lp)
    # H_alpha(P; U) = log V for every alpha
    assert_allclose(renyi_cross_entropy(lp, u, alpha), math.log(v), rtol=1e-13)
    # D_alpha(P || U) = log V - H_alpha(P; P) (the Rényi entropy of P)
    h = renyi_cross_entropy(lp, lp, alpha)
    d = renyi_divergence(lp, u, alpha)
    assert np.all(np.abs(d - (math.log(v) - h)) <= 1e-12 * (1 + math.log(v)))


def test_renyi_support_rules():
    p = np.array([0.0, 0.0])
    q = np.array([0.0, -np.inf])
    # Q = 0 < P: H infinite for alpha <= 1, those terms vanish for alpha > 1
    h = renyi_cross_entropy(p, q, [0.5, 1.0, 2.0, np.inf])
    assert h[:2].tolist() == [np.inf, np.inf]
    assert_allclose(h[2:], [math.log(2.0), 0.0], atol=1e-15)
    # D: alpha < 1 from log P(S): D_alpha = alpha log 2 / (1 - alpha); alpha >= 1 infinite
    d = renyi_divergence(p, q, [0.0, 0.5, 1.0, 2.0, np.inf])
    assert_allclose(d[:2], [0.0, math.log(2.0)], atol=1e-15)
    assert np.all(d[2:] == np.inf)
    # disjoint supports: D and H infinite for every alpha
    assert np.all(renyi_divergence([0.0, -np.inf], [-np.inf, 0.0], ALPHAS) == np.inf)
    assert np.all(renyi_cross_entropy([0.0, -np.inf], [-np.inf, 0.0], ALPHAS) == np.inf)
    # identical distributions: D = 0 for every alpha
    assert np.all(renyi_divergence([1.0, 2.0, -np.inf], [1.0, 2.0, -np.inf], ALPHAS) == 0)


def test_renyi_broadcasting():
    lp = np.log([[0.5, 0.5], [0.2, 0.8]])
    lq = np.log([0.9, 0.1])
    got = renyi_divergence(lp, lq, np.array([[0.5], [2.0], [np.inf]]))
    assert got.shape == (3, 2)
    assert got[1, 0] == pytest.approx(math.log(0.25 / 0.9 + 0.25 / 0.1), rel=1e-14)
    assert isinstance(renyi_cross_entropy(lp[0], lq, 2.0), float)
    assert renyi_divergence(lp, lq, np.empty((0, 1))).shape == (0, 2)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [renyi_divergence, renyi_cross_entropy])
def test_renyi_bad_input(fn):
    lp, lq = PAIRS[0]
    with pytest.raises(ValueError, match="alpha"):
        fn(lp, lq, -0.5)
    with pytest.raises(ValueError, match="alpha"):
        fn(lp, lq, np.nan)
    with pytest.raises(ValueError, match="logits_q"):
        fn(lp, [0.0, 1.0, 2.0], 2.0)
    with pytest.raises(ValueError, match="logits_p"):
        fn([np.nan, 0.0], lq, 2.0)
    with pytest.raises(ValueError, match="logits_q"):
        fn(lp, [-np.inf, -np.inf], 2.0)
    with pytest.raises(ValueError, match="alpha"):
        fn(np.zeros((2, 2)), lq, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="logits_p"):
        fn(np.array([1j, 0]), lq, 2.0)


def test_rate_and_cgf_bad_input(ternary):
    lg, r = ternary
    with pytest.raises(ValueError, match="x"):
        rate_function(lg, r, np.nan)
    with pytest.raises(ValueError, match="x"):
        rate_function(lg, r, [0.5, np.nan])
    with pytest.raises(ValueError, match="lam"):
        rate_function(lg, r, 0.5, np.nan)
    with pytest.raises(ValueError, match="rewards"):
        rate_function(lg, [0.0, 1.0], 0.5)
    with pytest.raises(ValueError, match="rewards"):
        rate_function(lg, [0.0, np.nan, 1.0], 0.5)
    with pytest.raises(ValueError, match="logits"):
        rate_function([-np.inf] * 3, r, 0.5)
    with pytest.raises(ValueError, match="x shape"):
        rate_function(np.zeros((2, 3)), r, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="t"):
        scaled_cgf(lg, r, np.nan)
    with pytest.raises(ValueError, match="lam"):
        scaled_cgf(lg, r, 1.0, [np.nan])
    with pytest.raises(ValueError, match="rewards"):
        scaled_cgf(lg, [0.0, np.inf, 1.0], 1.0)
    with pytest.raises(ValueError, match="lam"):
        rate_function_sequence(np.tile(lg, (2, 1)), np.tile(r, (2, 1)), [0.5], [0.0, 1.0])
    with pytest.raises(ValueError, match="x"):
        rate_function_sequence(np.tile(lg, (2, 1)), np.tile(r, (2, 1)), [np.nan], 0.0)


# ---------------------------------------------------------------------------------------
# against the NumPy twins in tiltlab.reference
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference(seed):
    from tiltlab import reference as ref

    rng = np.random.default_rng(seed)
    lg = rng.normal(size=6) * 1.5
    lq = rng.normal(size=6)
    if seed % 2:
        lg[2] = -np.inf
        lq[4] = -np.inf
    r = rng.integers(-3, 4, size=6).astype(float)
    sup = lg > -np.inf
    lo, hi = r[sup].min(), r[sup].max()
    for lam in (0.0, 0.7, -1.3):
        for x in (lo, lo + 0.3 * (hi - lo), 0.5 * (lo + hi), hi - 0.1, hi, hi + 1.0):
            want = ref.rate_function(lg, r, x, lam)
            got = rate_function(lg, r, x, lam)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        for t in (-0.9, 0.3, 2.5):
            assert scaled_cgf(lg, r, t, lam) == pytest.approx(ref.scaled_cgf(lg, r, t, lam),
                                                              rel=1e-12, abs=1e-14)
    for alpha in (0.0, 0.5, 1.0, 2.0, 7.0, np.inf):
        assert renyi_divergence(lg, lq, alpha) == pytest.approx(
            ref.renyi_divergence(lg, lq, alpha), rel=1e-12, abs=1e-14)
        assert renyi_cross_entropy(lg, lq, alpha) == pytest.approx(
            ref.renyi_cross_entropy(lg, lq, alpha), rel=1e-12, abs=1e-14)
