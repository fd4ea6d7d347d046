/* Block-level helpers shared by the kernels (header only).
 *
 * Every kernel copies a block of at most TL_BLOCK elements into local double buffers
 * (converting float32 on the way and padding the tail with neutral values), then runs
 * fixed-length loops over them.  Sums use TL_LANES independent partial accumulators that
 * are combined in a fixed order: the compiler vectorises them without reassociating
 * floating-point additions, and results stay bitwise reproducible.
 */
#ifndef TL_BLOCK_H
#define TL_BLOCK_H

#include <math.h>
#include <float.h>
#include "tl_config.h"

/* Lanes: one vector register per accumulator (4 doubles on AVX2, 8 on AVX-512), so that
 * GCC maps each lane loop onto one vector operation (with more lanes than the vector
 * width it vectorises across blocks instead, through shuffles). */
#if defined(__AVX512F__)
#define TL_LANES 8
#else
#define TL_LANES 4
#endif

TL_INLINE double tl__lanes_total(const double *s) {
#if TL_LANES == 8
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
#else
    return (s[0] + s[1]) + (s[2] + s[3]);
#endif
}

/* Software prefetch of the data TL_PREFETCH_AHEAD elements ahead of a block (one hint per
 * 64-byte line; hints past the end of the array are harmless: prefetch never faults, but
 * they are skipped anyway).  `left` is the number of elements from p to the end. */
#define TL_PREFETCH_AHEAD 2048
#if defined(__GNUC__) || defined(__clang__)
#define TL_PREFETCH_BLOCK(p, left)                                                        \
    do {                                                                                  \
        if ((left) > TL_PREFETCH_AHEAD + TL_BLOCK) {                                      \
            const char *tl__pf = (const char *)((p) + TL_PREFETCH_AHEAD);                 \
            for (size_t tl__o = 0; tl__o < TL_BLOCK * sizeof(*(p)); tl__o += 64)          \
                __builtin_prefetch(tl__pf + tl__o, 0, 0);                                 \
        }                                                                                 \
    } while (0)
#else
#define TL_PREFETCH_BLOCK(p, left) ((void)0)
#endif

/* One scan of a block: *mx = max of x (NaN ignored; -inf if all are -inf); returns
 * nonzero if some entry is NaN. */
TL_INLINE int tl_block_max_nan(const double *TL_RESTRICT x, double *mx) {
    double s[TL_LANES], nn[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) {
        s[k] = -INFINITY;
        nn[k] = 0.0;
    }
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            double v = x[i + k];
            s[k] = v > s[k] ? v : s[k];
            nn[k] += v == v ? 0.0 : 1.0;
        }
    double m = s[0];
    for (int k = 1; k < TL_LANES; k++) m = s[k] > m ? s[k] : m;
    *mx = m;
    return tl__lanes_total(nn) != 0.0;
}

/* sum of x[0..TL_BLOCK) */
TL_INLINE double tl_block_sum(const double *TL_RESTRICT x) {
    double s[TL_LANES] = {0};
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) s[k] += x[i + k];
    return tl__lanes_total(s);
}

/* sum of x[i] * y[i] */
TL_INLINE double tl_block_dot(const double *TL_RESTRICT x, const double *TL_RESTRICT y) {
    double s[TL_LANES] = {0};
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) s[k] += x[i + k] * y[i + k];
    return tl__lanes_total(s);
}

/* max of x (NaN entries are ignored; -inf if all are -inf) */
TL_INLINE double tl_block_max(const double *TL_RESTRICT x) {
    double s[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) s[k] = -INFINITY;
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) s[k] = x[i + k] > s[k] ? x[i + k] : s[k];
    double m = s[0];
    for (int k = 1; k < TL_LANES; k++) m = s[k] > m ? s[k] : m;
    return m;
}

/* Checks a loaded block with vectorisable arithmetic: returns nonzero if any entry of x
 * is NaN (nan_only) or not finite (otherwise).  x * 0 is NaN exactly for NaN and +-inf. */
TL_INLINE int tl_block_has_nonfinite(const double *TL_RESTRICT x) {
    double s[TL_LANES] = {0};
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) s[k] += x[i + k] * 0.0;
    double t = tl__lanes_total(s);
    return t != t;
}

