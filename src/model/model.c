/* Model construction: block list and parameter tables from an architecture,
 * torchvision-style initialization, layout conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

typedef struct builder {
    env2_model *m;
    int cap;
    size_t np, ns;
    size_t count; /* parameters, without the padding in np */
    env2_err *e;
} builder;

/* n rounded up to whole 64-byte lines of floats */
static size_t line_up(size_t n) { return (n + 15) & ~(size_t)15; }

static tensor_def *add_tensor(builder *b, const char *name, int kind, int ndim, int64_t d0, int64_t d1, int64_t d2,
                              int64_t d3)
{
    env2_model *m = b->m;
    if (m->ntensors == b->cap) {
        int nc = b->cap ? b->cap * 2 : 256;
        tensor_def *t = env2_realloc(m->tensors, (size_t)nc * sizeof *t);
        if (!t) return NULL;
        m->tensors = t;
        b->cap = nc;
    }
    tensor_def *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = d[i];
        t->numel *= d[i];
    }
    t->is_stat = kind == T_BN_MEAN || kind == T_BN_VAR;
    if (t->is_stat) {
        /* on a line too: the folded BN scale and shift sit at these offsets
         * in bnfold, loaded 16 floats at a time by the GEMM epilogues */
        b->ns = line_up(b->ns);
        t->offset = b->ns;
        b->ns += (size_t)t->numel;
    } else {
        /* Every trainable tensor starts on a 64-byte line.  Unpadded, half of
         * V2-S's 1x1 weight matrices started 32 bytes into a line, so every
         * 16-float load of the GEMM's in-place B straddled two lines.  On the
         * Intel machine of session 20 (2 threads, alternating processes) the
         * forward at 384 went 62.8 -> 60.3 ms, at 224 25.5 -> 23.8 ms.  The
         * padding (at most 15 floats a tensor) stays zero: its gradient is
         * zero, so no optimizer moves it, and files and env2_trainer_gradients
         * go tensor by tensor. */
        b->np = line_up(b->np);
        t->offset = b->np;
        b->np += (size_t)t->numel;
        b->count += (size_t)t->numel;
    }
    if (kind == T_CONV || kind == T_DW || kind == T_SE_W) t->fan_out = (int)(d0 * (ndim == 4 ? d2 * d3 : 1));
    if (kind == T_FC_W) t->fan_out = (int)d0;
    return t;
}

/* conv + BN under `prefix` ("features.0." -> features.0.0.weight, features.0.1.*) */
static int add_convbn(builder *b, convbn *c, const char *prefix, int kind, int k, int stride, int ci, int co, int act)
{
    char name[ENV2_MAX_NAME];
    tensor_def *t;
    c->kind = kind;
    c->k = k;
    c->stride = stride;
    c->ci = ci;
    c->co = co;
    c->act = act;
    snprintf(name, sizeof name, "%s0.weight", prefix);
    t = kind == T_DW ? add_tensor(b, name, T_DW, 4, co, 1, k, k) : add_tensor(b, name, T_CONV, 4, co, ci, k, k);
    if (!t) return -1;
    c->w = t->offset;
    static const char *const sfx[4] = {"weight", "bias", "running_mean", "running_var"};
    static const int kinds[4] = {T_BN_W, T_BN_B, T_BN_MEAN, T_BN_VAR};
    size_t *dst[4] = {&c->gamma, &c->beta, &c->mean, &c->var};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s1.%s", prefix, sfx[i]);
        if (!(t = add_tensor(b, name, kinds[i], 1, co, 0, 0, 0))) return -1;
        *dst[i] = t->offset;
    }
    c->bn_index = b->m->nbn++;
    return 0;
}

