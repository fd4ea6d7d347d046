"""Best-of-N: exact metrics and samplers, compiled vs the NumPy reference, same run.

Sizes (full / --quick): exact metrics on one row of V = 10^6 (10^5) and on (1000, 50257)
((20, 50257)); the order-statistic sampler draws 10^7 (10^5) outcomes on V = 50257 for
N in {4, 1024, e^50}; the naive sampler 10^6 (10^4) samples with N = 16; the sampler cost
rows 10^6 (10^5) draws for N in {1, 4, 64, 10^6} next to NumPy's random-number cost."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import quick, run

import tiltlab
from tiltlab import reference

IMPLS = ["compiled-1t", "compiled-2t", "reference"]
LOG_NS = {"N=4": np.log(4.0), "N=1024": np.log(1024.0), "N=e^50": 50.0}


def _model(rows, v, integer, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, v)) * 2
    rewards = (rng.integers(0, 100, size=(rows, v)).astype(float) if integer
               else rng.normal(size=(rows, v)))
    return logits, rewards


def _threads(impl):
    return 1 if impl == "compiled-1t" else 2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_name", ["N=16", "N=e^50"])
@pytest.mark.parametrize("shape_name", ["one row", "batch"])
def test_exact_metrics(benchmark, rounds, request, impl, n_name, shape_name):
    small = quick(request.config)
    shape = ((1, 100_000 if small else 1_000_000) if shape_name == "one row"
             else (20 if small else 1000, 50257))
    logits, rewards = _model(*shape, integer=False)
    log_n = np.log(16.0) if n_name == "N=16" else 50.0
    if impl == "reference":
        fn = lambda: reference.best_of_n(logits, rewards, log_n)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.best_of_n(logits, rewards, log_n=log_n, n_threads=nt)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"best_of_n {shape[0]}x{shape[1]} {n_name}",
        impl=impl, kernel="best_of_n", n_elements=shape[0] * shape[1])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_name", list(LOG_NS))
def test_sample_best_of_n(benchmark, rounds, request, impl, n_name):
    draws = 100_000 if quick(request.config) else 10_000_000
    logits, rewards = _model(1, 50257, integer=True)
    logits, rewards = logits[0], rewards[0]
    log_n = LOG_NS[n_name]
    if impl == "reference":
        fn = lambda: reference.sample_best_of_n(logits, rewards, log_n, draws, 0)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.sample_best_of_n(  # noqa: E731
            logits, rewards, log_n=log_n, size=draws, rng=0, n_threads=nt)
    run(benchmark, fn, rounds=rounds, group=f"sample_best_of_n V=50257 {n_name} draws={draws}",
        impl=impl, kernel="sample_best_of_n", n_elements=draws)


SAMPLER_NS = {"N=1": 1.0, "N=4": 4.0, "N=64": 64.0, "N=1e6": 1e6}


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "numpy-random",
                                  "numpy-random_raw"])
@pytest.mark.parametrize("n_name", list(SAMPLER_NS))
def test_sampler_cost(benchmark, rounds, request, impl, n_name):
    """ns per draw of sample_best_of_n on V = 50257 (normal logits, uniform rewards: 50257
    levels), table setup included, next to the random-number cost alone in the same run:
    numpy Generator.random of the same count, and PCG64.random_raw (the 64-bit words the
    sampler consumes, one per draw)."""
    draws = 100_000 if quick(request.config) else 1_000_000
    rng = np.random.default_rng(0)
    logits, rewards = rng.normal(size=50257), rng.uniform(size=50257)
    if impl == "numpy-random":
        gen = np.random.default_rng(1)
        fn = lambda: gen.random(draws)  # noqa: E731
    elif impl == "numpy-random_raw":
        bits = np.random.PCG64(1)
        fn = lambda: bits.random_raw(draws)  # noqa: E731
    else:
        nt, n = _threads(impl), SAMPLER_NS[n_name]
        fn = lambda: tiltlab.sample_best_of_n(  # noqa: E731
            logits, rewards, n, size=draws, rng=0, n_threads=nt)
    run(benchmark, fn, rounds=rounds,
        group=f"sampler cost V=50257 {n_name} draws={draws}", impl=impl,
        kernel="sample_best_of_n", n_elements=draws)


@pytest.mark.parametrize("impl", IMPLS)
def test_simulate_best_of_n(benchmark, rounds, request, impl):
    samples = 10_000 if quick(request.config) else 1_000_000
    n = 16
    logits, rewards = _model(1, 50257, integer=True)
    logits, rewards = logits[0], rewards[0]
    if impl == "reference":
        fn = lambda: reference.simulate_best_of_n(logits, rewards, n, samples, 0)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.simulate_best_of_n(  # noqa: E731
            logits, rewards, n, size=samples, rng=0, n_threads=nt)
    run(benchmark, fn, rounds=rounds,
        group=f"simulate_best_of_n V=50257 N=16 samples={samples}", impl=impl,
        kernel="simulate_best_of_n", n_elements=samples * n)


# --------------------------------------------------------------------------------------
# small calls: one row of 8 outcomes, N = 4 (bench_tilting.py has the tilting ones)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_small_best_of_n_kl(benchmark, request, impl):
    from bench_tilting import SMALL_V, run_small, small_data

    logits, rewards = small_data()
    if impl == "reference":
        fn = lambda: reference.best_of_n(logits, rewards, np.log(4.0))["kl"]  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.best_of_n(logits, rewards, 4, n_threads=nt).kl  # noqa: E731
    run_small(benchmark, request, fn, group=f"best_of_n 1x{SMALL_V} N=4 .kl (small call)",
              impl=impl, kernel="best_of_n")


@pytest.mark.parametrize("impl", IMPLS)
def test_small_sample_best_of_n(benchmark, request, impl):
    from bench_tilting import SMALL_V, run_small, small_data

    logits, rewards = small_data()
    if impl == "reference":
        fn = lambda: reference.sample_best_of_n(logits, rewards, np.log(4.0), 16, None)  # noqa: E731
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.sample_best_of_n(logits, rewards, 4, size=16,  # noqa: E731
                                              n_threads=nt)
    run_small(benchmark, request, fn,
              group=f"sample_best_of_n V={SMALL_V} N=4 draws=16 (small call)", impl=impl,
              kernel="sample_best_of_n")
