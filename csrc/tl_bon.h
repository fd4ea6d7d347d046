/* Best-of-N on a finite outcome set (SPEC section 3).
 *
 * Outcomes with p > 0 are grouped into reward levels v_1 < ... < v_L with masses m_j.
 * The maximum of N draws falls in level j with probability w_j = F_j^N - F_{j-1}^N,
 * F_j = m_1 + ... + m_j; the best-of-N law is pi_N(y) = p(y) w_j / m_j (ties uniform).
 * Everything is computed in log space from a_j = N log F_j, with F_j near 1 handled
 * through the survival S_j = m_{j+1} + ... + m_L summed from the top:
 *     ell_j = log(-log F_j)    (log S_j + log(-log1p(-S_j) / S_j) when S_j < 1/2)
 *     a_j = -exp(log N + ell_j)
 *     log w_j = a_j + log1mexp(a_j - a_{j-1}),  a_j - a_{j-1} = |a_j| expm1(ell_{j-1} - ell_j)
 * where ell_{j-1} - ell_j is taken as log1p(m_j / S_j) + (difference of the small
 * corrections) when both survivals are small, so that adjacent levels far in the tail
 * (S ~ e^-3000) keep their relative accuracy.  N is real >= 1 and enters only as log N.
 */
#ifndef TL_BON_H
#define TL_BON_H

#include <stdint.h>
#include "tl_config.h"
#include "tl_guard.h"
#include "numpy/random/bitgen.h"

/* Reward levels of one row.  Workspace arrays have length n; on return the first
 * n_support entries of `order` are the outcome indices with finite logits, sorted by
 * reward (stable: by index within a level), level j occupying order[start[j] ..
 * start[j+1]); values[j] and log_mass[j] (normalised) for j < n_levels.
 * Returns TL_FLAG_* bits (bad logits/rewards, empty row). */
typedef struct {
    ptrdiff_t n_levels, n_support;
    double log_norm; /* log sum exp(logits) (for display: norm_max + norm_log) */
    double norm_max, norm_log; /* the max logit and log sum exp(l - norm_max): log masses
                                * are (l - norm_max) - norm_log, exact at any offset */
} tl_levels;

/* `stop` (tl_guard.h; may be NULL) is polled between the steps (and the passes of the
 * sort, ~20 ms each at 10^7 outcomes): once raised, TL_FLAG_STOPPED is returned and the
 * outputs are incomplete. */
int tl_levels_f64(const double *l, const double *r, ptrdiff_t n, uint64_t *keys,
                  uint64_t *kbuf, int64_t *order, int64_t *obuf, double *values,
                  double *log_mass, int64_t *start, tl_levels *out, const tl_stop_flag *stop);
int tl_levels_f32(const float *l, const float *r, ptrdiff_t n, uint64_t *keys,
                  uint64_t *kbuf, int64_t *order, int64_t *obuf, double *values,
                  double *log_mass, int64_t *start, tl_levels *out, const tl_stop_flag *stop);

typedef struct {
    double kl;              /* KL(pi_N || p) */
    double expected_reward; /* E_{pi_N} r */
    double win_rate;        /* P(Y_N > Y) + P(Y_N = Y) / 2 against one draw Y ~ p */
    double total_mass;      /* sum_j w_j (1 up to rounding) */
} tl_bon_metrics;

/* The level law for log N = log_n (>= 0, +inf allowed: the argmax limit).  Arrays of
 * length L, all outputs: log_sf = log S_j, ell, a = N log F_j and log_w = log w_j;
 * log_cdf = log F_j where F_j <= 1/2 (NaN elsewhere: there F_j = 1 - S_j).  Unless
 * `full`, the levels below the first one whose weight is non-zero in double (F^N <
 * e^-800) are skipped: a = log_w = -inf there, which changes no metric and no sample,
 * and makes large N cost only the top levels.  With `full`, log_w is exact in log space
 * for every level (e.g. -2106 rather than -inf).  `stop` (tl_guard.h; may be NULL) is
 * polled every TL_LAW_POLL levels (~5 ms): once raised the law returns with its outputs
 * incomplete (10^7 levels take ~1.5 s). */
#define TL_LAW_POLL 65536
void tl_bon_law(const double *values, const double *log_mass, ptrdiff_t L, double log_n,
                double *log_cdf, double *log_sf, double *ell, double *a, double *log_w,
                int full, tl_bon_metrics *out, const tl_stop_flag *stop);

