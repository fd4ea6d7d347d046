/* Fused batched categorical samplers: draws from softmax(z) of one row, z = the logits or
 * the tilted logits l + lam r, without writing the distribution to memory (SPEC 2.1).
 *
 * A row is cut into blocks of TL_BLOCK elements.  One pass (tl_cat_prepare) computes per
 * block b the exact maximum M_b of z and s_b = sum_i e^(z_i - M_b) (tl_det.h exponentials,
 * summed into 8 virtual accumulators, element i into accumulator i mod 8, reduced in a
 * fixed order: the same bits on every SIMD variant), then the block scale
 * f_b = e^(M_b - m) (m = max_b M_b) and the prefix C_b = sum_{k<=b} s_k f_k (sequential).
 * A draw takes one 64-bit word w of the row's stream: u = ((w >> 12) + 1/2) 2^-52 (in
 * (0, 1), never 0), t = u C_last,
 * the block b = the first with C_b > t (binary search; the last block of positive weight if
 * rounding leaves none), then inside the block the first element whose sequential
 * cumulative sum of e^(z_i - M_b) exceeds (t - C_{b-1}) / f_b (the last element of
 * positive weight if rounding leaves none).  Only that block is read again.  Many draws
 * from one row use an alias table over the weights e^(z_i - M_b) f_b instead (one word per
 * draw, tl_alias64_sample): the caller chooses by the row length and the number of draws
 * only.
 *
 * z of the tilted sampler:
 *   TL_CAT_TILT     z = (l - l_0) + lam (r - r_0), (l_0, r_0) the outcome of the largest
 *                   logit among the first TL_BLOCK (one pass; no fused multiply-add, so
 *                   every variant rounds alike; lam = 0: z = l).  A row is `inexact` when
 *                   an element that can carry mass has |l - l_0| + |lam (r - r_0)| >
 *                   TL_CAT_EXACT_RANGE (its rounding could move its weight by more than
 *                   ~2^-42) or z is not finite on the support: such a row is redone in
 *                   TL_CAT_SHIFTED mode (tl_cat_prepare does it).
 *   TL_CAT_SHIFTED  z = (l - l_b) + lam (r - r_b) with b the dominant outcome (tl_prescan),
 *                   evaluated at half scale where the parts overflow (as tl_tilted_diff):
 *                   exact at any offset and tilt, as tilt_stats.
 *   TL_CAT_LIMIT    lam = +-inf: z = l on the outcomes of maximal (minimal) reward over the
 *                   support, -inf elsewhere.
 * -inf logits have weight 0 and are never drawn; weights below e^-708 of the row maximum
 * are 0 (tl_exp_det).
 */
#ifndef TL_CAT_H
#define TL_CAT_H

#include <stdint.h>
#include "tl_config.h"
#include "tl_guard.h"
#include "tl_bon.h"

#define TL_CAT_PLAIN 0
#define TL_CAT_TILT 1
#define TL_CAT_SHIFTED 2
#define TL_CAT_LIMIT 3

/* |l - l_0| + |lam (r - r_0)| up to which z is formed in one pass (rounding of z within
 * 2^-42 relative of the weight) */
#define TL_CAT_EXACT_RANGE 1024.0

/* The per-row state of tl_cat_prepare, read by the draws. */
typedef struct {
    int mode;       /* TL_CAT_* used for z */
    double lam;     /* tilt (TL_CAT_TILT, TL_CAT_SHIFTED) */
    double l_ref, r_ref; /* the reference outcome (TL_CAT_TILT, TL_CAT_SHIFTED) */
    double r_star;  /* the extreme reward (TL_CAT_LIMIT) */
    double m;       /* max of z */
    double total;   /* C_last */
    ptrdiff_t nb;   /* blocks */
    ptrdiff_t last; /* the last block of positive weight */
} tl_cat_row;

/* Blocks of a row of n outcomes. */
static inline ptrdiff_t tl_cat_blocks(ptrdiff_t n) { return (n + TL_BLOCK - 1) / TL_BLOCK; }

/* The pass over one row: `mode` TL_CAT_PLAIN (r unused, may be NULL) or TL_CAT_TILT with
 * `lam` any double or +-inf (TL_CAT_TILT rows may be redone as TL_CAT_SHIFTED or run as
 * TL_CAT_LIMIT).  bmax, bscale and cum have tl_cat_blocks(n) elements each: M_b, f_b and
 * C_b.  Returns TL_FLAG_* bits: bad logits (NaN, +inf), bad rewards (any non-finite),
 * reward range overflowing double on the support, empty row (no finite logit); the row
 * can be drawn from only when 0. */
int tl_cat_prepare_f64(const double *l, const double *r, ptrdiff_t n, int mode, double lam,
                       tl_cat_row *row, double *bmax, double *bscale, double *cum);
int tl_cat_prepare_f32(const float *l, const float *r, ptrdiff_t n, int mode, double lam,
                       tl_cat_row *row, double *bmax, double *bscale, double *cum);

/* out[d] = the draw of word d of the stream starting at g, for d < count, by the block
 * search (row prepared, flags 0).  `stop` (tl_guard.h; may be NULL) is polled every 256
 * draws. */
void tl_cat_draw_f64(const double *l, const double *r, ptrdiff_t n, const tl_cat_row *row,
                     const double *bmax, const double *bscale, const double *cum,
                     const tl_pcg64 *g, int64_t count, int64_t *out, const tl_stop_flag *stop);
void tl_cat_draw_f32(const float *l, const float *r, ptrdiff_t n, const tl_cat_row *row,
                     const double *bmax, const double *bscale, const double *cum,
                     const tl_pcg64 *g, int64_t count, int64_t *out, const tl_stop_flag *stop);

/* The weights e^(z_i - M_b) f_b of the outcomes of positive weight into w[0..k) and their
 * indices into payload[0..k) (n elements each at most); returns k (>= 1 for a prepared
 * row).  For the alias table of many draws (tl_alias64_build, tl_alias64_sample). */
ptrdiff_t tl_cat_weights_f64(const double *l, const double *r, ptrdiff_t n,
                             const tl_cat_row *row, const double *bmax, const double *bscale,
                             double *w, int32_t *payload);
ptrdiff_t tl_cat_weights_f32(const float *l, const float *r, ptrdiff_t n,
                             const tl_cat_row *row, const double *bmax, const double *bscale,
                             double *w, int32_t *payload);

#endif
