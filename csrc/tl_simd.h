/* Explicit SIMD vectors for the hot loops (header only).
 *
 * GCC 12 vectorises loops of scalar C unreliably: the same lane-accumulator loop becomes
 * straight SIMD code in one kernel, shuffles across blocks in another and scalar cmov
 * code in a third, depending on the lane count and on what was inlined.  The hot loops
 * (first pass, fused tilt weights, log-sum-exp) are therefore written on vector types of
 * GCC/Clang's vector extensions: one tl_vd holds TL_VW doubles (4 on the portable and
 * avx2 builds: one AVX2 register, two SSE2 registers; 8 on the avx512 build), every
 * operation is one vector operation (or two on SSE2), and nothing depends on the
 * vectoriser.  Fused multiply-adds come from the variant's intrinsics (a vector a * b + c
 * is not contracted: the build uses -ffp-contract=off).
 *
 * TL_HAVE_VEC is 0 for compilers without vector extensions (MSVC): the kernels then take
 * their general (scalar-lane) paths, with the same results up to rounding.
 */
#ifndef TL_SIMD_H
#define TL_SIMD_H

#include <stdint.h>
#include <string.h>
#include "tl_config.h"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(TL_NO_VEC)
#define TL_HAVE_VEC 1
#else
#define TL_HAVE_VEC 0
#endif

#if TL_HAVE_VEC
/* the portable build passes 32-byte vectors between always-inline functions only: no ABI
 * is involved (clang warns at every call, GCC notes it once; CMakeLists.txt also passes
 * -Wno-psabi, as GCC's note ignores this pragma) */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#if defined(__AVX512F__)
#define TL_VW 8
#else
#define TL_VW 4
#endif
#if defined(__AVX2__) || defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

typedef double tl_vd __attribute__((vector_size(8 * TL_VW)));
typedef int64_t tl_vi __attribute__((vector_size(8 * TL_VW)));   /* masks: -1 or 0 */
typedef uint64_t tl_vu __attribute__((vector_size(8 * TL_VW)));  /* shifts (no UB) */
typedef uint32_t tl_vu2 __attribute__((vector_size(8 * TL_VW)));
typedef float tl_vf __attribute__((vector_size(4 * TL_VW)));     /* TL_VW floats */
typedef float tl_vf2 __attribute__((vector_size(8 * TL_VW)));    /* 2 TL_VW floats */
typedef int32_t tl_vi2 __attribute__((vector_size(8 * TL_VW)));

#define TL_VINLINE static inline __attribute__((always_inline))

TL_VINLINE tl_vd tl_vset(double a) {
    tl_vd v;
    for (int k = 0; k < TL_VW; k++) v[k] = a;
    return v;
}

TL_VINLINE tl_vd tl_vload(const double *p) {
    tl_vd v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* TL_VW floats widened to doubles (exact) */
TL_VINLINE tl_vd tl_vload_f(const float *p) {
    tl_vf f;
    memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, tl_vd);
}

TL_VINLINE void tl_vstore(double *p, tl_vd v) { memcpy(p, &v, sizeof v); }

/* m ? a : b, lane by lane (m from a comparison: -1 or 0) */
TL_VINLINE tl_vd tl_vsel(tl_vi m, tl_vd a, tl_vd b) {
    return (tl_vd)((m & (tl_vi)a) | (~m & (tl_vi)b));
}

/* a > b ? a : b (NaN in a never wins; the maxpd rule) */
TL_VINLINE tl_vd tl_vmax(tl_vd a, tl_vd b) { return tl_vsel(a > b, a, b); }
TL_VINLINE tl_vd tl_vmin(tl_vd a, tl_vd b) { return tl_vsel(a < b, a, b); }

/* 1.0 where m, else 0.0 */
TL_VINLINE tl_vd tl_vmask01(tl_vi m) { return (tl_vd)(m & (tl_vi)tl_vset(1.0)); }

