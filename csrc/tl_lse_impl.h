/* Log-sum-exp chunk kernel, templated on TL_T (see tl_template.h).
 *
 * Per block of TL_BLOCK elements, read in place (only the tail is copied, padded with
 * -inf): one scan for NaN and the maximum, and one fused loop that sums the exponentials
 * (entries equal to the running maximum are counted apart; the second read comes from
 * L1), both on the vectors of tl_simd.h (float32 input: the exponentials in float lanes);
 * sums run in fixed lanes (no reassociation: bitwise the same for any thread count).
 * Without vector extensions: the same loops on TL_LANES scalar lanes. */
#if TL_HAVE_VEC
/* One block read in place: *mx = its maximum (NaN ignored), returns nonzero if some entry
 * is NaN.  float32 input is scanned in float lanes (the maximum is one of the inputs:
 * exact). */
TL_NOINLINE int TL_SFX(tl__lse_scan)(const TL_T *TL_RESTRICT x, double *mx) {
#if TL_T_IS_F32
    tl_vf2 s, nn, one;
    for (int k = 0; k < 2 * TL_VW; k++) {
        s[k] = -INFINITY;
        nn[k] = 0.0f;
        one[k] = 1.0f;
    }
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vf2 v = tl_vf2_load(x + i);
        tl_vi2 gt = v > s;
        s = (tl_vf2)((gt & (tl_vi2)v) | (~gt & (tl_vi2)s));
        nn += (tl_vf2)((v != v) & (tl_vi2)one);
    }
    float m = s[0], t = 0.0f;
    for (int k = 1; k < 2 * TL_VW; k++) m = s[k] > m ? s[k] : m;
    for (int k = 0; k < 2 * TL_VW; k++) t += nn[k];
    *mx = (double)m;
    return t != 0.0f;
#else
    tl_vd s = tl_vset(-INFINITY), nn = tl_vset(0.0);
    for (int i = 0; i < TL_BLOCK; i += TL_VW) {
        tl_vd v = TL_VLOADT(x + i);
        s = tl_vmax(v, s);
        nn += tl_vmask01(v != v);
    }
    *mx = tl_vhmax(s);
    return tl_vsum(nn) != 0.0;
#endif
}

#if TL_T_IS_F32
/* Sum of exp(x - m) over the entries below m, and the count of entries equal to m:
 * float32 input has its exponentials in float lanes (tl_vexpf_w, 2 TL_VW per vector; the
 * difference x - m of two floats rounded to float), summed in double lanes. */
TL_NOINLINE void TL_SFX(tl__lse_sum)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                    double *count) {
    tl_vd w0 = tl_vset(0.0), w1 = w0;
    tl_vf2 mf, c, one;
    for (int k = 0; k < 2 * TL_VW; k++) {
        mf[k] = (float)m;
        c[k] = 0.0f;
        one[k] = 1.0f;
    }
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vf2 v = tl_vf2_load(x + i);
        tl_vi2 top = v == mf;
        tl_vf2 e = (tl_vf2)(~top & (tl_vi2)tl_vexpf_w(v - mf));
        tl_vd e0, e1;
        tl_vf2_widen(e, &e0, &e1);
        w0 += e0;
        w1 += e1;
        c += (tl_vf2)(top & (tl_vi2)one); /* counts <= TL_BLOCK: exact in float */
    }
    float tc = 0.0f;
    for (int k = 0; k < 2 * TL_VW; k++) tc += c[k];
    *rest += tl_vsum(w0) + tl_vsum(w1);
    *count += (double)tc;
}
#else
/* Sum of exp(x - m) over the entries below m, and the count of entries equal to m. */
TL_NOINLINE void TL_SFX(tl__lse_sum)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                    double *count) {
    tl_vd w0 = tl_vset(0.0), w1 = w0, c = w0;
    const tl_vd mv = tl_vset(m);
    for (int i = 0; i < TL_BLOCK; i += 2 * TL_VW) {
        tl_vd v0 = tl_vload(x + i), v1 = tl_vload(x + i + TL_VW);
        tl_vi t0 = v0 == mv, t1 = v1 == mv;
        w0 += (tl_vd)(~t0 & (tl_vi)tl_vexp_w(v0 - mv));
        w1 += (tl_vd)(~t1 & (tl_vi)tl_vexp_w(v1 - mv));
        c += tl_vmask01(t0) + tl_vmask01(t1);
    }
    *rest += tl_vsum(w0) + tl_vsum(w1);
    *count += tl_vsum(c);
}
#endif
#else /* no vector extensions: scalar lanes */
/* One block read in place: *mx = its maximum (NaN ignored), returns nonzero if some entry
 * is NaN. */
