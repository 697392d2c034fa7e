/* 3x3 stride-1 convolution forward by Winograd F(4x4, 3x3).
 *
 * Why: in inference of the Fused-MBConv stages the 3x3 convolutions are a
 * third or more of all time (V2-S at 384: 42 %), and im2col + GEMM spends
 * 9 * ci multiply-adds per output and channel where this spends 36/16 * ci
 * (2.25) plus the transforms.  It runs in env2_forward, evaluation, the
 * training forward, the stride-1 data gradient (conv.c) and, read
 * backwards, the weight gradient (the end of this file), unless the model
 * was created with winograd = 0; the results differ from the im2col GEMM's
 * in the last bits.  Backward never recomputes a convolution's output (z is
 * stored), so the two paths are never mixed within one step.
 *
 * Work: output tiles of 4 x 4 pixels in blocks of tbp tiles (a multiple of
 * the micro-kernel's MR).  Per block, the input transform writes V
 * [36][tbp][ci]; per chunk of output channels, 36 GEMMs V_p * U_p run
 * straight on the GEMM micro-kernel into M [36][tbp][chunk] (U, the filter
 * transform, is laid out as the kernel's packed B panels once per call), and
 * the output transform turns M into the chunk's outputs with the epilogue.
 * V and M stay in the calling thread's GEMM buffer, sized to share L2.
 *
 * Determinism: each output is computed by the same operations in the same
 * order whichever thread or work item computes it, so results do not depend
 * on the thread count; the transforms of the SIMD builds are the same C
 * compiled for wider vectors (and the same as the portable build's unless
 * the compiler contracts a * b + c into an FMA, which clang does). */
#include "kernels_internal.h"

#include <string.h>

#define WT_NAME(f) f##_generic
#define WT_EXPORT static
#include "winograd_tx.h"
#undef WT_NAME
#undef WT_EXPORT

#if K_HAVE_X86_PATHS
void k_wino_in_avx2(const k_conv_shape *s, const float *x, long t0, int cnt, int tbp, float *V);
void k_wino_out_avx2(const k_conv_shape *s, const float *M, int tbp, int cwp, long t0, int cnt, int c0, int cw,
                     const k_epilogue *ep, float *y);
void k_wino_w_avx2(const float *w, int ci, int co, int NR, int npan, int k0, int k1, float *U);
void k_wino_in_avx512(const k_conv_shape *s, const float *x, long t0, int cnt, int tbp, float *V);
void k_wino_out_avx512(const k_conv_shape *s, const float *M, int tbp, int cwp, long t0, int cnt, int c0, int cw,
                       const k_epilogue *ep, float *y);
void k_wino_w_avx512(const float *w, int ci, int co, int NR, int npan, int k0, int k1, float *U);
void k_wino_in_rows_avx2(const k_conv_shape *s, const float *x, long t0, int cnt, long pstride, float *V);
void k_wino_dy_avx2(const k_conv_shape *s, const float *dy, long t0, int cnt, long pstride, float *Y);
void k_wino_dw_avx2(const float *M, int ci, int co, int k0, int k1, float *dw);
void k_wino_in_rows_avx512(const k_conv_shape *s, const float *x, long t0, int cnt, long pstride, float *V);
void k_wino_dy_avx512(const k_conv_shape *s, const float *dy, long t0, int cnt, long pstride, float *Y);
void k_wino_dw_avx512(const float *M, int ci, int co, int k0, int k1, float *dw);
#endif

/* Output channels per chunk (before rounding to NR) and tiles per block
 * (before rounding to MR); with ci = 48..64 the block's V and M take
 * 300-450 KiB, most of a 512 KiB L2. */
#define WINO_CHUNK 64
#define WINO_TILES 24
/* Largest V + M of a block in floats; bigger ci shrinks the block. */
#define WINO_BUDGET (128 * 1024)

int k_wino_test_level = -1;

