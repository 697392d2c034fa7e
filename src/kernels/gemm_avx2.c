/* AVX2 + FMA SGEMM micro-kernel: 6 x 16 tile in 12 ymm accumulators.
 *
 * Per k step: two 8-float loads of B, 6 broadcasts of A, 12 FMAs; 12
 * accumulators + 2 B registers + 1 broadcast fit in the 16 ymm registers and
 * cover the FMA latency.  Tiles at most 8 columns wide use a 6 x 8 variant. */
#include "kernels_internal.h"

#include <immintrin.h>

#define MR 6
#define NR 16

#if defined(__GNUC__) || defined(__clang__)
#define K_INLINE static inline __attribute__((always_inline))
#else
#define K_INLINE static inline
#endif

#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* AVX2 has no mask registers: partial columns go through a small copy so
 * that nothing outside the tile is read or written. */
K_INLINE __m256 load_part(const float *p, int n)
{
    if (n >= 8) return _mm256_loadu_ps(p);
    _Alignas(32) float t[8] = {0};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return _mm256_load_ps(t);
}

K_INLINE void store_part(float *p, __m256 v, int n)
{
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    _Alignas(32) float t[8];
    _mm256_store_ps(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}

K_INLINE __m256 finish(const k_ukr_args *a, __m256 acc, const float *c, int r, int j, int n)
{
    __m256 v;
    if (a->first) {
        v = _mm256_mul_ps(_mm256_set1_ps(a->alpha), acc);
        if (a->beta != 0.0f) v = _mm256_fmadd_ps(_mm256_set1_ps(a->beta), load_part(c, n), v);
    } else {
        v = _mm256_fmadd_ps(_mm256_set1_ps(a->alpha), acc, load_part(c, n));
    }
    if (a->last) {
        if (a->scale) v = _mm256_mul_ps(v, load_part(a->scale + j, n));
        if (a->bias) v = _mm256_add_ps(v, load_part(a->bias + j, n));
        if (a->act == K_ACT_SILU) v = k_silu256(v);
        else if (a->act == K_ACT_SIGMOID) v = k_sigmoid256(v);
        if (a->res) v = _mm256_add_ps(v, load_part(a->res + (long)r * a->ldr + j, n));
    }
    return v;
}

static void write_tile(const k_ukr_args *a, const float *tile, int nv)
{
    int n0 = a->nr < 8 ? a->nr : 8, n1 = a->nr - 8;
    for (int r = 0; r < a->mr; r++) {
        float *c = a->C + (long)r * a->ldc;
        store_part(c, finish(a, _mm256_load_ps(tile + r * NR), c, r, 0, n0), n0);
        if (nv == 2 && n1 > 0) store_part(c + 8, finish(a, _mm256_load_ps(tile + r * NR + 8), c + 8, r, 8, n1), n1);
    }
}

#define DECL(r) __m256 c##r##a = _mm256_setzero_ps(), c##r##b = _mm256_setzero_ps();
#define STORE(r)                                                                                                    \
    if (r < R) {                                                                                                    \
        _mm256_store_ps(tile + r * NR, c##r##a);                                                                    \
        if (nv == 2) _mm256_store_ps(tile + r * NR + 8, c##r##b);                                                   \
    }

/* R: rows computed (6, or 4 or 2 for a partial tile of at most that many
 * rows, which would otherwise cost a full one: batch 1 at 224 splits the
 * 49 positions of the 7x7 layers 25 + 24 between two threads, four tiles
 * and one row).  Compile-time after inlining; the rows r >= R drop out, and
 * every output gets the same FMAs in the same order whatever R is. */
K_INLINE void ukr_body(const k_ukr_args *a, const int nv, const int arow, const int R)
{
    ROWS(DECL)
    /* C rows are touched only after the kc loop: fetch them now. */
#define PREFETCH_C(r)                                                                                               \
    if (r < R) {                                                                                                    \
        _mm_prefetch((const char *)(a->C + r * a->ldc), _MM_HINT_T0);                                               \
        _mm_prefetch((const char *)(a->C + r * a->ldc + nv * 8 - 1), _MM_HINT_T0);                                  \
    }
    ROWS(PREFETCH_C)
#undef PREFETCH_C
    const float *A = a->A, *B = a->B;
    const long kc = a->kc, bks = a->b_ks;
    if (arow) {
        const long lda = a->a_rs;
#define FMA_ROW(r)                                                                                                  \
    if (r < R) {                                                                                                    \
        __m256 av = _mm256_broadcast_ss(A + r * lda);                                                               \
        c##r##a = _mm256_fmadd_ps(av, b0, c##r##a);                                                                 \
        if (nv == 2) c##r##b = _mm256_fmadd_ps(av, b1, c##r##b);                                                    \
    }
        for (long k = 0; k < kc; k++) {
            __m256 b0 = _mm256_loadu_ps(B), b1 = b0;
            if (nv == 2) b1 = _mm256_loadu_ps(B + 8);
            ROWS(FMA_ROW)
            A += 1;
            B += bks;
        }
#undef FMA_ROW
    } else {
        const long acs = a->a_cs;
#define FMA_COL(r)                                                                                                  \
    if (r < R) {                                                                                                    \
        __m256 av = _mm256_broadcast_ss(A + r);                                                                     \
        c##r##a = _mm256_fmadd_ps(av, b0, c##r##a);                                                                 \
        if (nv == 2) c##r##b = _mm256_fmadd_ps(av, b1, c##r##b);                                                    \
    }
        for (long k = 0; k < kc; k++) {
            __m256 b0 = _mm256_loadu_ps(B), b1 = b0;
            if (nv == 2) b1 = _mm256_loadu_ps(B + 8);
            ROWS(FMA_COL)
            A += acs;
            B += bks;
        }
#undef FMA_COL
    }
    (void)c0b; (void)c1b; (void)c2b; (void)c3b; (void)c4b; (void)c5b;
    /* A full tile (the common case) is finished straight from the
     * accumulators; with small kc (1x1 convolutions with K = 24..96) the
     * round trip through the stack tile was a sizeable share of the call.
     * Same finish() on the same values, so the same bits. */
    if (a->mr == R && a->nr == nv * 8) {
        float *C = a->C;
        const long ldc = a->ldc;
#define DIRECT(r)                                                                                                   \
    if (r < R) {                                                                                                    \
        float *c = C + r * ldc;                                                                                     \
        _mm256_storeu_ps(c, finish(a, c##r##a, c, r, 0, 8));                                                        \
        if (nv == 2) _mm256_storeu_ps(c + 8, finish(a, c##r##b, c + 8, r, 8, 8));                                  \
    }
        ROWS(DIRECT)
#undef DIRECT
        return;
    }
    _Alignas(32) float tile[MR * NR];
    ROWS(STORE)
    write_tile(a, tile, nv);
}

/* One set of entry points per row count R (6, 4, 2). */
#define UKR_SET(R)                                                                                                  \
    static void ukr_row2_##R(const k_ukr_args *a) { ukr_body(a, 2, 1, R); }                                         \
    static void ukr_row1_##R(const k_ukr_args *a) { ukr_body(a, 1, 1, R); }                                         \
    static void ukr_col2_##R(const k_ukr_args *a) { ukr_body(a, 2, 0, R); }                                         \
    static void ukr_col1_##R(const k_ukr_args *a) { ukr_body(a, 1, 0, R); }                                         \
    static void ukr_##R(const k_ukr_args *a)                                                                        \
    {                                                                                                               \
        int half = a->nr <= NR / 2;                                                                                 \
        if (a->a_cs == 1 && a->a_rs != 1) {                                                                         \
            if (half) ukr_row1_##R(a);                                                                              \
            else ukr_row2_##R(a);                                                                                   \
        } else {                                                                                                    \
            if (half) ukr_col1_##R(a);                                                                              \
            else ukr_col2_##R(a);                                                                                   \
        }                                                                                                           \
    }
UKR_SET(6)
UKR_SET(4)
UKR_SET(2)

static void ukr_avx2(const k_ukr_args *a)
{
    if (a->mr <= 2) ukr_2(a);
    else if (a->mr <= 4) ukr_4(a);
    else ukr_6(a);
}

/* B is always packed.  Read in place, each k step of a 6x16 tile takes one
 * 64-byte row of B at the weights' row stride (N = 96-1536 floats); on the
 * AMD Zen 3 of sessions 6-9 that measured 8-40 % slower than one sequential
 * copy per K block (best of 200 calls, one thread: 9216x192x432 75 -> 81,
 * 576x960x160 73 -> 82, 144x1536x256 55 -> 78 GFLOP/s) and 4.5 % slower
 * over a V2-S forward pass at one thread. */
const k_gemm_ukr k_ukr_avx2 = {MR, NR, ukr_avx2, 1};

/* ---- 4 x 24 variant -----------------------------------------------------------
 * For N a multiple of 24 but not of 16 (24, 72, 120: the 24-channel
 * convolutions of the first stages and their gradients), where the 6 x 16
 * kernel ends every row of tiles in a 6 x 8 half tile whose 6 accumulators
 * cannot cover the FMA latency.  Per k step: three 8-float loads of B, 4
 * broadcasts, 12 FMAs in 12 accumulators (16 ymm registers in all).  The
 * same FMAs in the same k order, and the same finish(), so the same bits as
 * the 6 x 16 kernel. */
#define ROWS4(X) X(0) X(1) X(2) X(3)

K_INLINE void ukr24_body(const k_ukr_args *a, const int arow)
{
#define DECL24(r) __m256 c##r##a = _mm256_setzero_ps(), c##r##b = _mm256_setzero_ps(), c##r##c = _mm256_setzero_ps();
    ROWS4(DECL24)
#undef DECL24
#define PREFETCH_C(r)                                                                                               \
    _mm_prefetch((const char *)(a->C + r * a->ldc), _MM_HINT_T0);                                                   \
    _mm_prefetch((const char *)(a->C + r * a->ldc + 23), _MM_HINT_T0);
    ROWS4(PREFETCH_C)
#undef PREFETCH_C
    const float *A = a->A, *B = a->B;
    const long kc = a->kc, bks = a->b_ks, ars = arow ? a->a_rs : 1, acs = arow ? 1 : a->a_cs;
#define FMA24(r)                                                                                                    \
    {                                                                                                               \
        __m256 av = _mm256_broadcast_ss(A + r * ars);                                                               \
        c##r##a = _mm256_fmadd_ps(av, b0, c##r##a);                                                                 \
        c##r##b = _mm256_fmadd_ps(av, b1, c##r##b);                                                                 \
        c##r##c = _mm256_fmadd_ps(av, b2, c##r##c);                                                                 \
    }
    for (long k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8), b2 = _mm256_loadu_ps(B + 16);
        ROWS4(FMA24)
        A += acs;
        B += bks;
    }
#undef FMA24
    const long ldc = a->ldc;
    if (a->mr == 4 && a->nr == 24) {
#define DIRECT24(r)                                                                                                 \
    {                                                                                                               \
        float *c = a->C + r * ldc;                                                                                  \
        _mm256_storeu_ps(c, finish(a, c##r##a, c, r, 0, 8));                                                        \
        _mm256_storeu_ps(c + 8, finish(a, c##r##b, c + 8, r, 8, 8));                                                \
        _mm256_storeu_ps(c + 16, finish(a, c##r##c, c + 16, r, 16, 8));                                            \
    }
        ROWS4(DIRECT24)
#undef DIRECT24
        return;
    }
    _Alignas(32) float tile[4 * 24];
#define STORE24(r)                                                                                                  \
    _mm256_store_ps(tile + r * 24, c##r##a);                                                                        \
    _mm256_store_ps(tile + r * 24 + 8, c##r##b);                                                                    \
    _mm256_store_ps(tile + r * 24 + 16, c##r##c);
    ROWS4(STORE24)
#undef STORE24
    for (int r = 0; r < a->mr; r++) {
        float *c = a->C + (long)r * ldc;
        for (int j = 0; j < a->nr; j += 8) {
            int n = a->nr - j < 8 ? a->nr - j : 8;
            store_part(c + j, finish(a, _mm256_load_ps(tile + r * 24 + j), c + j, r, j, n), n);
        }
    }
}

static void ukr_avx2_n24(const k_ukr_args *a)
{
    if (a->a_cs == 1 && a->a_rs != 1) ukr24_body(a, 1);
    else ukr24_body(a, 0);
}

const k_gemm_ukr k_ukr_avx2_n24 = {4, 24, ukr_avx2_n24, 1};

/* ---- batch-1 rows: y[c - c0] = x . W[c] for c in [c0, c1) (k_sgemv) --------
 * Four outputs at a time share each 8-float load of x; per output two
 * 8-lane partial sums (even and odd 8-float steps), added and then reduced
 * pairwise, then the K % 8 tail in order.  Fixed per output, so the split
 * over threads does not change a bit. */
static float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void k_gemv_rows_avx2(const float *x, const float *W, long K, long c0, long c1, float *y)
{
    const long K8 = K / 8 * 8;
    long c = c0;
    for (; c + 4 <= c1; c += 4) {
        const float *w0 = W + c * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        long k = 0;
        for (; k + 16 <= K8; k += 16) {
            __m256 xv = _mm256_loadu_ps(x + k), xw = _mm256_loadu_ps(x + k + 8);
            a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + k), a0);
            a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + k), a1);
            a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + k), a2);
            a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + k), a3);
            b0 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(w0 + k + 8), b0);
            b1 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(w1 + k + 8), b1);
            b2 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(w2 + k + 8), b2);
            b3 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(w3 + k + 8), b3);
        }
        if (k < K8) {
            __m256 xv = _mm256_loadu_ps(x + k);
            a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + k), a0);
            a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + k), a1);
            a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + k), a2);
            a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + k), a3);
        }
        float r0 = hsum8(_mm256_add_ps(a0, b0)), r1 = hsum8(_mm256_add_ps(a1, b1)),
              r2 = hsum8(_mm256_add_ps(a2, b2)), r3 = hsum8(_mm256_add_ps(a3, b3));
        for (k = K8; k < K; k++) {
            r0 += x[k] * w0[k];
            r1 += x[k] * w1[k];
            r2 += x[k] * w2[k];
            r3 += x[k] * w3[k];
        }
        y[c - c0] = r0;
        y[c - c0 + 1] = r1;
        y[c - c0 + 2] = r2;
        y[c - c0 + 3] = r3;
    }
    for (; c < c1; c++) {
        const float *w0 = W + c * K;
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;
        long k = 0;
        for (; k + 16 <= K8; k += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w0 + k), a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(w0 + k + 8), b0);
        }
        if (k < K8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w0 + k), a0);
        float r0 = hsum8(_mm256_add_ps(a0, b0));
        for (k = K8; k < K; k++) r0 += x[k] * w0[k];
        y[c - c0] = r0;
    }
}

