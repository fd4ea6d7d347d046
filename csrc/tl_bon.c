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

void tl_pack_outcomes(const double *prob, const int64_t *alias, const int64_t *order,
                      ptrdiff_t n, tl_alias_slot *slots) {
    for (ptrdiff_t i = 0; i < n; i++) {
        slots[i].prob = prob[i];
        slots[i].here = (int32_t)order[i];
        slots[i].alias = (int32_t)order[alias[i]];
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


/* ---------------------------------------------------------------- PCG64, inline */

/* PCG64's multiplier (the 128-bit LCG of NumPy's PCG64) */
#define TL_PCG_MUL_HI 0x2360ED051FC65DA4ULL
#define TL_PCG_MUL_LO 0x4385DF649FCCF645ULL

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 tl__u128n;
static inline tl__u128n tl__n(tl_u128 a) { return ((tl__u128n)a.hi << 64) | a.lo; }
static inline tl_u128 tl__s(tl__u128n a) {
    tl_u128 r = {(uint64_t)a, (uint64_t)(a >> 64)};
    return r;
}
static inline tl_u128 tl__mul(tl_u128 a, tl_u128 b) { return tl__s(tl__n(a) * tl__n(b)); }
static inline tl_u128 tl__add(tl_u128 a, tl_u128 b) { return tl__s(tl__n(a) + tl__n(b)); }
/* high word of a * b (64 x 64 -> 128) and the low word in *lo */
static inline uint64_t tl__mulhi(uint64_t a, uint64_t b, uint64_t *lo) {
    tl__u128n p = (tl__u128n)a * b;
    *lo = (uint64_t)p;
    return (uint64_t)(p >> 64);
}
#else
static inline uint64_t tl__mulhi(uint64_t a, uint64_t b, uint64_t *lo) {
    uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    *lo = (mid << 32) | (p00 & 0xffffffffu);
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}
static inline tl_u128 tl__mul(tl_u128 a, tl_u128 b) {
    tl_u128 r;
    r.hi = tl__mulhi(a.lo, b.lo, &r.lo) + a.lo * b.hi + a.hi * b.lo;
    return r;
}
static inline tl_u128 tl__add(tl_u128 a, tl_u128 b) {
    tl_u128 r;
    r.lo = a.lo + b.lo;
    r.hi = a.hi + b.hi + (r.lo < a.lo);
    return r;
}
#endif

static const tl_u128 tl__pcg_mul = {TL_PCG_MUL_LO, TL_PCG_MUL_HI};

tl_u128 tl_u128_mul64(uint64_t a, uint64_t b) {
    tl_u128 r;
    r.hi = tl__mulhi(a, b, &r.lo);
    return r;
}

/* XSL-RR: the xor of the state's halves rotated right by its top 6 bits */
static inline uint64_t tl__pcg_out(tl_u128 s) {
    uint64_t x = s.hi ^ s.lo;
    unsigned rot = (unsigned)(s.hi >> 58);
    return (x >> rot) | (x << ((64u - rot) & 63u));
}

static inline tl_u128 tl__pcg_step(tl_u128 s, tl_u128 inc) {
    return tl__add(tl__mul(s, tl__pcg_mul), inc);
}

uint64_t tl_pcg64_next(tl_pcg64 *g) {
    g->state = tl__pcg_step(g->state, g->inc);
    return tl__pcg_out(g->state);
}

void tl_pcg64_seed(tl_pcg64 *g, const uint64_t words[4]) {
    tl_u128 init = {words[1], words[0]}, seq = {words[3], words[2]};
    /* inc = 2 seq + 1; state = step(step(0) + init) (PCG's srandom) */
    g->inc.hi = (seq.hi << 1) | (seq.lo >> 63);
    g->inc.lo = (seq.lo << 1) | 1u;
    tl_u128 zero = {0, 0};
    g->state = tl__pcg_step(tl__add(tl__pcg_step(zero, g->inc), init), g->inc);
}

/* (A, C) with step^k(s) = A s + C for k = delta (square and multiply over the bits of
 * delta: step^(2m) has A' = A^2, C' = (A + 1) C) */
static void tl__pcg_jump(tl_u128 inc, tl_u128 delta, tl_u128 *mul_out, tl_u128 *add_out) {
    tl_u128 cm = tl__pcg_mul, cp = inc;
    tl_u128 am = {1, 0}, ap = {0, 0};
    const tl_u128 one = {1, 0};
    while (delta.lo | delta.hi) {
        if (delta.lo & 1u) {
            am = tl__mul(am, cm);
            ap = tl__add(tl__mul(ap, cm), cp);
        }
        cp = tl__mul(tl__add(cm, one), cp);
        cm = tl__mul(cm, cm);
        delta.lo = (delta.lo >> 1) | (delta.hi << 63);
        delta.hi >>= 1;
    }
    *mul_out = am;
    *add_out = ap;
}

void tl_pcg64_advance(tl_pcg64 *g, tl_u128 delta) {
    tl_u128 m, a;
    tl__pcg_jump(g->inc, delta, &m, &a);
    g->state = tl__add(tl__mul(m, g->state), a);
}

/* Four interleaved states: lane k holds the stream's state 4t + k + 1 at round t, whose
 * output is word 4t + k; a round steps every lane by four. */
typedef struct {
    tl_u128 s0, s1, s2, s3, mul4, add4;
} tl__pcg4;

static void tl__pcg4_init(tl__pcg4 *q, const tl_pcg64 *g) {
    q->s0 = tl__pcg_step(g->state, g->inc);
    q->s1 = tl__pcg_step(q->s0, g->inc);
    q->s2 = tl__pcg_step(q->s1, g->inc);
    q->s3 = tl__pcg_step(q->s2, g->inc);
    tl_u128 four = {4, 0};
    tl__pcg_jump(g->inc, four, &q->mul4, &q->add4);
}

/* the next 4 m words into out[0 .. 4m) */
TL_NOINLINE void tl__pcg4_fill(tl__pcg4 *TL_RESTRICT q, uint64_t *TL_RESTRICT out, int m) {
    tl_u128 s0 = q->s0, s1 = q->s1, s2 = q->s2, s3 = q->s3;
    const tl_u128 a = q->mul4, c = q->add4;
    for (int t = 0; t < m; t++) {
        out[4 * t + 0] = tl__pcg_out(s0);
        out[4 * t + 1] = tl__pcg_out(s1);
        out[4 * t + 2] = tl__pcg_out(s2);
        out[4 * t + 3] = tl__pcg_out(s3);
        s0 = tl__add(tl__mul(s0, a), c);
        s1 = tl__add(tl__mul(s1, a), c);
        s2 = tl__add(tl__mul(s2, a), c);
        s3 = tl__add(tl__mul(s3, a), c);
    }
    q->s0 = s0;
    q->s1 = s1;
    q->s2 = s2;
    q->s3 = s3;
}

/* words per batch (a multiple of 4): generated first, then consumed by the table lookups */
#define TL_WORD_BATCH 256

void tl_pcg64_words(const tl_pcg64 *g, uint64_t *out, ptrdiff_t n) {
    tl__pcg4 q;
    uint64_t buf[TL_WORD_BATCH];
    tl__pcg4_init(&q, g);
    for (ptrdiff_t d0 = 0; d0 < n; d0 += TL_WORD_BATCH) {
        int nb = n - d0 < TL_WORD_BATCH ? (int)(n - d0) : TL_WORD_BATCH;
        tl__pcg4_fill(&q, buf, (nb + 3) / 4);
        for (int b = 0; b < nb; b++) out[d0 + b] = buf[b];
    }
}

/* ---------------------------------------------------------------- alias tables */

/* floor(p 2^64) for 0 <= p < 1, without the branch a compiler emits for doubles >= 2^63
 * (SSE2 converts to signed integers only): p >= 1/2 is a coin flip here */
static inline uint64_t tl__thresh(double p) {
    double t = p * 0x1.0p64;
    uint64_t hi = (uint64_t)(t >= 0x1.0p63);
    double lo = t - (double)hi * 0x1.0p63; /* exact: t in [2^63, 2^64) loses 2^63 */
    return (uint64_t)(int64_t)lo | (hi << 63);
}

int tl_alias64_build(const double *w, const int32_t *payload, ptrdiff_t n, tl_alias64 *slots,
                     double *prob, int32_t *stack) {
    /* compensated total (TwoSum, errors aside): the scale of every slot */
    double total = 0.0, comp = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double t = total + w[i];
        double bp = t - total;
        comp += (total - (t - bp)) + (w[i] - bp);
        total = t;
    }
    total += comp;
    if (!(total > 0.0 && total <= DBL_MAX)) return -1;
    const double scale = (double)n / total;
    /* the indices of the small items (prob < 1) from the bottom of `stack` up, the large
     * ones from the top down, both in index order (both written, one kept: no branch on
     * the coin flip of a weight's size) */
    ptrdiff_t ns = 0, nl = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double p = w[i] * scale;
        ptrdiff_t small = p < 1.0;
        prob[i] = p;
        stack[ns] = (int32_t)i;
        stack[n - 1 - nl] = (int32_t)i;
        ns += small;
        nl += 1 - small;
    }
    /* one sweep: each small item in turn takes the current large one as its alias, which
     * gives up the complement; a large one that turns small takes the next large one as
     * its alias at once (no stack: the residual stays in a register, and the only branch
     * is taken once per large item) */
    ptrdiff_t k = 0, kl = 0;
    int32_t g = -1;
    double pg = 0.0;
    if (nl > 0) {
        g = stack[n - 1];
        pg = prob[g];
        kl = 1;
        for (; k < ns; k++) {
            int32_t s = stack[k];
            /* slot s: itself with probability prob[s] < 1, else g */
            slots[s].thresh = tl__thresh(prob[s]);
            slots[s].here = payload[s];
            slots[s].alias = payload[g];
            pg = (pg + prob[s]) - 1.0; /* >= prob[s] >= 0: pg was >= 1 */
            while (pg < 1.0 && kl < nl) {
                int32_t g2 = stack[n - 1 - kl++];
                slots[g].thresh = tl__thresh(pg);
                slots[g].here = payload[g];
                slots[g].alias = payload[g2];
                pg = (prob[g2] + pg) - 1.0;
                g = g2;
            }
            if (pg < 1.0) { /* no large item left: what is left is 1 up to rounding */
                k++;
                break;
            }
        }
        slots[g].thresh = UINT64_MAX;
        slots[g].here = slots[g].alias = payload[g];
    }
    /* items left over (probability 1 up to rounding): the slot's own payload */
    for (; kl < nl; kl++) {
        int32_t i = stack[n - 1 - kl];
        slots[i].thresh = UINT64_MAX;
        slots[i].here = slots[i].alias = payload[i];
    }
    for (; k < ns; k++) {
        int32_t i = stack[k];
        slots[i].thresh = UINT64_MAX;
        slots[i].here = slots[i].alias = payload[i];
    }
    return 0;
}

