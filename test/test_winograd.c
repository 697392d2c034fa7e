/* Winograd F(4x4, 3x3) forward (winograd.c) against the direct reference
 * convolution: odd sizes and channel counts, every padding, every
 * epilogue (also the in-place residual), every SIMD path, more than one K
 * block, the no-buffer fallback, and bit-identity across thread counts; and
 * the stride-1 data gradient that training runs through it. */
#include <stdint.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/kernels_internal.h"

static int same_bits(const float *a, const float *b, long n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

static int levels[3], nlevels;
static double worst_ratio;

/* The transforms add rounding on top of the GEMM's: a few float ulps of the
 * largest transformed value per term, growing like sqrt of the number of
 * terms.  Measured errors stay below 0.4 of this bound; a wrong
 * coefficient or tile offset gives errors of order 1e-2 or more. */
static double wino_tol(const k_conv_shape *s) { return 3e-6 * sqrt(9.0 * s->ci) + 2e-6; }

static void run_shape(k_conv_shape s, int epk)
{
    const long nx = (long)s.n * s.h * s.w * s.ci, ny = (long)s.n * s.ho * s.wo * s.co, nw = 9L * s.ci * s.co;
    float *x = frandom(nx), *w = frandom(nw), *scale = frandom(s.co), *bias = frandom(s.co), *res = frandom(ny);
    k_epilogue ep = {NULL, NULL, K_ACT_NONE, NULL, s.co};
    if (epk == 1) ep = (k_epilogue){scale, bias, K_ACT_SILU, NULL, s.co};
    if (epk == 2 || epk == 3) ep = (k_epilogue){scale, NULL, K_ACT_NONE, res, s.co};
    if (epk == 4) ep = (k_epilogue){NULL, bias, K_ACT_SIGMOID, NULL, s.co};
    const k_epilogue *epp = epk ? &ep : NULL;
    float *yr = falloc(ny);
    k_conv2d_fwd_ref(&s, x, w, yr, epp);
    float *ws = falloc((long)k_wino_workspace(&s));
    char tag[160];
    snprintf(tag, sizeof tag, "n=%d %dx%d ci=%d co=%d pad=%d,%d out=%dx%d ep=%d", s.n, s.h, s.w, s.ci, s.co, s.pad_t,
             s.pad_l, s.ho, s.wo, epk);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        float *y1 = falloc(ny), *y2 = falloc(ny), *y3 = falloc(ny), *y4 = falloc(ny);
        for (long i = 0; i < ny; i++) y1[i] = y2[i] = y3[i] = y4[i] = NAN; /* written, never read */
        if (epk == 3) {
            /* in-place residual: y starts as the residual and is the epilogue's input */
            memcpy(y1, res, (size_t)ny * sizeof(float));
            memcpy(y2, res, (size_t)ny * sizeof(float));
            memcpy(y3, res, (size_t)ny * sizeof(float));
            memcpy(y4, res, (size_t)ny * sizeof(float));
        }
        k_epilogue e1 = ep, e2 = ep, e3 = ep, e4 = ep;
        if (epk == 3) {
            e1.residual = y1;
            e2.residual = y2;
            e3.residual = y3;
            e4.residual = y4;
        }
        k_conv2d_fwd_wino(1, &s, x, w, y1, epk ? &e1 : NULL, ws);
        k_conv2d_fwd_wino(2, &s, x, w, y2, epk ? &e2 : NULL, ws);
        k_conv2d_fwd_wino(3, &s, x, w, y3, epk ? &e3 : NULL, ws);
        k_gemm_test_no_buffer = 1; /* the fallback sums directly */
        k_conv2d_fwd_wino(2, &s, x, w, y4, epk ? &e4 : NULL, ws);
        k_gemm_test_no_buffer = 0;
        double tol = wino_tol(&s), e = test_max_rel_diff(y1, yr, ny), ef = test_max_rel_diff(y4, yr, ny);
        if (e / tol > worst_ratio) worst_ratio = e / tol;
        if (getenv("ENV2_TEST_VERBOSE")) printf("%s %s: %.3g (tol %.3g)\n", k_simd_name(levels[li]), tag, e, tol);
        CHECK_MSG(e <= tol, "%s %s rel err %.3g > %.3g", k_simd_name(levels[li]), tag, e, tol);
        CHECK_MSG(ef <= 2e-7 * (9.0 * s.ci + 8), "%s %s fallback rel err %.3g", k_simd_name(levels[li]), tag, ef);
        CHECK_MSG(same_bits(y1, y2, ny) && same_bits(y1, y3, ny), "%s %s: thread count changes bits",
                  k_simd_name(levels[li]), tag);
        if (levels[li] > K_SIMD_GENERIC) {
            /* the portable transforms with this level's micro-kernel */
            float *y5 = falloc(ny);
            if (epk == 3) memcpy(y5, res, (size_t)ny * sizeof(float));
            k_epilogue e5 = ep;
            if (epk == 3) e5.residual = y5;
            k_wino_test_level = K_SIMD_GENERIC;
            k_conv2d_fwd_wino(2, &s, x, w, y5, epk ? &e5 : NULL, ws);
            k_wino_test_level = -1;
            CHECK_MSG(test_max_rel_diff(y5, yr, ny) <= tol, "%s %s portable transforms rel err %.3g",
                      k_simd_name(levels[li]), tag, test_max_rel_diff(y5, yr, ny));
            free(y5);
        }
        free(y1);
        free(y2);
        free(y3);
        free(y4);
    }
    k_simd_force(K_SIMD_AVX512);
    free(x);
    free(w);
    free(scale);
    free(bias);
    free(res);
    free(yr);
    free(ws);
}

