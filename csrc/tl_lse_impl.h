/* Log-sum-exp chunk kernel, templated on TL_T (see tl_template.h). */
void TL_SFX(tl_lse_chunk)(const TL_T *TL_RESTRICT x, ptrdiff_t n, tl_lse_acc *acc) {
    double buf[TL_BLOCK], w[TL_BLOCK], top[TL_BLOCK];
    acc->m = -INFINITY;
    acc->count = 0.0;
    acc->rest = 0.0;
    acc->flags = 0;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        for (ptrdiff_t i = 0; i < len; i++) buf[i] = (double)x[j0 + i];
        for (ptrdiff_t i = len; i < TL_BLOCK; i++) buf[i] = -INFINITY;
        int nan = tl_block_has_nan(buf);
        double bm = tl_block_max(buf);
        if (nan) acc->flags |= TL_LSE_NAN;
        if (bm == INFINITY) acc->flags |= TL_LSE_POSINF;
        if (nan || bm == INFINITY) continue; /* the result is decided; skip the arithmetic */
        if (bm == -INFINITY) continue;
        if (bm > acc->m) {
            acc->rest = (acc->rest + acc->count) * tl_rescale(acc->m, bm);
            acc->count = 0.0;
            acc->m = bm;
        }
        const double m = acc->m;
        for (int i = 0; i < TL_BLOCK; i++) {
            int is_top = buf[i] == m;
            w[i] = is_top ? 0.0 : tl_exp(buf[i] - m);
            top[i] = is_top ? 1.0 : 0.0;
        }
        acc->rest += tl_block_sum(w);
        acc->count += tl_block_sum(top);
    }
}
