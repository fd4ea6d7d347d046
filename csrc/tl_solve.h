/* Safeguarded Newton iteration for the tilt lam >= 0 with kl(lam) = target (SPEC section 2).
 *
 * The caller owns the passes over the data: it evaluates kl and the variance at s->lam,
 * calls tl_newton_step, and repeats until s->done.  One state serves a single row, or the
 * summed KL of many rows (joint mode: kl, var and kl_max are then sums over rows).
 *
 * kl is increasing in lam with derivative lam * variance and tends to kl_max = -log
 * p(argmax set).  For target >= kl_max the answer is lam = inf.  Start: sqrt(2 target /
 * var0).  Below kl_max / 2 the step is Newton's on kl; above, Newton's on
 * -log(kl_max - kl), which is nearly linear in lam where kl saturates.  Every step is
 * kept inside the bracket [lo, hi] built from the evaluations (bisection or expansion
 * otherwise).
 */
#ifndef TL_SOLVE_H
#define TL_SOLVE_H

typedef struct {
    double target, kl_max;
    double lo, hi; /* bracket: kl(lo) < target < kl(hi) */
    double lam;    /* the next point to evaluate, or the answer once done */
    int iter;      /* evaluations consumed */
    int done;
    int converged; /* 0 if stopped by the iteration limit */
} tl_newton;

#define TL_NEWTON_MAX_ITER 200

void tl_newton_init(tl_newton *s, double target, double kl_max, double var0);
void tl_newton_step(tl_newton *s, double kl, double variance);

#endif
