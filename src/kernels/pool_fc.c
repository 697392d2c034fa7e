/* Global average pooling and the fully connected layer.
 *
 * GAP reduces each (image, channel) over its hw positions in chunks of
 * GAP_CHUNK positions summed in float and combined in order in double: the
 * result does not depend on the thread count.  k_gap_fwd_ws gives the chunks
 * to the threads and combines them afterwards, which reads each thread's
 * rows where the previous layer (split by rows) left them; k_gap_fwd gives
 * each thread whole channels.  Both produce the same bits.  The FC products
 * go through k_fc_gemm (forward) and k_sgemm; the bias gradient is a column
 * sum in double. */
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

enum { GAP_CHUNK = 64, GAP_GROUP = 256 };

typedef struct gap_job {
    int n, C;
    long hw;
    const float *x;
    float *y;
} gap_job;

/* Units are (image, group of GAP_GROUP channels). */
static void gap_fwd_fn(void *arg, int ith, int nth)
{
    const gap_job *j = arg;
    const int C = j->C;
    long ng = (C + GAP_GROUP - 1) / GAP_GROUP, lo, hi;
    env2_range((long)j->n * ng, ith, nth, &lo, &hi);
    float part[GAP_GROUP];
    double tot[GAP_GROUP];
    for (long u = lo; u < hi; u++) {
        long i = u / ng, c0 = (u % ng) * GAP_GROUP;
        int cn = C - c0 < GAP_GROUP ? (int)(C - c0) : GAP_GROUP;
        const float *xi = j->x + i * j->hw * C + c0;
        for (int c = 0; c < cn; c++) tot[c] = 0.0;
        for (long p0 = 0; p0 < j->hw; p0 += GAP_CHUNK) {
            long p1 = p0 + GAP_CHUNK < j->hw ? p0 + GAP_CHUNK : j->hw;
            for (int c = 0; c < cn; c++) part[c] = 0.0f;
            for (long p = p0; p < p1; p++) {
                const float *xp = xi + p * C;
                SIMD_LOOP
                for (int c = 0; c < cn; c++) part[c] += xp[c];
            }
            for (int c = 0; c < cn; c++) tot[c] += part[c];
        }
        float *yi = j->y + i * (long)C + c0;
        for (int c = 0; c < cn; c++) yi[c] = (float)(tot[c] / (double)j->hw);
    }
}

void k_gap_fwd(int nt, int n, long hw, int C, const float *x, float *y)
{
    if (n <= 0 || C <= 0) return;
    if (hw <= 0) {
        for (long i = 0; i < (long)n * C; i++) y[i] = 0.0f;
        return;
    }
    gap_job j = {n, C, hw, x, y};
    k_par_run((double)n * hw * C < 65536.0 ? 1 : nt, gap_fwd_fn, &j);
}

size_t k_gap_scratch(int n, long hw, int C)
{
    if (n <= 0 || hw <= 0 || C <= 0) return 16;
    return ((size_t)n * (size_t)((hw + GAP_CHUNK - 1) / GAP_CHUNK) * (size_t)C + 15) & ~(size_t)15;
}

typedef struct gapc_job {
    int n, C;
    long hw, nq;
    const float *x;
    float *part, *y;
    env2_steal st;
} gapc_job;

/* Units are (image, chunk of GAP_CHUNK positions), claimed with stealing:
 * all C channels' float sums of the chunk into part[(i * nq + q) * C ..]. */
static void gap_chunk_fn(void *arg, int ith, int nth)
{
    gapc_job *j = arg;
    const int C = j->C;
    long u;
    (void)nth;
    while (env2_steal_next(&j->st, ith, &u)) {
        long i = u / j->nq, p0 = (u % j->nq) * GAP_CHUNK;
        long p1 = p0 + GAP_CHUNK < j->hw ? p0 + GAP_CHUNK : j->hw;
        float *part = j->part + u * C;
        const float *xp = j->x + (i * j->hw + p0) * C;
        for (int c = 0; c < C; c++) part[c] = xp[c];
        for (long p = p0 + 1; p < p1; p++) {
            xp += C;
            SIMD_LOOP
            for (int c = 0; c < C; c++) part[c] += xp[c];
        }
    }
}

