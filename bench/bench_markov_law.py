"""Markov token models (issue 20): the exact law of R and best-of-N over whole sequences.

The issue's target: V = 27, n = 10^4, integer rewards, "the exact law and best-of-N in
<= 5 s".  A 27-state chain with dense random transitions and Scrabble-like integer rewards
0..10 (the english-letters model's shape, without its data dependency):

* ``law+bon``: ``Markov.reward_log_pmf()`` and ``best_of_n(log_n = 0.1 n)`` on a fresh
  model (no caches), the issue's measure; ``law`` and ``bon`` separately;
* at n = 300 (where the reference can run): ``reference`` is
  ``tiltlab.reference.markov_reward_law``, the NumPy dynamic program over (position,
  state, level) in log space, what a user would write; ``tiltlab`` the same law;
* ``stream-add``: ``np.add`` over arrays of n V^2 doubles (every tilted transition once):
  the machine's limit for anything that touches the chain per position.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import quick, run, stream_add

import tiltlab
from tiltlab import reference

V = 27
SCORES = np.array([0, 1, 3, 3, 2, 1, 4, 2, 4, 1, 8, 5, 1, 3, 1, 1, 3, 10, 1, 1, 1, 1, 4, 4, 8,
                   4, 10], dtype=np.float64)


def _chain():
    rng = np.random.default_rng(27)
    return rng.normal(size=V), rng.normal(size=(V, V)) * 1.5, SCORES


def _length(config) -> int:
    return 1000 if quick(config) else 10_000


@pytest.mark.parametrize("impl", ["law+bon", "law", "bon", "stream-add"])
def test_markov_law_and_best_of_n(benchmark, rounds, request, impl):
    n = _length(request.config)
    l0, lt, rw = _chain()

    def law_and_bon():
        m = tiltlab.Markov(l0, lt, rw, n)
        return m.reward_log_pmf(), m.best_of_n(log_n=0.1 * n)

    if impl == "law+bon":
        fn = law_and_bon
    elif impl == "law":
        fn = lambda: tiltlab.Markov(l0, lt, rw, n).reward_log_pmf()  # noqa: E731
    elif impl == "bon":
        fn = lambda: tiltlab.Markov(l0, lt, rw, n).best_of_n(log_n=0.1 * n)  # noqa: E731
    else:
        fn = stream_add(n * V * V)
    run(benchmark, fn, rounds=rounds, group=f"markov law+best-of-N V={V} n={n}", impl=impl,
        kernel="markov_law", n_elements=n * V * V)


@pytest.mark.parametrize("impl", ["tiltlab", "reference", "stream-add"])
def test_markov_law_vs_reference(benchmark, rounds, impl):
    n = 300
    l0, lt, rw = _chain()
    if impl == "tiltlab":
        fn = lambda: tiltlab.Markov(l0, lt, rw, n).reward_log_pmf()  # noqa: E731
    elif impl == "reference":
        want = tiltlab.Markov(l0, lt, rw, n).reward_log_pmf()
        values, lp = reference.markov_reward_law(l0, lt, rw, n)
        fin = np.isfinite(lp)
        np.testing.assert_array_equal(fin, np.isfinite(want.log_pmf))
        # (the sparse odd sub-lattice next to the top of this law: ~1e-8, SPEC 9)
        np.testing.assert_allclose(np.exp(lp[fin] - want.log_pmf[fin]), 1.0, rtol=0,
                                   atol=3e-8)
        fn = lambda: reference.markov_reward_law(l0, lt, rw, n)  # noqa: E731
    else:
        fn = stream_add(n * V * V)
    run(benchmark, fn, rounds=rounds, group=f"markov law V={V} n={n}", impl=impl,
        kernel="markov_law", n_elements=n * V * V)
