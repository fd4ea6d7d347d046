/* Best-of-N kernels that read the input arrays, templated on TL_T (see tl_template.h). */

int TL_SFX(tl_levels)(const TL_T *l, const TL_T *r, ptrdiff_t n, uint64_t *keys, uint64_t *kbuf,
                      int64_t *order, int64_t *obuf, double *values, double *log_mass,
                      int64_t *start, tl_levels *out, const tl_stop_flag *stop) {
    int flags = 0;
    ptrdiff_t ns = 0;
    double m = -INFINITY;
    for (ptrdiff_t i = 0; i < n; i++) {
        double li = (double)l[i], ri = (double)r[i];
        if (li != li || li == INFINITY) flags |= TL_FLAG_BAD_LOGIT;
        if (!(fabs(ri) <= DBL_MAX)) flags |= TL_FLAG_BAD_REWARD;
        if (li > -INFINITY && li < INFINITY) {
            keys[ns] = tl_double_key(ri);
            order[ns] = i;
            ns++;
            m = li > m ? li : m;
        }
    }
    out->n_support = ns;
    out->n_levels = 0;
    out->log_norm = out->norm_max = out->norm_log = NAN;
    if (flags) return flags;
    if (ns == 0) return TL_FLAG_EMPTY_ROW;
    /* compensated: the masses of 10^6 levels must sum to 1 to a few ulp */
    double s = 0.0, comp = 0.0;
    for (ptrdiff_t k = 0; k < ns; k++) {
        double y = tl_exp((double)l[order[k]] - m) - comp;
        double t = s + y;
        comp = (t - s) - y;
        s = t;
    }
    const double log_s = log(s);
    out->norm_max = m;
    out->norm_log = log_s;
    out->log_norm = m + log_s;
    if (tl_stop_requested(stop)) return TL_FLAG_STOPPED;
    tl_radix_sort(keys, order, ns, kbuf, obuf, stop);
    if (tl_stop_requested(stop)) return TL_FLAG_STOPPED;
    ptrdiff_t L = 0, k = 0;
    while (k < ns) {
        ptrdiff_t k0 = k;
        const uint64_t key = keys[k];
        double mx = (double)l[order[k]];
        k++;
        while (k < ns && keys[k] == key) {
            double lk = (double)l[order[k]];
            mx = lk > mx ? lk : mx;
            k++;
        }
        start[L] = k0;
        values[L] = (double)r[order[k0]] + 0.0;
        /* relative to the max logit m: nothing of the size of the logits is added */
        if (k - k0 == 1) {
            log_mass[L] = (mx - m) - log_s;
        } else {
            double ss = 0.0;
            for (ptrdiff_t q = k0; q < k; q++) ss += tl_exp((double)l[order[q]] - mx);
            log_mass[L] = ((mx - m) + log(ss)) - log_s;
        }
        L++;
    }
    start[L] = ns;
    out->n_levels = L;
    return 0;
}

void TL_SFX(tl_bon_logprobs)(const TL_T *l, ptrdiff_t n, const int64_t *order,
                             const int64_t *start, ptrdiff_t L, const double *log_mass,
                             const double *log_w, double norm_max, double norm_log,
                             double *out) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = -INFINITY;
    for (ptrdiff_t j = 0; j < L; j++) {
        if (log_w[j] == -INFINITY) continue;
        if (start[j + 1] - start[j] == 1) { /* the level's law is the outcome's */
            out[order[start[j]]] = log_w[j];
            continue;
        }
        double shift = log_w[j] - log_mass[j];
        for (int64_t k = start[j]; k < start[j + 1]; k++) {
            int64_t y = order[k];
            out[y] = (((double)l[y] - norm_max) - norm_log) + shift;
        }
    }
}

void TL_SFX(tl_level_alias)(const TL_T *l, const int64_t *order, const int64_t *start,
                            ptrdiff_t L, double *prob, int64_t *alias, double *scratch,
                            int64_t *small, int64_t *large) {
    for (ptrdiff_t j = 0; j < L; j++) {
        int64_t s0 = start[j], nj = start[j + 1] - s0;
        if (nj == 1) {
            prob[s0] = 1.0;
            alias[s0] = s0;
            continue;
        }
        double mx = -INFINITY;
        for (int64_t k = 0; k < nj; k++) {
            double v = (double)l[order[s0 + k]];
            mx = v > mx ? v : mx;
        }
        for (int64_t k = 0; k < nj; k++) scratch[k] = tl_exp((double)l[order[s0 + k]] - mx);
        tl_alias_build(scratch, nj, prob + s0, alias + s0, small, large);
        for (int64_t k = 0; k < nj; k++) alias[s0 + k] += s0;
    }
}

/* x[i] <- e^x[i] * scale (vectorises; one copy per element type keeps the names apart) */
TL_NOINLINE void TL_SFX(tl__exp_weights)(double *TL_RESTRICT x, ptrdiff_t n, double scale) {
    for (ptrdiff_t i = 0; i < n; i++) x[i] = tl_exp(x[i]) * scale;
}

ptrdiff_t TL_SFX(tl_bon_outcome_weights)(const TL_T *l, const int64_t *order, const int64_t *start,
                                         ptrdiff_t L, ptrdiff_t first, const double *log_mass,
                                         const double *w, double norm_max, double norm_log,
                                         double *wout, int32_t *payload) {
    ptrdiff_t n = 0;
    for (ptrdiff_t j = first < 0 ? 0 : first; j < L; j++) {
        double wj = w[j];
        if (!(wj > 0.0)) continue;
        int64_t s0 = start[j], s1 = start[j + 1];
        if (s1 - s0 == 1) { /* the level's weight is the outcome's */
            wout[n] = wj;
            payload[n++] = (int32_t)order[s0];
            continue;
        }
        /* p_y / m_j <= 1, relative to the max logit: exact at any offset (a vectorised
         * pass, then the outcomes of positive weight kept) */
        const double sh = norm_log + log_mass[j];
        double *v = wout + n;
        for (int64_t k = s0; k < s1; k++) v[k - s0] = ((double)l[order[k]] - norm_max) - sh;
        TL_SFX(tl__exp_weights)(v, s1 - s0, wj);
        for (int64_t k = s0; k < s1; k++) {
            double x = v[k - s0];
            wout[n] = x;
            payload[n] = (int32_t)order[k];
            n += x > 0.0;
        }
    }
    return n;
}

int TL_SFX(tl_softmax_weights)(const TL_T *l, const TL_T *r, ptrdiff_t n, double *wout,
                               int32_t *payload, ptrdiff_t *n_out) {
    int flags = 0;
    double m = -INFINITY;
    *n_out = 0;
    for (ptrdiff_t i = 0; i < n; i++) { /* the checks of tl_levels */
        double li = (double)l[i], ri = (double)r[i];
        if (li != li || li == INFINITY) flags |= TL_FLAG_BAD_LOGIT;
        if (!(fabs(ri) <= DBL_MAX)) flags |= TL_FLAG_BAD_REWARD;
        m = li > m ? li : m;
    }
    if (flags) return flags;
    if (m == -INFINITY) return TL_FLAG_EMPTY_ROW;
    /* e^(l - m) (0 for -inf) in a vectorised pass, then the outcomes of positive weight */
    for (ptrdiff_t i = 0; i < n; i++) wout[i] = (double)l[i] - m;
    TL_SFX(tl__exp_weights)(wout, n, 1.0);
    ptrdiff_t k = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double v = wout[i];
        wout[k] = v;
        payload[k] = (int32_t)i;
        k += v > 0.0;
    }
    *n_out = k;
    return 0;
}
