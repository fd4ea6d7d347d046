"""tiltlab.Markov (SPEC section 9): tilted statistics, budget solve and the tilted policy,
against the independent NumPy reference (tiltlab.reference.markov_*), brute-force
enumeration of all V^n sequences, and the memoryless model."""

import itertools

import numpy as np
import pytest

import tiltlab
from tiltlab import reference as ref

RTOL = 1e-12


def _random_chain(rng, v, per_token=True, forbid=False, integer=False):
    l0 = rng.normal(size=v)
    lt = rng.normal(size=(v, v)) * 1.5
    if forbid and v > 1:
        mask = rng.random((v, v)) < 0.3
        mask[np.arange(v), rng.integers(0, v, size=v)] = False   # a successor per row
        lt[mask] = -np.inf
        l0[rng.integers(0, v)] = -np.inf if v > 1 else l0[0]
    shape = (v,) if per_token else (v, v)
    rw = (rng.integers(-2, 4, size=shape).astype(float) if integer
          else rng.normal(size=shape))
    return l0, lt, rw


def _enumerate(l0, lt, rw, n, lam, r0=None):
    """(log Z, E R, Var R, KL) of phi_lam over all V^n sequences, in extended precision
    where it matters (longdouble sums of the explicit sequence table)."""
    v = len(l0)
    lp0 = l0 - np.logaddexp.reduce(l0)
    lpt = lt - np.logaddexp.reduce(lt, axis=1)[:, None]
    logp, rew = [], []
    for y in itertools.product(range(v), repeat=n):
        lp = lp0[y[0]] + sum(lpt[a, b] for a, b in itertools.pairwise(y))
        if not np.isfinite(lp):
            continue
        if np.ndim(rw) == 1:
            rr = sum(rw[s] for s in y)
        else:
            rr = (0.0 if r0 is None else r0[y[0]]) + sum(rw[a, b] for a, b in itertools.pairwise(y))
        logp.append(lp)
        rew.append(rr)
    logp = np.array(logp, dtype=np.longdouble)
    rew = np.array(rew, dtype=np.longdouble)
    x = logp + lam * rew
    mx = np.max(x)
    w = np.exp(x - mx)
    z = np.sum(w)
    phi = w / z
    log_z = mx + np.log(z)
    mean = np.sum(phi * rew)
    var = np.sum(phi * (rew - mean) ** 2)
    kl = np.sum(phi * (np.log(phi) - logp))
    return float(log_z), float(mean), float(var), float(kl)


def _close(a, b, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=rtol, atol=atol)


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("v,n", [(1, 3), (2, 1), (2, 10), (3, 6), (4, 4)])
def test_tilt_stats_match_enumeration_and_reference(v, n, per_token):
    rng = np.random.default_rng(100 * v + n + per_token)
    l0, lt, rw = _random_chain(rng, v, per_token, forbid=True)
    r0 = None if per_token else rng.normal(size=v)
    m = tiltlab.Markov(l0, lt, rw, n, initial_rewards=r0)
    lams = np.array([-1.3, -0.01, 0.0, 1e-4, 0.7, 2.5])
    st = m.tilt_stats(lams)
    for i, lam in enumerate(lams):
        want = ref.markov_tilt_stats(l0, lt, rw, n, lam, initial_rewards=r0)
        got = [st.log_partition[i], st.mean[i], st.variance[i], st.kl[i]]
        # log Z and E R can be 0: compare at the scale of the rewards
        scale = n * np.max(np.abs(rw))
        for g, w in zip(got, want, strict=True):
            _close(g, w, atol=RTOL * scale * max(1.0, abs(lam)) if lam else 1e-300)
        brute = _enumerate(l0, lt, rw, n, lam, r0)
        _close(got[0], brute[0], rtol=1e-12, atol=1e-13 * scale)
        _close(got[1], brute[1], rtol=1e-12, atol=1e-13 * scale)
        _close(got[2], brute[2], rtol=1e-11, atol=1e-13 * scale * scale)
        _close(got[3], brute[3], rtol=1e-10, atol=1e-14)
    # lam = 0: p itself (KL exactly 0), and the KL keeps its relative accuracy at a small tilt
    assert st.kl[2] == 0.0 and st.log_partition[2] == 0.0
    small = ref.markov_tilt_stats(l0, lt, rw, n, 1e-4, initial_rewards=r0)[3]
    if small > 0:
        _close(st.kl[3], small, rtol=1e-11)


