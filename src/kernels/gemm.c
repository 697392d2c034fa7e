/* SGEMM: cache-blocked driver around per-ISA register-blocked micro-kernels.
 *
 * Loop nest of one thread over its rectangle of C (GotoBLAS order with the
 * roles of A and B swapped, because C is row-major and the kernels broadcast
 * A and load rows of B):
 *
 *   for jc in N step NC           B block kc x NC stays in L2 (~512 KiB)
 *     for pc in K step kc         kc depends on K only
 *       B block: rows read in place, or packed into NR-wide zero-padded
 *                panels (transposed B, partial panels)
 *       for ir in M step MR       A micro-panel MR x kc stays in L1
 *         A panel: read in place, packed, or gathered by a provider
 *         for jr in NC step NR    micro-kernel on the MR x NR tile
 *
 * Determinism: every C element is produced by one micro-kernel call per K
 * block, summing k in increasing order, and the K blocks are visited in
 * increasing order; the K blocking depends on K alone.  Threads only split the
 * M x N output, so the result is the same for any thread count and any
 * partition, and the same whether operands are packed or read in place. */
#include "kernels_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define K_HAVE_PTHREAD_KEY 1
#else
#define K_HAVE_PTHREAD_KEY 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define K_NOINLINE __attribute__((noinline))
#else
#define K_NOINLINE
#endif

/* Largest K block.  With MR = 14 the A micro-panel is 14 * 384 * 4 = 21 KiB,
 * which leaves room in a 32-48 KiB L1 for the B rows streaming through. */
#define KC_MAX 384
/* Budget for the packed B block (kc x NC), about half of a 1 MiB L2. */
#define B_BLOCK_BYTES (512 * 1024)
/* Upper bounds of the micro-tiles of all kernels (fallback stack buffers). */
#define MR_MAX 14
#define NR_MAX 32
/* Below this many multiply-adds a second thread costs more than it saves. */
#define MIN_FLOPS_PER_THREAD (64L * 64 * 64)

int k_gemm_test_no_buffer;
int k_gemm_test_one_ukr;

/* ---- portable micro-kernel --------------------------------------------------
 * A 4 x 8 tile.  With GCC/Clang the accumulators are generic 4-float vectors
 * held in named variables, which every target with 128-bit SIMD keeps in
 * registers (plain arrays end up in memory at -O2); other compilers get the
 * same arithmetic as plain loops. */
#define GMR 4
#define GNR 8

static void generic_store(const k_ukr_args *a, float acc[GMR][GNR])
{
    for (int r = 0; r < a->mr; r++) {
        float *c = a->C + (long)r * a->ldc;
        for (int j = 0; j < a->nr; j++) {
            float v = a->alpha * acc[r][j];
            if (a->first) {
                if (a->beta != 0.0f) v += a->beta * c[j];
            } else {
                v += c[j];
            }
            if (a->last)
                v = k_epilogue_scalar(v, a->scale ? a->scale[j] : 1.0f, a->bias ? a->bias[j] : 0.0f, a->act,
                                      a->res ? a->res[(long)r * a->ldr + j] : 0.0f);
            c[j] = v;
        }
    }
}

