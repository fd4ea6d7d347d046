/* First-order Markov token models (SPEC section 9): the backward recursion of the optimal
 * KL-regularised policy at one finite tilt, and the max-plus recursion of its lam -> inf
 * limit.
 *
 * Backward pass (tl_markov_backward).  The log messages are kept centred,
 * log beta_t = offset_t + c_t with max_s c_t(s) = 0; the per-step shifts are summed
 * pairwise at the end.  Step t tilts every row s of P at tilt 1 with the reward
 * g(s, s') = lam r(s, s') + c_{t+1}(s').  A row is anchored at its reference outcome j (the
 * first most probable transition of P(s, .)): with la_i = log P(s, i) - log P(s, j) <= 0,
 * a_i = e^{la_i}, s_a = sum_i a_i (so p_i = a_i / s_a exactly normalised) and
 *     u_i = lam (r(s, i) - r(s, j)) + (c(i) - c(j))      (differences first: no offset)
 * the row's log partition is log beta_t(s) - offset = g(s, j) + L with
 *     L = log sum_i p_i e^{u_i}
 *       = log1p(sum_i a_i expm1(u_i) / s_a)       if every |u_i| <= 1 (small tilts: L keeps
 *                                                  its relative accuracy, u = 0 gives 0)
 *       = mx + log(sum_i e^{la_i + u_i - mx} / s_a) otherwise (mx the largest exponent).
 * With w_i = u_i - L = log(q_i / p_i), the tilted row is q_i proportional to a_i e^{u_i},
 * renormalised to exact convex weights, and its KL is a sum of non-negative terms
 *     KL(q || p) = sum_i p_i h(w_i),  h(w) = w e^w - e^w + 1
 * taken as p_i w^2 H(w) for |w| < 0.34 (H a near-minimax polynomial of h(w) / w^2, error
 * 1.5e-17 on H >= 0.39: no cancellation, full relative accuracy at small tilts) and as
 * (p_i - q_i) + w_i q_i elsewhere.  The conditional mean m, variance v and KL kappa of the
 * reward still to come are carried backwards:
 *     m_t(s) = sum q (r + m_{t+1}),  v_t(s) = sum q (v_{t+1} + (r + m_{t+1} - m_t(s))^2),
 *     kappa_t(s) = KL(q || p) + sum q kappa_{t+1}.
 *
 * Layout and determinism.  The rows go 4 at a time into the lanes of a vector of 4 doubles
 * (two SSE2 registers on the portable build, one AVX register on avx2 and avx512) and the
 * loops run over the columns: each row's sums are taken in column order in its own lane,
 * with no horizontal reduction and one exponential per transition.  The exponentials are
 * multiplies and adds only (tl_exp_det's reduction, tl_det.h, with a near-minimax
 * polynomial), selects and maxima are exact, and the few scalar logarithms (one per row
 * and step) come from libm: the results are bitwise the same on every variant and for any
 * number of threads (each tilt is computed by one thread).
 */
#ifndef TL_MARKOV_H
#define TL_MARKOV_H

#include <stdint.h>
#include "tl_config.h"
#include "tl_guard.h"

/* doubles of work space tl_markov_backward needs for nv states and a sequence length */
ptrdiff_t tl_markov_work_size(ptrdiff_t nv, int64_t length);

/* The backward pass at the finite tilt lam over length - 1 steps (SPEC 9).
 *   log_tr (nv, nv)  log P, row-major, -inf = impossible transition (every row has a
 *                    finite entry)
 *   r (nv, nv)       finite transition rewards (read on the support only)
 * Outputs at position 1 (all zero for length 1): offset (the summed shifts), centred, m, v,
 * kappa (nv each).  log_q: NULL, or the log tilted rows log q_t for t = 1 .. length - 1,
 * block t - 1 at log_q + (t - 1) * q_stride (nv * nv doubles, row-major, -inf off the
 * support).  work: tl_markov_work_size(nv, length) doubles.  Returns 0, or
 * TL_FLAG_STOPPED when a stop request interrupted the pass (outputs incomplete). */
int tl_markov_backward(const double *log_tr, const double *r, ptrdiff_t nv, double lam,
                       int64_t length, double *offset, double *centred, double *m, double *v,
                       double *kappa, double *log_q, ptrdiff_t q_stride, double *work,
                       const tl_stop_flag *stop);

/* KL of the lam -> inf limit, -log P_p(R = R_max), by the max-plus backward recursion:
 * per state the best reward still to come and the log mass of the transitions attaining it
 * (rewards within tol of the best count as ties).  work: 4 * nv doubles. */
double tl_markov_kl_max(const double *log_p0, const double *r0, const double *log_tr,
                        const double *r, ptrdiff_t nv, int64_t length, double tol,
                        double *work);

#endif
