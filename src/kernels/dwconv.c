/* Depthwise convolution, NHWC, weight [kh][kw][c].
 *
 * This file owns the threading and the choice of path: the AVX-512 or AVX2
 * kernels of dwconv_avx512.c / dwconv_avx2.c (3x3 and 5x5, stride 1 and 2,
 * the shapes of EfficientNets) or the portable C below, which handles every
 * shape.
 *
 * Work split, chosen so that results never depend on the thread count:
 *  - forward: output rows (n, oy), or, for the few rows of small maps at
 *    batch 1, channel blocks; each output is computed by one thread;
 *  - backward data: input rows (n, iy), gathered (no scatter, no races);
 *  - backward weight: 16-channel blocks; one thread reduces a channel over
 *    all n*ho*wo positions in a fixed order (per output row in float, rows
 *    combined in double), so no partial sums cross threads. */
#include <math.h>
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

/* Entry points of dwconv_avx512.c and dwconv_avx2.c (one source, two builds). */
#if K_HAVE_X86_PATHS
#define DW_DECLARE(isa)                                                                                        \
    void k_dw_fwd_rows_##isa(const k_conv_shape *s, const float *x, const float *w, float *y,                 \
                             const k_epilogue *ep, long r0, long r1);                                          \
    void k_dw_bwd_data_rows_##isa(const k_conv_shape *s, const float *dy, const float *w, float *dx, long r0, \
                                  long r1);                                                                    \
    void k_dw_bwd_weight_##isa(const k_conv_shape *s, const float *x, const float *dy, float *dw, long c0,    \
                               long c1);                                                                       \
    int k_dw_fwd_band_##isa(const k_conv_shape *s);                                                            \
    void k_dw_fwd_chans_##isa(const k_conv_shape *s, const float *x, const float *w, float *y,                \
                              const k_epilogue *ep, long c0, long c1);
DW_DECLARE(avx512)
DW_DECLARE(avx2)
#endif

int k_dw_test_no_band;

/* Threads only pay off above a few hundred thousand multiply-adds. */
static int threads_for(int nt, double work)
{
    if (nt < 1) return 1;
    if (work < 131072.0) return 1;
    return nt;
}

/* The SIMD paths cover the shapes of EfficientNets; anything else takes the
 * portable path. */
static int simd_path(const k_conv_shape *s)
{
#if K_HAVE_X86_PATHS
    if (s->kh == s->kw && (s->kh == 3 || s->kh == 5) && (s->stride == 1 || s->stride == 2)) {
        int l = k_simd_level();
        if (l >= K_SIMD_AVX512) return K_SIMD_AVX512;
        if (l >= K_SIMD_AVX2) return K_SIMD_AVX2;
    }
#else
    (void)s;
#endif
    return K_SIMD_GENERIC;
}

/* ---- portable path -------------------------------------------------------- */

enum { CB = 64 }; /* channels per inner chunk */

#define silu1 k_siluf
#define sigm1 k_sigmoidf

static void epi_store(const k_epilogue *ep, long r, long c0, int cn, float *acc, float *out)
{
    if (ep) {
        if (ep->scale) {
            SIMD_LOOP
            for (int j = 0; j < cn; j++) acc[j] *= ep->scale[c0 + j];
        }
        if (ep->bias) {
            SIMD_LOOP
            for (int j = 0; j < cn; j++) acc[j] += ep->bias[c0 + j];
        }
        if (ep->act == K_ACT_SILU)
            for (int j = 0; j < cn; j++) acc[j] = silu1(acc[j]);
        else if (ep->act == K_ACT_SIGMOID)
            for (int j = 0; j < cn; j++) acc[j] = sigm1(acc[j]);
        if (ep->residual) {
            const float *rr = ep->residual + r * ep->ldr + c0;
            SIMD_LOOP
            for (int j = 0; j < cn; j++) acc[j] += rr[j];
        }
    }
    for (int j = 0; j < cn; j++) out[j] = acc[j];
}

/* Correlation geometry shared by the forward and the stride-1 backward data
 * (flipped kernel: negative tap strides, mirrored padding). */
typedef struct pgeo {
    const float *src;
    long hs, ws, ho, wo, C;
    int KH, KW, S, pt, pl;
    const float *wb;
    long wsy, wsx;
    float *dst;
    const k_epilogue *ep;
} pgeo;

