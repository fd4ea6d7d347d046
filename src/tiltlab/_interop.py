"""Array interoperability at the public boundary: DLPack / PyTorch inputs, dtype kept.

One decorator, :func:`arrays`, applied with one line per public function, names the
arguments that may hold arrays::

    @interop.arrays("logits", "rewards", "lam")
    def tilt_stats(logits, rewards, lam, *, n_threads=None): ...

What it does for those arguments (SPEC section 1, "dtypes" and "PyTorch"):

- **DLPack inputs.**  An object with ``__dlpack__`` that is not a NumPy array (a CPU
  ``torch.Tensor``, a CPU JAX array, ...) is read with ``numpy.from_dlpack``: zero-copy,
  strides included.  A device other than the CPU (``__dlpack_device__()[0] != 1``, e.g. a
  CUDA tensor) is a TypeError naming the argument and the fix (``.cpu()``).  A torch tensor
  that requires grad is a TypeError too (tiltlab's results carry no gradient; pass
  ``x.detach()``): detaching silently would let a training script believe a gradient flows.
  A ``torch.bfloat16`` tensor (which NumPy has no dtype for) is read as float32 (a copy,
  exact: every bfloat16 is a float32).
- **Result type.**  When at least one named argument was a torch tensor, every array and
  reduction of the result comes back as a torch tensor (``torch.from_numpy``, zero-copy
  on the fresh result arrays): plain arrays, 0-d results and Python-float reductions (0-d
  tensors), tuples, named tuples, lists, and the library's result objects (see below).
  Integer results (outcome indices) are int64 tensors.  Other DLPack producers get NumPy
  results.  ``torch`` is taken from ``sys.modules`` (it is imported, since a tensor
  exists): importing tiltlab never imports torch.
- **dtype kept.**  The float dtype of the results follows the floating inputs, as torch
  promotes: the named arguments with at least one dimension decide; if there are none, the
  0-d arrays and NumPy scalars decide; Python scalars and lists never do (a float64 Python
  ``lam`` does not promote float32 ``logits``), nor do integer and bool arrays.  If every
  deciding input is float32, float16 or bfloat16, every float64 array and scalar of the
  result becomes float32 (computed in float64, cast once at the end).  float16 and
  bfloat16 give float32 results, not half precision: log-probabilities, moments and KLs
  need more than 11 bits and 65504 of range.  float64 and longdouble inputs give float64
  results (the kernels compute in double; longdouble inputs are rounded to double on entry).
  ``cast=False`` turns the dtype rule off for functions that manage their own dtypes
  (``tiltlab.special``): their results are only converted to tensors.
- **Result objects.**  A result object (a dataclass of tiltlab: :class:`BestOfN`,
  :class:`PolicyLaw`, :class:`KLEstimates`, :class:`EstimatorStudy`,
  :class:`SequenceBestOfN`, :class:`Asymptotics`) returned for converted inputs is a
  *view* of the float64 NumPy object: an instance of a subclass (``isinstance`` holds)
  whose public array and float fields are converted (float32 / tensors) and whose methods
  and lazy properties (``log_probs``, ``kl_to_tilted``, ``sample``) run on the float64
  object and convert their results the same way.  Its NumPy float32 arrays are read-only
  like the float64 ones (SPEC section 1); its tensor fields are copies of the object's
  arrays (torch has no read-only tensors): writing into one changes that tensor only,
  never what the methods compute.  Passed back to tiltlab (``estimator_study``), it is
  read as the float64 object.

Calls from inside tiltlab (the caller's module is ``tiltlab`` or ``tiltlab.*``) pass
through untouched, so internal computations keep float64 intermediates.  The check for the
common case -- every named argument a float64 or integer ndarray, a Python number, a list
or None -- costs a few tens of nanoseconds per argument.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from types import NoneType

import numpy as np

__all__ = ["arrays", "asarray"]

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_F32_MAX = float(np.finfo(np.float32).max)
_NDARRAY = np.ndarray
# argument types that never need the slow path: they carry no float dtype that decides,
# and are no tensor
_PLAIN = frozenset({float, int, bool, NoneType, list, str, np.float64, np.int64})
_MISSING = object()
_KDLCPU = 1  # DLPack device type of the CPU
_KW = 1 << 30  # slot of a keyword-only parameter
_VIEWS = set()  # the result view classes (see _view_class)


def _torch_of(x):
    """The torch module when ``x`` is a torch tensor (torch is then imported), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    return None


def asarray(x, name: str):
    """``x`` as NumPy when it is a DLPack object (not an ndarray): ``numpy.from_dlpack``,
    zero-copy; anything else is returned as it is.  The errors of :func:`arrays` (non-CPU
    device, torch tensor that requires grad, unsupported dtype) name ``name``."""
    if isinstance(x, (np.ndarray, np.generic)) or not hasattr(type(x), "__dlpack__"):
        return x
    return _from_dlpack(x, name, _torch_of(x))


