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

ptrdiff_t TL_SFX(tl_prescan)(const TL_T *l, const TL_T *r, ptrdiff_t n, double lam,
                             double *r_lo, double *r_hi) {
    double lb[TL_BLOCK], rb[TL_BLOCK];
    ptrdiff_t best = -1;
    double lbest = 0.0, rbest = 0.0, h = -INFINITY, o = INFINITY;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        TL_PREFETCH_BLOCK(l + j0, n - j0);
        TL_PREFETCH_BLOCK(r + j0, n - j0);
        for (ptrdiff_t i = 0; i < len; i++) {
            lb[i] = (double)l[j0 + i];
            rb[i] = (double)r[j0 + i];
        }
        for (ptrdiff_t i = len; i < TL_BLOCK; i++) {
            lb[i] = -INFINITY;
            rb[i] = 0.0;
        }
        double m;
        int ambiguous = tl__prescan_block(lb, rb, lbest, rbest, lam, &h, &o, &m);
        /* nothing in the block beats the best so far (and no gain was ambiguous) */
        if (best >= 0 && !(m > 0.0) && !ambiguous) continue;
        for (ptrdiff_t i = 0; i < len; i++) {
            double v = lb[i], rv = rb[i];
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
    return best;
}

void TL_SFX(tl_tilt_chunk)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r, ptrdiff_t n,
                           const tl_tilt_row *row, int mode, tl_tilt_acc *acc) {
    double lb[TL_BLOCK], db[TL_BLOCK], ds[TL_BLOCK], xb[TL_BLOCK], wa[TL_BLOCK], wb[TL_BLOCK];
    double we[TL_BLOCK], ws[TL_BLOCK], wt[TL_BLOCK], wx[TL_BLOCK];
    const double lam = row->lam, c = row->c, lc = row->lc, inv_scale = row->inv_scale;
    tl__tilt_init(acc);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        double bm, dlo, dhi;
        int bad = TL_SFX(tl__scan_block)(l + j0, r + j0, len, n - j0, c, inv_scale, lb, db, ds,
                                         &bm, &dlo, &dhi);
        if (bad) {
            acc->flags |= bad;
            continue;
        }
        if (bm == -INFINITY) continue;
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
            continue;
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
    for (ptrdiff_t i = 0; i < n; i++) {
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

void TL_SFX(tl_moments_chunk)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r, ptrdiff_t n,
                              const tl_phi_params *p, int order, double *sums) {
    double lb[TL_BLOCK], db[TL_BLOCK], w[TL_BLOCK], z[TL_BLOCK];
    const double lam = p->lam, c = p->c, zn = p->z, inv_scale = p->inv_scale;
    const double center = p->center, inv_spread = p->inv_spread;
    for (int j = 0; j <= order; j++) sums[j] = 0.0;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
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
