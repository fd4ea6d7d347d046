/* KL(p || q) between two distributions given as logits on the same outcomes.
 *
 * With d_i = lq_i - lp_i on the support of p, KL = (A_q - A_p) - E_p d, where A are the
 * log normalisers.  As in tl_tilt.h, the product mode computes A_q - A_p on the support of
 * p as c + log1p(sum a_i expm1(d_i - c) / sum a_i) (a_i = exp(lp_i - max lp)), which keeps
 * KL accurate when q is close to p; mass that q puts outside the support of p is added
 * separately.  The standard mode (separate normalisers) is used when the spread of d over
 * the support exceeds TL_PRODUCT_RANGE.  KL is +inf (TL_FLAG_INF_KL) where q = 0 < p.
 */
#ifndef TL_KL_H
#define TL_KL_H

#include "tl_config.h"
#include "tl_tilt.h" /* TL_MODE_* */

#define TL_FLAG_BAD_LOGIT_Q 32
#define TL_FLAG_EMPTY_ROW_Q 64
#define TL__FLAG_Q_SEEN 128 /* internal: q has a finite logit */

typedef struct {
    double m_p, s_p;   /* max of lp over the support, sum a_i */
    double e, s_in;    /* product: sum a expm1(d - c), sum a exp(d - c) */
    double mu;         /* mean of d - c under p */
    double m_q, s_q;   /* standard: log-sum-exp of all lq */
    double m_o, s_o;   /* product: log-sum-exp of lq outside the support of p */
    double d_lo, d_hi; /* range of d - c over the support */
    int flags;
} tl_kl_acc;

/* Modes: TL_MODE_PRODUCT, TL_MODE_STANDARD (see above) and TL_MODE_KL, a second pass
 * given ltot = (A_q - A_p) - c from a product pass: KL = sum_i p_i h(w_i) + q_out with
 * w_i = log(q_i / p_i) = d_i - c - ltot and h(w) = e^w - 1 - w >= 0 -- non-negative
 * terms, and first-order insensitive to the error of ltot.  Used when the one-pass value
 * cancelled (q close to p). */
/* The chunk reads the logits shifted by (p_ref, q_ref) and uses d - c =
 * ((lq - q_ref) - (lp - p_ref)) - c.  Rows whose p and q sit at nearly the same offset
 * (|q* - p*| <= 1 at the first maximum of p, tl_kl_shift) pass p_ref = q_ref = 0 and
 * c = q* - p*: d - c = (lq - lp) - c, exact for nearby p and q (small KLs keep their
 * relative accuracy).  Other rows (offsets apart, e.g. q = p - 1e5, or huge logits, |p*|
 * or |q*| > TL_KL_HUGE) pass p_ref = p*, q_ref = q* and c = 0, so nothing of the size of
 * the offsets cancels; the finaliser gets the same c.  p_max is the row's largest finite
 * logit of p (the p* of tl_kl_shift; -inf if none): the chunk's fast path uses
 * p_max - p_ref as a fixed reference instead of a running maximum. */
#define TL_KL_HUGE 1048576.0
void tl_kl_chunk_f64(const double *lp, const double *lq, ptrdiff_t n, double p_ref,
                     double q_ref, double p_max, double c, double ltot, int mode,
                     tl_kl_acc *acc);
void tl_kl_chunk_f32(const float *lp, const float *lq, ptrdiff_t n, double p_ref,
                     double q_ref, double p_max, double c, double ltot, int mode,
                     tl_kl_acc *acc);
void tl_kl_merge(tl_kl_acc *into, const tl_kl_acc *other, int mode);
int tl_kl_product_ok(const tl_kl_acc *acc);
/* returns KL (NaN with flags set on bad input, +inf with TL_FLAG_INF_KL); for the
 * product mode also *ltot (for a KL pass) and *q_out (mass of q outside supp p), and
 * *advise_kl_pass = 1 if the value cancelled enough to warrant the KL pass */
double tl_kl_finalize(const tl_kl_acc *acc, double c, int mode, int *flags, double *ltot,
                      double *q_out, int *advise_kl_pass);
/* shift c: d at the first outcome where both lp and lq are finite (0 if none) */
/* The reference pair of a row: the logits of p and q at the first maximum of p (the
 * outcome that dominates the sums, so nothing of the size of a rare outcome's logit
 * difference cancels), or, where q is -inf there (KL = +inf), the first maximum of p and
 * 0.  (0, 0) for a row without a finite p logit. */
void tl_kl_shift_f64(const double *lp, const double *lq, ptrdiff_t n, double *p_ref,
                     double *q_ref);
void tl_kl_shift_f32(const float *lp, const float *lq, ptrdiff_t n, double *p_ref,
                     double *q_ref);

#endif
