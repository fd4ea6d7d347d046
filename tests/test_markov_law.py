"""tiltlab.Markov: the exact law of R on its lattice, best-of-N over sequences and the
samplers (issue 20, SPEC section 9), against enumeration, an extended-precision dynamic
program, the NumPy reference and Memoryless."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from markov_chains import enumerate_sequences, random_chain
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference as ref

NEG = -np.inf


def enumerate_law(l0, lt, rewards, length, r0=None):
    """The law of R over all V^n sequences (exactly rounded sums per value)."""
    _, log_p, big_r = enumerate_sequences(l0, lt, rewards, length, r0)
    big_r = np.round(big_r, 9)
    values = np.unique(big_r)
    out = []
    for val in values:
        x = log_p[big_r == val]
        m = np.max(x)
        out.append(m + math.log(math.fsum(np.exp(x - m))))
    return values, np.array(out)


def longdouble_law(l0, lt, k, length):
    """log P(K = j) by the (position, state, level) DP in extended precision (per-token
    integer levels ``k``), rescaled per step: an independent oracle for moderate sizes."""
    ld = np.longdouble
    p0 = np.exp(np.asarray(l0, dtype=ld) - np.max(l0))
    p0 /= p0.sum()
    pt = np.exp(np.asarray(lt, dtype=ld) - np.max(lt, axis=1)[:, None])
    pt /= pt.sum(axis=1)[:, None]
    v = len(l0)
    kmax = int(np.max(k))
    tab = np.zeros((v, kmax * length + 1), dtype=ld)
    tab[np.arange(v), k] = p0
    log_scale = ld(0)
    for _ in range(1, length):
        new = np.zeros_like(tab)
        for s2 in range(v):
            new[s2, k[s2]:] = (pt[:, s2][:, None] * tab[:, :tab.shape[1] - k[s2]]).sum(axis=0)
        mx = new.max()
        tab = new / mx
        log_scale += np.log(mx)
    with np.errstate(divide="ignore"):
        return np.log(tab.sum(axis=0)) + log_scale


def force_path(model, path):
    """The law under a tilt by the DP ("direct", the default for small problems), the
    doubling of the polynomial matrix, or the transform's main lobe (long chains)."""
    if path != "direct":
        model._DIRECT_WORK = -1.0
        model._LOBE = path == "lobe"
    return model


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


CASES = [(v, n, pt) for v, n in [(2, 1), (2, 9), (3, 2), (3, 7), (4, 5), (4, 8)]
         for pt in (False, True)]


@pytest.mark.parametrize("v, n, per_transition", CASES)
@pytest.mark.parametrize("path", ["direct", "doubling", "lobe"])
def test_law_against_enumeration(v, n, per_transition, path):
    for seed in range(3):
        l0, lt, rw, r0 = random_chain(100 * v + 10 * n + seed, v, per_transition)
        m = force_path(tiltlab.Markov(l0, lt, rw, n, initial_rewards=r0), path)
        law = m.reward_log_pmf()
        values, log_pmf = enumerate_law(l0, lt, rw, n, r0)
        got = dict(zip(np.round(law.values, 9), law.log_pmf, strict=True))
        assert set(values) <= set(got)
        # probabilities: 1e-12 relative on the default path for these sizes (the DP, exact
        # to rounding); the transform paths leave ~1e-15 of each tilt's peak
        assert_allclose(np.exp(np.array([got[x] for x in values]) - log_pmf), 1.0,
                        rtol=0, atol=1e-12 if path == "direct" else 3e-11)
        others = set(got) - set(values)
        assert all(got[x] == -np.inf for x in others), "a value no sequence has"


