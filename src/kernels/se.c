/* Squeeze-and-excitation (EfficientNetV2 form): pooled = mean_hw(x);
 * hid = pooled W1^T + b1; act = silu(hid); gate = sigmoid(act W2^T + b2);
 * y = x * gate, broadcast over the hw positions of each image.
 *
 * Scratch (k_se_scratch floats) holds, in order: two [n][C] and two [n][S]
 * arrays, each padded to 16 floats, then the pooling's chunk sums
 * (k_gap_scratch).  Forward uses them for whichever of pooled / gate / hid
 * the caller did not supply, plus act; backward for dgate, dpooled, act and
 * dact.
 *
 * Inference pools inside the depthwise convolution before it
 * (k_dwconv_fwd_pool: each task sums the rows it wrote while they are in its
 * cache) and k_se_gate_chunks finishes from those sums; on its own pass the
 * pooling read the whole map again, from L3 and half of it from the other
 * core. */
#include <math.h>
#include <stddef.h>

#include "common.h"
#include "kernels.h"
#include "kernels_internal.h"

static size_t pad16(size_t v) { return (v + 15) & ~(size_t)15; }

size_t k_se_scratch(int n, long h, long w, int C, int S)
{
    if (n <= 0 || C <= 0 || S <= 0) return 16;
    return 2 * pad16((size_t)n * C) + 2 * pad16((size_t)n * S) + k_gap_scratch(n, h, w, C);
}

enum { SE_CHUNK = 64, SE_GROUP = 256 };

typedef struct scale_job {
    int n, C;
    long hw;
    const float *x, *gate, *dy, *dpool;
    float *y;
    k_vmul_fn mul; /* forward: the same multiply as the projection's packing */
    long unit;     /* positions per stealing unit */
    env2_steal st;
} scale_job;

static int se_threads(int nt, int n, long hw, int C) { return (double)n * hw * C < 65536.0 ? 1 : nt; }

static void scale_rows(const scale_job *j, int C, float inv, long lo, long hi)
{
    for (long r = lo; r < hi; r++) {
        long i = r / j->hw;
        const float *g = j->gate + i * C;
        float *o = j->y + r * C;
        if (j->dpool) {
            const float *d = j->dy + r * C, *p = j->dpool + i * C;
            SIMD_LOOP
            for (int c = 0; c < C; c++) o[c] = d[c] * g[c] + p[c] * inv;
        } else {
            j->mul(j->x + r * C, g, o, C);
        }
    }
}

/* y = x * gate (forward) or dx = dy * gate + dpooled / hw (backward), by
 * positions in units with stealing. */
static void scale_fn(void *arg, int ith, int nth)
{
    scale_job *j = arg;
    const int C = j->C;
    const float inv = (float)(1.0 / (double)j->hw);
    long lo, hi;
    (void)nth;
    while (k_steal_rows_next(&j->st, ith, j->unit, (long)j->n * j->hw, &lo, &hi)) scale_rows(j, C, inv, lo, hi);
}

static void scale_run(int nt, scale_job *j)
{
    nt = se_threads(nt, j->n, j->hw, j->C);
    j->mul = k_vmul_pick();
    j->unit = k_steal_rows_init(&j->st, (long)j->n * j->hw, nt);
    k_par_run(nt, scale_fn, j);
}

void k_se_apply(int nt, int n, long hw, int C, const float *x, const float *gate, float *y)
{
    if (n <= 0 || C <= 0 || hw <= 0) return;
    scale_job j = {n, C, hw, x, gate, NULL, NULL, y, NULL, 0, {{{0}}, 0}};
    scale_run(nt, &j);
}

/* pooled -> hid -> act -> gate */
static void se_excite(int nt, int n, int C, int S, const float *P, const float *W1, const float *b1, const float *W2,
                      const float *b2, float *H, float *A, float *G)
{
    k_fc_fwd(nt, n, C, S, P, W1, b1, H);
    k_silu_fwd(nt, (long)n * S, H, A);
    k_epilogue ep = {NULL, b2, K_ACT_SIGMOID, NULL, 0};
    k_fc_gemm(nt, n, C, S, A, W2, G, &ep);
}

void k_se_fwd(int nt, int n, long h, long w, int C, int S, const float *x, const float *W1, const float *b1,
              const float *W2, const float *b2, float *y, float *pooled, float *hid, float *gate, float *scratch)
{
    if (n <= 0 || C <= 0 || S <= 0 || h <= 0 || w <= 0) return;
    size_t nc = pad16((size_t)n * C), ns = pad16((size_t)n * S);
    float *P = pooled ? pooled : scratch;
    float *G = gate ? gate : scratch + nc;
    float *A = scratch + 2 * nc;
    float *H = hid ? hid : scratch + 2 * nc + ns;
    /* by rows: x comes from the depthwise convolution, split by rows */
    k_gap_fwd_ws(nt, n, h, w, C, x, P, scratch + 2 * nc + 2 * ns);
    se_excite(nt, n, C, S, P, W1, b1, W2, b2, H, A, G);
    scale_job j = {n, C, h * w, x, G, NULL, NULL, y, NULL, 0, {{{0}}, 0}};
    scale_run(nt, &j);
}

