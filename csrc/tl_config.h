/* tiltlab C layer: shared configuration.
 *
 * The C layer knows nothing of Python.  Every kernel processes a row as a sequence of
 * fixed-size chunks (TL_CHUNK elements) whose partial states are merged left to right,
 * so the result of a row never depends on how many threads computed its chunks.
 */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "tl_isa.h"

#if defined(__GNUC__) || defined(__clang__)
#define TL_INLINE static inline __attribute__((always_inline))
/* a helper kept out of line: its loops vectorise in isolation where, inlined into a caller
 * with branches around them, GCC 12 gives up ("control flow in loop") */
#define TL_NOINLINE static __attribute__((noinline))
/* the same for header helpers (no unused-function warning where a file does not call it) */
#define TL_OUTLINE static __attribute__((noinline, unused))
#define TL_RESTRICT __restrict__
#define TL_PREFETCH(p) __builtin_prefetch(p)
#else
#define TL_INLINE static inline
#define TL_NOINLINE static
#define TL_OUTLINE static inline
#define TL_RESTRICT
#define TL_PREFETCH(p) ((void)0)
#endif

/* Elements per chunk: the unit of work for threads and the unit of determinism. */
#define TL_CHUNK 16384
/* Elements per block inside a chunk: block-local buffers live on the stack (L1). */
#define TL_BLOCK 256

/* Status flags reported per row; the Python layer turns them into exceptions. */
#define TL_FLAG_BAD_LOGIT 1   /* a logit is NaN or +inf */
#define TL_FLAG_BAD_REWARD 2  /* a reward is NaN or +-inf */
#define TL_FLAG_EMPTY_ROW 4   /* every logit of the row is -inf */
#define TL_FLAG_INF_KL 16     /* KL(p||q) is +inf: q is zero where p is not */
#define TL_FLAG_REWARD_RANGE 256 /* finite rewards whose differences overflow double */
#define TL_FLAG_STOPPED 512   /* the work was abandoned on a stop request (tl_guard.h) */
/* flags that mean "bad input" (the result is not computed) */
#define TL_FLAGS_INPUT (TL_FLAG_BAD_LOGIT | TL_FLAG_BAD_REWARD | TL_FLAG_REWARD_RANGE)

/* |lam| * (reward range over the support) up to which the product form is used. */
#define TL_PRODUCT_RANGE 600.0

static inline ptrdiff_t tl_num_chunks(ptrdiff_t n) {
    return n <= 0 ? 1 : (n + TL_CHUNK - 1) / TL_CHUNK;
}

#endif
