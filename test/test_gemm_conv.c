/* SGEMM and dense convolution against their references, on every SIMD path,
 * with bit-identity across thread counts and across the packing fallback.
 * ENV2_BENCH=1 additionally prints GFLOP/s on network shapes. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"
#include "kernels/kernels_internal.h"

/* ---- helpers ------------------------------------------------------------------ */
static int same_bits(const float *a, const float *b, long n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

static int levels[3], nlevels;
static void find_levels(void)
{
    int d = k_simd_detect();
    nlevels = 0;
    for (int l = K_SIMD_GENERIC; l <= d; l++) levels[nlevels++] = l;
}

/* ---- GEMM ------------------------------------------------------------------------ */
typedef struct gcase {
    long M, N, K;
} gcase;

/* |C - ref| <= tol_ij, where tol_ij bounds float rounding of the sum of
 * |alpha a b| terms and the beta term (activations are 1.1-Lipschitz). */
static int gemm_close(long M, long N, long K, int ta, int tb, float alpha, const float *A, long lda,
                      const float *B, long ldb, float beta, const float *C0, long ldc, const k_epilogue *ep,
                      const float *got, const float *ref, double *worst)
{
    int ok = 1;
    for (long i = 0; i < M; i++)
        for (long j = 0; j < N; j++) {
            double s = 0;
            for (long k = 0; k < K; k++) {
                float a = ta ? A[k * lda + i] : A[i * lda + k];
                float b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += fabs((double)a * b);
            }
            s = fabs(alpha) * s + (beta != 0.0f ? fabs(beta * C0[i * ldc + j]) : 0.0);
            if (ep && ep->scale) s *= fabs(ep->scale[j]) * 1.1;
            double extra = 0;
            if (ep && ep->bias) extra += fabs(ep->bias[j]);
            if (ep && ep->residual) extra += fabs(ep->residual[i * ep->ldr + j]);
            /* about twice the worst-case float rounding of a K-term sum, plus
             * a few ulp for the epilogue's exp and additions */
            double tol = 1.2e-7 * (double)(K + 4) * s + 1e-6 * fabs(ref[i * ldc + j]) + 2e-7 * extra + 1e-30;
            double d = fabs((double)got[i * ldc + j] - ref[i * ldc + j]);
            if (!(d <= tol)) ok = 0;
            if (d / tol > *worst || d != d) *worst = d != d ? INFINITY : d / tol;
        }
    return ok;
}

static void test_gemm_case(long M, long N, long K, int ta, int tb, float alpha, float beta, int epk, int pad)
{
    long lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    long arows = ta ? K : M, brows = tb ? N : K;
    float *A = frandom(arows * lda), *B = frandom(brows * ldb);
    float *C0 = frandom(M * ldc);
    float *scale = frandom(N), *bias = frandom(N), *res = frandom(M * (N + 3));
    k_epilogue ep = {0};
    if (epk == 1) ep = (k_epilogue){scale, bias, K_ACT_SILU, NULL, 0};
    if (epk == 2) ep = (k_epilogue){NULL, bias, K_ACT_SIGMOID, res, N + 3};
    if (epk == 3) ep = (k_epilogue){scale, NULL, K_ACT_NONE, res, N + 3};
    const k_epilogue *epp = epk ? &ep : NULL;
    if (beta == 0.0f)
        for (long i = 0; i < M * ldc; i++) C0[i] = NAN;
    /* padding columns of C must survive */
    for (long i = 0; i < M; i++)
        for (long j = N; j < ldc; j++) C0[i * ldc + j] = 12345.0f;
    float *ref = fcopy(C0, M * ldc);
    k_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc, epp);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        float *c1 = fcopy(C0, M * ldc), *c2 = fcopy(C0, M * ldc), *c3 = fcopy(C0, M * ldc);
        k_sgemm(1, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c1, ldc, epp);
        k_sgemm(2, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c2, ldc, epp);
        k_gemm_test_no_buffer = 1;
        k_sgemm(2, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c3, ldc, epp);
        k_gemm_test_no_buffer = 0;
        float *c4 = fcopy(C0, M * ldc);
        k_sgemm(3, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c4, ldc, epp);
        CHECK_MSG(same_bits(c1, c4, M * ldc), "%s nt=1 vs nt=3 differ M=%ld N=%ld K=%ld ta=%d tb=%d",
                  k_simd_name(levels[li]), M, N, K, ta, tb);
        free(c4);
        double worst = 0;
        int ok = gemm_close(M, N, K, ta, tb, alpha, A, lda, B, ldb, beta, C0, ldc, epp, c1, ref, &worst);
        CHECK_MSG(ok, "%s M=%ld N=%ld K=%ld ta=%d tb=%d alpha=%g beta=%g ep=%d: err/tol %.3g",
                  k_simd_name(levels[li]), M, N, K, ta, tb, alpha, beta, epk, worst);
        CHECK_MSG(same_bits(c1, c2, M * ldc), "%s nt=1 vs nt=2 differ M=%ld N=%ld K=%ld ta=%d tb=%d",
                  k_simd_name(levels[li]), M, N, K, ta, tb);
        CHECK_MSG(same_bits(c1, c3, M * ldc), "%s packed vs fallback differ M=%ld N=%ld K=%ld ta=%d tb=%d",
                  k_simd_name(levels[li]), M, N, K, ta, tb);
        if (N % 24 == 0 && N % 16 != 0) {
            /* the AVX2 4 x 24 kernel against the 6 x 16 one it stands in for */
            float *c5 = fcopy(C0, M * ldc);
            k_gemm_test_one_ukr = 1;
            k_sgemm(2, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, c5, ldc, epp);
            k_gemm_test_one_ukr = 0;
            CHECK_MSG(same_bits(c1, c5, M * ldc), "%s N=24k kernel vs default differ M=%ld N=%ld K=%ld ta=%d tb=%d",
                      k_simd_name(levels[li]), M, N, K, ta, tb);
            free(c5);
        }
        int pad_ok = 1;
        for (long i = 0; i < M; i++)
            for (long j = N; j < ldc; j++) pad_ok &= c1[i * ldc + j] == 12345.0f && c2[i * ldc + j] == 12345.0f;
        CHECK_MSG(pad_ok, "C padding overwritten M=%ld N=%ld K=%ld", M, N, K);
        free(c1);
        free(c2);
        free(c3);
    }
    k_simd_force(K_SIMD_AVX512);
    free(A);
    free(B);
    free(C0);
    free(scale);
    free(bias);
    free(res);
    free(ref);
}

