# Cython declarations of the C layer (csrc/).  Other Cython code can cimport these.
from libc.stdint cimport int32_t, int64_t, uint64_t

cdef extern from "tl_config.h" nogil:
    enum:
        TL_CHUNK
        TL_FLAG_BAD_LOGIT
        TL_FLAG_BAD_REWARD
        TL_FLAG_EMPTY_ROW
        TL_FLAG_INF_KL
        TL_FLAG_REWARD_RANGE
        TL_FLAGS_INPUT
    Py_ssize_t tl_num_chunks(Py_ssize_t n)

cdef extern from "tl_parallel.h" nogil:
    int tl_openmp_enabled()
    int tl_max_threads()

cdef extern from "tl_guard.h" nogil:
    ctypedef int tl_stop_flag  # volatile sig_atomic_t
    int tl_stop_requested(const tl_stop_flag *stop)
    int tl_sigint_guard_begin()
    int tl_sigint_guard_end()
    const tl_stop_flag *tl_stop_flag_here()
    void tl_fork_guard_init()
    int tl_forked_child()
    int tl_team_size(int n)

cdef extern from "tl_lse.h" nogil:
    ctypedef struct tl_lse_acc:
        double m
        int flags
    void tl_lse_chunk_f64(const double *x, Py_ssize_t n, tl_lse_acc *acc)
    void tl_lse_chunk_f32(const float *x, Py_ssize_t n, tl_lse_acc *acc)
    void tl_lse_merge(tl_lse_acc *into, const tl_lse_acc *other)
    double tl_lse_finalize(const tl_lse_acc *acc)

cdef extern from "tl_tilt.h" nogil:
    enum:
        TL_MODE_PRODUCT
        TL_MODE_STANDARD
        TL_MODE_KL
        TL_MAX_ORDER
    ctypedef struct tl_tilt_row:
        double lam
        double c
        double anchor
        double inv_scale
        int e
        double lc
        int flags
        double l_max
        double r_lo
        double r_hi
    ctypedef struct tl_tilt_acc:
        double m_l
        int flags
    ctypedef struct tl_tilt_result:
        double log_norm
        double log_partition
        double lc
        double z
        double mean
        double variance
        double kl
        double mean_s
        double var_s
        int e
        double shift
        double anchor
        double r_min
        double r_max
        int flags
    void tl_tilt_chunk_f64(const double *l, const double *r, Py_ssize_t n,
                           const tl_tilt_row *row, int mode, tl_tilt_acc *acc)
    void tl_tilt_chunk_f32(const float *l, const float *r, Py_ssize_t n,
                           const tl_tilt_row *row, int mode, tl_tilt_acc *acc)
    void tl_tilt_merge(tl_tilt_acc *into, const tl_tilt_acc *other, int mode)
    int tl_tilt_product_ok(const tl_tilt_acc *acc, double lam)
    int tl_tilt_row_product_ok(const tl_tilt_row *row)
    int tl_tilt_kl_pass_advised(const tl_tilt_result *res, double lam)
    double tl_tilt_kl_value(const tl_tilt_acc *acc)
    void tl_tilt_finalize(const tl_tilt_acc *acc, const tl_tilt_row *row, int mode,
                          tl_tilt_result *out)
    Py_ssize_t tl_prescan_f64(const double *l, const double *r, Py_ssize_t n, double lam,
                              double *r_lo, double *r_hi, double *l_max)
    Py_ssize_t tl_prescan_f32(const float *l, const float *r, Py_ssize_t n, double lam,
                              double *r_lo, double *r_hi, double *l_max)
    double tl_tilted_diff(double l_i, double r_i, double l_b, double r_b, double lam)
    int tl_range_exponent(double range)
    void tl_tilt_row_init(tl_tilt_row *row, double anchor, double c, double r_lo, double r_hi,
                          double l_max)

    ctypedef struct tl_info_acc:
        double m_l
        int flags
    ctypedef struct tl_info_result:
        double log_norm
        double mean
        double variance
        double var_s
        int e
        double r_max
        double log_p_max
        double r_min
        double log_p_min
        double m_max
        double ls_max
        double m_min
        double ls_min
        int flags
    void tl_info_chunk_f64(const double *l, const double *r, Py_ssize_t n,
                           const tl_tilt_row *row, tl_info_acc *acc)
    void tl_info_chunk_f32(const float *l, const float *r, Py_ssize_t n,
                           const tl_tilt_row *row, tl_info_acc *acc)
    void tl_info_merge(tl_info_acc *into, const tl_info_acc *other)
    void tl_info_finalize(const tl_info_acc *acc, const tl_tilt_row *row, tl_info_result *out)

    ctypedef struct tl_phi_params:
        double lam
        double c
        double anchor
        double z
        double inv_scale
        double center
        double inv_spread
    void tl_tilt_logprobs_f64(const double *l, const double *r, Py_ssize_t n,
                              const tl_phi_params *p, double *out)
    void tl_tilt_logprobs_f32(const float *l, const float *r, Py_ssize_t n,
                              const tl_phi_params *p, double *out)
    void tl_limit_logprobs_f64(const double *l, const double *r, Py_ssize_t n, double r_star,
                               double m_star, double ls_star, double *out)
    void tl_limit_logprobs_f32(const float *l, const float *r, Py_ssize_t n, double r_star,
                               double m_star, double ls_star, double *out)
    void tl_moments_chunk_f64(const double *l, const double *r, Py_ssize_t n,
                              const tl_phi_params *p, int order, double *sums)
    void tl_moments_chunk_f32(const float *l, const float *r, Py_ssize_t n,
                              const tl_phi_params *p, int order, double *sums)
    void tl_cumulants_from_moments(const double *sums, int order, double center,
                                   double spread, double *kappa)

