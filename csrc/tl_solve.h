/* Safeguarded Newton iteration for the tilt lam >= 0 with kl(lam) = target (SPEC section 2).
 *
 * The caller owns the passes over the data: it evaluates kl and the variance at s->lam,
 * calls tl_newton_step, and repeats until s->done.  One state serves a single row, or the
 * summed KL of many rows (joint mode: kl, var and kl_max are then sums over rows).
 *
 * Units.  The iteration needs the derivative only through D = lam^2 variance = d kl /
 * d log lam, which is dimensionless: the caller computes it as (lam 2^e)^2 (variance
 * 2^-2e), with 2^e the reward range of the row (tl_range_exponent), so no variance
 * underflows or overflows for reward spreads from 1e-320 to 1e308 and every Newton step
 * below is a relative change of lam: the iteration is the same at every reward scale.
 * lam stays within [DBL_MIN, DBL_MAX] (the normal doubles): a root outside it is reported
 * (status TL_NEWTON_OVERFLOW / TL_NEWTON_UNDERFLOW), never approximated silently.

 * kl is increasing in lam with derivative lam * variance and tends to kl_max = -log
 * p(argmax set).  For target >= kl_max the answer is t = inf.  Start: sqrt(2 target /
 * var0).  Steps:
 *   - below kl_max / 2, Newton on log kl (kl ~ var lam^2 / 2 for small lam, and ~ e^{lam gap}
 *     while a rare top outcome takes over: log kl is close to linear or logarithmic in lam,
 *     and Newton on it never overshoots from below in the quadratic regime);
 *   - above, Newton on -log(kl_max - kl), which is nearly linear in lam where kl saturates.
 * Every step is kept inside the bracket [lo, hi] built from the evaluations.  Outside it,
 * or when the bracket has not halved (in ratio where hi / lo > 4, else in width) for three
 * steps, a bisection (geometric where hi / lo > 4) or an expansion (by 4, 16, 256, ...:
 * doubly exponential, so any scale is bracketed in ~11 steps) is taken instead, so the
 * iteration converges from anywhere in a bounded number of steps.
 */
#ifndef TL_SOLVE_H
#define TL_SOLVE_H

#define TL_NEWTON_CONVERGED 1
#define TL_NEWTON_ITER_LIMIT 0
#define TL_NEWTON_OVERFLOW 2  /* the root's lam is above DBL_MAX */
#define TL_NEWTON_UNDERFLOW 3 /* the root's lam is below DBL_MIN (the smallest normal) */

typedef struct {
    double target, kl_max;
    double lo, hi;        /* bracket: kl(lo) < target < kl(hi) */
    double lam;           /* the next tilt to evaluate, or the answer once done */
    double last_width;    /* bracket measure at the last halving */
    int stall;            /* steps since the bracket last halved */
    int grow;             /* consecutive expansions (or contractions) */
    int iter;             /* evaluations consumed */
    int done;
    int converged;        /* TL_NEWTON_* status once done */
} tl_newton;

#define TL_NEWTON_MAX_ITER 400

/* lam0: the start, sqrt(2 target / variance under p), or any positive guess (clamped to the
 * normal doubles; a non-finite or zero guess starts at 1) */
void tl_newton_init(tl_newton *s, double target, double kl_max, double lam0);
/* kl and d = lam^2 variance at s->lam */
void tl_newton_step(tl_newton *s, double kl, double d);

#endif
