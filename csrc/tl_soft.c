/* Soft best-of-n: the per-(node, level) loops of the trapezoid rule (see tl_soft.h).
 *
 * Both loops work on a range of outputs (the Cython driver splits the range across
 * threads) and compute every output element in a fixed order, so results do not depend on
 * the thread count.  Inner loops fill small buffers with the branch-free vector exp of
 * tl_exp.h (no reduction in them, so GCC vectorises them without -ffast-math), then sum
 * the buffers with TL_LANES explicit partial sums.  e^{u + lw} is taken as the product
 * e^u * e^lw when both factors are normal numbers (one exp per pair saved), else directly.
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

/* x = e^{u + lw} for the pairs (u, lw[k0 .. k0 + n)); eu = e^u or 0 if not usable */
TL_INLINE void tl__soft_x(double u, double eu, const double *lw, const double *elw, int64_t n,
                          double *x) {
    if (eu > 0.0 && elw) {
        for (int64_t k = 0; k < n; k++)
            x[k] = eu * elw[k];
    } else {
        for (int64_t k = 0; k < n; k++)
            x[k] = tl_exp(u + lw[k]);
    }
}

void tl_soft_nodes(const double *u, const int64_t *kon, const int64_t *koff, int64_t i0,
                   int64_t i1, const double *lw, const double *elw, const double *m,
                   double *d, double *md) {
    double x[TL_SOFT_BUF], a[TL_SOFT_BUF], b[TL_SOFT_BUF];
    for (int64_t i = i0; i < i1; i++) {
        const double ui = u[i];
        const double eu = (ui > -700.0 && ui < 700.0) ? exp(ui) : 0.0;
        double sd = 0.0, sm = 0.0;
        for (int64_t k0 = kon[i]; k0 < koff[i]; k0 += TL_SOFT_BUF) {
            int64_t n = koff[i] - k0 < TL_SOFT_BUF ? koff[i] - k0 : TL_SOFT_BUF;
            tl__soft_x(ui, eu, lw + k0, elw ? elw + k0 : 0, n, x);
            for (int64_t k = 0; k < n; k++) {
                double e, em;
                tl__exp_pair(-x[k], &e, &em);
                a[k] = m[k0 + k] * -em;
                b[k] = m[k0 + k] * e;
            }
            sd += tl__lane_sum(a, n);
            sm += tl__lane_sum(b, n);
        }
        d[i] += sd;
        md[i] += sm;
    }
}

void tl_soft_levels(const double *u, const double *eu, const double *logA,
                    const int64_t *wlo, const int64_t *whi, const double *lw,
                    const double *elw, int64_t j0, int64_t j1, double *out) {
    double v[TL_SOFT_BUF];
    for (int64_t j = j0; j < j1; j++) {
        const double lj = lw[j];
        const double ej = elw ? elw[j] : 0.0;
        /* the window is at most a few hundred nodes: two passes over buffers */
        double mx = -INFINITY;
        double s = 0.0;
        for (int64_t i0 = wlo[j]; i0 < whi[j]; i0 += TL_SOFT_BUF) {
            int64_t n = whi[j] - i0 < TL_SOFT_BUF ? whi[j] - i0 : TL_SOFT_BUF;
            if (ej > 0.0 && eu) {
                for (int64_t k = 0; k < n; k++)
                    v[k] = logA[i0 + k] - eu[i0 + k] * ej;
            } else {
                for (int64_t k = 0; k < n; k++)
                    v[k] = logA[i0 + k] - tl_exp(u[i0 + k] + lj);
            }
            double cm = -INFINITY;
            for (int64_t k = 0; k < n; k++)
                cm = v[k] > cm ? v[k] : cm;
            if (!(cm > -INFINITY))
                continue;
            if (cm > mx) {           /* rescale what has been summed so far */
                s = mx > -INFINITY ? s * tl_exp(mx - cm) : 0.0;
                mx = cm;
            }
            for (int64_t k = 0; k < n; k++)
                v[k] = tl_exp(v[k] - mx);
            s += tl__lane_sum(v, n);
        }
        out[j] = mx > -INFINITY ? mx + log(s) : -INFINITY;
    }
}
