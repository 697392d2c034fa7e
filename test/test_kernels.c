/* Depthwise convolution, batch norm, activations, pooling, FC, squeeze-excite,
 * loss and elementwise kernels against their references or hand-computed
 * values, on every SIMD path, with bit-identity between 1 and 2 threads.
 * ENV2_BENCH=1 additionally prints depthwise timings on network shapes. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"
#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"

/* ---- helpers ------------------------------------------------------------------ */
static void ffill(float *p, long n, float v)
{
    for (long i = 0; i < n; i++) p[i] = v;
}
static int same_bits(const float *a, const float *b, long n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }
static int all_finite(const float *a, long n)
{
    for (long i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

static int levels[3], nlevels;
static void find_levels(void)
{
    int d = k_simd_detect();
    nlevels = 0;
    for (int l = K_SIMD_GENERIC; l <= d; l++) levels[nlevels++] = l;
}

/* The padding rule of the brief, independent of k_conv_shape_init, so that
 * the shape function is checked too. */
static void expect_shape(int h, int k, int stride, int same_pad, int *ho, int *pad)
{
    if (same_pad) {
        *ho = (h + stride - 1) / stride;
        int total = (*ho - 1) * stride + k - h;
        if (total < 0) total = 0;
        *pad = total / 2;
    } else {
        *pad = (k - 1) / 2;
        *ho = (h + 2 * *pad - k) / stride + 1;
    }
}

/* ---- depthwise convolution ------------------------------------------------------ */
static int dw_cases, dw_bad;

static void test_dw_case(int n, int h, int w, int C, int k, int stride, int same_pad, int epk)
{
    k_conv_shape s;
    k_conv_shape_init(&s, n, h, w, C, C, k, stride, same_pad);
    int eho, ept, ewo, epl;
    expect_shape(h, k, stride, same_pad, &eho, &ept);
    expect_shape(w, k, stride, same_pad, &ewo, &epl);
    CHECK(s.ho == eho && s.wo == ewo && s.pad_t == ept && s.pad_l == epl);

    long xi = (long)n * h * w * C, yo = (long)n * s.ho * s.wo * C, wn = (long)k * k * C;
    long ldr = C + 3;
    float *x = frandom(xi), *wt = frandom(wn), *dy = frandom(yo);
    float *scale = frandom(C), *bias = frandom(C), *res = frandom((long)n * s.ho * s.wo * ldr);
    k_epilogue ep = {NULL, NULL, K_ACT_NONE, NULL, 0};
    if (epk == 1) ep = (k_epilogue){scale, bias, K_ACT_SILU, NULL, 0};
    if (epk == 2) ep = (k_epilogue){NULL, bias, K_ACT_SIGMOID, res, ldr};
    if (epk == 3) ep = (k_epilogue){scale, NULL, K_ACT_NONE, res, ldr};
    const k_epilogue *epp = epk ? &ep : NULL;

    float *yref = falloc(yo), *dxref = falloc(xi), *dw0 = frandom(wn), *dwref = fcopy(dw0, wn);
    k_dwconv_fwd_ref(&s, x, wt, yref, epp);
    k_dwconv_bwd_data_ref(&s, dy, wt, dxref);
    k_dwconv_bwd_weight_ref(&s, x, dy, dwref);

    float *y1 = falloc(yo), *y2 = falloc(yo), *dx1 = falloc(xi), *dx2 = falloc(xi);
    float *dw1 = falloc(wn), *dw2 = falloc(wn);
    /* the pooling's chunk sums, as the forward with pooling must give them:
     * rows cut into chunks of up to 64 positions, each summed in order */
    const long nq = k_gap_chunks(s.ho, s.wo), rq = (s.wo + 63) / 64;
    float *sref = falloc((long)n * nq * C), *sums = falloc((long)n * nq * C + 1), *y3 = falloc(yo);
    CHECK(nq == (long)s.ho * rq);
    int pool_bad = 0;
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        ffill(y1, yo, NAN);
        ffill(dx1, xi, NAN);
        memcpy(dw1, dw0, (size_t)wn * sizeof(float));
        k_dwconv_fwd(1, &s, x, wt, y1, epp);
        k_dwconv_bwd_data(1, &s, dy, wt, dx1);
        k_dwconv_bwd_weight(1, &s, x, dy, dw1);
        ffill(y2, yo, NAN);
        ffill(dx2, xi, NAN);
        memcpy(dw2, dw0, (size_t)wn * sizeof(float));
        k_dwconv_fwd(2, &s, x, wt, y2, epp);
        k_dwconv_bwd_data(2, &s, dy, wt, dx2);
        k_dwconv_bwd_weight(2, &s, x, dy, dw2);
        for (long r = 0; r < (long)n * s.ho; r++)
            for (long q = 0; q < rq; q++)
                for (int c = 0; c < C; c++) {
                    const float *yp = y1 + (r * s.wo + q * 64) * C + c;
                    float v = yp[0];
                    for (long p = q * 64 + 1; p < s.wo && p < q * 64 + 64; p++) v += y1[(r * s.wo + p) * C + c];
                    sref[(r * rq + q) * C + c] = v;
                }
        for (int nt = 1; nt <= 3; nt++) {
            ffill(y3, yo, NAN);
            ffill(sums, (long)n * nq * C + 1, NAN);
            k_dwconv_fwd_pool(nt, &s, x, wt, y3, epp, sums);
            pool_bad += !same_bits(y3, y1, yo) || !same_bits(sums, sref, (long)n * nq * C) ||
                        !isnan(sums[(long)n * nq * C]);
        }
        double ef = test_max_rel_diff(y1, yref, yo), eb = test_max_rel_diff(dx1, dxref, xi);
        double ew = test_max_rel_diff(dw1, dwref, wn);
        int ok = ef <= 2e-6 && eb <= 2e-6 && ew <= 2e-6 && same_bits(y1, y2, yo) && same_bits(dx1, dx2, xi) &&
                 same_bits(dw1, dw2, wn) && !pool_bad;
        dw_cases++;
        if (!ok) {
            dw_bad++;
            fprintf(stderr,
                    "dwconv n%d %dx%d C%d k%d s%d same%d ep%d level %s: fwd %.3g bwd_data %.3g bwd_w %.3g "
                    "nt-identical %d%d%d, pooled forward wrong at %d thread counts\n",
                    n, h, w, C, k, stride, same_pad, epk, k_simd_name(levels[li]), ef, eb, ew, same_bits(y1, y2, yo),
                    same_bits(dx1, dx2, xi), same_bits(dw1, dw2, wn), pool_bad);
            pool_bad = 0;
        }
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(wt), free(dy), free(scale), free(bias), free(res), free(yref), free(dxref), free(dw0);
    free(dwref), free(y1), free(y2), free(dx1), free(dx2), free(dw1), free(dw2), free(sref), free(sums), free(y3);
}

/* A 1x4 image, 1 channel, k=3, stride 1, by hand: x = 1 2 3 4, w rows
 * (0 0 0), (1 10 100), (0 0 0) -> y[j] = x[j-1] + 10 x[j] + 100 x[j+1]. */
static void test_dw_hand(void)
{
    k_conv_shape s;
    k_conv_shape_init(&s, 1, 1, 4, 1, 1, 3, 1, 0);
    float x[4] = {1, 2, 3, 4}, w[9] = {0, 0, 0, 1, 10, 100, 0, 0, 0}, y[4], dx[4], dw[9] = {0};
    float expect[4] = {210, 321, 432, 43};
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        k_dwconv_fwd(1, &s, x, w, y, NULL);
        CHECK(memcmp(y, expect, sizeof y) == 0);
        /* dy = 1 0 0 0: dx[i] = sum_j dy[j] w[i - j + 1] -> dx = 10 100 0 0 */
        float dy[4] = {1, 0, 0, 0};
        k_dwconv_bwd_data(1, &s, dy, w, dx);
        CHECK(dx[0] == 10 && dx[1] == 100 && dx[2] == 0 && dx[3] == 0);
        /* dw[1][kx] = sum_j dy[j] x[j + kx - 1] -> (0, 1, 2); other rows 0 */
        memset(dw, 0, sizeof dw);
        k_dwconv_bwd_weight(1, &s, x, dy, dw);
        CHECK(dw[3] == 0 && dw[4] == 1 && dw[5] == 2 && dw[0] == 0 && dw[8] == 0);
    }
    k_simd_force(K_SIMD_AVX512);
}

/* The SIMD forward, stride-1 data gradient and weight gradient take 3x3
 * maps up to 32 wide through a zero-padded band; it must give the row
 * sweep's bits, with every epilogue, partial channel blocks, images split
 * into several bands (70 rows of 31) and work split between threads. */
static void test_dw_band(void)
{
    static const int shp[][4] = {{64, 4, 4, 256}, {3, 5, 5, 384}, {2, 8, 8, 192}, {2, 7, 7, 13},
                                 {1, 12, 12, 1536}, {2, 10, 9, 33}, {1, 70, 31, 24}, {3, 1, 4, 8},
                                 {1, 7, 7, 1000}, {1, 14, 14, 200}};
    /* batch 1 at 5x5 .. 14x14 with two threads splits by channel blocks
     * (chans_split), ending in a partial unit and a partial vector at C = 1000 */
    int bad = 0, cases = 0;
    for (int i = 0; i < 10; i++) {
        const int n = shp[i][0], h = shp[i][1], w = shp[i][2], C = shp[i][3];
        k_conv_shape s;
        k_conv_shape_init(&s, n, h, w, C, C, 3, 1, i % 2);
        long xi = (long)n * h * w * C, yo = (long)n * s.ho * s.wo * C;
        float *x = frandom(xi), *wt = frandom(9L * C), *sc = frandom(C), *bi = frandom(C), *res = frandom(yo);
        float *ya = falloc(yo), *yb = falloc(yo), *da = falloc(xi), *db = falloc(xi);
        float *wa = falloc(9L * C), *wb = falloc(9L * C);
        for (int epk = 0; epk < 3; epk++) {
            k_epilogue ep = {sc, bi, epk == 1 ? K_ACT_SILU : K_ACT_SIGMOID, epk == 2 ? res : NULL, C};
            const k_epilogue *epp = epk ? &ep : NULL;
            for (int li = 0; li < nlevels; li++) {
                if (levels[li] == K_SIMD_GENERIC) continue;
                k_simd_force(levels[li]);
                for (int nt = 1; nt <= 2; nt++) {
                    k_dw_test_no_band = 1;
                    k_dwconv_fwd(1, &s, x, wt, ya, epp);
                    k_dwconv_bwd_data(1, &s, x, wt, da);
                    memcpy(wa, sc, (size_t)C * sizeof(float)); /* accumulates: any start */
                    memset(wa + C, 0, 8L * C * sizeof(float));
                    k_dwconv_bwd_weight(1, &s, x, res, wa);
                    k_dw_test_no_band = 0;
                    ffill(yb, yo, NAN);
                    ffill(db, xi, NAN);
                    memcpy(wb, sc, (size_t)C * sizeof(float));
                    memset(wb + C, 0, 8L * C * sizeof(float));
                    k_dwconv_fwd(nt, &s, x, wt, yb, epp);
                    k_dwconv_bwd_data(nt, &s, x, wt, db);
                    k_dwconv_bwd_weight(nt, &s, x, res, wb);
                    cases++;
                    if (!same_bits(ya, yb, yo) || !same_bits(da, db, xi) || !same_bits(wa, wb, 9L * C)) {
                        bad++;
                        fprintf(stderr, "dw band n%d %dx%d C%d ep%d %s nt%d: same bits fwd %d, bwd_data %d, bwd_w %d\n",
                                n, h, w, C, epk, k_simd_name(levels[li]), nt, same_bits(ya, yb, yo),
                                same_bits(da, db, xi), same_bits(wa, wb, 9L * C));
                    }
                }
            }
        }
        free(x), free(wt), free(sc), free(bi), free(res), free(ya), free(yb), free(da), free(db), free(wa), free(wb);
    }
    k_simd_force(K_SIMD_AVX512);
    CHECK_MSG(bad == 0, "%d of %d band cases differ from the row sweep", bad, cases);
}

static void test_dwconv(void)
{
    static const int chans[] = {1, 3, 7, 13, 17, 33, 64, 96};
    static const int sizes[] = {1, 7, 13, 33};
    int epk = 0;
    for (int ci = 0; ci < 8; ci++)
        for (int si = 0; si < 4; si++)
            for (int stride = 1; stride <= 2; stride++)
                for (int same = 0; same <= 1; same++) {
                    int h = sizes[si], w = sizes[(si + ci) % 4];
                    int n = (ci + si) % 2 + 1;
                    test_dw_case(n, h, w, chans[ci], 3, stride, same, epk);
                    epk = (epk + 1) % 4;
                    /* 5x5 on a subset, still both strides and paddings */
                    if ((ci + si) % 3 == 0) test_dw_case(n, w, h, chans[ci], 5, stride, same, (epk + 1) % 4);
                }
    /* rectangular and even sizes (TF "same" pads only bottom/right on even input) */
    test_dw_case(1, 8, 14, 16, 3, 2, 1, 1);
    test_dw_case(2, 12, 6, 48, 3, 2, 1, 0);
    test_dw_case(1, 10, 10, 40, 5, 2, 1, 2);
    test_dw_case(1, 2, 2, 5, 5, 1, 0, 3);
    /* big enough to use both threads; channel counts that are multiples of
     * 256 take the copied-block path of the SIMD forward, unless the row is
     * wider than its buffer */
    test_dw_case(1, 9, 9, 1024, 3, 1, 1, 1);
    test_dw_case(1, 7, 6, 256, 5, 1, 0, 2);
    test_dw_case(2, 7, 8, 512, 3, 2, 1, 3);
    test_dw_case(1, 3, 130, 256, 3, 1, 0, 1);
    test_dw_case(1, 4, 131, 256, 5, 2, 1, 0);
    test_dw_case(2, 24, 24, 96, 3, 2, 0, 2);
    /* narrow stride-1 maps with many channels (the later stages), tall ones,
     * and a one-pixel-wide column */
    test_dw_case(2, 40, 32, 40, 5, 1, 0, 1);
    test_dw_case(1, 70, 31, 24, 3, 1, 1, 3);
    test_dw_case(2, 12, 12, 1536, 3, 1, 0, 1);
    test_dw_case(1, 100, 1, 9, 3, 1, 0, 2);
    CHECK_MSG(dw_bad == 0, "%d of %d depthwise cases failed", dw_bad, dw_cases);
    test_dw_hand();
    test_dw_band();
}

/* ---- batch norm ------------------------------------------------------------------ */
static void test_bn_hand(void)
{
    /* rows 2, C 2: channel 0 = {1, 3} (mean 2, var 1, unbiased 2),
     * channel 1 = {2, 6} (mean 4, var 4, unbiased 8); eps 0. */
    float x[4] = {1, 2, 3, 6}, gamma[2] = {1, 0.5f}, beta[2] = {0, 1};
    float y[4], mean[2], rstd[2], var[2];
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        k_bn_fwd_train(1, 2, 2, x, gamma, beta, 0.0f, y, mean, rstd, var);
        CHECK(mean[0] == 2 && mean[1] == 4);
        CHECK(rstd[0] == 1 && rstd[1] == 0.5f);
        CHECK(var[0] == 2 && var[1] == 8);
        /* ch0: (x-2)*1 + 0 = -1, 1; ch1: (x-4)*0.5*0.5 + 1 = 0.5, 1.5 */
        CHECK(y[0] == -1 && y[2] == 1 && y[1] == 0.5f && y[3] == 1.5f);
        /* dy = (1 0; 0 1): with two rows xhat = -+1 and
         * ch0: sum dy = 1, sum dy*xhat = -1; ch1: 1, +1; dx = 0 */
        float dy[4] = {1, 0, 0, 1}, dx[4], dg[2] = {10, 20}, db[2] = {30, 40};
        k_bn_bwd(1, 2, 2, x, dy, gamma, mean, rstd, dx, dg, db);
        CHECK(dg[0] == 9 && dg[1] == 21 && db[0] == 31 && db[1] == 41);
        CHECK(fabsf(dx[0]) < 1e-7f && fabsf(dx[1]) < 1e-7f && fabsf(dx[2]) < 1e-7f && fabsf(dx[3]) < 1e-7f);
    }
    /* three rows, one channel: x = 0 1 5, mean 2, var 14/3; gamma 2, eps 1/3
     * -> rstd = 1/sqrt(5); dy = 1 0 0 -> dx = 2 rstd (dy - 1/3 - xhat * m2),
     * m2 = mean(dy xhat) = xhat0 / 3 = -2 rstd / 3. */
    {
        float x3[3] = {0, 1, 5}, g3 = 2, b3 = 0, y3[3], m3, r3, v3, dy3[3] = {1, 0, 0}, dx3[3], dg = 0, db = 0;
        k_bn_fwd_train(1, 3, 1, x3, &g3, &b3, 1.0f / 3.0f, y3, &m3, &r3, &v3);
        double rs = 1.0 / sqrt(5.0);
        CHECK_NEAR(m3, 2.0, 1e-7);
        CHECK_NEAR(r3, rs, 1e-7);
        CHECK_NEAR(v3, 7.0, 1e-6);
        CHECK_NEAR(y3[2], 2.0 * 3.0 * rs, 1e-6);
        k_bn_bwd(1, 3, 1, x3, dy3, &g3, &m3, &r3, dx3, &dg, &db);
        double m2 = -2.0 * rs / 3.0;
        for (int i = 0; i < 3; i++) {
            double xh = (x3[i] - 2.0) * rs;
            CHECK_NEAR(dx3[i], 2.0 * rs * (dy3[i] - 1.0 / 3.0 - xh * m2), 1e-6);
        }
        CHECK_NEAR(dg, -2.0 * rs, 1e-6);
        CHECK_NEAR(db, 1.0, 0);
    }
    /* fold: gamma 2, beta 1, mean 3, var 3, eps 1 -> scale 1, shift -2 */
    float g = 2, b = 1, m = 3, v = 3, sc, sh;
    k_bn_fold(1, &g, &b, &m, &v, 1.0f, &sc, &sh);
    CHECK(sc == 1.0f && sh == -2.0f);
    k_simd_force(K_SIMD_AVX512);
}

