/* The bit generators of the samplers, derived without Python objects (plain C, no Python).
 *
 * The samplers give every block of draws its own generator, derived from the caller's
 * `rng` as NumPy does it:
 *
 *     entropy  = four integers in [0, 2^63) from the caller's generator
 *     child b  = PCG64(SeedSequence(entropy, spawn_key=(b,)))
 *
 * (numpy.random.SeedSequence(entropy).spawn(count)[b] is that SeedSequence).  Built with
 * NumPy's objects this costs ~15 us per child, far more than drawing a few hundred values.
 * The functions here compute the same states: SeedSequence's entropy pool (pool size 4)
 * and its generate_state, PCG64's seeding (128-bit LCG, multiplier 0x2360ed051fc65da4
 * 4385df649fccf645, "XSL RR" output), and the bit-generator interface of
 * numpy/random/bitgen.h over them, so a generator made here draws exactly the values of
 * the NumPy PCG64 with the same state.  tests/test_small_calls.py checks states and draws
 * against NumPy's own objects.
 *
 * The state is laid out as NumPy's (a pointer to the 128-bit state and increment, then the
 * buffered half of a 64-bit draw for next_uint32).
 */
#ifndef TL_RNG_H
#define TL_RNG_H

#include <stddef.h>
#include <stdint.h>
#include "numpy/random/bitgen.h"
#include "tl_bon.h" /* tl_pcg64: the PCG64 core the samplers draw from */

typedef struct {
    tl_pcg64 *pcg_state; /* points at the core of the same tl_rng_pcg64 */
    int has_uint32;
    uint32_t uinteger;
} tl_pcg64_state;

typedef struct {
    tl_pcg64_state st;
    tl_pcg64 core;
    bitgen_t bitgen; /* bitgen.state == &st */
} tl_rng_pcg64;

/* SeedSequence(entropy words, spawn_key=(key words)).generate_state(4, uint64): the
 * entropy as NumPy coerces it (32-bit words, least significant first, each integer at
 * least one word), n_key = 0 for no spawn key. */
void tl_seedseq_state(const uint32_t *entropy, ptrdiff_t n_entropy, const uint32_t *key,
                      ptrdiff_t n_key, uint64_t out[4]);

/* g = PCG64 seeded with generate_state(4, uint64) `words` (buffer empty), with its
 * bitgen_t interface ready. */
void tl_pcg64_init(tl_rng_pcg64 *g, const uint64_t words[4]);

/* Raw state: state (high, low) and increment (high, low) as 64-bit halves. */
void tl_pcg64_get(const tl_rng_pcg64 *g, uint64_t out[4]);

uint64_t tl_pcg64_next64(void *st);

/* The `entropy` of child generators for an integer seed: the four values
 * Generator(PCG64(SeedSequence(seed))).integers(0, 2**63, size=4) (seed as 32-bit words). */
void tl_seed_entropy(const uint32_t *seed, ptrdiff_t n_seed, uint64_t out[4]);

/* g = PCG64(SeedSequence(entropy, spawn_key=(index,))) for four entropy values
 * (each < 2^64). */
void tl_pcg64_child(tl_rng_pcg64 *g, const uint64_t entropy[4], uint64_t index);

#endif