/* Units are (image, group of GAP_GROUP channels): the chunks in order, in double. */
static void gap_combine_fn(void *arg, int ith, int nth)
{
    const gapc_job *j = arg;
    const int C = j->C;
    long ng = (C + GAP_GROUP - 1) / GAP_GROUP, lo, hi;
    env2_range((long)j->n * ng, ith, nth, &lo, &hi);
    double tot[GAP_GROUP];
    for (long u = lo; u < hi; u++) {
        long i = u / ng, c0 = (u % ng) * GAP_GROUP;
        int cn = C - c0 < GAP_GROUP ? (int)(C - c0) : GAP_GROUP;
        for (int c = 0; c < cn; c++) tot[c] = 0.0;
        for (long q = 0; q < j->nq; q++) {
            const float *part = j->part + (i * j->nq + q) * C + c0;
            for (int c = 0; c < cn; c++) tot[c] += part[c];
        }
        float *yi = j->y + i * (long)C + c0;
        for (int c = 0; c < cn; c++) yi[c] = (float)(tot[c] / (double)j->hw);
    }
}

void k_gap_fwd_ws(int nt, int n, long hw, int C, const float *x, float *y, float *scratch)
{
    if (n <= 0 || C <= 0 || hw <= 0) {
        k_gap_fwd(nt, n, hw, C, x, y);
        return;
    }
    gapc_job j = {n, C, hw, (hw + GAP_CHUNK - 1) / GAP_CHUNK, x, scratch, y, {{{0}}, 0}};
    /* Batch 1 on small maps (up to 4 chunks: 7x7 .. 16x16) has too few chunk
     * units to share, and the depthwise layer before it splits those maps
     * by channels (dwconv.c): whole channels then read what this core wrote,
     * and need no combining pass.  7x7 x 1536, 2 threads: 10.0 -> 5.7 us. */
    if ((long)n * j.nq <= 2L * nt) {
        k_gap_fwd(nt, n, hw, C, x, y);
        return;
    }
    int t = (double)n * hw * C < 65536.0 ? 1 : nt;
    env2_steal_init(&j.st, (long)n * j.nq, t);
    k_par_run(t, gap_chunk_fn, &j);
    k_par_run((double)n * j.nq * C < 65536.0 ? 1 : t, gap_combine_fn, &j);
}

typedef struct gapb_job {
    int n, C;
    long hw;
    const float *dy;
    float *dx;
} gapb_job;

static void gap_bwd_fn(void *arg, int ith, int nth)
{
    const gapb_job *j = arg;
    const int C = j->C;
    long lo, hi;
    env2_range((long)j->n * j->hw, ith, nth, &lo, &hi);
    const float inv = (float)(1.0 / (double)j->hw);
    for (long r = lo; r < hi; r++) {
        const float *d = j->dy + (r / j->hw) * C;
        float *o = j->dx + r * C;
        SIMD_LOOP
        for (int c = 0; c < C; c++) o[c] = d[c] * inv;
    }
}

void k_gap_bwd(int nt, int n, long hw, int C, const float *dy, float *dx)
{
    if (n <= 0 || C <= 0 || hw <= 0) return;
    gapb_job j = {n, C, hw, dy, dx};
    k_par_run((double)n * hw * C < 65536.0 ? 1 : nt, gap_bwd_fn, &j);
}

void k_fc_fwd(int nt, int n, int in, int out, const float *x, const float *W, const float *b, float *y)
{
    if (n <= 0 || out <= 0) return;
    k_epilogue ep = {NULL, b, K_ACT_NONE, NULL, 0};
    k_fc_gemm(nt, n, out, in, x, W, y, b ? &ep : NULL); /* n is the batch */
}

void k_fc_bwd(int nt, int n, int in, int out, const float *x, const float *W, const float *dy, float *dx,
              float *dW, float *db)
{
    if (n <= 0 || out <= 0 || in <= 0) return;
    if (dx) k_sgemm(nt, 0, 0, n, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in, NULL);
    if (dW) k_sgemm(nt, 1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dW, in, NULL);
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dy[(long)i * out + o];
            db[o] += (float)s;
        }
}
