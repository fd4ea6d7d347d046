/* Tilting chunk kernels, templated on TL_T (see tl_template.h and tl_tilt.h). */

/* A block load of the tilting kernels: the copy to double buffers (logits to lb, tail
 * padded with -inf; r - c to db, 0 off the support and in the tail; db * inv_scale to ds;
 * with prefetch) and ONE scan for everything the block's bookkeeping needs: bad logits
 * (NaN, +inf), non-finite rewards, r - c overflowing on the support, the maximum logit
 * *bm, and the range [*dlo, *dhi] of r - c over the support (finite logits).  Returns the
 * TL_FLAG_BAD_* bits. */
static inline int TL_SFX(tl__scan_block)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                                         ptrdiff_t len, ptrdiff_t left, double c,
                                         double inv_scale, double *TL_RESTRICT lb,
                                         double *TL_RESTRICT db, double *TL_RESTRICT ds,
                                         double *bm, double *dlo, double *dhi) {
    TL_PREFETCH_BLOCK(l, left);
    TL_PREFETCH_BLOCK(r, left);
    for (ptrdiff_t i = 0; i < len; i++) {
        lb[i] = (double)l[i];
        db[i] = (double)r[i] - c;
    }
    for (ptrdiff_t i = len; i < TL_BLOCK; i++) {
        lb[i] = -INFINITY;
        db[i] = 0.0;
    }
    double ml[TL_LANES], hi[TL_LANES], lo[TL_LANES], nn[TL_LANES], nf[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) {
        ml[k] = hi[k] = -INFINITY;
        lo[k] = INFINITY;
        nn[k] = nf[k] = 0.0;
    }
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            double v = lb[i + k], d = db[i + k];
            int fin = v > -INFINITY;
            ml[k] = v > ml[k] ? v : ml[k];
            nn[k] += v == v ? 0.0 : 1.0;
            nf[k] += d * 0.0; /* NaN exactly for NaN and +-inf */
            double dm = fin ? d : 0.0; /* off the support r - c is never used */
            double dh = fin ? d : -INFINITY, dl = fin ? d : INFINITY;
            hi[k] = dh > hi[k] ? dh : hi[k];
            lo[k] = dl < lo[k] ? dl : lo[k];
            db[i + k] = dm;
            ds[i + k] = dm * inv_scale;
        }
    double m = ml[0], h = hi[0], o = lo[0];
    for (int k = 1; k < TL_LANES; k++) {
        m = ml[k] > m ? ml[k] : m;
        h = hi[k] > h ? hi[k] : h;
        o = lo[k] < o ? lo[k] : o;
    }
    *bm = m;
    *dhi = h;
    *dlo = o;
    int bad_l = tl__lanes_total(nn) != 0.0 || m == INFINITY;
    int bad_r = 0;
    double t = tl__lanes_total(nf);
    if (t != t) {
        /* r itself is not finite (an error anywhere), or r - c overflowed (an error on the
         * support only: elsewhere the reward is never used) */
        for (ptrdiff_t i = 0; i < len; i++) {
            double ri = (double)r[i], li = (double)l[i];
            if (!(fabs(ri) <= DBL_MAX)) bad_r |= TL_FLAG_BAD_REWARD;
            else if (li > -INFINITY && !(fabs(ri - c) <= DBL_MAX)) bad_r |= TL_FLAG_REWARD_RANGE;
        }
    }
    return (bad_l ? TL_FLAG_BAD_LOGIT : 0) | bad_r;
}

#if TL_HAVE_VEC
/* The vectorised scan of tl_prescan over one block: folds the reward range of the support
 * into [*lo, *hi] and the largest finite logit into *lmax, and writes the largest gain
 * y = (l - l_b) + lam (r - r_b) over the best so far to *m (-inf off the support; NaN
 * logits are not support, +inf ones are an error the main pass reports); returns 1 if
 * some gain was NaN (ambiguous: inf - inf). */
