/* Log-sum-exp of a row (SciPy semantics: NaN anywhere -> NaN, +inf -> +inf,
 * all -inf or empty -> -inf). */
#ifndef TL_LSE_H
#define TL_LSE_H

#include "tl_config.h"

#define TL_LSE_NAN 1
#define TL_LSE_POSINF 2

/* The entries equal to the maximum are counted apart from the others, so that the
 * result is m + log1p((count - 1) + rest): full relative accuracy when one entry
 * dominates (as SciPy's logsumexp). */
typedef struct {
    double m;     /* max over finite entries (-inf if none) */
    double count; /* number of entries equal to m */
    double rest;  /* sum of exp(x - m) over entries below m */
    int flags;
} tl_lse_acc;

void tl_lse_chunk_f64(const double *x, ptrdiff_t n, tl_lse_acc *acc);
void tl_lse_chunk_f32(const float *x, ptrdiff_t n, tl_lse_acc *acc);
void tl_lse_merge(tl_lse_acc *into, const tl_lse_acc *other);
double tl_lse_finalize(const tl_lse_acc *acc);

#endif
