/* SIMD paths of the depthwise convolution and of the SiLU / sigmoid
 * activation kernels.
 *
 * This file is compiled twice: as itself with AVX-512 flags (16 lanes,
 * AVX-512F instructions only, so valid wherever k_simd_detect() reports
 * K_SIMD_AVX512), and through dwconv_avx2.c, which defines DW_AVX2 and
 * includes it, with AVX2 + FMA flags (8 lanes).  The few vector operations
 * are macros below; everything else is shared.
 *
 * Channels are the vector lanes; a channel count that is not a multiple of
 * the lane count ends in one masked block.  The entry points work on a range
 * of rows (forward, backward data) or of channel blocks (backward weight)
 * chosen by the caller in dwconv.c, which owns threading and the choice of
 * path.  k_act_* serves act.c. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"
#include "kernels_internal.h"

#if defined(DW_AVX2)
typedef __m256 vf;
typedef __m256i vmask;
#define VL 8
#define DW_NAME(f) f##_avx2
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_MLOAD(m, p) _mm256_maskload_ps(p, m)
#define V_MSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#define V_ZERO() _mm256_setzero_ps()
#define V_SET1(v) _mm256_set1_ps(v)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_MIN(a, b) _mm256_min_ps(a, b)
#define v_exp k_exp256
#define v_silu k_silu256
#define v_silu_grad k_silu_grad256
#define v_sigmoid k_sigmoid256
#define V_FULL _mm256_set1_epi32(-1)
static inline vmask v_tail(long n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
/* t[0..VL) += v, widened to double */
static inline void v_acc_double(double *t, vf v)
{
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    _mm256_storeu_pd(t, _mm256_add_pd(_mm256_loadu_pd(t), lo));
    _mm256_storeu_pd(t + 4, _mm256_add_pd(_mm256_loadu_pd(t + 4), hi));
}
#else
typedef __m512 vf;
typedef __mmask16 vmask;
#define VL 16
#define DW_NAME(f) f##_avx512
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_MLOAD(m, p) _mm512_maskz_loadu_ps(m, p)
#define V_MSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define V_ZERO() _mm512_setzero_ps()
#define V_SET1(v) _mm512_set1_ps(v)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_MIN(a, b) _mm512_min_ps(a, b)
#define v_exp k_exp512
#define v_silu k_silu512
#define v_silu_grad k_silu_grad512
#define v_sigmoid k_sigmoid512
#define V_FULL ((__mmask16)0xFFFF)
static inline vmask v_tail(long n) { return (vmask)((1u << n) - 1u); }
static inline void v_acc_double(double *t, vf v)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    _mm512_storeu_pd(t, _mm512_add_pd(_mm512_loadu_pd(t), lo));
    _mm512_storeu_pd(t + 8, _mm512_add_pd(_mm512_loadu_pd(t + 8), hi));
}
#endif

void DW_NAME(k_dw_fwd_rows)(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                            long r0, long r1);
void DW_NAME(k_dw_bwd_data_rows)(const k_conv_shape *s, const float *dy, const float *w, float *dx, long r0,
                                 long r1);
void DW_NAME(k_dw_bwd_weight)(const k_conv_shape *s, const float *x, const float *dy, float *dw, long c0, long c1);
void DW_NAME(k_act)(int op, long n, const float *x, const float *dy, float *y);


/* ---- activations ------------------------------------------------------------
 * The vector exp, SiLU, its gradient and sigmoid come from kernels_internal.h
 * so that the fused epilogue here matches the GEMM epilogue bit for bit and
 * the batch-norm kernels (bn_avx512.c) share the same SiLU.  Sigmoid is
 * 1 / (1 + e^-x) and SiLU x / (1 + e^-x): for very negative x, e^-x = +inf
 * gives exactly 0 (SiLU: -0), never NaN. */