TL_NOINLINE int TL_SFX(tl__prescan_block)(const TL_T *TL_RESTRICT lb, const TL_T *TL_RESTRICT rb,
                                          double l_b, double r_b, double lam, double *hi_out,
                                          double *lo_out, double *lmax_out, double *m_out) {
    const tl_vd ninf = tl_vset(-INFINITY), pinf = tl_vset(INFINITY);
    const tl_vd vlb = tl_vset(l_b), vrb = tl_vset(r_b), vlam = tl_vset(lam), zero = tl_vset(0.0);
    tl_vd hi = ninf, lo = pinf, ml = ninf, mx = ninf, nn = zero;
    for (int i = 0; i < TL_BLOCK; i += TL_VW) {
        tl_vd v = TL_VLOADT(lb + i), rv = TL_VLOADT(rb + i);
        tl_vi fin = (v - v) == zero; /* finite: not NaN, not +-inf */
        hi = tl_vmax(tl_vsel(fin, rv, ninf), hi);
        lo = tl_vmin(tl_vsel(fin, rv, pinf), lo);
        ml = tl_vmax(tl_vsel(fin, v, ninf), ml);
        tl_vd y = tl_vsel(fin, (v - vlb) + vlam * (rv - vrb), ninf);
        nn += tl_vmask01(y != y);
        mx = tl_vmax(y, mx);
    }
    double h = tl_vhmax(hi), o = tl_vhmin(lo), g = tl_vhmax(ml);
    *hi_out = h > *hi_out ? h : *hi_out;
    *lo_out = o < *lo_out ? o : *lo_out;
    *lmax_out = g > *lmax_out ? g : *lmax_out;
    *m_out = tl_vhmax(mx);
    return tl_vsum(nn) != 0.0;
}
#else
/* The vectorised scan of tl_prescan over one block: folds the reward range of the support
 * into [*lo, *hi] and writes the largest gain y = (l - l_b) + lam (r - r_b) over the best
 * so far to *m (-inf off the support; NaN logits are not support, +inf ones are an error
 * the main pass reports); returns 1 if some gain was NaN (ambiguous: inf - inf). */
TL_NOINLINE int TL_SFX(tl__prescan_block)(const TL_T *TL_RESTRICT lb, const TL_T *TL_RESTRICT rb,
                                  double l_b, double r_b, double lam, double *hi_out,
                                  double *lo_out, double *lmax_out, double *m_out) {
    double hi[TL_LANES], lo[TL_LANES], nn[TL_LANES], mx[TL_LANES], ml[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) {
        hi[k] = mx[k] = ml[k] = -INFINITY;
        lo[k] = INFINITY;
        nn[k] = 0.0;
    }
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            double v = (double)lb[i + k], rv = (double)rb[i + k];
            int fin = v - v == 0.0; /* finite: not NaN, not +-inf */
            double dh = fin ? rv : -INFINITY, dl = fin ? rv : INFINITY;
            hi[k] = dh > hi[k] ? dh : hi[k];
            lo[k] = dl < lo[k] ? dl : lo[k];
            double vf = fin ? v : -INFINITY;
            ml[k] = vf > ml[k] ? vf : ml[k];
            double y = (v - l_b) + lam * (rv - r_b);
            y = fin ? y : -INFINITY;
            nn[k] += y == y ? 0.0 : 1.0;
            mx[k] = y > mx[k] ? y : mx[k];
        }
    double h = *hi_out, o = *lo_out, m = mx[0], g = *lmax_out;
    for (int k = 0; k < TL_LANES; k++) {
        h = hi[k] > h ? hi[k] : h;
        o = lo[k] < o ? lo[k] : o;
        m = mx[k] > m ? mx[k] : m;
        g = ml[k] > g ? ml[k] : g;
    }
    *hi_out = h;
    *lo_out = o;
    *lmax_out = g;
    *m_out = m;
    double t = 0.0;
    for (int k = 0; k < TL_LANES; k++) t += nn[k];
    return t != 0.0;
}
#endif

