/* Best-of-N draws in one pass over a row, templated on TL_T (tl_template.h; tl_bon.h). */

/* Pass 2: w[i] = e^(l_i - m) (tl_exp_det: the same bits on every variant), float32
 * rewards widened into rr, and (B > 0) the bin of each outcome's reward. */
TL_NOINLINE void TL_SFX(tl__draw_weights)(const TL_T *TL_RESTRICT l, const TL_T *TL_RESTRICT r,
                                          ptrdiff_t n, double m, int B, double hl,
                                          double scale, double *TL_RESTRICT w,
                                          double *TL_RESTRICT rr,
                                          uint16_t *TL_RESTRICT bins) {
    const double top = B > 0 ? (double)(B - 1) : 0.0;
#if TL_HAVE_VEC
    const tl_vd vm = tl_vset(m), vhl = tl_vset(hl), vsc = tl_vset(scale), vtop = tl_vset(top);
    const tl_vd zero = tl_vset(0.0), half = tl_vset(0.5);
    ptrdiff_t i = 0;
    for (; i + TL_VW <= n; i += TL_VW) {
        tl_vd rv = TL_VLOADT(r + i);
        tl_vstore(w + i, tl_vexp_det(TL_VLOADT(l + i) - vm));
        if (TL_T_IS_F32) tl_vstore(rr + i, rv);
        tl_vd f = (half * rv - vhl) * vsc;
        f = tl_vsel(f > zero, f, zero);
        f = tl_vsel(f < vtop, f, vtop);
        tl__vi32 b32 = __builtin_convertvector(f, tl__vi32);
        tl__vh b16 = __builtin_convertvector(b32, tl__vh);
        memcpy(bins + i, &b16, sizeof b16);
    }
    if (i < n) { /* the last outcomes through one padded lane group: the same values lane
                  * by lane (no scalar copy of the exponential) */
        double lt[TL_VW], rt[TL_VW];
        for (int t = 0; t < TL_VW; t++) {
            lt[t] = i + t < n ? (double)l[i + t] : -INFINITY;
            rt[t] = i + t < n ? (double)r[i + t] : 0.0;
        }
        tl_vd rv = tl_vload(rt), wv = tl_vexp_det(tl_vload(lt) - vm);
        tl_vd f = (half * rv - vhl) * vsc;
        f = tl_vsel(f > zero, f, zero);
        f = tl_vsel(f < vtop, f, vtop);
        tl__vi32 b32 = __builtin_convertvector(f, tl__vi32);
        tl__vh b16 = __builtin_convertvector(b32, tl__vh);
        for (int t = 0; i + t < n; t++) {
            w[i + t] = wv[t];
            if (TL_T_IS_F32) rr[i + t] = rv[t];
            bins[i + t] = b16[t];
        }
    }
#else
    for (ptrdiff_t i = 0; i < n; i++) {
        w[i] = tl_exp_det((double)l[i] - m);
        double rv = (double)r[i];
        if (TL_T_IS_F32) rr[i] = rv;
        if (B > 0) {
            double f = (0.5 * rv - hl) * scale;
            f = f > 0.0 ? f : 0.0;
            f = f < top ? f : top;
            bins[i] = (uint16_t)(int32_t)f;
        }
    }
#endif
}

