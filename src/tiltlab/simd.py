"""Which instruction-set variant of the compiled kernels runs (SPEC section 7).

The vectorised kernels are compiled several times: ``portable`` (the baseline of the
build, SSE2 on x86-64), ``avx2`` (AVX2 + FMA) and ``avx512`` (AVX-512 F/DQ/VL/BW,
512-bit vectors).  At import tiltlab uses the best variant this CPU runs; the environment
variable ``TILTLAB_SIMD`` (``auto``, ``portable``, ``avx2`` or ``avx512``) forces one.
A forced variant that the CPU cannot run, or an unknown name, gives a
:class:`RuntimeWarning` and the automatic choice: a kernel never executes an instruction
the CPU lacks.

All variants execute the same C source with the same operation order; they differ in
vector width and in fused multiply-adds inside the exponential's polynomial, so results
agree to a few ulp (the test-suite checks every variant the CPU supports against
:mod:`tiltlab.reference`).

>>> from tiltlab import simd
>>> simd.active() in simd.VARIANTS
True
>>> with simd.use("portable"):
...     simd.active()
'portable'
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["VARIANTS", "ENV_VAR", "active", "available", "compiled", "select", "use", "info"]

VARIANTS = ("portable", "avx2", "avx512")
ENV_VAR = "TILTLAB_SIMD"

_lock = threading.Lock()
_ERRORS = {
    -1: "unknown variant {name!r}; choose one of auto, " + ", ".join(VARIANTS),
    -2: "variant {name!r} is not compiled into this build of tiltlab",
    -3: "this CPU cannot run the {name!r} variant",
}


def _modules():
    from tiltlab import _bestofn, _core, _lattice, _markov, _sampling

    return (_core, _bestofn, _lattice, _sampling, _markov)


def info() -> list[dict]:
    """One dict per variant: name, compiled (in this build), supported (by this CPU)."""
    return [{"name": n, "compiled": c, "supported": s}
            for n, c, s in _modules()[0].isa_table()]


def compiled() -> tuple[str, ...]:
    """Variants compiled into this build."""
    return tuple(v["name"] for v in info() if v["compiled"])


def available() -> tuple[str, ...]:
    """Variants that are compiled in and that this CPU runs (the ones a test can use)."""
    return tuple(v["name"] for v in info() if v["compiled"] and v["supported"])


def active() -> str:
    """The variant in use."""
    return _modules()[0].isa_active()


def select(name: str) -> str:
    """Use variant `name` ("auto" for the best available) from now on, in every module.

    Raises ValueError if the name is unknown, the build lacks it or the CPU cannot run
    it.  Returns the variant now in use.  Not meant to be called while kernels run in
    other threads (a call in flight finishes on the variant it started with)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    with _lock:
        mods = _modules()
        rc = mods[0].isa_select(name)
        if rc != 0:
            raise ValueError("tiltlab.simd.select: " + _ERRORS[rc].format(name=name))
        for m in mods[1:]:
            m.isa_select(name)
        return mods[0].isa_active()


@contextlib.contextmanager
def use(name: str):
    """Context manager: run the block with variant `name`, then restore the previous one."""
    previous = active()
    select(name)
    try:
        yield name
    finally:
        select(previous)