void DW_NAME(k_act)(int op, long n, const float *x, const float *dy, float *y)
{
    long i = 0;
    for (; i + VL <= n; i += VL) {
        vf v = V_LOADU(x + i);
        if (op == 0) v = v_silu(v);
        else if (op == 1) v = v_silu_grad(v, V_LOADU(dy + i));
        else v = v_sigmoid(v);
        V_STOREU(y + i, v);
    }
    if (i < n) {
        vmask m = v_tail(n - i);
        vf v = V_MLOAD(m, x + i);
        if (op == 0) v = v_silu(v);
        else if (op == 1) v = v_silu_grad(v, V_MLOAD(m, dy + i));
        else v = v_sigmoid(v);
        V_MSTORE(y + i, m, v);
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
    long cfull;             /* channels covered by full VL-lane blocks */
    long src_n, dst_n;      /* floats in the whole source and destination (bounds of the prefetches) */
    vmask tail;             /* lanes of the last, partial block */
} geo;

AI vf ld(vmask m, const float *p, const int full)
{
    return full ? V_LOADU(p) : V_MLOAD(m, p);
}

AI void st(vmask m, float *p, vf v, const int full)
{
    if (full) V_STOREU(p, v);
    else V_MSTORE(p, m, v);
}

AI vf epi(const geo *g, vf v, long c, long r, vmask m, const int full)
{
    /* separate multiply and add (no FMA), as the GEMM epilogue does */
    if (g->scale) v = V_MUL(v, ld(m, g->scale + c, full));
    if (g->bias) v = V_ADD(v, ld(m, g->bias + c, full));
    if (g->act == K_ACT_SILU) v = v_silu(v);
    else if (g->act == K_ACT_SIGMOID) v = v_sigmoid(v);
    if (g->res) v = V_ADD(v, ld(m, g->res + r * g->ldr + c, full));
    return v;
}

/* The epilogue runs as a second pass over the n outputs of one channel block
 * just written (still in L1), so that it is compiled once rather than inside
 * every tile shape. */
static void epi_pass(const geo *g, float *yrow, long r, long n, long c, vmask m, int full)
{
    const long C = g->C;
    if (!g->scale && !g->bias && !g->res && g->act == K_ACT_NONE) return;
    if (full)
        for (long i = 0; i < n; i++) st(m, yrow + i * C + c, epi(g, ld(m, yrow + i * C + c, 1), c, r + i, m, 1), 1);
    else
        for (long i = 0; i < n; i++) st(m, yrow + i * C + c, epi(g, ld(m, yrow + i * C + c, 0), c, r + i, m, 0), 0);
}

static void geo_init(geo *g, const k_conv_shape *s)
{
    g->C = s->ci;
    g->K = s->kh;
    g->S = s->stride;
    g->cfull = s->ci - s->ci % VL;
    g->tail = v_tail(s->ci % VL);
    g->scale = g->bias = g->res = NULL;
    g->ldr = 0;
    g->act = K_ACT_NONE;
    g->src_n = g->dst_n = 0; /* no prefetches unless the caller sets them */
}

/* Source of one channel block during a row sweep: rows[i] points at the
 * block's first channel in source row i (pixels xs floats apart), the taps of
 * kernel row i at wr[i] + kx*wsx. */
typedef struct blk {
    const float *rows[5];
    const float *wr[5];
    int nky;
    long xs, wsx;
} blk;

/* T adjacent interior outputs of one channel block.  Each loaded source
 * vector feeds every output whose window covers it, and the K weights of a
 * kernel row stay in registers.  Summation order per output is ky then kx
 * ascending, the same as border_blk, so an output's value does not depend on
 * whether it fell in a tile or on the border.  Outputs go to op + t*os; the
 * epilogue is applied afterwards by epi_pass. */
AI void tile(const blk *b, long ix0, float *op, long os, vmask m, const int full, const int K, const int S,
             const int T)
{
    const long xs = b->xs, wsx = b->wsx;
    vf acc[8];
    UNROLL for (int t = 0; t < T; t++) acc[t] = V_ZERO();
    for (int i = 0; i < b->nky; i++) {
        const float *xp = b->rows[i] + ix0 * xs;
        const float *wp = b->wr[i];
        vf wv[5];
        UNROLL for (int kx = 0; kx < K; kx++) wv[kx] = ld(m, wp + kx * wsx, full);
        UNROLL for (int j = 0; j < (T - 1) * S + K; j++) {
            vf xv = ld(m, xp + j * xs, full);
            UNROLL for (int t = 0; t < T; t++) {
                const int kx = j - t * S;
                if (kx >= 0 && kx < K) acc[t] = V_FMA(xv, wv[kx], acc[t]);
            }
        }
    }
    UNROLL for (int t = 0; t < T; t++) st(m, op + t * os, acc[t], full);
}

/* One output pixel of one channel block, with bounds checks on the columns
 * (left and right borders).  Full blocks use plain loads and stores: on a
 * 12-pixel row the borders are a sixth of the outputs, and on AMD Zen 3 the
 * AVX2 masked forms made 12x12 and 24x24 maps 4-7 % slower.  The taps are
 * unrolled for the kernel size: on the 9- and 5-pixel rows of small-image
 * training the borders are two of every 5-9 outputs, and the rolled loops
 * took over a quarter of the forward time. */
AI void border_blk(const geo *g, const blk *b, long ox, float *op, vmask m, const int full, const int K)
{
    long ix0 = ox * g->S - g->pl;
    int kx0 = ix0 < 0 ? (int)-ix0 : 0;
    int kx1 = ix0 + K > g->ws ? (int)(g->ws - ix0) : K;
    vf acc = V_ZERO();
    UNROLL for (int i = 0; i < K; i++) {
        if (i >= b->nky) continue;
        const float *xr = b->rows[i] + ix0 * b->xs, *wr = b->wr[i];
        UNROLL for (int kx = 0; kx < K; kx++) {
            if (kx < kx0 || kx >= kx1) continue;
            acc = V_FMA(ld(m, xr + kx * b->xs, full), ld(m, wr + kx * b->wsx, full), acc);
        }
    }
    st(m, op, acc, full);
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

/* When C*4 is a multiple of 1 KiB, the pixels of one channel block fall into
 * at most four L1 sets, and the rows of a sweep evict each other before their
 * reuse (2-4x slower at C = 512, 1024, 1536).  Such blocks are first copied,
 * rows and taps, into a small dense buffer; the copy costs one pass over the
 * block's source rows. */
enum { DW_COPY_W = 128 };

static int want_copy(const geo *g) { return (g->C * 4) % 1024 == 0 && g->ws <= DW_COPY_W; }

static void blk_copy(const geo *g, blk *b, long c, vmask m, float *buf, float *wbuf, int K)
{
    const long C = g->C, ws = g->ws;
    const int full = c < g->cfull;
    for (int i = 0; i < b->nky; i++) {
        const float *src = b->rows[i];
        float *dst = buf + i * ws * VL;
        if (full)
            for (long p = 0; p < ws; p++) V_STOREU(dst + p * VL, V_LOADU(src + p * C));
        else
            for (long p = 0; p < ws; p++) V_STOREU(dst + p * VL, V_MLOAD(m, src + p * C));
        b->rows[i] = dst;
        for (int kx = 0; kx < K; kx++) V_STOREU(wbuf + (i * K + kx) * VL, ld(m, b->wr[i] + kx * b->wsx, full));
        b->wr[i] = wbuf + i * K * VL;
    }
    b->xs = VL;
    b->wsx = VL;
}

/* One channel block swept along the row: the weights and the lines of the
 * few source rows stay close at hand for the whole sweep. */
AI void row_blk(const geo *g, const blk *b, long oxa, long oxb, float *yrow, long rbase, long c, vmask m,
                const int full, const int K, const int S)
{
    const long C = g->C, pl = g->pl;
    float *o = yrow + c;
    long ox = 0;
    for (; ox < oxa; ox++) border_blk(g, b, ox, o + ox * C, m, full, K);
    /* the partial block (at most one per row) only gets single-pixel tiles:
     * wide tiles of masked loads are large code for little gain */
    if (full) {
        for (; ox + 8 <= oxb; ox += 8) tile(b, ox * S - pl, o + ox * C, C, m, full, K, S, 8);
        for (; ox + 4 <= oxb; ox += 4) tile(b, ox * S - pl, o + ox * C, C, m, full, K, S, 4);
    }
    for (; ox < oxb; ox++) tile(b, ox * S - pl, o + ox * C, C, m, full, K, S, 1);
    for (; ox < g->wo; ox++) border_blk(g, b, ox, o + ox * C, m, full, K);
    epi_pass(g, yrow, rbase, g->wo, c, m, full);
}

/* Lines of floats [i, i + n) of the tensor at p (nt floats) toward L2.  On
 * the 9x9 and 5x5 maps of small-image
 * training a source row is a few KB at a stride of C floats per pixel, and
 * each channel-block sweep touches only 9-27 of its lines: the hardware
 * prefetchers do not pick that up, and at batch 64 (several MB per tensor,
 * out of L2) every line arrived at L3 latency, 3x slower than at batch 1.
 * Each row call therefore requests the rows the next call will read and
 * write (clipped to the tensor, so no pointer leaves it). */
enum { DW_PF_MAXW = 16 }; /* rows at most this many pixels wide are prefetched */

static void pf_span(const float *p, long i, long n, long nt)
{
    if (i < 0 || i >= nt) return;
    if (n > nt - i) n = nt - i;
    const char *c = (const char *)(p + i), *e = (const char *)(p + i + n);
    for (; c < e; c += 64) _mm_prefetch(c, _MM_HINT_T1);
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
    if (g->ws <= DW_PF_MAXW) {
        pf_span(g->src, (n * g->hs + iy0 + K) * g->ws * C, S * g->ws * C, g->src_n);
        pf_span(g->dst, (rbase + g->wo) * C, g->wo * C, g->dst_n);
    }
    long oxa, oxb;
    interior_cols(g, &oxa, &oxb);
    int copy = want_copy(g);
    vf buf_v[5 * DW_COPY_W], wbuf_v[25];
    for (long c = 0; c < C; c += VL) {
        int full = c < g->cfull;
        vmask m = full ? V_FULL : g->tail;
        blk b;
        b.nky = nky;
        b.xs = C;
        b.wsx = g->wsx;
        for (int i = 0; i < nky; i++) {
            b.rows[i] = rows[i] + c;
            b.wr[i] = wr[i] + c;
        }
        if (copy) blk_copy(g, &b, c, m, (float *)buf_v, (float *)wbuf_v, K);
        if (full) row_blk(g, &b, oxa, oxb, yrow, rbase, c, m, 1, K, S);
        else row_blk(g, &b, oxa, oxb, yrow, rbase, c, m, 0, K, S);
    }
}

/* Two adjacent output rows of a 3x3 stride-1 correlation share two of their
 * four source rows: computing them together loads 4 rows instead of 6 per
 * pair.  Each output still sums ky then kx ascending with the same FMAs as
 * tile(), so pairing (which depends on where a thread's rows start) never
 * changes a result.  b holds the 4 source rows and the 3 kernel rows. */
AI void tile2(const blk *b, long ix0, float *op, long os, long wo, vmask m, const int full, const int T)
{
    const long xs = b->xs, wsx = b->wsx;
    vf a0[8], a1[8], wv[3][3];
    UNROLL for (int ky = 0; ky < 3; ky++) UNROLL for (int kx = 0; kx < 3; kx++) wv[ky][kx] =
        ld(m, b->wr[ky] + kx * wsx, full);
    UNROLL for (int t = 0; t < T; t++) a0[t] = a1[t] = V_ZERO();
    UNROLL for (int i = 0; i < 4; i++) {
        const float *xp = b->rows[i] + ix0 * xs;
        UNROLL for (int j = 0; j < T + 2; j++) {
            vf xv = ld(m, xp + j * xs, full);
            UNROLL for (int t = 0; t < T; t++) {
                const int kx = j - t;
                if (kx < 0 || kx >= 3) continue;
                if (i < 3) a0[t] = V_FMA(xv, wv[i][kx], a0[t]);
                if (i >= 1) a1[t] = V_FMA(xv, wv[i - 1][kx], a1[t]);
            }
        }
    }
    UNROLL for (int t = 0; t < T; t++) {
        st(m, op + t * os, a0[t], full);
        st(m, op + (wo + t) * os, a1[t], full);
    }
}

AI void row2_blk(const geo *g, const blk *b2, long oxa, long oxb, float *yrow, long rbase, long c, vmask m,
                 const int full)
{
    const long C = g->C, pl = g->pl, wo = g->wo;
    float *o = yrow + c;
    /* the two rows as single-row sources, for the border columns */
    blk r0 = *b2, r1 = *b2;
    r0.nky = r1.nky = 3;
    for (int i = 0; i < 3; i++) r1.rows[i] = b2->rows[i + 1];
    long ox = 0;
    for (; ox < oxa; ox++) {
        border_blk(g, &r0, ox, o + ox * C, m, full, 3);
        border_blk(g, &r1, ox, o + (wo + ox) * C, m, full, 3);
    }
    /* 2 x 8 accumulators plus 9 weights only fit the 32 AVX-512 registers;
     * the partial block gets single-pixel tiles only, as in row_blk */
    if (full && VL == 16)
        for (; ox + 8 <= oxb; ox += 8) tile2(b2, ox - pl, o + ox * C, C, wo, m, full, 8);
    if (full)
        for (; ox + 4 <= oxb; ox += 4) tile2(b2, ox - pl, o + ox * C, C, wo, m, full, 4);
    for (; ox < oxb; ox++) tile2(b2, ox - pl, o + ox * C, C, wo, m, full, 1);
    for (; ox < wo; ox++) {
        border_blk(g, &r0, ox, o + ox * C, m, full, 3);
        border_blk(g, &r1, ox, o + (wo + ox) * C, m, full, 3);
    }
    epi_pass(g, yrow, rbase, 2 * wo, c, m, full);
}

/* Rows oy and oy + 1 of image n, both with all three source rows inside. */
static void conv_row2(const geo *g, long n, long oy)
{
    const long C = g->C;
    long iy0 = oy - g->pt;
    long rbase = (n * g->ho + oy) * g->wo;
    float *yrow = g->dst + rbase * C;
    if (g->ws <= DW_PF_MAXW) {
        pf_span(g->src, (n * g->hs + iy0 + 4) * g->ws * C, 2 * g->ws * C, g->src_n);
        pf_span(g->dst, (rbase + 2 * g->wo) * C, 2 * g->wo * C, g->dst_n);
    }
    long oxa, oxb;
    interior_cols(g, &oxa, &oxb);
    int copy = want_copy(g);
    vf buf_v[5 * DW_COPY_W], wbuf_v[25];
    for (long c = 0; c < C; c += VL) {
        int full = c < g->cfull;
        vmask m = full ? V_FULL : g->tail;
        blk b;
        b.nky = 4;
        b.xs = C;
        b.wsx = g->wsx;
        for (int i = 0; i < 4; i++) b.rows[i] = g->src + (n * g->hs + iy0 + i) * g->ws * C + c;
        for (int i = 0; i < 3; i++) b.wr[i] = g->wb + i * g->wsy + c;
        if (copy) {
            /* blk_copy copies nky rows and taps of nky kernel rows: do the
             * three kernel rows with the first three source rows, then the
             * fourth source row alone */
            b.nky = 3;
            const float *last = b.rows[3];
            blk_copy(g, &b, c, m, (float *)buf_v, (float *)wbuf_v, 3);
            float *dst = (float *)buf_v + 3 * g->ws * VL;
            for (long p = 0; p < g->ws; p++) V_STOREU(dst + p * VL, ld(m, last + p * C, full));
            b.rows[3] = dst;
            b.nky = 4;
        }
        if (full) row2_blk(g, &b, oxa, oxb, yrow, rbase, c, m, 1);
        else row2_blk(g, &b, oxa, oxb, yrow, rbase, c, m, 0);
    }
}

/* ---- 3x3 stride 1 on small maps: a zero-padded band -------------------------
 * On maps at most DWS_MAXW pixels wide (the 4x4 .. 10x10 maps of small-image
 * training, V2-S's 7x7 .. 14x14) the row sweep above spent most of its time
 * on border columns and per-row set-up (a 4- or 5-pixel row is all border)
 * and read each pixel's VL channels at a stride of C floats.  Here a band of
 * source rows of one channel block is first copied into a dense buffer with
 * zeros wherever the window leaves the map, so every output is an interior
 * one: tiles of T pixels with the 9 taps in registers, the epilogue applied
 * before the store.  1.05-1.75x faster on those maps (one thread, AVX2,
 * docs/PERFORMANCE.md, session 13).
 * Same bits as the sweep: every output sums its taps ky then kx ascending by
 * FMA from +0 (tile()'s order); a padded tap adds 0 * w = +-0, which leaves
 * the sum unchanged (it can only be -0 if it is exactly 0, and +0 + -0 = +0),
 * as long as the weights are finite. */
enum {
    DWS_MAXW = 32,           /* widest source map taking this path */
    DWS_BUF = 8192,          /* floats of the padded band: 32 KiB */
    DWS_IMG = 1024 * 1024    /* largest source image (all channels), bytes */
};

/* Stride 1 only: at stride 2 the band was 3-18 % slower.  Larger images
 * (24x24x960: 2.2 MB) run slower in bands than in the row-pair sweep, whose
 * four source rows stay in L2 while the channel blocks pass over them.  A
 * band row is wo + 2 pixels (the output row plus the two halo columns). */
static int use_band(const geo *g)
{
    return !k_dw_test_no_band && g->K == 3 && g->S == 1 && g->ws <= DWS_MAXW && (g->wo + 2) * 3 * VL <= DWS_BUF &&
           (double)g->hs * g->ws * g->C * sizeof(float) <= DWS_IMG;
}

/* Source rows br0 - pt .. br0 - pt + nbr - 1 of image n, channel block c,
 * into buf: WB pixels of VL floats per row, source column ix at band column
 * ix + pl, zeros wherever the row or column lies outside the map. */
static void band_fill(const geo *g, long n, long br0, long nbr, long WB, long c, vmask m, int full, float *buf)
{
    const long C = g->C, q0 = g->pl, q1 = g->pl + g->ws < WB ? g->pl + g->ws : WB;
    for (long i = 0; i < nbr; i++) {
        long iy = br0 + i - g->pt;
        float *b = buf + i * WB * VL;
        if (iy < 0 || iy >= g->hs) {
            for (long q = 0; q < WB; q++) V_STOREU(b + q * VL, V_ZERO());
            continue;
        }
        const float *xr = g->src + (n * g->hs + iy) * g->ws * C + c;
        for (long q = 0; q < q0; q++) V_STOREU(b + q * VL, V_ZERO());
        if (full)
            for (long q = q0; q < q1; q++) V_STOREU(b + q * VL, V_LOADU(xr + (q - q0) * C));
        else
            for (long q = q0; q < q1; q++) V_STOREU(b + q * VL, V_MLOAD(m, xr + (q - q0) * C));
        for (long q = q1; q < WB; q++) V_STOREU(b + q * VL, V_ZERO());
    }
}

/* Output rows per band: what DWS_BUF holds (two halo rows). */
static long band_maxr(const geo *g) { return (long)DWS_BUF / ((g->wo + 2) * VL) - 2; }

/* T adjacent outputs of one channel block from the band: bp is the tile's
 * first source pixel in band row 0 (pixels VL floats apart, rows WB pixels
 * apart); outputs at op + t*C, output pixel index r + t. */
AI void band_tile(const geo *g, const float *bp, long WB, const vf *wv, float *op, long r, long c, vmask m,
                  const int full, const int T)
{
    vf acc[8];
    UNROLL for (int t = 0; t < T; t++) acc[t] = V_ZERO();
    UNROLL for (int ky = 0; ky < 3; ky++) {
        const float *xp = bp + ky * WB * VL;
        UNROLL for (int j = 0; j < T + 2; j++) {
            vf xv = V_LOADU(xp + j * VL);
            UNROLL for (int t = 0; t < T; t++) {
                const int kx = j - t;
                if (kx >= 0 && kx < 3) acc[t] = V_FMA(xv, wv[ky * 3 + kx], acc[t]);
            }
        }
    }
    UNROLL for (int t = 0; t < T; t++) st(m, op + t * g->C, epi(g, acc[t], c, r + t, m, full), full);
}

/* Output rows [oy0, oy1) of image n; the band holds their source rows. */
static void band_rows(const geo *g, long n, long oy0, long oy1, long c0, long c1, float *buf)
{
    const long C = g->C, wo = g->wo, WB = wo + 2, nbr = oy1 - oy0 + 2;
    for (long c = c0; c < c1; c += VL) {
        const int full = c < g->cfull;
        const vmask m = full ? V_FULL : g->tail;
        band_fill(g, n, oy0, nbr, WB, c, m, full, buf);
        vf wv[9];
        UNROLL for (int ky = 0; ky < 3; ky++) UNROLL for (int kx = 0; kx < 3; kx++) wv[ky * 3 + kx] =
            ld(m, g->wb + ky * g->wsy + kx * g->wsx + c, full);
        for (long oy = oy0; oy < oy1; oy++) {
            const float *bp = buf + (oy - oy0) * WB * VL;
            const long r = (n * g->ho + oy) * wo;
            float *o = g->dst + r * C + c;
            long ox = 0;
            /* 8 accumulators + 9 taps only fit the 32 AVX-512 registers */
            if (VL == 16)
                for (; ox + 8 <= wo; ox += 8) band_tile(g, bp + ox * VL, WB, wv, o + ox * C, r + ox, c, m, full, 8);
            for (; ox + 4 <= wo; ox += 4) band_tile(g, bp + ox * VL, WB, wv, o + ox * C, r + ox, c, m, full, 4);
            if (ox + 2 <= wo) {
                band_tile(g, bp + ox * VL, WB, wv, o + ox * C, r + ox, c, m, full, 2);
                ox += 2;
            }
            if (ox < wo) band_tile(g, bp + ox * VL, WB, wv, o + ox * C, r + ox, c, m, full, 1);
        }
    }
}

/* Rows [r0, r1) (n*ho + oy) in bands of whole rows of one image, channels
 * [c0, c1) (c0 a multiple of VL). */
static void band_conv(const geo *g, long r0, long r1, long c0, long c1)
{
    vf buf_v[DWS_BUF / VL];
    float *buf = (float *)buf_v;
    const long maxr = band_maxr(g);
    for (long r = r0; r < r1;) {
        long n = r / g->ho, oy = r % g->ho, len = g->ho - oy;
        if (len > r1 - r) len = r1 - r;
        if (len > maxr) len = maxr;
        band_rows(g, n, oy, oy + len, c0, c1, buf);
        r += len;
    }
}

static void conv_rows(const geo *g, long r0, long r1)
{
    if (use_band(g)) {
        band_conv(g, r0, r1, 0, g->C);
        return;
    }
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

/* The forward's geometry: x [n][h][w][c] into y, weights [kh][kw][c]. */
static void geo_fwd(geo *g, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep)
{
    geo_init(g, s);
    g->src = x;
    g->hs = s->h;
    g->ws = s->w;
    g->ho = s->ho;
    g->wo = s->wo;
    g->pt = s->pad_t;
    g->pl = s->pad_l;
    g->wb = w;
    g->wsy = (long)s->kw * s->ci;
    g->wsx = s->ci;
    g->dst = y;
    g->src_n = (long)s->n * s->h * s->w * s->ci;
    g->dst_n = (long)s->n * s->ho * s->wo * s->ci;
    if (ep) {
        g->scale = ep->scale;
        g->bias = ep->bias;
        g->res = ep->residual;
        g->ldr = ep->ldr;
        g->act = ep->act;
    }
}

/* Rows are output rows n*ho + oy.  The caller guarantees kh == kw in {3, 5}
 * and stride in {1, 2}. */
void DW_NAME(k_dw_fwd_rows)(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                            long r0, long r1)
{
    geo g;
    geo_fwd(&g, s, x, w, y, ep);
    conv_rows(&g, r0, r1);
}

/* Whether the forward of s takes the band path (which k_dw_fwd_chans needs). */
int DW_NAME(k_dw_fwd_band)(const k_conv_shape *s)
{
    geo g;
    geo_fwd(&g, s, NULL, NULL, NULL, NULL);
    return use_band(&g);
}

/* All output rows, channels [c0, c1) (c0 a multiple of the vector width):
 * for small maps, where a split by rows leaves each thread a row or two and
 * every row unit refills a 3-row band, threads split the channels instead.
 * Each output gets the same taps in the same order as from
 * k_dw_fwd_rows. */
void DW_NAME(k_dw_fwd_chans)(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                             long c0, long c1)
{
    geo g;
    geo_fwd(&g, s, x, w, y, ep);
    band_conv(&g, 0, (long)s->n * s->ho, c0, c1);
}

/* Transposed gather for stride > 1: input pixel (iy, ix) collects dy(oy, ox)
 * over the taps with iy + pt - ky = oy*S, i.e. ky in one residue class mod S. */
static void tconv_row(const k_conv_shape *s, const float *dy, const float *w, float *dx, long n, long iy)
{
    const long C = s->ci, S = s->stride, K = s->kh;
    const long cfull = C - C % VL;
    const vmask tail = v_tail(C % VL);
    const float *rows[16], *wr[16];
    int nky = 0;
    long a = iy + s->pad_t, r0 = -1;
    for (long ky = 0; ky < K; ky++) {
        long t = a - ky;
        if (t < 0 || t % S != 0 || t / S >= s->ho) continue;
        if (r0 < 0) r0 = n * s->ho + t / S;
        rows[nky] = dy + (n * s->ho + t / S) * (long)s->wo * C;
        wr[nky] = w + ky * K * C;
        nky++;
    }
    float *xrow = dx + (n * s->h + iy) * (long)s->w * C;
    /* the next dx row, and the dy row after the last one read (see pf_span) */
    if (s->w <= DW_PF_MAXW) {
        pf_span(dx, (n * s->h + iy + 1) * s->w * C, s->w * C, (long)s->n * s->h * s->w * C);
        if (r0 >= 0) pf_span(dy, (r0 + 1) * s->wo * C, s->wo * C, (long)s->n * s->ho * s->wo * C);
    }
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
        for (; c < cfull; c += VL) {
            vf acc = V_ZERO();
            for (int i = 0; i < nky; i++)
                for (int j = 0; j < nkx; j++)
                    acc = V_FMA(V_LOADU(rows[i] + ox[j] * C + c), V_LOADU(wr[i] + kxs[j] * C + c), acc);
            V_STOREU(o + c, acc);
        }
        if (c < C) {
            vf acc = V_ZERO();
            for (int i = 0; i < nky; i++)
                for (int j = 0; j < nkx; j++)
                    acc = V_FMA(V_MLOAD(tail, rows[i] + ox[j] * C + c), V_MLOAD(tail, wr[i] + kxs[j] * C + c), acc);
            V_MSTORE(o + c, tail, acc);
        }
    }
}

/* Rows are input rows n*h + iy of dx. */
void DW_NAME(k_dw_bwd_data_rows)(const k_conv_shape *s, const float *dy, const float *w, float *dx, long r0, long r1)
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
    g.src_n = (long)s->n * s->ho * s->wo * s->ci;
    g.dst_n = (long)s->n * s->h * s->w * s->ci;
    conv_rows(&g, r0, r1);
}

/* ---- backward weight --------------------------------------------------------
 * Each call owns whole channel blocks, so nothing is shared between
 * threads.  Per block the K*K tap sums of one output row live in registers;
 * row sums are added in row order into double totals, so the result depends
 * only on the shape, never on how blocks were distributed. */

enum { BW_GROUP = 8, BW_TOT = 4096 };

/* Interior pixel: every column of the window is inside the source. */
/* rows[ky] point at the block's first channel of source row ky, pixels xs
 * floats apart. */
AI void bw_px(vf *acc, const float *const *rows, long xs, int ky0, int ky1, long ix0, vf dv, vmask m, const int full,
              const int K, const int rowcheck)
{
    UNROLL for (int ky = 0; ky < K; ky++) {
        if (rowcheck && (ky < ky0 || ky >= ky1)) continue;
        const float *xr = rows[ky] + ix0 * xs;
        UNROLL for (int kx = 0; kx < K; kx++) acc[ky * K + kx] = V_FMA(ld(m, xr + kx * xs, full), dv, acc[ky * K + kx]);
    }
}

/* Border columns [ox0, ox1) with bounds checks, on accumulators in memory:
 * only a column or two per row, so they need no unrolled code. */
static void bw_border(vf *acc, int K, int S, const float *const *rows, long xs, int ky0, int ky1, long ox0, long ox1,
                      long pl, long ws, const float *dyp, long C, vmask m)
{
    for (long ox = ox0; ox < ox1; ox++) {
        vf dv = V_MLOAD(m, dyp + ox * C);
        long ix0 = ox * S - pl;
        for (int ky = ky0; ky < ky1; ky++)
            for (int kx = 0; kx < K; kx++) {
                long ix = ix0 + kx;
                if (ix < 0 || ix >= ws) continue;
                acc[ky * K + kx] = V_FMA(V_MLOAD(m, rows[ky] + ix * xs), dv, acc[ky * K + kx]);
            }
    }
}

/* A border column: the taps whose source column lies outside are skipped,
 * as in bw_border, but on the accumulators in registers. */
AI void bw_px_edge(vf *acc, const float *const *rows, long xs, int ky0, int ky1, long ix0, long ws, vf dv, vmask m,
                   const int full, const int K)
{
    UNROLL for (int ky = 0; ky < K; ky++) {
        if (ky < ky0 || ky >= ky1) continue;
        const float *xr = rows[ky] + ix0 * xs;
        UNROLL for (int kx = 0; kx < K; kx++) {
            if (ix0 + kx < 0 || ix0 + kx >= ws) continue;
            acc[ky * K + kx] = V_FMA(ld(m, xr + kx * xs, full), dv, acc[ky * K + kx]);
        }
    }
}

/* One output row of one channel block; taps are summed in ox order.  The
 * accumulators stay in registers for the border columns too: on the 9- and
 * 5-pixel rows of small-image training, moving them through memory for the
 * borders (and zeroing that memory) cost as much as the interior. */
AI void bw_row_blk(const geo *g, const float *const *rows, long xs, int ky0, int ky1, const float *dyp, vmask m,
                   double *tot, long totstride, long oxa, long oxb, const int full, const int K, const int S,
                   const int rowcheck)
{
    const long C = g->C, pl = g->pl;
    vf acc[25];
    UNROLL for (int i = 0; i < K * K; i++) acc[i] = V_ZERO();
    for (long ox = 0; ox < oxa; ox++)
        bw_px_edge(acc, rows, xs, ky0, ky1, ox * S - pl, g->ws, ld(m, dyp + ox * C, full), m, full, K);
    for (long ox = oxa; ox < oxb; ox++)
        bw_px(acc, rows, xs, ky0, ky1, ox * S - pl, ld(m, dyp + ox * C, full), m, full, K, rowcheck);
    for (long ox = oxb; ox < g->wo; ox++)
        bw_px_edge(acc, rows, xs, ky0, ky1, ox * S - pl, g->ws, ld(m, dyp + ox * C, full), m, full, K);
    UNROLL for (int i = 0; i < K * K; i++) v_acc_double(tot + i * totstride, acc[i]);
}

/* dw[tap][c] += the double totals of taps blocks gb .. gb + gn - 1 (tot holds
 * tap i of block b at i * totstride + b * VL), rounded once to float. */
static void bw_flush(const double *tot, long totstride, int taps, long gb, long gn, long C, float *dw)
{
    for (int i = 0; i < taps; i++)
        for (long b = 0; b < gn; b++) {
            long c = (gb + b) * VL, cn = C - c < VL ? C - c : VL;
            const double *t = tot + i * totstride + b * VL;
            float *d = dw + i * C + c;
            for (long l = 0; l < cn; l++) d[l] += (float)t[l];
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
        long totstride = gn * VL;
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
                /* the group's lines of the next output row and its new source
                 * rows (see pf_span) */
                if (ws <= DW_PF_MAXW) {
                    const long nxi = (n * hs + iy0 + K) * ws * C + gb * VL, ndi = (n * g->ho + oy + 1) * g->wo * C + gb * VL;
                    for (long p = 0; p < S * ws; p++) pf_span(x, nxi + p * C, gn * VL, N * hs * ws * C);
                    for (long p = 0; p < g->wo; p++) pf_span(dy, ndi + p * C, gn * VL, N * g->ho * g->wo * C);
                }
                for (long b = 0; b < gn; b++) {
                    long c = (gb + b) * VL;
                    double *t = tot + b * VL;
                    const float *rr[5] = {NULL, NULL, NULL, NULL, NULL};
                    for (int ky = ky0; ky < ky1; ky++) rr[ky] = rows[ky] + c;
                    if (c + VL <= C) {
                        const float *dyp = dyrow + c;
                        if (rowcheck) bw_row_blk(g, rr, C, ky0, ky1, dyp, V_FULL, t, totstride, oxa, oxb, 1, K, S, 1);
                        else bw_row_blk(g, rr, C, ky0, ky1, dyp, V_FULL, t, totstride, oxa, oxb, 1, K, S, 0);
                    } else {
                        /* the partial block takes the bounds-checked loop for the
                         * whole row: unrolled masked code is large for little gain */
                        vf mem[25];
                        for (int i = 0; i < K * K; i++) mem[i] = V_ZERO();
                        bw_border(mem, K, S, rr, C, ky0, ky1, 0, g->wo, g->pl, ws, dyrow + c, C, g->tail);
                        for (int i = 0; i < K * K; i++) v_acc_double(t + i * totstride, mem[i]);
                    }
                }
            }
        }
        bw_flush(tot, totstride, K * K, gb, gn, C, dw);
    }
}

