/* Markov token models: the backward recursion and the max-plus recursion (tl_markov.h).
 *
 * Compiled once per SIMD variant (tl_isa.h).  The lane groups are 4 doubles in every
 * variant (tl_m4 below), so every variant does the same operations in the same order. */
#include <math.h>
#include <string.h>
#include "tl_markov.h"
#include "tl_det.h"
#if defined(__AVX__)
#include <immintrin.h>
#endif

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
/* select and maximum: one AVX instruction each where the variant has AVX (bitwise the
 * same results as the generic forms: masks are all ones or all zeros, and maxpd returns
 * its second operand unless the first is greater, as a > b ? a : b does) */
#if defined(__AVX__)
TL_VINLINE tl_m4 tl_m4_sel(tl_m4i m, tl_m4 a, tl_m4 b) {
    return (tl_m4)_mm256_blendv_pd((__m256d)b, (__m256d)a, (__m256d)m);
}
TL_VINLINE tl_m4 tl_m4_max(tl_m4 a, tl_m4 b) {
    return (tl_m4)_mm256_max_pd((__m256d)a, (__m256d)b);
}
#else
TL_VINLINE tl_m4 tl_m4_sel(tl_m4i m, tl_m4 a, tl_m4 b) {
    return (tl_m4)((m & (tl_m4i)a) | (~m & (tl_m4i)b));
}
TL_VINLINE tl_m4 tl_m4_max(tl_m4 a, tl_m4 b) { return tl_m4_sel(a > b, a, b); }
#endif
TL_VINLINE tl_m4 tl_m4_abs(tl_m4 x) {
    return (tl_m4)((tl_m4i)x & ~(tl_m4i)tl_m4_set(-0.0));
}
/* a vector from 4 scalars built in registers (4 scalar stores read back by one vector load
 * would miss the store forwarding: a stall per group and step) */
#define TL_M4_FROM(x) ((tl_m4){(x)[0], (x)[1], (x)[2], (x)[3]})
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
#define TL_M4_FROM(x) ((x)[0])
#endif

/* Q(r) ~ (e^r - 1 - r) / r^2 for |r| <= 0.35 (the reduced argument of the exponential;
 * near-minimax, degree 9, absolute error 1.2e-16: e^r = 1 + r + r^2 Q(r) to 0.15 ulp) and
 * H(w) ~ h(w) / w^2 = (w e^w - e^w + 1) / w^2 for |w| <= 0.34 (degree 10, absolute error
 * 1.5e-17 on H >= 0.39: full relative accuracy), in multiplies and adds only (Estrin). */
TL_VINLINE tl_m4 tl_m4_q(tl_m4 r) {
    tl_m4 r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    tl_m4 p01 = r * 0.16666666666666669 + 0.5000000000000001;
    tl_m4 p23 = r * 0.008333333333329796 + 0.04166666666662068;
    tl_m4 p45 = r * 0.00019841269864364933 + 0.0013888888918918907;
    tl_m4 p67 = r * 2.7557266442353424e-06 + 2.4801518672268355e-05;
    tl_m4 p89 = r * 2.5101335854788522e-08 + 2.7621324269313687e-07;
    return ((p01 + r2 * p23) + r4 * (p45 + r2 * p67)) + r8 * p89;
}
TL_VINLINE tl_m4 tl_m4_h(tl_m4 w) {
    tl_m4 w2 = w * w, w4 = w2 * w2, w8 = w4 * w4;
    tl_m4 p01 = w * 0.33333333333333376 + 0.5;
    tl_m4 p23 = w * 0.03333333333325927 + 0.12500000000000003;
    tl_m4 p45 = w * 0.001190476194063777 + 0.006944444444438714;
    tl_m4 p67 = w * 2.2045784455012545e-05 + 0.00017361111138866026;
    tl_m4 p89 = w * 2.5113439325394815e-07 + 2.48015324307551e-06;
    return ((p01 + w2 * p23) + w4 * (p45 + w2 * p67)) + w8 * (p89 + w2 * 2.3011883971266085e-08);
}

