/* Best-of-N draws in one pass over a row (tl_bon.h, "best-of-N draws in one pass").
 *
 * Compiled once per SIMD variant; the vectorised passes (checks, weights, bins) compute
 * every element with the same operations on every variant (tl_vexp_det, no fused
 * multiply-adds), and every sum that decides a draw is a scalar loop in a fixed order, so
 * the draws never depend on the variant. */
#include <math.h>
#include <float.h>
#include <string.h>
#include "tl_bon.h"
#include "tl_sort.h"
#include "tl_det.h"
#include "tl_simd.h"

/* one draw: its threshold tau (t, or log t, until the row's total is known; then the mass
 * from the top of the current list at which the draw's level sits), its outcome uniform u2 in
 * [0, 1), and its index */
typedef struct {
    double tau, u2;
    int d;
} tl__dq;

/* t = 1 - U^(1/N) = -expm1(log(U) / N) for U = 1 - v, v = (x + 1/2) 2^-64 (log U from v or
 * from 1 - v, each with full relative precision near 0: the top levels of small N and the
 * bottom levels of any N).  For log N <= TL_DRAW_LOG_N_LINEAR, t itself (two calls of
 * libm); beyond, log t (log(1 - e^-y), y = exp(log(-log U) - log N)), since t may be below
 * the double range. */
#define TL_DRAW_LOG_N_LINEAR 600.0
static double tl__draw_t(uint64_t x, double log_n, double inv_n) {
    double lu = (x >> 63) ? log(((double)(~x) + 0.5) * 0x1p-64)
                          : log1p(-(((double)x + 0.5) * 0x1p-64));
    if (log_n <= TL_DRAW_LOG_N_LINEAR) return -expm1(lu * inv_n);
    double ly = log(-lu) - log_n;
    if (ly < -20.0) return ly - 0.5 * exp(ly); /* log(1 - e^-y) = log y - y/2 + O(y^2) */
    return log(-expm1(-exp(ly)));
}

/* the thresholds tau = t W once the total W of the row is known (from log t beyond
 * TL_DRAW_LOG_N_LINEAR) */
static void tl__draw_set_tau(tl__dq *q, int nq, double total, double log_n) {
    if (log_n <= TL_DRAW_LOG_N_LINEAR) {
        for (int k = 0; k < nq; k++) q[k].tau *= total;
        return;
    }
    double lw = log(total);
    for (int k = 0; k < nq; k++) q[k].tau = exp(q[k].tau + lw);
}

/* sum of w[0..n) in a fixed order (four running sums) */
static double tl__draw_sum(const double *w, ptrdiff_t n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    ptrdiff_t j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += w[j];
        s1 += w[j + 1];
        s2 += w[j + 2];
        s3 += w[j + 3];
    }
    for (; j < n; j++) s0 += w[j];
    return (s0 + s1) + (s2 + s3);
}

/* The outcomes of the draws q[0..nq) that fell in one level whose elements are W[0..n)
 * (zero weights never drawn), outcome I[j] (j itself if I is NULL): x = u2 M against the
 * running sum of the weights in order, M their total; rounding (x beyond the running sum's
 * end) gives the last outcome of positive weight. */
static void tl__draw_within(const double *W, const int32_t *I, ptrdiff_t n, const tl__dq *q,
                            int nq, int64_t *out) {
    double x[TL_DRAW_MAX];
    int dd[TL_DRAW_MAX];
    const double M = tl__draw_sum(W, n);
    for (int k = 0; k < nq; k++) { /* sorted by x: one walk serves them all */
        double xk = q[k].u2 * M;
        int t = k;
        while (t > 0 && x[t - 1] > xk) {
            x[t] = x[t - 1];
            dd[t] = dd[t - 1];
            t--;
        }
        x[t] = xk;
        dd[t] = q[k].d;
    }
    double acc = 0.0;
    ptrdiff_t last = -1;
    int k = 0;
    for (ptrdiff_t j = 0; j < n && k < nq; j++) {
        double wj = W[j];
        if (!(wj > 0.0)) continue;
        acc += wj;
        last = j;
        while (k < nq && x[k] < acc) out[dd[k++]] = I ? I[j] : (int64_t)j;
    }
    if (k < nq) {
        for (ptrdiff_t j = n - 1; j > last; j--)
            if (W[j] > 0.0) {
                last = j;
                break;
            }
        for (; k < nq; k++) out[dd[k]] = I ? I[last] : (int64_t)last;
    }
}

