"""Every answer right or refused (issue 15, items 1-6): shift invariance of the logits at any
offset, level probabilities without cancellation, lam * r beyond the double range,
subnormal and huge reward spreads, solve_lambda at every reward scale, extreme logits in
the policy laws.

The oracle reads the logits as the doubles actually passed: ``x + 1e15`` is rounded to
multiples of 1/8 before anything sees it, so a shifted input is compared with the same
doubles minus their maximum (an exact subtraction for the outcomes that carry mass), or
with an mpmath value computed from those doubles (tests/oracle.py).  The fuzz versions of
these properties, on every SIMD variant, are in tests/test_fuzz_properties.py.
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import oracle
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref

VARIANTS = tiltlab.simd.available()
DBL_MAX = float(np.finfo(np.float64).max)
TERNARY = (np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0]))

# --------------------------------------------------------------------------------------
# 1. shift invariance
# --------------------------------------------------------------------------------------

#: offsets of the logits: the issue's (1e10, 1e15, 1e300), both signs, and more decades
OFFSETS = [1e5, 1e10, 1e15, -1e15, 2.0**60, 1e100, 1e300, -1e300, 0.5 * DBL_MAX]


def _shifted(x, off):
    """(the doubles passed, the same doubles minus their maximum)."""
    y = np.asarray(x, dtype=np.float64) + off
    return y, y - np.max(y[np.isfinite(y)])


@pytest.mark.parametrize("variant", VARIANTS)
def test_issue_reproducers_tilt(variant):
    x = np.array([0.0, -0.5, -3.0])
    want = float(mp.mpf(-0.5) - mp.log(1 + mp.exp(-0.5) + mp.exp(-3)))  # -1.0045969...
    with tiltlab.simd.use(variant):
        for off in (1e10, 1e15):  # x + off is exact here: the same distribution as x
            got = tiltlab.tilt(x + off, [0.0, 0.0, 0.0], 0.0)
            assert got[1] == pytest.approx(want, rel=1e-15, abs=0)
        # at 1e300 the three logits are one double: the uniform distribution
        assert_allclose(tiltlab.tilt(x + 1e300, [0.0, 1.0, 3.0], 0.0), -np.log(3.0), rtol=1e-15)
        assert tiltlab.kl_max([1e300, 1e300], [0.0, 1.0]) == pytest.approx(np.log(2.0), 1e-15)


@pytest.mark.parametrize("variant", VARIANTS)
def test_issue_reproducer_best_of_n(variant):
    y = np.log([0.5, 0.3, 0.2]) + 1e15  # the doubles actually passed
    lp, kl, er, win = oracle.best_of_n(y, [0.0, 1.0, 3.0], math.log(4.0))
    with tiltlab.simd.use(variant):
        b = tiltlab.best_of_n(y, [0.0, 1.0, 3.0], 4)
        assert b.kl == pytest.approx(float(kl), rel=1e-13)  # 0.56090..., was 0.56403
        assert b.expected_reward == pytest.approx(float(er), rel=1e-14)  # 2.1455, was 2.0969
        assert b.win_rate == pytest.approx(float(win), rel=1e-14)
        assert_allclose(b.log_probs, [float(v) for v in lp], rtol=1e-14)
        # every result at 1e300: the uniform distribution, not 0
        u = tiltlab.best_of_n(np.full(3, 1e300), [0.0, 1.0, 3.0], 4)
        lp, kl, er, win = oracle.best_of_n(np.zeros(3), [0.0, 1.0, 3.0], math.log(4.0))
        assert (u.kl, u.expected_reward, u.win_rate) == pytest.approx(
            (float(kl), float(er), float(win)), rel=1e-14)


def _public_results(lg, rw):
    """Every public function that takes logits, on one row of logits (V = 3 or 6) with
    lattice rewards: a dict of name -> array of results."""
    lam = 0.7
    out = {}
    st = tiltlab.tilt_stats(lg, rw, [0.0, lam, -2.0, 800.0, np.inf, -np.inf])
    out["tilt_stats"] = np.array(st)
    out["tilt"] = tiltlab.tilt(lg, rw, np.array([[lam], [800.0], [np.inf]]))
    out["cumulants"] = tiltlab.cumulants(lg, rw, 5, np.array([[0.0], [lam], [-3.0]]))
    budgets = [0.0, 1e-9, 0.1, 0.5, 10.0]
    out["solve_lambda"] = tiltlab.solve_lambda(lg, rw, budgets)
    out["kl_max"] = np.array([tiltlab.kl_max(lg, rw)])
    out["frontier"] = tiltlab.frontier(lg, rw, budgets)
    b = tiltlab.best_of_n(lg, rw, log_n=[0.0, 0.3, math.log(4.0), 50.0])
    out["best_of_n"] = np.array([b.kl, b.expected_reward, b.win_rate])
    out["best_of_n.log_probs"] = b.log_probs
    out["best_of_n.kl_to_tilted"] = b.kl_to_tilted(np.array([[lam], [60.0], [1e308]]))
    out["sample_best_of_n"] = tiltlab.sample_best_of_n(lg, rw, 4, size=200, rng=3)
    out["simulate_best_of_n"] = tiltlab.simulate_best_of_n(lg, rw, 4, size=200, rng=3)
    lv = tiltlab.reward_levels(lg, rw)
    out["reward_levels"] = np.concatenate([lv.values, lv.log_masses])
    for name, law in [("soft_best_of_n", tiltlab.soft_best_of_n(lg, rw, 4, 0.7)),
                      ("worst_of_n", tiltlab.worst_of_n(lg, rw, 4)),
                      ("best_of_poisson", tiltlab.best_of_poisson(lg, rw, 3.0)),
                      ("rewind_and_repeat", tiltlab.rewind_and_repeat(lg, rw, 0.3)),
                      ("calibrated_tilt", tiltlab.calibrated_tilt(lg, rw, 2.0))]:
        out[name] = np.concatenate([[law.kl, law.expected_reward, law.win_rate],
                                    law.log_probs, np.atleast_1d(law.kl_to_tilted(lam))])
    for method, grid in [("tilted", [0.5, 2.0]), ("best_of_n", [2.0, 8.0]),
                         ("calibrated_tilt", [1.0, 3.0])]:
        f = tiltlab.policy_frontier(lg, rw, method, grid)
        out["policy_frontier " + method] = np.array([f.kl, f.expected_reward, f.win_rate])
    out["rate_function"] = tiltlab.rate_function(lg, rw, [0.5, 1.0, 2.5, 3.0], lam)
    out["scaled_cgf"] = tiltlab.scaled_cgf(lg, rw, [1e-9, 0.3, -2.0, np.inf], lam)
    out["renyi_divergence"] = tiltlab.renyi_divergence(lg, lg[::-1], [0.5, 1.0, 3.0, 1e308])
    out["renyi_cross_entropy"] = tiltlab.renyi_cross_entropy(lg, lg[::-1], [0.5, 1.0, 3.0])
    out["kl_divergence"] = np.array([tiltlab.kl_divergence(lg, lg[::-1])])
    m = tiltlab.Memoryless(lg, rw, 40)
    lam_m = m.solve_lambda(0.2)
    sb = m.best_of_n(log_n=40 * 0.2)
    law = m.reward_log_pmf()
    out["Memoryless"] = np.concatenate([
        [m.kl_max, lam_m, sb.kl, sb.expected_reward, sb.win_rate, sb.kl_to_tilted(lam_m)],
        np.array(m.tilt_stats(lam_m)), m.cumulants(3, lam_m),
        m.rate_function([0.5, 1.0]), m.scaled_cgf([0.2, -1.0]), law.log_pmf,
        sb.sample_rewards(50, rng=1)])
    out["Memoryless.sample"] = sb.sample(5, rng=2)
    study = tiltlab.estimator_study(b_one := tiltlab.best_of_n(lg, rw, 8), 64, 3, rng=5)
    out["estimator_study"] = np.array([study.mean, study.std])
    est = tiltlab.kl_estimators(tiltlab.sample_best_of_n(lg, rw, 8, size=64, rng=6),
                                b_one.log_probs, tiltlab.tilt(lg, rw, 0.0))
    out["kl_estimators"] = np.array([est.k1, est.k2, est.k3])
    return out


@pytest.mark.parametrize("off", OFFSETS)
def test_every_function_that_takes_logits_is_shift_invariant(off):
    """f(x + c) = f(x') for every public function, x' = (x + c) - max(x + c): the same
    doubles, shifted exactly (SPEC section 1)."""
    rng = np.random.default_rng(7)
    for lg0, rw in [TERNARY,
                    (rng.normal(size=6) * 2.0, np.array([0.0, 2.0, 1.0, 2.0, 5.0, 3.0]))]:
        y, y0 = _shifted(lg0, off)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error")
            got, want = _public_results(y, rw), _public_results(y0, rw)
        for name in want:
            g, w = np.asarray(got[name], dtype=float), np.asarray(want[name], dtype=float)
            assert not np.isnan(w).any(), name
            assert_allclose(g, w, rtol=2e-13, atol=1e-14, err_msg=f"{name} at offset {off:g}")


# --------------------------------------------------------------------------------------
# 2. level probabilities without cancellation
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_level_keeps_its_relative_accuracy(variant):
    lg, rw = np.log([0.5, 1e-15, 0.5]), np.array([0.0, 1.0, 2.0])
    with tiltlab.simd.use(variant):
        b = tiltlab.best_of_n(lg, rw, 1)
        # N = 1 is p itself: log(1e-15 / (1 + 1e-15)), was -34.661 (11 % off)
        assert b.log_probs[1] == pytest.approx(math.log(1e-15 / (1 + 1e-15)), rel=1e-15)
        for n in (1.0, 1.5, 2.0, 4.0, 1e3, 1e12):
            got = tiltlab.best_of_n(lg, rw, n).log_probs
            want = oracle.best_of_n(lg, rw, math.log(n))[0]
            # (the oracle at 60 digits rounds log(1 - 2^-1000) to 0)
            assert_allclose(got, [float(v) for v in want], rtol=2e-14, atol=1e-300,
                            err_msg=f"N = {n}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_n_equal_one_is_p_exactly(variant):
    rng = np.random.default_rng(3)
    lg, rw = rng.normal(size=500) * 3, np.round(rng.normal(size=500), 1)
    with tiltlab.simd.use(variant):
        for b in (tiltlab.best_of_n(lg, rw, 1), tiltlab.best_of_n(lg, rw, log_n=0.0)):
            assert b.kl == 0.0  # was 1.6e-16
            assert b.win_rate == 0.5
            assert_allclose(b.log_probs, tiltlab.tilt(lg, rw, 0.0), rtol=1e-15, atol=0)
            assert b.expected_reward == pytest.approx(tiltlab.tilt_stats(lg, rw, 0.0).mean,
                                                      rel=1e-14)


def test_level_weights_below_the_double_range_stay_in_log_space():
    # p(1) = e^-1e308: best-of-4 puts 4 e^-1e308 there, a log-probability of -1e308 + log 4
    b = tiltlab.best_of_n([DBL_MAX, 0.0], [0.0, 1.0], 4)
    assert b.log_probs[0] == 0.0
    assert b.log_probs[1] == pytest.approx(-DBL_MAX, rel=1e-15)
    assert b.kl == 0.0 and b.expected_reward == 0.0


# --------------------------------------------------------------------------------------
# 3. lam * r beyond the double range
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_lambda_times_reward_overflow(variant):
    log2 = math.log(2.0)
    with tiltlab.simd.use(variant):
        # lam r overflows; lam (r - r_top) does not: p on the top outcome
        assert tiltlab.tilt_stats([0.0, 0.0], [998.0, 1003.0], 1e306).kl == pytest.approx(
            log2, rel=1e-15)  # was 0
        s = tiltlab.tilt_stats([0.0, 0.0], [1.5, 2.0], DBL_MAX)
        assert (s.kl, s.mean, s.variance) == (pytest.approx(log2, rel=1e-15), 2.0, 0.0)
        assert s.log_partition == np.inf  # lam * 2 - log 2 is beyond the double range
        # log phi = (-lam 5 - log(1 + e^-5e306), -log(1 + e^-5e306)): finite, exact
        assert_array_equal(tiltlab.tilt([0.0, 0.0], [998.0, 1003.0], 1e306), [-5e306, 0.0])
        assert_array_equal(tiltlab.tilt([0.0, -np.inf], [0.0, 1e5], 1e306), [0.0, -np.inf])
        # the tilt is invariant under r -> r - c
        lg, r = np.array([709.78, 0.0]), np.array([99998.0, 100003.0])
        want = tiltlab.solve_lambda(lg, r - 99998.0, 354.89)  # 141.95678
        assert tiltlab.solve_lambda(lg, r, 354.89) == pytest.approx(want, rel=1e-12)
        # logits and lam r both of the size of DBL_MAX, cancelling to a moderate tilt:
        # l = (M, -M), r = (0, 2), lam = M puts (l + lam r) at (M, M): phi = (1/2, 1/2)
        assert_allclose(tiltlab.tilt([DBL_MAX, -DBL_MAX], [0.0, 2.0], DBL_MAX),
                        [-log2, -log2], rtol=1e-15)


# --------------------------------------------------------------------------------------
# 4. subnormal and huge reward spreads
# --------------------------------------------------------------------------------------

TINY = 5e-324


@pytest.mark.parametrize("variant", VARIANTS)
def test_subnormal_reward_spread(variant):
    with tiltlab.simd.use(variant):
        got = tiltlab.cumulants([0.0, 0.0], [TINY, 0.0], 4)  # was all NaN
        # mean 2^-1075 (one subnormal ulp either way), the rest below the double range
        assert_allclose(got, [TINY / 2, 0.0, 0.0, 0.0], rtol=0, atol=TINY)
        r = [1e-300, 1.0000000001e-300]
        k = tiltlab.cumulants([0.0, 0.0], r, 3)
        e = 996  # the same problem in units of its spread, 2^-996
        want = ref.cumulants(np.zeros(2), np.ldexp(np.array(r), e), 3, 0.0)
        assert_allclose(k, np.ldexp(want, -e * np.arange(1, 4)), rtol=1e-12, atol=1e-320)
        # scaled_cgf: (1/n) log E exp(t R) = log((1 + e^{t 5e-324}) / 2), was NaN
        for t in (0.5, 1e300, 1.5e308):
            with mp.workdps(40):
                want = float(mp.log((1 + mp.exp(mp.mpf(t) * mp.mpf(TINY))) / 2))
            assert tiltlab.scaled_cgf([0.0, 0.0], [TINY, 0.0], t) == pytest.approx(
                want, rel=1e-13, abs=1e-320)
        assert tiltlab.tilt_stats([0.0, 0.0], [TINY, 0.0], 1e308).kl == pytest.approx(
            float(oracle.tilt_stats([0.0, 0.0], [TINY, 0.0], 1e308)[3]), rel=1e-13)


@pytest.mark.parametrize("variant", VARIANTS)
def test_huge_reward_spread(variant):
    lg = np.array([0.0, -0.5, -3.0])
    r = np.array([0.0, 1e300, 3e300])
    with tiltlab.simd.use(variant):
        # phi_0.5 lives on 3e300 (e^-1e300 elsewhere): no NaN higher cumulants
        assert_array_equal(tiltlab.cumulants(lg, r, 4, 0.5), [3e300, 0.0, 0.0, 0.0])
        # under p the variance is ~7e599: inf, as cumulants says (was 0)
        st = tiltlab.tilt_stats(lg, r, 0.0)
        k = tiltlab.cumulants(lg, r, 4, 0.0)
        assert st.variance == np.inf and k[1] == np.inf
        want = oracle.cumulants(lg, r / 1e300, 4, 0.0)
        assert st.mean == pytest.approx(float(want[0]) * 1e300, rel=1e-13)
        assert np.all(np.sign(k[1:]) == [np.sign(float(w)) for w in want[1:]])
        assert np.all(np.isinf(k[1:]))


# --------------------------------------------------------------------------------------
# 5. solve_lambda at every reward scale
# --------------------------------------------------------------------------------------

SCALES = [1e-300, 1e-200, 1e-100, 1e-10, 1.0, 3.0, 1e10, 1e100, 1e200, 1e300]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scale", SCALES)
def test_solve_lambda_at_every_reward_scale(scale, variant):
    lg, r = TERNARY
    top = float(tiltlab.kl_max(lg, r))
    budgets = np.array([1e-10, 1e-6, 0.1, 1.0, 0.5 * top, top * (1 - 1e-9), top])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tiltlab.simd.use(variant):
            lam = tiltlab.solve_lambda(lg, r * scale, budgets)
            kl = tiltlab.tilt_stats(lg, r * scale, lam).kl
            unit = tiltlab.solve_lambda(lg, r, budgets)
            best = tiltlab.frontier(lg, r * scale, budgets)
    assert np.isinf(lam[-1]) and np.all(np.isfinite(lam[:-1]))
    assert_allclose(kl[:-1], budgets[:-1], rtol=1e-12)  # was KL 1.609 for 0.1 at 1e200
    assert_allclose(lam[:-1] * scale, unit[:-1], rtol=1e-12)
    assert_allclose(best, scale * tiltlab.frontier(lg, r, budgets), rtol=1e-12)
    # a budget of 1e-300 needs lam ~ 1e-150 / scale: a double up to scale ~ 1e158, beyond
    # that a clear error (never a silent 0 or a wrong lam)
    if scale < 1e150:
        lam = tiltlab.solve_lambda(lg, r * scale, 1e-300)
        assert tiltlab.tilt_stats(lg, r * scale, lam).kl == pytest.approx(1e-300, rel=1e-12)
    else:
        with pytest.raises(ValueError, match="below the smallest normal float64"):
            tiltlab.solve_lambda(lg, r * scale, 1e-300)


@pytest.mark.parametrize("variant", VARIANTS)
def test_solve_lambda_rare_best_outcome(variant):
    with mp.workdps(40):
        want = float(mp.findroot(lambda t: oracle.tilt_stats([-300.0, 0.0], [1.0, 0.0], t)[3]
                                 - 150, mp.mpf(300.009)))  # 300.00924...
    with tiltlab.simd.use(variant), warnings.catch_warnings():
        warnings.simplefilter("error")
        for off in (-100.0, -300.0, -540.0, -700.0):
            lam = tiltlab.solve_lambda([off, 0.0], [1.0, 0.0], -off / 2)
            assert tiltlab.tilt_stats([off, 0.0], [1.0, 0.0], lam).kl == pytest.approx(
                -off / 2, rel=1e-12)
        assert tiltlab.solve_lambda([-300.0, 0.0], [1.0, 0.0], 150.0) == pytest.approx(
            want, rel=1e-12)  # was 1.5e6


@pytest.mark.parametrize("variant", VARIANTS)
def test_solve_lambda_refuses_a_root_beyond_the_double_range(variant):
    with tiltlab.simd.use(variant):
        # spread 5e-324: kl(lam) = 0.1 needs lam ~ 1e323
        with pytest.raises(ValueError, match="above the largest float64.*rescale the rewards"):
            tiltlab.solve_lambda([0.0, 0.0], [TINY, 0.0], 0.1)
        # spread 1e301, budget 1e-300: lam ~ 1e-451
        with pytest.raises(ValueError, match=r"below the smallest normal float64"):
            tiltlab.solve_lambda([0.0, 0.0], [1e301, 0.0], 1e-300)
        with pytest.raises(ValueError, match=r"batch index \(1,\)"):
            tiltlab.solve_lambda([[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [TINY, 0.0]], 0.1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_joint_solve_at_every_scale(variant):
    lg = np.log([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    r = np.array([[0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    with tiltlab.simd.use(variant):
        unit = tiltlab.solve_lambda(lg, r, 0.4, joint=True)
        for scale in (1e-250, 1e-5, 1e150):
            lam = tiltlab.solve_lambda(lg, r * scale, 0.4, joint=True)
            assert lam * scale == pytest.approx(unit, rel=1e-12)
            assert np.sum(tiltlab.tilt_stats(lg, r * scale, lam).kl) == pytest.approx(0.4, 1e-12)


# --------------------------------------------------------------------------------------
# 6. extreme logits in the policy laws
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("top", [DBL_MAX, 1.79e308])
def test_policy_laws_at_extreme_logits(top):
    lg, r = np.array([top, 0.0, -top]), np.array([0.0, 1.0, 3.0])
    laws = [tiltlab.worst_of_n(lg, r, 4), tiltlab.soft_best_of_n(lg, r, 4, 1.0),
            tiltlab.best_of_poisson(lg, r, 2.0), tiltlab.rewind_and_repeat(lg, r, 0.5),
            tiltlab.calibrated_tilt(lg, r, 2.0), tiltlab.best_of_n(lg, r, 4)]
    for law in laws:  # p = (1, e^-top, 0): every policy is p there (KL was NaN)
        assert law.kl == 0.0 and law.expected_reward == 0.0, law
        lp = np.asarray(law.log_probs)
        assert lp[0] == 0.0 and np.all(lp <= 0.0), lp  # soft: +9.9e-32 was returned
        assert lp[2] == -np.inf
    for method, grid in [("tilted", [1.0, 1e308]), ("best_of_n", [4.0]),
                         ("worst_of_n", [4.0]), ("best_of_poisson", [2.0]),
                         ("rewind_and_repeat", [0.5]), ("calibrated_tilt", [2.0])]:
        f = tiltlab.policy_frontier(lg, r, method, grid)
        assert not np.isnan(np.concatenate([f.kl, f.expected_reward, f.win_rate])).any()
    f = tiltlab.policy_frontier(lg, r, "soft_best_of_n", [0.5, 2.0], n=4)
    assert np.all(f.kl == 0.0)
    # KL(pi_N || phi_lam) at lam = 1e308: phi still lives on outcome 0 (l + lam r is
    # 1.8e308 there against 1.2e308 for outcome 2), so the KL is 0 (was NaN)
    assert tiltlab.best_of_n(lg, r, 4).kl_to_tilted(1e308) == 0.0
    assert tiltlab.worst_of_n(lg, r, 4).kl_to_tilted(1e308) == 0.0


def test_sequence_kl_to_tilted_when_lam_step_overflows():
    # best-of-N with N = e^1e4 over 10 tokens lives on the top value 10 * step; phi_lam^n
    # too once lam * step is beyond the double range (the limit, exactly): KL 0, not inf
    for step in (1.0, 2.0, 0.5):
        b = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, step], 10).best_of_n(log_n=1e4)
        assert np.isfinite(b.log_probs).sum() == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = b.kl_to_tilted([1e308, DBL_MAX, np.inf])
        # (KL(pi || p^n) = 10 log(1 / 0.3) less the tilt's KL: zero to rounding)
        assert_allclose(got, [0.0, 0.0, 0.0], rtol=0, atol=1e-13)


def test_logits_beyond_the_double_range_are_refused():
    with pytest.raises(ValueError, match=r"logits contains \+inf"):
        tiltlab.soft_best_of_n([1.8e308, 0.0, -1.8e308], [0.0, 1.0, 3.0], 4, 1.0)


def test_renyi_divergence_of_huge_order_is_bounded_by_the_max_ratio():
    lp, lq = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    d = tiltlab.renyi_divergence(lp, lq, [2.0, 1e6, 1e308, np.inf])
    d_inf = float(np.max((lp - ref.logsumexp(lp)) - (lq - ref.logsumexp(lq))))  # 2.4767
    assert d[-1] == pytest.approx(d_inf, rel=1e-15)
    assert np.all(np.diff(d) >= 0) and d[2] == pytest.approx(d_inf, rel=1e-15)  # was inf
    h = tiltlab.renyi_cross_entropy(lp, lq, [1e308, np.inf])
    assert h[0] == pytest.approx(h[1], rel=1e-15)


def test_best_of_n_with_log_n_zero_is_p():
    b = tiltlab.best_of_n(*TERNARY, log_n=0.0)
    assert b.kl == 0.0  # was 1.6e-16
    assert b.kl_to_tilted(0.0) == 0.0


# --------------------------------------------------------------------------------------
# the cases that were parked as known bugs before issue 15, now ordinary regression tests
# --------------------------------------------------------------------------------------

def _huge_tie_cases():
    lg, rw = np.array([1e300, 1e300]), np.array([0.0, 1.0])
    log2 = np.log(2.0)
    lg3, rw3 = np.full(3, 1e300), np.array([0.0, 0.0, 1.0])
    w_top = 1.0 - (2.0 / 3.0) ** 4  # best-of-4 of p = (1/3, 1/3, 1/3), top level {2}
    return {
        "kl_max": (lambda: tiltlab.kl_max(lg, rw), log2),
        "tilt_stats_inf": (lambda: tiltlab.tilt_stats(lg, rw, np.inf).kl, log2),
        "tilt_stats_700": (lambda: tuple(tiltlab.tilt_stats(lg, rw, 700.0)[i] for i in (0, 1, 3)),
                           (700.0 - log2, 1.0, log2)),
        "tilt_inf": (lambda: tiltlab.tilt(np.full(3, 1e300), [0.0, 1.0, 1.0], np.inf),
                     [-np.inf, -log2, -log2]),
        "tilt_1": (lambda: tiltlab.tilt(lg, [0.0, 1000.0], 1.0), [-1000.0, 0.0]),
        "cumulants": (lambda: tiltlab.cumulants(lg3, [-1e5, 1e5, 0.0], 1, 1.0), [1e5]),
        "solve_lambda": (lambda: tiltlab.solve_lambda(lg, rw, 0.3),
                         float(ref.solve_lambda(lg - lg.max(), rw, 0.3))),
        "best_of_n": (lambda: tiltlab.best_of_n(lg3, rw3, n=4).log_probs,
                      np.log([(1 - w_top) / 2, (1 - w_top) / 2, w_top])),
        "soft_best_of_n": (lambda: tiltlab.soft_best_of_n(lg, rw, 2, 1.0).log_probs,
                           ref.soft_best_of_n(lg - lg.max(), rw, 2, 1.0)),
    }


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(_huge_tie_cases()))
def test_huge_tied_logits(case, variant):
    """Logits (1e300, 1e300) are p = (1/2, 1/2), exactly as (0, 0) (SPEC section 1)."""
    call, want = _huge_tie_cases()[case]
    with tiltlab.simd.use(variant):
        got = call()
    assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("variant", tiltlab.simd.available())
@pytest.mark.parametrize("lam", [0.0, 1e-300])
def test_moments_made_of_subnormal_relative_weights(variant, lam):
    """A tilted mean made only of a weight below 2^-1022 of the largest (e^-720), times a
    reward range near the top of the double range: a normal number (~1e-13), which a
    weight flushed to zero would make 0.  The hot loops' fast exponentials keep
    subnormal results wherever weights enter moments."""
    mp.mp.dps = 50
    logits = np.array([0.0, -720.0])
    rewards = np.array([0.0, 1e300])
    with tiltlab.simd.use(variant):
        st = tiltlab.tilt_stats(logits, rewards, lam)
    w = [mp.e ** (mp.mpf(a) + mp.mpf(lam) * mp.mpf(b))
         for a, b in zip(logits, rewards, strict=True)]
    mean = sum(wi * mp.mpf(b) for wi, b in zip(w, rewards, strict=True)) / sum(w)
    # the weight e^-720 is subnormal: about 42 significant bits
    assert float(st.mean) == pytest.approx(float(mean), rel=1e-10)