cdef extern from "tl_kl.h" nogil:
    double TL_KL_HUGE
    enum:
        TL_FLAG_BAD_LOGIT_Q
        TL_FLAG_EMPTY_ROW_Q
    ctypedef struct tl_kl_acc:
        double m_p
        int flags
    void tl_kl_chunk_f64(const double *lp, const double *lq, Py_ssize_t n, double p_ref,
                         double q_ref, double p_max, double c, double ltot, int mode,
                         tl_kl_acc *acc)
    void tl_kl_chunk_f32(const float *lp, const float *lq, Py_ssize_t n, double p_ref,
                         double q_ref, double p_max, double c, double ltot, int mode,
                         tl_kl_acc *acc)
    void tl_kl_merge(tl_kl_acc *into, const tl_kl_acc *other, int mode)
    int tl_kl_product_ok(const tl_kl_acc *acc)
    double tl_kl_finalize(const tl_kl_acc *acc, double c, int mode, int *flags, double *ltot,
                          double *q_out, int *advise_kl_pass)
    void tl_kl_shift_f64(const double *lp, const double *lq, Py_ssize_t n, double *p_ref,
                         double *q_ref)
    void tl_kl_shift_f32(const float *lp, const float *lq, Py_ssize_t n, double *p_ref,
                         double *q_ref)

cdef extern from "tl_solve.h" nogil:
    ctypedef struct tl_newton:
        double lam
        int iter
        int done
        int converged
    enum:
        TL_NEWTON_CONVERGED
        TL_NEWTON_ITER_LIMIT
        TL_NEWTON_OVERFLOW
        TL_NEWTON_UNDERFLOW
    void tl_newton_init(tl_newton *s, double target, double kl_max, double lam0)
    void tl_newton_step(tl_newton *s, double kl, double d)

