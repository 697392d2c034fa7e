/* Elementwise helpers and the NCHW <-> NHWC transposes of the API boundary.
 * Every output element is written by exactly one thread from the same
 * inputs, so any split gives the same result. */
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

static int ew_threads(int nt, double n) { return n < 65536.0 || nt < 1 ? 1 : nt; }

/* [lo, hi) of n in 16-element units, so threads never share a cache line. */
static void split16(long n, int ith, int nth, long *lo, long *hi)
{
    env2_range((n + 15) / 16, ith, nth, lo, hi);
    *lo *= 16;
    *hi *= 16;
    if (*hi > n) *hi = n;
}

typedef struct add_job {
    long n;
    const float *a, *b;
    float *y;
} add_job;

static void add_fn(void *arg, int ith, int nth)
{
    const add_job *j = arg;
    long lo, hi;
    split16(j->n, ith, nth, &lo, &hi);
    const float *a = j->a, *b = j->b;
    float *y = j->y;
    SIMD_LOOP
    for (long i = lo; i < hi; i++) y[i] = a[i] + b[i];
}

void k_add(int nt, long n, const float *a, const float *b, float *y)
{
    if (n <= 0) return;
    add_job j = {n, a, b, y};
    k_par_run(ew_threads(nt, (double)n), add_fn, &j);
}

typedef struct scale_job {
    int n;
    long per;
    const float *x, *s;
    float *y;
} scale_job;

static void scale_fn(void *arg, int ith, int nth)
{
    const scale_job *j = arg;
    long lo, hi;
    split16((long)j->n * j->per, ith, nth, &lo, &hi);
    while (lo < hi) {
        long i = lo / j->per, end = (i + 1) * j->per;
        if (end > hi) end = hi;
        const float f = j->s[i];
        const float *x = j->x;
        float *y = j->y;
        SIMD_LOOP
        for (long k = lo; k < end; k++) y[k] = x[k] * f;
        lo = end;
    }
}

void k_scale_rows(int nt, int n, long per, const float *x, const float *s, float *y)
{
    if (n <= 0 || per <= 0) return;
    scale_job j = {n, per, x, s, y};
    k_par_run(ew_threads(nt, (double)n * per), scale_fn, &j);
}

/* ---- transposes ---------------------------------------------------------------
 * Per image a [R][Q] -> [Q][R] matrix transpose, done in TB x TB tiles so both
 * the reads and the writes stay within a few cache lines per tile.  Work units
 * are (image, tile row of the destination). */
enum { TB = 32 };

typedef struct tr_job {
    int n;
    long R, Q; /* source is [R][Q] per image */
    const float *src;
    float *dst;
} tr_job;

static void tr_fn(void *arg, int ith, int nth)
{
    const tr_job *j = arg;
    const long R = j->R, Q = j->Q, tq = (Q + TB - 1) / TB;
    long lo, hi;
    env2_range((long)j->n * tq, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) {
        long i = u / tq, q0 = (u % tq) * TB, q1 = q0 + TB < Q ? q0 + TB : Q;
        const float *s = j->src + i * R * Q;
        float *d = j->dst + i * R * Q;
        for (long r0 = 0; r0 < R; r0 += TB) {
            long r1 = r0 + TB < R ? r0 + TB : R;
            for (long q = q0; q < q1; q++)
                for (long r = r0; r < r1; r++) d[q * R + r] = s[r * Q + q];
        }
    }
}

static void transpose(int nt, int n, long R, long Q, const float *src, float *dst)
{
    if (n <= 0 || R <= 0 || Q <= 0) return;
    tr_job j = {n, R, Q, src, dst};
    k_par_run(ew_threads(nt, (double)n * R * Q), tr_fn, &j);
}

void k_nchw_to_nhwc(int nt, int n, int C, int H, int W, const float *src, float *dst)
{
    transpose(nt, n, C, (long)H * W, src, dst);
}

void k_nhwc_to_nchw(int nt, int n, int C, int H, int W, const float *src, float *dst)
{
    transpose(nt, n, (long)H * W, C, src, dst);
}
