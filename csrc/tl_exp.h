/* Vectorisable exp and expm1 on doubles (header only).
 *
 * Written for the weights of log-sum-exp style sums: arguments of interest are <= ~700.
 * Subnormal results are produced (e^-745 = 5e-324); exactly zero below that and for
 * -inf.  Arguments above 709 are clamped (callers never pass them).  No libm call, no
 * branch and no select in the arithmetic (max/min clamps only): GCC vectorises loops that
 * call these into straight-line SIMD code on every variant (tests/test_vectorised.py
 * checks the compiled kernels).  Accuracy: about 1 ulp for exp and for expm1 (expm1 keeps
 * full relative accuracy near 0).
 *
 * Method: k = round(x / ln 2), r = x - k ln 2 (Cody-Waite, two constants),
 * expm1(r) by its Taylor polynomial of degree 13 on |r| <= 0.35 (truncation < 5e-18),
 * then e^x = 2^k1 (1 + p) 2^k2 with k1 + k2 = k (both powers normal) and
 * expm1(x) = 2^k p + (2^k - 1).
 */
#ifndef TL_EXP_H
#define TL_EXP_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include "tl_config.h"

#define TL_LOG2E 1.4426950408889634074
#define TL_LN2_HI 6.93147180369123816490e-01 /* ln 2 rounded to 32 bits: k*hi exact */
#define TL_LN2_LO 1.90821492927058770002e-10
#define TL_ROUND_SHIFT 6755399441055744.0    /* 1.5 * 2^52 */
#define TL_EXP_LO (-746.0) /* e^x < DBL_TRUE_MIN / 2 below -745.14: the result rounds to 0 */
#define TL_EXP_HI 709.0

/* a * b + c: one fused multiply-add where the variant has them in hardware (tl_isa.h),
 * two roundings otherwise (a software fma would be a slow library call) */
#if defined(__FMA__) && (defined(__GNUC__) || defined(__clang__))
#define TL_FMA(a, b, c) __builtin_fma((a), (b), (c))
#define TL_FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define TL_FMA(a, b, c) ((a) * (b) + (c))
#define TL_FMAF(a, b, c) ((a) * (b) + (c))
#endif

