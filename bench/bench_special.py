"""tiltlab.special against scipy.special and torch (issue 17).

Rows per group (same arrays from conftest.make_data, same run):

* ``compiled-2t-avx2``: softmax / log_softmax over the last axis on 2 threads with the avx2
  variant forced (the product's target machines), ``compiled-1t`` on one thread;
* ``scipy``: ``scipy.special.softmax`` / ``log_softmax`` with ``axis=-1``;
* ``torch-2t``: ``torch.softmax`` / ``torch.log_softmax`` on ``torch.from_numpy(x)`` with
  ``torch.set_num_threads(2)`` (where torch is installed);
* ``stream-copy``: ``np.multiply(x, 1.0, out=o)`` into a preallocated array: reading the
  input and writing an output of its size once, the memory limit of any softmax.

Small calls (8 outcomes, one row): every function of tiltlab.special against its SciPy twin.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_data, quick, run

from tiltlab import simd, special

KERNELS = ["softmax", "log_softmax"]
DTYPES = [np.float64, np.float32]
IMPLS = ["compiled-1t", "compiled-2t-avx2", "scipy", "torch-2t", "stream-copy"]


def _ours(kernel, x, nt, variant=None):
    f = getattr(special, kernel)
    if variant is None:
        return lambda: f(x, axis=-1, n_threads=nt)

    def fn():
        with simd.use(variant):
            return f(x, axis=-1, n_threads=nt)
    return fn


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_special_rows(benchmark, rounds, shape, dtype, kernel, impl):
    x, _ = make_data(shape, dtype)
    if impl == "compiled-1t":
        fn = _ours(kernel, x, 1)
    elif impl == "compiled-2t-avx2":
        if "avx2" not in simd.available():
            pytest.skip("no avx2 on this machine")
        fn = _ours(kernel, x, 2, "avx2")
    elif impl == "scipy":
        sp = pytest.importorskip("scipy.special")
        f = getattr(sp, kernel)
        fn = lambda: f(x, axis=-1)  # noqa: E731
    elif impl == "torch-2t":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(2)
        t = torch.from_numpy(x)
        f = getattr(torch, kernel)
        fn = lambda: f(t, dim=-1)  # noqa: E731
    else:
        o = np.empty_like(x)
        fn = lambda: np.multiply(x, 1.0, out=o)  # noqa: E731
    run(benchmark, fn, rounds=rounds, group=f"{kernel} {shape[0]}x{shape[1]} "
        f"{np.dtype(dtype).name}", impl=impl, kernel=kernel, n_elements=np.prod(shape))


SMALL_V = 8


@pytest.mark.parametrize("impl", ["compiled-1t", "scipy"])
@pytest.mark.parametrize("kernel", ["logsumexp", "softmax", "log_softmax"])
def test_special_small(benchmark, request, kernel, impl):
    x = np.random.default_rng(0).normal(size=SMALL_V)
    if impl == "scipy":
        sp = pytest.importorskip("scipy.special")
        f = getattr(sp, kernel)
    else:
        f = getattr(special, kernel)
    benchmark.group = f"{kernel} 1x{SMALL_V} float64 (small call)"
    benchmark.extra_info.update(impl=impl, kernel=kernel, n_elements=SMALL_V)
    small = quick(request.config)
    benchmark.pedantic(lambda: f(x), rounds=5 if small else 15,
                       iterations=200 if small else 2000, warmup_rounds=1)
