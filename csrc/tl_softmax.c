/* Softmax and log-softmax of rows: see tl_softmax.h. */
#include <math.h>
#include "tl_softmax.h"
#include "tl_exp.h"
#include "tl_block.h"
#include "tl_simd.h"

/* e^(a - b) for a <= b (a > -inf or the result is 0), with the rounding error of a - b
 * carried into the exponential (two-sum): within about one ulp of e^(a - b) exactly. */
static double tl__sm_factor(double a, double b) {
    if (a == b) return 1.0;
    if (a == -INFINITY) return 0.0;
    double d = a - b, bp = d - a, ap = d - bp;
    double lo = (a - ap) + (-b - bp);
    if (lo != lo) lo = 0.0; /* d = -inf (overflowed difference): e^d = 0 */
    double e = tl_exp(d);
    return e + e * lo;
}

#define TL_IMPL "tl_softmax_impl.h"
#include "tl_template.h"

void tl_softmax_merge(tl_sm_acc *a, const tl_sm_acc *b) {
    TL_RUNNING_MERGE(a, b, tl__sm_factor);
}