ptrdiff_t TL_SFX(tl_prescan)(const TL_T *l, const TL_T *r, ptrdiff_t n, double lam,
                             double *r_lo, double *r_hi, double *l_max) {
    TL_T lpad[TL_BLOCK], rpad[TL_BLOCK];
    ptrdiff_t best = -1;
    double lbest = 0.0, rbest = 0.0, h = -INFINITY, o = INFINITY, g = -INFINITY;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        const TL_T *lp = l + j0, *rp = r + j0;
        if (len < TL_BLOCK) { /* the tail, padded with non-support */
            for (ptrdiff_t i = 0; i < TL_BLOCK; i++) {
                lpad[i] = i < len ? lp[i] : (TL_T)-INFINITY;
                rpad[i] = i < len ? rp[i] : (TL_T)0;
            }
            lp = lpad;
            rp = rpad;
        }
        double m;
        int ambiguous = TL_SFX(tl__prescan_block)(lp, rp, lbest, rbest, lam, &h, &o, &g, &m);
        /* nothing in the block beats the best so far (and no gain was ambiguous) */
        if (best >= 0 && !(m > 0.0) && !ambiguous) continue;
        for (ptrdiff_t i = 0; i < len; i++) {
            double v = (double)lp[i], rv = (double)rp[i];
            if (!(v > -INFINITY && v < INFINITY)) continue;
            if (best < 0 || tl_tilted_diff(v, rv, lbest, rbest, lam) > 0.0) {
                best = j0 + i;
                lbest = v;
                rbest = rv;
            }
        }
    }
    *r_hi = h;
    *r_lo = o;
    *l_max = g;
    return best;
}

/* ---- the fast path of tl_tilt_chunk: one fused loop per block ----
 * With the row's largest logit l_max and (standard mode) the dominant outcome's x = 0 known
 * from the first pass, a block needs no running maxima: one loop reads l and r once,
 * checks them (NaN logits, +inf logits, non-finite rewards or r - c: any of these sends
 * the block to the general path, which reports it), forms the weights and sums them in
 * vector lanes (tl_simd.h).  The tilted weights and d_s are left in wb, dsb for the
 * centred second sum (from L1).  Returns 1 if the block was accepted, 0 if the general
 * path must redo it (the sums are then not touched).  Without vector extensions every
 * block takes the general path. */
#if TL_HAVE_VEC
TL_NOINLINE int TL_SFX(tl__fast_block)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                                       const tl_tilt_row *row, int mode,
                                       double *TL_RESTRICT wb, double *TL_RESTRICT dsb,
                                       double *TL_RESTRICT out) {
    const tl_vd lam = tl_vset(row->lam), c = tl_vset(row->c), ml = tl_vset(row->l_max);
    const tl_vd inv_scale = tl_vset(row->inv_scale), anchor = tl_vset(row->anchor);
    const tl_vd lc = tl_vset(row->lc), zero = tl_vset(0.0), ninf = tl_vset(-INFINITY);
    tl_vd s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero, s5 = zero;
    tl_vd mx = ninf, bx = ninf, bad = zero;
    if (mode == TL_MODE_PRODUCT) {
        for (int i = 0; i < TL_BLOCK; i += TL_VW) {
            tl_vd li = TL_VLOADT(l + i), d = TL_VLOADT(r + i) - c;
            bad += d * zero + tl_vmask01(li != li); /* NaN for non-finite d; 1 for NaN l */
            mx = tl_vmax(li, mx);
            tl_vd dm = tl_vsel(li > ninf, d, zero);
            tl_vd ds = dm * inv_scale;
            /* full exp for weights that enter moments; tl_vexp_w (flushed below
             * e^-708) where only a log of their sum is taken */
            tl_vd a = tl_vexp(li - ml), e, em, emx;
            tl_vexp3(lam * dm, &e, &em, &emx);
            tl_vd aem = a * em, b = a * e;
            s0 += a;
            s1 += aem;
            s2 += a * emx;
            s3 += a * ds;
            s4 += aem * ds;
            s5 += b;
            tl_vstore(wb + i, b);
            tl_vstore(dsb + i, ds);
        }
    } else if (mode == TL_MODE_STANDARD) {
        for (int i = 0; i < TL_BLOCK; i += TL_VW) {
            tl_vd li = TL_VLOADT(l + i), d = TL_VLOADT(r + i) - c;
            bad += d * zero + tl_vmask01(li != li);
            mx = tl_vmax(li, mx);
            tl_vd dm = tl_vsel(li > ninf, d, zero);
            tl_vd ds = dm * inv_scale;
            /* off the support l = -inf, dm = 0: x = -inf; x <= 0 up to rounding */
            tl_vd x = (li - anchor) + lam * dm;
            bad += tl_vmask01(x != x);
            bx = tl_vmax(x, bx);
            tl_vd a = tl_vexp_w(li - ml), b = tl_vexp(x);
            s0 += a;
            s3 += b * ds;
            s5 += b;
            tl_vstore(wb + i, b);
            tl_vstore(dsb + i, ds);
        }
    } else {
        for (int i = 0; i < TL_BLOCK; i += TL_VW) {
            tl_vd li = TL_VLOADT(l + i), d = TL_VLOADT(r + i) - c;
            bad += d * zero + tl_vmask01(li != li);
            mx = tl_vmax(li, mx);
            tl_vd a = tl_vexp(li - ml);
            s0 += a;
            s1 += a * tl_vkl_term(tl_vsel(li > ninf, lam * d - lc, zero));
        }
    }
    /* a logit above l_max is +inf; x above 1 (standard mode) is a rounding excess the
     * fixed reference 0 does not absorb safely: the general path rescales */
    if (tl_vsum(bad) != 0.0 || tl_vhmax(mx) > row->l_max || tl_vhmax(bx) > 1.0) return 0;
    out[0] = tl_vsum(s0);
    out[1] = tl_vsum(s1);
    out[2] = tl_vsum(s2);
    out[3] = tl_vsum(s3);
    out[4] = tl_vsum(s4);
    out[5] = tl_vsum(s5);
    return 1;
}
#endif

