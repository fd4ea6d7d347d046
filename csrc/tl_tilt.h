/* Exponential tilting of one distribution (SPEC section 2).
 *
 * A row is a distribution p = softmax(logits) over n outcomes with rewards r.  For a tilt
 * lam the kernels compute, in one pass over the row,
 *     A        = log sum_i exp(l_i)                      (normaliser of p)
 *     Lambda   = log sum_i p_i exp(lam r_i)              (cumulant generating function)
 *     mean     = E_phi r,  variance = Var_phi r,  kl = lam mean - Lambda = KL(phi || p)
 * with phi_i = p_i exp(lam r_i - Lambda).
 *
 * Rewards are shifted by a per-row constant c (any reward of the support) before use.
 * Two accumulation modes:
 *   TL_MODE_PRODUCT   tilted weights a_i * (1 + expm1(u_i)) with a_i = exp(l_i - max l),
 *                     u_i = lam (r_i - c), and E = sum a_i expm1(u_i) kept separately, as
 *                     lam sum a_i (r_i - c) + sum a_i (expm1(u_i) - u_i) (the second sum
 *                     has no cancellation), so Lambda - lam c = log1p(E / sum a_i) keeps
 *                     full relative accuracy as lam -> 0, also when the p-mean of r is
 *                     close to c, and kl does not cancel catastrophically.  The tilted
 *                     mean is formed the same way.  Valid (no
 *                     overflow, no lost mass) while |lam| * (reward range of the support)
 *                     <= TL_PRODUCT_RANGE; tl_tilt_product_ok() says whether it was.
 *   TL_MODE_STANDARD  separate running maxima for l_i and l_i + u_i; valid for any lam.
 *                     Rewards are then shifted by the reward of the dominant outcome
 *                     (argmax of l + lam r), so nothing of size lam * r cancels.
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

typedef struct {
    double m_l, s_l; /* max logit of the support, sum exp(l - m_l) */
    double e;        /* product mode: sum a expm1(u), a = exp(l - m_l); KL mode:
                      * sum a g(u - lc) */
    double e2, s1, t1; /* product mode: sum a (expm1(u) - u) >= 0, sum a (r - c) and
                      * sum a expm1(u) (r - c).  For |u| <= 1 everywhere, sum a expm1(u) =
                      * lam s1 + e2 and E_phi (r - c) = (s1 + t1) / s_b keep their relative
                      * accuracy when the first-order terms cancel (p-mean of r close to
                      * c, small lam), where e and the centred sums would not */
    double m_x;      /* standard mode: max of l + u (scale of the tilted sums) */
    double s_b;      /* tilted weight sum (units e^{m_l} in product mode, e^{m_x} in standard) */
    double mu, m2;   /* tilted mean of r - c; tilted sum of squared deviations (units of s_b) */
    double r_lo, r_hi; /* reward range over the support */
    int flags;
} tl_tilt_acc;

typedef struct {
    double log_norm;      /* A */
    double log_partition; /* Lambda(lam) */
    double lc;            /* Lambda(lam) - lam c, the shifted log partition */
    double mean, variance, kl;
    double shift;         /* the c used: lc and the logprob/moment kernels refer to it */
    double r_min, r_max;  /* reward range of the support */
    int flags;
} tl_tilt_result;

/* lc is used by TL_MODE_KL only */
void tl_tilt_chunk_f64(const double *l, const double *r, ptrdiff_t n, double lam, double c,
                       double lc, int mode, tl_tilt_acc *acc);
void tl_tilt_chunk_f32(const float *l, const float *r, ptrdiff_t n, double lam, double c,
                       double lc, int mode, tl_tilt_acc *acc);
void tl_tilt_merge(tl_tilt_acc *into, const tl_tilt_acc *other, int mode);
/* 1 if a product-mode accumulation of this row is valid for this lam */
int tl_tilt_product_ok(const tl_tilt_acc *acc, double lam);
void tl_tilt_finalize(const tl_tilt_acc *acc, double lam, double c, int mode,
                      tl_tilt_result *out);
/* After a product-mode pass: 1 if kl = lam (mean - c) - lc cancelled enough that the
 * TL_MODE_KL pass should recompute it. */
int tl_tilt_kl_pass_advised(const tl_tilt_result *res, double lam);
/* KL from a TL_MODE_KL accumulation */
double tl_tilt_kl_value(const tl_tilt_acc *acc);