/* out[b] = the draw of word u[b]: branch-free (here or alias by a mask: the choice is a
 * coin flip, which a branch would mispredict half the time) */
TL_NOINLINE void tl__alias_lookup(const tl_alias64 *TL_RESTRICT slots, uint64_t n,
                                  const uint64_t *TL_RESTRICT u, int nb,
                                  int64_t *TL_RESTRICT out) {
    for (int b = 0; b < nb; b++) {
        uint64_t frac;
        uint64_t i = tl__mulhi(u[b], n, &frac);
        const tl_alias64 *sl = slots + i;
        int64_t h = sl->here, a = sl->alias;
        int64_t keep = -(int64_t)(frac < sl->thresh);
        out[b] = a ^ ((h ^ a) & keep);
    }
}

void tl_alias64_sample(const tl_pcg64 *g, int64_t count, const tl_alias64 *slots, ptrdiff_t n,
                       int64_t *out) {
    if (n == 1) { /* no choice to make */
        for (int64_t d = 0; d < count; d++) out[d] = slots[0].here;
        return;
    }
    tl__pcg4 q;
    uint64_t buf[TL_WORD_BATCH];
    tl__pcg4_init(&q, g);
    for (int64_t d0 = 0; d0 < count; d0 += TL_WORD_BATCH) {
        int nb = count - d0 < TL_WORD_BATCH ? (int)(count - d0) : TL_WORD_BATCH;
        tl__pcg4_fill(&q, buf, (nb + 3) / 4);
        tl__alias_lookup(slots, (uint64_t)n, buf, nb, out + d0);
    }
}

