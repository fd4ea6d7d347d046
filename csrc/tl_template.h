/* Type templating for the element type of input arrays.
 * A kernel file defines TL_IMPL (the implementation header) and includes this file:
 * the implementation is compiled once for double (suffix _f64) and once for float
 * (suffix _f32), with TL_T_IS_F32 0 or 1.  Inputs are read as TL_T; the arithmetic is
 * in double, except where a kernel documents float lanes for float32 input. */
#ifndef TL_IMPL
#error "define TL_IMPL before including tl_template.h"
#endif

#define TL_T double
#define TL_T_IS_F32 0
#define TL_VLOADT(p) tl_vload(p) /* TL_VW inputs as doubles (tl_simd.h) */
#define TL_SFX(name) name##_f64
#include TL_IMPL
#undef TL_T
#undef TL_T_IS_F32
#undef TL_VLOADT
#undef TL_SFX

#define TL_T float
#define TL_T_IS_F32 1
#define TL_VLOADT(p) tl_vload_f(p)
#define TL_SFX(name) name##_f32
#include TL_IMPL
#undef TL_T
#undef TL_T_IS_F32
#undef TL_VLOADT
#undef TL_SFX