static void test_gemm_ref_hand(void)
{
    /* [1 2 3; 4 5 6] * [1 0; 0 1; 1 1] = [4 5; 10 11] */
    const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, At[6] = {1, 4, 2, 5, 3, 6},
                Bt[6] = {1, 0, 1, 0, 1, 1};
    float C[4] = {1, 1, 1, 1};
    k_sgemm_ref(0, 0, 2, 2, 3, 2.0f, A, 3, B, 2, 0.5f, C, 2, NULL);
    CHECK(C[0] == 8.5f && C[1] == 10.5f && C[2] == 20.5f && C[3] == 22.5f);
    float D[4] = {NAN, NAN, NAN, NAN};
    k_sgemm_ref(1, 1, 2, 2, 3, 1.0f, At, 2, Bt, 3, 0.0f, D, 2, NULL);
    CHECK(D[0] == 4 && D[1] == 5 && D[2] == 10 && D[3] == 11);
    const float sc[2] = {2, -1}, bi[2] = {1, 0}, rs[4] = {0.5f, 0.25f, 1, 2};
    k_epilogue ep = {sc, bi, K_ACT_NONE, rs, 2};
    k_sgemm_ref(0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, D, 2, &ep);
    CHECK(D[0] == 9.5f && D[1] == -4.75f && D[2] == 22 && D[3] == -9);
    /* and the fast path on the same data */
    float E[4] = {NAN, NAN, NAN, NAN};
    k_sgemm(1, 0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, E, 2, &ep);
    CHECK(E[0] == 9.5f && E[1] == -4.75f && E[2] == 22 && E[3] == -9);
}

static void test_gemm_all(void)
{
    static const gcase cases[] = {
        {1, 1, 1},    {1, 7, 13},    {7, 1, 33},   {13, 13, 7},   {7, 33, 13},   {33, 7, 1},    {14, 32, 16},
        {15, 33, 17}, {29, 17, 64},  {33, 65, 33}, {28, 48, 100}, {43, 24, 216}, {100, 9, 385}, {5, 100, 800},
        {57, 40, 3},  {6, 16, 1},    {3, 70, 11},  {70, 3, 29},   {16, 16, 16},  {13, 47, 384}, {2, 8, 769},
        /* N a multiple of 24 and not of 16: the AVX2 4 x 24 kernel */
        {7, 72, 400}, {4, 120, 5},   {9, 24, 777},
    };
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    int v = 0;
    for (int c = 0; c < nc; c++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                /* rotate alpha/beta/epilogue/padding across the cases */
                static const float alphas[] = {1.0f, -0.5f, 2.0f}, betas[] = {0.0f, 1.0f, 0.3f};
                test_gemm_case(cases[c].M, cases[c].N, cases[c].K, ta, tb, alphas[v % 3], betas[(v / 3) % 3], v % 4,
                               (v % 5 == 0) ? 0 : 3);
                v++;
            }
    /* crossing the N block (ncs ~ 320 columns at kc = 384) and several K blocks, with 2 threads splitting */
    test_gemm_case(61, 700, 400, 0, 0, 1.0f, 0.0f, 1, 0);
    /* a plain product split by rows gives each thread 31 or 30 rows (a
     * thread boundary inside a tile); one whose weights outweigh its
     * activations 11x is split by columns instead (choose_grid) */
    test_gemm_case(61, 700, 400, 0, 0, -0.5f, 0.3f, 3, 2);
    test_gemm_case(45, 1000, 1000, 0, 0, 1.0f, 0.0f, 1, 1);
    /* batch 1 at 7x7 against weights over 1 MiB (the last stage's expansion
     * and projection at 224): split by columns whatever the ratio */
    test_gemm_case(49, 1536, 256, 0, 0, 1.0f, 0.0f, 1, 0);
    test_gemm_case(49, 256, 1536, 0, 0, 1.0f, 0.0f, 3, 2);
    /* 12x12: by rows, weights over 640 KiB in three N blocks, so the stolen
     * units are (row unit, N block) pairs (grid_plan_steal) */
    test_gemm_case(144, 1536, 256, 0, 0, 1.0f, 0.0f, 1, 0);
    test_gemm_case(300, 130, 1000, 1, 0, 1.0f, 1.0f, 0, 5);
    test_gemm_case(140, 650, 390, 0, 1, 0.5f, 0.0f, 2, 1);
    test_gemm_case(9, 700, 50, 1, 1, 1.0f, 0.0f, 3, 0);
    /* alpha == 0 and K == 0: C = beta * C, then the epilogue */
    test_gemm_case(13, 17, 0, 0, 0, 1.0f, 0.5f, 1, 2);
    test_gemm_case(13, 17, 9, 0, 0, 0.0f, 0.5f, 3, 2);
}

