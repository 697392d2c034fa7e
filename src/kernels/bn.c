/* Batch normalization over a rows x C view (NHWC activations).
 *
 * Statistics: rows are cut into at most BN_MAXBLK blocks whose length
 * depends on the row count alone; each block's per-channel sums are taken in
 * float over BN_CHUNK rows and combined in double, and the blocks' sums are
 * added in block order.  Threads take whole blocks, so the result depends
 * only on the data, never on the thread count, and threads stream disjoint
 * rows (splitting channels instead leaves a thread idle when C is 16 or 24
 * and makes every thread read every cache line).
 * The elementwise passes are split over rows.
 *
 * The forward statistics take one pass: sums of d = x - K and d^2 around a
 * per-channel shift K, the mean of up to BN_SAMPLE rows spread over the
 * batch, so that K lies within a fraction of a standard deviation of the
 * mean and var = E[d^2] - E[d]^2 does not cancel (x near 1000 with a spread
 * of 0.01 keeps its variance).
 *
 * With AVX-512 or AVX2 the row loops run in bn_avx512.c / bn_avx2.c (same
 * blocks and chunks; the SiLU of the fused passes is computed in the same
 * sweep); the portable loops below are always available. */
#include <math.h>
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

enum {
    BN_CHUNK = 64,   /* rows per float partial sum */
    BN_MAXBLK = 16,  /* at most this many row blocks: bounds the stack scratch */
    BN_RGROUP = K_BN_MAXCN, /* channels per reduction region */
    BN_STASH = 2048, /* channels whose backward means are kept on the stack at a time */
    BN_SAMPLE = 64   /* rows averaged for the shift of the forward statistics */
};

static int bn_threads(int nt, long rows, int C)
{
    return (double)rows * C < 65536.0 ? 1 : (nt < 1 ? 1 : nt);
}

static void row_range(long rows, int ith, int nth, long *r0, long *r1) { env2_range(rows, ith, nth, r0, r1); }

/* Rows per block: a function of rows alone, whole BN_CHUNKs, at most
 * BN_MAXBLK blocks. */
static long block_rows(long rows)
{
    long b = (rows + BN_MAXBLK - 1) / BN_MAXBLK;
    b = (b + BN_CHUNK - 1) / BN_CHUNK * BN_CHUNK;
    return b < BN_CHUNK ? BN_CHUNK : b;
}

typedef struct bn_job {
    long rows;
    int C;
    const float *x, *dy, *gamma, *beta, *mean, *rstd;
    float eps;
    float *y, *omean, *orstd, *ovar, *dx, *dgamma, *dbeta;
    float *stash; /* backward: [2][C] mean(dy), mean(dy*xhat) */
    int act;      /* K_ACT_NONE or K_ACT_SILU after BN */
    float *dact;  /* fused backward: dL/d(BN output), written by the reduction */
    int level;    /* SIMD level, read once per call so that every thread takes the same path */
} bn_job;

/* One reduction over the channels [g, g + cn) (cn <= BN_RGROUP):
 * kind 1 = sum(x - shift) and sum((x - shift)^2), 3 = sum(dy) and sum(dy * (x - mean));
 * kind 4 is kind 3 with dy = dL/d(BN output) first formed through the SiLU
 * (recomputing its input from x) and written to dact.
 * part1/part2 hold one row of BN_RGROUP doubles per block. */
typedef struct bn_red {
    const bn_job *j;
    long g, brows;
    int cn, nblk, kind;
    const float *shift;
    double *part1, *part2;
} bn_red;

