/* Global average pooling and the fully connected layer.
 *
 * GAP reduces each (image, channel) over its h x w positions in chunks that
 * never cross a row: each row is cut into ceil(w / GAP_CHUNK) chunks of at
 * most GAP_CHUNK positions, each chunk summed in float in position order,
 * and the chunks combined in order in double.  The result does not depend on
 * the thread count, nor on who summed a chunk: k_gap_fwd gives each thread
 * whole channels, k_gap_fwd_ws gives the chunks to the threads (it reads
 * each thread's rows where the previous layer, split by rows, left them),
 * and the depthwise convolution can sum its own output rows' chunks while
 * they are still in its cache (k_dwconv_fwd_pool, then k_gap_from_chunks).
 * All give the same bits.  Chunks inside rows are what a layer split by
 * rows can sum without waiting for a neighbour's rows.  The FC products go
 * through k_fc_gemm (forward) and k_sgemm; the bias gradient is a column sum
 * in double. */
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

enum { GAP_CHUNK = 64, GAP_GROUP = 256 };

static long row_chunks(long w) { return (w + GAP_CHUNK - 1) / GAP_CHUNK; }

long k_gap_chunks(long h, long w) { return h > 0 && w > 0 ? h * row_chunks(w) : 0; }

void k_gap_row_chunks(long w, long ldc, int cn, const float *row, float *sums)
{
    k_colsum_fn colsum = k_colsum_pick();
    for (long p0 = 0; p0 < w; p0 += GAP_CHUNK, sums += ldc)
        colsum(row + p0 * ldc, (p0 + GAP_CHUNK < w ? p0 + GAP_CHUNK : w) - p0, ldc, cn, sums);
}

typedef struct gap_job {
    int n, C;
    long h, w;
    const float *x;
    float *y;
} gap_job;

/* Units are (image, group of GAP_GROUP channels). */
static void gap_fwd_fn(void *arg, int ith, int nth)
{
    const gap_job *j = arg;
    const int C = j->C;
    const long hw = j->h * j->w;
    long ng = (C + GAP_GROUP - 1) / GAP_GROUP, lo, hi;
    env2_range((long)j->n * ng, ith, nth, &lo, &hi);
    k_colsum_fn colsum = k_colsum_pick();
    float part[GAP_GROUP];
    double tot[GAP_GROUP];
    for (long u = lo; u < hi; u++) {
        long i = u / ng, c0 = (u % ng) * GAP_GROUP;
        int cn = C - c0 < GAP_GROUP ? (int)(C - c0) : GAP_GROUP;
        const float *xi = j->x + i * hw * C + c0;
        for (int c = 0; c < cn; c++) tot[c] = 0.0;
        for (long r = 0; r < j->h; r++)
            for (long p0 = 0; p0 < j->w; p0 += GAP_CHUNK) {
                colsum(xi + (r * j->w + p0) * C, (p0 + GAP_CHUNK < j->w ? p0 + GAP_CHUNK : j->w) - p0, C, cn, part);
                for (int c = 0; c < cn; c++) tot[c] += part[c];
            }
        float *yi = j->y + i * (long)C + c0;
        for (int c = 0; c < cn; c++) yi[c] = (float)(tot[c] / (double)hw);
    }
}

void k_gap_fwd(int nt, int n, long h, long w, int C, const float *x, float *y)
{
    if (n <= 0 || C <= 0) return;
    if (h <= 0 || w <= 0) {
        for (long i = 0; i < (long)n * C; i++) y[i] = 0.0f;
        return;
    }
    gap_job j = {n, C, h, w, x, y};
    k_par_run((double)n * h * w * C < 65536.0 ? 1 : nt, gap_fwd_fn, &j);
}

size_t k_gap_scratch(int n, long h, long w, int C)
{
    if (n <= 0 || C <= 0) return 16;
    return ((size_t)n * (size_t)k_gap_chunks(h, w) * (size_t)C + 15) & ~(size_t)15;
}

typedef struct gapc_job {
    int n, C;
    long h, w, nq; /* nq: chunks per image */
    const float *x;
    float *part, *y;
    env2_steal st;
} gapc_job;

/* Units are image rows, claimed with stealing: the row's chunk sums of all C
 * channels into part[((i * h + r) * row_chunks(w) + k) * C ..]. */
static void gap_chunk_fn(void *arg, int ith, int nth)
{
    gapc_job *j = arg;
    const int C = j->C;
    const long rq = row_chunks(j->w);
    long u;
    (void)nth;
    while (env2_steal_next(&j->st, ith, &u)) k_gap_row_chunks(j->w, C, C, j->x + u * j->w * C, j->part + u * rq * C);
}

/* Units are (image, group of GAP_GROUP channels): the chunks in order, in double. */
static void gap_combine_fn(void *arg, int ith, int nth)
{
    const gapc_job *j = arg;
    const int C = j->C;
    const double hw = (double)j->h * (double)j->w;
    long ng = (C + GAP_GROUP - 1) / GAP_GROUP, lo, hi;
    env2_range((long)j->n * ng, ith, nth, &lo, &hi);
    k_colsum_pd_fn colsum = k_colsum_pd_pick();
    double tot[GAP_GROUP];
    for (long u = lo; u < hi; u++) {
        long i = u / ng, c0 = (u % ng) * GAP_GROUP;
        int cn = C - c0 < GAP_GROUP ? (int)(C - c0) : GAP_GROUP;
        colsum(j->part + i * j->nq * C + c0, j->nq, C, cn, tot);
        float *yi = j->y + i * (long)C + c0;
        for (int c = 0; c < cn; c++) yi[c] = (float)(tot[c] / hw);
    }
}

void k_gap_from_chunks(int nt, int n, long h, long w, int C, const float *sums, float *y)
{
    if (n <= 0 || C <= 0 || h <= 0 || w <= 0) return;
    gapc_job j = {n, C, h, w, k_gap_chunks(h, w), NULL, (float *)sums, y, {{{0}}, 0}};
    k_par_run((double)n * j.nq * C < 65536.0 ? 1 : nt, gap_combine_fn, &j);
}

void k_gap_fwd_ws(int nt, int n, long h, long w, int C, const float *x, float *y, float *scratch)
{
    if (n <= 0 || C <= 0 || h <= 0 || w <= 0) {
        k_gap_fwd(nt, n, h, w, C, x, y);
        return;
    }
    /* Batch 1 on small maps (7x7 .. 16x16 at 2 threads) has too little to
     * share by positions, and the depthwise layer before it splits those maps
     * by channels (dwconv.c): whole channels then read what this core wrote,
     * and need no combining pass.  7x7 x 1536, 2 threads: 10.0 -> 5.7 us. */
    if ((long)n * h * w <= 2L * nt * GAP_CHUNK) {
        k_gap_fwd(nt, n, h, w, C, x, y);
        return;
    }
    gapc_job j = {n, C, h, w, k_gap_chunks(h, w), x, scratch, y, {{{0}}, 0}};
    int t = (double)n * h * w * C < 65536.0 ? 1 : nt;
    env2_steal_init(&j.st, (long)n * h, t);
    k_par_run(t, gap_chunk_fn, &j);
    k_gap_from_chunks(t, n, h, w, C, scratch, y);
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
