/* AVX2 + FMA build of the batch-norm SIMD paths: the code is shared with
 * bn_avx512.c, which selects 8-lane vectors and *_avx2 names when BN_AVX2 is
 * defined. */
#define BN_AVX2 1
#include "bn_avx512.c"
