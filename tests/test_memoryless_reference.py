"""The NumPy reference for memoryless sequences (SPEC section 4) against closed forms
(binomial), exhaustive enumeration of sequences and brute-force best-of-N (oracle_seq)."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import oracle_seq
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from tiltlab import reference as ref

stats = pytest.importorskip("scipy.stats")

STEP = 0.25


def random_model(seed, length, stationary, neg_inf=True):
    """V = 3 rows; rewards ``offset + STEP * k`` with integer k in [0, 4]; sometimes one
    -inf logit per row (its reward then made non-lattice, since it must be ignored)."""
    rng = np.random.default_rng(seed)
    rows = 1 if stationary else length
    logits = rng.normal(size=(rows, 3)) * 2.0
    k = rng.integers(0, 5, size=(rows, 3))
    offsets = rng.choice([-1.3, 0.0, 2.5, 1000.5], size=(rows, 1))
    rewards = offsets + STEP * k
    if neg_inf:
        for i in range(rows):
            if rng.random() < 0.4:
                j = rng.integers(0, 3)
                logits[i, j] = -np.inf
                rewards[i, j] = math.pi
    if stationary:
        return logits[0], rewards[0]
    return logits, rewards


def assert_law_equal(values, log_pmf, law):
    """Reference (values, log_pmf) against an enumerated law {value: prob}, all points."""
    got = {round(float(v), oracle_seq.GRID): lp for v, lp in zip(values, log_pmf, strict=True)}
    assert set(law) <= set(got)
    for value, lp in got.items():
        if value in law:
            exact = float(mp.log(law[value]))
            assert_allclose(lp, exact, rtol=1e-12, atol=1e-13, err_msg=f"value {value}")
        else:
            assert lp == -np.inf, f"value {value} has probability 0 but log_pmf {lp}"


# ----------------------------------------------------------------------- lattice law


def test_binomial_whole_support_matches_scipy():
    logits, rewards = np.log([0.7, 0.3]), np.array([0.0, 1.0])
    n = 10_000
    values, log_pmf = ref.lattice_log_pmf(logits, rewards, n)
    assert_array_equal(values, np.arange(n + 1))
    expected = stats.binom.logpmf(np.arange(n + 1), n, 0.3)
    assert log_pmf.min() < -12_000
    assert_allclose(log_pmf, expected, rtol=1e-10)
    # tighter spot checks against mpmath (the exact law of the float64 input probabilities)
    with mp.workdps(40):
        a, b = mp.mpf(logits[0]), mp.mpf(logits[1])
        log_z = mp.log(mp.exp(a) + mp.exp(b))
        for k in (0, 1, 100, 2000, 2990, 3000, 3010, 7000, 9999, 10_000):
            exact = (mp.loggamma(n + 1) - mp.loggamma(k + 1) - mp.loggamma(n - k + 1)
                     + k * (b - log_z) + (n - k) * (a - log_z))
            assert_allclose(log_pmf[k], float(exact), rtol=2e-13)


def test_shifted_scaled_binomial():
    logits, rewards = np.log([0.7, 0.3]), np.array([2.5, 4.0])
    n = 1000
    assert ref.lattice_step(rewards) == 1.5
    values, log_pmf = ref.lattice_log_pmf(logits, rewards, n)
    assert_allclose(values, 2.5 * n + 1.5 * np.arange(n + 1), rtol=1e-15)
    assert_allclose(log_pmf, stats.binom.logpmf(np.arange(n + 1), n, 0.3), rtol=1e-10)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("stationary", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_law_matches_enumeration(seed, stationary, length):
    logits, rewards = random_model(100 * seed + length, length, stationary)
    values, log_pmf = ref.lattice_log_pmf(logits, rewards, length)
    assert_law_equal(values, log_pmf, oracle_seq.enumerate_sequences(logits, rewards, length))


@pytest.mark.parametrize("length", [3, 5])
def test_law_mixed_broadcast_matches_enumeration(length):
    """Non-stationary logits with one reward row for all positions, and vice versa."""
    logits, _ = random_model(7, length, stationary=False, neg_inf=False)
    _, rewards = random_model(8, length, stationary=True, neg_inf=False)
    for lg, rw in ((logits, rewards), (logits[0], np.tile(rewards, (length, 1)) + 0.5)):
        values, log_pmf = ref.lattice_log_pmf(lg, rw, length)
        assert_law_equal(values, log_pmf, oracle_seq.enumerate_sequences(lg, rw, length))


def test_given_finer_step_leaves_holes():
    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([1.0, 1.5, 2.0])
    values, log_pmf = ref.lattice_log_pmf(logits, rewards, 4)
    fine_values, fine_log_pmf = ref.lattice_log_pmf(logits, rewards, 4, step=0.25)
    assert_allclose(fine_values[::2], values, rtol=1e-15)
    assert_allclose(fine_log_pmf[::2], log_pmf, rtol=1e-14)
    assert np.all(fine_log_pmf[1::2] == -np.inf)


def test_given_step_quantises():
    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, np.sqrt(2.0)])
    values, log_pmf = ref.lattice_log_pmf(logits, rewards, 3, step=0.5)
    expected = ref.lattice_log_pmf(logits, np.array([0.0, 1.0, 1.5]), 3)
    assert_allclose(values, expected[0])
    assert_allclose(log_pmf, expected[1], rtol=1e-14)


# -------------------------------------------------------------------- lattice step


@pytest.mark.parametrize(("rewards", "step"), [
    ([0.0, 0.25, 0.75], 0.25),
    ([1000.25, 1000.5, 1001.0], 0.25),
    ([0.0, 2.0, 4.0], 2.0),
    ([2.5, 4.0], 1.5),
    ([0.1, 0.2, 0.3], 0.1),
    ([-3.0, 0.0, 6.0], 3.0),
    ([1.0 / 3, 2.0 / 3, 7.0 / 3], 1.0 / 3),
    ([5.0, 5.0, 5.0], 1.0),
    ([7.0], 1.0),
])
def test_lattice_step(rewards, step):
    assert_allclose(ref.lattice_step(np.array(rewards)), step, rtol=1e-12)


def test_lattice_step_rows_share_a_step_but_not_an_offset():
    rewards = np.array([[0.0, 0.5, 1.0], [0.3, 1.3, 2.8]])
    assert_allclose(ref.lattice_step(rewards), 0.5, rtol=1e-12)


def test_lattice_step_ignores_impossible_outcomes():
    rewards = np.array([0.0, 1.0, np.sqrt(2.0)])
    assert ref.lattice_step(rewards, np.array([0.0, 0.0, -np.inf])) == 1.0


@pytest.mark.parametrize("rewards", [[0.0, 1.0, np.sqrt(2.0)], [0.0, 1.0, np.pi],
                                     [[0.0, 1.0], [0.0, np.e]]])
def test_lattice_step_rejects_non_lattice(rewards):
    with pytest.raises(ValueError, match="step="):
        ref.lattice_step(np.array(rewards))
    with pytest.raises(ValueError, match="step="):
        ref.lattice_log_pmf(np.zeros(np.shape(rewards)), np.array(rewards), 2)


# ------------------------------------------------------------------ sequence best-of-N


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("stationary", [True, False])
def test_sequence_best_of_n_matches_brute_force(stationary, n, length):
    logits, rewards = random_model(10 * length + n, length, stationary)
    lam = 0.7
    got = ref.sequence_best_of_n(logits, rewards, length, math.log(n))
    exact = oracle_seq.brute_force_sequence_bon(logits, rewards, length, n, lam)
    assert_allclose(got["expected_reward"], float(exact["expected_reward"]), rtol=1e-12)
    assert_allclose(got["kl"], float(exact["kl"]), rtol=1e-12, atol=1e-14)
    assert_allclose(got["win_rate"], float(exact["win_rate"]), rtol=1e-12)
    assert_allclose(got["total_mass"], 1.0, rtol=1e-14)
    kl_tilted = ref.sequence_kl_to_tilted(got, logits, rewards, length, lam)
    assert_allclose(kl_tilted, float(exact["kl_to_tilted"]), rtol=1e-12, atol=1e-14)
    law = {round(float(v), oracle_seq.GRID): lp
           for v, lp in zip(got["values"], got["log_probs"], strict=True) if lp > -np.inf}
    assert set(law) == set(exact["law"])
    for value, lp in law.items():
        assert_allclose(lp, float(mp.log(exact["law"][value])), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("length", "n"), [(2, 3), (3, 2), (1, 3)])
def test_brute_force_methods_agree(length, n):
    """The level-tuple enumeration equals literal enumeration of tuples of sequences."""
    logits, rewards = random_model(3, length, stationary=False)
    rewards[:, 0] = rewards[:, 1]  # ties in reward
    by_sequences = oracle_seq.brute_force_sequence_bon(logits, rewards, length, n, 0.4,
                                                       method="sequences")
    by_levels = oracle_seq.brute_force_sequence_bon(logits, rewards, length, n, 0.4,
                                                    method="levels")
    for key in ("expected_reward", "kl", "kl_to_tilted", "win_rate"):
        assert abs(by_sequences[key] - by_levels[key]) < mp.mpf(10) ** -30, key


def test_sequence_best_of_n_one_is_the_reference():
    logits, rewards = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    got = ref.sequence_best_of_n(logits, rewards, 50, 0.0)
    _, mean, _, kl = ref.tilt_stats(logits, rewards, 0.0)
    assert abs(got["kl"]) < 1e-13
    assert_allclose(got["expected_reward"], 50 * mean, rtol=1e-13)
    assert_allclose(got["win_rate"], 0.5, rtol=1e-13)
    # KL(p^n || phi_lam^n) = n KL(p || phi_lam) = n (Lambda(lam) - lam mean(0))
    lam = 0.8
    log_partition = ref.tilt_stats(logits, rewards, lam)[0]
    assert_allclose(ref.sequence_kl_to_tilted(got, logits, rewards, 50, lam),
                    50 * (log_partition - lam * mean), rtol=1e-12)


def test_sequence_best_of_n_large_n_bounds():
    """Binomial sequences, log N = n delta: KL below log N, win rate below N / (N + 1)."""
    logits, rewards = np.log([0.7, 0.3]), np.array([0.0, 1.0])
    length, delta = 2000, 0.1
    got = ref.sequence_best_of_n(logits, rewards, length, length * delta)
    big_n = math.exp(length * delta)
    assert got["kl"] <= length * delta - (big_n - 1) / big_n
    # (each of the ~2000 level weights is relative-accurate, to ~200 eps here, N = e^200:
    # their sum is 1 to ~1e-14, not telescoped exactly)
    assert got["win_rate"] <= 1.0 + 1e-14
    assert_allclose(got["total_mass"], 1.0, rtol=1e-12)
    lam = ref.solve_lambda(logits, rewards, delta)
    mean = ref.tilt_stats(logits, rewards, lam)[1]
    assert 0 < length * mean - got["expected_reward"] < 5 * math.log(length) / lam
    assert 0 < ref.sequence_kl_to_tilted(got, logits, rewards, length, lam) < math.log(length)
