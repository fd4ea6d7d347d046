/* Runtime choice between the instruction-set variants of the kernels (see tl_isa.h).
 *
 * Compiled once, with the build's baseline flags.  Each dispatched kernel's public name is
 * defined here as a call through the active table; the table is chosen by tl_isa_select()
 * (the Cython modules call it at import with the TILTLAB_SIMD environment variable).  Until
 * then the best variant this CPU runs is used, so a call never reaches an instruction the
 * CPU lacks. */
#include <stdlib.h>
#include <string.h>
#include "tl_isa.h"
#include "tl_lse.h"
#include "tl_tilt.h"
#include "tl_kl.h"
#include "tl_bon.h"
#include "tl_soft.h"
#include "tl_softmax.h"
#include "tl_cat.h"
#include "tl_markov.h"
#include "tl_mathcheck.h"

/* prototypes of every compiled variant */
#define TL_KERNEL(ret, name, params, args) ret name##_portable params;
#include "tl_dispatch.def"
#undef TL_KERNEL
#ifdef TL_HAVE_AVX2
#define TL_KERNEL(ret, name, params, args) ret name##_avx2 params;
#include "tl_dispatch.def"
#undef TL_KERNEL
#endif
#ifdef TL_HAVE_AVX512
#define TL_KERNEL(ret, name, params, args) ret name##_avx512 params;
#include "tl_dispatch.def"
#undef TL_KERNEL
#endif

typedef struct {
#define TL_KERNEL(ret, name, params, args) ret(*name) params;
#include "tl_dispatch.def"
#undef TL_KERNEL
} tl_kernel_table;

static const tl_kernel_table tl__table_portable = {
#define TL_KERNEL(ret, name, params, args) name##_portable,
#include "tl_dispatch.def"
#undef TL_KERNEL
};
#ifdef TL_HAVE_AVX2
static const tl_kernel_table tl__table_avx2 = {
#define TL_KERNEL(ret, name, params, args) name##_avx2,
#include "tl_dispatch.def"
#undef TL_KERNEL
};
#endif
#ifdef TL_HAVE_AVX512
static const tl_kernel_table tl__table_avx512 = {
#define TL_KERNEL(ret, name, params, args) name##_avx512,
#include "tl_dispatch.def"
#undef TL_KERNEL
};
#endif

static const char *const tl__isa_names[TL_ISA_COUNT] = {"portable", "avx2", "avx512"};

static const tl_kernel_table *tl__table(int isa) {
    switch (isa) {
#ifdef TL_HAVE_AVX2
    case TL_ISA_AVX2: return &tl__table_avx2;
#endif
#ifdef TL_HAVE_AVX512
    case TL_ISA_AVX512: return &tl__table_avx512;
#endif
    case TL_ISA_PORTABLE: return &tl__table_portable;
    default: return NULL;
    }
}

/* -1: not chosen yet (the first kernel call chooses the best variant) */
static int tl__active = -1;
static const tl_kernel_table *tl__current = NULL;

int tl_isa_compiled(int isa) { return isa >= 0 && isa < TL_ISA_COUNT && tl__table(isa) != NULL; }

int tl_isa_cpu_supports(int isa) {
    switch (isa) {
    case TL_ISA_PORTABLE: return 1;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    /* __builtin_cpu_supports also checks that the OS saves the vector registers */
    case TL_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TL_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#endif
    default: return 0;
    }
}

int tl_isa_best(void) {
    for (int isa = TL_ISA_COUNT - 1; isa > 0; isa--)
        if (tl_isa_compiled(isa) && tl_isa_cpu_supports(isa)) return isa;
    return TL_ISA_PORTABLE;
}

const char *tl_isa_name(int isa) {
    return isa >= 0 && isa < TL_ISA_COUNT ? tl__isa_names[isa] : NULL;
}

static void tl__set(int isa) {
    tl__current = tl__table(isa);
    tl__active = isa;
}

int tl_isa_select(const char *name) {
    int isa = -1;
    if (name == NULL || name[0] == '\0' || strcmp(name, "auto") == 0) {
        isa = tl_isa_best();
    } else {
        for (int k = 0; k < TL_ISA_COUNT; k++)
            if (strcmp(name, tl__isa_names[k]) == 0) isa = k;
        if (isa < 0) return -1;
        if (!tl_isa_compiled(isa)) return -2;
        if (!tl_isa_cpu_supports(isa)) return -3;
    }
    tl__set(isa);
    return 0;
}

int tl_isa_active(void) {
    if (tl__active < 0) tl__set(tl_isa_best());
    return tl__active;
}

static const tl_kernel_table *tl__get(void) {
    const tl_kernel_table *t = tl__current;
    if (t == NULL) {
        tl__set(tl_isa_best()); /* idempotent: concurrent first calls agree */
        t = tl__current;
    }
    return t;
}

/* the public names ("return f();" is not C99 in a void function: TL_RETURN_<type>) */
#define TL_RETURN_void
#define TL_RETURN_double return
#define TL_RETURN_ptrdiff_t return
#define TL_RETURN_int return
#define TL_KERNEL(ret, name, params, args) \
    ret name params { TL_RETURN_##ret tl__get()->name args; }
#include "tl_dispatch.def"
#undef TL_KERNEL

int tl_mathcheck_isa(int isa, const double *x, ptrdiff_t n, int func, double *out) {
    if (func < 0 || func >= TL_MC_COUNT) return -1;
    if (!tl_isa_compiled(isa)) return -2;
    if (!tl_isa_cpu_supports(isa)) return -3;
    tl__table(isa)->tl_mathcheck(x, n, func, out);
    return 0;
}
