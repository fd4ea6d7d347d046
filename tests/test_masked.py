"""Masked arrays (``numpy.ma``) are honoured or refused by every public function (issue 15,
item 10; the rule is in SPEC section 1 and in ``tiltlab._validation``):

- a log-probability argument over outcomes (``logits``, ``logits_p``, ``logits_q``, and the
  laws ``log_pi`` / ``log_p`` of :func:`tiltlab.kl_estimators` with samples): a masked outcome
  is impossible, exactly as if its logit were ``-inf``;
- ``rewards``: a masked reward is allowed only where the outcome is impossible (its logit
  masked or ``-inf``, in every row it broadcasts to), and is then ignored; a masked reward of
  a possible outcome is a ValueError naming ``rewards``;
- every other argument (``lam``, ``kl``, ``n``, ``log_n``, ``eps``, grids, ``samples``,
  per-sample log values, ``logsumexp``'s ``a``, a Model's ``names``, ...): a masked element is
  a ValueError naming the argument.

Before the fix every mask was silently dropped: the masked outcomes were used with the values
underneath (here 0.7, a likely outcome, or NaN for rewards), so each test below fails there.
"""

from __future__ import annotations

import numpy as np
import pytest

import tiltlab
from tiltlab.app.models import Model

V = 4
L = np.log([0.4, 0.3, 0.2, 0.1])
R = np.array([0.0, 1.0, 3.0, 2.0])
HIDE = 1                       # the masked outcome
UNDER_LOGIT = 0.7              # the value under a masked logit (a likely outcome if read)
L2 = np.stack([L, L[::-1]])   # a batch of two rows
L3 = np.stack([L, L[::-1], L])  # one row per position of a length-3 sequence

_cache: dict = {}


def _model(key: str):
    """Objects whose methods take the parameters under test (built once)."""
    if key not in _cache:
        if key == "seq":
            _cache[key] = tiltlab.Memoryless(L, R, 5)
        elif key == "seq3":
            _cache[key] = tiltlab.Memoryless(L3, R, 3)
        elif key == "bon":
            _cache[key] = tiltlab.best_of_n(L, R, n=4)
        elif key == "law":
            _cache[key] = tiltlab.best_of_poisson(L, R, mu=2.0)
        elif key == "seqbon":
            _cache[key] = _model("seq").best_of_n(n=4)
    return _cache[key]


def _bon(b):
    return b.kl, b.expected_reward, b.win_rate, b.log_probs, b.kl_to_tilted(0.5)


def _law(p):
    return p.kl, p.expected_reward, p.win_rate, p.level_values, p.log_probs, p.kl_to_tilted(0.5)


def _seq(m):
    return (m.offset, m.step, m.n_lattice, m.tilt_stats(0.5), m.solve_lambda(0.1),
            m.cumulants(3, 0.2), m.best_of_n(n=4).kl, m.best_of_n(n=4).log_probs,
            m.reward_log_pmf().log_pmf, m.scaled_cgf(0.3), m.rate_function(1.0))


def _model_arrays(m):
    return m.logits, m.rewards


