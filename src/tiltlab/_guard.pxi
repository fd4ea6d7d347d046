# Included by the Cython driver modules: Ctrl-C and fork guards (csrc/tl_guard.h).
#
# Ctrl-C: a driver whose call can take long creates an _Interruptible before releasing
# the GIL and calls its finish() after the kernels return.  In the Python main thread that
# installs the C-level SIGINT handler of tl_guard.c for the duration of the call; the
# kernels poll tl_stop_flag_here() between chunks (or batches of draws) and skip the rest
# of their work once SIGINT arrived; finish() restores Python's handler and raises what
# Python's own handler raises (KeyboardInterrupt by default; KeyboardInterrupt anyway if a
# user handler returns, since the results are incomplete).  Calls from other threads are
# never stopped.  Fork: tl_team_size() gives 1 thread in a forked child (see tl_guard.h).
from cpython.exc cimport PyErr_CheckSignals

import threading as _threading

tl_fork_guard_init()

# Work (elements, draws or candidates) from which a call installs the guard: smaller calls
# take well under a millisecond, and Python handles the signal as soon as they return.
cdef double _GUARD_WORK = 131072.0


cdef class _Interruptible:
    """Ctrl-C for one compiled call (released by __dealloc__ if the driver raises)."""
    cdef bint active

    def __cinit__(self, double work):
        self.active = False
        if work >= _GUARD_WORK and _threading.get_ident() == _threading.main_thread().ident:
            self.active = tl_sigint_guard_begin() != 0

    cdef int finish(self) except -1:
        """Restore the SIGINT handler; raise if SIGINT arrived during the call."""
        if not self.active:
            return 0
        self.active = False
        if tl_sigint_guard_end():
            PyErr_CheckSignals()
            raise KeyboardInterrupt
        return 0

    def __dealloc__(self):
        if self.active:
            tl_sigint_guard_end()
