/* AVX-512 paths of the depthwise convolution and of the SiLU / sigmoid
 * activation kernels.
 *
 * Only AVX-512F instructions are used, so the path is valid on every CPU for
 * which k_simd_detect() reports K_SIMD_AVX512.  Channels are the vector lanes
 * (16 per zmm); a channel count that is not a multiple of 16 ends in one
 * masked block.  The entry points work on a range of rows (forward, backward
 * data) or of 16-channel blocks (backward weight) chosen by the caller in
 * dwconv.c, which owns threading and the choice of path.  k_act_avx512 serves
 * act.c. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"
#include "kernels_internal.h"

void k_dw_fwd_rows_avx512(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                          long r0, long r1);
void k_dw_bwd_data_rows_avx512(const k_conv_shape *s, const float *dy, const float *w, float *dx, long r0,
                               long r1);
void k_dw_bwd_weight_avx512(const k_conv_shape *s, const float *x, const float *dy, float *dw, long b0, long b1);
void k_act_avx512(int op, long n, const float *x, const float *dy, float *y);

/* The register-blocked loops below index small arrays of vectors with loop
 * counters; they only stay in registers when the loops are fully unrolled,
 * which gcc -O2 does not do on its own. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 32")
#else
#define UNROLL
#endif
#define AI static inline __attribute__((always_inline))

/* ---- activations ------------------------------------------------------------
 * k_exp512 / k_silu512 / k_sigmoid512 come from kernels_internal.h so that
 * the fused epilogue here matches the GEMM epilogue bit for bit.  Sigmoid is
 * 1 / (1 + e^-x) and SiLU x / (1 + e^-x): for very negative x, e^-x = +inf
 * gives exactly 0 (SiLU: -0), never NaN. */
#define v_exp k_exp512
#define v_silu k_silu512
#define v_sigmoid k_sigmoid512

AI __m512 v_silu_grad(__m512 x, __m512 dy)
{
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = v_exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
    /* dy * s * (1 + x * (1 - s)), with 1 - s as e*s (no cancellation for
     * large x); min returns its second operand for the NaN of inf*0 */
    __m512 oms = _mm512_min_ps(_mm512_mul_ps(e, s), one);
    __m512 t = _mm512_fmadd_ps(x, oms, one);
    return _mm512_mul_ps(_mm512_mul_ps(dy, s), t);
}

