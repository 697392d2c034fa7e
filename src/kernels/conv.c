/* Dense convolution (groups = 1) on NHWC activations and HWIO weights,
 * lowered to GEMM.
 *
 *  forward      y[rows][co] = col[rows][kh*kw*ci] * w[kh*kw*ci][co]
 *               1x1 stride 1: col is x itself.  Otherwise the GEMM gathers
 *               its A panels straight from x (implicit im2col), so the
 *               forward pass needs no workspace.
 *  backward     stride 1: a forward convolution of dy with the flipped,
 *  data         transposed kernel (implicit im2col again, dx written once).
 *               Other strides: dcol = dy * w^T by chunks of output lines,
 *               then col2im adds dcol into dx, each task owning whole
 *               input lines.
 *  backward     dw += col^T * dy by the same chunks, in chunk order;
 *  weight       each task gathers and multiplies its own columns of col.
 *
 * Chunks are whole output lines (n, oh) sized from the shape only, so every
 * sum is formed in the same order for any thread count. */
#include "kernels_internal.h"

#include <string.h>

#include "common.h"

/* Upper bound of a dcol / col chunk (floats).  2 MiB stays in cache between
 * being written and read; 8 MiB chunks measured up to 30% slower, 0.5-1 MiB
 * the same. */
#define CHUNK_FLOATS (512L * 1024)

void k_conv_shape_init(k_conv_shape *s, int n, int h, int w, int ci, int co, int k, int stride, int same_pad)
{
    s->n = n;
    s->h = h;
    s->w = w;
    s->ci = ci;
    s->co = co;
    s->kh = k;
    s->kw = k;
    s->stride = stride;
    if (same_pad) {
        int th, tw;
        s->ho = (h + stride - 1) / stride;
        s->wo = (w + stride - 1) / stride;
        th = (s->ho - 1) * stride + k - h;
        tw = (s->wo - 1) * stride + k - w;
        s->pad_t = th > 0 ? th / 2 : 0;
        s->pad_l = tw > 0 ? tw / 2 : 0;
    } else {
        int pad = (k - 1) / 2, nh = h + 2 * pad - k, nw = w + 2 * pad - k;
        s->pad_t = pad;
        s->pad_l = pad;
        s->ho = nh < 0 ? 0 : nh / stride + 1;
        s->wo = nw < 0 ? 0 : nw / stride + 1;
    }
}

static int is_pointwise(const k_conv_shape *s)
{
    return s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad_t == 0 && s->pad_l == 0 && s->ho == s->h &&
           s->wo == s->w;
}

static long chunk_lines(const k_conv_shape *s)
{
    long per_line = (long)s->wo * s->kh * s->kw * s->ci, total = (long)s->n * s->ho;
    long l = per_line > 0 ? CHUNK_FLOATS / per_line : total;
    if (l < 1) l = 1;
    return l < total ? l : total;
}

size_t k_conv2d_workspace(const k_conv_shape *s, int nt)
{
    (void)nt;
    if (is_pointwise(s)) return 0;
    size_t K = (size_t)s->kh * s->kw * s->ci, chunk = (size_t)chunk_lines(s) * (size_t)s->wo * K;
    size_t flipped = s->stride == 1 ? K * (size_t)s->co : 0;
    return chunk > flipped ? chunk : flipped;
}

/* The stride-1 data gradient as a forward convolution: dx[ih] = sum_kh
 * dy[ih + pad_t - kh] w[kh] = sum_kh' dy[ih - (KH-1-pad_t) + kh'] w[KH-1-kh'],
 * a correlation of dy (ci' = co, co' = ci) with padding KH-1-pad_t and the
 * taps flipped and transposed. */
static void bwd_data_shape(const k_conv_shape *s, k_conv_shape *ts)
{
    *ts = *s;
    ts->h = s->ho;
    ts->w = s->wo;
    ts->ci = s->co;
    ts->co = s->ci;
    ts->pad_t = s->kh - 1 - s->pad_t;
    ts->pad_l = s->kw - 1 - s->pad_l;
    ts->ho = s->h;
    ts->wo = s->w;
}

