"""The fused batched samplers sample_categorical and sample_tilted (SPEC section 2.1).

Laws: chi-square of the draws against the exact probabilities of tiltlab.reference (never
the samplers' own arithmetic), on both draw paths (block search, alias table), batched and
single rows, -inf logits, ties, tilts 0, +-inf, large and huge, logits at an offset,
float32.  Determinism: the same draws for every thread count and SIMD variant, for every
way of passing the same seed, and for float32 and the float64 copy of the same values.
Shapes, size semantics and errors.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from laws import chi2_pvalue
from numpy.testing import assert_array_equal

import tiltlab
import tiltlab.sampling as S
from tiltlab import reference as R
from tiltlab import simd


def _softmax(logits):
    lg = np.asarray(logits, dtype=np.float64)
    return np.exp(R.tilt(lg, np.zeros_like(lg), 0.0))


def _tilted(logits, rewards, lam):
    with np.errstate(over="ignore"):  # the reference's Lambda overflows for lam r ~ 1e308
        return np.exp(R.tilt(np.asarray(logits, dtype=np.float64),
                             np.asarray(rewards, dtype=np.float64), lam))


@pytest.fixture
def search_path(monkeypatch):
    """Every row drawn by the block search (the path of few draws per row)."""
    monkeypatch.setattr(S, "ALIAS_RATIO", 0)


@pytest.fixture
def alias_path(monkeypatch):
    """Every row drawn from an alias table (the path of many draws per row)."""
    monkeypatch.setattr(S, "ALIAS_RATIO", 1 << 40)


def _rows():
    rng = np.random.default_rng(5)
    masked = rng.normal(size=700) * 2
    masked[rng.uniform(size=700) < 0.6] = -np.inf
    ties = np.repeat(rng.normal(size=40), 25)  # 40 values, 25 outcomes each
    return {
        "V=8": np.log([0.01, 0.04, 0.1, 0.15, 0.2, 0.2, 0.1, 0.2]),
        "V=32000": rng.normal(size=32000) * 2.5,
        "-inf": masked,
        "ties": ties,
        "one block of mass": np.r_[np.full(3000, -800.0), rng.normal(size=300)],
    }


@pytest.mark.parametrize("name", list(_rows()))
@pytest.mark.parametrize("path", ["search", "alias"])
def test_categorical_draws_pass_chi_square(name, path, monkeypatch):
    logits = _rows()[name]
    monkeypatch.setattr(S, "ALIAS_RATIO", 0 if path == "search" else 1 << 40)
    n = 10**6 if path == "alias" else 200_000
    draws = tiltlab.sample_categorical(logits, n, rng=17)
    counts = np.bincount(draws, minlength=len(logits))
    assert len(counts) == len(logits)
    law = _softmax(logits)
    assert np.all(counts[law == 0] == 0)  # -inf (and e^-800 relative) never drawn
    assert chi2_pvalue(counts, law) > 1e-4


def test_categorical_batch_of_rows_one_draw_each():
    """The decoding case: one draw per row of a batch (block search), each row its own
    stream; 60000 rows of the same logits give 60000 independent draws of one law."""
    logits = np.random.default_rng(2).normal(size=100) * 2
    logits[::7] = -np.inf
    draws = tiltlab.sample_categorical(np.tile(logits, (60_000, 1)), rng=3)
    assert draws.shape == (60_000,) and draws.dtype == np.int64
    counts = np.bincount(draws, minlength=100)
    assert np.all(counts[::7] == 0)
    assert chi2_pvalue(counts, _softmax(logits)) > 1e-4


def test_categorical_float32_is_the_float64_of_the_same_values():
    x = (np.random.default_rng(8).normal(size=(5, 3000)) * 3).astype(np.float32)
    for size in (None, 7, 5000):
        a = tiltlab.sample_categorical(x, size, rng=1)
        assert_array_equal(a, tiltlab.sample_categorical(x.astype(np.float64), size, rng=1))
    draws = tiltlab.sample_categorical(x[0], 10**6, rng=2)
    assert chi2_pvalue(np.bincount(draws, minlength=3000), _softmax(x[0])) > 1e-4


def _tilt_cases():
    rng = np.random.default_rng(9)
    lg = rng.normal(size=500) * 2
    r = rng.normal(size=500)
    l_inf = lg.copy()
    l_inf[::4] = -np.inf
    r_ties = rng.integers(0, 6, 500).astype(float)
    return {
        "lam=0": (lg, r, 0.0),
        "lam=1.3": (lg, r, 1.3),
        "lam=-2": (l_inf, r, -2.0),
        "lam=+inf": (l_inf, r_ties, np.inf),
        "lam=-inf": (lg, r_ties, -np.inf),
        "large lam (dominant outcome)": (lg, r * 400, 3.0),
        "huge lam": (lg, r_ties * 1e-300, 7e299),
        "lam r overflows": (lg, r_ties, 1e308),
        "logits at an offset": (lg + 1e7, r, 1.5),
        "rewards at an offset": (lg, r + 1e9, 0.7),
        "ties in rewards": (l_inf, r_ties, 0.9),
    }


@pytest.mark.parametrize("name", list(_tilt_cases()))
def test_tilted_draws_pass_chi_square(name, monkeypatch):
    logits, rewards, lam = _tilt_cases()[name]
    law = _tilted(logits, rewards, lam)
    draws = tiltlab.sample_tilted(logits, rewards, lam, 10**6, rng=23)
    counts = np.bincount(draws, minlength=len(logits))
    assert np.all(counts[law == 0] == 0)
    assert chi2_pvalue(counts, law) > 1e-4
    monkeypatch.setattr(S, "ALIAS_RATIO", 0)  # the block search
    draws = tiltlab.sample_tilted(logits, rewards, lam, 100_000, rng=24)
    counts = np.bincount(draws, minlength=len(logits))
    assert np.all(counts[law == 0] == 0)
    assert chi2_pvalue(counts, law) > 1e-4


def test_tilted_float32_and_broadcasting():
    rng = np.random.default_rng(4)
    logits = (rng.normal(size=300) * 2).astype(np.float32)
    rewards = rng.normal(size=(3, 300)).astype(np.float32)
    lam = np.array([[0.5], [-1.0]])
    y = tiltlab.sample_tilted(logits, rewards, lam, size=(2, 5), rng=6)
    assert y.shape == (2, 3, 2, 5)
    assert_array_equal(y, tiltlab.sample_tilted(logits.astype(np.float64),
                                                rewards.astype(np.float64), lam, (2, 5),
                                                rng=6))
    draws = tiltlab.sample_tilted(logits, rewards[1], -1.0, 10**6, rng=7)
    assert chi2_pvalue(np.bincount(draws, minlength=300), _tilted(logits, rewards[1], -1.0)) > 1e-4


def test_tilted_lam_zero_is_categorical_at_any_offset():
    """lam = 0 draws z = l itself: the draws of sample_categorical, bit for bit."""
    x = np.random.default_rng(1).normal(size=(4, 2000)) + 1e12
    r = np.random.default_rng(2).normal(size=(4, 2000))
    for size in (None, 3, 10_000):
        assert_array_equal(tiltlab.sample_tilted(x, r, 0.0, size, rng=5),
                           tiltlab.sample_categorical(x, size, rng=5))


def _determinism_cases():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(7, 3000)) * 2
    x[:, ::5] = -np.inf
    r = rng.normal(size=(7, 3000))
    lam = np.array([0.0, 0.8, -3.0, np.inf, -np.inf, 1e300, 2.5])[:, None]
    return x, r + np.array([0, 0, 0, 0, 0, 0, 1e6])[:, None], lam


@pytest.mark.parametrize("path", ["search", "alias"])
def test_draws_do_not_depend_on_threads_or_variant(path, monkeypatch):
    """Batches (rows in parallel) and single rows (blocks of draws in parallel) give the
    same draws for 1, 2, 3 threads and on every SIMD variant this CPU runs."""
    monkeypatch.setattr(S, "ALIAS_RATIO", 0 if path == "search" else 1 << 40)
    monkeypatch.setattr(S, "SEARCH_BLOCK", 1000)
    monkeypatch.setattr(S, "ALIAS_BLOCK", 1000)
    x, r, lam = _determinism_cases()
    results = {}
    for v in simd.available():
        with simd.use(v):
            for nt in (1, 2, 3):
                results[v, nt] = [
                    tiltlab.sample_categorical(x, 50, rng=1, n_threads=nt),
                    tiltlab.sample_categorical(x[1], 4500, rng=2, n_threads=nt),
                    tiltlab.sample_tilted(x, r, lam[:, 0][:, None], 40, rng=3, n_threads=nt),
                    tiltlab.sample_tilted(x[2], r[6], 0.4, 3500, rng=4, n_threads=nt),
                    tiltlab.sample_categorical(x.astype(np.float32), 20, rng=5,
                                               n_threads=nt),
                ]
    first = next(iter(results.values()))
    for key, got in results.items():
        for a, b in zip(first, got, strict=True):
            assert_array_equal(a, b, err_msg=str(key))


def test_rng_forms():
    x = np.random.default_rng(0).normal(size=(3, 50))
    want = tiltlab.sample_categorical(x, 20, rng=42)
    assert_array_equal(tiltlab.sample_categorical(x, 20, rng=np.random.SeedSequence(42)), want)
    gen = np.random.default_rng(42)
    assert_array_equal(tiltlab.sample_categorical(x, 20, rng=gen), want)
    # the Generator was advanced: its next use draws other words
    assert not np.array_equal(tiltlab.sample_categorical(x, 20, rng=gen), want)
    assert not np.array_equal(tiltlab.sample_categorical(x, 20, rng=43), want)
    a = tiltlab.sample_categorical(x, 200, rng=None)
    b = tiltlab.sample_categorical(x, 200, rng=None)
    assert a.shape == (3, 200) and not np.array_equal(a, b)
    # row i draws from stream i whatever the other rows: row 0 alone is row 0 of the batch
    assert_array_equal(tiltlab.sample_categorical(x[:1], 20, rng=42)[0], want[0])
    for bad, exc in ((1.5, TypeError), ("seed", TypeError), (True, TypeError),
                     (-1, ValueError), ([1, -2], ValueError)):
        with pytest.raises(exc, match="rng"):
            tiltlab.sample_categorical(x, 2, rng=bad)


def test_size_semantics_and_prefixes():
    x = np.random.default_rng(3).normal(size=(2, 3, 40))
    assert tiltlab.sample_categorical(x, rng=1).shape == (2, 3)
    assert tiltlab.sample_categorical(x, (), rng=1).shape == (2, 3)
    assert_array_equal(tiltlab.sample_categorical(x, (), rng=1),
                       tiltlab.sample_categorical(x, rng=1))
    assert tiltlab.sample_categorical(x, 0, rng=1).shape == (2, 3, 0)
    assert tiltlab.sample_categorical(x, (4, 0), rng=1).shape == (2, 3, 4, 0)
    y = tiltlab.sample_categorical(x, (4, 5), rng=1)
    assert y.shape == (2, 3, 4, 5) and y.dtype == np.int64
    assert_array_equal(y.reshape(2, 3, 20), tiltlab.sample_categorical(x, 20, rng=1))
    one = tiltlab.sample_categorical(x[0, 0], rng=1)
    assert isinstance(one, np.int64)
    # a shorter size is a prefix of a longer one on one path (here: the alias tables)
    assert_array_equal(tiltlab.sample_categorical(x, 20, rng=1),
                       tiltlab.sample_categorical(x, 30, rng=1)[..., :20])
    long = np.random.default_rng(4).normal(size=5000)  # block search below 5000 / 32
    assert_array_equal(tiltlab.sample_categorical(long, 50, rng=1),
                       tiltlab.sample_categorical(long, 150, rng=1)[:50])
    assert tiltlab.sample_categorical(np.zeros((0, 5)), 3, rng=1).shape == (0, 3)
    assert tiltlab.sample_tilted(np.zeros(5), np.zeros(5), [], rng=1).shape == (0,)


def test_masked_and_strided_logits():
    x = np.random.default_rng(6).normal(size=(4, 60))
    m = np.ma.masked_array(x, mask=np.zeros_like(x, dtype=bool))
    m[:, :30] = np.ma.masked
    y = tiltlab.sample_categorical(m, 2000, rng=2)
    assert y.min() >= 30
    xs = np.random.default_rng(7).normal(size=(60, 8)).T  # rows with stride 8 elements
    assert_array_equal(tiltlab.sample_categorical(xs, 30, rng=2),
                       tiltlab.sample_categorical(np.ascontiguousarray(xs), 30, rng=2))
    assert_array_equal(tiltlab.sample_categorical(x[:, ::-2], 30, rng=2),
                       tiltlab.sample_categorical(x[:, ::-2].copy(), 30, rng=2))


def test_input_errors():
    x = np.zeros((3, 4))
    for bad, exc, match in ((-1, ValueError, "size"), (1.5, TypeError, "size"),
                            ("3", TypeError, "size"), ((2, -1), ValueError, "size"),
                            (True, TypeError, "size"), ((2, 1.0), TypeError, "size")):
        with pytest.raises(exc, match=match):
            tiltlab.sample_categorical(x, bad, rng=0)
        with pytest.raises(exc, match=match):
            tiltlab.sample_tilted(x, x, 1.0, bad, rng=0)
    nan = x.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"logits contains NaN at index \(1, 2\)"):
        tiltlab.sample_categorical(nan)
    pinf = x.copy()
    pinf[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"logits contains \+inf"):
        tiltlab.sample_categorical(pinf)
    empty = x.copy()
    empty[1] = -np.inf
    with pytest.raises(ValueError, match=r"row at batch index \(1,\) is all -inf"):
        tiltlab.sample_categorical(empty, 5)
    with pytest.raises(ValueError, match=r"row at batch index \(1,\) is all -inf"):
        tiltlab.sample_tilted(empty, x, 2.0)
    with pytest.raises(ValueError, match="no outcomes"):
        tiltlab.sample_categorical(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="at least one dimension"):
        tiltlab.sample_categorical(1.0)
    with pytest.raises(TypeError, match="complex"):
        tiltlab.sample_categorical(np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match="n_threads"):
        tiltlab.sample_categorical(x, n_threads=1.5)
    bad_r = x.copy()
    bad_r[0, 3] = np.inf
    empty_r = bad_r.copy()
    with pytest.raises(ValueError, match="rewards contains \\+inf at index \\(0, 3\\)"):
        tiltlab.sample_tilted(x, bad_r, 0.0)
    empty_r[0, 3] = np.nan
    lg = x.copy()
    lg[0, 3] = -np.inf
    with pytest.raises(ValueError, match="rewards contains NaN.*also where the logit is -inf"):
        tiltlab.sample_tilted(lg, empty_r, 1.0)
    with pytest.raises(ValueError, match="rewards span more than the float64 range"):
        tiltlab.sample_tilted(np.zeros(2), [-1e308, 1e308], 1.0)
    with pytest.raises(ValueError, match="lam contains NaN"):
        tiltlab.sample_tilted(x, x, np.nan)
    with pytest.raises(ValueError, match="cannot broadcast"):
        tiltlab.sample_tilted(x, x, np.ones(2))
    with pytest.raises(ValueError, match="outcomes on its last axis"):
        tiltlab.sample_tilted(x, np.zeros((3, 5)), 1.0)


def test_same_errors_as_tilt_stats():
    cases = [(np.array([0.0, np.nan]), np.zeros(2), 1.0),
             (np.array([-np.inf, -np.inf]), np.zeros(2), 1.0),
             (np.zeros(2), np.array([0.0, -np.inf]), 0.0),
             (np.zeros(2), np.array([-1e308, 1e308]), 2.0),
             (np.zeros((2, 2)), np.zeros(2), np.ones(3))]
    for logits, rewards, lam in cases:
        with pytest.raises(ValueError) as want:
            tiltlab.tilt_stats(logits, rewards, lam)
        with pytest.raises(ValueError) as got:
            tiltlab.sample_tilted(logits, rewards, lam, rng=0)
        assert str(got.value) == str(want.value)


def test_small_calls_draw_as_the_general_path():
    """Small plain arrays take a serial path of a few microseconds: the same draws and the
    same errors as the general path (here reached through lists and masked arrays)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 8))
    r = rng.normal(size=(3, 8))
    for size in (None, 1, 5, 300):
        for dtype in (np.float64, np.float32):
            xd, rd = x.astype(dtype), r.astype(dtype)
            assert_array_equal(tiltlab.sample_categorical(xd, size, rng=4),
                               tiltlab.sample_categorical(np.ma.masked_array(xd), size, rng=4))
            for lam in (0.0, 2.5, -1e300):
                assert_array_equal(tiltlab.sample_tilted(xd, rd, lam, size, rng=4),
                                   tiltlab.sample_tilted(xd.tolist(), rd.tolist(), lam, size,
                                                         rng=4))
    assert_array_equal(tiltlab.sample_categorical(x[0], rng=9),
                       tiltlab.sample_categorical(x[0].tolist(), rng=9))
    bad = x.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"logits contains NaN at index \(2, 5\)"):
        tiltlab.sample_categorical(bad, rng=0)
    bad[2] = -np.inf
    with pytest.raises(ValueError, match=r"row at batch index \(2,\) is all -inf"):
        tiltlab.sample_tilted(bad, r, 1.0, 3, rng=0)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        tiltlab.sample_categorical(x, rng=0, n_threads=0)


