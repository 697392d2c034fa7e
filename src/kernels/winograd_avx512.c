/* The Winograd transforms of winograd_tx.h compiled for AVX-512 (or, through
 * winograd_avx2.c, for AVX2 + FMA); winograd.c picks the build. */
#include "kernels_internal.h"

#include <string.h>

#ifdef WT_AVX2
#define WT_NAME(f) f##_avx2
#else
#define WT_NAME(f) f##_avx512
#endif
#define WT_EXPORT

void WT_NAME(k_wino_in)(const k_conv_shape *s, const float *x, long t0, int cnt, int tbp, float *V);
void WT_NAME(k_wino_out)(const k_conv_shape *s, const float *M, int tbp, int cwp, long t0, int cnt, int c0, int cw,
                         const k_epilogue *ep, float *y);
void WT_NAME(k_wino_w)(const float *w, int ci, int co, int NR, int npan, int k0, int k1, float *U);
void WT_NAME(k_wino_in_rows)(const k_conv_shape *s, const float *x, long t0, int cnt, long pstride, float *V);
void WT_NAME(k_wino_dy)(const k_conv_shape *s, const float *dy, long t0, int cnt, long pstride, float *Y);
void WT_NAME(k_wino_dw)(const float *M, int ci, int co, int k0, int k1, float *dw);

#include "winograd_tx.h"