@pytest.mark.parametrize("per_transition", [False, True])
def test_best_of_n_against_reference(per_transition):
    for seed in range(4):
        l0, lt, rw, r0 = random_chain(7 + seed, 3, per_transition)
        for n, log_n in [(1, 1.0), (6, 2.5), (9, 0.0), (40, 12.0)]:
            m = tiltlab.Markov(l0, lt, rw, n, initial_rewards=r0)
            b = m.best_of_n(log_n=log_n)
            want = ref.markov_best_of_n(l0, lt, rw, n, log_n, initial_rewards=r0)
            assert b.expected_reward == pytest.approx(want["expected_reward"], rel=1e-12,
                                                      abs=1e-12)
            assert b.kl == pytest.approx(want["kl"], rel=1e-10, abs=1e-13)
            assert b.win_rate == pytest.approx(want["win_rate"], rel=1e-12, abs=1e-13)
            # the closeness identity of SPEC 9 with the sequence-level log Z
            lam = 0.7
            st = m.tilt_stats(lam)
            assert b.kl_to_tilted(lam) == pytest.approx(
                b.kl - lam * b.expected_reward + st.log_partition, rel=1e-9, abs=1e-10)


def deep_chain():
    """Three states, per-token integer rewards 0, 1, 3: at n = 300 the law spans
    probabilities from ~1 down to far below 1e-300."""
    l0 = np.log([0.6, 0.3, 0.1])
    lt = np.log([[0.80, 0.15, 0.05], [0.30, 0.60, 0.10], [0.60, 0.35, 0.05]])
    return l0, lt, np.array([0.0, 1.0, 3.0])


@pytest.mark.parametrize("path", ["direct", "doubling", "lobe"])
def test_law_down_to_1e_300_against_extended_precision(path):
    if np.finfo(np.longdouble).eps > 1e-18:
        pytest.skip("no extended precision long double on this platform")
    l0, lt, rw = deep_chain()
    n = 300
    m = force_path(tiltlab.Markov(l0, lt, rw, n), path)
    law = m.reward_log_pmf()
    want = longdouble_law(l0, lt, rw.astype(np.int64), n)
    k = np.rint(law.values).astype(np.int64)
    w = want[k].astype(np.float64)
    sel = w > math.log(1e-300)
    assert np.count_nonzero(w < math.log(1e-250)) > 10     # the test reaches deep tails
    assert np.all(np.isfinite(law.log_pmf[sel]))
    # the DP is exact to rounding: 1e-12; the doubling's FFTs leave ~1e-15 of each tilt's
    # peak, i.e. ~3e-11 of the values the stitching takes from e^-8 below a peak (one point
    # at the lowest edge reaches 1.2e-10)
    tol = 1e-12 if path == "direct" else 3e-11
    assert_allclose(np.exp(law.log_pmf[sel] - w[sel]), 1.0, rtol=0, atol=tol)
    # and the NumPy reference DP (log space: ~n eps |log p| of its own rounding)
    values, lp = ref.markov_reward_law(l0, lt, rw, n)
    assert_array_equal(values, law.values)
    assert_allclose(np.exp(lp[sel] - w[sel]), 1.0, rtol=0, atol=1e-11)


def test_law_under_a_tilt():
    l0, lt, rw = deep_chain()
    m = tiltlab.Markov(l0, lt, rw, 60)
    lam = 0.4
    law0, law1 = m.reward_log_pmf(), m.reward_log_pmf(lam)
    st = m.tilt_stats(lam)
    assert_allclose(law1.log_pmf, law0.log_pmf + lam * law0.values - st.log_partition,
                    rtol=1e-12, atol=1e-10)
    assert math.fsum(np.exp(law1.log_pmf)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 400, 1500])
def test_equal_rows_reproduce_memoryless(n):
    logits = np.log([0.5, 0.2, 0.2, 0.1])
    rw = np.array([0.0, 1.0, 2.0, 5.0])
    mk = tiltlab.Markov(logits, np.tile(logits, (4, 1)), rw, n)
    ml = tiltlab.Memoryless(logits, rw, n)
    a, b = mk.reward_log_pmf(), ml.reward_log_pmf()
    assert_array_equal(a.values, b.values)
    both = np.isfinite(a.log_pmf) & np.isfinite(b.log_pmf)
    assert np.array_equal(np.isfinite(a.log_pmf), np.isfinite(b.log_pmf))
    # both stitch FFT windows (Markov: the doubling) at n = 1500: ~1e-11 each
    tol = 1e-12 if n <= 400 else 1e-10
    assert_allclose(np.exp(a.log_pmf[both] - b.log_pmf[both]), 1.0, rtol=0, atol=tol)
    for log_n in [0.5, 0.05 * n + 1.0]:
        x, y = mk.best_of_n(log_n=log_n), ml.best_of_n(log_n=log_n)
        assert x.expected_reward == pytest.approx(y.expected_reward, rel=tol)
        assert x.kl == pytest.approx(y.kl, rel=1e3 * tol, abs=1e-12)
        assert x.win_rate == pytest.approx(y.win_rate, rel=tol)