/* Index of the maximum of l + lam r over the support (first one on ties), -1 if none;
 * *best gets the maximum.  Rewards are shifted by the reward there (the dominant
 * outcome): for large lam nothing of size lam * r then cancels in kl or in the
 * log-probabilities, and a concentrated tilt keeps the relative accuracy of its tiny
 * variance.  Chunks merge by "larger value wins, earlier chunk on ties". */
ptrdiff_t tl_argmax_tilted_f64(const double *l, const double *r, ptrdiff_t n, double lam,
                               double *best);
ptrdiff_t tl_argmax_tilted_f32(const float *l, const float *r, ptrdiff_t n, double lam,
                               double *best);

/* Index of the first finite logit (the default shift c is the reward there), -1 if none. */
ptrdiff_t tl_first_support_f64(const double *l, ptrdiff_t n);
ptrdiff_t tl_first_support_f32(const float *l, ptrdiff_t n);

/* ---- row information: normaliser, base mean/variance, and the extreme reward sets ---- */
typedef struct {
    double m_l, s_l;      /* normaliser: max logit, sum exp(l - m_l) */
    double mu, m2;        /* mean of r - c under p, sum of squared deviations (units e^{m_l}) */
    double r_hi, m_hi, s_hi, in_hi, out_hi; /* max reward; log-sum-exp of the logits on the
                            argmax set as (m_hi, s_hi); its mass and the mass below it in
                            units e^{m_l} */
    double r_lo, m_lo, s_lo, in_lo, out_lo; /* the same for the minimum reward */
    int flags;
} tl_info_acc;

typedef struct {
    double log_norm, mean, variance;
    double r_max, log_p_max; /* log p(argmax set) (<= 0); kl_max = -log_p_max */
    double r_min, log_p_min;
    double lse_max, lse_min; /* log sum exp(l) over the argmax / argmin set (unnormalised) */
    int flags;
} tl_info_result;

void tl_info_chunk_f64(const double *l, const double *r, ptrdiff_t n, double c, tl_info_acc *acc);
void tl_info_chunk_f32(const float *l, const float *r, ptrdiff_t n, double c, tl_info_acc *acc);
void tl_info_merge(tl_info_acc *into, const tl_info_acc *other);
void tl_info_finalize(const tl_info_acc *acc, double c, tl_info_result *out);

/* ---- elementwise outputs ---- */
/* log phi_i = (l_i - log_norm) + (lam (r_i - c) - lc) */
void tl_tilt_logprobs_f64(const double *l, const double *r, ptrdiff_t n, double lam, double c,
                          double log_norm, double lc, double *out);
void tl_tilt_logprobs_f32(const float *l, const float *r, ptrdiff_t n, double lam, double c,
                          double log_norm, double lc, double *out);
/* lam = +-inf limit: p restricted to {r == r_star}; log_mass_star = log sum of exp(l) there */
void tl_limit_logprobs_f64(const double *l, const double *r, ptrdiff_t n, double r_star,
                           double log_mass_star, double *out);
void tl_limit_logprobs_f32(const float *l, const float *r, ptrdiff_t n, double r_star,
                           double log_mass_star, double *out);

/* ---- scaled moments under phi: sums[j] += sum_i phi_i z_i^j, z = (r - mean) * inv_sd,
 *      j = 0..order; phi_i = exp((l_i - log_norm) + (lam (r_i - c) - lc)).  Callers scale
 *      by the largest |r - mean| on the support (not the sd): |z| <= 1, so no power of z
 *      overflows even for a concentrated phi ---- */
#define TL_MAX_ORDER 32
void tl_moments_chunk_f64(const double *l, const double *r, ptrdiff_t n, double lam, double c,
                          double log_norm, double lc, double mean, double inv_sd, int order,
                          double *sums);
void tl_moments_chunk_f32(const float *l, const float *r, ptrdiff_t n, double lam, double c,
                          double log_norm, double lc, double mean, double inv_sd, int order,
                          double *sums);
/* cumulants kappa_1..kappa_order (kappa_1 = mean) from the moment sums above, taken with
 * z = (r - mean) / scale */
void tl_cumulants_from_moments(const double *sums, int order, double mean, double scale,
                               double *kappa);

#endif