/* log pi_N(y) = log p_y + log_w_j - log_mass_j for y in level j (log_w_j itself for a
 * level of one outcome), with log p_y = (l_y - norm_max) - norm_log; -inf off the support.
 * out has length n (the row's outcomes). */
void tl_bon_logprobs_f64(const double *l, ptrdiff_t n, const int64_t *order,
                         const int64_t *start, ptrdiff_t L, const double *log_mass,
                         const double *log_w, double norm_max, double norm_log, double *out);
void tl_bon_logprobs_f32(const float *l, ptrdiff_t n, const int64_t *order,
                         const int64_t *start, ptrdiff_t L, const double *log_mass,
                         const double *log_w, double norm_max, double norm_log, double *out);

/* ---- sampling ---- */
/* Tables of the lattice samplers (csrc/tl_lattice.h; numpy bit generators, doubles).
 * Alias tables (Vose) within each level over p restricted to the level: prob[i] and
 * alias[i] (a position in `order`) for positions i of the support.  scratch, small and
 * large are workspaces of length >= the largest level. */
void tl_level_alias_f64(const double *l, const int64_t *order, const int64_t *start,
                        ptrdiff_t L, double *prob, int64_t *alias, double *scratch,
                        int64_t *small, int64_t *large);
void tl_level_alias_f32(const float *l, const int64_t *order, const int64_t *start,
                        ptrdiff_t L, double *prob, int64_t *alias, double *scratch,
                        int64_t *small, int64_t *large);

/* One alias-table slot in 16 bytes, so that a draw touches one cache line: with
 * probability prob the slot's own payload, else its alias's (token indices). */
typedef struct {
    double prob;
    int32_t here, alias;
} tl_alias_slot;

/* slots[i] = {prob[i], order[i], order[alias[i]]} */
void tl_pack_outcomes(const double *prob, const int64_t *alias, const int64_t *order,
                      ptrdiff_t n, tl_alias_slot *slots);

/* Inverse-CDF guide table for the level of the maximum: cdf[j] = F_j^N (cdf[L-1] = 1),
 * guide[k] = min{ j : cdf[j] > k / K } for k < K. */
void tl_bon_guide(const double *a /* N log F_j */, ptrdiff_t L, double *cdf, int64_t *guide,
                  ptrdiff_t K);

/* Alias table over arbitrary non-negative weights (Vose). */
void tl_alias_build(const double *weights, ptrdiff_t n, double *prob, int64_t *alias,
                    int64_t *small, int64_t *large);

/* ---- random words: PCG64, inline ----
 * The samplers below draw from one stream of 64-bit words per row: the PCG64 generator
 * of NumPy (128-bit LCG, XSL-RR output), seeded like numpy.random.PCG64(seed_seq) from the
 * four words seed_seq.generate_state(4, uint64), so that word k equals the k-th word of
 * PCG64(seed_seq).random_raw().  Inline (no call through a function pointer per word) and
 * generated four words at a time from four interleaved states (the stream's states k+1..k+4
 * stepped by the fourth power of the LCG): four independent multiply chains instead of one.
 * A block of draws starts from the stream advanced to its first word (O(log k) jump), so
 * the words a draw uses depend on its index only, never on threads or block sizes. */
typedef struct {
    uint64_t lo, hi;
} tl_u128;

typedef struct {
    tl_u128 state, inc;
} tl_pcg64;

/* as NumPy's pcg64_set_seed(words, words + 2): state from words[0..1] (high word first),
 * stream increment from words[2..3] */
void tl_pcg64_seed(tl_pcg64 *g, const uint64_t words[4]);
/* skips `delta` words (any 128-bit count; the period is 2^128) */
void tl_pcg64_advance(tl_pcg64 *g, tl_u128 delta);
/* a * b as a 128-bit count (for block offsets such as draw index * candidates) */
tl_u128 tl_u128_mul64(uint64_t a, uint64_t b);
/* the stream's next word (g advances by one): the bitgen interface of tl_rng.h */
uint64_t tl_pcg64_next(tl_pcg64 *g);
/* the next n words of the stream (g itself is left unchanged) */
void tl_pcg64_words(const tl_pcg64 *g, uint64_t *out, ptrdiff_t n);