TL_INLINE int tl_block_has_nan(const double *TL_RESTRICT x) {
    double s[TL_LANES] = {0};
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) s[k] += x[i + k] == x[i + k] ? 0.0 : 1.0;
    return tl__lanes_total(s) != 0.0;
}

/* Weighted centred sums of a block around a first estimate nu of the weighted mean
 * (sum_w = sum of w > 0): returns the corrected mean in *mean and sum w (d - mean)^2 in *m2
 * (the correction term of the corrected two-pass algorithm). */
TL_OUTLINE void tl_block_centred_at(const double *TL_RESTRICT w, const double *TL_RESTRICT d,
                                   double sum_w, double nu, double *mean, double *m2) {
    double q[TL_LANES] = {0}, z[TL_LANES] = {0};
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            double dev = d[i + k] - nu;
            double wd = w[i + k] * dev;
            z[k] += wd;
            q[k] += wd * dev;
        }
    double zt = tl__lanes_total(z), qt = tl__lanes_total(q);
    *mean = nu + zt / sum_w;
    qt -= zt * (zt / sum_w); /* weights may be ~1e300: never square a sum */
    *m2 = qt > 0.0 ? qt : 0.0;
}

/* The same, with nu = sum w d / sum_w computed here (two-pass). */
TL_INLINE void tl_block_centred(const double *TL_RESTRICT w, const double *TL_RESTRICT d,
                                double sum_w, double *mean, double *m2) {
    tl_block_centred_at(w, d, sum_w, tl_block_dot(w, d) / sum_w, mean, m2);
}

/* Chan et al. merge of weighted (count, mean, M2) triples; the weights of each side are
 * multiplied by fa, fb first (rescaling after a change of the exponent offset). */
TL_INLINE void tl_chan_merge(double *s, double *mu, double *m2, double fa,
                             double sb, double mub, double m2b, double fb) {
    double sa = *s * fa;
    sb *= fb;
    double n = sa + sb;
    if (!(sb > 0.0)) { *s = sa; *m2 *= fa; return; }
    if (!(sa > 0.0)) { *s = sb; *mu = mub; *m2 = m2b * fb; return; }
    double delta = mub - *mu;
    *mu += delta * (sb / n);
    *m2 = *m2 * fa + m2b * fb + (delta * delta) * (sa * (sb / n));
    *s = n;
}

/* exp(a - b) for running-max rescaling, with exp(-inf - x) = 0 and no NaN from -inf - -inf */
static inline double tl_rescale(double old_max, double new_max) {
    if (old_max == new_max) return 1.0;
    if (old_max == -INFINITY) return 0.0;
    return exp(old_max - new_max);
}

/* Merge of running log-sum-exp states held in any struct with fields m (the maximum),
 * count (entries equal to m), rest (sum of e^(x - m) over the entries below m) and flags:
 * *a <- the state of a's entries followed by b's.  factor(x, y) = e^(x - y) for x <= y
 * (tl_rescale, or a more accurate one). */
#define TL_RUNNING_MERGE(a, b, factor)                                                    \
    do {                                                                                  \
        (a)->flags |= (b)->flags;                                                         \
        if ((b)->m == -INFINITY) break;                                                   \
        if ((b)->m > (a)->m) {                                                            \
            (a)->rest = ((a)->rest + (a)->count) * factor((a)->m, (b)->m) + (b)->rest;    \
            (a)->count = (b)->count;                                                      \
            (a)->m = (b)->m;                                                              \
        } else if ((b)->m == (a)->m) {                                                    \
            (a)->rest += (b)->rest;                                                       \
            (a)->count += (b)->count;                                                     \
        } else {                                                                          \
            (a)->rest += ((b)->rest + (b)->count) * factor((b)->m, (a)->m);               \
        }                                                                                 \
    } while (0)

/* log(exp(a) + exp(b)) */
static inline double tl_logaddexp(double a, double b) {
    if (a == -INFINITY) return b;
    if (b == -INFINITY) return a;
    double m = a > b ? a : b;
    return m + log1p(exp(-fabs(a - b)));
}

#endif
