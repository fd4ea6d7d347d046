/* Instruction-set variants of the vectorised kernels (runtime dispatch).
 *
 * The kernel sources that hold vectorisable loops (tl_lse.c, tl_tilt.c, tl_kl.c, tl_bon.c,
 * tl_bon_draw.c, tl_soft.c, tl_softmax.c, tl_cat.c, tl_markov.c, and the test hook
 * tl_mathcheck.c) are compiled once per variant, with TL_ISA set to the variant's name and
 * the variant's compiler flags:
 *     portable   the build's baseline (x86-64: SSE2)
 *     avx2       -mavx2 -mfma
 *     avx512     -mavx512f -mavx512dq -mavx512vl -mavx512bw, 512-bit vectors
 * Every variant renames the dispatched kernels below to <name>_<variant>; tl_dispatch.c
 * defines the public names, which call through the table chosen at start-up (CPU
 * detection, or the TILTLAB_SIMD environment variable).  The other public functions of
 * those files are used from the portable build only: the non-portable builds rename them
 * too, so that the copies do not clash (they are never called).
 *
 * All variants run the same C source with -ffp-contract=off, so they do the same
 * floating-point operations in the same order; the only difference is that the avx2 and
 * avx512 builds evaluate the polynomial of tl_exp with fused multiply-adds (TL_FMA in
 * tl_exp.h).  Results of different variants agree to a few ulp, not bitwise.
 */
#ifndef TL_ISA_H
#define TL_ISA_H

#define TL_ISA_PORTABLE 0
#define TL_ISA_AVX2 1
#define TL_ISA_AVX512 2
#define TL_ISA_COUNT 3

#ifdef TL_ISA
#define TL_ISA_CAT_(a, b) a##_##b
#define TL_ISA_CAT(a, b) TL_ISA_CAT_(a, b)
#define TL_ISA_NAME(name) TL_ISA_CAT(name, TL_ISA)

/* dispatched kernels (keep in step with tl_dispatch.def) */
#define tl_lse_chunk_f64 TL_ISA_NAME(tl_lse_chunk_f64)
#define tl_lse_chunk_f32 TL_ISA_NAME(tl_lse_chunk_f32)
#define tl_tilt_chunk_f64 TL_ISA_NAME(tl_tilt_chunk_f64)
#define tl_tilt_chunk_f32 TL_ISA_NAME(tl_tilt_chunk_f32)
#define tl_info_chunk_f64 TL_ISA_NAME(tl_info_chunk_f64)
#define tl_info_chunk_f32 TL_ISA_NAME(tl_info_chunk_f32)
#define tl_tilt_logprobs_f64 TL_ISA_NAME(tl_tilt_logprobs_f64)
#define tl_tilt_logprobs_f32 TL_ISA_NAME(tl_tilt_logprobs_f32)
#define tl_limit_logprobs_f64 TL_ISA_NAME(tl_limit_logprobs_f64)
#define tl_limit_logprobs_f32 TL_ISA_NAME(tl_limit_logprobs_f32)
#define tl_moments_chunk_f64 TL_ISA_NAME(tl_moments_chunk_f64)
#define tl_moments_chunk_f32 TL_ISA_NAME(tl_moments_chunk_f32)
#define tl_prescan_f64 TL_ISA_NAME(tl_prescan_f64)
#define tl_prescan_f32 TL_ISA_NAME(tl_prescan_f32)
#define tl_kl_chunk_f64 TL_ISA_NAME(tl_kl_chunk_f64)
#define tl_kl_chunk_f32 TL_ISA_NAME(tl_kl_chunk_f32)
#define tl_kl_shift_f64 TL_ISA_NAME(tl_kl_shift_f64)
#define tl_kl_shift_f32 TL_ISA_NAME(tl_kl_shift_f32)
#define tl_bon_logprobs_f64 TL_ISA_NAME(tl_bon_logprobs_f64)
#define tl_bon_logprobs_f32 TL_ISA_NAME(tl_bon_logprobs_f32)
#define tl_bon_law TL_ISA_NAME(tl_bon_law)
#define tl_bon_draw_row_f64 TL_ISA_NAME(tl_bon_draw_row_f64)
#define tl_bon_draw_row_f32 TL_ISA_NAME(tl_bon_draw_row_f32)
#define tl_bon_draw_select TL_ISA_NAME(tl_bon_draw_select) /* each variant calls its own */
#define tl_soft_nodes TL_ISA_NAME(tl_soft_nodes)
#define tl_soft_bins TL_ISA_NAME(tl_soft_bins)
#define tl_softmax_chunk_f64 TL_ISA_NAME(tl_softmax_chunk_f64)
#define tl_softmax_chunk_f32 TL_ISA_NAME(tl_softmax_chunk_f32)
#define tl_softmax_scale_f64 TL_ISA_NAME(tl_softmax_scale_f64)
#define tl_softmax_scale_f32 TL_ISA_NAME(tl_softmax_scale_f32)
#define tl_log_softmax_write_f64 TL_ISA_NAME(tl_log_softmax_write_f64)
#define tl_log_softmax_write_f32 TL_ISA_NAME(tl_log_softmax_write_f32)
#define tl_cat_prepare_f64 TL_ISA_NAME(tl_cat_prepare_f64)
#define tl_cat_prepare_f32 TL_ISA_NAME(tl_cat_prepare_f32)
#define tl_cat_draw_f64 TL_ISA_NAME(tl_cat_draw_f64)
#define tl_cat_draw_f32 TL_ISA_NAME(tl_cat_draw_f32)
#define tl_cat_weights_f64 TL_ISA_NAME(tl_cat_weights_f64)
#define tl_cat_weights_f32 TL_ISA_NAME(tl_cat_weights_f32)
#define tl_markov_backward TL_ISA_NAME(tl_markov_backward)
#define tl_mathcheck TL_ISA_NAME(tl_mathcheck) /* test hook: tl_mathcheck.h */

