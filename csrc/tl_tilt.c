/* Exponential tilting kernels: type-independent parts (merges, finalisers) and the
 * two instantiations of tl_tilt_impl.h. */
#include <math.h>
#include <float.h>
#include "tl_tilt.h"
#include "tl_exp.h"
#include "tl_block.h"
#include "tl_simd.h"

static void tl__tilt_init(tl_tilt_acc *a) {
    a->m_l = -INFINITY;
    a->s_l = 0.0;
    a->e = 0.0;
    a->e2 = 0.0;
    a->s1 = 0.0;
    a->t1 = 0.0;
    a->m_x = -INFINITY;
    a->s_b = 0.0;
    a->mu = 0.0;
    a->m2 = 0.0;
    a->r_lo = INFINITY;
    a->r_hi = -INFINITY;
    a->flags = 0;
}

static void tl__info_init(tl_info_acc *a) {
    a->m_l = -INFINITY;
    a->s_l = 0.0;
    a->mu = 0.0;
    a->m2 = 0.0;
    a->r_hi = -INFINITY;
    a->m_hi = -INFINITY;
    a->s_hi = 0.0;
    a->in_hi = 0.0;
    a->out_hi = 0.0;
    a->r_lo = INFINITY;
    a->m_lo = -INFINITY;
    a->s_lo = 0.0;
    a->in_lo = 0.0;
    a->out_lo = 0.0;
    a->flags = 0;
}

/* Merge a candidate extreme set (reward rb, log-sum-exp (mb, sb) of its logits, its mass
 * in_b and the mass strictly inside out_b, both in the units of acc) into one side of acc. */
static void tl__info_side(tl_info_acc *acc, int side, double rb, double mb, double sb,
                          double in_b, double out_b) {
    double *r_star = side == 0 ? &acc->r_hi : &acc->r_lo;
    double *m_star = side == 0 ? &acc->m_hi : &acc->m_lo;
    double *s_star = side == 0 ? &acc->s_hi : &acc->s_lo;
    double *in = side == 0 ? &acc->in_hi : &acc->in_lo;
    double *out = side == 0 ? &acc->out_hi : &acc->out_lo;
    int better = side == 0 ? rb > *r_star : rb < *r_star;
    if (better) {
        *out += *in + out_b;
        *in = in_b;
        *r_star = rb;
        *m_star = mb;
        *s_star = sb;
    } else if (rb == *r_star) {
        *in += in_b;
        *out += out_b;
        if (mb > *m_star) {
            *s_star = *s_star * tl_rescale(*m_star, mb) + sb;
            *m_star = mb;
        } else {
            *s_star += sb * tl_rescale(mb, *m_star);
        }
    } else {
        *out += in_b + out_b;
    }
}

/* x = (l - anchor) + lam (r - c) of a block (-inf off the support), with the half-scale
 * evaluation where the two parts overflow with opposite signs (NaN). */
static inline void tl__tilted_block(const double *TL_RESTRICT lb, const double *TL_RESTRICT db,
                                    double anchor, double lam, double *TL_RESTRICT xb) {
    double nn[TL_LANES];
    for (int k = 0; k < TL_LANES; k++) nn[k] = 0.0;
    for (int i = 0; i < TL_BLOCK; i += TL_LANES)
        for (int k = 0; k < TL_LANES; k++) {
            /* off the support lb = -inf and db = 0: x = -inf */
            double x = (lb[i + k] - anchor) + lam * db[i + k];
            nn[k] += x == x ? 0.0 : 1.0;
            xb[i + k] = x;
        }
    if (tl__lanes_total(nn) != 0.0)
        for (int i = 0; i < TL_BLOCK; i++)
            if (xb[i] != xb[i]) {
                double z = (0.5 * lb[i] - 0.5 * anchor) + (0.5 * lam) * db[i];
                xb[i] = 2.0 * z;
            }
}