void k_se_gate_chunks(int nt, int n, long h, long w, int C, int S, const float *sums, const float *W1,
                      const float *b1, const float *W2, const float *b2, float *gate, float *scratch)
{
    if (n <= 0 || C <= 0 || S <= 0 || h <= 0 || w <= 0) return;
    size_t nc = pad16((size_t)n * C), ns = pad16((size_t)n * S);
    k_gap_from_chunks(nt, n, h, w, C, sums, scratch);
    se_excite(nt, n, C, S, scratch, W1, b1, W2, b2, scratch + 2 * nc + ns, scratch + 2 * nc, gate);
}

typedef struct dgate_job {
    int n, C;
    long hw;
    const float *x, *dy, *gate;
    float *dz;
} dgate_job;

/* dz2[i][c] = sum_p dy*x * gate*(1-gate): per (image, channel group) in one
 * thread, chunks of SE_CHUNK positions in float, combined in double. */
static void dgate_fn(void *arg, int ith, int nth)
{
    const dgate_job *j = arg;
    const int C = j->C;
    long ng = (C + SE_GROUP - 1) / SE_GROUP, lo, hi;
    env2_range((long)j->n * ng, ith, nth, &lo, &hi);
    float part[SE_GROUP];
    double tot[SE_GROUP];
    for (long u = lo; u < hi; u++) {
        long i = u / ng, c0 = (u % ng) * SE_GROUP;
        int cn = C - c0 < SE_GROUP ? (int)(C - c0) : SE_GROUP;
        for (int c = 0; c < cn; c++) tot[c] = 0.0;
        for (long p0 = 0; p0 < j->hw; p0 += SE_CHUNK) {
            long p1 = p0 + SE_CHUNK < j->hw ? p0 + SE_CHUNK : j->hw;
            for (int c = 0; c < cn; c++) part[c] = 0.0f;
            for (long p = p0; p < p1; p++) {
                const float *xp = j->x + (i * j->hw + p) * C + c0, *dp = j->dy + (i * j->hw + p) * C + c0;
                SIMD_LOOP
                for (int c = 0; c < cn; c++) part[c] += xp[c] * dp[c];
            }
            for (int c = 0; c < cn; c++) tot[c] += part[c];
        }
        const float *g = j->gate + i * C + c0;
        float *o = j->dz + i * C + c0;
        for (int c = 0; c < cn; c++) o[c] = (float)(tot[c] * g[c] * (1.0 - g[c]));
    }
}

void k_se_bwd(int nt, int n, long hw, int C, int S, const float *x, const float *W1, const float *W2,
              const float *pooled, const float *hid, const float *gate, const float *dy, float *dx, float *dW1,
              float *db1, float *dW2, float *db2, float *scratch)
{
    if (n <= 0 || C <= 0 || S <= 0 || hw <= 0) return;
    size_t nc = pad16((size_t)n * C), ns = pad16((size_t)n * S);
    float *DZ = scratch, *DP = scratch + nc, *A = scratch + 2 * nc, *DA = scratch + 2 * nc + ns;
    dgate_job gj = {n, C, hw, x, dy, gate, DZ};
    k_par_run(se_threads(nt, n, hw, C), dgate_fn, &gj);
    k_silu_fwd(nt, (long)n * S, hid, A);
    k_fc_bwd(nt, n, S, C, A, W2, DZ, DA, dW2, db2);
    k_silu_bwd(nt, (long)n * S, hid, DA, DA);
    k_fc_bwd(nt, n, C, S, pooled, W1, DA, DP, dW1, db1);
    if (dx) {
        scale_job j = {n, C, hw, NULL, gate, dy, DP, dx, NULL, 0, {{{0}}, 0}};
        scale_run(nt, &j);
    }
}

/* Reference: the same chain in double with plain loops and no buffers; the
 * pooled means and hidden units are recomputed for every channel, which is
 * slow (C*S*C*hw per image) but obviously right. */
void k_se_fwd_ref(int n, long hw, int C, int S, const float *x, const float *W1, const float *b1, const float *W2,
                  const float *b2, float *y)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (long)i * hw * C;
        for (int c = 0; c < C; c++) {
            double z = b2 ? b2[c] : 0.0;
            for (int s = 0; s < S; s++) {
                double h = b1 ? b1[s] : 0.0;
                for (int k = 0; k < C; k++) {
                    double pk = 0.0;
                    for (long p = 0; p < hw; p++) pk += xi[p * C + k];
                    h += (double)W1[(long)s * C + k] * (pk / (double)hw);
                }
                z += (double)W2[(long)c * S + s] * (h / (1.0 + exp(-h)));
            }
            double gate = 1.0 / (1.0 + exp(-z));
            for (long p = 0; p < hw; p++) y[((long)i * hw + p) * C + c] = (float)(xi[p * C + c] * gate);
        }
    }
}
