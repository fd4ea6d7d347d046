#!/usr/bin/env bash
# Build tiltlab with AddressSanitizer + UndefinedBehaviorSanitizer and run a test subset
# under it.  Any sanitizer report fails the run (UBSan halts on the first error; ASan
# aborts on the first invalid access).
#
#   tools/sanitize.sh [VENV] [pytest args...]
#
# VENV (default: a temporary directory) is created if missing; the sanitized build is
# installed into it with the test extra.  Without pytest args the subset below runs (about
# 2-4 minutes on a 2-core machine, build included); pass e.g. `tests` for the whole suite.
#
# How: CMake option TILTLAB_SANITIZE=ON adds -fsanitize=address,undefined
# -fno-sanitize-recover=undefined to every C file (all SIMD variants and the Cython
# modules).  Python itself is not instrumented, so the ASan runtime must be the first
# library in the process: LD_PRELOAD of the compiler's libasan.  Leak detection is off
# (the interpreter keeps memory to exit by design; tests/test_memory.py checks growth).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${1:-}"
shift || true
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tiltlab-san.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
if [ -z "$VENV" ]; then VENV="$TMP/venv"; fi
CC="${CC:-gcc}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

SECONDS=0
echo "==> sanitized build (ASan + UBSan) into $VENV"
python -m pip install --quiet --force-reinstall --no-deps \
  -Ccmake.define.TILTLAB_SANITIZE=ON -Ccmake.build-type=Debug \
  -Cbuild-dir="$TMP/build" "$ROOT"
# the test dependencies (the [test] extra) without rebuilding tiltlab
DEPS="$(python - "$ROOT/pyproject.toml" <<'PYEOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(" ".join(p.get("dependencies", []) + p["optional-dependencies"]["test"]))
PYEOF
)"
# shellcheck disable=SC2086
python -m pip install --quiet $DEPS

echo "    built and installed in ${SECONDS} s"
# the extension modules must really be instrumented
python - <<'PYEOF'
import importlib.util, pathlib, subprocess
# find the package without importing it (an instrumented module needs the ASan runtime
# preloaded, which this step does not do)
pkg = pathlib.Path(importlib.util.find_spec("tiltlab").submodule_search_locations[0])
mods = sorted(pkg.glob("_*.so"))
assert mods, "no extension modules found"
for m in mods:
    syms = subprocess.run(["nm", "-D", str(m)], capture_output=True, text=True).stdout
    if "__asan_" not in syms or "__ubsan_" not in syms:
        raise SystemExit(f"{m.name} is not instrumented with ASan + UBSan")
print("    instrumented:", ", ".join(m.name.split(".")[0] for m in mods))
PYEOF

ASAN_LIB="$("$CC" -print-file-name=libasan.so)"
if [ ! -e "$ASAN_LIB" ]; then
  echo "libasan not found next to $CC" >&2
  exit 2
fi

cp -r "$ROOT/tests" "$TMP/tests"
cd "$TMP"
export LD_PRELOAD="$ASAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:print_summary=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:report_error_type=1"
export PYTHONFAULTHANDLER=1
LOG="$TMP/sanitizer.log"
echo "==> tests under ASan + UBSan ($(python -c 'import tiltlab; print(tiltlab.build_info()["simd"], tiltlab.simd.available())'))"
if [ "$#" -eq 0 ]; then
  set -- tests/test_logsumexp.py tests/test_tilting.py tests/test_kl_divergence.py \
    tests/test_bestofn.py tests/test_threads.py tests/test_bad_input.py tests/test_simd.py \
    tests/test_solve.py tests/test_regressions.py tests/test_special.py \
    tests/test_sampling.py tests/test_samplers.py \
    "tests/test_memoryless.py" "tests/test_policies.py" -x -q -p no:cacheprovider \
    -k "not mpmath and not reproduce and not cli"
fi
set +e
python -m pytest "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# a report that did not abort (e.g. printed from a worker thread) still fails the run
if grep -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$LOG" >/dev/null; then
  echo "==> sanitizer reports found" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "==> tests failed under the sanitizers (status $status)" >&2
  exit "$status"
fi
echo "==> sanitizers: zero reports (${SECONDS} s in all)"
