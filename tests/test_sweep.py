"""tiltlab.sweep: the same table serially, on a local process pool and on a real Dask
cluster (bitwise); a worker killed mid-sweep; checkpoint and resume; errors before any
cell runs; random streams keyed by the cell's parameters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import require_distributed

import tiltlab

require_distributed()
pd = pytest.importorskip("pandas", reason="tiltlab.sweep needs the distributed extra (pandas)")
pytest.importorskip("pyarrow", reason="tiltlab.sweep checkpoints need pyarrow")
distributed = pytest.importorskip("distributed", reason="the Dask tests need dask.distributed")
import cloudpickle  # noqa: E402  (dask.distributed depends on it)
import dask  # noqa: E402

from tiltlab.app import sweep as sweep_mod  # noqa: E402

# the user tasks below are pickled by value for the Dask workers (which cannot import this
# test module); the local pool imports it (spawned workers inherit sys.path)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def noisy(x, scale, rng):
    """A user Monte-Carlo task: array and scalar results from the cell's stream."""
    v = rng.standard_normal(5) * scale + x
    return {"mean": float(v.mean()), "draws": v, "first": int(rng.integers(0, 1 << 62))}


def sleepy(x, marks, rng):
    """Marks its start and end with files named after its process id, sleeps."""
    pid = os.getpid()
    open(os.path.join(marks, f"start-{x}-{pid}"), "w").close()
    time.sleep(0.4)
    open(os.path.join(marks, f"end-{x}-{pid}"), "w").close()
    return {"y": x * x, "u": float(rng.random())}


