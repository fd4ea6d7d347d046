#include "tl_lattice.h"

#include <math.h>

static inline double tl__unif(bitgen_t *rng) { return rng->next_double(rng->state); }

int64_t tl_level_draw(bitgen_t *rng, const double *cdf, const int64_t *guide, ptrdiff_t K) {
    double u = tl__unif(rng);
    ptrdiff_t g = (ptrdiff_t)(u * (double)K);
    ptrdiff_t j = guide[g < K ? g : K - 1];
    while (j < K - 1 && cdf[j] <= u) j++;
    return j;
}

/* left(u) * right(s - u) for u in [ulo, uhi], scanned outwards from u0 (u0, u0-1, u0+1,
 * u0-2, ...) until the running sum exceeds target; returns the chosen u.  When the scan
 * ends first it returns -1 and the sum of all terms in *total (the caller rescans with
 * target = U * total). */
static int64_t tl__chop(const double *a, int64_t alo, const double *b, int64_t blo, int64_t s,
                        int64_t ulo, int64_t uhi, int64_t u0, double target, double *total) {
    const double *pa = a - alo;       /* pa[u] = left(u) */
    const double *pb = b + (s - blo); /* pb[-u] = right(s - u) */
    double cum = 0.0;
    int64_t up = u0, dn = u0 - 1;
    int64_t both = uhi - u0 < u0 - 1 - ulo ? uhi - u0 : u0 - 1 - ulo; /* pairs in range */
    int64_t i = 0;
    /* Blocks of 4 pairs: the block's sum is a short tree (no serial add chain), and
     * only the block where the running sum crosses the target is walked term by term
     * (in the same order u0, u0-1, u0+1, ...). */
    for (; i + 4 <= both + 1; i += 4, up += 4, dn -= 4) {
        double w0 = pa[up] * pb[-up], v0 = pa[dn] * pb[-dn];
        double w1 = pa[up + 1] * pb[-(up + 1)], v1 = pa[dn - 1] * pb[-(dn - 1)];
        double w2 = pa[up + 2] * pb[-(up + 2)], v2 = pa[dn - 2] * pb[-(dn - 2)];
        double w3 = pa[up + 3] * pb[-(up + 3)], v3 = pa[dn - 3] * pb[-(dn - 3)];
        double bs = ((w0 + v0) + (w1 + v1)) + ((w2 + v2) + (w3 + v3));
        if (cum + bs > target) {
            double c = cum;
            double wv[8] = {w0, v0, w1, v1, w2, v2, w3, v3};
            int64_t uv[8] = {up, dn, up + 1, dn - 1, up + 2, dn - 2, up + 3, dn - 3};
            for (int j = 0; j < 8; j++) {
                c += wv[j];
                if (c > target) return uv[j];
            }
            cum = c;
        } else {
            cum += bs;
        }
    }
    for (; i <= both; i++, up++, dn--) {
        double w = pa[up] * pb[-up];
        cum += w;
        if (cum > target) return up;
        w = pa[dn] * pb[-dn];
        cum += w;
        if (cum > target) return dn;
    }
    for (; up <= uhi; up++) {
        double w = pa[up] * pb[-up];
        cum += w;
        if (cum > target) return up;
    }
    for (; dn >= ulo; dn--) {
        double w = pa[dn] * pb[-dn];
        cum += w;
        if (cum > target) return dn;
    }
    *total = cum;
    return -1;
}

/* The last u with a positive term in the scan order of tl__chop (rounding fallback). */
static int64_t tl__last_positive(const double *a, int64_t alo, const double *b, int64_t blo,
                                 int64_t s, int64_t ulo, int64_t uhi, int64_t u0) {
    const double *pa = a - alo, *pb = b + (s - blo);
    int64_t lp = -1, up = u0, dn = u0 - 1;
    while (up <= uhi || dn >= ulo) {
        if (up <= uhi && pa[up] * pb[-up] > 0.0) lp = up;
        if (dn >= ulo && pa[dn] * pb[-dn] > 0.0) lp = dn;
        up++;
        dn--;
    }
    return lp;
}

int tl_seg_sample(bitgen_t *rng, const tl_seg_node *nodes, int64_t root, const double *vals,
                  int64_t target, const tl_token_tables *tt, int32_t *out) {
    int64_t stack_node[130], stack_sum[130];
    int top = 0;
    stack_node[0] = root;
    stack_sum[0] = target;
    top = 1;
    while (top > 0) {
        top--;
        const tl_seg_node *nd = nodes + stack_node[top];
        int64_t s = stack_sum[top];
        if (s < nd->lo || s >= nd->lo + nd->len) return -1;
        if (nd->left < 0) {
            /* leaf: token within level s of its row */
            int64_t r = nd->row;
            const int64_t *ls = tt->level_start + tt->ls_off[r];
            int64_t st = ls[s], nj = ls[s + 1] - st;
            if (nj <= 0) return -1;
            const tl_alias_slot *sl = tt->slots + tt->slot_off[r] + st;
            if (nj == 1) {
                out[nd->pos] = sl->here;
                continue;
            }
            double x = tl__unif(rng) * (double)nj;
            int64_t i = (int64_t)x;
            i = i < nj ? i : nj - 1;
            out[nd->pos] = (x - (double)i) < sl[i].prob ? sl[i].here : sl[i].alias;
            continue;
        }
        const tl_seg_node *A = nodes + nd->left, *B = nodes + nd->right;
        int64_t ulo = A->lo > s - (B->lo + B->len - 1) ? A->lo : s - (B->lo + B->len - 1);
        int64_t uhi = A->lo + A->len - 1 < s - B->lo ? A->lo + A->len - 1 : s - B->lo;
        if (ulo > uhi) return -1;
        int64_t u0 = (int64_t)floor(nd->c0 + nd->ratio * (double)s + 0.5);
        u0 = u0 < ulo ? ulo : (u0 > uhi ? uhi : u0);
        const double *a = vals + A->off, *b = vals + B->off;
        /* z_hi >= the exact sum of the products: the node's value (an FFT or direct
         * convolution of the same children) plus a bound on its rounding error.  With
         * U uniform, the scan crosses U * z_hi with probability total / z_hi, at u with
         * probability w(u) / z_hi; otherwise a fresh uniform scans U' * total.  Together
         * P(u) = w(u) / total exactly, whatever the error of the node's value. */
        double U = tl__unif(rng);
        double z_hi = (vals[nd->off + (s - nd->lo)] * (1.0 + 1e-12) + 1e-13) * nd->zfac;
        double total = 0.0;
        int64_t u = tl__chop(a, A->lo, b, B->lo, s, ulo, uhi, u0, U * z_hi, &total);
        if (u < 0) {
            if (!(total > 0.0)) return -1;
            U = tl__unif(rng);
            u = tl__chop(a, A->lo, b, B->lo, s, ulo, uhi, u0, U * total, &total);
            if (u < 0) /* U * total rounded up to total */
                u = tl__last_positive(a, A->lo, b, B->lo, s, ulo, uhi, u0);
            if (u < 0) return -1;
        }
        if (top + 2 > 128) return -1;
        stack_node[top] = nd->right;
        stack_sum[top] = s - u;
        top++;
        stack_node[top] = nd->left;
        stack_sum[top] = u;
        top++;
    }
    return 0;
}
