/* Best-of-N on a finite outcome set: levels, the log-space level law, samplers. */
#include <math.h>
#include <float.h>
#include "tl_bon.h"
#include "tl_sort.h"
#include "tl_exp.h"

#define TL_IMPL "tl_bon_impl.h"
#include "tl_template.h"

#define TL_LOG_HALF (-0.69314718055994530942)

/* log(1 - e^-d) for d > 0 (log1mexp): two formulas, switching at ln 2 */
static double tl__log1mexp(double d) {
    return d < 0.69314718055994530942 ? log(-expm1(-d)) : log1p(-exp(-d));
}

/* log(-log1p(-S) / S) for 0 < S < 1/2, from log S: the correction that turns log S into
 * log(-log F) when F = 1 - S is close to 1 */
static double tl__ell_corr(double log_s) {
    double s = exp(log_s);
    if (s < 1e-4) return log1p(s * (0.5 + s * (1.0 / 3.0 + s * 0.25)));
    return log(-log1p(-s)) - log_s;
}

/* log g for g = log(F_j / F_{j-1}) = -log1p(-q), q = m_j / F_j, from log q (in log space:
 * in the far tail q ~ e^-3000 and N ~ e^3000, so g itself would underflow); where q > 1/2
 * g = log F_j - log F_{j-1} >= log 2 (no cancellation) */
static double tl__log_g(double log_q, double lf, double lf_prev) {
    if (log_q == -INFINITY) return -INFINITY;
    if (log_q < -9.2) { /* q < 1e-4: -log1p(-q) = q (1 + q/2 + q^2/3 + q^3/4 + ...) */
        double q = exp(log_q);
        return log_q + log1p(q * (0.5 + q * (1.0 / 3.0 + q * 0.25)));
    }
    double q = exp(log_q);
    return q <= 0.5 ? log(-log1p(-q)) : log(lf - lf_prev);
}

/* Kahan-compensated sum: the metrics add up to 10^6+ terms */
typedef struct {
    double s, c;
} tl__ksum;

static inline void tl__kadd(tl__ksum *k, double x) {
    double y = x - k->c;
    double t = k->s + y;
    k->c = (t - k->s) - y;
    k->s = t;
}

/* Running log-sum-exp with a scaled, compensated linear sum */
typedef struct {
    double m, s, c;
} tl__lse_run;

static void tl__lse_add(tl__lse_run *a, double x) {
    if (x == -INFINITY) return;
    if (x > a->m) {
        double f = a->m == -INFINITY ? 0.0 : exp(a->m - x);
        a->s *= f;
        a->c *= f;
        a->m = x;
    }
    double y = exp(x - a->m) - a->c;
    double t = a->s + y;
    a->c = (t - a->s) - y;
    a->s = t;
}

static double tl__lse_value(const tl__lse_run *a) {
    return a->m == -INFINITY ? -INFINITY : a->m + log(a->s);
}

/* Below these, every lower level has F^N < e^-800, i.e. w = 0 exactly in double:
 * S-regime: log N + log S_j > log 800 implies N log F_j < -800;
 * F-regime (F <= 1/2): log N > log(800 / ln 2) implies N log F_j <= -N ln 2 < -800. */
#define TL_DEAD_S 6.69
#define TL_DEAD_F 7.06

