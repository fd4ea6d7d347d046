"""Tilted statistics, log-sum-exp and joint solve: compiled (1 and 2 threads) vs the NumPy
reference (and scipy.special.logsumexp for the plain case), same run, same data."""

from __future__ import annotations

import numpy as np
import pytest
from baselines import numpy_simple_tilt_stats
from conftest import make_data, run

import tiltlab
from tiltlab import reference
from tiltlab.tilting import _solve

DTYPES = [np.float64, np.float32]
IMPLS = ["compiled-1t", "compiled-2t", "reference"]


def _threads(impl):
    return 1 if impl == "compiled-1t" else 2


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("impl", IMPLS + ["numpy-simple"])
def test_tilt_stats(benchmark, rounds, shape, dtype, impl):
    logits, rewards = make_data(shape, dtype)
    lam = 1.5
    if impl == "reference":
        fn = lambda: reference.tilt_stats(logits, rewards, lam)  # noqa: E731
    elif impl == "numpy-simple":
        fn = lambda: numpy_simple_tilt_stats(logits, rewards, lam)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.tilt_stats(logits, rewards, lam, n_threads=nt)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"tilt_stats {shape[0]}x{shape[1]} "
        f"{np.dtype(dtype).name}", impl=impl, kernel="tilt_stats", n_elements=np.prod(shape))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("impl", IMPLS + ["scipy"])
def test_logsumexp(benchmark, rounds, shape, dtype, impl):
    logits, _ = make_data(shape, dtype)
    if impl == "reference":
        fn = lambda: reference.logsumexp(logits)  # noqa: E731
    elif impl == "scipy":
        special = pytest.importorskip("scipy.special")
        fn = lambda: special.logsumexp(logits, axis=-1)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.logsumexp(logits, n_threads=nt)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"logsumexp {shape[0]}x{shape[1]} "
        f"{np.dtype(dtype).name}", impl=impl, kernel="logsumexp", n_elements=np.prod(shape))


@pytest.mark.parametrize("impl", IMPLS)
def test_solve_joint(benchmark, rounds, shape, impl):
    logits, rewards = make_data(shape, np.float64)
    budget = 0.05 * shape[0]
    if impl == "reference":
        fn = lambda: reference.solve_lambda(logits, rewards, budget, joint=True)  # noqa: E731
        passes = None
    else:
        nt = _threads(impl)
        fn = lambda: _solve(logits, rewards, budget, True, nt)  # noqa: E731
        passes = int(fn()[2][0])
    run(benchmark, fn, rounds=max(1, rounds - 2), group=f"solve_joint {shape[0]}x{shape[1]} "
        f"float64", impl=impl, kernel="solve_joint", n_elements=np.prod(shape), passes=passes)
