"""The samplers' random streams: one PCG64 stream per row, seeded from ``rng``.

Shared by the best-of-N samplers (:mod:`tiltlab.bestofn`) and the categorical samplers
(:mod:`tiltlab.sampling`): row ``i`` of a batch draws from the PCG64 stream seeded by
``stream_seeds(rng, count)[i]``, whatever the number of threads, so the same ``rng`` gives
the same streams to every sampler.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from tiltlab import _bestofn

__all__ = ["size_value", "stream_seeds"]


def stream_seeds(rng, count: int) -> np.ndarray:
    """(count, 4) uint64: the seed words of one PCG64 stream per row, derived
    deterministically from rng: 128 bits of entropy from its bit generator, hashed by a
    SeedSequence (row 0 has the words ``PCG64(SeedSequence(entropy))`` is seeded with).
    An int seed and a single row skip NumPy's objects (computed in C, the same words);
    None takes its 128 bits of entropy from the operating system directly (as
    ``default_rng(None)`` seeds itself, without its ~20 us of objects)."""
    if rng is None:
        raw = os.urandom(16)
        hi, lo = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
    elif type(rng) is int and 0 <= rng < (1 << 128):
        hi, lo = _bestofn.stream_entropy_int(rng)
    else:
        raw = np.random.default_rng(rng).bit_generator.random_raw(2)
        hi, lo = int(raw[0]), int(raw[1])
    entropy = (int(hi) << 64) | int(lo)
    if count == 1:
        return _bestofn.seedseq_state4(entropy)
    return np.random.SeedSequence(entropy).generate_state(4 * count, np.uint64).reshape(count, 4)


def size_value(size) -> int | None:
    """``size`` of the best-of-N samplers: None or a non-negative int (TypeError /
    ValueError otherwise)."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be None or a non-negative integer; got {size!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0; got {size}")
    return int(size)
