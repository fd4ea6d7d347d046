"""Argument checking for every public function: the one place where inputs are validated.

The compiled kernels detect bad values (NaN / +inf logits, non-finite rewards, rows
without a finite logit) during their own pass over the data and report per-row flags;
the functions here turn those flags into exceptions that name the argument and the
first offending index, so valid inputs are never scanned twice.

Masked arrays (``numpy.ma``) are read here and nowhere else (SPEC section 1).  What a mask
means depends on the argument:

- log-probabilities over outcomes (``logits``, ``logits_p``, ``logits_q``, the laws ``log_pi``
  and ``log_p`` of ``kl_estimators`` with samples): a masked outcome is impossible, exactly
  as if its logit were ``-inf`` (:data:`MASK_IMPOSSIBLE`);
- ``rewards`` (values paired with logits): a reward may be masked only where its outcome is
  impossible (masked or ``-inf`` logit in every row it broadcasts to), and is then never
  read; a masked reward of a possible outcome is ambiguous and a ValueError
  (:func:`split_mask` + :func:`masked_values`);
- every other argument (``lam``, ``kl``, ``n``, ``log_n``, ``eps``, grids, sample indices,
  per-sample values, token names): a masked element is a ValueError naming the argument
  (:data:`MASK_REFUSE`).  (``tiltlab.special`` reads masked arrays as scipy.special does:
  their data, the mask ignored.)

A masked array without any masked element is read as its data.  Results never are masked
arrays.

Arrays that result objects keep are theirs and read-only (SPEC section 1):
:func:`readonly`, :func:`freeze`, :func:`owned_rows` and :func:`owned_outcomes`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
from dataclasses import dataclass

import numpy as np

from tiltlab import _core

# flag bits reported by the kernels (csrc/tl_config.h, csrc/tl_kl.h)
FLAG_BAD_LOGIT = 1
FLAG_BAD_REWARD = 2
FLAG_EMPTY_ROW = 4
FLAG_BAD_LOGIT_Q = 32
FLAG_EMPTY_ROW_Q = 64
FLAG_REWARD_RANGE = 256

MAX_ORDER = 32


@functools.cache
def memory_limit() -> int:
    """Bytes of physical memory of this machine (2^47 where the OS does not say): no result
    larger than this is attempted."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux / macOS
        return 1 << 47


def _bytes_str(n: int) -> str:
    x = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if x < 1024:
            return f"{x:.3g} {unit}"
        x /= 1024
    return f"{x:.3g} EiB"


def check_memory(n_bytes: int, what: str) -> None:
    """MemoryError, before anything is allocated, when ``what`` needs more than the physical
    memory of the machine (``n_bytes`` is a Python int: no overflow)."""
    limit = memory_limit()
    if n_bytes > limit:
        raise MemoryError(f"{what} would need {_bytes_str(n_bytes)}, more than the "
                          f"{_bytes_str(limit)} of memory of this machine")


# what a numpy.ma mask means for an argument (module docstring)
MASK_IMPOSSIBLE = "impossible"
MASK_REFUSE = "refuse"


