"""tiltlab.special: scipy.special's logsumexp / softmax / log_softmax, compiled.

Compared with scipy.special (the behaviour to match) on random and edge inputs, with
tiltlab.reference (pure NumPy twins), and with 50-digit mpmath for the exactness claims.
"""

from __future__ import annotations

import itertools
import warnings

import mpmath
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref
from tiltlab import simd
from tiltlab.special import log_softmax, logsumexp, softmax

sp = pytest.importorskip("scipy.special")

FUNCS = {"softmax": (softmax, sp.softmax), "log_softmax": (log_softmax, sp.log_softmax)}


def scipy_call(f, *args, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return f(*args, **kw)


def same(got, want, rtol=1e-14, atol=0.0):
    """Values, NaN positions, shape and dtype as SciPy's; scalar for scalar."""
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype, (np.asarray(got).dtype,
                                                             np.asarray(want).dtype)
    assert np.ndim(got) == 0 or isinstance(got, np.ndarray)
    assert type(got) is type(want) or isinstance(got, np.ndarray) == isinstance(want, np.ndarray)
    assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def test_logsumexp_is_the_special_function_and_defaults_to_all_axes():
    assert tiltlab.logsumexp is logsumexp
    x = np.arange(6.0).reshape(2, 3)
    same(tiltlab.logsumexp(x), sp.logsumexp(x))  # a scalar, not a row vector
    assert np.ndim(tiltlab.logsumexp(x)) == 0


EDGE = [-np.inf, -1e300, -745.0, -1.0, 0.0, 0.5, 709.0, 1e300, np.inf, np.nan]


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_every_pair_and_triple_of_special_values(name):
    ours, theirs = FUNCS.get(name, (logsumexp, sp.logsumexp))
    for k in (1, 2, 3):
        rows = np.array(list(itertools.product(EDGE, repeat=k)))
        same(ours(rows, axis=1), scipy_call(theirs, rows, axis=1), rtol=1e-13, atol=1e-300)


SHAPES_AXES = [((7,), None), ((7,), 0), ((7,), -1), ((3, 5), None), ((3, 5), 0), ((3, 5), 1),
               ((3, 5), (0, 1)), ((2, 3, 4), (0, 2)), ((2, 3, 4), (2, 0)), ((2, 3, 4), 1),
               ((2, 3, 4), -1), ((), None), ((), 0), ((4, 1), 1), ((0, 3), 1)]


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_shapes_and_axes_match_scipy(name, shape, axis):
    ours, theirs = FUNCS.get(name, (logsumexp, sp.logsumexp))
    rng = np.random.default_rng(len(shape) + 7 * (axis + 1 if isinstance(axis, int) else 3))
    x = rng.normal(size=shape) * 20
    # SciPy's log_softmax forms log(1 + small) at the maximum: ~1e-16 absolute, not relative
    same(ours(x, axis=axis), scipy_call(theirs, x, axis=axis), atol=1e-15)
    if x.size:
        same(ours(x.tolist(), axis=axis), scipy_call(theirs, x.tolist(), axis=axis),
             atol=1e-15)
    if name == "logsumexp" and shape != ():
        for keep in (True, False):
            same(ours(x, axis=axis, keepdims=keep), scipy_call(theirs, x, axis=axis,
                                                               keepdims=keep))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.longdouble,
                                   np.int64, np.int8, np.uint16, np.complex128, np.complex64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_dtype_table(name, dtype):
    ours, theirs = FUNCS.get(name, (logsumexp, sp.logsumexp))
    x = (np.arange(12).reshape(3, 4) % 5).astype(dtype)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * np.arange(12).reshape(3, 4)[::-1] / 7
    want = scipy_call(theirs, x, axis=1)
    if np.dtype(dtype).kind == "u":  # SciPy subtracts in uint16 (wraps around): its dtype only
        want = scipy_call(theirs, x.astype(np.float64), axis=1).astype(want.dtype)
    got = ours(x, axis=1)
    tol = {2: 2e-3, 4: 1e-6, 8: 1e-6}.get(np.asarray(want).real.dtype.itemsize, 1e-13)
    same(got, want, rtol=tol, atol=tol)


def test_float32_is_closer_to_exact_than_scipy():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(50, 300)) * 10).astype(np.float32)
    exact_sm = ref.softmax(x.astype(np.float64), axis=1)
    exact_ls = ref.log_softmax(x.astype(np.float64), axis=1)
    for ours, theirs, exact in [(softmax, sp.softmax, exact_sm),
                                (log_softmax, sp.log_softmax, exact_ls)]:
        got, theirs_v = ours(x, axis=1), theirs(x, axis=1)
        assert got.dtype == np.float32
        e_ours = np.max(np.abs(got - exact) / np.abs(exact))
        e_scipy = np.max(np.abs(theirs_v - exact) / np.abs(exact))
        assert e_ours <= 1.2e-7 and e_ours < e_scipy
    got = logsumexp(x, axis=1)
    assert got.dtype == np.float32
    assert_allclose(got, ref.logsumexp(x.astype(np.float64), axis=1), rtol=1.2e-7)