def _from_dlpack(x, name: str, torch):
    try:
        device = x.__dlpack_device__()
    except Exception:  # noqa: BLE001 - a producer without a device query: let DLPack decide
        device = None
    if device is not None and int(device[0]) != _KDLCPU:
        raise TypeError(
            f"{name} is on a {_device_name(x, device)} device; tiltlab computes on the CPU: "
            f"pass {name}.cpu() (a copy to host memory)")
    if torch is not None:
        if x.requires_grad:
            raise TypeError(
                f"{name} is a torch tensor that requires grad; tiltlab's results carry no "
                f"gradient: pass {name}.detach()")
        if x.dtype == torch.bfloat16:
            x = x.float()  # exact: every bfloat16 is a float32
        if x.is_conj() or x.is_neg():
            x = x.resolve_conj().resolve_neg()
    try:
        return np.from_dlpack(x)
    except (TypeError, BufferError, RuntimeError, ValueError) as exc:
        raise TypeError(f"{name} could not be read through DLPack: {exc}") from None


def _device_name(x, device) -> str:
    dev = getattr(x, "device", None)
    if dev is not None and not callable(dev):
        return f"{dev!s} (DLPack device type {int(device[0])})"
    return f"non-CPU (DLPack device type {int(device[0])})"


# --------------------------------------------------------------------------------------
# the decorator
# --------------------------------------------------------------------------------------

def arrays(*names: str, cast: bool = True, results: bool = True):
    """Decorator: the named arguments of a public function may be DLPack objects (torch
    tensors) and decide the dtype of its results (module docstring).

    Parameters
    ----------
    *names : str
        Parameters of the function that may hold arrays (positional or keyword).
    cast : bool, default True
        Cast float64 results to float32 when the deciding inputs are float32 (or half
        precision).  False: convert tensors in and out only (the function keeps its own
        dtype rules, e.g. ``tiltlab.special``).
    results : bool, default True
        False: convert the inputs only and return what the function returns (constructors).

    Returns
    -------
    callable
        The decorator; the wrapped function is ``__wrapped__``.
    """
    def decorate(func):
        params = inspect.signature(func).parameters
        slots = []
        for name in names:
            if name not in params:
                raise TypeError(f"{func.__qualname__} has no parameter {name!r}")
            p = params[name]
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            slots.append((list(params).index(name) if positional else _KW, name))
        slots = tuple(slots)
        wrapper = functools.wraps(func)(_fast_wrapper(func, slots, cast, results))
        wrapper.__tiltlab_arrays__ = names
        return wrapper
    return decorate


def _fast_wrapper(func, slots: tuple, cast: bool, results: bool):
    """The wrapper, its checks unrolled (one line per named argument; built once per
    function, like ``collections.namedtuple`` builds its classes): a plain call costs the
    wrapper's call and a type test per argument."""
    lines = ["def wrapper(*args, **kwargs):", "    n = len(args)"]
    for i, name in slots:
        lines.append(f"    v = args[{i}] if n > {i} else kwargs.get({name!r})" if i < _KW
                     else f"    v = kwargs.get({name!r})")
        lines += ["    t = type(v)",
                  "    if t is ndarray:",
                  "        if not (v.dtype is f64 or v.dtype.kind in 'iub'):",
                  "            return slow(func, slots, args, kwargs, cast, results)",
                  "    elif t not in plain:",
                  "        return slow(func, slots, args, kwargs, cast, results)"]
    lines.append("    return func(*args, **kwargs)")
    env = {"ndarray": _NDARRAY, "f64": _F64, "plain": _PLAIN, "slow": _convert_call,
           "func": func, "slots": slots, "cast": cast, "results": results}
    code = compile("\n".join(lines), f"<tiltlab._interop wrapper of {func.__qualname__}>", "exec")
    exec(code, env)  # noqa: S102 - generated from parameter names checked above
    return env["wrapper"]


def _internal_caller() -> bool:
    """True when the public function was called from tiltlab itself (the frame above the
    wrapper's)."""
    mod = sys._getframe(3).f_globals.get("__name__", "")
    return mod == "tiltlab" or mod.startswith("tiltlab.")


class _Spec:
    """How to convert a result: to torch (the module) or not, and the float dtype."""

    __slots__ = ("torch", "dtype")

    def __init__(self, torch, dtype):
        self.torch = torch
        self.dtype = dtype

    def __reduce__(self):
        return (_spec, (self.torch is not None, None if self.dtype is None else self.dtype.str))


def _spec(to_torch: bool, dtype):
    torch = None
    if to_torch:
        import importlib

        torch = importlib.import_module("torch")  # unpickling tensor results only
    return _Spec(torch, None if dtype is None else np.dtype(dtype))