/* The draws q (sorted by tau) among the elements R, W, I [0..n) of one list by sorting
 * them by reward, descending (stable: index order within a level).  At depth 0 the
 * thresholds are set from the total first. */
static void tl__draw_sorted(tl_bon_draw_ws *ws, const double *R, const double *W,
                            const int32_t *I, ptrdiff_t n, tl__dq *q, int nq, int depth,
                            double log_n, int64_t *out) {
    uint64_t *keys = ws->keys;
    int64_t *vals = ws->vals;
    ptrdiff_t m = 0;
    for (ptrdiff_t j = 0; j < n; j++) { /* the elements of positive weight */
        keys[m] = ~tl_double_key(R[j]);
        vals[m] = j;
        m += W[j] > 0.0;
    }
    if (m <= TL_DRAW_SMALL) { /* insertion sort (stable) */
        for (ptrdiff_t j = 1; j < m; j++) {
            uint64_t kj = keys[j];
            int64_t vj = vals[j];
            ptrdiff_t t = j;
            while (t > 0 && keys[t - 1] > kj) {
                keys[t] = keys[t - 1];
                vals[t] = vals[t - 1];
                t--;
            }
            keys[t] = kj;
            vals[t] = vj;
        }
    } else {
        tl_radix_sort(keys, vals, m, ws->kbuf, ws->vbuf, NULL);
    }
    double *sw = ws->lw[depth + 1];
    int32_t *si = ws->li[depth + 1];
    for (ptrdiff_t j = 0; j < m; j++) {
        int64_t p = vals[j];
        sw[j] = W[p];
        si[j] = I ? I[p] : (int32_t)p;
    }
    if (depth == 0) { /* the total, level by level as below */
        double tot = 0.0;
        for (ptrdiff_t s = 0, e; s < m; s = e) {
            for (e = s + 1; e < m && keys[e] == keys[s];) e++;
            tot += tl__draw_sum(sw + s, e - s);
        }
        tl__draw_set_tau(q, nq, tot, log_n);
    }
    /* levels from the top: level [s, e) covers thresholds [acc, acc + M) */
    double acc = 0.0;
    ptrdiff_t s = 0, e;
    int k = 0;
    for (; s < m && k < nq; s = e) {
        for (e = s + 1; e < m && keys[e] == keys[s];) e++;
        double M = tl__draw_sum(sw + s, e - s);
        int k0 = k;
        while (k < nq && q[k].tau < acc + M) k++;
        if (k > k0) tl__draw_within(sw + s, si + s, e - s, q + k0, k - k0, out);
        acc += M;
    }
    if (k < nq) { /* beyond the total by rounding: the lowest level */
        for (s = m - 1; s > 0 && keys[s - 1] == keys[m - 1];) s--;
        tl__draw_within(sw + s, si + s, m - s, q + k, nq - k, out);
    }
}

static int tl__draw_nbins(ptrdiff_t n) {
    int b = 64;
    while (b < TL_DRAW_BINS && (ptrdiff_t)b * 8 < n) b *= 2;
    return b;
}

static void tl__draw_resolve(tl_bon_draw_ws *ws, const double *R, const double *W,
                             const int32_t *I, ptrdiff_t n, double lo, double hi, int heavy,
                             tl__dq *q, int nq, int depth, int64_t *out);

/* The draws q (sorted by tau) among the elements of one list whose bins (of B) are known:
 * the histogram of the weights by bin, the bin of each draw from the top, then each bin
 * that holds a draw gathered into a list of its own (depth + 1) and resolved there. */