def test_bools_ints_and_scalars():
    same(logsumexp(np.array([True, False])), sp.logsumexp(np.array([True, False])))
    same(logsumexp(3), sp.logsumexp(3))
    same(logsumexp(np.float32(3.0)), sp.logsumexp(np.float32(3.0)))
    same(logsumexp(5.0, keepdims=True), sp.logsumexp(5.0, keepdims=True))
    same(softmax(3.0), sp.softmax(3.0))
    same(log_softmax(3), sp.log_softmax(3))
    same(softmax(3.0, axis=0), sp.softmax(3.0, axis=0))
    # SciPy's softmax refuses bools (NumPy's boolean subtract); ours reads them as 0/1
    assert_allclose(softmax(np.array([True, False])), sp.softmax([1.0, 0.0]), rtol=1e-15)


WEIGHTS = [-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]
VALUES = [-np.inf, -1.0, 0.0, 1.0, np.inf, np.nan]


def test_weights_every_small_combination_with_sign():
    """Every 1-, 2- and 3-element reduction of special values and weights (incl. zero and
    negative), with and without return_sign.  Skipped: an infinite or NaN value of weight 0
    (dropped here; SciPy drops it only when a finite element of non-zero weight exists, and
    returns NaN otherwise -- see the docstring)."""
    for k in (1, 2, 3):
        a = np.array(list(itertools.product(VALUES, repeat=k)))
        b = np.array(list(itertools.product(WEIGHTS, repeat=k)))
        aa = np.repeat(a, len(b), axis=0)
        bb = np.tile(b, (len(a), 1))
        ok = ~np.any((bb == 0) & ~np.isfinite(aa), axis=1)
        aa, bb = aa[ok], bb[ok]
        r, s = logsumexp(aa, axis=1, b=bb, return_sign=True)
        wr, ws = scipy_call(sp.logsumexp, aa, axis=1, b=bb, return_sign=True)
        assert_allclose(r, wr, rtol=1e-14, equal_nan=True)
        assert_array_equal(s, ws)
        assert_allclose(logsumexp(aa, axis=1, b=bb),
                        scipy_call(sp.logsumexp, aa, axis=1, b=bb), rtol=1e-14, equal_nan=True)
        rr, rs = ref.logsumexp_weighted(aa, bb, axis=1, return_sign=True)
        assert_allclose(r, rr, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert_array_equal(s, rs)


def test_zero_weight_drops_even_nonfinite_values():
    assert logsumexp([np.inf, 1.0], b=[0, 1]) == 1.0
    assert logsumexp([np.nan, 1.0], b=[0, 1]) == 1.0
    assert logsumexp([np.inf], b=[0], return_sign=True) == (-np.inf, 0.0)
    assert logsumexp([1.0, 1.0], b=[1, -1], return_sign=True) == (-np.inf, 0.0)


def test_weights_broadcast_and_dtypes():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 5))
    for b in [rng.normal(size=5), rng.normal(size=(4, 1)), 2.0, 3, np.float32(2.0),
              rng.normal(size=(3, 4, 5))]:
        for axis in (None, 0, 1, -1):
            for sign in (False, True):
                got = logsumexp(a, axis=axis, b=b, return_sign=sign)
                want = scipy_call(sp.logsumexp, a, axis=axis, b=b, return_sign=sign)
                if sign:
                    same(got[0], want[0], rtol=1e-13)
                    same(got[1], want[1])
                else:
                    same(got, want, rtol=1e-13)
    for a_dt, b_dt in [(np.float32, np.float32), (np.float32, np.float64), (np.int8, np.float16),
                       (np.float32, np.complex64), (np.longdouble, np.int64)]:
        a = np.array([1, 2]).astype(a_dt)
        b = np.array([1, 2]).astype(b_dt)
        tol = 2e-3 if np.float16 in (a_dt, b_dt) else 1e-6
        same(logsumexp(a, b=b), sp.logsumexp(a, b=b), rtol=tol)
    same(logsumexp(np.float32([1, 2]), b=2.0), sp.logsumexp(np.float32([1, 2]), b=2.0),
         rtol=1e-6)


