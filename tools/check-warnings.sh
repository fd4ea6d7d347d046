#!/usr/bin/env bash
# Compile tiltlab with a given C compiler and fail on any warning in tiltlab's own C.
#
#   tools/check-warnings.sh [CC]          (CC defaults to $CC, else cc; e.g. clang, gcc)
#
# Configures and builds the CMake project directly (no wheel, nothing installed) in a
# temporary directory with -DTILTLAB_WERROR=ON: the kernels in csrc/ compile with the
# project's warning flags (-Wall -Wextra) plus -Werror, every SIMD variant included. The
# Cython-generated modules are compiled too, with the compiler's default warnings: any
# warning they print is reported and also fails the check.
#
# Needs cmake, ninja (or make), and, in the running Python ($PYTHON, else python3): numpy,
# cython and cython-cmake (pip install "cython>=3.0.10" cython-cmake numpy cmake ninja).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
CC="${1:-${CC:-cc}}"
export CC
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tiltlab-warnings.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

missing=()
for mod in numpy Cython cython_cmake; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
command -v cmake >/dev/null 2>&1 || "$PY" -c "import cmake" 2>/dev/null || missing+=(cmake)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "check-warnings.sh: missing in $PY: ${missing[*]}" \
       "(pip install \"cython>=3.0.10\" cython-cmake numpy cmake ninja)" >&2
  exit 2
fi
CMAKE="$(command -v cmake || "$PY" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))')"
MODPATH="$("$PY" -c 'import cython_cmake, os; print(os.path.join(os.path.dirname(cython_cmake.__file__), "cmake"))')"
GEN=()
if command -v ninja >/dev/null 2>&1 || "$PY" -c "import ninja" 2>/dev/null; then GEN=(-G Ninja); fi
if [ "${#GEN[@]}" -gt 0 ] && ! command -v ninja >/dev/null 2>&1; then
  export PATH="$("$PY" -c 'import ninja, os; print(ninja.BIN_DIR)'):$PATH"
fi

start=$SECONDS
echo "check-warnings.sh: $("$CC" --version | head -1) ($CC), cmake $("$CMAKE" --version | head -1 | cut -d' ' -f3)"
TILTLAB_BUILD_TTY=0 "$CMAKE" -S "$ROOT" -B "$TMP/build" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DTILTLAB_WERROR=ON \
  -DSKBUILD_PROJECT_NAME=tiltlab -DSKBUILD_PROJECT_VERSION=0.0.0 \
  -DPython_EXECUTABLE="$("$PY" -c 'import sys; print(sys.executable)')" \
  -DCMAKE_MODULE_PATH="$MODPATH" > "$TMP/configure.log" 2>&1 \
  || { cat "$TMP/configure.log"; echo "check-warnings.sh: configure FAILED" >&2; exit 1; }
grep "tiltlab:" "$TMP/configure.log" || true
status=0
TILTLAB_BUILD_TTY=0 "$CMAKE" --build "$TMP/build" > "$TMP/build.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  cat "$TMP/build.log"
  echo "check-warnings.sh: the build FAILED with $CC (a warning in csrc/ is an error here)" >&2
  exit 1
fi
if grep -E "warning:|note: the ABI" "$TMP/build.log"; then
  echo "check-warnings.sh: $CC printed the warnings above (build log: kept below)" >&2
  cat "$TMP/build.log" >&2
  exit 1
fi
echo "check-warnings.sh: no warnings with $CC ($((SECONDS - start)) s)"
