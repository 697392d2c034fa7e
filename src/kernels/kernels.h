/* Kernels: pure functions on float arrays and shapes.  They know nothing of
 * models or files.  Activations are NHWC (channels innermost); a "rows x C"
 * view of an activation has rows = n*h*w.
 *
 * Conventions:
 *  - `nt` is the number of threads the kernel may use (>= 1; 1 = no threads
 *    are created).  Results are bit-identical for every nt: work is split
 *    over outputs, and reductions use fixed chunks combined in fixed order.
 *  - Forward writes its output.  Backward-data OVERWRITES dx.  Backward
 *    weight/bias gradients ACCUMULATE (+=) into dw/db; the trainer zeroes
 *    them once per step.
 *  - Every family has a plain reference (`*_ref`, single-threaded, obvious
 *    loops) that the tests compare the fast version with.
 *  - Weight layouts are the internal ones: dense conv HWIO
 *    [kh][kw][ci][co]; depthwise [kh][kw][c]; fully-connected torch layout
 *    [out][in].  Conversion from/to PyTorch OIHW happens at load/save.
 */
#ifndef ENV2_KERNELS_H
#define ENV2_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- SIMD dispatch -------------------------------------------------------- */
enum { K_SIMD_GENERIC = 0, K_SIMD_AVX2 = 1, K_SIMD_AVX512 = 2 };
/* Best level this CPU and build support. */
int k_simd_detect(void);
/* Level currently used (detect() unless forced). */
int k_simd_level(void);
/* Forces a level (tests use it to run every path); returns the level in
 * effect, which is min(requested, detected). */
int k_simd_force(int level);
const char *k_simd_name(int level);

/* ---- epilogue ------------------------------------------------------------- */
enum { K_ACT_NONE = 0, K_ACT_SILU = 1, K_ACT_SIGMOID = 2 };
/* Applied to each output element y[r][c] after the product:
 *   y = act(scale[c] * y + bias[c]) + residual[r][c]
 * scale, bias, residual may each be NULL (= 1, 0, 0).  Used to fuse folded
 * batch norm, SiLU and the residual add into GEMM and convolution output. */
typedef struct k_epilogue {
    const float *scale;
    const float *bias;
    int act;
    const float *residual;
    long ldr; /* row stride of residual (elements) */
} k_epilogue;

/* ---- GEMM ------------------------------------------------------------------
 * C[M][N] = alpha * op(A)[M][K] * op(B)[K][N] + beta * C, row-major;
 * op(A) = A (lda >= K) or A^T (A stored [K][M], lda >= M); same for B.
 * With beta == 0, C is not read (may hold NaN).  ep (may be NULL) is applied
 * after alpha/beta. */
void k_sgemm(int nt, int transA, int transB, long M, long N, long K, float alpha, const float *A, long lda,
             const float *B, long ldb, float beta, float *C, long ldc, const k_epilogue *ep);
void k_sgemm_ref(int transA, int transB, long M, long N, long K, float alpha, const float *A, long lda,
                 const float *B, long ldb, float beta, float *C, long ldc, const k_epilogue *ep);

/* ---- convolution shapes ----------------------------------------------------- */
typedef struct k_conv_shape {
    int n, h, w;      /* input batch and spatial size */
    int ci, co;       /* channels (depthwise: ci == co) */
    int kh, kw;       /* kernel */
    int stride;       /* same in both directions */
    int pad_t, pad_l; /* padding before (top, left); after = whatever makes ho, wo */
    int ho, wo;       /* output size */
} k_conv_shape;
/* Fills pad_t, pad_l, ho, wo.  same_pad = 1: TensorFlow "same"
 * (ho = ceil(h/stride), extra pixel at bottom/right); 0: symmetric
 * (k-1)/2 like torchvision. */
void k_conv_shape_init(k_conv_shape *s, int n, int h, int w, int ci, int co, int k, int stride, int same_pad);

/* ---- dense convolution (groups = 1), NHWC, weight HWIO ---------------------
 * x [n][h][w][ci], y [n][ho][wo][co], w [kh][kw][ci][co].
 * 1x1 stride-1 convolutions are a single GEMM on x; other forward shapes
 * gather im2col panels inside the GEMM and need no workspace (ws may be NULL
 * for k_conv2d_fwd).  The backward passes use `ws`, a workspace of
 * k_conv2d_workspace() floats (0 for 1x1 stride 1); the size does not depend
 * on nt, so one workspace serves any thread count.
 * ep->residual may be y itself (same pointer and stride: an in-place
 * residual add) but must not otherwise overlap y; the same holds for C and
 * ep->residual in k_sgemm. */
