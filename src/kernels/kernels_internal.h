/* Private to src/kernels: what the kernel files share with each other but
 * nobody else needs -- the GEMM micro-kernel interface between the blocked
 * driver (gemm.c) and the per-ISA files, and scalar/vector activation helpers
 * so that every kernel computes SiLU and sigmoid the same way. */
#ifndef ENV2_KERNELS_INTERNAL_H
#define ENV2_KERNELS_INTERNAL_H

#include <math.h>
#include <stddef.h>

#include "common.h"
#include "kernels.h"

/* The *_avx512.c / *_avx2.c files are only compiled on x86-64 (Makefile). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define K_HAVE_X86_PATHS 1
#else
#define K_HAVE_X86_PATHS 0
#endif

/* ---- scalar activations (references and generic paths) ------------------- */
static inline float k_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float k_siluf(float x) { return x / (1.0f + expf(-x)); }

/* y = act(scale * y + bias) + residual for one element; s/b/r are the
 * element's scale, bias and residual (1, 0, 0 when absent). */
static inline float k_epilogue_scalar(float y, float s, float b, int act, float r)
{
    y = y * s + b;
    if (act == K_ACT_SILU) y = k_siluf(y);
    else if (act == K_ACT_SIGMOID) y = k_sigmoidf(y);
    return y + r;
}

/* ---- GEMM micro-kernels ----------------------------------------------------
 * A micro-kernel computes one MR x NR tile of C from kc steps:
 *   acc[r][j] = sum_k A(r, k) * B(k, j)     (k in increasing order)
 * and writes rows < mr, columns < nr of C:
 *   first K block:  C = alpha * acc + beta * C  (C not read when beta == 0)
 *   later blocks:   C = C + alpha * acc
 *   last K block:   then the epilogue (scale/bias/act/res, pre-offset to the
 *                   tile's first row/column; NULL when absent).
 * The caller guarantees that all MR rows of A and all NR (or, if nr <= NR/2,
 * NR/2) columns of B are readable, so kernels never mask loads. */
typedef struct k_ukr_args {
    long kc;
    const float *A;  /* A(r, k) = A[r * a_rs + k * a_cs]; a_rs == 1 or a_cs == 1 */
    long a_rs, a_cs;
    const float *B;  /* B(k, j) = B[k * b_ks + j] */
    long b_ks;
    float *C;
    long ldc;
    int mr, nr;
    int first, last;
    float alpha, beta;
    const float *scale, *bias, *res;
    long ldr;
    int act;
    /* A hint, may be NULL: the kc rows pf[k * pf_ks .. + NR) of the B panel
     * the next call will read, to prefetch during this one.  Only the AVX-512
     * kernel's full-width, row-major-A variant acts on it. */
    const float *pf;
    long pf_ks;
} k_ukr_args;

typedef struct k_gemm_ukr {
    int mr, nr;
    void (*run)(const k_ukr_args *a);
    /* 1: always copy B into NR-wide panels.  0: read a row-major B in place
     * when many row tiles share it.  Which is faster depends on the kernel's
     * NR and the CPU's prefetchers, so it is measured per kernel. */
    int pack_b;
} k_gemm_ukr;

extern const k_gemm_ukr k_ukr_generic;
#if K_HAVE_X86_PATHS
extern const k_gemm_ukr k_ukr_avx2;
extern const k_gemm_ukr k_ukr_avx2_n24; /* 4 x 24: N a multiple of 24, not of 16 */
extern const k_gemm_ukr k_ukr_avx512;
#endif

/* The micro-kernel k_sgemm uses for an N columns wide problem at the SIMD
 * level in effect, for kernels that drive it themselves (winograd.c). */
const k_gemm_ukr *k_gemm_pick_ukr(long N);
/* The calling thread's GEMM packing buffer, at least `floats` long (it is
 * kept for the thread's life), or NULL when it cannot be allocated.  Only
 * for code that does not call k_sgemm while using it. */
float *k_gemm_scratch(size_t floats);

/* GEMM whose A operand (M x K, alpha = 1, B not transposed) is produced on
 * demand: pack(ctx, i0, mr, pc, kc, dst) writes rows i0 .. i0+mr-1, columns
 * pc .. pc+kc-1 of A row-major into dst (row stride kc).  Convolutions use it
 * to gather im2col panels straight from the input. */
