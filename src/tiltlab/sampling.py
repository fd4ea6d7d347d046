"""Fused batched samplers: draws from ``softmax(logits)`` and from the tilted policy
``phi_lam`` of every row, without writing either distribution to memory (SPEC section 2.1).

Outcomes are on the last axis; every row of the batch draws from its own PCG64 stream
(NumPy's generator), seeded from ``rng`` as :func:`tiltlab.sample_best_of_n` seeds its
streams: the same ``rng`` gives the same draws for any number of threads and on every
SIMD variant.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _interop as interop
from tiltlab import _sampling
from tiltlab import _validation as V
from tiltlab._common import stream_seeds

__all__ = ["sample_categorical", "sample_tilted"]

#: a row's draws use an alias table when ``draws * ALIAS_RATIO >= V`` (else the block
#: search); the choice depends on the row length V and the number of draws only
ALIAS_RATIO = 32
#: draws per block of parallel work (any value gives the same draws)
SEARCH_BLOCK = 4096
ALIAS_BLOCK = 65536
_INT32_MAX = int(np.iinfo(np.int32).max)
#: draws (rows x size) up to which a small call (V.small_pair) runs on the calling thread
SMALL_DRAWS = 1 << 16
# the serial drivers of small calls by dtype (V.small_pair admits these two only)
_SMALL = {np.dtype(np.float64): _sampling.small_f64, np.dtype(np.float32): _sampling.small_f32}


def _draw_shape(size) -> tuple | None:
    """``size`` as NumPy reads it: None, a non-negative int, or a tuple of them."""
    if size is None:
        return None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        items = (size,)
    elif isinstance(size, (tuple, list)):
        items = tuple(size)
    else:
        raise TypeError(f"size must be None, a non-negative integer or a tuple of them; "
                        f"got {size!r}")
    for k in items:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"size must be None, a non-negative integer or a tuple of them; "
                            f"got {size!r}")
        if k < 0:
            raise ValueError(f"size must be non-negative; got {size!r}")
    return tuple(int(k) for k in items)


def _seeds(rng, count: int) -> np.ndarray:
    """The rows' stream seeds; an ``rng`` NumPy cannot seed from is a TypeError or
    ValueError naming ``rng``."""
    if rng is None or type(rng) is int or isinstance(rng, (np.random.Generator,
                                                           np.random.SeedSequence)):
        try:
            return stream_seeds(rng, count)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"rng: {exc}") from None
    if isinstance(rng, bool) or isinstance(rng, (float, complex, str, bytes)):
        raise TypeError(f"rng must be None, an int >= 0, a numpy.random.SeedSequence or a "
                        f"numpy.random.Generator; got {rng!r}")
    try:
        return stream_seeds(rng, count)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"rng must be None, an int >= 0, a numpy.random.SeedSequence or a "
                        f"numpy.random.Generator; got {type(rng).__name__}: {exc}") from None


def _run(first, second, first_off, second_off, n_out: int, mode: int, lam: np.ndarray,
         shape: tuple | None, rng, nt: int):
    """(out, flags) of the compiled sampler over the rows given by the offsets."""
    n_rows = len(first_off)
    draws = 1 if shape is None else math.prod(shape)
    size = shape[0] if shape is not None and len(shape) == 1 else shape
    V.check_memory(n_rows * max(draws, 1) * 8,
                   f"size={size} draws for each of the {n_rows} rows")
    alias = draws * ALIAS_RATIO >= n_out and n_out <= _INT32_MAX
    out = np.empty((n_rows, max(draws, 1)), dtype=np.int64)
    flags = np.zeros(n_rows, dtype=np.int32)
    if n_rows:
        # size 0 still reads every row once: its errors are those of any other size
        k = max(draws, 1)
        nt = V.threads_for_work(n_rows * (n_out + k), nt)
        _sampling.sample_rows(first, second, first_off, second_off, n_out, mode, lam,
                              _seeds(rng, n_rows), k, alias,
                              ALIAS_BLOCK if alias else SEARCH_BLOCK, out, flags, nt)
    if np.any(flags & _sampling.FLAG_INTERNAL):
        raise RuntimeError("tiltlab: internal error: no sampling table for a row")
    return out[:, :draws], flags


def _small_call(first, second, small: tuple, mode: int, lam: float, size, rng, n_threads,
                names: tuple):
    """A small call (V.small_pair, scalar lam, size None or a small positive int): the same
    draws and errors as the general path, on the calling thread without an OpenMP region."""
    V.small_threads(n_threads)
    n_rows, n_out = small
    draws = 1 if size is None else size
    out = np.empty((n_rows, draws), dtype=np.int64)
    fl = _SMALL[first.dtype](first.reshape(-1), second.reshape(-1), n_rows, n_out, mode, lam,
                             _seeds(rng, n_rows), draws, draws * ALIAS_RATIO >= n_out, out)
    if fl & _sampling.FLAG_INTERNAL:
        raise RuntimeError("tiltlab: internal error: no sampling table for a row")
    if fl:
        V.raise_flag_bits(fl, (first, second), names)
    if size is None:
        return V.shaped(out[:, 0].copy(), first.shape[:-1])
    return out.reshape(first.shape[:-1] + (draws,))


def _small_size(size, small) -> bool:
    return small is not None and (size is None or (
        type(size) is int and 0 < size and small[0] * size <= SMALL_DRAWS))


def _shaped(out: np.ndarray, batch_shape: tuple, shape: tuple | None):
    if shape is None:
        return V.shaped(out[:, 0].copy(), batch_shape)
    return out.reshape(batch_shape + shape)


@interop.arrays("logits")
def sample_categorical(logits: ArrayLike, size=None, *, rng=None,
                       n_threads: int | None = None):
    """Outcome indices drawn from ``softmax(logits)`` of every row (SPEC section 2.1).

    One pass per row reads the logits once, block by block (the maximum and the sum of
    exponentials of each block of 256); a draw then reads one block again.  No softmax is
    written to memory.  Many draws per row (``size`` at least V/32) use an alias table
    over the row's weights instead.  The law is exact up to double rounding; ``-inf``
    logits (and masked ones) are never drawn.

    Parameters
    ----------
    logits : array_like, shape (..., V)
        Unnormalised log-probabilities on the last axis; ``-inf`` marks an impossible
        outcome.  float32 is read as float32; any strides.
    size : int or tuple of ints, optional
        Draws per row, with their shape (NumPy convention); None: one draw per row and no
        trailing axis.
    rng : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Source of randomness.  Row i draws from the PCG64 stream ``stream_seeds(rng)[i]``
        and draw d (in C order of ``size``) uses word d of it: an int seed, the
        SeedSequence of that int and a fresh ``numpy.random.default_rng`` of it give the
        same draws (a Generator is advanced by two words); a shorter ``size`` is a prefix
        of a longer one on the same path (alias table or block search).
    n_threads : int, optional
        Threads (default: all cores); the draws do not depend on it.

    Returns
    -------
    ndarray of int64, shape ``logits.shape[:-1] + size``
        Indices into the last axis (an int64 scalar for one row and ``size=None``).

    Raises
    ------
    ValueError
        NaN or +inf logits, a row without a finite logit (naming the row), no outcomes,
        a negative size, an rng NumPy rejects.
    TypeError
        Non-numeric or complex logits, a non-integer size, an rng of another type.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> logits = np.array([[0.0, 0.0, -np.inf], [-np.inf, -np.inf, 3.0]])
    >>> y = tiltlab.sample_categorical(logits, 4, rng=0)
    >>> y.shape, bool(np.all(y[0] < 2)), y[1].tolist()
    ((2, 4), True, [2, 2, 2, 2])
    """
    small = V.small_pair(logits, logits)
    if _small_size(size, small):
        return _small_call(logits, logits, small, _sampling.PLAIN, 0.0, size, rng, n_threads,
                           ("logits", "logits"))
    shape = _draw_shape(size)
    nt = V.n_threads_value(n_threads)
    arr = V.as_real_array(logits, "logits", masked=V.MASK_IMPOSSIBLE)
    if arr.ndim == 0:
        raise ValueError("logits must have at least one dimension (outcomes on the last "
                         "axis); got a scalar")
    n_out = arr.shape[-1]
    if n_out == 0:
        raise ValueError("logits has no outcomes: its last axis has length 0")
    batch_shape = arr.shape[:-1]
    dtype = V.work_dtype(arr)
    flat = np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
    n_rows = flat.size // n_out
    if flat.size == 0:
        flat = np.zeros(1, dtype)
    off = np.arange(0, n_rows * n_out, n_out, dtype=np.int64)
    out, flags = _run(flat, flat, off, off, n_out, _sampling.PLAIN, np.zeros(1), shape,
                      rng, nt)
    if np.any(flags):
        V.raise_flag_bits(int(np.bitwise_or.reduce(flags)), (arr, arr), ("logits", "logits"))
    return _shaped(out, batch_shape, shape)


@interop.arrays("logits", "rewards", "lam")
def sample_tilted(logits: ArrayLike, rewards: ArrayLike, lam: ArrayLike, size=None, *,
                  rng=None, n_threads: int | None = None):
    """Outcome indices drawn from the tilted policy ``phi_lam ∝ p e^(lam r)`` of every row
    (SPEC sections 2 and 2.1), without forming ``phi_lam``.

    As :func:`sample_categorical` on the tilted logits ``z = l + lam r``, formed on the fly
    as ``(l - l_0) + lam (r - r_0)`` with ``(l_0, r_0)`` an outcome of the row's first block:
    one pass per row over the logits and rewards.  A row where that could cost accuracy
    (``|l - l_0| + |lam (r - r_0)| > 1024`` on an outcome that carries mass, or overflow)
    is drawn relative to its dominant outcome instead, as :func:`tiltlab.tilt_stats`
    evaluates it (exact at any offset and tilt; two more passes).  ``lam = +-inf`` draws
    from the limit, ``p`` restricted to the outcomes of maximal (minimal) reward.

    Parameters
    ----------
    logits, rewards : array_like, shape (..., V)
        As in :func:`tiltlab.tilt_stats` (broadcast batch axes; rewards finite).
    lam : array_like
        Tilt per batch element, any real or ``+-inf``.
    size, rng, n_threads
        As in :func:`sample_categorical`.

    Returns
    -------
    ndarray of int64, shape ``batch + size``
        Indices into the last axis, batch the broadcast batch shape.

    Raises
    ------
    ValueError, TypeError
        The input errors of :func:`tiltlab.tilt_stats` (NaN or +inf logits, a row without a
        finite logit, non-finite rewards, NaN ``lam``, shapes that do not broadcast), and
        those of ``size`` and ``rng`` as in :func:`sample_categorical`.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> y = tiltlab.sample_tilted(np.zeros(3), [0.0, 1.0, 1.0], np.inf, size=6, rng=1)
    >>> sorted(set(y.tolist()))
    [1, 2]
    """
    small = V.small_pair(logits, rewards)
    if _small_size(size, small):
        lam_f = V.small_scalar(lam)
        if lam_f is not None:
            return _small_call(logits, rewards, small, _sampling.TILT, lam_f, size, rng,
                               n_threads, ("logits", "rewards"))
    shape = _draw_shape(size)
    nt = V.n_threads_value(n_threads)
    lam_a = V.param_array(lam, "lam")
    rows = V.prepare_rows(logits, rewards, {"lam": lam_a})
    out, flags = _run(rows.first, rows.second, rows.first_off, rows.second_off,
                      rows.n_outcomes, _sampling.TILT, rows.params["lam"], shape, rng, nt)
    V.raise_for_flags(flags, rows)
    return _shaped(out, rows.batch_shape, shape)
