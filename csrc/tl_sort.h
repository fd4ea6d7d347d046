/* Stable LSD radix sort of (64-bit key, 64-bit payload) pairs, and the order-preserving
 * map from doubles to keys.  Used to group outcomes into reward levels (SPEC section 3). */
#ifndef TL_SORT_H
#define TL_SORT_H

#include <stdint.h>
#include "tl_config.h"
#include "tl_guard.h"

/* Unsigned key with key(a) < key(b) iff a < b for non-NaN doubles; -0.0 maps like +0.0. */
static inline uint64_t tl_double_key(double x) {
    union { double d; uint64_t u; } v;
    v.d = x + 0.0; /* -0.0 + 0.0 = +0.0 */
    return (v.u >> 63) ? ~v.u : (v.u | 0x8000000000000000ULL);
}

/* Sorts keys[0..n) ascending, carrying vals along; stable.  kbuf and vbuf are scratch of
 * length n.  8-bit digits (measured faster than 11- and 16-bit ones here: fewer write
 * streams); digits on which all keys agree are skipped, so integer-valued rewards need
 * 1-3 passes.  The result ends up in keys/vals. */
/* `stop` (tl_guard.h; may be NULL) is polled before each pass: once raised the sort returns
 * at once, leaving the keys in no particular order (the caller discards them). */
void tl_radix_sort(uint64_t *keys, int64_t *vals, ptrdiff_t n, uint64_t *kbuf, int64_t *vbuf,
                   const tl_stop_flag *stop);

#endif
