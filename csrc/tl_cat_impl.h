/* Categorical sampler kernels, templated on TL_T (see tl_template.h and tl_cat.h). */

/* Pointers to block j0 of the row: the row itself, or (the tail) copies padded with
 * impossible outcomes (logit -inf, reward 0). */
static inline void TL_SFX(tl__cat_at)(const TL_T *l, const TL_T *r, ptrdiff_t n, ptrdiff_t j0,
                                      TL_T *lpad, TL_T *rpad, const TL_T **lp,
                                      const TL_T **rp) {
    if (j0 + TL_BLOCK <= n) {
        *lp = l + j0;
        *rp = r ? r + j0 : NULL;
        return;
    }
    ptrdiff_t len = n - j0, cnt = tl__cat_count(n, j0);
    for (ptrdiff_t i = 0; i < cnt; i++) {
        lpad[i] = i < len ? l[j0 + i] : (TL_T)-INFINITY;
        if (r) rpad[i] = i < len ? r[j0 + i] : (TL_T)0;
    }
    *lp = lpad;
    *rp = r ? rpad : NULL;
}

/* z of the first cnt elements (a multiple of 8) of a block (tl_cat.h; r unused by
 * TL_CAT_PLAIN) into zb, and
 * the block's bookkeeping: *mb = max z (NaN never wins; -inf if nothing is possible), the
 * reward range of the support folded into [*rlo, *rhi], and for TL_CAT_TILT with lam != 0
 * *h = the largest upper bound z + (|l| + |lam r|) 2^-50 over the elements whose z may be
 * inexact (-inf if none; +inf for a z that is not finite).  Returns TL_FLAG_BAD_LOGIT
 * (NaN or +inf logit) | TL_FLAG_BAD_REWARD (a non-finite reward anywhere). */