int k_wino_ok(const k_conv_shape *s)
{
    return s->kh == 3 && s->kw == 3 && s->stride == 1 && s->ci >= 1 && s->co >= 1 && s->ho >= 1 && s->wo >= 1;
}

size_t k_wino_workspace(const k_conv_shape *s)
{
    if (!k_wino_ok(s)) return 0;
    return (size_t)36 * (size_t)s->ci * (((size_t)s->co + 31) / 32 * 32);
}

typedef struct wino_fns {
    void (*in)(const k_conv_shape *, const float *, long, int, int, float *);
    void (*out)(const k_conv_shape *, const float *, int, int, long, int, int, int, const k_epilogue *, float *);
    void (*w)(const float *, int, int, int, int, int, int, float *);
    void (*in_rows)(const k_conv_shape *, const float *, long, int, long, float *);
    void (*dy)(const k_conv_shape *, const float *, long, int, long, float *);
    void (*dw)(const float *, int, int, int, int, float *);
} wino_fns;

static wino_fns pick_fns(void)
{
    wino_fns f = {k_wino_in_generic,      k_wino_out_generic, k_wino_w_generic,
                  k_wino_in_rows_generic, k_wino_dy_generic,  k_wino_dw_generic};
#if K_HAVE_X86_PATHS
    int l = k_simd_level();
    if (k_wino_test_level >= 0 && k_wino_test_level < l) l = k_wino_test_level;
    if (l >= K_SIMD_AVX512) {
        f = (wino_fns){k_wino_in_avx512,      k_wino_out_avx512, k_wino_w_avx512,
                       k_wino_in_rows_avx512, k_wino_dy_avx512,  k_wino_dw_avx512};
    } else if (l >= K_SIMD_AVX2) {
        f = (wino_fns){k_wino_in_avx2,      k_wino_out_avx2, k_wino_w_avx2,
                       k_wino_in_rows_avx2, k_wino_dy_avx2,  k_wino_dw_avx2};
    }
#endif
    return f;
}

typedef struct wino_job {
    const k_conv_shape *s;
    const float *x, *w;
    float *y, *Uw;  /* U being written (the filter transform) */
    const float *U; /* U read by the GEMMs */
    const k_epilogue *ep;
    const k_gemm_ukr *u;
    wino_fns f;
    long ntiles, nblk;
    int tbp, cwp, npan, nch, ng, kcs;
    env2_steal st; /* forward work items */
} wino_job;

static void wtx_fn(void *arg, int ith, int nth)
{
    const wino_job *j = arg;
    long k0, k1;
    env2_range(j->s->ci, ith, nth, &k0, &k1);
    j->f.w(j->w, j->s->ci, j->s->co, j->u->nr, j->npan, (int)k0, (int)k1, j->Uw);
}

/* Fallback without a scratch buffer: the same outputs by direct summation. */
static void direct_tiles(const wino_job *j, long t0, int cnt, int c0, int c1)
{
    const k_conv_shape *s = j->s;
    const int tw = (s->wo + 3) / 4, th = (s->ho + 3) / 4;
    const k_epilogue *ep = j->ep;
    for (int q = 0; q < cnt; q++) {
        long t = t0 + q, nn = t / ((long)th * tw), r = t % ((long)th * tw);
        int oy0 = (int)(r / tw) * 4, ox0 = (int)(r % tw) * 4;
        for (int oy = oy0; oy < oy0 + 4 && oy < s->ho; oy++)
            for (int ox = ox0; ox < ox0 + 4 && ox < s->wo; ox++) {
                long pix = (nn * s->ho + oy) * s->wo + ox;
                for (int c = c0; c < c1; c++) {
                    float acc = 0.0f;
                    for (int kh = 0; kh < 3; kh++) {
                        int iy = oy - s->pad_t + kh;
                        if (iy < 0 || iy >= s->h) continue;
                        for (int kw = 0; kw < 3; kw++) {
                            int ix = ox - s->pad_l + kw;
                            if (ix < 0 || ix >= s->w) continue;
                            const float *xp = j->x + ((nn * s->h + iy) * s->w + ix) * s->ci;
                            const float *wp = j->w + (long)(kh * 3 + kw) * s->ci * s->co + c;
                            for (int k = 0; k < s->ci; k++) acc += xp[k] * wp[(long)k * s->co];
                        }
                    }
                    float sc = ep && ep->scale ? ep->scale[c] : 1.0f, bi = ep && ep->bias ? ep->bias[c] : 0.0f;
                    float re = ep && ep->residual ? ep->residual[pix * ep->ldr + c] : 0.0f;
                    j->y[pix * s->co + c] = k_epilogue_scalar(acc, sc, bi, ep ? ep->act : K_ACT_NONE, re);
                }
            }
    }
}

