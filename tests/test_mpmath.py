"""Compiled results against 50-digit mpmath references on random small cases (SPEC 6).

Bars (issue 2): relative error <= 1e-12 for log_partition, mean and kl, <= 1e-10 for the
variance, <= 1e-9 for cumulants up to order 8.  "Relative" is measured against the
quantity's natural scale where it can pass through zero: |Lambda| + |lam| E_phi |r| for
the log partition, E_phi |r| for the mean, sd^k for the k-th cumulant.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import oracle
import pytest

import tiltlab


def _cases(seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        v = int(rng.integers(1, 13))
        logits = rng.normal(size=v) * rng.choice([0.3, 2.0, 8.0])
        if v > 1 and rng.random() < 0.4:
            drop = rng.random(v) < 0.3
            drop[rng.integers(v)] = False
            logits[drop] = -np.inf
        if rng.random() < 0.5:
            rewards = rng.normal(size=v) * rng.choice([0.5, 3.0])
        else:
            rewards = rng.integers(-4, 5, size=v).astype(float)
        mag = 10 ** rng.uniform(-6, 1.7)
        lam = float(rng.choice([-1.0, 1.0]) * mag) if rng.random() > 0.05 else 0.0
        yield logits, rewards, lam


CASES = list(_cases(20261126, 120))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_tilt_stats_against_mpmath(case):
    logits, rewards, lam = CASES[case]
    got = tiltlab.tilt_stats(logits, rewards, lam)
    lp, mean, var, kl = oracle.tilt_stats(logits, rewards, lam)
    with mp.workdps(50):
        support = [(float(r)) for lg, r in zip(logits, rewards, strict=True) if lg > -np.inf]
        # E_phi |r| bounds the conditioning of mean and Lambda near zero
        abs_mean = max(abs(x) for x in support)
    rel = lambda a, b, scale: abs(a - float(b)) / max(abs(float(b)), scale, 1e-30)  # noqa: E731
    assert rel(got.log_partition, lp, abs(lam) * abs_mean) <= 1e-12
    assert rel(got.mean, mean, abs_mean) <= 1e-12
    if float(kl) > 0:
        assert rel(got.kl, kl, 0.0) <= 1e-12, (got.kl, float(kl))
    else:
        assert got.kl == 0.0
    assert abs(got.variance - float(var)) <= 1e-10 * float(var) + 1e-300


@pytest.mark.parametrize("case", range(0, len(CASES), 4))
def test_cumulants_against_mpmath_derivatives(case):
    logits, rewards, lam = CASES[case]
    lam = float(np.clip(lam, -5, 5))
    order = 8
    got = tiltlab.cumulants(logits, rewards, order, lam)
    want = oracle.cumulants(logits, rewards, order, lam)
    sd = float(mp.sqrt(want[1])) if want[1] > 0 else 0.0
    scale_mean = max(abs(float(r)) for r in rewards)
    for k in range(1, order + 1):
        w = float(want[k - 1])
        scale = scale_mean if k == 1 else sd**k
        assert abs(got[k - 1] - w) <= 1e-9 * max(abs(w), scale) + 1e-300, (k, got[k - 1], w)


@pytest.mark.parametrize("case", range(0, len(CASES), 3))
def test_kl_max_against_mpmath(case):
    logits, rewards, _ = CASES[case]
    got = tiltlab.kl_max(logits, rewards)
    want = float(oracle.kl_max(logits, rewards))
    assert abs(got - want) <= 1e-13 * max(want, 1e-300) or (want == 0 and got == 0)


@pytest.mark.parametrize("case", range(0, len(CASES), 3))
def test_kl_divergence_against_mpmath(case):
    logits, _, lam = CASES[case]
    rng = np.random.default_rng(case)
    # a nearby q (small KL) and a far one
    for eps in (1e-6, 1.0):
        q = np.where(np.isfinite(logits), logits + eps * rng.normal(size=logits.shape), -np.inf)
        got = tiltlab.kl_divergence(logits, q)
        want = float(oracle.kl_divergence(logits, q))
        if want == 0:
            assert got == 0
        else:
            assert abs(got - want) <= 1e-12 * want, (eps, got, want)


def test_logsumexp_against_mpmath():
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = rng.normal(size=int(rng.integers(1, 40))) * rng.choice([1.0, 100.0, 1e4])
        want = float(oracle.logsumexp(x))
        assert abs(tiltlab.logsumexp(x) - want) <= 2e-16 * max(abs(want), 1.0) * 4