#if TL_HAVE_VEC
TL_NOINLINE int TL_SFX(tl__cat_z)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                                  int cnt, const tl_cat_row *row, double *TL_RESTRICT zb,
                                  double *mb, double *h, double *rlo, double *rhi) {
    const tl_vd ninf = tl_vset(-INFINITY), pinf = tl_vset(INFINITY), zero = tl_vset(0.0);
    const tl_vi absmask = ~(tl_vi)tl_vset(-0.0);
    tl_vd mx = ninf;
    tl_vi badl = (tl_vi)zero, badr = (tl_vi)zero;
    if (row->mode == TL_CAT_PLAIN) {
        for (int i = 0; i < cnt; i += TL_VW) {
            tl_vd v = TL_VLOADT(l + i);
            badl |= (v != v) | (v == pinf);
            mx = tl_vmax(v, mx);
            tl_vstore(zb + i, v);
        }
        *mb = tl_vhmax(mx);
        return tl__cat_any(badl) ? TL_FLAG_BAD_LOGIT : 0;
    }
    tl_vd hi = ninf, lo = pinf, hm = ninf;
    const tl_vd lam = tl_vset(row->lam);
    if (row->mode == TL_CAT_TILT && row->lam != 0.0) {
        const tl_vd ulp = tl_vset(TL_CAT_ULP_BOUND), range = tl_vset(TL_CAT_EXACT_RANGE);
        const tl_vd lb = tl_vset(row->l_ref), rb = tl_vset(row->r_ref);
        for (int i = 0; i < cnt; i += TL_VW) {
            tl_vd v = TL_VLOADT(l + i), rv = TL_VLOADT(r + i);
            tl_vi sup = v > ninf;
            badl |= (v != v) | (v == pinf);
            badr |= (rv - rv) != zero;
            hi = tl_vmax(tl_vsel(sup, rv, ninf), hi);
            lo = tl_vmin(tl_vsel(sup, rv, pinf), lo);
            tl_vd dl = v - lb, p = lam * (rv - rb);
            tl_vd z = tl_vsel(sup, dl + p, ninf);
            tl_vd c = (tl_vd)((tl_vi)dl & absmask) + (tl_vd)((tl_vi)p & absmask);
            tl_vd ub = z + c * ulp;
            ub = tl_vsel(ub == ub, ub, pinf);
            hm = tl_vmax(tl_vsel(sup & ~(c <= range), ub, ninf), hm);
            mx = tl_vmax(z, mx);
            tl_vstore(zb + i, z);
        }
    } else if (row->mode == TL_CAT_TILT) { /* lam = 0: z = l exactly */
        for (int i = 0; i < cnt; i += TL_VW) {
            tl_vd v = TL_VLOADT(l + i), rv = TL_VLOADT(r + i);
            tl_vi sup = v > ninf;
            badl |= (v != v) | (v == pinf);
            badr |= (rv - rv) != zero;
            hi = tl_vmax(tl_vsel(sup, rv, ninf), hi);
            lo = tl_vmin(tl_vsel(sup, rv, pinf), lo);
            mx = tl_vmax(v, mx);
            tl_vstore(zb + i, v);
        }
    } else if (row->mode == TL_CAT_SHIFTED) {
        const tl_vd lb = tl_vset(row->l_ref), rb = tl_vset(row->r_ref);
        const tl_vd lbh = tl_vset(0.5 * row->l_ref), lamh = tl_vset(0.5 * row->lam);
        const tl_vd half = tl_vset(0.5);
        for (int i = 0; i < cnt; i += TL_VW) {
            tl_vd v = TL_VLOADT(l + i), rv = TL_VLOADT(r + i);
            tl_vi sup = v > ninf;
            badl |= (v != v) | (v == pinf);
            badr |= (rv - rv) != zero;
            hi = tl_vmax(tl_vsel(sup, rv, ninf), hi);
            lo = tl_vmin(tl_vsel(sup, rv, pinf), lo);
            tl_vd dr = rv - rb;
            tl_vd y = (v - lb) + lam * dr;
            tl_vd yh = (v * half - lbh) + lamh * dr; /* where the parts overflow: y / 2 */
            tl_vd z = tl_vsel(sup, tl_vsel(y == y, y, yh + yh), ninf);
            mx = tl_vmax(z, mx);
            tl_vstore(zb + i, z);
        }
    } else { /* TL_CAT_LIMIT */
        const tl_vd star = tl_vset(row->r_star);
        for (int i = 0; i < cnt; i += TL_VW) {
            tl_vd v = TL_VLOADT(l + i), rv = TL_VLOADT(r + i);
            tl_vi sup = v > ninf;
            badl |= (v != v) | (v == pinf);
            badr |= (rv - rv) != zero;
            hi = tl_vmax(tl_vsel(sup, rv, ninf), hi);
            lo = tl_vmin(tl_vsel(sup, rv, pinf), lo);
            tl_vd z = tl_vsel(sup & (rv == star), v, ninf);
            mx = tl_vmax(z, mx);
            tl_vstore(zb + i, z);
        }
    }
    double a = tl_vhmax(hi), b = tl_vhmin(lo), g = tl_vhmax(hm);
    *rhi = a > *rhi ? a : *rhi;
    *rlo = b < *rlo ? b : *rlo;
    *h = g;
    *mb = tl_vhmax(mx);
    return (tl__cat_any(badl) ? TL_FLAG_BAD_LOGIT : 0) |
           (tl__cat_any(badr) ? TL_FLAG_BAD_REWARD : 0);
}
#else
static int TL_SFX(tl__cat_z)(const TL_T *l, const TL_T *r, int cnt, const tl_cat_row *row,
                             double *zb, double *mb, double *h, double *rlo, double *rhi) {
    double mx = -INFINITY, hi = -INFINITY, lo = INFINITY, hm = -INFINITY;
    int bad = 0;
    for (int i = 0; i < cnt; i++) {
        double v = (double)l[i], z = v;
        if (v != v || v == INFINITY) bad |= TL_FLAG_BAD_LOGIT;
        if (row->mode != TL_CAT_PLAIN) {
            double rv = (double)r[i];
            int sup = v > -INFINITY;
            if (rv - rv != 0.0) bad |= TL_FLAG_BAD_REWARD;
            if (sup && rv > hi) hi = rv;
            if (sup && rv < lo) lo = rv;
            if (row->mode == TL_CAT_TILT && row->lam != 0.0) {
                double dl = v - row->l_ref, p = row->lam * (rv - row->r_ref);
                z = sup ? dl + p : -INFINITY;
                double c = fabs(dl) + fabs(p), ub = z + c * TL_CAT_ULP_BOUND;
                if (ub != ub) ub = INFINITY;
                if (sup && !(c <= TL_CAT_EXACT_RANGE) && ub > hm) hm = ub;
            } else if (row->mode == TL_CAT_SHIFTED) {
                double dr = rv - row->r_ref;
                double y = (v - row->l_ref) + row->lam * dr;
                double yh = (v * 0.5 - 0.5 * row->l_ref) + (0.5 * row->lam) * dr;
                z = sup ? (y == y ? y : yh + yh) : -INFINITY;
            } else if (row->mode == TL_CAT_LIMIT) {
                z = sup && rv == row->r_star ? v : -INFINITY;
            }
        }
        if (z > mx) mx = z;
        zb[i] = z;
    }
    *rhi = hi > *rhi ? hi : *rhi;
    *rlo = lo < *rlo ? lo : *rlo;
    *h = hm;
    *mb = mx;
    return bad;
}
#endif