/* The weight gradient on the maps of use_band(): per channel block the
 * image's zero-padded band (band_fill), so no column or row needs a bounds
 * check, then per output row the 9 tap sums in registers, added into the
 * double totals row by row.  The same sums in the same order as bw_blocks
 * (per row, ox ascending; rows n, oy ascending; a padded tap adds
 * 0 * dy = +-0), so the same bits as long as dy is finite. */
static void bw_band(const geo *g, long N, const float *dy, float *dw, long b0, long b1)
{
    const long C = g->C, wo = g->wo, ho = g->ho, WB = wo + 2, maxr = band_maxr(g);
    vf buf_v[DWS_BUF / VL];
    float *buf = (float *)buf_v;
    double tot[9 * BW_GROUP * VL];
    for (long gb = b0; gb < b1; gb += BW_GROUP) {
        long gn = b1 - gb < BW_GROUP ? b1 - gb : BW_GROUP;
        long totstride = gn * VL;
        for (long i = 0; i < 9 * totstride; i++) tot[i] = 0.0;
        for (long n = 0; n < N; n++)
            for (long oy0 = 0; oy0 < ho; oy0 += maxr) {
                long len = ho - oy0 < maxr ? ho - oy0 : maxr;
                for (long b = 0; b < gn; b++) {
                    const long c = (gb + b) * VL;
                    const int full = c + VL <= C;
                    const vmask m = full ? V_FULL : g->tail;
                    band_fill(g, n, oy0, len + 2, WB, c, m, full, buf);
                    for (long oy = oy0; oy < oy0 + len; oy++) {
                        const float *bp = buf + (oy - oy0) * WB * VL, *dyp = dy + (n * ho + oy) * wo * C + c;
                        vf acc[9];
                        UNROLL for (int k = 0; k < 9; k++) acc[k] = V_ZERO();
                        for (long ox = 0; ox < wo; ox++) {
                            vf dv = ld(m, dyp + ox * C, full);
                            UNROLL for (int ky = 0; ky < 3; ky++) UNROLL for (int kx = 0; kx < 3; kx++)
                                acc[ky * 3 + kx] = V_FMA(V_LOADU(bp + (ky * WB + ox + kx) * VL), dv, acc[ky * 3 + kx]);
                        }
                        UNROLL for (int k = 0; k < 9; k++) v_acc_double(tot + k * totstride + b * VL, acc[k]);
                    }
                }
            }
        bw_flush(tot, totstride, 9, gb, gn, C, dw);
    }
}

