"""kl_divergence(p, q): reference, support rules, accuracy for nearby distributions."""

from __future__ import annotations

import numpy as np
from conftest import rows
from hypothesis import given
from numpy.testing import assert_allclose

import tiltlab
from tiltlab import reference as ref


@given(rows(max_rows=3, logit_scale=5.0), rows(max_rows=3, logit_scale=5.0))
def test_matches_reference(a, b):
    lp = a[0]
    lq = np.resize(b[0], lp.shape)
    # resizing can leave a row of q without a finite logit (an empty q: refused, tested in
    # test_bad_input): give such a row one outcome
    empty = ~np.isfinite(lq).any(axis=-1)
    lq[empty, 0] = 0.0
    got = tiltlab.kl_divergence(lp, lq)
    want = ref.kl_divergence(lp, lq)
    inf = np.isinf(want)
    assert np.array_equal(np.isinf(got), inf)
    assert np.all(got >= 0)
    fin = ~inf
    scale = 1 + np.max(np.abs(np.where(np.isfinite(lq), lq, 0)), -1)
    assert np.all(np.abs(got - want)[fin] <= 1e-12 * np.maximum(want, 1.0)[fin] * scale[fin])


def test_support_rules():
    # q = 0 where p > 0: infinite
    assert tiltlab.kl_divergence([0.0, 0.0], [0.0, -np.inf]) == np.inf
    # p = 0 where q > 0: finite, q's extra mass counts through its normaliser
    got = tiltlab.kl_divergence([0.0, -np.inf], [0.0, 0.0])
    assert_allclose(got, np.log(2.0), rtol=1e-15)
    assert tiltlab.kl_divergence([1.0, 2.0], [1.0, 2.0]) == 0.0
    # shifting logits changes nothing
    assert_allclose(tiltlab.kl_divergence([1.0, 2.0, 3.0], [3.0, 4.0, 0.0]),
                    tiltlab.kl_divergence([101.0, 102.0, 103.0], [-3.0, -2.0, -6.0]),
                    rtol=1e-13)


def test_nearby_distributions_keep_relative_accuracy():
    rng = np.random.default_rng(3)
    p = rng.normal(size=1000)
    for eps in (1e-2, 1e-5, 1e-8):
        delta = rng.normal(size=1000) * eps
        q = p + delta
        # second-order expansion: KL ~ Var_p(delta) / 2 (relative error O(eps))
        prob = np.exp(p - tiltlab.logsumexp(p))
        var = prob @ (delta - prob @ delta) ** 2
        assert_allclose(tiltlab.kl_divergence(p, q), var / 2, rtol=5 * eps)


def test_far_apart_logits_use_the_standard_mode():
    p = np.array([0.0, -900.0, 3.0])
    q = np.array([0.0, 10.0, -800.0])
    assert_allclose(tiltlab.kl_divergence(p, q), ref.kl_divergence(p, q), rtol=1e-13)


def test_broadcasting_and_float32():
    rng = np.random.default_rng(5)
    p = rng.normal(size=(4, 1, 20))
    q = rng.normal(size=(3, 20))
    got = tiltlab.kl_divergence(p, q)
    assert got.shape == (4, 3)
    assert_allclose(got[2, 1], tiltlab.kl_divergence(p[2, 0], q[1]), rtol=0)
    got32 = tiltlab.kl_divergence(p.astype(np.float32), q.astype(np.float32))
    want = tiltlab.kl_divergence(p.astype(np.float32).astype(float),
                                 q.astype(np.float32).astype(float))
    # float32 kept (SPEC section 1): the float64 computation, rounded once
    assert got32.dtype == np.float32
    assert np.array_equal(got32, want.astype(np.float32))