/* One pass over the row in row->mode: bmax, the block sums into cum, row->m; returns the
 * flags and sets *inexact (TL_CAT_TILT: some z may be off by more than the rounding
 * bound where it carries mass). */
static int TL_SFX(tl__cat_pass)(const TL_T *l, const TL_T *r, ptrdiff_t n, tl_cat_row *row,
                                double *bmax, double *bsum, int *inexact) {
    TL_T lpad[TL_BLOCK], rpad[TL_BLOCK];
    double zb[TL_BLOCK];
    double rlo = INFINITY, rhi = -INFINITY, h = -INFINITY, m = -INFINITY;
    int flags = 0;
    for (ptrdiff_t b = 0, j0 = 0; j0 < n; b++, j0 += TL_BLOCK) {
        const TL_T *lp, *rp;
        double mb, hb;
        int cnt = tl__cat_count(n, j0);
        TL_SFX(tl__cat_at)(l, r, n, j0, lpad, rpad, &lp, &rp);
        flags |= TL_SFX(tl__cat_z)(lp, rp, cnt, row, zb, &mb, &hb, &rlo, &rhi);
        h = hb > h ? hb : h;
        m = mb > m ? mb : m;
        bmax[b] = mb;
        bsum[b] = mb > -INFINITY && mb < INFINITY ? tl__cat_expsum(zb, cnt, mb) : 0.0;
    }
    if (row->mode != TL_CAT_PLAIN && rhi >= rlo && !(rhi - rlo <= DBL_MAX))
        flags |= TL_FLAG_REWARD_RANGE;
    row->m = m;
    *inexact = h > -INFINITY && !(m < INFINITY && h <= m - TL_CAT_NEGLIGIBLE);
    return flags;
}

int TL_SFX(tl_cat_prepare)(const TL_T *l, const TL_T *r, ptrdiff_t n, int mode, double lam,
                           tl_cat_row *row, double *bmax, double *bscale, double *cum) {
    memset(row, 0, sizeof *row);
    row->mode = mode == TL_CAT_PLAIN ? TL_CAT_PLAIN : TL_CAT_TILT;
    row->lam = lam;
    row->nb = tl_cat_blocks(n);
    row->last = -1;
    double r_lo, r_hi, l_max;
    if (row->mode == TL_CAT_TILT && !(fabs(lam) <= DBL_MAX)) { /* the limits lam = +-inf */
        TL_SFX(tl_prescan)(l, r, n, 0.0, &r_lo, &r_hi, &l_max);
        row->mode = TL_CAT_LIMIT;
        row->r_star = lam > 0.0 ? r_hi : r_lo;
    }
    if (row->mode == TL_CAT_TILT && lam != 0.0) {
        /* the reference (l_ref, r_ref): the largest logit of the first block (a row whose
         * logits or rewards sit at an offset keeps z = (l - l_ref) + lam (r - r_ref) small) */
        ptrdiff_t len = n < TL_BLOCK ? n : TL_BLOCK;
        double best = -INFINITY;
        for (ptrdiff_t i = 0; i < len; i++) {
            double v = (double)l[i], rv = (double)r[i];
            if (v > best && v < INFINITY) {
                best = v;
                row->l_ref = v;
                row->r_ref = rv - rv == 0.0 ? rv : 0.0;
            }
        }
    }
    int inexact;
    int flags = TL_SFX(tl__cat_pass)(l, r, n, row, bmax, cum, &inexact);
    if (flags & TL_FLAGS_INPUT) return flags;
    if (row->mode == TL_CAT_TILT && inexact) { /* again, relative to the dominant outcome */
        ptrdiff_t b = TL_SFX(tl_prescan)(l, r, n, lam, &r_lo, &r_hi, &l_max);
        if (b < 0) return flags | TL_FLAG_EMPTY_ROW;
        row->mode = TL_CAT_SHIFTED;
        row->l_ref = (double)l[b];
        row->r_ref = (double)r[b];
        flags = TL_SFX(tl__cat_pass)(l, r, n, row, bmax, cum, &inexact);
        if (flags & TL_FLAGS_INPUT) return flags;
    }
    if (!(row->m > -INFINITY)) return flags | TL_FLAG_EMPTY_ROW;
    tl__cat_scales(bmax, row->nb, row->m, bscale);
    row->last = tl__cat_prefix(bscale, row->nb, cum);
    row->total = cum[row->nb - 1];
    if (row->last < 0 || !(row->total > 0.0)) return flags | TL_FLAG_EMPTY_ROW; /* not reached */
    return flags;
}

