/* KL(p || q) chunk kernel, templated on TL_T (see tl_template.h and tl_kl.h). */

void TL_SFX(tl_kl_shift)(const TL_T *lp, const TL_T *lq, ptrdiff_t n, double *p_ref,
                         double *q_ref) {
    ptrdiff_t best = -1, j0 = 0;
    double bp = -INFINITY;
#if TL_HAVE_VEC
    /* the largest finite logit by blocks in vector lanes, then its first position */
    {
        const tl_vd ninf = tl_vset(-INFINITY), big = tl_vset(DBL_MAX);
        ptrdiff_t bblock = -1;
        for (; j0 + TL_BLOCK <= n; j0 += TL_BLOCK) {
            tl_vd m = ninf;
            for (int i = 0; i < TL_BLOCK; i += TL_VW) {
                tl_vd a = TL_VLOADT(lp + j0 + i);
                m = tl_vmax(tl_vsel(a <= big, a, ninf), m); /* finite (NaN, +inf never win) */
            }
            double bm = tl_vhmax(m);
            if (bm > bp) {
                bp = bm;
                bblock = j0;
            }
        }
        if (bblock >= 0)
            for (ptrdiff_t i = bblock; i < bblock + TL_BLOCK; i++)
                if ((double)lp[i] == bp) {
                    best = i;
                    break;
                }
    }
#endif
    for (ptrdiff_t i = j0; i < n; i++) {
        double a = (double)lp[i];
        if (a > bp && a <= DBL_MAX) { /* finite, first maximum; NaN never wins */
            bp = a;
            best = i;
        }
    }
    if (best < 0) {
        *p_ref = *q_ref = 0.0;
        return;
    }
    double b = (double)lq[best];
    *p_ref = bp;
    *q_ref = fabs(b) <= DBL_MAX ? b : 0.0;
}

#if TL_HAVE_VEC
/* The fast path of one full block in vector lanes (product and KL modes), with the fixed
 * reference mp = p_max - p_ref for the weights of p.  Sends the block to the general path
 * (returns 0, sums untouched) on anything but the plain case: a bad logit, q = 0 < p,
 * mass of q outside the support of p, no support of p, or a p logit above p_max.
 * out: sum a, sum a d, the mode's two sums, max and min of d over the support, q seen. */
TL_NOINLINE int TL_SFX(tl__kl_fast_block)(const TL_T *TL_RESTRICT lp, const TL_T *TL_RESTRICT lq,
                                          double p_ref, double q_ref, double mp, double c,
                                          double ltot, int mode, double *TL_RESTRICT out) {
    const tl_vd ninf = tl_vset(-INFINITY), pinf = tl_vset(INFINITY), zero = tl_vset(0.0);
    const tl_vd vpref = tl_vset(p_ref), vqref = tl_vset(q_ref), vmp = tl_vset(mp);
    const tl_vd vc = tl_vset(c), vltot = tl_vset(ltot);
    tl_vd bad = zero, qseen = zero, dhi = ninf, dlo = pinf, bpm = ninf;
    tl_vd sa = zero, sd = zero, s1 = zero, s2 = zero;
    for (int i = 0; i < TL_BLOCK; i += TL_VW) {
        tl_vd x = TL_VLOADT(lp + i), y = TL_VLOADT(lq + i);
        tl_vi inp = x > ninf, inq = y > ninf;
        bad += tl_vmask01((x != x) | (x == pinf) | (y != y) | (y == pinf) | (inp & ~inq) |
                          (~inp & inq));
        qseen += tl_vmask01(inq);
        tl_vd pb = tl_vsel(inp, x - vpref, ninf);
        tl_vd d = tl_vsel(inp, ((y - vqref) - (x - vpref)) - vc, zero);
        dhi = tl_vmax(tl_vsel(inp, d, ninf), dhi);
        dlo = tl_vmin(tl_vsel(inp, d, pinf), dlo);
        bpm = tl_vmax(pb, bpm);
        tl_vd a = tl_vexp(pb - vmp), e, em, emx;
        sa += a;
        if (mode == TL_MODE_PRODUCT) {
            tl_vexp3(d, &e, &em, &emx);
            s1 += a * em;
            s2 += a * e;
            sd += a * d;
        } else {
            tl_vexp3(d - vltot, &e, &em, &emx);
            s1 += a * emx;
        }
    }
    double b = tl_vhmax(bpm);
    if (tl_vsum(bad) != 0.0 || !(b > -INFINITY) || b > mp) return 0;
    out[0] = tl_vsum(sa);
    out[1] = tl_vsum(sd);
    out[2] = tl_vsum(s1);
    out[3] = tl_vsum(s2);
    out[4] = tl_vhmax(dhi);
    out[5] = tl_vhmin(dlo);
    out[6] = tl_vsum(qseen);
    return 1;
}
#endif

