"""The NumPy reference for Markov token models (SPEC section 9) against exhaustive
enumeration of all V^n sequences (float64 and mpmath), the memoryless model (equal
transition rows), closed forms of the Perron root and a high-precision deep tail."""

from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np
import pytest
from markov_chains import enumerate_sequences, random_chain
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref

NEG = -np.inf


def lse(x):
    """log-sum-exp by max shift and an exactly rounded sum (np.logaddexp.reduce
    accumulates ~1e-12 over 65536 terms)."""
    m = np.max(x)
    return m + np.log(math.fsum(np.exp(x - m)))


def brute_stats(log_p, big_r, lam):
    x = log_p + lam * big_r
    log_z = lse(x)
    w = np.exp(x - np.max(x))
    w /= math.fsum(w)
    mean = math.fsum(w * big_r)
    var = math.fsum(w * (big_r - mean) ** 2)
    kl = math.fsum(w * (lam * big_r - log_z))
    return log_z, mean, var, kl


def brute_law(log_p, big_r):
    values = np.unique(big_r)
    log_pmf = np.array([lse(log_p[big_r == val]) for val in values])
    return values, log_pmf


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


CASES = [(v, n, pt) for v, n in [(2, 1), (2, 8), (3, 2), (3, 7), (4, 5), (4, 8)]
         for pt in (False, True)]


@pytest.mark.parametrize("v, n, per_transition", CASES)
def test_stats_and_law_against_enumeration(v, n, per_transition):
    errs = []
    for seed in range(2):
        l0, lt, rw, r0 = random_chain(100 * v + 10 * n + seed, v, per_transition,
                                      offset=1.5 * seed)
        _, log_p, big_r = enumerate_sequences(l0, lt, rw, n, r0)
        for lam in (-1.3, 0.4, 2.0):
            got = ref.markov_tilt_stats(l0, lt, rw, n, lam, initial_rewards=r0)
            want = brute_stats(log_p, big_r, lam)
            for g, w in zip(got, want, strict=True):
                if abs(w) > 1e-9:     # (a variance or KL of 0 is checked below)
                    errs.append(rel(g, w))
                else:
                    assert abs(g) <= 1e-13
        values, log_pmf = ref.markov_reward_law(l0, lt, rw, n, initial_rewards=r0)
        bv, blaw = brute_law(log_p, big_r)
        finite = log_pmf > -np.inf
        assert_allclose(values[finite], bv, rtol=0, atol=1e-9)
        # relative error of each probability = absolute error of its log
        errs.append(float(np.max(np.abs(log_pmf[finite] - blaw))))
        assert np.isneginf(log_pmf[~finite]).all()
        assert finite[0] and finite[-1]
    assert max(errs) <= 1e-12, max(errs)


def test_stats_against_mpmath():
    """Every statistic to 1e-13 of a 40-digit enumeration (incl. small tilts, where the
    KL is far below lam * E R)."""
    l0, lt, rw, r0 = random_chain(7, 3, True, offset=3.0)
    n = 5
    ys, _, _ = enumerate_sequences(l0, lt, rw, n, r0)
    with mp.workdps(40):
        lz0 = mp.log(mp.fsum(mp.e ** mp.mpf(x) for x in l0 if x > NEG))
        lzt = [mp.log(mp.fsum(mp.e ** mp.mpf(x) for x in row if x > NEG)) for row in lt]
        logp, rr = [], []
        for y in ys:
            lp = mp.mpf(l0[y[0]]) - lz0
            lp += mp.fsum(mp.mpf(lt[a, b]) - lzt[a] for a, b in zip(y[:-1], y[1:], strict=True))
            logp.append(lp)
            rr.append(mp.mpf(r0[y[0]]) + mp.fsum(mp.mpf(rw[a, b])
                                                for a, b in zip(y[:-1], y[1:], strict=True)))
        for lam in (1e-7, -0.02, 0.9):
            lam_m = mp.mpf(lam)
            z = mp.fsum(mp.e ** (lp + lam_m * r) for lp, r in zip(logp, rr, strict=True))
            w = [mp.e ** (lp + lam_m * r) / z for lp, r in zip(logp, rr, strict=True)]
            mean = mp.fsum(wi * r for wi, r in zip(w, rr, strict=True))
            var = mp.fsum(wi * (r - mean) ** 2 for wi, r in zip(w, rr, strict=True))
            kl = mp.fsum(wi * (lam_m * r - mp.log(z)) for wi, r in zip(w, rr, strict=True))
            got = ref.markov_tilt_stats(l0, lt, rw, n, lam, initial_rewards=r0)
            for g, want in zip(got, (mp.log(z), mean, var, kl), strict=True):
                assert abs(g - float(want)) <= 1e-13 * abs(float(want)), (lam, g, want)