static void test_bn_case(long rows, int C, float offset)
{
    long n = rows * C;
    float *x = frandom(n), *dy = frandom(n), *gamma = frandom(C), *beta = frandom(C);
    for (long i = 0; i < n; i++) x[i] = offset + x[i] * (1.0f + (float)(i % C) * 0.1f);
    float *yr = falloc(n), *mr = falloc(C), *rr = falloc(C), *vr = falloc(C);
    float *dxr = falloc(n), *dgr = frandom(C), *dbr = frandom(C);
    float *dg0 = fcopy(dgr, C), *db0 = fcopy(dbr, C);
    k_bn_fwd_train_ref(rows, C, x, gamma, beta, 1e-3f, yr, mr, rr, vr);
    k_bn_bwd_ref(rows, C, x, dy, gamma, mr, rr, dxr, dgr, dbr);
    float *y[2], *m[2], *r[2], *v[2], *dx[2], *dg[2], *db[2];
    for (int t = 0; t < 2; t++) {
        y[t] = falloc(n), m[t] = falloc(C), r[t] = falloc(C), v[t] = falloc(C), dx[t] = falloc(n);
        dg[t] = falloc(C), db[t] = falloc(C);
    }
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (int t = 0; t < 2; t++) {
            memcpy(dg[t], dg0, (size_t)C * sizeof(float));
            memcpy(db[t], db0, (size_t)C * sizeof(float));
            k_bn_fwd_train(t + 1, rows, C, x, gamma, beta, 1e-3f, y[t], m[t], r[t], v[t]);
            /* backward uses the reference statistics so that the two compare */
            k_bn_bwd(t + 1, rows, C, x, dy, gamma, mr, rr, dx[t], dg[t], db[t]);
        }
        double e1 = test_max_rel_diff(y[0], yr, n), e2 = test_max_rel_diff(m[0], mr, C);
        double e3 = test_max_rel_diff(r[0], rr, C), e4 = test_max_rel_diff(v[0], vr, C);
        double e5 = test_max_rel_diff(dx[0], dxr, n), e6 = test_max_rel_diff(dg[0], dgr, C);
        double e7 = test_max_rel_diff(db[0], dbr, C);
        /* with a large offset, x - mean itself is only known to ulp(offset) */
        CHECK_MSG(e1 < 2e-5 + 1e-7 * offset && e2 < 1e-6 && e3 < 2e-5 && e4 < 2e-5 && e5 < 2e-5 && e6 < 1e-5 &&
                      e7 < 1e-5,
                  "bn rows %ld C %d offset %g level %d: y %.3g mean %.3g rstd %.3g var %.3g dx %.3g dg %.3g db %.3g",
                  rows, C, offset, levels[li], e1, e2, e3, e4, e5, e6, e7);
        CHECK(same_bits(y[0], y[1], n) && same_bits(m[0], m[1], C) && same_bits(r[0], r[1], C) &&
              same_bits(v[0], v[1], C));
        CHECK(same_bits(dx[0], dx[1], n) && same_bits(dg[0], dg[1], C) && same_bits(db[0], db[1], C));
    }
    /* SiLU fused into both directions */
    float *ya = falloc(n), *dxa = falloc(n), *dga = fcopy(dg0, C), *dba = fcopy(db0, C);
    k_silu_fwd_ref(n, yr, ya);
    k_bn_act_bwd_ref(rows, C, x, dy, gamma, beta, mr, rr, K_ACT_SILU, dxa, dga, dba);
    float *dact = falloc(n);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (int t = 0; t < 2; t++) {
            memcpy(dg[t], dg0, (size_t)C * sizeof(float));
            memcpy(db[t], db0, (size_t)C * sizeof(float));
            k_bn_act_fwd_train(t + 1, rows, C, x, gamma, beta, 1e-3f, K_ACT_SILU, y[t], m[t], r[t], v[t]);
            /* dx aliases dy: allowed */
            memcpy(dx[t], dy, (size_t)n * sizeof(float));
            k_bn_act_bwd(t + 1, rows, C, x, dx[t], gamma, beta, mr, rr, K_ACT_SILU, dact, dx[t], dg[t], db[t]);
        }
        double e1 = test_max_rel_diff(y[0], ya, n), e5 = test_max_rel_diff(dx[0], dxa, n);
        double e6 = test_max_rel_diff(dg[0], dga, C), e7 = test_max_rel_diff(db[0], dba, C);
        CHECK_MSG(e1 < 2e-5 + 1e-7 * offset && e5 < 5e-5 && e6 < 2e-5 && e7 < 2e-5,
                  "bn+silu rows %ld C %d offset %g level %d: y %.3g dx %.3g dg %.3g db %.3g", rows, C, offset,
                  levels[li], e1, e5, e6, e7);
        CHECK(same_bits(y[0], y[1], n) && same_bits(dx[0], dx[1], n) && same_bits(dg[0], dg[1], C) &&
              same_bits(db[0], db[1], C));
    }
    free(ya), free(dxa), free(dga), free(dba), free(dact);
    k_simd_force(K_SIMD_AVX512);
    free(x), free(dy), free(gamma), free(beta), free(yr), free(mr), free(rr), free(vr), free(dxr), free(dgr);
    free(dbr), free(dg0), free(db0);
    for (int t = 0; t < 2; t++) free(y[t]), free(m[t]), free(r[t]), free(v[t]), free(dx[t]), free(dg[t]), free(db[t]);
}

