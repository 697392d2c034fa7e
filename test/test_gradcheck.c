/* Finite-difference checks of every backward kernel of the depthwise / BN /
 * activation / pooling / FC / SE / loss family.
 *
 * Each check uses the scalar objective L = sum(out * R) for a fixed random R
 * (the loss itself for k_xent), evaluates L with an independent forward in
 * double, and compares central differences (step H) with the analytic
 * gradients from the kernels -- the fast ones on every SIMD path and, where
 * they exist, the references. */
#include <stdint.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/kernels.h"

#define H 1e-3

static uint64_t rng_state = 0xD1B54A32D192ED03ull;
static double drand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)((rng_state >> 40) & 0xFFFFFF) / 16777216.0 * 2.0 - 1.0;
}
static void *xalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}
static float *frand_arr(long n, double scale)
{
    float *p = xalloc((size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) p[i] = (float)(drand() * scale);
    return p;
}
static float *fzeros(long n)
{
    float *p = xalloc((size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) p[i] = 0.0f;
    return p;
}
static double *to_d(const float *f, long n)
{
    double *d = xalloc((size_t)n * sizeof(double));
    for (long i = 0; i < n; i++) d[i] = f[i];
    return d;
}

static int levels[3], nlevels;

/* The objective with every input in double; `p` points at the parameter
 * arrays, the context at shapes and R. */
typedef double (*objective)(const void *ctx, double *const *p);

/* Central differences of L with respect to every element of p[which]. */
static void numgrad(objective f, const void *ctx, double *const *p, int which, long n, double *g)
{
    double *v = p[which];
    for (long i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + H;
        double lp = f(ctx, p);
        v[i] = keep - H;
        double lm = f(ctx, p);
        v[i] = keep;
        g[i] = (lp - lm) / (2 * H);
    }
}

/* max |analytic - numeric| relative to max(|numeric|, 1e-2) */
static double grad_err(const float *a, const double *num, long n)
{
    double md = 0, mb = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - num[i]);
        if (!(d <= md)) md = d;
        if (fabs(num[i]) > mb) mb = fabs(num[i]);
    }
    return md / (mb > 1e-2 ? mb : 1e-2);
}

#define CHECK_GRAD(a, num, n, tol, ...)                                         \
    do {                                                                        \
        double e_ = grad_err(a, num, n);                                        \
        CHECK_MSG(e_ <= (tol), __VA_ARGS__);                                    \
        if (e_ > (tol)) fprintf(stderr, "  (gradient error %.3g)\n", e_);       \
    } while (0)

static double sigm_d(double v) { return 1.0 / (1.0 + exp(-v)); }
static double silu_d(double v) { return v * sigm_d(v); }

/* ---- depthwise convolution ---------------------------------------------------- */
typedef struct dw_ctx {
    k_conv_shape s;
    const double *R;
} dw_ctx;

static double dw_obj(const void *c, double *const *p)
{
    const dw_ctx *ctx = c;
    const k_conv_shape *s = &ctx->s;
    const double *x = p[0], *w = p[1];
    double L = 0;
    long C = s->ci;
    for (long n = 0; n < s->n; n++)
        for (long oy = 0; oy < s->ho; oy++)
            for (long ox = 0; ox < s->wo; ox++)
                for (long ch = 0; ch < C; ch++) {
                    double acc = 0;
                    for (long ky = 0; ky < s->kh; ky++)
                        for (long kx = 0; kx < s->kw; kx++) {
                            long iy = oy * s->stride - s->pad_t + ky, ix = ox * s->stride - s->pad_l + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            acc += x[((n * s->h + iy) * s->w + ix) * C + ch] * w[(ky * s->kw + kx) * C + ch];
                        }
                    L += acc * ctx->R[((n * s->ho + oy) * s->wo + ox) * C + ch];
                }
    return L;
}