def _to_array(x, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None


def split_mask(x, name: str):
    """``(data, mask)``: ``x`` without its ``numpy.ma`` mask, and the boolean mask of its
    masked elements (None when no element is masked; ``data`` is then ``x`` itself unless
    ``x`` is a masked array).

    A list or tuple is converted here (as by ``np.asarray``); its elements are read with
    their masks when it holds masked arrays, which ``np.asarray`` reads as their data (rows
    of a 2-d result), or ``np.ma.masked``, which it reads as NaN.  Only then are the elements
    scanned, so long lists of numbers cost no more than before."""
    if isinstance(x, (list, tuple)):
        data = _to_array(x, name)
        if not (data.ndim >= 2 or (data.dtype.kind == "f" and np.isnan(data).any())) or \
                not any(isinstance(e, np.ma.MaskedArray) for e in x):
            return data, None
        data = _to_array([np.ma.getdata(e) for e in x], name)
        mask = _to_array([np.ma.getmaskarray(e) if isinstance(e, np.ma.MaskedArray)
                          else np.zeros(np.shape(e), dtype=bool) for e in x], name)
        if mask.shape != data.shape:  # pragma: no cover - ragged input fails above
            raise ValueError(f"{name} could not be converted to an array: its elements "
                             f"have different shapes")
        return data, (mask if mask.any() else None)
    if not isinstance(x, np.ma.MaskedArray):
        return x, None
    mask = np.ma.getmaskarray(x)
    return np.ma.getdata(x), (mask if mask.any() else None)


def refuse_mask(x, name: str, hint: str = ""):
    """``x`` without its mask; a ValueError naming ``name`` if any element is masked (the
    rule for every argument that is not a log-probability or a reward)."""
    data, mask = split_mask(x, name)
    if mask is not None:
        count = int(np.count_nonzero(mask))
        at = f" (the first at index {index_str(_first_where(mask))})" if mask.ndim else ""
        raise ValueError(
            f"{name} is a masked array with {count} masked element{'s' * (count > 1)}{at}; "
            f"a mask has no meaning for {name}: "
            + (hint or f"pass plain values (e.g. {name}.filled(value) with the value meant)"))
    return data


def as_real_array(x, name: str, *, masked: str = MASK_REFUSE, hint: str = "") -> np.ndarray:
    """``x`` as a NumPy array of a real dtype (float, int, uint or bool), not copied.

    ``masked`` says what a ``numpy.ma`` mask on ``x`` means (module docstring):
    :data:`MASK_REFUSE` (default) makes a masked element a ValueError naming ``name`` (with
    ``hint`` as the advice), :data:`MASK_IMPOSSIBLE` reads it as ``-inf`` (a copy, float64,
    or float32 for float32 data).

    A broadcast view too large to copy as float64 (e.g. ``np.broadcast_to(0.0, 10**12)``)
    is a MemoryError naming ``name``, raised before any copy is attempted; arrays that
    really hold their elements (a large memmap) are left to the caller."""
    if type(x) is np.ndarray:  # the common case: a plain array carries no mask
        arr = x
    else:
        if masked == MASK_IMPOSSIBLE:
            x, mask = split_mask(x, name)
            if mask is not None:
                data = as_real_array(x, name)
                out = data.astype(np.float32 if data.dtype == np.float32 else np.float64)
                out[mask] = -np.inf
                return out
        elif masked == MASK_REFUSE:
            x = refuse_mask(x, name, hint)
        else:  # pragma: no cover - a programming error
            raise ValueError(f"unknown mask rule {masked!r}")
        arr = x if isinstance(x, np.ndarray) else _to_array(x, name)
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real-valued; got complex dtype {arr.dtype}")
    if kind not in "fiub":
        raise TypeError(f"{name} must be an array of real numbers; got dtype {arr.dtype}")
    if int(arr.size) * 8 > memory_limit() and _span_bytes(arr) < int(arr.size) * arr.itemsize:
        # a view repeating its memory (np.broadcast_to): any copy needs the full size
        check_memory(int(arr.size) * 8, f"{name} of shape {arr.shape} (a broadcast view, "
                                        f"copied as float64)")
    return arr


def _span_bytes(arr: np.ndarray) -> int:
    """Bytes between the first and the last element of ``arr`` (its memory footprint)."""
    if arr.size == 0:
        return 0
    return arr.itemsize + sum((int(n) - 1) * abs(int(st))
                              for n, st in zip(arr.shape, arr.strides, strict=True))


def work_dtype(*arrays: np.ndarray) -> np.dtype:
    """float32 if every array is float32, else float64 (SPEC section 1)."""
    if all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


# Explicit thread counts above this are errors: OpenMP would try to start them all (10^9
# threads abort the process inside libgomp; 2^40 does not fit a C int).
MAX_THREADS = max(1024, 4 * (os.cpu_count() or 1))


def n_threads_value(n_threads) -> int:
    """Resolve ``n_threads`` (None = all cores as OpenMP reports) to a positive int.

    In a process forked (``os.fork``, :mod:`multiprocessing` with the fork start method)
    from one that had imported tiltlab this is 1 whatever is asked (an explicit value is
    still checked): the parent's OpenMP thread pool does not survive fork, and a parallel
    region with more than one thread would wait for it forever.  Results are bitwise the
    same for any thread count.  The compiled drivers apply the same limit themselves."""
    if n_threads is None:
        return int(_core.max_threads())
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be None or a positive integer; got {n_threads!r}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1; got {n_threads}")
    if n_threads > MAX_THREADS:
        raise ValueError(f"n_threads must be at most {MAX_THREADS}; got {n_threads}")
    return int(_core.effective_threads(int(n_threads)))


# Below this many elements a kernel runs on one thread: waking a team costs more than the
# work, and far more when another process holds a core.  Results do not depend on it.
# Measured (2 cores, AVX2 kernels, passive waiting: a sleeping OpenMP thread takes ~30 us
# to wake on this virtual machine, several times per call): 2 threads against 1 at 2^16,
# 2^17 and 2^18 elements (one row / 16 rows) gave tilt_stats 1.29/0.77, 1.35/1.34,
# 1.68/0.99; logsumexp 0.63/0.71, 0.97/0.97, 1.52/0.99; kl_divergence 0.80/0.83,
# 1.16/0.96, 1.41/0.99.  The samplers split draws in blocks of 65536 (threads_for_blocks):
# 2 blocks on 2 threads gave 1.23.  Faster kernels move the crossover up: measure again
# (bench/ and the thread-scaling runs) when the per-element cost changes.
SMALL_WORK = 1 << 17


def threads_for_work(n_elements: int, n_threads: int) -> int:
    """n_threads, or 1 for small inputs (results are identical for any thread count)."""
    return 1 if n_elements < SMALL_WORK else n_threads


def threads_for_blocks(n_blocks: int, n_threads: int) -> int:
    """Threads for a sampler whose parallel work is ``n_blocks`` blocks of draws (each with
    its own bit generator): never more than the blocks, since a thread without a block only
    costs its wake-up (results are identical for any thread count)."""
    return max(1, min(n_threads, n_blocks))


# --------------------------------------------------------------------------------------
# the fast path of small calls
# --------------------------------------------------------------------------------------
#
# A call on small plain arrays (a row of a few hundred outcomes inside a research loop)
# must not pay microseconds of general checks for nothing.  The functions below recognise
# the common case cheaply and return None for anything else, which then takes the general
# path: every check of the general path is either implied by the case (dtype, shape,
# memory) or done by the kernels, whose flags raise the same errors (raise_flag_bits).

_FAST_DTYPES = frozenset((np.dtype(np.float64), np.dtype(np.float32)))
_F64 = np.dtype(np.float64)


def small_pair(first, second) -> tuple | None:
    """``(n_rows, n_outcomes)`` when ``first`` and ``second`` are plain ``numpy.ndarray``s
    (no subclass, no mask) of one native float64 or float32 dtype and one shape, 1-d
    ``(V,)`` or 2-d ``(n_rows, V)`` with ``V >= 1`` and ``n_rows >= 1``, C-contiguous and
    aligned, with fewer than :data:`SMALL_WORK` elements: row ``i`` is then
    ``first.reshape(-1)[i * V:(i + 1) * V]`` and one thread does the work.  None
    otherwise."""
    if type(first) is not np.ndarray or type(second) is not np.ndarray:
        return None
    shape = first.shape
    if second.shape != shape or first.dtype not in _FAST_DTYPES or \
            second.dtype != first.dtype:
        return None
    if len(shape) == 1:
        n_rows, n_out = 1, shape[0]
    elif len(shape) == 2:
        n_rows, n_out = shape
    else:
        return None
    if not 0 < n_rows * n_out < SMALL_WORK:
        return None
    f, g = first.flags, second.flags
    if not (f.c_contiguous and f.aligned and g.c_contiguous and g.aligned):
        return None
    return n_rows, n_out


def small_scalar(x) -> float | None:
    """``x`` as a float when it is a finite Python float, NumPy float64 scalar or Python int
    of at most 2^53 in magnitude (converted exactly, as :func:`param_array` converts it);
    None otherwise (NaN, infinities, arrays, other types: the general path decides)."""
    t = type(x)
    if t is float or t is np.float64:
        x = float(x)
    elif t is int and -(1 << 53) <= x <= (1 << 53):
        x = float(x)
    else:
        return None
    return x if x - x == 0.0 else None


def small_owned_rows(first, second, small: tuple, params: dict,
                     names: tuple = ("logits", "rewards")) -> Rows:
    """``owned_rows(prepare_rows(first, second, params))`` for a :func:`small_pair` and
    scalar float ``params``: copies of the arrays, read-only, laid out as prepare_rows lays
    them out (nothing is checked here: the caller has done it)."""
    n_rows, n_out = small
    a = readonly(first.reshape(-1).copy())
    b = readonly(second.reshape(-1).copy())
    off = readonly(np.arange(0, n_rows * n_out, n_out, dtype=np.int64))
    return Rows(first=a, second=b, first_off=off, second_off=off,
                n_outcomes=n_out, batch_shape=first.shape[:-1],
                params={k: readonly(np.full(n_rows, v, dtype=np.float64))
                        for k, v in params.items()},
                names=names, originals=(a.reshape(first.shape), b.reshape(second.shape)),
                owned=True)


def small_threads(n_threads) -> None:
    """Check an explicit ``n_threads`` as :func:`n_threads_value` does (small work runs on
    one thread whatever it is)."""
    if n_threads is not None:
        n_threads_value(n_threads)


def index_str(idx) -> str:
    return "(" + ", ".join(str(int(i)) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def _first_where(mask: np.ndarray):
    return tuple(np.argwhere(mask)[0])


def param_array(x, name: str, *, allow_inf: bool = True) -> np.ndarray:
    """A float64 parameter array (lam, kl, ...) without NaN; booleans are rejected."""
    arr = as_real_array(x, name)
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must be a real number (or an array of them), not a boolean; "
                        f"got dtype bool")
    arr = arr.astype(np.float64, copy=False)
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if bad.any():
        where = _first_where(bad) if arr.ndim else ()
        what = "NaN" if np.isnan(arr[where]) else "an infinite value"
        at = f" at index {index_str(where)}" if arr.ndim else ""
        must = "a real number or +-inf" if allow_inf else "finite"
        raise ValueError(f"{name} contains {what}{at}; {name} must be {must}")
    return arr


def scalar_param(x, name: str, *, allow_inf: bool = True) -> float:
    """A single real number (no NaN)."""
    arr = param_array(x, name, allow_inf=allow_inf)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a single number; got an array of shape {arr.shape}")
    return float(arr)


def nonnegative_param(x, name: str) -> np.ndarray:
    arr = param_array(x, name)
    neg = arr < 0
    if neg.any():
        where = _first_where(neg) if arr.ndim else ()
        at = f" at index {index_str(where)}" if arr.ndim else ""
        raise ValueError(f"{name} must be >= 0; got {arr[where]!r}{at}")
    return arr


@dataclass(frozen=True)
class Rows:
    """Two arrays with outcomes on the last axis, laid out for the kernels.

    Row ``i`` of the broadcast batch is ``first[first_off[i]:first_off[i] + n_outcomes]``
    (likewise ``second``); broadcast rows share memory through the offsets.
    """

    first: np.ndarray
    second: np.ndarray
    first_off: np.ndarray
    second_off: np.ndarray
    n_outcomes: int
    batch_shape: tuple
    params: dict
    names: tuple
    originals: tuple
    owned: bool = False   # made by owned_rows: nothing shared with the caller, read-only

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.batch_shape, dtype=np.int64))


