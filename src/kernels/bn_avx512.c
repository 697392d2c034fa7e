/* SIMD row loops of batch normalization (bn.c owns the row blocks, the
 * double accumulation across chunks and blocks, threading and the choice of
 * path).
 *
 * Compiled twice, like dwconv_avx512.c: as itself with AVX-512 flags (16
 * lanes, AVX-512F instructions only) and through bn_avx2.c, which defines
 * BN_AVX2 and includes it, with AVX2 + FMA flags (8 lanes).
 *
 * Layout.  A rows x C activation with C not a multiple of the lane count
 * (24, 40, ...) wastes lanes when each row ends in a partial vector: at
 * C = 24 a third of the 16-lane work is masked off, and rows are only one
 * and a half vectors long.  When whole rows are contiguous, the block is
 * treated as one flat array instead, cut into "lines" of L = lcm(C, VL)
 * floats (P = L / C rows); the per-channel parameters are tiled to L so
 * that every vector of a line is full and lines are long enough to keep the
 * vector units busy.  Rows left over after the last whole line form one
 * shorter line that starts at channel 0 like every other.  Otherwise (a
 * channel window narrower than C, or L too large) a line is one row, with a
 * masked last vector.
 *
 * The reductions keep one accumulator per vector of a line in registers,
 * which is why their lines are at most 8 vectors (the loops are
 * instantiated for 1..8); after each chunk of rows the accumulators are
 * folded into per-channel float partials in a fixed order (line position
 * ascending), so the result depends on the row count alone. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"
#include "kernels_internal.h"

#if defined(BN_AVX2)
typedef __m256 vf;
typedef __m256i vmask;
#define VL 8
#define BN_NAME(f) f##_avx2
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_MLOAD(m, p) _mm256_maskload_ps(p, m)
#define V_MSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#define V_ZERO() _mm256_setzero_ps()
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_FNMA(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define v_silu k_silu256
#define v_silu_grad k_silu_grad256
#define V_MASKZ(m, v) _mm256_and_ps(v, _mm256_castsi256_ps(m))
static inline vmask v_tail(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#else
typedef __m512 vf;
typedef __mmask16 vmask;
#define VL 16
#define BN_NAME(f) f##_avx512
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_MLOAD(m, p) _mm512_maskz_loadu_ps(m, p)
#define V_MSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define V_ZERO() _mm512_setzero_ps()
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_FNMA(a, b, c) _mm512_fnmadd_ps(a, b, c)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define v_silu k_silu512
#define v_silu_grad k_silu_grad512
#define V_MASKZ(m, v) _mm512_maskz_mov_ps(m, v)
static inline vmask v_tail(int n) { return (vmask)(n >= VL ? 0xFFFFu : (1u << n) - 1u); }
#endif


enum {
    RED_NV = 8,                 /* most vectors per reduction line (accumulators in registers) */
    RED_LINE = RED_NV * VL,     /* most floats per reduction line */
    RED_TILE = K_BN_MAXCN + VL, /* tiled reduction parameters: a channel group and padding */
    TILE = 1024                 /* most floats of tiled parameters per line (elementwise passes) */
};

/* ---- geometry ------------------------------------------------------------- */
typedef struct lines {
    long n;      /* whole lines */
    long stride; /* floats from one line to the next */
    int w;       /* floats per whole line */
    int wlast;   /* floats in the one shorter line after them (0: none) */
    int nv;      /* vectors per whole line */
} lines;

