"""Arrays that result objects keep are read-only, and objects own what they keep (issue 15,
item 11; SPEC section 1).

Every array a result object holds and hands out again (dataclass fields returned as they are,
``cached_property`` values such as ``BestOfN.log_probs``) is read-only: ``obj.attr[0] = 5``
raises ValueError and the object reports the same values afterwards.  Objects that keep the
caller's inputs (BestOfN, PolicyLaw, Memoryless, Model) keep their own copy, so changing the
caller's array later changes nothing they report (before the fix BestOfN computed its lazy
``log_probs`` and ``sample`` from the caller's array as it was at that moment).  The caller's
own arrays are never made read-only.  NamedTuple results (TiltStats, RewardLevels,
LatticeLaw, Frontier) are built afresh by each call and shared with nothing: they stay
writable.
"""

from __future__ import annotations

import numpy as np
import pytest

import tiltlab
from tiltlab.app.models import Model

L = np.log([0.4, 0.3, 0.2, 0.1])
R = np.array([0.0, 1.0, 3.0, 2.0])


def _snapshot(obj, attrs):
    return {a: np.array(getattr(obj, a), copy=True) for a in attrs}


def _assert_read_only(obj, attrs):
    """Writing into each attribute raises, and every attribute keeps its value."""
    before = _snapshot(obj, attrs)
    for a in attrs:
        arr = getattr(obj, a)
        assert isinstance(arr, np.ndarray), f"{a} is not an array"
        with pytest.raises(ValueError, match="read-only"):
            arr[(0,) * arr.ndim] = 5.0
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0.0
        if arr.ndim:
            with pytest.raises(ValueError, match="read-only"):
                arr[:1][...] = 5.0    # views inherit it
    for a in attrs:
        np.testing.assert_array_equal(getattr(obj, a), before[a], err_msg=a)


def _bon_results(b):
    return (np.array(b.log_probs), np.array(b.kl_to_tilted(0.5)), b.sample(16, rng=3),
            np.array(b.kl), np.array(b.log_n))