void TL_SFX(tl_kl_chunk)(const TL_T *TL_RESTRICT lp, const TL_T *TL_RESTRICT lq, ptrdiff_t n,
                         double p_ref, double q_ref, double p_max, double c, double ltot,
                         int mode, tl_kl_acc *acc) {
#if !TL_HAVE_VEC
    (void)p_max; /* the fast path's reference */
#endif
    double pb[TL_BLOCK], qb[TL_BLOCK], db[TL_BLOCK], ob[TL_BLOCK];
    double wa[TL_BLOCK], we[TL_BLOCK], wi[TL_BLOCK], hi[TL_BLOCK], lo[TL_BLOCK];
    tl__kl_init(acc);
#if TL_HAVE_VEC
    const double mp_fixed = p_max - p_ref;
    double fs[7];
    const int fast = mode != TL_MODE_STANDARD && mp_fixed > -INFINITY && mp_fixed <= DBL_MAX;
#endif
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
#if TL_HAVE_VEC
        if (fast && len == TL_BLOCK && !(acc->flags & TL_FLAG_INF_KL) &&
            TL_SFX(tl__kl_fast_block)(lp + j0, lq + j0, p_ref, q_ref, mp_fixed, c, ltot, mode,
                                      fs)) {
            if (fs[6] != 0.0) acc->flags |= TL__FLAG_Q_SEEN;
            acc->d_hi = fs[4] > acc->d_hi ? fs[4] : acc->d_hi;
            acc->d_lo = fs[5] < acc->d_lo ? fs[5] : acc->d_lo;
            if (mp_fixed > acc->m_p) { /* (earlier general blocks had a smaller maximum) */
                double f = tl_rescale(acc->m_p, mp_fixed);
                acc->s_p *= f;
                acc->e *= f;
                acc->s_in *= f;
                acc->m_p = mp_fixed;
            }
            if (mode == TL_MODE_KL) {
                acc->s_p += fs[0];
                acc->e += fs[2];
                continue;
            }
            acc->e += fs[2];
            acc->s_in += fs[3];
            if (fs[0] > 0.0) {
                double s = acc->s_p + fs[0];
                acc->mu += (fs[1] / fs[0] - acc->mu) * (fs[0] / s);
                acc->s_p = s;
            }
            continue;
        }
#endif
        int bad_p = 0, bad_q = 0, inf_kl = 0, any_out = 0, q_seen = 0;
        for (ptrdiff_t i = 0; i < len; i++) {
            double a = (double)lp[j0 + i], b = (double)lq[j0 + i];
            bad_p |= (a != a) | (a == INFINITY);
            bad_q |= (b != b) | (b == INFINITY);
            int in_p = a > -INFINITY, in_q = b > -INFINITY;
            inf_kl |= in_p & (!in_q);
            any_out |= (!in_p) & in_q;
            q_seen |= in_q;
            /* shifted logits (support and flags are decided on the raw values above) */
            pb[i] = in_p ? a - p_ref : -INFINITY;
            qb[i] = in_q ? b - q_ref : -INFINITY;
        }
        for (ptrdiff_t i = len; i < TL_BLOCK; i++) {
            pb[i] = -INFINITY;
            qb[i] = -INFINITY;
        }
        if (bad_p | bad_q) {
            acc->flags |= (bad_p ? TL_FLAG_BAD_LOGIT : 0) | (bad_q ? TL_FLAG_BAD_LOGIT_Q : 0);
            continue;
        }
        if (q_seen) acc->flags |= TL__FLAG_Q_SEEN;
        if (inf_kl) acc->flags |= TL_FLAG_INF_KL;
        if (acc->flags & TL_FLAG_INF_KL) continue; /* the value is +inf */
        for (int i = 0; i < TL_BLOCK; i++) {
            int sup = pb[i] > -INFINITY;
            double d = sup ? (qb[i] - pb[i]) - c : 0.0;
            db[i] = d;
            hi[i] = sup ? d : -INFINITY;
            lo[i] = sup ? -d : -INFINITY;
            ob[i] = sup ? -INFINITY : qb[i];
        }
        double dhi = tl_block_max(hi), dlo = -tl_block_max(lo);
        acc->d_hi = dhi > acc->d_hi ? dhi : acc->d_hi;
        acc->d_lo = dlo < acc->d_lo ? dlo : acc->d_lo;
        double bp = tl_block_max(pb);
        if (bp > acc->m_p) {
            double f = tl_rescale(acc->m_p, bp);
            acc->s_p *= f;
            acc->e *= f;
            acc->s_in *= f;
            acc->m_p = bp;
        }
        const double mp = acc->m_p;
        const int have_p = mp > -INFINITY; /* no support of p so far: no weights yet */
        if (mode == TL_MODE_KL) {
            if (!have_p) continue;
            for (int i = 0; i < TL_BLOCK; i++) {
                wa[i] = tl_exp(pb[i] - mp);
                we[i] = wa[i] > 0.0 ? wa[i] * tl_expm1_minus_x(db[i] - ltot) : 0.0;
            }
            acc->s_p += tl_block_sum(wa);
            acc->e += tl_block_sum(we);
            continue;
        }
        if (mode == TL_MODE_PRODUCT) {
            if (have_p) {
                for (int i = 0; i < TL_BLOCK; i++) {
                    double a = tl_exp(pb[i] - mp), e, em;
                    tl_exp_expm1(db[i], &e, &em);
                    wa[i] = a;
                    we[i] = a * em;
                    wi[i] = a * e;
                }
                acc->e += tl_block_sum(we);
                acc->s_in += tl_block_sum(wi);
            }
            if (any_out) {
                double bo = tl_block_max(ob);
                if (bo > acc->m_o) {
                    acc->s_o *= tl_rescale(acc->m_o, bo);
                    acc->m_o = bo;
                }
                const double mo = acc->m_o;
                for (int i = 0; i < TL_BLOCK; i++) we[i] = tl_exp(ob[i] - mo);
                acc->s_o += tl_block_sum(we);
            }
        } else {
            double bq = tl_block_max(qb);
            if (bq > acc->m_q) {
                acc->s_q *= tl_rescale(acc->m_q, bq);
                acc->m_q = bq;
            }
            const double mq = acc->m_q;
            if (mq > -INFINITY) { /* no q support so far: nothing to add (no -inf - -inf) */
                for (int i = 0; i < TL_BLOCK; i++) we[i] = tl_exp(qb[i] - mq);
                acc->s_q += tl_block_sum(we);
            }
            if (have_p)
                for (int i = 0; i < TL_BLOCK; i++) wa[i] = tl_exp(pb[i] - mp);
        }
        if (!have_p) continue;
        double sa = tl_block_sum(wa);
        if (sa > 0.0) {
            /* weights that underflowed to 0 must not meet an overflowed d (0 * inf) */
            for (int i = 0; i < TL_BLOCK; i++) we[i] = wa[i] > 0.0 ? wa[i] * db[i] : 0.0;
            double nu = tl_block_sum(we) / sa;
            double s = acc->s_p + sa;
            acc->mu += (nu - acc->mu) * (sa / s);
            acc->s_p = s;
        }
    }
}
