/* Exponential tilting of one distribution (SPEC section 2).
 *
 * A row is a distribution p = softmax(logits) over n outcomes with rewards r.  For a tilt
 * lam the kernels compute, in one pass over the row,
 *     A        = log sum_i exp(l_i)                      (normaliser of p)
 *     Lambda   = log sum_i p_i exp(lam r_i)              (cumulant generating function)
 *     mean     = E_phi r,  variance = Var_phi r,  kl = lam mean - Lambda = KL(phi || p)
 * with phi_i = p_i exp(lam r_i - Lambda).
 *
 * Exactness at any offset and scale.  Three per-row constants, fixed by a first pass over
 * the row (tl_prescan), keep every quantity free of cancellation of the size of the inputs:
 *   - the dominant outcome j* = argmax of l + lam r over the support (first one on ties),
 *     found by comparing candidates with the best so far as (l_i - l_b) + lam (r_i - r_b),
 *     never by forming l + lam r (which absorbs lam r next to a logit of 1e15, and
 *     overflows for lam r ~ 1e308);
 *   - its logit `anchor` and its reward `c`: the kernels read x_i = (l_i - anchor) +
 *     lam (r_i - c) <= 0 (up to rounding), so no logit offset (up to +-1e308) and no lam r
 *     of any size enters a sum; the log normaliser is kept as (max logit, log of the sum
 *     relative to it) and never added to a log-probability;
 *   - a power of two 2^e with (reward range of the support) / 2^e in [1, 2): the moment
 *     sums use d_s = (r - c) 2^-e, so subnormal and huge reward spreads (1e-320 .. 1e308)
 *     neither underflow nor overflow there; the outputs are scaled back exactly (a mean
 *     or variance beyond the double range becomes +-inf, a tiny one a subnormal or 0).
 *     Scaling by a power of two is exact, so results are bitwise the same as without it
 *     wherever nothing is subnormal, and tilt_stats(l, 2^k r, 2^-k lam) is bitwise the
 *     scaled tilt_stats(l, r, lam).
 *
 * Accumulation modes:
 *   TL_MODE_PRODUCT   tilted weights a_i * (1 + expm1(u_i)) with a_i = exp(l_i - max l),
 *                     u_i = lam (r_i - c), and E = sum a_i expm1(u_i) kept separately, as
 *                     lam sum a_i (r_i - c) + sum a_i (expm1(u_i) - u_i) (the second sum
 *                     has no cancellation), so Lambda - lam c = log1p(E / sum a_i) keeps
 *                     full relative accuracy as lam -> 0, also when the p-mean of r is
 *                     close to c, and kl does not cancel catastrophically.  The tilted
 *                     mean is formed the same way.  Valid (no overflow, no lost mass)
 *                     while |lam| * (reward range of the support) <= TL_PRODUCT_RANGE;
 *                     tl_tilt_product_ok() says whether it was.
 *   TL_MODE_STANDARD  running maxima of l and of x = (l - anchor) + lam (r - c); valid for
 *                     any finite lam.  Where x itself overflows (logits and lam r both of
 *                     the size of DBL_MAX, e.g. l = -1.7e308 and lam r = 1.7e308, whose sum
 *                     is moderate) it is evaluated at half scale.
 *   TL_MODE_KL        a second pass, given lc = Lambda - lam c from a product pass, that
 *                     sums KL = sum_i p_i g(u_i - lc) with g(v) = v e^v - e^v + 1 >= 0: no
 *                     cancellation, and an error d in lc moves KL by a relative d only.
 *                     Run when lam (mean - c) - lc cancelled (tl_tilt_kl_pass_advised),
 *                     i.e. for small tilts, where KL is well conditioned but tiny.
 */
#ifndef TL_TILT_H
#define TL_TILT_H

#include "tl_config.h"

#define TL_MODE_PRODUCT 0
#define TL_MODE_STANDARD 1
#define TL_MODE_KL 2 /* second pass: KL = sum p g(lam (r - c) - lc), see tl_kl_term */

/* The per-row constants of a tilted pass (see above). */
typedef struct {
    double lam;       /* the tilt (finite) */
    double c;         /* reward of the dominant outcome */
    double anchor;    /* logit of the dominant outcome */
    double inv_scale; /* 2^-e: the moment sums use (r - c) * inv_scale */
    int e;
    double lc;        /* TL_MODE_KL only: Lambda - lam c from the product pass */
    int flags;        /* TL_FLAG_REWARD_RANGE from the first pass */
    /* from the first pass: the largest finite logit and the raw reward range of the
     * support (the chunk kernels' fast path uses them as fixed references) */
    double l_max, r_lo, r_hi;
} tl_tilt_row;

