/* The model: architecture as data, parameter storage, and the plans that map
 * a (batch, height, width) onto buffers.  Shared by inference (forward.c),
 * the trainer (src/train) and the API layer. */
#ifndef ENV2_MODEL_H
#define ENV2_MODEL_H

#include "common.h"
#include "kernels/kernels.h"

#define ENV2_MAX_STAGES 16
#define ENV2_MAX_NAME 96

/* One stage row in the official notation, after width/depth scaling. */
typedef struct stage_def {
    int repeats, kernel, stride, expand, in, out, fused;
    float se_ratio; /* 0 = no SE */
} stage_def;

typedef struct arch_def {
    char name[64];          /* "efficientnetv2-s" or "custom" */
    int nstages;
    stage_def st[ENV2_MAX_STAGES];
    int stem, head;
    float dropout;          /* variant default head dropout */
    int train_size, eval_size;
} arch_def;

/* Parses a variant name or stage strings into *a (scaled by width/depth
 * multipliers and the options' stem/head). */
env2_status arch_resolve(arch_def *a, const char *arch, float width, float depth, int stem, int head, env2_err *e);
/* Canonical stage-string form of a resolved architecture (for metadata). */
void arch_to_string(const arch_def *a, char *buf, size_t len);

/* Kinds of parameter tensors: decides layout conversion, init and decay. */
enum {
    T_CONV = 0,   /* dense conv weight, internal HWIO, torch OIHW */
    T_DW,         /* depthwise weight, internal [kh][kw][c], torch [c][1][kh][kw] */
    T_BN_W,       /* gamma */
    T_BN_B,       /* beta */
    T_BN_MEAN,    /* running mean (statistics slab) */
    T_BN_VAR,     /* running var (statistics slab) */
    T_SE_W,       /* SE 1x1 conv weight, [out][in] both sides */
    T_SE_B,
    T_FC_W,       /* classifier [classes][head] */
    T_FC_B
};

typedef struct tensor_def {
    char name[ENV2_MAX_NAME];  /* torchvision state_dict name */
    int kind;
    int ndim;
    int64_t shape[4];          /* torch shape */
    int64_t numel;
    size_t offset;             /* into params (trainable) or stats (running stats) */
    int is_stat;
    int fan_out;               /* for init */
} tensor_def;

/* conv + batch norm (+ SiLU) as in torchvision's Conv2dNormActivation */
typedef struct convbn {
    int kind;          /* T_CONV or T_DW */
    int k, stride, ci, co, act;
    size_t w, gamma, beta;     /* offsets into params */
    size_t mean, var;          /* offsets into stats */
    int bn_index;              /* index among BN layers (num_batches_tracked) */
    long wino_u;               /* Winograd layers: offset of its kept filter transform in model.wino_u */
} convbn;

typedef struct block_def {
    int fused, expand, k, stride, in, out, mid, se; /* se = squeeze channels, 0 none */
    int residual;
    float drop_rate;          /* relative position i/N; scaled by the drop-path rate */
    convbn cb[3];             /* MBConv: expand(opt), dw, project; fused: conv, project(opt) */
    int ncb;
    int has_expand;           /* MBConv with e != 1 */
    size_t se_w1, se_b1, se_w2, se_b2;
    int stage;
} block_def;

struct env2_model {
    arch_def arch;
    char arch_string[1024];
    int classes, in_ch, padding, nthreads;
    int winograd;             /* inference 3x3 stride-1 convolutions by Winograd */
    float bn_eps, bn_momentum, dropout, drop_path;
    uint64_t seed;

    convbn stem, head;
    block_def *blocks;
    int nblocks;
    size_t fc_w, fc_b;
    int nbn;

    tensor_def *tensors;
    int ntensors;
    float *params;            /* trainable, one slab */
    size_t nparams;           /* floats in params, padding between tensors included */
    size_t param_count;       /* parameters: the sum of the trainable tensors' numel */
    float *stats;             /* BN running mean / var */
    size_t nstats;
    int64_t *bn_tracked;      /* num_batches_tracked per BN layer */

    /* inference workspace for the last (n, h, w) */
    int ws_n, ws_h, ws_w;
    float *ws;
    size_t ws_floats, ws_act, ws_conv, ws_se;
    float *bnfold;            /* per-BN scale/shift, refolded at every forward (on all threads) */
    /* Inference keeps the Winograd filter transforms (convbn.wino_u) while
     * the weights they came from stay the same: wino_params is the buffer
     * they were computed from, wino_version the params_version then, and
     * wino[i].tag each layer's k_wino_u_tag.  Every write to the weights or to
     * a trainer's EMA copy calls model_params_changed. */
    uint64_t params_version;
    float *wino_u;
    struct wino_kept {
        const convbn *c;
        unsigned tag;
    } *wino;                  /* the Winograd layers, in network order */
    int wino_layers;          /* -1: none, or they could not be allocated */
    const float *wino_params;
    uint64_t wino_version;
    float *inbuf;             /* NCHW -> NHWC conversion of the input */
    size_t in_floats;

    env2_err err;
};

/* Builds block/tensor tables and allocates parameters (initialized). */
env2_status model_build(env2_model *m, env2_err *e);
void model_free_contents(env2_model *m);
void model_init_weights(env2_model *m);

/* Spatial size after a conv of kernel k and stride s (both padding modes agree). */
static inline int conv_out(int n, int k, int s)
{
    (void)k;
    return (n + s - 1) / s;
}

/* Folded BN scale/shift of a convbn in the model's current statistics
 * (computed by model_refold into m->bnfold). */
void model_refold(env2_model *m, const float *params, const float *stats);
const float *model_fold_scale(const env2_model *m, const convbn *c);
const float *model_fold_shift(const env2_model *m, const convbn *c);

/* Inference forward on NHWC input x [n][h][w][in_ch] into logits, using the
 * given weights and statistics (the model's own, or a trainer's EMA copy). */
env2_status model_forward_nhwc(env2_model *m, const float *params, const float *stats, const float *x, int n, int h,
                               int w, float *logits, env2_err *e);

/* Weights <-> safetensors */
env2_status model_load_st(env2_model *m, const void *data, size_t len, uint32_t flags, env2_err *e);
/* Adds every state_dict tensor (converted to torch layout into `scratch`,
 * which must hold nparams + nstats floats, and `tracked` nbn int64) to a
 * writer, plus architecture metadata.  prefix is prepended to names. */
struct st_writer;
env2_status model_add_to_writer(const env2_model *m, struct st_writer *w, const char *prefix, const float *params,
                                const float *stats, float *scratch, int64_t *tracked, int with_stats, env2_err *e);
env2_status model_add_meta(const env2_model *m, struct st_writer *w, env2_err *e);

/* Layout conversion of one tensor between torch and internal order. */
void tensor_to_torch(const env2_model *m, const tensor_def *t, const float *internal, float *torch);
void tensor_from_torch(const env2_model *m, const tensor_def *t, const float *torch, float *internal);

int model_threads(const env2_model *m);

/* The weights (the model's or a trainer's EMA copy) were written. */
static inline void model_params_changed(env2_model *m) { m->params_version++; }

/* API helpers shared with the trainer (src/api/api.c) */
env2_status api_check_images(env2_model *m, const float *images, int32_t n, int32_t h, int32_t w, env2_layout layout,
                             const void *out, env2_err *e);
env2_status api_model_forward(env2_model *m, const float *params, const float *stats, const float *images, int32_t n,
                              int32_t h, int32_t w, env2_layout layout, float *logits);

#endif
