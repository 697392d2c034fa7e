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
    PROF_COUNT
};

extern int env2_prof_on;
extern double env2_prof_sec[PROF_COUNT];
extern long env2_prof_calls[PROF_COUNT];
double env2_prof_now(void);
const char *env2_prof_name(int family);
void env2_prof_reset(void);

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

#endif
