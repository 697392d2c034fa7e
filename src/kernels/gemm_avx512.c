/* AVX-512 SGEMM micro-kernel: 14 x 32 tile in 28 zmm accumulators.
 *
 * Per k step: two 16-float loads of B, 14 broadcasts of A (folded into the
 * FMA as embedded broadcasts when A is k-contiguous), 28 FMAs.  28
 * independent accumulators cover the FMA latency on two pipes with room to
 * spare, and 28 + 2 B registers + 1 broadcast fit in the 32 zmm registers.
 * Narrow tiles use variants so that matrices with N = 24, 48, ... do not pay
 * for empty columns: 14 x 16 (one zmm per row) and 14 x 24 (one zmm + one
 * ymm per row; a ymm FMA takes half the FMA throughput of a zmm one on cores
 * that split zmm operations into two 256-bit halves, and no more elsewhere). */
#include "kernels_internal.h"

#include <immintrin.h>

#define MR 14
#define NR 32
/* B read in place with rows more than 4 KiB apart (N >= 1024: the 12x12
 * and 7x7 expansions and the head) gets each row into L1 PF_L1_ROWS k steps
 * ahead.  Every row is then a new page, which the hardware's stride
 * prefetcher does not follow.  On the Intel machine of session 20, one
 * thread, A fixed and 1.5 MB of B rotating through L2 (kc 256, N 1536):
 * 141.6 -> 164 GFLOP/s (8 alternations; 4, 6 and 8 rows ahead alike), N 960
 * unchanged, so narrower strides are left to the hardware. */
#define PF_L1_ROWS 6
#define PF_L1_MIN_STRIDE 1023

#if defined(__GNUC__) || defined(__clang__)
#define K_INLINE static inline __attribute__((always_inline))
#else
#define K_INLINE static inline
#endif

/* Row r of a row-major A panel is (r % 3) rows past the pointer of group
 * r / 3 (ukr_body's A0 .. A12); r is a literal, so the choice folds away. */
#define AROW(r) ((r) < 3 ? A0 : (r) < 6 ? A3 : (r) < 9 ? A6 : (r) < 12 ? A9 : A12)[((r) % 3) * lda]
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)

static __mmask16 col_mask(int n)
{
    if (n >= 16) return (__mmask16)0xFFFF;
    if (n <= 0) return (__mmask16)0;
    return (__mmask16)((1u << n) - 1u);
}

/* Combines the accumulator row with C and applies the epilogue, for the
 * columns in mask m starting at column j of the tile. */
K_INLINE __m512 finish(const k_ukr_args *a, __m512 acc, const float *c, int r, int j, __mmask16 m)
{
    __m512 v;
    if (a->first) {
        v = _mm512_mul_ps(_mm512_set1_ps(a->alpha), acc);
        if (a->beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(a->beta), _mm512_maskz_loadu_ps(m, c), v);
    } else {
        v = _mm512_fmadd_ps(_mm512_set1_ps(a->alpha), acc, _mm512_maskz_loadu_ps(m, c));
    }
    if (a->last) {
        if (a->scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, a->scale + j));
        if (a->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a->bias + j));
        if (a->act == K_ACT_SILU) v = k_silu512(v);
        else if (a->act == K_ACT_SIGMOID) v = k_sigmoid512(v);
        if (a->res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a->res + (long)r * a->ldr + j));
    }
    return v;
}

/* The accumulators go through a small aligned tile on the stack so that the
 * write-out can loop over the mr valid rows; it costs 28 stores and loads
 * against 28*kc FMAs. */
static void write_tile(const k_ukr_args *a, const float *tile, int nv)
{
    __mmask16 m0 = col_mask(a->nr), m1 = col_mask(a->nr - 16);
    for (int r = 0; r < a->mr; r++) {
        float *c = a->C + (long)r * a->ldc;
        __m512 v = finish(a, _mm512_maskz_load_ps(m0, tile + r * NR), c, r, 0, m0);
        _mm512_mask_storeu_ps(c, m0, v);
        if (nv > 1 && m1) {
            v = finish(a, _mm512_maskz_load_ps(m1, tile + r * NR + 16), c + 16, r, 16, m1);
            _mm512_mask_storeu_ps(c + 16, m1, v);
        }
    }
}