def test_tilted_policy_is_phi():
    """The position-dependent chain of markov_tilted_policy gives phi_lam(y) of every y."""
    l0, lt, rw, r0 = random_chain(3, 3, True)
    n, lam = 6, 0.8
    ys, log_p, big_r = enumerate_sequences(l0, lt, rw, n, r0)
    li, lq = ref.markov_tilted_policy(l0, lt, rw, n, lam, initial_rewards=r0)
    assert lq.shape == (n - 1, 3, 3)
    got = li[ys[:, 0]] + sum(lq[t][ys[:, t], ys[:, t + 1]] for t in range(n - 1))
    x = log_p + lam * big_r
    assert_allclose(got, x - np.logaddexp.reduce(x), rtol=0, atol=1e-12)
    assert_allclose(np.logaddexp.reduce(lq, axis=-1)[np.isfinite(lq).any(-1)], 0.0,
                    atol=1e-14)


@pytest.mark.parametrize("lam", [-0.7, 0.0, 0.3, 1.9])
def test_equal_rows_reproduce_memoryless(lam):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=4)
    logits[2] = NEG
    rewards = np.array([0.0, 2.0, 7.0, 3.0])
    n = 9
    lt = np.tile(logits, (4, 1))
    got = ref.markov_tilt_stats(logits, lt, rewards, n, lam)
    want = tiltlab.tilt_stats(logits, rewards, lam)
    for g, w in zip(got, want, strict=True):
        if w == 0.0:
            assert g == 0.0
        else:
            assert abs(g - n * w) <= 1e-12 * abs(n * w)
    values, log_pmf = ref.markov_reward_law(logits, lt, rewards, n)
    law = tiltlab.Memoryless(logits, rewards, n).reward_log_pmf()
    at = np.searchsorted(law.values, values)
    assert_allclose(law.values[at], values)
    assert_allclose(log_pmf, law.log_pmf[at], rtol=1e-12, atol=1e-12)
    # the memoryless lattice points absent from the Markov list are impossible there too
    rest = np.setdiff1d(np.arange(law.values.size), at)
    assert np.isneginf(law.log_pmf[rest]).all()


def test_derivative_identities():
    l0, lt, rw, r0 = random_chain(11, 4, False)
    n = 12
    for lam in (-0.9, 0.0, 0.35, 1.7):
        log_z, mean, var, kl = ref.markov_tilt_stats(l0, lt, rw, n, lam)
        h = 1e-4
        lp = ref.markov_tilt_stats(l0, lt, rw, n, lam + h)[0]
        lm = ref.markov_tilt_stats(l0, lt, rw, n, lam - h)[0]
        assert_allclose((lp - lm) / (2 * h), mean, rtol=1e-7)
        assert_allclose((lp - 2 * log_z + lm) / h**2, var, rtol=1e-5)
        assert kl >= 0.0
        assert_allclose(kl, lam * mean - log_z, rtol=1e-12, atol=1e-14)
        kp = ref.markov_tilt_stats(l0, lt, rw, n, lam + h)[3]
        km = ref.markov_tilt_stats(l0, lt, rw, n, lam - h)[3]
        assert_allclose((kp - km) / (2 * h), lam * var, rtol=1e-6, atol=1e-9)
        if lam == 0.0:
            assert log_z == 0.0 and kl == 0.0
    # tiny tilt on offset rewards: KL = lam^2 Var / 2 (1 + O(lam)), no cancellation
    rw_off = rw + 1000.0
    lam = 1e-7
    _, _, var0, _ = ref.markov_tilt_stats(l0, lt, rw_off, n, 0.0)
    kl = ref.markov_tilt_stats(l0, lt, rw_off, n, lam)[3]
    assert_allclose(kl, lam**2 * var0 / 2, rtol=1e-6)


def test_solve_lambda():
    l0, lt, rw, _ = random_chain(2, 3, False, neg_inf=False)
    n = 10
    for delta in (0.01, 0.2):
        lam = ref.markov_solve_lambda(l0, lt, rw, n, delta)
        assert_allclose(ref.markov_tilt_stats(l0, lt, rw, n, lam)[3], n * delta, rtol=1e-10)
    _, log_pmf = ref.markov_reward_law(l0, lt, rw, n)
    assert ref.markov_solve_lambda(l0, lt, rw, n, -log_pmf[-1] / n * 1.01) == np.inf


def perron_two_state(a, b, lam):
    tau = a + (1 - b) * np.exp(lam)
    return np.log(0.5 * (tau + np.sqrt(tau**2 - 4 * (a - b) * np.exp(lam))))


@pytest.mark.parametrize("lam", [-3.0, -0.2, 0.0, 0.5, 4.0])
def test_scaled_cgf_two_state_closed_form(lam):
    a, b = 0.8, 0.35
    lt = np.log([[a, 1 - a], [b, 1 - b]])
    got = ref.markov_scaled_cgf(lt, [0.0, 1.0], lam)
    assert abs(got - perron_two_state(a, b, lam)) <= 1e-14 * max(1.0, abs(got))
    # per-transition rewards landing on the same token: the same matrix
    assert_allclose(ref.markov_scaled_cgf(lt, [[0.0, 1.0], [0.0, 1.0]], lam), got,
                    rtol=1e-14, atol=1e-15)