/* k_sgemv (batch-1 FCs, W stored [N][K]): against the reference on odd
 * shapes, every epilogue kind, 1-3 threads bit-identical, the residual in
 * place, and nothing written past N. */
static void test_gemv_case(long N, long K, int epk)
{
    float *x = frandom(K > 0 ? K : 1), *B = frandom(N * (K > 0 ? K : 1));
    float *scale = frandom(N), *bias = frandom(N), *res = frandom(N);
    k_epilogue ep = {0};
    if (epk == 1) ep = (k_epilogue){scale, bias, K_ACT_SILU, NULL, 0};
    if (epk == 2) ep = (k_epilogue){NULL, bias, K_ACT_SIGMOID, res, 0};
    if (epk == 3) ep = (k_epilogue){scale, NULL, K_ACT_NONE, res, 0};
    if (epk == 4) ep = (k_epilogue){NULL, bias, K_ACT_SIGMOID, NULL, 0}; /* the SE gate */
    const k_epilogue *epp = epk ? &ep : NULL;
    float *ref = frandom(N + 1), *y[3];
    float *C0 = fcopy(ref, N + 1);
    k_sgemm_ref(0, 1, 1, N, K, 1.0f, x, K, B, K, 0.0f, ref, N, epp);
    double worst = 0;
    for (int t = 0; t < 3; t++) {
        y[t] = frandom(N + 1);
        y[t][N] = 777.0f;
        k_sgemv(t + 1, N, K, x, B, y[t], epp);
    }
    CHECK_MSG(gemm_close(1, N, K, 0, 1, 1.0f, x, K, B, K, 0.0f, C0, N, epp, y[0], ref, &worst),
              "sgemv N=%ld K=%ld ep=%d: err/tol %.3g", N, K, epk, worst);
    CHECK_MSG(same_bits(y[0], y[1], N) && same_bits(y[0], y[2], N), "sgemv N=%ld K=%ld: threads differ", N, K);
    CHECK_MSG(y[0][N] == 777.0f && y[1][N] == 777.0f && y[2][N] == 777.0f, "sgemv wrote past N=%ld", N);
    if (epk == 2 || epk == 3) {
        /* residual == y: each output reads its residual before writing */
        float *yi = fcopy(res, N);
        k_epilogue e2 = ep;
        e2.residual = yi;
        k_sgemv(2, N, K, x, B, yi, &e2);
        CHECK_MSG(same_bits(yi, y[0], N), "sgemv in-place residual N=%ld K=%ld", N, K);
        free(yi);
    }
    /* several rows (small-batch FCs): each row of Y what k_sgemv gives for
     * that row of X, at 1-3 threads, nothing written past M x N */
    for (long M = 2; M <= K_GEMV_MAX_ROWS; M += 3) {
        long kk = K > 0 ? K : 1;
        float *X = frandom(M * kk), *res2 = frandom(M * (N + 2)), *Y1 = falloc(N + 1);
        k_epilogue e2 = ep;
        if (e2.residual) {
            e2.residual = res2;
            e2.ldr = N + 2;
        }
        const k_epilogue *ep2 = epk ? &e2 : NULL;
        for (int t = 1; t <= 3; t++) {
            float *Y = frandom(M * N + 1);
            Y[M * N] = 777.0f;
            k_sgemv_rows(t, M, N, K, X, B, Y, ep2);
            int ok = Y[M * N] == 777.0f;
            for (long r = 0; r < M; r++) {
                k_epilogue e1 = e2;
                if (e1.residual) e1.residual = res2 + r * (N + 2);
                k_sgemv(1, N, K, X + r * kk, B, Y1, epk ? &e1 : NULL);
                ok &= same_bits(Y1, Y + r * N, N);
            }
            CHECK_MSG(ok, "sgemv rows M=%ld N=%ld K=%ld ep=%d threads %d", M, N, K, epk, t);
            free(Y);
        }
        free(X), free(res2), free(Y1);
    }
    for (int t = 0; t < 3; t++) free(y[t]);
    free(x);
    free(B);
    free(scale);
    free(bias);
    free(res);
    free(ref);
    free(C0);
}