# (id, function, keyword arguments, their kinds).  Kinds: "logits" (honoured: masked = -inf),
# "rewards" (honoured where the logit named by `pair` is masked too; refused elsewhere),
# "param" and "refused" (a masked element is a ValueError naming the argument).
CASES = [
    ("tilt_stats", tiltlab.tilt_stats, dict(logits=L, rewards=R, lam=0.7),
     dict(logits="logits", rewards="rewards", lam="param")),
    ("tilt_stats batch", tiltlab.tilt_stats, dict(logits=L2, rewards=R, lam=[0.7, -1.0]),
     dict(logits="logits", lam="param")),
    ("tilt", tiltlab.tilt, dict(logits=L, rewards=R, lam=0.7),
     dict(logits="logits", rewards="rewards", lam="param")),
    ("kl_max", tiltlab.kl_max, dict(logits=L, rewards=R),
     dict(logits="logits", rewards="rewards")),
    ("solve_lambda", tiltlab.solve_lambda, dict(logits=L, rewards=R, kl=0.2),
     dict(logits="logits", rewards="rewards", kl="param")),
    ("solve_lambda joint", lambda **k: tiltlab.solve_lambda(**k, joint=True),
     dict(logits=L3, rewards=R, kl=0.3), dict(logits="logits", kl="param")),
    ("frontier", tiltlab.frontier, dict(logits=L, rewards=R, kl=[0.1, 0.3]),
     dict(logits="logits", rewards="rewards", kl="param")),
    ("cumulants", tiltlab.cumulants, dict(logits=L, rewards=R, order=4, lam=0.3),
     dict(logits="logits", rewards="rewards", lam="param")),
    ("best_of_n", lambda **k: _bon(tiltlab.best_of_n(**k)), dict(logits=L, rewards=R, n=4.0),
     dict(logits="logits", rewards="rewards", n="param")),
    ("best_of_n log_n", lambda **k: _bon(tiltlab.best_of_n(**k)),
     dict(logits=L2, rewards=R, log_n=[1.2, 3.0]), dict(logits="logits", log_n="param")),
    ("BestOfN.kl_to_tilted", lambda lam: _model("bon").kl_to_tilted(lam), dict(lam=0.5),
     dict(lam="param")),
    ("reward_levels", tiltlab.reward_levels, dict(logits=L, rewards=R),
     dict(logits="logits", rewards="rewards")),
    ("sample_best_of_n", lambda **k: tiltlab.sample_best_of_n(**k, size=64, rng=0),
     dict(logits=L, rewards=R, n=4.0), dict(logits="logits", rewards="rewards", n="param")),
    ("sample_best_of_n log_n", lambda **k: tiltlab.sample_best_of_n(**k, size=64, rng=0),
     dict(logits=L, rewards=R, log_n=1.5), dict(log_n="param")),
    ("simulate_best_of_n", lambda **k: tiltlab.simulate_best_of_n(**k, size=64, rng=0),
     dict(logits=L, rewards=R, n=4), dict(logits="logits", rewards="rewards", n="param")),
    ("beirami_kl_estimate", tiltlab.beirami_kl_estimate, dict(eps=[0.1, 0.2], n=8.0),
     dict(eps="param", n="param")),
    ("kl_divergence", tiltlab.kl_divergence, dict(logits_p=L, logits_q=L[::-1].copy()),
     dict(logits_p="logits", logits_q="logits")),
    ("rate_function", tiltlab.rate_function, dict(logits=L, rewards=R, x=1.5, lam=0.2),
     dict(logits="logits", rewards="rewards", x="param", lam="param")),
    ("scaled_cgf", tiltlab.scaled_cgf, dict(logits=L, rewards=R, t=0.5, lam=0.2),
     dict(logits="logits", rewards="rewards", t="param", lam="param")),
    ("renyi_cross_entropy", tiltlab.renyi_cross_entropy,
     dict(logits_p=L, logits_q=L[::-1].copy(), alpha=0.5),
     dict(logits_p="logits", logits_q="logits", alpha="param")),
    ("renyi_divergence", tiltlab.renyi_divergence,
     dict(logits_p=L, logits_q=L[::-1].copy(), alpha=[0.5, 1.0, 2.0]),
     dict(logits_p="logits", logits_q="logits", alpha="param")),
    ("worst_of_n", lambda **k: _law(tiltlab.worst_of_n(**k)), dict(logits=L, rewards=R, n=3.0),
     dict(logits="logits", rewards="rewards", n="param")),
    ("worst_of_n log_n", lambda **k: _law(tiltlab.worst_of_n(**k)),
     dict(logits=L, rewards=R, log_n=1.0), dict(log_n="param")),
    ("soft_best_of_n", lambda **k: _law(tiltlab.soft_best_of_n(**k)),
     dict(logits=L, rewards=R, n=3.0, temperature=0.5),
     dict(logits="logits", rewards="rewards", n="param", temperature="param")),
    ("best_of_poisson", lambda **k: _law(tiltlab.best_of_poisson(**k)),
     dict(logits=L, rewards=R, mu=2.0), dict(logits="logits", rewards="rewards", mu="param")),
    ("rewind_and_repeat", lambda **k: _law(tiltlab.rewind_and_repeat(**k)),
     dict(logits=L, rewards=R, eps=0.3), dict(logits="logits", rewards="rewards", eps="param")),
    ("calibrated_tilt", lambda **k: _law(tiltlab.calibrated_tilt(**k)),
     dict(logits=L, rewards=R, c=2.0), dict(logits="logits", rewards="rewards", c="param")),
    ("PolicyLaw.kl_to_tilted", lambda lam: _model("law").kl_to_tilted(lam), dict(lam=0.5),
     dict(lam="param")),
    ("policy_frontier", lambda **k: tuple(tiltlab.policy_frontier(method="best_of_n", **k)),
     dict(logits=L, rewards=R, grid=[1.0, 2.0, 4.0]),
     dict(logits="logits", rewards="rewards", grid="param")),
    ("policy_frontier tilted", lambda **k: tuple(tiltlab.policy_frontier(method="tilted", **k)),
     dict(logits=L, rewards=R, grid=[0.0, 1.0]), dict(logits="logits", rewards="rewards")),
    ("policy_frontier soft n=", lambda **k: tuple(tiltlab.policy_frontier(
        L, R, "soft_best_of_n", **k)), dict(grid=[0.5, 1.0], n=3.0), dict(n="param")),
    ("policy_frontier soft temperature=", lambda **k: tuple(tiltlab.policy_frontier(
        L, R, "soft_best_of_n", **k)), dict(grid=[2.0, 3.0], temperature=0.5),
     dict(temperature="param")),
    ("Memoryless", lambda **k: _seq(tiltlab.Memoryless(**k, length=5)),
     dict(logits=L, rewards=R), dict(logits="logits", rewards="rewards")),
    ("Memoryless rows", lambda **k: _seq(tiltlab.Memoryless(**k, length=3)),
     dict(logits=L3, rewards=R), dict(logits="logits")),
    ("Memoryless step=", lambda step: tiltlab.Memoryless(L, R, 5, step=step).step,
     dict(step=1.0), dict(step="param")),
    ("Memoryless.tilt_stats", lambda lam: _model("seq").tilt_stats(lam), dict(lam=0.5),
     dict(lam="param")),
    ("Memoryless.solve_lambda", lambda delta: _model("seq").solve_lambda(delta),
     dict(delta=[0.1, 0.2]), dict(delta="param")),
    ("Memoryless rows.solve_lambda", lambda delta: _model("seq3").solve_lambda(delta),
     dict(delta=0.1), dict(delta="param")),
    ("Memoryless.cumulants", lambda lam: _model("seq3").cumulants(3, lam), dict(lam=0.2),
     dict(lam="param")),
    ("Memoryless.scaled_cumulants", lambda lam: _model("seq").scaled_cumulants(3, lam),
     dict(lam=0.2), dict(lam="param")),
    ("Memoryless.rate_function", lambda **k: _model("seq").rate_function(**k),
     dict(x=1.0, lam=0.1), dict(x="param", lam="param")),
    ("Memoryless rows.rate_function", lambda **k: _model("seq3").rate_function(**k),
     dict(x=1.0, lam=0.1), dict(x="param", lam="param")),
    ("Memoryless.scaled_cgf", lambda **k: _model("seq").scaled_cgf(**k), dict(t=0.3, lam=0.1),
     dict(t="param", lam="param")),
    ("Memoryless rows.scaled_cgf", lambda **k: _model("seq3").scaled_cgf(**k),
     dict(t=0.3, lam=0.1), dict(t="param", lam="param")),
    ("Memoryless.asymptotics", lambda delta: _model("seq").asymptotics(delta), dict(delta=0.1),
     dict(delta="param")),
    ("Memoryless.reward_log_pmf", lambda lam: _model("seq").reward_log_pmf(lam).log_pmf,
     dict(lam=0.1), dict(lam="param")),
    ("Memoryless.best_of_n", lambda **k: _model("seq").best_of_n(**k).kl, dict(n=4.0),
     dict(n="param")),
    ("Memoryless.best_of_n log_n", lambda **k: _model("seq").best_of_n(**k).kl,
     dict(log_n=1.0), dict(log_n="param")),
    ("SequenceBestOfN.kl_to_tilted", lambda lam: _model("seqbon").kl_to_tilted(lam),
     dict(lam=0.5), dict(lam="param")),
    ("kl_estimators laws", lambda **k: tiltlab.kl_estimators(np.array([0, 1, 3, 0, 1]), **k),
     dict(log_pi=L, log_p=L[::-1].copy()), dict(log_pi="logits", log_p="logits")),
    ("kl_estimators samples", tiltlab.kl_estimators,
     dict(samples=np.array([0, 2, 3, 0, 2]), log_pi=L, log_p=L[::-1].copy()),
     dict(samples="refused")),
    ("kl_estimators per sample", lambda **k: tiltlab.kl_estimators(None, **k),
     dict(log_pi=L, log_p=L[::-1].copy()), dict(log_pi="refused", log_p="refused")),
    ("estimator_study lam", lambda lam: tiltlab.estimator_study(
        _model("seq"), 4, 2, rng=0, lam=lam).mean, dict(lam=0.3), dict(lam="param")),
    ("Model", lambda **k: _model_arrays(Model("m", description="d", **k)),
     dict(logits=L, rewards=R, names=np.array(list("abcd"))),
     dict(logits="logits", rewards="rewards", names="refused")),
    ("load_model zipf exponent", lambda exponent: tiltlab.load_model(
        "zipf", vocab=10, exponent=exponent).logits, dict(exponent=1.1),
     dict(exponent="param")),
]