static void tl__draw_by_bins(tl_bon_draw_ws *ws, const double *R, const double *W,
                             const int32_t *I, ptrdiff_t n, int B, tl__dq *q, int nq,
                             int depth, double log_n, int64_t *out) {
    const uint16_t *bins = ws->bins;
    double *h = ws->hist, *cum = ws->cum;
    int32_t *c = ws->cnt;
    memset(h, 0, 4 * (size_t)B * sizeof *h);
    memset(c, 0, 4 * (size_t)B * sizeof *c);
    /* four histograms (element j into j mod 4): no chain of dependent adds on ties */
    ptrdiff_t j = 0;
    for (; j + 4 <= n; j += 4) {
        h[bins[j]] += W[j];
        c[bins[j]]++;
        h[B + bins[j + 1]] += W[j + 1];
        c[B + bins[j + 1]]++;
        h[2 * B + bins[j + 2]] += W[j + 2];
        c[2 * B + bins[j + 2]]++;
        h[3 * B + bins[j + 3]] += W[j + 3];
        c[3 * B + bins[j + 3]]++;
    }
    for (; j < n; j++) {
        h[bins[j]] += W[j];
        c[bins[j]]++;
    }
    cum[B] = 0.0;
    for (int b = B - 1; b >= 0; b--) {
        cum[b] = cum[b + 1] + (((h[b] + h[B + b]) + h[2 * B + b]) + h[3 * B + b]);
        c[b] = ((c[b] + c[B + b]) + c[2 * B + b]) + c[3 * B + b];
    }
    if (depth == 0) tl__draw_set_tau(q, nq, cum[0], log_n);
    /* bin b covers the thresholds [cum[b + 1], cum[b]) (empty unless its mass counts);
     * beyond the total (rounding): the lowest bin of positive mass */
    int qb[TL_DRAW_MAX];
    int b = B - 1, lowest = -1;
    for (int k = 0; k < nq; k++) {
        while (b >= 0 && !(q[k].tau < cum[b])) b--;
        int bb = b;
        if (bb < 0) {
            if (lowest < 0)
                for (lowest = 0; lowest < B - 1 && !(cum[lowest] > cum[lowest + 1]);) lowest++;
            bb = lowest;
        }
        qb[k] = bb;
        q[k].tau -= cum[bb + 1];
    }
    /* the bins that hold draws (consecutive draws share them: bins fall as tau rises) */
    int sb[TL_DRAW_MAX], qs[TL_DRAW_MAX + 1], nb = 0;
    for (int k = 0; k < nq; k++)
        if (k == 0 || qb[k] != qb[k - 1]) {
            sb[nb] = qb[k];
            qs[nb++] = k;
        }
    qs[nb] = nq;
    ptrdiff_t start[TL_DRAW_MAX], fill[TL_DRAW_MAX];
    int32_t *pos = ws->pos;
    if (nb == 1) { /* branch-free: a tied reward's bin may hold half of the row */
        const uint16_t b0 = (uint16_t)sb[0];
        ptrdiff_t k = 0;
        for (j = 0; j < n; j++) {
            pos[k] = (int32_t)j;
            k += (bins[j] == b0) & (W[j] > 0.0);
        }
        start[0] = 0;
        fill[0] = k;
    } else {
        int16_t *slot = ws->slot; /* -1 but for the bins of draws */
        ptrdiff_t o = 0;
        for (int s = 0; s < nb; s++) {
            slot[sb[s]] = (int16_t)s;
            start[s] = fill[s] = o;
            o += c[sb[s]];
        }
        for (j = 0; j < n; j++) {
            int s = slot[bins[j]];
            if (s >= 0 && W[j] > 0.0) pos[fill[s]++] = (int32_t)j;
        }
        for (int s = 0; s < nb; s++) {
            slot[sb[s]] = -1;
            fill[s] -= start[s];
        }
    }
    /* every list first (pos is reused below), then each resolved */
    double *nr = ws->lr[depth + 1], *nw = ws->lw[depth + 1];
    int32_t *ni = ws->li[depth + 1];
    double lo[TL_DRAW_MAX], hi[TL_DRAW_MAX];
    for (int s = 0; s < nb; s++) {
        double mn = INFINITY, mx = -INFINITY;
        for (ptrdiff_t t = start[s]; t < start[s] + fill[s]; t++) {
            int32_t p = pos[t];
            double rv = R[p];
            nr[t] = rv;
            nw[t] = W[p];
            ni[t] = I ? I[p] : p;
            mn = rv < mn ? rv : mn;
            mx = rv > mx ? rv : mx;
        }
        lo[s] = mn;
        hi[s] = mx;
    }
    /* a bin that holds more than 1/16 of its list: the rewards are far from evenly spread
     * over their range (heavy tails, outliers); its own bins then follow the bits of the
     * rewards (about their logarithm) where they have one sign */
    for (int s = 0; s < nb; s++)
        tl__draw_resolve(ws, nr + start[s], nw + start[s], ni + start[s], fill[s], lo[s], hi[s],
                         fill[s] > n / 16, q + qs[s], qs[s + 1] - qs[s], depth + 1, out);
}