/* ---- alias tables drawn with one 64-bit word ----
 * A draw takes one word u: the product u * n (128 bits) gives the slot i = its high word
 * and a uniform 64-bit fraction = its low word; the draw is `here` if the fraction is
 * below `thresh`, else `alias`.  P(slot i, here) = thresh_i / (n 2^64) to within 2^-64:
 * exact to the resolution of the word, with one 16-byte load per draw. */
typedef struct {
    uint64_t thresh; /* P(here | slot) = thresh / 2^64; slots with alias == here: any */
    int32_t here, alias;
} tl_alias64;

/* Walker's alias table over weights w[0..n) (non-negative, positive sum), built in one
 * sweep over the small items, slot i carrying payload[i]: returns 0, or -1 if the weights
 * sum to 0 or not to a finite number.  prob (doubles) and stack (int32) are workspaces of
 * length n. */
int tl_alias64_build(const double *w, const int32_t *payload, ptrdiff_t n, tl_alias64 *slots,
                     double *prob, int32_t *stack);

/* out[d] = the draw of word d of the stream starting at g, for d < count (one word each;
 * n = 1 uses none).  n >= 1 slots. */
void tl_alias64_sample(const tl_pcg64 *g, int64_t count, const tl_alias64 *slots, ptrdiff_t n,
                       int64_t *out);

/* ---- best-of-N by the order statistic: one alias table over pi_N ----
 * pi_N(y) = p(y) w_j / m_j (y in level j): the level weights w_j, then the outcome
 * weights, then one alias table over the outcomes of positive weight. */

/* Level weights w[0..L) of the best-of-N law, for drawing.  For log_n <= TL_SAMPLE_LINEAR
 * (N <= e^600, finite in double): in linear space from the masses m_j, with F_j = 1 - S_j
 * (survival summed from the top) where S_j < 1/2, else summed from the bottom, and
 *     t_j = log(F_{j-1} / F_j) = log1p(-m_j / F_j)   (the ratio itself where m_j > F_j / 2)
 *     log F_j = sum_{k > j} t_k                      (from the top, compensated)
 *     w_j = F_j^N (1 - (F_{j-1}/F_j)^N) = -exp(N log F_j) expm1(N t_j),
 * relative accuracy ~ eps (1 + N log(1/F_j)) per level; levels whose weight is below e^-800
 * are left at 0 unvisited; a mass below the double range (< e^-745) counts 0, which moves a
 * weight of at most N e^-745 < e^-145.  Above, the exact log-space law (tl_bon_law, whose
 * cost is the levels of non-zero weight) and w_j = exp(log w_j).
 * s0..s4 are workspaces of length L.  Returns the lowest level of non-zero weight (w_j = 0
 * below), or -1 once `stop` (tl_guard.h; may be NULL) is raised. */
#define TL_SAMPLE_LINEAR 600.0
ptrdiff_t tl_bon_level_weights(const double *values, const double *log_mass, ptrdiff_t L,
                               double log_n, double *w, double *s0, double *s1, double *s2,
                               double *s3, double *s4, const tl_stop_flag *stop);

/* Outcome weights of pi_N for the levels first..L-1 of positive weight: wout[k] and the
 * outcome index payload[k] for k < the returned count (the outcomes of positive weight, in
 * level order).  w_j itself for a level of one outcome, else
 * exp(log p_y - log m_j) w_j with log p_y = (l_y - norm_max) - norm_log. */
ptrdiff_t tl_bon_outcome_weights_f64(const double *l, const int64_t *order, const int64_t *start,
                                     ptrdiff_t L, ptrdiff_t first, const double *log_mass,
                                     const double *w, double norm_max, double norm_log,
                                     double *wout, int32_t *payload);
ptrdiff_t tl_bon_outcome_weights_f32(const float *l, const int64_t *order, const int64_t *start,
                                     ptrdiff_t L, ptrdiff_t first, const double *log_mass,
                                     const double *w, double norm_max, double norm_log,
                                     double *wout, int32_t *payload);

/* N = 1 needs no levels: pi_1 = p.  The checks of tl_levels (returns the same TL_FLAG_*
 * bits: bad logits/rewards, empty row), then wout[k] = exp(l_y - max l) and payload[k] = y
 * over the outcomes of positive weight; *n_out = their count. */
