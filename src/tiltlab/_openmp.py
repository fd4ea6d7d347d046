"""How the OpenMP threads of the compiled kernels wait (imported first by tiltlab).

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose how they
wait (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` or ``KMP_LIBRARY`` set).
A waiting thread that spins keeps its core busy; on a machine where another process needs
that core, every call of a threaded kernel then slows down many times over (measured on 2
cores with one busy process: tens of milliseconds per call instead of a few).  Passive
threads sleep on a futex when they run out of work, so a busy machine costs a call about
the time one thread would take.

The runtime reads its environment when it is loaded (GNU libgomp) or first used (LLVM
libomp), so the variable is set while the compiled core loads and makes its first OpenMP
call, and removed right after: the user's environment and child processes stay as they
were.  An OpenMP runtime that another library loaded before tiltlab keeps the settings it
started with.
"""

from __future__ import annotations

import os

USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")

#: True when tiltlab asked for passive waiting (the user had set none of USER_SETTINGS)
PASSIVE_REQUESTED = not any(k in os.environ for k in USER_SETTINGS)

if PASSIVE_REQUESTED:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
try:
    from tiltlab import _core

    _core.max_threads()  # the first OpenMP call: a lazily started runtime reads its settings
finally:
    if PASSIVE_REQUESTED:
        os.environ.pop("OMP_WAIT_POLICY", None)
