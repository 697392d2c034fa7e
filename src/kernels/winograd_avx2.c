/* AVX2 + FMA build of the Winograd transforms (see winograd_avx512.c). */
#define WT_AVX2 1
#include "winograd_avx512.c"