void tl_bon_law(const double *values, const double *log_mass, ptrdiff_t L, double log_n,
                double *log_cdf, double *log_sf, double *ell, double *a, double *log_w,
                int full, tl_bon_metrics *out, const tl_stop_flag *stop) {
    out->kl = out->expected_reward = out->win_rate = out->total_mass = NAN;
    /* 1. survival from the top, stopping at the first level whose weight (and that of
     *    every level below) is exactly zero */
    tl__lse_run run = {-INFINITY, 0.0, 0.0};
    ptrdiff_t first = 0; /* lowest level with a possibly non-zero weight */
    log_sf[L - 1] = -INFINITY;
    for (ptrdiff_t j = L - 2; j >= 0; j--) {
        if ((j & (TL_LAW_POLL - 1)) == 0 && tl_stop_requested(stop)) return;
        tl__lse_add(&run, log_mass[j + 1]);
        log_sf[j] = tl__lse_value(&run);
        int dead = log_sf[j] < TL_LOG_HALF ? (log_n + log_sf[j] > TL_DEAD_S) : (log_n > TL_DEAD_F);
        if (dead && !full) {
            first = j + 1;
            break;
        }
    }
    /* 2. CDF from the bottom for the levels with F <= 1/2 (a contiguous bottom range),
     *    needed only when they are alive (then first == 0) */
    ptrdiff_t mid = first;
    while (mid < L && log_sf[mid] >= TL_LOG_HALF) mid++;
    if (first == 0 && mid > 0) {
        run.m = -INFINITY;
        run.s = run.c = 0.0;
        for (ptrdiff_t j = 0; j < mid; j++) {
            if ((j & (TL_LAW_POLL - 1)) == 0 && tl_stop_requested(stop)) return;
            tl__lse_add(&run, log_mass[j]);
            log_cdf[j] = tl__lse_value(&run);
        }
    }
    for (ptrdiff_t j = 0; j < first; j++) {
        log_cdf[j] = NAN;
        ell[j] = INFINITY;
        a[j] = -INFINITY;
        log_w[j] = -INFINITY;
    }
    /* 3. the law */
    tl__ksum total = {0.0, 0.0}, er = {0.0, 0.0}, kl = {0.0, 0.0}, win = {0.0, 0.0};
    /* F_{first-1}: 0 at the bottom, else 1 - S of the (dead) level below */
    double f_prev = first > 0 ? -expm1(log_sf[first - 1]) : 0.0;
    double lf_prev = first > 0 ? log1p(-exp(log_sf[first - 1])) : -INFINITY;
    for (ptrdiff_t j = first; j < L; j++) {
        if ((j & (TL_LAW_POLL - 1)) == 0 && tl_stop_requested(stop)) return;
        /* ell_j = log(-log F_j) and lf = log F_j */
        int tail = log_sf[j] < TL_LOG_HALF; /* S_j < 1/2: work from the survival */
        double f_cur, lf;
        if (log_sf[j] == -INFINITY) {
            ell[j] = -INFINITY;
            log_cdf[j] = 0.0;
            f_cur = 1.0;
            lf = 0.0;
        } else if (tail) {
            ell[j] = log_sf[j] + tl__ell_corr(log_sf[j]);
            log_cdf[j] = NAN; /* not needed: F_j = 1 - S_j below */
            f_cur = -expm1(log_sf[j]);
            lf = log1p(-exp(log_sf[j]));
        } else {
            ell[j] = log(-log_cdf[j]);
            f_cur = exp(log_cdf[j]);
            lf = log_cdf[j];
        }
        /* a_j = N log F_j; the top level has F = 1 and a = 0 for every N */
        double aj = ell[j] == -INFINITY ? 0.0 : -exp(log_n + ell[j]);
        a[j] = aj;
        double lw;
        if (log_n == 0.0) {
            lw = log_mass[j]; /* N = 1: p itself, exactly */
        } else if (j == first) {
            lw = aj; /* F_{j-1}^N is 0 (j = 0) or below e^-800 */
        } else if (aj == -INFINITY) {
            lw = -INFINITY;
        } else {
            /* d = a_j - a_{j-1} = N log(F_j / F_{j-1}) = N g, g = -log1p(-m_j / F_j): no
             * difference of nearly equal numbers, so a level of tiny mass keeps the
             * relative accuracy of its weight (where m_j / F_j > 1/2, g = log F_j -
             * log F_{j-1} >= log 2 has no cancellation either) */
            double log_d = log_n + tl__log_g(log_mass[j] - lf, lf, lf_prev);
            /* log(1 - e^-d) = log d - d/2 + O(d^2) for tiny d: a level whose weight is
             * below the double range keeps its log weight (e.g. -1.7e308) */
            if (log_d < -40.0)
                lw = aj + (log_d - 0.5 * exp(log_d));
            else
                lw = aj + tl__log1mexp(exp(log_d));
        }
        log_w[j] = lw;
        if (lw > -INFINITY) {
            double w = exp(lw);
            tl__kadd(&total, w);
            tl__kadd(&er, w * values[j]);
            tl__kadd(&kl, w * (lw - log_mass[j]));
            tl__kadd(&win, w * (f_prev + 0.5 * exp(log_mass[j])));
        }
        f_prev = f_cur;
        lf_prev = lf;
    }
    out->kl = kl.s < 0.0 || log_n == 0.0 ? 0.0 : kl.s;
    out->expected_reward = er.s;
    out->win_rate = log_n == 0.0 ? 0.5 : win.s; /* N = 1: sum m_j (F_{j-1} + m_j / 2) = 1/2 */
    out->total_mass = total.s;
}

