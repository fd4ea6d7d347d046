"""No memory growth in the compiled kernels: every family called thousands of times on small
inputs (V = 50), including three error paths, must not leak.

Per kernel, after a warm-up of 200 calls (caches and the allocator's pools settle) and 20
more under tracing (tracemalloc's own tables settle):

* tracemalloc: Python-visible memory (objects and NumPy buffers) still allocated after the
  loop minus after the warm-up is below 256 KiB;
* RSS (``/proc/self/statm``, Linux only): the process grew by less than 8 MiB, which also
  catches ``malloc`` in the C kernels and the Cython drivers that tracemalloc cannot see
  (free heap pages are handed back with glibc's ``malloc_trim`` before each reading, so
  memory freed by earlier tests cannot absorb a leak).

Calls per kernel: 10^4 for logsumexp and the driver's own error path, 3000 for the array
wrappers, 2000 for the Python-heavy families (best_of_n with log_probs, the samplers, the
memoryless lattice law, soft best-of-n, the best-of-N error path): tracemalloc makes a
call 3-6x slower, and 10^4 calls of everything would take several minutes on a 2-core
machine.  The whole file takes about 60-70 s there with one other busy process;
TILTLAB_MEMORY_SCALE scales the counts.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
import tracemalloc

import numpy as np
import pytest

import tiltlab
from tiltlab import _core

V = 50
_RNG = np.random.default_rng(20261127)
LG = _RNG.normal(size=V)
LG2 = _RNG.normal(size=V)
RW = _RNG.normal(size=V)
RW_LATTICE = _RNG.integers(0, 5, size=V).astype(np.float64)  # integer rewards: a lattice
RW_NAN = RW.copy()
RW_NAN[7] = np.nan

WARM = 200
SETTLE = 20
# Calls per kernel, by the cost of one traced call on a 2-core machine: MANY for the
# cheapest (~0.1 ms), SOME for the array wrappers (~0.7-1 ms: argument checks, row layout),
# FEW for the Python-heavy ones (2-9 ms).  TILTLAB_MEMORY_SCALE multiplies all three
# (e.g. 3.4 gives 10^4 calls of the wrappers; the file then takes a few minutes).
_SCALE = float(os.environ.get("TILTLAB_MEMORY_SCALE", "1") or 1)
MANY = max(1, int(10_000 * _SCALE))
SOME = max(1, int(3_000 * _SCALE))
FEW = max(1, int(2_000 * _SCALE))
TRACED_BOUND = 256 * 1024
RSS_BOUND = 8 * 2**20


def _trim():
    """Return the allocator's free pages to the OS (glibc malloc_trim), so that a leak
    shows in RSS even after earlier tests left freed memory resident."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _nan_reward():
    """Error path: the kernel flags the NaN reward, the driver returns, ValueError is raised."""
    try:
        tiltlab.tilt_stats(LG, RW_NAN, 0.5)
    except ValueError:
        return
    raise AssertionError("no error for a NaN reward")


_ROWS = dict(lb=np.ascontiguousarray(LG), rb=np.ascontiguousarray(RW),
             loff=np.zeros(1, np.int64), roff=np.zeros(1, np.int64),
             lam=np.zeros(1), out=np.empty((1, 40)), flags=np.zeros(1, np.int32))


def _driver_raises():
    """Error path inside a compiled driver: cumulant_rows raises ValueError (order 33) after
    acquiring its buffer arguments, which must be released on the way out."""
    r = _ROWS
    try:
        _core.cumulant_rows(r["lb"], r["rb"], r["loff"], r["roff"], V, r["lam"], 33, r["out"],
                            r["flags"], 1)
    except ValueError:
        return
    raise AssertionError("no error for order 33")


def _empty_row():
    """Error path of the best-of-N driver: a row without a finite logit."""
    try:
        tiltlab.best_of_n(np.full(V, -np.inf), RW, n=8)
    except ValueError:
        return
    raise AssertionError("no error for an all -inf row")