static void red_block(const bn_red *q, long blk)
{
    const bn_job *j = q->j;
    const int C = j->C, cn = q->cn, kind = q->kind;
    const long g = q->g, rb0 = blk * q->brows, rb1 = rb0 + q->brows < j->rows ? rb0 + q->brows : j->rows;
    double *o1 = q->part1 + blk * BN_RGROUP, *o2 = q->part2 + blk * BN_RGROUP;
    float p1[BN_RGROUP], p2[BN_RGROUP];
    const float *sh = kind == 1 ? q->shift : j->mean + g;
    float sc[BN_RGROUP];
    if (kind == 4)
        for (int i = 0; i < cn; i++) sc[i] = j->gamma[g + i] * j->rstd[g + i];
#if K_HAVE_X86_PATHS
    if (j->level >= K_SIMD_AVX2) {
        const long off = rb0 * C + g, n = rb1 - rb0;
        const int z = j->level >= K_SIMD_AVX512;
        if (kind == 1) {
            (z ? k_bn_stats_avx512 : k_bn_stats_avx2)(j->x + off, n, C, cn, sh, BN_CHUNK, o1, o2);
        } else {
            float *da = kind == 4 ? j->dact + off : NULL;
            (z ? k_bn_bwd_red_avx512 : k_bn_bwd_red_avx2)(j->x + off, j->dy + off, da, n, C, cn, sh, sc,
                                                          j->beta ? j->beta + g : NULL, BN_CHUNK, o1, o2);
        }
        return;
    }
#endif
    for (int i = 0; i < cn; i++) o1[i] = o2[i] = 0.0;
    for (long r0 = rb0; r0 < rb1; r0 += BN_CHUNK) {
        long r1 = r0 + BN_CHUNK < rb1 ? r0 + BN_CHUNK : rb1;
        for (int i = 0; i < cn; i++) p1[i] = p2[i] = 0.0f;
        if (kind == 4) {
            /* dact for the chunk first: one SiLU call per chunk when its rows
             * are contiguous (cn == C), not one per short row */
            const float *be = j->beta + g;
            for (long r = r0; r < r1; r++) {
                const float *xr = j->x + r * C + g;
                float *da = j->dact + r * C + g;
                SIMD_LOOP
                for (int i = 0; i < cn; i++) da[i] = (xr[i] - sh[i]) * sc[i] + be[i];
                if (cn != C) k_silu_rows(1, cn, da, j->dy + r * C + g, da);
            }
            if (cn == C) k_silu_rows(1, (r1 - r0) * C, j->dact + r0 * C, j->dy + r0 * C, j->dact + r0 * C);
        }
        for (long r = r0; r < r1; r++) {
            const float *xr = j->x + r * C + g;
            if (kind == 1) {
                SIMD_LOOP
                for (int i = 0; i < cn; i++) {
                    float d = xr[i] - sh[i];
                    p1[i] += d;
                    p2[i] += d * d;
                }
            } else {
                const float *dr = kind == 4 ? j->dact + r * C + g : j->dy + r * C + g;
                SIMD_LOOP
                for (int i = 0; i < cn; i++) {
                    p1[i] += dr[i];
                    p2[i] += dr[i] * (xr[i] - sh[i]);
                }
            }
        }
        for (int i = 0; i < cn; i++) {
            o1[i] += p1[i];
            o2[i] += p2[i];
        }
    }
}

static void red_fn(void *arg, int ith, int nth)
{
    const bn_red *q = arg;
    long b0, b1;
    env2_range(q->nblk, ith, nth, &b0, &b1);
    for (long b = b0; b < b1; b++) red_block(q, b);
}

/* Runs the reduction and adds the blocks in order into out1 and out2. */
static void reduce(int nt, bn_red *q, double *out1, double *out2)
{
    double part1[BN_MAXBLK * BN_RGROUP], part2[BN_MAXBLK * BN_RGROUP];
    q->brows = block_rows(q->j->rows);
    q->nblk = (int)((q->j->rows + q->brows - 1) / q->brows);
    q->part1 = part1;
    q->part2 = part2;
    k_par_run(nt < q->nblk ? nt : q->nblk, red_fn, q);
    for (int i = 0; i < q->cn; i++) {
        double s1 = 0.0, s2 = 0.0;
        for (int b = 0; b < q->nblk; b++) {
            s1 += part1[b * BN_RGROUP + i];
            s2 += part2[b * BN_RGROUP + i];
        }
        out1[i] = s1;
        out2[i] = s2;
    }
}

