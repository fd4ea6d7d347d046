#include <math.h>
#include <float.h>
#include "tl_solve.h"

void tl_newton_init(tl_newton *s, double target, double kl_max, double var0) {
    s->target = target;
    s->kl_max = kl_max;
    s->lo = 0.0;
    s->hi = INFINITY;
    s->iter = 0;
    s->done = 0;
    s->converged = 1;
    if (target >= kl_max) {
        s->lam = INFINITY;
        s->done = 1;
    } else if (target <= 0.0) {
        s->lam = 0.0;
        s->done = 1;
    } else {
        double lam = sqrt(2.0 * target / var0);
        s->lam = (lam > 0.0 && lam < INFINITY) ? lam : 1.0;
    }
}

void tl_newton_step(tl_newton *s, double kl, double variance) {
    const double lam = s->lam;
    const double f = kl - s->target;
    s->iter++;
    /* kl is resolved to a few ulps only (it is a difference of terms of size ~lam r) */
    if (f == 0.0 || fabs(f) <= 16.0 * DBL_EPSILON * s->target) {
        s->done = 1;
        return;
    }
    if (f < 0.0) s->lo = lam;
    else s->hi = lam;
    double dkl = lam * variance;
    double next = NAN;
    if (dkl > 0.0) {
        double gap = s->kl_max - kl, gap_t = s->kl_max - s->target;
        if (kl > 0.5 * s->kl_max && gap > 0.0)
            next = lam + log(gap / gap_t) * (gap / dkl);
        else
            next = lam - f / dkl;
    }
    int inside = next > s->lo && next < s->hi;
    if (inside && fabs(next - lam) <= 1e-14 * lam) {
        s->lam = next;
        s->done = 1;
        return;
    }
    if (!inside) {
        if (s->hi == INFINITY) next = lam > 0.0 ? 4.0 * lam : 1.0;
        else if (s->lo > 0.0 && s->hi > 4.0 * s->lo) next = sqrt(s->lo * s->hi); /* log scale */
        else next = 0.5 * (s->lo + s->hi);
    }
    if (s->hi < INFINITY && s->hi - s->lo <= 4e-16 * s->hi) {
        s->lam = 0.5 * (s->lo + s->hi);
        s->done = 1;
        return;
    }
    s->lam = next;
    if (s->iter >= TL_NEWTON_MAX_ITER) {
        s->done = 1;
        s->converged = 0;
    }
}
