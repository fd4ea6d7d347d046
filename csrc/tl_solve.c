#include <math.h>
#include <float.h>
#include "tl_solve.h"

void tl_newton_init(tl_newton *s, double target, double kl_max, double var0, double t_min,
                    double t_max) {
    s->target = target;
    s->kl_max = kl_max;
    s->lo = 0.0;
    s->hi = INFINITY;
    s->t_min = t_min;
    s->t_max = t_max;
    s->iter = 0;
    s->done = 0;
    s->converged = TL_NEWTON_CONVERGED;
    s->stall = 0;
    s->grow = 0;
    s->last_width = INFINITY;
    if (target >= kl_max) {
        s->lam = INFINITY;
        s->done = 1;
    } else if (target <= 0.0) {
        s->lam = 0.0;
        s->done = 1;
    } else {
        double lam = sqrt(2.0 * target / var0);
        lam = (lam > 0.0 && lam < INFINITY) ? lam : 1.0;
        lam = lam < t_min ? t_min : lam;
        s->lam = lam > t_max ? t_max : lam;
    }
}

/* the bracket's size: log ratio where hi / lo > 4, else the relative width */
static double tl__width(double lo, double hi) {
    if (hi == INFINITY || lo == 0.0) return INFINITY;
    return hi > 4.0 * lo ? log(hi / lo) : (hi - lo) / hi;
}

static double tl__bisect(double lo, double hi) {
    if (hi > 4.0 * lo) return sqrt(lo) * sqrt(hi); /* geometric; no overflow of lo * hi */
    return 0.5 * lo + 0.5 * hi;
}

void tl_newton_step(tl_newton *s, double kl, double variance) {
    const double lam = s->lam;
    const double f = kl - s->target;
    s->iter++;
    /* kl is resolved to a few ulps only (it is a difference of terms of size ~lam r) */
    if (f == 0.0 || fabs(f) <= 4.0 * DBL_EPSILON * s->target) {
        s->done = 1;
        return;
    }
    if (f < 0.0) s->lo = lam;
    else s->hi = lam;
    /* the root lies beyond the representable tilts */
    if (f < 0.0 && lam >= s->t_max) {
        s->done = 1;
        s->converged = TL_NEWTON_OVERFLOW;
        return;
    }
    if (f > 0.0 && lam <= s->t_min) {
        s->done = 1;
        s->converged = TL_NEWTON_UNDERFLOW;
        return;
    }
    const double lo = s->lo, hi = s->hi;
    if (hi < INFINITY && hi - lo <= 4.0 * DBL_EPSILON * hi) { /* collapsed */
        s->lam = 0.5 * lo + 0.5 * hi;
        s->done = 1;
        return;
    }
    double width = tl__width(lo, hi);
    if (width <= 0.5 * s->last_width) {
        s->last_width = width;
        s->stall = 0;
    } else {
        s->stall++;
    }
    double dkl = lam * variance; /* d kl / d t */
    double next = NAN;
    if (dkl > 0.0 && dkl < INFINITY) {
        double gap = s->kl_max - kl, gap_t = s->kl_max - s->target;
        if (kl > 0.5 * s->kl_max && gap > 0.0)
            next = lam + log(gap / gap_t) * (gap / dkl);
        else if (kl > 0.0)
            next = lam - log(kl / s->target) * (kl / dkl);
    }
    int inside = next > lo && next < hi;
    if (inside && fabs(next - lam) <= 1e-15 * lam) {
        s->lam = next;
        s->done = 1;
        return;
    }
    if (inside && s->stall < 3) {
        s->grow = 0;
    } else if (hi == INFINITY) { /* expand: x4, x16, x256, ... */
        s->grow = s->grow < 10 ? s->grow + 1 : 10;
        next = ldexp(lam > 0.0 ? lam : 1.0, 1 << s->grow);
        next = next < s->t_max ? next : s->t_max;
    } else if (lo == 0.0) { /* contract likewise */
        s->grow = s->grow < 10 ? s->grow + 1 : 10;
        next = ldexp(hi, -(1 << s->grow));
        next = next > s->t_min ? next : s->t_min;
    } else {
        s->grow = 0;
        next = tl__bisect(lo, hi);
        s->stall = 0;
        s->last_width = tl__width(lo, hi);
    }
    s->lam = next;
    if (s->iter >= TL_NEWTON_MAX_ITER) {
        s->lam = hi < INFINITY ? (lo > 0.0 ? tl__bisect(lo, hi) : hi) : lam;
        s->done = 1;
        s->converged = TL_NEWTON_ITER_LIMIT;
    }
}