#define TL_IMPL "tl_tilt_impl.h"
#include "tl_template.h"

void tl_tilt_merge(tl_tilt_acc *a, const tl_tilt_acc *b, int mode) {
    a->flags |= b->flags;
    a->r_lo = b->r_lo < a->r_lo ? b->r_lo : a->r_lo;
    a->r_hi = b->r_hi > a->r_hi ? b->r_hi : a->r_hi;
    if (b->m_l == -INFINITY) return;
    double m = b->m_l > a->m_l ? b->m_l : a->m_l;
    double fa = tl_rescale(a->m_l, m), fb = tl_rescale(b->m_l, m);
    a->s_l = a->s_l * fa + b->s_l * fb;
    if (mode == TL_MODE_KL) {
        a->e = a->e * fa + b->e * fb;
    } else if (mode == TL_MODE_PRODUCT) {
        a->e = a->e * fa + b->e * fb;
        a->e2 = a->e2 * fa + b->e2 * fb;
        a->s1 = a->s1 * fa + b->s1 * fb;
        a->t1 = a->t1 * fa + b->t1 * fb;
        tl_chan_merge(&a->s_b, &a->mu, &a->m2, fa, b->s_b, b->mu, b->m2, fb);
    } else if (b->m_x > -INFINITY) {
        double mx = b->m_x > a->m_x ? b->m_x : a->m_x;
        tl_chan_merge(&a->s_b, &a->mu, &a->m2, tl_rescale(a->m_x, mx), b->s_b, b->mu, b->m2,
                      tl_rescale(b->m_x, mx));
        a->m_x = mx;
    }
    a->m_l = m;
}

int tl_tilt_product_ok(const tl_tilt_acc *acc, double lam) {
    if (acc->m_l == -INFINITY || lam == 0.0) return 1; /* empty row: reported later */
    double span = fabs(lam) * (acc->r_hi - acc->r_lo);
    return span <= TL_PRODUCT_RANGE;
}

int tl_tilt_row_product_ok(const tl_tilt_row *row) {
    if (!(row->l_max > -INFINITY) || row->lam == 0.0) return 1;
    /* the same expression as tl_tilt_product_ok on the merged accumulator */
    double span = fabs(row->lam) * ((row->r_hi - row->c) - (row->r_lo - row->c));
    return span <= TL_PRODUCT_RANGE;
}

/* lam * (x 2^e) without a spurious overflow of lam 2^e or underflow of x 2^e */
static double tl__lam_times(double lam, double x_s, int e) {
    return e >= 0 ? lam * ldexp(x_s, e) : ldexp(lam, e) * x_s;
}

void tl_tilt_finalize(const tl_tilt_acc *acc, const tl_tilt_row *row, int mode,
                      tl_tilt_result *out) {
    const double lam = row->lam, c = row->c;
    int flags = acc->flags | row->flags;
    if (acc->m_l == -INFINITY) flags |= TL_FLAG_EMPTY_ROW;
    out->flags = flags;
    out->shift = c;
    out->anchor = row->anchor;
    out->e = row->e;
    out->r_min = c + acc->r_lo;
    out->r_max = c + acc->r_hi;
    if (flags) {
        out->log_norm = NAN;
        out->log_partition = out->lc = out->z = NAN;
        out->mean = out->variance = out->kl = out->mean_s = out->var_s = NAN;
        return;
    }
    const double norm_log = log(acc->s_l);
    double lc, z, mu = acc->mu;
    if (mode == TL_MODE_PRODUCT) {
        /* |u| <= 1 over the support: the first-order split (see tl_tilt_acc) */
        int split = fabs(lam) * (acc->r_hi - acc->r_lo) <= 1.0;
        double ratio = (split ? ldexp(lam, row->e) * acc->s1 + acc->e2 : acc->e) / acc->s_l;
        lc = (ratio > -0.5 && ratio < 1.0) ? log1p(ratio) : log(acc->s_b / acc->s_l);
        if (split && acc->s_b > 0.0) mu = (acc->s1 + acc->t1) / acc->s_b;
        z = ((acc->m_l - row->anchor) + norm_log) + lc;
    } else {
        z = acc->m_x + log(acc->s_b);
        lc = z - ((acc->m_l - row->anchor) + norm_log);
    }
    double var = acc->m2 / acc->s_b;
    var = var < 0.0 ? 0.0 : var; /* (NaN stays visible) */
    double kl = tl__lam_times(lam, mu, row->e) - lc;
    out->log_norm = acc->m_l + norm_log;
    out->lc = lc;
    out->z = z;
    out->log_partition = c == 0.0 ? lc : lam * c + lc;
    out->mean_s = mu;
    out->var_s = var;
    out->mean = c + ldexp(mu, row->e);
    out->variance = ldexp(var, 2 * row->e);
    out->kl = kl <= 0.0 ? 0.0 : kl; /* (no -0; NaN stays visible) */
}