@pytest.mark.parametrize("path", ["doubling", "lobe"])
def test_transforms_agree_with_direct_at_moderate_size(path):
    rng = np.random.default_rng(5)
    v = 5
    l0, lt = rng.normal(size=v), rng.normal(size=(v, v))
    rw = rng.integers(0, 6, size=(v, v)).astype(np.float64)
    m1 = tiltlab.Markov(l0, lt, rw, 500)
    m2 = force_path(tiltlab.Markov(l0, lt, rw, 500), path)
    a, b = m1.reward_log_pmf(), m2.reward_log_pmf()
    assert a.resolved.all() and b.resolved.all()
    fin = np.isfinite(a.log_pmf)
    assert np.array_equal(fin, np.isfinite(b.log_pmf))
    assert np.min(a.log_pmf[fin]) < math.log(1e-300)
    assert_allclose(np.exp(b.log_pmf[fin] - a.log_pmf[fin]), 1.0, rtol=0, atol=3e-11)
    x, y = m1.best_of_n(log_n=40.0), m2.best_of_n(log_n=40.0)
    assert x.expected_reward == pytest.approx(y.expected_reward, rel=1e-13)
    assert x.kl == pytest.approx(y.kl, rel=1e-10)


@pytest.mark.parametrize("path", ["direct", "doubling"])
def test_best_of_n_sequences_are_conditional_draws(path):
    """Sequences drawn by best_of_n(...).sample: their rewards follow the best-of-N law
    (same draws as sample_rewards) and, given the reward, the sequences follow p
    conditioned on it (chi-square against enumeration)."""
    l0 = np.log([0.5, 0.3, 0.2])
    lt = np.log([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    rw = np.array([0.0, 1.0, 2.0])
    n = 5
    m = force_path(tiltlab.Markov(l0, lt, rw, n), path)
    b = m.best_of_n(log_n=2.0)
    ys = b.sample(20_000, rng=3)
    assert ys.shape == (20_000, n)
    assert_array_equal(rw[ys].sum(axis=1), b.sample_rewards(20_000, rng=3))
    # conditional law of the sequences given the most frequent reward value
    rs = rw[ys].sum(axis=1)
    vals, counts = np.unique(rs, return_counts=True)
    target = vals[np.argmax(counts)]
    sub = ys[rs == target]
    seqs = [y for y in itertools.product(range(3), repeat=n) if rw[list(y)].sum() == target]
    lp = np.array([l0[y[0]] + sum(lt[y[i], y[i + 1]] for i in range(n - 1)) for y in seqs])
    prob = np.exp(lp - np.logaddexp.reduce(lp))
    index = {y: i for i, y in enumerate(seqs)}
    obs = np.bincount([index[tuple(y)] for y in sub], minlength=len(seqs))
    expct = prob * len(sub)
    chi2 = float(np.sum((obs - expct) ** 2 / expct))
    dof = len(seqs) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof)


def test_best_of_n_sequence_sampling_long_chain():
    """The doubling sampler at n = 2000: every sequence has the drawn reward."""
    l0, lt, rw = deep_chain()
    m = tiltlab.Markov(l0, lt, rw, 2000)
    b = m.best_of_n(log_n=100.0)
    ys = b.sample(30, rng=1)
    assert_array_equal(rw[ys].sum(axis=1), b.sample_rewards(30, rng=1))
    # every transition drawn is possible
    assert np.all(np.isfinite(lt[ys[:, :-1], ys[:, 1:]]))


def test_sample_from_the_tilt():
    l0, lt, rw = deep_chain()
    m = tiltlab.Markov(l0, lt, rw, 30)
    lam = 0.3
    ys = m.sample(20_000, lam=lam, rng=2)
    assert ys.shape == (20_000, 30) and ys.dtype == np.int32
    r = rw[ys].sum(axis=1)
    st = m.tilt_stats(lam)
    z = (r.mean() - st.mean) / math.sqrt(st.variance / r.size)
    assert abs(z) < 5
    assert r.var() == pytest.approx(st.variance, rel=0.05)
    assert_array_equal(m.sample(5, lam=lam, rng=9), m.sample(5, lam=lam, rng=9))
    assert m.sample(lam=lam, rng=1).shape == (30,)


def test_lattice_attributes_and_errors():
    l0, lt, rw = deep_chain()
    lt2 = lt.copy()
    lt2[0, 2] = NEG       # 3 after 0 is impossible: the largest reward still reachable
    m = tiltlab.Markov(l0, lt2, rw, 4)
    assert m.step == 1.0 and m.r_min == 0.0 and m.r_max == 12.0
    assert_array_equal(m.values, np.arange(13.0))
    # per-transition rewards whose minimum path is forced above 0
    m2 = tiltlab.Markov([0.0, NEG], [[NEG, 0.0], [0.0, NEG]], [[0.0, 2.0], [4.0, 0.0]], 3)
    law = m2.reward_log_pmf()
    assert law.values.tolist() == [6.0] and law.log_pmf.tolist() == [0.0]
    with pytest.raises(ValueError, match="lattice"):
        tiltlab.Markov(l0, lt, [0.0, 1.0, math.sqrt(2.0)], 5).reward_log_pmf()
    with pytest.raises(ValueError, match="lattice"):
        tiltlab.Markov(l0, lt, [0.0, 1.0, math.sqrt(2.0)], 5).best_of_n(log_n=1.0)
    q = tiltlab.Markov(l0, lt, [0.0, 1.0, math.sqrt(2.0)], 5, step=0.5)
    assert q.step == 0.5 and q.quantisation_error == pytest.approx(1.5 - math.sqrt(2.0))
    with pytest.raises(ValueError, match="step"):
        tiltlab.Markov(l0, lt, rw, 5, step=-1.0)
    with pytest.raises(ValueError, match="one N"):
        m.best_of_n(log_n=[1.0, 2.0])
    with pytest.raises(ValueError, match="lam"):
        m.sample(3, lam=np.nan)
    with pytest.raises(ValueError, match="size"):
        m.sample(-1)


@pytest.mark.parametrize("path", ["doubling", "lobe"])
def test_nearly_periodic_level_sum(path):
    """Rewards 0 and 2 on the common states and 1 on a rare one: K is even but for the
    rare visits, so |E e^{i pi K}| stays near 1/2 at n = 1500 and the transform has a
    second lobe at pi; the transform paths find it (against the exact DP)."""
    l0 = np.log([0.5, 0.5, 2e-4])
    lt = np.log([[0.5, 0.5, 2e-4], [0.5, 0.5, 2e-4], [0.5, 0.5, 2e-4]])
    rw = np.array([0.0, 2.0, 1.0])
    n = 1500
    exact = tiltlab.Markov(l0, lt, rw, n).reward_log_pmf()
    law = force_path(tiltlab.Markov(l0, lt, rw, n), path).reward_log_pmf()
    fin = np.isfinite(exact.log_pmf)
    assert np.array_equal(fin, np.isfinite(law.log_pmf))
    odd = (np.rint(exact.values).astype(np.int64) % 2 == 1) & fin
    even = (np.rint(exact.values).astype(np.int64) % 2 == 0) & fin
    peak_even = np.max(exact.log_pmf[even])
    assert 0.2 < math.exp(np.max(exact.log_pmf[odd]) - peak_even) < 1.0   # a real lobe
    # the odd sub-lattice sits far below its even neighbours: ~1e-10 there
    assert_allclose(np.exp(law.log_pmf[fin] - exact.log_pmf[fin]), 1.0, rtol=0, atol=2e-10)
