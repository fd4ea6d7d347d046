/* Fused batched categorical samplers (tl_cat.h): the two instantiations of tl_cat_impl.h
 * and the type-independent parts. */
#include <math.h>
#include <float.h>
#include <string.h>
#include "tl_cat.h"
#include "tl_det.h"
#include "tl_simd.h"
#include "tl_tilt.h"

/* scale of the rounding bound of z = l + lam r: |error| <= (|l| + |lam r|) 2^-52 */
#define TL_CAT_ULP_BOUND 0x1.0p-50
/* weights this far below the row maximum are 0 in double (tl_exp_det flushes at -708) */
#define TL_CAT_NEGLIGIBLE 708.0

/* s = the 8 virtual accumulators of a block, reduced in a fixed order */
static inline double tl__cat_reduce8(const double a[8]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* sum of e^(z_i - mb) over the first cnt (a multiple of 8) elements of a block, element i
 * into accumulator i mod 8 (the same sums whatever the lane count: two 4-wide vectors or
 * one 8-wide one; the padding beyond cnt would add exact zeros) */
#if TL_HAVE_VEC
/* 1 if some lane of the mask is set */
TL_VINLINE int tl__cat_any(tl_vi m) {
    int64_t a = 0;
    for (int k = 0; k < TL_VW; k++) a |= m[k];
    return a != 0;
}

TL_NOINLINE double tl__cat_expsum(const double *TL_RESTRICT zb, int cnt, double mb) {
    const tl_vd vm = tl_vset(mb);
    double acc[8];
#if TL_VW == 8
    tl_vd a = tl_vset(0.0);
    for (int i = 0; i < cnt; i += 8) a += tl_vexp_det(tl_vload(zb + i) - vm);
    tl_vstore(acc, a);
#else
    tl_vd a0 = tl_vset(0.0), a1 = tl_vset(0.0);
    for (int i = 0; i < cnt; i += 8) {
        a0 += tl_vexp_det(tl_vload(zb + i) - vm);
        a1 += tl_vexp_det(tl_vload(zb + i + 4) - vm);
    }
    tl_vstore(acc, a0);
    tl_vstore(acc + 4, a1);
#endif
    return tl__cat_reduce8(acc);
}

/* eb[i] = e^(zb[i] - mb) for i < cnt (the terms of tl__cat_expsum, bit for bit) */
TL_NOINLINE void tl__cat_expblock(const double *TL_RESTRICT zb, int cnt, double mb,
                                  double *TL_RESTRICT eb) {
    const tl_vd vm = tl_vset(mb);
    for (int i = 0; i < cnt; i += TL_VW) tl_vstore(eb + i, tl_vexp_det(tl_vload(zb + i) - vm));
}

/* out[b] = e^(bmax[b] - m) for b < nb (0 where bmax is -inf) */
TL_NOINLINE void tl__cat_scales(const double *TL_RESTRICT bmax, ptrdiff_t nb, double m,
                                double *TL_RESTRICT out) {
    const tl_vd vm = tl_vset(m);
    ptrdiff_t b = 0;
    for (; b + TL_VW <= nb; b += TL_VW) tl_vstore(out + b, tl_vexp_det(tl_vload(bmax + b) - vm));
    for (; b < nb; b++) out[b] = tl_exp_det(bmax[b] - m);
}
#else
static double tl__cat_expsum(const double *zb, int cnt, double mb) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < cnt; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += tl_exp_det(zb[i + k] - mb);
    return tl__cat_reduce8(acc);
}

static void tl__cat_expblock(const double *zb, int cnt, double mb, double *eb) {
    for (int i = 0; i < cnt; i++) eb[i] = tl_exp_det(zb[i] - mb);
}

static void tl__cat_scales(const double *bmax, ptrdiff_t nb, double m, double *out) {
    for (ptrdiff_t b = 0; b < nb; b++) out[b] = tl_exp_det(bmax[b] - m);
}
#endif

/* The blocks' prefix C_b = sum s_k f_k (sequential), from bsum in cum; returns the last
 * block of positive weight (-1 if none). */
static ptrdiff_t tl__cat_prefix(const double *bscale, ptrdiff_t nb, double *cum) {
    double c = 0.0;
    ptrdiff_t last = -1;
    for (ptrdiff_t b = 0; b < nb; b++) {
        double w = cum[b] * bscale[b];
        if (w > 0.0) last = b;
        c += w;
        cum[b] = c;
    }
    return last;
}

/* the elements of block j0 the kernels touch: the row's, rounded up to a multiple of 8
 * (the rest of a tail block is padding of weight exactly 0) */
static inline int tl__cat_count(ptrdiff_t n, ptrdiff_t j0) {
    ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
    return (int)((len + 7) & ~(ptrdiff_t)7);
}

/* the first b in [0, nb) with cum[b] > t, or nb */
static inline ptrdiff_t tl__cat_search(const double *cum, ptrdiff_t nb, double t) {
    ptrdiff_t lo = 0, hi = nb;
    while (lo < hi) {
        ptrdiff_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > t) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

#define TL_IMPL "tl_cat_impl.h"
#include "tl_template.h"
#undef TL_IMPL
