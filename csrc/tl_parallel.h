/* OpenMP facts for the Cython drivers (header only: compiled with the module's flags). */
#ifndef TL_PARALLEL_H
#define TL_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>
static inline int tl_openmp_enabled(void) { return 1; }
static inline int tl_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int tl_openmp_enabled(void) { return 0; }
static inline int tl_max_threads(void) { return 1; }
#endif

#endif
