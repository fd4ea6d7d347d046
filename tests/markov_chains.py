"""Random Markov chains shared by the Markov test modules."""

from __future__ import annotations

import itertools

import numpy as np

NEG = -np.inf


def random_chain(seed, v, per_transition, neg_inf=True, offset=0.0):
    """Random logits (some -inf), integer-valued lattice rewards (step 0.5 plus offset)."""
    rng = np.random.default_rng(seed)
    l0 = rng.normal(size=v) * 1.5
    lt = rng.normal(size=(v, v)) * 1.5
    if neg_inf:
        for s in range(v):
            if rng.random() < 0.5:
                lt[s, rng.integers(0, v)] = NEG
        if rng.random() < 0.5:
            l0[rng.integers(0, v)] = NEG
    shape = (v, v) if per_transition else (v,)
    rewards = offset + 0.5 * rng.integers(0, 4, size=shape)
    r0 = offset + 0.5 * rng.integers(0, 4, size=v) if per_transition else None
    return l0, lt, rewards, r0


def enumerate_sequences(l0, lt, rewards, length, r0=None):
    """All V^n sequences with float64 log p(y) and R(y) (the model as SPEC 9 defines it)."""
    v = len(l0)
    lp0 = l0 - np.logaddexp.reduce(l0)
    lpt = lt - np.logaddexp.reduce(lt, axis=1)[:, None]
    ys = np.array(list(itertools.product(range(v), repeat=length)), dtype=np.int64)
    log_p = lp0[ys[:, 0]] + np.sum(lpt[ys[:, :-1], ys[:, 1:]], axis=1)
    rw = np.asarray(rewards, dtype=np.float64)
    if rw.ndim == 1:
        big_r = np.sum(rw[ys], axis=1)
    else:
        first = np.zeros(len(ys)) if r0 is None else np.asarray(r0)[ys[:, 0]]
        big_r = first + np.sum(rw[ys[:, :-1], ys[:, 1:]], axis=1)
    keep = log_p > -np.inf
    return ys[keep], log_p[keep], big_r[keep]
