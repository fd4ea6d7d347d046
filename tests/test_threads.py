"""Threads: bitwise-identical results for any n_threads, and the GIL is released."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tiltlab


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    # rows spanning several 16384-element chunks, plus -inf holes and a big-lam row
    logits = rng.normal(size=(5, 40_000)) * 3
    logits[rng.random(logits.shape) < 0.05] = -np.inf
    rewards = rng.normal(size=(5, 40_000))
    lam = np.array([0.0, 1e-7, 0.7, -3.0, 2000.0])
    return logits, rewards, lam


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_identical_results_for_any_thread_count(data, threads):
    logits, rewards, lam = data
    one = dict(n_threads=1)
    many = dict(n_threads=threads)
    for a, b in zip(tiltlab.tilt_stats(logits, rewards, lam, **one),
                    tiltlab.tilt_stats(logits, rewards, lam, **many), strict=True):
        assert_array_equal(a, b)
    assert_array_equal(tiltlab.tilt(logits, rewards, lam, **one),
                       tiltlab.tilt(logits, rewards, lam, **many))
    assert_array_equal(tiltlab.cumulants(logits, rewards, 6, lam, **one),
                       tiltlab.cumulants(logits, rewards, 6, lam, **many))
    budget = np.array([0.0, 1e-6, 0.1, 0.5, 50.0])
    assert_array_equal(tiltlab.solve_lambda(logits, rewards, budget, **one),
                       tiltlab.solve_lambda(logits, rewards, budget, **many))
    assert (tiltlab.solve_lambda(logits, rewards, 1.0, joint=True, **one)
            == tiltlab.solve_lambda(logits, rewards, 1.0, joint=True, **many))
    assert_array_equal(tiltlab.kl_max(logits, rewards, **one),
                       tiltlab.kl_max(logits, rewards, **many))
    assert_array_equal(tiltlab.logsumexp(logits, **one), tiltlab.logsumexp(logits, **many))
    assert_array_equal(tiltlab.kl_divergence(logits, logits[::-1], **one),
                       tiltlab.kl_divergence(logits, logits[::-1], **many))


def test_single_long_row_split_across_threads_is_deterministic():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 300_001))
    r = rng.normal(size=(1, 300_001))
    assert_array_equal(tiltlab.logsumexp(x, n_threads=1), tiltlab.logsumexp(x, n_threads=2))
    a = tiltlab.tilt_stats(x, r, 0.3, n_threads=1)
    b = tiltlab.tilt_stats(x, r, 0.3, n_threads=2)
    for u, v in zip(a, b, strict=True):
        assert_array_equal(u, v)


def test_concurrent_calls_from_python_threads_match_serial(data):
    logits, rewards, lam = data
    want = tiltlab.tilt_stats(logits, rewards, lam)
    results = [None] * 4
    errors = []

    def work(i):
        try:
            results[i] = tiltlab.tilt_stats(logits, rewards, lam, n_threads=1)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for res in results:
        for a, b in zip(res, want, strict=True):
            assert_array_equal(a, b)


def test_build_info_reports_openmp_and_threads():
    info = tiltlab.build_info()
    assert info["max_threads"] >= 1
    assert info["chunk_size"] == 16384
    assert isinstance(info["openmp"], bool)
