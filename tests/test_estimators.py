"""KL estimators k1/k2/k3 and the estimator harness against exact KLs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import tiltlab
from tiltlab import estimators as E


def test_kl_estimators_formulas():
    lpi = np.log([0.5, 0.25, 0.25])
    lp = np.log([0.25, 0.5, 0.25])
    est = tiltlab.kl_estimators(None, lpi, lp)
    lr = lpi - lp
    assert est.k1 == pytest.approx(lr.mean(), rel=1e-15)
    assert est.k2 == pytest.approx(0.5 * (lr**2).mean(), rel=1e-15)
    assert est.k3 == pytest.approx((np.exp(-lr) - 1 + lr).mean(), rel=1e-14)
    assert est.se_k1 == pytest.approx(lr.std(ddof=1) / math.sqrt(3), rel=1e-14)
    assert est.n_samples == 3
    # with indices: the same thing gathered
    idx = np.array([0, 1, 2, 2, 0])
    a = tiltlab.kl_estimators(idx, lpi, lp)
    b = tiltlab.kl_estimators(None, lpi[idx], lp[idx])
    assert a == b


def test_kl_estimators_infinite_kl_and_bad_input():
    est = tiltlab.kl_estimators(None, np.log([0.5, 0.5]), np.array([np.log(0.5), -np.inf]))
    assert est.k1 == np.inf and est.k3 == np.inf and est.se_k1 == np.inf
    with pytest.raises(ValueError, match="pi = 0"):
        tiltlab.kl_estimators(np.array([0, 1]), np.array([0.0, -np.inf]), np.zeros(2))
    with pytest.raises(ValueError, match="indices in"):
        tiltlab.kl_estimators(np.array([0, 5]), np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="integer outcome indices"):
        tiltlab.kl_estimators(np.array([0.5, 1.5]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="at least 2"):
        tiltlab.kl_estimators(np.array([0]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        tiltlab.kl_estimators(None, np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        tiltlab.kl_estimators(np.array([0, 1]), np.zeros(2), np.zeros(3))


def test_k1_and_k3_are_unbiased_on_a_full_support_policy():
    lg, r = np.log([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 1.0, 2.0, 3.0])
    law = tiltlab.calibrated_tilt(lg, r, 2.0)              # full support, bounded ratios
    study = tiltlab.estimator_study(law, 2000, 400, rng=1)
    assert study.estimator == ("k1", "k2", "k3")
    se = study.std / math.sqrt(study.repeats)
    assert abs(study.bias[0]) < 4 * se[0]
    assert abs(study.bias[2]) < 4 * se[2]
    np.testing.assert_allclose(study.rmse**2, study.bias**2 + study.std**2 *
                               (study.repeats - 1) / study.repeats, rtol=1e-9)
    assert "exact KL" in study.table() and str(study) == study.table()


def test_best_of_n_study_has_the_analytic_row():
    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    b = tiltlab.best_of_n(lg, r, n=16)
    study = tiltlab.estimator_study(b, 500, 20, rng=0)
    assert study.estimator[-1] == "log N - (N-1)/N"
    assert study.mean[-1] == pytest.approx(math.log(16) - 15 / 16, rel=1e-14)
    assert study.std[-1] == pytest.approx(0.0, abs=1e-12)
    assert study.exact_kl == pytest.approx(float(b.kl), rel=1e-15)


def test_per_token_estimator_of_sequence_best_of_n_is_exactly_unbiased():
    """E_pi[sum_i KL_i(prefix)] = KL(pi || p^n), checked by enumerating every sequence."""
    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0])
    n = 4
    m = tiltlab.Memoryless(lg, r, n)
    b = m.best_of_n(n=3)
    src = E._BonSequences(b)
    assert src.rb
    total = 0.0
    mass = 0.0
    p = np.exp(lg)
    for seq in itertools.product(range(3), repeat=n):
        k = m._k[0][list(seq)]
        ktot = int(k.sum())
        prob = float(np.prod(p[list(seq)]) * np.exp(src.log_g[ktot]))
        prefix = np.concatenate([[0], np.cumsum(k)[:-1]])
        rb = sum(src.kl_tab[i + 1][prefix[i]] for i in range(n))
        total += prob * rb
        mass += prob
    assert mass == pytest.approx(1.0, rel=1e-12)
    assert total == pytest.approx(b.kl, rel=1e-11)


def test_sequence_studies():
    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    m = tiltlab.Memoryless(lg, r, 20)
    st = tiltlab.estimator_study(m, 500, 40, rng=2, lam=0.5)
    rb = st.estimator.index("per-token (RB)")
    assert st.bias[rb] == pytest.approx(0.0, abs=1e-12) and st.std[rb] == 0.0
    assert st.exact_kl == pytest.approx(20 * float(tiltlab.tilt_stats(lg, r, 0.5).kl),
                                        rel=1e-13)
    b = m.best_of_n(log_n=6.0)
    st = tiltlab.estimator_study(b, 500, 60, rng=3)
    assert st.estimator == ("k1", "k2", "k3", "per-token (RB)", "log N - (N-1)/N")
    se = st.std / math.sqrt(st.repeats)
    assert abs(st.bias[0]) < 4 * se[0] + 1e-12
    assert abs(st.bias[3]) < 4 * se[3] + 1e-12
    assert st.exact_kl == pytest.approx(b.kl, rel=1e-15)


def test_estimator_study_bad_input():
    lg, r = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    law = tiltlab.calibrated_tilt(lg, r, 1.0)
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        tiltlab.estimator_study(law, 1, 5)
    with pytest.raises(TypeError, match="repeats must be an integer"):
        tiltlab.estimator_study(law, 10, 2.5)
    with pytest.raises(TypeError, match="policy must be"):
        tiltlab.estimator_study("nope", 10, 5)
    with pytest.raises(ValueError, match="lam="):
        tiltlab.estimator_study(tiltlab.Memoryless(lg, r, 5), 10, 5)
    with pytest.raises(ValueError, match="single best-of-N row"):
        tiltlab.estimator_study(tiltlab.best_of_n(np.zeros((2, 2)), np.zeros((2, 2)), n=2),
                                10, 5)


def test_kl_estimators_empty_samples():
    with pytest.raises(ValueError, match="at least 2 samples; got 0"):
        tiltlab.kl_estimators([], np.zeros(2), np.zeros(2))