def _row_offsets(shape: tuple, n_outcomes: int, batch_shape: tuple) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    off = (np.arange(count, dtype=np.int64) * n_outcomes).reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(off, batch_shape).reshape(-1))


def masked_values(values: np.ndarray, mask: np.ndarray, logits: np.ndarray, name: str,
                  logits_name: str = "logits") -> np.ndarray:
    """``values`` (rewards) with their masked entries replaced by 0, after checking that
    each masked entry belongs to an impossible outcome: ``-inf`` in ``logits`` (masks
    already applied) in every row it broadcasts to.  A masked reward of a possible outcome
    is a ValueError naming ``name`` and the first such index (of ``values``)."""
    try:
        shape = np.broadcast_shapes(values.shape, logits.shape)
    except ValueError:
        raise ValueError(f"{name} of shape {values.shape} does not broadcast with "
                         f"{logits_name} of shape {logits.shape}") from None
    impossible = np.isneginf(np.asarray(logits, dtype=np.float64))
    bad = np.broadcast_to(mask, shape) & ~np.broadcast_to(impossible, shape)
    if bad.any():
        lead = bad.ndim - values.ndim
        if lead:
            bad = bad.any(axis=tuple(range(lead)))
        spread = tuple(i for i, k in enumerate(values.shape) if k == 1 and bad.shape[i] != 1)
        if spread:
            bad = bad.any(axis=spread, keepdims=True)
        raise ValueError(
            f"{name} is masked at index {index_str(_first_where(bad))} where the outcome is "
            f"possible ({logits_name} is not -inf there); a masked value of a possible "
            f"outcome is ambiguous: mask the outcome in {logits_name} too (or give it a -inf "
            f"logit) to exclude it, or pass its value")
    out = values.astype(np.float32 if values.dtype == np.float32 else np.float64)
    out[mask] = 0.0
    return out