void k_act_avx512(int op, long n, const float *x, const float *dy, float *y)
{
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        if (op == 0) v = v_silu(v);
        else if (op == 1) v = v_silu_grad(v, _mm512_loadu_ps(dy + i));
        else v = v_sigmoid(v);
        _mm512_storeu_ps(y + i, v);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        if (op == 0) v = v_silu(v);
        else if (op == 1) v = v_silu_grad(v, _mm512_maskz_loadu_ps(m, dy + i));
        else v = v_sigmoid(v);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* ---- geometry -------------------------------------------------------------
 * Forward and the stride-1 backward-data are the same correlation: output
 * pixel (oy, ox) reads source rows oy*S - pt + ky and columns ox*S - pl + kx
 * with tap weight wb + ky*wsy + kx*wsx.  Backward data at stride 1 is the
 * forward with the kernel flipped (negative tap strides) and the padding
 * mirrored, so it shares the register-blocked loops. */
typedef struct geo {
    const float *src;
    long hs, ws;            /* source spatial size */
    long ho, wo;            /* output spatial size */
    long C;
    int K, S, pt, pl;
    const float *wb;
    long wsy, wsx;
    float *dst;
    const float *scale, *bias, *res;
    long ldr;
    int act;
    long cfull;             /* channels covered by full 16-lane blocks */
    __mmask16 tail;         /* lanes of the last, partial block */
} geo;

AI __m512 ld(__mmask16 m, const float *p, const int full)
{
    return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

AI void st(__mmask16 m, float *p, __m512 v, const int full)
{
    if (full) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, m, v);
}

AI __m512 epi(const geo *g, __m512 v, long c, long r, __mmask16 m, const int full)
{
    /* separate multiply and add (no FMA), as the GEMM epilogue does */
    if (g->scale) v = _mm512_mul_ps(v, ld(m, g->scale + c, full));
    if (g->bias) v = _mm512_add_ps(v, ld(m, g->bias + c, full));
    if (g->act == K_ACT_SILU) v = v_silu(v);
    else if (g->act == K_ACT_SIGMOID) v = v_sigmoid(v);
    if (g->res) v = _mm512_add_ps(v, ld(m, g->res + r * g->ldr + c, full));
    return v;
}

static void geo_init(geo *g, const k_conv_shape *s)
{
    g->C = s->ci;
    g->K = s->kh;
    g->S = s->stride;
    g->cfull = s->ci & ~15L;
    g->tail = (__mmask16)((1u << (s->ci & 15)) - 1u);
    g->scale = g->bias = g->res = NULL;
    g->ldr = 0;
    g->act = K_ACT_NONE;
}

/* T adjacent interior outputs of one 16-channel block.  Each loaded source
 * vector feeds every output whose window covers it, and the K weights of a
 * kernel row stay in registers.  Summation order per output is ky then kx
 * ascending, the same as border_blk, so an output's value does not depend on
 * whether it fell in a tile or on the border. */
AI void tile(const geo *g, const float *const *rows, const float *const *wr, int nky, long ix0, float *yp, long r,
             long c, __mmask16 m, const int full, const int K, const int S, const int T)
{
    const long C = g->C, wsx = g->wsx;
    __m512 acc[8];
    UNROLL for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nky; i++) {
        const float *xp = rows[i] + ix0 * C + c;
        const float *wp = wr[i] + c;
        __m512 wv[5];
        UNROLL for (int kx = 0; kx < K; kx++) wv[kx] = ld(m, wp + kx * wsx, full);
        UNROLL for (int j = 0; j < (T - 1) * S + K; j++) {
            __m512 xv = ld(m, xp + j * C, full);
            UNROLL for (int t = 0; t < T; t++) {
                const int kx = j - t * S;
                if (kx >= 0 && kx < K) acc[t] = _mm512_fmadd_ps(xv, wv[kx], acc[t]);
            }
        }
    }
    UNROLL for (int t = 0; t < T; t++) st(m, yp + t * C + c, epi(g, acc[t], c, r + t, m, full), full);
}

/* One output pixel of one 16-channel block, with bounds checks on the
 * columns (left and right borders). */
AI void border_blk(const geo *g, const float *const *rows, const float *const *wr, int nky, long ox, float *yp,
                   long r, long c, __mmask16 m, const int full)
{
    const long C = g->C;
    long ix0 = ox * g->S - g->pl;
    int kx0 = ix0 < 0 ? (int)-ix0 : 0;
    int kx1 = ix0 + g->K > g->ws ? (int)(g->ws - ix0) : g->K;
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < nky; i++)
        for (int kx = kx0; kx < kx1; kx++)
            acc = _mm512_fmadd_ps(ld(m, rows[i] + (ix0 + kx) * C + c, full), ld(m, wr[i] + kx * g->wsx + c, full),
                                  acc);
    st(m, yp + c, epi(g, acc, c, r, m, full), full);
}

/* Output columns whose whole window lies inside the source: [*a, *b). */
static void interior_cols(const geo *g, long *a, long *b)
{
    long lo = g->pl > 0 ? (g->pl + g->S - 1) / g->S : 0;
    long last = g->ws - g->K + g->pl; /* largest ox*S with the window inside */
    long hi = last >= 0 ? last / g->S + 1 : 0;
    if (lo > g->wo) lo = g->wo;
    if (hi > g->wo) hi = g->wo;
    if (hi < lo) hi = lo;
    *a = lo;
    *b = hi;
}

/* One channel block swept along the row.  Sweeping a row per block (rather
 * than all channels per pixel) keeps the lines in flight few and close
 * together: with C a multiple of 256 the pixels of a block fall into a few
 * L1 sets, and a pixel-major order thrashed them. */
