"""The compiled Markov kernels (csrc/tl_markov.c: the backward recursion behind
Markov.tilt_stats / tilted_policy, the max-plus recursion behind kl_max) against the
independent NumPy reference (tiltlab.reference.markov_*), bitwise the same for any thread
count and on every SIMD variant this CPU runs."""

import numpy as np
import pytest

import tiltlab
from tiltlab import _markov, simd
from tiltlab import reference as ref


def _chain(seed, v, per_token, forbid=True, integer=False, scale=1.0):
    rng = np.random.default_rng(seed)
    l0 = rng.normal(size=v)
    lt = rng.normal(size=(v, v)) * 1.5
    if forbid and v > 1:
        mask = rng.random((v, v)) < 0.35
        mask[np.arange(v), rng.integers(0, v, size=v)] = False   # a successor per row
        lt[mask] = -np.inf
        l0[rng.integers(0, v)] = -np.inf
    shape = (v,) if per_token else (v, v)
    rw = (rng.integers(-2, 4, size=shape).astype(float) if integer
          else rng.normal(size=shape) * scale)
    r0 = None if per_token else rng.normal(size=v) * scale
    return l0, lt, rw, r0


LAMS = np.array([-40.0, -1.3, -1e-7, 0.0, 3e-6, 0.02, 0.7, 6.0, 250.0])


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("v,n", [(1, 4), (3, 1), (3, 2), (5, 2), (6, 9), (9, 40)])
def test_tilt_stats_match_reference(v, n, per_token):
    l0, lt, rw, r0 = _chain(10 * v + n, v, per_token)
    m = tiltlab.Markov(l0, lt, rw, n, initial_rewards=r0)
    st = m.tilt_stats(LAMS)
    scale = n * (np.max(np.abs(rw)) + (0.0 if r0 is None else np.max(np.abs(r0))))
    for i, lam in enumerate(LAMS):
        want = ref.markov_tilt_stats(l0, lt, rw, n, lam, initial_rewards=r0)
        got = [st.log_partition[i], st.mean[i], st.variance[i], st.kl[i]]
        tol = 1e-12 * scale * max(1.0, abs(lam))
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=tol)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-11, atol=1e-12 * scale)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-9, atol=1e-12 * scale * scale)
        # the KL keeps its relative accuracy at small tilts
        np.testing.assert_allclose(got[3], want[3], rtol=1e-10, atol=tol if abs(lam) > 1 else 0)
    assert st.kl[3] == 0.0 and st.log_partition[3] == 0.0
    assert np.all(st.kl >= 0) and np.all(np.isfinite(st.kl))


@pytest.mark.parametrize("per_token", [True, False])
def test_tilted_policy_matches_reference(per_token):
    l0, lt, rw, r0 = _chain(7, 6, per_token)
    m = tiltlab.Markov(l0, lt, rw, 12, initial_rewards=r0)
    for lam in (-3.0, 1e-6, 0.8, 120.0):
        g0, gq = m.tilted_policy(lam)
        w0, wq = ref.markov_tilted_policy(l0, lt, rw, 12, lam, initial_rewards=r0)
        assert gq.shape == wq.shape == (11, 6, 6)
        np.testing.assert_array_equal(np.isfinite(gq), np.isfinite(wq))
        fin = np.isfinite(wq)
        # log q where the probability matters (relative), and the rows as probabilities
        big = fin & (wq > -30)
        np.testing.assert_allclose(gq[big], wq[big], rtol=0, atol=1e-11)
        np.testing.assert_allclose(np.exp(gq), np.exp(wq), rtol=0, atol=1e-13)
        np.testing.assert_allclose(np.exp(g0), np.exp(w0), rtol=0, atol=1e-13)


def test_length_one_and_two_policy_shapes():
    l0, lt, rw, _ = _chain(3, 4, True)
    for n in (1, 2):
        g0, gq = tiltlab.Markov(l0, lt, rw, n).tilted_policy(0.5)
        w0, wq = ref.markov_tilted_policy(l0, lt, rw, n, 0.5)
        assert gq.shape == wq.shape == (n - 1, 4, 4)
        np.testing.assert_allclose(np.exp(g0), np.exp(w0), atol=1e-14)


