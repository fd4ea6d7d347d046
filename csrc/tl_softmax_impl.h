/* Softmax / log-softmax kernels, templated on TL_T (see tl_template.h and tl_softmax.h).
 * The arithmetic is in double lanes for both input types (float32: the terms are written
 * as floats by pass 1 and rescaled in double by pass 2, so a float32 result is within
 * about one float32 ulp of the exact softmax of the float32 inputs; the float32 terms use
 * the cheaper tl__sm_vterm32 and the float32 scan runs in float lanes). */

#if TL_HAVE_VEC
#if !TL_T_IS_F32
/* the helpers that do not depend on TL_T: once per file */
/* e^(v - m) with the rounding error lo of d = v - m carried in (two-sum; e^(d + lo) =
 * e^d + e^d lo); v = -inf gives 0.  exp: tl_vexp (subnormal results rounded once). */
TL_VINLINE tl_vd tl__sm_vterm(tl_vd v, tl_vd nm) {
    tl_vd d = v + nm, bp = d - v, ap = d - bp;
    tl_vd lo = (v - ap) + (nm - bp);
    lo = tl_vsel(lo == lo, lo, tl_vset(0.0));
    tl_vd e = tl_vexp(d);
    return tl_vfma(e, lo, e);
}

/* the same with the summation exponential tl_vexp_w (0 below e^-708: a term of a sum that
 * holds a 1) */
TL_VINLINE tl_vd tl__sm_vexpc(tl_vd xc);
TL_VINLINE tl_vd tl__sm_vterm_w(tl_vd v, tl_vd nm) {
    const tl_vd lo708 = tl_vset(-708.0);
    tl_vd d = v + nm, bp = d - v, ap = d - bp;
    tl_vd lo = (v - ap) + (nm - bp); /* NaN for v = -inf: that lane is masked below */
    tl_vi under = d < lo708;
    tl_vd e = tl__sm_vexpc(tl_vsel(under, lo708, d));
    return (tl_vd)(~under & (tl_vi)tl_vfma(e, lo, e));
}

/* e^x for -708 <= x <= 1 (the caller clamps): the exponential of tl_vexp_w without its
 * flush (bitwise tl_vexp wherever the result is normal: scaling by a power of two is exact) */
TL_VINLINE tl_vd tl__sm_vexpc(tl_vd xc) {
    tl_vd t, kd, r = tl__vreduce(xc, &t, &kd);
    tl_vd s = tl_vpow2_shifted(t);
    tl_vd r2 = r * r;
    tl_vd p = tl_vfma(r2, tl_vexpm1_q(r, r2), r);
    return tl_vfma(s, p, s);
}

/* The fast float64 term: tl__sm_vterm wherever e^(v - m) is normal (d >= -708) or 0
 * (d <= -746: v = -inf included); *band collects the lanes in between, whose subnormal
 * results the caller recomputes with tl__sm_vterm.  lo may be NaN (v = -inf): the lane is
 * masked to 0 after the product. */
TL_VINLINE tl_vd tl__sm_vterm_f(tl_vd v, tl_vd nm, tl_vi *band) {
    const tl_vd lo708 = tl_vset(-708.0), lo746 = tl_vset(-746.0);
    tl_vd d = v + nm, bp = d - v, ap = d - bp;
    tl_vd lo = (v - ap) + (nm - bp);
    tl_vi under = d < lo708;
    *band |= under & (d > lo746);
    tl_vd e = tl__sm_vexpc(tl_vsel(under, lo708, d));
    return (tl_vd)(~under & (tl_vi)tl_vfma(e, lo, e));
}

/* The float32 term: e^(v - m) in double with a degree-9 Taylor polynomial (relative error
 * below 1e-11, far below a float32 ulp), 0 below e^-708 (a float32 softmax is 0 there: the
 * rescale factor is <= 1 and the sum >= 1).  No two-sum: the error of the rounded
 * difference of two floats changes e^d by at most |d| 2^-53 relative, below 2^-30 wherever
 * e^d is not 0, and the term stays a function of v - m (shift-invariant). */