int tl_tilt_kl_pass_advised(const tl_tilt_result *res, double lam) {
    if (res->flags || lam == 0.0) return 0;
    /* also when kl cancelled to <= 0 (clamped to 0): then any lever > 0 asks for it */
    double lever = fabs(tl__lam_times(lam, res->mean_s, res->e)) + fabs(res->lc);
    return lever > 64.0 * res->kl;
}

double tl_tilt_kl_value(const tl_tilt_acc *acc) {
    double kl = acc->e / acc->s_l;
    return kl <= 0.0 ? 0.0 : kl;
}

double tl_tilted_diff(double l_i, double r_i, double l_b, double r_b, double lam) {
    if (lam == 0.0) return l_i - l_b;
    double y = (l_i - l_b) + lam * (r_i - r_b);
    if (y != y) y = (0.5 * l_i - 0.5 * l_b) + (0.5 * lam) * (r_i - r_b);
    return y;
}

/* e with range 2^-e in [1, 2); at least -1020, so that 2^-e is a double (a subnormal range
 * then scales to at least 2^-54: normal, and its square too) */
int tl_range_exponent(double range) {
    if (!(range > 0.0) || !(range <= DBL_MAX)) return 0;
    int e = ilogb(range);
    return e < -1020 ? -1020 : e;
}

void tl_tilt_row_init(tl_tilt_row *row, double anchor, double c, double r_lo, double r_hi,
                      double l_max) {
    row->anchor = anchor;
    row->r_lo = r_lo;
    row->r_hi = r_hi;
    row->l_max = l_max;
    row->c = c;
    row->e = tl_range_exponent(r_hi - r_lo);
    row->inv_scale = ldexp(1.0, -row->e);
    row->flags = r_hi - r_lo <= DBL_MAX || !(r_hi >= r_lo) ? 0 : TL_FLAG_REWARD_RANGE;
}

void tl_info_merge(tl_info_acc *a, const tl_info_acc *b) {
    a->flags |= b->flags;
    if (b->m_l == -INFINITY) return;
    if (a->m_l == -INFINITY) {
        int flags = a->flags;
        *a = *b;
        a->flags = flags;
        return;
    }
    double m = b->m_l > a->m_l ? b->m_l : a->m_l;
    double fa = tl_rescale(a->m_l, m), fb = tl_rescale(b->m_l, m);
    tl_chan_merge(&a->s_l, &a->mu, &a->m2, fa, b->s_l, b->mu, b->m2, fb);
    a->in_hi *= fa;
    a->out_hi *= fa;
    a->in_lo *= fa;
    a->out_lo *= fa;
    a->m_l = m;
    tl__info_side(a, 0, b->r_hi, b->m_hi, b->s_hi, b->in_hi * fb, b->out_hi * fb);
    tl__info_side(a, 1, b->r_lo, b->m_lo, b->s_lo, b->in_lo * fb, b->out_lo * fb);
}

