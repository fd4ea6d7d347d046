#include <math.h>
#include <float.h>
#include "tl_solve.h"

void tl_newton_init(tl_newton *s, double target, double kl_max, double lam0) {
    s->target = target;
    s->kl_max = kl_max;
    s->lo = 0.0;
    s->hi = INFINITY;
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
        double lam = (lam0 > 0.0 && lam0 < INFINITY) ? lam0 : 1.0;
        lam = lam < DBL_MIN ? DBL_MIN : lam;
        s->lam = lam > DBL_MAX ? DBL_MAX : lam;
    }
}

/* the bracket's size: log ratio where hi / lo > 4, else the relative width */
static double tl__width(double lo, double hi) {
    if (hi == INFINITY || lo == 0.0) return INFINITY;
    return hi > 4.0 * lo ? log(hi / lo) : (hi - lo) / hi;
}

/* The midpoint: geometric where hi / lo > 4, else arithmetic.  The geometric mean is
 * sqrt(m_lo m_hi 2^(a + b)) taken on the significands, with the exponent's parity folded
 * into them: no overflow or underflow of lo * hi, and exactly 2^k times the midpoint of
 * (lo, hi) for (2^k lo, 2^k hi), so the whole iteration is bitwise the same for rewards
 * scaled by a power of two. */
static double tl__bisect(double lo, double hi) {
    if (!(hi > 4.0 * lo)) return 0.5 * lo + 0.5 * hi;
    int a, b;
    double m = frexp(lo, &a) * frexp(hi, &b);
    int s = a + b, odd = s & 1; /* (two's complement: also right for negative s) */
    return ldexp(sqrt(odd ? 2.0 * m : m), (s - odd) / 2);
}

void tl_newton_step(tl_newton *s, double kl, double d) {
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
    if (f < 0.0 && lam >= DBL_MAX) {
        s->done = 1;
        s->converged = TL_NEWTON_OVERFLOW;
        return;
    }
    if (f > 0.0 && lam <= DBL_MIN) {
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
    /* Newton steps as relative changes of lam: d kl / d lam = d / lam */
    double next = NAN;
    if (d > 0.0 && d < INFINITY) {
        double gap = s->kl_max - kl, gap_t = s->kl_max - s->target;
        if (kl > 0.5 * s->kl_max && gap > 0.0)
            next = lam * (1.0 + log(gap / gap_t) * (gap / d));
        else if (kl > 0.0)
            next = lam * (1.0 - log(kl / s->target) * (kl / d));
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
        next = next < DBL_MAX ? next : DBL_MAX;
    } else if (lo == 0.0) { /* contract likewise */
        s->grow = s->grow < 10 ? s->grow + 1 : 10;
        next = ldexp(hi, -(1 << s->grow));
        next = next > DBL_MIN ? next : DBL_MIN;
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
