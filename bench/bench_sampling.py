"""Fused batched samplers (issue 17, item 2): sample_categorical and sample_tilted, same run.

Sizes (full / --quick):

* ``sample_categorical 4096x32000 float64 one draw per row`` ((64, 3200)): tiltlab on 1
  and 2 threads and with the avx2 variant forced, against NumPy Gumbel-max
  (``np.argmax(x + rng.gumbel(size=x.shape), -1)``: the "numpy-simple" row), a NumPy
  inverse CDF (softmax, cumsum, one uniform per row, ``(c < u c[-1]).sum(-1)``:
  "numpy-invcdf"), ``torch.multinomial(torch.softmax(t, -1), 1)`` ("torch-2t") and
  ``torch.distributions.Categorical(logits=t).sample()`` ("torch-categorical-2t"), torch on
  2 threads.  Target: >= 5x numpy-simple and >= 2x torch-2t.
* ``sample_tilted 4096x32000 float64 one draw per row``: sample_tilted against
  ``tilt_stats`` on the same arrays ("tilt_stats-2t", same lam, both on the avx2 variant
  for the -avx2 rows).  Target: sample_tilted <= 2x tilt_stats.
* ``sample_categorical V=50257 draws=10^6`` (10^5): one row, the alias path, against
  ``sample_best_of_n(logits, 0, n=1)`` ("bon-n1": the same alias sampler), NumPy
  ``Generator.choice(p=...)`` and ``torch.multinomial(p, draws, replacement=True)``, and
  the cost of one uniform per draw (``rng-random``).
* small calls: one row of 8 outcomes, one draw.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import avx2_forced, quick, run

import tiltlab

LAM = 1.5


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


_data: dict = {}


def _batch(request):
    shape = (64, 3200) if quick(request.config) else (4096, 32000)
    if shape not in _data:
        _data.clear()
        rng = np.random.default_rng(0)
        logits = rng.standard_normal(shape) * 3.0
        rewards = rng.random(shape)
        _data[shape] = (logits, rewards)
    return shape, _data[shape]


def numpy_gumbel(x, rng):
    return np.argmax(x + rng.gumbel(size=x.shape), axis=-1)


def numpy_invcdf(x, rng):
    w = np.exp(x - x.max(axis=-1, keepdims=True))
    c = np.cumsum(w, axis=-1)
    u = rng.random(x.shape[:-1]) * c[:, -1]
    return np.minimum((c < u[:, None]).sum(axis=-1), x.shape[-1] - 1)


CAT_IMPLS = ["compiled-1t", "compiled-2t", "compiled-2t-avx2", "numpy-simple",
             "numpy-invcdf", "torch-2t", "torch-categorical-2t"]


@pytest.mark.parametrize("impl", CAT_IMPLS)
def test_categorical_one_draw_per_row(benchmark, rounds, request, impl):
    shape, (logits, _) = _batch(request)
    rng = np.random.default_rng(1)
    if impl == "numpy-simple":
        fn = lambda: numpy_gumbel(logits, rng)  # noqa: E731
    elif impl == "numpy-invcdf":
        fn = lambda: numpy_invcdf(logits, rng)  # noqa: E731
    elif impl == "torch-2t":
        torch = _torch()
        t = torch.from_numpy(logits)
        fn = lambda: torch.multinomial(torch.softmax(t, -1), 1)  # noqa: E731
    elif impl == "torch-categorical-2t":
        torch = _torch()
        t = torch.from_numpy(logits)
        fn = lambda: torch.distributions.Categorical(logits=t).sample()  # noqa: E731
    else:
        nt = 1 if impl == "compiled-1t" else 2
        fn = lambda: tiltlab.sample_categorical(logits, rng=0, n_threads=nt)  # noqa: E731
        if impl.endswith("avx2"):
            fn = avx2_forced(fn)
    run(benchmark, fn, rounds=rounds,
        group=f"sample_categorical {shape[0]}x{shape[1]} float64 one draw per row",
        impl=impl, kernel="sample_categorical", n_elements=shape[0] * shape[1])


@pytest.mark.parametrize("impl", ["compiled-2t", "compiled-2t-avx2", "tilt_stats-2t",
                                  "tilt_stats-2t-avx2", "stream-add"])
def test_tilted_one_draw_per_row(benchmark, rounds, request, impl):
    shape, (logits, rewards) = _batch(request)
    if impl == "stream-add":
        out = np.empty_like(logits)
        fn = lambda: np.add(logits, rewards, out=out)  # noqa: E731
    elif impl.startswith("tilt_stats"):
        fn = lambda: tiltlab.tilt_stats(logits, rewards, LAM, n_threads=2)  # noqa: E731
    else:
        fn = lambda: tiltlab.sample_tilted(logits, rewards, LAM, rng=0,  # noqa: E731
                                           n_threads=2)
    if impl.endswith("avx2"):
        fn = avx2_forced(fn)
    run(benchmark, fn, rounds=rounds,
        group=f"sample_tilted {shape[0]}x{shape[1]} float64 one draw per row",
        impl=impl, kernel="sample_tilted", n_elements=shape[0] * shape[1])


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t", "compiled-2t-avx2", "bon-n1",
                                  "numpy-simple", "torch-2t", "rng-random"])
def test_many_draws_from_one_row(benchmark, rounds, request, impl):
    draws = 100_000 if quick(request.config) else 1_000_000
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50257) * 2.0
    p = np.exp(logits - logits.max())
    p /= p.sum()
    if impl == "numpy-simple":
        gen = np.random.default_rng(1)
        fn = lambda: gen.choice(len(p), size=draws, p=p)  # noqa: E731
    elif impl == "torch-2t":
        torch = _torch()
        t = torch.from_numpy(p)
        fn = lambda: torch.multinomial(t, draws, replacement=True)  # noqa: E731
    elif impl == "rng-random":
        fn = lambda: np.random.default_rng(0).random(draws)  # noqa: E731
    elif impl == "bon-n1":
        zeros = np.zeros_like(logits)
        fn = lambda: tiltlab.sample_best_of_n(logits, zeros, n=1, size=draws,  # noqa: E731
                                              rng=0, n_threads=2)
    else:
        nt = 1 if impl == "compiled-1t" else 2
        fn = lambda: tiltlab.sample_categorical(logits, draws, rng=0,  # noqa: E731
                                                n_threads=nt)
        if impl.endswith("avx2"):
            fn = avx2_forced(fn)
    run(benchmark, fn, rounds=rounds,
        group=f"sample_categorical V=50257 draws={draws}", impl=impl,
        kernel="sample_categorical", n_elements=draws)


@pytest.mark.parametrize("impl", ["compiled-1t", "numpy-simple", "torch-2t"])
@pytest.mark.parametrize("kernel", ["sample_categorical", "sample_tilted"])
def test_small_call(benchmark, request, kernel, impl):
    from bench_tilting import SMALL_V, run_small, small_data

    logits, rewards = small_data()
    if impl == "numpy-simple":
        gen = np.random.default_rng(1)
        x = logits + LAM * rewards if kernel == "sample_tilted" else logits
        fn = lambda: int(np.argmax(x + gen.gumbel(size=x.shape)))  # noqa: E731
    elif impl == "torch-2t":
        torch = _torch()
        t = torch.from_numpy(logits + LAM * rewards if kernel == "sample_tilted" else logits)
        fn = lambda: torch.multinomial(torch.softmax(t, -1), 1)  # noqa: E731
    elif kernel == "sample_categorical":
        fn = lambda: tiltlab.sample_categorical(logits, rng=0, n_threads=1)  # noqa: E731
    else:
        fn = lambda: tiltlab.sample_tilted(logits, rewards, LAM, rng=0,  # noqa: E731
                                           n_threads=1)
    run_small(benchmark, request, fn, group=f"{kernel} V={SMALL_V} one draw (small call)",
              impl=impl, kernel=kernel)
