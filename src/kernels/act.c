/* SiLU and sigmoid, forward and backward, elementwise.
 *
 * Numerics: sigmoid is 1 / (1 + e^-x) and SiLU is x / (1 + e^-x).  For very
 * negative x, e^-x overflows to +inf and both give exactly 0 (SiLU: -0), never
 * NaN; for very positive x, e^-x underflows to 0 and they give 1 and x.  The
 * backward formulas only multiply finite factors, so x = +-100 or -1e30 give
 * finite gradients (0 or dy).
 *
 * The AVX-512 and AVX2 paths (k_act_* in dwconv_avx512.c / dwconv_avx2.c)
 * are used when the CPU has them; the portable path uses the scalar helpers of kernels_internal.h, as
 * every other kernel does.  Elementwise work needs no care for
 * determinism: each element is computed alone, whatever the split. */
#include <math.h>
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

#if K_HAVE_X86_PATHS
void k_act_avx512(int op, long n, const float *x, const float *dy, float *y);
void k_act_avx2(int op, long n, const float *x, const float *dy, float *y);
#endif

/* Operation codes shared with k_act_avx512 / k_act_avx2. */
enum { OP_SILU = 0, OP_SILU_BWD = 1, OP_SIGMOID = 2, OP_SIGMOID_BWD = 3 };

typedef struct act_job {
    int op, level;
    long n;
    const float *x, *dy;
    float *y;
} act_job;

static void act_range(const act_job *j, long lo, long hi)
{
    const float *x = j->x + lo, *dy = j->dy ? j->dy + lo : NULL;
    float *y = j->y + lo;
    long n = hi - lo;
#if K_HAVE_X86_PATHS
    if (j->op != OP_SIGMOID_BWD && j->level >= K_SIMD_AVX512) {
        k_act_avx512(j->op, n, x, dy, y);
        return;
    }
    if (j->op != OP_SIGMOID_BWD && j->level >= K_SIMD_AVX2) {
        k_act_avx2(j->op, n, x, dy, y);
        return;
    }
#endif
    switch (j->op) {
    case OP_SILU:
        for (long i = 0; i < n; i++) y[i] = k_siluf(x[i]);
        break;
    case OP_SILU_BWD:
        for (long i = 0; i < n; i++) {
            /* 1 - s as e*s keeps its relative precision for large x, where
             * 1 - s would cancel; fminf turns inf*0 (x very negative, where
             * the product below is 0 anyway) into 1 */
            float e = expf(-x[i]), s = 1.0f / (1.0f + e), oms = fminf(e * s, 1.0f);
            y[i] = dy[i] * s * (1.0f + x[i] * oms);
        }
        break;
    case OP_SIGMOID:
        for (long i = 0; i < n; i++) y[i] = k_sigmoidf(x[i]);
        break;
    default:
        /* x holds the forward output here */
        for (long i = 0; i < n; i++) y[i] = dy[i] * x[i] * (1.0f - x[i]);
        break;
    }
}

void k_silu_rows(int bwd, long n, const float *x, const float *dy, float *y)
{
    act_job j = {bwd ? OP_SILU_BWD : OP_SILU, k_simd_level(), n, x, dy, y};
    act_range(&j, 0, n);
}

void k_act_rows(int act, long n, const float *x, float *y)
{
    if (act != K_ACT_SILU && act != K_ACT_SIGMOID) return;
    act_job j = {act == K_ACT_SILU ? OP_SILU : OP_SIGMOID, k_simd_level(), n, x, NULL, y};
    act_range(&j, 0, n);
}

static void act_fn(void *arg, int ith, int nth)
{
    const act_job *j = arg;
    /* split in 16-element units so threads never share a cache line */
    long lo, hi;
    env2_range((j->n + 15) / 16, ith, nth, &lo, &hi);
    lo *= 16;
    hi *= 16;
    if (hi > j->n) hi = j->n;
    if (lo < hi) act_range(j, lo, hi);
}

static void act_run(int nt, int op, long n, const float *x, const float *dy, float *y)
{
    if (n <= 0) return;
    act_job j = {op, k_simd_level(), n, x, dy, y};
    k_par_run(n >= 65536 ? nt : 1, act_fn, &j);
}

void k_silu_fwd(int nt, long n, const float *x, float *y) { act_run(nt, OP_SILU, n, x, NULL, y); }

void k_silu_bwd(int nt, long n, const float *x, const float *dy, float *dx)
{
    act_run(nt, OP_SILU_BWD, n, x, dy, dx);
}

void k_sigmoid_fwd(int nt, long n, const float *x, float *y) { act_run(nt, OP_SIGMOID, n, x, NULL, y); }

void k_sigmoid_bwd(int nt, long n, const float *y, const float *dy, float *dx)
{
    act_run(nt, OP_SIGMOID_BWD, n, y, dy, dx);
}

/* References in double, with the same overflow behaviour (exp(+large) = inf). */
void k_silu_fwd_ref(long n, const float *x, float *y)
{
    for (long i = 0; i < n; i++) y[i] = (float)((double)x[i] / (1.0 + exp(-(double)x[i])));
}

void k_silu_bwd_ref(long n, const float *x, const float *dy, float *dx)
{
    for (long i = 0; i < n; i++) {
        double v = x[i], s = 1.0 / (1.0 + exp(-v));
        dx[i] = (float)(dy[i] * s * (1.0 + v * (1.0 - s)));
    }
}