/* The general path of one block (running maxima, half-scale x, input flags). */
static void TL_SFX(tl__tilt_block)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                                   ptrdiff_t n, ptrdiff_t j0, const tl_tilt_row *row,
                                   int mode, tl_tilt_acc *acc) {
    double lb[TL_BLOCK], db[TL_BLOCK], ds[TL_BLOCK], xb[TL_BLOCK], wa[TL_BLOCK], wb[TL_BLOCK];
    double we[TL_BLOCK], ws[TL_BLOCK], wt[TL_BLOCK], wx[TL_BLOCK];
    const double lam = row->lam, c = row->c, lc = row->lc, inv_scale = row->inv_scale;
    do {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        double bm, dlo, dhi;
        int bad = TL_SFX(tl__scan_block)(l + j0, r + j0, len, n - j0, c, inv_scale, lb, db, ds,
                                         &bm, &dlo, &dhi);
        if (bad) {
            acc->flags |= bad;
            break;
        }
        if (bm == -INFINITY) break;
        /* reward range of the support (in units of r - c) */
        acc->r_hi = dhi > acc->r_hi ? dhi : acc->r_hi;
        acc->r_lo = dlo < acc->r_lo ? dlo : acc->r_lo;
        if (bm > acc->m_l) {
            double f = tl_rescale(acc->m_l, bm);
            acc->s_l *= f;
            if (mode != TL_MODE_STANDARD) {
                acc->e *= f;
                acc->e2 *= f;
                acc->s1 *= f;
                acc->t1 *= f;
                acc->s_b *= f;
                acc->m2 *= f;
            }
            acc->m_l = bm;
        }
        const double ml = acc->m_l;
        double sb, sd; /* tilted weight sum and sum of weight * d_s of the block */
        if (mode == TL_MODE_KL) {
            for (int i = 0; i < TL_BLOCK; i++) {
                double a = tl_exp(lb[i] - ml);
                double v = lb[i] > -INFINITY ? lam * db[i] - lc : 0.0;
                wa[i] = a;
                we[i] = a * tl_kl_term(v);
            }
            acc->s_l += tl_block_sum(wa);
            acc->e += tl_block_sum(we);
            break;
        }
        if (mode == TL_MODE_PRODUCT) {
            for (int i = 0; i < TL_BLOCK; i++) {
                double a = tl_exp(lb[i] - ml), e, em, emx;
                tl_exp_expm1_emx(lam * db[i], &e, &em, &emx);
                wa[i] = a;
                we[i] = a * em;
                wx[i] = a * emx;
                wb[i] = a * e;
                ws[i] = a * ds[i];
                wt[i] = (a * em) * ds[i];
            }
            double s1 = tl_block_sum(ws), t1 = tl_block_sum(wt);
            acc->s_l += tl_block_sum(wa);
            acc->e += tl_block_sum(we);
            acc->e2 += tl_block_sum(wx);
            acc->s1 += s1;
            acc->t1 += t1;
            sb = tl_block_sum(wb);
            sd = s1 + t1; /* sum a e d_s = sum a d_s + sum a expm1(u) d_s */
        } else {
            /* relative to the dominant outcome x <= 0 (up to rounding): no overflow */
            tl__tilted_block(lb, db, row->anchor, lam, xb);
            double bx = tl_block_max(xb);
            if (bx > acc->m_x) {
                double f = tl_rescale(acc->m_x, bx);
                acc->s_b *= f;
                acc->m2 *= f;
                acc->m_x = bx;
            }
            const double mx = acc->m_x;
            for (int i = 0; i < TL_BLOCK; i++) {
                wa[i] = tl_exp(lb[i] - ml);
                wb[i] = tl_exp(xb[i] - mx);
            }
            acc->s_l += tl_block_sum(wa);
            sb = tl_block_sum(wb);
            sd = tl_block_dot(wb, ds);
        }
        if (sb > 0.0) {
            /* corrected two-pass centred sums of the block around nu = sd / sb */
            double nu, q;
            tl_block_centred_at(wb, ds, sb, sd / sb, &nu, &q);
            tl_chan_merge(&acc->s_b, &acc->mu, &acc->m2, 1.0, sb, nu, q, 1.0);
        }
    } while (0);
}

