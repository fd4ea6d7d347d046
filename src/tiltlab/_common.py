"""Private helpers that several public modules share (one module, so that no module reaches
into another's underscored names): the samplers' random streams and bit generators, and the
``size`` and ``n`` / ``log_n`` parameters.

Random streams, shared by the best-of-N samplers (:mod:`tiltlab.bestofn`), the categorical
samplers (:mod:`tiltlab.sampling`) and the sequence samplers (:mod:`tiltlab.sequences`): row
``i`` of a batch draws from the PCG64 stream seeded by ``stream_seeds(rng, count)[i]``,
whatever the number of threads, so the same ``rng`` gives the same streams to every sampler;
samplers that draw in fixed blocks take one bit generator per block from ``generators``.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from tiltlab import _bestofn
from tiltlab import _validation as V

__all__ = ["entropy", "generators", "log_n_param", "size_value", "small_log_n",
           "stream_seeds"]


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


def entropy(rng) -> tuple:
    """Four integers in [0, 2^63) drawn from ``rng`` as
    ``numpy.random.default_rng(rng).integers(0, 2**63, size=4)`` draws them.

    The common cases skip NumPy's objects (~20 us): an int seed (its generator's draws are
    computed in C, _bestofn.seed_entropy), a Generator over PCG64 (``integers`` over the
    power-of-two range [0, 2^63) is a raw 64-bit draw shifted right by one: the same values
    and the same state afterwards), and None (fresh entropy from the operating system, as
    ``default_rng(None)`` seeds itself)."""
    t = type(rng)
    if rng is None:
        raw = os.urandom(32)
        return tuple(int.from_bytes(raw[8 * i:8 * i + 8], "little") >> 1 for i in range(4))
    if t is int and 0 <= rng < (1 << 128):
        return _bestofn.seed_entropy(rng)
    if t is np.random.Generator and type(rng.bit_generator) is np.random.PCG64:
        return tuple(int(v) >> 1 for v in rng.bit_generator.random_raw(4))
    gen = np.random.default_rng(rng)
    return tuple(int(x) for x in gen.integers(0, 2**63, size=4, dtype=np.int64))


def generators(rng, count: int) -> list:
    """count independent bit generators derived deterministically from rng: generator b is
    ``PCG64(SeedSequence(entropy, spawn_key=(b,)))``, i.e. the b-th of
    ``SeedSequence(entropy).spawn(count)``, with ``entropy`` from :func:`entropy`; they are
    made in C (_bestofn.PCG64Stream: the same states and draws as NumPy's objects)."""
    return _bestofn.pcg64_children(entropy(rng), count)


def log_n_param(n, log_n) -> np.ndarray:
    """Exactly one of n (>= 1) and log_n (>= 0) as a float64 array of log N."""
    if (n is None) == (log_n is None):
        raise ValueError("give exactly one of n (the number of draws, >= 1) and log_n = log N"
                         + ("; both were given" if n is not None else ""))
    if n is not None:
        arr = V.param_array(n, "n")
        bad = arr < 1
        if np.any(bad):
            raise ValueError(f"n must be >= 1 (N = 1 is the reference itself); got "
                             f"{arr[bad].flat[0]!r}")
        return np.log(arr)
    arr = V.param_array(log_n, "log_n")
    bad = arr < 0
    if np.any(bad):
        raise ValueError(f"log_n must be >= 0 (N >= 1); got {arr[bad].flat[0]!r}")
    return arr


def small_log_n(n, log_n) -> float | None:
    """log N for exactly one scalar ``n >= 1`` or ``log_n >= 0`` (see V.small_scalar), with
    the value :func:`log_n_param` gives; None for anything else (the general path then
    checks and raises)."""
    if log_n is None:
        x = V.small_scalar(n)
        if x is None or not x >= 1.0:
            return None
        return float(np.log(x))
    if n is None:
        x = V.small_scalar(log_n)
        if x is None or not x >= 0.0:
            return None
        return x
    return None