typedef struct wcase {
    int n, h, w, ci, co;
} wcase;

/* The paddings each case runs with: symmetric 1 (torchvision; "same" is the
 * same at stride 1) or TF "same" by case parity, none ("valid", outputs
 * (h-2) x (w-2)) when the input allows it, and uneven (2 rows on top, none
 * on the left, 2 extra output rows).  Returns how many were written. */
static int paddings(const wcase *c, int i, k_conv_shape out[3])
{
    int n = 0;
    k_conv_shape s;
    k_conv_shape_init(&s, c->n, c->h, c->w, c->ci, c->co, 3, 1, i % 2);
    out[n++] = s;
    if (c->h >= 3 && c->w >= 3) {
        k_conv_shape v = s;
        v.pad_t = v.pad_l = 0;
        v.ho = c->h - 2;
        v.wo = c->w - 2;
        out[n++] = v;
    }
    k_conv_shape u = s;
    u.pad_t = 2;
    u.pad_l = 0;
    u.ho = c->h + 2;
    u.wo = c->w - 2 > 0 ? c->w - 2 : 1;
    out[n++] = u;
    return n;
}

static void test_shapes(void)
{
    static const wcase cases[] = {
        {1, 1, 1, 1, 1},   {1, 7, 7, 3, 7},    {2, 13, 7, 13, 33}, {1, 33, 13, 7, 24}, {1, 13, 33, 16, 16},
        {3, 5, 9, 8, 40},  {1, 4, 4, 5, 3},    {1, 2, 1, 2, 2},    {1, 33, 33, 24, 24}, {2, 12, 10, 33, 48},
        {1, 16, 16, 48, 192}, {1, 7, 7, 8, 300}, {1, 6, 5, 400, 20}, {1, 9, 9, 64, 72}, {4, 3, 3, 17, 1},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < nc; i++) {
        k_conv_shape ps[3];
        int np = paddings(&cases[i], i, ps);
        for (int k = 0; k < np; k++) {
            CHECK(k_wino_ok(&ps[k]));
            /* the epilogue kind rotates with the padding (the uneven one
             * keeps its kind when there is no valid shape) */
            run_shape(ps[k], (i + (k == np - 1 ? 2 : k)) % 5);
        }
    }
}

