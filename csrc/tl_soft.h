/* Soft best-of-n on reward levels (SPEC section 3, policies): the two hot loops of the
 * trapezoid rule for P(level j) = n m_j w_j int_0^inf exp(-t w_j) M(t)^(n-1) dt in the
 * variable u = log t (lattice u_i = i h).  Node bookkeeping (which levels are active at a
 * node, the closed-form gaps, the prefix integrals) stays in tiltlab.policies.
 */
#ifndef TL_SOFT_H
#define TL_SOFT_H

#include <stdint.h>
#include "tl_config.h"

/* For each node i in [i0, i1): over the active levels k in [kon[i], koff[i]) with
 * x = exp(u[i] + lw[k]) (u + lw in [-37, 6.7] for active levels), add
 * m_k (1 - e^{-x}) to d[i] and m_k e^{-x} to md[i].  elw[k] = e^{lw[k]} when every lw is
 * above -700, else NULL. */
void tl_soft_nodes(const double *u, const int64_t *kon, const int64_t *koff, int64_t i0,
                   int64_t i1, const double *lw, const double *elw, const double *m,
                   double *d, double *md);

/* For each level j in [j0, j1):
 * out[j] = log sum_{i in [wlo[j], whi[j])} exp(logA[i] - exp(u[i] + lw[j]))
 * (-inf for an empty window); u[i] + lw[j] <= 7 inside a window.  eu[i] = e^{u[i]} and
 * elw[j] = e^{lw[j]} when all of them are normal numbers (|u|, |lw| < 700), else NULL. */
void tl_soft_levels(const double *u, const double *eu, const double *logA,
                    const int64_t *wlo, const int64_t *whi, const double *lw,
                    const double *elw, int64_t j0, int64_t j1, double *out);

#endif
