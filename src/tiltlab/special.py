"""``scipy.special``'s ``logsumexp``, ``softmax`` and ``log_softmax``: the same signatures
and results, compiled and threaded, and exact where SciPy rounds.

The three functions take what their SciPy 1.17 twins take and return what they return
(shapes, dtypes, scalars for full reductions, NaN/inf results), with one difference of
signature: ``logsumexp``'s default ``axis`` is None (all axes), as SciPy's, where
``tiltlab.logsumexp`` used to reduce the last axis only.  Rows of float64 and float32 run
in compiled kernels (tl_softmax.c, tl_lse.c); complex and longdouble input, and
``logsumexp`` with weights ``b``, are computed with NumPy in their own precision.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _core
from tiltlab import _interop as interop
from tiltlab import _validation as V

__all__ = ["logsumexp", "softmax", "log_softmax"]

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)
_FAST = (_F64, _F32)
_SMALL = V.SMALL_WORK

# the serial drivers of small calls by dtype
_LSE_SMALL = {_F64: _core.logsumexp_small_f64, _F32: _core.logsumexp_small_f32}


def _normalise_axes(axis, ndim: int) -> tuple:
    """The reduced axes, sorted, in range (a 0-d array takes axis 0 or -1 as NumPy does)."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for ax in axes:
        if isinstance(ax, bool) or not isinstance(ax, numbers.Integral):
            raise TypeError(f"axis must be None, an int or a tuple of ints; got {axis!r}")
        if ndim == 0 and ax in (0, -1):
            continue
        if not -ndim <= ax < ndim:
            raise np.exceptions.AxisError(int(ax), ndim)
        out.append(int(ax) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis contains a repeated axis: {axis!r}")
    return tuple(sorted(out))


def _as_input(x, name: str) -> np.ndarray:
    """``x`` as an array of a real or complex dtype.  A masked array is read as its data, as
    SciPy reads it (its mask is not used)."""
    if isinstance(x, np.ma.MaskedArray):
        x = np.ma.getdata(x)
    elif isinstance(x, (list, tuple)) and any(isinstance(e, np.ma.MaskedArray) for e in x):
        x = [np.ma.getdata(e) for e in x]
    if type(x) is not np.ndarray:
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if x.dtype.kind == "c":
        return x
    return V.as_real_array(x, name)


def _float_dtype(dt: np.dtype) -> np.dtype:
    """SciPy's result dtype: floating and complex dtypes kept, integers and bool float64."""
    return dt if dt.kind in "fc" else _F64


def _rows_layout(arr: np.ndarray, axes: tuple):
    """(permutation moving the reduced axes last, rows, row length)."""
    keep = [d for d in range(arr.ndim) if d not in axes]
    perm = keep + list(axes)
    n = 1
    for d in axes:
        n *= arr.shape[d]
    rows = 1
    for d in keep:
        rows *= arr.shape[d]
    return perm, rows, n


def _threads(n_threads, size: int) -> int:
    if size < _SMALL:
        V.small_threads(n_threads)
        return 1
    return V.n_threads_value(n_threads)


# --------------------------------------------------------------------------------------
# softmax / log_softmax
# --------------------------------------------------------------------------------------

def _softmax_call(x, axis, n_threads, log: bool):
    # the fast path: a plain C-contiguous float64/float32 array, rows on the last axis
    if type(x) is np.ndarray and x.dtype in _FAST and x.ndim and x.flags.c_contiguous:
        if axis is None:
            n = x.size
        elif type(axis) is int and (axis == -1 or axis == x.ndim - 1):
            n = x.shape[-1]
        else:
            n = 0
        if n:
            size = x.size
            nt = _threads(n_threads, size)
            out = np.empty_like(x)
            _core.softmax_rows(x.reshape(-1), out.reshape(-1), size // n, n, log, nt)
            return out
    return _softmax_general(x, axis, n_threads, log)


def _softmax_general(x, axis, n_threads, log: bool):
    name = "x"
    arr = _as_input(x, name)
    nt = V.n_threads_value(n_threads)
    axes = _normalise_axes(axis, arr.ndim)
    if any(arr.shape[d] == 0 for d in axes):
        raise ValueError(f"{'log_softmax' if log else 'softmax'} of an empty reduction: {name} "
                         f"of shape {arr.shape} has no element along axis {axis!r}")
    rdt = _float_dtype(arr.dtype)
    if arr.dtype.kind in "iu":  # SciPy's: the dtype NumPy's exp gives (int8 -> float16, ...)
        rdt = np.exp(np.zeros(0, arr.dtype)).dtype
    if rdt.kind == "c" or rdt.itemsize > 8:  # complex, longdouble: NumPy in their precision
        return _softmax_numpy(arr.astype(rdt, copy=False), axes, log)
    wdt = _F64 if rdt == _F64 else _F32  # float16 is computed in float32 lanes
    if arr.ndim == 0:
        flat = np.array([arr], dtype=wdt)
        out = np.empty(1, wdt)
        _core.softmax_rows(flat, out, 1, 1, log, 1)
        return out.astype(rdt, copy=False).reshape(())[()]
    perm, rows, n = _rows_layout(arr, axes)
    moved = arr.transpose(perm)
    out = np.empty(moved.shape, wdt)
    if out.size:
        flat = np.ascontiguousarray(moved, dtype=wdt).reshape(-1)
        _core.softmax_rows(flat, out.reshape(-1), rows, n, log, V.threads_for_work(flat.size, nt))
    if perm != sorted(perm):
        out = out.transpose(np.argsort(perm))
    return out.astype(rdt, copy=False)


def _softmax_numpy(x: np.ndarray, axes: tuple, log: bool):
    """complex and longdouble input, in their own precision (SciPy's special values)."""
    with np.errstate(all="ignore"):
        # NumPy's maximum (lexicographic for complex: the imaginary part of the logarithms
        # is SciPy's branch)
        m = np.max(x, axis=axes, keepdims=True) if x.ndim else x
        if log:
            m = np.where(np.isfinite(m), m, 0)
            d = x - m
            out = d - np.log(np.sum(np.exp(d), axis=axes, keepdims=True))
        else:
            e = np.exp(x - m)
            out = e / np.sum(e, axis=axes, keepdims=True)
    return out.astype(x.dtype, copy=False)[()] if x.ndim == 0 else out.astype(x.dtype, copy=False)


@interop.arrays("x", cast=False)
def softmax(x: ArrayLike, axis=None, *, n_threads: int | None = None):
    """``exp(x) / sum(exp(x))`` along ``axis``: ``scipy.special.softmax``, compiled.

    Parameters
    ----------
    x : array_like
        Input (real or complex; ints and bools are read as float64).  A masked array is read
        as its data, as SciPy reads it: the mask is ignored (pass ``x.filled(-np.inf)`` to
        leave masked elements out).
    axis : int, tuple of ints or None, default None
        Axes the softmax runs over; None: the whole array (as SciPy).
    n_threads : int, optional
        Threads for the compiled kernel (default: all cores; inputs of fewer than 2^17
        elements run on the calling thread).  Results are bitwise the same for any count.

    Returns
    -------
    ndarray or scalar
        The shape of ``x``, summing to 1 along ``axis``; a scalar for 0-d input.  dtype as
        SciPy's: float32 stays float32 (computed in float64: within about one float32 ulp of
        the exact softmax of the float32 inputs, closer than SciPy's float32 arithmetic),
        float16 stays float16 (computed as float32), longdouble and complex are computed
        with NumPy in their own precision, everything else is float64.

    Raises
    ------
    ValueError
        A reduced axis has length 0 (as SciPy), or ``n_threads`` < 1.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Notes
    -----
    float64 and float32 rows are computed in one read of the input: the block maxima and the
    sum of ``exp(x - max)`` are found while the terms are written, then the terms are
    rescaled while the row is in cache.  Each difference ``x - max`` enters the exponential
    with its rounding error, so every result is within a few ulp of the exact softmax of the
    doubles passed, at any offset of the row.  Special values follow SciPy: a row containing
    NaN or ``+inf``, or only ``-inf`` values, gives NaN everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab.special import softmax
    >>> softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]), axis=1)
    array([[0.25, 0.75],
           [0.5 , 0.5 ]])
    """
    return _softmax_call(x, axis, n_threads, False)


@interop.arrays("x", cast=False)
def log_softmax(x: ArrayLike, axis=None, *, n_threads: int | None = None):
    """``x - logsumexp(x)`` along ``axis``: ``scipy.special.log_softmax``, compiled and exact.

    Parameters
    ----------
    x : array_like
        Input (real or complex; ints and bools are read as float64).  A masked array is read
        as its data, as SciPy reads it (the mask is ignored).
    axis : int, tuple of ints or None, default None
        Axes the log-softmax runs over; None: the whole array (as SciPy).
    n_threads : int, optional
        Threads for the compiled kernel (default: all cores; inputs of fewer than 2^17
        elements run on the calling thread).  Results are bitwise the same for any count.

    Returns
    -------
    ndarray or scalar
        The shape of ``x``; a scalar for 0-d input.  dtypes as :func:`softmax`.

    Raises
    ------
    ValueError
        A reduced axis has length 0 (as SciPy), or ``n_threads`` < 1.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Notes
    -----
    Computed as ``(x - M) - log1p((count - 1) + rest)`` with ``M`` the maximum, ``count``
    the entries equal to it and ``rest`` the sum of ``exp(x - M)`` over the others, each
    difference entering its exponential with its rounding error: every result is within
    about 1e-15 relative of the exact log-softmax of the doubles passed, and the result is
    a function of the rounded differences ``x - M`` only, so ``log_softmax(x + c)`` equals
    ``log_softmax(x)`` bit for bit whenever ``x + c`` is exact (any ``c``, logits up to the
    double range; SciPy's result moves with ``c``).  Special values follow SciPy: a row with
    NaN, or of only ``-inf`` values, is NaN; a row with ``+inf`` (and no NaN) is NaN at the
    ``+inf`` entries and ``-inf`` elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from tiltlab.special import log_softmax
    >>> log_softmax(np.array([1000.0, 1.0]))
    array([   0., -999.])
    """
    return _softmax_call(x, axis, n_threads, True)


# --------------------------------------------------------------------------------------
# logsumexp
# --------------------------------------------------------------------------------------

@interop.arrays("a", "b", cast=False)
def logsumexp(a: ArrayLike, axis=None, b: ArrayLike | None = None, keepdims: bool = False,
              return_sign: bool = False, *, n_threads: int | None = None):
    """``log(sum(b * exp(a)))`` without overflow: ``scipy.special.logsumexp``, compiled.

    The default ``axis`` is None (all axes), as SciPy's.  **Changed**: before this version
    ``tiltlab.logsumexp`` reduced the last axis by default; pass ``axis=-1`` for that.

    Parameters
    ----------
    a : array_like
        Input (real or complex; ints and bools are read as float64).  A masked array is read
        as its data, as SciPy reads it (the mask is ignored): to leave masked elements out
        pass ``b=~a.mask`` (or ``a.filled(-np.inf)``).
    axis : int, tuple of ints or None, default None
        Axes to reduce; None reduces all.
    b : array_like, optional
        Weights, broadcast against ``a``; they may be negative (or zero: an element with
        weight 0 is left out of the sum, whatever its value).
    keepdims : bool, default False
        Keep reduced axes with length 1.
    return_sign : bool, default False
        Return ``(log|s|, sign(s))`` for the sum ``s`` (sign +1, -1, or 0 with ``-inf`` for
        a zero sum; a complex phase for complex input).  Without it a negative sum is NaN.
    n_threads : int, optional
        Threads for the compiled kernel (unweighted real input; default: all cores, inputs
        of fewer than 2^17 elements run on the calling thread).

    Returns
    -------
    res : ndarray or scalar
        dtype as SciPy's: the result type of ``a`` and ``b``, float64 for integers and
        bools; float32 stays float32 (summed in float64), float16 stays float16 (computed in
        float32/float64), longdouble and complex are computed in their own precision.
    sgn : ndarray or scalar
        With ``return_sign`` only.

    Raises
    ------
    ValueError
        ``b`` does not broadcast against ``a``, or ``n_threads`` < 1.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Notes
    -----
    Special values as SciPy: NaN (with a non-zero weight) gives NaN; ``+inf`` (and no NaN)
    gives ``+inf``; only ``-inf`` values, or an empty reduction, give ``-inf`` (sign 0).
    An element of weight 0 is left out even when it is NaN or infinite (SciPy's rule for
    weights 0; SciPy itself returns NaN where such an element meets a reduction with no
    finite element of non-zero weight, and for infinite weights -- here an infinite
    weight gives an infinite term).  An empty reduction gives ``-inf`` in every case
    (SciPy raises IndexError for some).  A 0-d ``a`` with ``keepdims=True`` gives shape
    (1,), as SciPy.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> print(f"{tiltlab.logsumexp([1000.0, 1000.0]):.6f}")
    1000.693147
    >>> tiltlab.logsumexp([[-np.inf, -np.inf], [0.0, np.inf]], axis=1)
    array([-inf,  inf])
    >>> tiltlab.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    if (b is None and not return_sign and not keepdims and type(a) is np.ndarray
            and a.dtype in _FAST and a.ndim and a.flags.c_contiguous):
        if axis is None:
            n = a.size
        elif type(axis) is int and (axis == -1 or axis == a.ndim - 1):
            n = a.shape[-1]
        else:
            n = 0
        if n:
            size = a.size
            rows = size // n
            out = np.empty(rows, dtype=_F64)
            if size < _SMALL:
                V.small_threads(n_threads)
                _LSE_SMALL[a.dtype](a.reshape(-1), rows, n, out)
            else:
                _core.logsumexp_rows(a.reshape(-1), rows, n, out, V.n_threads_value(n_threads))
            _subnormal_results(a.reshape(rows, n), out)
            if a.dtype == _F32:
                out = out.astype(_F32)
            if axis is None or a.ndim == 1:
                return out[0]
            return out.reshape(a.shape[:-1])
    return _logsumexp_general(a, axis, b, keepdims, return_sign, n_threads)


def _logsumexp_general(a, axis, b, keepdims, return_sign, n_threads):
    arr = _as_input(a, "a")
    nt = V.n_threads_value(n_threads)
    if b is not None:
        bw = b if isinstance(b, (int, float, complex)) and not isinstance(b, bool) else \
            _as_input(b, "b")
        try:
            shape = np.broadcast_shapes(arr.shape, np.shape(bw))
        except ValueError:
            raise ValueError(f"b of shape {np.shape(bw)} does not broadcast against a of "
                             f"shape {arr.shape}") from None
        rdt = _float_dtype(np.result_type(arr, bw))
        bw = np.asarray(bw)
        if shape != arr.shape:
            arr = np.broadcast_to(arr, shape)
    else:
        rdt = _float_dtype(arr.dtype)
    axes = _normalise_axes(axis, arr.ndim)
    if b is None and rdt.kind == "f" and rdt.itemsize <= 8:
        res = _lse_compiled(arr, axes, nt)
        if return_sign:
            with np.errstate(invalid="ignore"):
                sgn = np.where(np.isnan(res), np.nan, np.where(res == -np.inf, 0.0, 1.0))
    else:
        wdt = rdt if (rdt.kind == "c" or rdt.itemsize > 8) else _F64
        res, sgn = _lse_numpy(arr, None if b is None else bw, axes, wdt)
        if wdt.kind == "c":  # res: the complex logarithm (its real part log|s|)
            res = res.real if return_sign else res
        elif not return_sign:
            res = np.where(sgn < 0, np.nan, res)
    out_shape = tuple(1 if d in axes else arr.shape[d] for d in range(arr.ndim)) if keepdims \
        else tuple(arr.shape[d] for d in range(arr.ndim) if d not in axes)
    if keepdims and arr.ndim == 0:
        out_shape = (1,)  # as SciPy

    def shaped(v, dt):
        v = np.asarray(v).astype(dt, copy=False).reshape(out_shape)
        return v[()] if v.ndim == 0 else v

    if not return_sign:
        return shaped(res, rdt)
    real = np.empty(0, rdt).real.dtype
    return shaped(res, real), shaped(sgn, rdt)


def _lse_compiled(arr: np.ndarray, axes: tuple, nt: int) -> np.ndarray:
    """Unweighted real log-sum-exp over axes: float64 results, one per kept position."""
    perm, rows, n = _rows_layout(arr, axes)
    wdt = _F32 if arr.dtype in (_F32, _F16) else _F64
    out = np.empty(rows, dtype=_F64)
    if rows == 0:
        return out
    if n == 0:
        out.fill(-np.inf)
        return out
    flat = np.ascontiguousarray(arr.transpose(perm) if arr.ndim else arr.reshape(1),
                                dtype=wdt).reshape(-1)
    _core.logsumexp_rows(flat, rows, n, out, V.threads_for_work(flat.size, nt))
    _subnormal_results(flat.reshape(rows, n), out)
    return out


def _subnormal_results(rows: np.ndarray, out: np.ndarray) -> None:
    """Rows whose log-sum-exp is below the normal range (a maximum of 0 and the other
    terms below e^-708, e.g. ``[0, -709]`` gives ``e^-709 = 1.2e-308``): the kernels'
    exponential flushes terms below e^-708 to zero, which changes only such results; they
    are recomputed here with NumPy's exp, which keeps subnormal terms (SciPy's value)."""
    tiny = np.flatnonzero(np.abs(out) < 2.3e-308)
    for i in tiny:
        r = rows[i].astype(np.float64)
        m = np.max(r)
        if not np.isfinite(m):
            continue
        top = r == m
        with np.errstate(under="ignore"):
            rest = math.fsum(np.exp(r[~top] - m))
        out[i] = m + math.log1p(float(np.count_nonzero(top)) - 1.0 + rest)


def _lse_numpy(a: np.ndarray, b, axes: tuple, wdt: np.dtype):
    """Weighted (or complex, or longdouble) log-sum-exp in NumPy: (log|s|, sign), flat over
    the kept positions.  Complex: (log s, phase) with log s the principal logarithm."""
    perm, rows, n = _rows_layout(a, axes)
    if b is None:
        b = np.ones((), dtype=wdt.type(0).real.dtype)
    b = np.broadcast_to(b, a.shape)
    if a.ndim:
        a = a.transpose(perm)
        b = b.transpose(perm)
    a = a.reshape(rows, n)
    b = b.reshape(rows, n)
    with np.errstate(all="ignore"):
        live = b != 0
        al = np.where(live, a, -np.inf).astype(wdt, copy=False)
        bl = np.where(live, b, 0).astype(wdt, copy=False)
        re = al.real
        bad = np.any(live & (np.isnan(a) | np.isnan(b)), axis=1)
        m = np.max(np.where(np.isnan(re), -np.inf, re), axis=1, initial=-np.inf)
        finite = np.isfinite(m)
        shift = np.where(finite, m, 0).astype(re.dtype)
        if wdt.kind == "c":
            s = np.sum(np.where(re > -np.inf, bl * np.exp(al - shift[:, None]), 0), axis=1)
            mag = np.abs(s)
            zero = (mag == 0) & ~bad
            phase = np.where(zero, 0, s / np.where(zero, 1, mag))
            res = np.where(zero, -np.inf, np.log(np.where(zero, 1, s)) + shift)
            return np.where(bad, np.nan, res), np.where(bad, np.nan, phase)
        # real weights: terms b exp(a - m), the terms at the maximum summed apart
        bre = bl.real
        inf_term = live & ((re == np.inf) | (np.isinf(bre) & (re > -np.inf)))
        pos_inf = np.any(inf_term & (bre > 0), axis=1)
        neg_inf = np.any(inf_term & (bre < 0), axis=1)
        bad |= np.any(live & np.isinf(bre) & (re == -np.inf), axis=1) | (pos_inf & neg_inf)
        at_max = (re == m[:, None]) & finite[:, None]
        top = np.sum(np.where(at_max, bre, 0), axis=1)
        rest = np.sum(np.where(at_max | inf_term | ~(re > -np.inf), 0,
                               bre * np.exp(re - shift[:, None])), axis=1)
        safe_top = np.where(top != 0, top, 1)
        q = rest / safe_top
        one_q = 1 + q
        val = np.where(top != 0,
                       np.log(np.abs(safe_top)) + np.where(q > -1, np.log1p(q),
                                                            np.log(-1 - q)),
                       np.log(np.abs(rest)))
        sgn = np.where(top != 0, np.sign(safe_top) * np.sign(one_q), np.sign(rest))
        val = np.where(sgn == 0, -np.inf, val + shift)
        val = np.where(finite, val, -np.inf)
        sgn = np.where(finite, sgn, 0)
        val = np.where(pos_inf | neg_inf, np.inf, val)
        sgn = np.where(pos_inf, 1, np.where(neg_inf, -1, sgn))
        val = np.where(bad, np.nan, val)
        sgn = np.where(bad, np.nan, sgn)
    return val, sgn.astype(val.dtype)