/* Work item it = (tile block it / ng, channel group it % ng), claimed with
 * stealing (env2_steal): a task's own items come in order, so consecutive
 * channel groups of a block reuse its V. */
static void wino_fn(void *arg, int ith, int nth)
{
    wino_job *j = arg;
    const k_conv_shape *s = j->s;
    const int ci = s->ci, MR = j->u->mr, NR = j->u->nr, tbp = j->tbp, cwp = j->cwp, pan_per = cwp / NR;
    (void)nth;
    float *V = k_gemm_scratch((size_t)36 * tbp * (ci + cwp));
    float *M = V ? V + (long)36 * tbp * ci : NULL;
    long vblk = -1; /* block whose V is in the buffer */
    long it;
    while (env2_steal_next(&j->st, ith, &it)) {
        long b = it / j->ng, t0 = b * tbp;
        int g = (int)(it % j->ng), cnt = (int)(j->ntiles - t0 < tbp ? j->ntiles - t0 : tbp);
        int ch0 = (int)((long)g * j->nch / j->ng), ch1 = (int)((long)(g + 1) * j->nch / j->ng);
        if (!V) {
            int c1 = ch1 * pan_per * NR;
            direct_tiles(j, t0, cnt, ch0 * pan_per * NR, c1 < s->co ? c1 : s->co);
            continue;
        }
        if (b != vblk) {
            j->f.in(s, j->x, t0, cnt, tbp, V);
            vblk = b;
        }
        for (int ch = ch0; ch < ch1; ch++) {
            const int jp0 = ch * pan_per, jp1 = jp0 + pan_per < j->npan ? jp0 + pan_per : j->npan;
            k_ukr_args a;
            memset(&a, 0, sizeof a);
            a.a_cs = 1;
            a.a_rs = ci;
            a.b_ks = NR;
            a.ldc = cwp;
            a.mr = MR;
            a.nr = NR;
            a.alpha = 1.0f;
            a.act = K_ACT_NONE;
            for (int p = 0; p < 36; p++)
                for (int r = 0; r < tbp; r += MR)
                    for (int jp = jp0; jp < jp1; jp++)
                        for (int pc = 0; pc < ci; pc += j->kcs) {
                            a.kc = ci - pc < j->kcs ? ci - pc : j->kcs;
                            a.first = pc == 0;
                            a.last = pc + a.kc == ci;
                            a.A = V + ((long)p * tbp + r) * ci + pc;
                            a.B = j->U + (((long)p * j->npan + jp) * ci + pc) * NR;
                            a.C = M + ((long)p * tbp + r) * cwp + (long)(jp - jp0) * NR;
                            j->u->run(&a);
                        }
            int c0 = jp0 * NR, c1 = jp1 * NR < s->co ? jp1 * NR : s->co;
            j->f.out(s, M, tbp, cwp, t0, cnt, c0, c1 - c0, j->ep, j->y);
        }
    }
}