AI void row_blk(const geo *g, const float *const *rows, const float *const *wr, int nky, long oxa, long oxb,
                float *yrow, long rbase, long c, __mmask16 m, const int full, const int K, const int S)
{
    const long C = g->C, pl = g->pl;
    long ox = 0;
    for (; ox < oxa; ox++) border_blk(g, rows, wr, nky, ox, yrow + ox * C, rbase + ox, c, m, full);
    for (; ox + 8 <= oxb; ox += 8) tile(g, rows, wr, nky, ox * S - pl, yrow + ox * C, rbase + ox, c, m, full, K, S, 8);
    for (; ox + 4 <= oxb; ox += 4) tile(g, rows, wr, nky, ox * S - pl, yrow + ox * C, rbase + ox, c, m, full, K, S, 4);
    for (; ox < oxb; ox++) tile(g, rows, wr, nky, ox * S - pl, yrow + ox * C, rbase + ox, c, m, full, K, S, 1);
    for (; ox < g->wo; ox++) border_blk(g, rows, wr, nky, ox, yrow + ox * C, rbase + ox, c, m, full);
}

AI void conv_row(const geo *g, long n, long oy, const int K, const int S)
{
    const long C = g->C;
    long iy0 = oy * S - g->pt;
    const float *rows[5], *wr[5];
    int nky = 0;
    for (int ky = 0; ky < K; ky++) {
        long iy = iy0 + ky;
        if (iy < 0 || iy >= g->hs) continue;
        rows[nky] = g->src + (n * g->hs + iy) * g->ws * C;
        wr[nky] = g->wb + ky * g->wsy;
        nky++;
    }
    long rbase = (n * g->ho + oy) * g->wo;
    float *yrow = g->dst + rbase * C;
    long oxa, oxb;
    interior_cols(g, &oxa, &oxb);
    long c = 0;
    for (; c < g->cfull; c += 16) row_blk(g, rows, wr, nky, oxa, oxb, yrow, rbase, c, 0xFFFF, 1, K, S);
    if (c < C) row_blk(g, rows, wr, nky, oxa, oxb, yrow, rbase, c, g->tail, 0, K, S);
}

/* Two adjacent output rows of a 3x3 stride-1 correlation share two of their
 * four source rows: computing them together loads 4 rows instead of 6 per
 * pair.  Each output still sums ky then kx ascending with the same FMAs as
 * tile(), so pairing (which depends on where a thread's rows start) never
 * changes a result. */
AI void tile2(const geo *g, const float *const *rows, const float *w, long ix0, float *yp, long r, long c,
              __mmask16 m, const int full, const int T)
{
    const long C = g->C, wsx = g->wsx, wsy = g->wsy, wo = g->wo;
    __m512 a0[8], a1[8], wv[3][3];
    UNROLL for (int ky = 0; ky < 3; ky++) UNROLL for (int kx = 0; kx < 3; kx++) wv[ky][kx] =
        ld(m, w + ky * wsy + kx * wsx + c, full);
    UNROLL for (int t = 0; t < T; t++) a0[t] = a1[t] = _mm512_setzero_ps();
    UNROLL for (int i = 0; i < 4; i++) {
        const float *xp = rows[i] + ix0 * C + c;
        UNROLL for (int j = 0; j < T + 2; j++) {
            __m512 xv = ld(m, xp + j * C, full);
            UNROLL for (int t = 0; t < T; t++) {
                const int kx = j - t;
                if (kx < 0 || kx >= 3) continue;
                if (i < 3) a0[t] = _mm512_fmadd_ps(xv, wv[i][kx], a0[t]);
                if (i >= 1) a1[t] = _mm512_fmadd_ps(xv, wv[i - 1][kx], a1[t]);
            }
        }
    }
    UNROLL for (int t = 0; t < T; t++) {
        st(m, yp + t * C + c, epi(g, a0[t], c, r + t, m, full), full);
        st(m, yp + (wo + t) * C + c, epi(g, a1[t], c, r + wo + t, m, full), full);
    }
}