IDS = {c[0]: c for c in CASES}


def _mask_like(value, *, last_only=False) -> np.ndarray:
    """Mask of outcome HIDE on the last axis (in the first row only with last_only)."""
    a = np.asarray(value)
    m = np.zeros(a.shape, dtype=bool)
    if last_only and a.ndim > 1:
        m[(0,) * (a.ndim - 1) + (HIDE,)] = True
    else:
        m[..., HIDE] = True
    return m


def _masked_logits(value):
    """(masked array with UNDER_LOGIT under the mask, the explicit -inf version, the data)."""
    a = np.array(value, dtype=np.float64)
    m = _mask_like(a, last_only=True)
    data = np.where(m, UNDER_LOGIT, a)
    return np.ma.array(data, mask=m), np.where(m, -np.inf, a), data


def _masked_param(value):
    """value as a masked array with one element (the last) masked."""
    a = np.array(value, dtype=np.float64 if np.asarray(value).dtype.kind == "f" else None)
    m = np.zeros(a.shape, dtype=bool)
    m[(-1,) * a.ndim] = True
    return np.ma.array(a, mask=m)


def _plain(x):
    """Results as nested tuples of plain arrays (dataclasses / NamedTuples by their fields)."""
    assert not isinstance(x, np.ma.MaskedArray), "a result is a masked array"
    if hasattr(x, "__dataclass_fields__"):
        return tuple(_plain(getattr(x, f)) for f in x.__dataclass_fields__)
    if isinstance(x, (tuple, list)):
        return tuple(_plain(v) for v in x)
    return x