size_t k_conv2d_train_workspace(const k_conv_shape *s, int wino)
{
    size_t ws = k_conv2d_workspace(s, 1);
    if (!wino || !k_wino_ok(s)) return ws;
    k_conv_shape ts;
    bwd_data_shape(s, &ts);
    size_t f = k_wino_workspace(s), b = (size_t)s->kh * s->kw * s->ci * s->co + k_wino_workspace(&ts),
           g = k_wino_bwd_weight_workspace(s);
    if (f > ws) ws = f;
    if (g > ws) ws = g;
    return b > ws ? b : ws;
}

/* ---- im2col gather ------------------------------------------------------------
 * Row i of col is output pixel (n, oh, ow); column k is (kh, kw, c).  For one
 * kernel row kh the kw*ci columns are consecutive pixels of one input line, so
 * away from the borders they are a single contiguous run of x. */
typedef struct col_src {
    const k_conv_shape *s;
    const float *x;
} col_src;

static void gather_row(const k_conv_shape *s, const float *x, long i, long pc, long kc, float *dst)
{
    const int ci = s->ci, KW = s->kw, run = KW * ci;
    long ow = i % s->wo, t = i / s->wo;
    long oh = t % s->ho, nn = t / s->ho;
    long ih0 = oh * s->stride - s->pad_t, iw0 = ow * s->stride - s->pad_l;
    const int inner = iw0 >= 0 && iw0 + KW <= s->w;
    long k = pc, end = pc + kc;
    while (k < end) {
        long kh = k / run, q = k - kh * run;
        long len = run - q < end - k ? run - q : end - k;
        long ih = ih0 + kh;
        float *d = dst + (k - pc);
        if (ih < 0 || ih >= s->h) {
            memset(d, 0, (size_t)len * sizeof(float));
        } else {
            const float *line = x + ((nn * s->h + ih) * s->w) * ci;
            if (inner) {
                memcpy(d, line + iw0 * ci + q, (size_t)len * sizeof(float));
            } else {
                /* A border pixel: split the run per tap. */
                long kk = 0;
                while (kk < len) {
                    long tap = (q + kk) / ci, c = (q + kk) - tap * ci;
                    long l2 = ci - c < len - kk ? ci - c : len - kk;
                    long iw = iw0 + tap;
                    if (iw < 0 || iw >= s->w) memset(d + kk, 0, (size_t)l2 * sizeof(float));
                    else memcpy(d + kk, line + iw * ci + c, (size_t)l2 * sizeof(float));
                    kk += l2;
                }
            }
        }
        k += len;
    }
}

static void gather_panel(const void *ctx, long i0, int mr, long pc, long kc, float *dst)
{
    const col_src *cs = ctx;
    for (int r = 0; r < mr; r++) gather_row(cs->s, cs->x, i0 + r, pc, kc, dst + r * kc);
}

/* ---- few input channels (the stem) ---------------------------------------------
 * K = kh*kw*ci <= K_CS_KMAX runs on the direct kernels of dwconv_avx512.c with
 * the SIMD paths (same sums as the GEMM, so the same bits; see there). */
int k_conv_test_no_direct;

static int small_path(const k_conv_shape *s)
{
#if K_HAVE_X86_PATHS
    /* the level in effect is one of GENERIC, AVX2, AVX512: the path itself */
    if (!k_conv_test_no_direct && !is_pointwise(s) && (long)s->kh * s->kw * s->ci <= K_CS_KMAX &&
        s->co <= K_CS_COMAX)
        return k_simd_level();
#else
    (void)s;
#endif
    return K_SIMD_GENERIC;
}

int k_conv2d_direct(const k_conv_shape *s) { return small_path(s) != K_SIMD_GENERIC; }

/* gather_row for whole rows of a few channels: element copies instead of
 * memcpy calls of 1-3 floats. */