static void fwd_stats(int nt, const bn_job *j)
{
    double s1[BN_RGROUP], s2[BN_RGROUP];
    float k[BN_RGROUP];
    const long rows = j->rows, ns = rows < BN_SAMPLE ? rows : BN_SAMPLE;
    const double n = (double)rows;
    for (long g = 0; g < j->C; g += BN_RGROUP) {
        int cn = j->C - g < BN_RGROUP ? (int)(j->C - g) : BN_RGROUP;
        /* the shift: rows floor(s * rows / ns), a function of the row count
         * alone (split so that s * rows cannot overflow a 32-bit long) */
        for (int i = 0; i < cn; i++) k[i] = 0.0f;
        for (long s = 0; s < ns; s++) {
            const long r = s * (rows / ns) + s * (rows % ns) / ns;
            const float *xr = j->x + r * j->C + g;
            SIMD_LOOP
            for (int i = 0; i < cn; i++) k[i] += xr[i];
        }
        /* float is plenty: any shift near the mean serves */
        for (int i = 0; i < cn; i++) k[i] /= (float)ns;
        bn_red q = {j, g, 0, cn, 0, 1, k, NULL, NULL};
        reduce(nt, &q, s1, s2);
        for (int i = 0; i < cn; i++) {
            double md = s1[i] / n, ss = s2[i] - s1[i] * md;
            /* rounding can leave a constant channel slightly below 0 */
            if (ss < 0.0) ss = 0.0;
            double var = ss / n;
            j->omean[g + i] = (float)((double)k[i] + md);
            j->orstd[g + i] = (float)(1.0 / sqrt(var + (double)j->eps));
            /* a single row has no unbiased estimate; report the biased 0
             * rather than a division by zero */
            if (j->ovar) j->ovar[g + i] = (float)(rows > 1 ? ss / (double)(rows - 1) : var);
        }
    }
}

static void fwd_apply_fn(void *arg, int ith, int nth)
{
    const bn_job *j = arg;
    long r0, r1;
    row_range(j->rows, ith, nth, &r0, &r1);
    const int C = j->C;
#if K_HAVE_X86_PATHS
    if (j->level >= K_SIMD_AVX2) {
        if (r1 > r0)
            (j->level >= K_SIMD_AVX512 ? k_bn_apply_avx512 : k_bn_apply_avx2)(
                j->x + r0 * C, j->y + r0 * C, r1 - r0, C, j->omean, j->gamma, j->orstd, j->beta, j->act);
        return;
    }
#endif
    for (long b0 = r0; b0 < r1; b0 += BN_CHUNK) {
        long b1 = b0 + BN_CHUNK < r1 ? b0 + BN_CHUNK : r1;
        for (long r = b0; r < b1; r++) {
            const float *xr = j->x + r * C;
            float *yr = j->y + r * C;
            SIMD_LOOP
            for (int c = 0; c < C; c++) yr[c] = (xr[c] - j->omean[c]) * (j->gamma[c] * j->orstd[c]) + j->beta[c];
        }
        /* while the chunk is in L1/L2 */
        if (j->act == K_ACT_SILU) k_silu_rows(0, (b1 - b0) * C, j->y + b0 * C, NULL, j->y + b0 * C);
    }
}

void k_bn_fwd_train(int nt, long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                    float *y, float *mean, float *rstd, float *var_unbiased)
{
    k_bn_act_fwd_train(nt, rows, C, x, gamma, beta, eps, K_ACT_NONE, y, mean, rstd, var_unbiased);
}

void k_bn_act_fwd_train(int nt, long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                        int act, float *y, float *mean, float *rstd, float *var_unbiased)
{
    if (rows <= 0 || C <= 0) return;
    bn_job j = {0};
    j.rows = rows;
    j.C = C;
    j.x = x;
    j.eps = eps;
    j.omean = mean;
    j.orstd = rstd;
    j.ovar = var_unbiased;
    j.level = k_simd_level();
    fwd_stats(bn_threads(nt, rows, C), &j);
    k_bn_act_apply(nt, rows, C, x, gamma, beta, mean, rstd, act, y);
}

