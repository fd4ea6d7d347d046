"""Random Markov chains shared by the Markov test modules."""

from __future__ import annotations

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
