/* Safeguarded Newton iteration for the tilt lam >= 0 with kl(lam) = target (SPEC section 2).
 *
 * The caller owns the passes over the data: it evaluates kl and the variance at s->lam,
 * calls tl_newton_step, and repeats until s->done.  One state serves a single row, or the
 * summed KL of many rows (joint mode: kl, var and kl_max are then sums over rows).
 *
 * Units.  The iteration runs on the scaled tilt t = lam 2^e, where 2^e is the reward range
 * of the row (tl_range_exponent), with the variance in the same units (var 2^-2e): the
 * problem is then the same at every reward scale (1e-300 .. 1e300 and subnormal spreads),
 * and no variance underflows.  The caller converts t to lam by ldexp (exact).  [t_min,
 * t_max] is the range of t whose lam = t 2^-e is a normal double: a root outside it is
 * reported (status TL_NEWTON_OVERFLOW / TL_NEWTON_UNDERFLOW), never approximated silently.
 *
 * kl is increasing in t with derivative t * variance and tends to kl_max = -log
 * p(argmax set).  For target >= kl_max the answer is t = inf.  Start: sqrt(2 target /
 * var0).  Steps:
 *   - below kl_max / 2, Newton on log kl (kl ~ var t^2 / 2 for small t, and ~ e^{t gap}
 *     while a rare top outcome takes over: log kl is close to linear or logarithmic in t,
 *     and Newton on it never overshoots from below in the quadratic regime);
 *   - above, Newton on -log(kl_max - kl), which is nearly linear in t where kl saturates.
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
    double t_min, t_max;  /* the representable range of the scaled tilt */
    double lam;           /* the next scaled tilt to evaluate, or the answer once done */
    double last_width;    /* bracket measure at the last halving */
    int stall;            /* steps since the bracket last halved */
    int grow;             /* consecutive expansions (or contractions) */
    int iter;             /* evaluations consumed */
    int done;
    int converged;        /* TL_NEWTON_* status once done */
} tl_newton;

#define TL_NEWTON_MAX_ITER 400

void tl_newton_init(tl_newton *s, double target, double kl_max, double var0, double t_min,
                    double t_max);
void tl_newton_step(tl_newton *s, double kl, double variance);

#endif
