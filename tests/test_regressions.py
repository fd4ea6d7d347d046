"""Regressions found by an independent review of the kernels (each failed before its fix)."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from numpy.testing import assert_allclose

import tiltlab
from tiltlab import reference as ref


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lead", [255, 256, 300, 16384, 16384 + 256])
def test_kl_divergence_with_leading_blocks_outside_the_support(dtype, lead):
    p = np.r_[np.full(lead, -np.inf), 0.0, 1.0].astype(dtype)
    q = np.r_[np.full(lead, -np.inf), 1.0, 0.0].astype(dtype)
    # (float32 input: the float64 result rounded once, SPEC section 1)
    assert_allclose(tiltlab.kl_divergence(p, q),
                    np.asarray(tiltlab.kl_divergence([0.0, 1.0], [1.0, 0.0]), dtype), rtol=1e-14)
    q2 = q.copy()
    q2[3] = 0.5  # q mass outside the support of p, in an otherwise empty block
    assert_allclose(tiltlab.kl_divergence(p, q2), np.asarray(ref.kl_divergence(p, q2), dtype),
                    rtol=1e-13)


def test_small_tilts_never_report_zero_kl():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=1000) * 2
    rewards = np.round(rng.normal(size=1000))
    lam = np.logspace(-30, -5, 60)
    s = tiltlab.tilt_stats(logits, rewards, lam)
    var0 = tiltlab.tilt_stats(logits, rewards, 0.0).variance
    assert np.all(s.kl > 0)
    assert_allclose(s.kl, lam**2 * var0 / 2, rtol=1e-4)
    for budget in (1e-40, 1e-24, 1e-12):
        lam_b = tiltlab.solve_lambda(logits, rewards, budget)
        assert_allclose(tiltlab.tilt_stats(logits, rewards, lam_b).kl, budget, rtol=1e-12)
    lg, rw = np.log([1e-10, 1.0]), np.array([0.0, 1.0])
    assert_allclose(tiltlab.tilt_stats(lg, rw, 1e-7).kl,
                    float(oracle.tilt_stats(lg, rw, 1e-7)[3]), rtol=1e-9)


def test_cumulants_of_a_concentrated_tilt_do_not_overflow():
    k = tiltlab.cumulants([0.0, 0.0], [0.0, 1.0], 8, -240.0)
    want = [float(x) for x in oracle.cumulants([0.0, 0.0], [0.0, 1.0], 8, -240.0, dps=200)]
    assert np.all(np.isfinite(k))
    assert_allclose(k, want, rtol=1e-9)
    rng = np.random.default_rng(0)
    logits, rewards = rng.normal(size=1000) * 2, np.round(rng.normal(size=1000))
    k = tiltlab.cumulants(logits, rewards, 8, 400.0)
    assert np.all(np.isfinite(k))


def test_overflowing_lam_times_reward_is_not_the_limit():
    s = tiltlab.tilt_stats([0.0, 0.0, 0.0], [0.0, 1e-9, -1e300], 1e9)
    assert_allclose(s.kl, 0.5164, atol=1e-4)
    assert_allclose(s.kl, ref.tilt_stats([0.0, 0.0, 0.0], [0.0, 1e-9, -1e300], 1e9)[3],
                    rtol=1e-12)


def test_tiny_variance_of_a_concentrated_tilt():
    lg = np.array([float.fromhex("0x1.304b25394afbdp+1"), float.fromhex("-0x1.a60cc8aae1b26p+1"),
                   float.fromhex("0x1.2600a169c579fp+0")])
    r = np.array([35.472, 103.065, -73.833])
    want = float(oracle.tilt_stats(lg, r, -3.0)[2])
    assert_allclose(tiltlab.tilt_stats(lg, r, -3.0).variance, want, rtol=1e-10)


def test_nan_is_not_laundered_into_zero_and_huge_logit_gaps():
    got = tiltlab.kl_divergence([0.0, -1e308], [0.0, 1e308])
    assert got > 1e307


def test_rewards_spanning_more_than_the_float_range_give_a_clear_error():
    with pytest.raises(ValueError, match="rewards span"):
        tiltlab.tilt_stats([0.0, 0.0], [1e308, -1e308], 0.0)


def test_cumulant_order_is_checked_in_the_compiled_layer_too():
    from tiltlab import _core

    lb = np.zeros(2)
    off = np.zeros(1, dtype=np.int64)
    out = np.empty((1, 1))
    flags = np.zeros(1, dtype=np.int32)
    with pytest.raises(ValueError):
        _core.cumulant_rows(lb, lb, off, off, 2, np.zeros(1), 0, out, flags, 1)
    with pytest.raises(ValueError):
        _core.cumulant_rows(lb, lb, off, off, 2, np.zeros(1), 33, np.empty((1, 33)), flags, 1)


@pytest.mark.parametrize("lam", [2e-10, -1e-8, 1e-6])
@pytest.mark.parametrize("shift", [0.0, 5.0, -1e3])
def test_small_tilt_when_the_mean_sits_at_the_dominant_outcome(lam, shift):
    # Found in review: with the p-mean of r equal to the reward of the dominant outcome,
    # sum p expm1(lam (r - c)) cancelled at first order, so Lambda, the mean and the KL
    # lost relative accuracy ~ eps / lam (4.5e-7 on the KL at lam = 2e-10).
    lg = np.log([0.25, 0.5, 0.25])
    r = np.array([-1.0, 0.0, 1.0]) + shift
    want = oracle.tilt_stats(lg, r, lam)
    got = tiltlab.tilt_stats(lg, r, lam)
    assert_allclose(got.log_partition, float(want[0]), rtol=1e-13)
    assert_allclose(got.mean, float(want[1]), rtol=1e-12)
    assert_allclose(got.kl, float(want[3]), rtol=1e-12)
