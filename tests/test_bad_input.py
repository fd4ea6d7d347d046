"""Bad input (SPEC section 6): a clear ValueError / TypeError naming the argument, never a
crash or a silent NaN."""

from __future__ import annotations

import numpy as np
import pytest

import tiltlab

L = np.log([0.5, 0.3, 0.2])
R = np.array([0.0, 1.0, 3.0])


def _cases():
    nan_r = R.copy()
    nan_r[1] = np.nan
    inf_r = R.copy()
    inf_r[2] = np.inf
    hidden = R.copy()
    hidden[0] = np.nan
    l_hidden = L.copy()
    l_hidden[0] = -np.inf
    yield "shape mismatch", lambda: tiltlab.tilt_stats(L, R[:2], 1.0), ValueError, "rewards has 2"
    yield "batch mismatch", lambda: tiltlab.tilt_stats(np.zeros((2, 3)), np.zeros((4, 3)), 1.0), \
        ValueError, "broadcast"
    yield "lam batch mismatch", lambda: tiltlab.tilt_stats(np.zeros((2, 3)), R, [1.0, 2.0, 3.0]), \
        ValueError, "lam shape"
    yield "NaN reward", lambda: tiltlab.tilt_stats(L, nan_r, 1.0), ValueError, \
        "rewards contains NaN at index (1,)"
    yield "inf reward", lambda: tiltlab.tilt_stats(L, inf_r, 1.0), ValueError, \
        "rewards contains +inf at index (2,)"
    yield "NaN reward under -inf logit", lambda: tiltlab.tilt_stats(l_hidden, hidden, 1.0), \
        ValueError, "where the logit is -inf"
    yield "all -inf row", lambda: tiltlab.tilt_stats(np.array([[0.0, 1.0, 2.0], [-np.inf] * 3]),
                                                     R, 1.0), ValueError, \
        "logits row at batch index (1,) is all -inf"
    yield "NaN logit", lambda: tiltlab.tilt_stats(np.array([0.0, np.nan, 1.0]), R, 1.0), \
        ValueError, "logits contains NaN at index (1,)"
    yield "+inf logit", lambda: tiltlab.tilt_stats(np.array([0.0, np.inf, 1.0]), R, 1.0), \
        ValueError, "logits contains +inf"
    yield "NaN lam", lambda: tiltlab.tilt_stats(L, R, np.nan), ValueError, "lam contains NaN"
    yield "NaN lam in array", lambda: tiltlab.tilt(L, R, [1.0, np.nan]), ValueError, \
        "lam contains NaN at index (1,)"
    yield "negative kl", lambda: tiltlab.solve_lambda(L, R, -0.1), ValueError, "kl must be >= 0"
    yield "NaN kl", lambda: tiltlab.frontier(L, R, [0.1, np.nan]), ValueError, "kl contains NaN"
    yield "joint kl not scalar", lambda: tiltlab.solve_lambda(L, R, [0.1, 0.2], joint=True), \
        ValueError, "must be a scalar"
    yield "complex logits", lambda: tiltlab.tilt_stats(L.astype(complex), R, 1.0), TypeError, \
        "logits must be real-valued"
    yield "object rewards", lambda: tiltlab.tilt_stats(L, np.array([1, "a", None], dtype=object),
                                                       1.0), TypeError, "rewards must be an array"
    yield "string lam", lambda: tiltlab.tilt_stats(L, R, "1.0"), TypeError, "lam must be"
    yield "ragged list", lambda: tiltlab.tilt_stats([[0.0, 1.0], [0.0]], [0.0, 1.0], 1.0), \
        ValueError, "logits could not be converted"
    yield "scalar logits", lambda: tiltlab.tilt_stats(0.0, 0.0, 1.0), ValueError, \
        "at least one dimension"
    yield "no outcomes", lambda: tiltlab.tilt_stats(np.zeros(0), np.zeros(0), 1.0), ValueError, \
        "no outcomes"
    yield "order zero", lambda: tiltlab.cumulants(L, R, 0), ValueError, "order must be between"
    yield "order too large", lambda: tiltlab.cumulants(L, R, 33), ValueError, "order must be"
    yield "order float", lambda: tiltlab.cumulants(L, R, 2.5), TypeError, "order must be"
    yield "n_threads zero", lambda: tiltlab.tilt_stats(L, R, 1.0, n_threads=0), ValueError, \
        "n_threads must be >= 1"
    yield "n_threads float", lambda: tiltlab.tilt_stats(L, R, 1.0, n_threads=1.5), TypeError, \
        "n_threads"
    yield "kl_max NaN reward", lambda: tiltlab.kl_max(L, nan_r), ValueError, "rewards contains NaN"
    yield "kl_divergence shapes", lambda: tiltlab.kl_divergence(L, L[:2]), ValueError, \
        "logits_q has 2"
    yield "kl_divergence NaN q", lambda: tiltlab.kl_divergence(L, np.array([0.0, np.nan, 0.0])), \
        ValueError, "logits_q contains NaN"
    yield "kl_divergence empty p", lambda: tiltlab.kl_divergence(np.full(3, -np.inf), L), \
        ValueError, "logits_p row is all -inf"
    yield "kl_divergence empty q", lambda: tiltlab.kl_divergence(L, np.full(3, -np.inf)), \
        ValueError, "logits_q row is all -inf"
    yield "logsumexp complex", lambda: tiltlab.logsumexp(np.ones(3, complex)), TypeError, \
        "a must be real"
    yield "logsumexp bad axis type", lambda: tiltlab.logsumexp(np.ones(3), axis=0.5), TypeError, \
        "axis"
    yield "logsumexp repeated axis", lambda: tiltlab.logsumexp(np.ones((2, 2)), axis=(0, 0)), \
        ValueError, "repeated"
    yield "cumulants NaN logit", lambda: tiltlab.cumulants(np.array([np.nan, 0.0, 0.0]), R, 3), \
        ValueError, "logits contains NaN"
    yield "tilt all -inf", lambda: tiltlab.tilt(np.full(3, -np.inf), R, 1.0), ValueError, \
        "all -inf"
    yield "solve all -inf", lambda: tiltlab.solve_lambda(np.full(3, -np.inf), R, 0.1), ValueError, \
        "all -inf"


CASES = list(_cases())


@pytest.mark.parametrize("name,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_clearly(name, call, exc, match):
    with pytest.raises(exc) as info:
        call()
    assert match in str(info.value), str(info.value)


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_float32_nan_is_reported_too():
    lg = L.astype(np.float32)
    rw = R.astype(np.float32)
    rw[0] = np.nan
    with pytest.raises(ValueError, match="rewards contains NaN at index"):
        tiltlab.tilt_stats(lg, rw, 1.0)


def test_bad_values_in_a_long_row_are_located():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 40_000))
    rewards = rng.normal(size=(2, 40_000))
    rewards[1, 33_333] = np.inf
    with pytest.raises(ValueError, match=r"rewards contains \+inf at index \(1, 33333\)"):
        tiltlab.tilt_stats(logits, rewards, 0.5)