/* max |a_i - b_i| relative to max(floor, max |b_i|) */
static double max_diff_floor(const float *a, const float *b, long n, double floor)
{
    double md = 0, mb = floor;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d != d ? INFINITY : d;
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

/* The SIMD row loops (bn_avx512.c) on the shapes that stress their layouts:
 * C = 1, 7 and 24 take flat lines of 16, 7 and 3 vectors; 13 flat lines in
 * the elementwise passes but one row per line, masked, in the reductions; 33
 * and 200 one row per line with a masked tail (200: two channel groups);
 * rows 1, 7, 13 and 33 leave partial lines and chunks, the large counts span
 * several row blocks and threads.  Every path against the double references,
 * 1 and 3 threads bit-identical, k_bn_act_apply bit-identical to the
 * training forward, with and without SiLU. */
static void test_bn_shape(long rows, int C)
{
    long n = rows * C;
    float *x = frandom(n), *dy = frandom(n), *gamma = frandom(C), *beta = frandom(C);
    for (long i = 0; i < n; i++) {
        int c = (int)(i % C);
        x[i] = (float)(c % 5 - 2) + x[i] * (0.5f + 0.1f * (float)(c % 7));
    }
    float *dg0 = frandom(C), *db0 = frandom(C);
    float *yr = falloc(n), *ysr = falloc(n), *mr = falloc(C), *rr = falloc(C), *vr = falloc(C);
    float *dxr[2], *dgr[2], *dbr[2];
    k_bn_fwd_train_ref(rows, C, x, gamma, beta, 1e-3f, yr, mr, rr, vr);
    k_silu_fwd_ref(n, yr, ysr);
    for (int a = 0; a < 2; a++) {
        dxr[a] = falloc(n), dgr[a] = fcopy(dg0, C), dbr[a] = fcopy(db0, C);
        k_bn_act_bwd_ref(rows, C, x, dy, gamma, beta, mr, rr, a ? K_ACT_SILU : K_ACT_NONE, dxr[a], dgr[a], dbr[a]);
    }
    float *y1 = falloc(n), *y3 = falloc(n), *ya = falloc(n), *dx1 = falloc(n), *dx3 = falloc(n), *dact = falloc(n);
    float *m1 = falloc(C), *r1 = falloc(C), *v1 = falloc(C), *m3 = falloc(C), *r3 = falloc(C), *v3 = falloc(C);
    float *dg1 = falloc(C), *db1 = falloc(C), *dg3 = falloc(C), *db3 = falloc(C);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (int a = 0; a < 2; a++) {
            const int act = a ? K_ACT_SILU : K_ACT_NONE;
            k_bn_act_fwd_train(1, rows, C, x, gamma, beta, 1e-3f, act, y1, m1, r1, v1);
            k_bn_act_fwd_train(3, rows, C, x, gamma, beta, 1e-3f, act, y3, m3, r3, v3);
            k_bn_act_apply(2, rows, C, x, gamma, beta, m1, r1, act, ya);
            double ey = test_max_rel_diff(y1, a ? ysr : yr, n), em = test_max_rel_diff(m1, mr, C);
            double er = test_max_rel_diff(r1, rr, C), ev = test_max_rel_diff(v1, vr, C);
            CHECK_MSG(ey < 2e-5 && em < 1e-6 && er < 2e-5 && ev < 2e-5,
                      "bn fwd rows %ld C %d act %d %s: y %.3g mean %.3g rstd %.3g var %.3g", rows, C, act,
                      k_simd_name(levels[li]), ey, em, er, ev);
            CHECK_MSG(same_bits(y1, y3, n) && same_bits(m1, m3, C) && same_bits(r1, r3, C) && same_bits(v1, v3, C),
                      "bn fwd rows %ld C %d act %d %s: 3 threads != 1", rows, C, act, k_simd_name(levels[li]));
            CHECK_MSG(same_bits(y1, ya, n), "bn apply rows %ld C %d act %d %s: != training forward", rows, C, act,
                      k_simd_name(levels[li]));
            /* backward from the reference statistics; the 3-thread run has dx alias dy */
            memcpy(dg1, dg0, (size_t)C * sizeof(float));
            memcpy(db1, db0, (size_t)C * sizeof(float));
            memcpy(dg3, dg0, (size_t)C * sizeof(float));
            memcpy(db3, db0, (size_t)C * sizeof(float));
            memcpy(dx3, dy, (size_t)n * sizeof(float));
            k_bn_act_bwd(1, rows, C, x, dy, gamma, beta, mr, rr, act, dact, dx1, dg1, db1);
            k_bn_act_bwd(3, rows, C, x, dx3, gamma, beta, mr, rr, act, dact, dx3, dg3, db3);
            /* dgamma and dbeta are sums that may nearly cancel (a single
             * channel of 33 rows): their error is measured against at least 1 */
            double ex = test_max_rel_diff(dx1, dxr[a], n), eg = max_diff_floor(dg1, dgr[a], C, 1.0);
            double eb = max_diff_floor(db1, dbr[a], C, 1.0);
            CHECK_MSG(ex < 5e-5 && eg < 2e-5 && eb < 2e-5, "bn bwd rows %ld C %d act %d %s: dx %.3g dg %.3g db %.3g",
                      rows, C, act, k_simd_name(levels[li]), ex, eg, eb);
            CHECK_MSG(same_bits(dx1, dx3, n) && same_bits(dg1, dg3, C) && same_bits(db1, db3, C),
                      "bn bwd rows %ld C %d act %d %s: 3 threads != 1", rows, C, act, k_simd_name(levels[li]));
        }
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(dy), free(gamma), free(beta), free(dg0), free(db0), free(yr), free(ysr), free(mr), free(rr);
    free(vr);
    for (int a = 0; a < 2; a++) free(dxr[a]), free(dgr[a]), free(dbr[a]);
    free(y1), free(y3), free(ya), free(dx1), free(dx3), free(dact), free(m1), free(r1), free(v1), free(m3), free(r3);
    free(v3), free(dg1), free(db1), free(dg3), free(db3);
}

/* One-pass statistics where a naive E[x^2] - E[x]^2 fails: channels with a
 * mean of 1000 and a standard deviation of 0.01 (the float data are then
 * quantized to 160ths of the spread), -500 and 3, 0 and 1e-3, a constant
 * channel, one whose first row is a 50-sigma outlier, and a mean of 1e4 with
 * unit spread; the variance must stay close to the double reference's. */
static void test_bn_variance(void)
{
    static const double mu[6] = {1000.0, -500.0, 0.0, 7.0, 3.0, 1e4}, sd[6] = {0.01, 3.0, 1e-3, 0.0, 1.0, 1.0};
    const int C = 6;
    static const long rows_list[3] = {5, 777, 40000};
    for (int t = 0; t < 3; t++) {
        long rows = rows_list[t], n = rows * C;
        float *x = falloc(n), *y = falloc(n), *yr = falloc(n), g[6], b[6];
        float m[6], r[6], v[6], mr[6], rr[6], vr[6];
        for (int c = 0; c < C; c++) g[c] = 1.0f, b[c] = 0.0f;
        for (long i = 0; i < rows; i++)
            for (int c = 0; c < C; c++) {
                /* a sum of three uniforms: roughly normal, unit variance */
                double z = (frand() + frand() + frand());
                if (c == 4 && i == 0) z = 50.0;
                x[i * C + c] = (float)(mu[c] + sd[c] * z);
            }
        k_bn_fwd_train_ref(rows, C, x, g, b, 1e-5f, yr, mr, rr, vr);
        for (int li = 0; li < nlevels; li++) {
            k_simd_force(levels[li]);
            k_bn_fwd_train(2, rows, C, x, g, b, 1e-5f, y, m, r, v);
            for (int c = 0; c < C; c++) {
                double ev = vr[c] > 0 ? fabs((double)v[c] - vr[c]) / vr[c] : fabs((double)v[c]);
                /* the mean relative to its magnitude or, near 0, to the spread */
                double em = fabs((double)m[c] - mr[c]) / fmax(fabs(mr[c]), sd[c] > 0 ? sd[c] : 1e-30);
                double er = fabs((double)r[c] - rr[c]) / rr[c];
                CHECK_MSG(ev < 2e-6 && em < 1e-6 && er < 2e-6,
                          "bn variance rows %ld channel %d (mean %g sd %g) %s: var %.3g (%.9g vs %.9g) mean %.3g "
                          "rstd %.3g",
                          rows, c, mu[c], sd[c], k_simd_name(levels[li]), ev, v[c], vr[c], em, er);
            }
        }
        k_simd_force(K_SIMD_AVX512);
        free(x), free(y), free(yr);
    }
}

static void test_bn(void)
{
    test_bn_hand();
    test_bn_case(1, 5, 0.0f);
    test_bn_case(7, 3, 0.0f);
    test_bn_case(100, 17, 0.0f);
    test_bn_case(1000, 33, 0.0f);
    test_bn_case(4099, 96, 0.0f);
    test_bn_case(300, 300, 0.0f);
    test_bn_case(70, 4200, 0.0f); /* more channels than one stack window of backward means */
    /* a large mean with unit spread: a one-pass E[x^2] - E[x]^2 in float
     * would lose the variance entirely */
    test_bn_case(2000, 24, 1000.0f);
    static const int Cs[] = {1, 7, 13, 24, 33, 200};
    static const long rs[] = {1, 7, 13, 33};
    for (int ci = 0; ci < 6; ci++) {
        for (int ri = 0; ri < 4; ri++) test_bn_shape(rs[ri], Cs[ci]);
        /* large: more than 65536 values (threads take part) and several row blocks */
        test_bn_shape(Cs[ci] < 20 ? 70001 : 4097, Cs[ci]);
    }
    test_bn_variance();
}

/* ---- activations ---------------------------------------------------------------- */
static double silu_d(double v) { return v / (1.0 + exp(-v)); }
static double sigm_d(double v) { return 1.0 / (1.0 + exp(-v)); }

static void test_act_n(long n)
{
    float *x = falloc(n), *dy = frandom(n);
    for (long i = 0; i < n; i++) x[i] = frand() * 20.0f;
    static const float special[] = {0.0f, -0.0f, 100.0f, -100.0f, -1e30f, 1e30f, 88.5f, -88.5f, 89.5f,
                                    -89.5f, 104.5f, -104.5f, 1e-30f, 20.0f, -20.0f, 87.0f, -87.0f};
    for (long i = 0; i < n && i < 17; i++) x[i * 7 % n] = special[i];
    float *yr = falloc(n), *dxr = falloc(n), *sr = falloc(n);
    k_silu_fwd_ref(n, x, yr);
    k_silu_bwd_ref(n, x, dy, dxr);
    int refok = 1;
    for (long i = 0; i < n; i++) {
        sr[i] = (float)sigm_d(x[i]);
        if (fabs(yr[i] - silu_d(x[i])) > 1e-6 * (1 + fabs(silu_d(x[i])))) refok = 0;
    }
    CHECK(refok);
    float *a[2], *b[2], *c[2], *d[2];
    for (int t = 0; t < 2; t++) a[t] = falloc(n), b[t] = falloc(n), c[t] = falloc(n), d[t] = falloc(n);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (int t = 0; t < 2; t++) {
            k_silu_fwd(t + 1, n, x, a[t]);
            memcpy(b[t], dy, (size_t)n * sizeof(float));
            k_silu_bwd(t + 1, n, x, b[t], b[t]); /* in place on dy */
            k_sigmoid_fwd(t + 1, n, x, c[t]);
            k_sigmoid_bwd(t + 1, n, c[t], dy, d[t]);
        }
        /* absolute error relative to max(1, |value|) */
        double ea = 0, eb = 0, ec = 0, ed = 0;
        for (long i = 0; i < n; i++) {
            double va = fabs(a[0][i] - yr[i]) / fmax(1.0, fabs(yr[i]));
            double vb = fabs(b[0][i] - dxr[i]) / fmax(1.0, fabs(dxr[i]));
            double vc = fabs(c[0][i] - sr[i]);
            double ref_d = (double)dy[i] * c[0][i] * (1.0 - c[0][i]);
            double vd = fabs(d[0][i] - ref_d);
            if (!(va <= ea)) ea = va;
            if (!(vb <= eb)) eb = vb;
            if (!(vc <= ec)) ec = vc;
            if (!(vd <= ed)) ed = vd;
        }
        CHECK_MSG(ea < 1e-6 && eb < 1e-6 && ec < 1e-6 && ed < 1e-6, "act n %ld level %d: %.3g %.3g %.3g %.3g", n,
                  levels[li], ea, eb, ec, ed);
        CHECK(all_finite(a[0], n) && all_finite(b[0], n) && all_finite(c[0], n) && all_finite(d[0], n));
        CHECK(same_bits(a[0], a[1], n) && same_bits(b[0], b[1], n) && same_bits(c[0], c[1], n) &&
              same_bits(d[0], d[1], n));
        /* exact limits */
        for (long i = 0; i < n && i < 17; i++) {
            float v = special[i];
            long k = i * 7 % n;
            if (v <= -100.0f) CHECK(a[0][k] == 0.0f && c[0][k] == 0.0f && b[0][k] == 0.0f);
            if (v >= 100.0f) CHECK(a[0][k] == v && c[0][k] == 1.0f && b[0][k] == dy[k]);
        }
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(dy), free(yr), free(dxr), free(sr);
    for (int t = 0; t < 2; t++) free(a[t]), free(b[t]), free(c[t]), free(d[t]);
}

static void test_act(void)
{
    test_act_n(17);
    test_act_n(33);
    test_act_n(1000);
    test_act_n(100003);
}

/* ---- pooling and FC ------------------------------------------------------------------ */
static void test_gap_fc(void)
{
    /* rows of 1 .. 130 positions: one chunk, exactly 64, and three per row */
    static const int shapes[][4] = {{1, 1, 1, 1}, {2, 1, 7, 13}, {3, 7, 7, 96}, {2, 3, 100, 33}, {4, 8, 125, 40},
                                    {3, 1, 130, 257}, {1, 24, 24, 960}, {2, 5, 64, 17}, {1, 2, 65, 20}};
    for (int t = 0; t < 9; t++) {
        int n = shapes[t][0], C = shapes[t][3];
        long h = shapes[t][1], w = shapes[t][2], hw = h * w;
        float *x = frandom(n * hw * C), *y1 = falloc(n * C), *y2 = falloc(n * C), *ya = falloc(n * C);
        float *ws = falloc((long)k_gap_scratch(n, h, w, C));
        /* the same bits on every SIMD path (the chunk sums keep their order
         * in every lane), by channels or by rows, at any thread count */
        for (int li = 0; li < nlevels; li++) {
            k_simd_force(levels[li]);
            k_gap_fwd(1, n, h, w, C, x, y1);
            if (li == 0) memcpy(ya, y1, sizeof(float) * n * C);
            CHECK_MSG(same_bits(y1, ya, n * C), "gap %d, %s against generic", t, k_simd_name(levels[li]));
            k_gap_fwd(2, n, h, w, C, x, y2);
            CHECK(same_bits(y1, y2, n * C));
            for (int nt = 1; nt <= 3; nt++) {
                ffill(y2, n * C, -1.0f);
                k_gap_fwd_ws(nt, n, h, w, C, x, y2, ws);
                CHECK_MSG(same_bits(y1, y2, n * C), "gap by rows %d, %d threads, %s", t, nt, k_simd_name(levels[li]));
            }
            /* from chunk sums made row by row, channels in two parts */
            const long rq = k_gap_chunks(1, w);
            for (long r = 0; r < n * h; r++) {
                k_gap_row_chunks(w, C, C / 2, x + r * w * C, ws + r * rq * C);
                k_gap_row_chunks(w, C, C - C / 2, x + r * w * C + C / 2, ws + r * rq * C + C / 2);
            }
            ffill(y2, n * C, -1.0f);
            k_gap_from_chunks(2, n, h, w, C, ws, y2);
            CHECK_MSG(same_bits(y1, y2, n * C), "gap from chunks %d, %s", t, k_simd_name(levels[li]));
        }
        k_simd_force(K_SIMD_AVX512);
        double e = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (long p = 0; p < hw; p++) s += x[(i * hw + p) * C + c];
                e = fmax(e, fabs(y1[i * C + c] - s / hw));
            }
        CHECK_MSG(e < 1e-6, "gap %d: %.3g", t, e);
        free(ws), free(ya);
        float *dy = frandom(n * C), *dx1 = falloc(n * hw * C), *dx2 = falloc(n * hw * C);
        k_gap_bwd(1, n, hw, C, dy, dx1);
        k_gap_bwd(2, n, hw, C, dy, dx2);
        e = 0;
        for (int i = 0; i < n; i++)
            for (long p = 0; p < hw; p++)
                for (int c = 0; c < C; c++) e = fmax(e, fabs(dx1[(i * hw + p) * C + c] - dy[i * C + c] / (double)hw));
        CHECK_MSG(e < 1e-7, "gap bwd %d: %.3g", t, e);
        CHECK(same_bits(dx1, dx2, n * hw * C));
        free(x), free(y1), free(y2), free(dy), free(dx1), free(dx2);
    }
    static const int fcs[][3] = {{1, 1, 1}, {3, 17, 5}, {8, 64, 100}, {5, 1280, 10}};
    for (int t = 0; t < 4; t++) {
        int n = fcs[t][0], in = fcs[t][1], out = fcs[t][2];
        float *x = frandom(n * in), *W = frandom(out * in), *b = frandom(out), *y = falloc(n * out);
        float *dy = frandom(n * out), *dx = falloc(n * in), *dW = frandom(out * in), *db = frandom(out);
        float *dW0 = fcopy(dW, out * in), *db0 = fcopy(db, out);
        for (int li = 0; li < nlevels; li++) {
            k_simd_force(levels[li]);
            memcpy(dW, dW0, sizeof(float) * out * in);
            memcpy(db, db0, sizeof(float) * out);
            k_fc_fwd(2, n, in, out, x, W, b, y);
            k_fc_bwd(2, n, in, out, x, W, dy, dx, dW, db);
            double ey = 0, ex = 0, ew = 0, eb = 0;
            for (int i = 0; i < n; i++)
                for (int o = 0; o < out; o++) {
                    double s = b[o];
                    for (int k = 0; k < in; k++) s += (double)x[i * in + k] * W[o * in + k];
                    ey = fmax(ey, fabs(y[i * out + o] - s) / (1 + fabs(s)));
                }
            for (int i = 0; i < n; i++)
                for (int k = 0; k < in; k++) {
                    double s = 0;
                    for (int o = 0; o < out; o++) s += (double)dy[i * out + o] * W[o * in + k];
                    ex = fmax(ex, fabs(dx[i * in + k] - s) / (1 + fabs(s)));
                }
            for (int o = 0; o < out; o++) {
                double sb = db0[o];
                for (int i = 0; i < n; i++) sb += dy[i * out + o];
                eb = fmax(eb, fabs(db[o] - sb) / (1 + fabs(sb)));
                for (int k = 0; k < in; k++) {
                    double s = dW0[o * in + k];
                    for (int i = 0; i < n; i++) s += (double)dy[i * out + o] * x[i * in + k];
                    ew = fmax(ew, fabs(dW[o * in + k] - s) / (1 + fabs(s)));
                }
            }
            CHECK_MSG(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-6, "fc %d level %d: %.3g %.3g %.3g %.3g", t,
                      levels[li], ey, ex, ew, eb);
        }
        k_simd_force(K_SIMD_AVX512);
        free(x), free(W), free(b), free(y), free(dy), free(dx), free(dW), free(db), free(dW0), free(db0);
    }
}