int tl_softmax_weights_f64(const double *l, const double *r, ptrdiff_t n, double *wout,
                           int32_t *payload, ptrdiff_t *n_out);
int tl_softmax_weights_f32(const float *l, const float *r, ptrdiff_t n, double *wout,
                           int32_t *payload, ptrdiff_t *n_out);

/* ---- naive best-of-N ----
 * Per sample, N candidates from p (an alias table over the support whose slots carry
 * reward levels; outcome_here/outcome_alias give the outcome of slot i and of its alias),
 * keeping the first candidate of maximal level.  Sample d uses words d N .. d N + N - 1 of
 * the stream starting at g.  `stop` (tl_guard.h; may be NULL) is polled once per batch of
 * candidates: once it is raised the call returns with out incomplete (one sample may be
 * 2^62 candidates). */
void tl_bon_simulate(const tl_pcg64 *g, int64_t count, int64_t n_candidates, ptrdiff_t n,
                     const tl_alias64 *level_slots, const int32_t *outcome_here,
                     const int32_t *outcome_alias, int64_t *out, const tl_stop_flag *stop);

/* The naive sampler's table: `slots` built over positions (payload = position in the
 * level order) become slots over levels, with the outcomes of each slot and of its alias
 * in outcome_here/outcome_alias. */
void tl_bon_naive_relabel(tl_alias64 *slots, ptrdiff_t n, const int64_t *order,
                          const int64_t *start, ptrdiff_t L, int32_t *level_of_pos,
                          int32_t *outcome_here, int32_t *outcome_alias);

/* ---- best-of-N draws in one pass over a row (a few draws per row) ----
 * For a few draws per row, building the levels (a sort) and an alias table costs far more
 * than the draws.  tl_bon_draw_row draws from pi_N without either: with U uniform, the
 * level of the maximum of N draws is the lowest reward level v with F(v) >= U^(1/N), i.e.
 * the lowest level whose survival S(v) = P(r > v) is <= t = 1 - U^(1/N) (taken in log
 * space: log t = log(-expm1(-exp(log(-log U) - log N)))), and the outcome within it is
 * drawn with probability p(y) / m_v.  Per row:
 *   1. one vectorised pass: checks (the flags of tl_levels), the max logit m, the least
 *      finite logit, the reward range of the support;
 *   2. one vectorised pass: weights w = e^(l - m) by tl_vexp_det (the same bits on every
 *      SIMD variant; 0 below e^-708) into the workspace, and each outcome's bin among B
 *      equal-width reward bins (B = 64 .. 1024 with the row length);
 *   3. a histogram of the weights by bin (scalar, fixed order) and the cumulative mass from
 *      the top bin: the bin of the draw's threshold tau = t W (W the total weight), then
 *      only that bin's outcomes, again by bins of their own reward range (equal widths, or
 *      equal widths of the rewards' order-preserving bits where a bin held more than 1/16
 *      of its list: heavy tails; a reward shared by half of a list split off as a level of
 *      its own: sparse rewards; at most TL_DRAW_DEPTH times), then sorted by reward: the
 *      level, then the outcome (a second uniform against the running sum of the level's
 *      weights in index order).
 * Draw d uses words[2d] (the level) and words[2d + 1] (the outcome within it).  Sums are
 * in fixed orders (scalar code): the draws are the same on every variant and thread count.
 * Each level's probability is its exact value up to the rounding of the sums and of the
 * uniforms (an absolute error of a few 1e-16, relative accuracy for the top levels of large
 * N).  Weights flushed to 0 (logits more than 708 below the max) are impossible outcomes
 * here: for log N <= TL_DRAW_LOG_N_EXACT their probability under pi_N is below
 * V e^(600 - 708) < e^-86; beyond, such a row returns TL_DRAW_EXACT (the caller then uses
 * the alias-table path, tl_bon_level_weights).
 *
 * Returns 0 (out[0 .. nd) written), TL_FLAG_* bits (bad input, as tl_levels; nothing
 * written) or TL_DRAW_EXACT.  nd <= TL_DRAW_MAX; n < 2^31.  scratch: the bytes of
 * tl_bon_draw_scratch_bytes(n), 64-byte aligned, one per thread, set up once by
 * tl_bon_draw_scratch_init. */