static void check_dw(int n, int h, int w, int C, int k, int stride, int same)
{
    dw_ctx ctx;
    k_conv_shape_init(&ctx.s, n, h, w, C, C, k, stride, same);
    const k_conv_shape *s = &ctx.s;
    long xi = (long)n * h * w * C, yo = (long)n * s->ho * s->wo * C, wn = (long)k * k * C;
    float *x = frand_arr(xi, 1), *wt = frand_arr(wn, 1), *R = frand_arr(yo, 1);
    double *xd = to_d(x, xi), *wd = to_d(wt, wn), *Rd = to_d(R, yo);
    ctx.R = Rd;
    double *p[2] = {xd, wd};
    double *gx = xalloc(xi * sizeof(double)), *gw = xalloc(wn * sizeof(double));
    numgrad(dw_obj, &ctx, p, 0, xi, gx);
    numgrad(dw_obj, &ctx, p, 1, wn, gw);
    float *dx = fzeros(xi), *dw = fzeros(wn);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        k_dwconv_bwd_data(2, s, R, wt, dx);
        for (long i = 0; i < wn; i++) dw[i] = 0;
        k_dwconv_bwd_weight(2, s, x, R, dw);
        CHECK_GRAD(dx, gx, xi, 1e-6, "dwconv dx n%d %dx%d C%d k%d s%d same%d level %d", n, h, w, C, k, stride, same,
                   levels[li]);
        CHECK_GRAD(dw, gw, wn, 1e-6, "dwconv dw n%d %dx%d C%d k%d s%d same%d level %d", n, h, w, C, k, stride, same,
                   levels[li]);
    }
    k_simd_force(K_SIMD_AVX512);
    k_dwconv_bwd_data_ref(s, R, wt, dx);
    for (long i = 0; i < wn; i++) dw[i] = 0;
    k_dwconv_bwd_weight_ref(s, x, R, dw);
    CHECK_GRAD(dx, gx, xi, 1e-6, "dwconv ref dx");
    CHECK_GRAD(dw, gw, wn, 1e-6, "dwconv ref dw");
    free(x), free(wt), free(R), free(xd), free(wd), free(Rd), free(gx), free(gw), free(dx), free(dw);
}

/* ---- batch norm --------------------------------------------------------------------- */
typedef struct bn_ctx {
    long rows;
    int C;
    double eps;
    const double *R;
} bn_ctx;

static double bn_obj(const void *c, double *const *p)
{
    const bn_ctx *ctx = c;
    const double *x = p[0], *g = p[1], *b = p[2];
    double L = 0;
    for (int ch = 0; ch < ctx->C; ch++) {
        double m = 0, v = 0;
        for (long r = 0; r < ctx->rows; r++) m += x[r * ctx->C + ch];
        m /= ctx->rows;
        for (long r = 0; r < ctx->rows; r++) v += (x[r * ctx->C + ch] - m) * (x[r * ctx->C + ch] - m);
        v /= ctx->rows;
        double rs = 1.0 / sqrt(v + ctx->eps);
        for (long r = 0; r < ctx->rows; r++)
            L += (g[ch] * (x[r * ctx->C + ch] - m) * rs + b[ch]) * ctx->R[r * ctx->C + ch];
    }
    return L;
}