/* dst = a * b elementwise; see k_vmul_avx512. */
void k_vmul_avx2(const float *a, const float *b, float *dst, long n)
{
    long k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_mul_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k)));
    for (; k < n; k++) dst[k] = a[k] * b[k];
}

/* k_colsum_avx512 at 8 lanes: four ymm of sums in registers down the rows. */
void k_colsum_avx2(const float *x, long rows, long ldx, long n, float *sums)
{
    long c = 0;
    for (; c + 32 <= n; c += 32) {
        const float *p = x + c;
        __m256 s0 = _mm256_loadu_ps(p), s1 = _mm256_loadu_ps(p + 8), s2 = _mm256_loadu_ps(p + 16),
               s3 = _mm256_loadu_ps(p + 24);
        for (long r = 1; r < rows; r++) {
            p += ldx;
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + 24));
        }
        _mm256_storeu_ps(sums + c, s0);
        _mm256_storeu_ps(sums + c + 8, s1);
        _mm256_storeu_ps(sums + c + 16, s2);
        _mm256_storeu_ps(sums + c + 24, s3);
    }
    for (; c + 8 <= n; c += 8) {
        const float *p = x + c;
        __m256 s0 = _mm256_loadu_ps(p);
        for (long r = 1; r < rows; r++) {
            p += ldx;
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p));
        }
        _mm256_storeu_ps(sums + c, s0);
    }
    for (; c < n; c++) {
        float v = x[c];
        for (long r = 1; r < rows; r++) v += x[r * ldx + c];
        sums[c] = v;
    }
}

/* k_colsum_pd_avx512 at 4 doubles a register. */
void k_colsum_pd_avx2(const float *x, long rows, long ldx, long n, double *sums)
{
    long c = 0;
    for (; c + 16 <= n; c += 16) {
        const float *p = x + c;
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
        for (long r = 0; r < rows; r++, p += ldx) {
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm_loadu_ps(p)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm_loadu_ps(p + 4)));
            s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm_loadu_ps(p + 8)));
            s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm_loadu_ps(p + 12)));
        }
        _mm256_storeu_pd(sums + c, s0);
        _mm256_storeu_pd(sums + c + 4, s1);
        _mm256_storeu_pd(sums + c + 8, s2);
        _mm256_storeu_pd(sums + c + 12, s3);
    }
    for (; c < n; c++) {
        double v = 0.0;
        for (long r = 0; r < rows; r++) v += x[r * ldx + c];
        sums[c] = v;
    }
}