def test_scalar_and_shaped_lam():
    m = tiltlab.Markov([0.0, 1.0], [[0.0, 2.0], [1.0, -np.inf]], [1.0, 0.0], 6)
    s = m.tilt_stats(0.3)
    assert isinstance(s.mean, float | np.floating)
    b = m.tilt_stats(np.full((2, 3), 0.3))
    assert b.kl.shape == (2, 3)
    assert np.all(b.kl == s.kl) and np.all(b.log_partition == s.log_partition)


@pytest.mark.parametrize("n", [1, 2, 17, 400, 3000])
def test_equal_rows_reproduce_memoryless(n):
    rng = np.random.default_rng(n)
    logits = rng.normal(size=5)
    rw = rng.integers(0, 4, size=5).astype(float)
    m = tiltlab.Markov(logits, np.tile(logits, (5, 1)), rw, n)
    mem = tiltlab.Memoryless(logits, rw, n)
    lams = np.array([-2.0, -0.1, 0.0, 1e-6, 0.5, 3.0])
    got, want = m.tilt_stats(lams), mem.tilt_stats(lams)
    one = tiltlab.tilt_stats(logits, rw, lams)
    for g, w, o in zip(got, want, one, strict=True):
        _close(g, w, atol=1e-300)
        _close(g, n * np.asarray(o), atol=1e-300)
    _close(m.kl_max, mem.kl_max)
    if n <= 400:      # (the long chain checks the accumulation over positions only)
        _close(m.solve_lambda(0.05), mem.solve_lambda(0.05), rtol=1e-10)


def test_tilted_policy_matches_reference_and_is_phi():
    rng = np.random.default_rng(7)
    l0, lt, rw = _random_chain(rng, 3, per_token=False, forbid=True)
    n, lam = 5, 0.8
    m = tiltlab.Markov(l0, lt, rw, n)
    li, lq = m.tilted_policy(lam)
    ri, rq = ref.markov_tilted_policy(l0, lt, rw, n, lam)
    assert lq.shape == (n - 1, 3, 3)
    assert np.array_equal(np.isinf(lq), np.isinf(rq)) and np.array_equal(np.isinf(li),
                                                                        np.isinf(ri))
    _close(np.exp(li), np.exp(ri), atol=1e-15)
    _close(np.exp(lq), np.exp(rq), atol=1e-15)
    # the chain's law of a whole sequence is p e^{lam R} / Z
    lz = m.tilt_stats(lam).log_partition
    lp0 = l0 - np.logaddexp.reduce(l0)
    lpt = lt - np.logaddexp.reduce(lt, axis=1)[:, None]
    for y in [(0, 1, 2, 2, 0), (2, 2, 2, 2, 2), (1, 0, 1, 0, 1)]:
        lp = lp0[y[0]] + sum(lpt[a, b] for a, b in itertools.pairwise(y))
        if not np.isfinite(lp):
            continue
        rr = sum(rw[a, b] for a, b in itertools.pairwise(y))
        lphi = li[y[0]] + sum(lq[t, y[t], y[t + 1]] for t in range(n - 1))
        _close(lphi, lp + lam * rr - lz, rtol=1e-12, atol=1e-12)
    one_i, one_q = tiltlab.Markov(l0, lt, rw, 1).tilted_policy(lam)
    assert one_q.shape == (0, 3, 3)
    _close(np.exp(one_i), np.exp(l0 - np.logaddexp.reduce(l0)), atol=1e-16)  # r0 = 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kl_max_and_solve_lambda(seed):
    rng = np.random.default_rng(seed)
    l0, lt, rw = _random_chain(rng, 3, per_token=seed != 2, forbid=True, integer=True)
    n = 6
    m = tiltlab.Markov(l0, lt, rw, n)
    values, log_pmf = ref.markov_reward_law(l0, lt, rw, n)
    _close(m.kl_max, -log_pmf[-1])
    deltas = np.array([0.0, 1e-3, 0.05, 0.3 * m.kl_max / n, m.kl_max / n, 2 * m.kl_max / n])
    lams = m.solve_lambda(deltas)
    assert lams.shape == deltas.shape and lams[0] == 0.0
    assert np.isinf(lams[-2]) and np.isinf(lams[-1])
    for d, lam in zip(deltas[1:4], lams[1:4], strict=True):
        _close(m.tilt_stats(lam).kl, n * d, rtol=1e-12)
        _close(lam, ref.markov_solve_lambda(l0, lt, rw, n, d), rtol=1e-9)
    assert isinstance(m.solve_lambda(0.05), float)


