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
/* Alias tables (Vose) within each level over p restricted to the level: prob[i] and
 * alias[i] (a position in `order`) for positions i of the support.  scratch, small and
 * large are workspaces of length >= the largest level. */
void tl_level_alias_f64(const double *l, const int64_t *order, const int64_t *start,
                        ptrdiff_t L, double *prob, int64_t *alias, double *scratch,
                        int64_t *small, int64_t *large);
void tl_level_alias_f32(const float *l, const int64_t *order, const int64_t *start,
                        ptrdiff_t L, double *prob, int64_t *alias, double *scratch,
                        int64_t *small, int64_t *large);

/* One alias-table slot in 16 bytes, so that a draw touches one cache line: with
 * probability prob the slot's own payload, else its alias's (outcome indices for the
 * order-statistic sampler, level indices for the naive one). */
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

/* Order-statistic sampler: `count` outcome indices, cost independent of N.  slots are
 * the packed within-level alias tables (positions start[j]..start[j+1] for level j). */
void tl_bon_sample(bitgen_t *rng, int64_t count, const double *cdf, const int64_t *guide,
                   ptrdiff_t K, const int64_t *start, const tl_alias_slot *slots,
                   int64_t *out);

/* Alias table over arbitrary non-negative weights (Vose). */
void tl_alias_build(const double *weights, ptrdiff_t n, double *prob, int64_t *alias,
                    int64_t *small, int64_t *large);

/* Naive best-of-N: per sample, N candidates from p (alias table over the support whose
 * slots carry levels; outcome_here/outcome_alias give the outcome of slot i and of its
 * alias), keeps the first candidate of maximal level.  `stop` (tl_guard.h; may be NULL) is
 * polled once per batch of candidates: once it is raised the call returns with out
 * incomplete (one sample may be 2^62 candidates). */
void tl_bon_simulate(bitgen_t *rng, int64_t count, int64_t n_candidates, ptrdiff_t n_support,
                     const tl_alias_slot *level_slots, const int32_t *outcome_here,
                     const int32_t *outcome_alias, int64_t *out, const tl_stop_flag *stop);

#endif
