"""Threads: bitwise-identical results and samples for any n_threads (1 to 8), concurrent
calls from Python threads equal to serial calls, and the GIL released inside kernels."""

from __future__ import annotations

import threading
import time

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


@pytest.mark.parametrize("threads", [2, 3, 4, 5, 6, 7, 8])
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


@pytest.fixture(scope="module")
def bon_model():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=3000) * 2
    rewards = np.round(rng.normal(size=3000), 1)
    return logits, rewards


@pytest.mark.parametrize("threads", [2, 3, 4, 5, 6, 7, 8])
def test_identical_samples_and_laws_for_any_thread_count(bon_model, threads):
    """Seeded samplers give the same draws for any thread count (SPEC section 6)."""
    logits, rewards = bon_model
    batch = np.stack([logits, logits[::-1], logits * 0.5])

    def draws(fn, **kw):
        return fn(rng=np.random.default_rng(123), **kw)

    kw1, kwn = dict(n_threads=1), dict(n_threads=threads)
    assert_array_equal(
        draws(lambda **k: tiltlab.sample_best_of_n(logits, rewards, 64, size=50_000, **k), **kw1),
        draws(lambda **k: tiltlab.sample_best_of_n(logits, rewards, 64, size=50_000, **k), **kwn))
    assert_array_equal(
        draws(lambda **k: tiltlab.sample_best_of_n(batch, rewards, log_n=30.0, size=20_000,
                                                   **k), **kw1),
        draws(lambda **k: tiltlab.sample_best_of_n(batch, rewards, log_n=30.0, size=20_000,
                                                   **k), **kwn))
    assert_array_equal(
        draws(lambda **k: tiltlab.simulate_best_of_n(logits, rewards, 8, size=20_000, **k),
              **kw1),
        draws(lambda **k: tiltlab.simulate_best_of_n(logits, rewards, 8, size=20_000, **k),
              **kwn))
    a, b = (tiltlab.best_of_n(batch, rewards, log_n=[0.5, 5.0, 50.0], n_threads=t)
            for t in (1, threads))
    assert_array_equal(a.kl, b.kl)
    assert_array_equal(a.log_probs, b.log_probs)
    seq = [tiltlab.Memoryless(np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0], 200, n_threads=t)
           for t in (1, threads)]
    assert_array_equal(seq[0].best_of_n(log_n=40.0).sample(size=300, rng=np.random.default_rng(5)),
                       seq[1].best_of_n(log_n=40.0).sample(size=300, rng=np.random.default_rng(5)))
    assert_array_equal(seq[0].reward_log_pmf().log_pmf, seq[1].reward_log_pmf().log_pmf)
    s1, sn = (tiltlab.soft_best_of_n(logits, rewards, 16, 0.3, n_threads=t) for t in (1, threads))
    assert_array_equal(s1.log_probs, sn.log_probs)


def test_concurrent_calls_of_every_kernel_family_match_serial(data, bon_model):
    """Four Python threads call each kernel family at once (one OpenMP thread each, and two
    each): every result equals the serial one bit for bit."""
    logits, rewards, lam = data
    bl, br = bon_model
    calls = {
        "logsumexp": lambda nt: tiltlab.logsumexp(logits, n_threads=nt),
        "tilt": lambda nt: tiltlab.tilt(logits, rewards, lam, n_threads=nt),
        "kl": lambda nt: tiltlab.kl_divergence(logits, logits[::-1], n_threads=nt),
        "solve": lambda nt: tiltlab.solve_lambda(logits, rewards, 0.2, n_threads=nt),
        "bon": lambda nt: tiltlab.best_of_n(bl, br, 100, n_threads=nt).log_probs,
        "sample": lambda nt: tiltlab.sample_best_of_n(bl, br, 100, size=20_000,
                                                      rng=np.random.default_rng(9),
                                                      n_threads=nt),
        "soft": lambda nt: tiltlab.soft_best_of_n(bl, br, 8, 0.5, n_threads=nt).log_probs,
    }
    for name, fn in calls.items():
        want = fn(1)
        results, errors = [None] * 4, []

        def work(i, fn=fn, results=results, errors=errors):
            try:
                results[i] = fn(1 + i % 2)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, name
        for res in results:
            assert_array_equal(res, want, err_msg=name)


def test_gil_is_released_during_kernels():
    """While one thread runs a long kernel, another Python thread keeps running.

    A kernel that held the GIL would freeze the counter for the whole call; the check
    counts the other thread's progress strictly inside the call, so it does not depend on
    how fast this machine is (no timing bound)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 200_000))
    r = rng.normal(size=(64, 200_000))
    ticks = []
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    def inside(call):
        ticks.clear()
        t = threading.Thread(target=counter)
        t.start()
        time.sleep(0.02)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        stop.set()
        t.join()
        stop.clear()
        margin = 0.1 * (t1 - t0)
        return sum(t0 + margin < s < t1 - margin for s in ticks), t1 - t0

    for name, call in [("logsumexp", lambda: tiltlab.logsumexp(x, n_threads=1)),
                       ("tilt_stats", lambda: tiltlab.tilt_stats(x, r, 0.7, n_threads=1))]:
        n, dt = inside(call)
        assert dt > 0.02, (name, dt)
        # with the GIL held the counter could not run at all inside the call
        assert n > 100, (name, n, dt)