/* Channels [c0, c1), c0 a multiple of VL and c1 a multiple of VL or C.  The
 * caller guarantees kh == kw in {3, 5} and stride in {1, 2}. */
void DW_NAME(k_dw_bwd_weight)(const k_conv_shape *s, const float *x, const float *dy, float *dw, long c0, long c1)
{
    long b0 = c0 / VL, b1 = (c1 + VL - 1) / VL;
    geo g;
    geo_init(&g, s);
    g.hs = s->h;
    g.ws = s->w;
    g.ho = s->ho;
    g.wo = s->wo;
    g.pt = s->pad_t;
    g.pl = s->pad_l;
    g.src = x;
    if (use_band(&g)) bw_band(&g, s->n, dy, dw, b0, b1);
    else if (g.K == 3 && g.S == 1) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 3, 1);
    else if (g.K == 3 && g.S == 2) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 3, 2);
    else if (g.K == 5 && g.S == 1) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 5, 1);
    else if (g.K == 5 && g.S == 2) bw_blocks(&g, s->n, x, dy, dw, b0, b1, 5, 2);
}

/* ---- dense convolution with few input channels ---------------------------------
 * The stem (ci = 1 or 3, so K = kh*kw*ci = 9 or 27 products per output) lives
 * here because it shares this file's two builds, not its algorithm.  As a GEMM
 * it ran at 6-17 GFLOP/s: a 9-step K loop per tile does not pay for packing
 * and the tile write-out, and its weight gradient (M = K rows) was one thread.
 * Each output is still the GEMM's sum, so the bits are the same:
 *  - forward: y = sum over k ascending of col[k] * w[k] by FMA from zero, then
 *    the GEMM epilogue (scale, bias, activation, residual, in that order);
 *  - weight gradient: per K block of the GEMM's rule (k_gemm_kc), the block's
 *    rows summed by FMA from zero in row order, then added to dw.
 * col is the im2col row of conv.c's gather (zeros for padding), so padded taps
 * go through the same FMA with 0 as in the GEMM. */