static void p_conv_row(const pgeo *g, long n, long oy)
{
    const long C = g->C;
    long iy0 = oy * g->S - g->pt;
    int ky0 = iy0 < 0 ? (int)-iy0 : 0;
    int ky1 = iy0 + g->KH > g->hs ? (int)(g->hs - iy0) : g->KH;
    long r = (n * g->ho + oy) * g->wo;
    for (long ox = 0; ox < g->wo; ox++, r++) {
        long ix0 = ox * g->S - g->pl;
        int kx0 = ix0 < 0 ? (int)-ix0 : 0;
        int kx1 = ix0 + g->KW > g->ws ? (int)(g->ws - ix0) : g->KW;
        for (long c0 = 0; c0 < C; c0 += CB) {
            int cn = C - c0 < CB ? (int)(C - c0) : CB;
            float acc[CB];
            for (int j = 0; j < cn; j++) acc[j] = 0.0f;
            for (int ky = ky0; ky < ky1; ky++) {
                const float *xr = g->src + ((n * g->hs + iy0 + ky) * g->ws) * C + c0;
                const float *wr = g->wb + ky * g->wsy + c0;
                for (int kx = kx0; kx < kx1; kx++) {
                    const float *xp = xr + (ix0 + kx) * C;
                    const float *wp = wr + kx * g->wsx;
                    SIMD_LOOP
                    for (int j = 0; j < cn; j++) acc[j] += xp[j] * wp[j];
                }
            }
            epi_store(g->ep, r, c0, cn, acc, g->dst + r * C + c0);
        }
    }
}

/* Transposed gather for stride > 1: dx(iy, ix) collects dy(oy, ox) over taps
 * with iy + pt - ky = oy*S and ix + pl - kx = ox*S. */
static void p_tconv_row(const k_conv_shape *s, const float *dy, const float *w, float *dx, long n, long iy)
{
    const long C = s->ci, S = s->stride;
    long a = iy + s->pad_t;
    float *xrow = dx + (n * s->h + iy) * (long)s->w * C;
    for (long ix = 0; ix < s->w; ix++) {
        long b = ix + s->pad_l;
        for (long c0 = 0; c0 < C; c0 += CB) {
            int cn = C - c0 < CB ? (int)(C - c0) : CB;
            float acc[CB];
            for (int j = 0; j < cn; j++) acc[j] = 0.0f;
            for (long ky = 0; ky < s->kh; ky++) {
                long t = a - ky;
                if (t < 0 || t % S != 0 || t / S >= s->ho) continue;
                const float *dr = dy + (n * s->ho + t / S) * (long)s->wo * C + c0;
                for (long kx = 0; kx < s->kw; kx++) {
                    long u = b - kx;
                    if (u < 0 || u % S != 0 || u / S >= s->wo) continue;
                    const float *dp = dr + (u / S) * C;
                    const float *wp = w + (ky * s->kw + kx) * C + c0;
                    SIMD_LOOP
                    for (int j = 0; j < cn; j++) acc[j] += dp[j] * wp[j];
                }
            }
            float *o = xrow + ix * C + c0;
            for (int j = 0; j < cn; j++) o[j] = acc[j];
        }
    }
}

enum { PW_BUF = 2048 };

/* Weight gradient of channels [c0, c1): per output row the tap sums are
 * accumulated in float, then added in row order into double totals. */
static void p_bwdw(const k_conv_shape *s, const float *x, const float *dy, float *dw, long c0, long c1)
{
    const long C = s->ci, KH = s->kh, KW = s->kw, taps = KH * KW, S = s->stride;
    if (taps > PW_BUF) {
        /* Kernels this large are never used by the network; keep them correct
         * with one double sum per weight. */
        for (long t = 0; t < taps; t++) {
            long ky = t / KW, kx = t % KW;
            for (long c = c0; c < c1; c++) {
                double acc = 0.0;
                for (long n = 0; n < s->n; n++)
                    for (long oy = 0; oy < s->ho; oy++) {
                        long iy = oy * S - s->pad_t + ky;
                        if (iy < 0 || iy >= s->h) continue;
                        for (long ox = 0; ox < s->wo; ox++) {
                            long ix = ox * S - s->pad_l + kx;
                            if (ix < 0 || ix >= s->w) continue;
                            acc += (double)x[((n * s->h + iy) * s->w + ix) * C + c] *
                                   dy[((n * s->ho + oy) * s->wo + ox) * C + c];
                        }
                    }
                dw[t * C + c] += (float)acc;
            }
        }
        return;
    }
    long cg = PW_BUF / taps;
    if (cg > CB) cg = CB;
    float part[PW_BUF];
    double tot[PW_BUF];
    for (long g0 = c0; g0 < c1; g0 += cg) {
        int cn = c1 - g0 < cg ? (int)(c1 - g0) : (int)cg;
        for (long i = 0; i < taps * cn; i++) tot[i] = 0.0;
        for (long n = 0; n < s->n; n++)
            for (long oy = 0; oy < s->ho; oy++) {
                long iy0 = oy * S - s->pad_t;
                long ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + KH > s->h ? s->h - iy0 : KH;
                if (ky1 <= ky0) continue;
                for (long i = 0; i < taps * cn; i++) part[i] = 0.0f;
                for (long ox = 0; ox < s->wo; ox++) {
                    long ix0 = ox * S - s->pad_l;
                    long kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + KW > s->w ? s->w - ix0 : KW;
                    const float *dv = dy + ((n * s->ho + oy) * s->wo + ox) * C + g0;
                    for (long ky = ky0; ky < ky1; ky++) {
                        const float *xr = x + ((n * s->h + iy0 + ky) * s->w) * C + g0;
                        for (long kx = kx0; kx < kx1; kx++) {
                            const float *xp = xr + (ix0 + kx) * C;
                            float *pp = part + (ky * KW + kx) * cn;
                            SIMD_LOOP
                            for (int j = 0; j < cn; j++) pp[j] += xp[j] * dv[j];
                        }
                    }
                }
                for (long i = 0; i < taps * cn; i++) tot[i] += part[i];
            }
        for (long t = 0; t < taps; t++)
            for (int j = 0; j < cn; j++) dw[t * C + g0 + j] += (float)tot[t * cn + j];
    }
}