def test_scaled_cgf_is_the_growth_rate():
    """log Z_{n+1} - log Z_n -> log rho (geometrically fast for an aperiodic chain), and
    (1/n) log Z_n -> log rho like 1/n."""
    l0, lt, rw, r0 = random_chain(21, 4, True, neg_inf=False)
    assert ref.markov_period(lt) == 1
    for lam in (-1.0, 0.6, 3.0):
        cgf = ref.markov_scaled_cgf(lt, rw, lam)
        z = [ref.markov_tilt_stats(l0, lt, rw, n, lam, initial_rewards=r0)[0]
             for n in (200, 201, 1000)]
        assert abs((z[1] - z[0]) - cgf) <= 1e-12 * max(1.0, abs(cgf))
        assert abs(z[2] / 1000 - cgf) <= 5.0 / 1000 * (1 + abs(cgf))
        assert abs(z[2] / 1000 - cgf) > 1e-12 * max(1.0, abs(cgf)) or lam == 0.0


def test_periodic_chain():
    """Deterministic 2-cycle: period 2, Lambda = lam (x + y) / 2 exactly (the reference
    accepts periodic chains: the Perron root is simple for every irreducible chain), and
    the law of R is a point mass depending on n's parity and the start."""
    cycle = np.array([[NEG, 0.0], [0.0, NEG]])
    x, y = 1.0, 3.0
    rw = np.array([[0.0, x], [y, 0.0]])
    assert ref.markov_period(cycle) == 2
    for lam in (-2.0, 0.25, 5.0):
        assert_allclose(ref.markov_scaled_cgf(cycle, rw, lam), lam * (x + y) / 2,
                        rtol=1e-14, atol=1e-15)
    for n in (4, 5):
        values, log_pmf = ref.markov_reward_law([0.0, NEG], cycle, rw, n)
        want = (n - 1) // 2 * (x + y) + (n - 1) % 2 * x
        assert_array_equal(values, [want])
        assert_array_equal(log_pmf, [0.0])
    # 3-cycle with a chord: period gcd(3, 2) = 1
    chord = np.full((3, 3), NEG)
    chord[0, 1] = chord[1, 2] = chord[2, 0] = chord[1, 0] = 0.0
    assert ref.markov_period(chord) == 1


def test_reducible_chain_is_refused():
    absorbing = np.array([[0.0, 0.0], [NEG, 0.0]])
    assert ref.markov_period(absorbing) == 0
    with pytest.raises(ValueError, match="transition_logits.*reducible"):
        ref.markov_scaled_cgf(absorbing, [0.0, 1.0], 0.5)


@pytest.mark.parametrize("depth", [80.0, 400.0])
def test_deep_tail_against_mpmath(depth):
    """Per-transition reward 1 per switch of state, switches cost e^-depth: P(R = 9) for
    n = 10 is about e^(-9 depth) (1e-313 and 1e-1563): every probability to 1e-12 relative."""
    lt = np.array([[0.0, -depth], [-depth, 0.0]])
    l0 = np.array([0.0, -1.0])
    rw = np.array([[0.0, 1.0], [1.0, 0.0]])
    n = 10
    values, log_pmf = ref.markov_reward_law(l0, lt, rw, n)
    assert_array_equal(values, np.arange(10.0))
    with mp.workdps(50):
        d = mp.mpf(depth)
        log_stay, log_switch = -mp.log(1 + mp.e ** -d), -d - mp.log(1 + mp.e ** -d)
        lz0 = mp.log(1 + mp.e ** -1)
        want = [mp.mpf(0)] * 10
        for y in itertools.product((0, 1), repeat=n):
            k = sum(a != b for a, b in zip(y[:-1], y[1:], strict=True))
            lp = (mp.mpf(l0[y[0]]) - lz0) + k * log_switch + (n - 1 - k) * log_stay
            want[k] += mp.e ** lp
        want_log = np.array([float(mp.log(w)) for w in want])
    assert want_log[-1] < np.log(1e-300)
    assert np.max(np.abs(log_pmf - want_log)) <= 1e-12 * np.max(np.abs(want_log))
    assert np.max(np.abs(log_pmf - want_log)) <= 1e-12 * 10


def test_sample_given_reward_is_the_conditional_law():
    l0, lt, rw, r0 = random_chain(4, 2, True, neg_inf=False)
    n = 6
    ys, log_p, big_r = enumerate_sequences(l0, lt, rw, n, r0)
    values, _ = brute_law(log_p, big_r)
    target = values[len(values) // 2]
    draws = ref.markov_sample_given_reward(l0, lt, rw, n, target, 3000, 1,
                                           initial_rewards=r0)
    sel = np.isclose(big_r, target)
    probs = np.exp(log_p[sel] - np.logaddexp.reduce(log_p[sel]))
    codes = draws @ (2 ** np.arange(n)[::-1])
    want_codes = ys[sel] @ (2 ** np.arange(n)[::-1])
    assert np.isin(codes, want_codes).all()       # every draw has R = target
    freq = np.array([np.mean(codes == c) for c in want_codes])
    sd = np.sqrt(probs * (1 - probs) / len(draws))
    assert np.all(np.abs(freq - probs) <= 5 * sd + 1e-12)