def prepare_rows(first, second, params: dict | None = None, *,
                 names: tuple = ("logits", "rewards"), row_bytes: int = 0,
                 outcome_bytes: int = 0, second_is_logits: bool = False) -> Rows:
    """Check two outcome arrays (and scalar parameters) and lay them out for the kernels.

    Checks done here: real dtypes, at least one dimension, equal and non-zero numbers of
    outcomes on the last axis, broadcastable batch shapes, and a broadcast batch whose
    layout and results fit in memory (``row_bytes`` + ``outcome_bytes`` per outcome of
    results per row; a MemoryError naming the shapes otherwise).  Values (NaN, inf) are
    checked by the kernels and reported through :func:`raise_for_flags`.

    Masks (module docstring): ``first`` is logits (masked = ``-inf``); ``second`` is rewards
    (masked only where impossible), or logits too with ``second_is_logits``.  ``originals``
    are the two arrays with their masks applied (else the caller's arrays, not copied).
    """
    n1, n2 = names
    a = as_real_array(first, n1, masked=MASK_IMPOSSIBLE)
    if second_is_logits:
        b, b_mask = as_real_array(second, n2, masked=MASK_IMPOSSIBLE), None
    else:
        b, b_mask = split_mask(second, n2)
        b = as_real_array(b, n2)
    for arr, nm in ((a, n1), (b, n2)):
        if arr.ndim == 0:
            raise ValueError(
                f"{nm} must have at least one dimension (outcomes on the last axis); got a scalar"
            )
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{n2} has {b.shape[-1]} outcomes on its last axis but {n1} has {a.shape[-1]}; "
            f"outcomes must be on the last axis of both (shapes {b.shape} and {a.shape})"
        )
    n_outcomes = a.shape[-1]
    if n_outcomes == 0:
        raise ValueError(f"{n1} has no outcomes: its last axis has length 0")
    params = dict(params or {})
    shapes = [a.shape[:-1], b.shape[:-1]] + [np.shape(v) for v in params.values()]
    try:
        batch_shape = np.broadcast_shapes(*shapes)
    except ValueError:
        parts = [f"{n1} batch shape {a.shape[:-1]}", f"{n2} batch shape {b.shape[:-1]}"]
        parts += [f"{k} shape {np.shape(v)}" for k, v in params.items()]
        raise ValueError(
            "cannot broadcast " + ", ".join(parts) + " (leading axes broadcast NumPy-style)"
        ) from None
    n_rows = 1
    for d in batch_shape:
        n_rows *= int(d)
    per_row = 8 * (2 + len(params)) + int(row_bytes) + int(outcome_bytes) * int(n_outcomes)
    if n_rows * per_row > memory_limit():
        parts = [f"{n1} {a.shape}", f"{n2} {b.shape}"]
        parts += [f"{k} {np.shape(v)}" for k, v in params.items()]
        check_memory(n_rows * per_row,
                     f"the broadcast batch shape {tuple(batch_shape)} x {n_outcomes} outcomes "
                     f"(from the shapes " + ", ".join(parts) + ")")
    if b_mask is not None:
        b = masked_values(b, b_mask, a, n2, n1)
    dtype = work_dtype(a, b)
    a_c = np.ascontiguousarray(a, dtype=dtype).reshape(-1)
    b_c = np.ascontiguousarray(b, dtype=dtype).reshape(-1)
    if a_c.size == 0:
        a_c = np.zeros(1, dtype)
    if b_c.size == 0:
        b_c = np.zeros(1, dtype)
    flat = {
        k: np.ascontiguousarray(np.broadcast_to(v, batch_shape).reshape(-1), dtype=np.float64)
        for k, v in params.items()
    }
    return Rows(
        first=a_c,
        second=b_c,
        first_off=_row_offsets(a.shape[:-1], n_outcomes, batch_shape),
        second_off=_row_offsets(b.shape[:-1], n_outcomes, batch_shape),
        n_outcomes=n_outcomes,
        batch_shape=tuple(batch_shape),
        params=flat,
        names=names,
        originals=(a, b),
    )