void tl_bon_guide(const double *a, ptrdiff_t L, double *cdf, int64_t *guide, ptrdiff_t K) {
    for (ptrdiff_t j = 0; j < L; j++) cdf[j] = exp(a[j]);
    cdf[L - 1] = 1.0;
    ptrdiff_t j = 0;
    for (ptrdiff_t k = 0; k < K; k++) {
        double u = (double)k / (double)K;
        while (cdf[j] <= u) j++;
        guide[k] = j;
    }
}

static inline double tl__uniform(bitgen_t *rng) {
    return (double)(rng->next_uint64(rng->state) >> 11) * 0x1.0p-53;
}

void tl_pack_outcomes(const double *prob, const int64_t *alias, const int64_t *order,
                      ptrdiff_t n, tl_alias_slot *slots) {
    for (ptrdiff_t i = 0; i < n; i++) {
        slots[i].prob = prob[i];
        slots[i].here = (int32_t)order[i];
        slots[i].alias = (int32_t)order[alias[i]];
    }
}

/* Draws come in batches of TL_DRAW_BATCH: the uniforms of a batch are generated first (a
 * tight loop over the bit generator), then each table lookup stage runs over the whole
 * batch with the next stage's memory prefetched, so the cache misses of different draws
 * overlap instead of queueing behind each other.  The i-th draw of a block uses the i-th
 * level uniform of its batch and, if its level holds several outcomes, the next unused
 * uniform of the batch's second pass: the stream depends only on the block, never on the
 * thread count. */
#define TL_DRAW_BATCH 128

void tl_bon_sample(bitgen_t *rng, int64_t count, const double *cdf, const int64_t *guide,
                   ptrdiff_t K, const int64_t *start, const tl_alias_slot *slots,
                   int64_t *out) {
    double u[TL_DRAW_BATCH];
    ptrdiff_t jj[TL_DRAW_BATCH];
    const double kd = (double)K;
    for (int64_t d0 = 0; d0 < count; d0 += TL_DRAW_BATCH) {
        int nb = count - d0 < TL_DRAW_BATCH ? (int)(count - d0) : TL_DRAW_BATCH;
        for (int b = 0; b < nb; b++) u[b] = tl__uniform(rng);
        for (int b = 0; b < nb; b++) {
            ptrdiff_t g = (ptrdiff_t)(u[b] * kd);
            jj[b] = g < K ? g : K - 1;
            TL_PREFETCH(guide + jj[b]);
        }
        for (int b = 0; b < nb; b++) {
            jj[b] = guide[jj[b]];
            TL_PREFETCH(cdf + jj[b]);
        }
        for (int b = 0; b < nb; b++) {
            ptrdiff_t j = jj[b];
            while (cdf[j] <= u[b]) j++;
            jj[b] = j;
            TL_PREFETCH(start + j);
        }
        for (int b = 0; b < nb; b++) {
            int64_t s0 = start[jj[b]], nj = start[jj[b] + 1] - s0;
            jj[b] = s0;
            u[b] = (double)nj; /* reuse: the level's outcome count */
            TL_PREFETCH(slots + s0);
        }
        for (int b = 0; b < nb; b++) {
            int64_t s0 = jj[b];
            double nj = u[b];
            if (nj == 1.0) {
                out[d0 + b] = slots[s0].here;
                continue;
            }
            double x = tl__uniform(rng) * nj;
            int64_t i = (int64_t)x;
            i = i < (int64_t)nj ? i : (int64_t)nj - 1;
            const tl_alias_slot *sl = slots + s0 + i;
            out[d0 + b] = (x - (double)i) < sl->prob ? sl->here : sl->alias;
        }
    }
}