void TL_SFX(tl_tilt_chunk)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r, ptrdiff_t n,
                           const tl_tilt_row *row, int mode, tl_tilt_acc *acc) {
    tl__tilt_init(acc);
#if TL_HAVE_VEC
    double wb[TL_BLOCK], dsb[TL_BLOCK], sums[6];
    TL_T lpad[TL_BLOCK], rpad[TL_BLOCK];
    /* the fast path's fixed references (a row without support, or with flagged input,
     * takes the general path, which reports it) */
    const int fast = row->l_max > -INFINITY && row->l_max <= DBL_MAX && row->flags == 0;
    if (fast) {
        acc->m_l = row->l_max;
        if (mode == TL_MODE_STANDARD) acc->m_x = 0.0;
        /* rounding is monotonic: max of r - c over the support is r_hi - c */
        acc->r_lo = row->r_lo - row->c;
        acc->r_hi = row->r_hi - row->c;
    }
#endif
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
#if TL_HAVE_VEC
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        if (fast) {
            const TL_T *lp = l + j0, *rp = r + j0;
            if (len < TL_BLOCK) { /* the tail: padded with neutral values */
                for (ptrdiff_t i = 0; i < TL_BLOCK; i++) {
                    lpad[i] = i < len ? l[j0 + i] : (TL_T)-INFINITY;
                    rpad[i] = i < len ? r[j0 + i] : (TL_T)row->c;
                }
                lp = lpad;
                rp = rpad;
            }
            if (TL_SFX(tl__fast_block)(lp, rp, row, mode, wb, dsb, sums)) {
                acc->s_l += sums[0];
                if (mode == TL_MODE_KL) {
                    acc->e += sums[1];
                    continue;
                }
                double sb = sums[5], sd = sums[3];
                if (mode == TL_MODE_PRODUCT) {
                    acc->e += sums[1];
                    acc->e2 += sums[2];
                    acc->s1 += sums[3];
                    acc->t1 += sums[4];
                    sd = sums[3] + sums[4];
                }
                if (sb > 0.0) {
                    double nu, q;
                    tl_vcentred(wb, dsb, sb, sd / sb, &nu, &q);
                    tl_chan_merge(&acc->s_b, &acc->mu, &acc->m2, 1.0, sb, nu, q, 1.0);
                }
                continue;
            }
        }
#endif
        TL_SFX(tl__tilt_block)(l, r, n, j0, row, mode, acc);
    }
}

