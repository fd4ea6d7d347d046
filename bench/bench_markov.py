"""Markov token models (issue 20): the backward recursion of ``Markov.tilt_stats``.

One table, V = 27 states (a character bigram model's size), n = 10^4 positions (10^3 with
--quick), per-token rewards, one tilt (what ``solve_lambda`` evaluates ~8 times):

* ``compiled-1t`` / ``compiled-2t-avx2``: ``Markov.tilt_stats`` (csrc/tl_markov.c), the
  second with the avx2 variant forced (the product's target machines have no AVX-512);
* ``reference``: ``tiltlab.reference.markov_tilt_stats`` (NumPy, one step per position);
* ``numba-2t``: a plain numba ``@njit`` loop of the same recursion (log-space messages,
  conditional means and variances, per-row KL), compiled before the timing starts;
* ``stream-add``: ``np.add`` over two arrays of n V^2 doubles, the values a pass that
  touches every tilted transition once reads: the machine's limit ("× limit").

A second table, ``markov_tilt_stats V=4`` and ``V=256`` (n = 10^5 and 200; 10^4 and 20 with
--quick): the same compiled, numba and stream-add rows at a small and a large state space
(the kernel puts 4 rows in the lanes of a vector: V = 4 is one group per step, V = 256 is
64 groups of 256 columns).
"""

from __future__ import annotations

import numpy as np
import pytest
from baselines import numba_available
from conftest import avx2_forced, quick, run, stream_add

import tiltlab
from tiltlab import reference

V = 27
LAM = 0.3


def _length(config) -> int:
    return 1000 if quick(config) else 10_000


def _chain(v=V):
    rng = np.random.default_rng(20)
    l0 = rng.normal(size=v)
    lt = rng.normal(size=(v, v)) * 1.5
    lt[rng.random((v, v)) < 0.2] = -np.inf
    lt[np.arange(v), np.arange(v)] = 0.0          # every row keeps a successor
    rw = rng.normal(size=v)
    return l0, lt, rw


def _group(n):
    return f"markov_tilt_stats V={V} n={n}"


_numba_cache: dict = {}


def _numba_backward():
    if "fn" in _numba_cache:
        return _numba_cache["fn"]
    import math

    from numba import njit

    @njit(cache=False, fastmath=False)
    def backward(log_p0, log_tr, r0, r, n, lam):
        nv = log_tr.shape[0]
        c = np.zeros(nv)
        m = np.zeros(nv)
        v = np.zeros(nv)
        k = np.zeros(nv)
        c2 = np.zeros(nv)
        m2 = np.zeros(nv)
        v2 = np.zeros(nv)
        k2 = np.zeros(nv)
        q = np.zeros(nv)
        offset = 0.0
        for _ in range(n - 1):
            top = -np.inf
            for s in range(nv):
                mx = -np.inf
                for i in range(nv):
                    x = log_tr[s, i] + lam * r[s, i] + c[i]
                    if x > mx:
                        mx = x
                tot = 0.0
                for i in range(nv):
                    q[i] = math.exp(log_tr[s, i] + lam * r[s, i] + c[i] - mx)
                    tot += q[i]
                lp = mx + math.log(tot)
                mean = 0.0
                kl = 0.0
                kap = 0.0
                for i in range(nv):
                    q[i] /= tot
                    if q[i] > 0.0:
                        mean += q[i] * (r[s, i] + m[i])
                        kl += q[i] * (lam * r[s, i] + c[i] - lp)
                        kap += q[i] * k[i]
                var = 0.0
                for i in range(nv):
                    if q[i] > 0.0:
                        d = r[s, i] + m[i] - mean
                        var += q[i] * (v[i] + d * d)
                c2[s] = lp
                m2[s] = mean
                v2[s] = var
                k2[s] = kl + kap
                if lp > top:
                    top = lp
            offset += top
            for s in range(nv):
                c[s] = c2[s] - top
                m[s] = m2[s]
                v[s] = v2[s]
                k[s] = k2[s]
        mx = -np.inf
        for s in range(nv):
            x = log_p0[s] + lam * r0[s] + c[s]
            if x > mx:
                mx = x
        tot = 0.0
        for s in range(nv):
            tot += math.exp(log_p0[s] + lam * r0[s] + c[s] - mx)
        lz = mx + math.log(tot)
        mean = 0.0
        kl = 0.0
        for s in range(nv):
            phi = math.exp(log_p0[s] + lam * r0[s] + c[s] - lz)
            if phi > 0.0:
                mean += phi * (r0[s] + m[s])
                kl += phi * (lam * r0[s] + c[s] - lz + k[s])
        var = 0.0
        for s in range(nv):
            phi = math.exp(log_p0[s] + lam * r0[s] + c[s] - lz)
            if phi > 0.0:
                d = r0[s] + m[s] - mean
                var += phi * (v[s] + d * d)
        return offset + lz, mean, var, kl

    _numba_cache["fn"] = backward
    return backward