void tl_alias_build(const double *weights, ptrdiff_t n, double *prob, int64_t *alias,
                    int64_t *small, int64_t *large) {
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) total += weights[i];
    ptrdiff_t ns = 0, nl = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        prob[i] = weights[i] * (double)n / total;
        alias[i] = i;
        if (prob[i] < 1.0) small[ns++] = i;
        else large[nl++] = i;
    }
    while (ns > 0 && nl > 0) {
        int64_t s = small[--ns], g = large[nl - 1];
        alias[s] = g;
        prob[g] = (prob[g] + prob[s]) - 1.0;
        if (prob[g] < 1.0) {
            nl--;
            small[ns++] = g;
        }
    }
    /* leftovers are 1 up to rounding */
    while (nl > 0) prob[large[--nl]] = 1.0;
    while (ns > 0) prob[small[--ns]] = 1.0;
}

void tl_bon_simulate(bitgen_t *rng, int64_t count, int64_t n_candidates, ptrdiff_t n_support,
                     const tl_alias_slot *level_slots, const int32_t *outcome_here,
                     const int32_t *outcome_alias, int64_t *out, const tl_stop_flag *stop) {
    /* candidates of consecutive draws form one stream, processed in batches: uniforms
     * first, then the slots prefetched, then the comparisons */
    const double scale = (double)n_support;
    double x[TL_DRAW_BATCH];
    int64_t idx[TL_DRAW_BATCH];
    int64_t d = 0, c = 0; /* the draw and candidate of the next element of the stream */
    int32_t best = -1;
    int64_t best_slot = 0; /* 2 * slot + (1 if the alias was taken) */
    if (count <= 0 || n_candidates <= 0) return;
    while (d < count) {
        if (tl_stop_requested(stop)) return;
        /* how many candidates are left in the stream (capped to the batch) */
        int64_t left_here = n_candidates - c;
        int nb = TL_DRAW_BATCH;
        if (count - d == 1 && left_here < nb) nb = (int)left_here;
        for (int b = 0; b < nb; b++) {
            x[b] = tl__uniform(rng) * scale;
            int64_t i = (int64_t)x[b];
            idx[b] = i < n_support ? i : n_support - 1;
            TL_PREFETCH(level_slots + idx[b]);
        }
        for (int b = 0; b < nb && d < count; b++) {
            const tl_alias_slot *sl = level_slots + idx[b];
            int take_alias = !((x[b] - (double)idx[b]) < sl->prob);
            int32_t lv = take_alias ? sl->alias : sl->here;
            if (lv > best) { /* strictly greater: the first maximum is kept */
                best = lv;
                best_slot = 2 * idx[b] + take_alias;
            }
            if (++c == n_candidates) {
                out[d++] = (best_slot & 1) ? outcome_alias[best_slot >> 1]
                                           : outcome_here[best_slot >> 1];
                c = 0;
                best = -1;
                best_slot = 0;
            }
        }
    }
}
