"""Fuzzed exactness properties of the public API (issue 15), on every SIMD variant the CPU
runs: shift invariance of the logits at offsets up to +-1e300, power-of-two scale
invariance of the rewards (bitwise for the kernels), and no NaN from any public function
on valid input (an input that is NaN is refused, so a NaN result is a bug).

Inputs come from the adversarial strategies of tests/test_fuzz.py (huge, tied and -inf
logits, subnormal to 1e100 rewards, ties, odd lengths, float32, odd memory layouts); the
marker and the profiles (``fuzz-ci`` bounded, ``fuzz-long``) are those of that suite.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_fuzz import (
    FUZZ,
    LAM_SPACE,
    LOG_N_SPACE,
    VARIANTS,
    _flat,
    _rows,
    assert_close,
    params,
    problems,
    quiet,
    relevant_scale,
    shifted,
)

import tiltlab

fuzz = pytest.mark.fuzz
#: the no-NaN test calls one public function per example, some of them slow (policies,
#: sequences): half the profile's examples
FUZZ_HALF = settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))

OFFSETS = st.one_of(
    st.sampled_from([1e5, -1e5, 1e10, 1e15, -1e15, 1e100, -1e100, 1e300, -1e300,
                     8.98846567431158e307]),
    st.integers(20, 1022).map(lambda k: float(2.0**k)),
)


SHIFT_CALLS = ("tilt_stats", "tilt", "cumulants", "kl_max", "solve_lambda", "best_of_n",
               "kl_divergence", "rate_function", "scaled_cgf", "renyi_divergence",
               "policies")


def _call(name, lg, rw, lam, log_n):
    if name == "tilt_stats":
        return np.array(tiltlab.tilt_stats(lg, rw, lam))
    if name == "tilt":
        return tiltlab.tilt(lg, rw, lam)
    if name == "cumulants":
        return tiltlab.cumulants(lg, rw, 4, np.clip(lam, -5.0, 5.0))
    if name == "kl_max":
        return tiltlab.kl_max(lg, rw)
    if name == "solve_lambda":
        top = np.asarray(tiltlab.kl_max(lg, rw))
        try:
            return tiltlab.solve_lambda(lg, rw, np.array([0.3, 0.9])[:, None] * top[None])
        except ValueError as exc:  # a root beyond the double range: the same on both sides
            return str(exc)
    if name == "best_of_n":
        b = tiltlab.best_of_n(lg, rw, log_n=log_n)
        return np.concatenate([np.ravel(b.kl), np.ravel(b.expected_reward),
                               np.ravel(b.win_rate), np.ravel(b.log_probs)])
    if name == "kl_divergence":
        return tiltlab.kl_divergence(lg, lg[..., ::-1])
    if name == "rate_function":
        mid = 0.5 * (np.max(rw) + np.min(rw))
        return tiltlab.rate_function(lg[0], rw[0], [mid, np.max(rw)], np.clip(lam, -9, 9)[0])
    if name == "scaled_cgf":
        return tiltlab.scaled_cgf(lg, rw, 0.3, np.clip(lam, -9, 9))
    if name == "renyi_divergence":
        return tiltlab.renyi_divergence(lg[0], lg[0][::-1], [0.5, 2.0, 1e300])
    law = tiltlab.calibrated_tilt(lg[0], rw[0], 2.0)
    w = tiltlab.worst_of_n(lg[0], rw[0], 3.0)
    return np.concatenate([[law.kl, law.expected_reward, w.kl, w.win_rate], law.log_probs,
                           w.log_probs])


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS, off=OFFSETS, name=st.sampled_from(SHIFT_CALLS))
@quiet
def test_fuzz_shift_invariance(data, variant, off, name):
    """f(x + c) = f((x + c) - max(x + c)) to the conditioning of the differences that carry
    mass (relevant_scale), whatever the offset c (SPEC section 1: the kernels never add the
    size of the logits to anything)."""
    prob = data.draw(problems(max_rows=2, long_rows=False, reward_kinds=(
        "normal", "integer", "binary", "constant", "tiny", "denormal")), label="problem")
    lam = _flat(data.draw(params(LAM_SPACE, prob), label="lam"))
    lam = np.broadcast_to(np.where(np.isfinite(lam), np.clip(lam, -1e5, 1e5), lam),
                          (prob.n_rows,))[:, None][:, 0]
    log_n = _flat(data.draw(params(LOG_N_SPACE, prob), label="log_n"))
    log_n = np.broadcast_to(log_n, (prob.n_rows,)).copy()
    lg, rw = prob.raw, prob.rw
    y = lg + off                 # the doubles passed, and the same doubles shifted by
    y0 = shifted(y)              # their row maximum (exact where the mass is)
    with tiltlab.simd.use(variant), warnings.catch_warnings():
        warnings.simplefilter("error")
        got, want = _call(name, y, rw, lam, log_n), _call(name, y0, rw, lam, log_n)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert not np.isnan(want).any() and not np.isnan(got).any(), (name, got, want)
    scale = np.max(relevant_scale(y0, rw, np.where(np.isfinite(lam), lam, 0.0)))
    assert_close(got, want, rtol=1e-12, atol=1e-12 * scale, what=name)


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS, k=st.integers(-60, 60))
@quiet
def test_fuzz_power_of_two_scale_invariance(data, variant, k):
    """Rewards times 2^k, tilts times 2^-k: the kernels compute the same numbers (the
    moment sums run in units of the reward range, a power of two), so tilt_stats, tilt,
    cumulants (kappa_j times 2^(j k)), kl_max, solve_lambda (lam times 2^-k) and best_of_n
    (an order statistic) agree bitwise wherever nothing over- or underflows."""
    prob = data.draw(problems(max_rows=2, long_rows=False), label="problem")
    lam = _flat(data.draw(params(LAM_SPACE, prob), label="lam"))
    lam = np.broadcast_to(lam, (prob.n_rows,)).copy()
    lg, rw = prob.raw, prob.rw
    rs = np.ldexp(rw, k)
    ls = np.ldexp(lam, -k)
    tiny = np.finfo(float).tiny
    with np.errstate(all="ignore"):
        normal = lambda a: np.all((a == 0) | ((np.abs(a) >= tiny) & np.isfinite(a)))  # noqa: E731
        assume(normal(rw) and normal(rs) and normal(lam[np.isfinite(lam)])
               and normal(ls[np.isfinite(ls)]) and np.all(np.isfinite(ls) == np.isfinite(lam)))
        assume(np.all(np.isfinite(np.abs(lam) * np.max(np.abs(rw))))
               or np.all(np.isinf(lam)))
    with tiltlab.simd.use(variant):
        a, b = tiltlab.tilt_stats(lg, rw, lam), tiltlab.tilt_stats(lg, rs, ls)
        assert_close(b.log_partition, a.log_partition, rtol=2e-16, atol=0, what="Lambda")
        assert_close(b.kl, a.kl, rtol=2e-16, atol=0, what="kl")
        assert_close(b.mean, np.ldexp(a.mean, k), rtol=2e-16, atol=0, what="mean")
        assert_close(b.variance, np.ldexp(a.variance, 2 * k), rtol=2e-16, atol=0, what="var")
        assert_close(tiltlab.tilt(lg, rs, ls), tiltlab.tilt(lg, rw, lam), rtol=2e-16, atol=0,
                     what="tilt")
        fin = np.where(np.isfinite(lam), np.clip(lam, -5, 5), 0.0)
        ca = tiltlab.cumulants(lg, rw, 4, fin)
        cb = tiltlab.cumulants(lg, rs, 4, np.ldexp(fin, -k))
        j = np.arange(1, 5)
        assert_close(cb, np.ldexp(ca, j * k), rtol=2e-16, atol=0, what="cumulants")
        assert_close(tiltlab.kl_max(lg, rs), tiltlab.kl_max(lg, rw), rtol=0, atol=0,
                     what="kl_max")
        top = np.asarray(tiltlab.kl_max(lg, rw))
        budget = 0.4 * top
        try:
            la = tiltlab.solve_lambda(lg, rw, budget)
        except ValueError:
            la = None
        la_k = None if la is None else np.ldexp(la, -k)[np.isfinite(la)]
        if la is not None and np.all((np.abs(la_k) >= tiny) & np.isfinite(la_k)):
            lb = tiltlab.solve_lambda(lg, rs, budget)
            # bitwise, unless the bracketing ran into the ends of the double range (an
            # expansion clamped at DBL_MAX in one problem but not in the other)
            fin = np.concatenate([np.ravel(la)[np.isfinite(np.ravel(la))], la_k])
            inner = np.all((np.abs(fin) < 1e280) & (np.abs(fin) > 1e-280))
            assert_close(lb, np.ldexp(la, -k), rtol=2e-16 if inner else 1e-14, atol=0,
                         what="solve_lambda")
        ba, bb = tiltlab.best_of_n(lg, rw, 4), tiltlab.best_of_n(lg, rs, 4)
        assert_close(bb.kl, ba.kl, rtol=0, atol=0, what="bon kl")
        assert_close(bb.log_probs, ba.log_probs, rtol=0, atol=0, what="bon law")


# ------------------------------------------------------------------ no NaN anywhere


def _no_nan_calls(prob, lam, log_n, rng):
    """name -> a thunk calling one public function on the problem (float outputs)."""
    lg, rw = prob.logits, prob.rewards
    lg1, rw1 = _rows(prob.raw)[0], prob.rw[0]
    top = np.asarray(tiltlab.kl_max(lg, rw))
    lam_f = np.where(np.isfinite(lam), lam, 1.0)
    calls = {
        "tilt_stats": lambda: tiltlab.tilt_stats(lg, rw, lam),
        "tilt": lambda: tiltlab.tilt(lg, rw, lam),
        "cumulants": lambda: tiltlab.cumulants(lg, rw, 3, np.clip(lam, -5, 5)),
        "kl_max": lambda: tiltlab.kl_max(lg, rw),
        "solve_lambda": lambda: tiltlab.solve_lambda(lg, rw, 0.5 * top),
        "frontier": lambda: tiltlab.frontier(lg, rw, 0.3 * top),
        "best_of_n": lambda: (lambda b: (b.kl, b.expected_reward, b.win_rate, b.log_probs,
                                         b.kl_to_tilted(lam_f)))(
            tiltlab.best_of_n(lg, rw, log_n=log_n)),
        "reward_levels": lambda: tiltlab.reward_levels(lg1, rw1),
        "kl_divergence": lambda: tiltlab.kl_divergence(lg, prob.raw[..., ::-1]),
        "logsumexp": lambda: tiltlab.logsumexp(lg),
        "rate_function": lambda: tiltlab.rate_function(
            lg1, rw1, rng.uniform(np.min(rw1) - 1, np.max(rw1) + 1, 3), float(lam_f.flat[0])),
        "scaled_cgf": lambda: tiltlab.scaled_cgf(lg1, rw1, [1e-12, 0.5, -3.0, 1e5],
                                                 float(lam_f.flat[0])),
        "renyi_divergence": lambda: tiltlab.renyi_divergence(
            lg1, lg1[::-1], [0.0, 0.5, 1.0, 2.0, 1e308, np.inf]),
        "renyi_cross_entropy": lambda: tiltlab.renyi_cross_entropy(
            lg1, lg1[::-1], [0.0, 0.5, 1.0, 2.0, 1e308, np.inf]),
        "beirami_kl_estimate": lambda: tiltlab.beirami_kl_estimate(
            rng.choice([1e-300, 1e-9, 0.5, 1.0]), np.exp(min(float(np.ravel(log_n)[0]), 700.0))),
    }
    support = np.isfinite(lg1)
    if lg1.size <= 9 and np.all(rw1[support] == np.round(rw1[support])) and \
            np.ptp(rw1[support]) <= 8:
        calls["Memoryless"] = lambda: _sequence(lg1, rw1, lam_f, log_n)
    calls["kl_estimators"] = lambda: (lambda b: tiltlab.kl_estimators(
        tiltlab.sample_best_of_n(lg1, rw1, 8, size=32, rng=1), b.log_probs,
        tiltlab.tilt(lg1, rw1, 0.0)))(tiltlab.best_of_n(lg1, rw1, 8))
    if lg1.size <= 9:
        calls.update({
            "worst_of_n": lambda: _law(
                tiltlab.worst_of_n(lg1, rw1, log_n=float(np.ravel(log_n)[0])), lam_f),
            "best_of_poisson": lambda: _law(tiltlab.best_of_poisson(lg1, rw1, 2.5), lam_f),
            "rewind_and_repeat": lambda: _law(tiltlab.rewind_and_repeat(lg1, rw1, 0.3),
                                              lam_f),
            "calibrated_tilt": lambda: _law(tiltlab.calibrated_tilt(lg1, rw1, -4.0), lam_f),
            "soft_best_of_n": lambda: _law(tiltlab.soft_best_of_n(lg1, rw1, 3, 2.0), lam_f),
            "policy_frontier": lambda: tiltlab.policy_frontier(
                lg1, rw1, str(rng.choice(["tilted", "best_of_n", "best_of_poisson",
                                          "calibrated_tilt"])), [1.0, 4.0]),
        })
    return calls


def _sequence(lg1, rw1, lam_f, log_n):
    """A memoryless sequence of 16 tokens: its tilt, law, best-of-N and large deviations.
    The lattice law is NaN exactly where no tilt resolves it (documented, with the mask
    ``resolved``): only its resolved values count."""
    m = tiltlab.Memoryless(lg1, rw1, 16)
    lam = float(np.clip(lam_f.flat[0], -50, 50))
    b = m.best_of_n(log_n=float(np.ravel(log_n)[0]))
    law = m.reward_log_pmf(lam)
    return (m.kl_max, m.solve_lambda(0.3 * m.kl_max / 16), tuple(m.tilt_stats(lam)),
            m.cumulants(3, lam), b.kl, b.expected_reward, b.win_rate, b.kl_to_tilted(lam),
            b.log_probs, law.log_pmf[law.resolved], m.rate_function([m.r_min, m.r_max], lam),
            m.scaled_cgf([0.5, -2.0], lam))


def _law(law, lam_f):
    return (law.kl, law.expected_reward, law.win_rate, law.log_probs,
            law.kl_to_tilted(float(lam_f.flat[0])))


def _floats(x):
    """Every float value in a (nested) result."""
    if isinstance(x, (tuple, list)):
        return np.concatenate([_floats(v) for v in x] + [np.zeros(0)])
    if hasattr(x, "_asdict"):
        return _floats(tuple(x))
    a = np.asarray(x)
    return a.astype(float).ravel() if a.dtype.kind == "f" else np.zeros(0)


#: errors that are right answers: a root or a soft-best-of-n temperature outside what
#: double precision can represent, reported with what to do
ALLOWED = ("has no float64 value", "is too small for the reward spread")


NO_NAN_NAMES = ["tilt_stats", "tilt", "cumulants", "kl_max", "solve_lambda", "frontier",
                "best_of_n", "reward_levels", "kl_divergence", "logsumexp", "rate_function",
                "scaled_cgf", "renyi_divergence", "renyi_cross_entropy", "beirami_kl_estimate",
                "worst_of_n", "best_of_poisson", "rewind_and_repeat", "calibrated_tilt",
                "soft_best_of_n", "policy_frontier", "Memoryless", "kl_estimators"]


@fuzz
@FUZZ_HALF
@given(data=st.data(), variant=VARIANTS, name=st.sampled_from(NO_NAN_NAMES))
@quiet
def test_fuzz_no_silent_nan(data, variant, name):
    """No public function returns NaN for valid input (SPEC section 6): every float it
    returns is a number or +-inf, or it raises a ValueError that says why."""
    prob = data.draw(problems(max_rows=2, long_rows=False), label="problem")
    lam = np.broadcast_to(_flat(data.draw(params(LAM_SPACE, prob), label="lam")),
                          (prob.n_rows,)).copy().reshape(prob.batch)
    log_n = np.broadcast_to(_flat(data.draw(params(LOG_N_SPACE, prob), label="log_n")),
                            (prob.n_rows,)).copy()
    calls = _no_nan_calls(prob, lam, log_n.reshape(prob.batch), prob.rng)
    assume(name in calls)
    with tiltlab.simd.use(variant):
        try:
            out = calls[name]()
        except ValueError as exc:
            assert any(s in str(exc) for s in ALLOWED), str(exc)
            return
    vals = _floats(out)
    assert not np.isnan(vals).any(), (name, out)
