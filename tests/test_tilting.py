"""Single-step tilting (SPEC section 2): oracle values, compiled vs reference, edge cases,
and the identities the optimal policy must satisfy."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from conftest import lams, rows
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref

# ---------------------------------------------------------------- oracle values (SPEC 8)


def test_bernoulli_oracle_at_lambda_one(bernoulli):
    s = tiltlab.tilt_stats(*bernoulli, 1.0)
    assert_allclose(s.log_partition, 0.4157352218, rtol=0, atol=5e-11)
    assert_allclose(s.mean, 0.5381015262, rtol=0, atol=5e-11)
    assert_allclose(s.kl, 0.1223663044, rtol=0, atol=5e-11)
    assert_allclose(s.variance, 0.2485482737, rtol=0, atol=5e-11)
    # closed form: Lambda = log(0.7 + 0.3 e)
    assert_allclose(s.log_partition, np.log(0.7 + 0.3 * np.e), rtol=1e-15)


def test_bernoulli_closed_form_over_lambda(bernoulli):
    lam = np.linspace(-20, 20, 81)
    s = tiltlab.tilt_stats(*bernoulli, lam)
    q = 0.3 * np.exp(lam) / (0.7 + 0.3 * np.exp(lam))
    q_bar = 0.7 / (0.7 + 0.3 * np.exp(lam))  # 1 - q without cancellation
    assert_allclose(s.mean, q, rtol=1e-13)
    assert_allclose(s.variance, q * q_bar, rtol=1e-12)
    # binary KL d(q || 0.3) = q log(q / 0.3) + (1 - q) log((1 - q) / 0.7)
    kl = q * np.log(q / 0.3) + q_bar * np.log(q_bar / 0.7)
    assert_allclose(s.kl, kl, rtol=1e-10)


def test_kl_max_and_limits(bernoulli):
    assert_allclose(tiltlab.kl_max(*bernoulli), 1.2039728043, atol=5e-11)
    s = tiltlab.tilt_stats(*bernoulli, [np.inf, -np.inf])
    assert_array_equal(s.mean, [1.0, 0.0])
    assert_array_equal(s.variance, [0.0, 0.0])
    assert_allclose(s.kl, [-np.log(0.3), -np.log(0.7)], rtol=1e-15)
    # Lambda(lam) = lam r_max + log p(argmax): +inf for r_max = 1 > 0; r_min = 0 gives log p
    assert s.log_partition[0] == np.inf
    assert_allclose(s.log_partition[1], np.log(0.7), rtol=1e-15)


def test_tilt_is_normalised_and_matches_closed_form(bernoulli):
    lp = tiltlab.tilt(*bernoulli, np.array([0.0, 1.0, np.inf, -np.inf]))
    q = 0.3 * np.e / (0.7 + 0.3 * np.e)
    assert_allclose(np.exp(lp[0]), [0.7, 0.3], rtol=1e-15)
    assert_allclose(np.exp(lp[1]), [1 - q, q], rtol=1e-15)
    assert_array_equal(lp[2], [-np.inf, 0.0])
    assert_array_equal(lp[3], [0.0, -np.inf])


def test_lambda_zero_is_p(ternary):
    s = tiltlab.tilt_stats(*ternary, 0.0)
    p = np.array([0.5, 0.3, 0.2])
    r = ternary[1]
    assert s.log_partition == 0.0
    assert s.kl == 0.0
    assert_allclose(s.mean, p @ r, rtol=1e-15)
    assert_allclose(s.variance, p @ (r - p @ r) ** 2, rtol=1e-15)


# ---------------------------------------------------------------- compiled vs reference


def _scale(logits, rewards, lam):
    """Magnitude of the terms that enter Lambda, for absolute tolerances."""
    lam = np.broadcast_to(np.asarray(lam, dtype=float), np.shape(logits)[:-1])
    finite_lam = np.where(np.isfinite(lam), np.abs(lam), 0.0)
    return 1.0 + finite_lam * np.max(np.abs(rewards), axis=-1) + np.max(
        np.abs(np.where(np.isfinite(logits), logits, 0.0)), axis=-1)


@given(rows(), st.lists(lams, min_size=1, max_size=3))
def test_tilt_stats_matches_reference(data, lam_list):
    logits, rewards = data
    lam = np.resize(np.array(lam_list), logits.shape[0])
    got = tiltlab.tilt_stats(logits, rewards, lam)
    want = ref.tilt_stats(logits, rewards, lam)
    scale = _scale(logits, rewards, lam)
    rscale = 1.0 + np.max(np.abs(rewards), axis=-1)
    fin = np.isfinite(want[0])
    assert_array_equal(got.log_partition[~fin], want[0][~fin])
    with np.errstate(invalid="ignore"):
        err = np.abs(got.log_partition - want[0])
    assert np.all(err[fin] <= 1e-12 * scale[fin])
    assert np.all(np.abs(got.mean - want[1]) <= 1e-12 * rscale)
    assert np.all(np.abs(got.variance - want[2]) <= 1e-11 * rscale**2)
    assert np.all(np.abs(got.kl - want[3]) <= 1e-12 * np.maximum(np.abs(want[3]), 1e-3) + 1e-13
                  * scale)
    assert np.all(got.kl >= 0) and np.all(got.variance >= 0)


@given(rows(), lams)
def test_tilt_matches_reference(data, lam):
    logits, rewards = data
    got = tiltlab.tilt(logits, rewards, lam)
    want = ref.tilt(logits, rewards, lam)
    assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    scale = _scale(logits, rewards, lam)[:, None] * np.ones_like(got)
    assert np.all(np.abs(got - want)[fin] <= 1e-12 * scale[fin])
    # rows are normalised (to the conditioning of lam * r: inputs carry eps * |lam r|)
    assert np.all(np.abs(tiltlab.logsumexp(got, axis=-1)) <= 1e-13 * _scale(logits, rewards, lam))


@given(rows(neg_inf=True), st.integers(1, 8), st.floats(-5, 5))
def test_cumulants_match_reference(data, order, lam):
    logits, rewards = data
    got = tiltlab.cumulants(logits, rewards, order, lam)
    want = ref.cumulants(logits, rewards, order, lam)
    mean_scale = np.max(np.abs(rewards), axis=-1)
    # rounding of the rewards alone makes sd uncertain at ~1e-13 of their magnitude
    sd = np.maximum(np.sqrt(ref.tilt_stats(logits, rewards, lam)[2]), 1e-13 * mean_scale)
    scale = np.concatenate(
        [mean_scale[:, None], (np.maximum(sd, 1e-300)[:, None] ** np.arange(2, order + 1))],
        axis=1)[:, :order]
    assert np.all(np.abs(got - want) <= 1e-9 * np.maximum(np.abs(want), scale) + 1e-280)


def test_cumulants_first_two_are_mean_and_variance(ternary):
    lam = np.array([-2.0, 0.0, 0.7, 3.0])
    k = tiltlab.cumulants(*ternary, 4, lam)
    s = tiltlab.tilt_stats(*ternary, lam)
    assert_allclose(k[:, 0], s.mean, rtol=1e-14)
    assert_allclose(k[:, 1], s.variance, rtol=1e-12)


def test_cumulants_at_infinite_lambda(ternary):
    k = tiltlab.cumulants(*ternary, 5, [np.inf, -np.inf])
    assert_array_equal(k, [[3.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]])


def test_cumulants_bernoulli_closed_form(bernoulli):
    # Bernoulli(q) cumulants: k2 = q(1-q), k3 = k2 (1-2q), k4 = k2 (1 - 6 k2)
    k = tiltlab.cumulants(*bernoulli, 4, 0.0)
    q = 0.3
    k2 = q * (1 - q)
    assert_allclose(k, [q, k2, k2 * (1 - 2 * q), k2 * (1 - 6 * k2)], rtol=1e-13)


# ---------------------------------------------------------------- edge cases


def test_single_outcome_rows():
    s = tiltlab.tilt_stats([[0.3], [-5.0]], [[2.0], [-1.0]], [1.0, 7.0])
    assert_allclose(s.log_partition, [2.0, -7.0], rtol=1e-15)
    assert_array_equal(s.mean, [2.0, -1.0])
    assert_array_equal(s.variance, [0.0, 0.0])
    assert_array_equal(s.kl, [0.0, 0.0])
    assert_array_equal(tiltlab.kl_max([[0.3]], [[2.0]]), [0.0])
    assert_array_equal(tiltlab.tilt([0.3], [2.0], 5.0), [0.0])


def test_neg_inf_logits_contribute_nothing():
    logits = np.array([0.0, -np.inf, 1.0, -np.inf])
    rewards = np.array([1.0, 1e300, 2.0, -1e300])
    s = tiltlab.tilt_stats(logits, rewards, 2.0)
    t = tiltlab.tilt_stats(logits[[0, 2]], rewards[[0, 2]], 2.0)
    assert_allclose(tuple(s), tuple(t), rtol=1e-15)
    lp = tiltlab.tilt(logits, rewards, 2.0)
    assert np.isneginf(lp[[1, 3]]).all()
    assert tiltlab.kl_max(logits, rewards) == tiltlab.kl_max(logits[[0, 2]], rewards[[0, 2]])


@pytest.mark.parametrize("lam", [1e6, -1e6, 1e9])
def test_huge_lambda_times_reward_does_not_overflow(lam):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=1000)
    rewards = rng.normal(size=1000)
    s = tiltlab.tilt_stats(logits, rewards, lam)
    want = [float(x) for x in oracle.tilt_stats(logits, rewards, lam)]
    assert np.isfinite(s.log_partition)
    assert_allclose(tuple(s), want, rtol=1e-14, atol=1e-50)
    assert_allclose(tuple(s), ref.tilt_stats(logits, rewards, lam), rtol=1e-13, atol=1e-50)
    # the tilted law sits on the extreme outcome
    best = np.argmax(rewards) if lam > 0 else np.argmin(rewards)
    assert_allclose(s.mean, rewards[best], rtol=1e-12)
    lp = tiltlab.tilt(logits, rewards, lam)
    assert_allclose(lp[best], 0.0, atol=1e-9)


def test_lambda_times_reward_overflowing_double_gives_the_limit():
    logits = np.array([0.0, 0.5, -1.0])
    rewards = np.array([1e300, -1e300, 3e300])
    s = tiltlab.tilt_stats(logits, rewards, 1e200)
    assert s.mean == 3e300
    assert s.variance == 0.0
    assert_allclose(s.kl, -np.log(np.exp(-1.0) / np.exp([0.0, 0.5, -1.0]).sum()), rtol=1e-14)


def test_product_and_standard_modes_agree_at_the_switch():
    # |lam| * reward range crosses the product-mode limit (600) between these tilts
    rng = np.random.default_rng(5)
    logits = rng.normal(size=50)
    rewards = np.linspace(0.0, 1.0, 50)
    for lam in (599.999, 600.001):
        got = tiltlab.tilt_stats(logits, rewards, lam)
        want = ref.tilt_stats(logits, rewards, lam)
        assert_allclose(tuple(got), want, rtol=1e-12)


def test_tiny_lambda_keeps_relative_accuracy_of_kl(bernoulli):
    # kl ~ lam^2 var / 2; the naive lam * mean - Lambda would lose all digits here
    for lam in (1e-3, 1e-6, 1e-9, 1e-12):
        s = tiltlab.tilt_stats(*bernoulli, lam)
        want = float(oracle.tilt_stats(*bernoulli, lam)[3])
        # attainable: relative eps / (lam sd) (the rewards' mean is only known to eps)
        assert_allclose(s.kl, want, rtol=max(1e-13, 4e-16 / lam))
        assert s.kl > 0


def test_float32_inputs_computed_in_float64():
    """float32 in, float32 out (SPEC section 1): computed in float64, rounded once at the
    end; a float64 array among the inputs gives float64 results."""
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(4, 300)).astype(np.float32)
    rewards = rng.normal(size=(4, 300)).astype(np.float32)
    lam = np.array([0.0, 0.5, -2.0, np.inf])
    l64, r64 = logits.astype(np.float64), rewards.astype(np.float64)
    got = tiltlab.tilt_stats(logits, rewards, lam.astype(np.float32))
    want = tiltlab.tilt_stats(l64, r64, lam)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32
        assert_array_equal(a, b.astype(np.float32))
    # a float64 array lam promotes: the float64 results themselves
    for a, b in zip(tiltlab.tilt_stats(logits, rewards, lam), want, strict=True):
        assert a.dtype == np.float64
        assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    got_t = tiltlab.tilt(logits, rewards, 1.0)  # a Python float does not promote
    assert got_t.dtype == np.float32
    assert_array_equal(got_t, tiltlab.tilt(l64, r64, 1.0).astype(np.float32))
    got_c = tiltlab.cumulants(logits, rewards, 5, 0.3)
    assert got_c.dtype == np.float32
    assert_array_equal(got_c, tiltlab.cumulants(l64, r64, 5, 0.3).astype(np.float32))
    # mixed precision promotes to float64
    mixed = tiltlab.tilt_stats(logits, rewards.astype(np.float64), lam)
    assert mixed.mean.dtype == np.float64
    assert_allclose(mixed.mean, want.mean, rtol=1e-14)


def test_integer_inputs_are_converted():
    s = tiltlab.tilt_stats(np.array([0, 1, 2]), np.array([1, 0, 1]), 1)
    t = tiltlab.tilt_stats(np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 1.0]), 1.0)
    for a, b in zip(s, t, strict=True):
        assert a == b


def test_non_contiguous_and_read_only_inputs_are_not_modified():
    rng = np.random.default_rng(11)
    big_l = rng.normal(size=(6, 40))
    big_r = rng.normal(size=(6, 40))
    logits = big_l[::2, ::3]  # non-contiguous view
    rewards = np.asfortranarray(big_r[::2, ::3])
    logits_copy, rewards_copy = logits.copy(), rewards.copy()
    ro_l = logits.copy()
    ro_l.setflags(write=False)
    ro_r = rewards.copy()
    ro_r.setflags(write=False)
    want = tiltlab.tilt_stats(np.ascontiguousarray(logits), np.ascontiguousarray(rewards), 0.7)
    for lg, rw in ((logits, rewards), (ro_l, ro_r)):
        got = tiltlab.tilt_stats(lg, rw, 0.7)
        for a, b in zip(got, want, strict=True):
            assert_array_equal(a, b)
        tiltlab.tilt(lg, rw, 0.7)
        tiltlab.cumulants(lg, rw, 4, 0.7)
        tiltlab.solve_lambda(lg, rw, 0.1)
        tiltlab.kl_max(lg, rw)
    assert_array_equal(logits, logits_copy)
    assert_array_equal(rewards, rewards_copy)


def test_batch_broadcasting():
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(3, 1, 9))
    rewards = rng.normal(size=(4, 9))
    lam = rng.normal(size=(3, 4))
    s = tiltlab.tilt_stats(logits, rewards, lam)
    assert s.mean.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            t = tiltlab.tilt_stats(logits[i, 0], rewards[j], lam[i, j])
            assert s.mean[i, j] == t.mean
            assert s.kl[i, j] == t.kl
    assert tiltlab.tilt(logits, rewards, lam).shape == (3, 4, 9)
    assert tiltlab.cumulants(logits, rewards, 3, lam).shape == (3, 4, 3)
    # scalar rows give NumPy scalars
    assert np.ndim(tiltlab.tilt_stats(logits[0, 0], rewards[0], 1.0).mean) == 0


def test_zero_size_batch():
    s = tiltlab.tilt_stats(np.zeros((0, 5)), np.zeros(5), 1.0)
    assert s.mean.shape == (0,)
    assert tiltlab.tilt(np.zeros((0, 5)), np.zeros(5), 1.0).shape == (0, 5)
    assert tiltlab.solve_lambda(np.zeros((0, 5)), np.zeros(5), 0.1).shape == (0,)


def test_long_row_spanning_many_chunks_matches_reference():
    rng = np.random.default_rng(17)
    n = 3 * 16384 + 123
    logits = rng.normal(size=n) * 3
    logits[rng.random(n) < 0.1] = -np.inf
    rewards = rng.normal(size=n)
    for lam in (0.0, 0.3, -4.0, 900.0):
        got = tiltlab.tilt_stats(logits, rewards, lam)
        want = ref.tilt_stats(logits, rewards, lam)
        assert_allclose(tuple(got), want, rtol=1e-11, atol=1e-14)


# ---------------------------------------------------------------- identities (SPEC 2)


@given(rows(max_rows=1, neg_inf=True, logit_scale=5.0, reward_scale=2.0),
       st.floats(-4, 4).filter(lambda x: abs(x) > 0.05))
def test_derivative_of_kl_is_lambda_times_variance(data, lam):
    logits, rewards = data
    s = tiltlab.tilt_stats(logits, rewards, lam)
    if s.variance[0] < 1e-6:
        return
    h = 1e-4 * max(1.0, abs(lam))
    up = tiltlab.tilt_stats(logits, rewards, lam + h).kl
    down = tiltlab.tilt_stats(logits, rewards, lam - h).kl
    assert_allclose((up - down) / (2 * h), lam * s.variance, rtol=1e-5, atol=1e-9)
    # and Lambda' = mean, Lambda'' = variance
    lp_up = tiltlab.tilt_stats(logits, rewards, lam + h).log_partition
    lp_down = tiltlab.tilt_stats(logits, rewards, lam - h).log_partition
    assert_allclose((lp_up - lp_down) / (2 * h), s.mean, rtol=1e-6, atol=1e-8)


@given(rows(max_rows=2, neg_inf=False, logit_scale=3.0, reward_scale=2.0),
       st.floats(-3, 3), st.integers(0, 2**31))
def test_closeness_identity(data, lam, seed):
    """KL(pi || phi_lam) = KL(pi || p) - lam E_pi r + Lambda(lam) for any pi."""
    logits, rewards = data
    rng = np.random.default_rng(seed)
    pi = rng.normal(size=logits.shape) * 2
    log_phi = tiltlab.tilt(logits, rewards, lam)
    lhs = tiltlab.kl_divergence(pi, log_phi)
    prob_pi = np.exp(pi - tiltlab.logsumexp(pi, axis=-1)[..., None])
    rhs = (tiltlab.kl_divergence(pi, logits) - lam * np.sum(prob_pi * rewards, axis=-1)
           + tiltlab.tilt_stats(logits, rewards, lam).log_partition)
    scale = 1 + np.abs(lam) * np.max(np.abs(rewards)) + np.max(np.abs(logits))
    assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-12 * scale)


def test_closeness_identity_is_zero_for_phi_itself(ternary):
    lam = 0.8
    log_phi = tiltlab.tilt(*ternary, lam)
    assert tiltlab.kl_divergence(log_phi, log_phi) == 0.0
    s = tiltlab.tilt_stats(*ternary, lam)
    assert_allclose(tiltlab.kl_divergence(log_phi, ternary[0]), s.kl, rtol=1e-14)


@given(rows(max_rows=1, neg_inf=True, logit_scale=5.0), st.floats(-10, 10),
       st.floats(0.1, 10), lams)
def test_tilt_invariances(data, shift, scale, lam):
    """phi is unchanged by r -> r + c, and by r -> a r with lam -> lam / a."""
    logits, rewards = data
    base = tiltlab.tilt(logits, rewards, lam)
    shifted = tiltlab.tilt(logits, rewards + shift, lam)
    scaled = tiltlab.tilt(logits, rewards * scale, lam / scale)
    fin = np.isfinite(base)
    assert_array_equal(np.isfinite(shifted), fin)
    mag = 1e-11 * (1 + (abs(lam) if np.isfinite(lam) else 0) * (np.abs(rewards).max() + abs(
        shift)))
    assert np.all(np.abs(shifted - base)[fin] <= mag)
    assert np.all(np.abs(scaled - base)[fin] <= mag * (1 + scale))
    # the KL is invariant too; the mean shifts/scales
    s0 = tiltlab.tilt_stats(logits, rewards, lam)
    s1 = tiltlab.tilt_stats(logits, rewards + shift, lam)
    assert_allclose(s1.kl, s0.kl, rtol=1e-9, atol=1e-10 * mag / 1e-11)
    assert_allclose(s1.mean, s0.mean + shift, rtol=1e-12, atol=1e-10 * (1 + abs(shift)))