static void cs_gather(const k_conv_shape *s, const float *x, long i, long n, float *dst)
{
    const long ci = s->ci, run = (long)s->kw * ci, K = s->kh * run;
    long ow = i % s->wo, oh = (i / s->wo) % s->ho, nn = i / s->wo / s->ho;
    for (long r = 0; r < n; r++) {
        if (r > 0 && ++ow == s->wo) {
            ow = 0;
            if (++oh == s->ho) {
                oh = 0;
                nn++;
            }
        }
        long ih0 = oh * s->stride - s->pad_t, iw0 = ow * s->stride - s->pad_l;
        float *d = dst + r * K;
        for (long kh = 0; kh < s->kh; kh++, d += run) {
            long ih = ih0 + kh;
            if (ih < 0 || ih >= s->h) {
                for (long j = 0; j < run; j++) d[j] = 0.0f;
                continue;
            }
            const float *line = x + (nn * s->h + ih) * s->w * ci;
            for (long kw = 0; kw < s->kw; kw++) {
                long iw = iw0 + kw;
                const int in = iw >= 0 && iw < s->w;
                for (long c = 0; c < ci; c++) d[kw * ci + c] = in ? line[iw * ci + c] : 0.0f;
            }
        }
    }
}

typedef struct cs_job {
    const k_conv_shape *s;
    const float *x, *w, *dy;
    float *y, *col, *dw;
    const k_epilogue *ep;
    long rows;  /* forward: output pixels; weight gradient: the chunk's first pixel */
    long R, kcs; /* weight gradient: the chunk's pixels and the GEMM's K block size for them */
    int path;
    long unit;      /* forward: pixels per stealing unit */
    env2_steal st;
} cs_job;

static int cs_threads(int nt, const k_conv_shape *s, long rows)
{
    double work = (double)rows * s->co * s->kh * s->kw * s->ci;
    return nt < 1 || work < 131072.0 ? 1 : nt;
}

/* Output pixels in units with stealing: each pixel is the same sum
 * whichever task computes it. */
static void cs_fwd_fn(void *arg, int ith, int nth)
{
    cs_job *j = arg;
    long i0, i1;
    (void)nth;
    while (k_steal_rows_next(&j->st, ith, j->unit, j->rows, &i0, &i1)) {
#if K_HAVE_X86_PATHS
        if (j->path == K_SIMD_AVX512) k_convs_fwd_avx512(j->s, j->x, j->w, j->y, j->ep, i0, i1, cs_gather);
        else k_convs_fwd_avx2(j->s, j->x, j->w, j->y, j->ep, i0, i1, cs_gather);
#endif
    }
}

static void cs_gather_fn(void *arg, int ith, int nth)
{
    const cs_job *j = arg;
    long i0, i1;
    env2_range(j->R, ith, nth, &i0, &i1);
    if (i0 < i1) cs_gather(j->s, j->x, j->rows + i0, i1 - i0, j->col + i0 * ((long)j->s->kh * j->s->kw * j->s->ci));
}

static void cs_dw_fn(void *arg, int ith, int nth)
{
    const cs_job *j = arg;
    const int VL = j->path == K_SIMD_AVX512 ? 16 : 8;
    long v0, v1;
    env2_range((j->s->co + VL - 1) / VL, ith, nth, &v0, &v1);
    if (v0 >= v1) return;
    const int K = j->s->kh * j->s->kw * j->s->ci;
#if K_HAVE_X86_PATHS
    if (j->path == K_SIMD_AVX512) k_convs_bwd_weight_avx512(j->col, j->R, K, j->dy, j->s->co, j->dw, v0, v1, j->kcs);
    else k_convs_bwd_weight_avx2(j->col, j->R, K, j->dy, j->s->co, j->dw, v0, v1, j->kcs);
#else
    (void)K;
#endif
}

