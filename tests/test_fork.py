"""Fork safety: after a threaded call in the parent, a forked child (os.fork, a
multiprocessing pool with the fork start method) runs every kernel family and gets the
parent's results bitwise, instead of waiting forever for the parent's OpenMP thread pool.

Each scenario runs in a subprocess of its own session with a hard timeout: a hang fails
the test (and the whole process group is killed) instead of hanging the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import tiltlab
from tiltlab import _validation

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMEOUT = 60.0

# Inputs above the small-work threshold, so that n_threads=2 really starts a team of two.
COMMON = textwrap.dedent("""
    import os, sys
    import numpy as np
    import tiltlab
    from tiltlab import _validation

    rng = np.random.default_rng(3)
    V = 50_000
    L = rng.normal(size=(3, V)) * 2
    R = rng.normal(size=(3, V))
    LAM = np.array([0.3, 1.0, -2.0])
    assert L.size >= _validation.SMALL_WORK
    # soft best-of-n and Memoryless: many levels, several sampling blocks
    LS = rng.normal(size=3000)
    RS = np.round(rng.normal(size=3000), 3)
    MEM = tiltlab.Memoryless(np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0], 100, n_threads=2)

    def results(nt):
        out = {}
        out["tilt_stats"] = tuple(tiltlab.tilt_stats(L, R, LAM, n_threads=nt))
        out["tilt"] = tiltlab.tilt(L, R, LAM, n_threads=nt)
        out["solve_lambda"] = tiltlab.solve_lambda(L, R, 0.2, n_threads=nt)
        out["cumulants"] = tiltlab.cumulants(L, R, 4, LAM, n_threads=nt)
        out["logsumexp"] = tiltlab.logsumexp(L, n_threads=nt)
        out["kl_divergence"] = tiltlab.kl_divergence(L, L[::-1], n_threads=nt)
        b = tiltlab.best_of_n(L, R, 16, n_threads=nt)
        out["best_of_n"] = (b.kl, b.expected_reward, b.win_rate, b.log_probs)
        out["sample_best_of_n"] = tiltlab.sample_best_of_n(L, R, 16, size=200_000, rng=1,
                                                           n_threads=nt)
        out["simulate_best_of_n"] = tiltlab.simulate_best_of_n(L, R, 64, size=20_000, rng=2,
                                                               n_threads=nt)
        mb = MEM.best_of_n(log_n=20.0)
        out["memoryless_best_of_n"] = (mb.kl, mb.log_probs)
        out["memoryless_sample_rewards"] = mb.sample_rewards(200_000, rng=3, n_threads=nt)
        out["memoryless_sample"] = mb.sample(3_000, rng=4, n_threads=nt)
        out["soft_best_of_n"] = tiltlab.soft_best_of_n(LS, RS, 8, 0.01, n_threads=nt).log_probs
        return out

    def mismatches(got, want):
        bad = []
        for k, w in want.items():
            g = got[k]
            ws = w if isinstance(w, tuple) else (w,)
            gs = g if isinstance(g, tuple) else (g,)
            if not all(np.array_equal(a, b) for a, b in zip(gs, ws)):
                bad.append(k)
        return bad
""")

OS_FORK = COMMON + textwrap.dedent("""
    import time
    want = results(2)                      # the parent's threaded calls
    pid = os.fork()
    if pid == 0:                           # the child
        status = 0
        try:
            for nt in (2, None):
                bad = mismatches(results(nt), want)
                if bad:
                    print(f"child: n_threads={nt}: results differ from the parent's: {bad}",
                          flush=True)
                    status = 4
            info = tiltlab.build_info()
            if not (info.get("forked_child") and info["max_threads"] == 1):
                print("child: build_info does not report one thread:", info, flush=True)
                status = 3
            if _validation.n_threads_value(2) != 1 or _validation.n_threads_value(None) != 1:
                print("child: n_threads is not limited to 1", flush=True)
                status = 3
            try:
                _validation.n_threads_value(0)
                print("child: n_threads=0 accepted", flush=True)
                status = 3
            except ValueError:
                pass
            import contextlib, io
            from tiltlab.app import cli
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                cli.main(["info"])
            if "threads: 1 (a forked child" not in text.getvalue():
                print("child: tiltlab info does not report one thread:", text.getvalue(),
                      flush=True)
                status = 3
            print("child: done", flush=True)
        except BaseException as exc:       # report, never fall back into the parent's code
            print("child: error", repr(exc), flush=True)
            status = 5
        os._exit(status)
    deadline = time.monotonic() + 45
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            print("parent: the forked child hangs", flush=True)
            sys.exit(6)
        time.sleep(0.02)
    sys.exit(os.waitstatus_to_exitcode(status))