enum { CS_PX = 4, CS_NV = 3, CS_KHMAX = K_CS_KMAX };

/* NP pixels x NV vectors of columns from c.  Pixel p's im2col row is KH runs
 * of `run` floats at rp[p * KH + kh] (in x itself for a pixel whose window is
 * inside, else in a gathered copy); k = kh * run + j ascending, as in the
 * GEMM.  The weights are pre-padded to whole vectors (wp, ldw floats per k);
 * outputs are rows of co floats, the last vector storing only its valid
 * lanes when it is partial.  An epilogue whose fields are all unset applies
 * nothing, as in the GEMM. */
AI void cs_tile(const float *const *rp, int KH, int run, const float *wp, long ldw, long c, float *y, long co,
                const k_epilogue *ep, const float *res, long ldr, const int NP, const int NV)
{
    vf acc[CS_PX][CS_NV];
    UNROLL for (int p = 0; p < NP; p++) UNROLL for (int j = 0; j < NV; j++) acc[p][j] = V_ZERO();
    const float *wk = wp + c;
    for (int kh = 0; kh < KH; kh++) {
        const float *r[CS_PX];
        UNROLL for (int p = 0; p < NP; p++) r[p] = rp[p * KH + kh];
        for (int t = 0; t < run; t++, wk += ldw) {
            vf wv[CS_NV];
            UNROLL for (int j = 0; j < NV; j++) wv[j] = V_LOADU(wk + j * VL);
            UNROLL for (int p = 0; p < NP; p++) {
                vf a = V_SET1(r[p][t]);
                UNROLL for (int j = 0; j < NV; j++) acc[p][j] = V_FMA(a, wv[j], acc[p][j]);
            }
        }
    }
    UNROLL for (int j = 0; j < NV; j++) {
        long cj = c + j * VL;
        int full = cj + VL <= co;
        vmask m = full ? V_FULL : v_tail(co - cj);
        UNROLL for (int p = 0; p < NP; p++) {
            vf v = acc[p][j];
            if (ep) {
                /* the order and operations of the GEMM epilogue (finish()) */
                if (ep->scale) v = V_MUL(v, ld(m, ep->scale + cj, full));
                if (ep->bias) v = V_ADD(v, ld(m, ep->bias + cj, full));
                if (ep->act == K_ACT_SILU) v = v_silu(v);
                else if (ep->act == K_ACT_SIGMOID) v = v_sigmoid(v);
                if (res) v = V_ADD(v, ld(m, res + p * ldr + cj, full));
            }
            st(m, y + p * co + cj, v, full);
        }
    }
}