/* The job of a shape: micro-kernel, U's panel layout, blocks and groups. */
static void wino_setup(wino_job *j, int nt, const k_conv_shape *s)
{
    memset(j, 0, sizeof *j);
    j->s = s;
    j->u = k_gemm_pick_ukr(s->co);
    j->f = pick_fns();
    const int MR = j->u->mr, NR = j->u->nr;
    j->npan = (s->co + NR - 1) / NR;
    j->cwp = WINO_CHUNK >= NR ? WINO_CHUNK / NR * NR : NR;
    j->nch = (j->npan + j->cwp / NR - 1) / (j->cwp / NR);
    j->kcs = (int)k_gemm_kc(s->ci);
    j->tbp = (WINO_TILES + MR - 1) / MR * MR;
    while (j->tbp > MR && (long)36 * j->tbp * (s->ci + j->cwp) > WINO_BUDGET) j->tbp -= MR;
    j->ntiles = (long)s->n * ((s->ho + 3) / 4) * ((s->wo + 3) / 4);
    j->nblk = (j->ntiles + j->tbp - 1) / j->tbp;
    /* Equal blocks, rounded up to MR: 49 tiles (28 x 28) as 3 x 18 rows
     * rather than 3 x 24, a third of them zero padding. */
    long per = (j->ntiles + j->nblk - 1) / j->nblk;
    j->tbp = (int)((per + MR - 1) / MR * MR);
    j->nblk = (j->ntiles + j->tbp - 1) / j->tbp;
    /* Few blocks (small images at batch 1): split the output channels too;
     * the V of a block is then computed once per channel group. */
    j->ng = 1;
    if (j->nblk < 4L * nt) j->ng = nt < j->nch ? nt : j->nch;
}

unsigned k_wino_u_tag(const k_conv_shape *s)
{
    const k_gemm_ukr *u = k_gemm_pick_ukr(s->co);
    return (unsigned)u->nr << 8 | (unsigned)(k_simd_level() & 0xf) << 4 | (unsigned)(k_wino_test_level + 1);
}

void k_wino_weights(int nt, const k_conv_shape *s, const float *w, float *U)
{
    if (!k_wino_ok(s)) return;
    if (nt < 1) nt = 1;
    wino_job j;
    wino_setup(&j, 1, s);
    j.w = w;
    j.Uw = U;
    k_par_run(nt < s->ci ? nt : s->ci, wtx_fn, &j);
}

void k_conv2d_fwd_wino_u(int nt, const k_conv_shape *s, const float *x, const float *w, const float *U, float *y,
                         const k_epilogue *ep)
{
    if (!k_wino_ok(s) || s->n <= 0) return;
    if (nt < 1) nt = 1;
    wino_job j;
    wino_setup(&j, nt, s);
    j.x = x;
    j.w = w; /* for direct_tiles */
    j.y = y;
    j.U = U;
    j.ep = ep;
    long items = j.nblk * j.ng;
    int tasks = items < nt ? (int)items : nt;
    env2_steal_init(&j.st, items, tasks);
    k_par_run(tasks, wino_fn, &j);
}

void k_conv2d_fwd_wino(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                       float *ws)
{
    if (!k_wino_ok(s) || s->n <= 0) return;
    k_wino_weights(nt, s, w, ws);
    k_conv2d_fwd_wino_u(nt, s, x, w, ws, y, ep);
}

/* ---- weight gradient --------------------------------------------------------
 * dW = G^T [sum over tiles (A u A^T) (.) (B^T d B)] G (winograd_tx.h): per
 * block of tiles, the input and dy transforms, then the 36 GEMMs
 * M_p += V_p^T Y_p (ci x co, summed over the block's tiles), and G^T . G once
 * at the end.  Each M_p is summed by one task, block after block in order,
 * and the block size depends on the shape only, so the result does not
 * depend on the thread count.  The input transform repeats the one the
 * forward computed: keeping V from the forward would hold 2.25x each such
 * layer's input for the whole step. */
