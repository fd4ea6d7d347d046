/* Softmax / log-softmax kernels, templated on TL_T (see tl_template.h and tl_softmax.h).
 * The arithmetic is in double lanes for both input types (float32: the terms are written
 * as floats by pass 1 and rescaled in double by pass 2, so a float32 result is within
 * about one float32 ulp of the exact softmax of the float32 inputs). */

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
TL_VINLINE tl_vd tl__sm_vterm_w(tl_vd v, tl_vd nm) {
    tl_vd d = v + nm, bp = d - v, ap = d - bp;
    tl_vd lo = (v - ap) + (nm - bp);
    lo = tl_vsel(lo == lo, lo, tl_vset(0.0));
    tl_vd e = tl_vexp_w(d);
    return tl_vfma(e, lo, e);
}
#endif

TL_VINLINE void TL_SFX(tl__sm_vstore)(TL_T *p, tl_vd v) {
#if TL_T_IS_F32
    tl_vf f = __builtin_convertvector(v, tl_vf);
    memcpy(p, &f, sizeof f);
#else
    tl_vstore(p, v);
#endif
}

/* One block read in place: *mx = its maximum (NaN ignored); nonzero if some entry is NaN. */
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

/* softmax pass 1 on a block: out = e^(x - m); *rest += the terms below m, *count += the
 * entries equal to m */
TL_NOINLINE void TL_SFX(tl__sm_terms)(const TL_T *TL_RESTRICT x, double m,
                                      TL_T *TL_RESTRICT out, double *rest, double *count) {
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

/* log_softmax pass 1 on a block: the sums only */
TL_NOINLINE void TL_SFX(tl__sm_sums)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                     double *count) {
    tl_vd w0 = tl_vset(0.0), w1 = w0, c = w0;
    const tl_vd mv = tl_vset(m), nm = tl_vset(-m);
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd v0 = TL_VLOADT(x + i), v1 = TL_VLOADT(x + i + TL_VW);
        tl_vd e0 = tl__sm_vterm_w(v0, nm), e1 = tl__sm_vterm_w(v1, nm);
        tl_vi t0 = v0 == mv, t1 = v1 == mv;
        w0 += (tl_vd)(~t0 & (tl_vi)e0);
        w1 += (tl_vd)(~t1 & (tl_vi)e1);
        c += tl_vmask01(t0) + tl_vmask01(t1);
    }
    *rest += tl_vsum(w0) + tl_vsum(w1);
    *count += tl_vsum(c);
}

/* softmax pass 2 on a block: out = (out * f) / s */
TL_NOINLINE void TL_SFX(tl__sm_rescale)(TL_T *TL_RESTRICT out, double f, double s) {
    const tl_vd fv = tl_vset(f), sv = tl_vset(s);
    for (int i = 0; i < TL_BLOCK; i += TL_VW) {
        tl_vd e = TL_VLOADT(out + i);
        TL_SFX(tl__sm_vstore)(out + i, (e * fv) / sv);
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

TL_NOINLINE void TL_SFX(tl__sm_rescale)(TL_T *TL_RESTRICT out, double f, double s) {
    for (int i = 0; i < TL_BLOCK; i++) out[i] = (TL_T)(((double)out[i] * f) / s);
}

TL_NOINLINE void TL_SFX(tl__sm_logw)(const TL_T *TL_RESTRICT x, TL_T *TL_RESTRICT out,
                                     double m, double l) {
    for (int i = 0; i < TL_BLOCK; i++) out[i] = (TL_T)(((double)x[i] - m) - l);
}
#endif /* TL_HAVE_VEC */

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
        double f = tl__sm_factor(chunk->ref[b], row->m);
        if (n - j0 >= TL_BLOCK) {
            TL_SFX(tl__sm_rescale)(out + j0, f, s);
        } else {
            for (ptrdiff_t i = j0; i < n; i++) out[i] = (TL_T)(((double)out[i] * f) / s);
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