def test_docstring_examples():
    result = doctest.testmod(S, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("size", [0, (2, 0)])
def test_size_zero_still_checks_the_rows(size):
    """size 0 draws nothing but reads every row: its errors are those of any other size."""
    with pytest.raises(ValueError, match="NaN"):
        tiltlab.sample_categorical([np.nan, 1.0], size, rng=0)
    with pytest.raises(ValueError, match="rewards"):
        tiltlab.sample_tilted([0.0, 1.0], [np.nan, 1.0], 1.0, size, rng=0)
    with pytest.raises(ValueError):
        tiltlab.sample_categorical([-np.inf, -np.inf], size, rng=0)
    got = tiltlab.sample_categorical(np.zeros((3, 4)), size, rng=0)
    assert got.shape == (3,) + ((0,) if size == 0 else size) and got.dtype == np.int64


@pytest.mark.parametrize("case", ["categorical", "tilted"])
def test_reference_twins_draw_the_same_law(case):
    """tiltlab.reference.sample_categorical / sample_tilted (NumPy inverse CDF) and the
    compiled samplers: both chi-square against the exact law, on a row with -inf logits."""
    rng = np.random.default_rng(31)
    logits, rewards = rng.normal(size=300) * 2, rng.normal(size=300)
    logits[::7] = -np.inf
    n = 200_000
    if case == "categorical":
        law = _softmax(logits)
        ref = R.sample_categorical(logits, n, 5)
        got = tiltlab.sample_categorical(logits, n, rng=5)
    else:
        law = _tilted(logits, rewards, 1.7)
        ref = R.sample_tilted(logits, rewards, 1.7, n, 5)
        got = tiltlab.sample_tilted(logits, rewards, 1.7, n, rng=5)
    for draws in (ref, got):
        counts = np.bincount(draws, minlength=300)
        assert counts[::7].sum() == 0
        assert chi2_pvalue(counts, law) > 1e-4