size_t k_conv2d_workspace(const k_conv_shape *s, int nt);
void k_conv2d_fwd(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                  float *ws);
/* A 1x1 stride-1 convolution of x scaled per image and input channel by
 * gate [n][ci]: bit for bit k_se_apply(x, gate) followed by k_conv2d_fwd,
 * without writing the scaled activation (the GEMM scales each A panel as it
 * packs it).  s must be pointwise (k = 1, stride 1). */
void k_conv1x1_gated_fwd(int nt, const k_conv_shape *s, const float *x, const float *gate, const float *w, float *y,
                         const k_epilogue *ep);
/* dx = conv_transpose(dy, w): overwrites dx [n][h][w][ci].  wino = 1 runs a
 * 3x3 stride-1 shape as a Winograd forward convolution of dy with the taps
 * flipped (k_conv2d_fwd_wino's accuracy, not bit-identical to wino = 0);
 * ws then holds k_conv2d_train_workspace(s, 1) floats. */
void k_conv2d_bwd_data(int nt, const k_conv_shape *s, const float *dy, const float *w, float *dx, float *ws, int wino);
/* Workspace for k_conv2d_fwd, k_conv2d_fwd_wino (when wino and the shape
 * qualifies), and k_conv2d_bwd_data and k_conv2d_bwd_weight with that wino. */
size_t k_conv2d_train_workspace(const k_conv_shape *s, int wino);
/* dw += x (*) dy: accumulates into dw [kh][kw][ci][co].  wino = 1 runs a 3x3
 * stride-1 shape by Winograd (k_conv2d_bwd_weight_wino), with ws of
 * k_conv2d_train_workspace(s, 1) floats. */
void k_conv2d_bwd_weight(int nt, const k_conv_shape *s, const float *x, const float *dy, float *dw, float *ws,
                         int wino);
/* 1 when the forward and weight gradient of this shape run on the direct
 * few-input-channel kernels (the stem) rather than the GEMM; for profiling. */
int k_conv2d_direct(const k_conv_shape *s);
void k_conv2d_fwd_ref(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep);
void k_conv2d_bwd_data_ref(const k_conv_shape *s, const float *dy, const float *w, float *dx);
void k_conv2d_bwd_weight_ref(const k_conv_shape *s, const float *x, const float *dy, float *dw);

/* 3x3 stride-1 forward by Winograd F(4x4, 3x3) (winograd.c), for inference,
 * the training forward and the data gradient (unless the model has
 * winograd = 0): about 2.25x fewer multiply-adds than the GEMM path, results
 * within about 1e-6 of the output scale of it but not bit-identical.  k_wino_ok() says
 * whether a shape qualifies (3x3, stride 1, any padding); ws holds
 * k_wino_workspace() floats (the transformed filter; independent of nt).
 * Same epilogue and aliasing rules as k_conv2d_fwd. */
int k_wino_ok(const k_conv_shape *s);
size_t k_wino_workspace(const k_conv_shape *s);
void k_conv2d_fwd_wino(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                       float *ws);
/* The same in two steps, for callers that keep the filter transform while
 * the weights stay the same (inference): k_wino_weights writes U
 * (k_wino_workspace() floats) from w [3][3][ci][co]; k_conv2d_fwd_wino_u
 * runs the convolution with it (and w, which it reads only when the GEMM
 * buffer cannot be had).  U's layout depends on the micro-kernel and
 * the SIMD path: a U is valid for as long as k_wino_u_tag() of its shape
 * returns the value it had when U was written. */
void k_wino_weights(int nt, const k_conv_shape *s, const float *w, float *U);
void k_conv2d_fwd_wino_u(int nt, const k_conv_shape *s, const float *x, const float *w, const float *U, float *y,
                         const k_epilogue *ep);
unsigned k_wino_u_tag(const k_conv_shape *s);
/* dw += the weight gradient of a 3x3 stride-1 shape by Winograd (the same
 * F(4x4, 3x3) tiles read backwards); ws holds k_wino_bwd_weight_workspace()
 * floats.  Same accumulation rule as k_conv2d_bwd_weight, results within
 * about 1e-6 of the gradient's scale of it. */
size_t k_wino_bwd_weight_workspace(const k_conv_shape *s);
void k_conv2d_bwd_weight_wino(int nt, const k_conv_shape *s, const float *x, const float *dy, float *dw, float *ws);
/* Tests: caps the transforms' SIMD build (-1 = the level in effect). */
extern int k_wino_test_level;

/* ---- depthwise convolution, NHWC, weight [kh][kw][c] ----------------------- */
void k_dwconv_fwd(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep);
/* The same y, and the global average pooling's chunk sums of y
 * [n][k_gap_chunks(ho, wo)][ci] (k_gap_from_chunks), each summed by the task
 * that wrote its row, while the row is still in that core's cache. */
void k_dwconv_fwd_pool(int nt, const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep,
                       float *sums);