void k_bn_act_apply(int nt, long rows, int C, const float *x, const float *gamma, const float *beta,
                    const float *mean, const float *rstd, int act, float *y)
{
    if (rows <= 0 || C <= 0) return;
    bn_job j = {0};
    j.rows = rows;
    j.C = C;
    j.x = x;
    j.gamma = gamma;
    j.beta = beta;
    j.y = y;
    /* fwd_apply_fn only reads the statistics */
    j.omean = (float *)mean;
    j.orstd = (float *)rstd;
    j.act = act;
    j.level = k_simd_level();
    k_par_run(bn_threads(nt, rows, C), fwd_apply_fn, &j);
}

/* dx for rows [r0, r1) and channels [c0, c1); m1, m2 are indexed from c0. */
static void bwd_dx_rows(const bn_job *j, long r0, long r1, long c0, long c1, const float *m1, const float *m2)
{
    const int C = j->C;
#if K_HAVE_X86_PATHS
    if (j->level >= K_SIMD_AVX2) {
        if (r1 > r0)
            (j->level >= K_SIMD_AVX512 ? k_bn_dx_avx512 : k_bn_dx_avx2)(j->x + r0 * C, j->dy + r0 * C,
                                                                        j->dx + r0 * C, r1 - r0, C, (int)c0,
                                                                        (int)c1, j->mean, j->rstd, j->gamma, m1, m2);
        return;
    }
#endif
    for (long r = r0; r < r1; r++) {
        const float *xr = j->x + r * C, *dr = j->dy + r * C;
        float *o = j->dx + r * C;
        SIMD_LOOP
        for (long c = c0; c < c1; c++) {
            float xhat = (xr[c] - j->mean[c]) * j->rstd[c];
            o[c] = j->gamma[c] * j->rstd[c] * (dr[c] - m1[c - c0] - xhat * m2[c - c0]);
        }
    }
}

typedef struct bn_apply_job {
    const bn_job *j;
    long c0, c1;
} bn_apply_job;

static void bwd_apply_fn(void *arg, int ith, int nth)
{
    const bn_apply_job *a = arg;
    long r0, r1;
    row_range(a->j->rows, ith, nth, &r0, &r1);
    bwd_dx_rows(a->j, r0, r1, a->c0, a->c1, a->j->stash, a->j->stash + BN_STASH);
}

void k_bn_bwd(int nt, long rows, int C, const float *x, const float *dy, const float *gamma, const float *mean,
              const float *rstd, float *dx, float *dgamma, float *dbeta)
{
    k_bn_act_bwd(nt, rows, C, x, dy, gamma, NULL, mean, rstd, K_ACT_NONE, NULL, dx, dgamma, dbeta);
}