def _max_plus_numpy(l0, lt, rw, n, r0=None):
    """-log P(R = R_max) by the max-plus recursion in plain NumPy (ties exact: integer
    rewards)."""
    log_p0, log_tr, r0_, r = ref._markov_inputs(l0, lt, rw, r0)
    sup = np.isfinite(log_tr)
    best, mass = np.zeros(len(l0)), np.zeros(len(l0))
    for _ in range(n - 1):
        y = np.where(sup, r + best, -np.inf)
        top = y.max(axis=1)
        x = np.where(y == top[:, None], log_tr + mass, -np.inf)
        mass = np.logaddexp.reduce(x, axis=1)
        best = top
    y0 = np.where(np.isfinite(log_p0), r0_ + best, -np.inf)
    return -np.logaddexp.reduce(np.where(y0 == y0.max(), log_p0 + mass, -np.inf))


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("v,n", [(1, 3), (3, 1), (3, 2), (4, 7), (7, 30)])
def test_kl_max_matches_reference_law(v, n, per_token):
    l0, lt, rw, r0 = _chain(v + 100 * n, v, per_token, integer=True)
    if r0 is not None:
        r0 = np.round(r0)
    m = tiltlab.Markov(l0, lt, rw, n, initial_rewards=r0)
    _, log_pmf = ref.markov_reward_law(l0, lt, rw, n, initial_rewards=r0)
    want = -log_pmf[-1]
    np.testing.assert_allclose(m.kl_max, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.kl_max, _max_plus_numpy(l0, lt, rw, n, r0), rtol=1e-13,
                               atol=1e-14)


def _everything(m, lams):
    st = m.tilt_stats(lams)
    pol = m.tilted_policy(float(lams[len(lams) // 2]))
    return [np.asarray(x) for x in st] + list(pol) + [np.float64(m.kl_max)]


def _bitwise(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.view(np.uint64), y.view(np.uint64))


@pytest.mark.parametrize("per_token", [True, False])
def test_thread_count_invariance(per_token):
    l0, lt, rw, r0 = _chain(11, 13, per_token)
    lams = np.concatenate([LAMS, np.linspace(-2, 2, 7)])
    one = _everything(tiltlab.Markov(l0, lt, rw, 50, initial_rewards=r0, n_threads=1), lams)
    two = _everything(tiltlab.Markov(l0, lt, rw, 50, initial_rewards=r0, n_threads=2), lams)
    _bitwise(one, two)


def _kernel(m, lams, keep_policy):
    """The compiled backward pass itself (the driver of csrc/tl_markov.c)."""
    out = _markov.backward(m._log_tr, m._r, lams, m.length, 2, keep_policy)
    return [np.asarray(x) for x in out if x is not None]


@pytest.mark.skipif(len(simd.available()) < 2, reason="one SIMD variant on this CPU")
@pytest.mark.parametrize("per_token", [True, False])
def test_simd_variants_agree_bitwise(per_token):
    """The kernels are bitwise the same on every variant; the public statistics also pass
    through the single-step tilt of the first token (tiltlab.tilt_stats, whose variants
    agree to a few ulp)."""
    # V = 13: not a multiple of any vector width
    l0, lt, rw, r0 = _chain(5, 13, per_token)
    m = tiltlab.Markov(l0, lt, rw, 60, initial_rewards=r0)
    kern, stats = {}, {}
    for variant in simd.available():
        with simd.use(variant):
            m._kl_max = None
            kern[variant] = (_kernel(m, LAMS, False) + _kernel(m, LAMS[5:7], True)
                             + [np.float64(m.kl_max)])
            stats[variant] = _everything(m, LAMS)
    first = simd.available()[0]
    for variant in simd.available():
        _bitwise(kern[first], kern[variant])
        for x, y in zip(stats[first], stats[variant], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-14, atol=1e-300)
    want = ref.markov_tilt_stats(l0, lt, rw, 60, 0.7, initial_rewards=r0)
    np.testing.assert_allclose(np.asarray(stats[first][:4])[:, 6], want, rtol=1e-10)


def test_long_chain_small_tilt_and_stop_free_batches():
    """n = 3000 at a tiny tilt: log Z and KL keep their relative accuracy (equal rows are the
    memoryless model, whose statistics are n times a single-step tilt)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=7)
    rw = rng.normal(size=7)
    m = tiltlab.Markov(logits, np.tile(logits, (7, 1)), rw, 3000)
    lams = np.array([1e-9, 1e-4, 0.3])
    got = m.tilt_stats(lams)
    one = tiltlab.tilt_stats(logits, rw, lams)
    for g, o in zip(got, one, strict=True):
        np.testing.assert_allclose(g, 3000 * np.asarray(o), rtol=1e-12)
