/* Log-sum-exp chunk kernel, templated on TL_T (see tl_template.h).
 *
 * Per block of TL_BLOCK elements: a copy (float32 widened, tail padded with -inf, the next
 * blocks prefetched), one scan for NaN and the maximum, and one fused loop that sums the
 * exponentials (entries equal to the running maximum are counted apart); sums run in
 * TL_LANES fixed lanes (vectorised without reassociation: bitwise the same for any thread
 * count).  Loops over whole blocks with the results in buffers are what GCC vectorises
 * well; exp inside a lane-accumulator loop is not. */
void TL_SFX(tl_lse_chunk)(const TL_T *TL_RESTRICT x, ptrdiff_t n, tl_lse_acc *acc) {
    double buf[TL_BLOCK], w[TL_BLOCK], top[TL_BLOCK];
    acc->m = -INFINITY;
    acc->count = 0.0;
    acc->rest = 0.0;
    acc->flags = 0;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += TL_BLOCK) {
        ptrdiff_t len = n - j0 < TL_BLOCK ? n - j0 : TL_BLOCK;
        TL_PREFETCH_BLOCK(x + j0, n - j0);
        tl_block_load(buf, x + j0, len, -INFINITY);
        double bm;
        int nan = tl_block_max_nan(buf, &bm);
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
            double v = buf[i];
            int is_top = v == m;
            w[i] = is_top ? 0.0 : tl_exp(v - m);
            top[i] = is_top ? 1.0 : 0.0;
        }
        acc->rest += tl_block_sum(w);
        acc->count += tl_block_sum(top);
    }
}
