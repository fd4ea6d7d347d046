"""PyTorch / DLPack interoperability and "float32 in, float32 out" across the public API.

One table, ``CALLS``, calls every public function of tiltlab with its array arguments made
by a converter ``A`` (NumPy float64, NumPy float32, torch float64 / float32 tensors, a fake
CUDA array), and the tests compare what comes back, leaf by leaf (arrays, scalars, named
tuple fields, the fields, lazy properties and methods of result objects), with the plain
float64 NumPy call: the same values, torch tensors of the input's dtype when the inputs
were tensors, float32 when they were float32 (the float64 result rounded once).
``test_every_public_name_is_covered`` keeps the table complete.

The torch tests use the ``torch`` fixture (tests/conftest.py): skipped without torch,
failed under TILTLAB_REQUIRE_TORCH=1 (CI).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import _interop as interop

RNG = np.random.default_rng(17)
L = RNG.normal(size=(3, 6))
R = np.round(RNG.normal(size=(3, 6)) * 2) / 2  # a lattice of step 1/2 (Memoryless)
L0, R0 = L[0], R[0]
LAM = np.array([0.3, -1.0, 2.0])
KL = np.array([0.0, 0.05, 0.2])
X = np.array([R0.min() + 0.1, np.mean(R0), R0.max() - 0.1])
T = np.array([-1.0, 0.5, 2.0])
EPS = np.array([1e-3, 0.1, 0.5])
GRID = np.array([0.0, 0.5, 2.0])
SAMPLES = np.array([0, 1, 5, 2, 2, 3, 4, 1])
NAMES = np.array([str(i) for i in range(6)])


def _log_softmax(x):
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


LP0 = _log_softmax(L0)
LQ0 = _log_softmax(L[1])

# name -> call(A): every public function, its array arguments converted by A
CALLS = {
    "tilt_stats": lambda A: tiltlab.tilt_stats(A(L), A(R), 0.7),
    "tilt": lambda A: tiltlab.tilt(A(L), A(R), A(LAM)),
    "kl_max": lambda A: tiltlab.kl_max(A(L), A(R)),
    "solve_lambda": lambda A: tiltlab.solve_lambda(A(L), A(R), A(KL)),
    "frontier": lambda A: tiltlab.frontier(A(L0), A(R0), A(KL)),
    "cumulants": lambda A: tiltlab.cumulants(A(L), A(R), 4, A(LAM)),
    "kl_divergence": lambda A: tiltlab.kl_divergence(A(L), A(R)),
    "rate_function": lambda A: tiltlab.rate_function(A(L0), A(R0), A(X)),
    "scaled_cgf": lambda A: tiltlab.scaled_cgf(A(L0), A(R0), A(T)),
    "renyi_cross_entropy": lambda A: tiltlab.renyi_cross_entropy(A(L), A(R), A(GRID)),
    "renyi_divergence": lambda A: tiltlab.renyi_divergence(A(L), A(R), A(GRID)),
    "best_of_n": lambda A: tiltlab.best_of_n(A(L), A(R), n=A(np.array([2.0, 4.0, 16.0]))),
    "reward_levels": lambda A: tiltlab.reward_levels(A(L), A(R)),
    "sample_best_of_n": lambda A: tiltlab.sample_best_of_n(A(L), A(R), 4.0, size=5, rng=0),
    "sample_categorical": lambda A: tiltlab.sample_categorical(A(L), size=5, rng=0),
    "sample_tilted": lambda A: tiltlab.sample_tilted(A(L), A(R), A(LAM), size=5, rng=0),
    "simulate_best_of_n": lambda A: tiltlab.simulate_best_of_n(A(L), A(R), 4, size=5, rng=0),
    "beirami_kl_estimate": lambda A: tiltlab.beirami_kl_estimate(A(EPS), 16),
    "worst_of_n": lambda A: tiltlab.worst_of_n(A(L0), A(R0), 4.0),
    "best_of_poisson": lambda A: tiltlab.best_of_poisson(A(L0), A(R0), 3.0),
    "rewind_and_repeat": lambda A: tiltlab.rewind_and_repeat(A(L0), A(R0), 0.3),
    "calibrated_tilt": lambda A: tiltlab.calibrated_tilt(A(L0), A(R0), 2.0),
    "soft_best_of_n": lambda A: tiltlab.soft_best_of_n(A(L0), A(R0), 4.0, 0.5),
    "policy_frontier": lambda A: tiltlab.policy_frontier(A(L0), A(R0), "tilted", A(GRID)),
    "kl_estimators": lambda A: tiltlab.kl_estimators(SAMPLES, A(LP0), A(LQ0)),
    "estimator_study": lambda A: tiltlab.estimator_study(
        tiltlab.best_of_n(A(L0), A(R0), n=4.0), 20, 3, rng=0),
    # model classes: their constructors take tensors; a method shows the model is the same
    "Memoryless": lambda A: tiltlab.Memoryless(A(L0), A(R0), 8).reward_log_pmf(A(LAM[0])),
    "Markov": lambda A: tiltlab.Markov(A(L0), A(np.tile(L0, (6, 1)) + np.arange(6)[:, None]),
                                       A(R0), 8).tilt_stats(A(LAM)),
    "Model": lambda A: tiltlab.Model("m", A(L0), A(R0), NAMES, "a test model").logits,
}
# what the table covers besides: result types (returned by the calls above), and public
# names without array arguments
RESULT_TYPES = {"TiltStats", "BestOfN", "RewardLevels", "PolicyLaw", "Frontier", "KLEstimates",
                "EstimatorStudy", "LatticeLaw", "SequenceBestOfN", "Asymptotics"}
NO_ARRAYS = {"__version__", "build_info", "load_model", "reproduce", "sweep"}
SPECIAL = {"logsumexp"}  # tiltlab.special: test_special_functions below
# calls whose results are not float (indices) or whose model keeps float64 by design
NOT_FLOAT32 = {"sample_best_of_n", "simulate_best_of_n", "sample_categorical", "sample_tilted",
               "Model"}


def test_every_public_name_is_covered():
    assert set(tiltlab.__all__) == set(CALLS) | RESULT_TYPES | NO_ARRAYS | SPECIAL


# --------------------------------------------------------------------------------------
# walking a result: (path, value) for every array, scalar and field
# --------------------------------------------------------------------------------------

def _is_tensor(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def leaves(x, path="r"):
    """(path, value) of every number-carrying leaf of a result, recursively; result objects
    give their public fields, lazy properties and methods' results."""
    if _is_tensor(x) or isinstance(x, (np.ndarray, np.generic, float, int, str)):
        yield path, x
    elif isinstance(x, tuple) and hasattr(x, "_fields"):
        for name in x._fields:
            yield from leaves(getattr(x, name), f"{path}.{name}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    elif dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            if not f.name.startswith("_") and f.name != "params":
                yield from leaves(getattr(x, f.name), f"{path}.{f.name}")
        if hasattr(x, "log_probs"):
            yield from leaves(x.log_probs, f"{path}.log_probs")
        if hasattr(x, "kl_to_tilted"):
            yield from leaves(x.kl_to_tilted(0.5), f"{path}.kl_to_tilted(0.5)")
        if hasattr(x, "sample"):
            yield from leaves(x.sample(3, rng=1), f"{path}.sample(3)")
    else:  # pragma: no cover - a result type the walk does not know
        raise AssertionError(f"{path}: unexpected {type(x)}")


def compare(got, want, *, kind: str, float_dtype):
    """``got`` (converted inputs) against ``want`` (the float64 NumPy call), leaf by leaf.

    kind: "numpy" or "torch" (the type of every array/float leaf of ``got``);
    float_dtype: the dtype of float leaves (float32: ``want`` rounded once)."""
    if not _is_tensor(got):
        assert type(got).__name__ == type(want).__name__
    g, w = list(leaves(got)), list(leaves(want))
    assert [p for p, _ in g] == [p for p, _ in w]
    for (path, a), (_, b) in zip(g, w, strict=True):
        if isinstance(b, (str, int)) and not isinstance(b, (bool, np.generic)):
            assert a == b, path
            continue
        if type(b) is float and kind == "numpy" and float_dtype == np.float64:
            assert type(a) is float and a == b, path  # a float field of a float64 object
            continue
        b = np.asarray(b)
        if kind == "torch":
            assert _is_tensor(a), (path, type(a))
            a = a.numpy()
        else:
            assert isinstance(a, (np.ndarray, np.generic)), (path, type(a))
            a = np.asarray(a)
        assert a.shape == b.shape, path
        if b.dtype.kind == "f":
            assert a.dtype == float_dtype, (path, a.dtype)
            if float_dtype == np.float32:
                # the float64 computation of the same values, rounded once (1 ulp: the two
                # runs read float32 and float64 arrays)
                assert_allclose(a, b.astype(np.float32), rtol=2.0**-23, atol=0, err_msg=path)
            else:
                assert_array_equal(a, b, err_msg=path)
        else:
            assert a.dtype == b.dtype, (path, a.dtype, b.dtype)
            assert_array_equal(a, b, err_msg=path)


def f64(x):
    return np.asarray(x, dtype=np.float64)


def f32(x):
    return np.asarray(x, dtype=np.float32)


def _via32(x):
    """The float64 values of x rounded to float32 (the inputs of the float32 calls)."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


# --------------------------------------------------------------------------------------
# float32 kept (NumPy)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CALLS))
def test_float32_in_float32_out(name):
    got = CALLS[name](f32)
    want = CALLS[name](_via32)
    dtype = np.float64 if name in NOT_FLOAT32 else np.float32
    compare(got, want, kind="numpy", float_dtype=dtype)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_float64_results_unchanged(name):
    """Plain float64 input: the results are the undecorated function's, bit for bit."""
    compare(CALLS[name](f64), CALLS[name](np.asarray), kind="numpy", float_dtype=np.float64)


def test_dtype_rule():
    l32, r32 = f32(L), f32(R)
    # Python scalars, lists and integer arrays do not decide; float64 arrays promote
    assert tiltlab.tilt(l32, r32, 0.5).dtype == np.float32
    assert tiltlab.tilt(l32, r32, [0.5, 1.0, 2.0]).dtype == np.float32
    assert tiltlab.tilt(l32, np.round(R).astype(np.int64), 0.5).dtype == np.float32
    assert tiltlab.tilt(l32, R, 0.5).dtype == np.float64
    assert tiltlab.tilt(l32, r32, LAM).dtype == np.float64
    # 0-d arrays and NumPy scalars decide only without dimensioned float arrays
    assert tiltlab.tilt(l32, r32, np.float64(0.5)).dtype == np.float32
    assert tiltlab.tilt(L, R, np.float32(0.5)).dtype == np.float64
    assert np.asarray(tiltlab.beirami_kl_estimate(np.float32(0.1), 16)).dtype == np.float32
    assert np.asarray(tiltlab.beirami_kl_estimate(0.1, 16)).dtype == np.float64
    # float16 -> float32 results; longdouble -> float64 (computed in double)
    half = tiltlab.tilt_stats(L.astype(np.float16), R.astype(np.float16), 0.5)
    want = tiltlab.tilt_stats(L.astype(np.float16).astype(float),
                              R.astype(np.float16).astype(float), 0.5)
    for a, b in zip(half, want, strict=True):
        assert a.dtype == np.float32
        assert_array_equal(a, b.astype(np.float32))
    long = tiltlab.tilt_stats(L.astype(np.longdouble), R.astype(np.longdouble), 0.5)
    for a, b in zip(long, tiltlab.tilt_stats(L, R, 0.5), strict=True):
        assert a.dtype == np.float64
        assert_array_equal(a, b)
    # beyond the float32 range: inf, as beyond the float64 range (no warning)
    big = tiltlab.tilt_stats(f32([0.0, 0.0]), f32([0.0, 3e38]), 0.0)
    assert big.variance == np.inf and big.variance.dtype == np.float32
    assert big.mean == np.float32(1.5e38)


def test_float32_result_objects_are_read_only_views():
    b = tiltlab.best_of_n(f32(L), f32(R), n=4.0)
    assert isinstance(b, tiltlab.BestOfN) and b.kl.dtype == np.float32
    with pytest.raises(ValueError):
        b.kl[0] = 1.0
    with pytest.raises(ValueError):
        b.log_probs[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.kl = None
    # methods run on the float64 object: kl_to_tilted equals the float64 object's, rounded
    b64 = tiltlab.best_of_n(_via32(L), _via32(R), n=4.0)
    assert_array_equal(b.kl_to_tilted(LAM), b64.kl_to_tilted(LAM).astype(np.float32))
    # a view pickles, and passed back to tiltlab it is its float64 object
    b2 = pickle.loads(pickle.dumps(b))
    assert_array_equal(b2.kl, b.kl)
    assert b2.kl.dtype == np.float32


# --------------------------------------------------------------------------------------
# the decorator itself
# --------------------------------------------------------------------------------------

class FakeDevice:
    """A DLPack producer on a non-CPU device (device type 2: CUDA)."""

    def __init__(self, x, device=(2, 0)):
        self._x = np.asarray(x, dtype=np.float64)
        self._device = device

    def __dlpack__(self, **kwargs):
        return self._x.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


@pytest.mark.parametrize("name", sorted(CALLS))
def test_non_cpu_device_is_refused(name):
    with pytest.raises(TypeError, match=r"on a .*device .*\.cpu\(\)"):
        CALLS[name](FakeDevice)


def test_any_cpu_dlpack_producer_is_read():
    got = tiltlab.tilt_stats(FakeDevice(L, (1, 0)), FakeDevice(R, (1, 0)), 0.5)
    for a, b in zip(got, tiltlab.tilt_stats(L, R, 0.5), strict=True):
        assert type(a) is np.ndarray  # not torch: NumPy results
        assert_array_equal(a, b)


def _spy():
    seen = []

    @interop.arrays("x", "y")
    def spy(x, y=None):
        seen.append((x, y))
        return np.zeros(2)

    return spy, seen


def test_plain_arguments_pass_through_untouched():
    spy, seen = _spy()
    a = np.arange(3.0)
    for x in (a, [1.0, 2.0], 3.0, 2, None, np.arange(3), "s"):
        assert type(spy(x, y=x)) is np.ndarray
        assert seen[-1][0] is x and seen[-1][1] is x
    with pytest.raises(TypeError, match="has no parameter 'z'"):
        interop.arrays("z")(lambda x: x)


def test_import_does_not_import_torch():
    code = "import sys, tiltlab; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=os.environ.copy()).returncode == 0


# --------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_torch_round_trip(torch, name, dtype):
    tdt = getattr(torch, dtype)
    want = CALLS[name](f64 if dtype == "float64" else _via32)
    got = CALLS[name](lambda x: torch.tensor(np.asarray(x), dtype=tdt))
    if name == "Model":  # a model keeps NumPy (its own float64 copy)
        assert_array_equal(got, want)
        return
    float_dtype = np.float64 if dtype == "float64" or name in NOT_FLOAT32 else np.float32
    compare(got, want, kind="torch", float_dtype=float_dtype)


def test_torch_inputs_are_zero_copy(torch):
    spy, seen = _spy()
    t = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    out = spy(t, t[:, ::2])  # contiguous and strided
    x, y = seen[-1]
    assert type(x) is np.ndarray and x.ctypes.data == t.data_ptr()
    assert np.shares_memory(x, t.numpy()) and np.shares_memory(y, t.numpy())
    assert y.strides == (32, 16)
    # and the result is a tensor over the fresh result array
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_torch_results_share_the_result_arrays(torch):
    r = tiltlab.tilt(torch.tensor(L), torch.tensor(R), 0.5)
    assert isinstance(r, torch.Tensor) and r.dtype == torch.float64
    r.numpy()[0, 0] = 7.0  # one buffer: the tensor is the result array, not a copy
    assert r[0, 0] == 7.0


def test_torch_requires_grad_is_refused(torch):
    t = torch.tensor(L, requires_grad=True)
    with pytest.raises(TypeError, match=r"logits is a torch tensor that requires grad.*"
                                        r"logits\.detach\(\)"):
        tiltlab.tilt_stats(t, R, 0.5)
    got = tiltlab.tilt_stats(t.detach(), R, 0.5)
    assert isinstance(got.kl, torch.Tensor)


def test_torch_half_precision_gives_float32(torch):
    want = tiltlab.tilt_stats(L.astype(np.float16).astype(float), R, 0.5)
    for tdt in (torch.float16, torch.bfloat16):
        lt, rt = torch.tensor(L, dtype=tdt), torch.tensor(R, dtype=tdt)
        got = tiltlab.tilt_stats(lt, rt, 0.5)
        want = tiltlab.tilt_stats(lt.float().double().numpy(), rt.float().double().numpy(), 0.5)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == torch.float32
            assert_array_equal(a.numpy(), b.astype(np.float32))


def test_torch_mixed_with_numpy_and_scalars(torch):
    lt = torch.tensor(L, dtype=torch.float32)
    got = tiltlab.tilt(lt, f32(R), torch.tensor(0.5, dtype=torch.float64))  # 0-d: no vote
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    got = tiltlab.tilt(lt, R, 0.5)  # a float64 array promotes
    assert got.dtype == torch.float64
    got = tiltlab.tilt(L, R, torch.tensor(LAM))  # one tensor suffices for tensor results
    assert isinstance(got, torch.Tensor)


def test_torch_result_object_methods(torch):
    b = tiltlab.best_of_n(torch.tensor(L0, dtype=torch.float32), torch.tensor(R0), n=4.0)
    assert b.kl.dtype == torch.float64  # rewards are float64
    b = tiltlab.best_of_n(torch.tensor(L0, dtype=torch.float32),
                          torch.tensor(R0, dtype=torch.float32), n=4.0)
    assert isinstance(b, tiltlab.BestOfN) and b.kl.dtype == torch.float32
    assert b.kl_to_tilted(torch.tensor([0.1, 1.0])).dtype == torch.float32
    assert b.sample(4, rng=0).dtype == torch.int64
    m = tiltlab.Memoryless(torch.tensor(L0), torch.tensor(R0), 8)
    s = m.tilt_stats(torch.tensor([0.1, 0.2]))
    assert isinstance(s.mean, torch.Tensor)
    assert isinstance(m.best_of_n(torch.tensor(4.0)).kl, torch.Tensor)


def test_special_functions(torch):
    """tiltlab.special: tensors in, tensors out, with the dtypes tiltlab.special gives
    NumPy input (SciPy's: float32 stays float32); return_sign's sign too."""
    for dtype in (np.float64, np.float32):
        x = L.astype(dtype)
        t = torch.tensor(x)
        for name in ("logsumexp", "softmax", "log_softmax"):
            f = getattr(tiltlab.special, name)
            got, want = f(t, axis=-1), f(x, axis=-1)
            assert isinstance(got, torch.Tensor), name
            assert got.dtype == getattr(torch, np.dtype(dtype).name), name
            assert_array_equal(got.numpy(), want)
            with pytest.raises(TypeError, match=r"\.cpu\(\)"):
                f(FakeDevice(x))
    assert tiltlab.logsumexp is tiltlab.special.logsumexp
    lse, sign = tiltlab.logsumexp(torch.tensor(L), b=torch.tensor(-np.ones_like(L)),
                                  return_sign=True)
    assert isinstance(lse, torch.Tensor) and isinstance(sign, torch.Tensor)
    assert float(sign) == -1.0
    got = tiltlab.logsumexp(torch.tensor(L))
    assert got.dtype == torch.float64 and float(got) == tiltlab.logsumexp(L)