static void test_hand(void)
{
    /* 3x3 image 1..9, 3x3 kernel of ones, symmetric padding 1: each output is
     * the sum of its neighbourhood (integers well inside float precision) */
    float x[9], w[9], y[9], ws[36];
    for (int i = 0; i < 9; i++) {
        x[i] = (float)(i + 1);
        w[i] = 1.0f;
    }
    k_conv_shape s;
    k_conv_shape_init(&s, 1, 3, 3, 1, 1, 3, 1, 0);
    CHECK(k_wino_workspace(&s) <= 36 * 32);
    float *wsb = falloc((long)k_wino_workspace(&s));
    (void)ws;
    k_conv2d_fwd_wino(1, &s, x, w, y, NULL, wsb);
    const float want[9] = {12, 21, 16, 27, 45, 33, 24, 39, 28};
    for (int i = 0; i < 9; i++) CHECK_MSG(fabsf(y[i] - want[i]) <= 2e-5f, "y[%d] = %.7g, want %g", i, y[i], want[i]);
    free(wsb);
    /* what does not qualify */
    k_conv_shape_init(&s, 1, 8, 8, 4, 4, 3, 2, 0);
    CHECK(!k_wino_ok(&s) && k_wino_workspace(&s) == 0);
    k_conv_shape_init(&s, 1, 8, 8, 4, 4, 5, 1, 0);
    CHECK(!k_wino_ok(&s));
    k_conv_shape_init(&s, 1, 8, 8, 4, 4, 1, 1, 0);
    CHECK(!k_wino_ok(&s));
}

/* The stride-1 data gradient through Winograd (k_conv2d_bwd_data with
 * wino = 1, as training runs it): a correlation of dy with the flipped,
 * transposed taps, summing 9 * co terms per input pixel. */
static void run_bwd(k_conv_shape s)
{
    const long nx = (long)s.n * s.h * s.w * s.ci, ny = (long)s.n * s.ho * s.wo * s.co, nw = 9L * s.ci * s.co;
    float *dy = frandom(ny), *w = frandom(nw), *ref = falloc(nx), *d1 = falloc(nx), *d2 = falloc(nx),
          *d3 = falloc(nx);
    float *ws = falloc((long)k_conv2d_train_workspace(&s, 1));
    k_conv2d_bwd_data_ref(&s, dy, w, ref);
    k_conv_shape ts = s; /* the shape the sums are taken over: ci' = co */
    ts.ci = s.co;
    double tol = wino_tol(&ts);
    char tag[160];
    snprintf(tag, sizeof tag, "bwd data n=%d %dx%d ci=%d co=%d pad=%d,%d out=%dx%d", s.n, s.h, s.w, s.ci, s.co,
             s.pad_t, s.pad_l, s.ho, s.wo);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (long i = 0; i < nx; i++) d1[i] = d2[i] = d3[i] = NAN; /* overwritten, never read */
        k_conv2d_bwd_data(1, &s, dy, w, d1, ws, 1);
        k_conv2d_bwd_data(2, &s, dy, w, d2, ws, 1);
        k_conv2d_bwd_data(3, &s, dy, w, d3, ws, 1);
        double e = test_max_rel_diff(d1, ref, nx);
        if (e / tol > worst_ratio) worst_ratio = e / tol;
        if (getenv("ENV2_TEST_VERBOSE")) printf("%s %s: %.3g (tol %.3g)\n", k_simd_name(levels[li]), tag, e, tol);
        CHECK_MSG(e <= tol, "%s %s rel err %.3g > %.3g", k_simd_name(levels[li]), tag, e, tol);
        CHECK_MSG(same_bits(d1, d2, nx) && same_bits(d1, d3, nx), "%s %s: thread count changes bits",
                  k_simd_name(levels[li]), tag);
    }
    k_simd_force(K_SIMD_AVX512);
    free(dy);
    free(w);
    free(ref);
    free(d1);
    free(d2);
    free(d3);
    free(ws);
}

/* The weight gradient through Winograd: each of the 9 * ci * co outputs sums
 * n * ho * wo products, so the tolerance grows with that count.  Measured
 * errors stay below half of it (about 10x the im2col GEMM's own error); a
 * wrong coefficient or tile offset gives errors of order 1e-2 or more. */