/* e^(z_i - M_b) of block b into eb */
static void TL_SFX(tl__cat_block_weights)(const TL_T *l, const TL_T *r, ptrdiff_t n,
                                          const tl_cat_row *row, const double *bmax,
                                          ptrdiff_t b, double *eb) {
    TL_T lpad[TL_BLOCK], rpad[TL_BLOCK];
    double zb[TL_BLOCK];
    const TL_T *lp, *rp;
    double mb, hb, rlo = INFINITY, rhi = -INFINITY;
    int cnt = tl__cat_count(n, b * TL_BLOCK);
    TL_SFX(tl__cat_at)(l, r, n, b * TL_BLOCK, lpad, rpad, &lp, &rp);
    TL_SFX(tl__cat_z)(lp, rp, cnt, row, zb, &mb, &hb, &rlo, &rhi);
    tl__cat_expblock(zb, cnt, bmax[b], eb);
}

#define TL_CAT_WORDS 256

void TL_SFX(tl_cat_draw)(const TL_T *l, const TL_T *r, ptrdiff_t n, const tl_cat_row *row,
                         const double *bmax, const double *bscale, const double *cum,
                         const tl_pcg64 *g, int64_t count, int64_t *out,
                         const tl_stop_flag *stop) {
    double eb[TL_BLOCK];
    uint64_t words[TL_CAT_WORDS];
    tl_pcg64 gg = *g;
    ptrdiff_t cached = -1, nb = row->nb;
    const double total = row->total;
    for (int64_t d0 = 0; d0 < count; d0 += TL_CAT_WORDS) {
        if (tl_stop_requested(stop)) return;
        int k = count - d0 < TL_CAT_WORDS ? (int)(count - d0) : TL_CAT_WORDS;
        tl_pcg64_words(&gg, words, k);
        tl_u128 step = {(uint64_t)k, 0};
        tl_pcg64_advance(&gg, step);
        for (int j = 0; j < k; j++) {
            /* u = (k + 1/2) 2^-52, k the top 52 bits: exact, and never 0 or 1 (a draw
             * with t = 0 would take a block's first positive term whatever its size) */
            double t = ((double)(words[j] >> 12) + 0.5) * 0x1.0p-52 * total;
            ptrdiff_t b = tl__cat_search(cum, nb, t);
            if (b >= nb) b = row->last;
            double target = (t - (b > 0 ? cum[b - 1] : 0.0)) / bscale[b];
            if (b != cached) {
                TL_SFX(tl__cat_block_weights)(l, r, n, row, bmax, b, eb);
                cached = b;
            }
            ptrdiff_t len = n - b * TL_BLOCK < TL_BLOCK ? n - b * TL_BLOCK : TL_BLOCK;
            ptrdiff_t pick = -1, lastpos = 0;
            double acc = 0.0;
            for (ptrdiff_t i = 0; i < len; i++) {
                double e = eb[i];
                if (e > 0.0) {
                    lastpos = i;
                    acc += e;
                    if (acc > target) {
                        pick = i;
                        break;
                    }
                }
            }
            out[d0 + j] = b * TL_BLOCK + (pick >= 0 ? pick : lastpos);
        }
    }
}

ptrdiff_t TL_SFX(tl_cat_weights)(const TL_T *l, const TL_T *r, ptrdiff_t n,
                                 const tl_cat_row *row, const double *bmax,
                                 const double *bscale, double *w, int32_t *payload) {
    double eb[TL_BLOCK];
    ptrdiff_t k = 0;
    for (ptrdiff_t b = 0; b < row->nb; b++) {
        double f = bscale[b];
        if (!(f > 0.0)) continue;
        TL_SFX(tl__cat_block_weights)(l, r, n, row, bmax, b, eb);
        ptrdiff_t j0 = b * TL_BLOCK, len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        for (ptrdiff_t i = 0; i < len; i++) {
            double x = eb[i] * f;
            if (x > 0.0) {
                w[k] = x;
                payload[k] = (int32_t)(j0 + i);
                k++;
            }
        }
    }
    return k;
}