typedef void (*k_pack_a_fn)(const void *ctx, long i0, int mr, long pc, long kc, float *dst);
void k_sgemm_packa(int nt, long M, long N, long K, k_pack_a_fn pack, const void *ctx, const float *B, long ldb,
                   float beta, float *C, long ldc, const k_epilogue *ep);
/* dst[0..n) = a * b, one multiply per element, so every path gives the
 * same bits: the squeeze-excite scaling (se.c) and the projection's packing
 * of it (conv.c).  The portable loop compiles to the build's baseline (SSE
 * on x86-64); k_vmul_pick returns the widest path in effect, once per call
 * of the kernel that uses it.  The x86 paths are in gemm_avx512.c /
 * gemm_avx2.c. */
typedef void (*k_vmul_fn)(const float *a, const float *b, float *dst, long n);
k_vmul_fn k_vmul_pick(void);
void k_vmul_avx512(const float *a, const float *b, float *dst, long n);
void k_vmul_avx2(const float *a, const float *b, float *dst, long n);
/* sums[c] = x[0][c] + x[1][c] + ... + x[rows-1][c] in row order (float),
 * c < n, rows >= 1, row stride ldx: every path gives the same bits (the
 * pooling's chunk sums, pool_fc.c).  k_colsum_pick as k_vmul_pick. */
typedef void (*k_colsum_fn)(const float *x, long rows, long ldx, long n, float *sums);
k_colsum_fn k_colsum_pick(void);
void k_colsum_avx512(const float *x, long rows, long ldx, long n, float *sums);
void k_colsum_avx2(const float *x, long rows, long ldx, long n, float *sums);
/* The same into double sums, from 0.0 (every path the same bits). */
typedef void (*k_colsum_pd_fn)(const float *x, long rows, long ldx, long n, double *sums);
k_colsum_pd_fn k_colsum_pd_pick(void);
void k_colsum_pd_avx512(const float *x, long rows, long ldx, long n, double *sums);
void k_colsum_pd_avx2(const float *x, long rows, long ldx, long n, double *sums);

/* y[0..N) = epilogue(W x) for one row x[0..K) and W stored [N][K] (an FC
 * at batch 1).  Faster than k_sgemm with M = 1, but its sums are ordered
 * differently, so it must not stand in for a row of a larger k_sgemm.  y
 * must not overlap x or W; ep->residual may equal y. */
void k_sgemv(int nt, long N, long K, const float *x, const float *W, float *y, const k_epilogue *ep);
/* k_sgemv for each of M rows: Y[M][N] = epilogue(X W^T), X [M][K], every row
 * of Y exactly what k_sgemv gives for that row of X (ep->residual rows
 * ep->ldr apart).  For FCs at small batches, where k_sgemm would pack
 * (transpose) all of W for a few rows of work. */
#define K_GEMV_MAX_ROWS 8
void k_sgemv_rows(int nt, long M, long N, long K, const float *X, const float *W, float *Y, const k_epilogue *ep);
/* Y[M][N] = epilogue(X W^T) for an FC, W stored [N][K], X and Y dense: by
 * k_sgemv_rows up to K_GEMV_MAX_ROWS rows, by k_sgemm beyond.  M must be the
 * batch, never a thread's share of it, so that the choice (and the bits)
 * do not depend on the thread count. */
void k_fc_gemm(int nt, long M, long N, long K, const float *X, const float *W, float *Y, const k_epilogue *ep);
#if K_HAVE_X86_PATHS
/* y[c - c0] = x . W[c] (W rows K floats apart) for c in [c0, c1): k_sgemv's
 * dot products with AVX2 (gemm_avx2.c).  y must not overlap x or W. */
void k_gemv_rows_avx2(const float *x, const float *W, long K, long c0, long c1, float *y);
#endif

/* k_sgemm and the convolutions accept ep->residual == C (same pointer and
 * stride: an in-place residual add); any other overlap of residual and C is
 * not allowed. */

/* Test hook: nonzero makes k_sgemm behave as if its packing buffer could not
 * be allocated, so that the fallback path can be compared bit for bit. */
extern int k_gemm_test_no_buffer;
/* Test hook: nonzero makes k_sgemm use one micro-kernel per SIMD level
 * whatever N is (the alternatives must give the same bits). */
extern int k_gemm_test_one_ukr;
/* Tests: nonzero sends few-input-channel convolutions through the GEMM (conv.c). */
extern int k_conv_test_no_direct;
/* Tests: nonzero sends small-map 3x3 depthwise rows through the row sweep
 * instead of the zero-padded band (dwconv_avx512.c; same bits either way). */
extern int k_dw_test_no_band;