void k_conv2d_fwd(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                  float *ws)
{
    (void)ws; /* the implicit im2col needs none; callers may pass NULL */
    const long rows = (long)s->n * s->ho * s->wo;
    if (rows <= 0 || s->co <= 0) return;
    if (is_pointwise(s)) {
        k_sgemm(nt, 0, 0, rows, s->co, s->ci, 1.0f, x, s->ci, w, s->co, 0.0f, y, s->co, ep);
        return;
    }
    int path = small_path(s);
    if (path != K_SIMD_GENERIC) {
        cs_job j = {s, x, w, NULL, y, NULL, NULL, ep, rows, 0, 0, path, 0, {{{0}}, 0}};
        const int t = cs_threads(nt, s, rows);
        j.unit = k_steal_rows_init(&j.st, rows, t);
        k_par_run(t, cs_fwd_fn, &j);
        return;
    }
    col_src src = {s, x};
    k_sgemm_packa(nt, rows, s->co, (long)s->kh * s->kw * s->ci, gather_panel, &src, w, s->co, 0.0f, y, s->co, ep);
}

typedef struct gated_src {
    const float *x, *gate;
    long hw, ci;
    k_vmul_fn mul;
} gated_src;

/* The squeeze-excite scaling, done while packing: one multiply per element as
 * in k_se_apply, so the GEMM sees the same A bit for bit.  The scaled
 * activation never goes to memory, and the pass over it that k_se_apply
 * would make (with its own thread region) is gone.  The multiply runs at the
 * full vector width: the portable loop compiles to 4-wide SSE here, and that
 * made the packing cost more than the pass it replaces (24x24 960->160 at
 * 384, one thread: +0.94 ms over 9 layers). */
static void gated_panel(const void *ctx, long i0, int mr, long pc, long kc, float *dst)
{
    const gated_src *g = ctx;
    long img = i0 / g->hw, end = (img + 1) * g->hw;
    for (int r = 0; r < mr; r++) {
        long row = i0 + r;
        if (row == end) {
            img++;
            end += g->hw;
        }
        g->mul(g->x + row * g->ci + pc, g->gate + img * g->ci + pc, dst + r * kc, kc);
    }
}

void k_conv1x1_gated_fwd(int nt, const k_conv_shape *s, const float *x, const float *gate, const float *w, float *y,
                         const k_epilogue *ep)
{
    const long hw = (long)s->ho * s->wo, rows = (long)s->n * hw;
    if (rows <= 0 || s->co <= 0) return;
    gated_src src = {x, gate, hw, s->ci, k_vmul_pick()};
    k_sgemm_packa(nt, rows, s->co, s->ci, gated_panel, &src, w, s->co, 0.0f, y, s->co, ep);
}

/* ---- backward data ---------------------------------------------------------- */

/* Input lines [ih_lo, ih_hi) of image n that output lines [l0, l1) read.
 * Threads split these lines, so every dx line has a single writer. */
static void touched_ih(const k_conv_shape *s, long n, long l0, long l1, long *ih_lo, long *ih_hi)
{
    long a = l0 - n * s->ho, b = l1 - n * s->ho; /* oh range of image n */
    if (a < 0) a = 0;
    if (b > s->ho) b = s->ho;
    if (a >= b) {
        *ih_lo = *ih_hi = 0;
        return;
    }
    long lo = a * s->stride - s->pad_t, hi = (b - 1) * s->stride - s->pad_t + s->kh;
    if (lo < 0) lo = 0;
    if (hi > s->h) hi = s->h;
    *ih_lo = lo;
    *ih_hi = hi > lo ? hi : lo;
}

