/* Soft best-of-n on reward levels (SPEC section 3, policies): the two hot loops of the
 * trapezoid rule for P(level j) = n m_j w_j int_0^inf exp(-t w_j) M(t)^(n-1) dt in the
 * variable u = log t (lattice u_i = i h).
 *
 * Levels are grouped into bins of width <= 0.04 in lw = log w; a bin b is represented by its
 * centre c_b and the moments of its levels' offsets eps = lw - c_b, and every function of
 * z = u + lw is expanded to order TL_SOFT_R in eps around z = u + c_b.  The derivatives of
 * g(z) = exp(-e^z) are g^(r)(z) = e^{-x} Q_r(x) with x = e^z and
 * Q_r(x) = sum_k S(r, k) (-x)^k (Stirling numbers of the second kind); with |eps| <= 0.02
 * the remainder eps^8 Q_8(x) / 8! is below 1e-16 relative where the weight e^{-x} matters
 * (x <~ 10).  Node bookkeeping (which bins are active at a node, closed-form gaps, prefix
 * integrals, the per-level assembly) stays in tiltlab.policies.
 */
#ifndef TL_SOFT_H
#define TL_SOFT_H

#include <stdint.h>
#include "tl_config.h"

#define TL_SOFT_R 7

/* For each node i in [i0, i1) and each active bin b in [bon[i], boff[i]), with
 * x = exp(u[i] + c[b]) (u + c within about [-8, 6.7]):
 *   d[i]  += m0[b] (1 - e^{-x}) - e^{-x} poly_b(x)
 *   md[i] += e^{-x} (m0[b] + poly_b(x))
 * where poly_b(x) = sum_{k=1}^{R} P[b R + k - 1] (-x)^k.  ec[b] = e^{c[b]} when every
 * |c| < 700, else NULL (then e^{u + c} is computed directly). */
void tl_soft_nodes(const double *u, const int64_t *bon, const int64_t *boff, int64_t i0,
                   int64_t i1, const double *c, const double *ec, const double *m0,
                   const double *P, double *d, double *md);

/* For each bin b in [b0, b1), over the nodes i in [wlo[b], whi[b]) with x = exp(u[i] + c[b]):
 * mx[b] = max_i (logA[i] - x) and U[b (R+1) + k] = sum_i exp(logA[i] - x - mx[b]) (-x)^k,
 * k = 0..R (mx = -inf and U = 0 for an empty window).  eu/ec as above (NULL: direct). */
void tl_soft_bins(const double *u, const double *eu, const double *logA, const int64_t *wlo,
                  const int64_t *whi, const double *c, const double *ec, int64_t b0,
                  int64_t b1, double *mx, double *U);

#endif