AI void cs_cols(const float *const *rp, int KH, int run, const float *wp, long ldw, float *y, long co,
                const k_epilogue *ep, const float *res, long ldr, const int NP)
{
    for (long c = 0; c < co; c += CS_NV * VL) {
        int nv = (int)((co - c + VL - 1) / VL);
        if (nv >= 3) cs_tile(rp, KH, run, wp, ldw, c, y, co, ep, res, ldr, NP, 3);
        else if (nv == 2) cs_tile(rp, KH, run, wp, ldw, c, y, co, ep, res, ldr, NP, 2);
        else cs_tile(rp, KH, run, wp, ldw, c, y, co, ep, res, ldr, NP, 1);
    }
}

/* Output pixels [i0, i1) (n*ho*wo order).  gather writes the im2col rows of
 * pixels [i, i + n), K floats each (used for the pixels whose window
 * crosses the border).  K <= K_CS_KMAX, co <= K_CS_COMAX. */
void DW_NAME(k_convs_fwd)(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                          long i0, long i1, k_cs_gather_fn gather)
{
    const int KH = s->kh, run = s->kw * s->ci, K = KH * run;
    const long co = s->co, ldw = (co + VL - 1) / VL * VL, ci = s->ci;
    float colbuf[CS_PX * K_CS_KMAX];
    const float *rp[CS_PX * CS_KHMAX];
    /* weights padded with zeros to whole vectors: no masked loads in the k loop */
    vf wv_store[K_CS_KMAX * ((K_CS_COMAX + VL - 1) / VL)];
    float *wp = (float *)wv_store;
    for (int k = 0; k < K; k++)
        for (long c = 0; c < ldw; c++) wp[k * ldw + c] = c < co ? w[k * co + c] : 0.0f;
    const long res_ld = ep ? ep->ldr : 0;
    /* the pixel's coordinates, stepped rather than divided out per pixel */
    long ow = i0 % s->wo, oh = (i0 / s->wo) % s->ho, n = i0 / s->wo / s->ho;
    for (long i = i0; i < i1; i += CS_PX) {
        int np = i1 - i < CS_PX ? (int)(i1 - i) : CS_PX;
        for (int p = 0; p < np; p++) {
            long ih0 = oh * s->stride - s->pad_t, iw0 = ow * s->stride - s->pad_l;
            if (ih0 >= 0 && ih0 + KH <= s->h && iw0 >= 0 && iw0 + s->kw <= s->w) {
                for (int kh = 0; kh < KH; kh++) rp[p * KH + kh] = x + ((n * s->h + ih0 + kh) * s->w + iw0) * ci;
            } else {
                gather(s, x, i + p, 1, colbuf + p * K);
                for (int kh = 0; kh < KH; kh++) rp[p * KH + kh] = colbuf + p * K + kh * run;
            }
            if (++ow == s->wo) {
                ow = 0;
                if (++oh == s->ho) {
                    oh = 0;
                    n++;
                }
            }
        }
        const float *res = ep && ep->residual ? ep->residual + i * res_ld : NULL;
        if (np == CS_PX) {
            cs_cols(rp, KH, run, wp, ldw, y + i * co, co, ep, res, res_ld, CS_PX);
        } else {
            for (int p = 0; p < np; p++)
                cs_cols(rp + p * KH, KH, run, wp, ldw, y + (i + p) * co, co, ep, res ? res + p * res_ld : NULL, res_ld,
                        1);
        }
    }
}

