/* Exponential tilting kernels: type-independent parts (merges, finalisers) and the
 * two instantiations of tl_tilt_impl.h. */
#include <math.h>
#include <float.h>
#include "tl_tilt.h"
#include "tl_exp.h"
#include "tl_block.h"

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

void tl_tilt_finalize(const tl_tilt_acc *acc, double lam, double c, int mode,
                      tl_tilt_result *out) {
    int flags = acc->flags;
    if (acc->m_l == -INFINITY) flags |= TL_FLAG_EMPTY_ROW;
    out->flags = flags;
    out->shift = c;
    out->r_min = c + acc->r_lo;
    out->r_max = c + acc->r_hi;
    if (flags) {
        out->log_norm = out->log_partition = out->lc = NAN;
        out->mean = out->variance = out->kl = NAN;
        return;
    }
    double log_norm = acc->m_l + log(acc->s_l);
    double lc, mu = acc->mu;
    if (mode == TL_MODE_PRODUCT) {
        /* |u| <= 1 over the support: the first-order split (see tl_tilt_acc) */
        int split = fabs(lam) * (acc->r_hi - acc->r_lo) <= 1.0;
        double ratio = (split ? lam * acc->s1 + acc->e2 : acc->e) / acc->s_l;
        lc = (ratio > -0.5 && ratio < 1.0) ? log1p(ratio) : log(acc->s_b / acc->s_l);
        if (split && acc->s_b > 0.0) mu = (acc->s1 + acc->t1) / acc->s_b;
    } else {
        lc = (acc->m_x + log(acc->s_b)) - log_norm;
    }
    double var = acc->m2 / acc->s_b;
    double kl = lam * mu - lc;
    out->log_norm = log_norm;
    out->lc = lc;
    out->log_partition = lam * c + lc;
    out->mean = c + mu;
    out->variance = var < 0.0 ? 0.0 : var; /* (NaN stays visible) */
    out->kl = kl < 0.0 ? 0.0 : kl;
}

int tl_tilt_kl_pass_advised(const tl_tilt_result *res, double lam) {
    if (res->flags || lam == 0.0) return 0;
    /* also when kl cancelled to <= 0 (clamped to 0): then any lever > 0 asks for it */
    double lever = fabs(lam * (res->mean - res->shift)) + fabs(res->lc);
    return lever > 64.0 * res->kl;
}

double tl_tilt_kl_value(const tl_tilt_acc *acc) {
    double kl = acc->e / acc->s_l;
    return kl < 0.0 ? 0.0 : kl;
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

static double tl__log_mass(double out, double total, double m_star, double s_star,
                           double log_norm) {
    double p_out = out / total;
    double v = p_out < 0.5 ? log1p(-p_out) : (m_star + log(s_star)) - log_norm;
    return v < 0.0 ? v : 0.0;
}

void tl_info_finalize(const tl_info_acc *acc, double c, tl_info_result *out) {
    int flags = acc->flags;
    if (acc->m_l == -INFINITY) flags |= TL_FLAG_EMPTY_ROW;
    out->flags = flags;
    if (flags) {
        out->log_norm = out->mean = out->variance = NAN;
        out->r_max = out->log_p_max = out->r_min = out->log_p_min = NAN;
        out->lse_max = out->lse_min = NAN;
        return;
    }
    double log_norm = acc->m_l + log(acc->s_l);
    double var = acc->m2 / acc->s_l;
    out->log_norm = log_norm;
    out->mean = c + acc->mu;
    out->variance = var > 0.0 ? var : 0.0;
    out->r_max = acc->r_hi;
    out->r_min = acc->r_lo;
    out->log_p_max = tl__log_mass(acc->out_hi, acc->s_l, acc->m_hi, acc->s_hi, log_norm);
    out->log_p_min = tl__log_mass(acc->out_lo, acc->s_l, acc->m_lo, acc->s_lo, log_norm);
    out->lse_max = acc->m_hi + log(acc->s_hi);
    out->lse_min = acc->m_lo + log(acc->s_lo);
}

void tl_cumulants_from_moments(const double *sums, int order, double mean, double scale,
                               double *kappa) {
    const double sd = scale;
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
    kappa[0] = mean + delta * sd;
    double sdk = sd;
    for (int kk = 2; kk <= order; kk++) {
        sdk *= sd;
        kappa[kk - 1] = k[kk] * sdk;
    }
}