def test_complex_input():
    rng = np.random.default_rng(9)
    z = rng.normal(size=(3, 6)) + 1j * rng.normal(size=(3, 6)) * 3
    for axis in (None, 0, 1):
        same(logsumexp(z, axis=axis), sp.logsumexp(z, axis=axis), rtol=1e-13, atol=1e-13)
        r, s = logsumexp(z, axis=axis, return_sign=True)
        wr, ws = sp.logsumexp(z, axis=axis, return_sign=True)
        same(r, wr, rtol=1e-13)
        same(s, ws, rtol=1e-13, atol=1e-13)
        same(softmax(z, axis=axis), sp.softmax(z, axis=axis), rtol=1e-13, atol=1e-14)
        same(log_softmax(z, axis=axis), sp.log_softmax(z, axis=axis), rtol=1e-13, atol=1e-13)
    b = rng.normal(size=6) * 1j + 1
    same(logsumexp(z, axis=1, b=b), sp.logsumexp(z, axis=1, b=b), rtol=1e-13, atol=1e-13)


def test_masked_arrays_are_read_as_their_data_as_scipy_reads_them():
    a = np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    for ours, theirs in [(logsumexp, sp.logsumexp), *FUNCS.values()]:
        got, want = ours(a), theirs(a)
        same(got, want)
        assert not isinstance(got, np.ma.MaskedArray)
    # SciPy's recipe for leaving masked elements out works the same
    b = (~a.mask).astype(int)
    assert_allclose(logsumexp(a.data, b=b), np.log(np.exp(1) + np.exp(3)), rtol=1e-15)


def test_empty_inputs():
    for x, axis in [(np.zeros((2, 0)), 1), (np.zeros((0, 3)), 0), (np.zeros(0), None)]:
        res = logsumexp(x, axis=axis)
        assert np.all(res == -np.inf)
        assert np.shape(res) == np.shape(np.sum(x, axis=axis))
        for f, g in FUNCS.values():
            with pytest.raises(ValueError, match="empty"):
                f(x, axis=axis)
            with pytest.raises(ValueError):
                g(x, axis=axis)
    same(logsumexp(np.zeros((2, 0)), axis=1), sp.logsumexp(np.zeros((2, 0)), axis=1))
    same(softmax(np.zeros((0, 3)), axis=1), sp.softmax(np.zeros((0, 3)), axis=1))
    r, s = logsumexp(np.zeros((2, 0)), axis=1, return_sign=True)
    assert_array_equal(s, [0.0, 0.0])


def test_bad_input_errors():
    x = np.zeros((2, 3))
    for f in (logsumexp, softmax, log_softmax):
        with pytest.raises(np.exceptions.AxisError):
            f(x, axis=2)
        with pytest.raises(TypeError, match="axis"):
            f(x, axis=0.5)
        with pytest.raises(ValueError, match="repeated"):
            f(x, axis=(0, 0))
        with pytest.raises(ValueError, match="n_threads"):
            f(x, n_threads=0)
        with pytest.raises(TypeError, match="n_threads"):
            f(x, n_threads=1.5)
        with pytest.raises(TypeError):
            f(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="b of shape"):
        logsumexp(x, b=np.ones(4))
    with pytest.raises(TypeError, match="b must"):
        logsumexp(x, b=np.array(["a"] * 3))


# ----------------------------------------------------------------- exactness (mpmath)

mpmath.mp.dps = 50


def mp_log_softmax(row):
    with mpmath.workprec(2400):  # the differences of doubles up to 1e300 exactly
        xs = [mpmath.mpf(float(v)) for v in row]
        m = max(xs)
        d = [v - m for v in xs]
    lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in d))
    return [v - lse for v in d]