/* e^x for x <= 709 (tl_exp_det's reduction with the polynomial above, lane by lane) and,
 * in *em, e^x - 1 with full relative accuracy for |x| < 0.34 (where the reduction is the
 * identity and e^x - 1 = x + x^2 Q(x)).  Below TL_DET_LO the scale is zeroed before it
 * multiplies (0, not a subnormal product: subnormal arithmetic is ~100 times slower). */
TL_VINLINE tl_m4 tl_m4_exp(tl_m4 x, tl_m4 *em) {
    const tl_m4 lo = tl_m4_set(TL_DET_LO);
    tl_m4 xc = tl_m4_max(x, lo);
    tl_m4 t = xc * 1.4426950408889634074 + TL_DET_SHIFT;
    tl_m4 kd = t - TL_DET_SHIFT;
    tl_m4 r = (xc - kd * TL_DET_LN2_HI) - kd * TL_DET_LN2_LO;
    tl_m4 p = (r * r) * tl_m4_q(r) + r;
#if TL_HAVE_VEC
    tl_m4 s = TL_M4_ZERO_BELOW(x, lo, tl_m4_pow2_shifted(t));
#else
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + (uint64_t)(1023 - (int64_t)0x4338000000000000LL)) << 52;
    double s;
    memcpy(&s, &bits, sizeof s);
    if (x < lo) s = 0.0;
#endif
    tl_m4 e = s * p + s;
    if (em) *em = tl_m4_sel(tl_m4_abs(x) < 0.34, p, e - 1.0);
    return e;
}

/* Layout of the backward pass: the rows go in groups of TL_MW (the lanes of tl_m4), and a
 * group's row-wise tables are stored column by column, TL_MW doubles per column (lane l =
 * row g TL_MW + l; the rows past nv repeat row nv - 1 and are never written out).  Every
 * loop runs over the columns of a group with one lane per row: no horizontal reduction,
 * one exponential per transition, every sum of a row in column order in its own lane. */
#if defined(__GNUC__) && !defined(__clang__)
#define TL_UNROLL2 _Pragma("GCC unroll 2")
#else
#define TL_UNROLL2
#endif

