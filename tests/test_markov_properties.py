"""Hypothesis properties of tiltlab.Markov (SPEC 9): the identities that must hold for any
chain -- logits shifted per row, rewards shifted and scaled, N = 1 gives p, thread-count
invariance -- on small random chains with lattice rewards."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab


@st.composite
def chains(draw):
    v = draw(st.integers(2, 4))
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # logits on a grid of 2^-10, so that shifting them by the powers of two below is exact
    l0 = np.round(rng.normal(size=v) * 2048.0) / 1024.0
    lt = np.round(rng.normal(size=(v, v)) * 2048.0) / 1024.0
    for s in range(v):
        if rng.random() < 0.3:
            lt[s, rng.integers(0, v)] = -np.inf
    if rng.random() < 0.5:
        rw = rng.integers(0, 4, size=v).astype(np.float64)
    else:
        rw = rng.integers(0, 4, size=(v, v)).astype(np.float64)
    return l0, lt, rw, n


@settings(max_examples=25, deadline=None)
@given(chains(), st.integers(-50, 50), st.sampled_from([2.0**-10, 1.0, 2.0**17, 2.0**30]))
def test_row_shifts_of_logits_change_nothing(chain, shift, scale):
    """Exact shifts (logits on a grid, shifts powers of two): every result unchanged, at
    offsets up to 5e10 (the largest that keeps a 2^-10 grid exact)."""
    l0, lt, rw, n = chain
    a = tiltlab.Markov(l0, lt, rw, n)
    row_shift = scale * np.arange(1, lt.shape[0] + 1)[:, None]
    b = tiltlab.Markov(l0 + shift * scale, lt + row_shift, rw, n)
    la, lb = a.reward_log_pmf(), b.reward_log_pmf()
    assert_array_equal(la.values, lb.values)
    assert_allclose(lb.log_pmf, la.log_pmf, rtol=1e-12, atol=1e-12)
    sa, sb = a.tilt_stats(0.7), b.tilt_stats(0.7)
    assert_allclose(np.array(sb), np.array(sa), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(chains(), st.integers(-5, 5), st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_reward_shift_and_scale(chain, shift, scale):
    """R -> scale R + shift per reward: the law moves with it (same probabilities), and the
    tilt lam / scale is the same policy."""
    l0, lt, rw, n = chain
    a = tiltlab.Markov(l0, lt, rw, n)
    b = tiltlab.Markov(l0, lt, scale * rw + shift, n)
    la, lb = a.reward_log_pmf(), b.reward_log_pmf()
    # per token: n shifts; per transition (initial reward 0): n - 1
    total = shift * (n if rw.ndim == 1 else n - 1)
    assert_allclose(lb.values, scale * la.values + total, rtol=1e-12, atol=1e-9)
    assert_allclose(lb.log_pmf, la.log_pmf, rtol=1e-12, atol=1e-12)
    pa, pb = a.tilted_policy(0.8), b.tilted_policy(0.8 / scale)
    assert_allclose(pb[1], pa[1], rtol=1e-10, atol=1e-12)
    ba, bb = a.best_of_n(log_n=2.0), b.best_of_n(log_n=2.0)
    assert bb.kl == np.float64(ba.kl) or abs(bb.kl - ba.kl) <= 1e-10 * max(1.0, ba.kl)
    assert abs(bb.expected_reward - (scale * ba.expected_reward + total)) <= 1e-9 * max(
        1.0, abs(bb.expected_reward))


@settings(max_examples=25, deadline=None)
@given(chains())
def test_best_of_one_is_p(chain):
    l0, lt, rw, n = chain
    m = tiltlab.Markov(l0, lt, rw, n)
    b = m.best_of_n(n=1)
    st0 = m.tilt_stats(0.0)
    assert abs(b.kl) <= 1e-12
    assert abs(b.expected_reward - st0.mean) <= 1e-11 * max(1.0, abs(st0.mean))
    assert abs(b.win_rate - 0.5) <= 1e-12
    law = m.reward_log_pmf()
    fin = np.isfinite(law.log_pmf)
    assert_allclose(b.log_probs, law.log_pmf[fin][np.isin(law.values[fin], b.values)],
                    rtol=1e-11, atol=1e-11)


@settings(max_examples=15, deadline=None)
@given(chains(), st.floats(-3.0, 3.0))
def test_thread_count_invariance(chain, lam):
    l0, lt, rw, n = chain
    one = tiltlab.Markov(l0, lt, rw, n, n_threads=1)
    two = tiltlab.Markov(l0, lt, rw, n, n_threads=2)
    lams = np.linspace(lam - 1.0, lam + 1.0, 7)
    for x, y in zip(one.tilt_stats(lams), two.tilt_stats(lams), strict=True):
        assert_array_equal(x, y)
    assert_array_equal(one.reward_log_pmf().log_pmf, two.reward_log_pmf().log_pmf)
    assert_array_equal(one.best_of_n(log_n=3.0).sample(50, rng=1),
                       two.best_of_n(log_n=3.0).sample(50, rng=1))
