/* Test hook (see tl_mathcheck.h): the functions of tl_exp.h over an array, compiled once
 * per SIMD variant.  Each function runs in its own loop over the array, the shape of the
 * kernels' block loops, so that the variant's vectorised code is what gets measured. */
#include "tl_mathcheck.h"
#include "tl_exp.h"

#define TL_MC_LOOP(expr)                                                                  \
    do {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                               \
            const double v = x[i];                                                        \
            out[i] = (expr);                                                              \
        }                                                                                 \
    } while (0)

static inline double tl__mc_emx(double v, int part) {
    double e, em, emx;
    tl_exp_expm1_emx(v, &e, &em, &emx);
    return part == 0 ? e : part == 1 ? em : emx;
}

void tl_mathcheck(const double *TL_RESTRICT x, ptrdiff_t n, int func, double *TL_RESTRICT out) {
    switch (func) {
    case TL_MC_EXP: TL_MC_LOOP(tl_exp(v)); break;
    case TL_MC_EXPM1: TL_MC_LOOP(tl_expm1(v)); break;
    case TL_MC_EMX_E: TL_MC_LOOP(tl__mc_emx(v, 0)); break;
    case TL_MC_EMX_EM: TL_MC_LOOP(tl__mc_emx(v, 1)); break;
    case TL_MC_EMX_EMX: TL_MC_LOOP(tl__mc_emx(v, 2)); break;
    case TL_MC_KL_TERM: TL_MC_LOOP(tl_kl_term(v)); break;
    case TL_MC_EXPM1_MINUS_X: TL_MC_LOOP(tl_expm1_minus_x(v)); break;
    default: break;
    }
}