/* ---- squeeze-excite ---------------------------------------------------------------------- */
static void test_se_case(int n, long h, long w, int C, int S)
{
    const long hw = h * w, xn = n * hw * C;
    float *x = frandom(xn), *W1 = frandom(S * C), *b1 = frandom(S), *W2 = frandom(C * S), *b2 = frandom(C);
    float *yref = falloc(xn);
    k_se_fwd_ref(n, hw, C, S, x, W1, b1, W2, b2, yref);
    size_t ns = k_se_scratch(n, h, w, C, S);
    float *scratch = falloc((long)ns), *y[2], *pooled[2], *hid[2], *gate[2], *dx[2], *g[2][4];
    float *dy = frandom(xn), *yi = falloc(xn);
    for (int t = 0; t < 2; t++) {
        y[t] = falloc(xn), pooled[t] = falloc(n * C), hid[t] = falloc(n * S), gate[t] = falloc(n * C);
        dx[t] = falloc(xn);
        g[t][0] = falloc(S * C), g[t][1] = falloc(S), g[t][2] = falloc(C * S), g[t][3] = falloc(C);
    }
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (int t = 0; t < 2; t++) {
            ffill(scratch, (long)ns, NAN);
            k_se_fwd(t + 1, n, h, w, C, S, x, W1, b1, W2, b2, y[t], pooled[t], hid[t], gate[t], scratch);
            ffill(g[t][0], S * C, 0.5f), ffill(g[t][1], S, 0.5f), ffill(g[t][2], C * S, 0.5f), ffill(g[t][3], C, 0.5f);
            ffill(scratch, (long)ns, NAN);
            k_se_bwd(t + 1, n, hw, C, S, x, W1, W2, pooled[t], hid[t], gate[t], dy, dx[t], g[t][0], g[t][1], g[t][2],
                     g[t][3], scratch);
        }
        double e = test_max_rel_diff(y[0], yref, xn);
        CHECK_MSG(e < 1e-5, "se n%d %ldx%ld C%d S%d level %d: %.3g", n, h, w, C, S, levels[li], e);
        /* saved intermediates */
        double ep = 0, eh = 0, eg = 0;
        for (int i = 0; i < n; i++) {
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (long p = 0; p < hw; p++) s += x[(i * hw + p) * C + c];
                ep = fmax(ep, fabs(pooled[0][i * C + c] - s / hw));
            }
            for (int s = 0; s < S; s++) {
                double h = b1[s];
                for (int c = 0; c < C; c++) h += (double)W1[s * C + c] * pooled[0][i * C + c];
                eh = fmax(eh, fabs(hid[0][i * S + s] - h) / (1 + fabs(h)));
            }
            for (int c = 0; c < C; c++) {
                double z = b2[c];
                for (int s = 0; s < S; s++) z += (double)W2[c * S + s] * silu_d(hid[0][i * S + s]);
                eg = fmax(eg, fabs(gate[0][i * C + c] - sigm_d(z)));
            }
        }
        CHECK_MSG(ep < 1e-6 && eh < 1e-5 && eg < 1e-6, "se saved: %.3g %.3g %.3g", ep, eh, eg);
        /* inference form (no saved buffers) gives the same output */
        k_se_fwd(2, n, h, w, C, S, x, W1, b1, W2, b2, yi, NULL, NULL, NULL, scratch);
        CHECK(same_bits(yi, y[0], xn));
        /* the gate alone from the pooling's chunk sums (inference: the
         * depthwise convolution sums, the projection applies the gate) is
         * the saved gate */
        float *go = falloc(n * C), *sums = falloc((long)k_gap_scratch(n, h, w, C));
        for (long r = 0; r < n * h; r++) k_gap_row_chunks(w, C, C, x + r * w * C, sums + r * k_gap_chunks(1, w) * C);
        ffill(scratch, (long)ns, NAN);
        k_se_gate_chunks(2, n, h, w, C, S, sums, W1, b1, W2, b2, go, scratch);
        CHECK_MSG(same_bits(go, gate[0], n * C), "se gate n%d %ldx%ld C%d S%d level %d", n, h, w, C, S, levels[li]);
        free(go), free(sums);
        CHECK(same_bits(y[0], y[1], xn) && same_bits(pooled[0], pooled[1], n * C) &&
              same_bits(hid[0], hid[1], n * S) && same_bits(gate[0], gate[1], n * C));
        CHECK(same_bits(dx[0], dx[1], xn) && same_bits(g[0][0], g[1][0], S * C) && same_bits(g[0][1], g[1][1], S) &&
              same_bits(g[0][2], g[1][2], C * S) && same_bits(g[0][3], g[1][3], C));
        CHECK(all_finite(dx[0], xn));
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(W1), free(b1), free(W2), free(b2), free(yref), free(scratch), free(dy), free(yi);
    for (int t = 0; t < 2; t++) {
        free(y[t]), free(pooled[t]), free(hid[t]), free(gate[t]), free(dx[t]);
        for (int k = 0; k < 4; k++) free(g[t][k]);
    }
}