static int gcd_int(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* rows x w floats, rows C floats apart: flat lines when whole rows are
 * contiguous (w == C) and lcm(C, VL) <= maxl, else one line per row */
static void lines_init(lines *l, long rows, int C, int w, int maxl)
{
    long L = (long)C / gcd_int(C, VL) * VL;
    if (w == C && C % VL != 0 && L <= maxl) {
        long P = L / C;
        l->n = rows / P;
        l->stride = L;
        l->w = (int)L;
        l->wlast = (int)(rows % P) * C;
    } else {
        l->n = rows;
        l->stride = C;
        l->w = w;
        l->wlast = 0;
    }
    l->nv = (l->w + VL - 1) / VL;
}

/* dst[p] = src[p % period] for p < w, 0 up to the end of the last vector
 * (masked-off lanes then compute on zeros, never on unset memory) */
static void tile_fill(float *dst, const float *src, int period, int w)
{
    int n = (w + VL - 1) / VL * VL;
    for (int p = 0; p < n; p++) dst[p] = p < w ? src[p % period] : 0.0f;
}

/* ---- reductions ------------------------------------------------------------- */
enum { K_STATS = 1, K_BWD = 3, K_BWD_SILU = 4 };

/* One line of nv <= NV vectors (the last one m-masked unless full), added
 * into a1/a2.  K_STATS: d = x - k, a1 += d, a2 += d*d.  K_BWD: d = x - k,
 * a1 += dy, a2 += dy*d.  K_BWD_SILU: g = dy * silu'(d*s + b) is stored to da,
 * a1 += g, a2 += g*d.  Masked-off lanes add zeros. */
AI void red_line(const float *x, const float *dy, float *da, const vf *k, const vf *s, const vf *b, vf *a1, vf *a2,
                 int nv, vmask m, const int full, const int NV, const int KIND)
{
    UNROLL for (int v = 0; v < NV; v++) {
        /* continue, not break: the loop keeps a constant trip count, which
         * clang needs to unroll it */
        if (v >= nv) continue;
        const int part = !full && (v == NV - 1 || v == nv - 1);
        vf d = V_SUB(part ? V_MLOAD(m, x + v * VL) : V_LOADU(x + v * VL), k[v]);
        if (part) d = V_MASKZ(m, d);
        if (KIND == K_STATS) {
            a1[v] = V_ADD(a1[v], d);
            a2[v] = V_FMA(d, d, a2[v]);
        } else {
            vf g = part ? V_MLOAD(m, dy + v * VL) : V_LOADU(dy + v * VL);
            if (KIND == K_BWD_SILU) {
                g = v_silu_grad(V_FMA(d, s[v], b[v]), g);
                if (part) V_MSTORE(da + v * VL, m, g);
                else V_STOREU(da + v * VL, g);
            }
            a1[v] = V_ADD(a1[v], g);
            a2[v] = V_FMA(g, d, a2[v]);
        }
    }
}

/* One chunk of rows over one window of at most RED_LINE floats per line. */
typedef struct red_chunk {
    const float *x, *dy;
    float *da;
    lines l;
    const float *kt, *st, *bt; /* tiled parameters of the window */
    float *t1, *t2;            /* out: the sums per line position, [nv * VL] */
} red_chunk;

AI void red_chunk_run(const red_chunk *q, const int NV, const int FULL, const int KIND)
{
    const lines *l = &q->l;
    vf k[RED_NV], s[RED_NV], b[RED_NV], a1[RED_NV], a2[RED_NV];
    UNROLL for (int v = 0; v < NV; v++) {
        k[v] = V_LOADU(q->kt + v * VL);
        s[v] = KIND == K_BWD_SILU ? V_LOADU(q->st + v * VL) : V_ZERO();
        b[v] = KIND == K_BWD_SILU ? V_LOADU(q->bt + v * VL) : V_ZERO();
        a1[v] = a2[v] = V_ZERO();
    }
    const vmask mw = v_tail(l->w - (NV - 1) * VL);
    const float *x = q->x, *dy = q->dy;
    float *da = q->da;
    for (long i = 0; i < l->n; i++) {
        const long o = i * l->stride;
        red_line(x + o, dy ? dy + o : NULL, da ? da + o : NULL, k, s, b, a1, a2, NV, mw, FULL, NV, KIND);
    }
    if (l->wlast) {
        const long o = l->n * l->stride;
        const int nvl = (l->wlast + VL - 1) / VL;
        red_line(x + o, dy ? dy + o : NULL, da ? da + o : NULL, k, s, b, a1, a2, nvl,
                 v_tail(l->wlast - (nvl - 1) * VL), 0, NV, KIND);
    }
    UNROLL for (int v = 0; v < NV; v++) {
        V_STOREU(q->t1 + v * VL, a1[v]);
        V_STOREU(q->t2 + v * VL, a2[v]);
    }
}

#define RED_CASE(NV)                                                                  \
    case NV:                                                                          \
        if (full) red_chunk_run(q, NV, 1, KIND);                                      \
        else red_chunk_run(q, NV, 0, KIND);                                           \
        break;

AI void red_chunk_dispatch(const red_chunk *q, const int KIND)
{
    const int full = q->l.w % VL == 0;
    switch (q->l.nv) {
        RED_CASE(1)
        RED_CASE(2)
        RED_CASE(3)
        RED_CASE(4)
        RED_CASE(5)
        RED_CASE(6)
        RED_CASE(7)
        RED_CASE(8)
    default: break;
    }
}

/* rows x cn at stride C (cn <= K_BN_MAXCN), summed per chunk of rows in
 * float; the chunks are added in order, in double, into s1, s2 [cn]
 * (overwritten).  A flat layout is one window of the tiled period; else the
 * rows are cut into windows of RED_LINE channels, each a chunk at a time
 * while the chunk is in cache. */
AI void red_all(const float *x, const float *dy, float *da, long rows, int C, int cn, const float *k,
                const float *scale, const float *beta, long chunk, double *s1, double *s2, const int KIND)
{
    float kt[RED_TILE], st[RED_TILE], bt[RED_TILE], t1[RED_LINE], t2[RED_LINE];
    lines l0;
    lines_init(&l0, chunk, C, cn, RED_LINE);
    const int flat = l0.stride != C;
    tile_fill(kt, k, cn, l0.w);
    if (KIND == K_BWD_SILU) {
        tile_fill(st, scale, cn, l0.w);
        tile_fill(bt, beta, cn, l0.w);
    }
    for (int c = 0; c < cn; c++) s1[c] = s2[c] = 0.0;
    for (long r0 = 0; r0 < rows; r0 += chunk) {
        const long cr = rows - r0 < chunk ? rows - r0 : chunk;
        for (int w0 = 0; w0 < cn; w0 += RED_LINE) {
            const int w = flat ? cn : (cn - w0 < RED_LINE ? cn - w0 : RED_LINE);
            red_chunk q;
            if (flat) {
                lines_init(&q.l, cr, C, cn, RED_LINE);
            } else {
                q.l.n = cr;
                q.l.stride = C;
                q.l.w = w;
                q.l.wlast = 0;
                q.l.nv = (w + VL - 1) / VL;
            }
            const long off = r0 * C + w0;
            q.x = x + off;
            q.dy = dy ? dy + off : NULL;
            q.da = da ? da + off : NULL;
            q.kt = kt + w0;
            q.st = st + w0;
            q.bt = bt + w0;
            q.t1 = t1;
            q.t2 = t2;
            red_chunk_dispatch(&q, KIND);
            /* positions p = q*cn + c of a flat line all hold channel c */
            for (int c = 0; c < w; c++) {
                float p1 = t1[c], p2 = t2[c];
                if (flat)
                    for (int p = c + cn; p < l0.w; p += cn) {
                        p1 += t1[p];
                        p2 += t2[p];
                    }
                s1[w0 + c] += p1;
                s2[w0 + c] += p2;
            }
            if (flat) break;
        }
    }
}

void BN_NAME(k_bn_stats)(const float *x, long rows, int C, int cn, const float *shift, long chunk, double *s1,
                         double *s2)
{
    red_all(x, NULL, NULL, rows, C, cn, shift, NULL, NULL, chunk, s1, s2, K_STATS);
}

void BN_NAME(k_bn_bwd_red)(const float *x, const float *dy, float *dact, long rows, int C, int cn,
                           const float *mean, const float *scale, const float *beta, long chunk, double *s1,
                           double *s2)
{
    if (dact) red_all(x, dy, dact, rows, C, cn, mean, scale, beta, chunk, s1, s2, K_BWD_SILU);
    else red_all(x, dy, NULL, rows, C, cn, mean, NULL, NULL, chunk, s1, s2, K_BWD);
}

/* ---- elementwise passes -------------------------------------------------------
 * Rows are processed a channel window of at most TILE floats at a time (one
 * window when C <= TILE); the per-channel factors are formed once per
 * window, tiled over the line. */
AI void apply_line(const float *x, float *y, const float *mt, const float *st, const float *bt, int nv, vmask mk,
                   int full, const int ACT)
{
    int v = 0;
    for (; v < nv - 1; v++) {
        const int o = v * VL;
        vf t = V_FMA(V_SUB(V_LOADU(x + o), V_LOADU(mt + o)), V_LOADU(st + o), V_LOADU(bt + o));
        if (ACT) t = v_silu(t);
        V_STOREU(y + o, t);
    }
    const int o = v * VL;
    vf xv = full ? V_LOADU(x + o) : V_MLOAD(mk, x + o);
    vf t = V_FMA(V_SUB(xv, V_LOADU(mt + o)), V_LOADU(st + o), V_LOADU(bt + o));
    if (ACT) t = v_silu(t);
    if (full) V_STOREU(y + o, t);
    else V_MSTORE(y + o, mk, t);
}

AI void apply_run(const float *x, float *y, long rows, int C, const float *mean, const float *gamma,
                  const float *rstd, const float *beta, const int ACT)
{
    float mt[TILE + VL], st[TILE + VL], bt[TILE + VL];
    for (int c0 = 0; c0 < C; c0 += TILE) {
        const int w = C - c0 < TILE ? C - c0 : TILE;
        lines l;
        lines_init(&l, rows, C, w, TILE);
        for (int p = 0; p < l.nv * VL; p++) {
            const int c = c0 + p % w, in = p < l.w;
            mt[p] = in ? mean[c] : 0.0f;
            /* gamma * rstd rounded once, as in the portable path */
            st[p] = in ? gamma[c] * rstd[c] : 0.0f;
            bt[p] = in ? beta[c] : 0.0f;
        }
        const int full = l.w % VL == 0;
        const vmask mk = v_tail(l.w - (l.nv - 1) * VL);
        const float *xb = x + c0;
        float *yb = y + c0;
        for (long i = 0; i < l.n; i++) apply_line(xb + i * l.stride, yb + i * l.stride, mt, st, bt, l.nv, mk, full, ACT);
        if (l.wlast) {
            const int nvl = (l.wlast + VL - 1) / VL;
            const long o = l.n * l.stride;
            apply_line(xb + o, yb + o, mt, st, bt, nvl, v_tail(l.wlast - (nvl - 1) * VL), 0, ACT);
        }
    }
}

void BN_NAME(k_bn_apply)(const float *x, float *y, long rows, int C, const float *mean, const float *gamma,
                         const float *rstd, const float *beta, int act)
{
    if (act == K_ACT_SILU) apply_run(x, y, rows, C, mean, gamma, rstd, beta, 1);
    else apply_run(x, y, rows, C, mean, gamma, rstd, beta, 0);
}

/* dx = a*(dy - m1 - xhat*m2) with a = gamma*rstd and xhat = (x - mean)*rstd,
 * as a*(dy - m1) - e*(x - mean) with e = a*rstd*m2: both differences are
 * taken before any product, so dy == m1 gives exactly 0 and a large mean
 * does not cancel. */
AI void dx_line(const float *x, const float *dy, float *dx, const float *mt, const float *at, const float *m1t,
                const float *et, int nv, vmask mk, int full)
{
    int v = 0;
    for (; v < nv - 1; v++) {
        const int o = v * VL;
        vf t = V_SUB(V_LOADU(x + o), V_LOADU(mt + o));
        vf u = V_MUL(V_LOADU(at + o), V_SUB(V_LOADU(dy + o), V_LOADU(m1t + o)));
        V_STOREU(dx + o, V_FNMA(V_LOADU(et + o), t, u));
    }
    const int o = v * VL;
    vf xv = full ? V_LOADU(x + o) : V_MLOAD(mk, x + o);
    vf dv = full ? V_LOADU(dy + o) : V_MLOAD(mk, dy + o);
    vf u = V_MUL(V_LOADU(at + o), V_SUB(dv, V_LOADU(m1t + o)));
    vf r = V_FNMA(V_LOADU(et + o), V_SUB(xv, V_LOADU(mt + o)), u);
    if (full) V_STOREU(dx + o, r);
    else V_MSTORE(dx + o, mk, r);
}

void BN_NAME(k_bn_dx)(const float *x, const float *dy, float *dx, long rows, int C, int c0, int c1,
                      const float *mean, const float *rstd, const float *gamma, const float *m1, const float *m2)
{
    float mt[TILE + VL], at[TILE + VL], m1t[TILE + VL], et[TILE + VL];
    for (int w0 = c0; w0 < c1; w0 += TILE) {
        const int w = c1 - w0 < TILE ? c1 - w0 : TILE;
        lines l;
        lines_init(&l, rows, C, w, TILE);
        for (int p = 0; p < l.nv * VL; p++) {
            const int c = w0 + p % w, in = p < l.w;
            const float a = gamma[c] * rstd[c];
            mt[p] = in ? mean[c] : 0.0f;
            at[p] = in ? a : 0.0f;
            m1t[p] = in ? m1[c - c0] : 0.0f;
            et[p] = in ? a * rstd[c] * m2[c - c0] : 0.0f;
        }
        const int full = l.w % VL == 0;
        const vmask mk = v_tail(l.w - (l.nv - 1) * VL);
        const float *xb = x + w0, *db = dy + w0;
        float *ob = dx + w0;
        for (long i = 0; i < l.n; i++) {
            const long o = i * l.stride;
            dx_line(xb + o, db + o, ob + o, mt, at, m1t, et, l.nv, mk, full);
        }
        if (l.wlast) {
            const int nvl = (l.wlast + VL - 1) / VL;
            const long o = l.n * l.stride;
            dx_line(xb + o, db + o, ob + o, mt, at, m1t, et, nvl, v_tail(l.wlast - (nvl - 1) * VL), 0);
        }
    }
}