/* nv: 1 = 16 columns, 2 = 32 columns, 3 = 24 columns (zmm + ymm). */
#define DECL(r)                                                                                                     \
    __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps();                                            \
    __m256 c##r##h = _mm256_setzero_ps();
#define STORE(r)                                                                                                    \
    if (r < R) {                                                                                                    \
        _mm512_store_ps(tile + r * NR, c##r##a);                                                                    \
        if (nv == 2) _mm512_store_ps(tile + r * NR + 16, c##r##b);                                                  \
        if (nv == 3) _mm256_store_ps(tile + r * NR + 16, c##r##h);                                                  \
    }

/* arow: A is row-major (A(r,k) = A[r*a_rs + k]); otherwise k-contiguous
 * (A(r,k) = A[r + k*a_cs]).  R: rows computed (14, or 8 or 4 for a partial
 * tile of at most that many rows, which would otherwise cost a full one: a
 * thread's 72 rows of a 12x12 map are 5 tiles of 14 and one of 2).  All are
 * compile-time after inlining; the rows r >= R drop out. */
K_INLINE void ukr_body(const k_ukr_args *a, const int nv, const int arow, const int pfon, const int pfl1, const int R)
{
    ROWS(DECL)
    /* C rows are touched only after the kc loop: fetching them now hides the
     * miss (measured 5-8% on 1x1-convolution shapes). */
#define PREFETCH_C(r)                                                                                               \
    if (r < R) {                                                                                                    \
        _mm_prefetch((const char *)(a->C + r * a->ldc), _MM_HINT_T0);                                               \
        if (nv != 1) _mm_prefetch((const char *)(a->C + r * a->ldc + 16), _MM_HINT_T0);                             \
    }
    ROWS(PREFETCH_C)
#undef PREFETCH_C
    const float *A = a->A, *B = a->B, *P = a->pf;
    const long kc = a->kc, bks = a->b_ks, pks = a->pf_ks;
    if (arow) {
        const long lda = a->a_rs;
        /* Rows 3q .. 3q + 2 from one pointer each, at offsets 0, lda, 2 lda:
         * five pointers and lda fit in registers, where 14 row offsets did
         * not (GCC reloaded eight of them from the stack every k step). */
        const float *A0 = A, *A3 = R > 3 ? A + 3 * lda : A, *A6 = R > 6 ? A + 6 * lda : A;
        const float *A9 = R > 9 ? A + 9 * lda : A, *A12 = R > 12 ? A + 12 * lda : A;
#define FMA_ROW(r)                                                                                                  \
    if (r < R) {                                                                                                    \
        __m512 av = _mm512_set1_ps(AROW(r));                                                                        \
        c##r##a = _mm512_fmadd_ps(av, b0, c##r##a);                                                                 \
        if (nv == 2) c##r##b = _mm512_fmadd_ps(av, b1, c##r##b);                                                    \
        if (nv == 3) c##r##h = _mm256_fmadd_ps(_mm512_castps512_ps256(av), bh, c##r##h);                            \
    }
        for (long k = 0; k < kc; k++) {
            __m512 b0 = _mm512_loadu_ps(B), b1 = b0;
            __m256 bh = _mm512_castps512_ps256(b0);
            if (nv == 2) b1 = _mm512_loadu_ps(B + 16);
            if (nv == 3) bh = _mm256_loadu_ps(B + 16);
            if (pfon) {
                /* into L2: a panel of kc rows is as large as L1 */
                _mm_prefetch((const char *)P, _MM_HINT_T1);
                _mm_prefetch((const char *)(P + 16), _MM_HINT_T1);
                P += pks;
            }
            if (pfl1 && k + PF_L1_ROWS < kc) {
                /* B read in place at a row stride beyond what the hardware's
                 * stride prefetcher follows: the row PF_L1_ROWS ahead into L1
                 * (within the panel, so that no pointer leaves B) */
                _mm_prefetch((const char *)(B + PF_L1_ROWS * bks), _MM_HINT_T0);
                _mm_prefetch((const char *)(B + PF_L1_ROWS * bks + 16), _MM_HINT_T0);
            }
            ROWS(FMA_ROW)
            A0 += 1;
            A3 += 1;
            A6 += 1;
            A9 += 1;
            A12 += 1;
            B += bks;
        }
#undef FMA_ROW
    } else {
        const long acs = a->a_cs;
#define FMA_COL(r)                                                                                                  \
    if (r < R) {                                                                                                    \
        __m512 av = _mm512_set1_ps(A[r]);                                                                           \
        c##r##a = _mm512_fmadd_ps(av, b0, c##r##a);                                                                 \
        if (nv == 2) c##r##b = _mm512_fmadd_ps(av, b1, c##r##b);                                                    \
        if (nv == 3) c##r##h = _mm256_fmadd_ps(_mm512_castps512_ps256(av), bh, c##r##h);                            \
    }
        for (long k = 0; k < kc; k++) {
            __m512 b0 = _mm512_loadu_ps(B), b1 = b0;
            __m256 bh = _mm512_castps512_ps256(b0);
            if (nv == 2) b1 = _mm512_loadu_ps(B + 16);
            if (nv == 3) bh = _mm256_loadu_ps(B + 16);
            ROWS(FMA_COL)
            A += acs;
            B += bks;
        }
#undef FMA_COL
    }
    if (a->mr == R && a->nr == (nv == 1 ? 16 : nv == 3 ? 24 : 32)) {
        /* Full tile: finish straight from the registers. */
        const __mmask16 mh = nv == 3 ? (__mmask16)0xFF : (__mmask16)0xFFFF;
        float *C = a->C;
        const long ldc = a->ldc;
#define FINISH(r)                                                                                                   \
    if (r < R) {                                                                                                    \
        _mm512_storeu_ps(C + r * ldc, finish(a, c##r##a, C + r * ldc, r, 0, (__mmask16)0xFFFF));                    \
        if (nv == 2)                                                                                                \
            _mm512_storeu_ps(C + r * ldc + 16, finish(a, c##r##b, C + r * ldc + 16, r, 16, (__mmask16)0xFFFF));     \
        if (nv == 3)                                                                                                \
            _mm512_mask_storeu_ps(C + r * ldc + 16, mh,                                                             \
                                  finish(a, _mm512_castps256_ps512(c##r##h), C + r * ldc + 16, r, 16, mh));         \
    }
        ROWS(FINISH)
#undef FINISH
        return;
    }
    _Alignas(64) float tile[MR * NR];
    ROWS(STORE)
    write_tile(a, tile, nv);
}

/* One set of entry points per row count R (14, 8, 4). */
#define UKR_SET(R)                                                                                                  \
    static void ukr_row1_##R(const k_ukr_args *a) { ukr_body(a, 1, 1, 0, 0, R); }                                   \
    /* a->pf comes with full-width tiles of B read in place, where A is row-major */                                \
    static void ukr_row2_##R(const k_ukr_args *a)                                                                   \
    {                                                                                                               \
        const int far = a->b_ks > PF_L1_MIN_STRIDE;                                                                 \
        if (a->pf) {                                                                                                \
            if (far) ukr_body(a, 2, 1, 1, 1, R);                                                                    \
            else ukr_body(a, 2, 1, 1, 0, R);                                                                        \
        } else {                                                                                                    \
            if (far) ukr_body(a, 2, 1, 0, 1, R);                                                                    \
            else ukr_body(a, 2, 1, 0, 0, R);                                                                        \
        }                                                                                                           \
    }                                                                                                               \
    static void ukr_row3_##R(const k_ukr_args *a) { ukr_body(a, 3, 1, 0, 0, R); }                                   \
    static void ukr_col1_##R(const k_ukr_args *a) { ukr_body(a, 1, 0, 0, 0, R); }                                   \
    static void ukr_col2_##R(const k_ukr_args *a) { ukr_body(a, 2, 0, 0, 0, R); }                                   \
    static void ukr_col3_##R(const k_ukr_args *a) { ukr_body(a, 3, 0, 0, 0, R); }                                   \
    static void ukr_##R(const k_ukr_args *a)                                                                        \
    {                                                                                                               \
        int nv = a->nr <= 16 ? 1 : a->nr <= 24 ? 3 : 2;                                                             \
        if (a->a_cs == 1 && a->a_rs != 1) {                                                                         \
            if (nv == 1) ukr_row1_##R(a);                                                                           \
            else if (nv == 3) ukr_row3_##R(a);                                                                      \
            else ukr_row2_##R(a);                                                                                   \
        } else {                                                                                                    \
            if (nv == 1) ukr_col1_##R(a);                                                                           \
            else if (nv == 3) ukr_col3_##R(a);                                                                      \
            else ukr_col2_##R(a);                                                                                   \
        }                                                                                                           \
    }
UKR_SET(14)
UKR_SET(8)
UKR_SET(4)

/* Each output element gets the same FMAs in the same order whatever R is,
 * so the row count of the variant never changes a bit. */
static void ukr_avx512(const k_ukr_args *a)
{
    if (a->mr > 8) ukr_14(a);
    else if (a->mr > 4) ukr_8(a);
    else ukr_4(a);
}

const k_gemm_ukr k_ukr_avx512 = {MR, NR, ukr_avx512, 0};

/* dst = a * b elementwise (the squeeze-excite gate applied while packing a
 * GEMM panel; k_conv1x1_gated_fwd).  One multiply per element, as the
 * portable loop, so the same bits. */
void k_vmul_avx512(const float *a, const float *b, float *dst, long n)
{
    long k = 0;
    for (; k + 16 <= n; k += 16)
        _mm512_storeu_ps(dst + k, _mm512_mul_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k)));
    if (k < n) {
        __mmask16 m = col_mask((int)(n - k));
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k));
        _mm512_mask_storeu_ps(dst + k, m, v);
    }
}

/* Four zmm of column sums stay in registers down all the rows: the portable
 * loop kept its sums in memory at SSE width, and the squeeze-excite pooling
 * of a 24x24x960 map took 66 us on one thread. */
void k_colsum_avx512(const float *x, long rows, long ldx, long n, float *sums)
{
    long c = 0;
    for (; c + 64 <= n; c += 64) {
        const float *p = x + c;
        __m512 s0 = _mm512_loadu_ps(p), s1 = _mm512_loadu_ps(p + 16), s2 = _mm512_loadu_ps(p + 32),
               s3 = _mm512_loadu_ps(p + 48);
        for (long r = 1; r < rows; r++) {
            p += ldx;
            s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p));
            s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + 16));
            s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + 32));
            s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + 48));
        }
        _mm512_storeu_ps(sums + c, s0);
        _mm512_storeu_ps(sums + c + 16, s1);
        _mm512_storeu_ps(sums + c + 32, s2);
        _mm512_storeu_ps(sums + c + 48, s3);
    }
    for (; c < n; c += 16) {
        __mmask16 m = col_mask((int)(n - c));
        const float *p = x + c;
        __m512 s0 = _mm512_maskz_loadu_ps(m, p);
        for (long r = 1; r < rows; r++) {
            p += ldx;
            s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, p));
        }
        _mm512_mask_storeu_ps(sums + c, m, s0);
    }
}

