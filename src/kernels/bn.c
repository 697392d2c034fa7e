/* Batch normalization over a rows x C view (NHWC activations).
 *
 * Statistics are reduced per channel by one thread over all rows, in chunks
 * of BN_CHUNK rows summed in float and combined in order in double, so they
 * depend only on the data, never on the thread count.  Channels are handed
 * to threads in 16-channel blocks (whole cache lines).  The elementwise
 * passes are split over rows. */
#include <math.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

enum {
    BN_CHUNK = 64,  /* rows per float partial sum */
    BN_GROUP = 256, /* channels reduced together (stack arrays) */
    BN_STASH = 4096 /* largest C whose backward sums are kept on the caller's stack */
};

static int bn_threads(int nt, long rows, int C)
{
    return (double)rows * C < 65536.0 ? 1 : (nt < 1 ? 1 : nt);
}

/* Channel range [c0, c1) of thread ith: whole 16-channel blocks. */
static void chan_range(int C, int ith, int nth, long *c0, long *c1)
{
    long lo, hi;
    env2_range((C + 15) / 16, ith, nth, &lo, &hi);
    *c0 = lo * 16;
    *c1 = hi * 16 < C ? hi * 16 : C;
}

static void row_range(long rows, int ith, int nth, long *r0, long *r1) { env2_range(rows, ith, nth, r0, r1); }

/* sum over rows of (x - shift) (p = 1) or (x - shift)^2 (p = 2), per channel of
 * [c0, c0 + cn), into out (double). */
static void chan_sums(long rows, int C, const float *x, long c0, int cn, const float *shift, int p, double *out)
{
    float part[BN_GROUP];
    for (int j = 0; j < cn; j++) out[j] = 0.0;
    for (long r0 = 0; r0 < rows; r0 += BN_CHUNK) {
        long r1 = r0 + BN_CHUNK < rows ? r0 + BN_CHUNK : rows;
        for (int j = 0; j < cn; j++) part[j] = 0.0f;
        for (long r = r0; r < r1; r++) {
            const float *xr = x + r * C + c0;
            if (p == 1) {
                SIMD_LOOP
                for (int j = 0; j < cn; j++) part[j] += xr[j];
            } else {
                SIMD_LOOP
                for (int j = 0; j < cn; j++) {
                    float d = xr[j] - shift[j];
                    part[j] += d * d;
                }
            }
        }
        for (int j = 0; j < cn; j++) out[j] += part[j];
    }
}

typedef struct bn_job {
    long rows;
    int C;
    const float *x, *dy, *gamma, *beta, *mean, *rstd;
    float eps;
    float *y, *omean, *orstd, *ovar, *dx, *dgamma, *dbeta;
    float *stash; /* backward: [2][C] mean(dy), mean(dy*xhat); NULL = channel-split dx */
} bn_job;

static void fwd_stats_fn(void *arg, int ith, int nth)
{
    const bn_job *j = arg;
    long c0, c1;
    chan_range(j->C, ith, nth, &c0, &c1);
    double s1[BN_GROUP], s2[BN_GROUP];
    float m[BN_GROUP];
    for (long g = c0; g < c1; g += BN_GROUP) {
        int cn = c1 - g < BN_GROUP ? (int)(c1 - g) : BN_GROUP;
        chan_sums(j->rows, j->C, j->x, g, cn, NULL, 1, s1);
        for (int i = 0; i < cn; i++) m[i] = (float)(s1[i] / (double)j->rows);
        /* second pass around the rounded mean: the variance of x - m equals
         * that of x, and sum(x - m) is ~0, so no correction term is needed */
        chan_sums(j->rows, j->C, j->x, g, cn, m, 2, s2);
        for (int i = 0; i < cn; i++) {
            double var = s2[i] / (double)j->rows;
            j->omean[g + i] = m[i];
            j->orstd[g + i] = (float)(1.0 / sqrt(var + (double)j->eps));
            /* a single row has no unbiased estimate; report the biased 0
             * rather than a division by zero */
            if (j->ovar) j->ovar[g + i] = (float)(j->rows > 1 ? s2[i] / (double)(j->rows - 1) : var);
        }
    }
}

static void fwd_apply_fn(void *arg, int ith, int nth)
{
    const bn_job *j = arg;
    long r0, r1;
    row_range(j->rows, ith, nth, &r0, &r1);
    const int C = j->C;
    for (long r = r0; r < r1; r++) {
        const float *xr = j->x + r * C;
        float *yr = j->y + r * C;
        SIMD_LOOP
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - j->omean[c]) * (j->gamma[c] * j->orstd[c]) + j->beta[c];
    }
}