static void test_se(void)
{
    test_se_case(1, 1, 1, 4, 1);
    test_se_case(2, 7, 7, 24, 6);
    test_se_case(3, 1, 13, 64, 16);
    test_se_case(2, 24, 24, 96, 4);
    test_se_case(1, 3, 70, 33, 5);
}

/* ---- loss ----------------------------------------------------------------------------------------- */
static void test_xent(void)
{
    /* K = 3, logits 1 2 3, label 2, smoothing 0.1, one row */
    {
        float z[3] = {1, 2, 3}, d[3];
        int32_t lab = 2, ok = -1;
        const double eps = 0.1f; /* the float the kernel receives */
        double lse = log(exp(1.0) + exp(2.0) + exp(3.0)), loss = 0;
        double t[3] = {eps / 3, eps / 3, 1 - eps + eps / 3};
        for (int k = 0; k < 3; k++) loss += t[k] * (lse - (k + 1));
        double got = k_xent(1, 3, z, &lab, NULL, 0.1f, d, &ok);
        CHECK_NEAR(got, loss, 1e-12);
        for (int k = 0; k < 3; k++) CHECK_NEAR(d[k], exp(k + 1 - lse) - t[k], 1e-7);
        CHECK_EQ_INT(ok, 1);
    }
    /* two rows, mean and 1/n scaling; row 1's label is not the arg-max */
    {
        float z[6] = {1, 2, 3, 0.5f, -1, 2}, d[6];
        int32_t lab[2] = {2, 0}, ok = -1;
        double total = 0;
        for (int i = 0; i < 2; i++) {
            double se = 0;
            for (int k = 0; k < 3; k++) se += exp(z[i * 3 + k]);
            double lse = log(se);
            for (int k = 0; k < 3; k++) {
                double t = (k == lab[i] ? 1 - (double)0.2f : 0.0) + (double)0.2f / 3;
                total += t * (lse - z[i * 3 + k]);
            }
        }
        double got = k_xent(2, 3, z, lab, NULL, 0.2f, d, &ok);
        CHECK_NEAR(got, total / 2, 1e-12);
        CHECK_EQ_INT(ok, 1);
        double s1 = exp(0.5) + exp(-1.0) + exp(2.0);
        CHECK_NEAR(d[3], (exp(0.5) / s1 - (1 - (double)0.2f + (double)0.2f / 3)) / 2, 1e-7);
        CHECK_NEAR(d[4], (exp(-1.0) / s1 - (double)0.2f / 3) / 2, 1e-7);
    }
    /* soft targets, no smoothing: loss = -sum t log p */
    {
        float z[4] = {0, 1, 2, 3}, t[4] = {0.1f, 0.2f, 0.3f, 0.4f}, d[4];
        int32_t ok = -1;
        double se = 1 + exp(1.0) + exp(2.0) + exp(3.0), loss = 0;
        for (int k = 0; k < 4; k++) loss -= (double)t[k] * (k - log(se));
        CHECK_NEAR(k_xent(1, 4, z, NULL, t, 0.0f, d, &ok), loss, 1e-12);
        for (int k = 0; k < 4; k++) CHECK_NEAR(d[k], exp(k) / se - t[k], 1e-7);
        CHECK_EQ_INT(ok, 1);
    }
    /* ties go to the lowest index, for logits and for soft targets */
    {
        float z[6] = {5, 5, 1, 2, 7, 7};
        int32_t lab[2] = {0, 1}, ok = -1;
        k_xent(2, 3, z, lab, NULL, 0.0f, NULL, &ok);
        CHECK_EQ_INT(ok, 2); /* arg-maxes 0 and 1, not 1 and 2 */
        lab[0] = 1;
        k_xent(2, 3, z, lab, NULL, 0.0f, NULL, &ok);
        CHECK_EQ_INT(ok, 1);
        /* tied targets, untied logits: the targets' arg-max must be 0 and 1 */
        float z2[6] = {5, 4, 1, 2, 7, 6}, t[6] = {0.4f, 0.4f, 0.2f, 0, 0.5f, 0.5f};
        k_xent(2, 3, z2, NULL, t, 0.0f, NULL, &ok);
        CHECK_EQ_INT(ok, 2);
    }
    /* large logits stay finite; gradient rows sum to zero */
    {
        float z[3] = {1000, -1000, 999}, d[3];
        int32_t lab = 1, ok;
        double got = k_xent(1, 3, z, &lab, NULL, 0.1f, d, &ok);
        const double eps = 0.1f; /* the float the kernel receives */
        double lse = 1000.0 + log(1.0 + exp(-1.0)), off = eps / 3;
        double loss = off * (lse - 1000) + (1 - eps + off) * (lse + 1000) + off * (lse - 999);
        CHECK_NEAR(got, loss, 1e-9 * loss);
        CHECK_EQ_INT(ok, 0);
        CHECK(isfinite(d[0]) && isfinite(d[1]) && isfinite(d[2]));
        CHECK_NEAR((double)d[0] + d[1] + d[2], 0.0, 1e-6);
    }
    /* a label out of range poisons the loss instead of reading out of bounds */
    {
        float z[3] = {1, 2, 3}, d[3];
        int32_t lab = 3, ok;
        CHECK(isnan(k_xent(1, 3, z, &lab, NULL, 0.0f, d, &ok)));
    }
}