/* dx[n][ih][:][:] += contributions of dcol rows of lines [l0, l1). */
static void col2im_line(const k_conv_shape *s, const float *dcol, long l0, long l1, long n, long ih, float *dx)
{
    const int ci = s->ci, KW = s->kw, st = s->stride;
    const long K = (long)s->kh * KW * ci;
    float *dline = dx + (n * s->h + ih) * (long)s->w * ci;
    for (int kh = 0; kh < s->kh; kh++) {
        long num = ih + s->pad_t - kh;
        if (num < 0 || num % st) continue;
        long oh = num / st;
        if (oh >= s->ho) continue;
        long line = n * s->ho + oh;
        if (line < l0 || line >= l1) continue;
        const float *drow = dcol + (line - l0) * s->wo * K + (long)kh * KW * ci;
        for (long iw = 0; iw < s->w; iw++) {
            float *d = dline + iw * ci;
            for (int kw = 0; kw < KW; kw++) {
                long num2 = iw + s->pad_l - kw;
                if (num2 < 0 || num2 % st) continue;
                long ow = num2 / st;
                if (ow >= s->wo) continue;
                const float *src = drow + ow * K + (long)kw * ci;
                SIMD_LOOP
                for (int c = 0; c < ci; c++) d[c] += src[c];
            }
        }
    }
}

typedef struct col2im_job {
    const k_conv_shape *s;
    const float *dcol;
    long l0, l1, n0, n1, total;
    float *dx;
} col2im_job;

/* Task ith takes a range of the (image, input line) pairs the chunk touches. */
static void col2im_fn(void *arg, int ith, int nth)
{
    const col2im_job *j = arg;
    long lo, hi, idx = 0;
    env2_range(j->total, ith, nth, &lo, &hi);
    for (long n = j->n0; n < j->n1 && idx < hi; n++) {
        long a, b;
        touched_ih(j->s, n, j->l0, j->l1, &a, &b);
        for (long ih = a; ih < b; ih++, idx++)
            if (idx >= lo && idx < hi) col2im_line(j->s, j->dcol, j->l0, j->l1, n, ih, j->dx);
    }
}

static void col2im_chunk(int nt, const k_conv_shape *s, const float *dcol, long l0, long l1, float *dx)
{
    col2im_job j = {s, dcol, l0, l1, l0 / s->ho, (l1 - 1) / s->ho + 1, 0, dx};
    for (long n = j.n0; n < j.n1; n++) {
        long a, b;
        touched_ih(s, n, l0, l1, &a, &b);
        j.total += b - a;
    }
    k_par_run(nt, col2im_fn, &j);
}

typedef struct zero_job {
    float *p;
    long n;
} zero_job;

static void zero_fn(void *arg, int ith, int nth)
{
    const zero_job *j = arg;
    long lo, hi;
    env2_range(j->n, ith, nth, &lo, &hi);
    if (hi > lo) memset(j->p + lo, 0, (size_t)(hi - lo) * sizeof(float));
}

static void zero_floats(int nt, float *p, long n)
{
    zero_job j = {p, n};
    k_par_run(nt, zero_fn, &j);
}

void k_conv2d_bwd_data(int nt, const k_conv_shape *s, const float *dy, const float *w, float *dx, float *ws, int wino)
{
    const long rows = (long)s->n * s->ho * s->wo, K = (long)s->kh * s->kw * s->ci;
    if (is_pointwise(s)) {
        k_sgemm(nt, 0, 1, rows, s->ci, s->co, 1.0f, dy, s->co, w, s->co, 0.0f, dx, s->ci, NULL);
        return;
    }
    if (s->stride == 1) {
        const long taps = (long)s->kh * s->kw, ci = s->ci, co = s->co;
        for (long t = 0; t < taps; t++) {
            const float *src = w + (taps - 1 - t) * ci * co;
            float *dst = ws + t * co * ci;
            for (long c = 0; c < ci; c++)
                for (long o = 0; o < co; o++) dst[o * ci + c] = src[c * co + o];
        }
        k_conv_shape ts;
        bwd_data_shape(s, &ts);
        const long drows = (long)s->n * s->h * s->w;
        if (drows <= 0 || ci <= 0) return;
        if (wino && k_wino_ok(&ts)) {
            k_conv2d_fwd_wino(nt, &ts, dy, ws, dx, NULL, ws + taps * ci * co);
            return;
        }
        col_src src = {&ts, dy};
        k_sgemm_packa(nt, drows, ci, taps * co, gather_panel, &src, ws, ci, 0.0f, dx, ci, NULL);
        return;
    }
    zero_floats(nt, dx, (long)s->n * s->h * s->w * s->ci);
    if (rows <= 0) return;
    const long L = chunk_lines(s), lines = (long)s->n * s->ho;
    for (long l0 = 0; l0 < lines; l0 += L) {
        long l1 = l0 + L < lines ? l0 + L : lines;
        k_sgemm(nt, 0, 1, (l1 - l0) * s->wo, K, s->co, 1.0f, dy + l0 * s->wo * s->co, s->co, w, s->co, 0.0f, ws, K,
                NULL);
        col2im_chunk(nt, s, ws, l0, l1, dx);
    }
}