AI void row2_blk(const geo *g, const float *const *rows, long oxa, long oxb, float *yrow, long rbase, long c,
                 __mmask16 m, const int full)
{
    const long C = g->C, pl = g->pl, wo = g->wo;
    const float *wr[3] = {g->wb, g->wb + g->wsy, g->wb + 2 * g->wsy};
    long ox = 0;
    for (; ox < oxa; ox++) {
        border_blk(g, rows, wr, 3, ox, yrow + ox * C, rbase + ox, c, m, full);
        border_blk(g, rows + 1, wr, 3, ox, yrow + (wo + ox) * C, rbase + wo + ox, c, m, full);
    }
    for (; ox + 8 <= oxb; ox += 8) tile2(g, rows, g->wb, ox - pl, yrow + ox * C, rbase + ox, c, m, full, 8);
    for (; ox + 4 <= oxb; ox += 4) tile2(g, rows, g->wb, ox - pl, yrow + ox * C, rbase + ox, c, m, full, 4);
    for (; ox < oxb; ox++) tile2(g, rows, g->wb, ox - pl, yrow + ox * C, rbase + ox, c, m, full, 1);
    for (; ox < wo; ox++) {
        border_blk(g, rows, wr, 3, ox, yrow + ox * C, rbase + ox, c, m, full);
        border_blk(g, rows + 1, wr, 3, ox, yrow + (wo + ox) * C, rbase + wo + ox, c, m, full);
    }
}

/* Rows oy and oy + 1 of image n, both with all three source rows inside. */
static void conv_row2(const geo *g, long n, long oy)
{
    const long C = g->C;
    long iy0 = oy - g->pt;
    const float *rows[4];
    for (int i = 0; i < 4; i++) rows[i] = g->src + (n * g->hs + iy0 + i) * g->ws * C;
    long rbase = (n * g->ho + oy) * g->wo;
    float *yrow = g->dst + rbase * C;
    long oxa, oxb;
    interior_cols(g, &oxa, &oxb);
    long c = 0;
    for (; c < g->cfull; c += 16) row2_blk(g, rows, oxa, oxb, yrow, rbase, c, 0xFFFF, 1);
    if (c < C) row2_blk(g, rows, oxa, oxb, yrow, rbase, c, g->tail, 0);
}

static void conv_rows(const geo *g, long r0, long r1)
{
    for (long r = r0; r < r1; r++) {
        long n = r / g->ho, oy = r % g->ho;
        if (g->K == 3 && g->S == 1) {
            long iy0 = oy - g->pt;
            if (r + 1 < r1 && oy + 1 < g->ho && iy0 >= 0 && iy0 + 4 <= g->hs) {
                conv_row2(g, n, oy);
                r++;
            } else {
                conv_row(g, n, oy, 3, 1);
            }
        } else if (g->K == 3 && g->S == 2) {
            conv_row(g, n, oy, 3, 2);
        } else if (g->K == 5 && g->S == 1) {
            conv_row(g, n, oy, 5, 1);
        } else {
            conv_row(g, n, oy, 5, 2);
        }
    }
}

/* Rows are output rows n*ho + oy.  The caller guarantees kh == kw in {3, 5}
 * and stride in {1, 2}. */
void k_dw_fwd_rows_avx512(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                          long r0, long r1)
{
    geo g;
    geo_init(&g, s);
    g.src = x;
    g.hs = s->h;
    g.ws = s->w;
    g.ho = s->ho;
    g.wo = s->wo;
    g.pt = s->pad_t;
    g.pl = s->pad_l;
    g.wb = w;
    g.wsy = (long)s->kw * s->ci;
    g.wsx = s->ci;
    g.dst = y;
    if (ep) {
        g.scale = ep->scale;
        g.bias = ep->bias;
        g.res = ep->residual;
        g.ldr = ep->ldr;
        g.act = ep->act;
    }
    conv_rows(&g, r0, r1);
}

/* Transposed gather for stride > 1: input pixel (iy, ix) collects dy(oy, ox)
 * over the taps with iy + pt - ky = oy*S, i.e. ky in one residue class mod S. */
