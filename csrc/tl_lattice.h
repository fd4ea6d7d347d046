/* Memoryless sequences on a reward lattice (SPEC section 4): exact conditional sampling of
 * a token sequence given its total lattice reward.
 *
 * A segment tree over positions holds, per node, the law of the node's segment sum (in
 * lattice units, one common tilt theta: the conditional law given the total does not
 * depend on theta) on a window [lo, lo + len) of sums, in linear scale relative to the
 * node's own peak.  Given a total s at a node, the left sum u is drawn with probability
 * proportional to left(u) * right(s - u), scanning outwards from the conditional centre
 * ("chop-down" inverse CDF: cost ~ the conditional spread, not the window); the node's
 * own value at s, with a bound on its rounding error, normalises the first scan, which is
 * exact (see tl_seg_sample).  Leaves are single positions: the sum is the token's
 * lattice level there, and the token is drawn from p restricted to that level with an
 * alias table.  Windows computed by FFT are trimmed at 1e-14 of their peak, so targets
 * within that distance of a window's edge lose the trimmed products (a relative effect
 * below ~1e-14 / P(target) of the conditional law).
 */
#ifndef TL_LATTICE_H
#define TL_LATTICE_H

#include <stdint.h>
#include "tl_config.h"
#include "tl_bon.h"

typedef struct {
    int64_t left, right; /* children, -1 for a leaf */
    int64_t pos;         /* first position of the segment */
    int64_t row;         /* leaf: row of the per-position tables */
    int64_t lo, len;     /* window of segment sums [lo, lo + len) */
    int64_t off;         /* offset of the window's values in the value buffer */
    double c0, ratio;    /* given the node's sum s, the left sum's conditional centre is
                          * about c0 + ratio * s (Gaussian approximation; it only seeds
                          * the scan) */
    double zfac;         /* value(s) * zfac = sum_u left(u) right(s - u), children's units */
} tl_seg_node;

/* Per-row token tables for the leaves: row r's level k owns the alias slots
 * slots[slot_off[r] + level_start[ls_off[r] + k] .. slot_off[r] + level_start[ls_off[r] + k + 1]). */
typedef struct {
    const int64_t *ls_off;
    const int64_t *level_start;
    const int64_t *slot_off;
    const tl_alias_slot *slots;
} tl_token_tables;

/* Draws one sequence with total `target` below `root`; tokens go to out[pos] for the
 * positions of the tree.  Returns 0, or -1 if the target is outside the support the
 * tree can resolve (a caller bug: targets come from the root's window). */
int tl_seg_sample(bitgen_t *rng, const tl_seg_node *nodes, int64_t root, const double *vals,
                  int64_t target, const tl_token_tables *tt, int32_t *out);

/* One order-statistic level draw on a lattice law (inverse CDF of F^N with the guide
 * table of tl_bon_guide): the level index. */
int64_t tl_level_draw(bitgen_t *rng, const double *cdf, const int64_t *guide, ptrdiff_t K);

#endif