/* ---- elementwise ------------------------------------------------------------------------------------ */
static void test_elementwise(void)
{
    long sizes[] = {1, 17, 100003};
    for (int t = 0; t < 3; t++) {
        long n = sizes[t];
        float *a = frandom(n), *b = frandom(n), *y1 = falloc(n), *y2 = falloc(n);
        k_add(1, n, a, b, y1);
        k_add(2, n, a, b, y2);
        int ok = 1;
        for (long i = 0; i < n; i++) ok &= y1[i] == a[i] + b[i];
        CHECK(ok && same_bits(y1, y2, n));
        free(a), free(b), free(y1), free(y2);
    }
    {
        int n = 5;
        long per = 30011;
        float *x = frandom(n * per), s[5] = {0, 1, -2, 0.5f, 3}, *y1 = falloc(n * per), *y2 = falloc(n * per);
        k_scale_rows(1, n, per, x, s, y1);
        k_scale_rows(2, n, per, x, s, y2);
        int ok = 1;
        for (int i = 0; i < n; i++)
            for (long k = 0; k < per; k++) ok &= y1[i * per + k] == x[i * per + k] * s[i];
        CHECK(ok && same_bits(y1, y2, n * per));
        free(x), free(y1), free(y2);
    }
    static const int tr[][4] = {{1, 1, 1, 1}, {2, 3, 7, 13}, {1, 33, 17, 5}, {3, 64, 33, 40}};
    for (int t = 0; t < 4; t++) {
        int n = tr[t][0], C = tr[t][1], H = tr[t][2], W = tr[t][3];
        long sz = (long)n * C * H * W;
        float *src = frandom(sz), *d1 = falloc(sz), *d2 = falloc(sz), *back = falloc(sz);
        k_nchw_to_nhwc(1, n, C, H, W, src, d1);
        k_nchw_to_nhwc(2, n, C, H, W, src, d2);
        int ok = 1;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++)
                for (int h = 0; h < H; h++)
                    for (int w = 0; w < W; w++)
                        ok &= d1[(((long)i * H + h) * W + w) * C + c] == src[(((long)i * C + c) * H + h) * W + w];
        CHECK(ok && same_bits(d1, d2, sz));
        k_nhwc_to_nchw(2, n, C, H, W, d1, back);
        CHECK(same_bits(back, src, sz));
        free(src), free(d1), free(d2), free(back);
    }
}