/* ---- dispatch --------------------------------------------------------------- */

/* Forward and data gradient go by rows, in units of rows with stealing
 * (env2_steal): every output row is the same sum whichever task computes
 * it. */
typedef struct dw_job {
    const k_conv_shape *s;
    const float *a, *w;
    float *out;
    const k_epilogue *ep;
    int path;
    long rows, unit;
    env2_steal st;
    float *sums; /* forward: the pooling's chunk sums of out, or NULL */
} dw_job;

/* The pooling's chunk sums of output rows lo .. hi, channels c0 .. c1, right
 * after this task wrote them (k_dwconv_fwd_pool). */
static void pool_rows(const dw_job *j, long lo, long hi, long c0, long c1)
{
    const long C = j->s->ci, wo = j->s->wo, rq = k_gap_chunks(1, wo);
    for (long r = lo; r < hi; r++)
        k_gap_row_chunks(wo, C, (int)(c1 - c0), j->out + r * wo * C + c0, j->sums + r * rq * C + c0);
}

static void fwd_rows(const dw_job *j, long lo, long hi)
{
    const k_conv_shape *s = j->s;
#if K_HAVE_X86_PATHS
    if (j->path == K_SIMD_AVX512) {
        k_dw_fwd_rows_avx512(s, j->a, j->w, j->out, j->ep, lo, hi);
        return;
    }
    if (j->path == K_SIMD_AVX2) {
        k_dw_fwd_rows_avx2(s, j->a, j->w, j->out, j->ep, lo, hi);
        return;
    }
#endif
    pgeo g = {j->a, s->h, s->w, s->ho, s->wo, s->ci, s->kh, s->kw, s->stride, s->pad_t, s->pad_l,
              j->w, (long)s->kw * s->ci, s->ci, j->out, j->ep};
    for (long r = lo; r < hi; r++) p_conv_row(&g, r / s->ho, r % s->ho);
}

static void bwd_data_rows(const dw_job *j, long lo, long hi);

/* j->rows rows in units of j->unit */
static void rows_job(void *arg, int ith, int nth, int bwd)
{
    dw_job *j = arg;
    long lo, hi;
    (void)nth;
    while (k_steal_rows_next(&j->st, ith, j->unit, j->rows, &lo, &hi)) {
        if (bwd) {
            bwd_data_rows(j, lo, hi);
        } else if (!j->sums) {
            fwd_rows(j, lo, hi);
        } else {
            /* pooled while the rows are in L2: in steps of up to 256 KiB,
             * even when one thread has all the rows */
            long step = (256L * 1024) / ((long)sizeof(float) * j->s->wo * j->s->ci);
            if (step < 1) step = 1;
            for (long r = lo; r < hi; r += step) {
                long r1 = r + step < hi ? r + step : hi;
                fwd_rows(j, r, r1);
                pool_rows(j, r, r1, 0, j->s->ci);
            }
        }
    }
}
static void fwd_job(void *arg, int ith, int nth) { rows_job(arg, ith, nth, 0); }
static void bwd_data_job(void *arg, int ith, int nth) { rows_job(arg, ith, nth, 1); }