typedef struct {
    double m_l, s_l; /* max logit of the support, sum exp(l - m_l) */
    double e;        /* product mode: sum a expm1(u), a = exp(l - m_l); KL mode:
                      * sum a g(u - lc) */
    double e2, s1, t1; /* product mode: sum a (expm1(u) - u) >= 0, sum a d_s and
                      * sum a expm1(u) d_s (d_s = (r - c) 2^-e).  For |u| <= 1 everywhere,
                      * sum a expm1(u) = lam 2^e s1 + e2 and E_phi d_s = (s1 + t1) / s_b keep
                      * their relative accuracy when the first-order terms cancel (p-mean
                      * of r close to c, small lam), where e and the centred sums would not */
    double m_x;      /* standard mode: max of x (scale of the tilted sums) */
    double s_b;      /* tilted weight sum (units e^{m_l} in product mode, e^{m_x} in standard) */
    double mu, m2;   /* tilted mean of d_s; tilted sum of squared deviations (units of s_b) */
    double r_lo, r_hi; /* range of r - c over the support (unscaled) */
    int flags;
} tl_tilt_acc;

typedef struct {
    double log_norm;      /* A (for display only: log-probabilities use z) */
    double log_partition; /* Lambda(lam) */
    double lc;            /* Lambda(lam) - lam c, the shifted log partition */
    double z;             /* log sum exp((l - anchor) + lam (r - c)): log phi = x - z */
    double mean, variance, kl;
    double mean_s, var_s; /* (mean - c) 2^-e and variance 2^-2e (no under/overflow) */
    int e;
    double shift, anchor; /* c and the anchor logit */
    double r_min, r_max;  /* reward range of the support */
    int flags;
} tl_tilt_result;

/* lc in `row` is used by TL_MODE_KL only */
void tl_tilt_chunk_f64(const double *l, const double *r, ptrdiff_t n, const tl_tilt_row *row,
                       int mode, tl_tilt_acc *acc);
void tl_tilt_chunk_f32(const float *l, const float *r, ptrdiff_t n, const tl_tilt_row *row,
                       int mode, tl_tilt_acc *acc);
void tl_tilt_merge(tl_tilt_acc *into, const tl_tilt_acc *other, int mode);
/* 1 if a product-mode accumulation of this row is valid for this lam */
int tl_tilt_product_ok(const tl_tilt_acc *acc, double lam);
/* The same decision before the pass, from the first pass's reward range (a row whose
 * product pass would be wasted starts in the standard mode). */
int tl_tilt_row_product_ok(const tl_tilt_row *row);
void tl_tilt_finalize(const tl_tilt_acc *acc, const tl_tilt_row *row, int mode,
                      tl_tilt_result *out);
/* After a product-mode pass: 1 if kl = lam (mean - c) - lc cancelled enough that the
 * TL_MODE_KL pass should recompute it. */
int tl_tilt_kl_pass_advised(const tl_tilt_result *res, double lam);
/* KL from a TL_MODE_KL accumulation */
double tl_tilt_kl_value(const tl_tilt_acc *acc);

/* ---- the first pass of a row ----
 * Index of the dominant outcome (the maximum of l + lam r over the support, first one on
 * ties; -1 if the row has no finite logit), compared as tl_tilted_diff does, the
 * reward range [*r_lo, *r_hi] over the support and the largest finite logit *l_max (-inf
 * if none).  Chunks merge by "the later chunk's candidate wins if
 * tl_tilted_diff(candidate, best) > 0" (ranges and maxima by min/max). */
ptrdiff_t tl_prescan_f64(const double *l, const double *r, ptrdiff_t n, double lam,
                         double *r_lo, double *r_hi, double *l_max);
ptrdiff_t tl_prescan_f32(const float *l, const float *r, ptrdiff_t n, double lam,
                         double *r_lo, double *r_hi, double *l_max);
/* (l_i + lam r_i) - (l_b + lam r_b) without forming either sum, evaluated at half scale
 * where the two parts overflow with opposite signs (no NaN for finite inputs). */
