"""Best-of-N draws on a batch of rows: one draw per row (issue 17, item 2).

One draw per row of a (4096, 32000) float64 batch ((64, 3200) with --quick) for N in
{1, 16, 10^6}, through sample_best_of_n (the one-pass path of a few draws per row), next to
the same run's tilt_stats on the same arrays (the target: at most 2x its time) and a NumPy
inverse CDF of the best-of-N law (argsort by reward, cumulative softmax, the first index
whose CDF reaches U^(1/N): exact for distinct rewards, which these are).  Rows
"compiled-2t-avx2" force the avx2 variant (the product's target machines).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import avx2_forced, quick, run

import tiltlab

N_VALUES = {"N=1": 1.0, "N=16": 16.0, "N=1e6": 1e6}
IMPLS = ["compiled-2t", "compiled-2t-avx2", "tilt_stats-2t-avx2", "numpy-simple"]

_data: dict = {}


def _batch(small: bool):
    shape = (64, 3200) if small else (4096, 32000)
    if shape not in _data:
        _data.clear()
        rng = np.random.default_rng(0)
        logits = rng.standard_normal(shape) * 2.0
        _data[shape] = (logits, rng.random(shape))
    return _data[shape]


def numpy_bon_inverse_cdf(logits, rewards, n, rng):
    """One best-of-N draw per row in NumPy: sort each row by reward, the softmax's CDF in
    that order, and the first outcome whose CDF reaches U^(1/N) (distinct rewards)."""
    order = np.argsort(rewards, axis=-1)
    lg = np.take_along_axis(logits, order, axis=-1)
    p = np.exp(lg - lg.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)
    cdf /= cdf[:, -1:]
    target = rng.random(len(cdf)) ** (1.0 / n)
    j = np.minimum((cdf < target[:, None]).sum(axis=-1), cdf.shape[1] - 1)
    return order[np.arange(len(cdf)), j]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_name", list(N_VALUES))
def test_one_draw_per_row(benchmark, rounds, request, n_name, impl):
    logits, rewards = _batch(quick(request.config))
    n = N_VALUES[n_name]
    if impl == "numpy-simple":
        fn = lambda: numpy_bon_inverse_cdf(logits, rewards, n,  # noqa: E731
                                           np.random.default_rng(0))
    elif impl == "tilt_stats-2t-avx2":
        fn = avx2_forced(lambda: tiltlab.tilt_stats(logits, rewards, 1.5, n_threads=2))
    else:
        fn = lambda: tiltlab.sample_best_of_n(logits, rewards, n, rng=0,  # noqa: E731
                                              n_threads=2)
        if impl == "compiled-2t-avx2":
            fn = avx2_forced(fn)
    run(benchmark, fn, rounds=rounds,
        group=f"sample_best_of_n batched {logits.shape[0]}x{logits.shape[1]} {n_name} "
              f"one draw per row", impl=impl, kernel="sample_best_of_n",
        n_elements=logits.size)