#if defined(__GNUC__) || defined(__clang__)
typedef float k_v4 __attribute__((vector_size(16)));
static inline k_v4 ld4(const float *p)
{
    k_v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static void ukr_generic(const k_ukr_args *a)
{
    const float *A = a->A, *B = a->B;
    const long ars = a->a_rs, acs = a->a_cs, bks = a->b_ks;
    const int wide = a->nr > GNR / 2;
    k_v4 z = {0, 0, 0, 0};
    k_v4 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    for (long k = 0; k < a->kc; k++) {
        const float *b = B + k * bks, *ak = A + k * acs;
        k_v4 b0 = ld4(b), b1 = wide ? ld4(b + 4) : z;
        k_v4 a0 = z + ak[0], a1 = z + ak[ars], a2 = z + ak[2 * ars], a3 = z + ak[3 * ars];
        c00 += a0 * b0;
        c01 += a0 * b1;
        c10 += a1 * b0;
        c11 += a1 * b1;
        c20 += a2 * b0;
        c21 += a2 * b1;
        c30 += a3 * b0;
        c31 += a3 * b1;
    }
    float acc[GMR][GNR];
    memcpy(acc[0], &c00, 16);
    memcpy(acc[0] + 4, &c01, 16);
    memcpy(acc[1], &c10, 16);
    memcpy(acc[1] + 4, &c11, 16);
    memcpy(acc[2], &c20, 16);
    memcpy(acc[2] + 4, &c21, 16);
    memcpy(acc[3], &c30, 16);
    memcpy(acc[3] + 4, &c31, 16);
    generic_store(a, acc);
}
#else
static void ukr_generic(const k_ukr_args *a)
{
    float acc[GMR][GNR];
    memset(acc, 0, sizeof acc);
    const int ncols = a->nr > GNR / 2 ? GNR : GNR / 2;
    for (long k = 0; k < a->kc; k++) {
        const float *b = a->B + k * a->b_ks;
        for (int r = 0; r < GMR; r++) {
            float av = a->A[r * a->a_rs + k * a->a_cs];
            for (int j = 0; j < ncols; j++) acc[r][j] += av * b[j];
        }
    }
    generic_store(a, acc);
}
#endif

const k_gemm_ukr k_ukr_generic = {GMR, GNR, ukr_generic, 0};

/* The micro-kernel for an N columns wide problem.  Which kernel runs never
 * changes a sum: each is the same FMAs in the same k order. */
static const k_gemm_ukr *pick_ukr(long N)
{
#if K_HAVE_X86_PATHS
    int l = k_simd_level();
    if (l >= K_SIMD_AVX512) return &k_ukr_avx512;
    if (l >= K_SIMD_AVX2) return N % 24 == 0 && N % 16 != 0 && !k_gemm_test_one_ukr ? &k_ukr_avx2_n24 : &k_ukr_avx2;
#else
    (void)N;
#endif
    return &k_ukr_generic;
}

const k_gemm_ukr *k_gemm_pick_ukr(long N) { return pick_ukr(N); }

/* ---- per-thread packing buffer ----------------------------------------------
 * One buffer per thread, allocated at the thread's first GEMM and kept for
 * its life (a pthread key frees it when the thread exits).  It has the
 * largest size any call can ask for, an A micro-panel plus a B block, because
 * tasks go to whichever pool thread claims them: sized to the first task, a
 * thread would grow it again whenever it happened to claim a bigger one.
 * Pages that a small model never packs into are never touched. */
#define BUF_FLOATS ((((long)MR_MAX * KC_MAX + 15) & ~15L) + B_BLOCK_BYTES / (long)sizeof(float))
static _Thread_local float *tl_buf;
static _Thread_local size_t tl_cap;

#if K_HAVE_PTHREAD_KEY
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static int tl_key_ok;
static void tl_destroy(void *p) { free(p); }
static void tl_make_key(void) { tl_key_ok = pthread_key_create(&tl_key, tl_destroy) == 0; }
#endif

static float *tl_buffer(size_t floats)
{
    if (k_gemm_test_no_buffer) return NULL;
    if (floats <= tl_cap) return tl_buf;
    if (floats < (size_t)BUF_FLOATS) floats = (size_t)BUF_FLOATS;
    size_t bytes = (floats * sizeof(float) + 4095) & ~(size_t)4095;
    float *p = aligned_alloc(64, bytes);
    if (!p) return NULL;
#if K_HAVE_PTHREAD_KEY
    pthread_once(&tl_once, tl_make_key);
    if (!tl_key_ok || pthread_setspecific(tl_key, p) != 0) {
        free(p);
        return NULL;
    }
#endif
    free(tl_buf);
    tl_buf = p;
    tl_cap = bytes / sizeof(float);
    return p;
}

float *k_gemm_scratch(size_t floats) { return tl_buffer(floats); }

/* ---- problem description and packing ------------------------------------------ */
typedef struct gemm_prob {
    int ta, tb;
    long M, N, K;
    float alpha, beta;
    const float *A, *B;
    long lda, ldb;
    k_pack_a_fn packa; /* when set, A comes from this provider */
    const void *packa_ctx;
    float *C;
    long ldc;
    const k_epilogue *ep;
    long kcs; /* K block size: a function of K only */
    long ncs; /* N block size */
    const k_gemm_ukr *u;
} gemm_prob;

/* dst[k * MR + r] = op(A)(i0 + r, pc + k), rows >= mr zero. */
static void pack_a(const gemm_prob *p, long i0, int mr, long pc, long kc, float *dst)
{
    const int MR = p->u->mr;
    if (!p->ta) {
        for (int r = 0; r < mr; r++) {
            const float *s = p->A + (i0 + r) * p->lda + pc;
            for (long k = 0; k < kc; k++) dst[k * MR + r] = s[k];
        }
        for (int r = mr; r < MR; r++)
            for (long k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
    } else if (mr == MR_MAX && MR == MR_MAX) {
        /* fixed-size copies compile to a few vector moves */
        for (long k = 0; k < kc; k++) memcpy(dst + k * MR_MAX, p->A + (pc + k) * p->lda + i0, MR_MAX * sizeof(float));
    } else if (mr == 6 && MR == 6) {
        /* the AVX2 kernel's MR: weight gradients, where A = X^T, spend a
         * sizeable share of their time here */
        for (long k = 0; k < kc; k++) memcpy(dst + k * 6, p->A + (pc + k) * p->lda + i0, 6 * sizeof(float));
    } else {
        for (long k = 0; k < kc; k++) {
            const float *s = p->A + (pc + k) * p->lda + i0;
            float *d = dst + k * MR;
            int r = 0;
            for (; r < mr; r++) d[r] = s[r];
            for (; r < MR; r++) d[r] = 0.0f;
        }
    }
}

/* dst[k * NR + j] = op(B)(pc + k, j0 + j), columns >= nr zero. */
static void pack_b(const gemm_prob *p, long pc, long kc, long j0, int nr, float *dst)
{
    const int NR = p->u->nr;
    if (!p->tb) {
        for (long k = 0; k < kc; k++) {
            float *d = dst + k * NR;
            memcpy(d, p->B + (pc + k) * p->ldb + j0, (size_t)nr * sizeof(float));
            if (nr < NR) memset(d + nr, 0, (size_t)(NR - nr) * sizeof(float));
        }
    } else {
        /* B is stored [N][K]: walk each source row contiguously. */
        for (int j = 0; j < nr; j++) {
            const float *s = p->B + (j0 + j) * p->ldb + pc;
            for (long k = 0; k < kc; k++) dst[k * NR + j] = s[k];
        }
        for (int j = nr; j < NR; j++)
            for (long k = 0; k < kc; k++) dst[k * NR + j] = 0.0f;
    }
}

/* The panels of columns [j0, j0 + nc) of a non-transposed B, panel q at
 * dst + q * kc * NR, in the layout of pack_b.  Row by row: each source row
 * is then read as one sequential run, which the hardware prefetchers follow.
 * Panel by panel, every k step was a 64-byte read at the weights' row
 * stride, a new page for each row; with the weights coming from memory (a
 * network's layers each read theirs once) that was up to 40 % of a
 * 49 x 1536 x 256 GEMM.  The same values land in the same places. */
static void pack_b_rows(const gemm_prob *p, long pc, long kc, long j0, long nc, float *dst)
{
    const int NR = p->u->nr;
    const long nfull = nc / NR, rest = nc - nfull * NR;
    for (long k = 0; k < kc; k++) {
        const float *s = p->B + (pc + k) * p->ldb + j0;
        float *d = dst + k * NR;
        for (long q = 0; q < nfull; q++) memcpy(d + q * kc * NR, s + q * NR, (size_t)NR * sizeof(float));
        if (rest) {
            float *t = d + nfull * kc * NR;
            memcpy(t, s + nfull * NR, (size_t)rest * sizeof(float));
            memset(t + rest, 0, (size_t)(NR - rest) * sizeof(float));
        }
    }
}

/* Points a->A at the MR x kc panel of rows i.., either in place or in `ap`
 * (MR_MAX * KC_MAX floats).  allow_direct: 0 = always copy, 1 = read
 * row-major A in place, 2 = also read transposed A in place (worth it only
 * when the panel meets few B panels: its kc rows are spread over 2*kc
 * cache lines, too many to stay in L1 for a long sweep). */
static void a_panel(const gemm_prob *p, k_ukr_args *a, long i, int mr, long pc, long kc, int allow_direct, float *ap)
{
    const int MR = p->u->mr;
    if (p->packa) {
        p->packa(p->packa_ctx, i, mr, pc, kc, ap);
        for (long r = mr; r < MR; r++) memset(ap + r * kc, 0, (size_t)kc * sizeof(float));
        a->A = ap;
        a->a_rs = kc;
        a->a_cs = 1;
    } else if (!p->ta && mr == MR && allow_direct) {
        a->A = p->A + i * p->lda + pc;
        a->a_rs = p->lda;
        a->a_cs = 1;
    } else if (p->ta && mr == MR && allow_direct > 1) {
        a->A = p->A + pc * p->lda + i;
        a->a_rs = 1;
        a->a_cs = p->lda;
    } else {
        pack_a(p, i, mr, pc, kc, ap);
        a->A = ap;
        a->a_rs = 1;
        a->a_cs = MR;
    }
}

static void tile_args(const gemm_prob *p, k_ukr_args *a, long i, long j, int mr, int nr, long pc, long kc)
{
    const k_epilogue *ep = p->ep;
    a->kc = kc;
    a->C = p->C + i * p->ldc + j;
    a->ldc = p->ldc;
    a->mr = mr;
    a->nr = nr;
    a->first = pc == 0;
    a->last = pc + kc == p->K;
    a->alpha = p->alpha;
    a->beta = p->beta;
    a->scale = ep && ep->scale ? ep->scale + j : NULL;
    a->bias = ep && ep->bias ? ep->bias + j : NULL;
    a->res = ep && ep->residual ? ep->residual + i * ep->ldr + j : NULL;
    a->ldr = ep ? ep->ldr : 0;
    a->act = ep ? ep->act : K_ACT_NONE;
    a->pf = NULL;
    a->pf_ks = 0;
}

/* Same arithmetic as gemm_rect without any heap buffer: every micro-panel is
 * packed on the stack right before use. */
static K_NOINLINE void gemm_rect_fallback(const gemm_prob *p, long m0, long m1, long n0, long n1)
{
    _Alignas(64) float ap[MR_MAX * KC_MAX];
    _Alignas(64) float bp[KC_MAX * NR_MAX];
    const int MR = p->u->mr, NR = p->u->nr;
    k_ukr_args a;
    for (long pc = 0; pc < p->K; pc += p->kcs) {
        long kc = p->K - pc < p->kcs ? p->K - pc : p->kcs;
        for (long i = m0; i < m1; i += MR) {
            int mr = (int)(m1 - i < MR ? m1 - i : MR);
            for (long j = n0; j < n1; j += NR) {
                int nr = (int)(n1 - j < NR ? n1 - j : NR);
                tile_args(p, &a, i, j, mr, nr, pc, kc);
                a_panel(p, &a, i, mr, pc, kc, 0, ap);
                pack_b(p, pc, kc, j, nr, bp);
                a.B = bp;
                a.b_ks = NR;
                p->u->run(&a);
            }
        }
    }
}

/* In-place residual (ep->residual == C) with several K blocks: the first
 * block's partial sums would overwrite the residual before the last block
 * reads it, so each tile saves its residual first and runs all its K blocks
 * back to back.  Same micro-kernel calls, hence the same bits. */
static K_NOINLINE void gemm_rect_inplace(const gemm_prob *p, long m0, long m1, long n0, long n1)
{
    _Alignas(64) float ap[MR_MAX * KC_MAX];
    _Alignas(64) float bp[KC_MAX * NR_MAX];
    _Alignas(64) float rt[MR_MAX * NR_MAX];
    const int MR = p->u->mr, NR = p->u->nr;
    k_ukr_args a;
    for (long i = m0; i < m1; i += MR) {
        int mr = (int)(m1 - i < MR ? m1 - i : MR);
        for (long j = n0; j < n1; j += NR) {
            int nr = (int)(n1 - j < NR ? n1 - j : NR);
            for (int r = 0; r < mr; r++) memcpy(rt + r * NR, p->C + (i + r) * p->ldc + j, (size_t)nr * sizeof(float));
            for (long pc = 0; pc < p->K; pc += p->kcs) {
                long kc = p->K - pc < p->kcs ? p->K - pc : p->kcs;
                tile_args(p, &a, i, j, mr, nr, pc, kc);
                a.res = rt;
                a.ldr = NR;
                a_panel(p, &a, i, mr, pc, kc, 1, ap);
                if (!p->tb && nr == NR) {
                    a.B = p->B + pc * p->ldb + j;
                    a.b_ks = p->ldb;
                } else {
                    pack_b(p, pc, kc, j, nr, bp);
                    a.B = bp;
                    a.b_ks = NR;
                }
                p->u->run(&a);
            }
        }
    }
}

/* The first row tile of a block reads each B panel from memory (weights
 * are read once per forward), at the row stride of B, which the hardware
 * prefetchers follow poorly: its micro-kernel calls fetch the panel the next
 * call will read -- the next NR columns, or after the block's last panel the
 * first one of the next K block -- kc rows of two lines, into L2.  Only full
 * panels inside B are named. */
static void b_prefetch(const gemm_prob *p, k_ukr_args *a, long j, long jc, long nc, long pc, long kc)
{
    const long NR = p->u->nr;
    if (j + 2 * NR <= jc + nc) {
        a->pf = p->B + pc * p->ldb + j + NR;
        a->pf_ks = p->ldb;
    } else if (pc + 2 * kc <= p->K && nc >= NR) {
        a->pf = p->B + (pc + kc) * p->ldb + jc;
        a->pf_ks = p->ldb;
    }
}

/* One thread's rectangle [m0, m1) x [n0, n1) of C.  Operands are read in
 * place where their layout already suits the kernel -- row-major A (its
 * MR x kc panel stays in L1 over the jr sweep) and non-transposed B (rows
 * of NR floats) when many row tiles reuse it -- which measured faster than
 * packing them on the shapes of the network; transposed operands, partial
 * panels and provider A are packed. */
static void gemm_rect(const gemm_prob *p, long m0, long m1, long n0, long n1)
{
    if (m0 >= m1 || n0 >= n1) return;
    if (p->ep && p->ep->residual == p->C && p->K > p->kcs) {
        gemm_rect_inplace(p, m0, m1, n0, n1);
        return;
    }
    const int MR = p->u->mr, NR = p->u->nr;
    const long kcs = p->kcs;
    /* Equal N blocks (512 columns as 256 + 256, not 320 + 192): A panels are
     * fetched once per block.  N blocking does not change any sum. */
    long nblk = (n1 - n0 + p->ncs - 1) / p->ncs, ncs = (n1 - n0 + nblk - 1) / nblk;
    ncs = (ncs + NR - 1) / NR * NR;
    const long apan = ((long)MR * kcs + 15) & ~15L;
    float *buf = tl_buffer((size_t)(apan + kcs * ncs));
    if (!buf) {
        gemm_rect_fallback(p, m0, m1, n0, n1);
        return;
    }
    float *ap = buf, *bblk = buf + apan;
    /* B read in place is strided.  When it is long (K >= 2048: weight
     * gradients, where B is an activation streaming from memory) that
     * measured 10-20% slower than one sequential copy.  Otherwise B is a
     * layer's weights, which at inference come from memory once per forward:
     * read in place, with the next panel prefetched (below), they cost less
     * than a copy, however few the row tiles (batch 1 at 224, M = 49: the
     * 1x1 layers took 13% less time in the network without the copy, 19%
     * with the prefetch as well; docs/PERFORMANCE.md, session 15).  The AVX2
     * kernel always packs (k_gemm_ukr.pack_b). */
    const int pack_all_b = p->u->pack_b || p->tb || p->K >= 2048;
    k_ukr_args a;
    for (long jc = n0; jc < n1; jc += ncs) {
        long nc = n1 - jc < ncs ? n1 - jc : ncs;
        for (long pc = 0; pc < p->K; pc += kcs) {
            long kc = p->K - pc < kcs ? p->K - pc : kcs;
            if (pack_all_b && !p->tb) {
                pack_b_rows(p, pc, kc, jc, nc, bblk);
            } else {
                for (long j = jc; j < jc + nc; j += NR) {
                    int nr = (int)(jc + nc - j < NR ? jc + nc - j : NR);
                    if (pack_all_b || nr < NR) pack_b(p, pc, kc, j, nr, bblk + (j - jc) * kc);
                }
            }
            for (long i = m0; i < m1; i += MR) {
                int mr = (int)(m1 - i < MR ? m1 - i : MR);
                a_panel(p, &a, i, mr, pc, kc, nc <= 2 * NR ? 2 : 1, ap);
                const float *Ap = a.A;
                const long rs = a.a_rs, cs = a.a_cs;
                for (long j = jc; j < jc + nc; j += NR) {
                    int nr = (int)(jc + nc - j < NR ? jc + nc - j : NR);
                    tile_args(p, &a, i, j, mr, nr, pc, kc);
                    a.A = Ap;
                    a.a_rs = rs;
                    a.a_cs = cs;
                    if (!pack_all_b && nr == NR) {
                        a.B = p->B + pc * p->ldb + j;
                        a.b_ks = p->ldb;
                        if (i == m0) b_prefetch(p, &a, j, jc, nc, pc, kc);
                    } else {
                        a.B = bblk + (j - jc) * kc;
                        a.b_ks = NR;
                    }
                    p->u->run(&a);
                }
            }
        }
    }
}

/* Splits the tile grid into pm x pn rectangles for nth threads, minimizing
 * an estimate of the slowest thread's time: its FMAs plus the operand
 * traffic and packing it repeats (B per rectangle, A per N block).
 *
 * Plain products (neither operand transposed) are the forward layers: A is
 * an activation the layer before wrote split by rows (depthwise, squeeze-
 * excite, batch norm and the GEMMs themselves all split positions), and C
 * is read the same way by the layer after.  Those take whole rows, unless B
 * (the weights) outweighs the activations by far.  Split by columns, each
 * thread would read the A rows the other core just wrote and write C
 * columns the other core reads next; on the 2-vCPU machine of session 16 a
 * line written by the other core took ~240 ns, and the copy of B each
 * thread then reads is cheaper than that traffic.  Measured in the V2-S
 * forward (2 threads, alternating processes; docs/PERFORMANCE.md): at 384
 * the 12x12 and 24x24 expansions, which took columns, now take rows, and
 * the depthwise layers after them went 5.38 -> 4.04 ms, squeeze-excite
 * 4.16 -> 3.88 ms, the whole forward 57.3 -> 55.7 ms.
 *
 * The exception is a few rows against weights over 1 MiB (batch 1 at 7x7:
 * 49 rows, the 1.5 MB expansion and projection of the last stage).  Split by
 * rows, each thread streams all of B for two row tiles; by columns, half of
 * B for all four.  The depthwise layer after an expansion splits such maps by
 * channel blocks (dwconv.c), the same halves, so it reads what its own core
 * wrote.  At 224, 2 threads, 12 alternating runs: 22.71 -> 22.24 ms (1x1
 * GEMMs 12.33 -> 11.96; docs/PERFORMANCE.md, session 19). */
static void choose_grid(int nth, long tm, long tn, const gemm_prob *p, int *pm, int *pn)
{
    double best = -1;
    *pm = 1;
    *pn = 1;
    const double act = (double)p->M * (double)(p->K + p->N), wts = (double)p->K * (double)p->N;
    if (!p->ta && !p->tb && nth >= 2 && p->M <= 32L * nth && wts * sizeof(float) > 1024.0 * 1024 &&
        tn >= 2L * nth) {
        *pn = nth;
        return;
    }
    if (!p->ta && !p->tb && tm >= 2L * nth && wts <= 8.0 * act) {
        *pm = nth;
        return;
    }
    for (int a = 1; a <= nth; a++) {
        int b = nth / a;
        if (a > tm && a > 1) break;
        if (b > tn) b = (int)tn;
        long rt = (tm + a - 1) / a, ct = (tn + b - 1) / b;
        double rows = (double)rt * p->u->mr, cols = (double)ct * p->u->nr, K = (double)p->K;
        /* FMA cycles, plus per-float costs of first touching (0.25) or
         * packing (1) the operands; A is visited once per N block. */
        double nblk = (double)((ct * p->u->nr + p->ncs - 1) / p->ncs);
        double cost = rows * cols * K / 16.0;
        cost += cols * K * (p->tb || p->u->pack_b ? 1.0 : 0.25);
        cost += rows * K * nblk * (p->ta || p->packa ? 1.0 : 0.25);
        if (best < 0 || cost < best) {
            best = cost;
            *pm = a;
            *pn = b;
        }
    }
}

/* nt, lowered so that every thread gets at least MIN_FLOPS_PER_THREAD
 * multiply-adds (at least 1) */
static int threads_for(double work, int nt)
{
    if (nt < 1) nt = 1;
    if (work >= (double)MIN_FLOPS_PER_THREAD * nt) return nt;
    long t = (long)(work / MIN_FLOPS_PER_THREAD);
    return t < 1 ? 1 : (int)t;
}

/* ---- k_sgemv / k_sgemv_rows: one row, or a few ----------------------------------
 * Inference at batches of 1-8 runs the squeeze-excite FCs and the classifier
 * as M x N GEMMs with B = W stored [N][K].  The tile path would pack
 * (transpose) all of B for a sixth of a tile's work or less and keep small
 * calls on one thread; reading the weights once, in place, is what these
 * shapes are bound by.  Every output
 * is computed by one task in a fixed order, so the split over threads does
 * not change any bit.  The sums are ordered differently from k_sgemm's, so
 * this is a separate entry point: k_sgemm keeps giving every row of C the
 * same bits whatever M is (callers split M between threads). */
#define GEMV_COLS 64 /* outputs per epilogue pass */
/* Outputs per task unit: the squeeze-excite reduction FC has only 32-64
 * outputs, and with 64 per unit it ran on one thread while the other idled. */
#define GEMV_UNIT 16
/* Multiply-adds per thread below which a second thread costs more than it
 * saves: 16K weights (64 KiB) stream from memory in a few microseconds,
 * against 1-2 us to hand a task to a polling worker. */
#define GEMV_MIN_PER_THREAD 16384.0

/* sum_k a[k] * b[k], in 8 interleaved partial sums added pairwise */
static float gemv_dot(const float *a, const float *b, long K)
{
    long k = 0;
#if defined(__GNUC__) || defined(__clang__)
    if (K >= 8) {
        k_v4 s0 = {0, 0, 0, 0}, s1 = s0;
        for (; k + 8 <= K; k += 8) {
            s0 += ld4(a + k) * ld4(b + k);
            s1 += ld4(a + k + 4) * ld4(b + k + 4);
        }
        s0 += s1;
        float t[4];
        memcpy(t, &s0, sizeof t);
        float r = (t[0] + t[2]) + (t[1] + t[3]);
        for (; k < K; k++) r += a[k] * b[k];
        return r;
    }
#endif
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; k + 8 <= K; k += 8)
        for (int l = 0; l < 8; l++) s[l] += a[k + l] * b[k + l];
    float r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    for (; k < K; k++) r += a[k] * b[k];
    return r;
}

static void gemv_fn(void *arg, int ith, int nth)
{
    const gemm_prob *p = arg;
    const k_epilogue *ep = p->ep;
    long lo, hi;
    env2_range((p->N + GEMV_UNIT - 1) / GEMV_UNIT, ith, nth, &lo, &hi);
    lo *= GEMV_UNIT;
    hi = hi * GEMV_UNIT < p->N ? hi * GEMV_UNIT : p->N;
#if K_HAVE_X86_PATHS
    const int avx2 = k_simd_level() >= K_SIMD_AVX2;
#endif
    /* The dot products of up to GEMV_COLS outputs go to a buffer first
     * (ep->residual may be C), then the epilogue writes C.  The rows of a
     * small batch take turns on the same weight rows, which stay in cache. */
    float d[GEMV_COLS];
    for (long c0 = lo; c0 < hi; c0 += GEMV_COLS) {
        long n = hi - c0 < GEMV_COLS ? hi - c0 : GEMV_COLS;
        for (long r = 0; r < p->M; r++) {
            const float *x = p->A + r * p->lda;
#if K_HAVE_X86_PATHS
            if (avx2) k_gemv_rows_avx2(x, p->B, p->K, c0, c0 + n, d);
            else
#endif
                for (long i = 0; i < n; i++) d[i] = gemv_dot(x, p->B + (c0 + i) * p->ldb, p->K);
            float *y = p->C + r * p->ldc + c0;
            if (ep && !ep->residual && ep->act != K_ACT_NONE) {
                /* the squeeze-excite gates: the sigmoid as one vector pass
                 * (per element, expf was a sixth of an SE) */
                for (long i = 0; i < n; i++)
                    y[i] = d[i] * (ep->scale ? ep->scale[c0 + i] : 1.0f) + (ep->bias ? ep->bias[c0 + i] : 0.0f);
                k_act_rows(ep->act, n, y, y);
            } else if (ep) {
                const float *res = ep->residual ? ep->residual + r * ep->ldr : NULL;
                for (long i = 0; i < n; i++)
                    y[i] = k_epilogue_scalar(d[i], ep->scale ? ep->scale[c0 + i] : 1.0f,
                                             ep->bias ? ep->bias[c0 + i] : 0.0f, ep->act, res ? res[c0 + i] : 0.0f);
            } else {
                memcpy(y, d, (size_t)n * sizeof(float));
            }
        }
    }
}

void k_sgemv(int nt, long N, long K, const float *x, const float *W, float *y, const k_epilogue *ep)
{
    k_sgemv_rows(nt, 1, N, K, x, W, y, ep);
}

void k_sgemv_rows(int nt, long M, long N, long K, const float *X, const float *W, float *Y, const k_epilogue *ep)
{
    if (N <= 0 || M <= 0) return;
    gemm_prob p;
    memset(&p, 0, sizeof p);
    p.M = M;
    p.N = N;
    p.K = K > 0 ? K : 0;
    p.A = X;
    p.lda = p.K;
    p.B = W;
    p.ldb = p.K;
    p.C = Y;
    p.ldc = N;
    p.ep = ep;
    long nb = (N + GEMV_UNIT - 1) / GEMV_UNIT;
    double per = (double)M * (double)N * (double)(p.K ? p.K : 1) / GEMV_MIN_PER_THREAD;
    if (nt < 1) nt = 1;
    if (per < nt) nt = per < 1.0 ? 1 : (int)per;
    k_par_run(nt < nb ? nt : (int)nb, gemv_fn, &p);
}

void k_fc_gemm(int nt, long M, long N, long K, const float *X, const float *W, float *Y, const k_epilogue *ep)
{
    if (M <= K_GEMV_MAX_ROWS) k_sgemv_rows(nt, M, N, K, X, W, Y, ep);
    else k_sgemm(nt, 0, 1, M, N, K, 1.0f, X, K, W, K, 0.0f, Y, N, ep);
}

/* C = beta * C, then the epilogue (alpha == 0 or K == 0), by row ranges. */
static void scale_only_fn(void *arg, int ith, int nth)
{
    const gemm_prob *p = arg;
    const k_epilogue *ep = p->ep;
    long lo, hi;
    env2_range(p->M, ith, nth, &lo, &hi);
    for (long i = lo; i < hi; i++) {
        float *c = p->C + i * p->ldc;
        for (long j = 0; j < p->N; j++) {
            float v = p->beta != 0.0f ? p->beta * c[j] : 0.0f;
            if (ep)
                v = k_epilogue_scalar(v, ep->scale ? ep->scale[j] : 1.0f, ep->bias ? ep->bias[j] : 0.0f, ep->act,
                                      ep->residual ? ep->residual[i * ep->ldr + j] : 0.0f);
            c[j] = v;
        }
    }
}

/* Task v of a pm x pn grid of rectangles of MR x NR tiles.  A row split
 * (pn == 1) over several threads cuts each thread's rows into nu units of
 * urows rows (whole tiles) that the threads steal from each other at the
 * end (env2_steal).  Every unit sweeps all of B: with weights that stay in
 * L2 that costs nothing measurable, so those get many units; bigger
 * weights are read again from L3 by each unit, so those get two units of
 * at least three tiles each, or one (the 7x7 layers at 224: their 0.3 ms
 * grew by 5 % with two units of one tile). */
typedef struct gemm_grid {
    const gemm_prob *p;
    long tm, tn;
    int pm, pn;
    long nu, urows; /* nu == 0: static rectangles */
    long nbj, bcols; /* N blocks per row unit (1, or gemm_rect's blocks of bcols columns) */
    env2_steal st;
} gemm_grid;

#define STEAL_SMALL_B_BYTES (640L * 1024)

static void grid_plan_steal(gemm_grid *g)
{
    const gemm_prob *p = g->p;
    g->nu = 0;
    if (g->pn != 1 || g->pm < 2) return;
    const long MR = p->u->mr, tiles = ((p->M + g->pm - 1) / g->pm + MR - 1) / MR;
    long per = K_STEAL_UNITS;
    g->nbj = 1;
    g->bcols = p->N;
    if ((double)p->K * (double)p->N * sizeof(float) > STEAL_SMALL_B_BYTES) {
        per = tiles >= 6 ? 2 : 1;
        /* Weights in several N blocks (the expansions): a unit is one block
         * for one row unit, and a thread takes its units block by block, so
         * it reads each B block once for both its row units (a row unit over
         * all of N read B once per row unit), and the last units left to
         * steal are a sixth of a thread's work, not half. */
        long nbj = (p->N + p->ncs - 1) / p->ncs;
        if (nbj > 1) {
            const long NR = p->u->nr;
            g->nbj = nbj;
            g->bcols = ((p->N + nbj - 1) / nbj + NR - 1) / NR * NR;
        }
    }
    g->urows = (tiles + per - 1) / per * MR;
    g->nu = ((p->M + g->pm - 1) / g->pm + g->urows - 1) / g->urows;
    env2_steal_init(&g->st, g->nu * g->nbj * g->pm, g->pm);
}

static void gemm_grid_fn(void *arg, int ith, int nth)
{
    gemm_grid *g = arg;
    const gemm_prob *p = g->p;
    const long MR = p->u->mr, NR = p->u->nr;
    long r0, r1, c0, c1;
    (void)nth;
    if (g->nu) {
        /* a thread's rows: equal row counts (a partial tile each) rather than
         * whole tiles, so that they are the positions its neighbours' row
         * splits give it (72 + 72 of 144, not 84 + 60) */
        long u;
        while (env2_steal_next(&g->st, ith, &u)) {
            const long per = g->nu * g->nbj, l = u % per, jb = l / g->nu;
            env2_range(p->M, (int)(u / per), g->pm, &r0, &r1);
            long m0 = r0 + l % g->nu * g->urows, n0 = jb * g->bcols;
            gemm_rect(p, m0, m0 + g->urows < r1 ? m0 + g->urows : r1, n0, n0 + g->bcols < p->N ? n0 + g->bcols : p->N);
        }
        return;
    }
    env2_range(g->tn, ith % g->pn, g->pn, &c0, &c1);
    long n1 = c1 * NR;
    n1 = n1 < p->N ? n1 : p->N;
    env2_range(g->tm, ith / g->pn, g->pm, &r0, &r1);
    long m1 = r1 * MR;
    gemm_rect(p, r0 * MR, m1 < p->M ? m1 : p->M, c0 * NR, n1);
}

long k_gemm_kc(long K)
{
    long nkb = (K + KC_MAX - 1) / KC_MAX;
    return nkb > 0 ? (K + nkb - 1) / nkb : K;
}

static void gemm_run(int nt, gemm_prob *p)
{
    if (p->M <= 0 || p->N <= 0) return;
    const k_epilogue *ep = p->ep;
    if (ep && !ep->scale && !ep->bias && !ep->residual && ep->act == K_ACT_NONE) p->ep = NULL;
    p->u = pick_ukr(p->N);
    nt = threads_for((double)p->M * (double)p->N * (double)(p->K > 0 ? p->K : 1), nt);
    if (p->K <= 0 || p->alpha == 0.0f) {
        k_par_run(nt, scale_only_fn, p);
        return;
    }
    p->kcs = k_gemm_kc(p->K);
    const long MR = p->u->mr, NR = p->u->nr;
    p->ncs = (B_BLOCK_BYTES / (long)sizeof(float) / p->kcs) / NR * NR;
    if (p->ncs < NR) p->ncs = NR;
    gemm_grid g;
    memset(&g, 0, sizeof g);
    g.p = p;
    g.tm = (p->M + MR - 1) / MR;
    g.tn = (p->N + NR - 1) / NR;
    /* the grid may use fewer than nt rectangles; only those become tasks */
    choose_grid(nt, g.tm, g.tn, p, &g.pm, &g.pn);
    grid_plan_steal(&g);
    k_par_run(g.pm * g.pn, gemm_grid_fn, &g);
}

void k_sgemm(int nt, int transA, int transB, long M, long N, long K, float alpha, const float *A, long lda,
             const float *B, long ldb, float beta, float *C, long ldc, const k_epilogue *ep)
{
    gemm_prob p;
    memset(&p, 0, sizeof p);
    p.ta = transA != 0;
    p.tb = transB != 0;
    p.M = M;
    p.N = N;
    p.K = K;
    p.alpha = alpha;
    p.beta = beta;
    p.A = A;
    p.B = B;
    p.lda = lda;
    p.ldb = ldb;
    p.C = C;
    p.ldc = ldc;
    p.ep = ep;
    gemm_run(nt, &p);
}

void k_sgemm_packa(int nt, long M, long N, long K, k_pack_a_fn packa, const void *ctx, const float *B, long ldb,
                   float beta, float *C, long ldc, const k_epilogue *ep)
{
    gemm_prob p;
    memset(&p, 0, sizeof p);
    p.M = M;
    p.N = N;
    p.K = K;
    p.alpha = 1.0f;
    p.beta = beta;
    p.packa = packa;
    p.packa_ctx = ctx;
    p.B = B;
    p.ldb = ldb;
    p.C = C;
    p.ldc = ldc;
    p.ep = ep;
    gemm_run(nt, &p);
}

void k_sgemm_ref(int transA, int transB, long M, long N, long K, float alpha, const float *A, long lda,
                 const float *B, long ldb, float beta, float *C, long ldc, const k_epilogue *ep)
{
    for (long i = 0; i < M; i++) {
        for (long j = 0; j < N; j++) {
            double s = 0;
            for (long k = 0; k < K; k++) {
                float a = transA ? A[k * lda + i] : A[i * lda + k];
                float b = transB ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * (double)b;
            }
            float v = (float)((double)alpha * s);
            if (beta != 0.0f) v = (float)((double)v + (double)beta * (double)C[i * ldc + j]);
            if (ep)
                v = k_epilogue_scalar(v, ep->scale ? ep->scale[j] : 1.0f, ep->bias ? ep->bias[j] : 0.0f, ep->act,
                                      ep->residual ? ep->residual[i * ep->ldr + j] : 0.0f);
            C[i * ldc + j] = v;
        }
    }
}