static void check_bn(long rows, int C)
{
    bn_ctx ctx = {rows, C, 1e-3, NULL};
    long n = rows * C;
    float *x = frand_arr(n, 1), *g = frand_arr(C, 1), *b = frand_arr(C, 1), *R = frand_arr(n, 1);
    double *xd = to_d(x, n), *gd = to_d(g, C), *bd = to_d(b, C), *Rd = to_d(R, n);
    ctx.R = Rd;
    double *p[3] = {xd, gd, bd};
    double *nx = xalloc(n * sizeof(double)), *ng = xalloc(C * sizeof(double)), *nb = xalloc(C * sizeof(double));
    numgrad(bn_obj, &ctx, p, 0, n, nx);
    numgrad(bn_obj, &ctx, p, 1, C, ng);
    numgrad(bn_obj, &ctx, p, 2, C, nb);
    float *y = fzeros(n), *mean = fzeros(C), *rstd = fzeros(C), *dx = fzeros(n), *dg = fzeros(C), *db = fzeros(C);
    for (int li = 0; li <= nlevels; li++) {
        int ref = li == nlevels;
        if (!ref) k_simd_force(levels[li]);
        for (int i = 0; i < C; i++) dg[i] = db[i] = 0;
        if (ref) {
            k_bn_fwd_train_ref(rows, C, x, g, b, (float)ctx.eps, y, mean, rstd, NULL);
            k_bn_bwd_ref(rows, C, x, R, g, mean, rstd, dx, dg, db);
        } else {
            k_bn_fwd_train(2, rows, C, x, g, b, (float)ctx.eps, y, mean, rstd, NULL);
            k_bn_bwd(2, rows, C, x, R, g, mean, rstd, dx, dg, db);
        }
        CHECK_GRAD(dx, nx, n, 1e-4, "bn dx rows %ld C %d %s", rows, C, ref ? "ref" : k_simd_name(levels[li]));
        CHECK_GRAD(dg, ng, C, 1e-5, "bn dgamma rows %ld C %d", rows, C);
        CHECK_GRAD(db, nb, C, 1e-5, "bn dbeta rows %ld C %d", rows, C);
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(g), free(b), free(R), free(xd), free(gd), free(bd), free(Rd), free(nx), free(ng), free(nb);
    free(y), free(mean), free(rstd), free(dx), free(dg), free(db);
}

/* ---- activations ----------------------------------------------------------------------- */
typedef struct act_ctx {
    long n;
    int sigmoid;
    const double *R;
} act_ctx;

static double act_obj(const void *c, double *const *p)
{
    const act_ctx *ctx = c;
    double L = 0;
    for (long i = 0; i < ctx->n; i++) L += (ctx->sigmoid ? sigm_d(p[0][i]) : silu_d(p[0][i])) * ctx->R[i];
    return L;
}

static void check_act(void)
{
    long n = 203;
    float *x = frand_arr(n, 8), *R = frand_arr(n, 1);
    x[0] = 30, x[1] = -30, x[2] = 0;
    double *xd = to_d(x, n), *Rd = to_d(R, n), *num = xalloc(n * sizeof(double));
    double *p[1] = {xd};
    float *dx = fzeros(n), *y = fzeros(n);
    for (int sig = 0; sig <= 1; sig++) {
        act_ctx ctx = {n, sig, Rd};
        numgrad(act_obj, &ctx, p, 0, n, num);
        for (int li = 0; li <= nlevels; li++) {
            int ref = li == nlevels;
            if (!ref) k_simd_force(levels[li]);
            if (sig) {
                if (ref) continue;
                k_sigmoid_fwd(1, n, x, y);
                k_sigmoid_bwd(1, n, y, R, dx);
            } else if (ref) {
                k_silu_bwd_ref(n, x, R, dx);
            } else {
                k_silu_bwd(1, n, x, R, dx);
            }
            CHECK_GRAD(dx, num, n, 1e-5, "%s %s", sig ? "sigmoid" : "silu", ref ? "ref" : k_simd_name(levels[li]));
        }
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(R), free(xd), free(Rd), free(num), free(dx), free(y);
}

/* ---- pooling and FC ------------------------------------------------------------------------ */
typedef struct gap_ctx {
    int n, C;
    long hw;
    const double *R;
} gap_ctx;

static double gap_obj(const void *c, double *const *p)
{
    const gap_ctx *ctx = c;
    double L = 0;
    for (int i = 0; i < ctx->n; i++)
        for (int ch = 0; ch < ctx->C; ch++) {
            double s = 0;
            for (long q = 0; q < ctx->hw; q++) s += p[0][(i * ctx->hw + q) * ctx->C + ch];
            L += s / ctx->hw * ctx->R[i * ctx->C + ch];
        }
    return L;
}

static void check_gap(void)
{
    gap_ctx ctx = {2, 5, 7, NULL};
    long xn = ctx.n * ctx.hw * ctx.C;
    float *x = frand_arr(xn, 1), *R = frand_arr(ctx.n * ctx.C, 1), *dx = fzeros(xn);
    double *xd = to_d(x, xn), *Rd = to_d(R, ctx.n * ctx.C), *num = xalloc(xn * sizeof(double));
    ctx.R = Rd;
    double *p[1] = {xd};
    numgrad(gap_obj, &ctx, p, 0, xn, num);
    k_gap_bwd(2, ctx.n, ctx.hw, ctx.C, R, dx);
    CHECK_GRAD(dx, num, xn, 1e-6, "gap dx");
    free(x), free(R), free(dx), free(xd), free(Rd), free(num);
}

typedef struct fc_ctx {
    int n, in, out;
    const double *R;
} fc_ctx;

static double fc_obj(const void *c, double *const *p)
{
    const fc_ctx *ctx = c;
    double L = 0;
    for (int i = 0; i < ctx->n; i++)
        for (int o = 0; o < ctx->out; o++) {
            double s = p[2][o];
            for (int k = 0; k < ctx->in; k++) s += p[0][i * ctx->in + k] * p[1][o * ctx->in + k];
            L += s * ctx->R[i * ctx->out + o];
        }
    return L;
}

static void check_fc(void)
{
    fc_ctx ctx = {3, 7, 5, NULL};
    long xn = ctx.n * ctx.in, wn = ctx.out * ctx.in, yn = ctx.n * ctx.out;
    float *x = frand_arr(xn, 1), *W = frand_arr(wn, 1), *b = frand_arr(ctx.out, 1), *R = frand_arr(yn, 1);
    double *xd = to_d(x, xn), *Wd = to_d(W, wn), *bd = to_d(b, ctx.out), *Rd = to_d(R, yn);
    ctx.R = Rd;
    double *p[3] = {xd, Wd, bd};
    double *nx = xalloc(xn * sizeof(double)), *nw = xalloc(wn * sizeof(double)), *nb = xalloc(ctx.out * sizeof(double));
    numgrad(fc_obj, &ctx, p, 0, xn, nx);
    numgrad(fc_obj, &ctx, p, 1, wn, nw);
    numgrad(fc_obj, &ctx, p, 2, ctx.out, nb);
    float *dx = fzeros(xn), *dW = fzeros(wn), *db = fzeros(ctx.out);
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (long i = 0; i < wn; i++) dW[i] = 0;
        for (int i = 0; i < ctx.out; i++) db[i] = 0;
        k_fc_bwd(2, ctx.n, ctx.in, ctx.out, x, W, R, dx, dW, db);
        CHECK_GRAD(dx, nx, xn, 1e-5, "fc dx level %d", levels[li]);
        CHECK_GRAD(dW, nw, wn, 1e-5, "fc dW level %d", levels[li]);
        CHECK_GRAD(db, nb, ctx.out, 1e-6, "fc db level %d", levels[li]);
    }
    k_simd_force(K_SIMD_AVX512);
    free(x), free(W), free(b), free(R), free(xd), free(Wd), free(bd), free(Rd), free(nx), free(nw), free(nb);
    free(dx), free(dW), free(db);
}

/* ---- squeeze-excite ------------------------------------------------------------------------------- */
typedef struct se_ctx {
    int n, C, S;
    long hw;
    const double *R;
} se_ctx;

static double se_obj(const void *c, double *const *p)
{
    const se_ctx *ctx = c;
    const int C = ctx->C, S = ctx->S;
    const double *x = p[0], *W1 = p[1], *b1 = p[2], *W2 = p[3], *b2 = p[4];
    double pooled[64], act[16], L = 0;
    for (int i = 0; i < ctx->n; i++) {
        for (int ch = 0; ch < C; ch++) {
            double s = 0;
            for (long q = 0; q < ctx->hw; q++) s += x[(i * ctx->hw + q) * C + ch];
            pooled[ch] = s / ctx->hw;
        }
        for (int s = 0; s < S; s++) {
            double h = b1[s];
            for (int ch = 0; ch < C; ch++) h += W1[s * C + ch] * pooled[ch];
            act[s] = silu_d(h);
        }
        for (int ch = 0; ch < C; ch++) {
            double z = b2[ch];
            for (int s = 0; s < S; s++) z += W2[ch * S + s] * act[s];
            double g = sigm_d(z);
            for (long q = 0; q < ctx->hw; q++) {
                long k = (i * ctx->hw + q) * C + ch;
                L += x[k] * g * ctx->R[k];
            }
        }
    }
    return L;
}

static void check_se(int n, long hw, int C, int S)
{
    se_ctx ctx = {n, C, S, hw, NULL};
    long xn = n * hw * C;
    float *x = frand_arr(xn, 2), *W1 = frand_arr(S * C, 1), *b1 = frand_arr(S, 1), *W2 = frand_arr(C * S, 1);
    float *b2 = frand_arr(C, 1), *R = frand_arr(xn, 1);
    double *prm[5] = {to_d(x, xn), to_d(W1, S * C), to_d(b1, S), to_d(W2, C * S), to_d(b2, C)};
    long sizes[5] = {xn, S * C, S, C * S, C};
    double *Rd = to_d(R, xn);
    ctx.R = Rd;
    double *num[5];
    for (int k = 0; k < 5; k++) {
        num[k] = xalloc(sizes[k] * sizeof(double));
        numgrad(se_obj, &ctx, prm, k, sizes[k], num[k]);
    }
    float *y = fzeros(xn), *pooled = fzeros(n * C), *hid = fzeros(n * S), *gate = fzeros(n * C);
    float *scratch = fzeros((long)k_se_scratch(n, 1, hw, C, S)), *g[5];
    for (int k = 0; k < 5; k++) g[k] = fzeros(sizes[k]);
    static const char *names[5] = {"dx", "dW1", "db1", "dW2", "db2"};
    for (int li = 0; li < nlevels; li++) {
        k_simd_force(levels[li]);
        for (int k = 1; k < 5; k++)
            for (long i = 0; i < sizes[k]; i++) g[k][i] = 0;
        k_se_fwd(2, n, 1, hw, C, S, x, W1, b1, W2, b2, y, pooled, hid, gate, scratch); /* one row of hw */
        k_se_bwd(2, n, hw, C, S, x, W1, W2, pooled, hid, gate, R, g[0], g[1], g[2], g[3], g[4], scratch);
        for (int k = 0; k < 5; k++)
            CHECK_GRAD(g[k], num[k], sizes[k], 1e-4, "se %s n%d hw%ld C%d S%d level %d", names[k], n, hw, C, S,
                       levels[li]);
    }
    k_simd_force(K_SIMD_AVX512);
    for (int k = 0; k < 5; k++) free(prm[k]), free(num[k]), free(g[k]);
    free(x), free(W1), free(b1), free(W2), free(b2), free(R), free(Rd), free(y), free(pooled), free(hid);
    free(gate), free(scratch);
}

/* ---- loss --------------------------------------------------------------------------------------- */
typedef struct xent_ctx {
    int n, K;
    const int32_t *labels;
    const float *targets;
    double eps;
} xent_ctx;

static double xent_obj(const void *c, double *const *p)
{
    const xent_ctx *ctx = c;
    double L = 0;
    for (int i = 0; i < ctx->n; i++) {
        const double *z = p[0] + i * ctx->K;
        double mx = z[0], se = 0;
        for (int k = 1; k < ctx->K; k++) mx = fmax(mx, z[k]);
        for (int k = 0; k < ctx->K; k++) se += exp(z[k] - mx);
        double lse = mx + log(se);
        for (int k = 0; k < ctx->K; k++) {
            double t = ctx->labels ? (k == ctx->labels[i]) : (double)ctx->targets[i * ctx->K + k];
            t = (1 - ctx->eps) * t + ctx->eps / ctx->K;
            L += t * (lse - z[k]);
        }
    }
    return L / ctx->n;
}

static void check_xent(void)
{
    const int n = 4, K = 6;
    float *z = frand_arr(n * K, 3), *t = xalloc(n * K * sizeof(float)), *d = fzeros(n * K);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += t[i * K + k] = (float)(drand() + 1.5);
        for (int k = 0; k < K; k++) t[i * K + k] = (float)(t[i * K + k] / s);
    }
    int32_t labels[4] = {0, 5, 2, 2};
    double *zd = to_d(z, n * K), *num = xalloc(n * K * sizeof(double));
    double *p[1] = {zd};
    for (int soft = 0; soft <= 1; soft++)
        for (int e = 0; e <= 1; e++) {
            float eps = e ? 0.1f : 0.0f;
            xent_ctx ctx = {n, K, soft ? NULL : labels, soft ? t : NULL, eps};
            numgrad(xent_obj, &ctx, p, 0, n * K, num);
            int32_t correct;
            double loss = k_xent(n, K, z, soft ? NULL : labels, soft ? t : NULL, eps, d, &correct);
            CHECK_NEAR(loss, xent_obj(&ctx, p), 1e-9);
            CHECK_GRAD(d, num, n * K, 1e-5, "xent soft %d smoothing %g", soft, eps);
        }
    free(z), free(t), free(d), free(zd), free(num);
}

int main(void)
{
    int dl = k_simd_detect();
    for (int l = K_SIMD_GENERIC; l <= dl; l++) levels[nlevels++] = l;
    for (int stride = 1; stride <= 2; stride++)
        for (int same = 0; same <= 1; same++) {
            check_dw(2, 5, 6, 3, 3, stride, same);
            check_dw(1, 7, 4, 17, 3, stride, same);
            check_dw(1, 6, 7, 5, 5, stride, same);
        }
    check_bn(6, 3);
    check_bn(9, 20);
    check_act();
    check_gap();
    check_fc();
    check_se(2, 5, 6, 3);
    check_se(1, 9, 20, 4);
    check_xent();
    return test_summary();
}
