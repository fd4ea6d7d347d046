#include <math.h>
#include "tl_lse.h"
#include "tl_exp.h"
#include "tl_block.h"
#include "tl_simd.h"

#define TL_IMPL "tl_lse_impl.h"
#include "tl_template.h"

void tl_lse_merge(tl_lse_acc *a, const tl_lse_acc *b) { TL_RUNNING_MERGE(a, b, tl_rescale); }

double tl_lse_finalize(const tl_lse_acc *a) {
    if (a->flags & TL_LSE_NAN) return NAN;
    if (a->flags & TL_LSE_POSINF) return INFINITY;
    if (a->m == -INFINITY) return -INFINITY;
    return a->m + log1p((a->count - 1.0) + a->rest);
}