/* ---------------------------------------------------------------- best-of-N draws */

/* A running sum with its rounding errors accumulated aside (Knuth's TwoSum): the chain
 * from one element to the next is a single add, and the value s + c is compensated. */
typedef struct {
    double s, c;
} tl__run;

static inline void tl__run_add(tl__run *r, double x) {
    double t = r->s + x;
    double bp = t - r->s;
    r->c += (r->s - (t - bp)) + (x - bp);
    r->s = t;
}

/* log1p(-q) for 0 <= q <= 1/64 by its series -q (1 + q/2 + ... + q^9/10): truncation
 * below q^10/11 < 2^-63 relative, a few ulp of rounding; no branch (vectorises) */
#define TL_LOG1P_SERIES (1.0 / 64.0)
static inline double tl__log1p_neg_series(double q) {
    double p = 0.1;
    p = p * q + 1.0 / 9.0;
    p = p * q + 0.125;
    p = p * q + 1.0 / 7.0;
    p = p * q + 1.0 / 6.0;
    p = p * q + 0.2;
    p = p * q + 0.25;
    p = p * q + 1.0 / 3.0;
    p = p * q + 0.5;
    p = p * q + 1.0;
    return -q * p;
}

/* m[j] = e^{log_mass[j]} for from <= j < to (vectorises) */
#define TL_MASS_CHUNK 4096
TL_NOINLINE void tl__masses(const double *TL_RESTRICT log_mass, double *TL_RESTRICT m,
                            ptrdiff_t from, ptrdiff_t to) {
    for (ptrdiff_t j = from; j < to; j++) m[j] = tl_exp(log_mass[j]);
}