/* a * b + c, fused where the variant has FMA */
TL_VINLINE tl_vd tl_vfma(tl_vd a, tl_vd b, tl_vd c) {
#if TL_VW == 8
    return (tl_vd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif defined(__FMA__)
    return (tl_vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    return a * b + c;
#endif
}

/* fixed-order horizontal sum / max (the same order in every call: reproducible) */
TL_VINLINE double tl_vsum(tl_vd v) {
    double s = v[0];
    for (int k = 1; k < TL_VW; k++) s += v[k];
    return s;
}

TL_VINLINE double tl_vhmax(tl_vd v) {
    double m = v[0];
    for (int k = 1; k < TL_VW; k++) m = v[k] > m ? v[k] : m;
    return m;
}

TL_VINLINE double tl_vhmin(tl_vd v) {
    double m = v[0];
    for (int k = 1; k < TL_VW; k++) m = v[k] < m ? v[k] : m;
    return m;
}

/* 2^k for t = k + 1.5 * 2^52 (k an integer in [-1022, 1023]) */
TL_VINLINE tl_vd tl_vpow2_shifted(tl_vd t) {
    /* unsigned: defined for any t, also the garbage of arguments the callers discard */
    return (tl_vd)(((tl_vu)t + (uint64_t)(1023 - (int64_t)0x4338000000000000LL)) << 52);
}

/* Cody-Waite reduction of a clamped argument xc: *t = k + 1.5 2^52 with k = round(xc /
 * ln 2), *kd = k, returns r = xc - k ln 2 (two constants, k ln2_hi exact) */
TL_VINLINE tl_vd tl__vreduce(tl_vd xc, tl_vd *t, tl_vd *kd) {
    const tl_vd shift = tl_vset(6755399441055744.0);
    *t = tl_vfma(xc, tl_vset(1.4426950408889634074), shift);
    *kd = *t - shift;
    return (xc - *kd * tl_vset(6.93147180369123816490e-01)) -
           *kd * tl_vset(1.90821492927058770002e-10);
}

/* e^r - 1 = r + r^2 q(r): q, the Taylor polynomial of tl_exp.h (Estrin's scheme) */
TL_VINLINE tl_vd tl_vexpm1_q(tl_vd r, tl_vd r2) {
    tl_vd r4 = r2 * r2, r8 = r4 * r4;
    tl_vd p01 = tl_vfma(r, tl_vset(1.6666666666666666e-01), tl_vset(0.5));
    tl_vd p23 = tl_vfma(r, tl_vset(8.333333333333333e-03), tl_vset(4.1666666666666664e-02));
    tl_vd p45 = tl_vfma(r, tl_vset(1.984126984126984e-04), tl_vset(1.388888888888889e-03));
    tl_vd p67 = tl_vfma(r, tl_vset(2.7557319223985893e-06), tl_vset(2.48015873015873e-05));
    tl_vd p89 = tl_vfma(r, tl_vset(2.505210838544172e-08), tl_vset(2.755731922398589e-07));
    tl_vd pab = tl_vfma(r, tl_vset(1.6059043836821613e-10), tl_vset(2.08767569878681e-09));
    tl_vd q03 = tl_vfma(r2, p23, p01);
    tl_vd q47 = tl_vfma(r2, p67, p45);
    tl_vd q8b = tl_vfma(r2, pab, p89);
    return tl_vfma(r8, q8b, tl_vfma(r4, q47, q03));
}

/* The vector tl_exp_w (tl_exp.h): e^x for x <= 1, 0 below -708, NaN for NaN. */
TL_VINLINE tl_vd tl_vexp_w(tl_vd x) {
    const tl_vd lo = tl_vset(-708.0);
    tl_vd xc = tl_vsel(lo > x, lo, x); /* NaN stays NaN */
    tl_vd t, kd, r = tl__vreduce(xc, &t, &kd);
    tl_vd s = tl_vpow2_shifted(t);
    tl_vd r2 = r * r;
    tl_vd p = tl_vfma(r2, tl_vexpm1_q(r, r2), r);
    tl_vd e = tl_vfma(s, p, s);
    return (tl_vd)(~(x < lo) & (tl_vi)e);
}

/* The vector tl_exp (tl_exp.h) for x <= 709: e^x rounded once also where it is subnormal
 * (2^k split into two normal powers of two), 0 below -745.14 and for -inf, NaN for NaN.
 * For weights that enter moments (a tilted mean can be made of weights below 2^-1022 of
 * the largest one, times a reward range near the top of the double range). */
TL_VINLINE tl_vd tl_vexp(tl_vd x) {
    const tl_vd shift = tl_vset(6755399441055744.0), lo = tl_vset(-746.0);
    tl_vd xc = tl_vsel(lo > x, lo, x); /* NaN stays NaN */
    tl_vd t, kd, r = tl__vreduce(xc, &t, &kd);
    tl_vd th = tl_vfma(kd, tl_vset(0.5), shift); /* k1 + shift */
    tl_vd k2 = kd - (th - shift);
    tl_vd s1 = tl_vpow2_shifted(th), s2 = tl_vpow2_shifted(k2 + shift);
    tl_vd r2 = r * r;
    tl_vd p = tl_vfma(r2, tl_vexpm1_q(r, r2), r);
    return tl_vfma(s1, p, s1) * s2;
}

/* The vector tl_exp_expm1_emx (tl_exp.h) for |x| <= 709: e^x, e^x - 1 and e^x - 1 - x,
 * each with full relative accuracy (e^x flushed to 0 below e^-708: the caller, the
 * product mode, keeps |x| <= 600). */
TL_VINLINE void tl_vexp3(tl_vd x, tl_vd *e, tl_vd *em, tl_vd *emx) {
    const tl_vd lo = tl_vset(-708.0);
    tl_vd xc = tl_vsel(lo > x, lo, x);
    tl_vd t, kd, r = tl__vreduce(xc, &t, &kd);
    tl_vd s = (tl_vd)(~(x < lo) & (tl_vi)tl_vpow2_shifted(t));
    tl_vd r2 = r * r;
    tl_vd q = tl_vexpm1_q(r, r2);
    tl_vd p = tl_vfma(r2, q, r);
    tl_vd em_ = tl_vfma(s, p, s - tl_vset(1.0));
    *e = tl_vfma(s, p, s);
    *em = em_;
    /* |x| < 0.34: k = 0, r = x, e^x - 1 - x = x^2 q exactly formed */
    tl_vi small = (x < tl_vset(0.34)) & (x > tl_vset(-0.34));
    *emx = tl_vsel(small, (x * x) * q, em_ - x);
}

/* The vector tl_kl_term (tl_exp.h): g(v) = v e^v - e^v + 1 >= 0 with full relative
 * accuracy; v clamped to 709 above (as tl_exp), e^v flushed to 0 below -708 (g = 1). */
TL_VINLINE tl_vd tl_vkl_term(tl_vd v) {
    const tl_vd lo = tl_vset(-708.0), hi = tl_vset(709.0);
    tl_vd xc = tl_vsel(lo > v, lo, v);
    xc = tl_vsel(hi < xc, hi, xc);
    tl_vd t, kd, r = tl__vreduce(xc, &t, &kd);
    tl_vd s = (tl_vd)(~(v < lo) & (tl_vi)tl_vpow2_shifted(t));
    tl_vd r2 = r * r;
    tl_vd q = tl_vexpm1_q(r, r2);
    tl_vd p = tl_vfma(r2, q, r);
    tl_vd e = tl_vfma(s, p, s), em = tl_vfma(s, p, s - tl_vset(1.0));
    tl_vd small = (v * v) * ((tl_vset(1.0) - q) + v * q);
    tl_vi is_small = (v < tl_vset(0.34)) & (v > tl_vset(-0.34));
    return tl_vsel(is_small, small, v * e - em);
}

/* Weighted centred sums of TL_BLOCK values around nu (tl_block_centred_at of tl_block.h):
 * *mean = nu + sum w (d - nu) / sum_w, *m2 = sum w (d - nu)^2 - (that sum)^2 / sum_w. */
TL_OUTLINE void tl_vcentred(
    const double *w, const double *d, double sum_w, double nu, double *mean, double *m2) {
    tl_vd z0 = tl_vset(0.0), z1 = z0, q0 = z0, q1 = z0;
    const tl_vd vnu = tl_vset(nu);
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd dev0 = tl_vload(d + i) - vnu, dev1 = tl_vload(d + i + TL_VW) - vnu;
        tl_vd wd0 = tl_vload(w + i) * dev0, wd1 = tl_vload(w + i + TL_VW) * dev1;
        z0 += wd0;
        z1 += wd1;
        q0 += wd0 * dev0;
        q1 += wd1 * dev1;
    }
    double zt = tl_vsum(z0) + tl_vsum(z1), qt = tl_vsum(q0) + tl_vsum(q1);
    *mean = nu + zt / sum_w;
    qt -= zt * (zt / sum_w); /* weights may be ~1e300: never square a sum */
    *m2 = qt > 0.0 ? qt : 0.0;
}

/* a * b + c on float vectors, fused where the variant has FMA */
TL_VINLINE tl_vf2 tl_vfmaf(tl_vf2 a, tl_vf2 b, tl_vf2 c) {
#if TL_VW == 8
    return (tl_vf2)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
    return (tl_vf2)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}

/* The vector tl_expf_w (tl_exp.h) on 2 TL_VW floats: e^x for x <= 1, 0 below -87. */
TL_VINLINE tl_vf2 tl_vexpf_w(tl_vf2 x) {
    tl_vf2 shift, lo, one;
    for (int k = 0; k < 2 * TL_VW; k++) {
        shift[k] = 12582912.0f;
        lo[k] = -87.0f;
        one[k] = 1.0f;
    }
    tl_vi2 below = x < lo;
    tl_vf2 xc = (tl_vf2)((below & (tl_vi2)lo) | (~below & (tl_vi2)x)); /* NaN stays NaN */
    tl_vf2 t = tl_vfmaf(xc, shift * 0.0f + 1.44269504f, shift);
    tl_vf2 kd = t - shift;
    tl_vf2 r = (xc - kd * 0.693145751953125f) - kd * 1.428606765330187e-06f;
    tl_vf2 s = (tl_vf2)(((tl_vu2)t + (uint32_t)(127 - 0x4B400000)) << 23);
    tl_vf2 r2 = r * r;
    tl_vf2 p01 = tl_vfmaf(r, one * 0.16666667f, one * 0.5f);
    tl_vf2 p23 = tl_vfmaf(r, one * 8.3333338e-03f, one * 4.1666668e-02f);
    tl_vf2 p45 = tl_vfmaf(r, one * 1.9841270e-04f, one * 1.3888889e-03f);
    tl_vf2 q = tl_vfmaf(tl_vfmaf(p45, r2, p23), r2, p01);
    tl_vf2 p = tl_vfmaf(r2, q, r);
    tl_vf2 e = tl_vfmaf(s, p, s);
    return (tl_vf2)(~below & (tl_vi2)e);
}

/* the two halves of a float vector, widened to doubles */
TL_VINLINE void tl_vf2_widen(tl_vf2 v, tl_vd *lo, tl_vd *hi) {
    tl_vf a, b;
    memcpy(&a, &v, sizeof a);
    memcpy(&b, (const char *)&v + sizeof a, sizeof b);
    *lo = __builtin_convertvector(a, tl_vd);
    *hi = __builtin_convertvector(b, tl_vd);
}

TL_VINLINE tl_vf2 tl_vf2_load(const float *p) {
    tl_vf2 v;
    memcpy(&v, p, sizeof v);
    return v;
}

#endif /* TL_HAVE_VEC */
#endif