def check_logit_values(arr: np.ndarray, name: str) -> None:
    a = np.asarray(arr, dtype=np.float64)
    nan = np.isnan(a)
    if nan.any():
        raise ValueError(
            f"{name} contains NaN at index {index_str(_first_where(nan))}; "
            f"{name} must be real numbers or -inf (an impossible outcome)"
        )
    pinf = a == np.inf
    if pinf.any():
        raise ValueError(
            f"{name} contains +inf at index {index_str(_first_where(pinf))}; "
            f"logits must be finite or -inf (use -inf for impossible outcomes)"
        )


def _check_reward_values(rewards: np.ndarray, logits: np.ndarray, name: str) -> None:
    r = np.asarray(rewards, dtype=np.float64)
    bad = ~np.isfinite(r)
    if bad.any():
        where = _first_where(bad)
        v = r[where]
        what = "NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf")
        msg = (f"{name} contains {what} at index {index_str(where)}; "
               f"{name} must be finite")
        try:
            lg = np.broadcast_to(logits, np.broadcast_shapes(logits.shape, r.shape))
            rb = np.broadcast_to(bad, lg.shape)
            if np.any(np.isneginf(np.asarray(lg, dtype=np.float64)[rb])):
                msg += (" (also where the logit is -inf: give impossible outcomes any finite "
                        "reward, e.g. 0)")
        except ValueError:
            pass
        raise ValueError(msg)