void TL_SFX(tl_info_chunk)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r, ptrdiff_t n,
                           const tl_tilt_row *row, tl_info_acc *acc) {
    double lb[TL_BLOCK], db[TL_BLOCK], ds[TL_BLOCK], rb[TL_BLOCK], wa[TL_BLOCK];
    double hv[TL_BLOCK], lv[TL_BLOCK], mk[TL_BLOCK], ek[TL_BLOCK], in[TL_BLOCK], out[TL_BLOCK];
    tl__info_init(acc);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        double bm, dlo, dhi;
        int bad = TL_SFX(tl__scan_block)(l + j0, r + j0, len, n - j0, row->c, row->inv_scale,
                                         lb, db, ds, &bm, &dlo, &dhi);
        if (bad) {
            acc->flags |= bad;
            continue;
        }
        for (ptrdiff_t i = 0; i < len; i++) rb[i] = (double)r[j0 + i];
        for (ptrdiff_t i = len; i < TL_BLOCK; i++) rb[i] = 0.0;
        if (bm == -INFINITY) continue;
        if (bm > acc->m_l) {
            double f = tl_rescale(acc->m_l, bm);
            acc->s_l *= f;
            acc->m2 *= f;
            acc->in_hi *= f;
            acc->out_hi *= f;
            acc->in_lo *= f;
            acc->out_lo *= f;
            acc->m_l = bm;
        }
        const double ml = acc->m_l;
        for (int i = 0; i < TL_BLOCK; i++) wa[i] = tl_exp(lb[i] - ml);
        double sa = tl_block_sum(wa);
        if (sa > 0.0) {
            double nu, q;
            tl_block_centred(wa, ds, sa, &nu, &q);
            tl_chan_merge(&acc->s_l, &acc->mu, &acc->m2, 1.0, sa, nu, q, 1.0);
        }
        /* extreme reward sets of the block (raw rewards: ties are decided exactly) */
        for (int i = 0; i < TL_BLOCK; i++) {
            int fin = lb[i] > -INFINITY;
            hv[i] = fin ? rb[i] : -INFINITY;
            lv[i] = fin ? -rb[i] : -INFINITY;
        }
        for (int side = 0; side < 2; side++) {
            const double *v = side == 0 ? hv : lv;
            double best = tl_block_max(v);
            for (int i = 0; i < TL_BLOCK; i++) {
                int top = v[i] == best;
                mk[i] = top ? lb[i] : -INFINITY;
                in[i] = top ? wa[i] : 0.0;
                out[i] = top ? 0.0 : wa[i];
            }
            double mb = tl_block_max(mk);
            for (int i = 0; i < TL_BLOCK; i++) ek[i] = tl_exp(mk[i] - mb);
            tl__info_side(acc, side, side == 0 ? best : -best, mb, tl_block_sum(ek),
                          tl_block_sum(in), tl_block_sum(out));
        }
    }
}

void TL_SFX(tl_tilt_logprobs)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r, ptrdiff_t n,
                              const tl_phi_params *p, double *TL_RESTRICT out) {
    const double lam = p->lam, c = p->c, anchor = p->anchor, z = p->z;
    double nn = 0.0;
    ptrdiff_t i0 = 0;
#if TL_HAVE_VEC
    {
        const tl_vd va = tl_vset(anchor), vz = tl_vset(z), vc = tl_vset(c);
        const tl_vd vlam = tl_vset(lam), ninf = tl_vset(-INFINITY);
        tl_vd vnn = tl_vset(0.0);
        for (; i0 + TL_VW <= n; i0 += TL_VW) {
            tl_vd li = TL_VLOADT(l + i0), ri = TL_VLOADT(r + i0);
            /* lam = 0: no reward term (an infinite reward off the support is never read) */
            tl_vd x = lam == 0.0 ? li - va : (li - va) + vlam * (ri - vc);
            tl_vd v = tl_vsel(li > ninf, x - vz, ninf);
            vnn += tl_vmask01(v != v);
            tl_vstore(out + i0, v);
        }
        nn = tl_vsum(vnn);
    }
#endif
    for (ptrdiff_t i = i0; i < n; i++) {
        double li = (double)l[i];
        double x = (li - anchor) + (lam == 0.0 ? 0.0 : lam * ((double)r[i] - c));
        double v = li > -INFINITY ? x - z : -INFINITY;
        nn += v == v ? 0.0 : 1.0;
        out[i] = v;
    }
    if (nn != 0.0) /* the two parts of x overflowed with opposite signs: half scale */
        for (ptrdiff_t i = 0; i < n; i++)
            if (out[i] != out[i]) {
                double li = (double)l[i];
                double h = (0.5 * li - 0.5 * anchor) + (0.5 * lam) * ((double)r[i] - c);
                out[i] = 2.0 * h - z;
            }
}