TL_VINLINE tl_vd tl__sm_vterm32(tl_vd v, tl_vd nm) {
    const tl_vd lo708 = tl_vset(-708.0);
    tl_vd d = v + nm;
    tl_vi under = d < lo708;
    tl_vd t, kd, r = tl__vreduce(tl_vsel(under, lo708, d), &t, &kd);
    tl_vd s = tl_vpow2_shifted(t);
    tl_vd r2 = r * r, r4 = r2 * r2;
    tl_vd p01 = tl_vfma(r, tl_vset(1.6666666666666666e-01), tl_vset(0.5));
    tl_vd p23 = tl_vfma(r, tl_vset(8.333333333333333e-03), tl_vset(4.1666666666666664e-02));
    tl_vd p45 = tl_vfma(r, tl_vset(1.984126984126984e-04), tl_vset(1.388888888888889e-03));
    tl_vd p67 = tl_vfma(r, tl_vset(2.755731922398589e-06), tl_vset(2.48015873015873e-05));
    tl_vd q = tl_vfma(r4, tl_vfma(r2, p67, p45), tl_vfma(r2, p23, p01));
    tl_vd e = tl_vfma(s, tl_vfma(r2, q, r), s);
    return (tl_vd)(~under & (tl_vi)e);
}
#endif

#undef TL_SM_VTERM_W /* this header is included once per input type */
#if TL_T_IS_F32
#define TL_SM_VTERM_W(v, nm) tl__sm_vterm32(v, nm)
#else
#define TL_SM_VTERM_W(v, nm) tl__sm_vterm_w(v, nm)
#endif

TL_VINLINE void TL_SFX(tl__sm_vstore)(TL_T *p, tl_vd v) {
#if TL_T_IS_F32
    tl_vf f = __builtin_convertvector(v, tl_vf);
    memcpy(p, &f, sizeof f);
#else
    tl_vstore(p, v);
#endif
}

/* One block read in place: *mx = its maximum (NaN ignored); nonzero if some entry is NaN.
 * float32: in float lanes (2 TL_VW a vector; the maximum of floats is a float). */
#if TL_T_IS_F32
TL_NOINLINE int TL_SFX(tl__sm_scan)(const TL_T *TL_RESTRICT x, double *mx) {
    tl_vf2 s0, s1, v0, v1;
    tl_vi2 nn = {0};
    for (int k = 0; k < 2 * TL_VW; k++) s0[k] = -INFINITY;
    s1 = s0;
    for (int i = 0; i < TL_BLOCK; i += 4 * TL_VW) {
        memcpy(&v0, x + i, sizeof v0);
        memcpy(&v1, x + i + 2 * TL_VW, sizeof v1);
        tl_vi2 g0 = v0 > s0, g1 = v1 > s1;
        s0 = (tl_vf2)((g0 & (tl_vi2)v0) | (~g0 & (tl_vi2)s0));
        s1 = (tl_vf2)((g1 & (tl_vi2)v1) | (~g1 & (tl_vi2)s1));
        nn |= (v0 != v0) | (v1 != v1);
    }
    float m = -INFINITY;
    int nan = 0;
    for (int k = 0; k < 2 * TL_VW; k++) {
        m = s0[k] > m ? s0[k] : m;
        m = s1[k] > m ? s1[k] : m;
        nan |= nn[k] != 0;
    }
    *mx = m;
    return nan;
}
#else
TL_NOINLINE int TL_SFX(tl__sm_scan)(const TL_T *TL_RESTRICT x, double *mx) {
    tl_vd s0 = tl_vset(-INFINITY), s1 = s0, nn = tl_vset(0.0);
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd v0 = TL_VLOADT(x + i), v1 = TL_VLOADT(x + i + TL_VW);
        s0 = tl_vmax(v0, s0);
        s1 = tl_vmax(v1, s1);
        nn += tl_vmask01(v0 != v0) + tl_vmask01(v1 != v1);
    }
    *mx = tl_vhmax(tl_vmax(s0, s1));
    return tl_vsum(nn) != 0.0;
}
#endif