ptrdiff_t tl_markov_work_size(ptrdiff_t nv, int64_t length) {
    ptrdiff_t vp = (nv + TL_MW - 1) / TL_MW * TL_MW;
    return 5 * vp * nv + 2 * TL_MW * nv + 4 * nv + 12 * vp + 8 * TL_MW +
           (ptrdiff_t)(length > 1 ? length : 1) + 8;
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
    const ptrdiff_t ng = (nv + TL_MW - 1) / TL_MW, vp = ng * TL_MW;
    const ptrdiff_t gs = TL_MW * nv; /* doubles of one group's table */
    double *la = work, *pa = la + vp * nv, *aa = pa + vp * nv, *du = aa + vp * nv;
    double *rr = du + vp * nv, *ub = rr + vp * nv, *qb = ub + gs;
    double *c = qb + gs, *mm = c + nv, *vv = mm + nv, *kk = vv + nv;
    double *s_a = kk + nv, *gref = s_a + vp, *log_pa = gref + vp, *refd = log_pa + vp;
    double *c2 = refd + vp, *m2 = c2 + vp, *v2 = m2 + vp, *k2 = v2 + vp;
    double *lane = k2 + vp, *lane2 = lane + TL_MW, *shifts = lane2 + TL_MW;
    int flags = 0;

    /* per row, for this tilt: the anchor, the exactly normalised weights of P, lam dr */
    for (ptrdiff_t s = 0; s < vp; s++) {
        const ptrdiff_t so = s < nv ? s : nv - 1, g = s / TL_MW, ln = s % TL_MW;
        const double *l = log_tr + so * nv, *rs = r + so * nv;
        ptrdiff_t j = 0;
        for (ptrdiff_t i = 1; i < nv; i++)
            if (l[i] > l[j]) j = i;
        double sa = 0.0;
        for (ptrdiff_t i = 0; i < nv; i++) {
            const ptrdiff_t o = g * gs + i * TL_MW + ln;
            int sup = l[i] > -INFINITY;
            la[o] = sup ? l[i] - l[j] : -INFINITY;
            aa[o] = sup ? tl_exp_det(la[o]) : 0.0;
            du[o] = sup ? lam * (rs[i] - rs[j]) : 0.0;
            rr[o] = sup ? rs[i] : 0.0;
            sa += aa[o];
        }
        for (ptrdiff_t i = 0; i < nv; i++) {
            const ptrdiff_t o = g * gs + i * TL_MW + ln;
            pa[o] = aa[o] / sa;
        }
        s_a[s] = sa;
        log_pa[s] = log(sa);
        gref[s] = lam * rs[j];
        refd[s] = (double)j;
    }
    for (ptrdiff_t i = 0; i < nv; i++) c[i] = mm[i] = vv[i] = kk[i] = 0.0;

    const int64_t steps = length > 1 ? length - 1 : 0;
    for (int64_t t = 0; t < steps; t++) {
        if ((t & 255) == 0 && tl_stop_requested(stop)) {
            flags |= TL_FLAG_STOPPED;
            break;
        }
        for (ptrdiff_t g = 0; g < ng; g++) {
            const double *lag = la + g * gs, *ag = aa + g * gs, *pg = pa + g * gs;
            const double *dg = du + g * gs, *rg = rr + g * gs;
            double cr[TL_MW];
            for (ptrdiff_t ln = 0; ln < TL_MW; ln++) cr[ln] = c[(ptrdiff_t)refd[g * TL_MW + ln]];
            const tl_m4 cref = TL_M4_FROM(cr);
            /* u = lam (r - r_j) + (c - c_j) on the support (0 elsewhere) */
            tl_m4 umax = tl_m4_set(0.0), xmax = tl_m4_set(-INFINITY);
            TL_UNROLL2
            for (ptrdiff_t i = 0; i < nv; i++) {
                const ptrdiff_t o = i * TL_MW;
                tl_m4 lv = tl_m4_load(lag + o);
                tl_m4i sup = lv > -INFINITY;
                tl_m4 u = tl_m4_sel(sup, tl_m4_load(dg + o) + (tl_m4_set(c[i]) - cref),
                                    tl_m4_set(0.0));
                tl_m4_store(ub + o, u);
                umax = tl_m4_max(tl_m4_abs(u), umax);
                xmax = tl_m4_max(lv + u, xmax);
            }
            /* small tilt (every |u| <= 1): L = log1p(sum a expm1(u) / s_a); otherwise
             * L = mx + log(sum e^{la + u - mx} / s_a) */
            const tl_m4i small = umax <= 1.0;
            const tl_m4 one = tl_m4_set(1.0);
            double xm[TL_MW], um[TL_MW];
            tl_m4_store(xm, xmax);
            tl_m4_store(um, umax);
            int nsmall = 0;
            for (ptrdiff_t ln = 0; ln < TL_MW; ln++) nsmall += um[ln] <= 1.0;
            tl_m4 acc = tl_m4_set(0.0), qacc = acc;
            /* the same lane arithmetic in the three loops; the first two leave out what
             * none of their lanes uses */
            if (nsmall == 0) {
                TL_UNROLL2
                for (ptrdiff_t i = 0; i < nv; i++) {
                    const ptrdiff_t o = i * TL_MW;
                    tl_m4 e = tl_m4_exp((tl_m4_load(lag + o) + tl_m4_load(ub + o)) - xmax, 0);
                    qacc += e;
                    tl_m4_store(qb + o, e);
                }
            } else if (nsmall == TL_MW) {
                TL_UNROLL2
                for (ptrdiff_t i = 0; i < nv; i++) {
                    const ptrdiff_t o = i * TL_MW;
                    tl_m4 em, a = tl_m4_load(ag + o);
                    tl_m4 qe = a * tl_m4_exp(tl_m4_load(ub + o), &em);
                    acc += a * em;
                    qacc += qe;
                    tl_m4_store(qb + o, qe);
                }
            } else {
                TL_UNROLL2
                for (ptrdiff_t i = 0; i < nv; i++) {
                    const ptrdiff_t o = i * TL_MW;
                    tl_m4 em, a = tl_m4_load(ag + o), u = tl_m4_load(ub + o);
                    tl_m4 x = tl_m4_sel(small, u, (tl_m4_load(lag + o) + u) - xmax);
                    tl_m4 e = tl_m4_exp(x, &em);
                    tl_m4 qe = tl_m4_sel(small, a, one) * e;
                    acc += a * em;
                    qacc += qe;
                    tl_m4_store(qb + o, qe);
                }
            }
            tl_m4_store(lane, acc);
            tl_m4_store(lane2, qacc);
            /* the rows past nv take L = 0 (their results are never read) */
            const ptrdiff_t nr = nv - g * TL_MW < TL_MW ? nv - g * TL_MW : TL_MW;
            double ls[TL_MW];
            for (ptrdiff_t ln = 0; ln < TL_MW; ln++) {
                const double sa = s_a[g * TL_MW + ln];
                ls[ln] = ln >= nr         ? 0.0
                         : um[ln] <= 1.0 ? log1p(lane[ln] / sa)
                                         : xm[ln] + log(lane2[ln] / sa);
            }
            const tl_m4 L = TL_M4_FROM(ls);
            /* the tilted rows as convex weights (normalised by their computed sums) */
            const tl_m4 qinv = one / qacc;
            tl_m4 kl = tl_m4_set(0.0), mean = kl, kap = kl;
            TL_UNROLL2
            for (ptrdiff_t i = 0; i < nv; i++) {
                const ptrdiff_t o = i * TL_MW;
                tl_m4 q = tl_m4_load(qb + o) * qinv;
                tl_m4 p = tl_m4_load(pg + o);
                tl_m4 w = tl_m4_load(ub + o) - L;
                tl_m4 hs = p * ((w * w) * tl_m4_h(w));
                tl_m4 hl = (p - q) + w * q;
                kl += tl_m4_sel(tl_m4_abs(w) < 0.34, hs, hl);
                mean += q * (tl_m4_load(rg + o) + mm[i]);
                kap += q * kk[i];
                tl_m4_store(qb + o, q);
            }
            tl_m4 var = tl_m4_set(0.0);
            TL_UNROLL2
            for (ptrdiff_t i = 0; i < nv; i++) {
                const ptrdiff_t o = i * TL_MW;
                tl_m4 d = (tl_m4_load(rg + o) + mm[i]) - mean;
                var += tl_m4_load(qb + o) * (vv[i] + d * d);
            }
            tl_m4 lp = (tl_m4_load(gref + g * TL_MW) + cref) + L;
            tl_m4_store(c2 + g * TL_MW, lp);
            tl_m4_store(m2 + g * TL_MW, mean);
            tl_m4_store(v2 + g * TL_MW, var);
            tl_m4_store(k2 + g * TL_MW, kl + kap);
            if (log_q) {
                double *out = log_q + (steps - 1 - t) * q_stride + g * TL_MW * nv;
                const tl_m4 base = -tl_m4_load(log_pa + g * TL_MW) - L;
                TL_UNROLL2
                for (ptrdiff_t i = 0; i < nv; i++) {
                    const ptrdiff_t o = i * TL_MW;
                    tl_m4 lv = tl_m4_load(lag + o);
                    tl_m4 y = tl_m4_sel(lv > -INFINITY, (lv + base) + tl_m4_load(ub + o),
                                        tl_m4_set(-INFINITY));
                    tl_m4_store(lane, y);
                    for (ptrdiff_t ln = 0; ln < nr; ln++) out[ln * nv + i] = lane[ln];
                }
            }
        }
        double top = -INFINITY;
        for (ptrdiff_t s = 0; s < nv; s++) top = c2[s] > top ? c2[s] : top;
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