/* k_colsum_avx512 into double sums (the pooling's combining pass). */
void k_colsum_pd_avx512(const float *x, long rows, long ldx, long n, double *sums)
{
    long c = 0;
    for (; c + 32 <= n; c += 32) {
        const float *p = x + c;
        __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
        for (long r = 0; r < rows; r++, p += ldx) {
            s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(p)));
            s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(p + 8)));
            s2 = _mm512_add_pd(s2, _mm512_cvtps_pd(_mm256_loadu_ps(p + 16)));
            s3 = _mm512_add_pd(s3, _mm512_cvtps_pd(_mm256_loadu_ps(p + 24)));
        }
        _mm512_storeu_pd(sums + c, s0);
        _mm512_storeu_pd(sums + c + 8, s1);
        _mm512_storeu_pd(sums + c + 16, s2);
        _mm512_storeu_pd(sums + c + 24, s3);
    }
    for (; c < n; c += 8) {
        __mmask8 m = (__mmask8)(n - c >= 8 ? 0xFF : (1u << (n - c)) - 1);
        const float *p = x + c;
        __m512d s0 = _mm512_setzero_pd();
        for (long r = 0; r < rows; r++, p += ldx)
            s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, p)));
        _mm512_mask_storeu_pd(sums + c, m, s0);
    }
}
