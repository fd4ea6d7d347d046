"""The best-of-N samplers' random words and tables (sample_best_of_n, simulate_best_of_n).

Each batch element draws from one PCG64 stream (NumPy's generator, computed inline): the
order-statistic sampler maps word d to draw d through one alias table over pi_N, the naive
one words d N .. d N + N - 1 to the N candidates of sample d.  These tests pin the words
to NumPy's PCG64, the draws to the documented rule applied to those words, the tables to
the exact law, and the draws to no dependence on blocks, threads or SIMD variants.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import stats

import tiltlab
from tiltlab import _bestofn, bestofn, simd

MASK32 = np.uint64(0xFFFFFFFF)


def _words(seed_words, offset, count):
    out = np.empty(count, dtype=np.uint64)
    _bestofn.pcg64_words(np.ascontiguousarray(seed_words, dtype=np.uint64), offset >> 64,
                         offset & (2**64 - 1), out)
    return out


def _split(u, n):
    """(u * n) >> 64 and (u * n) mod 2^64 for uint64 words u and n < 2^31, in uint64."""
    n = np.uint64(n)
    a = (u >> np.uint64(32)) * n          # < 2^63
    b = (u & MASK32) * n                  # < 2^63
    c = a + (b >> np.uint64(32))          # < 2^64
    return c >> np.uint64(32), ((c & MASK32) << np.uint64(32)) | (b & MASK32)


def _table_draws(table, u):
    """The draws of words u from an alias table (thresh, here, alias): the documented
    rule, written again with NumPy."""
    thresh, here, alias = table
    i, frac = _split(u, len(thresh))
    i = i.astype(np.int64)
    return np.where(frac < thresh[i], here[i], alias[i]).astype(np.int64)


def _implied(table, v):
    """The law an alias table draws from (doubles: to ~1e-16 relative)."""
    thresh, here, alias = table
    n = len(thresh)
    keep = thresh.astype(np.float64) * 2.0**-64
    p = np.zeros(v)
    np.add.at(p, here, keep / n)
    np.add.at(p, alias, (1.0 - keep) / n)
    return p


def _models():
    rng = np.random.default_rng(11)
    masked = rng.normal(size=400)
    masked[::3] = -np.inf
    return {
        "continuous": (rng.normal(size=3000), rng.uniform(size=3000)),
        "ties": (rng.normal(size=3000) * 2, rng.integers(0, 30, 3000).astype(float)),
        "spread": (rng.normal(size=2000) * 100, rng.normal(size=2000)),
        "masked": (masked, rng.integers(0, 6, 400).astype(float)),
        # the top level's mass is e^-700 (and e^-1000: below the double range)
        "tiny top": (np.r_[np.zeros(99), -700.0], np.r_[np.zeros(99), 1.0]),
        "tinier top": (np.r_[np.zeros(99), -1000.0], np.r_[np.arange(99.0), 1e4]),
        "one outcome": (np.array([-np.inf, 0.3, -np.inf]), np.array([1.0, 2.0, 0.0])),
    }


LOG_NS = [0.0, 1e-9, 0.4, np.log(4.0), np.log(64.0), np.log(1600.0), np.log(1e6), 30.0,
          599.0, 601.0, 1e5]


def test_stream_is_numpys_pcg64_at_any_offset():
    for entropy in (0, 12345, [7, 8, 9]):
        ss = np.random.SeedSequence(entropy)
        seed = ss.generate_state(4, np.uint64)
        assert_array_equal(_words(seed, 0, 1001),
                           np.random.PCG64(np.random.SeedSequence(entropy)).random_raw(1001))
        for offset in (1, 2, 3, 5, 65536 * 3, 2**40 + 7, 2**64 + 17, 2**127 + 2**90 + 1):
            bg = np.random.PCG64(np.random.SeedSequence(entropy))
            bg.advance(offset)
            assert_array_equal(_words(seed, offset, 37), bg.random_raw(37))


@pytest.mark.parametrize("log_n", [0.0, np.log(64.0), 601.0])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_draw_d_is_word_d_through_the_table(log_n, n_threads):
    """sample_best_of_n = the alias rule applied to the stream's words, across blocks."""
    logits, rewards = _models()["ties"]
    size = 2 * bestofn.SAMPLE_BLOCK + 999
    got = tiltlab.sample_best_of_n(logits, rewards, log_n=log_n, size=size, rng=5,
                                   n_threads=n_threads)
    fl, *table = _bestofn.sampler_table(logits, rewards, log_n)
    assert fl == 0
    u = _words(bestofn._stream_seeds(5, 1)[0], 0, size)
    assert_array_equal(got, _table_draws(table, u))


def test_naive_sample_d_is_words_d_n_to_d_n_plus_n_minus_1():
    logits, rewards = _models()["ties"]
    n, size = 7, bestofn.SAMPLE_BLOCK + 300
    got = tiltlab.simulate_best_of_n(logits, rewards, n, size=size, rng=9, n_threads=2)
    fl, *table = _bestofn.sampler_table(logits, rewards, 0.0, True)
    assert fl == 0
    cand = _table_draws(table, _words(bestofn._stream_seeds(9, 1)[0], 0, size * n))
    cand = cand.reshape(size, n)
    first_best = np.argmax(rewards[cand], axis=1)  # the first maximum
    assert_array_equal(got, cand[np.arange(size), first_best])