/* The draws q (sorted by tau) among the elements of a list split, in order, into those of
 * reward above v (resolved at depth + 1), those of reward v (one level) and those below
 * (depth + 1), each part in index order. */
static void tl__draw_split(tl_bon_draw_ws *ws, const double *R, const double *W,
                           const int32_t *I, ptrdiff_t n, double v, tl__dq *q, int nq,
                           int depth, int64_t *out) {
    double *nr = ws->lr[depth + 1], *nw = ws->lw[depth + 1];
    int32_t *ni = ws->li[depth + 1];
    ptrdiff_t n_gt = 0, n_eq = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        n_gt += R[j] > v;
        n_eq += R[j] == v;
    }
    ptrdiff_t at[3] = {0, n_gt, n_gt + n_eq};
    double lo[3] = {INFINITY, v, INFINITY}, hi[3] = {-INFINITY, v, -INFINITY};
    for (ptrdiff_t j = 0; j < n; j++) {
        double rv = R[j];
        int part = rv > v ? 0 : rv == v ? 1 : 2;
        ptrdiff_t t = at[part]++;
        nr[t] = rv;
        nw[t] = W[j];
        ni[t] = I ? I[j] : (int32_t)j;
        lo[part] = rv < lo[part] ? rv : lo[part];
        hi[part] = rv > hi[part] ? rv : hi[part];
    }
    const ptrdiff_t from[4] = {0, n_gt, n_gt + n_eq, n};
    /* the parts' masses from the top; a draw beyond the total (rounding) takes the lowest
     * part of positive mass */
    double acc = 0.0, mass[3] = {0.0, 0.0, 0.0};
    int k = 0, lowest = 0;
    for (int part = 0; part < 3; part++) {
        ptrdiff_t m = from[part + 1] - from[part];
        if (m == 0) continue;
        mass[part] = tl__draw_sum(nw + from[part], m);
        lowest = part;
    }
    for (int part = 0; part <= 3; part++) {
        int k0 = k;
        if (part < 3) {
            while (k < nq && q[k].tau < acc + mass[part]) q[k++].tau -= acc;
        } else { /* beyond the total by rounding: the lowest part */
            part = lowest;
            for (; k < nq; k++) q[k].tau -= acc - mass[part];
        }
        if (k > k0) {
            ptrdiff_t m = from[part + 1] - from[part];
            if (part == 1)
                tl__draw_within(nw + from[1], ni + from[1], m, q + k0, k - k0, out);
            else
                tl__draw_resolve(ws, nr + from[part], nw + from[part], ni + from[part], m,
                                 lo[part], hi[part], 1, q + k0, k - k0, depth + 1, out);
        }
        if (k == nq) break;
        acc += mass[part];
    }
}

/* The draws q (sorted by tau, residual to this list) among the elements R, W, I [0..n) of
 * positive weight, rewards in [lo, hi] (depth >= 1): one level, or sorted (short lists, or
 * at depth TL_DRAW_DEPTH), or by bins of equal width in the rewards or (heavy, and rewards
 * of one sign) in their order-preserving keys (tl_sort.h). */
