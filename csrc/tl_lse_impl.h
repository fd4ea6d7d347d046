/* Log-sum-exp chunk kernel, templated on TL_T (see tl_template.h).
 *
 * Per block of TL_BLOCK elements, read in place (only the tail is copied, padded with
 * -inf): one scan for NaN and the maximum, and one fused loop that sums the exponentials
 * (entries equal to the running maximum are counted apart; the second read comes from
 * L1); sums run in TL_FLANES fixed lanes (vectorised without reassociation: bitwise the
 * same for any thread count).  Both loops are out-of-line helpers, which GCC vectorises
 * in isolation. */
/* One block read in place: *mx = its maximum (NaN ignored), returns nonzero if some entry
 * is NaN. */
TL_NOINLINE int TL_SFX(tl__lse_scan)(const TL_T *TL_RESTRICT x, double *mx) {
    double s[TL_FLANES], nn[TL_FLANES];
    for (int k = 0; k < TL_FLANES; k++) {
        s[k] = -INFINITY;
        nn[k] = 0.0;
    }
    for (int i = 0; i < TL_BLOCK; i += TL_FLANES)
        for (int k = 0; k < TL_FLANES; k++) {
            double v = (double)x[i + k];
            s[k] = v > s[k] ? v : s[k];
            nn[k] += v == v ? 0.0 : 1.0;
        }
    double m = s[0], t = 0.0;
    for (int k = 1; k < TL_FLANES; k++) m = s[k] > m ? s[k] : m;
    for (int k = 0; k < TL_FLANES; k++) t += nn[k];
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
            int is_top = v == mf;
            float e = tl_expf_w(v - mf);
            w[k] += is_top ? 0.0 : (double)e;
            c[k] += is_top ? 1.0 : 0.0;
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
    double w[TL_FLANES], c[TL_FLANES];
    for (int k = 0; k < TL_FLANES; k++) w[k] = c[k] = 0.0;
    for (int i = 0; i < TL_BLOCK; i += TL_FLANES)
        for (int k = 0; k < TL_FLANES; k++) {
            double v = (double)x[i + k];
            int is_top = v == m;
            w[k] += is_top ? 0.0 : tl_exp_w(v - m);
            c[k] += is_top ? 1.0 : 0.0;
        }
    double tw = 0.0, tc = 0.0;
    for (int k = 0; k < TL_FLANES; k++) {
        tw += w[k];
        tc += c[k];
    }
    *rest += tw;
    *count += tc;
}
#endif

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
