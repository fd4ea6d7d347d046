"""The porting guide's patterns (docs/porting.md): what research scripts write, next to the
tiltlab call that replaces it, equal work, same run.

* ``best-of-N loop``: the naive loop (draw N candidates per sample from p, score them,
  keep the best) in NumPy (``Generator.choice``) and torch (``torch.multinomial``), against
  ``tiltlab.sample_best_of_n`` drawing the same number of best-of-N samples from the exact
  law (no candidates drawn).
* ``KL from samples``: the per-row KL(p || q) between two batches of logits estimated from
  k sampled tokens per row (the log-ratio average of RL code: softmax, multinomial,
  gather) in torch and NumPy, against the exact sum over the vocabulary
  (``tiltlab.kl_divergence``); the notes column gives the estimate's median relative
  error.
* ``log N - (N-1)/N``: the closed-form KL of best-of-N that assumes a continuous reward
  law, against the exact KL (``tiltlab.best_of_n(...).kl``) and the NumPy way to get the
  exact value (sort, cumulative sums, F^N: tiltlab.reference.best_of_n); the notes column
  gives the formula's relative error on a reward with ties (integer rewards).

The SciPy and torch rows of the special functions and of the categorical samplers, the
guide's other patterns, are in bench_special.py and bench_sampling.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import quick, run

import tiltlab
from tiltlab import reference

V = 50257
N = 16


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


def _model(seed=0, integer=False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=V) * 2
    rewards = rng.integers(0, 5, size=V).astype(float) if integer else rng.normal(size=V)
    return logits, rewards


@pytest.mark.parametrize("impl", ["compiled-2t", "numpy-simple", "torch-2t"])
def test_best_of_n_loop(benchmark, rounds, request, impl):
    samples = 2_000 if quick(request.config) else 100_000
    logits, rewards = _model()
    p = np.exp(logits - logits.max())
    p /= p.sum()
    if impl == "numpy-simple":
        gen = np.random.default_rng(1)

        def fn():
            cand = gen.choice(V, size=(samples, N), p=p)
            return cand[np.arange(samples), np.argmax(rewards[cand], axis=1)]
    elif impl == "torch-2t":
        torch = _torch()
        pt, rt = torch.from_numpy(p), torch.from_numpy(rewards)
        gen = torch.Generator().manual_seed(1)

        def fn():
            cand = torch.multinomial(pt, samples * N, replacement=True,
                                     generator=gen).view(samples, N)
            best = torch.argmax(rt[cand], dim=1)
            return cand.gather(1, best[:, None])[:, 0]
    else:
        fn = lambda: tiltlab.sample_best_of_n(logits, rewards, N, size=samples,  # noqa: E731
                                              rng=1, n_threads=2)
    run(benchmark, fn, rounds=rounds,
        group=f"porting best-of-N loop V={V} N={N} samples={samples}", impl=impl,
        kernel="sample_best_of_n", n_elements=samples)


def _kl_batch(rows, v, seed=2):
    rng = np.random.default_rng(seed)
    lp = rng.normal(size=(rows, v)) * 2
    lq = lp + rng.normal(size=(rows, v)) * 0.3
    return lp, lq


@pytest.mark.parametrize("impl", ["compiled-2t", "numpy-simple", "torch-2t"])
def test_kl_from_samples(benchmark, rounds, request, impl):
    rows, v, k = (64, 3200, 16) if quick(request.config) else (1024, 32000, 16)
    lp, lq = _kl_batch(rows, v)
    exact = tiltlab.kl_divergence(lp, lq)
    if impl == "numpy-simple":
        gen = np.random.default_rng(3)

        def fn():
            a = lp - lp.max(axis=1, keepdims=True)
            log_p = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
            b = lq - lq.max(axis=1, keepdims=True)
            log_q = b - np.log(np.exp(b).sum(axis=1, keepdims=True))
            cdf = np.cumsum(np.exp(log_p), axis=1)
            u = gen.random((rows, k)) * cdf[:, -1:]
            y = np.stack([np.searchsorted(cdf[i], u[i], side="right") for i in range(rows)])
            y = np.minimum(y, v - 1)
            ratio = np.take_along_axis(log_p, y, 1) - np.take_along_axis(log_q, y, 1)
            return ratio.mean(axis=1)
    elif impl == "torch-2t":
        torch = _torch()
        tp, tq = torch.from_numpy(lp), torch.from_numpy(lq)
        gen = torch.Generator().manual_seed(3)

        def fn():
            log_p = torch.log_softmax(tp, dim=1)
            log_q = torch.log_softmax(tq, dim=1)
            y = torch.multinomial(log_p.exp(), k, replacement=True, generator=gen)
            return (log_p.gather(1, y) - log_q.gather(1, y)).mean(dim=1).numpy()
    else:
        fn = lambda: tiltlab.kl_divergence(lp, lq, n_threads=2)  # noqa: E731
    est = np.asarray(fn())
    err = float(np.median(np.abs(est - exact) / exact))
    run(benchmark, fn, rounds=rounds, group=f"porting KL from samples {rows}x{v} k={k}",
        impl=impl, kernel="kl_divergence", n_elements=rows * v, kl_error=err)


@pytest.mark.parametrize("impl", ["compiled-2t", "reference", "formula"])
def test_log_n_formula(benchmark, rounds, impl):
    logits, rewards = _model(integer=True)
    log_n = np.log(N)
    exact = tiltlab.best_of_n(logits, rewards, N).kl
    if impl == "formula":
        fn = lambda: np.log(N) - (N - 1) / N  # noqa: E731
    elif impl == "reference":
        fn = lambda: reference.best_of_n(logits, rewards, log_n)["kl"]  # noqa: E731
    else:
        fn = lambda: tiltlab.best_of_n(logits, rewards, N, n_threads=2).kl  # noqa: E731
    err = abs(float(fn()) - exact) / exact
    run(benchmark, fn, rounds=rounds,
        group=f"porting log N - (N-1)/N V={V} N={N} rewards in 0..4", impl=impl,
        kernel="best_of_n", n_elements=V, kl_error=err)