def check_empty_rows(arr: np.ndarray, name: str) -> None:
    a = np.asarray(arr, dtype=np.float64)
    empty = np.all(a == -np.inf, axis=-1)
    if np.any(empty):
        where = _first_where(empty) if empty.ndim else ()
        at = f" at batch index {index_str(where)}" if empty.ndim else ""
        raise ValueError(
            f"{name} row{at} is all -inf; every distribution needs at least one outcome "
            f"with a finite logit"
        )


def raise_for_flags(flags: np.ndarray, rows: Rows, *, second_is_logits: bool = False) -> None:
    """Raise the error described by the kernels' per-row flags (no-op when all are 0)."""
    if not np.any(flags):
        return
    raise_flag_bits(int(np.bitwise_or.reduce(flags)), rows.originals, rows.names,
                    second_is_logits=second_is_logits)


def raise_flag_bits(f: int, originals: tuple, names: tuple = ("logits", "rewards"), *,
                    second_is_logits: bool = False) -> None:
    """Raise the error described by the flags ``f`` of the kernels (or-ed over the rows) for
    the two arrays ``originals`` (masks applied) named ``names``; no-op when ``f`` is 0."""
    if not f:
        return
    first, second = originals
    n1, n2 = names
    if f & FLAG_BAD_LOGIT:
        check_logit_values(first, n1)
    if f & FLAG_BAD_LOGIT_Q or (second_is_logits and f & FLAG_BAD_REWARD):
        check_logit_values(second, n2)
    if f & FLAG_BAD_REWARD and not second_is_logits:
        _check_reward_values(second, first, n2)
    if f & FLAG_REWARD_RANGE:
        r = np.asarray(second, dtype=np.float64)
        raise ValueError(
            f"{n2} span more than the float64 range (differences of values as large as "
            f"{np.max(np.abs(r)):.3g} overflow); rescale them, e.g. divide by their largest "
            f"magnitude"
        )
    if f & FLAG_EMPTY_ROW:
        check_empty_rows(first, n1)
    if f & FLAG_EMPTY_ROW_Q:
        check_empty_rows(second, n2)
    raise ValueError(  # pragma: no cover - the checks above always find the cause
        f"invalid values in {n1}/{n2} (kernel flags {f})"
    )


def order_value(order) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise TypeError(f"order must be a positive integer; got {order!r}")
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be between 1 and {MAX_ORDER}; got {order}")
    return int(order)


def shaped(values: np.ndarray, batch_shape: tuple, trailing: tuple = ()):
    """Reshape a flat result to the batch shape; 0-d results become NumPy scalars."""
    out = values.reshape(batch_shape + trailing)
    if out.ndim == 0:
        return out[()]
    return out