def _convert_call(func, slots, args, kwargs, cast, results):
    if _internal_caller():
        return func(*args, **kwargs)
    args = list(args)
    torch = None
    deciding_nd, deciding_0d = [], []
    spec_in = None
    for i, name in slots:
        positional = i < len(args)
        v = args[i] if positional else kwargs.get(name, _MISSING)
        if v is _MISSING or type(v) in _PLAIN:
            continue
        if isinstance(v, (np.ndarray, np.generic)):
            if v.dtype.kind == "f":
                (deciding_nd if v.ndim else deciding_0d).append(v.dtype)
            continue
        if type(v) in _VIEWS:
            spec_in = spec_in or v._tl_spec  # a result view passed back: read its object
            v = v._tl_base
        elif hasattr(type(v), "__dlpack__"):
            tm = _torch_of(v)
            torch = torch or tm
            v = _from_dlpack(v, name, tm)
            if v.dtype.kind == "f":
                (deciding_nd if v.ndim else deciding_0d).append(v.dtype)
        else:
            continue  # tuples, sequences: converted by the function itself
        if positional:
            args[i] = v
        else:
            kwargs[name] = v
    res = func(*args, **kwargs)
    if not results:
        return res
    deciding = deciding_nd or deciding_0d
    dtype = None
    if cast and deciding and max(d.itemsize for d in deciding) <= 4:
        dtype = _F32
    if spec_in is not None:
        torch = torch or spec_in.torch
        if dtype is None:
            dtype = spec_in.dtype
    if torch is None and dtype is None:
        return res
    return convert(res, _Spec(torch, dtype))


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------

def _leaf(x, spec: _Spec, own: bool = False):
    """One array or scalar of a result, converted."""
    if spec.dtype is not None and x.dtype == _F64:
        # beyond the float32 range: +-inf (SPEC section 1), without the cast's warning (the
        # errstate costs a microsecond: scalars in range skip it)
        if isinstance(x, np.ndarray):
            with np.errstate(over="ignore"):
                x = x.astype(spec.dtype)
        elif abs(float(x)) <= _F32_MAX or not np.isfinite(x):
            x = spec.dtype.type(x)
        else:
            with np.errstate(over="ignore"):
                x = spec.dtype.type(x)
    if spec.torch is None:
        return x
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":  # strings, objects: no tensor for them
        return x
    if own or not a.flags.writeable or not a.flags.aligned or not a.dtype.isnative or \
            any(s < 0 for s in a.strides):
        a = a.copy()
    return spec.torch.from_numpy(a)


def convert(res, spec: _Spec):
    """A function's result with its arrays converted by ``spec`` (recursively through
    tuples, named tuples, lists and tiltlab result objects; other values as they are)."""
    t = type(res)
    if t is np.ndarray or isinstance(res, np.generic):
        return _leaf(res, spec)
    if t is float:
        return _leaf(np.float64(res), spec)
    if isinstance(res, tuple):
        items = [convert(v, spec) for v in res]
        return t._make(items) if hasattr(t, "_fields") else t(items)
    if t is list:
        return [convert(v, spec) for v in res]
    if dataclasses.is_dataclass(res) and not isinstance(res, type) and \
            t.__module__.startswith("tiltlab."):
        return _view(res, spec)
    return res


# result views: a subclass per result class, built once


def _view(obj, spec: _Spec):
    cls = _view_class(type(obj))
    view = object.__new__(cls)
    d = view.__dict__
    for f in dataclasses.fields(obj):
        v = obj.__dict__[f.name]
        if not f.name.startswith("_"):
            v = _field(v, spec)
        d[f.name] = v
    d["_tl_base"] = obj
    d["_tl_spec"] = spec
    return view


def _field(v, spec: _Spec):
    if isinstance(v, (np.ndarray, np.generic, float)) and not isinstance(v, bool):
        if type(v) is float:
            v = np.float64(v)
        out = _leaf(v, spec, own=True)
        if isinstance(out, np.ndarray):
            out.flags.writeable = False  # read-only like the object's own arrays
        return out
    return v


@functools.cache
def _view_class(cls):
    ns = {"__reduce__": _view_reduce, "__doc__": cls.__doc__,
          "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    for klass in reversed(cls.__mro__[:-1]):
        for name, attr in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(attr, functools.cached_property):
                ns[name] = functools.cached_property(_lazy(name))  # cached as the class caches
            elif isinstance(attr, property):
                ns[name] = property(_lazy(name), doc=attr.__doc__)
            elif inspect.isfunction(attr):
                ns[name] = _method(name, attr)
    view = type(cls.__name__, (cls,), ns)
    _VIEWS.add(view)
    return view


def _lazy(name: str):
    def get(self):
        return _field(getattr(self._tl_base, name), self._tl_spec)
    get.__name__ = name
    return get


def _method(name: str, func):
    @functools.wraps(func)
    def method(self, *args, **kwargs):
        args = [asarray(a, f"argument {k}") for k, a in enumerate(args)]
        kwargs = {k: asarray(a, k) for k, a in kwargs.items()}
        return convert(getattr(self._tl_base, name)(*args, **kwargs), self._tl_spec)
    return method


def _view_reduce(self):
    return (_view, (self._tl_base, self._tl_spec))
