"""Benchmark configuration: sizes and shared data.

``--quick`` (or TILTLAB_BENCH_QUICK=1) swaps the issue's sizes for small ones so that the
whole suite runs in seconds (CI uses it to keep the benchmarks from rotting).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

FULL_SHAPES = [(1, 10_000_000), (1000, 50257), (4096, 32000)]
QUICK_SHAPES = [(1, 200_000), (100, 5000), (64, 3200)]


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="small sizes and few rounds (CI smoke run)")


def quick(config) -> bool:
    return bool(config.getoption("--quick") or os.environ.get("TILTLAB_BENCH_QUICK"))


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        shapes = QUICK_SHAPES if quick(metafunc.config) else FULL_SHAPES
        metafunc.parametrize("shape", shapes, ids=[f"{a}x{b}" for a, b in shapes],
                             scope="module")


_cache: dict = {}


def make_data(shape, dtype):
    """Logits and rewards of a given shape (cached: the big ones take seconds to draw)."""
    key = (shape, np.dtype(dtype).str)
    if key not in _cache:
        _cache.clear()  # keep at most one size in memory
        rng = np.random.default_rng(0)
        logits = rng.standard_normal(shape, dtype=np.float64)
        logits *= 2.0
        rewards = rng.random(shape)
        _cache[key] = (logits.astype(dtype, copy=False), rewards.astype(dtype, copy=False))
    return _cache[key]


@pytest.fixture
def rounds(request):
    return 3 if quick(request.config) else 5


def run(benchmark, fn, *, rounds, group, impl, kernel, n_elements, **extra):
    """Time fn with pedantic rounds and record what report.py needs.

    The slow NumPy implementations get fewer rounds on the big sizes (they take tens of
    seconds per call there); medians are still over >= 2 rounds after a warm-up."""
    benchmark.group = group
    benchmark.extra_info.update(impl=impl, kernel=kernel, n_elements=int(n_elements), **extra)
    slow = impl in ("reference", "numpy-simple", "scipy") and n_elements > 10_000_000
    return benchmark.pedantic(fn, rounds=2 if slow else rounds, iterations=1,
                              warmup_rounds=0 if slow else 1)


def avx2_forced(fn):
    """fn run with the avx2 variant forced (tiltlab.simd.use): the variant of the product's
    target machines, on any CPU that runs it; the benchmark is skipped where it cannot."""
    from tiltlab import simd

    if "avx2" not in simd.available():
        pytest.skip("this CPU or build has no avx2 variant")

    def forced():
        with simd.use("avx2"):
            return fn()
    return forced


def stream_add(n_elements: int):
    """The machine's limit for a pass over n_elements doubles: ``np.add`` over two arrays
    of that size into a third (a "stream-add" row)."""
    a = np.random.default_rng(0).random(n_elements)
    b = np.random.default_rng(1).random(n_elements)
    out = np.empty_like(a)
    return lambda: np.add(a, b, out=out)