MAX_LENGTH = 1 << 31


def length_value(length, name: str = "length") -> int:
    """A positive integer sequence length."""
    if isinstance(length, bool) or not isinstance(length, numbers.Integral):
        if isinstance(length, float) and length.is_integer():
            length = int(length)
        else:
            raise TypeError(f"{name} must be a positive integer; got {length!r}")
    if length < 1:
        raise ValueError(f"{name} must be >= 1; got {length}")
    if length > MAX_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_LENGTH}; got {length}")
    return int(length)


def memoryless_inputs(logits, rewards, length):
    """Per-position logits and rewards of a memoryless model as float64 (m, V) arrays.

    m = 1 for a stationary model (both inputs of shape (V,) or (1, V)), else m = length
    (either input may still be (V,) and is then repeated).  Values are checked here:
    NaN or +inf logits, rows without a finite logit and non-finite rewards are errors.
    Masks as in :func:`prepare_rows`.  The arrays are the model's own (copies) and read-only.
    """
    n = length_value(length)
    lg0 = as_real_array(logits, "logits", masked=MASK_IMPOSSIBLE)
    rw0, rw_mask = split_mask(rewards, "rewards")
    rw0 = as_real_array(rw0, "rewards")
    arrs = []
    for a, nm in ((lg0, "logits"), (rw0, "rewards")):
        if a.ndim not in (1, 2):
            raise ValueError(f"{nm} must have shape (V,) (stationary) or (length, V) (one row "
                             f"per position); got shape {a.shape}")
        if a.ndim == 2 and a.shape[0] not in (1, n):
            raise ValueError(f"{nm} has {a.shape[0]} rows but length is {n}; give one row "
                             f"per position, or shape (V,) for a stationary model")
        if a.shape[-1] == 0:
            raise ValueError(f"{nm} has no outcomes: its last axis has length 0")
        arrs.append(np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1]))
    lg, rw = arrs
    if lg.shape[1] != rw.shape[1]:
        raise ValueError(f"rewards has {rw.shape[1]} outcomes on its last axis but logits has "
                         f"{lg.shape[1]}")
    if lg.shape[1] == 0:
        raise ValueError("logits has no outcomes: its last axis has length 0")
    if rw_mask is not None:
        rw = masked_values(rw0, rw_mask, lg0, "rewards").astype(np.float64).reshape(rw.shape)
    m = max(lg.shape[0], rw.shape[0])
    if m > 1:
        lg = np.broadcast_to(lg, (m, lg.shape[1]))
        rw = np.broadcast_to(rw, (m, rw.shape[1]))
    check_logit_values(lg, "logits")
    check_empty_rows(lg, "logits")
    _check_reward_values(rw, lg, "rewards")
    return (readonly(np.array(lg, dtype=np.float64, order="C")),
            readonly(np.array(rw, dtype=np.float64, order="C")), m == 1)


# --------------------------------------------------------------------------------------
# arrays kept by result objects (SPEC section 1): theirs, and read-only
# --------------------------------------------------------------------------------------

def readonly(arr):
    """Mark ``arr`` read-only in place and return it (views taken later inherit it); values
    that are not arrays (NumPy scalars, floats) are returned as they are.  Only for arrays
    the caller owns: never the user's."""
    if isinstance(arr, np.ndarray):
        arr.flags.writeable = False
    return arr


def freeze(obj) -> None:
    """Make the arrays a result dataclass keeps read-only (from its ``__post_init__``):
    every ndarray field, and a :class:`Rows` field replaced by :func:`owned_rows`.  The
    other array fields must hold arrays the object owns."""
    for name in _field_names(type(obj)):
        value = getattr(obj, name)
        if isinstance(value, Rows):
            object.__setattr__(obj, name, owned_rows(value))
        else:
            readonly(value)


@functools.cache
def _field_names(cls) -> tuple:
    return tuple(f.name for f in dataclasses.fields(cls))