void k_bn_fwd_train(int nt, long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                    float *y, float *mean, float *rstd, float *var_unbiased)
{
    if (rows <= 0 || C <= 0) return;
    bn_job j = {0};
    j.rows = rows;
    j.C = C;
    j.x = x;
    j.gamma = gamma;
    j.beta = beta;
    j.eps = eps;
    j.y = y;
    j.omean = mean;
    j.orstd = rstd;
    j.ovar = var_unbiased;
    int t = bn_threads(nt, rows, C);
    k_par_run(t, fwd_stats_fn, &j);
    k_par_run(t, fwd_apply_fn, &j);
}

/* Per channel of [g, g + cn): sum(dy) and sum(dy * xhat). */
static void bwd_sums(const bn_job *j, long g, int cn, double *sdy, double *sdx)
{
    const int C = j->C;
    float p1[BN_GROUP], p2[BN_GROUP];
    const float *mu = j->mean + g;
    for (int i = 0; i < cn; i++) sdy[i] = sdx[i] = 0.0;
    for (long r0 = 0; r0 < j->rows; r0 += BN_CHUNK) {
        long r1 = r0 + BN_CHUNK < j->rows ? r0 + BN_CHUNK : j->rows;
        for (int i = 0; i < cn; i++) p1[i] = p2[i] = 0.0f;
        for (long r = r0; r < r1; r++) {
            const float *xr = j->x + r * C + g, *dr = j->dy + r * C + g;
            SIMD_LOOP
            for (int i = 0; i < cn; i++) {
                p1[i] += dr[i];
                p2[i] += dr[i] * (xr[i] - mu[i]);
            }
        }
        for (int i = 0; i < cn; i++) {
            sdy[i] += p1[i];
            sdx[i] += p2[i];
        }
    }
    for (int i = 0; i < cn; i++) sdx[i] *= j->rstd[g + i];
}

/* dx for rows [r0, r1) and channels [c0, c1); m1, m2 are indexed from c0. */
static void bwd_dx_rows(const bn_job *j, long r0, long r1, long c0, long c1, const float *m1, const float *m2)
{
    const int C = j->C;
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

static void bwd_stats_fn(void *arg, int ith, int nth)
{
    const bn_job *j = arg;
    long c0, c1;
    chan_range(j->C, ith, nth, &c0, &c1);
    double sdy[BN_GROUP], sdx[BN_GROUP];
    float m1[BN_GROUP], m2[BN_GROUP];
    for (long g = c0; g < c1; g += BN_GROUP) {
        int cn = c1 - g < BN_GROUP ? (int)(c1 - g) : BN_GROUP;
        bwd_sums(j, g, cn, sdy, sdx);
        for (int i = 0; i < cn; i++) {
            if (j->dbeta) j->dbeta[g + i] += (float)sdy[i];
            if (j->dgamma) j->dgamma[g + i] += (float)sdx[i];
            m1[i] = (float)(sdy[i] / (double)j->rows);
            m2[i] = (float)(sdx[i] / (double)j->rows);
        }
        if (j->stash) {
            for (int i = 0; i < cn; i++) {
                j->stash[g + i] = m1[i];
                j->stash[j->C + g + i] = m2[i];
            }
        } else if (j->dx) {
            bwd_dx_rows(j, 0, j->rows, g, g + cn, m1, m2);
        }
    }
}

static void bwd_apply_fn(void *arg, int ith, int nth)
{
    const bn_job *j = arg;
    long r0, r1;
    row_range(j->rows, ith, nth, &r0, &r1);
    bwd_dx_rows(j, r0, r1, 0, j->C, j->stash, j->stash + j->C);
}

void k_bn_bwd(int nt, long rows, int C, const float *x, const float *dy, const float *gamma, const float *mean,
              const float *rstd, float *dx, float *dgamma, float *dbeta)
{
    if (rows <= 0 || C <= 0) return;
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
    int t = bn_threads(nt, rows, C);
    /* Splitting dx over rows balances small channel counts, but needs the
     * per-channel means between the two passes; keep them on the stack when
     * they fit, otherwise each thread finishes its own channels. */
    float stash[2 * BN_STASH];
    if (C <= BN_STASH && dx) j.stash = stash;
    k_par_run(t, bwd_stats_fn, &j);
    if (j.stash) k_par_run(t, bwd_apply_fn, &j);
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