#if !TL_ISA_IS_PORTABLE
/* used from the portable build only */
#define tl_lse_merge TL_ISA_NAME(tl_lse_merge)
#define tl_lse_finalize TL_ISA_NAME(tl_lse_finalize)
#define tl_tilt_merge TL_ISA_NAME(tl_tilt_merge)
#define tl_tilt_product_ok TL_ISA_NAME(tl_tilt_product_ok)
#define tl_tilt_row_product_ok TL_ISA_NAME(tl_tilt_row_product_ok)
#define tl_tilt_finalize TL_ISA_NAME(tl_tilt_finalize)
#define tl_tilt_kl_pass_advised TL_ISA_NAME(tl_tilt_kl_pass_advised)
#define tl_tilt_kl_value TL_ISA_NAME(tl_tilt_kl_value)
#define tl_tilted_diff TL_ISA_NAME(tl_tilted_diff)
#define tl_range_exponent TL_ISA_NAME(tl_range_exponent)
#define tl_tilt_row_init TL_ISA_NAME(tl_tilt_row_init)
#define tl_info_merge TL_ISA_NAME(tl_info_merge)
#define tl_info_finalize TL_ISA_NAME(tl_info_finalize)
#define tl_cumulants_from_moments TL_ISA_NAME(tl_cumulants_from_moments)
#define tl_kl_merge TL_ISA_NAME(tl_kl_merge)
#define tl_kl_product_ok TL_ISA_NAME(tl_kl_product_ok)
#define tl_kl_finalize TL_ISA_NAME(tl_kl_finalize)
#define tl_levels_f64 TL_ISA_NAME(tl_levels_f64)
#define tl_levels_f32 TL_ISA_NAME(tl_levels_f32)
#define tl_level_alias_f64 TL_ISA_NAME(tl_level_alias_f64)
#define tl_level_alias_f32 TL_ISA_NAME(tl_level_alias_f32)
#define tl_pack_outcomes TL_ISA_NAME(tl_pack_outcomes)
#define tl_bon_guide TL_ISA_NAME(tl_bon_guide)
#define tl_alias_build TL_ISA_NAME(tl_alias_build)
#define tl_bon_simulate TL_ISA_NAME(tl_bon_simulate)
#define tl_pcg64_seed TL_ISA_NAME(tl_pcg64_seed)
#define tl_pcg64_next TL_ISA_NAME(tl_pcg64_next)
#define tl_pcg64_advance TL_ISA_NAME(tl_pcg64_advance)
#define tl_pcg64_words TL_ISA_NAME(tl_pcg64_words)
#define tl_u128_mul64 TL_ISA_NAME(tl_u128_mul64)
#define tl_alias64_build TL_ISA_NAME(tl_alias64_build)
#define tl_alias64_sample TL_ISA_NAME(tl_alias64_sample)
#define tl_bon_level_weights TL_ISA_NAME(tl_bon_level_weights)
#define tl_bon_outcome_weights_f64 TL_ISA_NAME(tl_bon_outcome_weights_f64)
#define tl_bon_outcome_weights_f32 TL_ISA_NAME(tl_bon_outcome_weights_f32)
#define tl_softmax_weights_f64 TL_ISA_NAME(tl_softmax_weights_f64)
#define tl_softmax_weights_f32 TL_ISA_NAME(tl_softmax_weights_f32)
#define tl_bon_naive_relabel TL_ISA_NAME(tl_bon_naive_relabel)
#define tl_softmax_merge TL_ISA_NAME(tl_softmax_merge)
#define tl_markov_work_size TL_ISA_NAME(tl_markov_work_size)
#define tl_markov_kl_max TL_ISA_NAME(tl_markov_kl_max)
#endif
#endif /* TL_ISA */

/* ---- the dispatcher (tl_dispatch.c; compiled once, without TL_ISA) ---- */
/* Chooses the variant: `name` is "auto" (or NULL/empty: the best the CPU runs), or one of
 * "portable", "avx2", "avx512".  Returns 0 on success, -1 for an unknown name, -2 if the
 * variant was not compiled into this build, -3 if this CPU cannot run it (the active
 * variant is then unchanged). */
int tl_isa_select(const char *name);
int tl_isa_active(void);                  /* TL_ISA_* of the variant in use */
const char *tl_isa_name(int isa);         /* "portable", "avx2", "avx512"; NULL if out of range */
int tl_isa_compiled(int isa);             /* 1 if the build contains the variant */
int tl_isa_cpu_supports(int isa);         /* 1 if this CPU (and OS) can run it */
int tl_isa_best(void);                    /* the best compiled variant the CPU runs */

#endif