def owned_rows(rows: Rows) -> Rows:
    """``rows`` for an object to keep: data shared with the caller's arrays is copied,
    every array is read-only, and ``originals`` become views of the kept data in the
    caller's shapes (so a caller changing its arrays later changes nothing)."""
    if rows.owned:
        return rows
    a, b = rows.originals

    def own(data):
        if any(np.may_share_memory(data, x) for x in (a, b)):
            check_memory(data.nbytes, f"a copy of {' and '.join(rows.names)} of "
                                      f"{data.size} elements (kept by the result)")
            data = data.copy()
        return readonly(data)

    first, second = own(rows.first), own(rows.second)
    return dataclasses.replace(
        rows, first=first, second=second,
        first_off=readonly(rows.first_off), second_off=readonly(rows.second_off),
        params={k: readonly(v.copy()) for k, v in rows.params.items()},
        originals=(first[:a.size].reshape(a.shape), second[:b.size].reshape(b.shape)),
        owned=True)


def owned_outcomes(logits, rewards, names: tuple = ("logits", "rewards")):
    """float64 copies of ``logits`` and ``rewards`` with their masks applied (module
    docstring), read-only: for an object that keeps them.  Values are not checked here."""
    n1, n2 = names
    lg = as_real_array(logits, n1, masked=MASK_IMPOSSIBLE)
    rw, mask = split_mask(rewards, n2)
    rw = as_real_array(rw, n2)
    if mask is not None:
        rw = masked_values(rw, mask, lg, n2, n1)
    return (readonly(np.array(lg, dtype=np.float64, order="C")),
            readonly(np.array(rw, dtype=np.float64, order="C")))


def markov_inputs(initial_logits, transition_logits, rewards, initial_rewards):
    """Inputs of a first-order Markov token model (SPEC section 9) as float64 arrays.

    Returns ``(initial_logits (V,), transition_logits (V, V), r0 (V,), r (V, V))``, the
    rewards folded into one form: per-token rewards (V,) give ``r0 = rewards`` and
    ``r(s, s') = rewards[s']``; per-transition rewards (V, V) give ``r = rewards`` and
    ``r0 = initial_rewards`` (0 when not given).  NaN or +inf logits, rows of all ``-inf``
    (also of a state that is never reached), non-finite rewards and shapes that do not
    match are errors naming the argument.  The arrays are the model's own and read-only.
    """
    l0 = as_real_array(initial_logits, "initial_logits").astype(np.float64)
    if l0.ndim != 1 or l0.shape[0] == 0:
        raise ValueError(f"initial_logits must have shape (V,) with V >= 1; got shape "
                         f"{l0.shape}")
    v = l0.shape[0]
    lt = as_real_array(transition_logits, "transition_logits").astype(np.float64)
    if lt.shape != (v, v):
        raise ValueError(f"transition_logits must have shape (V, V) = ({v}, {v}) (row s: the "
                         f"logits of the token that follows s); got shape {lt.shape}")
    rw = as_real_array(rewards, "rewards").astype(np.float64)
    if rw.shape not in ((v,), (v, v)):
        raise ValueError(f"rewards must have shape (V,) = ({v},) (per token) or (V, V) = "
                         f"({v}, {v}) (per transition); got shape {rw.shape}")
    check_logit_values(l0, "initial_logits")
    check_empty_rows(l0, "initial_logits")
    check_logit_values(lt, "transition_logits")
    empty = np.all(lt == -np.inf, axis=1)
    if empty.any():
        raise ValueError(f"transition_logits row {int(np.argmax(empty))} is all -inf; every "
                         f"state needs at least one possible successor (a finite logit), "
                         f"also a state that is never reached")
    if rw.ndim == 1:
        if initial_rewards is not None:
            raise ValueError("initial_rewards is only for per-transition rewards (shape "
                             "(V, V)); per-token rewards (V,) already reward the first token")
        _check_reward_values(rw, l0, "rewards")
        r0 = rw.copy()
        r = np.broadcast_to(rw, (v, v)).copy()
    else:
        _check_reward_values(rw, lt, "rewards")
        r = rw.copy()
        if initial_rewards is None:
            r0 = np.zeros(v)
        else:
            r0 = as_real_array(initial_rewards, "initial_rewards").astype(np.float64)
            if r0.shape != (v,):
                raise ValueError(f"initial_rewards must have shape (V,) = ({v},); got shape "
                                 f"{r0.shape}")
            _check_reward_values(r0, l0, "initial_rewards")
            r0 = r0.copy()
    return tuple(readonly(np.ascontiguousarray(a)) for a in (l0, lt, r0, r))