@pytest.mark.parametrize("name", list(_models()))
def test_alias_tables_are_the_exact_law(name):
    """The law the order-statistic table draws from equals the exact best-of-N law to
    ~1e-12 relative (absolute floor 2^-60: the resolution of one 64-bit word), for every
    N from 1 to e^(10^5); an off-by-one anywhere would move ~1/n of the mass."""
    logits, rewards = _models()[name]
    for log_n in LOG_NS:
        fl, *table = _bestofn.sampler_table(logits, rewards, log_n)
        assert fl == 0
        law = np.exp(tiltlab.best_of_n(logits, rewards, log_n=log_n).log_probs)
        got = _implied(table, len(logits))
        err = np.abs(got - law)
        assert np.all(err <= 4e-12 * law + 2.0**-60), (name, log_n, np.max(err / law))
        assert err.sum() < 1e-13, (name, log_n)
        assert np.all(got[~np.isfinite(logits)] == 0)
    fl, *table = _bestofn.sampler_table(logits, rewards, 0.0, True)
    p = np.exp(tiltlab.best_of_n(logits, rewards, log_n=0.0).log_probs)
    assert np.all(np.abs(_implied(table, len(logits)) - p) <= 4e-12 * p + 2.0**-60)


def _pvalue(counts, law):
    """Chi-square p-value of counts against law, the outcomes expected < 20 times pooled
    (into the last kept bin when the pool expects < 1)."""
    expected = law * counts.sum()
    keep = expected >= 20
    obs, exp_ = counts[keep].astype(float), expected[keep]
    rest_o, rest_e = counts[~keep].sum(), expected[~keep].sum()
    if rest_e >= 1:
        obs, exp_ = np.append(obs, rest_o), np.append(exp_, rest_e)
    else:
        obs[-1] += rest_o
        exp_[-1] += rest_e
    assert len(obs) > 1
    return stats.chisquare(obs, exp_ * obs.sum() / exp_.sum()).pvalue


@pytest.mark.parametrize("log_n", [0.0, np.log(3.5), np.log(1000.0), 40.0, 650.0])
def test_draws_pass_chi_square_against_the_exact_law(log_n):
    """400k draws over 300 outcomes in 25 levels (fixed seed): counts match pi_N."""
    rng = np.random.default_rng(3)
    logits, rewards = rng.normal(size=300) * 1.5, rng.integers(0, 25, 300).astype(float)
    law = np.exp(tiltlab.best_of_n(logits, rewards, log_n=log_n).log_probs)
    draws = tiltlab.sample_best_of_n(logits, rewards, log_n=log_n, size=400_000, rng=21)
    assert _pvalue(np.bincount(draws, minlength=300), law) > 1e-4
    if log_n <= np.log(1000.0):
        n = int(round(np.exp(log_n)))
        naive = tiltlab.simulate_best_of_n(logits, rewards, n, size=400_000 // n, rng=22)
        law_n = np.exp(tiltlab.best_of_n(logits, rewards, n=n).log_probs)
        assert _pvalue(np.bincount(naive, minlength=300), law_n) > 1e-4


def test_draws_do_not_depend_on_blocks_threads_or_size(monkeypatch):
    """A shorter run is a prefix of a longer one; any block size, any thread count."""
    logits, rewards = _models()["continuous"]
    for sampler, kw in ((tiltlab.sample_best_of_n, {"n": 16}),
                        (tiltlab.simulate_best_of_n, {"n": 3})):
        long = sampler(logits, rewards, size=150_000, rng=4, n_threads=2, **kw)
        short = sampler(logits, rewards, size=70_001, rng=4, n_threads=1, **kw)
        assert_array_equal(long[:70_001], short)
        monkeypatch.setattr(bestofn, "SAMPLE_BLOCK", 4099)
        assert_array_equal(sampler(logits, rewards, size=150_000, rng=4, n_threads=3, **kw),
                           long)
        monkeypatch.undo()
        batch = sampler(np.stack([logits, logits]), rewards, size=1000, rng=4, **kw)
        assert_array_equal(batch[0], long[:1000])  # row 0: the same stream
        assert not np.array_equal(batch[0], batch[1])  # row 1: another one


def test_draws_identical_on_every_simd_variant():
    logits, rewards = _models()["ties"]
    out = {}
    for v in simd.available():
        with simd.use(v):
            out[v] = [tiltlab.sample_best_of_n(logits, rewards, log_n=ln, size=20_000, rng=1)
                      for ln in (0.0, 1.5, 700.0)]
            out[v].append(tiltlab.simulate_best_of_n(logits, rewards, 5, size=5000, rng=1))
    first = next(iter(out.values()))
    for v in out:
        for a, b in zip(first, out[v], strict=True):
            assert_array_equal(a, b)