def _assert_same(a, b):
    a, b = _plain(a), _plain(b)
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, str):
        assert a == b
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _run(fn, kw):
    """fn(**kw), or the ValueError it raises as (type name, message): a masked outcome and a
    -inf logit must also fail alike (e.g. a sample drawn where log_pi is -inf)."""
    try:
        return fn(**kw)
    except ValueError as exc:
        return ("ValueError", str(exc))


def _differs(a, b) -> bool:
    try:
        _assert_same(a, b)
    except AssertionError:
        return True
    return False


def _args_of(kind):
    return [(cid, arg) for cid, _, _, kinds in CASES for arg, k in kinds.items() if k == kind]


def _pair(kinds):
    """The logits argument a rewards argument belongs to."""
    return "logits" if "logits" in kinds else None


@pytest.mark.parametrize("cid,arg", _args_of("logits"), ids=lambda v: str(v))
def test_masked_logits_are_impossible_outcomes(cid, arg):
    _, fn, kw, _ = IDS[cid]
    masked, explicit, data = _masked_logits(kw[arg])
    want = _run(fn, {**kw, arg: explicit})
    # the mask matters here: reading the values under it gives another answer
    assert _differs(_run(fn, {**kw, arg: data}), want)
    _assert_same(_run(fn, {**kw, arg: masked}), want)


@pytest.mark.parametrize("cid,arg", _args_of("rewards"), ids=lambda v: str(v))
def test_masked_rewards_of_masked_outcomes_are_ignored(cid, arg):
    _, fn, kw, kinds = IDS[cid]
    lg_masked, lg_explicit, _ = _masked_logits(kw[_pair(kinds)])
    r = np.array(kw[arg], dtype=np.float64)
    m = _mask_like(r)
    r_masked = np.ma.array(np.where(m, np.nan, r), mask=m)  # masked NaN: never read
    want = fn(**{**kw, _pair(kinds): lg_explicit, arg: np.where(m, 0.0, r)})
    _assert_same(fn(**{**kw, _pair(kinds): lg_masked, arg: r_masked}), want)
    # a masked reward of an outcome that is -inf in plain logits is ignored too
    _assert_same(fn(**{**kw, _pair(kinds): lg_explicit, arg: r_masked}), want)