static void test_gemv_all(void)
{
    static const long shapes[][2] = {{1, 1}, {7, 13}, {1, 33}, {33, 7}, {64, 8}, {65, 9}, {100, 385},
                                     {129, 1}, {1536, 64}, {64, 1536}, {37, 1500}, {1000, 1280}, {13, 0}};
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            test_gemv_case(shapes[i][0], shapes[i][1], (int)(i % 4));
            test_gemv_case(shapes[i][0], shapes[i][1], 4); /* the vector activation pass */
        }
    }
    k_simd_force(99);
}

/* ep->residual == C: the residual must be read before any partial sum of
 * a K block lands in C. */
static void test_gemm_inplace_residual(void)
{
    const long M = 37, N = 45, K = 800, ldc = 50;
    float *A = frandom(M * K), *B = frandom(K * N), *C0 = frandom(M * ldc), *bias = frandom(N);
    float *ref = fcopy(C0, M * ldc), *res = fcopy(C0, M * ldc);
    k_epilogue ep = {NULL, bias, K_ACT_SILU, res, ldc};
    k_sgemm_ref(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, ref, ldc, &ep);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        float *c1 = fcopy(C0, M * ldc), *c2 = fcopy(C0, M * ldc), *c3 = fcopy(C0, M * ldc);
        k_epilogue e1 = {NULL, bias, K_ACT_SILU, c1, ldc}, e2 = {NULL, bias, K_ACT_SILU, c2, ldc};
        k_epilogue e3 = {NULL, bias, K_ACT_SILU, res, ldc};
        k_sgemm(1, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, c1, ldc, &e1);
        k_sgemm(2, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, c2, ldc, &e2);
        k_sgemm(2, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, c3, ldc, &e3);
        double worst = 0;
        int ok = gemm_close(M, N, K, 0, 0, 1.0f, A, K, B, N, 0.0f, C0, ldc, &ep, c1, ref, &worst);
        CHECK_MSG(ok, "%s in-place residual: err/tol %.3g", k_simd_name(levels[li]), worst);
        CHECK_MSG(same_bits(c1, c2, M * ldc) && same_bits(c1, c3, M * ldc), "%s in-place residual bits",
                  k_simd_name(levels[li]));
        free(c1);
        free(c2);
        free(c3);
    }
    k_simd_force(K_SIMD_AVX512);
    free(A);
    free(B);
    free(C0);
    free(bias);
    free(ref);
    free(res);
}

/* The vector exp/SiLU/sigmoid in the epilogue against libm, including the
 * clamped tails. */
static void test_epilogue_range(void)
{
    const long N = 401;
    float *B = falloc(N), one = 1.0f;
    for (long j = 0; j < N; j++) B[j] = -120.0f + 0.6f * (float)j;
    for (int act = K_ACT_SILU; act <= K_ACT_SIGMOID; act++)
        for (int li = 0; li < nlevels; li++) {
            k_simd_force(levels[li]);
            float *C = falloc(N);
            k_epilogue ep = {NULL, NULL, act, NULL, 0};
            k_sgemm(1, 0, 0, 1, N, 1, 1.0f, &one, 1, B, N, 0.0f, C, N, &ep);
            int ok = 1;
            for (long j = 0; j < N; j++) {
                double x = B[j], e = act == K_ACT_SILU ? x / (1 + exp(-x)) : 1 / (1 + exp(-x));
                if (!(fabs(C[j] - e) <= 4e-7 * fabs(e) + 1e-30)) {
                    ok = 0;
                    fprintf(stderr, "x=%g got %.9g want %.9g\n", x, C[j], e);
                }
            }
            CHECK_MSG(ok, "%s act=%d", k_simd_name(levels[li]), act);
            free(C);
        }
    k_simd_force(K_SIMD_AVX512);
    free(B);
}