ptrdiff_t tl_bon_level_weights(const double *values, const double *log_mass, ptrdiff_t L,
                               double log_n, double *w, double *s0, double *s1, double *s2,
                               double *s3, double *s4, const tl_stop_flag *stop) {
    if (log_n > TL_SAMPLE_LINEAR) {
        /* N beyond the double range: the exact law in log space, over the levels of
         * non-zero weight only (here the few top ones) */
        tl_bon_metrics met;
        tl_bon_law(values, log_mass, L, log_n, s0, s1, s2, s3, s4, 0, &met, stop);
        if (tl_stop_requested(stop)) return -1;
        ptrdiff_t first = L - 1;
        for (ptrdiff_t j = L - 1; j >= 0 && s4[j] > -INFINITY; j--) first = j;
        for (ptrdiff_t j = 0; j < L; j++) w[j] = j < first ? 0.0 : exp(s4[j]);
        return first;
    }
    double *m = s0, *f = s1, *q = s2, *t = s3, *lf = s4;
    if (log_n == 0.0) { /* N = 1: p itself */
        tl__masses(log_mass, w, 0, L);
        return 0;
    }
    const double nn = exp(log_n);
    /* 1. F_j = 1 - S_j from the top while S_j < 1/2, down to the first level whose
     *    weight (and every lower one's) is below e^-800: G_j = F_j^N <= exp(-N S_j);
     *    the masses m_j are formed on the way, a chunk at a time (m[mlo..L) are known) */
    ptrdiff_t lo = 0, j = L - 2, mlo = L - 1;
    tl__run r = {0.0, 0.0};
    tl__masses(log_mass, m, L - 1, L);
    f[L - 1] = 1.0;
    for (; j >= 0; j--) {
        if ((j & (TL_LAW_POLL - 1)) == 0 && tl_stop_requested(stop)) return -1;
        if (j + 1 < mlo) {
            ptrdiff_t a = mlo > TL_MASS_CHUNK ? mlo - TL_MASS_CHUNK : 0;
            tl__masses(log_mass, m, a, mlo);
            mlo = a;
        }
        tl__run_add(&r, m[j + 1]);
        double sj = r.s + r.c;
        f[j] = (1.0 - r.s) - r.c; /* F_j, or overwritten by step 2 if S_j >= 1/2 */
        if (nn * sj > 800.0) {
            lo = j + 1;
            break;
        }
        if (sj >= 0.5) break;
    }
    const ptrdiff_t mid = j + 1; /* S_j < 1/2 from here up */
    /* 2. F_j from the bottom where F_j <= 1/2 */
    if (lo == 0) {
        tl__masses(log_mass, m, 0, mlo);
        r.s = r.c = 0.0;
        for (ptrdiff_t k = 0; k < mid; k++) {
            if ((k & (TL_LAW_POLL - 1)) == 0 && tl_stop_requested(stop)) return -1;
            tl__run_add(&r, m[k]);
            f[k] = r.s + r.c;
        }
    }
    /* 3. t_j = log(F_{j-1} / F_j) = log1p(-q_j), q_j = m_j / F_j: by the series where
     *    q_j <= 1/64, log1p up to q_j = 1/2, beyond from the ratio itself (1 - q_j would
     *    lose the digits of a small F_{j-1} / F_j); f[lo - 1] is set by step 1 */
    for (ptrdiff_t k = lo; k < L; k++) q[k] = m[k] > 0.0 ? m[k] / f[k] : 0.0;
    for (ptrdiff_t k = lo; k < L; k++) t[k] = tl__log1p_neg_series(q[k]);
    for (ptrdiff_t k = lo; k < L; k++) {
        if (q[k] <= TL_LOG1P_SERIES) continue;
        t[k] = q[k] <= 0.5 ? log1p(-q[k]) : k > 0 ? log(f[k - 1] / f[k]) : -INFINITY;
    }
    /* 4. log F_j = sum_{k > j} log(F_{k-1} / F_k) = sum_{k > j} t_k from the top (terms of
     *    one sign, compensated: a few ulp), down to the first level with G_j < e^-800 */
    ptrdiff_t first = lo;
    lf[L - 1] = 0.0;
    r.s = r.c = 0.0;
    for (ptrdiff_t k = L - 2; k >= lo; k--) {
        if ((k & (TL_LAW_POLL - 1)) == 0 && tl_stop_requested(stop)) return -1;
        if (t[k + 1] == -INFINITY) { /* F_k = 0 */
            first = k + 1;
            break;
        }
        tl__run_add(&r, t[k + 1]);
        double v = r.s + r.c;
        if (-(nn * v) > 800.0) {
            first = k + 1;
            break;
        }
        lf[k] = v;
    }
    /* 5. w_j = G_j (1 - (1 - q_j)^N) = -G_j expm1(N t_j); at the bottom (t = -inf) G_j */
    for (ptrdiff_t k = 0; k < first; k++) w[k] = 0.0;
    for (ptrdiff_t k = first; k < L; k++) {
        double d = nn * t[k];
        d = d > -1000.0 ? d : -1000.0;
        w[k] = tl_exp(nn * lf[k]) * -tl_expm1(d);
    }
    return first;
}