static void bwd_data_rows(const dw_job *j, long lo, long hi)
{
    const k_conv_shape *s = j->s;
#if K_HAVE_X86_PATHS
    if (j->path == K_SIMD_AVX512) {
        k_dw_bwd_data_rows_avx512(s, j->a, j->w, j->out, lo, hi);
        return;
    }
    if (j->path == K_SIMD_AVX2) {
        k_dw_bwd_data_rows_avx2(s, j->a, j->w, j->out, lo, hi);
        return;
    }
#endif
    if (s->stride == 1) {
        const long C = s->ci;
        pgeo g = {j->a, s->ho, s->wo, s->h, s->w, C, s->kh, s->kw, 1, s->kh - 1 - s->pad_t, s->kw - 1 - s->pad_l,
                  j->w + ((long)(s->kh - 1) * s->kw + (s->kw - 1)) * C, -(long)s->kw * C, -C, j->out, NULL};
        for (long r = lo; r < hi; r++) p_conv_row(&g, r / s->h, r % s->h);
    } else {
        for (long r = lo; r < hi; r++) p_tconv_row(s, j->a, j->w, j->out, r / s->h, r % s->h);
    }
}

typedef struct dw_wjob {
    const k_conv_shape *s;
    const float *x, *dy;
    float *dw;
    int path;
} dw_wjob;

static void bwd_weight_job(void *arg, int ith, int nth)
{
    const dw_wjob *j = arg;
    const k_conv_shape *s = j->s;
    long nb = (s->ci + 15) / 16, lo, hi;
    env2_range(nb, ith, nth, &lo, &hi);
    if (lo >= hi) return;
    long c0 = lo * 16, c1 = hi * 16 < s->ci ? hi * 16 : s->ci;
#if K_HAVE_X86_PATHS
    if (j->path == K_SIMD_AVX512) {
        k_dw_bwd_weight_avx512(s, j->x, j->dy, j->dw, c0, c1);
        return;
    }
    if (j->path == K_SIMD_AVX2) {
        k_dw_bwd_weight_avx2(s, j->x, j->dy, j->dw, c0, c1);
        return;
    }
#endif
    p_bwdw(s, j->x, j->dy, j->dw, c0, c1);
}

static double dw_work(const k_conv_shape *s)
{
    return (double)s->n * s->ho * s->wo * s->ci * s->kh * s->kw;
}

static void run_rows(int nt, dw_job *j, k_par_fn fn)
{
    j->unit = k_steal_rows_init(&j->st, j->rows, nt);
    k_par_run(nt, fn, j);
}

#if K_HAVE_X86_PATHS
static void chans_job(void *arg, int ith, int nth)
{
    dw_job *j = arg;
    const long C = j->s->ci;
    long u;
    (void)nth;
    while (env2_steal_next(&j->st, ith, &u)) {
        long c0 = u * j->unit, c1 = c0 + j->unit < C ? c0 + j->unit : C;
        if (j->path == K_SIMD_AVX512) k_dw_fwd_chans_avx512(j->s, j->a, j->w, j->out, j->ep, c0, c1);
        else k_dw_fwd_chans_avx2(j->s, j->a, j->w, j->out, j->ep, c0, c1);
        if (j->sums) pool_rows(j, 0, j->rows, c0, c1);
    }
}

/* Small maps on the band path with too few rows for row units of three or
 * more split by channel blocks instead.  A row unit fills a band of its rows
 * plus two halo rows, so one-row units (batch 1 at 7x7, 12x12, 14x14) copied
 * three source rows per output row; split by channels, each thread fills
 * the band once per block, and the depthwise layers at 224 went 1.39 ->
 * 1.05 ms (2 threads; docs/PERFORMANCE.md, session 19).  The price is that
 * the layers after (pooling, the projection's packing), which read by
 * positions, read half of it from the other core; with the squeeze-excite
 * scaling fused into the projection that costs less than it saves. */
static int chans_split(int nt, const k_conv_shape *s, int path)
{
    if (nt < 2 || (long)s->n * s->ho >= 3L * nt * K_STEAL_UNITS) return 0;
    if (path == K_SIMD_AVX512) return k_dw_fwd_band_avx512(s);
    if (path == K_SIMD_AVX2) return k_dw_fwd_band_avx2(s);
    return 0;
}
#endif