/* ---- convolution -------------------------------------------------------------------- */
static void test_shape_init(void)
{
    k_conv_shape s;
    k_conv_shape_init(&s, 1, 8, 7, 3, 4, 3, 2, 1);
    CHECK(s.ho == 4 && s.wo == 4 && s.pad_t == 0 && s.pad_l == 1);
    k_conv_shape_init(&s, 1, 8, 7, 3, 4, 3, 2, 0);
    CHECK(s.ho == 4 && s.wo == 4 && s.pad_t == 1 && s.pad_l == 1);
    k_conv_shape_init(&s, 1, 9, 9, 3, 4, 5, 1, 1);
    CHECK(s.ho == 9 && s.wo == 9 && s.pad_t == 2 && s.pad_l == 2);
    k_conv_shape_init(&s, 1, 1, 2, 3, 4, 5, 2, 1);
    CHECK(s.ho == 1 && s.wo == 1 && s.pad_t == 2 && s.pad_l == 1);
    k_conv_shape_init(&s, 1, 1, 1, 3, 4, 5, 2, 0);
    CHECK(s.ho == 1 && s.wo == 1 && s.pad_t == 2);
    k_conv_shape_init(&s, 2, 384, 384, 3, 24, 3, 2, 1);
    CHECK(s.ho == 192 && s.pad_t == 0 && s.kh == 3 && s.kw == 3 && s.stride == 2 && s.n == 2 && s.co == 24);
}

static void test_conv_ref_hand(void)
{
    /* 3x3 image 1..9, 3x3 kernel of ones, one channel, symmetric padding 1 */
    float x[9], w[9], y[9], dx[9], dw[9];
    for (int i = 0; i < 9; i++) {
        x[i] = (float)(i + 1);
        w[i] = 1.0f;
    }
    k_conv_shape s;
    k_conv_shape_init(&s, 1, 3, 3, 1, 1, 3, 1, 0);
    k_conv2d_fwd_ref(&s, x, w, y, NULL);
    const float want[9] = {12, 21, 16, 27, 45, 33, 24, 39, 28};
    CHECK(memcmp(y, want, sizeof want) == 0);
    /* stride 2, TF same: 2x2 output with pad_t = pad_l = 1 -> samples at -1 and 1 */
    k_conv_shape_init(&s, 1, 3, 3, 1, 1, 3, 2, 1);
    k_conv2d_fwd_ref(&s, x, w, y, NULL);
    CHECK(s.ho == 2 && y[0] == 12 && y[1] == 16 && y[2] == 24 && y[3] == 28);
    /* transposed: dy = one at output (0,0) spreads ones over the taps it read */
    k_conv_shape_init(&s, 1, 3, 3, 1, 1, 3, 1, 0);
    float dy[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 9; i++) w[i] = (float)(i + 1);
    k_conv2d_bwd_data_ref(&s, dy, w, dx);
    /* dx(ih,iw) = w(kh = ih+1, kw = iw+1) for ih, iw in {0,1} */
    CHECK(dx[0] == 5 && dx[1] == 6 && dx[3] == 8 && dx[4] == 9 && dx[2] == 0 && dx[8] == 0);
    for (int i = 0; i < 9; i++) dw[i] = 1.0f;
    k_conv2d_bwd_weight_ref(&s, x, dy, dw);
    /* dw(kh,kw) += x(kh-1, kw-1) */
    CHECK(dw[0] == 1 && dw[4] == 2 && dw[5] == 3 && dw[7] == 5 && dw[8] == 6);
}

typedef struct ccase {
    int n, h, w, ci, co, k, stride, same;
} ccase;