#define TL_DRAW_MAX 16
#define TL_DRAW_BINS 1024
#define TL_DRAW_SMALL 48
#define TL_DRAW_DEPTH 3
#define TL_DRAW_EXACT (-1)
#define TL_DRAW_LOG_N_EXACT 600.0

typedef struct {
    double *w, *rr;              /* weights; float32 rewards widened */
    uint16_t *bins;              /* bin of each outcome / list element */
    int32_t *pos;                /* positions gathered from a list */
    double *lr[TL_DRAW_DEPTH + 2], *lw[TL_DRAW_DEPTH + 2]; /* lists of depth 1 .. DEPTH + 1 */
    int32_t *li[TL_DRAW_DEPTH + 2];
    uint64_t *keys, *kbuf;       /* sorts */
    int64_t *vals, *vbuf;
    double *hist;                /* 4 x TL_DRAW_BINS */
    int32_t *cnt;                /* 4 x TL_DRAW_BINS */
    double *cum;                 /* TL_DRAW_BINS + 1 */
    int16_t *slot;               /* TL_DRAW_BINS */
} tl_bon_draw_ws;

/* the workspace carved from `base` (ws non-NULL), or only its size (ws NULL) */
static inline size_t tl_bon_draw_ws_layout(char *base, ptrdiff_t n, tl_bon_draw_ws *ws) {
    size_t off = 0, v = (size_t)n + 1, nb = TL_DRAW_BINS;
#define TL__DRAW_TAKE(field, type, count)                                                   \
    do {                                                                                   \
        off = (off + 63) & ~(size_t)63;                                                    \
        if (ws) ws->field = (type *)(base + off);                                          \
        off += (size_t)(count) * sizeof(type);                                             \
    } while (0)
    TL__DRAW_TAKE(w, double, v);
    TL__DRAW_TAKE(rr, double, v);
    TL__DRAW_TAKE(bins, uint16_t, v);
    TL__DRAW_TAKE(pos, int32_t, v);
    for (int d = 0; d < TL_DRAW_DEPTH + 2; d++) {
        if (d == 0) {
            if (ws) ws->lr[0] = ws->lw[0] = NULL, ws->li[0] = NULL;
            continue;
        }
        TL__DRAW_TAKE(lr[d], double, v);
        TL__DRAW_TAKE(lw[d], double, v);
        TL__DRAW_TAKE(li[d], int32_t, v);
    }
    TL__DRAW_TAKE(keys, uint64_t, v);
    TL__DRAW_TAKE(kbuf, uint64_t, v);
    TL__DRAW_TAKE(vals, int64_t, v);
    TL__DRAW_TAKE(vbuf, int64_t, v);
    TL__DRAW_TAKE(hist, double, 4 * nb);
    TL__DRAW_TAKE(cnt, int32_t, 4 * nb);
    TL__DRAW_TAKE(cum, double, nb + 1);
    TL__DRAW_TAKE(slot, int16_t, nb);
#undef TL__DRAW_TAKE
    return off + 64;
}

static inline size_t tl_bon_draw_scratch_bytes(ptrdiff_t n) {
    return tl_bon_draw_ws_layout(NULL, n, NULL);
}

/* a new scratch block made ready (its bin slots all -1: each call leaves them so) */
static inline void tl_bon_draw_scratch_init(void *scratch, ptrdiff_t n) {
    tl_bon_draw_ws ws;
    tl_bon_draw_ws_layout((char *)scratch, n, &ws);
    for (int b = 0; b < TL_DRAW_BINS; b++) ws.slot[b] = -1;
}

/* The selection part of tl_bon_draw_row (scalar code; each variant calls its own copy):
 * the draws of words[0 .. 2 nd) among the n outcomes whose weights are ws->w and rewards R,
 * all of one level (one_level), or binned into ws->bins (B > 0 bins) or not (B = 0). */
void tl_bon_draw_select(tl_bon_draw_ws *ws, const double *R, ptrdiff_t n, int one_level, int B,
                        double log_n, const uint64_t *words, int nd, int64_t *out);

ptrdiff_t tl_bon_draw_row_f64(const double *l, const double *r, ptrdiff_t n, double log_n,
                              const uint64_t *words, int nd, int64_t *out, void *scratch);
ptrdiff_t tl_bon_draw_row_f32(const float *l, const float *r, ptrdiff_t n, double log_n,
                              const uint64_t *words, int nd, int64_t *out, void *scratch);

#endif
