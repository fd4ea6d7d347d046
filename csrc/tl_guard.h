/* Guards for long kernel calls: interrupts and fork (plain POSIX C, nothing of Python).
 *
 * Interrupts.  A kernel that can run long polls a stop flag between chunks or batches of
 * draws (tl_stop_requested: one load of a volatile sig_atomic_t) and abandons its work once
 * the flag is raised; its outputs are then incomplete and the caller discards them.  The
 * flag of a call made by the thread that owns the process's SIGINT handling (the Cython
 * drivers: the Python main thread, for calls long enough to matter) is raised by a SIGINT
 * handler installed only while that call runs (tl_sigint_guard_begin / _end).  The handler
 * raises the flag, then calls the handler it replaced, so that the previous owner (Python)
 * records the signal as usual; _end restores that handler.  Every other thread polls a flag
 * that is never raised (tl_stop_flag_here): a signal meant for the main thread never
 * aborts a call made by another thread.  One guard at a time per copy of this file (each
 * extension module links its own copy): only the owning thread begins and ends it.
 *
 * Fork.  An OpenMP runtime's thread pool does not survive fork(): in a child forked after
 * the parent ran a parallel region, GNU libgomp waits forever for the pool's threads at
 * the next region with more than one thread (a region of one thread runs normally).  After
 * tl_fork_guard_init, a child forked from this process (by any thread, through fork() or
 * os.fork) has tl_forked_child() = 1 and tl_team_size(n) = 1: the drivers then run every
 * parallel region on the calling thread alone.  Results do not depend on the thread count.
 */
#ifndef TL_GUARD_H
#define TL_GUARD_H

#include <signal.h>

typedef volatile sig_atomic_t tl_stop_flag;

/* Non-zero once the work of the call polling `stop` is to be abandoned (NULL: never). */
static inline int tl_stop_requested(const tl_stop_flag *stop) {
    return stop != 0 && *stop != 0;
}

/* Installs the SIGINT handler of the guard for the calling thread and returns 1; returns 0
 * (nothing installed) when a guard is already active, or when SIGINT is ignored or has its
 * default action (then a signal does what it always did). */
int tl_sigint_guard_begin(void);

/* Restores the handler replaced by tl_sigint_guard_begin; returns 1 if SIGINT arrived
 * while the guard was active (0 if no guard was active). */
int tl_sigint_guard_end(void);

/* The flag the calling thread's kernels poll: the active guard's flag in the thread that
 * began it, a flag that is never raised in every other thread.  Call it from the thread
 * that makes the call (not from inside a parallel region) and pass the pointer on. */
const tl_stop_flag *tl_stop_flag_here(void);

/* Registers the fork handler (once; later calls do nothing). */
void tl_fork_guard_init(void);

/* 1 in a process forked from one that called tl_fork_guard_init, else 0. */
int tl_forked_child(void);

/* The number of threads a parallel region may use when n are asked for: 1 in a forked
 * child, else n. */
int tl_team_size(int n);

#endif