void k_bn_act_bwd(int nt, long rows, int C, const float *x, const float *dy, const float *gamma, const float *beta,
                  const float *mean, const float *rstd, int act, float *dact, float *dx, float *dgamma,
                  float *dbeta)
{
    if (rows <= 0 || C <= 0) return;
    const int fused = act == K_ACT_SILU;
    bn_job j = {0};
    j.rows = rows;
    j.C = C;
    j.x = x;
    j.dy = dy;
    j.gamma = gamma;
    j.mean = mean;
    j.rstd = rstd;
    j.dx = dx;
    j.dgamma = dgamma;
    j.dbeta = dbeta;
    j.beta = beta;
    j.act = act;
    j.dact = dact;
    j.level = k_simd_level();
    int t = bn_threads(nt, rows, C);
    /* dx needs the per-channel means of dy and dy * xhat first; they are kept
     * on the stack for a window of BN_STASH channels at a time, so dx is
     * always split over rows. */
    float stash[2 * BN_STASH];
    j.stash = stash;
    for (long w0 = 0; w0 < C; w0 += BN_STASH) {
        long w1 = w0 + BN_STASH < C ? w0 + BN_STASH : C;
        for (long g = w0; g < w1; g += BN_RGROUP) {
            int cn = w1 - g < BN_RGROUP ? (int)(w1 - g) : BN_RGROUP;
            double sdy[BN_RGROUP], sdx[BN_RGROUP];
            bn_red q = {&j, g, 0, cn, 0, fused ? 4 : 3, NULL, NULL, NULL};
            reduce(t, &q, sdy, sdx);
            for (int i = 0; i < cn; i++) {
                sdx[i] *= rstd[g + i];
                if (dbeta) dbeta[g + i] += (float)sdy[i];
                if (dgamma) dgamma[g + i] += (float)sdx[i];
                stash[g - w0 + i] = (float)(sdy[i] / (double)rows);
                stash[BN_STASH + g - w0 + i] = (float)(sdx[i] / (double)rows);
            }
        }
        if (dx) {
            bn_apply_job aj = {&j, w0, w1};
            /* from here on the gradient entering BN is dact */
            if (fused) j.dy = dact;
            k_par_run(t, bwd_apply_fn, &aj);
            j.dy = dy;
        }
    }
}

void k_bn_fold(int C, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
               float *scale, float *shift)
{
    for (int c = 0; c < C; c++) {
        float s = (float)((double)gamma[c] / sqrt((double)var[c] + (double)eps));
        scale[c] = s;
        shift[c] = beta[c] - mean[c] * s;
    }
}

/* ---- references (double, single pass per statistic) ---- */

void k_bn_fwd_train_ref(long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                        float *y, float *mean, float *rstd, float *var_unbiased)
{
    for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (long r = 0; r < rows; r++) s += x[r * C + c];
        double m = s / (double)rows, v = 0.0;
        for (long r = 0; r < rows; r++) {
            double d = x[r * C + c] - m;
            v += d * d;
        }
        double var = v / (double)rows, rs = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)m;
        rstd[c] = (float)rs;
        if (var_unbiased) var_unbiased[c] = (float)(rows > 1 ? v / (double)(rows - 1) : var);
        for (long r = 0; r < rows; r++) y[r * C + c] = (float)(gamma[c] * (x[r * C + c] - m) * rs + beta[c]);
    }
}

void k_bn_act_bwd_ref(long rows, int C, const float *x, const float *dy, const float *gamma, const float *beta,
                      const float *mean, const float *rstd, int act, float *dx, float *dgamma, float *dbeta)
{
    long n = rows * C;
    float *d = env2_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!d) return;
    for (long r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            long i = r * C + c;
            float pre = (x[i] - mean[c]) * (gamma[c] * rstd[c]) + beta[c];
            d[i] = dy[i];
            if (act == K_ACT_SILU) k_silu_bwd_ref(1, &pre, &dy[i], &d[i]);
        }
    k_bn_bwd_ref(rows, C, x, d, gamma, mean, rstd, dx, dgamma, dbeta);
    env2_free(d);
}

void k_bn_bwd_ref(long rows, int C, const float *x, const float *dy, const float *gamma, const float *mean,
                  const float *rstd, float *dx, float *dgamma, float *dbeta)
{
    for (int c = 0; c < C; c++) {
        double sdy = 0.0, sdx = 0.0;
        for (long r = 0; r < rows; r++) {
            double xh = ((double)x[r * C + c] - mean[c]) * rstd[c];
            sdy += dy[r * C + c];
            sdx += dy[r * C + c] * xh;
        }
        if (dbeta) dbeta[c] += (float)sdy;
        if (dgamma) dgamma[c] += (float)sdx;
        double m1 = sdy / (double)rows, m2 = sdx / (double)rows;
        if (dx)
            for (long r = 0; r < rows; r++) {
                double xh = ((double)x[r * C + c] - mean[c]) * rstd[c];
                dx[r * C + c] = (float)((double)gamma[c] * rstd[c] * (dy[r * C + c] - m1 - xh * m2));
            }
    }
}
