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
from laws import chi2_pvalue
from numpy.testing import assert_array_equal

import tiltlab
from tiltlab import _bestofn, _common, bestofn, simd

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
    u = _words(_common.stream_seeds(5, 1)[0], 0, size)
    assert_array_equal(got, _table_draws(table, u))


def test_naive_sample_d_is_words_d_n_to_d_n_plus_n_minus_1():
    logits, rewards = _models()["ties"]
    n, size = 7, bestofn.SAMPLE_BLOCK + 300
    got = tiltlab.simulate_best_of_n(logits, rewards, n, size=size, rng=9, n_threads=2)
    fl, *table = _bestofn.sampler_table(logits, rewards, 0.0, True)
    assert fl == 0
    cand = _table_draws(table, _words(_common.stream_seeds(9, 1)[0], 0, size * n))
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


@pytest.mark.parametrize("log_n", [0.0, np.log(3.5), np.log(1000.0), 40.0, 650.0])
def test_draws_pass_chi_square_against_the_exact_law(log_n):
    """400k draws over 300 outcomes in 25 levels (fixed seed): counts match pi_N."""
    rng = np.random.default_rng(3)
    logits, rewards = rng.normal(size=300) * 1.5, rng.integers(0, 25, 300).astype(float)
    law = np.exp(tiltlab.best_of_n(logits, rewards, log_n=log_n).log_probs)
    draws = tiltlab.sample_best_of_n(logits, rewards, log_n=log_n, size=400_000, rng=21)
    assert chi2_pvalue(np.bincount(draws, minlength=300), law) > 1e-4
    if log_n <= np.log(1000.0):
        n = int(round(np.exp(log_n)))
        naive = tiltlab.simulate_best_of_n(logits, rewards, n, size=400_000 // n, rng=22)
        law_n = np.exp(tiltlab.best_of_n(logits, rewards, n=n).log_probs)
        assert chi2_pvalue(np.bincount(naive, minlength=300), law_n) > 1e-4


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


# ---------------------------------------------------------------- a few draws per row
#
# With size None or size <= DRAW_MAX (16) draws per row, sample_best_of_n draws in one pass
# over each row (csrc/tl_bon.h, tl_bon_draw_row): draw d takes word 2d for the level (the
# lowest level whose survival is <= t W, t = 1 - U^(1/N)) and word 2d + 1 for the outcome
# within it.  Rows whose logits span more than 708 nats with log N > 600 keep the alias
# table (word d), the draws of the same seed as a longer run's.

DRAW_MAX = _bestofn.DRAW_MAX


def _rule_draws(logits, rewards, log_n, words):
    """The documented rule of the one-pass path for one row, written again with NumPy
    (flat sums: the kernel's hierarchical ones differ by rounding, which moves a draw only
    when a uniform falls within ~1e-15 of a boundary)."""
    lg, rw = np.asarray(logits, dtype=np.float64), np.asarray(rewards, dtype=np.float64)
    x = lg - lg.max()
    w = np.where(x >= -708.0, np.exp(np.where(x >= -708.0, x, 0.0)), 0.0)
    order = np.lexsort((np.arange(len(lg)), -rw))  # reward descending, then index
    order = order[w[order] > 0]
    rs, ws = rw[order] + 0.0, w[order]
    starts = np.flatnonzero(np.r_[True, rs[1:] != rs[:-1]])
    ends = np.r_[starts[1:], len(rs)]
    mass = np.array([ws[s:e].sum() for s, e in zip(starts, ends, strict=True)])
    cum = np.cumsum(mass)  # the mass of the levels from the top, inclusive
    out = []
    for d in range(len(words) // 2):
        u = int(words[2 * d])
        if u >> 63:
            lu = np.log(((2**64 - 1 - u) + 0.5) * 2.0**-64)
        else:
            lu = np.log1p(-((u + 0.5) * 2.0**-64))
        if log_n <= 600:  # t = 1 - U^(1/N)
            tau = -np.expm1(lu * np.exp(-log_n)) * cum[-1]
        else:  # from log t
            ly = np.log(-lu) - log_n
            lt = ly - 0.5 * np.exp(ly) if ly < -20 else np.log(-np.expm1(-np.exp(ly)))
            tau = np.exp(lt + np.log(cum[-1]))
        j = min(int(np.searchsorted(cum, tau, side="right")), len(mass) - 1)
        s, e = starts[j], ends[j]
        x2 = (int(words[2 * d + 1]) >> 11) * 2.0**-53 * mass[j]
        k = min(int(np.searchsorted(np.cumsum(ws[s:e]), x2, side="right")), e - s - 1)
        out.append(order[s + k])
    return np.array(out, dtype=np.int64)


def _few_models(v=240):
    """Rows of one length v (shorter models padded with impossible outcomes) that take
    every route of the one-pass kernel: bins, bins of a bin, sorted lists, one level."""
    rng = np.random.default_rng(17)

    def pad(lg, rw):
        return (np.r_[lg, np.full(v - len(lg), -np.inf)],
                np.r_[rw, rng.uniform(-1e300, 1e300, v - len(rw))])

    masked = rng.normal(size=v) * 2
    masked[::3] = -np.inf
    outlier = rng.normal(size=v)
    outlier[7] = 1e6
    return {
        "ties": (rng.normal(size=v) * 1.5, rng.integers(0, 25, v).astype(float)),
        "continuous": (rng.normal(size=v) * 2, rng.uniform(size=v)),
        "masked": (masked, rng.integers(0, 6, v).astype(float)),
        "outlier": (rng.normal(size=v), outlier),  # all but one reward in one bin
        "geometric": (rng.normal(size=v), 2.0 ** -np.arange(v)),  # bins of bins, then a sort
        # mostly 0: the zeros split off as a level of their own
        "sparse": (rng.normal(size=v), np.where(rng.random(v) < 0.8, 0.0, rng.normal(size=v))),
        "binary": (rng.normal(size=v), rng.integers(0, 2, v) * 1.0),  # two levels
        "signed zeros": (rng.normal(size=v), np.where(rng.random(v) < 0.5, -0.0, 0.0)),
        "short": pad(rng.normal(size=30), rng.integers(0, 4, 30).astype(float)),  # sorted
        "tiny mass": (np.r_[np.zeros(v - 1), -700.0], np.r_[np.zeros(v - 1), 1.0]),
        "wide": (np.r_[rng.normal(size=v - 1), -1000.0], rng.uniform(size=v)),  # flushed
    }


FEW_LOG_NS = [("n=1", 0.0), ("n=2", np.log(2.0)), ("n=16", np.log(16.0)),
              ("n=1e6", np.log(1e6)), ("log_n=1000", 1000.0)]


@pytest.mark.parametrize(("name", "log_n"), FEW_LOG_NS, ids=[a for a, _ in FEW_LOG_NS])
def test_few_draws_follow_the_documented_rule(name, log_n):
    """Every model, 40 rows x 16 draws: the draws are the rule applied to the words."""
    for model, (lg, rw) in _few_models().items():
        if model == "wide" and log_n > 600:
            continue  # the alias-table path (test below)
        got = tiltlab.sample_best_of_n(np.broadcast_to(lg, (40, len(lg))), rw, log_n=log_n,
                                       size=DRAW_MAX, rng=8)
        seeds = _common.stream_seeds(8, 40)
        for i in range(40):
            want = _rule_draws(lg, rw, log_n, _words(seeds[i], 0, 2 * DRAW_MAX))
            assert_array_equal(got[i], want, err_msg=f"{model} row {i}")


@pytest.mark.parametrize(("name", "log_n"), FEW_LOG_NS, ids=[a for a, _ in FEW_LOG_NS])
def test_few_draws_pass_chi_square_against_the_exact_law(name, log_n):
    """10^6 draws (62500 rows x 16) of each model against pi_N from best_of_n (64
    outcomes: still bins, bins of a bin and sorted lists)."""
    models = _few_models(v=64)
    names = ["ties", "masked", "geometric", "outlier", "sparse", "short", "tiny mass", "wide"]
    rows = 62_500
    lg = np.repeat(np.stack([models[m][0] for m in names]), rows, axis=0)
    rw = np.repeat(np.stack([models[m][1] for m in names]), rows, axis=0)
    draws = tiltlab.sample_best_of_n(lg, rw, log_n=log_n, size=DRAW_MAX, rng=31)
    for k, model in enumerate(names):
        law = np.exp(tiltlab.best_of_n(models[model][0], models[model][1],
                                       log_n=log_n).log_probs)
        got = draws[k * rows:(k + 1) * rows]
        counts = np.bincount(got.ravel(), minlength=len(law))
        assert counts[law == 0].sum() == 0, model
        if np.count_nonzero(law * got.size >= 20) > 1:
            assert chi2_pvalue(counts, law) > 1e-4, model
        else:  # the law sits on one outcome (to < 20 / 10^6)
            assert counts.max() >= got.size - 100, model


def test_few_draws_prefix_size_none_and_float32():
    lg, rw = _few_models()["ties"]
    batch = np.stack([lg, lg[::-1], lg * 2])
    full = tiltlab.sample_best_of_n(batch, rw, n=7, size=DRAW_MAX, rng=3)
    assert_array_equal(tiltlab.sample_best_of_n(batch, rw, n=7, size=5, rng=3), full[:, :5])
    assert_array_equal(tiltlab.sample_best_of_n(batch, rw, n=7, rng=3), full[:, 0])
    # float32 input: the draws of its float64 values
    b32, r32 = batch.astype(np.float32), rw.astype(np.float32)
    assert_array_equal(tiltlab.sample_best_of_n(b32, r32, n=7, size=DRAW_MAX, rng=3),
                       tiltlab.sample_best_of_n(b32.astype(np.float64), r32.astype(np.float64),
                                                n=7, size=DRAW_MAX, rng=3))
    # the small-call path and the general one (a non-contiguous view) agree
    assert_array_equal(tiltlab.sample_best_of_n(np.asfortranarray(batch), rw, n=7,
                                                size=DRAW_MAX, rng=3), full)


def test_rows_beyond_the_weights_range_keep_the_alias_table():
    """log N > 600 and logits spanning > 708 nats: word d through the alias table (the
    first draws of a longer run); the other rows of the batch take the one-pass path."""
    models = _few_models()
    lg_w, rw_w = models["wide"]
    lg_t, rw_t = models["ties"]
    batch_l, batch_r = np.stack([lg_w, lg_t]), np.stack([rw_w, rw_t])
    few = tiltlab.sample_best_of_n(batch_l, batch_r, log_n=1000.0, size=DRAW_MAX, rng=12)
    many = tiltlab.sample_best_of_n(batch_l, batch_r, log_n=1000.0, size=DRAW_MAX + 1, rng=12)
    assert_array_equal(few[0], many[0, :DRAW_MAX])
    fl, *table = _bestofn.sampler_table(lg_w, rw_w, 1000.0)
    seeds = _common.stream_seeds(12, 2)
    assert_array_equal(few[0], _table_draws(table, _words(seeds[0], 0, DRAW_MAX)))
    assert_array_equal(few[1], _rule_draws(lg_t, rw_t, 1000.0, _words(seeds[1], 0, 2 * DRAW_MAX)))
    # at log N <= 600 the wide row takes the one-pass path (its flushed outcome weighs
    # < e^-86 under pi_N)
    few600 = tiltlab.sample_best_of_n(lg_w, rw_w, log_n=600.0, size=DRAW_MAX, rng=12)
    assert_array_equal(few600, _rule_draws(lg_w, rw_w, 600.0, _words(seeds[0], 0, 2 * DRAW_MAX)))


def test_few_draws_identical_for_any_thread_count_and_variant():
    """A batch over the threading threshold mixing every model and N: bitwise the same
    draws on 1, 2 and 3 threads and on every SIMD variant."""
    models = _few_models(v=1500)
    lg = np.stack([m[0] for m in models.values()] * 12)
    rw = np.stack([m[1] for m in models.values()] * 12)
    log_n = np.repeat([0.0, np.log(16.0), np.log(1e6), 1000.0], len(lg) // 4)
    ref_draws = None
    for v in simd.available():
        with simd.use(v):
            for nt in (1, 2, 3):
                got = tiltlab.sample_best_of_n(lg, rw, log_n=log_n, size=DRAW_MAX, rng=5,
                                               n_threads=nt)
                if ref_draws is None:
                    ref_draws = got
                assert_array_equal(got, ref_draws, err_msg=f"{v} {nt} threads")


@pytest.mark.parametrize("shape", [(2,), (300, 2)])  # the small-call and general paths
def test_size_zero_still_checks_the_rows(shape):
    """size 0 draws nothing but reads every row: its errors are those of any other size."""
    logits = np.zeros(shape)
    logits[..., 0] = np.nan
    for f in (lambda: tiltlab.sample_best_of_n(logits, np.ones(shape), 4, size=0, rng=0),
              lambda: tiltlab.simulate_best_of_n(logits, np.ones(shape), 4, size=0, rng=0)):
        with pytest.raises(ValueError, match="NaN"):
            f()
    got = tiltlab.sample_best_of_n(np.zeros(shape), np.ones(shape), 4, size=0, rng=0)
    assert got.shape == shape[:-1] + (0,)