def _same(x, y):
    for u, v in zip(x, y, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


BON_FIELDS = ("kl", "expected_reward", "win_rate", "kl_bound", "win_rate_bound", "log_n",
              "log_probs")


def test_best_of_n_arrays_are_read_only():
    b = tiltlab.best_of_n(np.stack([L, L[::-1]]), R, n=[2.0, 8.0])
    want = _bon_results(b)
    _assert_read_only(b, BON_FIELDS)
    _same(_bon_results(b), want)   # log_n feeds sample(), kl / expected_reward kl_to_tilted


def test_best_of_n_single_row_log_probs_read_only():
    b = tiltlab.best_of_n(L, R, n=4)
    _assert_read_only(b, ("log_probs",))


def test_best_of_n_keeps_its_own_copy_of_the_inputs():
    lg, rw = L.copy(), R.copy()
    b = tiltlab.best_of_n(lg, rw, n=4)
    want = _bon_results(tiltlab.best_of_n(L, R, n=4))
    lg[:] = [0.0, -50.0, 0.0, 3.0]          # the caller reuses its buffers
    rw[:] = [9.0, -1.0, 0.0, 0.0]
    _same(_bon_results(b), want)            # log_probs is computed only now
    assert lg.flags.writeable and rw.flags.writeable   # the caller's arrays stay writable


def test_best_of_n_keeps_its_own_copy_of_log_n():
    lg, ln = np.stack([L, L[::-1]]), np.array([1.0, 2.5])
    b = tiltlab.best_of_n(lg, R, log_n=ln)
    want = _bon_results(tiltlab.best_of_n(lg, R, log_n=[1.0, 2.5]))
    ln[:] = 0.0                             # log_probs (lazy) and sample() read log N
    _same(_bon_results(b), want)


POLICIES = {
    "worst_of_n": lambda lg, rw: tiltlab.worst_of_n(lg, rw, n=3),
    "soft_best_of_n": lambda lg, rw: tiltlab.soft_best_of_n(lg, rw, n=3, temperature=0.7),
    "best_of_poisson": lambda lg, rw: tiltlab.best_of_poisson(lg, rw, mu=2.0),
    "rewind_and_repeat": lambda lg, rw: tiltlab.rewind_and_repeat(lg, rw, eps=0.3),
    "calibrated_tilt": lambda lg, rw: tiltlab.calibrated_tilt(lg, rw, c=2.0),
}


def _law_results(p):
    return (np.array(p.log_probs), np.array(p.kl_to_tilted(0.5)), p.sample(16, rng=3),
            np.array(p.level_values), np.array(p.level_log_weights))


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_policy_law_arrays_are_read_only(method):
    p = POLICIES[method](L, R)
    want = _law_results(p)
    _assert_read_only(p, ("level_values", "level_log_weights", "log_probs"))
    _same(_law_results(p), want)


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_policy_law_keeps_its_own_copy_of_the_inputs(method):
    lg, rw = L.copy(), R.copy()
    p = POLICIES[method](lg, rw)
    want = _law_results(POLICIES[method](L, R))
    lg[:] = [0.0, -50.0, 0.0, 3.0]
    rw[:] = [9.0, -1.0, 0.0, 0.0]
    _same(_law_results(p), want)
    assert lg.flags.writeable and rw.flags.writeable


def _seq_results(m):
    b = m.best_of_n(n=4)
    return (np.array(m.tilt_stats(0.5)), m.solve_lambda(0.1), m.cumulants(3, 0.2),
            m.scaled_cgf(0.3), m.rate_function(1.2), b.log_probs, b.kl_to_tilted(0.3),
            m.reward_log_pmf(0.2).log_pmf, b.sample(4, rng=1))


@pytest.mark.parametrize("rows", [1, 3])
def test_memoryless_keeps_its_own_copy_of_the_inputs(rows):
    base = L if rows == 1 else np.stack([L, L[::-1], L])
    lg, rw = base.copy(), R.copy()
    m = tiltlab.Memoryless(lg, rw, 3)
    want = _seq_results(tiltlab.Memoryless(base, R, 3))
    lg[...] = 0.0
    rw[...] = 7.0
    _same(_seq_results(m), want)
    assert lg.flags.writeable and rw.flags.writeable


def test_sequence_best_of_n_arrays_are_read_only():
    b = tiltlab.Memoryless(L, R, 6).best_of_n(n=16)
    want = (b.kl_to_tilted([0.3, np.inf]), b.sample_rewards(8, rng=2), b.sample(2, rng=2))
    _assert_read_only(b, ("values", "log_probs"))
    _same((b.kl_to_tilted([0.3, np.inf]), b.sample_rewards(8, rng=2), b.sample(2, rng=2)),
          want)


def test_model_arrays_are_read_only_and_owned():
    m = tiltlab.load_model("ternary")
    _assert_read_only(m, ("logits", "rewards"))
    with pytest.raises(ValueError, match="read-only"):
        m.names[0] = "z"
    lg, rw, names = L.copy(), R.copy(), np.array(list("abcd"))
    u = Model("u", lg, rw, names, "a user model")
    lg[:] = 0.0
    rw[:] = 5.0
    names[0] = "z"
    np.testing.assert_array_equal(u.logits, L)
    np.testing.assert_array_equal(u.rewards, R)
    assert u.names.tolist() == list("abcd")
    _assert_read_only(u, ("logits", "rewards"))
    assert lg.flags.writeable and names.flags.writeable
    # the loaders' caches stay intact whatever is done to a model
    assert tiltlab.load_model("ternary").rewards.tolist() == [0.0, 1.0, 3.0]


def test_estimator_study_arrays_are_read_only():
    s = tiltlab.estimator_study(tiltlab.best_of_n(L, R, n=4), 50, 3, rng=0)
    table = s.table()
    _assert_read_only(s, ("mean", "bias", "std", "rmse"))
    assert s.table() == table


def test_fresh_namedtuple_results_stay_writable():
    # built afresh per call and shared with nothing: writing into them is the caller's business
    st = tiltlab.tilt_stats(np.stack([L, L]), R, 0.5)
    st.kl[0] = 1.0
    assert tiltlab.tilt_stats(np.stack([L, L]), R, 0.5).kl[0] != 1.0
    lv = tiltlab.reward_levels(L, R)
    lv.values[0] = 9.0
    assert tiltlab.reward_levels(L, R).values[0] == 0.0