@pytest.mark.parametrize("offset", [0.0, 1e5, -3e8, 1e300, -1e300])
def test_log_softmax_within_1e15_of_mpmath_and_softmax_within_few_ulp(offset):
    rng = np.random.default_rng(11)
    rows = [rng.normal(size=40) * 5, rng.normal(size=300) * 40,
            np.concatenate([[0.0], rng.uniform(-60, -20, size=50)]),  # one dominant
            np.array([0.0, -1e-17, -30.0, -700.0, -740.0])]
    for r in rows:
        x = r + offset
        want = mp_log_softmax(x)
        got = log_softmax(x)
        for g, w in zip(got, want, strict=True):
            if w == 0:
                assert g == 0
            else:
                assert abs(mpmath.mpf(float(g)) - w) <= 1e-15 * abs(w), (offset, g, w)
        sm = softmax(x)
        for g, w in zip(sm, want, strict=True):
            e = mpmath.exp(w)
            if e > mpmath.mpf(2) ** -1022:
                assert abs(mpmath.mpf(float(g)) - e) <= 4 * 2.0 ** -52 * e, (offset, g, e)


def test_log_softmax_exactly_shift_invariant():
    """log_softmax(x + c) == log_softmax(x) bit for bit whenever x + c is exact, up to 1e300."""
    rng = np.random.default_rng(12)
    k = np.round(rng.normal(size=(6, 999)) * 2**10)  # |k| < 2^14
    for c in [2.0**20, -(2.0**40), 1e300, -1e300, 3.0 * 2**900, -(2.0**1000)]:
        unit = 2.0 ** (np.frexp(c)[1] - 30)  # x = k unit: x + c exact
        base = k * unit
        shifted = base + c
        assert np.all((shifted - c) == base)
        want = log_softmax(base, axis=1)
        assert_array_equal(log_softmax(shifted, axis=1), want)
        assert_array_equal(softmax(shifted, axis=1), softmax(base, axis=1))


# ------------------------------------------------------- threads and SIMD variants

def long_rows():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(3, 70_001)) * 30
    x[1, 5] = np.inf
    x[2, 40_000] = 1e4
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bitwise_identical_for_any_thread_count(dtype):
    x = long_rows().astype(dtype)
    x[1, 5] = 0
    for f in (softmax, log_softmax):
        outs = [f(x, axis=1, n_threads=nt) for nt in (1, 2, 3, 5)]
        for o in outs[1:]:
            assert_array_equal(o, outs[0])
        rows_many = np.tile(x[:, :20_000], (4, 1))  # whole rows per thread
        outs = [f(rows_many, axis=1, n_threads=nt) for nt in (1, 2, 3)]
        for o in outs[1:]:
            assert_array_equal(o, outs[0])
        assert_array_equal(outs[0][:3], f(x[:, :20_000], axis=1, n_threads=1))


@pytest.mark.parametrize("variant", simd.available())
def test_every_simd_variant_agrees_with_reference(variant):
    x = long_rows()
    rng = np.random.default_rng(14)
    small = rng.normal(size=(5, 257)) * 100
    small[0, 3] = -np.inf
    small[1, :] = -np.inf
    small[2, 7] = np.nan
    with simd.use(variant):
        for x_ in (x, small):
            for dt, tol, tiny in ((np.float64, 2e-13, 1e-300), (np.float32, 2e-7, 2e-38)):
                xx = x_.astype(dt)
                want_sm = ref.softmax(xx.astype(np.float64), axis=1)
                want_ls = ref.log_softmax(xx.astype(np.float64), axis=1)
                assert_allclose(softmax(xx, axis=1), want_sm, rtol=tol, atol=tiny,
                                equal_nan=True)
                assert_allclose(log_softmax(xx, axis=1), want_ls, rtol=tol, equal_nan=True)


def test_strided_and_readonly_input_not_modified():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(30, 40))
    x.flags.writeable = False
    for f, g in FUNCS.values():
        same(f(x[::3, ::2].T, axis=0), g(x[::3, ::2].T, axis=0))
        same(f(x, axis=0), g(x, axis=0))
    assert not x.flags.writeable
