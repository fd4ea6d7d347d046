/* KL(p || q) kernels: type-independent parts and the instantiations of tl_kl_impl.h. */
#include <math.h>
#include <float.h>
#include "tl_kl.h"
#include "tl_exp.h"
#include "tl_block.h"
#include "tl_simd.h"

static void tl__kl_init(tl_kl_acc *a) {
    a->m_p = -INFINITY;
    a->s_p = 0.0;
    a->e = 0.0;
    a->s_in = 0.0;
    a->mu = 0.0;
    a->m_q = -INFINITY;
    a->s_q = 0.0;
    a->m_o = -INFINITY;
    a->s_o = 0.0;
    a->d_lo = INFINITY;
    a->d_hi = -INFINITY;
    a->flags = 0;
}

#define TL_IMPL "tl_kl_impl.h"
#include "tl_template.h"

static void tl__lse_merge(double *m, double *s, double mb, double sb) {
    if (mb == -INFINITY) return;
    if (mb > *m) {
        *s = *s * tl_rescale(*m, mb) + sb;
        *m = mb;
    } else {
        *s += sb * tl_rescale(mb, *m);
    }
}

void tl_kl_merge(tl_kl_acc *a, const tl_kl_acc *b, int mode) {
    a->flags |= b->flags;
    a->d_lo = b->d_lo < a->d_lo ? b->d_lo : a->d_lo;
    a->d_hi = b->d_hi > a->d_hi ? b->d_hi : a->d_hi;
    if (mode == TL_MODE_PRODUCT) {
        tl__lse_merge(&a->m_o, &a->s_o, b->m_o, b->s_o);
    } else if (mode == TL_MODE_STANDARD) {
        tl__lse_merge(&a->m_q, &a->s_q, b->m_q, b->s_q);
    }
    if (b->m_p == -INFINITY) return;
    double m = b->m_p > a->m_p ? b->m_p : a->m_p;
    double fa = tl_rescale(a->m_p, m), fb = tl_rescale(b->m_p, m);
    double sa = a->s_p * fa, sb = b->s_p * fb, s = sa + sb;
    a->mu = s > 0.0 ? a->mu + (b->mu - a->mu) * (sb / s) : a->mu;
    a->s_p = s;
    a->e = a->e * fa + b->e * fb;
    a->s_in = a->s_in * fa + b->s_in * fb;
    a->m_p = m;
}

int tl_kl_product_ok(const tl_kl_acc *acc) {
    if (acc->m_p == -INFINITY) return 1;
    return (acc->d_hi - acc->d_lo) <= TL_PRODUCT_RANGE;
}

double tl_kl_finalize(const tl_kl_acc *acc, double c, int mode, int *flags_out, double *ltot,
                      double *q_out, int *advise_kl_pass) {
    int flags = acc->flags & ~(TL_FLAG_INF_KL | TL__FLAG_Q_SEEN);
    *advise_kl_pass = 0;
    if (acc->m_p == -INFINITY && !(acc->flags & TL_FLAG_INF_KL)) flags |= TL_FLAG_EMPTY_ROW;
    if (!(acc->flags & TL__FLAG_Q_SEEN)) flags |= TL_FLAG_EMPTY_ROW_Q;
    if (flags) {
        *flags_out = flags;
        return NAN;
    }
    *flags_out = acc->flags & TL_FLAG_INF_KL;
    if (acc->flags & TL_FLAG_INF_KL) return INFINITY;
    double kl;
    if (mode == TL_MODE_KL) {
        kl = acc->e / acc->s_p + *q_out;
    } else if (mode == TL_MODE_PRODUCT) {
        /* l_in: log of (q-mass on supp p) / (p normaliser), minus c */
        double ratio = acc->e / acc->s_p;
        double l_in = (ratio > -0.5 && ratio < 1.0) ? log1p(ratio) : log(acc->s_in / acc->s_p);
        double lt = l_in, qo = 0.0;
        if (acc->m_o > -INFINITY) {
            /* log(q-mass outside / p normaliser) - c - l_in, the maxima differenced first:
             * nothing of the size of the logits is added */
            double x = (((acc->m_o - acc->m_p) - c) + (log(acc->s_o) - log(acc->s_p))) - l_in;
            lt += x > 36.0 ? x + log1p(exp(-x)) : log1p(exp(x)); /* + log(1 + e^x) */
            qo = x > 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
        }
        kl = lt - acc->mu;
        *ltot = lt;
        *q_out = qo;
        *advise_kl_pass = (fabs(lt) + fabs(acc->mu)) > 64.0 * kl;
    } else {
        /* (A_q - A_p - c) with the maxima differenced first (exact for nearby rows) */
        kl = (((acc->m_q - acc->m_p) - c) + (log(acc->s_q) - log(acc->s_p))) - acc->mu;
    }
    return kl < 0.0 ? 0.0 : kl; /* (NaN stays visible) */
}