void TL_SFX(tl_limit_logprobs)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                               ptrdiff_t n, double r_star, double m_star, double ls_star,
                               double *TL_RESTRICT out) {
    for (ptrdiff_t i = 0; i < n; i++) {
        double li = (double)l[i];
        out[i] = ((double)r[i] == r_star && li > -INFINITY) ? (li - m_star) - ls_star
                                                             : -INFINITY;
    }
}

#if TL_HAVE_VEC
/* One block of tl_moments_chunk in vector lanes: sums[j] += sum phi z^j.  Returns 0 (sums
 * untouched) if some x = (l - anchor) + lam (r - c) is NaN (the two parts overflowed with
 * opposite signs): the scalar path evaluates those at half scale. */
TL_NOINLINE int TL_SFX(tl__moments_block)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                                          const tl_phi_params *p, int order,
                                          double *TL_RESTRICT sums) {
    tl_vd acc[TL_MAX_ORDER + 1];
    const tl_vd zero = tl_vset(0.0), ninf = tl_vset(-INFINITY), lam = tl_vset(p->lam);
    const tl_vd c = tl_vset(p->c), anchor = tl_vset(p->anchor), zn = tl_vset(p->z);
    const tl_vd inv_scale = tl_vset(p->inv_scale), center = tl_vset(p->center);
    const tl_vd inv_spread = tl_vset(p->inv_spread);
    tl_vd nn = zero;
    for (int j = 0; j <= order; j++) acc[j] = zero;
    for (int i = 0; i < TL_BLOCK; i += TL_VW) {
        tl_vd li = TL_VLOADT(l + i);
        tl_vd d = tl_vsel(li > ninf, TL_VLOADT(r + i) - c, zero);
        tl_vd x = (li - anchor) + lam * d; /* off the support: -inf */
        nn += tl_vmask01(x != x);
        tl_vd z = (d * inv_scale - center) * inv_spread;
        tl_vd w = tl_vexp(x - zn);
        acc[0] += w;
        for (int j = 1; j <= order; j++) {
            w *= z;
            acc[j] += w;
        }
    }
    if (tl_vsum(nn) != 0.0) return 0;
    for (int j = 0; j <= order; j++) sums[j] += tl_vsum(acc[j]);
    return 1;
}
#endif

void TL_SFX(tl_moments_chunk)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r, ptrdiff_t n,
                              const tl_phi_params *p, int order, double *sums) {
    double lb[TL_BLOCK], db[TL_BLOCK], w[TL_BLOCK], z[TL_BLOCK];
    const double lam = p->lam, c = p->c, zn = p->z, inv_scale = p->inv_scale;
    const double center = p->center, inv_spread = p->inv_spread;
    for (int j = 0; j <= order; j++) sums[j] = 0.0;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
#if TL_HAVE_VEC
        if (len == TL_BLOCK && TL_SFX(tl__moments_block)(l + j0, r + j0, p, order, sums))
            continue;
#endif
        for (ptrdiff_t i = 0; i < len; i++) {
            double li = (double)l[j0 + i];
            lb[i] = li;
            db[i] = li > -INFINITY ? (double)r[j0 + i] - c : 0.0;
        }
        for (ptrdiff_t i = len; i < TL_BLOCK; i++) {
            lb[i] = -INFINITY;
            db[i] = 0.0;
        }
        tl__tilted_block(lb, db, p->anchor, lam, w);
        for (int i = 0; i < TL_BLOCK; i++) {
            z[i] = (db[i] * inv_scale - center) * inv_spread;
            w[i] = tl_exp(w[i] - zn);
        }
        sums[0] += tl_block_sum(w);
        for (int j = 1; j <= order; j++) {
            for (int i = 0; i < TL_BLOCK; i++) w[i] *= z[i];
            sums[j] += tl_block_sum(w);
        }
    }
}
