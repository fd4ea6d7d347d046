"""Tilted statistics, log-sum-exp and joint solve: compiled (1 and 2 threads) vs the NumPy
reference (and scipy.special.logsumexp for the plain case), same run, same data."""

from __future__ import annotations

import numpy as np
import pytest
from baselines import (
    numpy_simple_tilt_stats,
    numpy_tiled_logsumexp,
    numpy_tiled_tilt_stats,
    torch_tilt_stats,
)
from conftest import make_data, run

import tiltlab
from tiltlab import reference, simd
from tiltlab.tilting import _solve

DTYPES = [np.float64, np.float32]
IMPLS = ["compiled-1t", "compiled-2t", "reference"]


def _threads(impl):
    return 1 if impl == "compiled-1t" else 2


def _torch(threads=2):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    return torch


def _compiled(impl, call):
    """The compiled call; compiled-2t-portable runs it on the portable (SSE2) kernels."""
    if impl == "compiled-2t-portable":
        def fn():
            with simd.use("portable"):
                return call(2)
        return fn
    nt = _threads(impl)
    return lambda: call(nt)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("impl", IMPLS + ["compiled-2t-portable", "numpy-simple",
                                          "numpy-tiled", "torch-2t"])
def test_tilt_stats(benchmark, rounds, shape, dtype, impl):
    logits, rewards = make_data(shape, dtype)
    lam = 1.5
    if impl == "reference":
        fn = lambda: reference.tilt_stats(logits, rewards, lam)  # noqa: E731
    elif impl == "numpy-simple":
        fn = lambda: numpy_simple_tilt_stats(logits, rewards, lam)  # noqa: E731
    elif impl == "numpy-tiled":
        fn = lambda: numpy_tiled_tilt_stats(logits, rewards, lam)  # noqa: E731
    elif impl == "torch-2t":
        _torch()
        fn = lambda: torch_tilt_stats(logits, rewards, lam)  # noqa: E731
    else:
        fn = _compiled(impl, lambda nt: tiltlab.tilt_stats(logits, rewards, lam,
                                                           n_threads=nt))
    run(benchmark, fn, rounds=rounds, group=f"tilt_stats {shape[0]}x{shape[1]} "
        f"{np.dtype(dtype).name}", impl=impl, kernel="tilt_stats", n_elements=np.prod(shape))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("impl", IMPLS + ["compiled-2t-portable", "numpy-tiled", "torch-2t",
                                          "scipy"])
def test_logsumexp(benchmark, rounds, shape, dtype, impl):
    logits, _ = make_data(shape, dtype)
    if impl == "reference":
        fn = lambda: reference.logsumexp(logits)  # noqa: E731
    elif impl == "scipy":
        special = pytest.importorskip("scipy.special")
        fn = lambda: special.logsumexp(logits, axis=-1)  # noqa: E731
    elif impl == "numpy-tiled":
        fn = lambda: numpy_tiled_logsumexp(logits)  # noqa: E731
    elif impl == "torch-2t":
        torch = _torch()
        t = torch.from_numpy(logits)
        fn = lambda: torch.logsumexp(t, dim=-1)  # noqa: E731
    else:
        fn = _compiled(impl, lambda nt: tiltlab.logsumexp(logits, axis=-1, n_threads=nt))
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


# --------------------------------------------------------------------------------------
# small calls: one row of 8 outcomes, the size of a research loop over prompts
# --------------------------------------------------------------------------------------

SMALL_V = 8


def small_data(dtype=np.float64):
    """One row of SMALL_V logits and rewards."""
    rng = np.random.default_rng(0)
    return ((rng.standard_normal(SMALL_V) * 2).astype(dtype),
            rng.random(SMALL_V).astype(dtype))


def run_small(benchmark, request, fn, *, group, impl, kernel):
    """Time a call of microseconds: many calls per round (a round of one call would mostly
    measure the timer), medians over the rounds, per call."""
    from conftest import quick

    benchmark.group = group
    benchmark.extra_info.update(impl=impl, kernel=kernel, n_elements=SMALL_V)
    small = quick(request.config)
    return benchmark.pedantic(fn, rounds=5 if small else 15, iterations=200 if small else 2000,
                              warmup_rounds=1)


def numpy_simple_logsumexp(x):
    """The NumPy one-liner: max-shifted log of the sum of exponentials."""
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[..., None]).sum(axis=-1))


@pytest.mark.parametrize("impl", IMPLS + ["numpy-simple"])
def test_small_tilt_stats(benchmark, request, impl):
    logits, rewards = small_data()
    if impl == "reference":
        fn = lambda: reference.tilt_stats(logits, rewards, 1.0)  # noqa: E731
    elif impl == "numpy-simple":
        fn = lambda: numpy_simple_tilt_stats(logits, rewards, 1.0)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.tilt_stats(logits, rewards, 1.0, n_threads=nt)  # noqa: E731
    run_small(benchmark, request, fn, group=f"tilt_stats 1x{SMALL_V} float64 (small call)",
              impl=impl, kernel="tilt_stats")


@pytest.mark.parametrize("impl", IMPLS + ["numpy-simple", "scipy"])
def test_small_logsumexp(benchmark, request, impl):
    logits, _ = small_data()
    if impl == "reference":
        fn = lambda: reference.logsumexp(logits)  # noqa: E731
    elif impl == "numpy-simple":
        fn = lambda: numpy_simple_logsumexp(logits)  # noqa: E731
    elif impl == "scipy":
        special = pytest.importorskip("scipy.special")
        fn = lambda: special.logsumexp(logits)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.logsumexp(logits, n_threads=nt)  # noqa: E731
    run_small(benchmark, request, fn, group=f"logsumexp 1x{SMALL_V} float64 (small call)",
              impl=impl, kernel="logsumexp")