class Unpicklable:
    """A callable that no pickler can ship (it holds a lock)."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, x, rng):
        return {"x": x}


class Scaled:
    """A callable object: checkpoints tell two of them apart by their pickled state."""

    def __init__(self, k):
        self.k = k

    def __call__(self, x, rng):
        return {"y": self.k * x}


def ten_x_as_y(x, y, rng):
    return {"y": 10 * x}


def dies_once(x, marks, rng):
    """Kills its own worker process the first time it runs the cell x == 2 (marker file)."""
    flag = os.path.join(marks, f"died-{x}")
    if x == 2 and not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": x * x, "u": float(rng.random())}


def always_dies(x, rng):
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster_client():
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 5}):
        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                               dashboard_address=":0", silence_logs=40)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


EXACT_GRID = {"model": ["ternary", "bernoulli"], "n": [1, 4.0, 1e6]}
# 2^21 + 1000 samples of n = 4 is split in two shards (SHARD_SAMPLES = 2^21)
MC_GRID = [{"model": "ternary", "n": 4, "size": 1000},
           {"model": "bernoulli", "n": 3, "size": 500},
           {"model": "ternary", "n": 4, "size": (1 << 21) + 1000}]


def test_the_mc_grid_has_a_split_cell():
    shards = [sweep_mod.TASKS["simulate_best_of_n"].shards({"n": c["n"], "size": c["size"]})
              for c in MC_GRID]
    assert shards == [1, 1, 2]


def test_same_table_serially_on_a_pool_and_on_dask(cluster_client, capsys):
    tables = {}
    for task, grid in (("best_of_n", EXACT_GRID), ("simulate_best_of_n", MC_GRID),
                       (noisy, {"x": [0.0, 1.0, 2.5], "scale": [1, 2]})):
        serial = tables[task] = tiltlab.sweep(task, grid, n_workers=1, seed=3, progress=False)
        pool = tiltlab.sweep(task, grid, n_workers=2, seed=3, progress=False)
        on_dask = tiltlab.sweep(task, grid, client=cluster_client, seed=3)
        pd.testing.assert_frame_equal(serial, pool, check_exact=True)
        pd.testing.assert_frame_equal(serial, on_dask, check_exact=True)
    # with Dask the progress output names the dashboard
    assert "dashboard" in capsys.readouterr().err
    # the exact task agrees with the function it wraps; the Monte-Carlo counts add up
    m = tiltlab.load_model("ternary")
    b = tiltlab.best_of_n(m.logits, m.rewards, n=4)
    row = tables["best_of_n"]
    assert row.loc[1, "kl"] == float(b.kl) and row.loc[1, "win_rate"] == float(b.win_rate)
    mc = tables["simulate_best_of_n"]
    assert [int(c.sum()) for c in mc["counts"]] == [c["size"] for c in MC_GRID]
    big = mc.iloc[2]
    assert abs(big.mean_reward - big.expected_reward) < 5 * big.se_reward


def test_a_killed_worker_does_not_stop_the_sweep(cluster_client, tmp_path):
    pids = cluster_client.run(os.getpid)
    grid = {"x": list(range(8)), "marks": [str(tmp_path)]}
    killed = []

    def kill_one_running():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            names = {p.name for p in tmp_path.iterdir()}
            running = sorted(int(n.split("-")[2]) for n in names if n.startswith("start-")
                             and "end-" + n[6:] not in names)   # mid-task (it sleeps 0.4 s)
            victims = [pid for pid in running if pid in set(pids.values())]
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                killed.append(victims[0])
            time.sleep(0.01)

    t = threading.Thread(target=kill_one_running)
    t.start()
    table = tiltlab.sweep(sleepy, grid, client=cluster_client, seed=1, progress=False)
    t.join()
    assert killed, "no worker was killed"
    pid = killed[0]
    started = {p.name.split("-")[1] for p in tmp_path.glob(f"start-*-{pid}")}
    ended = {p.name.split("-")[1] for p in tmp_path.glob(f"end-*-{pid}")}
    assert started - ended, "the killed worker was not running a cell"
    expected = tiltlab.sweep(sleepy, grid, n_workers=1, seed=1, progress=False)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert table["y"].tolist() == [x * x for x in range(8)]


CALLS: list = []        # the cells counted() ran (in this process: n_workers=1)
BOOM: list = [None]     # the cell counted() fails on


def counted(a, b, rng):
    """A user task (module-level: a checkpoint knows it by its name, so a fixed version of
    it resumes the sweep) counting its calls; raises on the cell BOOM[0]."""
    CALLS.append((a, b))
    if (a, b) == BOOM[0]:
        raise RuntimeError("boom")
    return {"s": a + b + rng.random(), "v": rng.standard_normal(3),
            "k": np.arange(a + 1, dtype=np.int32)}


def _counting(boom=None) -> list:
    CALLS.clear()
    BOOM[0] = boom
    return CALLS


def test_checkpoint_resume_after_a_crash(tmp_path):
    ck = tmp_path / "sweep.parquet"
    grid = {"a": [0, 1, 2], "b": [10, 20]}
    _counting(boom=(2, 10))
    with pytest.raises(RuntimeError, match="boom") as info:
        tiltlab.sweep(counted, grid, n_workers=1, seed=5, checkpoint=ck, progress=False)
    assert any("(2, 10)" in n or "'a': 2" in n for n in getattr(info.value, "__notes__", []))
    # the file holds exactly the 4 finished cells, written atomically (no temporary left)
    import pyarrow.parquet as pq

    assert pq.read_table(ck).num_rows == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.parquet"]
    resumed = _counting()
    table = tiltlab.sweep(counted, grid, n_workers=1, seed=5, checkpoint=ck, progress=False)
    assert resumed == [(2, 10), (2, 20)]
    fresh = _counting()
    expected = tiltlab.sweep(counted, grid, n_workers=1, seed=5, progress=False)
    assert len(fresh) == 6
    # arrays (float64 and int32) and every bit survive the parquet round trip
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert table["k"][2].dtype == np.int32
    again = _counting()
    whole = tiltlab.sweep(counted, grid, n_workers=1, seed=5, checkpoint=ck, progress=False)
    assert again == []
    pd.testing.assert_frame_equal(whole, expected, check_exact=True)
    # a grown grid computes only its new cells
    grown = _counting()
    tiltlab.sweep(counted, {"a": [0, 1, 2, 3], "b": [10, 20]}, n_workers=1, seed=5,
                  checkpoint=ck, progress=False)
    assert grown == [(3, 10), (3, 20)]
    # another seed is another sweep: refused, nothing runs
    other = _counting()
    with pytest.raises(ValueError, match="checkpoint.*different sweep.*seed"):
        tiltlab.sweep(counted, grid, n_workers=1, seed=6, checkpoint=ck, progress=False)
    assert other == []


def test_checkpoint_of_a_split_cell_on_the_pool(tmp_path):
    ck = tmp_path / "mc.parquet"
    first = tiltlab.sweep("simulate_best_of_n", MC_GRID, n_workers=2, seed=2, checkpoint=ck,
                          progress=False)
    again = tiltlab.sweep("simulate_best_of_n", MC_GRID, n_workers=1, seed=2, checkpoint=ck,
                          progress=False)
    pd.testing.assert_frame_equal(first, again, check_exact=True)


def test_bad_input_is_refused_before_any_cell_runs(tmp_path):
    calls = []

    def local_task(x, rng):  # a closure: not picklable by pickle
        calls.append(x)
        return {"x": x}

    with pytest.raises(ValueError, match="task must be one of .*best_of_n"):
        tiltlab.sweep("best_of_m", {"model": ["ternary"], "n": [2]}, progress=False)
    with pytest.raises(TypeError, match=r"grid\['n'\].*best_of_n.*real number.*'four'"):
        tiltlab.sweep("best_of_n", {"model": ["ternary"], "n": [2, "four"]}, progress=False)
    with pytest.raises(ValueError, match=r"grid\['n'\].*must be an integer.*2.5"):
        tiltlab.sweep("simulate_best_of_n", {"model": ["ternary"], "n": [2, 2.5],
                                             "size": [10]}, progress=False)
    with pytest.raises(ValueError, match=r"grid\['lam'\] is not a parameter.*frontier"):
        tiltlab.sweep("frontier", {"model": ["ternary"], "lam": [1.0]}, progress=False)
    with pytest.raises(ValueError, match="lacks 'size'.*simulate_best_of_n"):
        tiltlab.sweep("simulate_best_of_n", {"model": ["ternary"], "n": [2]}, progress=False)
    with pytest.raises(ValueError, match=r"grid\['model'\].*unknown model 'tenary'"):
        tiltlab.sweep("best_of_n", {"model": ["tenary"], "n": [2]}, progress=False)
    with pytest.raises(TypeError, match=r"grid\['x'\].*cannot be keyed"):
        tiltlab.sweep(local_task, {"x": [1, object()]}, n_workers=1, progress=False)
    with pytest.raises(TypeError, match=r"grid\['x'\] must be a list"):
        tiltlab.sweep(local_task, {"x": 3}, n_workers=1, progress=False)
    with pytest.raises(TypeError, match="task must be picklable"):
        tiltlab.sweep(Unpicklable(), {"x": [1, 2, 3]}, n_workers=2, progress=False)
    with pytest.raises(ValueError, match=r"grid\['n'\].*must be >= 1.*0.5"):
        tiltlab.sweep("best_of_n", {"model": ["ternary"], "n": [4, 0.5]}, progress=False)
    with pytest.raises(ValueError, match=r"grid\['n'\].*must be a number; got nan"):
        tiltlab.sweep("best_of_n", {"model": ["ternary"], "n": [float("nan")]},
                      progress=False)
    with pytest.raises(ValueError, match=r"grid\['policy'\].*over sequences"):
        tiltlab.sweep("estimator_study", {"model": ["ternary"], "policy": ["worst_of_n"],
                                          "parameter": [4], "n_samples": [10],
                                          "repeats": [2], "length": [5]}, progress=False)
    with pytest.raises(ValueError, match=r"grid\['temperature'\].*needs a temperature"):
        tiltlab.sweep("estimator_study", {"model": ["ternary"], "policy": ["soft_best_of_n"],
                                          "parameter": [4], "n_samples": [10],
                                          "repeats": [2]}, progress=False)
    with pytest.raises(ValueError, match="grid has no cells"):
        tiltlab.sweep(local_task, {}, n_workers=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint .*does not exist or is not writable"):
        tiltlab.sweep(local_task, {"x": [1]}, n_workers=1, progress=False,
                      checkpoint=tmp_path / "no-such-folder" / "ck.parquet")
    with pytest.raises(ValueError, match="checkpoint .* is a folder"):
        tiltlab.sweep(local_task, {"x": [1]}, n_workers=1, progress=False, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="seed must be an integer"):
        tiltlab.sweep(local_task, {"x": [1]}, seed=1.5, progress=False)
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        tiltlab.sweep(local_task, {"x": [1]}, n_workers=0, progress=False)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ValueError, match=r"scheduler 'tcp://127.0.0.1:1' is unreachable"):
            tiltlab.sweep(local_task, {"x": [1, 2]}, scheduler="tcp://127.0.0.1:1",
                          progress=False)
    bad = tmp_path / "not.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="checkpoint .* is not a tiltlab.sweep checkpoint"):
        tiltlab.sweep(local_task, {"x": [1]}, n_workers=1, checkpoint=bad, progress=False)
    assert calls == []


def test_streams_are_keyed_by_the_cells_parameters():
    grid = [{"x": x, "scale": s} for x in (0.0, 1.0, 2.0) for s in (1, 3)]
    table = tiltlab.sweep(noisy, grid, n_workers=1, seed=11, progress=False)
    shuffled = [grid[i] for i in (4, 1, 5, 0, 3, 2)]
    other = tiltlab.sweep(noisy, shuffled, n_workers=1, seed=11, progress=False)
    key = ["x", "scale"]
    pd.testing.assert_frame_equal(table.sort_values(key).reset_index(drop=True),
                                  other.sort_values(key).reset_index(drop=True),
                                  check_exact=True)
    reseeded = tiltlab.sweep(noisy, grid, n_workers=1, seed=12, progress=False)
    assert not np.any(table["first"].to_numpy() == reseeded["first"].to_numpy())
    # numbers are keyed by value: scale=3 and scale=3.0 are one cell; True is not 1
    assert sweep_mod.cell_key({"x": 1, "s": 3}) == sweep_mod.cell_key({"x": 1.0, "s": 3.0})
    assert sweep_mod.cell_key({"x": 1}) != sweep_mod.cell_key({"x": True})
    assert sweep_mod.cell_key({"x": 0.1}) != sweep_mod.cell_key({"x": np.float32(0.1)})
    # the stream is SeedSequence(seed, spawn_key=key of the cell)
    words = sweep_mod.cell_key({"x": 2.0, "scale": 3})
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(11, spawn_key=words)))
    rng.standard_normal(5)
    assert table.loc[5, "first"] == int(rng.integers(0, 1 << 62))
    # a model file is keyed by its contents: two paths of one file's bytes are one cell
    m = tiltlab.load_model("ternary")
    paths = [os.path.join(os.path.dirname(__file__), f"_sweep_model{i}.npz") for i in (1, 2)]
    try:
        for p in paths:
            np.savez(p, logits=m.logits, rewards=m.rewards)
        a = tiltlab.sweep("simulate_best_of_n", {"model": paths, "n": [3], "size": [50]},
                          n_workers=1, progress=False)
    finally:
        for p in paths:
            os.remove(p)
    assert a["counts"][0].tolist() == a["counts"][1].tolist()
    b = tiltlab.sweep("simulate_best_of_n", {"model": [m, "ternary"], "n": [3], "size": [50]},
                      n_workers=1, progress=False)
    assert b["counts"][0].tolist() != b["counts"][1].tolist()  # keyed by arrays vs name


def test_every_builtin_task_runs():
    t = tiltlab.sweep("frontier", {"model": ["ternary"], "kl": [0.0, 0.5]}, n_workers=1,
                      progress=False)
    m = tiltlab.load_model("ternary")
    assert t["expected_reward"].tolist() == [float(tiltlab.frontier(m.logits, m.rewards, k))
                                             for k in (0.0, 0.5)]
    p = tiltlab.sweep("policy_frontier", [{"model": "ternary", "method": "best_of_n",
                                           "parameter": 4},
                                          {"model": "ternary", "method": "soft_best_of_n",
                                           "grid": [0.5, 1.0], "n": 4}],
                      n_workers=1, progress=False)
    f = tiltlab.policy_frontier(m.logits, m.rewards, "best_of_n", [4])
    assert p.loc[0, "win_rate"] == f.win_rate[0] and len(p.loc[1, "kl"]) == 2
    s = tiltlab.sweep("sequence_best_of_n", {"model": ["ternary"], "length": [10],
                                             "log_n": [1.0]}, n_workers=1, progress=False)
    seq = tiltlab.Memoryless(m.logits, m.rewards, 10, step=m.step).best_of_n(log_n=1.0)
    assert s.loc[0, "kl"] == seq.kl
    e = tiltlab.sweep("estimator_study", [
        {"model": "ternary", "policy": "best_of_n", "parameter": 4, "n_samples": 50,
         "repeats": 3},
        {"model": "ternary", "policy": "tilted", "parameter": 0.5, "n_samples": 20,
         "repeats": 3, "length": 5}], n_workers=1, seed=4, progress=False)
    assert e.loc[0, "exact_kl"] == float(tiltlab.best_of_n(m.logits, m.rewards, 4).kl)
    assert np.isfinite(e.loc[0, "bound_mean"]) and np.isfinite(e.loc[1, "rb_mean"])
    assert np.isnan(e.loc[1, "bound_mean"])  # no analytic bound for a tilted policy


def test_progress_lines_and_silence(capsys):
    tiltlab.sweep(noisy, {"x": [0.0], "scale": [1]}, n_workers=1)
    assert "sweep: 1/1 cells" in capsys.readouterr().err
    tiltlab.sweep(noisy, {"x": [0.0], "scale": [1]}, n_workers=1, progress=False)
    assert capsys.readouterr().err == ""


def test_docstring_examples():
    import doctest

    result = doctest.testmod(sweep_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_import_tiltlab_loads_no_extra():
    code = ("import sys, tiltlab; bad = [m for m in ('pandas', 'pyarrow', 'dask', "
            "'distributed', 'tqdm') if m in sys.modules]; sys.exit(str(bad) if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert tiltlab.sweep is sweep_mod.sweep


def test_a_killed_pool_worker_is_replaced(tmp_path, capsys):
    grid = {"x": list(range(8)), "marks": [str(tmp_path)]}
    got = tiltlab.sweep(dies_once, grid, n_workers=2)
    err = capsys.readouterr().err
    assert (tmp_path / "died-2").exists()               # the worker did die
    assert "a pool worker process died; rerunning" in err
    want = tiltlab.sweep(dies_once, grid, n_workers=1, progress=False)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_a_task_that_always_kills_its_worker_fails_clearly():
    with pytest.raises(RuntimeError, match="died 4 times"):
        tiltlab.sweep(always_dies, {"x": [1, 2]}, n_workers=2, progress=False)


def test_a_whole_sweep_through_scheduler_address(cluster_client):
    """scheduler= makes its own client (not the default one): the sweep runs on it."""
    grid = {"model": ["ternary"], "n": [1, 2, 4]}
    got = tiltlab.sweep("best_of_n", grid, scheduler=cluster_client.scheduler.address,
                        progress=False)
    want = tiltlab.sweep("best_of_n", grid, n_workers=1, progress=False)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_functions_of_main_lambdas_and_closures_run_on_the_pool():
    """Shipped by value (cloudpickle): a pool worker cannot import them by name."""
    code = textwrap.dedent("""
        import tiltlab
        def f(x, rng):
            return {"y": x * x, "u": float(rng.random())}
        k = 3
        t1 = tiltlab.sweep(f, {"x": [1, 2, 3]}, n_workers=2, progress=False)
        t2 = tiltlab.sweep(lambda x, rng: {"y": k * x}, {"x": [1, 2]}, n_workers=2,
                           progress=False)
        t0 = tiltlab.sweep(f, {"x": [1, 2, 3]}, n_workers=1, progress=False)
        assert t1.equals(t0), (t1, t0)
        print(t1["y"].tolist(), t2["y"].tolist())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "[1, 4, 9] [3, 6]"


