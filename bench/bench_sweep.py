"""tiltlab.sweep: one big Monte-Carlo cell on 1 and 2 workers, and the cost per cell of a
trivial task on each backend (issue 19).  The same sizes with --quick (a smaller cell would
not be split).

* ``sweep simulate_best_of_n 1e+08 draws``: one ``simulate_best_of_n`` cell of 10^8
  candidate draws (n = 16, 6.25e6 samples), which the sweep splits into 6 shards, run
  in-process (``n_workers=1``: the kernels use their default threads, 2 here), on Dask with
  1 worker and with 2 workers (a ``LocalCluster`` of single-threaded worker processes
  started before the timing; the target is 2 workers >= 1.7x faster than 1) and on the
  local pool of 2 processes (whose start-up is part of every pool sweep and so of its
  time).
* ``sweep overhead 2000 trivial cells``: 2000 cells of a task that returns at once, so the
  time per cell ("ns/elem") is the backend's overhead, start-up included (target on the
  local pool: <= 5 ms per cell), next to a plain Python loop calling the task (the floor).

Every row runs the same cells (equal work) after one warm-up sweep; the results of the
backends are bitwise equal (tests/test_sweep.py).
"""

from __future__ import annotations

import sys

import pytest
from conftest import run

import tiltlab

pytest.importorskip("pandas", reason="tiltlab.sweep needs the distributed extra")
distributed = pytest.importorskip("distributed", reason="the Dask rows need dask.distributed")
import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Dask workers cannot import it


def trivial(x, rng):
    return {"y": x}


_clusters: dict = {}


def _client(n_workers: int):
    """A LocalCluster of n single-threaded worker processes, started once per module."""
    if n_workers not in _clusters:
        from distributed import Client, LocalCluster

        for c, cl in _clusters.values():   # one cluster at a time on this 2-core machine
            c.close()
            cl.close()
        _clusters.clear()
        cluster = LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                               dashboard_address=":0", silence_logs=40)
        _clusters[n_workers] = (Client(cluster), cluster)
    return _clusters[n_workers][0]


@pytest.fixture(scope="module", autouse=True)
def _close_clusters():
    yield
    for c, cl in _clusters.values():
        c.close()
        cl.close()
    _clusters.clear()


MC_IMPLS = ["in-process-2t", "dask-1-worker", "dask-2-workers", "pool-2-workers"]


@pytest.mark.parametrize("impl", MC_IMPLS)
def test_one_big_monte_carlo_cell(benchmark, rounds, request, impl):
    draws = 10**8                # split into 6 shards (SHARD_DRAWS = 2^24), also with --quick
    n = 16
    grid = {"model": ["ternary"], "n": [n], "size": [draws // n]}
    kw = {"n_workers": 1} if impl == "in-process-2t" else \
        {"n_workers": 2} if impl == "pool-2-workers" else \
        {"client": _client(1 if impl == "dask-1-worker" else 2)}
    run(benchmark, lambda: tiltlab.sweep("simulate_best_of_n", grid, progress=False, **kw),
        rounds=rounds, group=f"sweep simulate_best_of_n {draws:.0e} draws, one split cell",
        impl=impl, kernel="sweep", n_elements=draws)


OVERHEAD_IMPLS = ["python-loop", "in-process", "pool-2-workers", "dask-2-workers"]


@pytest.mark.parametrize("impl", OVERHEAD_IMPLS)
def test_per_cell_overhead(benchmark, rounds, request, impl):
    cells = 2000
    grid = {"x": list(range(cells))}
    if impl == "python-loop":
        import numpy as np

        def fn():
            return [trivial(x, np.random.default_rng(x)) for x in grid["x"]]
    else:
        kw = {"n_workers": 1} if impl == "in-process" else \
            {"n_workers": 2} if impl == "pool-2-workers" else {"client": _client(2)}

        def fn():
            return tiltlab.sweep(trivial, grid, progress=False, **kw)
    run(benchmark, fn, rounds=rounds, group=f"sweep overhead {cells} trivial cells",
        impl=impl, kernel="sweep", n_elements=cells)
