"""Exact policy laws (tiltlab.policies): soft best-of-n on a GPT-2-sized vocabulary.

V = 50257 outcomes with normal logits (scale 2) and normal rewards, all distinct: 50257
reward levels, the hardest case for the quadrature (its cost grows with the number of
levels, not with V).  One (n, temperature) point, n = 16 and temperature 0.3, against the
Monte Carlo alternative users write today: 10^5 simulated rounds with a histogram and the
plug-in KL (bench/baselines.py, "numpy-simple"; its KL error against the exact law is
recorded); and a frontier of 100 temperatures.  --quick: V = 5000, 10^4 rounds, 20 points.
"""

from __future__ import annotations

import numpy as np
import pytest
from baselines import monte_carlo_soft_bon
from conftest import quick, run

import tiltlab
from tiltlab import reference


def _model(v):
    rng = np.random.default_rng(0)
    return rng.normal(size=v) * 2.0, rng.normal(size=v)


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "reference", "numpy-simple"])
def test_soft_bon_point(benchmark, rounds, request, impl):
    v = 5000 if quick(request.config) else 50257
    draws = 10_000 if quick(request.config) else 100_000
    lg, r = _model(v)
    n, t = 16, 0.3
    exact = tiltlab.soft_best_of_n(lg, r, n, t)
    extra = {}
    if impl == "numpy-simple":
        rng = np.random.default_rng(1)
        fn = lambda: monte_carlo_soft_bon(lg, r, n, t, draws, rng)  # noqa: E731
        _, kl = fn()
        extra["kl_error"] = abs(kl - exact.kl) / exact.kl
    elif impl == "reference":
        fn = lambda: reference.soft_best_of_n(lg, r, n, t)  # noqa: E731
        np.testing.assert_allclose(fn(), exact.log_probs, rtol=1e-12, atol=1e-12)
    else:
        nt = 1 if impl == "compiled-1t" else 2
        fn = lambda: tiltlab.soft_best_of_n(lg, r, n, t, n_threads=nt)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"soft best-of-n exact law V={v} n=16 T=0.3",
        impl=impl, kernel="soft_best_of_n", n_elements=v, **extra)


@pytest.mark.parametrize("impl", ["compiled-2t"])
def test_soft_bon_frontier(benchmark, request, impl):
    v = 5000 if quick(request.config) else 50257
    points = 20 if quick(request.config) else 100
    lg, r = _model(v)
    grid = np.geomspace(0.01, 10.0, points)
    fn = lambda: tiltlab.policy_frontier(lg, r, "soft_best_of_n", grid, n=16)  # noqa: E731
    run(benchmark, fn, rounds=2, group=f"soft best-of-n frontier V={v}, {points} temperatures",
        impl=impl, kernel="policy_frontier", n_elements=v * points)