/* 2^k for an integer-valued t - TL_ROUND_SHIFT = k in [-1022, 1023] given as t */
TL_INLINE double tl__pow2_from_shifted(double t) {
    int64_t ti, si;
    memcpy(&ti, &t, sizeof ti);
    const double shift = TL_ROUND_SHIFT;
    memcpy(&si, &shift, sizeof si);
    uint64_t bits = (uint64_t)(ti - si + 1023) << 52; /* unsigned: no UB for any k */
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Reduction shared by exp and expm1: e^x = 2^k e^r = s1 s2 e^r with 2^k split into two
 * normal powers of two s1 = 2^k1, s2 = 2^(k - k1), k1 = round(k / 2), so that results in
 * the subnormal range (and 0 below it) come out of the same arithmetic as normal ones:
 * (s1 e^r) is exact scaling, and the one rounding is the final multiplication by s2.
 * No branch and no select: the clamps are max/min (NaN propagates through them).
 * Writes r and q with expm1(r) = r + r^2 q (for |x| < 0.34, k = 0 and r = x exactly). */
TL_INLINE void tl__exp_reduce_rq(double x, double *r_out, double *q_out, double *s1_out,
                                 double *s2_out) {
    double xc = TL_EXP_LO > x ? TL_EXP_LO : x; /* NaN stays NaN */
    xc = TL_EXP_HI < xc ? TL_EXP_HI : xc;
    double t = TL_FMA(xc, TL_LOG2E, TL_ROUND_SHIFT);
    double kd = t - TL_ROUND_SHIFT;
    double r = (xc - kd * TL_LN2_HI) - kd * TL_LN2_LO;
    double th = TL_FMA(kd, 0.5, TL_ROUND_SHIFT); /* k1 + shift, |k1| <= 538 */
    double k2 = kd - (th - TL_ROUND_SHIFT);        /* exact */
    *s1_out = tl__pow2_from_shifted(th);
    *s2_out = tl__pow2_from_shifted(k2 + TL_ROUND_SHIFT);
    /* expm1(r) = r + r^2 q(r), q = 1/2! + r/3! + ... + r^11/13! (Taylor; truncation
     * < 7e-17 relative on |r| <= 0.35), evaluated by Estrin's scheme: dependency depth 4
     * instead of 11, so vectorised loops are not latency-bound */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double p01 = TL_FMA(r, 1.6666666666666666e-01, 0.5);             /* 1/2!, 1/3! */
    double p23 = TL_FMA(r, 8.333333333333333e-03, 4.1666666666666664e-02);  /* 1/4!, 1/5! */
    double p45 = TL_FMA(r, 1.984126984126984e-04, 1.388888888888889e-03);   /* 1/6!, 1/7! */
    double p67 = TL_FMA(r, 2.7557319223985893e-06, 2.48015873015873e-05);   /* 1/8!, 1/9! */
    double p89 = TL_FMA(r, 2.505210838544172e-08, 2.755731922398589e-07);   /* 1/10!, 1/11! */
    double pab = TL_FMA(r, 1.6059043836821613e-10, 2.08767569878681e-09);   /* 1/12!, 1/13! */
    double q03 = TL_FMA(r2, p23, p01);
    double q47 = TL_FMA(r2, p67, p45);
    double q8b = TL_FMA(r2, pab, p89);
    *q_out = TL_FMA(r8, q8b, TL_FMA(r4, q47, q03));
    *r_out = r;
}

/* e^x and e^x - 1 from a reduction's outputs (both with full relative accuracy; e^x - 1
 * is -1 to double precision wherever 2^k is subnormal or 0). */
TL_INLINE void tl__exp_finish(double s1, double s2, double r, double q, double *e,
                              double *em) {
    double p = TL_FMA(r * r, q, r);
    double s = s1 * s2; /* 2^k exactly (or a subnormal power of two, or 0) */
    *e = (s1 + s1 * p) * s2;
    *em = s * p + (s - 1.0);
}

/* Writes e^x and e^x - 1 (both with full relative accuracy). */
TL_INLINE void tl__exp_pair(double x, double *e, double *em) {
    double r, q, s1, s2;
    tl__exp_reduce_rq(x, &r, &q, &s1, &s2);
    tl__exp_finish(s1, s2, r, q, e, em);
}

/* e^x (subnormal results rounded once; 0 below -745.14, including -inf); e^709 for
 * x > 709 (callers keep x <= 709); NaN for NaN. */
TL_INLINE double tl_exp(double x) {
    double e, em;
    tl__exp_pair(x, &e, &em);
    return e;
}

/* e^x - 1 with full relative accuracy near 0; -1 far below 0. */
TL_INLINE double tl_expm1(double x) {
    double e, em;
    tl__exp_pair(x, &e, &em);
    return em;
}

/* A summation weight e^x for x <= 1 (x - max of a row, plus rounding): e^x wherever it is
 * a normal number, 0 below e^-708 (and for -inf), NaN for NaN; garbage, not a trap, for
 * x > 709 (callers check their arguments).  Same reduction and polynomial as tl_exp, so
 * the same accuracy (about 1 ulp), without the subnormal split and the upper clamp: a
 * weight below 2^-1021 of the largest changes no sum of weights by more than
 * n 2^-1021 relative (the largest weight is about 1), far below one ulp. */
#define TL_EXP_W_LO (-708.0)
TL_INLINE double tl_exp_w(double x) {
    double xc = TL_EXP_W_LO > x ? TL_EXP_W_LO : x; /* NaN stays NaN */
    double t = TL_FMA(xc, TL_LOG2E, TL_ROUND_SHIFT);
    double kd = t - TL_ROUND_SHIFT;
    double r = (xc - kd * TL_LN2_HI) - kd * TL_LN2_LO;
    double s = tl__pow2_from_shifted(t);
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double p01 = TL_FMA(r, 1.6666666666666666e-01, 0.5);
    double p23 = TL_FMA(r, 8.333333333333333e-03, 4.1666666666666664e-02);
    double p45 = TL_FMA(r, 1.984126984126984e-04, 1.388888888888889e-03);
    double p67 = TL_FMA(r, 2.7557319223985893e-06, 2.48015873015873e-05);
    double p89 = TL_FMA(r, 2.505210838544172e-08, 2.755731922398589e-07);
    double pab = TL_FMA(r, 1.6059043836821613e-10, 2.08767569878681e-09);
    double q03 = TL_FMA(r2, p23, p01);
    double q47 = TL_FMA(r2, p67, p45);
    double q8b = TL_FMA(r2, pab, p89);
    double q = TL_FMA(r8, q8b, TL_FMA(r4, q47, q03));
    double p = TL_FMA(r2, q, r);
    double e = TL_FMA(s, p, s);
    /* a multiplication by a 0/1 mask, not a select: GCC 12 turns a select around this
     * much arithmetic into branches on the vector mask */
    return e * (x < TL_EXP_W_LO ? 0.0 : 1.0);
}

/* The float32 twin of tl_exp_w, for float lanes (8 per AVX2 register): e^x for x <= 1,
 * 0 below e^-87 (and for -inf), NaN for NaN.  k = round(x / ln 2), r = x - k ln 2 (two
 * float constants, k*hi exact), e^r by its Taylor polynomial of degree 7 on |r| <= 0.35
 * (truncation < 5e-9, below half a float ulp): within 2 float ulp of e^x for the float
 * argument x. */
#define TL_EXPF_W_LO (-87.0f)
TL_INLINE float tl_expf_w(float x) {
    float xc = TL_EXPF_W_LO > x ? TL_EXPF_W_LO : x; /* NaN stays NaN */
    const float shift = 12582912.0f; /* 1.5 * 2^23 */
    float t = TL_FMAF(xc, 1.44269504f, shift);
    float kd = t - shift;
    float r = (xc - kd * 0.693145751953125f) - kd * 1.428606765330187e-06f;
    int32_t ti, si;
    memcpy(&ti, &t, sizeof ti);
    memcpy(&si, &shift, sizeof si);
    uint32_t bits = (uint32_t)(ti - si + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    float r2 = r * r;
    float p01 = TL_FMAF(r, 0.16666667f, 0.5f);
    float p23 = TL_FMAF(r, 8.3333338e-03f, 4.1666668e-02f);
    float p45 = TL_FMAF(r, 1.9841270e-04f, 1.3888889e-03f);
    float q = TL_FMAF(TL_FMAF(p45, r2, p23), r2, p01);
    float p = TL_FMAF(r2, q, r);
    float e = TL_FMAF(s, p, s);
    return e * (x < TL_EXPF_W_LO ? 0.0f : 1.0f);
}

/* Both e^x and e^x - 1 from one reduction, each with full relative accuracy
 * (forming e^x as 1 + expm1(x) would lose digits where e^x is small). */
TL_INLINE void tl_exp_expm1(double x, double *e, double *em) { tl__exp_pair(x, e, em); }

/* e^x, e^x - 1 and e^x - 1 - x >= 0 from one reduction, each with full relative accuracy
 * (the last as x^2 q for |x| < 0.34, where expm1(x) = x + x^2 q). */
TL_INLINE void tl_exp_expm1_emx(double x, double *e, double *em, double *emx) {
    double r, q, s1, s2;
    tl__exp_reduce_rq(x, &r, &q, &s1, &s2);
    tl__exp_finish(s1, s2, r, q, e, em);
    *emx = fabs(x) < 0.34 ? (x * x) * q : *em - x;
}

/* g(v) = v e^v - e^v + 1 >= 0, the KL integrand: KL(phi || p) = sum_i p_i g(v_i) with
 * v_i = log(phi_i / p_i).  Relative accuracy within ~16 ulp (worst just above |v| = 0.34,
 * where v e^v - expm1(v) cancels mildly); for |v| < 0.34 it is evaluated as
 * v^2 ((1 - q) + v q) with expm1(v) = v + v^2 q, exact to a few ulp. */
TL_INLINE double tl_kl_term(double v) {
    double r, q, s1, s2, e, em;
    tl__exp_reduce_rq(v, &r, &q, &s1, &s2);
    tl__exp_finish(s1, s2, r, q, &e, &em);
    double small = (v * v) * ((1.0 - q) + v * q);
    double large = v * e - em;
    return fabs(v) < 0.34 ? small : large;
}

/* h(w) = e^w - 1 - w >= 0 with full relative accuracy (w^2 q for |w| < 0.34). */
TL_INLINE double tl_expm1_minus_x(double w) {
    double r, q, s1, s2, e, em;
    tl__exp_reduce_rq(w, &r, &q, &s1, &s2);
    tl__exp_finish(s1, s2, r, q, &e, &em);
    return fabs(w) < 0.34 ? (w * w) * q : em - w;
}

#endif
