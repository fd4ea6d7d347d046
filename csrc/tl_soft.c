/* Soft best-of-n: the per-(node, bin) loops of the trapezoid rule (see tl_soft.h).
 *
 * Both loops work on a range of outputs (the Cython driver splits the range across
 * threads) and compute every output element in a fixed order, so results do not depend on
 * the thread count.  Inner loops fill small buffers with the branch-free vector exp of
 * tl_exp.h (no reduction in them, so GCC vectorises them without -ffast-math), then sum
 * the buffers with TL_LANES explicit partial sums.  e^{u + c} is taken as the product
 * e^u * e^c when both factors are normal numbers, else computed directly.
 */
#include <math.h>
#include "tl_soft.h"
#include "tl_exp.h"

#define TL_SOFT_BUF 256
#define TL_LANES 8

/* sum of a[0..n) with TL_LANES fixed partial sums (deterministic, vectorisable) */
static double tl__lane_sum(const double *a, int64_t n) {
    double acc[TL_LANES] = {0};
    int64_t k = 0;
    for (; k + TL_LANES <= n; k += TL_LANES)
        for (int l = 0; l < TL_LANES; l++)
            acc[l] += a[k + l];
    for (; k < n; k++)
        acc[0] += a[k];
    double s = 0.0;
    for (int l = 0; l < TL_LANES; l++)
        s += acc[l];
    return s;
}

void tl_soft_nodes(const double *u, const int64_t *bon, const int64_t *boff, int64_t i0,
                   int64_t i1, const double *c, const double *ec, const double *m0,
                   const double *P, double *d, double *md) {
    double x[TL_SOFT_BUF], a[TL_SOFT_BUF], b[TL_SOFT_BUF];
    for (int64_t i = i0; i < i1; i++) {
        const double ui = u[i];
        const double eu = (ec && ui > -700.0 && ui < 700.0) ? exp(ui) : 0.0;
        double sd = 0.0, sm = 0.0;
        for (int64_t k0 = bon[i]; k0 < boff[i]; k0 += TL_SOFT_BUF) {
            const int64_t n = boff[i] - k0 < TL_SOFT_BUF ? boff[i] - k0 : TL_SOFT_BUF;
            if (eu > 0.0) {
                for (int64_t k = 0; k < n; k++)
                    x[k] = eu * ec[k0 + k];
            } else {
                for (int64_t k = 0; k < n; k++)
                    x[k] = tl_exp(ui + c[k0 + k]);
            }
            for (int64_t k = 0; k < n; k++) {
                const double *pb = P + (k0 + k) * TL_SOFT_R;
                const double y = -x[k];
                double p = pb[TL_SOFT_R - 1];
                for (int r = TL_SOFT_R - 2; r >= 0; r--)
                    p = p * y + pb[r];
                p *= y;
                double e, em;
                tl__exp_pair(y, &e, &em);
                a[k] = m0[k0 + k] * -em - e * p;
                b[k] = e * (m0[k0 + k] + p);
            }
            sd += tl__lane_sum(a, n);
            sm += tl__lane_sum(b, n);
        }
        d[i] += sd;
        md[i] += sm;
    }
}

void tl_soft_bins(const double *u, const double *eu, const double *logA, const int64_t *wlo,
                  const int64_t *whi, const double *c, const double *ec, int64_t b0,
                  int64_t b1, double *mx_out, double *U) {
    double v[TL_SOFT_BUF], y[TL_SOFT_BUF], t[TL_SOFT_BUF];
    for (int64_t bb = b0; bb < b1; bb++) {
        const double cb = c[bb];
        const double ecb = (ec && eu) ? ec[bb] : 0.0;
        double *Ub = U + bb * (TL_SOFT_R + 1);
        for (int r = 0; r <= TL_SOFT_R; r++)
            Ub[r] = 0.0;
        /* pass 1: the maximum of logA - x over the window */
        double mx = -INFINITY;
        for (int64_t i0 = wlo[bb]; i0 < whi[bb]; i0 += TL_SOFT_BUF) {
            const int64_t n = whi[bb] - i0 < TL_SOFT_BUF ? whi[bb] - i0 : TL_SOFT_BUF;
            if (ecb > 0.0) {
                for (int64_t k = 0; k < n; k++)
                    v[k] = logA[i0 + k] - eu[i0 + k] * ecb;
            } else {
                for (int64_t k = 0; k < n; k++)
                    v[k] = logA[i0 + k] - tl_exp(u[i0 + k] + cb);
            }
            for (int64_t k = 0; k < n; k++)
                mx = v[k] > mx ? v[k] : mx;
        }
        mx_out[bb] = mx;
        if (!(mx > -INFINITY))
            continue;
        /* pass 2: power sums of -x weighted by exp(logA - x - mx) */
        for (int64_t i0 = wlo[bb]; i0 < whi[bb]; i0 += TL_SOFT_BUF) {
            const int64_t n = whi[bb] - i0 < TL_SOFT_BUF ? whi[bb] - i0 : TL_SOFT_BUF;
            if (ecb > 0.0) {
                for (int64_t k = 0; k < n; k++)
                    y[k] = -eu[i0 + k] * ecb;
            } else {
                for (int64_t k = 0; k < n; k++)
                    y[k] = -tl_exp(u[i0 + k] + cb);
            }
            for (int64_t k = 0; k < n; k++)
                t[k] = tl_exp(logA[i0 + k] + y[k] - mx);
            Ub[0] += tl__lane_sum(t, n);
            for (int r = 1; r <= TL_SOFT_R; r++) {
                for (int64_t k = 0; k < n; k++)
                    t[k] *= y[k];
                Ub[r] += tl__lane_sum(t, n);
            }
        }
    }
}