static void tconv_row(const k_conv_shape *s, const float *dy, const float *w, float *dx, long n, long iy)
{
    const long C = s->ci, S = s->stride, K = s->kh;
    const long cfull = C & ~15L;
    const __mmask16 tail = (__mmask16)((1u << (C & 15)) - 1u);
    const float *rows[16], *wr[16];
    int nky = 0;
    long a = iy + s->pad_t;
    for (long ky = 0; ky < K; ky++) {
        long t = a - ky;
        if (t < 0 || t % S != 0 || t / S >= s->ho) continue;
        rows[nky] = dy + (n * s->ho + t / S) * (long)s->wo * C;
        wr[nky] = w + ky * K * C;
        nky++;
    }
    float *xrow = dx + (n * s->h + iy) * (long)s->w * C;
    for (long ix = 0; ix < s->w; ix++) {
        long b = ix + s->pad_l;
        long ox[16], kxs[16];
        int nkx = 0;
        for (long kx = 0; kx < K; kx++) {
            long t = b - kx;
            if (t < 0 || t % S != 0 || t / S >= s->wo) continue;
            ox[nkx] = t / S;
            kxs[nkx] = kx;
            nkx++;
        }
        float *o = xrow + ix * C;
        long c = 0;
        for (; c < cfull; c += 16) {
            __m512 acc = _mm512_setzero_ps();
            for (int i = 0; i < nky; i++)
                for (int j = 0; j < nkx; j++)
                    acc = _mm512_fmadd_ps(_mm512_loadu_ps(rows[i] + ox[j] * C + c),
                                          _mm512_loadu_ps(wr[i] + kxs[j] * C + c), acc);
            _mm512_storeu_ps(o + c, acc);
        }
        if (c < C) {
            __m512 acc = _mm512_setzero_ps();
            for (int i = 0; i < nky; i++)
                for (int j = 0; j < nkx; j++)
                    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, rows[i] + ox[j] * C + c),
                                          _mm512_maskz_loadu_ps(tail, wr[i] + kxs[j] * C + c), acc);
            _mm512_mask_storeu_ps(o + c, tail, acc);
        }
    }
}

/* Rows are input rows n*h + iy of dx. */
void k_dw_bwd_data_rows_avx512(const k_conv_shape *s, const float *dy, const float *w, float *dx, long r0, long r1)
{
    if (s->stride != 1) {
        for (long r = r0; r < r1; r++) tconv_row(s, dy, w, dx, r / s->h, r % s->h);
        return;
    }
    const int K = s->kh;
    geo g;
    geo_init(&g, s);
    g.src = dy;
    g.hs = s->ho;
    g.ws = s->wo;
    g.ho = s->h;
    g.wo = s->w;
    g.pt = K - 1 - s->pad_t;
    g.pl = K - 1 - s->pad_l;
    g.wb = w + ((long)(K - 1) * K + (K - 1)) * s->ci;
    g.wsy = -(long)K * s->ci;
    g.wsx = -(long)s->ci;
    g.dst = dx;
    conv_rows(&g, r0, r1);
}

/* ---- backward weight --------------------------------------------------------
 * Each call owns whole 16-channel blocks, so nothing is shared between
 * threads.  Per block the K*K tap sums of one output row live in registers;
 * row sums are added in row order into double totals, so the result depends
 * only on the shape, never on how blocks were distributed. */

enum { BW_GROUP = 8, BW_TOT = 4096 };

AI void bw_px(__m512 *acc, const float *const *rows, int ky0, int ky1, long ix0, long ws, long C, long c, __m512 dv,
              __mmask16 m, const int full, const int K, const int rowcheck, const int colcheck)
{
    UNROLL for (int ky = 0; ky < K; ky++) {
        if (rowcheck && (ky < ky0 || ky >= ky1)) continue;
        const float *xr = rows[ky] + c;
        UNROLL for (int kx = 0; kx < K; kx++) {
            long ix = ix0 + kx;
            if (colcheck && (ix < 0 || ix >= ws)) continue;
            acc[ky * K + kx] = _mm512_fmadd_ps(ld(m, xr + ix * C, full), dv, acc[ky * K + kx]);
        }
    }
}