static double dw_tol(const k_conv_shape *s) { return 4e-7 * sqrt((double)s->n * s->ho * s->wo) + 4e-6; }

static void run_bwdw(k_conv_shape s)
{
    const long nx = (long)s.n * s.h * s.w * s.ci, ny = (long)s.n * s.ho * s.wo * s.co, nw = 9L * s.ci * s.co;
    float *x = frandom(nx), *dy = frandom(ny), *ref = falloc(nw), *d1 = falloc(nw), *d2 = falloc(nw), *d3 = falloc(nw),
          *dg = falloc(nw);
    float *ws = falloc((long)k_wino_bwd_weight_workspace(&s) + 1);
    CHECK(k_conv2d_train_workspace(&s, 1) >= k_wino_bwd_weight_workspace(&s));
    memset(ref, 0, (size_t)nw * sizeof(float)); /* the reference accumulates too */
    k_conv2d_bwd_weight_ref(&s, x, dy, ref);
    double tol = dw_tol(&s);
    char tag[160];
    snprintf(tag, sizeof tag, "bwd weight n=%d %dx%d ci=%d co=%d pad=%d,%d out=%dx%d", s.n, s.h, s.w, s.ci, s.co,
             s.pad_t, s.pad_l, s.ho, s.wo);
    /* the GEMM path's own error, for the record */
    float *wsg = falloc((long)k_conv2d_workspace(&s, 1) + 1);
    memset(dg, 0, (size_t)nw * sizeof(float));
    k_conv2d_bwd_weight(2, &s, x, dy, dg, wsg, 0);
    double eg = test_max_rel_diff(dg, ref, nw);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        memset(d1, 0, (size_t)nw * sizeof(float));
        memset(d2, 0, (size_t)nw * sizeof(float));
        memset(d3, 0, (size_t)nw * sizeof(float));
        k_conv2d_bwd_weight_wino(1, &s, x, dy, d1, ws);
        k_conv2d_bwd_weight_wino(2, &s, x, dy, d2, ws);
        k_conv2d_bwd_weight_wino(3, &s, x, dy, d3, ws);
        double e = test_max_rel_diff(d1, ref, nw);
        if (e / tol > worst_ratio) worst_ratio = e / tol;
        if (getenv("ENV2_TEST_VERBOSE"))
            printf("%s %s: %.3g (tol %.3g; im2col GEMM %.3g)\n", k_simd_name(levels[li]), tag, e, tol, eg);
        CHECK_MSG(e <= tol, "%s %s rel err %.3g > %.3g", k_simd_name(levels[li]), tag, e, tol);
        CHECK_MSG(same_bits(d1, d2, nw) && same_bits(d1, d3, nw), "%s %s: thread count changes bits",
                  k_simd_name(levels[li]), tag);
        /* the dispatching entry point takes this path */
        memset(d3, 0, (size_t)nw * sizeof(float));
        k_conv2d_bwd_weight(2, &s, x, dy, d3, ws, 1);
        CHECK_MSG(same_bits(d1, d3, nw), "%s %s: k_conv2d_bwd_weight(wino = 1) differs", k_simd_name(levels[li]), tag);
        /* it accumulates: a second call adds the same gradient again */
        k_conv2d_bwd_weight_wino(2, &s, x, dy, d2, ws);
        for (long i = 0; i < nw; i++) d3[i] = 2.0f * ref[i];
        CHECK_MSG(test_max_rel_diff(d2, d3, nw) <= tol, "%s %s: does not accumulate", k_simd_name(levels[li]), tag);
    }
    k_simd_force(K_SIMD_AVX512);
    free(x);
    free(dy);
    free(ref);
    free(d1);
    free(d2);
    free(d3);
    free(dg);
    free(ws);
    free(wsg);
}