def test_a_checkpoint_knows_tasks_by_more_than_their_name(tmp_path):
    from functools import partial

    ck = tmp_path / "ck.parquet"
    a = tiltlab.sweep(Scaled(1), {"x": [1, 2]}, n_workers=1, checkpoint=ck, progress=False)
    assert a["y"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="different sweep .*task"):
        tiltlab.sweep(Scaled(5), {"x": [1, 2]}, n_workers=1, checkpoint=ck, progress=False)
    again = tiltlab.sweep(Scaled(1), {"x": [1, 2, 3]}, n_workers=1, checkpoint=ck,
                          progress=False)
    assert again["y"].tolist() == [1, 2, 3]
    ck2 = tmp_path / "ck2.parquet"
    tiltlab.sweep(partial(noisy, scale=1.0), {"x": [0.0]}, n_workers=1, checkpoint=ck2,
                  progress=False)
    with pytest.raises(ValueError, match="different sweep .*task"):
        tiltlab.sweep(partial(noisy, scale=100.0), {"x": [0.0]}, n_workers=1,
                      checkpoint=ck2, progress=False)


def test_a_result_named_like_a_parameter_is_kept():
    table = tiltlab.sweep(ten_x_as_y, [{"x": 1, "y": 0}, {"x": 2, "y": 0}], n_workers=1,
                          progress=False)
    assert list(table.columns) == ["x", "y", "y_result"]
    assert table["y_result"].tolist() == [10, 20] and table["y"].tolist() == [0, 0]