AI void bw_row_blk(const geo *g, const float *const *rows, int ky0, int ky1, const float *dyrow, long c,
                   __mmask16 m, double *tot, long totstride, long oxa, long oxb, const int full, const int K,
                   const int S, const int rowcheck)
{
    const long C = g->C, ws = g->ws, pl = g->pl;
    __m512 acc[25];
    UNROLL for (int i = 0; i < K * K; i++) acc[i] = _mm512_setzero_ps();
    long ox = 0;
    for (; ox < oxa; ox++)
        bw_px(acc, rows, ky0, ky1, ox * S - pl, ws, C, c, ld(m, dyrow + ox * C + c, full), m, full, K, rowcheck, 1);
    for (; ox < oxb; ox++)
        bw_px(acc, rows, ky0, ky1, ox * S - pl, ws, C, c, ld(m, dyrow + ox * C + c, full), m, full, K, rowcheck, 0);
    for (; ox < g->wo; ox++)
        bw_px(acc, rows, ky0, ky1, ox * S - pl, ws, C, c, ld(m, dyrow + ox * C + c, full), m, full, K, rowcheck, 1);
    UNROLL for (int i = 0; i < K * K; i++) {
        double *t = tot + i * totstride;
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(acc[i]));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i]), 1)));
        _mm512_storeu_pd(t, _mm512_add_pd(_mm512_loadu_pd(t), lo));
        _mm512_storeu_pd(t + 8, _mm512_add_pd(_mm512_loadu_pd(t + 8), hi));
    }
}

AI void bw_blocks(const geo *g, long N, const float *x, const float *dy, float *dw, long b0, long b1, const int K,
                  const int S)
{
    const long C = g->C, hs = g->hs, ws = g->ws;
    double tot[BW_TOT];
    long oxa, oxb;
    interior_cols(g, &oxa, &oxb);
    for (long gb = b0; gb < b1; gb += BW_GROUP) {
        long gn = b1 - gb < BW_GROUP ? b1 - gb : BW_GROUP;
        long totstride = gn * 16;
        for (long i = 0; i < K * K * totstride; i++) tot[i] = 0.0;
        for (long n = 0; n < N; n++) {
            for (long oy = 0; oy < g->ho; oy++) {
                long iy0 = oy * S - g->pt;
                int ky0 = iy0 < 0 ? (int)-iy0 : 0;
                int ky1 = iy0 + K > hs ? (int)(hs - iy0) : K;
                if (ky1 <= ky0) continue;
                const float *rows[5] = {NULL, NULL, NULL, NULL, NULL};
                for (int ky = ky0; ky < ky1; ky++) rows[ky] = x + (n * hs + iy0 + ky) * ws * C;
                const float *dyrow = dy + (n * g->ho + oy) * g->wo * C;
                int rowcheck = ky0 > 0 || ky1 < K;
                for (long b = 0; b < gn; b++) {
                    long c = (gb + b) * 16;
                    double *t = tot + b * 16;
                    if (c + 16 <= C) {
                        if (rowcheck) bw_row_blk(g, rows, ky0, ky1, dyrow, c, 0xFFFF, t, totstride, oxa, oxb, 1, K, S, 1);
                        else bw_row_blk(g, rows, ky0, ky1, dyrow, c, 0xFFFF, t, totstride, oxa, oxb, 1, K, S, 0);
                    } else {
                        if (rowcheck) bw_row_blk(g, rows, ky0, ky1, dyrow, c, g->tail, t, totstride, oxa, oxb, 0, K, S, 1);
                        else bw_row_blk(g, rows, ky0, ky1, dyrow, c, g->tail, t, totstride, oxa, oxb, 0, K, S, 0);
                    }
                }
            }
        }
        for (int i = 0; i < K * K; i++)
            for (long b = 0; b < gn; b++) {
                long c = (gb + b) * 16, cn = C - c < 16 ? C - c : 16;
                const double *t = tot + i * totstride + b * 16;
                float *d = dw + i * C + c;
                for (long l = 0; l < cn; l++) d[l] += (float)t[l];
            }
    }
}

/* Blocks are 16-channel blocks [b0, b1).  The caller guarantees kh == kw in
 * {3, 5} and stride in {1, 2}. */
void k_dw_bwd_weight_avx512(const k_conv_shape *s, const float *x, const float *dy, float *dw, long b0, long b1)
{
    geo g;
    geo_init(&g, s);
    g.hs = s->h;
    g.ws = s->w;
    g.ho = s->ho;
    g.wo = s->wo;
    g.pt = s->pad_t;
    g.pl = s->pad_l;
    if (g.K == 3 && g.S == 1) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 3, 1);
    else if (g.K == 3 && g.S == 2) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 3, 2);
    else if (g.K == 5 && g.S == 1) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 5, 1);
    else if (g.K == 5 && g.S == 2) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 5, 2);
}