void k_dwconv_bwd_data(int nt, const k_conv_shape *s, const float *dy, const float *w, float *dx);
void k_dwconv_bwd_weight(int nt, const k_conv_shape *s, const float *x, const float *dy, float *dw);
void k_dwconv_fwd_ref(const k_conv_shape *s, const float *x, const float *w, float *y, const k_epilogue *ep);
void k_dwconv_bwd_data_ref(const k_conv_shape *s, const float *dy, const float *w, float *dx);
void k_dwconv_bwd_weight_ref(const k_conv_shape *s, const float *x, const float *dy, float *dw);

/* ---- batch norm over rows x C ---------------------------------------------
 * Training forward: per-channel batch mean and biased variance over all rows,
 * y = gamma * (x - mean) * rstd + beta with rstd = 1/sqrt(var + eps).
 * Saves mean and rstd [C] for backward; var_unbiased [C] (may be NULL)
 * receives the unbiased variance for the running-statistics update. */
void k_bn_fwd_train(int nt, long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                    float *y, float *mean, float *rstd, float *var_unbiased);
/* dx = gamma*rstd*(dy - mean(dy) - xhat*mean(dy*xhat)) (overwrites);
 * dgamma += sum(dy*xhat), dbeta += sum(dy).  x is the forward input. */
void k_bn_bwd(int nt, long rows, int C, const float *x, const float *dy, const float *gamma, const float *mean,
              const float *rstd, float *dx, float *dgamma, float *dbeta);
/* The same with the activation fused (act = K_ACT_NONE or K_ACT_SILU):
 * y = act(BN(x)), one pass over y instead of two.  BN(x) is computed as
 * (x - mean) * (gamma * rstd) + beta in both. */
void k_bn_act_fwd_train(int nt, long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                        int act, float *y, float *mean, float *rstd, float *var_unbiased);
/* y = act(BN(x)) from saved batch statistics, bit-identical to the y of
 * k_bn_act_fwd_train: lets training recompute activations instead of
 * storing them. */
void k_bn_act_apply(int nt, long rows, int C, const float *x, const float *gamma, const float *beta,
                    const float *mean, const float *rstd, int act, float *y);
/* Backward through y = act(BN(x)) from dy = dL/dy, without the forward
 * output: the pre-activation is recomputed from x and the statistics.
 * dact [rows*C] receives dL/d(BN(x)) (scratch); dx (may alias dy) receives
 * dL/dx; dgamma and dbeta accumulate.  act = K_ACT_NONE is k_bn_bwd. */
void k_bn_act_bwd(int nt, long rows, int C, const float *x, const float *dy, const float *gamma, const float *beta,
                  const float *mean, const float *rstd, int act, float *dact, float *dx, float *dgamma,
                  float *dbeta);
void k_bn_act_bwd_ref(long rows, int C, const float *x, const float *dy, const float *gamma, const float *beta,
                      const float *mean, const float *rstd, int act, float *dx, float *dgamma, float *dbeta);
/* Inference: y = scale[c] * x + shift[c] (scale/shift from folding). */
void k_bn_fold(int C, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
               float *scale, float *shift);
void k_bn_fwd_train_ref(long rows, int C, const float *x, const float *gamma, const float *beta, float eps,
                        float *y, float *mean, float *rstd, float *var_unbiased);
void k_bn_bwd_ref(long rows, int C, const float *x, const float *dy, const float *gamma, const float *mean,
                  const float *rstd, float *dx, float *dgamma, float *dbeta);

/* ---- activations (elementwise over n values) --------------------------------- */
void k_silu_fwd(int nt, long n, const float *x, float *y);
/* dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x); dx may alias dy */
void k_silu_bwd(int nt, long n, const float *x, const float *dy, float *dx);
void k_sigmoid_fwd(int nt, long n, const float *x, float *y);
/* from the forward OUTPUT y: dx = dy * y * (1 - y) */
void k_sigmoid_bwd(int nt, long n, const float *y, const float *dy, float *dx);
void k_silu_fwd_ref(long n, const float *x, float *y);
void k_silu_bwd_ref(long n, const float *x, const float *dy, float *dx);

/* ---- global average pooling: x [n][h][w][C] -> y [n][C] --------------------
 * Each row is summed in chunks of up to 64 positions (float), the chunks
 * combined in double (pool_fc.c): the same bits whichever function below
 * computes it and at any thread count. */
void k_gap_fwd(int nt, int n, long h, long w, int C, const float *x, float *y);
/* The same bits, splitting the rows instead of the channels between
 * threads; scratch holds k_gap_scratch(n, h, w, C) floats. */
