/* Optional time accounting per kernel family, for `env2 bench --profile`.
 * Off by default; when off a PROF() costs one predictable branch.  Not
 * thread-safe by design: it is switched on by the one thread driving a
 * model, and kernels are timed from that thread around their parallel
 * regions. */
#ifndef ENV2_PROFILE_H
#define ENV2_PROFILE_H

enum {
    PROF_CONV1X1 = 0,   /* pointwise convolutions (GEMM), forward */
    PROF_CONVKXK,       /* k x k dense convolutions (im2col + GEMM), forward */
    PROF_DWCONV,        /* depthwise, forward */
    PROF_CONV_BWD,      /* dense convolution data + weight gradients */
    PROF_DW_BWD,        /* depthwise data + weight gradients */
    PROF_BN,            /* batch norm with its fused SiLU, forward/backward */
    PROF_SE,            /* squeeze-excite forward/backward */
    PROF_RESID,         /* residual adds, drop-path, skip stash */
    PROF_HEAD,          /* pooling, dropout, classifier, loss */
    PROF_OPTIM,         /* optimizer, BN running statistics, EMA */
    PROF_LAYOUT,        /* NCHW <-> NHWC, input copies */
    PROF_WINO,          /* 3x3 stride-1 convolutions by Winograd, inference forward */
    PROF_CONVSMALL,     /* k x k dense convolutions with kh*kw*ci <= 32 (the stem), direct, forward */
    PROF_COUNT
};

extern int env2_prof_on;
extern double env2_prof_sec[PROF_COUNT];
extern long env2_prof_calls[PROF_COUNT];
double env2_prof_now(void);
const char *env2_prof_name(int family);
void env2_prof_reset(void);

/* Per-layer accounting for the convolution families: one entry per
 * (family, batch, input size, channels, kernel, stride), so the repeated
 * blocks of a stage add up into one row.  `flops` is the call's
 * floating-point operations (2 per multiply-add), for GFLOP/s. */
#define PROF_LAYERS_MAX 256
typedef struct env2_prof_layer {
    int fam, n, h, w, ci, co, k, stride;
    long calls;
    double sec, flops;
} env2_prof_layer;
extern env2_prof_layer env2_prof_layers[PROF_LAYERS_MAX];
extern int env2_prof_nlayers;
void env2_prof_layer_add(int fam, int n, int h, int w, int ci, int co, int k, int stride, double flops, double sec);

#define PROF(fam, stmt)                                        \
    do {                                                       \
        if (env2_prof_on) {                                    \
            double prof_t0_ = env2_prof_now();                 \
            stmt;                                              \
            env2_prof_sec[fam] += env2_prof_now() - prof_t0_;  \
            env2_prof_calls[fam]++;                            \
        } else {                                               \
            stmt;                                              \
        }                                                      \
    } while (0)

/* PROF plus a per-layer entry for convolution shape *sh (a k_conv_shape):
 * `depthwise` (one input channel per output) and `passes` (1 for a forward
 * pass, 2 for a backward pass with both weight and data gradients) give its
 * floating-point operations, computed only while profiling. */
#define PROF_CONV(fam, sh, depthwise, passes, stmt)                                                       \
    do {                                                                                                  \
        if (env2_prof_on) {                                                                               \
            double prof_t0_ = env2_prof_now();                                                            \
            stmt;                                                                                         \
            double prof_dt_ = env2_prof_now() - prof_t0_;                                                 \
            env2_prof_sec[fam] += prof_dt_;                                                               \
            env2_prof_calls[fam]++;                                                                       \
            env2_prof_layer_add(fam, (sh)->n, (sh)->h, (sh)->w, (sh)->ci, (sh)->co, (sh)->kh, (sh)->stride, \
                                2.0 * (sh)->n * (sh)->ho * (sh)->wo * (sh)->co * (sh)->kh * (sh)->kw *    \
                                    ((depthwise) ? 1 : (sh)->ci) * (passes),                              \
                                prof_dt_);                                                                \
        } else {                                                                                          \
            stmt;                                                                                         \
        }                                                                                                 \
    } while (0)

#endif