""")

POOL = COMMON + textwrap.dedent("""
    import multiprocessing as mp

    def work(lam):
        res = (tiltlab.tilt_stats(L, R, lam, n_threads=2).kl,
               tiltlab.tilt_stats(L, R, lam).log_partition,
               tiltlab.sample_best_of_n(L, R, 16, size=150_000, rng=5, n_threads=2))
        info = tiltlab.build_info()
        return (info.get("forked_child"), info["max_threads"]) + res

    if __name__ == "__main__":
        lams = [0.1, 0.5, 1.0, 2.0]
        want = [work(lam)[2:] for lam in lams]          # threaded calls in the parent
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map(work, lams)
        for g, w in zip(got, want):
            assert g[0] is True and g[1] == 1, g[:2]
            assert all(np.array_equal(a, b) for a, b in zip(g[2:], w))
        print("pool: done", flush=True)
""")


def _run(script: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "fork_case.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="2"))
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the script and every forked child
        out, err = proc.communicate()
        pytest.fail(f"a forked child hangs (killed after {TIMEOUT:.0f} s)\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_os_fork_child_runs_every_kernel_after_threaded_parent(tmp_path):
    res = _run(OS_FORK, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "child: done" in res.stdout


def test_fork_pool_workers_run_kernels_after_threaded_parent(tmp_path):
    res = _run(POOL, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pool: done" in res.stdout


def test_parent_process_keeps_its_threads():
    info = tiltlab.build_info()
    assert info["forked_child"] is False
    assert _validation.n_threads_value(2) == 2
    assert info["max_threads"] == _validation.n_threads_value(None) >= 1


def _parallel_drivers():
    """(module, driver, source) of every Python-visible driver of the installed .pyx files
    that runs an OpenMP region, directly or through cdef helpers."""
    import pathlib
    import re

    pkg = pathlib.Path(tiltlab.__file__).parent
    found = []
    for pyx in sorted(pkg.glob("_*.pyx")):
        blocks = {}
        for block in re.split(r"\n(?=(?:def|cdef|cpdef) )", pyx.read_text()):
            m = re.match(r"(def|cdef|cpdef) (?:[\w\s\*]+? )?\**(\w+)\(", block)
            if m:
                blocks[m.group(2)] = (m.group(1), block)
        parallel = {n for n, (_, b) in blocks.items() if "prange(" in b}
        grew = True
        while grew:
            grew = False
            for n, (_, b) in blocks.items():
                if n not in parallel and any(re.search(rf"\b{h}\(", b) for h in parallel):
                    parallel.add(n)
                    grew = True
        found += [(pyx.name, n, blocks[n][1]) for n in sorted(parallel) if blocks[n][0] == "def"]
    return found


def test_every_parallel_driver_limits_its_team_and_is_interruptible():
    """Structural guard for new kernels: a driver that reaches a prange takes its thread
    count through tl_team_size (one thread in a forked child) and runs under an
    _Interruptible (Ctrl-C).  Needs the .pyx sources, installed next to the modules."""
    drivers = _parallel_drivers()
    if not drivers:
        pytest.skip("the .pyx sources are not installed next to the modules")
    assert len(drivers) >= 12, [d[:2] for d in drivers]
    for module, name, body in drivers:
        assert "tl_team_size(" in body, f"{module}:{name} does not limit its team in a fork child"
        assert "_Interruptible(" in body, f"{module}:{name} does not stop on SIGINT"
