#!/usr/bin/env bash
# Valgrind memcheck over every compiled kernel family of the INSTALLED tiltlab (no rebuild).
#
# What it checks: invalid reads/writes, uses of uninitialised values (with their origins)
# and bad frees in tiltlab's C kernels (csrc/) and Cython drivers (_core, _bestofn,
# _lattice), on one pass per SIMD variant this CPU runs (tiltlab.simd.use) over: logsumexp,
# tilt_stats, tilt, kl_max, solve_lambda (per row and joint), frontier, cumulants,
# kl_divergence, best_of_n (+ log_probs), reward_levels, sample_best_of_n,
# simulate_best_of_n, rate_function, scaled_cgf, renyi_divergence, the level-law policies,
# soft_best_of_n, Memoryless (best_of_n, sample, sample_rewards, reward_log_pmf; stationary
# and not) -- with float64, float32 and non-contiguous inputs, -inf logits, rows longer than
# one work chunk on 2 threads -- and the error paths (NaN reward, all -inf row, NaN logit of
# q, a ValueError raised inside a driver).  Every result is written to /dev/null, so an
# uninitialised byte in any output is reported too (Memcheck:Param write(buf)).
# Leak checking is off (the interpreter keeps memory to exit; tests/test_memory.py checks
# growth).  tools/valgrind.supp holds suppressions for CPython / ld.so internals only.
#
#   tools/valgrind.sh [PYTHON]      (default: $PYTHON, else python3 on PATH; tiltlab
#                                    must be installed for that interpreter)
#
# Exit status: 0 when memcheck reports no error, 1 otherwise (the log is printed).
# Takes about 45-70 s on a 2-core machine (valgrind runs ~20-30x slower than native;
# most of it is starting the interpreter and importing NumPy under valgrind).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-${PYTHON:-python3}}"
LOG="$(mktemp "${TMPDIR:-/tmp}/tiltlab-valgrind.XXXXXX.log")"
trap 'rm -f "$LOG"' EXIT

read -r -d '' WORKLOAD <<'PYEOF' || true
import os
import numpy as np
import tiltlab
from tiltlab import _core, simd

SINK = os.open(os.devnull, os.O_WRONLY)


def out(*values):
    """Hand every byte of the results to the kernel (write to /dev/null): memcheck checks
    that each one is initialised."""
    for v in values:
        if hasattr(v, "_asdict"):
            out(*v)
            continue
        a = np.ascontiguousarray(np.asarray(v, dtype=np.float64))
        os.write(SINK, a.tobytes())


def fails(call):
    try:
        call()
    except ValueError:
        return
    raise SystemExit(f"expected a ValueError from {call}")


rng = np.random.default_rng(0)
V = 37                                        # odd: vector tails in every variant
lg = rng.normal(size=(3, V))
lg[1, 5] = -np.inf
lg[2, :V - 2] = -np.inf                       # a row with two possible outcomes
rw = rng.normal(size=(3, V))
rw[0, 3] = rw[0, 4]                           # a tie
lat = rng.integers(0, 4, size=(3, V)).astype(np.float64)
wide = np.repeat(lg, 2, axis=1)
inputs = {
    "float64": (lg, rw),
    "float32": (lg.astype(np.float32), rw.astype(np.float32)),
    "strided": (wide[:, ::2], np.asfortranarray(rw)),
}
long_lg = rng.normal(size=(2, 40_000))        # > one 16384-element chunk: 2 threads
long_rw = rng.normal(size=(2, 40_000))
lam = np.array([[0.5], [-1.0], [np.inf]])