#define WINO_DW_TILES 128             /* at least this many tiles per block (the GEMMs' K) */
#define WINO_DW_BUDGET (1024L * 1024L) /* V + Y of a block, floats, when that allows more */

static long dw_tiles(const k_conv_shape *s) { return (long)s->n * ((s->ho + 3) / 4) * ((s->wo + 3) / 4); }

/* Tiles per block: a function of the shape only.  Few channels make the 36
 * GEMMs small, so their blocks are longer. */
static int dw_block(const k_conv_shape *s)
{
    long t = dw_tiles(s), b = WINO_DW_BUDGET / (36L * (s->ci + s->co));
    if (b < WINO_DW_TILES) b = WINO_DW_TILES;
    return (int)(t < b ? t : b);
}

size_t k_wino_bwd_weight_workspace(const k_conv_shape *s)
{
    if (!k_wino_ok(s) || s->n <= 0) return 0;
    size_t tb = (size_t)dw_block(s);
    return 36 * tb * ((size_t)s->ci + (size_t)s->co) + 36 * (size_t)s->ci * (size_t)s->co;
}

typedef struct dw_job {
    const k_conv_shape *s;
    const float *x, *dy;
    float *dw, *V, *Y, *M;
    wino_fns f;
    long t0;
    int cnt, tb, first;
} dw_job;

static void dw_tx_fn(void *arg, int ith, int nth)
{
    const dw_job *j = arg;
    long q0, q1;
    env2_range(j->cnt, ith, nth, &q0, &q1);
    if (q1 <= q0) return;
    const long ci = j->s->ci, co = j->s->co;
    j->f.in_rows(j->s, j->x, j->t0 + q0, (int)(q1 - q0), (long)j->tb * ci, j->V + q0 * ci);
    j->f.dy(j->s, j->dy, j->t0 + q0, (int)(q1 - q0), (long)j->tb * co, j->Y + q0 * co);
}

static void dw_gemm_fn(void *arg, int ith, int nth)
{
    const dw_job *j = arg;
    const long ci = j->s->ci, co = j->s->co;
    long p0, p1;
    env2_range(36, ith, nth, &p0, &p1);
    for (long p = p0; p < p1; p++)
        k_sgemm(1, 1, 0, ci, co, j->cnt, 1.0f, j->V + p * j->tb * ci, ci, j->Y + p * j->tb * co, co,
                j->first ? 0.0f : 1.0f, j->M + p * ci * co, co, NULL);
}

static void dw_out_fn(void *arg, int ith, int nth)
{
    const dw_job *j = arg;
    long k0, k1;
    env2_range(j->s->ci, ith, nth, &k0, &k1);
    if (k1 > k0) j->f.dw(j->M, j->s->ci, j->s->co, (int)k0, (int)k1, j->dw);
}

void k_conv2d_bwd_weight_wino(int nt, const k_conv_shape *s, const float *x, const float *dy, float *dw, float *ws)
{
    if (!k_wino_ok(s) || s->n <= 0) return;
    if (nt < 1) nt = 1;
    dw_job j;
    memset(&j, 0, sizeof j);
    j.s = s;
    j.x = x;
    j.dy = dy;
    j.dw = dw;
    j.f = pick_fns();
    j.tb = dw_block(s);
    j.V = ws;
    j.Y = ws + (long)36 * j.tb * s->ci;
    j.M = j.Y + (long)36 * j.tb * s->co;
    const long T = dw_tiles(s);
    for (long t0 = 0; t0 < T; t0 += j.tb) {
        j.t0 = t0;
        j.cnt = (int)(T - t0 < j.tb ? T - t0 : j.tb);
        j.first = t0 == 0;
        k_par_run(nt < j.cnt ? nt : j.cnt, dw_tx_fn, &j);
        k_par_run(nt < 36 ? nt : 36, dw_gemm_fn, &j);
    }
    k_par_run(nt < s->ci ? nt : s->ci, dw_out_fn, &j);
}