env2_status model_build(env2_model *m, env2_err *e)
{
    builder b = {.m = m, .e = e};
    const arch_def *a = &m->arch;
    char pre[ENV2_MAX_NAME], name[ENV2_MAX_NAME];
    int total = 0;
    for (int s = 0; s < a->nstages; s++) total += a->st[s].repeats;
    m->nblocks = total;
    m->blocks = env2_calloc((size_t)total, sizeof *m->blocks);
    if (!m->blocks) goto nomem;
    if (add_convbn(&b, &m->stem, "features.0.", T_CONV, 3, 2, m->in_ch, a->stem, 1)) goto nomem;
    int bi = 0;
    for (int s = 0; s < a->nstages; s++) {
        const stage_def *st = &a->st[s];
        for (int j = 0; j < st->repeats; j++, bi++) {
            block_def *bl = &m->blocks[bi];
            bl->stage = s;
            bl->fused = st->fused;
            bl->expand = st->expand;
            bl->k = st->kernel;
            bl->stride = j == 0 ? st->stride : 1;
            bl->in = j == 0 ? st->in : st->out;
            bl->out = st->out;
            bl->mid = bl->in * st->expand;
            bl->se = st->se_ratio > 0 ? (int)(bl->in * st->se_ratio) : 0;
            if (st->se_ratio > 0 && bl->se < 1) bl->se = 1;
            bl->residual = bl->stride == 1 && bl->in == bl->out;
            bl->drop_rate = (float)bi / (float)total;
            int li = 0;
#define SUB() (snprintf(pre, sizeof pre, "features.%d.%d.block.%d.", s + 1, j, li), pre)
            if (bl->fused) {
                if (bl->expand == 1) {
                    if (add_convbn(&b, &bl->cb[0], SUB(), T_CONV, bl->k, bl->stride, bl->in, bl->out, 1)) goto nomem;
                    bl->ncb = 1;
                    li++;
                } else {
                    if (add_convbn(&b, &bl->cb[0], SUB(), T_CONV, bl->k, bl->stride, bl->in, bl->mid, 1)) goto nomem;
                    li++;
                    if (add_convbn(&b, &bl->cb[1], SUB(), T_CONV, 1, 1, bl->mid, bl->out, 0)) goto nomem;
                    li++;
                    bl->ncb = 2;
                }
                /* torchvision's FusedMBConv has no SE; an SE ratio on a fused
                 * stage is accepted by the official code but not representable
                 * with torchvision names, so it is refused at creation. */
            } else {
                int n = 0;
                bl->has_expand = bl->expand != 1;
                if (bl->has_expand) {
                    if (add_convbn(&b, &bl->cb[n++], SUB(), T_CONV, 1, 1, bl->in, bl->mid, 1)) goto nomem;
                    li++;
                }
                if (add_convbn(&b, &bl->cb[n++], SUB(), T_DW, bl->k, bl->stride, bl->mid, bl->mid, 1)) goto nomem;
                li++;
                if (bl->se) {
                    tensor_def *t;
                    snprintf(name, sizeof name, "features.%d.%d.block.%d.fc1.weight", s + 1, j, li);
                    if (!(t = add_tensor(&b, name, T_SE_W, 4, bl->se, bl->mid, 1, 1))) goto nomem;
                    bl->se_w1 = t->offset;
                    snprintf(name, sizeof name, "features.%d.%d.block.%d.fc1.bias", s + 1, j, li);
                    if (!(t = add_tensor(&b, name, T_SE_B, 1, bl->se, 0, 0, 0))) goto nomem;
                    bl->se_b1 = t->offset;
                    snprintf(name, sizeof name, "features.%d.%d.block.%d.fc2.weight", s + 1, j, li);
                    if (!(t = add_tensor(&b, name, T_SE_W, 4, bl->mid, bl->se, 1, 1))) goto nomem;
                    bl->se_w2 = t->offset;
                    snprintf(name, sizeof name, "features.%d.%d.block.%d.fc2.bias", s + 1, j, li);
                    if (!(t = add_tensor(&b, name, T_SE_B, 1, bl->mid, 0, 0, 0))) goto nomem;
                    bl->se_b2 = t->offset;
                    li++;
                }
                if (add_convbn(&b, &bl->cb[n++], SUB(), T_CONV, 1, 1, bl->mid, bl->out, 0)) goto nomem;
                bl->ncb = n;
            }
#undef SUB
        }
    }
    int last = a->st[a->nstages - 1].out;
    snprintf(pre, sizeof pre, "features.%d.", a->nstages + 1);
    if (add_convbn(&b, &m->head, pre, T_CONV, 1, 1, last, a->head, 1)) goto nomem;
    {
        tensor_def *t = add_tensor(&b, "classifier.1.weight", T_FC_W, 2, m->classes, a->head, 0, 0);
        if (!t) goto nomem;
        m->fc_w = t->offset;
        if (!(t = add_tensor(&b, "classifier.1.bias", T_FC_B, 1, m->classes, 0, 0, 0))) goto nomem;
        m->fc_b = t->offset;
    }
    m->nparams = b.np;
    m->param_count = b.count;
    m->nstats = b.ns;
    m->params = env2_aligned_alloc(b.np * sizeof(float));
    m->stats = env2_aligned_alloc(b.ns * sizeof(float));
    m->bn_tracked = env2_calloc((size_t)m->nbn, sizeof(int64_t));
    m->bnfold = env2_aligned_alloc(b.ns * sizeof(float)); /* scale and shift: same count as mean + var */
    if (!m->params || !m->stats || !m->bn_tracked || !m->bnfold) goto nomem;
    model_init_weights(m);
    return ENV2_OK;
nomem:
    return env2_fail(e, ENV2_E_NOMEM, "out of memory building the model");
}

