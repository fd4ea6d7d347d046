/* Markov token models: the backward recursion and the max-plus recursion (tl_markov.h).
 *
 * Compiled once per SIMD variant (tl_isa.h).  The lane groups are 4 doubles in every
 * variant (tl_m4 below), so every variant does the same operations in the same order. */
#include <math.h>
#include <string.h>
#include "tl_markov.h"
#include "tl_det.h"

/* ---- lane groups of 4 doubles, the same in every variant ---- */
#if TL_HAVE_VEC
#define TL_MW 4
typedef double tl_m4 __attribute__((vector_size(32)));
typedef int64_t tl_m4i __attribute__((vector_size(32)));
typedef uint64_t tl_m4u __attribute__((vector_size(32)));

TL_VINLINE tl_m4 tl_m4_load(const double *p) {
    tl_m4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
TL_VINLINE void tl_m4_store(double *p, tl_m4 v) { memcpy(p, &v, sizeof v); }
TL_VINLINE tl_m4 tl_m4_set(double a) {
    tl_m4 v = {a, a, a, a};
    return v;
}
TL_VINLINE tl_m4 tl_m4_sel(tl_m4i m, tl_m4 a, tl_m4 b) {
    return (tl_m4)((m & (tl_m4i)a) | (~m & (tl_m4i)b));
}
TL_VINLINE tl_m4 tl_m4_abs(tl_m4 x) {
    return (tl_m4)((tl_m4i)x & ~(tl_m4i)tl_m4_set(-0.0));
}
TL_VINLINE tl_m4 tl_m4_max(tl_m4 a, tl_m4 b) { return tl_m4_sel(a > b, a, b); }
TL_VINLINE double tl_m4_sum(tl_m4 v) { return ((v[0] + v[1]) + v[2]) + v[3]; }
TL_VINLINE double tl_m4_hmax(tl_m4 v) {
    double a = v[0] > v[1] ? v[0] : v[1], b = v[2] > v[3] ? v[2] : v[3];
    return a > b ? a : b;
}
TL_VINLINE tl_m4 tl_m4_pow2_shifted(tl_m4 t) {
    return (tl_m4)(((tl_m4u)t + (uint64_t)(1023 - (int64_t)0x4338000000000000LL)) << 52);
}
#define TL_M4_ZERO_BELOW(x, lo, e) ((tl_m4)(~((x) < (lo)) & (tl_m4i)(e)))
#else
/* no vector extensions (MSVC): one element per group, the same formulas */
#define TL_MW 1
typedef double tl_m4;
typedef int tl_m4i;
#define TL_VINLINE static inline
TL_VINLINE tl_m4 tl_m4_load(const double *p) { return *p; }
TL_VINLINE void tl_m4_store(double *p, tl_m4 v) { *p = v; }
TL_VINLINE tl_m4 tl_m4_set(double a) { return a; }
TL_VINLINE tl_m4 tl_m4_sel(int m, tl_m4 a, tl_m4 b) { return m ? a : b; }
TL_VINLINE tl_m4 tl_m4_abs(tl_m4 x) { return fabs(x); }
TL_VINLINE tl_m4 tl_m4_max(tl_m4 a, tl_m4 b) { return a > b ? a : b; }
TL_VINLINE double tl_m4_sum(tl_m4 v) { return v; }
TL_VINLINE double tl_m4_hmax(tl_m4 v) { return v; }
#endif

/* Taylor polynomial of (e^r - 1 - r) / r^2 (1/2! .. 1/13!), the one of tl_exp_det, in
 * multiplies and adds only */
TL_VINLINE tl_m4 tl_m4_q(tl_m4 r) {
    tl_m4 r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    tl_m4 p01 = r * 1.6666666666666666e-01 + 0.5;
    tl_m4 p23 = r * 8.333333333333333e-03 + 4.1666666666666664e-02;
    tl_m4 p45 = r * 1.984126984126984e-04 + 1.388888888888889e-03;
    tl_m4 p67 = r * 2.7557319223985893e-06 + 2.48015873015873e-05;
    tl_m4 p89 = r * 2.505210838544172e-08 + 2.755731922398589e-07;
    tl_m4 pab = r * 1.6059043836821613e-10 + 2.08767569878681e-09;
    return r8 * (r2 * pab + p89) + (r4 * (r2 * p67 + p45) + (r2 * p23 + p01));
}

/* e^x (tl_exp_det's operations, lane by lane) and, in *em, e^x - 1 with full relative
 * accuracy for |x| < 0.34 (where the reduction is the identity and e^x - 1 = x + x^2 q). */
TL_VINLINE tl_m4 tl_m4_exp(tl_m4 x, tl_m4 *em) {
#if TL_HAVE_VEC
    const tl_m4 lo = tl_m4_set(TL_DET_LO), hi = tl_m4_set(709.0);
    tl_m4 xc = tl_m4_sel(lo > x, lo, x);
    xc = tl_m4_sel(xc > hi, hi, xc);
    tl_m4 t = xc * 1.4426950408889634074 + TL_DET_SHIFT;
    tl_m4 kd = t - TL_DET_SHIFT;
    tl_m4 r = (xc - kd * TL_DET_LN2_HI) - kd * TL_DET_LN2_LO;
    tl_m4 p = (r * r) * tl_m4_q(r) + r;
    tl_m4 s = tl_m4_pow2_shifted(t);
    tl_m4 e = TL_M4_ZERO_BELOW(x, lo, s * p + s);
    if (em) *em = tl_m4_sel((x < 0.34) & (x > -0.34), p, e - 1.0);
    return e;
#else
    double e = tl_exp_det(x);
    if (em) {
        double r = x;
        double p = (r * r) * tl_m4_q(r) + r;
        *em = (x < 0.34 && x > -0.34) ? p : e - 1.0;
    }
    return e;
#endif
}

ptrdiff_t tl_markov_work_size(ptrdiff_t nv, int64_t length) {
    ptrdiff_t vp = (nv + 3) / 4 * 4;
    return 5 * nv * vp + 4 * nv + 10 * vp + (ptrdiff_t)(length > 1 ? length : 1) + 8;
}

/* fixed-order pairwise sum */
static double tl__pairwise(const double *x, ptrdiff_t n) {
    if (n <= 8) {
        double s = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) s += x[i];
        return s;
    }
    ptrdiff_t h = n / 2;
    return tl__pairwise(x, h) + tl__pairwise(x + h, n - h);
}