size_t k_gap_scratch(int n, long h, long w, int C);
void k_gap_fwd_ws(int nt, int n, long h, long w, int C, const float *x, float *y, float *scratch);
/* Chunks per image, k_gap_chunks(h, w); chunk sums of one row of w positions
 * (channel stride ldc, the first cn channels) into sums[k * ldc + c]. */
long k_gap_chunks(long h, long w);
void k_gap_row_chunks(long w, long ldc, int cn, const float *row, float *sums);
/* y from the chunk sums [n][k_gap_chunks(h, w)][C] of k_gap_row_chunks
 * (k_dwconv_fwd_pool): k_gap_fwd's bits. */
void k_gap_from_chunks(int nt, int n, long h, long w, int C, const float *sums, float *y);
/* dx[n][p][c] = dy[n][c] / hw (overwrites) */
void k_gap_bwd(int nt, int n, long hw, int C, const float *dy, float *dx);

/* ---- fully connected: y [n][out] = x [n][in] * W^T + b, W [out][in] --------- */
void k_fc_fwd(int nt, int n, int in, int out, const float *x, const float *W, const float *b, float *y);
/* dx [n][in] = dy * W (overwrites; dx may be NULL); dW += dy^T x; db += sum dy */
void k_fc_bwd(int nt, int n, int in, int out, const float *x, const float *W, const float *dy, float *dx,
              float *dW, float *db);

/* ---- squeeze-excite on x [n][hw][C], squeeze width S -------------------------
 * pooled = mean_hw(x) [n][C]; hid = pooled * W1^T + b1 [n][S] (W1 [S][C]);
 * act = silu(hid); gate = sigmoid(act * W2^T + b2) [n][C] (W2 [C][S]);
 * y = x * gate.  Training saves pooled, hid and gate (each may be a caller
 * buffer of the given size); inference may pass NULL for them (the kernel
 * then uses small stack/heap scratch: it must not fail, so it needs scratch
 * passed in: `scratch` of k_se_scratch(n, h, w, C, S) floats, never NULL). */
size_t k_se_scratch(int n, long h, long w, int C, int S);
void k_se_fwd(int nt, int n, long h, long w, int C, int S, const float *x, const float *W1, const float *b1,
              const float *W2, const float *b2, float *y, float *pooled, float *hid, float *gate, float *scratch);
/* Only the gate [n][C] of k_se_fwd (same bits), from the pooling's chunk
 * sums (k_dwconv_fwd_pool) instead of x, for a consumer that applies it
 * itself (k_conv1x1_gated_fwd).  gate must not overlap scratch. */
void k_se_gate_chunks(int nt, int n, long h, long w, int C, int S, const float *sums, const float *W1,
                      const float *b1, const float *W2, const float *b2, float *gate, float *scratch);
/* y = x * gate with the gate of an earlier k_se_fwd: its y again, bit for bit
 * (training recomputes the SE output instead of storing it). */
void k_se_apply(int nt, int n, long hw, int C, const float *x, const float *gate, float *y);
/* Given dy, forward input x and saved pooled/hid/gate: dx (overwrites),
 * dW1, db1, dW2, db2 (accumulate).  scratch as above. */
void k_se_bwd(int nt, int n, long hw, int C, int S, const float *x, const float *W1, const float *W2,
              const float *pooled, const float *hid, const float *gate, const float *dy, float *dx, float *dW1,
              float *db1, float *dW2, float *db2, float *scratch);
void k_se_fwd_ref(int n, long hw, int C, int S, const float *x, const float *W1, const float *b1, const float *W2,
                  const float *b2, float *y);

/* ---- loss: softmax cross-entropy with label smoothing ---------------------
 * logits [n][K].  Targets: labels (n ints in [0,K)) or soft targets [n][K]
 * (rows summing to 1); exactly one non-NULL.  The smoothed target is
 * t' = (1 - eps) * t + eps / K.  Returns the mean loss over the batch and
 * writes dlogits = (softmax - t') / n.  *correct = rows whose arg-max logit
 * equals the label (or the target's arg-max; ties -> lowest index).
 * Computed in double per row; deterministic.  A label outside [0, K)
 * gives a NaN loss (callers validate labels first); dlogits and correct may
 * be NULL. */
double k_xent(int n, int K, const float *logits, const int32_t *labels, const float *targets, float smoothing,
              float *dlogits, int32_t *correct);

/* ---- elementwise helpers ------------------------------------------------------ */
void k_add(int nt, long n, const float *a, const float *b, float *y);          /* y = a + b */
void k_scale_rows(int nt, int n, long per, const float *x, const float *s, float *y); /* y[i][.] = x[i][.]*s[i] */
/* NCHW <-> NHWC for the API boundary */
void k_nchw_to_nhwc(int nt, int n, int C, int H, int W, const float *src, float *dst);
void k_nhwc_to_nchw(int nt, int n, int C, int H, int W, const float *src, float *dst);

#endif