double tl_tilted_diff(double l_i, double r_i, double l_b, double r_b, double lam);
/* The power of two of the moment sums for a reward range (tl_tilt_row.e). */
int tl_range_exponent(double range);
/* Fills row->c, anchor, e, inv_scale, r_lo, r_hi, l_max from the dominant outcome's
 * (logit, reward), the support's reward range and its largest logit (lam and lc are left
 * to the caller). */
void tl_tilt_row_init(tl_tilt_row *row, double anchor, double c, double r_lo, double r_hi,
                      double l_max);

/* ---- row information: normaliser, base mean/variance, and the extreme reward sets ---- */
typedef struct {
    double m_l, s_l;      /* normaliser: max logit, sum exp(l - m_l) */
    double mu, m2;        /* mean of d_s under p, sum of squared deviations (units e^{m_l}) */
    double r_hi, m_hi, s_hi, in_hi, out_hi; /* max reward; log-sum-exp of the logits on the
                            argmax set as (m_hi, s_hi); its mass and the mass below it in
                            units e^{m_l} */
    double r_lo, m_lo, s_lo, in_lo, out_lo; /* the same for the minimum reward */
    int flags;
} tl_info_acc;

typedef struct {
    double log_norm, mean, variance;
    double var_s;            /* variance 2^-2e */
    int e;
    double r_max, log_p_max; /* log p(argmax set) (<= 0); kl_max = -log_p_max */
    double r_min, log_p_min;
    /* log sum exp(l) over the argmax / argmin set as (max logit, log of the sum relative
     * to it) */
    double m_max, ls_max, m_min, ls_min;
    int flags;
} tl_info_result;

/* row->c and row->inv_scale are used (lam is ignored) */
void tl_info_chunk_f64(const double *l, const double *r, ptrdiff_t n, const tl_tilt_row *row,
                       tl_info_acc *acc);
void tl_info_chunk_f32(const float *l, const float *r, ptrdiff_t n, const tl_tilt_row *row,
                       tl_info_acc *acc);
void tl_info_merge(tl_info_acc *into, const tl_info_acc *other);
void tl_info_finalize(const tl_info_acc *acc, const tl_tilt_row *row, tl_info_result *out);

/* ---- elementwise outputs under phi: log phi_i = x_i - z with
 *      x_i = (l_i - anchor) + lam (r_i - c) (-inf off the support) ---- */
typedef struct {
    double lam, c, anchor, z;
    double inv_scale;          /* d_s = (r - c) inv_scale */
    double center, inv_spread; /* moments of (d_s - center) inv_spread */
} tl_phi_params;

void tl_tilt_logprobs_f64(const double *l, const double *r, ptrdiff_t n,
                          const tl_phi_params *p, double *out);
void tl_tilt_logprobs_f32(const float *l, const float *r, ptrdiff_t n,
                          const tl_phi_params *p, double *out);
/* lam = +-inf limit: p restricted to {r == r_star}; the log-sum-exp of the logits there is
 * m_star + ls_star */
void tl_limit_logprobs_f64(const double *l, const double *r, ptrdiff_t n, double r_star,
                           double m_star, double ls_star, double *out);
void tl_limit_logprobs_f32(const float *l, const float *r, ptrdiff_t n, double r_star,
                           double m_star, double ls_star, double *out);

/* ---- scaled moments under phi: sums[j] += sum_i phi_i z_i^j, j = 0..order, with
 *      z = (d_s - center) * inv_spread.  Callers take center = E_phi d_s and inv_spread the
 *      reciprocal of the largest |d_s - center| on the support: |z| <= 1, so no power of
 *      z overflows even for a concentrated phi ---- */
#define TL_MAX_ORDER 32
void tl_moments_chunk_f64(const double *l, const double *r, ptrdiff_t n,
                          const tl_phi_params *p, int order, double *sums);
void tl_moments_chunk_f32(const float *l, const float *r, ptrdiff_t n,
                          const tl_phi_params *p, int order, double *sums);
/* The cumulants kappa_1..kappa_order of d_s (kappa_1 = its mean) from the moment sums
 * above, taken with z = (d_s - center) / spread; callers scale kappa_k by 2^(k e).  A
 * cumulant that is exactly 0 stays 0 (no 0 * inf). */
void tl_cumulants_from_moments(const double *sums, int order, double center, double spread,
                               double *kappa);

#endif