void tl_bon_naive_relabel(tl_alias64 *slots, ptrdiff_t n, const int64_t *order,
                          const int64_t *start, ptrdiff_t L, int32_t *level_of_pos,
                          int32_t *outcome_here, int32_t *outcome_alias) {
    for (ptrdiff_t j = 0; j < L; j++)
        for (int64_t k = start[j]; k < start[j + 1]; k++) level_of_pos[k] = (int32_t)j;
    for (ptrdiff_t i = 0; i < n; i++) {
        int32_t h = slots[i].here, a = slots[i].alias;
        outcome_here[i] = (int32_t)order[h];
        outcome_alias[i] = (int32_t)order[a];
        slots[i].here = level_of_pos[h];
        slots[i].alias = level_of_pos[a];
    }
}

void tl_bon_simulate(const tl_pcg64 *g, int64_t count, int64_t n_candidates, ptrdiff_t n,
                     const tl_alias64 *level_slots, const int32_t *outcome_here,
                     const int32_t *outcome_alias, int64_t *out, const tl_stop_flag *stop) {
    /* the candidates of consecutive samples form one stream of words, consumed in
     * batches */
    if (count <= 0 || n_candidates <= 0) return;
    tl__pcg4 q;
    uint64_t buf[TL_WORD_BATCH];
    const uint64_t nn = (uint64_t)n;
    int64_t d = 0, c = 0; /* the sample and candidate of the next word */
    int32_t best = -1;
    int64_t best_slot = 0; /* 2 * slot + (1 if the alias was taken) */
    tl__pcg4_init(&q, g);
    while (d < count) {
        if (tl_stop_requested(stop)) return;
        tl__pcg4_fill(&q, buf, TL_WORD_BATCH / 4);
        for (int b = 0; b < TL_WORD_BATCH; b++) {
            uint64_t frac;
            uint64_t i = tl__mulhi(buf[b], nn, &frac);
            const tl_alias64 *sl = level_slots + i;
            int64_t take_alias = !(frac < sl->thresh);
            int32_t lv = take_alias ? sl->alias : sl->here;
            /* strictly greater: the first maximum is kept */
            int better = lv > best;
            best = better ? lv : best;
            best_slot = better ? (int64_t)(2 * i) + take_alias : best_slot;
            if (++c == n_candidates) {
                out[d] = (best_slot & 1) ? outcome_alias[best_slot >> 1]
                                         : outcome_here[best_slot >> 1];
                c = 0;
                best = -1;
                if (++d == count) return;
            }
        }
    }
}
