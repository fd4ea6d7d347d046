"""The machine's limits and the other ways to compute, next to the kernels (issue 16).

Rows added to the tables of bench_tilting.py and bench_bestofn.py (same group names, same
data from conftest.make_data, same run) and three kernels of their own:

* ``stream-add``: ``np.add(L, R, out=o)`` over the very arrays a two-array kernel reads
  (tilt_stats, tilt, cumulants, kl_divergence), and ``stream-sum``: ``L.sum(axis=-1)``
  for the one-array logsumexp.  Reading the data once from memory costs at least this;
  report.py's "× limit" column divides each row's median by it.
* ``compiled-2t-avx2``: the kernel with the avx2 variant forced (tiltlab.simd.use), so
  that the table shows the variant of the product's target machines (AVX2, no AVX-512)
  even on a CPU that has AVX-512.
* ``numba-2t``: a plain numba ``@njit(parallel=True)`` two-pass loop on 2 threads
  (bench/baselines.py), where numba is installed; compiled before the timing starts.
* the tilt, cumulants (order 4) and kl_divergence kernels: compiled on 1 and 2 threads,
  the avx2 variant, tiltlab.reference.
* ``rng-random``: ``numpy.random.default_rng(0).random(draws)``, the cost of one
  uniform per draw from the same bit generator (PCG64) on its own, next to
  sample_best_of_n.
"""

from __future__ import annotations

import numpy as np
import pytest
from baselines import numba_available, numba_logsumexp, numba_tilt_stats
from bench_bestofn import LOG_NS
from conftest import avx2_forced, make_data, quick, run

import tiltlab
from tiltlab import reference

DTYPES = [np.float64, np.float32]
TWO_ARRAY = ["tilt_stats", "tilt", "cumulants", "kl_divergence"]
ORDER = 4
LAM = 1.5


def _group(kernel, shape, dtype):
    g = f"{kernel} {shape[0]}x{shape[1]} {np.dtype(dtype).name}"
    return g + f" order={ORDER}" if kernel == "cumulants" else g


def _call(kernel, logits, rewards, nt):
    if kernel == "tilt_stats":
        return tiltlab.tilt_stats(logits, rewards, LAM, n_threads=nt)
    if kernel == "tilt":
        return tiltlab.tilt(logits, rewards, LAM, n_threads=nt)
    if kernel == "cumulants":
        return tiltlab.cumulants(logits, rewards, ORDER, LAM, n_threads=nt)
    if kernel == "kl_divergence":
        return tiltlab.kl_divergence(logits, rewards, n_threads=nt)
    if kernel == "logsumexp":
        return tiltlab.logsumexp(logits, axis=-1, n_threads=nt)
    raise ValueError(kernel)


def _reference(kernel, logits, rewards):
    if kernel == "tilt":
        return reference.tilt(logits, rewards, LAM)
    if kernel == "cumulants":
        return reference.cumulants(logits, rewards, ORDER, LAM)
    if kernel == "kl_divergence":
        return reference.kl_divergence(logits, rewards)
    raise ValueError(kernel)


# the tables: tilt_stats and logsumexp in both dtypes (as bench_tilting.py), the others f64
TABLES = [pytest.param(k, d, id=f"{k}-{np.dtype(d).name}") for k in TWO_ARRAY + ["logsumexp"]
          for d in DTYPES if d is np.float64 or k in ("tilt_stats", "logsumexp")]


@pytest.mark.parametrize(("kernel", "dtype"), TABLES)
def test_streaming_limit(benchmark, rounds, shape, kernel, dtype):
    """The memory-streaming reference over the kernel's own arrays."""
    logits, rewards = make_data(shape, dtype)
    if kernel == "logsumexp":
        impl = "stream-sum"
        fn = lambda: logits.sum(axis=-1)  # noqa: E731
    else:
        impl = "stream-add"
        out = np.empty_like(logits)
        fn = lambda: np.add(logits, rewards, out=out)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=_group(kernel, shape, dtype), impl=impl,
        kernel=kernel, n_elements=np.prod(shape))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel", ["tilt_stats", "logsumexp"])
def test_avx2_variant(benchmark, rounds, shape, dtype, kernel):
    """tilt_stats and logsumexp (tables of bench_tilting.py) on the avx2 variant."""
    logits, rewards = make_data(shape, dtype)
    fn = avx2_forced(lambda: _call(kernel, logits, rewards, 2))
    run(benchmark, fn, rounds=rounds, group=_group(kernel, shape, dtype),
        impl="compiled-2t-avx2", kernel=kernel, n_elements=np.prod(shape), simd="avx2")


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "compiled-2t-avx2",
                                  "reference"])
@pytest.mark.parametrize("kernel", ["tilt", "cumulants", "kl_divergence"])
def test_two_array_kernels(benchmark, rounds, shape, kernel, impl):
    """tilt, cumulants and kl_divergence on the data of the tilt_stats table (float64;
    kl_divergence reads the rewards as the logits of q)."""
    logits, rewards = make_data(shape, np.float64)
    if impl == "reference":
        fn = lambda: _reference(kernel, logits, rewards)  # noqa: E731
    else:
        nt = 1 if impl == "compiled-1t" else 2
        fn = lambda: _call(kernel, logits, rewards, nt)  # noqa: E731
        if impl == "compiled-2t-avx2":
            fn = avx2_forced(fn)
    run(benchmark, fn, rounds=rounds, group=_group(kernel, shape, np.float64), impl=impl,
        kernel=kernel, n_elements=np.prod(shape))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel", ["tilt_stats", "logsumexp"])
def test_numba(benchmark, rounds, shape, dtype, kernel):
    """The numba two-pass loops of bench/baselines.py on 2 threads."""
    if not numba_available():
        pytest.skip("numba is not installed")
    logits, rewards = make_data(shape, dtype)
    if kernel == "tilt_stats":
        fn = lambda: numba_tilt_stats(logits, rewards, LAM)  # noqa: E731
        numba_tilt_stats(logits[:1, :8].copy(), rewards[:1, :8].copy(), LAM)  # compile
    else:
        fn = lambda: numba_logsumexp(logits)  # noqa: E731
        numba_logsumexp(logits[:1, :8].copy())
    run(benchmark, fn, rounds=rounds, group=_group(kernel, shape, dtype), impl="numba-2t",
        kernel=kernel, n_elements=np.prod(shape))


@pytest.mark.parametrize("n_name", list(LOG_NS))
def test_random_numbers(benchmark, rounds, request, n_name):
    """One uniform per draw from numpy's PCG64, alone, in each sample_best_of_n table."""
    draws = 100_000 if quick(request.config) else 10_000_000
    fn = lambda: np.random.default_rng(0).random(draws)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"sample_best_of_n V=50257 {n_name} draws={draws}",
        impl="rng-random", kernel="rng", n_elements=draws)
