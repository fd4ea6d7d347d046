/* Test hook: the exponential family of tl_exp.h evaluated over an array (tl_mathcheck.c).
 *
 * No kernel uses it.  It is compiled once per SIMD variant like the kernels, so that
 * tests/test_exp_accuracy.py can compare every variant's compiled exp, expm1 and KL terms
 * with a high-precision reference; tl_mathcheck_isa runs the copy of a named variant
 * without changing the variant the kernels use. */
#ifndef TL_MATHCHECK_H
#define TL_MATHCHECK_H

#include <stddef.h>
#include "tl_isa.h"

/* out[i] = f(x[i]) for the function `func`: */
enum {
    TL_MC_EXP = 0,           /* tl_exp(x) */
    TL_MC_EXPM1 = 1,         /* tl_expm1(x) */
    TL_MC_EMX_E = 2,         /* e of tl_exp_expm1_emx(x, &e, &em, &emx) */
    TL_MC_EMX_EM = 3,        /* em of the same */
    TL_MC_EMX_EMX = 4,       /* emx of the same */
    TL_MC_KL_TERM = 5,       /* tl_kl_term(x) */
    TL_MC_EXPM1_MINUS_X = 6, /* tl_expm1_minus_x(x) */
    /* the vector functions of tl_simd.h that the hot loops use (vector extensions only;
     * without them these codes fall back to the scalar functions of the same contract) */
    TL_MC_VEXP = 7,          /* tl_vexp(x), x <= 709 */
    TL_MC_VEXP_W = 8,        /* tl_vexp_w(x), x <= 709: 0 below -708 */
    TL_MC_VEXP3_E = 9,       /* e of tl_vexp3(x), |x| <= 709: 0 below -708 */
    TL_MC_VEXP3_EM = 10,     /* em of the same */
    TL_MC_VEXP3_EMX = 11,    /* emx of the same */
    TL_MC_VKL_TERM = 12,     /* tl_vkl_term(x) */
    TL_MC_VEXPF_W = 13,      /* tl_vexpf_w((float)x), widened: 0 below -87 */
    TL_MC_VEXP_DET = 14,     /* tl_vexp_det(x) of tl_det.h (the samplers' weights) */
    TL_MC_EXP_DET = 15,      /* tl_exp_det(x), its scalar twin (scalar everywhere) */
    TL_MC_COUNT = 16
};

/* dispatched (tl_dispatch.def): the active variant; `func` must be in [0, TL_MC_COUNT) */
void tl_mathcheck(const double *x, ptrdiff_t n, int func, double *out);

/* The copy of variant `isa` (TL_ISA_*), whichever variant is active (tl_dispatch.c).
 * Returns 0, or -1 for an unknown func, -2 if the variant is not compiled in, -3 if this
 * CPU cannot run it (nothing is written then). */
int tl_mathcheck_isa(int isa, const double *x, ptrdiff_t n, int func, double *out);

#endif