@pytest.mark.parametrize("cid,arg", _args_of("rewards"), ids=lambda v: str(v))
def test_masked_reward_of_a_possible_outcome_is_refused(cid, arg):
    _, fn, kw, _ = IDS[cid]
    r = np.array(kw[arg], dtype=np.float64)
    with pytest.raises(ValueError, match=rf"^{arg} is masked at index \(1,\).*possible"):
        fn(**{**kw, arg: np.ma.array(r, mask=_mask_like(r))})


def test_masked_reward_must_be_impossible_in_every_row_it_broadcasts_to():
    lg_masked, lg_explicit, _ = _masked_logits(L2)          # outcome 1 masked in row 0 only
    r = np.ma.array(R, mask=_mask_like(R))
    with pytest.raises(ValueError, match=r"rewards is masked at index \(1,\)"):
        tiltlab.tilt_stats(lg_masked, r, 0.5)
    both = np.ma.array(L2, mask=_mask_like(L2))               # masked in both rows: fine
    want = tiltlab.tilt_stats(np.where(_mask_like(L2), -np.inf, L2), np.where(r.mask, 0, R), 0.5)
    _assert_same(tiltlab.tilt_stats(both, r, 0.5), want)


@pytest.mark.parametrize("cid,arg", _args_of("param") + _args_of("refused"),
                         ids=lambda v: str(v))
def test_masked_parameters_and_other_arguments_are_refused(cid, arg):
    _, fn, kw, _ = IDS[cid]
    with pytest.raises(ValueError, match=rf"^{arg} is a masked array"):
        fn(**{**kw, arg: _masked_param(kw[arg])})


@pytest.mark.parametrize("cid,arg", _args_of("param") + _args_of("refused")
                         + _args_of("logits") + _args_of("rewards"), ids=lambda v: str(v))
def test_masked_array_without_masked_elements_is_its_data(cid, arg):
    _, fn, kw, _ = IDS[cid]
    _assert_same(fn(**{**kw, arg: np.ma.array(kw[arg])}), fn(**kw))


@pytest.mark.filterwarnings("ignore:Warning. converting a masked element to nan")
def test_masked_scalar_constant_and_lists_with_masked_elements():
    with pytest.raises(ValueError, match="^lam is a masked array"):
        tiltlab.tilt(L, R, np.ma.masked)
    with pytest.raises(ValueError, match="^kl is a masked array"):
        tiltlab.frontier(L, R, [0.1, np.ma.masked])
    # a list holding masked rows is read with its masks
    rows = [np.ma.array(L, mask=_mask_like(L)), L]
    two = np.stack([L, L])
    want = tiltlab.tilt(np.where(_mask_like(two, last_only=True), -np.inf, two), R, 0.3)
    _assert_same(tiltlab.tilt(rows, R, 0.3), want)
    _assert_same(tiltlab.tilt(list(np.ma.array(L, mask=_mask_like(L))), R, 0.3), want[0])


def test_all_outcomes_masked_is_an_empty_row():
    with pytest.raises(ValueError, match="all -inf"):
        tiltlab.tilt_stats(np.ma.array(L, mask=True), np.ma.array(R, mask=True), 0.5)


def test_masked_logsumexp_reads_the_data_as_scipy_and_zero_weights_exclude():
    # issue 17: scipy.special.logsumexp reads a masked array as its data (mask ignored)
    a = np.ma.array([0.0, 1.0], mask=[False, True])
    assert tiltlab.logsumexp(a) == pytest.approx(np.log(1 + np.e), rel=1e-15)
    assert tiltlab.logsumexp(a, b=~a.mask) == 0.0
    assert tiltlab.logsumexp(a.filled(-np.inf)) == 0.0


def test_masked_inputs_are_not_modified():
    lg = np.ma.array(L.copy(), mask=_mask_like(L))
    rw = np.ma.array(R.copy(), mask=_mask_like(R))
    assert tiltlab.best_of_n(lg, rw, n=4).log_probs.shape == (4,)
    tiltlab.Memoryless(lg, rw, 4).best_of_n(n=2)
    np.testing.assert_array_equal(lg.data, L)
    np.testing.assert_array_equal(rw.data, R)
    np.testing.assert_array_equal(lg.mask, _mask_like(L))