/* ---- vector activations for the ISA files -----------------------------------
 * exp(x) by range reduction x = n*ln2 + r and a degree-6 polynomial on
 * |r| <= ln2/2 (Cephes expf coefficients, ~1 ulp).  Clamping first keeps
 * 2^n finite and representable; NaN passes through the min/max because they
 * return their second operand when one is NaN. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline __m512 k_exp512(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(88.8f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}
static inline __m512 k_sigmoid512(__m512 x)
{
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, k_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
static inline __m512 k_silu512(__m512 x)
{
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(x, _mm512_add_ps(one, k_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
/* dy * silu'(x) = dy * s * (1 + x * (1 - s)), s = sigmoid(x), with 1 - s
 * as e*s (no cancellation for large x); min returns its second operand for
 * the NaN of inf*0 (x very negative, where the product is 0 anyway). */
static inline __m512 k_silu_grad512(__m512 x, __m512 dy)
{
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = k_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
    __m512 oms = _mm512_min_ps(_mm512_mul_ps(e, s), one);
    return _mm512_mul_ps(_mm512_mul_ps(dy, s), _mm512_fmadd_ps(x, oms, one));
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
static inline __m256 k_exp256(__m256 x)
{
    /* Without scalef, 2^n is built in the exponent field, so n must stay in
     * the normal range: clamp to [-87.3, 88.7]. */
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), _mm256_min_ps(_mm256_set1_ps(88.7f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
static inline __m256 k_sigmoid256(__m256 x)
{
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, k_exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
static inline __m256 k_silu256(__m256 x)
{
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, k_exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
static inline __m256 k_silu_grad256(__m256 x, __m256 dy)
{
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = k_exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    __m256 oms = _mm256_min_ps(_mm256_mul_ps(e, s), one);
    return _mm256_mul_ps(_mm256_mul_ps(dy, s), _mm256_fmadd_ps(x, oms, one));
}
#endif

/* The kernels' parallel region: fn(arg, ith, nth) for every ith in
 * [0, nth), nth = max(nt, 1), on the library's thread pool (env2_par_run in
 * common.h).  Tasks may run in any order on any thread, so a task must
 * depend on (ith, nth) only -- never on which thread runs it. */
typedef env2_par_fn k_par_fn;
static inline void k_par_run(int nt, k_par_fn fn, void *arg) { env2_par_run(nt, fn, arg); }
/* Rows [0, total) handed out with stealing (env2_steal in common.h) in units
 * of about total / (nth * K_STEAL_UNITS) rows, so that a slow thread leaves a
 * sixth of its share or less to the other, and units stay long enough that
 * claiming them (one atomic each) and their edges (halo rows, a GEMM's B
 * panels) cost little.  One task takes everything as one unit.
 * k_steal_rows_init returns the unit; k_steal_rows_next gives task ith its
 * next rows [*lo, *hi), 0 when none are left. */
enum { K_STEAL_UNITS = 6 };
static inline long k_steal_rows_init(env2_steal *st, long total, int nth)
{
    long u = nth > 1 ? total / ((long)nth * K_STEAL_UNITS) : total;
    if (u < 1) u = 1;
    env2_steal_init(st, (total + u - 1) / u, nth);
    return u;
}
static inline int k_steal_rows_next(env2_steal *st, int ith, long unit, long total, long *lo, long *hi)
{
    long u;
    if (!env2_steal_next(st, ith, &u)) return 0;
    *lo = u * unit;
    *hi = *lo + unit < total ? *lo + unit : total;
    return 1;
}

/* ---- batch-norm row loops of bn_avx512.c / bn_avx2.c --------------------------
 * bn.c owns the row blocks, threading and the choice of path; these run the
 * rows it hands them.  Rows are C floats apart; a reduction covers cn <=
 * K_BN_MAXCN channels from where x points, `chunk` rows at a time summed in
 * float, the chunks added in order in double into s1, s2 [cn] (overwritten):
 *   k_bn_stats:   s1 = sum(x - shift), s2 = sum((x - shift)^2)
 *   k_bn_bwd_red: d = x - mean; without dact, s1 = sum(dy), s2 = sum(dy * d);
 *                 with dact, g = dy * silu'(d * scale + beta) is written to
 *                 dact (same offsets as dy) and s1 = sum(g), s2 = sum(g * d)
 * k_bn_apply: y = act((x - mean) * (gamma * rstd) + beta) over whole rows.
 * k_bn_dx: dx = gamma*rstd*(dy - m1 - (x - mean)*rstd*m2) for channels
 * [c0, c1) (m1, m2 indexed from c0); dx may alias dy. */
enum { K_BN_MAXCN = 128 };
#if K_HAVE_X86_PATHS
void k_bn_stats_avx512(const float *x, long rows, int C, int cn, const float *shift, long chunk, double *s1,
                       double *s2);
void k_bn_stats_avx2(const float *x, long rows, int C, int cn, const float *shift, long chunk, double *s1,
                     double *s2);
void k_bn_bwd_red_avx512(const float *x, const float *dy, float *dact, long rows, int C, int cn, const float *mean,
                         const float *scale, const float *beta, long chunk, double *s1, double *s2);
void k_bn_bwd_red_avx2(const float *x, const float *dy, float *dact, long rows, int C, int cn, const float *mean,
                       const float *scale, const float *beta, long chunk, double *s1, double *s2);
void k_bn_apply_avx512(const float *x, float *y, long rows, int C, const float *mean, const float *gamma,
                       const float *rstd, const float *beta, int act);
void k_bn_apply_avx2(const float *x, float *y, long rows, int C, const float *mean, const float *gamma,
                     const float *rstd, const float *beta, int act);
void k_bn_dx_avx512(const float *x, const float *dy, float *dx, long rows, int C, int c0, int c1, const float *mean,
                    const float *rstd, const float *gamma, const float *m1, const float *m2);
void k_bn_dx_avx2(const float *x, const float *dy, float *dx, long rows, int C, int c0, int c1, const float *mean,
                  const float *rstd, const float *gamma, const float *m1, const float *m2);
#endif

/* ---- dense convolution with few input channels (dwconv_avx512.c / _avx2.c) -----
 * For K = kh*kw*ci <= K_CS_KMAX and co <= K_CS_COMAX (the stem); conv.c owns
 * the threading, the chunks and the choice of path.  The gather writes the
 * im2col rows of output pixels [i, i + n), K floats each, zeros for padding. */
enum { K_CS_KMAX = 32, K_CS_COMAX = 128 };
typedef void (*k_cs_gather_fn)(const k_conv_shape *s, const float *x, long i, long n, float *dst);
/* The K block size the GEMM uses for a problem with this K (a function of K
 * only); kernels that must reproduce a GEMM's sums block by block use it. */
long k_gemm_kc(long K);
#if K_HAVE_X86_PATHS
void k_convs_fwd_avx512(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                        long i0, long i1, k_cs_gather_fn gather);
void k_convs_fwd_avx2(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                      long i0, long i1, k_cs_gather_fn gather);
void k_convs_bwd_weight_avx512(const float *col, long R, int K, const float *dy, long co, float *dw, long v0,
                               long v1, long kcs);
void k_convs_bwd_weight_avx2(const float *col, long R, int K, const float *dy, long co, float *dw, long v0,
                             long v1, long kcs);
#endif

/* SiLU (bwd = 0: y = silu(x)) or its backward (bwd = 1: y = dy * silu'(x))
 * over n values on the calling thread, with the same arithmetic as
 * k_silu_fwd / k_silu_bwd; for kernels that fuse SiLU into a row pass.  y may
 * alias x or dy. */
void k_silu_rows(int bwd, long n, const float *x, const float *dy, float *y);
/* y = act(x) (K_ACT_SILU or K_ACT_SIGMOID; anything else: no-op) over n
 * values on the calling thread, with the vector paths; y may alias x. */
void k_act_rows(int act, long n, const float *x, float *y);

/* For the intrinsics files: register-blocked loops index small arrays of
 * vectors with loop counters, and those only stay in registers when the loops
 * are fully unrolled, which gcc -O2 does not do on its own (UNROLL); AI forces
 * the inlining those loops rely on. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 32")
#else
#define UNROLL
#endif
#if defined(__GNUC__) || defined(__clang__)
#define AI static inline __attribute__((always_inline))
#else
#define AI static inline
#endif

/* gcc -O2 vectorizes the channel loops only when asked (the Makefile passes
 * -fopenmp-simd -DENV2_OMP_SIMD when the compiler accepts it: the simd
 * pragmas alone, no OpenMP runtime); clang does it on its own and warns
 * about the pragma at -O1 */
#if (defined(ENV2_OMP_SIMD) || defined(_OPENMP)) && !defined(__clang__)
#define SIMD_LOOP _Pragma("omp simd")
#else
#define SIMD_LOOP
#endif

#endif
