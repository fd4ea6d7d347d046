/* Test hook (see tl_mathcheck.h): the functions of tl_exp.h over an array, compiled once
 * per SIMD variant.  Each function runs in its own loop over the array, the shape of the
 * kernels' block loops, so that the variant's vectorised code is what gets measured. */
#include "tl_mathcheck.h"
#include "tl_exp.h"
#include "tl_simd.h"
#include "tl_det.h"

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

#if TL_HAVE_VEC
/* a vector function over the array, TL_VW (floats: 2 TL_VW) at a time, tail padded */
static void tl__mc_vector(const double *TL_RESTRICT x, ptrdiff_t n, int func,
                          double *TL_RESTRICT out) {
    const int step = func == TL_MC_VEXPF_W ? 2 * TL_VW : TL_VW;
    for (ptrdiff_t i0 = 0; i0 < n; i0 += step) {
        double in[2 * TL_VW], res[2 * TL_VW];
        for (int k = 0; k < step; k++) in[k] = i0 + k < n ? x[i0 + k] : 0.0;
        if (func == TL_MC_VEXPF_W) {
            tl_vf2 f;
            for (int k = 0; k < step; k++) f[k] = (float)in[k];
            f = tl_vexpf_w(f);
            for (int k = 0; k < step; k++) res[k] = (double)f[k];
        } else {
            tl_vd v = tl_vload(in), r, e, em, emx;
            switch (func) {
            case TL_MC_VEXP: r = tl_vexp(v); break;
            case TL_MC_VEXP_W: r = tl_vexp_w(v); break;
            case TL_MC_VKL_TERM: r = tl_vkl_term(v); break;
            case TL_MC_VEXP_DET: r = tl_vexp_det(v); break;
            default:
                tl_vexp3(v, &e, &em, &emx);
                r = func == TL_MC_VEXP3_E ? e : func == TL_MC_VEXP3_EM ? em : emx;
            }
            tl_vstore(res, r);
        }
        for (int k = 0; k < step && i0 + k < n; k++) out[i0 + k] = res[k];
    }
}
#endif

void tl_mathcheck(const double *TL_RESTRICT x, ptrdiff_t n, int func, double *TL_RESTRICT out) {
#if TL_HAVE_VEC
    if (func >= TL_MC_VEXP && func < TL_MC_COUNT && func != TL_MC_EXP_DET) {
        tl__mc_vector(x, n, func, out);
        return;
    }
#endif
    switch (func) {
    case TL_MC_EXP: TL_MC_LOOP(tl_exp(v)); break;
    case TL_MC_EXPM1: TL_MC_LOOP(tl_expm1(v)); break;
    case TL_MC_EMX_E: TL_MC_LOOP(tl__mc_emx(v, 0)); break;
    case TL_MC_EMX_EM: TL_MC_LOOP(tl__mc_emx(v, 1)); break;
    case TL_MC_EMX_EMX: TL_MC_LOOP(tl__mc_emx(v, 2)); break;
    case TL_MC_KL_TERM: TL_MC_LOOP(tl_kl_term(v)); break;
    case TL_MC_EXPM1_MINUS_X: TL_MC_LOOP(tl_expm1_minus_x(v)); break;
    /* no vector extensions: the scalar functions (the kernels' general paths) */
    case TL_MC_VEXP: TL_MC_LOOP(tl_exp(v)); break;
    case TL_MC_VEXP_W: TL_MC_LOOP(tl_exp_w(v)); break;
    case TL_MC_VEXP3_E: TL_MC_LOOP(v < -708.0 ? 0.0 : tl__mc_emx(v, 0)); break;
    case TL_MC_VEXP3_EM: TL_MC_LOOP(tl__mc_emx(v, 1)); break;
    case TL_MC_VEXP3_EMX: TL_MC_LOOP(tl__mc_emx(v, 2)); break;
    case TL_MC_VKL_TERM: TL_MC_LOOP(tl_kl_term(v)); break;
    case TL_MC_VEXPF_W: TL_MC_LOOP((double)tl_expf_w((float)v)); break;
    case TL_MC_VEXP_DET: TL_MC_LOOP(tl_exp_det(v)); break;
    case TL_MC_EXP_DET: TL_MC_LOOP(tl_exp_det(v)); break;
    default: break;
    }
}