TL_NOINLINE int TL_SFX(tl__lse_scan)(const TL_T *TL_RESTRICT x, double *mx) {
    double s[TL_LANES], nn[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) {
        s[k] = -INFINITY;
        nn[k] = 0.0;
    }
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            double v = (double)x[i + k];
            s[k] = v > s[k] ? v : s[k];
            nn[k] += v == v ? 0.0 : 1.0;
        }
    double m = s[0], t = 0.0;
    for (int k = 1; k < TL_LANES; k++) m = s[k] > m ? s[k] : m;
    for (int k = 0; k < TL_LANES; k++) t += nn[k];
    *mx = m;
    return t != 0.0;
}

/* Sum of exp(x - m) over the entries below m, and the count of entries equal to m.
 * float32 input: the exponentials in float lanes (tl_expf_w: 8 per AVX2 register; the
 * difference x - m of two floats rounded to float), summed in double lanes. */
#if TL_T_IS_F32
#define TL_FL32 (2 * TL_LANES)
TL_NOINLINE void TL_SFX(tl__lse_sum)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                    double *count) {
    double w[TL_FL32], c[TL_FL32];
    const float mf = (float)m;
    for (int k = 0; k < TL_FL32; k++) w[k] = c[k] = 0.0;
    for (int i = 0; i < TL_BLOCK; i += TL_FL32)
        for (int k = 0; k < TL_FL32; k++) {
            float v = x[i + k];
            float top = v == mf ? 1.0f : 0.0f;
            w[k] += (double)(tl_expf_w(v - mf) * (1.0f - top));
            c[k] += (double)top;
        }
    double tw = 0.0, tc = 0.0;
    for (int k = 0; k < TL_FL32; k++) {
        tw += w[k];
        tc += c[k];
    }
    *rest += tw;
    *count += tc;
}
#undef TL_FL32
#else
TL_NOINLINE void TL_SFX(tl__lse_sum)(const TL_T *TL_RESTRICT x, double m, double *rest,
                                    double *count) {
    double w[TL_LANES], c[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) w[k] = c[k] = 0.0;
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            double v = (double)x[i + k];
            double top = v == m ? 1.0 : 0.0;
            w[k] += tl_exp_w(v - m) * (1.0 - top);
            c[k] += top;
        }
    double tw = 0.0, tc = 0.0;
    for (int k = 0; k < TL_LANES; k++) {
        tw += w[k];
        tc += c[k];
    }
    *rest += tw;
    *count += tc;
}
#endif
#endif /* TL_HAVE_VEC */

void TL_SFX(tl_lse_chunk)(const TL_T *TL_RESTRICT x, ptrdiff_t n, tl_lse_acc *acc) {
    TL_T pad[TL_BLOCK];
    acc->m = -INFINITY;
    acc->count = 0.0;
    acc->rest = 0.0;
    acc->flags = 0;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        const TL_T *xp = x + j0;
        if (len < TL_BLOCK) { /* the tail, padded with -inf */
            for (ptrdiff_t i = 0; i < TL_BLOCK; i++) pad[i] = i < len ? xp[i] : (TL_T)-INFINITY;
            xp = pad;
        }
        double bm;
        int nan = TL_SFX(tl__lse_scan)(xp, &bm);
        if (nan) acc->flags |= TL_LSE_NAN;
        if (bm == INFINITY) acc->flags |= TL_LSE_POSINF;
        if (nan || bm == INFINITY) continue; /* the result is decided; skip the arithmetic */
        if (bm == -INFINITY) continue;
        if (bm > acc->m) {
            acc->rest = (acc->rest + acc->count) * tl_rescale(acc->m, bm);
            acc->count = 0.0;
            acc->m = bm;
        }
        TL_SFX(tl__lse_sum)(xp, acc->m, &acc->rest, &acc->count);
    }
}
