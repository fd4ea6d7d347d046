"""logsumexp: SciPy semantics, compiled vs reference and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref

scipy_special = pytest.importorskip("scipy.special")

special_floats = st.one_of(
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from([-np.inf, np.inf, np.nan, 0.0, -745.0, 709.0, 1e300, -1e300]),
)


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                  elements=special_floats))
def test_matches_scipy_semantics(a):
    for axis in [-1, 0, None] + ([(0, -1)] if a.ndim > 1 else []):
        with np.errstate(all="ignore"):
            want = scipy_special.logsumexp(a, axis=axis)
        got = tiltlab.logsumexp(a, axis=axis)
        assert_allclose(got, want, rtol=1e-14, atol=0, equal_nan=True)
        assert_allclose(got, ref.logsumexp(a, axis=axis), rtol=1e-14, equal_nan=True)


def test_special_rows():
    a = np.array([[np.nan, 1.0], [np.inf, -np.inf], [-np.inf, -np.inf], [np.inf, np.nan],
                  [np.inf, np.inf], [1e308, 1e308]])
    got = tiltlab.logsumexp(a, axis=1)
    assert np.isnan(got[0]) and np.isnan(got[3])
    assert_array_equal(got[[1, 2, 4]], [np.inf, -np.inf, np.inf])
    assert_allclose(got[5], 1e308 + np.log(2), rtol=1e-15)


def test_empty_and_keepdims():
    assert_array_equal(tiltlab.logsumexp(np.zeros((3, 0)), axis=1), [-np.inf] * 3)
    assert tiltlab.logsumexp(np.zeros((2, 3)), axis=1, keepdims=True).shape == (2, 1)
    assert tiltlab.logsumexp(np.zeros((2, 3, 4)), axis=(0, 2), keepdims=True).shape == (1, 3, 1)
    assert_allclose(tiltlab.logsumexp(np.zeros((2, 3)), axis=None), np.log(6), rtol=1e-15)
    with pytest.raises(np.exceptions.AxisError):
        tiltlab.logsumexp(np.zeros(3), axis=1)


def test_long_rows_and_float32():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 100_003)) * 30
    assert_allclose(tiltlab.logsumexp(x, axis=-1), scipy_special.logsumexp(x, axis=-1),
                    rtol=1e-14)
    assert_allclose(tiltlab.logsumexp(x), scipy_special.logsumexp(x), rtol=1e-14)  # axis None
    x32 = x.astype(np.float32)
    got = tiltlab.logsumexp(x32, axis=-1)
    assert got.dtype == np.float32  # issue 17: float32 kept, as scipy
    assert_allclose(got, scipy_special.logsumexp(x32.astype(np.float64), axis=-1), rtol=1e-7)


def test_strided_input():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 40))
    assert_allclose(tiltlab.logsumexp(x[::3, ::2].T, axis=0),
                    scipy_special.logsumexp(x[::3, ::2], axis=1), rtol=1e-15)


def test_subnormal_results_match_scipy():
    """A maximum of 0 with the other terms below e^-708: the result is subnormal (e^-709 =
    1.2e-308) and must not be flushed to 0 (found by hypothesis in test_matches_scipy_
    semantics); every entry path (small and large arrays, axis=None, other axes)."""
    for a in ([-709.0, 0.0], [0.0, -745.0], [-709.0, 0.0, -720.0], [1e-310, -709.0]):
        want = scipy_special.logsumexp(a)
        assert want != 0.0
        assert tiltlab.logsumexp(np.array(a)) == want
        big = np.full((3, 5000), -800.0)
        big[:, 7] = 0.0
        big[:, 9] = a[0] if a[0] < 0 else -709.0
        assert_allclose(tiltlab.logsumexp(big, axis=1), scipy_special.logsumexp(big, axis=1),
                        rtol=1e-14, atol=0)
        assert_allclose(tiltlab.logsumexp(big.T, axis=0),
                        scipy_special.logsumexp(big.T, axis=0), rtol=1e-14, atol=0)