/* G taps k0.. of one column vector c over rows [r0, r1). */
AI void cs_dw_group(const float *col, int K, int k0, const float *dy, long co, long c, long r0, long r1, float *dw,
                    const int G)
{
    const int full = c + VL <= co;
    const vmask m = full ? V_FULL : v_tail(co - c);
    vf acc[12];
    UNROLL for (int g = 0; g < G; g++) acc[g] = V_ZERO();
    for (long r = r0; r < r1; r++) {
        vf dv = ld(m, dy + r * co + c, full);
        const float *cr = col + r * K + k0;
        UNROLL for (int g = 0; g < G; g++) acc[g] = V_FMA(V_SET1(cr[g]), dv, acc[g]);
    }
    UNROLL for (int g = 0; g < G; g++) {
        float *d = dw + (long)(k0 + g) * co + c;
        st(m, d, V_ADD(ld(m, d, full), acc[g]), full);
    }
}

/* dw[K][co] += col[R][K]^T dy[R][co] for the column vectors [v0, v1), K blocks
 * of kcs rows as in the GEMM. */
void DW_NAME(k_convs_bwd_weight)(const float *col, long R, int K, const float *dy, long co, float *dw, long v0,
                                 long v1, long kcs)
{
    for (long r0 = 0; r0 < R; r0 += kcs) {
        long r1 = r0 + kcs < R ? r0 + kcs : R;
        for (long v = v0; v < v1; v++) {
            long c = v * VL;
            for (int k0 = 0; k0 < K; k0 += 12) {
                int g = K - k0 < 12 ? K - k0 : 12;
                switch (g) {
#define CS_G(n)                                                                                                  \
    case n: cs_dw_group(col, K, k0, dy, co, c, r0, r1, dw, n); break;
                    CS_G(1) CS_G(2) CS_G(3) CS_G(4) CS_G(5) CS_G(6) CS_G(7) CS_G(8) CS_G(9) CS_G(10) CS_G(11)
                    CS_G(12)
#undef CS_G
                }
            }
        }
    }
}