static void tl__draw_resolve(tl_bon_draw_ws *ws, const double *R, const double *W,
                             const int32_t *I, ptrdiff_t n, double lo, double hi, int heavy,
                             tl__dq *q, int nq, int depth, int64_t *out) {
    if (n < 1 || nq < 1) return; /* (n >= 1 whenever a draw is here) */
    if (lo == hi) { /* one level */
        tl__draw_within(W, I, n, q, nq, out);
        return;
    }
    const int B = tl__draw_nbins(n);
    const double hl = 0.5 * lo, scale = (double)B / (0.5 * hi - hl), top = (double)(B - 1);
    const int by_key = heavy && (lo >= 0.0 || hi <= 0.0);
    if (n <= TL_DRAW_SMALL || depth >= TL_DRAW_DEPTH || !(by_key || scale <= DBL_MAX)) {
        tl__draw_sorted(ws, R, W, I, n, q, nq, depth, 0.0, out);
        return;
    }
    /* a reward shared by half of the list or more (its middle element's, say: sparse
     * rewards, mostly 0) is a level of its own: the list split around it */
    const double mid = R[n / 2];
    ptrdiff_t n_eq = 0;
    for (ptrdiff_t j = 0; j < n; j++) n_eq += R[j] == mid;
    if (2 * n_eq >= n) {
        tl__draw_split(ws, R, W, I, n, mid, q, nq, depth, out);
        return;
    }
    uint16_t *bins = ws->bins;
    if (by_key) {
        const uint64_t klo = tl_double_key(lo), span = tl_double_key(hi) - klo;
        int sh = 0;
        while ((span >> sh) >= (uint64_t)B) sh++;
        for (ptrdiff_t j = 0; j < n; j++) bins[j] = (uint16_t)((tl_double_key(R[j]) - klo) >> sh);
    } else {
        for (ptrdiff_t j = 0; j < n; j++) {
            double f = (0.5 * R[j] - hl) * scale;
            f = f > 0.0 ? f : 0.0;
            f = f < top ? f : top;
            bins[j] = (uint16_t)(int32_t)f;
        }
    }
    tl__draw_by_bins(ws, R, W, I, n, B, q, nq, depth, 0.0, out);
}

/* the queries of the words, sorted by t (ties: by draw) */
static void tl__draw_queries(const uint64_t *words, int nd, double log_n, tl__dq *q) {
    const double inv_n = exp(-log_n);
    for (int d = 0; d < nd; d++) {
        double t = tl__draw_t(words[2 * d], log_n, inv_n);
        double u2 = (double)(words[2 * d + 1] >> 11) * 0x1p-53;
        int k = d;
        while (k > 0 && q[k - 1].tau > t) {
            q[k] = q[k - 1];
            k--;
        }
        q[k].tau = t;
        q[k].u2 = u2;
        q[k].d = d;
    }
}

void tl_bon_draw_select(tl_bon_draw_ws *ws, const double *R, ptrdiff_t n, int one_level, int B,
                        double log_n, const uint64_t *words, int nd, int64_t *out) {
    tl__dq q[TL_DRAW_MAX];
    tl__draw_queries(words, nd, log_n, q);
    if (one_level) /* one level: p itself */
        tl__draw_within(ws->w, NULL, n, q, nd, out);
    else if (B == 0)
        tl__draw_sorted(ws, R, ws->w, NULL, n, q, nd, 0, log_n, out);
    else
        tl__draw_by_bins(ws, R, ws->w, NULL, n, B, q, nd, 0, log_n, out);
}

#if TL_HAVE_VEC
typedef int32_t tl__vi32 __attribute__((vector_size(4 * TL_VW)));
typedef uint16_t tl__vh __attribute__((vector_size(2 * TL_VW)));
#endif

#define TL_IMPL "tl_bon_draw_impl.h"
#include "tl_template.h"