ptrdiff_t TL_SFX(tl_bon_draw_row)(const TL_T *l, const TL_T *r, ptrdiff_t n, double log_n,
                                  const uint64_t *words, int nd, int64_t *out, void *scratch) {
    /* pass 1: the checks of tl_levels, the max and least finite logits, the support's
     * reward range (min and max: exact in any order) */
    int flags = 0;
    double m = -INFINITY, lmin = INFINITY, rlo = INFINITY, rhi = -INFINITY;
#if TL_HAVE_VEC
    {
        const tl_vd pinf = tl_vset(INFINITY), ninf = tl_vset(-INFINITY), big = tl_vset(DBL_MAX);
        tl_vd vm = ninf, vlmin = pinf, vrlo = pinf, vrhi = ninf;
        tl_vi bad_l = (tl_vi)tl_vset(0.0), bad_r = bad_l;
#define TL__DRAW_SCAN(li, ri)                                                               \
    do {                                                                                   \
        bad_l |= (li != li) | (li == pinf);                                                \
        bad_r |= ~(tl_vmax(ri, -ri) <= big);                                               \
        tl_vi fin = (li > ninf) & (li < pinf);                                             \
        vm = tl_vsel(fin & (li > vm), li, vm);                                             \
        vlmin = tl_vsel(fin & (li < vlmin), li, vlmin);                                    \
        vrlo = tl_vsel(fin & (ri < vrlo), ri, vrlo);                                       \
        vrhi = tl_vsel(fin & (ri > vrhi), ri, vrhi);                                       \
    } while (0)
        ptrdiff_t i = 0;
        for (; i + TL_VW <= n; i += TL_VW) {
            tl_vd li = TL_VLOADT(l + i), ri = TL_VLOADT(r + i);
            TL__DRAW_SCAN(li, ri);
        }
        if (i < n) { /* the tail, padded with impossible outcomes of reward 0 */
            double lt[TL_VW], rt[TL_VW];
            for (int t = 0; t < TL_VW; t++) {
                lt[t] = i + t < n ? (double)l[i + t] : -INFINITY;
                rt[t] = i + t < n ? (double)r[i + t] : 0.0;
            }
            tl_vd li = tl_vload(lt), ri = tl_vload(rt);
            TL__DRAW_SCAN(li, ri);
        }
#undef TL__DRAW_SCAN
        for (int k = 0; k < TL_VW; k++) {
            if (bad_l[k]) flags |= TL_FLAG_BAD_LOGIT;
            if (bad_r[k]) flags |= TL_FLAG_BAD_REWARD;
            m = vm[k] > m ? vm[k] : m;
            lmin = vlmin[k] < lmin ? vlmin[k] : lmin;
            rlo = vrlo[k] < rlo ? vrlo[k] : rlo;
            rhi = vrhi[k] > rhi ? vrhi[k] : rhi;
        }
    }
#else
    for (ptrdiff_t i = 0; i < n; i++) {
        double li = (double)l[i], ri = (double)r[i];
        if (li != li || li == INFINITY) flags |= TL_FLAG_BAD_LOGIT;
        if (!(fabs(ri) <= DBL_MAX)) flags |= TL_FLAG_BAD_REWARD;
        if (li > -INFINITY && li < INFINITY) {
            m = li > m ? li : m;
            lmin = li < lmin ? li : lmin;
            rlo = ri < rlo ? ri : rlo;
            rhi = ri > rhi ? ri : rhi;
        }
    }
#endif
    if (flags) return flags;
    if (m == -INFINITY) return TL_FLAG_EMPTY_ROW;
    /* weights below e^-708 are 0 here: beyond N = e^600 they could matter */
    if (log_n > TL_DRAW_LOG_N_EXACT && !(lmin - m >= TL_DET_LO)) return TL_DRAW_EXACT;
    if (nd <= 0) return 0;

    tl_bon_draw_ws ws;
    tl_bon_draw_ws_layout((char *)scratch, n, &ws);
    /* the row's bins (only where they will be used) */
    const int B = tl__draw_nbins(n);
    const double hl = 0.5 * rlo, scale = (double)B / (0.5 * rhi - hl);
    const int use_bins = rlo < rhi && n > TL_DRAW_SMALL && scale <= DBL_MAX;
    TL_SFX(tl__draw_weights)(l, r, n, m, use_bins ? B : 0, use_bins ? hl : 0.0,
                             use_bins ? scale : 0.0, ws.w, ws.rr, ws.bins);
#if TL_T_IS_F32
    const double *R = ws.rr;
#else
    const double *R = r;
#endif
    tl_bon_draw_select(&ws, R, n, rlo == rhi, use_bins ? B : 0, log_n, words, nd, out);
    return 0;
}
