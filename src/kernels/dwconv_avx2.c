/* AVX2 + FMA build of the depthwise and activation SIMD paths: the code is
 * shared with dwconv_avx512.c, which selects 8-lane vectors and *_avx2 names
 * when DW_AVX2 is defined. */
#define DW_AVX2 1
#include "dwconv_avx512.c"
