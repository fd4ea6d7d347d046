/* Bit generators of the samplers (see tl_rng.h). */
#include "tl_rng.h"

/* ---- SeedSequence: entropy pool of four 32-bit words, and its output ---- */

#define TL_SS_POOL 4
#define TL_SS_INIT_A 0x43b0d7e5u
#define TL_SS_MULT_A 0x931e8875u
#define TL_SS_INIT_B 0x8b51f9ddu
#define TL_SS_MULT_B 0x58f38dedu
#define TL_SS_MIX_L 0xca01f9ddu
#define TL_SS_MIX_R 0x4973f715u
#define TL_SS_XSHIFT 16

static uint32_t tl__hashmix(uint32_t value, uint32_t *hash_const) {
    value ^= *hash_const;
    *hash_const *= TL_SS_MULT_A;
    value *= *hash_const;
    value ^= value >> TL_SS_XSHIFT;
    return value;
}

static uint32_t tl__mix(uint32_t x, uint32_t y) {
    uint32_t result = TL_SS_MIX_L * x - TL_SS_MIX_R * y;
    result ^= result >> TL_SS_XSHIFT;
    return result;
}

/* word i of the assembled entropy: the run entropy (zero-padded to the pool size when a
 * spawn key follows), then the spawn key */
static uint32_t tl__word(const uint32_t *entropy, ptrdiff_t n_entropy, ptrdiff_t n_run,
                         const uint32_t *key, ptrdiff_t i) {
    if (i < n_entropy) return entropy[i];
    if (i < n_run) return 0u;
    return key[i - n_run];
}

void tl_seedseq_state(const uint32_t *entropy, ptrdiff_t n_entropy, const uint32_t *key,
                      ptrdiff_t n_key, uint64_t out[4]) {
    uint32_t pool[TL_SS_POOL];
    uint32_t hash_const = TL_SS_INIT_A;
    ptrdiff_t n_run = (n_key > 0 && n_entropy < TL_SS_POOL) ? TL_SS_POOL : n_entropy;
    ptrdiff_t n_all = n_run + n_key;
    for (ptrdiff_t i = 0; i < TL_SS_POOL; i++)
        pool[i] = tl__hashmix(i < n_all ? tl__word(entropy, n_entropy, n_run, key, i) : 0u,
                              &hash_const);
    for (ptrdiff_t src = 0; src < TL_SS_POOL; src++)
        for (ptrdiff_t dst = 0; dst < TL_SS_POOL; dst++)
            if (src != dst)
                pool[dst] = tl__mix(pool[dst], tl__hashmix(pool[src], &hash_const));
    for (ptrdiff_t src = TL_SS_POOL; src < n_all; src++)
        for (ptrdiff_t dst = 0; dst < TL_SS_POOL; dst++)
            pool[dst] = tl__mix(pool[dst],
                                tl__hashmix(tl__word(entropy, n_entropy, n_run, key, src),
                                            &hash_const));
    /* generate_state: eight 32-bit words cycling over the pool, paired little-endian */
    uint32_t hb = TL_SS_INIT_B;
    uint32_t w[8];
    for (int i = 0; i < 8; i++) {
        uint32_t v = pool[i % TL_SS_POOL];
        v ^= hb;
        hb *= TL_SS_MULT_B;
        v *= hb;
        v ^= v >> TL_SS_XSHIFT;
        w[i] = v;
    }
    for (int i = 0; i < 4; i++) out[i] = (uint64_t)w[2 * i] | ((uint64_t)w[2 * i + 1] << 32);
}

/* ---- PCG64 (128-bit LCG, XSL RR output) ---- */

uint64_t tl_pcg64_next64(void *st) { return tl_pcg64_next(((tl_pcg64_state *)st)->pcg_state); }

static uint32_t tl__pcg64_next32(void *st) {
    tl_pcg64_state *p = (tl_pcg64_state *)st;
    if (p->has_uint32) {
        p->has_uint32 = 0;
        return p->uinteger;
    }
    uint64_t next = tl_pcg64_next64(st);
    p->has_uint32 = 1;
    p->uinteger = (uint32_t)(next >> 32);
    return (uint32_t)(next & 0xffffffffu);
}

static double tl__pcg64_next_double(void *st) {
    return (double)(tl_pcg64_next64(st) >> 11) * (1.0 / 9007199254740992.0);
}

void tl_pcg64_init(tl_rng_pcg64 *g, const uint64_t words[4]) {
    tl_pcg64_seed(&g->core, words);
    g->st.pcg_state = &g->core;
    g->st.has_uint32 = 0;
    g->st.uinteger = 0;
    g->bitgen.state = &g->st;
    g->bitgen.next_uint64 = tl_pcg64_next64;
    g->bitgen.next_uint32 = tl__pcg64_next32;
    g->bitgen.next_double = tl__pcg64_next_double;
    g->bitgen.next_raw = tl_pcg64_next64;
}

void tl_pcg64_get(const tl_rng_pcg64 *g, uint64_t out[4]) {
    out[0] = g->core.state.hi;
    out[1] = g->core.state.lo;
    out[2] = g->core.inc.hi;
    out[3] = g->core.inc.lo;
}

/* ---- the samplers' derivation ---- */

/* an integer < 2^64 as NumPy coerces it: one word for values below 2^32 (0 included) */
static ptrdiff_t tl__int_words(uint64_t v, uint32_t *w) {
    w[0] = (uint32_t)(v & 0xffffffffu);
    if (v >> 32) {
        w[1] = (uint32_t)(v >> 32);
        return 2;
    }
    return 1;
}

void tl_seed_entropy(const uint32_t *seed, ptrdiff_t n_seed, uint64_t out[4]) {
    uint64_t words[4];
    tl_rng_pcg64 g;
    tl_seedseq_state(seed, n_seed, NULL, 0, words);
    tl_pcg64_init(&g, words);
    /* Generator.integers(0, 2**63) with NumPy's bounded 64-bit draw (Lemire's method) over
     * a power-of-two range: the high 64 bits of x * 2^63, i.e. x >> 1, never rejected */
    for (int i = 0; i < 4; i++) out[i] = tl_pcg64_next64(&g.st) >> 1;
}

void tl_pcg64_child(tl_rng_pcg64 *g, const uint64_t entropy[4], uint64_t index) {
    uint32_t ent[8], key[2];
    ptrdiff_t n = 0;
    uint64_t words[4];
    for (int i = 0; i < 4; i++) n += tl__int_words(entropy[i], ent + n);
    ptrdiff_t n_key = tl__int_words(index, key);
    tl_seedseq_state(ent, n, key, n_key, words);
    tl_pcg64_init(g, words);
}