void model_free_contents(env2_model *m)
{
    env2_free(m->blocks);
    env2_free(m->tensors);
    env2_aligned_free(m->params);
    env2_aligned_free(m->stats);
    env2_free(m->bn_tracked);
    env2_aligned_free(m->bnfold);
    env2_aligned_free(m->ws);
    env2_aligned_free(m->inbuf);
    env2_aligned_free(m->wino_u);
    env2_free(m->wino);
}

/* torchvision: kaiming_normal_(mode="fan_out") for every Conv2d (depthwise
 * fan_out = C*k*k, SE fan_out = out channels), U(-1/sqrt(classes), ..) for
 * the classifier weight, zero biases, BN identity.  Each element draws from
 * its own counter, so initialization is independent of the order of work. */
void model_init_weights(env2_model *m)
{
    for (int i = 0; i < m->ntensors; i++) {
        const tensor_def *t = &m->tensors[i];
        float *dst = (t->is_stat ? m->stats : m->params) + t->offset;
        uint64_t base = (uint64_t)t->offset * 2 + (t->is_stat ? 1 : 0);
        switch (t->kind) {
        case T_CONV:
        case T_DW:
        case T_SE_W: {
            float std = sqrtf(2.0f / (float)t->fan_out);
            for (int64_t k = 0; k < t->numel; k++)
                dst[k] = std * env2_rng_normal(m->seed, ENV2_STREAM_INIT, (base + 2 * (uint64_t)k));
            break;
        }
        case T_FC_W: {
            float r = 1.0f / sqrtf((float)t->fan_out);
            for (int64_t k = 0; k < t->numel; k++)
                dst[k] = r * (2.0f * env2_rng_uniform(m->seed, ENV2_STREAM_INIT, base + 2 * (uint64_t)k) - 1.0f);
            break;
        }
        case T_BN_W:
        case T_BN_VAR:
            for (int64_t k = 0; k < t->numel; k++) dst[k] = 1.0f;
            break;
        default:
            memset(dst, 0, (size_t)t->numel * sizeof(float));
        }
    }
    memset(m->bn_tracked, 0, (size_t)m->nbn * sizeof(int64_t));
    model_params_changed(m);
}

/* Internal layouts: dense conv HWIO, depthwise [kh][kw][c]; the rest as torch.
 * Initialization draws in internal order; conversions keep values. */