static double dot(const float *a, const float *b, long n)
{
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void test_conv_shape(k_conv_shape s, int epk);
static void test_conv_case(const ccase *cc, int epk)
{
    k_conv_shape s;
    k_conv_shape_init(&s, cc->n, cc->h, cc->w, cc->ci, cc->co, cc->k, cc->stride, cc->same);
    test_conv_shape(s, epk);
}

static void test_conv_shape(k_conv_shape s, int epk)
{
    const long nx = (long)s.n * s.h * s.w * s.ci, ny = (long)s.n * s.ho * s.wo * s.co,
               nw = (long)s.kh * s.kw * s.ci * s.co, K = (long)s.kh * s.kw * s.ci;
    float *x = frandom(nx), *w = frandom(nw), *dy = frandom(ny), *dw0 = frandom(nw);
    float *scale = frandom(s.co), *bias = frandom(s.co), *res = frandom(ny);
    k_epilogue ep = {scale, bias, epk == 1 ? K_ACT_SILU : K_ACT_NONE, epk == 2 ? res : NULL, s.co};
    const k_epilogue *epp = epk ? &ep : NULL;
    float *yr = falloc(ny), *dxr = falloc(nx), *dwr = fcopy(dw0, nw);
    k_conv2d_fwd_ref(&s, x, w, yr, epp);
    k_conv2d_bwd_data_ref(&s, dy, w, dxr);
    k_conv2d_bwd_weight_ref(&s, x, dy, dwr);
    size_t wsz = k_conv2d_workspace(&s, 2);
    float *ws = falloc((long)wsz + 1);
    char tag[160];
    snprintf(tag, sizeof tag, "n=%d %dx%d ci=%d co=%d k=%dx%d s=%d pad=%d,%d out=%dx%d ep=%d", s.n, s.h, s.w, s.ci,
             s.co, s.kh, s.kw, s.stride, s.pad_t, s.pad_l, s.ho, s.wo, epk);

    /* the references are adjoint: <conv(x), dy> = <x, dX(dy)> = <w, dW(x, dy)> */
    if (!epk) {
        float *dwz = falloc(nw);
        memset(dwz, 0, (size_t)nw * sizeof(float));
        k_conv2d_bwd_weight_ref(&s, x, dy, dwz);
        double a = dot(yr, dy, ny), b = dot(x, dxr, nx), c = dot(w, dwz, nw);
        double sc = 1e-5 * (sqrt((double)ny * K) + 1);
        CHECK_MSG(fabs(a - b) <= sc && fabs(a - c) <= sc, "%s adjoint %.9g %.9g %.9g", tag, a, b, c);
        free(dwz);
    }
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        float *y1 = falloc(ny), *y2 = falloc(ny), *y3 = falloc(ny);
        float *dx1 = falloc(nx), *dx2 = falloc(nx), *dw1 = fcopy(dw0, nw), *dw2 = fcopy(dw0, nw);
        for (long i = 0; i < nx; i++) dx1[i] = dx2[i] = NAN; /* overwritten, never read */
        k_conv2d_fwd(1, &s, x, w, y1, epp, ws);
        k_conv2d_fwd(2, &s, x, w, y2, epp, ws);
        k_gemm_test_no_buffer = 1;
        k_conv2d_fwd(2, &s, x, w, y3, epp, ws);
        k_gemm_test_no_buffer = 0;
        k_conv2d_bwd_data(1, &s, dy, w, dx1, ws, 0);
        k_conv2d_bwd_data(2, &s, dy, w, dx2, ws, 0);
        k_conv2d_bwd_weight(1, &s, x, dy, dw1, ws, 0);
        k_conv2d_bwd_weight(2, &s, x, dy, dw2, ws, 0);
        double tol = 2e-7 * (double)(K + 8);
        double ey = test_max_rel_diff(y1, yr, ny), ex = test_max_rel_diff(dx1, dxr, nx),
               ew = test_max_rel_diff(dw1, dwr, nw);
        double tolx = 2e-7 * (double)((long)s.kh * s.kw * s.co + 8);
        double tolw = 2e-7 * (double)((long)s.n * s.ho * s.wo + 8);
        if (getenv("ENV2_TEST_VERBOSE"))
            printf("%s %s: fwd %.3g/%.3g bwdD %.3g/%.3g bwdW %.3g/%.3g\n", k_simd_name(levels[li]), tag, ey, tol, ex,
                   tolx, ew, tolw);
        CHECK_MSG(ey <= tol, "%s %s fwd rel err %.3g", k_simd_name(levels[li]), tag, ey);
        CHECK_MSG(ex <= tolx, "%s %s bwd_data rel err %.3g", k_simd_name(levels[li]), tag, ex);
        CHECK_MSG(ew <= tolw, "%s %s bwd_weight rel err %.3g", k_simd_name(levels[li]), tag, ew);
        CHECK_MSG(same_bits(y1, y2, ny) && same_bits(y1, y3, ny), "%s %s fwd not bit-identical",
                  k_simd_name(levels[li]), tag);
        CHECK_MSG(same_bits(dx1, dx2, nx), "%s %s bwd_data not bit-identical", k_simd_name(levels[li]), tag);
        CHECK_MSG(same_bits(dw1, dw2, nw), "%s %s bwd_weight not bit-identical", k_simd_name(levels[li]), tag);
        if (K <= K_CS_KMAX && s.co <= K_CS_COMAX) {
            /* the direct kernels for few input channels form the GEMM's sums:
             * the GEMM path must give the same bits */
            float *yg = falloc(ny), *dwg = fcopy(dw0, nw);
            k_conv_test_no_direct = 1;
            k_conv2d_fwd(2, &s, x, w, yg, epp, ws);
            k_conv2d_bwd_weight(2, &s, x, dy, dwg, ws, 0);
            k_conv_test_no_direct = 0;
            CHECK_MSG(same_bits(y1, yg, ny), "%s %s fwd: direct and GEMM paths differ", k_simd_name(levels[li]), tag);
            CHECK_MSG(same_bits(dw1, dwg, nw), "%s %s bwd_weight: direct and GEMM paths differ",
                      k_simd_name(levels[li]), tag);
            free(yg);
            free(dwg);
        }
        free(y1);
        free(y2);
        free(y3);
        free(dx1);
        free(dx2);
        free(dw1);
        free(dw2);
    }
    k_simd_force(K_SIMD_AVX512);
    free(x);
    free(w);
    free(dy);
    free(dw0);
    free(scale);
    free(bias);
    free(res);
    free(yr);
    free(dxr);
    free(dwr);
    free(ws);
}