cdef extern from "tl_bon.h" nogil:
    ctypedef struct bitgen_t:
        pass
    ctypedef struct tl_levels:
        Py_ssize_t n_levels
        Py_ssize_t n_support
        double log_norm
        double norm_max
        double norm_log
    ctypedef struct tl_bon_metrics:
        double kl
        double expected_reward
        double win_rate
        double total_mass
    int tl_levels_f64(const double *l, const double *r, Py_ssize_t n, uint64_t *keys,
                      uint64_t *kbuf, int64_t *order, int64_t *obuf, double *values,
                      double *log_mass, int64_t *start, tl_levels *out,
                      const tl_stop_flag *stop)
    int tl_levels_f32(const float *l, const float *r, Py_ssize_t n, uint64_t *keys,
                      uint64_t *kbuf, int64_t *order, int64_t *obuf, double *values,
                      double *log_mass, int64_t *start, tl_levels *out,
                      const tl_stop_flag *stop)
    void tl_bon_law(const double *values, const double *log_mass, Py_ssize_t L, double log_n,
                    double *log_cdf, double *log_sf, double *ell, double *a, double *log_w,
                    int full, tl_bon_metrics *out, const tl_stop_flag *stop)
    void tl_bon_logprobs_f64(const double *l, Py_ssize_t n, const int64_t *order,
                             const int64_t *start, Py_ssize_t L, const double *log_mass,
                             const double *log_w, double norm_max, double norm_log,
                             double *out)
    void tl_bon_logprobs_f32(const float *l, Py_ssize_t n, const int64_t *order,
                             const int64_t *start, Py_ssize_t L, const double *log_mass,
                             const double *log_w, double norm_max, double norm_log,
                             double *out)
    void tl_level_alias_f64(const double *l, const int64_t *order, const int64_t *start,
                            Py_ssize_t L, double *prob, int64_t *alias, double *scratch,
                            int64_t *small, int64_t *large)
    void tl_level_alias_f32(const float *l, const int64_t *order, const int64_t *start,
                            Py_ssize_t L, double *prob, int64_t *alias, double *scratch,
                            int64_t *small, int64_t *large)
    ctypedef struct tl_alias_slot:
        double prob
        int32_t here
        int32_t alias
    void tl_pack_outcomes(const double *prob, const int64_t *alias, const int64_t *order,
                          Py_ssize_t n, tl_alias_slot *slots)
    void tl_bon_guide(const double *a, Py_ssize_t L, double *cdf, int64_t *guide, Py_ssize_t K)
    void tl_alias_build(const double *weights, Py_ssize_t n, double *prob, int64_t *alias,
                        int64_t *small, int64_t *large)
    ctypedef struct tl_u128:
        uint64_t lo
        uint64_t hi
    ctypedef struct tl_pcg64:
        tl_u128 state
        tl_u128 inc
    void tl_pcg64_seed(tl_pcg64 *g, const uint64_t *words)
    void tl_pcg64_advance(tl_pcg64 *g, tl_u128 delta)
    tl_u128 tl_u128_mul64(uint64_t a, uint64_t b)
    void tl_pcg64_words(const tl_pcg64 *g, uint64_t *out, Py_ssize_t n)
    ctypedef struct tl_alias64:
        uint64_t thresh
        int32_t here
        int32_t alias
    int tl_alias64_build(const double *w, const int32_t *payload, Py_ssize_t n,
                         tl_alias64 *slots, double *prob, int32_t *stack)
    void tl_alias64_sample(const tl_pcg64 *g, int64_t count, const tl_alias64 *slots,
                           Py_ssize_t n, int64_t *out)
    double TL_SAMPLE_LINEAR
    Py_ssize_t tl_bon_level_weights(const double *values, const double *log_mass, Py_ssize_t L,
                                    double log_n, double *w, double *s0, double *s1,
                                    double *s2, double *s3, double *s4,
                                    const tl_stop_flag *stop)
    Py_ssize_t tl_bon_outcome_weights_f64(const double *l, const int64_t *order,
                                          const int64_t *start, Py_ssize_t L, Py_ssize_t first,
                                          const double *log_mass, const double *w,
                                          double norm_max, double norm_log, double *wout,
                                          int32_t *payload)
    Py_ssize_t tl_bon_outcome_weights_f32(const float *l, const int64_t *order,
                                          const int64_t *start, Py_ssize_t L, Py_ssize_t first,
                                          const double *log_mass, const double *w,
                                          double norm_max, double norm_log, double *wout,
                                          int32_t *payload)
    int tl_softmax_weights_f64(const double *l, const double *r, Py_ssize_t n, double *wout,
                               int32_t *payload, Py_ssize_t *n_out)
    int tl_softmax_weights_f32(const float *l, const float *r, Py_ssize_t n, double *wout,
                               int32_t *payload, Py_ssize_t *n_out)
    void tl_bon_simulate(const tl_pcg64 *g, int64_t count, int64_t n_candidates, Py_ssize_t n,
                         const tl_alias64 *level_slots, const int32_t *outcome_here,
                         const int32_t *outcome_alias, int64_t *out, const tl_stop_flag *stop)
    void tl_bon_naive_relabel(tl_alias64 *slots, Py_ssize_t n, const int64_t *order,
                              const int64_t *start, Py_ssize_t L, int32_t *level_of_pos,
                              int32_t *outcome_here, int32_t *outcome_alias)

cdef extern from "tl_lattice.h" nogil:
    ctypedef struct tl_seg_node:
        int64_t left
        int64_t right
        int64_t pos
        int64_t row
        int64_t lo
        int64_t len
        int64_t off
        double c0
        double ratio
        double zfac
    ctypedef struct tl_token_tables:
        const int64_t *ls_off
        const int64_t *level_start
        const int64_t *slot_off
        const tl_alias_slot *slots
    int tl_seg_sample(bitgen_t *rng, const tl_seg_node *nodes, int64_t root, const double *vals,
                      int64_t target, const tl_token_tables *tt, int32_t *out)
    int64_t tl_level_draw(bitgen_t *rng, const double *cdf, const int64_t *guide, Py_ssize_t K)


cdef extern from "tl_soft.h" nogil:
    int TL_SOFT_R
    void tl_soft_nodes(const double *u, const int64_t *bon, const int64_t *boff, int64_t i0,
                       int64_t i1, const double *c, const double *ec, const double *m0,
                       const double *P, double *d, double *md)
    void tl_soft_bins(const double *u, const double *eu, const double *logA,
                      const int64_t *wlo, const int64_t *whi, const double *c,
                      const double *ec, int64_t b0, int64_t b1, double *mx, double *U)

cdef extern from "tl_markov.h" nogil:
    Py_ssize_t tl_markov_work_size(Py_ssize_t nv, int64_t length)
    int tl_markov_backward(const double *log_tr, const double *r, Py_ssize_t nv, double lam,
                           int64_t length, double *offset, double *centred, double *m,
                           double *v, double *kappa, double *log_q, Py_ssize_t q_stride,
                           double *work, const tl_stop_flag *stop)
    double tl_markov_kl_max(const double *log_p0, const double *r0, const double *log_tr,
                            const double *r, Py_ssize_t nv, int64_t length, double tol,
                            double *work)

cdef extern from "tl_isa.h" nogil:
    enum:
        TL_ISA_PORTABLE
        TL_ISA_AVX2
        TL_ISA_AVX512
        TL_ISA_COUNT
    int tl_isa_select(const char *name)
    int tl_isa_active()
    const char *tl_isa_name(int isa)
    int tl_isa_compiled(int isa)
    int tl_isa_cpu_supports(int isa)
    int tl_isa_best()