def _numba_fn(l0, lt, rw, n):
    """The numba loop on the chain, compiled and checked against tiltlab before timing."""
    if not numba_available():
        pytest.skip("numba is not installed")
    v = l0.shape[0]
    log_p0 = l0 - np.logaddexp.reduce(l0)
    log_tr = lt - np.logaddexp.reduce(lt, axis=1)[:, None]
    r = np.where(np.isfinite(log_tr), np.broadcast_to(rw, (v, v)), 0.0)
    back = _numba_backward()
    back(log_p0, log_tr, rw, r, 3, LAM)                      # compile
    want = tiltlab.Markov(l0, lt, rw, n).tilt_stats(LAM)
    np.testing.assert_allclose(back(log_p0, log_tr, rw, r, n, LAM), want, rtol=1e-9)
    return lambda: back(log_p0, log_tr, rw, r, n, LAM)


@pytest.mark.parametrize("impl", ["compiled-1t", "compiled-2t-avx2", "reference", "numba-2t",
                                  "stream-add"])
def test_markov_tilt_stats(benchmark, rounds, request, impl):
    n = _length(request.config)
    l0, lt, rw = _chain()
    if impl.startswith("compiled"):
        m = tiltlab.Markov(l0, lt, rw, n, n_threads=1 if impl == "compiled-1t" else 2)
        fn = lambda: m.tilt_stats(LAM)  # noqa: E731
        if impl == "compiled-2t-avx2":
            fn = avx2_forced(fn)
    elif impl == "reference":
        fn = lambda: reference.markov_tilt_stats(l0, lt, rw, n, LAM)  # noqa: E731
    elif impl == "numba-2t":
        fn = _numba_fn(l0, lt, rw, n)
    else:
        fn = stream_add(n * V * V)
    run(benchmark, fn, rounds=rounds, group=_group(n), impl=impl, kernel="markov_tilt_stats",
        n_elements=n * V * V)


SIZES = {4: (100_000, 10_000), 256: (200, 20)}


@pytest.mark.parametrize("v", sorted(SIZES))
@pytest.mark.parametrize("impl", ["compiled-2t-avx2", "numba-2t", "stream-add"])
def test_markov_tilt_stats_sizes(benchmark, rounds, request, impl, v):
    n = SIZES[v][1 if quick(request.config) else 0]
    l0, lt, rw = _chain(v)
    if impl == "compiled-2t-avx2":
        m = tiltlab.Markov(l0, lt, rw, n, n_threads=2)
        fn = avx2_forced(lambda: m.tilt_stats(LAM))
    elif impl == "numba-2t":
        fn = _numba_fn(l0, lt, rw, n)
    else:
        fn = stream_add(n * v * v)
    run(benchmark, fn, rounds=rounds, group=f"markov_tilt_stats V={v} n={n}", impl=impl,
        kernel="markov_tilt_stats", n_elements=n * v * v)