static void test_conv_all(void)
{
    static const ccase cases[] = {
        {1, 1, 1, 1, 1, 1, 1, 0},    {1, 7, 7, 3, 7, 1, 1, 0},     {2, 13, 7, 13, 33, 1, 1, 1},
        {1, 7, 13, 7, 13, 1, 2, 0},  {2, 13, 13, 33, 7, 1, 2, 1},  {1, 1, 1, 3, 13, 3, 1, 0},
        {1, 7, 7, 1, 7, 3, 1, 0},    {2, 13, 7, 3, 24, 3, 2, 1},   {1, 13, 13, 7, 33, 3, 2, 0},
        {1, 33, 13, 13, 1, 3, 1, 1}, {1, 1, 7, 33, 13, 3, 2, 1},   {1, 7, 1, 13, 7, 5, 1, 0},
        {1, 13, 13, 3, 13, 5, 2, 1}, {2, 7, 13, 7, 7, 5, 2, 0},    {1, 1, 1, 7, 3, 5, 2, 1},
        {1, 8, 8, 16, 32, 3, 2, 1},  {1, 8, 8, 16, 32, 3, 2, 0},   {1, 33, 33, 3, 24, 3, 2, 1},
        {1, 6, 5, 1, 1, 5, 1, 1},    {2, 12, 10, 33, 48, 3, 1, 1},
        /* stems (K = kh*kw*ci <= 32: the direct kernels): the demo's and V2-S's,
         * column counts around the vector widths and the 128 limit */
        {3, 36, 36, 1, 24, 3, 2, 0}, {2, 19, 17, 3, 24, 3, 2, 1},  {1, 13, 13, 3, 40, 3, 1, 0},
        {2, 7, 9, 1, 8, 3, 2, 1},    {1, 12, 12, 3, 128, 3, 2, 0}, {1, 12, 12, 3, 129, 3, 2, 0},
        {1, 9, 9, 2, 17, 3, 1, 1},
    };
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int c = 0; c < nc; c++) test_conv_case(&cases[c], c % 3);
    /* several chunks of output lines in the backward passes (K*wo*lines > chunk) */
    static const ccase big = {2, 33, 33, 33, 13, 5, 1, 0};
    test_conv_case(&big, 0);
    static const ccase big2 = {3, 24, 33, 64, 7, 3, 2, 1};
    test_conv_case(&big2, 1);
    /* a stem over several chunks, each over several K blocks */
    static const ccase big3 = {8, 130, 130, 1, 16, 3, 1, 0};
    test_conv_case(&big3, 0);
    /* hand-made shapes: unequal and one-sided padding, non-square kernel,
     * an output smaller than the padding rules would give */
    k_conv_shape s = {1, 9, 8, 5, 6, 3, 3, 1, 0, 2, 7, 8};
    test_conv_shape(s, 0);
    k_conv_shape s2 = {2, 9, 8, 3, 7, 3, 5, 2, 2, 0, 5, 2};
    test_conv_shape(s2, 1);
    k_conv_shape s3 = {1, 10, 7, 4, 9, 5, 3, 1, 1, 2, 4, 6};
    test_conv_shape(s3, 0);
}

/* ---- benchmark ---------------------------------------------------------------------- */
static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static void bench(void)
{
    /* 1x1 convolutions of EfficientNetV2-S at 384 (M = rows, N = out, K = in) */
    static const long shapes[][3] = {{576, 1536, 256}, {2304, 128, 512}, {9216, 256, 64}, {144, 1536, 256},
                                     {144, 256, 1536}, {144, 1280, 256}, {576, 960, 160}, {9216, 48, 192}};
    /* wall: what a caller sees; cpu: flops per CPU-second of all threads
     * times nt, which other jobs on a shared machine disturb much less */
    printf("bench: %s  GFLOP/s wall (cpu)\n", k_simd_name(k_simd_level()));
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        long M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *A = frandom(M * K), *B = frandom(K * N), *C = falloc(M * N);
        printf("  M=%5ld N=%4ld K=%4ld", M, N, K);
        for (int nt = 1; nt <= 2; nt++) {
            double best = 1e30, bestc = 1e30;
            for (int rep = 0; rep < 9; rep++) {
                int it = 0;
                double t0 = now_s(), c0 = cpu_s(), el;
                do {
                    k_sgemm(nt, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, NULL);
                    it++;
                    el = now_s() - t0;
                } while (el < 0.02);
                double ec = (cpu_s() - c0) / nt;
                if (el / it < best) best = el / it;
                if (ec / it < bestc) bestc = ec / it;
            }
            printf("  nt=%d %6.1f (%6.1f)", nt, 2.0 * M * N * K / best * 1e-9, 2.0 * M * N * K / bestc * 1e-9);
        }
        printf("\n");
        free(A);
        free(B);
        free(C);
    }
    static const ccase convs[] = {{1, 384, 384, 3, 24, 3, 2, 1}, {1, 192, 192, 24, 24, 3, 1, 1},
                                  {1, 192, 192, 24, 96, 3, 2, 1}, {1, 96, 96, 48, 192, 3, 1, 1}};
    for (size_t ci = 0; ci < sizeof convs / sizeof convs[0]; ci++) {
        const ccase *cc = &convs[ci];
        k_conv_shape s;
        k_conv_shape_init(&s, cc->n, cc->h, cc->w, cc->ci, cc->co, cc->k, cc->stride, cc->same);
        long nx = (long)s.n * s.h * s.w * s.ci, ny = (long)s.n * s.ho * s.wo * s.co,
             nw = (long)s.kh * s.kw * s.ci * s.co;
        float *x = frandom(nx), *w = frandom(nw), *y = falloc(ny), *dy = frandom(ny), *dx = falloc(nx),
              *dw = falloc(nw), *ws = falloc((long)k_conv2d_workspace(&s, 2) + 1);
        double flops = 2.0 * ny * s.kh * s.kw * s.ci;
        printf("  conv %dx%d %d->%d k%d s%d", cc->h, cc->w, cc->ci, cc->co, cc->k, cc->stride);
        for (int pass = 0; pass < 3; pass++)
            for (int nt = 1; nt <= 2; nt++) {
                double best = 1e30;
                for (int rep = 0; rep < 5; rep++) {
                    double t0 = now_s();
                    if (pass == 0) k_conv2d_fwd(nt, &s, x, w, y, NULL, ws);
                    else if (pass == 1) k_conv2d_bwd_data(nt, &s, dy, w, dx, ws, 0);
                    else k_conv2d_bwd_weight(nt, &s, x, dy, dw, ws, 0);
                    double el = now_s() - t0;
                    if (el < best) best = el;
                }
                printf(" %s/%d %5.1f", pass == 0 ? "fwd" : pass == 1 ? "bwdD" : "bwdW", nt, flops / best * 1e-9);
            }
        printf("  GFLOP/s\n");
        free(x);
        free(w);
        free(y);
        free(dy);
        free(dx);
        free(dw);
        free(ws);
    }
}

