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


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_whole_row_and_chunk_schedules_agree(threads):
    """Many rows: whole rows per thread (1, 2 or 3 threads on 16 rows); few rows per thread:
    the chunks of all rows in parallel (5 threads).  Both merge the same chunk results in
    the same order, so every count gives bitwise the same values."""
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(16, 20_000)) * 3
    logits[rng.random(logits.shape) < 0.05] = -np.inf
    rewards = rng.normal(size=(16, 20_000))
    lam = np.linspace(-3.0, 3.0, 16)
    lam[3] = 1e-7
    lam[5] = 900.0  # the standard mode
    for a, b in zip(tiltlab.tilt_stats(logits, rewards, lam, n_threads=1),
                    tiltlab.tilt_stats(logits, rewards, lam, n_threads=threads), strict=True):
        assert_array_equal(a, b)
    assert_array_equal(tiltlab.cumulants(logits, rewards, 4, lam, n_threads=1),
                       tiltlab.cumulants(logits, rewards, 4, lam, n_threads=threads))
    q = logits + rng.normal(size=logits.shape) * 0.1  # the same support: the fast path
    assert_array_equal(tiltlab.kl_divergence(logits, q, n_threads=1),
                       tiltlab.kl_divergence(logits, q, n_threads=threads))


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


# --------------------------------------------------------------------------------------
# thread teams: none for small work, OMP_NUM_THREADS and threadpoolctl honoured, passive
# waiting (each in a fresh process: OpenMP reads its settings when it starts)
# --------------------------------------------------------------------------------------

_PROBE = """
import json, os, sys
import numpy as np
import tiltlab

def tasks():
    return len(os.listdir("/proc/self/task"))

rng = np.random.default_rng(0)
big_l, big_r = rng.normal(size=(8, 40_000)), rng.normal(size=(8, 40_000))
out = {"openmp": tiltlab.build_info()["openmp"], "max_threads": tiltlab.build_info()["max_threads"]}
base = tasks()
"""