void k_dwconv_fwd_pool(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                       float *sums)
{
    if (s->n <= 0 || s->ho <= 0 || s->wo <= 0 || s->ci <= 0) return;
    dw_job j = {s, x, w, y, ep, simd_path(s), (long)s->n * s->ho, 1, {{{0}}, 0}, sums};
    nt = threads_for(nt, dw_work(s));
#if K_HAVE_X86_PATHS
    if (chans_split(nt, s, j.path)) {
        const long vl = j.path == K_SIMD_AVX512 ? 16 : 8, nb = (s->ci + vl - 1) / vl;
        long per = nb / ((long)nt * K_STEAL_UNITS);
        j.unit = (per < 1 ? 1 : per) * vl;
        env2_steal_init(&j.st, (s->ci + j.unit - 1) / j.unit, nt);
        k_par_run(nt, chans_job, &j);
        return;
    }
#endif
    run_rows(nt, &j, fwd_job);
}

void k_dwconv_fwd(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep)
{
    k_dwconv_fwd_pool(nt, s, x, w, y, ep, NULL);
}

void k_dwconv_bwd_data(int nt, const k_conv_shape *s, const float *dy, const float *w, float *dx)
{
    if (s->n <= 0 || s->h <= 0 || s->w <= 0 || s->ci <= 0) return;
    dw_job j = {s, dy, w, dx, NULL, simd_path(s), (long)s->n * s->h, 1, {{{0}}, 0}, NULL};
    run_rows(threads_for(nt, dw_work(s)), &j, bwd_data_job);
}

void k_dwconv_bwd_weight(int nt, const k_conv_shape *s, const float *x, const float *dy, float *dw)
{
    if (s->n <= 0 || s->ho <= 0 || s->wo <= 0 || s->ci <= 0) return;
    dw_wjob j = {s, x, dy, dw, simd_path(s)};
    k_par_run(threads_for(nt, dw_work(s)), bwd_weight_job, &j);
}

/* ---- references ---------------------------------------------------------------- */

void k_dwconv_fwd_ref(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep)
{
    const long C = s->ci;
    for (long n = 0; n < s->n; n++)
        for (long oy = 0; oy < s->ho; oy++)
            for (long ox = 0; ox < s->wo; ox++) {
                long r = (n * s->ho + oy) * s->wo + ox;
                for (long c = 0; c < C; c++) {
                    double acc = 0.0;
                    for (long ky = 0; ky < s->kh; ky++)
                        for (long kx = 0; kx < s->kw; kx++) {
                            long iy = oy * s->stride - s->pad_t + ky, ix = ox * s->stride - s->pad_l + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            acc += (double)x[((n * s->h + iy) * s->w + ix) * C + c] * w[(ky * s->kw + kx) * C + c];
                        }
                    float v = (float)acc;
                    if (ep) {
                        if (ep->scale) v *= ep->scale[c];
                        if (ep->bias) v += ep->bias[c];
                        if (ep->act == K_ACT_SILU) v = silu1(v);
                        else if (ep->act == K_ACT_SIGMOID) v = sigm1(v);
                        if (ep->residual) v += ep->residual[r * ep->ldr + c];
                    }
                    y[r * C + c] = v;
                }
            }
}

void k_dwconv_bwd_data_ref(const k_conv_shape *s, const float *dy, const float *w, float *dx)
{
    const long C = s->ci;
    for (long i = 0; i < (long)s->n * s->h * s->w * C; i++) dx[i] = 0.0f;
    for (long n = 0; n < s->n; n++)
        for (long oy = 0; oy < s->ho; oy++)
            for (long ox = 0; ox < s->wo; ox++)
                for (long ky = 0; ky < s->kh; ky++)
                    for (long kx = 0; kx < s->kw; kx++) {
                        long iy = oy * s->stride - s->pad_t + ky, ix = ox * s->stride - s->pad_l + kx;
                        if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                        for (long c = 0; c < C; c++)
                            dx[((n * s->h + iy) * s->w + ix) * C + c] +=
                                dy[((n * s->ho + oy) * s->wo + ox) * C + c] * w[(ky * s->kw + kx) * C + c];
                    }
}

void k_dwconv_bwd_weight_ref(const k_conv_shape *s, const float *x, const float *dy, float *dw)
{
    const long C = s->ci;
    for (long ky = 0; ky < s->kh; ky++)
        for (long kx = 0; kx < s->kw; kx++)
            for (long c = 0; c < C; c++) {
                double acc = 0.0;
                for (long n = 0; n < s->n; n++)
                    for (long oy = 0; oy < s->ho; oy++)
                        for (long ox = 0; ox < s->wo; ox++) {
                            long iy = oy * s->stride - s->pad_t + ky, ix = ox * s->stride - s->pad_l + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            acc += (double)x[((n * s->h + iy) * s->w + ix) * C + c] *
                                   dy[((n * s->ho + oy) * s->wo + ox) * C + c];
                        }
                dw[(ky * s->kw + kx) * C + c] += (float)acc;
            }
}
