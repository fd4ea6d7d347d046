"""Memoryless sequences (SPEC section 4): exact sequence best-of-N and its samplers.

The issue's model: a stationary token model with V = 50 and integer rewards in [0, 100];
best-of-N with log N = 0.3 n.  Metrics at n = 10^4 and 10^5 (--quick: 10^3, 10^4) against
the plain NumPy FFT prototype of the method (bench/baselines.py, "numpy-simple"), and at
a size where the exact direct-convolution reference (tiltlab.reference) is still
feasible, n = 300 (--quick: 50).  Samplers: sample_rewards(10^6) (--quick 10^5) against
the NumPy order-statistic reference on the same lattice law; sample(10^4) sequences of
length 1000 (--quick: 10^3 of length 200), compiled only.
"""

from __future__ import annotations

import numpy as np
import pytest
from baselines import numpy_fft_sequence_bon
from conftest import quick, run

import tiltlab
from tiltlab import reference

V_TOKENS = 50


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=V_TOKENS), rng.integers(0, 101, size=V_TOKENS).astype(float)


def _threads(impl):
    return 1 if impl == "compiled-1t" else 2


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "numpy-simple"])
@pytest.mark.parametrize("size", ["n1", "n2"])
def test_sequence_bon_metrics(benchmark, rounds, request, impl, size):
    n = {"n1": 1000, "n2": 10_000}[size] if quick(request.config) else \
        {"n1": 10_000, "n2": 100_000}[size]
    logits, rewards = _model()
    log_n = 0.3 * n
    if impl == "numpy-simple":
        fn = lambda: numpy_fft_sequence_bon(logits, rewards, n, log_n)  # noqa: E731
    else:
        nt = _threads(impl)

        def fn():
            b = tiltlab.Memoryless(logits, rewards, n, n_threads=nt).best_of_n(log_n=log_n)
            return b.expected_reward, b.kl, b.win_rate
    got = fn()
    want = numpy_fft_sequence_bon(logits, rewards, n, log_n)
    np.testing.assert_allclose(got, want, rtol=1e-8)
    run(benchmark, fn, rounds=rounds, group=f"sequence best_of_n V=50 n={n} log N=0.3n",
        impl=impl, kernel="sequence_best_of_n", n_elements=n)


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "reference"])
def test_sequence_bon_vs_exact_reference(benchmark, rounds, request, impl):
    n = 50 if quick(request.config) else 300
    logits, rewards = _model()
    log_n = 0.3 * n
    if impl == "reference":
        fn = lambda: reference.sequence_best_of_n(logits, rewards, n, log_n)["kl"]  # noqa
    else:
        nt = _threads(impl)
        fn = lambda: tiltlab.Memoryless(  # noqa: E731
            logits, rewards, n, n_threads=nt).best_of_n(log_n=log_n).kl
    run(benchmark, fn, rounds=2 if impl == "reference" else rounds,
        group=f"sequence best_of_n V=50 n={n} (exact reference)", impl=impl,
        kernel="sequence_best_of_n", n_elements=n)


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "reference"])
def test_sample_rewards(benchmark, rounds, request, impl):
    draws = 100_000 if quick(request.config) else 1_000_000
    n = 1000
    logits, rewards = _model()
    b = tiltlab.Memoryless(logits, rewards, n).best_of_n(log_n=0.3 * n)
    if impl == "reference":
        lw = b.log_probs  # the order statistic on the same lattice law, in NumPy
        fn = lambda: reference.sample_best_of_n(  # noqa: E731
            np.log(np.maximum(np.exp(lw), 1e-300)), b.values, 0.0, draws, 0)
    else:
        nt = _threads(impl)
        fn = lambda: b.sample_rewards(draws, rng=0, n_threads=nt)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"sample_rewards n=1000 draws={draws}",
        impl=impl, kernel="sample_rewards", n_elements=draws)


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t"])
def test_sample_sequences(benchmark, rounds, request, impl):
    small = quick(request.config)
    n, draws = (200, 1000) if small else (1000, 10_000)
    logits, rewards = _model()
    b = tiltlab.Memoryless(logits, rewards, n).best_of_n(log_n=0.3 * n)
    nt = _threads(impl)

    def fn():
        return b.sample(draws, rng=0, n_threads=nt)
    run(benchmark, fn, rounds=rounds, group=f"sample sequences n={n} draws={draws}",
        impl=impl, kernel="sample_sequences", n_elements=draws)