void tensor_to_torch(const env2_model *m, const tensor_def *t, const float *in, float *out)
{
    (void)m;
    if (t->kind == T_CONV) {
        int64_t O = t->shape[0], I = t->shape[1], KH = t->shape[2], KW = t->shape[3];
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++)
                for (int64_t y = 0; y < KH; y++)
                    for (int64_t x = 0; x < KW; x++)
                        out[((o * I + i) * KH + y) * KW + x] = in[((y * KW + x) * I + i) * O + o];
    } else if (t->kind == T_DW) {
        int64_t C = t->shape[0], KH = t->shape[2], KW = t->shape[3];
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < KH; y++)
                for (int64_t x = 0; x < KW; x++) out[(c * KH + y) * KW + x] = in[(y * KW + x) * C + c];
    } else {
        memcpy(out, in, (size_t)t->numel * sizeof(float));
    }
}

void tensor_from_torch(const env2_model *m, const tensor_def *t, const float *in, float *out)
{
    (void)m;
    if (t->kind == T_CONV) {
        int64_t O = t->shape[0], I = t->shape[1], KH = t->shape[2], KW = t->shape[3];
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++)
                for (int64_t y = 0; y < KH; y++)
                    for (int64_t x = 0; x < KW; x++)
                        out[((y * KW + x) * I + i) * O + o] = in[((o * I + i) * KH + y) * KW + x];
    } else if (t->kind == T_DW) {
        int64_t C = t->shape[0], KH = t->shape[2], KW = t->shape[3];
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < KH; y++)
                for (int64_t x = 0; x < KW; x++) out[(y * KW + x) * C + c] = in[(c * KH + y) * KW + x];
    } else {
        memcpy(out, in, (size_t)t->numel * sizeof(float));
    }
}

int model_threads(const env2_model *m)
{
    int n = m->nthreads > 0 ? m->nthreads : env2_max_threads();
    return n < 1 ? 1 : n;
}

/* Folded BN: scale/shift stored at the same offsets as mean/var.  Every
 * inference forward refolds all BN layers (V2-S: ~100k channels, 0.26 ms on
 * one thread, a double square root and division each), so the threads
 * share it: units of REFOLD_UNIT tensors with stealing (env2_steal), each
 * layer folded by the task that takes its mean tensor, to the same bits. */
enum { REFOLD_UNIT = 16 };
typedef struct refold_job {
    const env2_model *m;
    const float *params, *stats;
    env2_steal st;
} refold_job;

static void refold_fn(void *arg, int v, int nv)
{
    refold_job *j = arg;
    const env2_model *m = j->m;
    long u;
    (void)nv;
    while (env2_steal_next(&j->st, v, &u)) {
        int end = (int)(u + 1) * REFOLD_UNIT < m->ntensors ? (int)(u + 1) * REFOLD_UNIT : m->ntensors;
        for (int i = (int)u * REFOLD_UNIT; i < end; i++) {
            const tensor_def *t = &m->tensors[i];
            if (t->kind != T_BN_MEAN) continue;
            /* tensors of one BN are consecutive: weight, bias, mean, var */
            const tensor_def *tw = t - 2, *tb = t - 1, *tv = t + 1;
            k_bn_fold((int)t->numel, j->params + tw->offset, j->params + tb->offset, j->stats + t->offset,
                      j->stats + tv->offset, m->bn_eps, m->bnfold + t->offset, m->bnfold + tv->offset);
        }
    }
}

void model_refold(env2_model *m, const float *params, const float *stats)
{
    refold_job j;
    j.m = m;
    j.params = params;
    j.stats = stats;
    /* small models: not worth a parallel region */
    const int nt = m->nstats < 16384 ? 1 : model_threads(m);
    env2_steal_init(&j.st, (m->ntensors + REFOLD_UNIT - 1) / REFOLD_UNIT, nt);
    env2_par_run(nt, refold_fn, &j);
}

const float *model_fold_scale(const env2_model *m, const convbn *c) { return m->bnfold + c->mean; }
const float *model_fold_shift(const env2_model *m, const convbn *c) { return m->bnfold + c->var; }