typedef struct bwdw_job {
    const k_conv_shape *s;
    const float *x, *dy;
    float *dw, *ws;
    long L, groups, K;
} bwdw_job;

static void bwdw_fn(void *arg, int ith, int nth)
{
    const bwdw_job *j = arg;
    const k_conv_shape *s = j->s;
    const long L = j->L, K = j->K, lines = (long)s->n * s->ho, Rmax = L * s->wo;
    long g0, g1;
    env2_range(j->groups, ith, nth, &g0, &g1);
    const long m0 = g0 * 16, m1 = g1 * 16 < K ? g1 * 16 : K, mlen = m1 - m0;
    float *col = j->ws + m0 * Rmax;
    for (long l0 = 0; l0 < lines && mlen > 0; l0 += L) {
        long l1 = l0 + L < lines ? l0 + L : lines, R = (l1 - l0) * s->wo;
        for (long r = 0; r < R; r++) gather_row(s, j->x, l0 * s->wo + r, m0, mlen, col + r * mlen);
        k_sgemm(1, 1, 0, mlen, s->co, R, 1.0f, col, mlen, j->dy + l0 * s->wo * s->co, s->co, 1.0f,
                j->dw + m0 * s->co, s->co, NULL);
    }
}

void k_conv2d_bwd_weight(int nt, const k_conv_shape *s, const float *x, const float *dy, float *dw, float *ws,
                         int wino)
{
    const long rows = (long)s->n * s->ho * s->wo, K = (long)s->kh * s->kw * s->ci;
    if (rows <= 0) return;
    if (wino && k_wino_ok(s)) {
        k_conv2d_bwd_weight_wino(nt, s, x, dy, dw, ws);
        return;
    }
    if (is_pointwise(s)) {
        k_sgemm(nt, 1, 0, s->ci, s->co, rows, 1.0f, x, s->ci, dy, s->co, 1.0f, dw, s->co, NULL);
        return;
    }
    int path = small_path(s);
    if (path != K_SIMD_GENERIC) {
        /* the same chunks as below; within one, the GEMM's K blocks */
        const long L = chunk_lines(s), lines = (long)s->n * s->ho;
        for (long l0 = 0; l0 < lines; l0 += L) {
            long l1 = l0 + L < lines ? l0 + L : lines, R = (l1 - l0) * s->wo;
            cs_job j = {s, x, NULL, dy + l0 * s->wo * s->co, NULL, ws, dw, NULL, l0 * s->wo, R, k_gemm_kc(R),
                        path, 0, {{{0}}, 0}};
            k_par_run(cs_threads(nt, s, R), cs_gather_fn, &j);
            k_par_run(cs_threads(nt, s, R), cs_dw_fn, &j);
        }
        return;
    }
    /* Each task owns a band of 16-row groups of dw (columns of col) and
     * runs every chunk for it: it gathers its columns of col into its own
     * slice of ws and multiplies them single-threaded.  One parallel region
     * for the whole pass, and a dw element's sum is the same chunk-by-chunk
     * GEMM whichever task owns it. */
    bwdw_job j = {s, x, dy, dw, ws, chunk_lines(s), (K + 15) / 16, K};
    k_par_run(nt, bwdw_fn, &j);
}