/* softmax pass 1 on a block: out = e^(x - m); *rest += the terms below m, *count += the
 * entries equal to m.  float64: the fast terms first; a block with a subnormal term is
 * redone with the exact ones (the same results wherever the fast term is normal or 0). */
#if !TL_T_IS_F32
TL_NOINLINE void TL_SFX(tl__sm_terms_exact)(const TL_T *TL_RESTRICT x, double m,
                                            TL_T *TL_RESTRICT out, double *rest,
                                            double *count) {
    tl_vd w0 = tl_vset(0.0), w1 = w0, c = w0;
    const tl_vd mv = tl_vset(m), nm = tl_vset(-m);
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd v0 = TL_VLOADT(x + i), v1 = TL_VLOADT(x + i + TL_VW);
        tl_vd e0 = tl__sm_vterm(v0, nm), e1 = tl__sm_vterm(v1, nm);
        TL_SFX(tl__sm_vstore)(out + i, e0);
        TL_SFX(tl__sm_vstore)(out + i + TL_VW, e1);
        tl_vi t0 = v0 == mv, t1 = v1 == mv;
        w0 += (tl_vd)(~t0 & (tl_vi)e0);
        w1 += (tl_vd)(~t1 & (tl_vi)e1);
        c += tl_vmask01(t0) + tl_vmask01(t1);
    }
    *rest += tl_vsum(w0) + tl_vsum(w1);
    *count += tl_vsum(c);
}
#endif

TL_NOINLINE void TL_SFX(tl__sm_terms)(const TL_T *TL_RESTRICT x, double m,
                                      TL_T *TL_RESTRICT out, double *rest, double *count) {
    tl_vd w0 = tl_vset(0.0), w1 = w0, c = w0;
    const tl_vd mv = tl_vset(m), nm = tl_vset(-m);
#if !TL_T_IS_F32
    tl_vi band = (tl_vi)w0;
#endif
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd v0 = TL_VLOADT(x + i), v1 = TL_VLOADT(x + i + TL_VW);
#if TL_T_IS_F32
        tl_vd e0 = tl__sm_vterm32(v0, nm), e1 = tl__sm_vterm32(v1, nm);
#else
        tl_vd e0 = tl__sm_vterm_f(v0, nm, &band), e1 = tl__sm_vterm_f(v1, nm, &band);
#endif
        TL_SFX(tl__sm_vstore)(out + i, e0);
        TL_SFX(tl__sm_vstore)(out + i + TL_VW, e1);
        tl_vi t0 = v0 == mv, t1 = v1 == mv;
        w0 += (tl_vd)(~t0 & (tl_vi)e0);
        w1 += (tl_vd)(~t1 & (tl_vi)e1);
        c += tl_vmask01(t0) + tl_vmask01(t1);
    }
#if !TL_T_IS_F32
    if (tl_vsum(tl_vmask01(band)) != 0.0) {
        TL_SFX(tl__sm_terms_exact)(x, m, out, rest, count);
        return;
    }
#endif
    *rest += tl_vsum(w0) + tl_vsum(w1);
    *count += tl_vsum(c);
}

/* log_softmax pass 1 on a block: the sums only */
TL_NOINLINE void TL_SFX(tl__sm_sums)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                     double *count) {
    tl_vd w0 = tl_vset(0.0), w1 = w0, c = w0;
    const tl_vd mv = tl_vset(m), nm = tl_vset(-m);
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd v0 = TL_VLOADT(x + i), v1 = TL_VLOADT(x + i + TL_VW);
        tl_vd e0 = TL_SM_VTERM_W(v0, nm), e1 = TL_SM_VTERM_W(v1, nm);
        tl_vi t0 = v0 == mv, t1 = v1 == mv;
        w0 += (tl_vd)(~t0 & (tl_vi)e0);
        w1 += (tl_vd)(~t1 & (tl_vi)e1);
        c += tl_vmask01(t0) + tl_vmask01(t1);
    }
    *rest += tl_vsum(w0) + tl_vsum(w1);
    *count += tl_vsum(c);
}