/* log p(extreme set): log1p(-p_out) while the mass outside is below 1/2, else the
 * log-sum-exp of the set's logits minus the normaliser, both as (max, log of the relative
 * sum) so that nothing of the size of the logits is added */
static double tl__log_mass(double out, double total, double m_star, double s_star,
                           double m_l) {
    double p_out = out / total;
    double v = p_out < 0.5 ? log1p(-p_out) : ((m_star - m_l) + log(s_star)) - log(total);
    return v < 0.0 ? v : 0.0;
}

void tl_info_finalize(const tl_info_acc *acc, const tl_tilt_row *row, tl_info_result *out) {
    int flags = acc->flags | row->flags;
    if (acc->m_l == -INFINITY) flags |= TL_FLAG_EMPTY_ROW;
    out->flags = flags;
    out->e = row->e;
    if (flags) {
        out->log_norm = out->mean = out->variance = out->var_s = NAN;
        out->r_max = out->log_p_max = out->r_min = out->log_p_min = NAN;
        out->m_max = out->ls_max = out->m_min = out->ls_min = NAN;
        return;
    }
    double var = acc->m2 / acc->s_l;
    var = var > 0.0 ? var : 0.0;
    out->log_norm = acc->m_l + log(acc->s_l);
    out->mean = row->c + ldexp(acc->mu, row->e);
    out->var_s = var;
    out->variance = ldexp(var, 2 * row->e);
    out->r_max = acc->r_hi;
    out->r_min = acc->r_lo;
    out->log_p_max = tl__log_mass(acc->out_hi, acc->s_l, acc->m_hi, acc->s_hi, acc->m_l);
    out->log_p_min = tl__log_mass(acc->out_lo, acc->s_l, acc->m_lo, acc->s_lo, acc->m_l);
    out->m_max = acc->m_hi;
    out->ls_max = log(acc->s_hi);
    out->m_min = acc->m_lo;
    out->ls_min = log(acc->s_lo);
}

void tl_cumulants_from_moments(const double *sums, int order, double center, double spread,
                               double *kappa) {
    double m[TL_MAX_ORDER + 1] = {0}, cm[TL_MAX_ORDER + 1], k[TL_MAX_ORDER + 1];
    double binom[TL_MAX_ORDER + 1][TL_MAX_ORDER + 1];
    for (int i = 0; i <= order; i++) {
        binom[i][0] = binom[i][i] = 1.0;
        for (int j = 1; j < i; j++) binom[i][j] = binom[i - 1][j - 1] + binom[i - 1][j];
    }
    for (int j = 0; j <= order; j++) m[j] = sums[j] / sums[0];
    /* re-centre on the corrected mean: shift by delta = m[1] (standardised units) */
    double delta = m[1];
    for (int j = 0; j <= order; j++) {
        double s = 0.0, pw = 1.0;
        for (int i = j; i >= 0; i--) {
            s += binom[j][i] * m[i] * pw;
            pw *= -delta;
        }
        cm[j] = s;
    }
    cm[1] = 0.0;
    /* kappa_k = c_k - sum_{q=2}^{k-2} C(k-1, q-1) kappa_q c_{k-q}  (central moments) */
    k[1] = 0.0;
    for (int kk = 2; kk <= order; kk++) {
        double s = cm[kk];
        for (int q = 2; q <= kk - 2; q++) s -= binom[kk - 1][q - 1] * k[q] * cm[kk - q];
        k[kk] = s;
    }
    kappa[0] = center + delta * spread;
    for (int kk = 2; kk <= order; kk++) {
        /* k[kk] spread^kk by repeated products: spread is of order 1 here (the caller's
         * scaled units), and an exact 0 stays 0 */
        double v = k[kk];
        for (int q = 0; q < kk; q++) v *= spread;
        kappa[kk - 1] = v;
    }
}
