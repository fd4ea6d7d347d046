"""Argument checking for every public function: the one place where inputs are validated.

The compiled kernels detect bad values (NaN / +inf logits, non-finite rewards, rows
without a finite logit) during their own pass over the data and report per-row flags;
the functions here turn those flags into exceptions that name the argument and the
first offending index, so valid inputs are never scanned twice.
"""

from __future__ import annotations

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


def as_real_array(x, name: str) -> np.ndarray:
    """``x`` as a NumPy array of a real dtype (float, int, uint or bool), not copied.

    A broadcast view too large to copy as float64 (e.g. ``np.broadcast_to(0.0, 10**12)``)
    is a MemoryError naming ``name``, raised before any copy is attempted; arrays that
    really hold their elements (a large memmap) are left to the caller."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
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
SMALL_WORK = 1 << 15


def threads_for_work(n_elements: int, n_threads: int) -> int:
    """n_threads, or 1 for small inputs (results are identical for any thread count)."""
    return 1 if n_elements < SMALL_WORK else n_threads


def _index_str(idx) -> str:
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
        at = f" at index {_index_str(where)}" if arr.ndim else ""
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
        at = f" at index {_index_str(where)}" if arr.ndim else ""
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

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.batch_shape, dtype=np.int64))


def _row_offsets(shape: tuple, n_outcomes: int, batch_shape: tuple) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    off = (np.arange(count, dtype=np.int64) * n_outcomes).reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(off, batch_shape).reshape(-1))


def prepare_rows(first, second, params: dict | None = None, *,
                 names: tuple = ("logits", "rewards"), row_bytes: int = 0,
                 outcome_bytes: int = 0) -> Rows:
    """Check two outcome arrays (and scalar parameters) and lay them out for the kernels.

    Checks done here: real dtypes, at least one dimension, equal and non-zero numbers of
    outcomes on the last axis, broadcastable batch shapes, and a broadcast batch whose
    layout and results fit in memory (``row_bytes`` + ``outcome_bytes`` per outcome of
    results per row; a MemoryError naming the shapes otherwise).  Values (NaN, inf) are
    checked by the kernels and reported through :func:`raise_for_flags`.
    """
    n1, n2 = names
    a = as_real_array(first, n1)
    b = as_real_array(second, n2)
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


def _check_logit_values(arr: np.ndarray, name: str) -> None:
    a = np.asarray(arr, dtype=np.float64)
    nan = np.isnan(a)
    if nan.any():
        raise ValueError(
            f"{name} contains NaN at index {_index_str(_first_where(nan))}; "
            f"{name} must be real numbers or -inf (an impossible outcome)"
        )
    pinf = a == np.inf
    if pinf.any():
        raise ValueError(
            f"{name} contains +inf at index {_index_str(_first_where(pinf))}; "
            f"logits must be finite or -inf (use -inf for impossible outcomes)"
        )


def _check_reward_values(rewards: np.ndarray, logits: np.ndarray, name: str) -> None:
    r = np.asarray(rewards, dtype=np.float64)
    bad = ~np.isfinite(r)
    if bad.any():
        where = _first_where(bad)
        v = r[where]
        what = "NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf")
        msg = (f"{name} contains {what} at index {_index_str(where)}; "
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


def _check_empty_rows(arr: np.ndarray, name: str) -> None:
    a = np.asarray(arr, dtype=np.float64)
    empty = np.all(a == -np.inf, axis=-1)
    if np.any(empty):
        where = _first_where(empty) if empty.ndim else ()
        at = f" at batch index {_index_str(where)}" if empty.ndim else ""
        raise ValueError(
            f"{name} row{at} is all -inf; every distribution needs at least one outcome "
            f"with a finite logit"
        )


def raise_for_flags(flags: np.ndarray, rows: Rows, *, second_is_logits: bool = False) -> None:
    """Raise the error described by the kernels' per-row flags (no-op when all are 0)."""
    if not np.any(flags):
        return
    f = int(np.bitwise_or.reduce(flags))
    first, second = rows.originals
    n1, n2 = rows.names
    if f & FLAG_BAD_LOGIT:
        _check_logit_values(first, n1)
    if f & FLAG_BAD_LOGIT_Q or (second_is_logits and f & FLAG_BAD_REWARD):
        _check_logit_values(second, n2)
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
        _check_empty_rows(first, n1)
    if f & FLAG_EMPTY_ROW_Q:
        _check_empty_rows(second, n2)
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
    """
    n = length_value(length)
    arrs = []
    for x, nm in ((logits, "logits"), (rewards, "rewards")):
        a = as_real_array(x, nm)
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
    m = max(lg.shape[0], rw.shape[0])
    if m > 1:
        lg = np.broadcast_to(lg, (m, lg.shape[1]))
        rw = np.broadcast_to(rw, (m, rw.shape[1]))
    _check_logit_values(lg, "logits")
    _check_empty_rows(lg, "logits")
    _check_reward_values(rw, lg, "rewards")
    return np.ascontiguousarray(lg), np.ascontiguousarray(rw), m == 1