/* softmax pass 2 on a block: out = out * g (g = f / s, the block's factor) */
TL_NOINLINE void TL_SFX(tl__sm_rescale)(TL_T *TL_RESTRICT out, double g) {
    const tl_vd gv = tl_vset(g);
    for (int i = 0; i < TL_BLOCK; i += TL_VW) {
        tl_vd e = TL_VLOADT(out + i);
        TL_SFX(tl__sm_vstore)(out + i, e * gv);
    }
}

/* log_softmax pass 2 on a block: out = (x - m) - l */
TL_NOINLINE void TL_SFX(tl__sm_logw)(const TL_T *TL_RESTRICT x, TL_T *TL_RESTRICT out,
                                     double m, double l) {
    const tl_vd mv = tl_vset(m), lv = tl_vset(l);
    for (int i = 0; i < TL_BLOCK; i += TL_VW)
        TL_SFX(tl__sm_vstore)(out + i, (TL_VLOADT(x + i) - mv) - lv);
}
#else /* no vector extensions: the same arithmetic element by element */
TL_NOINLINE int TL_SFX(tl__sm_scan)(const TL_T *TL_RESTRICT x, double *mx) {
    double m = -INFINITY;
    int nan = 0;
    for (int i = 0; i < TL_BLOCK; i++) {
        double v = (double)x[i];
        m = v > m ? v : m;
        nan |= v != v;
    }
    *mx = m;
    return nan;
}

static double TL_SFX(tl__sm_term)(double v, double m, int w) {
    double d = v - m, bp = d - v, ap = d - bp;
    double lo = (v - ap) + (-m - bp);
    if (lo != lo) lo = 0.0;
    double e = w ? tl_exp_w(d) : tl_exp(d);
    return e + e * lo;
}

TL_NOINLINE void TL_SFX(tl__sm_terms)(const TL_T *TL_RESTRICT x, double m,
                                      TL_T *TL_RESTRICT out, double *rest, double *count) {
    double w = 0.0, c = 0.0;
    for (int i = 0; i < TL_BLOCK; i++) {
        double v = (double)x[i], e = TL_SFX(tl__sm_term)(v, m, 0);
        out[i] = (TL_T)e;
        if (v == m) c += 1.0; else w += e;
    }
    *rest += w;
    *count += c;
}

TL_NOINLINE void TL_SFX(tl__sm_sums)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                     double *count) {
    double w = 0.0, c = 0.0;
    for (int i = 0; i < TL_BLOCK; i++) {
        double v = (double)x[i];
        if (v == m) c += 1.0; else w += TL_SFX(tl__sm_term)(v, m, 1);
    }
    *rest += w;
    *count += c;
}

TL_NOINLINE void TL_SFX(tl__sm_rescale)(TL_T *TL_RESTRICT out, double g) {
    for (int i = 0; i < TL_BLOCK; i++) out[i] = (TL_T)((double)out[i] * g);
}

TL_NOINLINE void TL_SFX(tl__sm_logw)(const TL_T *TL_RESTRICT x, TL_T *TL_RESTRICT out,
                                     double m, double l) {
    for (int i = 0; i < TL_BLOCK; i++) out[i] = (TL_T)(((double)x[i] - m) - l);
}
#endif /* TL_HAVE_VEC */

