/* e^x computed the same way, bit for bit, by every SIMD variant (header only).
 *
 * The samplers promise the same draws on every variant, so the weights they compare
 * against a uniform must not depend on the variant: tl_exp_det (scalar) and tl_vexp_det
 * (one lane group) use multiplies and adds only, never a fused multiply-add (the build
 * uses -ffp-contract=off, so the compiler does not fuse them either), and IEEE rounding of
 * each operation is the same on SSE2, AVX2 and AVX-512.  Any lane count gives the same
 * value per element.
 *
 * Domain: weights relative to a maximum, x <= 0 (larger x is accepted up to 709).
 * Results below e^-708 are flushed to 0 (so is -inf); NaN gives NaN.  Accuracy: within
 * 2 ulp of e^x (tests/test_exp_accuracy.py).
 */
#ifndef TL_DET_H
#define TL_DET_H

#include <stdint.h>
#include <string.h>
#include "tl_config.h"
#include "tl_simd.h"

#define TL_DET_LO (-708.0)
#define TL_DET_SHIFT 6755399441055744.0 /* 1.5 * 2^52: rounds to an integer */
#define TL_DET_LN2_HI 6.93147180369123816490e-01
#define TL_DET_LN2_LO 1.90821492927058770002e-10

static inline double tl_exp_det(double x) {
    double xc = x < TL_DET_LO ? TL_DET_LO : x; /* NaN stays NaN */
    xc = xc > 709.0 ? 709.0 : xc;
    double t = xc * 1.4426950408889634074 + TL_DET_SHIFT;
    double kd = t - TL_DET_SHIFT;
    double r = (xc - kd * TL_DET_LN2_HI) - kd * TL_DET_LN2_LO;
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double p01 = r * 1.6666666666666666e-01 + 0.5;
    double p23 = r * 8.333333333333333e-03 + 4.1666666666666664e-02;
    double p45 = r * 1.984126984126984e-04 + 1.388888888888889e-03;
    double p67 = r * 2.7557319223985893e-06 + 2.48015873015873e-05;
    double p89 = r * 2.505210838544172e-08 + 2.755731922398589e-07;
    double pab = r * 1.6059043836821613e-10 + 2.08767569878681e-09;
    double q = r8 * (r2 * pab + p89) + (r4 * (r2 * p67 + p45) + (r2 * p23 + p01));
    double p = r2 * q + r;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + (uint64_t)(1023 - (int64_t)0x4338000000000000LL)) << 52;
    double s;
    memcpy(&s, &bits, sizeof s);
    double e = s * p + s;
    return x < TL_DET_LO ? 0.0 : e;
}

#if TL_HAVE_VEC
/* tl_exp_det on one lane group: the same operations, lane by lane */
TL_VINLINE tl_vd tl_vexp_det(tl_vd x) {
    const tl_vd lo = tl_vset(TL_DET_LO), hi = tl_vset(709.0), shift = tl_vset(TL_DET_SHIFT);
    tl_vd xc = tl_vsel(lo > x, lo, x);
    xc = tl_vsel(xc > hi, hi, xc);
    tl_vd t = xc * tl_vset(1.4426950408889634074) + shift;
    tl_vd kd = t - shift;
    tl_vd r = (xc - kd * tl_vset(TL_DET_LN2_HI)) - kd * tl_vset(TL_DET_LN2_LO);
    tl_vd r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    tl_vd p01 = r * tl_vset(1.6666666666666666e-01) + tl_vset(0.5);
    tl_vd p23 = r * tl_vset(8.333333333333333e-03) + tl_vset(4.1666666666666664e-02);
    tl_vd p45 = r * tl_vset(1.984126984126984e-04) + tl_vset(1.388888888888889e-03);
    tl_vd p67 = r * tl_vset(2.7557319223985893e-06) + tl_vset(2.48015873015873e-05);
    tl_vd p89 = r * tl_vset(2.505210838544172e-08) + tl_vset(2.755731922398589e-07);
    tl_vd pab = r * tl_vset(1.6059043836821613e-10) + tl_vset(2.08767569878681e-09);
    tl_vd q = r8 * (r2 * pab + p89) + (r4 * (r2 * p67 + p45) + (r2 * p23 + p01));
    tl_vd p = r2 * q + r;
    tl_vd s = tl_vpow2_shifted(t);
    tl_vd e = s * p + s;
    return (tl_vd)(~(x < lo) & (tl_vi)e);
}
#endif

#endif
