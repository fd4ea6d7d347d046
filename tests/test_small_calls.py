"""The fast path of small calls equals the general path, values and errors alike.

tilt_stats, logsumexp, best_of_n and sample_best_of_n recognise small plain arrays
(``_validation.small_pair``: one float64/float32 dtype and shape, 1-d or 2-d, C-contiguous,
fewer than SMALL_WORK elements; scalar lam / N) and run serial drivers without the general
layout work and without an OpenMP region.  Every test here runs the same inputs through
both paths (the general one by switching the fast path off) and asks for bitwise equal
results and identical exceptions; the inputs at the boundary of the fast path (strided,
broadcast, 0-d parameters, masked arrays, lists, integer arrays) must give what their plain
contiguous equivalents give.  The samplers' bit generators (C, csrc/tl_rng.c) are checked
against NumPy's SeedSequence and PCG64 state for state and draw for draw.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tiltlab
from tiltlab import _bestofn, _common
from tiltlab import _validation as V
from tiltlab import bestofn as B


@contextlib.contextmanager
def general_path(monkeypatch):
    """Switch the fast path off: small_pair declines every input."""
    with monkeypatch.context() as m:
        m.setattr(V, "small_pair", lambda first, second: None)
        yield


def both(monkeypatch, call):
    """(fast, general) results of call(), or the exceptions they raise."""
    def run():
        try:
            return call()
        except (ValueError, TypeError, MemoryError) as exc:
            return exc
    fast = run()
    with general_path(monkeypatch):
        general = run()
    return fast, general


def assert_same(fast, general):
    """Bitwise equal values of equal types and shapes, or the same exception."""
    if isinstance(general, BaseException):
        assert type(fast) is type(general), (fast, general)
        assert str(fast) == str(general)
        return
    assert not isinstance(fast, BaseException), fast
    if isinstance(general, tuple):
        assert type(fast) is type(general)
        for a, b in zip(fast, general, strict=True):
            assert_same(a, b)
        return
    assert type(fast) is type(general), (type(fast), type(general))
    if isinstance(general, np.ndarray):
        assert fast.shape == general.shape and fast.dtype == general.dtype
        assert fast.flags.writeable == general.flags.writeable
    assert_array_equal(fast, general)
    assert np.array_equal(np.signbit(fast), np.signbit(general))


def _model(rng, shape, dtype=np.float64, holes=True, scale=1.0, offset=0.0):
    logits = rng.normal(size=shape) * 3 + offset
    if holes:
        logits[rng.random(shape) < 0.2] = -np.inf
        logits[..., 0] = rng.normal(size=shape[:-1]) + offset  # one finite logit per row
    rewards = np.round(rng.normal(size=shape) * scale, 1)
    return logits.astype(dtype), rewards.astype(dtype)


SHAPES = [(1,), (2,), (8,), (257,), (3000,), (20_000,), (1, 8), (5, 33), (16, 1000)]
LAMS = [0.0, 1e-9, -1e-9, 0.7, -3.0, 50.0, 2, 1e5, 1e300, np.float64(1.5)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tilt_stats_fast_equals_general(monkeypatch, shape, dtype):
    rng = np.random.default_rng(hash(shape) % 2**32)
    logits, rewards = _model(rng, shape, dtype)
    assert V.small_pair(logits, rewards) is not None
    for lam in LAMS:
        assert_same(*both(monkeypatch, lambda lam=lam: tiltlab.tilt_stats(logits, rewards,
                                                                         lam)))
    # offsets and reward scales at the edges of the double range
    for offset, scale in ((1e300, 1.0), (-1e3, 1e-300), (0.0, 1e300)):
        lg, rw = _model(rng, shape, np.float64, offset=offset, scale=scale)
        assert_same(*both(monkeypatch, lambda lg=lg, rw=rw: tiltlab.tilt_stats(lg, rw, 0.3)))


@pytest.mark.parametrize("shape", [(8,), (3, 8), (20_000,)], ids=str)
def test_tilt_stats_fast_errors_equal_general(monkeypatch, shape):
    rng = np.random.default_rng(1)
    logits, rewards = _model(rng, shape, holes=False)
    cases = []
    for value, where in ((np.nan, "logits"), (np.inf, "logits"), (np.nan, "rewards"),
                         (np.inf, "rewards"), (-np.inf, "rewards")):
        lg, rw = logits.copy(), rewards.copy()
        (lg if where == "logits" else rw).reshape(-1)[-1] = value
        cases.append((lg, rw))
    lg = logits.copy()
    lg.reshape(-1, shape[-1])[-1] = -np.inf  # an empty row
    cases.append((lg, rewards))
    rw = rewards.copy()
    rw.reshape(-1)[:2] = (-1e308, 1e308)  # differences overflow
    cases.append((logits, rw))
    rw = rewards.copy()
    rw.reshape(-1)[0] = np.inf  # a bad reward where the logit is -inf
    lg = logits.copy()
    lg.reshape(-1)[0] = -np.inf
    cases.append((lg, rw))
    for lg, rw in cases:
        fast, general = both(monkeypatch, lambda lg=lg, rw=rw: tiltlab.tilt_stats(lg, rw, 0.5))
        assert isinstance(general, ValueError)
        assert_same(fast, general)
    # n_threads is checked on the fast path too
    for nt, exc in ((0, ValueError), (1.5, TypeError), (True, TypeError), (10**9, ValueError)):
        fast, general = both(monkeypatch, lambda nt=nt: tiltlab.tilt_stats(logits, rewards, 0.5,
                                                                          n_threads=nt))
        assert isinstance(general, exc)
        assert_same(fast, general)


def test_boundary_inputs_take_the_general_path_with_the_same_results():
    rng = np.random.default_rng(2)
    logits, rewards = _model(rng, (4, 16))
    want = tiltlab.tilt_stats(logits, rewards, 0.8)
    one = tiltlab.tilt_stats(logits[1], rewards[1], 0.8)
    big = np.zeros((4, 32))
    big[:, ::2], wide_r = logits, np.zeros((4, 32))
    wide_r[:, ::2] = rewards
    fortran_l, fortran_r = np.asfortranarray(logits), np.asfortranarray(rewards)
    lam32 = np.float32(0.8)
    boundary = {  # name: (logits, rewards, lam, the plain contiguous call it equals)
        "strided": (big[:, ::2], wide_r[:, ::2], 0.8, want),
        "fortran": (fortran_l, fortran_r, 0.8, want),
        "0-d lam": (logits, rewards, np.array(0.8), want),
        "lam per row": (logits, rewards, np.full(4, 0.8), want),
        "float32 lam": (logits, rewards, lam32, tiltlab.tilt_stats(logits, rewards,
                                                                   float(lam32))),
        "masked, nothing masked": (np.ma.masked_array(logits), rewards, 0.8, want),
        "big-endian": (logits.astype(">f8"), rewards.astype(">f8"), 0.8, want),
        "3-d": (logits[None], rewards[None], 0.8, want),
    }
    for name, (lg, rw, lam, plain) in boundary.items():
        assert V.small_pair(lg, rw) is None or V.small_scalar(lam) is None, name
        got = tiltlab.tilt_stats(lg, rw, lam)
        for a, b in zip(got, plain, strict=True):
            assert_array_equal(np.reshape(a, np.shape(b)), b, err_msg=name)
    # broadcasting and lists: each row against the plain row
    bl = np.broadcast_to(logits[1], (3, 16))
    assert V.small_pair(bl, np.broadcast_to(rewards[1], (3, 16))) is None
    r32 = rewards[1].astype(np.float32)
    for lg, rw, plain in ((bl, rewards[1], one), (list(logits[1]), list(rewards[1]), one),
                          (logits[1], r32, tiltlab.tilt_stats(logits[1], r32.astype(float),
                                                              0.8))):
        got = tiltlab.tilt_stats(lg, rw, 0.8)
        for a, b in zip(got, plain, strict=True):
            assert_array_equal(np.reshape(a, -1)[-1], b)
    # integer arrays (read as float64) and int lam equal their float64 forms
    il, ir = np.arange(8) % 3, np.arange(8) % 5
    assert V.small_pair(il, ir) is None
    assert_same(tiltlab.tilt_stats(il, ir, 2), tiltlab.tilt_stats(il.astype(float),
                                                                   ir.astype(float), 2.0))
    # masked logits are impossible outcomes: the same as -inf on the fast path
    ml = np.ma.masked_array(logits[1], mask=np.arange(16) % 4 == 1)
    assert_same(tiltlab.tilt_stats(ml, rewards[1], 0.8),
                tiltlab.tilt_stats(ml.filled(-np.inf), rewards[1], 0.8))
    # lam = +-inf and NaN are decided by the general path
    for lam in (np.inf, -np.inf, np.nan, 2**60, 1 << 200):
        assert V.small_scalar(lam) is None


def test_small_pair_accepts_only_the_common_case():
    x = np.zeros(8)
    assert V.small_pair(x, x) == (1, 8)
    assert V.small_pair(np.zeros((3, 8), np.float32), np.zeros((3, 8), np.float32)) == (3, 8)
    assert V.small_pair(np.zeros(V.SMALL_WORK - 1), np.zeros(V.SMALL_WORK - 1)) is not None
    declined = [
        (np.zeros(V.SMALL_WORK), np.zeros(V.SMALL_WORK)),      # large work
        (np.zeros(8), np.zeros(8, np.float32)),                 # mixed dtypes
        (np.zeros(8), np.zeros(9)),                             # shapes differ
        (np.zeros((2, 4)), np.zeros(4)),                        # broadcasting
        (np.zeros(0), np.zeros(0)), (np.zeros((0, 4)), np.zeros((0, 4))),
        (np.zeros(()), np.zeros(())), (np.zeros((1, 1, 4)), np.zeros((1, 1, 4))),
        (np.zeros(16)[::2], np.zeros(8)),                       # strided
        (np.zeros(8, np.int64), np.zeros(8, np.int64)),
        (np.zeros(8, np.float16), np.zeros(8, np.float16)),
        (np.zeros(8, ">f8"), np.zeros(8, ">f8")),
        (np.ma.zeros(8), np.zeros(8)), ([0.0] * 8, np.zeros(8)),
        (np.frombuffer(bytes(72), np.float64, 8, 1), np.zeros(8)),  # misaligned
    ]
    for a, b in declined:
        assert V.small_pair(a, b) is None and V.small_pair(b, a) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1,), (8,), (3, 8), (20_000,), (2, 17_000)], ids=str)
def test_logsumexp_fast_equals_general(monkeypatch, shape, dtype):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 20).astype(dtype)
    x[rng.random(shape) < 0.1] = -np.inf
    cases = [x, np.full(shape, -np.inf, dtype), x + dtype(1e30)]
    for value in (np.nan, np.inf):
        y = x.copy()
        y.reshape(-1)[-1] = value
        cases.append(y)
    for a in cases:
        assert_same(*both(monkeypatch, lambda a=a: tiltlab.logsumexp(a, axis=-1)))
        assert_same(*both(monkeypatch, lambda a=a: tiltlab.logsumexp(a, axis=a.ndim - 1)))
        assert_array_equal(tiltlab.logsumexp(a, axis=-1),
                           tiltlab.logsumexp(a, axis=-1, keepdims=True).reshape(a.shape[:-1]))
    for nt, exc in ((0, ValueError), ("2", TypeError)):
        fast, general = both(monkeypatch, lambda nt=nt: tiltlab.logsumexp(x, axis=-1, n_threads=nt))
        assert isinstance(general, exc)
        assert_same(fast, general)
    # axis given as a bool or a NumPy integer: the general path decides
    fast, general = both(monkeypatch, lambda: tiltlab.logsumexp(x, axis=True))
    assert_same(fast, general)
    assert_same(tiltlab.logsumexp(x, axis=np.int64(-1)), tiltlab.logsumexp(x, axis=-1))


def _bon_fields(b):
    return (b.kl, b.expected_reward, b.win_rate, b.kl_bound, b.win_rate_bound, b.log_n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1,), (8,), (300,), (4, 50), (2, 10_000)], ids=str)
def test_best_of_n_fast_equals_general(monkeypatch, shape, dtype):
    rng = np.random.default_rng(4)
    logits, rewards = _model(rng, shape, dtype)
    for kw in (dict(n=4), dict(n=1), dict(n=2.5), dict(n=np.float64(1e6)), dict(n=7),
               dict(log_n=0.0), dict(log_n=1e5), dict(log_n=3)):
        fast, general = both(monkeypatch, lambda kw=kw: B.best_of_n(logits, rewards, **kw))
        assert_same(_bon_fields(fast), _bon_fields(general))
        assert fast._rows.owned and not any(np.may_share_memory(fast._rows.first, a)
                                            for a in (logits, rewards))
        assert_same(fast.log_probs, general.log_probs)
        assert_same(fast.kl_to_tilted(0.3), general.kl_to_tilted(0.3))
        assert_same(fast.kl_to_tilted(np.inf), general.kl_to_tilted(np.inf))
        assert_same(fast.sample(5, rng=1), general.sample(5, rng=1))
        for name in ("first", "second", "first_off", "second_off"):
            assert_same(getattr(fast._rows, name), getattr(general._rows, name))
        assert_same(fast._rows.params["log_n"], general._rows.params["log_n"])
        for a, b in zip(fast._rows.originals, general._rows.originals, strict=True):
            assert_same(a, b)
        assert fast._rows.batch_shape == general._rows.batch_shape
    # the result keeps its own copy: changing the caller's arrays changes nothing
    lg = logits.copy()
    b = B.best_of_n(lg, rewards, 4)
    want = b.log_probs.copy()
    lg[...] = 0
    b.__dict__.pop("log_probs")
    assert_array_equal(b.log_probs, want)


def test_best_of_n_fast_errors_equal_general(monkeypatch):
    rng = np.random.default_rng(5)
    logits, rewards = _model(rng, (8,), holes=False)
    bad_l, bad_r = logits.copy(), rewards.copy()
    bad_l[3], bad_r[5] = np.nan, np.inf
    calls = [
        lambda: B.best_of_n(bad_l, rewards, 4),
        lambda: B.best_of_n(logits, bad_r, 4),
        lambda: B.best_of_n(np.full(8, -np.inf), rewards, 4),
        lambda: B.best_of_n(logits, rewards, 0.5),
        lambda: B.best_of_n(logits, rewards, log_n=-1.0),
        lambda: B.best_of_n(logits, rewards, 4, log_n=1.0),
        lambda: B.best_of_n(logits, rewards),
        lambda: B.best_of_n(logits, rewards, np.nan),
        lambda: B.best_of_n(logits, rewards, 4, n_threads=0),
        lambda: B.sample_best_of_n(bad_l, rewards, 4, size=3, rng=0),
        lambda: B.sample_best_of_n(logits, bad_r, 4, rng=0),
        lambda: B.sample_best_of_n(logits, rewards, 0.5, size=3),
        lambda: B.sample_best_of_n(logits, rewards, 4, size=-1),
        lambda: B.sample_best_of_n(logits, rewards, 4, size=True),
        lambda: B.sample_best_of_n(logits, rewards, 4, size=3, rng=-1),
        lambda: B.sample_best_of_n(logits, rewards, 4, size=3, rng="seed"),
        lambda: B.sample_best_of_n(logits, rewards, 4, size=3, n_threads=1.5),
    ]
    for call in calls:
        fast, general = both(monkeypatch, call)
        assert isinstance(general, (ValueError, TypeError)), general
        assert_same(fast, general)
    # no draws: no kernel runs, so bad values are not looked at (as on the general path)
    assert_same(*both(monkeypatch, lambda: B.sample_best_of_n(bad_l, rewards, 4, size=0)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1,), (8,), (5, 40), (3000,)], ids=str)
def test_sample_best_of_n_fast_equals_general(monkeypatch, shape, dtype):
    rng = np.random.default_rng(6)
    logits, rewards = _model(rng, shape, dtype)
    for size in (None, 0, 1, 16, B.SAMPLE_BLOCK, B.SAMPLE_BLOCK + 1):
        for seed in (12345, 2**64 + 7):
            for kw in (dict(n=4), dict(log_n=30.0), dict(n=1)):
                fast, general = both(monkeypatch, lambda kw=kw, size=size, seed=seed:
                                     B.sample_best_of_n(logits, rewards, size=size, rng=seed,
                                                        **kw))
                assert_same(fast, general)
    # a Generator is advanced the same way by both paths
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    a = B.sample_best_of_n(logits, rewards, 4, size=16, rng=g1)
    with general_path(monkeypatch):
        b = B.sample_best_of_n(logits, rewards, 4, size=16, rng=g2)
    assert_same(a, b)
    assert g1.bit_generator.state == g2.bit_generator.state


def _numpy_generators(rng, count):
    """The derivation of the samplers' bit generators with NumPy's own objects."""
    gen = np.random.default_rng(rng)
    entropy = [int(x) for x in gen.integers(0, 2**63, size=4, dtype=np.int64)]
    return [np.random.PCG64(c) for c in np.random.SeedSequence(entropy).spawn(count)]


def _same_state(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    return bool(np.array_equal(a, b))


SEEDS = [0, 1, 7, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, 2**100 + 3, 2**128 - 1]


def test_bit_generators_equal_numpys_derivation():
    def rngs():
        for s in SEEDS:
            yield s, s
        for s in range(20):
            yield np.random.default_rng(s), np.random.default_rng(s)
        for make in (np.random.MT19937, np.random.Philox, np.random.SFC64,
                     np.random.PCG64DXSM):
            yield np.random.Generator(make(5)), np.random.Generator(make(5))
        yield np.random.SeedSequence(5), np.random.SeedSequence(5)
        yield np.random.PCG64(3), np.random.PCG64(3)
        yield [1, 2, 3], [1, 2, 3]
        yield np.int64(11), np.int64(11)
    for r1, r2 in rngs():
        for count in (1, 3):
            mine = _common.generators(r1, count)
            want = _numpy_generators(r2, count)
            assert [g.state for g in mine] == [g.state for g in want], r2
            if isinstance(r2, np.random.Generator):  # the caller's generator moved alike
                assert _same_state(r1.bit_generator.state, r2.bit_generator.state)
    for s in SEEDS:
        assert _bestofn.seed_entropy(s) == tuple(
            int(x) for x in np.random.default_rng(s).integers(0, 2**63, size=4,
                                                             dtype=np.int64))
    with pytest.raises(ValueError):
        _common.generators(-1, 1)  # NumPy's own error for a negative seed


def test_bit_generator_draws_equal_numpys_pcg64():
    rng = np.random.default_rng(8)
    for _ in range(20):
        words = [int(w) for w in rng.integers(0, 2**64, size=4, dtype=np.uint64)]
        words[rng.integers(4)] = 0
        ss = np.random.SeedSequence(words)
        mine = _bestofn.pcg64_from_state(ss.generate_state(4, np.uint64))
        want = np.random.PCG64(ss)
        assert mine.state == want.state
        for kind in ("uint64", "uint32", "double", "uint32", "raw", "uint32", "uint32",
                     "uint64"):
            n = int(rng.integers(1, 9))
            assert_array_equal(_bestofn.bitgen_draws(mine, n, kind),
                               _bestofn.bitgen_draws(want, n, kind), err_msg=kind)
            assert mine.state == want.state
    # children of a spawn, state and draws
    entropy = [int(x) for x in rng.integers(0, 2**63, size=4)]
    entropy[1] = 5  # a value of one 32-bit word
    for mine, ss in zip(_bestofn.pcg64_children(entropy, 70),
                        np.random.SeedSequence(entropy).spawn(70), strict=True):
        want = np.random.PCG64(ss)
        assert mine.state == want.state
        assert_array_equal(_bestofn.bitgen_draws(mine, 5, "uint64"),
                           _bestofn.bitgen_draws(want, 5, "uint64"))


def test_fresh_entropy_without_a_seed():
    a, b = _common.entropy(None), _common.entropy(None)
    assert len(a) == 4 and all(0 <= v < 2**63 for v in a + b)
    assert a != b


@pytest.mark.parametrize("seed", [0, 1, 5, 2**32 - 1, 2**32, 2**64 + 3, 2**127 + 11])
@pytest.mark.parametrize("count", [1, 3])
def test_stream_seeds_of_int_seeds_match_numpy(seed, count):
    """The samplers' stream seeds of an int seed, computed in C, equal the documented NumPy
    derivation (128 bits of PCG64(SeedSequence(seed)), hashed by a SeedSequence)."""
    raw = np.random.PCG64(np.random.SeedSequence(seed)).random_raw(2)
    entropy = (int(raw[0]) << 64) | int(raw[1])
    want = np.random.SeedSequence(entropy).generate_state(4 * count, np.uint64)
    got = _common.stream_seeds(seed, count)
    assert got.dtype == np.uint64 and got.shape == (count, 4)
    assert_array_equal(got.reshape(-1), want)
    # and the general path (a Generator) gives the same as default_rng(seed)
    assert_array_equal(_common.stream_seeds(np.random.default_rng(seed), count), got)