static void test_bwd_weight(void)
{
    static const wcase cases[] = {
        {1, 1, 1, 1, 1},  {2, 13, 7, 13, 33}, {1, 7, 9, 24, 5},   {3, 5, 9, 40, 8},
        {2, 16, 16, 48, 64}, {9, 9, 9, 17, 24}, {4, 20, 20, 24, 24},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < nc; i++) {
        k_conv_shape ps[3];
        int np = paddings(&cases[i], i, ps);
        for (int k = 0; k < np; k++) run_bwdw(ps[k]);
    }
    /* hand case: x = 1..9 (3 x 3), dy = 1 at output (0, 0) only, padding 1:
     * dw(kh, kw) = x(kh - 1, kw - 1), zero where that is padding */
    k_conv_shape s;
    k_conv_shape_init(&s, 1, 3, 3, 1, 1, 3, 1, 0);
    float x[9], dy[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0}, dw[9] = {0};
    for (int i = 0; i < 9; i++) x[i] = (float)(i + 1);
    float *ws = falloc((long)k_wino_bwd_weight_workspace(&s));
    k_conv2d_bwd_weight_wino(1, &s, x, dy, dw, ws);
    const float want[9] = {0, 0, 0, 0, 1, 2, 0, 4, 5};
    for (int i = 0; i < 9; i++) CHECK_MSG(fabsf(dw[i] - want[i]) <= 1e-5f, "dw[%d] = %.7g, want %g", i, dw[i], want[i]);
    free(ws);
}

static void test_bwd_data(void)
{
    static const wcase cases[] = {
        {1, 1, 1, 1, 1}, {2, 13, 7, 13, 33}, {1, 7, 9, 24, 5}, {3, 5, 9, 40, 8}, {1, 16, 16, 192, 48}, {2, 9, 9, 17, 64},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < nc; i++) {
        k_conv_shape ps[3];
        int np = paddings(&cases[i], i, ps);
        for (int k = 0; k < np; k++) run_bwd(ps[k]);
    }
    /* hand case: only tap (0, 0) is set, so y(oh, ow) = x(oh - 1, ow - 1) and
     * dx(ih, iw) = dy(ih + 1, iw + 1) where that exists */
    k_conv_shape s;
    k_conv_shape_init(&s, 1, 3, 3, 1, 1, 3, 1, 0);
    float dy[9], w[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0}, dx[9];
    for (int i = 0; i < 9; i++) dy[i] = (float)(i + 1);
    float *ws = falloc((long)k_conv2d_train_workspace(&s, 1));
    k_conv2d_bwd_data(1, &s, dy, w, dx, ws, 1);
    const float want[9] = {5, 6, 0, 8, 9, 0, 0, 0, 0};
    for (int i = 0; i < 9; i++) CHECK_MSG(fabsf(dx[i] - want[i]) <= 1e-5f, "dx[%d] = %.7g, want %g", i, dx[i], want[i]);
    free(ws);
    /* a stride-2 shape does not qualify: wino = 1 gives the GEMM path's bits */
    k_conv_shape_init(&s, 2, 9, 9, 8, 12, 3, 2, 0);
    const long nx = 2L * 9 * 9 * 8, ny = (long)2 * s.ho * s.wo * 12;
    float *g = frandom(ny), *wt = frandom(9L * 8 * 12), *a = falloc(nx), *b = falloc(nx);
    float *ws2 = falloc((long)k_conv2d_train_workspace(&s, 1));
    CHECK(k_conv2d_train_workspace(&s, 1) == k_conv2d_workspace(&s, 1));
    k_conv2d_bwd_data(2, &s, g, wt, a, ws2, 0);
    k_conv2d_bwd_data(2, &s, g, wt, b, ws2, 1);
    CHECK(same_bits(a, b, nx));
    free(g);
    free(wt);
    free(a);
    free(b);
    free(ws2);
}

int main(void)
{
    test_rng_state = 0x243F6A8885A308D3ull;
    int d = k_simd_detect();
    for (int l = K_SIMD_GENERIC; l <= d; l++) levels[nlevels++] = l;
    test_hand();
    test_shapes();
    test_bwd_data();
    test_bwd_weight();
    if (getenv("ENV2_TEST_VERBOSE")) printf("worst error / tolerance: %.3f\n", worst_ratio);
    k_simd_force(99);
    return test_summary();
}