int tl_markov_backward(const double *log_tr, const double *r, ptrdiff_t nv, double lam,
                       int64_t length, double *offset, double *centred, double *m, double *v,
                       double *kappa, double *log_q, ptrdiff_t q_stride, double *work,
                       const tl_stop_flag *stop) {
    const ptrdiff_t vp = (nv + 3) / 4 * 4;
    double *la = work, *pa = la + nv * vp, *aa = pa + nv * vp, *du = aa + nv * vp;
    double *rr = du + nv * vp;
    double *s_a = rr + nv * vp, *gref = s_a + nv, *log_pa = gref + nv, *refd = log_pa + nv;
    double *c = refd + nv, *mm = c + vp, *vv = mm + vp, *kk = vv + vp;
    double *c2 = kk + vp, *m2 = c2 + vp, *v2 = m2 + vp, *k2 = v2 + vp;
    double *ub = k2 + vp, *qb = ub + vp, *shifts = qb + vp;
    int flags = 0;

    /* per row, for this tilt: the anchor, the exactly normalised weights of P, lam dr */
    for (ptrdiff_t s = 0; s < nv; s++) {
        const double *l = log_tr + s * nv, *rs = r + s * nv;
        ptrdiff_t j = 0;
        for (ptrdiff_t i = 1; i < nv; i++)
            if (l[i] > l[j]) j = i;
        double *las = la + s * vp, *as = aa + s * vp, *pas = pa + s * vp;
        double *dus = du + s * vp, *rrs = rr + s * vp;
        for (ptrdiff_t i = 0; i < vp; i++) {
            int sup = i < nv && l[i] > -INFINITY;
            las[i] = sup ? l[i] - l[j] : -INFINITY;
            as[i] = sup ? tl_exp_det(las[i]) : 0.0;
            dus[i] = sup ? lam * (rs[i] - rs[j]) : 0.0;
            rrs[i] = sup ? rs[i] : 0.0;
        }
        tl_m4 acc = tl_m4_set(0.0);
        for (ptrdiff_t i = 0; i < vp; i += TL_MW) acc += tl_m4_load(as + i);
        double sa = tl_m4_sum(acc);
        for (ptrdiff_t i = 0; i < vp; i++) pas[i] = as[i] / sa;
        s_a[s] = sa;
        log_pa[s] = log(sa);
        gref[s] = lam * rs[j];
        refd[s] = (double)j;
    }
    for (ptrdiff_t i = 0; i < vp; i++) c[i] = mm[i] = vv[i] = kk[i] = 0.0;
    for (ptrdiff_t i = 0; i < vp; i++) c2[i] = m2[i] = v2[i] = k2[i] = 0.0;

    const int64_t steps = length > 1 ? length - 1 : 0;
    for (int64_t t = 0; t < steps; t++) {
        if ((t & 255) == 0 && tl_stop_requested(stop)) {
            flags |= TL_FLAG_STOPPED;
            break;
        }
        double top = -INFINITY;
        for (ptrdiff_t s = 0; s < nv; s++) {
            const double *las = la + s * vp, *as = aa + s * vp, *pas = pa + s * vp;
            const double *dus = du + s * vp, *rrs = rr + s * vp;
            const ptrdiff_t j = (ptrdiff_t)refd[s];
            const double cref = c[j];
            /* u = lam (r - r_j) + (c - c_j) on the support (0 elsewhere) */
            tl_m4 umax = tl_m4_set(0.0), xmax = tl_m4_set(-INFINITY);
            for (ptrdiff_t i = 0; i < vp; i += TL_MW) {
                tl_m4 lv = tl_m4_load(las + i);
                tl_m4i sup = lv > -INFINITY;
                tl_m4 u = tl_m4_sel(sup, tl_m4_load(dus + i) + (tl_m4_load(c + i) - cref),
                                    tl_m4_set(0.0));
                tl_m4_store(ub + i, u);
                umax = tl_m4_max(tl_m4_abs(u), umax);
                xmax = tl_m4_max(lv + u, xmax);
            }
            double L, qs;
            if (tl_m4_hmax(umax) <= 1.0) {
                /* small tilt: L = log1p(sum a expm1(u) / s_a) */
                tl_m4 acc = tl_m4_set(0.0), qacc = acc;
                for (ptrdiff_t i = 0; i < vp; i += TL_MW) {
                    tl_m4 em, a = tl_m4_load(as + i);
                    tl_m4 e = tl_m4_exp(tl_m4_load(ub + i), &em);
                    acc += a * em;
                    qacc += a * e;
                    tl_m4_store(qb + i, a * e);
                }
                L = log1p(tl_m4_sum(acc) / s_a[s]);
                qs = tl_m4_sum(qacc);
            } else {
                const double mx = tl_m4_hmax(xmax);
                tl_m4 acc = tl_m4_set(0.0);
                for (ptrdiff_t i = 0; i < vp; i += TL_MW) {
                    tl_m4 e = tl_m4_exp((tl_m4_load(las + i) + tl_m4_load(ub + i)) - mx, 0);
                    acc += e;
                    tl_m4_store(qb + i, e);
                }
                qs = tl_m4_sum(acc);
                L = mx + log(qs / s_a[s]);
            }
            /* the tilted row as convex weights (normalised by their computed sum) */
            const double qinv = 1.0 / qs;
            tl_m4 kl = tl_m4_set(0.0), mean = kl, kap = kl;
            for (ptrdiff_t i = 0; i < vp; i += TL_MW) {
                tl_m4 q = tl_m4_load(qb + i) * qinv;
                tl_m4 p = tl_m4_load(pas + i);
                tl_m4 w = tl_m4_load(ub + i) - L;
                tl_m4 hq = tl_m4_q(w);
                tl_m4 hs = p * ((w * w) * ((1.0 - hq) + w * hq));
                tl_m4 hl = (p - q) + w * q;
                kl += tl_m4_sel((w < 0.34) & (w > -0.34), hs, hl);
                mean += q * (tl_m4_load(rrs + i) + tl_m4_load(mm + i));
                kap += q * tl_m4_load(kk + i);
                tl_m4_store(qb + i, q);
            }
            const double ms = tl_m4_sum(mean);
            tl_m4 var = tl_m4_set(0.0);
            for (ptrdiff_t i = 0; i < vp; i += TL_MW) {
                tl_m4 d = (tl_m4_load(rrs + i) + tl_m4_load(mm + i)) - ms;
                var += tl_m4_load(qb + i) * (tl_m4_load(vv + i) + d * d);
            }
            const double lp = (gref[s] + cref) + L;
            c2[s] = lp;
            top = lp > top ? lp : top;
            m2[s] = ms;
            v2[s] = tl_m4_sum(var);
            k2[s] = tl_m4_sum(kl) + tl_m4_sum(kap);
            if (log_q) {
                double *out = log_q + (steps - 1 - t) * q_stride + s * nv;
                const double base = -log_pa[s] - L;
                for (ptrdiff_t i = 0; i < nv; i++)
                    out[i] = las[i] > -INFINITY ? (las[i] + base) + ub[i] : -INFINITY;
            }
        }
        shifts[t] = top;
        for (ptrdiff_t s = 0; s < nv; s++) {
            c[s] = c2[s] - top;
            mm[s] = m2[s];
            vv[s] = v2[s];
            kk[s] = k2[s];
        }
    }
    *offset = steps > 0 ? tl__pairwise(shifts, steps) : 0.0;
    for (ptrdiff_t s = 0; s < nv; s++) {
        centred[s] = c[s];
        m[s] = mm[s];
        v[s] = vv[s];
        kappa[s] = kk[s];
    }
    return flags;
}