def _kernels():
    gen = np.random.default_rng(7)  # one seeded Generator, advanced by every call
    model = tiltlab.Memoryless(LG, RW_LATTICE, 8)
    yield "logsumexp", lambda: tiltlab.logsumexp(LG), MANY
    yield "tilt_stats", lambda: tiltlab.tilt_stats(LG, RW, 0.7), SOME
    yield "tilt", lambda: tiltlab.tilt(LG, RW, 0.7), SOME
    yield "solve_lambda", lambda: tiltlab.solve_lambda(LG, RW, 0.1), SOME
    yield "cumulants", lambda: tiltlab.cumulants(LG, RW, 6, lam=0.3), SOME
    yield "kl_divergence", lambda: tiltlab.kl_divergence(LG, LG2), SOME
    yield "best_of_n", lambda: tiltlab.best_of_n(LG, RW, n=8).log_probs, FEW
    # one thread: an OpenMP team for 16 draws only measures the scheduler of a busy machine
    # (the threaded paths run under tools/valgrind.sh)
    yield "sample_best_of_n", lambda: tiltlab.sample_best_of_n(LG, RW, n=8, size=16, rng=gen,
                                                               n_threads=1), FEW
    yield "simulate_best_of_n", lambda: tiltlab.simulate_best_of_n(LG, RW, 8, size=16, rng=gen,
                                                                   n_threads=1), FEW
    yield "Memoryless.best_of_n", lambda: model.best_of_n(n=16), FEW
    yield "Memoryless.reward_log_pmf", lambda: model.reward_log_pmf(lam=0.2), FEW
    yield "soft_best_of_n", lambda: tiltlab.soft_best_of_n(LG, RW, 4, 1.0, n_threads=1), FEW
    yield "error: NaN reward", _nan_reward, SOME
    yield "error: all -inf row (best_of_n)", _empty_row, FEW
    yield "error: raised in the driver", _driver_raises, MANY


KERNELS = list(_kernels())


def measure(call, n_calls: int, warm: int = WARM) -> dict:
    """Traced and resident growth over n_calls calls after a warm-up (bytes, seconds)."""
    for _ in range(warm):
        call()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(SETTLE):  # tracemalloc's own tables (one entry per call site) settle
            call()
        gc.collect()
        _trim()
        traced0 = tracemalloc.get_traced_memory()[0]
        rss0 = _rss_bytes()
        t0 = time.perf_counter()
        for _ in range(n_calls):
            call()
        elapsed = time.perf_counter() - t0
        gc.collect()
        _trim()
        traced1 = tracemalloc.get_traced_memory()[0]
        rss1 = _rss_bytes()
    finally:
        tracemalloc.stop()
    return {"traced": traced1 - traced0,
            "rss": None if rss0 is None or rss1 is None else rss1 - rss0,
            "seconds": elapsed, "calls": n_calls}


@pytest.mark.parametrize("name,call,n_calls", KERNELS, ids=[k[0] for k in KERNELS])
def test_no_memory_growth(name, call, n_calls):
    m = measure(call, n_calls)
    rss = "n/a" if m["rss"] is None else f"{m['rss'] / 1024:.0f} KiB"
    print(f"\n{name}: {n_calls} calls in {m['seconds']:.2f} s, traced {m['traced'] / 1024:+.1f} "
          f"KiB, RSS {rss}")
    assert m["traced"] < TRACED_BOUND, f"{name}: tracemalloc grew by {m['traced']} bytes"
    if m["rss"] is not None:
        assert m["rss"] < RSS_BOUND, f"{name}: RSS grew by {m['rss'] / 2**20:.1f} MiB"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS from /proc (Linux)")
def test_the_rss_check_sees_a_leak():
    """The harness itself: a deliberate leak of 64 KiB per call (kept in a list) is seen
    by both measures, so a quiet result above means no growth, not a blind check."""
    kept = []
    m = measure(lambda: kept.append(np.ones(8192)), 200, warm=10)
    assert m["traced"] > 8 * 2**20 and m["rss"] > 8 * 2**20, m