#ifndef TL_SM_AHEAD
#define TL_SM_AHEAD 4
#endif
void TL_SFX(tl_softmax_chunk)(const TL_T *TL_RESTRICT x, ptrdiff_t n, TL_T *TL_RESTRICT out,
                              tl_sm_acc *acc) {
    TL_T pad[TL_BLOCK], pad_out[TL_BLOCK];
    acc->m = -INFINITY;
    acc->count = 0.0;
    acc->rest = 0.0;
    acc->flags = 0;
    for (ptrdiff_t j0 = 0, b = 0; j0 < n; j0 += TL_BLOCK, b++) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        const TL_T *xp = x + j0;
        TL_T *op = out != NULL ? out + j0 : NULL;
#if defined(__GNUC__) || defined(__clang__)
        /* the block TL_SM_AHEAD blocks on into L1 and L2 (pass 2 reads the row again):
         * its DRAM read overlaps this block's arithmetic */
        if (n - j0 > (TL_SM_AHEAD + 1) * TL_BLOCK) {
            const char *pf = (const char *)(xp + TL_SM_AHEAD * TL_BLOCK);
            for (size_t o = 0; o < TL_BLOCK * sizeof(TL_T); o += 64) __builtin_prefetch(pf + o, 0, 3);
        }
#endif
        if (len < TL_BLOCK) { /* the tail, padded with -inf */
            for (ptrdiff_t i = 0; i < TL_BLOCK; i++) pad[i] = i < len ? xp[i] : (TL_T)-INFINITY;
            xp = pad;
            if (op != NULL) op = pad_out;
        }
        double bm;
        if (TL_SFX(tl__sm_scan)(xp, &bm)) acc->flags |= TL_SM_NAN;
        if (bm == INFINITY) acc->flags |= TL_SM_POSINF;
        acc->ref[b] = -INFINITY;
        if (acc->flags) continue; /* the row's result is decided: no arithmetic */
        if (bm > acc->m) {
            acc->rest = (acc->rest + acc->count) * tl__sm_factor(acc->m, bm);
            acc->count = 0.0;
            acc->m = bm;
        }
        acc->ref[b] = acc->m;
        if (acc->m == -INFINITY) { /* nothing but -inf so far: terms 0 */
            if (op != NULL)
                for (ptrdiff_t i = 0; i < TL_BLOCK; i++) op[i] = 0;
        } else if (op != NULL) {
            TL_SFX(tl__sm_terms)(xp, acc->m, op, &acc->rest, &acc->count);
        } else {
            TL_SFX(tl__sm_sums)(xp, acc->m, &acc->rest, &acc->count);
        }
        if (op == pad_out)
            for (ptrdiff_t i = 0; i < len; i++) out[j0 + i] = pad_out[i];
    }
}

void TL_SFX(tl_softmax_scale)(TL_T *TL_RESTRICT out, ptrdiff_t n, const tl_sm_acc *chunk,
                              const tl_sm_acc *row) {
    if (row->flags || row->m == -INFINITY) {
        for (ptrdiff_t i = 0; i < n; i++) out[i] = (TL_T)NAN;
        return;
    }
    const double s = row->count + row->rest;
    for (ptrdiff_t j0 = 0, b = 0; j0 < n; j0 += TL_BLOCK, b++) {
        double g = tl__sm_factor(chunk->ref[b], row->m) / s;
        if (n - j0 >= TL_BLOCK) {
            TL_SFX(tl__sm_rescale)(out + j0, g);
        } else {
            for (ptrdiff_t i = j0; i < n; i++) out[i] = (TL_T)((double)out[i] * g);
        }
    }
}

void TL_SFX(tl_log_softmax_write)(const TL_T *TL_RESTRICT x, ptrdiff_t n, TL_T *TL_RESTRICT out,
                                  const tl_sm_acc *row) {
    if ((row->flags & TL_SM_NAN) || (!row->flags && row->m == -INFINITY)) {
        for (ptrdiff_t i = 0; i < n; i++) out[i] = (TL_T)NAN;
        return;
    }
    if (row->flags & TL_SM_POSINF) { /* x - inf */
        for (ptrdiff_t i = 0; i < n; i++) out[i] = x[i] == INFINITY ? (TL_T)NAN : (TL_T)-INFINITY;
        return;
    }
    const double m = row->m, l = log1p((row->count - 1.0) + row->rest);
    ptrdiff_t j0 = 0;
    for (; j0 + TL_BLOCK <= n; j0 += TL_BLOCK) TL_SFX(tl__sm_logw)(x + j0, out + j0, m, l);
    for (ptrdiff_t i = j0; i < n; i++) out[i] = (TL_T)(((double)x[i] - m) - l);
}