double tl_markov_kl_max(const double *log_p0, const double *r0, const double *log_tr,
                        const double *r, ptrdiff_t nv, int64_t length, double tol,
                        double *work) {
    double *best = work, *mass = best + nv, *best2 = mass + nv, *mass2 = best2 + nv;
    for (ptrdiff_t s = 0; s < nv; s++) best[s] = mass[s] = 0.0;
    for (int64_t t = 0; t + 1 < length; t++) {
        for (ptrdiff_t s = 0; s < nv; s++) {
            const double *l = log_tr + s * nv, *rs = r + s * nv;
            double top = -INFINITY;
            for (ptrdiff_t i = 0; i < nv; i++) {
                double y = l[i] > -INFINITY ? rs[i] + best[i] : -INFINITY;
                top = y > top ? y : top;
            }
            double mx = -INFINITY;
            for (ptrdiff_t i = 0; i < nv; i++) {
                double y = l[i] > -INFINITY ? rs[i] + best[i] : -INFINITY;
                if (y >= top - tol && l[i] + mass[i] > mx) mx = l[i] + mass[i];
            }
            double sum = 0.0;
            for (ptrdiff_t i = 0; i < nv; i++) {
                double y = l[i] > -INFINITY ? rs[i] + best[i] : -INFINITY;
                if (y >= top - tol) sum += exp((l[i] + mass[i]) - mx);
            }
            best2[s] = top;
            mass2[s] = mx + log(sum);
        }
        for (ptrdiff_t s = 0; s < nv; s++) {
            best[s] = best2[s];
            mass[s] = mass2[s];
        }
    }
    double top = -INFINITY, mx = -INFINITY, sum = 0.0;
    for (ptrdiff_t s = 0; s < nv; s++) {
        double y = log_p0[s] > -INFINITY ? r0[s] + best[s] : -INFINITY;
        top = y > top ? y : top;
    }
    for (ptrdiff_t s = 0; s < nv; s++) {
        double y = log_p0[s] > -INFINITY ? r0[s] + best[s] : -INFINITY;
        if (y >= top - tol && log_p0[s] + mass[s] > mx) mx = log_p0[s] + mass[s];
    }
    for (ptrdiff_t s = 0; s < nv; s++) {
        double y = log_p0[s] > -INFINITY ? r0[s] + best[s] : -INFINITY;
        if (y >= top - tol) sum += exp((log_p0[s] + mass[s]) - mx);
    }
    double kl = -(mx + log(sum));
    return kl > 0.0 ? kl : 0.0;
}