/* ---- optional timings ------------------------------------------------------------------------------------ */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench_dw(int n, int h, int C, int stride, int nt)
{
    k_conv_shape s;
    k_conv_shape_init(&s, n, h, h, C, C, 3, stride, 1);
    long xi = (long)n * h * h * C, yo = (long)n * s.ho * s.wo * C;
    float *x = frandom(xi), *w = frandom(9 * C), *y = frandom(yo), *dx = falloc(xi), *dw = falloc(9 * C);
    float *sc = frandom(C), *bi = frandom(C);
    k_epilogue ep = {sc, bi, K_ACT_SILU, NULL, 0};
    double best[3] = {1e9, 1e9, 1e9};
    for (int r = 0; r < 10; r++) {
        double t0 = now_s();
        k_dwconv_fwd(nt, &s, x, w, y, &ep);
        double t1 = now_s();
        k_dwconv_bwd_data(nt, &s, y, w, dx);
        double t2 = now_s();
        k_dwconv_bwd_weight(nt, &s, x, y, dw);
        double t3 = now_s();
        best[0] = fmin(best[0], t1 - t0), best[1] = fmin(best[1], t2 - t1), best[2] = fmin(best[2], t3 - t2);
    }
    double mb = (double)(xi + yo) * 4 / 1e6;
    printf("dwconv n%d %dx%d C%d s%d nt%d [%s]: fwd(+bn+silu) %.3f ms (%.1f GB/s), bwd_data %.3f ms, bwd_weight %.3f "
           "ms\n",
           n, h, h, C, stride, nt, k_simd_name(k_simd_level()), best[0] * 1e3, mb / best[0] / 1e3, best[1] * 1e3,
           best[2] * 1e3);
    free(x), free(w), free(y), free(dx), free(dw), free(sc), free(bi);
}

int main(void)
{
    test_rng_state = 0x2545F4914F6CDD1Dull;
    find_levels();
    test_dwconv();
    test_bn();
    test_act();
    test_gap_fc();
    test_se();
    test_xent();
    test_elementwise();
    const char *b = getenv("ENV2_BENCH");
    if (b && *b == '1') {
        for (int nt = 1; nt <= 2; nt++) {
            bench_dw(1, 48, 1024, 1, nt);
            bench_dw(1, 24, 960, 1, nt);
            bench_dw(8, 24, 960, 1, nt);
            bench_dw(1, 48, 256, 2, nt);
            bench_dw(1, 12, 1536, 1, nt);
        }
    }
    return test_summary();
}