def _probe(code: str, **env) -> dict:
    """Run _PROBE + code in a fresh interpreter (OMP_* variables of this process removed,
    ``env`` added) and return the JSON it prints last."""
    import json
    import os
    import subprocess
    import sys

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads in /proc/self/task (Linux)")
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    full.update(OPENBLAS_NUM_THREADS="1", **env)
    res = subprocess.run([sys.executable, "-c", _PROBE + code + "\nprint(json.dumps(out))"],
                         capture_output=True, text=True, env=full, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if not out["openmp"]:
        pytest.skip("built without OpenMP")
    return out


def test_small_work_starts_no_thread_team():
    """Calls below the work threshold, and samplers with one block of draws per row, run on
    the calling thread however many threads they are given: no OpenMP worker is started.
    The control call at the end (several blocks of draws) starts one."""
    out = _probe("""
x, r = big_l[0, :8], big_r[0, :8]
for nt in (None, 2):
    tiltlab.tilt_stats(x, r, 0.5, n_threads=nt)
    tiltlab.tilt_stats(big_l[:3, :10_000], big_r[:3, :10_000], 0.5, n_threads=nt)
    tiltlab.logsumexp(big_l[:, :4000], n_threads=nt)
    tiltlab.kl_divergence(big_l[:2, :1000], big_r[:2, :1000], n_threads=nt)
    tiltlab.best_of_n(x, r, 4, n_threads=nt).kl
    tiltlab.sample_best_of_n(x, r, 4, size=16, rng=0, n_threads=nt)
    tiltlab.sample_best_of_n(big_l[0], big_r[0], 4, size=60_000, rng=0, n_threads=nt)
    tiltlab.simulate_best_of_n(big_l[0, :100], big_r[0, :100], 4, size=60_000, rng=0,
                               n_threads=nt)
out["small"] = tasks() - base
tiltlab.sample_best_of_n(big_l[0], big_r[0], 4, size=200_000, rng=0, n_threads=2)
out["control"] = tasks() - base
""", OMP_NUM_THREADS="2")
    assert out["max_threads"] == 2
    assert out["small"] == 0
    assert out["control"] == 1


@pytest.mark.parametrize("omp", ["1", "2"])
def test_omp_num_threads_is_honoured(omp):
    """OMP_NUM_THREADS sets the default team (n_threads=None); 2 is the control."""
    out = _probe("""
tiltlab.tilt_stats(big_l, big_r, 0.5)
tiltlab.logsumexp(big_l)
tiltlab.sample_best_of_n(big_l[0], big_r[0], 4, size=200_000, rng=0)
out["workers"] = tasks() - base
""", OMP_NUM_THREADS=omp)
    assert out["max_threads"] == int(omp)
    assert out["workers"] == int(omp) - 1


def test_threadpoolctl_limits_are_honoured():
    """threadpoolctl.threadpool_limits(1) makes the default n_threads=None one thread; the
    same calls after the limit is lifted use two (the control)."""
    pytest.importorskip("threadpoolctl")
    out = _probe("""
from threadpoolctl import threadpool_info, threadpool_limits
out["apis"] = sorted({lib["user_api"] for lib in threadpool_info()})
with threadpool_limits(1):
    out["limited_max"] = tiltlab.build_info()["max_threads"]
    tiltlab.tilt_stats(big_l, big_r, 0.5)
    tiltlab.logsumexp(big_l)
    out["limited"] = tasks() - base
out["free_max"] = tiltlab.build_info()["max_threads"]
tiltlab.tilt_stats(big_l, big_r, 0.5)
out["free"] = tasks() - base
""", OMP_NUM_THREADS="2")
    assert "openmp" in out["apis"]
    assert out["limited_max"] == 1 and out["limited"] == 0
    assert out["free_max"] == 2 and out["free"] == 1


_WAIT_POLICY = """
import ctypes
from tiltlab import _openmp
out["requested"] = _openmp.PASSIVE_REQUESTED
out["environ"] = os.environ.get("OMP_WAIT_POLICY")
gomp = [ln.split()[-1] for ln in open("/proc/self/maps") if "libgomp" in ln]
out["display"] = None
if gomp:
    try:
        show = ctypes.CDLL(gomp[0]).omp_display_env
    except (OSError, AttributeError):
        show = None
    if show is not None:
        r, w = os.pipe()
        saved = os.dup(2)
        os.dup2(w, 2)
        show(1)
        os.dup2(saved, 2)
        os.close(w)
        text = os.read(r, 1 << 16).decode()
        out["display"] = [ln.strip() for ln in text.splitlines()
                          if "OMP_WAIT_POLICY" in ln or "GOMP_SPINCOUNT" in ln]
"""


@pytest.mark.parametrize("user", [None, "ACTIVE", "GOMP_SPINCOUNT"])
def test_threads_wait_passively_unless_the_user_chose(user):
    """Without a user setting the OpenMP runtime starts with OMP_WAIT_POLICY=PASSIVE (libgomp:
    a spin count of 0, against 300000 by default) and the variable is gone from the
    environment after import; a user's setting is left alone."""
    env = {"OMP_WAIT_POLICY": user} if user == "ACTIVE" else \
        {"GOMP_SPINCOUNT": "1000"} if user else {}
    out = _probe(_WAIT_POLICY, **env)
    assert out["requested"] == (user is None)
    assert out["environ"] == ("ACTIVE" if user == "ACTIVE" else None)
    if not out["display"]:
        pytest.skip("the OpenMP runtime is not GNU libgomp with omp_display_env")
    want = {None: ("PASSIVE", "0"), "ACTIVE": ("ACTIVE", "30000000000"),
            "GOMP_SPINCOUNT": ("PASSIVE", "1000")}[user]
    assert out["display"] == [f"OMP_WAIT_POLICY = '{want[0]}'", f"GOMP_SPINCOUNT = '{want[1]}'"]


@pytest.mark.parametrize("threads", [2, 3])
def test_samplers_with_several_blocks_are_identical_for_any_thread_count(bon_model, threads):
    """Rows of more than one block of draws run their blocks on several threads."""
    from tiltlab.bestofn import SAMPLE_BLOCK

    logits, rewards = bon_model
    size = 2 * SAMPLE_BLOCK + 17

    def draws(nt):
        return tiltlab.sample_best_of_n(logits, rewards, 64, size=size, rng=4, n_threads=nt)

    assert_array_equal(draws(1), draws(threads))
    a, b = (tiltlab.simulate_best_of_n(logits[:50], rewards[:50], 3, size=size, rng=2,
                                       n_threads=t) for t in (1, threads))
    assert_array_equal(a, b)