def test_solve_lambda_reward_scale():
    lt = np.log([[0.9, 0.1], [0.3, 0.7]])
    a = tiltlab.Markov([0.0, 0.0], lt, [0.0, 1.0], 50)
    b = tiltlab.Markov([0.0, 0.0], lt, [0.0, 1e-7], 50)
    _close(b.solve_lambda(0.02), 1e7 * a.solve_lambda(0.02), rtol=1e-10)


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(initial_logits=[[0.0, 0.0]]), ValueError, "initial_logits"),
    (dict(initial_logits=[]), ValueError, "initial_logits"),
    (dict(initial_logits=[0.0, np.nan]), ValueError, "initial_logits"),
    (dict(initial_logits=[-np.inf, -np.inf]), ValueError, "initial_logits"),
    (dict(transition_logits=[0.0, 0.0]), ValueError, "transition_logits"),
    (dict(transition_logits=np.zeros((3, 3))), ValueError, "transition_logits"),
    (dict(transition_logits=[[0.0, np.inf], [0.0, 0.0]]), ValueError, "transition_logits"),
    (dict(transition_logits=[[0.0, 0.0], [-np.inf, -np.inf]]), ValueError,
     "transition_logits row 1"),
    (dict(rewards=[0.0, 1.0, 2.0]), ValueError, "rewards"),
    (dict(rewards=[0.0, np.inf]), ValueError, "rewards"),
    (dict(rewards=[[0.0, np.nan], [0.0, 0.0]]), ValueError, "rewards"),
    (dict(initial_rewards=[0.0, 1.0]), ValueError, "initial_rewards"),
    (dict(rewards=np.zeros((2, 2)), initial_rewards=[0.0]), ValueError, "initial_rewards"),
    (dict(rewards=np.zeros((2, 2)), initial_rewards=[0.0, np.nan]), ValueError,
     "initial_rewards"),
    (dict(length=0), ValueError, "length"),
    (dict(length=2.5), TypeError, "length"),
    (dict(length=True), TypeError, "length"),
])
def test_validation_names_the_argument(kwargs, exc, word):
    args = dict(initial_logits=[0.0, 0.0], transition_logits=np.zeros((2, 2)),
                rewards=[0.0, 1.0], length=3)
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        tiltlab.Markov(**args)


def test_method_arguments_are_checked():
    m = tiltlab.Markov([0.0, 0.0], np.zeros((2, 2)), [0.0, 1.0], 3)
    with pytest.raises(ValueError, match="lam"):
        m.tilt_stats(np.nan)
    with pytest.raises(ValueError, match="lam"):
        m.tilt_stats([0.0, np.inf])
    with pytest.raises(ValueError, match="lam"):
        m.tilted_policy([0.1, 0.2])
    with pytest.raises(ValueError, match="delta"):
        m.solve_lambda(-0.1)
    with pytest.raises(TypeError, match="lam"):
        m.tilt_stats(True)


def test_impossible_transitions_never_read_rewards():
    lt = np.array([[0.0, -np.inf], [0.0, 0.0]])
    a = tiltlab.Markov([0.0, 0.0], lt, [[1.0, 5.0], [0.0, 2.0]], 4)
    b = tiltlab.Markov([0.0, 0.0], lt, [[1.0, -7.0], [0.0, 2.0]], 4)
    for x, y in zip(a.tilt_stats([0.2, 1.5]), b.tilt_stats([0.2, 1.5]), strict=True):
        assert np.array_equal(x, y)