for variant in simd.available():
    with simd.use(variant):
        for kind, (L, R) in inputs.items():
            out(tiltlab.logsumexp(L), tiltlab.logsumexp(L, axis=0),
                tiltlab.logsumexp(L, axis=None))
            out(tiltlab.tilt_stats(L, R, lam), tiltlab.tilt(L, R, 0.7), tiltlab.kl_max(L, R))
            out(tiltlab.solve_lambda(L, R, [[0.05], [0.3], [5.0]]),
                tiltlab.solve_lambda(L, R, 0.4, joint=True), tiltlab.frontier(L, R, 0.2))
            out(tiltlab.cumulants(L, R, 8, lam=0.3), tiltlab.kl_divergence(L, L[::-1]))
            b = tiltlab.best_of_n(L, R, n=[[4.0], [16.5], [1e6]])
            out(b.kl, b.expected_reward, b.win_rate, b.log_probs)
            out(*[x for lv in tiltlab.reward_levels(L, R) for x in lv])
            out(tiltlab.sample_best_of_n(L, R, n=8, size=300, rng=1, n_threads=2),
                tiltlab.simulate_best_of_n(L, R, 8, size=100, rng=1, n_threads=2))
            out(tiltlab.rate_function(L, R, 0.1), tiltlab.scaled_cgf(L, R, 0.3),
                tiltlab.renyi_divergence(L, L[::-1], [[0.5], [2.0], [np.inf]]))
        for L, R in ((long_lg, long_rw), (long_lg.astype(np.float32), long_rw)):
            out(tiltlab.logsumexp(L, n_threads=2), tiltlab.tilt_stats(L, R, 0.4, n_threads=2),
                tiltlab.tilt(L, R, 0.4, n_threads=2), tiltlab.kl_divergence(L, R, n_threads=2),
                tiltlab.solve_lambda(L, R, 0.2, n_threads=2),
                tiltlab.cumulants(L, R, 4, n_threads=2),
                tiltlab.best_of_n(L, R, n=8, n_threads=2).kl)
        p0, r0 = lg[0], rw[0]
        for law in (tiltlab.soft_best_of_n(p0, r0, 4, 1.0, n_threads=2),
                    tiltlab.soft_best_of_n(p0, r0, 3.5, 0.5, n_threads=1),
                    tiltlab.worst_of_n(p0, r0, 3), tiltlab.best_of_poisson(p0, r0, 2.0),
                    tiltlab.rewind_and_repeat(p0, r0, 0.3), tiltlab.calibrated_tilt(p0, r0, 2.0)):
            out(law.kl, law.expected_reward, law.win_rate, law.log_probs, law.sample(50, rng=2))
        out(*tiltlab.policy_frontier(p0, r0, "soft_best_of_n", [0.5, 1.0], n=4,
                                     n_threads=2)[1:])
        m = tiltlab.Memoryless(lg[0], lat[0], 12)
        sb = m.best_of_n(n=16)
        out(sb.kl, sb.log_probs, sb.sample(5, rng=0, n_threads=2),
            sb.sample_rewards(50, rng=0), m.reward_log_pmf().log_pmf)
        m2 = tiltlab.Memoryless(lg[:, -6:], lat[:, -6:], 3)        # one row per position
        sb2 = m2.best_of_n(log_n=1.0)
        out(sb2.kl, sb2.sample(4, rng=0), m2.reward_log_pmf().log_pmf)
        # error paths
        bad = rw.copy()
        bad[1, 2] = np.nan
        fails(lambda: tiltlab.tilt_stats(lg, bad, 1.0))
        fails(lambda: tiltlab.cumulants(lg.astype(np.float32), bad.astype(np.float32), 3))
        fails(lambda: tiltlab.best_of_n(np.full((2, V), -np.inf), rw[:2], n=4))
        fails(lambda: tiltlab.sample_best_of_n(lg, bad, n=4, size=10, rng=0))
        fails(lambda: tiltlab.kl_divergence(lg, np.where(bad != bad, np.nan, lg)))
        fails(lambda: _core.cumulant_rows(lg[0], rw[0], np.zeros(1, np.int64),
                                          np.zeros(1, np.int64), V, np.zeros(1), 33,
                                          np.empty((1, 40)), np.zeros(1, np.int32), 1))
print("tiltlab valgrind workload done:", ", ".join(simd.available()))
PYEOF

export PYTHONMALLOC=malloc          # every object through malloc: memcheck sees them all
export OMP_NUM_THREADS=2
export OMP_WAIT_POLICY=passive      # no spinning OpenMP threads under valgrind's scheduler
export TILTLAB_SIMD=auto

cd "${TMPDIR:-/tmp}"                # the installed package, not the source tree
set +e
valgrind --tool=memcheck --error-exitcode=1 --leak-check=no --errors-for-leak-kinds=none \
  --track-origins=yes --num-callers=30 --suppressions="$ROOT/tools/valgrind.supp" \
  --log-file="$LOG" "$PY" -c "$WORKLOAD"
status=$?
set -e
summary="$(grep "ERROR SUMMARY" "$LOG" | tail -1)"
if [ "$status" -ne 0 ]; then
  cat "$LOG" >&2
  echo "==> valgrind memcheck: errors (exit $status): $summary" >&2
  if grep -E "_core|_bestofn|_lattice|tl_[a-z_]+\.(c|h)" "$LOG" >/dev/null; then
    echo "==> some errors are in tiltlab's own frames (csrc/ or the Cython drivers)" >&2
  fi
  exit 1
fi
echo "==> valgrind memcheck: clean ($summary)"
