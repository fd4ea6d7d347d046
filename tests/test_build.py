"""The build cannot go stale (issue 18): no build folder in the source tree by default, every
SIMD variant's compiler check redone at each configure, and a compiler that rejects a
variant's flags stops the build instead of silently dropping the variant.

These tests need the source tree (CMakeLists.txt, pyproject.toml next to ``tests/``), CMake
and cython-cmake; they are skipped where the tests run from a copy without the sources."""

import os
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_SOURCES = (ROOT / "CMakeLists.txt").is_file() and (ROOT / "pyproject.toml").is_file()
needs_sources = pytest.mark.skipif(not HAVE_SOURCES, reason="no source tree next to tests/")


def _cmake_module_path():
    try:
        import cython_cmake
    except ImportError:
        return None
    path = Path(cython_cmake.__file__).parent / "cmake"
    return path if (path / "UseCython.cmake").is_file() else None


def _cmake():
    exe = shutil.which("cmake")
    if exe is None:
        try:
            import cmake

            exe = str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
        except ImportError:
            return None
    return exe


def _missing() -> list[str]:
    """What the configure tests need and this machine lacks (named in the skip reason)."""
    wants = [("the source tree next to tests/", HAVE_SOURCES), ("cmake", _cmake()),
             ("the cython-cmake package (pip install cython-cmake)", _cmake_module_path()),
             ("gcc", shutil.which("gcc")),
             ("an x86-64 machine", platform.machine().lower() in ("x86_64", "amd64"))]
    return [what for what, ok in wants if not ok]


needs_cmake = pytest.mark.skipif(bool(_missing()),
                                 reason=f"needs {', '.join(_missing()) or 'nothing'}")


def _configure(build_dir, *defines, cc="gcc"):
    cmd = [_cmake(), "-S", str(ROOT), "-B", str(build_dir),
           "-DSKBUILD_PROJECT_NAME=tiltlab", "-DSKBUILD_PROJECT_VERSION=0.0.0",
           f"-DPython_EXECUTABLE={sys.executable}",
           f"-DCMAKE_MODULE_PATH={_cmake_module_path()}", *defines]
    env = dict(os.environ, CC=cc)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@needs_sources
def test_no_build_dir_in_the_source_tree_by_default():
    # scikit-build-core then builds in a fresh temporary directory; -Cbuild-dir=DIR opts in
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["scikit-build"]
    assert "build-dir" not in settings
    assert "build" not in settings or "dir" not in settings["build"]


@needs_cmake
def test_a_rejected_variant_flag_stops_the_configure(tmp_path):
    # a gcc that rejects -mavx512f, as an old or exotic compiler would
    wrapper = tmp_path / "gcc-no-avx512"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -mavx512f ] && '
                       'echo "error: unrecognized option -mavx512f" >&2 && exit 1; done\n'
                       'exec gcc "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    proc = _configure(tmp_path / "b1", cc=str(wrapper))
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())
    assert "avx512 kernel variant" in err and "-mavx512f" in err
    assert "TILTLAB_SIMD_VARIANTS=portable" in err
    # the explicit opt-out builds without it, and says so
    proc = _configure(tmp_path / "b2", "-DTILTLAB_SIMD_VARIANTS=portable;avx2", cc=str(wrapper))
    assert proc.returncode == 0, proc.stderr
    assert "tiltlab: kernel variants: portable, avx2; OpenMP:" in proc.stdout


@needs_cmake
def test_a_stale_cached_compiler_check_is_redone(tmp_path):
    # the failure of issue 18: TL_CC_AVX2=FALSE cached in a reused build directory
    proc = _configure(tmp_path / "b", "-DTL_CC_AVX2:INTERNAL=FALSE")
    assert proc.returncode == 0, proc.stderr
    assert "tiltlab: kernel variants: portable, avx2, avx512; OpenMP:" in proc.stdout
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    assert "TL_CC_AVX2:INTERNAL=1" in cache


def _wrapper(tmp_path, name, extra):
    """A gcc that always adds `extra` to its command line."""
    wrapper = tmp_path / name
    wrapper.write_text(f'#!/bin/sh\nexec gcc {extra} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


@needs_cmake
def test_a_target_that_is_not_x86_64_gets_the_portable_kernels_only(tmp_path):
    # what aarch64, an arm64 Mac, or a universal2 build looks like to the configure: the
    # compiler does not define __x86_64__ (the host processor may still say x86_64)
    not_x86 = _wrapper(tmp_path, "gcc-not-x86", "-U__x86_64__")
    proc = _configure(tmp_path / "b1", cc=not_x86)
    assert proc.returncode == 0, proc.stderr
    assert "tiltlab: kernel variants: portable; OpenMP:" in proc.stdout
    # asking for an x86 variant there is an error that says what to do
    proc = _configure(tmp_path / "b2", "-DTILTLAB_SIMD_VARIANTS=portable;avx2", cc=not_x86)
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())
    assert "asks for x86 variants" in err and "TILTLAB_SIMD_VARIANTS=portable" in err


@needs_cmake
def test_the_build_reports_its_progress_and_summary(tmp_path):
    # pip shows none of this without -v: the lines also go to /dev/tty when there is one
    # (not here: the configure runs without a controlling terminal's help, stdout piped)
    proc = _configure(tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert ("tiltlab: compiling kernel variants: portable, avx2, avx512; OpenMP:"
            in proc.stdout)
    assert "(9 parts," in proc.stdout
    script = (tmp_path / "b" / "tl_progress.sh").read_text()
    assert "/dev/tty" in script and "tiltlab: done: kernel variants:" in script
    # the last of the 9 parts prints the summary; the count is per build
    env = dict(os.environ, TILTLAB_BUILD_TTY="0")
    lines = [subprocess.run(["sh", str(tmp_path / "b" / "tl_progress.sh"), f"part {k}"],
                            capture_output=True, text=True, env=env, check=True).stdout
             for k in range(9)]
    assert lines[0].strip() == "tiltlab: [1/9] built part 0"
    assert "tiltlab: done: kernel variants: portable, avx2, avx512" in lines[8]
    assert all("done" not in line for line in lines[:8])