/* ---- references ------------------------------------------------------------------ */

void k_conv2d_fwd_ref(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep)
{
    for (long n = 0; n < s->n; n++)
        for (long oh = 0; oh < s->ho; oh++)
            for (long ow = 0; ow < s->wo; ow++) {
                long row = (n * s->ho + oh) * s->wo + ow;
                for (long o = 0; o < s->co; o++) {
                    double acc = 0;
                    for (long kh = 0; kh < s->kh; kh++) {
                        long ih = oh * s->stride - s->pad_t + kh;
                        if (ih < 0 || ih >= s->h) continue;
                        for (long kw = 0; kw < s->kw; kw++) {
                            long iw = ow * s->stride - s->pad_l + kw;
                            if (iw < 0 || iw >= s->w) continue;
                            const float *xp = x + ((n * s->h + ih) * s->w + iw) * s->ci;
                            const float *wp = w + ((kh * s->kw + kw) * s->ci) * s->co + o;
                            for (long c = 0; c < s->ci; c++) acc += (double)xp[c] * (double)wp[c * s->co];
                        }
                    }
                    float v = (float)acc;
                    if (ep)
                        v = k_epilogue_scalar(v, ep->scale ? ep->scale[o] : 1.0f, ep->bias ? ep->bias[o] : 0.0f,
                                              ep->act, ep->residual ? ep->residual[row * ep->ldr + o] : 0.0f);
                    y[row * s->co + o] = v;
                }
            }
}

void k_conv2d_bwd_data_ref(const k_conv_shape *s, const float *dy, const float *w, float *dx)
{
    for (long n = 0; n < s->n; n++)
        for (long ih = 0; ih < s->h; ih++)
            for (long iw = 0; iw < s->w; iw++)
                for (long c = 0; c < s->ci; c++) {
                    double acc = 0;
                    for (long kh = 0; kh < s->kh; kh++) {
                        long num = ih + s->pad_t - kh;
                        if (num < 0 || num % s->stride || num / s->stride >= s->ho) continue;
                        long oh = num / s->stride;
                        for (long kw = 0; kw < s->kw; kw++) {
                            long num2 = iw + s->pad_l - kw;
                            if (num2 < 0 || num2 % s->stride || num2 / s->stride >= s->wo) continue;
                            long ow = num2 / s->stride;
                            const float *dyp = dy + ((n * s->ho + oh) * s->wo + ow) * s->co;
                            const float *wp = w + ((kh * s->kw + kw) * s->ci + c) * s->co;
                            for (long o = 0; o < s->co; o++) acc += (double)dyp[o] * (double)wp[o];
                        }
                    }
                    dx[((n * s->h + ih) * s->w + iw) * s->ci + c] = (float)acc;
                }
}

void k_conv2d_bwd_weight_ref(const k_conv_shape *s, const float *x, const float *dy, float *dw)
{
    for (long kh = 0; kh < s->kh; kh++)
        for (long kw = 0; kw < s->kw; kw++)
            for (long c = 0; c < s->ci; c++)
                for (long o = 0; o < s->co; o++) {
                    double acc = 0;
                    for (long n = 0; n < s->n; n++)
                        for (long oh = 0; oh < s->ho; oh++) {
                            long ih = oh * s->stride - s->pad_t + kh;
                            if (ih < 0 || ih >= s->h) continue;
                            for (long ow = 0; ow < s->wo; ow++) {
                                long iw = ow * s->stride - s->pad_l + kw;
                                if (iw < 0 || iw >= s->w) continue;
                                acc += (double)x[((n * s->h + ih) * s->w + iw) * s->ci + c] *
                                       (double)dy[((n * s->ho + oh) * s->wo + ow) * s->co + o];
                            }
                        }
                    float *d = dw + ((kh * s->kw + kw) * s->ci + c) * s->co + o;
                    *d = (float)((double)*d + acc);
                }
}