/* The squeeze-excite gate applied inside the projection's packing: the same
 * bits as k_se_apply followed by k_conv2d_fwd, for row tiles that straddle
 * images (hw below and around the 14-row tile), channel counts off the
 * vector width, any thread count and every SIMD level. */
static void test_conv_gated(void)
{
    static const int cases[][5] = {/* n, h, w, ci, co */
                                   {1, 1, 1, 1, 1},  {1, 7, 7, 13, 33}, {3, 1, 7, 33, 7},  {2, 13, 1, 40, 17},
                                   {1, 33, 1, 7, 160}, {5, 1, 1, 19, 48}, {2, 3, 5, 96, 24}, {1, 12, 12, 130, 64}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int *c = cases[ci];
        k_conv_shape s;
        k_conv_shape_init(&s, c[0], c[1], c[2], c[3], c[4], 1, 1, 1);
        long hw = (long)c[1] * c[2], nx = c[0] * hw * c[3], ny = c[0] * hw * c[4];
        float *x = frandom(nx), *w = frandom((long)c[3] * c[4]), *gate = frandom((long)c[0] * c[3]);
        float *scale = frandom(c[4]), *bias = frandom(c[4]), *res = frandom(ny);
        float *xs = falloc(nx), *yr = falloc(ny), *y = falloc(ny);
        for (int epk = 0; epk < 2; epk++) {
            k_epilogue ep = {scale, bias, K_ACT_SILU, epk ? res : NULL, c[4]};
            for (int li = 0; li < nlevels; li++) {
                k_simd_force(levels[li]);
                k_se_apply(1, c[0], hw, c[3], x, gate, xs);
                k_conv2d_fwd(1, &s, xs, w, yr, &ep, NULL);
                for (int nt = 1; nt <= 2; nt++) {
                    for (long i = 0; i < ny; i++) y[i] = NAN;
                    k_conv1x1_gated_fwd(nt, &s, x, gate, w, y, &ep);
                    CHECK_MSG(same_bits(y, yr, ny), "%s gated 1x1 n=%d %dx%d ci=%d co=%d ep=%d nt=%d",
                              k_simd_name(levels[li]), c[0], c[1], c[2], c[3], c[4], epk, nt);
                }
            }
        }
        k_simd_force(99);
        free(x), free(w), free(gate), free(scale), free(bias), free(res), free(xs), free(yr), free(y);
    }
}

int main(void)
{
    test_rng_state = 0x9E3779B97F4A7C15ull;
    find_levels();
    test_gemm_ref_hand();
    test_gemm_all();
    test_gemv_all();
    test_gemm_inplace_residual();
    test_epilogue_range();
    test_shape_init();
    test_conv_ref_hand();
    test_conv_all();
    test_conv_gated();
    /* the ENV2_SIMD default and forcing clamp to what the CPU has */
    CHECK(k_simd_force(99) == k_simd_detect());
    CHECK(k_simd_force(K_SIMD_GENERIC) == K_SIMD_GENERIC && k_simd_level() == K_SIMD_GENERIC);
    CHECK(strcmp(k_simd_name(K_SIMD_AVX2), "avx2") == 0 && strcmp(k_simd_name(K_SIMD_AVX512), "avx512") == 0);
    k_simd_force(99);
    const char *b = getenv("ENV2_BENCH");
    if (b && b[0] == '1') bench();
    return test_summary();
}
