/* Softmax and log-softmax of rows (SciPy's semantics; tiltlab/special.py).
 *
 * A row is processed as chunks of TL_CHUNK elements (the unit of work for threads and of
 * determinism, as every kernel of tl_config.h).  Pass 1 (tl_softmax_chunk_*) reads a
 * chunk once, block by block (TL_BLOCK elements): a scan for the block maximum and NaN,
 * then the terms e = exp(x - m) against the running maximum m of the chunk, summed (the
 * entries equal to m counted apart, as tl_lse.h) and, for softmax, written to the output;
 * the reference m each block was written against is kept in the chunk's state.  The chunk
 * states of a row are merged left to right (tl_softmax_merge: bitwise the same for any
 * thread count).  Pass 2 writes the results while the row is still in cache:
 *     softmax      out = e * g,  g = exp(m_block - M) / S  (one factor a block: no division)
 *     log_softmax  out = (x - M) - log1p((count - 1) + rest)
 * with M the row maximum and S = count + rest the sum of exp(x - M).  The block N + 4 is
 * prefetched (into L1 and L2) while block N is computed.
 *
 * Exactness: every difference x - M (and m_block - M) enters the exponential with its
 * rounding error (two-sum), e^(d + lo) = e^d + e^d lo, so the terms are within about one
 * ulp of the exponentials of the exact differences whatever the offset of the row; the
 * log-softmax of a row is a function of the rounded differences fl(x - M) only, hence
 * exactly invariant under any shift x + c that is exact.  float64 softmax terms use an
 * exponential without the subnormal split; a block with a term in (e^-746, e^-708) (a
 * subnormal result) is redone with the exact one, so the results are those of tl_vexp.
 * float32 rows: the difference of two floats in double needs no two-sum and the
 * exponential a degree-9 polynomial (relative error < 1e-11), flushed to 0 below e^-708
 * (below every float32): the terms are far more exact than a float32 ulp.
 *
 * Special rows (SciPy 1.17): NaN anywhere -> softmax and log_softmax all NaN; a +inf (no
 * NaN) -> softmax all NaN, log_softmax NaN at the +inf entries and -inf elsewhere; all
 * -inf -> all NaN for both.
 */
#ifndef TL_SOFTMAX_H
#define TL_SOFTMAX_H

#include "tl_config.h"

#define TL_SM_NAN 1
#define TL_SM_POSINF 2
#define TL_SM_BLOCKS (TL_CHUNK / TL_BLOCK)

typedef struct {
    double m;     /* running maximum of the finite entries (-inf if none) */
    double count; /* entries equal to m */
    double rest;  /* sum of exp(x - m) over the entries below m */
    int flags;    /* TL_SM_NAN | TL_SM_POSINF */
    double ref[TL_SM_BLOCKS]; /* softmax: the maximum block k's terms were written against */
} tl_sm_acc;

/* Pass 1 over a chunk of n <= TL_CHUNK elements; out (softmax: the chunk's output) is
 * NULL for log_softmax (nothing written). */
void tl_softmax_chunk_f64(const double *x, ptrdiff_t n, double *out, tl_sm_acc *acc);
void tl_softmax_chunk_f32(const float *x, ptrdiff_t n, float *out, tl_sm_acc *acc);

/* Pass 2 of softmax over a chunk: out holds pass 1's terms; chunk is its pass-1 state and
 * row the merged state of the whole row. */
void tl_softmax_scale_f64(double *out, ptrdiff_t n, const tl_sm_acc *chunk,
                          const tl_sm_acc *row);
void tl_softmax_scale_f32(float *out, ptrdiff_t n, const tl_sm_acc *chunk,
                          const tl_sm_acc *row);

/* Pass 2 of log_softmax over a chunk of the row x. */
void tl_log_softmax_write_f64(const double *x, ptrdiff_t n, double *out, const tl_sm_acc *row);
void tl_log_softmax_write_f32(const float *x, ptrdiff_t n, float *out, const tl_sm_acc *row);

/* into <- the state of the elements of into followed by those of other (m, count, rest and
 * flags; the block references of into are left alone). */
void tl_softmax_merge(tl_sm_acc *into, const tl_sm_acc *other);

#endif
