/* Trainer: loss, optimizers, learning-rate schedule, EMA, checkpoints.  A
 * step validates its inputs, runs the graph, checks the loss and gradients
 * for NaN/Inf and only then commits anything (weights, BN statistics,
 * optimizer and EMA state, step count), so a failed step changes nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "profile.h"
#include "trainer.h"


static env2_status fail_t(env2_trainer *t, env2_status code, const char *fmt, ...) ENV2_PRINTF(3, 4);
static env2_status fail_t(env2_trainer *t, env2_status code, const char *fmt, ...)
{
    env2_err *te = env2_tls_err();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(te->msg, sizeof te->msg, fmt, ap);
    va_end(ap);
    if (t) memcpy(&t->err, te, sizeof *te);
    return code;
}

static env2_status sync_t(env2_trainer *t, env2_status s)
{
    if (s && t) memcpy(env2_tls_err(), &t->err, sizeof t->err);
    return s;
}

ENV2_API void env2_trainer_options_init(env2_trainer_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->optimizer = ENV2_OPT_RMSPROP_TF;
    o->lr = 0.016f;
    o->momentum = 0.9f;
    o->rms_decay = 0.9f;
    o->eps = -1.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->weight_decay = 1e-5f;
    o->lr_schedule = ENV2_LR_EXPONENTIAL;
    o->decay_steps = 1.0f;
    o->decay_rate = 0.97f;
    o->label_smoothing = 0.1f;
    o->keep_activations = -1;
}

static int decays(int kind) { return kind == T_CONV || kind == T_DW || kind == T_SE_W || kind == T_FC_W; }

static void opt_init_state(env2_trainer *t)
{
    size_t np = t->m->nparams;
    memset(t->s1, 0, np * sizeof(float));
    memset(t->s2, 0, np * sizeof(float));
    /* TF1 RMSProp starts its mean square at 1 (spec §4.4) */
    if (t->o.optimizer == ENV2_OPT_RMSPROP_TF)
        for (size_t i = 0; i < np; i++) t->s2[i] = 1.0f;
}

/* The average starts from the live weights and statistics, its warm-up
 * from the current step (at creation and at env2_trainer_restart_ema). */
static void ema_reset(env2_trainer *t)
{
    memcpy(t->ema_p, t->m->params, t->m->nparams * sizeof(float));
    memcpy(t->ema_s, t->m->stats, t->m->nstats * sizeof(float));
    model_params_changed(t->m);
    t->ema_start = t->step;
}

ENV2_API env2_status env2_trainer_create(env2_trainer **out, env2_model *m, const env2_trainer_options *user)
{
    env2_trainer_options o;
    if (out) *out = NULL;
    if (!out || !m) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_create: NULL %s", out ? "model" : "out");
    env2_trainer_options_init(&o);
    if (user) {
        if (user->struct_size < sizeof(uint32_t) || user->struct_size > sizeof o)
            return fail_t(NULL, ENV2_E_VERSION, "env2_trainer_options.struct_size %u unknown", user->struct_size);
        memcpy(&o, user, user->struct_size);
    }
    if (o.optimizer < ENV2_OPT_SGD || o.optimizer > ENV2_OPT_ADAMW)
        return fail_t(NULL, ENV2_E_INVALID_ARG, "unknown optimizer %d", o.optimizer);
    if (o.lr_schedule < ENV2_LR_CONSTANT || o.lr_schedule > ENV2_LR_COSINE)
        return fail_t(NULL, ENV2_E_INVALID_ARG, "unknown learning-rate schedule %d", o.lr_schedule);
    if (!(o.lr >= 0 && o.lr < 1e3f)) return fail_t(NULL, ENV2_E_INVALID_ARG, "learning rate %g out of range", o.lr);
    if (!(o.momentum >= 0 && o.momentum < 1) || !(o.rms_decay >= 0 && o.rms_decay < 1) ||
        !(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1))
        return fail_t(NULL, ENV2_E_INVALID_ARG, "momentum, rms_decay, beta1 and beta2 must be in [0, 1)");
    if (!(o.weight_decay >= 0) || !(o.clip_grad_norm >= 0) || !(o.label_smoothing >= 0 && o.label_smoothing < 1) ||
        !(o.ema_decay >= 0 && o.ema_decay < 1))
        return fail_t(NULL, ENV2_E_INVALID_ARG, "weight_decay/clip_grad_norm >= 0, label_smoothing and ema_decay in [0, 1)");
    if (o.warmup_steps < 0 || o.total_steps < 0 || !(o.decay_steps > 0) || !(o.decay_rate > 0 && o.decay_rate <= 1))
        return fail_t(NULL, ENV2_E_INVALID_ARG, "warmup/total steps >= 0, decay_steps > 0, decay_rate in (0, 1]");
    if (o.lr_schedule == ENV2_LR_COSINE && o.total_steps < 1)
        return fail_t(NULL, ENV2_E_INVALID_ARG, "the cosine schedule needs total_steps >= 1");
    if (o.keep_activations < -1 || o.keep_activations > 1)
        return fail_t(NULL, ENV2_E_INVALID_ARG, "keep_activations %d: must be -1 (auto), 0 or 1", o.keep_activations);
    if (o.eps < 0) o.eps = o.optimizer == ENV2_OPT_ADAMW ? 1e-8f : (o.optimizer == ENV2_OPT_RMSPROP_TF ? 1e-3f : 0.0f);

    env2_trainer *t = env2_calloc(1, sizeof *t);
    if (!t) return fail_t(NULL, ENV2_E_NOMEM, "out of memory creating the trainer");
    t->m = m;
    t->o = o;
    t->lr = o.lr;
    t->dropout = m->dropout;
    t->drop_path = m->drop_path;
    t->smoothing = o.label_smoothing;
    t->wd = o.weight_decay;
    size_t np = m->nparams;
    t->grads = env2_aligned_alloc(np * sizeof(float));
    t->s1 = env2_aligned_alloc(np * sizeof(float));
    t->s2 = env2_aligned_alloc(np * sizeof(float));
    t->decay = env2_calloc(np ? np : 1, 1);
    if (o.ema_decay > 0) {
        t->ema_p = env2_aligned_alloc(np * sizeof(float));
        t->ema_s = env2_aligned_alloc(m->nstats * sizeof(float));
    }
    if (!t->grads || !t->s1 || !t->s2 || !t->decay || (o.ema_decay > 0 && (!t->ema_p || !t->ema_s))) {
        env2_trainer_destroy(t);
        return fail_t(NULL, ENV2_E_NOMEM, "out of memory creating the trainer (%zu parameters)", m->param_count);
    }
    for (int i = 0; i < m->ntensors; i++) {
        const tensor_def *td = &m->tensors[i];
        if (!td->is_stat && (o.decay_all || decays(td->kind))) memset(t->decay + td->offset, 1, (size_t)td->numel);
    }
    opt_init_state(t);
    if (t->ema_p) ema_reset(t);
    *out = t;
    return ENV2_OK;
}

ENV2_API void env2_trainer_destroy(env2_trainer *t)
{
    if (!t) return;
    env2_aligned_free(t->grads);
    env2_aligned_free(t->s1);
    env2_aligned_free(t->s2);
    env2_free(t->decay);
    env2_aligned_free(t->ema_p);
    env2_aligned_free(t->ema_s);
    env2_free(t->nodes);
    env2_aligned_free(t->arena);
    env2_free(t);
}

ENV2_API const char *env2_trainer_last_error(const env2_trainer *t) { return t ? t->err.msg : ""; }

static double lr_at(const env2_trainer *t, int64_t step)
{
    const env2_trainer_options *o = &t->o;
    double lr = t->lr;
    /* warmup counts the step being taken, so the first step already moves */
    if (step < o->warmup_steps) return lr * (double)(step + 1) / (double)o->warmup_steps;
    switch (o->lr_schedule) {
    case ENV2_LR_EXPONENTIAL: return lr * pow(o->decay_rate, floor((double)step / o->decay_steps));
    case ENV2_LR_COSINE: {
        double p = (double)step / (double)o->total_steps;
        if (p > 1) p = 1;
        return 0.5 * lr * (1.0 + cos(3.14159265358979323846 * p));
    }
    default: return lr;
    }
}

ENV2_API double env2_trainer_current_lr(const env2_trainer *t) { return t ? lr_at(t, t->step) : 0.0; }
ENV2_API int64_t env2_trainer_step_count(const env2_trainer *t) { return t ? t->step : 0; }

ENV2_API env2_status env2_trainer_set_param(env2_trainer *t, env2_train_param p, double v)
{
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_set_param: NULL trainer");
    switch (p) {
    case ENV2_PARAM_LR:
        if (!(v >= 0 && v < 1e3)) return fail_t(t, ENV2_E_INVALID_ARG, "learning rate %g out of range [0, 1000)", v);
        t->lr = (float)v;
        return ENV2_OK;
    case ENV2_PARAM_DROPOUT:
        if (!(v >= 0 && v < 1)) return fail_t(t, ENV2_E_INVALID_ARG, "dropout %g out of range [0, 1)", v);
        t->dropout = (float)v;
        return ENV2_OK;
    case ENV2_PARAM_DROP_PATH:
        if (!(v >= 0 && v < 1)) return fail_t(t, ENV2_E_INVALID_ARG, "drop-path rate %g out of range [0, 1)", v);
        t->drop_path = (float)v;
        return ENV2_OK;
    case ENV2_PARAM_LABEL_SMOOTHING:
        if (!(v >= 0 && v < 1)) return fail_t(t, ENV2_E_INVALID_ARG, "label smoothing %g out of range [0, 1)", v);
        t->smoothing = (float)v;
        return ENV2_OK;
    case ENV2_PARAM_WEIGHT_DECAY:
        if (!(v >= 0 && v < 1e3)) return fail_t(t, ENV2_E_INVALID_ARG, "weight decay %g out of range", v);
        t->wd = (float)v;
        return ENV2_OK;
    }
    return fail_t(t, ENV2_E_INVALID_ARG, "unknown training parameter %d", (int)p);
}

ENV2_API env2_status env2_trainer_get_param(const env2_trainer *t, env2_train_param p, double *v)
{
    if (!t || !v) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_get_param: NULL argument");
    switch (p) {
    case ENV2_PARAM_LR: *v = t->lr; return ENV2_OK;
    case ENV2_PARAM_DROPOUT: *v = t->dropout; return ENV2_OK;
    case ENV2_PARAM_DROP_PATH: *v = t->drop_path; return ENV2_OK;
    case ENV2_PARAM_LABEL_SMOOTHING: *v = t->smoothing; return ENV2_OK;
    case ENV2_PARAM_WEIGHT_DECAY: *v = t->wd; return ENV2_OK;
    }
    return fail_t((env2_trainer *)t, ENV2_E_INVALID_ARG, "unknown training parameter %d", (int)p);
}

/* Plans the graph for (n, h, w), growing the arena only when needed. */
static env2_status reshape(env2_trainer *t, int n, int h, int w)
{
    if (t->arena && t->n == n && t->h == h && t->w == w) return ENV2_OK;
    size_t need = graph_plan(t, n, h, w, NULL);
    int nn = t->nnodes;
    if (nn > t->cap_nodes) {
        tnode *nodes = env2_realloc(t->nodes, (size_t)nn * sizeof *nodes);
        if (!nodes) return env2_fail(&t->err, ENV2_E_NOMEM, "out of memory planning the training graph");
        t->nodes = nodes;
        t->cap_nodes = nn;
    }
    if (need > t->arena_floats) {
        float *a = env2_aligned_alloc(need * sizeof(float));
        if (!a)
            return env2_fail(&t->err, ENV2_E_NOMEM, "out of memory: training workspace of %zu MiB for batch %d at %dx%d",
                             need * sizeof(float) >> 20, n, h, w);
        env2_aligned_free(t->arena);
        t->arena = a;
        t->arena_floats = need;
    }
    graph_plan(t, n, h, w, t->arena);
    t->n = n;
    t->h = h;
    t->w = w;
    return ENV2_OK;
}

ENV2_API env2_status env2_trainer_memory_needed(const env2_trainer *ct, int32_t n, int32_t h, int32_t w,
                                                size_t *workspace, size_t *fixed)
{
    env2_trainer *t = (env2_trainer *)ct;
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_memory_needed: NULL trainer");
    if (n < 1 || h < 1 || w < 1 || h > 4096 || w > 4096 || n > 65536)
        return fail_t(t, ENV2_E_INVALID_ARG, "batch %d at %dx%d out of range", n, h, w);
    /* graph_plan with a NULL base only counts; keep the live plan intact */
    int keep = t->nnodes;
    size_t ws = graph_plan(t, n, h, w, NULL) * sizeof(float);
    t->nnodes = keep;
    if (workspace) *workspace = ws;
    if (fixed) {
        size_t np = t->m->nparams, ns = t->m->nstats;
        *fixed = (np * 4 + ns * 2 + (t->ema_p ? np + ns : 0)) * sizeof(float) + np;
    }
    return ENV2_OK;
}

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Validates inputs and runs forward (+ loss); on success t->dlogits holds
 * the loss gradient. */
static env2_status forward_loss(env2_trainer *t, const float *images, int32_t n, int32_t h, int32_t w,
                                env2_layout layout, const int32_t *labels, const float *targets, int train_masks,
                                double *loss, int32_t *correct)
{
    env2_model *m = t->m;
    env2_status s = api_check_images(m, images, n, h, w, layout, images, &t->err);
    if (s) return s;
    if (!labels == !targets)
        return env2_fail(&t->err, ENV2_E_INVALID_ARG, "give exactly one of labels and targets");
    int K = m->classes;
    if (labels) {
        for (int i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= K)
                return env2_fail(&t->err, ENV2_E_INVALID_ARG, "label %d of sample %d is out of range 0..%d", labels[i], i,
                                 K - 1);
    } else {
        for (int i = 0; i < n; i++) {
            double sum = 0;
            for (int k = 0; k < K; k++) {
                float v = targets[(size_t)i * K + k];
                if (!isfinite(v) || v < 0)
                    return env2_fail(&t->err, ENV2_E_INVALID_ARG, "target of sample %d, class %d is %g (must be >= 0)", i,
                                     k, v);
                sum += v;
            }
            if (fabs(sum - 1.0) > 1e-3)
                return env2_fail(&t->err, ENV2_E_INVALID_ARG, "targets of sample %d sum to %.6f, not 1", i, sum);
        }
    }
    size_t count = (size_t)n * h * w * m->in_ch;
    if (!all_finite(images, count)) return env2_fail(&t->err, ENV2_E_NUMERIC, "the images contain NaN or Inf");
    if ((s = reshape(t, n, h, w))) return s;
    if (layout == ENV2_LAYOUT_NCHW) PROF(PROF_LAYOUT, k_nchw_to_nhwc(model_threads(m), n, m->in_ch, h, w, images, t->xin));
    else PROF(PROF_LAYOUT, memcpy(t->xin, images, count * sizeof(float)));
    graph_forward(t, m->params, train_masks);
    double l = 0;
    PROF(PROF_HEAD, l = k_xent(n, K, t->logits, labels, targets, t->smoothing, t->dlogits, correct));
    if (!isfinite(l)) return env2_fail(&t->err, ENV2_E_NUMERIC, "the loss is %g (diverged?)", l);
    *loss = l;
    return ENV2_OK;
}

/* Sum of squares in double over fixed 4096-element chunks in order, so the
 * norm (and clipping) is identical for any thread count. */
static double grad_sq_norm(const float *g, size_t n)
{
    double total = 0;
    for (size_t b = 0; b < n; b += 4096) {
        size_t e = b + 4096 < n ? b + 4096 : n;
        double s = 0;
        for (size_t i = b; i < e; i++) s += (double)g[i] * g[i];
        total += s;
    }
    return total;
}

/* One optimizer step over a range of the parameters; every element is
 * updated alone, so the split does not matter. */
typedef struct opt_job {
    int kind, nest;
    long np;
    float *w, *s1, *s2;
    const float *g;
    const unsigned char *dm;
    float gscale, wd, mu, lrf, rho, eps, b1, b2, step_size, sq_bc2;
    int64_t step;
} opt_job;

static void opt_fn(void *arg, int ith, int nth)
{
    const opt_job *j = arg;
    float *w = j->w, *s1 = j->s1, *s2 = j->s2;
    const float *g = j->g;
    const unsigned char *dm = j->dm;
    const float gscale = j->gscale, wd = j->wd, mu = j->mu, lrf = j->lrf;
    long lo, hi;
    env2_range(j->np, ith, nth, &lo, &hi);
    switch (j->kind) {
    case ENV2_OPT_SGD: {
        const int nest = j->nest;
        const int64_t step = j->step;
        for (long i = lo; i < hi; i++) {
            float gi = g[i] * gscale;
            if (dm[i]) gi += wd * w[i];
            float b = step == 1 ? gi : mu * s1[i] + gi;
            s1[i] = b;
            w[i] -= lrf * (nest ? gi + mu * b : b);
        }
        break;
    }
    case ENV2_OPT_RMSPROP_TF: {
        const float rho = j->rho, eps = j->eps;
        for (long i = lo; i < hi; i++) {
            float gi = g[i] * gscale;
            if (dm[i]) gi += wd * w[i];
            float ms = s2[i] + (1.0f - rho) * (gi * gi - s2[i]);
            s2[i] = ms;
            float mom = mu * s1[i] + lrf * gi / sqrtf(ms + eps);
            s1[i] = mom;
            w[i] -= mom;
        }
        break;
    }
    case ENV2_OPT_ADAMW: {
        const float b1 = j->b1, b2 = j->b2, eps = j->eps, step_size = j->step_size, sq_bc2 = j->sq_bc2;
        for (long i = lo; i < hi; i++) {
            float gi = g[i] * gscale;
            if (dm[i]) w[i] *= 1.0f - lrf * wd;
            float mm = b1 * s1[i] + (1.0f - b1) * gi;
            float vv = b2 * s2[i] + (1.0f - b2) * gi * gi;
            s1[i] = mm;
            s2[i] = vv;
            w[i] -= step_size * mm / (sqrtf(vv) / sq_bc2 + eps);
        }
        break;
    }
    }
}

static void optimizer_update(env2_trainer *t, double lr, float gscale)
{
    env2_model *m = t->m;
    const env2_trainer_options *o = &t->o;
    opt_job j = {0};
    j.kind = o->optimizer;
    j.nest = o->nesterov;
    j.np = (long)m->nparams;
    j.w = m->params;
    j.g = t->grads;
    j.s1 = t->s1;
    j.s2 = t->s2;
    j.dm = t->decay;
    j.gscale = gscale;
    j.wd = t->wd;
    j.mu = o->momentum;
    j.lrf = (float)lr;
    j.rho = o->rms_decay;
    j.eps = o->eps;
    j.b1 = o->beta1;
    j.b2 = o->beta2;
    j.step = t->step + 1;
    if (j.kind == ENV2_OPT_ADAMW) {
        float bc1 = (float)(1.0 - pow(j.b1, (double)j.step)), bc2 = (float)(1.0 - pow(j.b2, (double)j.step));
        j.step_size = j.lrf / bc1;
        j.sq_bc2 = sqrtf(bc2);
    }
    if (j.kind != ENV2_OPT_SGD && j.kind != ENV2_OPT_RMSPROP_TF && j.kind != ENV2_OPT_ADAMW) return;
    model_params_changed(m);
    env2_par_run(model_threads(m), opt_fn, &j);
}

/* Running statistics, PyTorch convention: new = (1 - m) old + m batch,
 * with the unbiased batch variance. */
static void update_bn_stats(env2_trainer *t)
{
    env2_model *m = t->m;
    float mo = m->bn_momentum;
    for (int i = 0; i < t->nnodes; i++) {
        const tnode *nd = &t->nodes[i];
        if (nd->type != N_CONV) continue;
        const convbn *c = nd->cb;
        float *rm = m->stats + c->mean, *rv = m->stats + c->var;
        for (int k = 0; k < c->co; k++) {
            rm[k] = (1.0f - mo) * rm[k] + mo * nd->mean[k];
            rv[k] = (1.0f - mo) * rv[k] + mo * nd->varu[k];
        }
        m->bn_tracked[c->bn_index]++;
    }
}

static void ema_update(env2_trainer *t)
{
    if (!t->ema_p) return;
    env2_model *m = t->m;
    /* the warm-up counts from the last restart, so a restarted average
     * forgets the old weights as quickly as a new one */
    double tt = (double)(t->step - t->ema_start);
    double d = (1.0 + tt) / (10.0 + tt);
    if (d > t->o.ema_decay) d = t->o.ema_decay;
    float df = (float)d, omd = (float)(1.0 - d);
    for (size_t i = 0; i < m->nparams; i++) t->ema_p[i] = df * t->ema_p[i] + omd * m->params[i];
    model_params_changed(m);
    for (size_t i = 0; i < m->nstats; i++) t->ema_s[i] = df * t->ema_s[i] + omd * m->stats[i];
}

ENV2_API env2_status env2_train_step(env2_trainer *t, const float *images, int32_t n, int32_t h, int32_t w,
                                     env2_layout layout, const int32_t *labels, const float *targets, float *loss,
                                     int32_t *correct)
{
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_train_step: NULL trainer");
    if (n < 2) return fail_t(t, ENV2_E_INVALID_ARG, "training needs a batch of at least 2 (batch norm statistics)");
    double l;
    int32_t cor = 0;
    env2_status s = forward_loss(t, images, n, h, w, layout, labels, targets, 1, &l, &cor);
    if (s) return sync_t(t, s);
    env2_model *m = t->m;
    memset(t->grads, 0, m->nparams * sizeof(float));
    graph_backward(t, m->params);
    double sq = grad_sq_norm(t->grads, m->nparams);
    if (!isfinite(sq)) return sync_t(t, env2_fail(&t->err, ENV2_E_NUMERIC, "the gradients contain NaN or Inf"));
    float gscale = 1.0f;
    double norm = sqrt(sq);
    if (t->o.clip_grad_norm > 0 && norm > t->o.clip_grad_norm) gscale = (float)(t->o.clip_grad_norm / (norm + 1e-6));
    PROF(PROF_OPTIM, optimizer_update(t, lr_at(t, t->step), gscale); update_bn_stats(t); t->step++;
         ema_update(t));
    if (loss) *loss = (float)l;
    if (correct) *correct = cor;
    return ENV2_OK;
}

ENV2_API env2_status env2_trainer_evaluate(env2_trainer *t, const float *images, int32_t n, int32_t h, int32_t w,
                                           env2_layout layout, int use_ema, float *logits)
{
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_evaluate: NULL trainer");
    int ema = use_ema && t->ema_p;
    env2_status s = api_model_forward(t->m, ema ? t->ema_p : t->m->params, ema ? t->ema_s : t->m->stats, images, n, h,
                                      w, layout, logits);
    if (s) memcpy(&t->err, &t->m->err, sizeof t->err);
    return s;
}

ENV2_API env2_status env2_trainer_restart_ema(env2_trainer *t)
{
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_restart_ema: NULL trainer");
    if (!t->ema_p) return fail_t(t, ENV2_E_STATE, "EMA is off (ema_decay = 0)");
    ema_reset(t);
    return ENV2_OK;
}

ENV2_API env2_status env2_trainer_apply_ema(env2_trainer *t)
{
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_apply_ema: NULL trainer");
    if (!t->ema_p) return fail_t(t, ENV2_E_STATE, "EMA is off (ema_decay = 0)");
    memcpy(t->m->params, t->ema_p, t->m->nparams * sizeof(float));
    memcpy(t->m->stats, t->ema_s, t->m->nstats * sizeof(float));
    model_params_changed(t->m);
    return ENV2_OK;
}

ENV2_API env2_status env2_trainer_gradients(env2_trainer *t, const float *images, int32_t n, int32_t h, int32_t w,
                                            env2_layout layout, const int32_t *labels, const float *targets,
                                            float *loss, float *grads)
{
    if (!t) return fail_t(NULL, ENV2_E_INVALID_ARG, "env2_trainer_gradients: NULL trainer");
    if (!grads) return fail_t(t, ENV2_E_INVALID_ARG, "env2_trainer_gradients: NULL grads");
    if (n < 2) return fail_t(t, ENV2_E_INVALID_ARG, "training mode needs a batch of at least 2");
    double l;
    env2_status s = forward_loss(t, images, n, h, w, layout, labels, targets, 0, &l, NULL);
    if (s) return sync_t(t, s);
    env2_model *m = t->m;
    memset(t->grads, 0, m->nparams * sizeof(float));
    graph_backward(t, m->params);
    float *out = grads;
    for (int i = 0; i < m->ntensors; i++) {
        const tensor_def *td = &m->tensors[i];
        if (td->is_stat) continue;
        tensor_to_torch(m, td, t->grads + td->offset, out);
        out += td->numel;
    }
    if (loss) *loss = (float)l;
    return ENV2_OK;
}

ENV2_API env2_status env2_trainer_save_gradients(const env2_trainer *ct, const float *grads, float loss,
                                                 const char *path)
{
    env2_trainer *t = (env2_trainer *)ct;
    if (!t || !grads || !path) return fail_t(t, ENV2_E_INVALID_ARG, "env2_trainer_save_gradients: NULL argument");
    env2_model *m = t->m;
    st_writer *wr = NULL;
    env2_status s = st_writer_create(&wr, &t->err);
    const float *p = grads;
    for (int i = 0; !s && i < m->ntensors; i++) {
        const tensor_def *td = &m->tensors[i];
        if (td->is_stat) continue;
        s = st_writer_add(wr, td->name, ST_F32, td->ndim, td->shape, p, &t->err);
        p += td->numel;
    }
    int64_t one = 1;
    if (!s) s = st_writer_add(wr, "loss", ST_F32, 1, &one, &loss, &t->err);
    if (!s) s = model_add_meta(m, wr, &t->err);
    if (!s) s = st_writer_save(wr, path, &t->err);
    st_writer_destroy(wr);
    return sync_t(t, s);
}

/* ---- checkpoints ---------------------------------------------------------- */

ENV2_API env2_status env2_trainer_save(const env2_trainer *ct, const char *path, const char *user_metadata)
{
    env2_trainer *t = (env2_trainer *)ct;
    if (!t || !path) return fail_t(t, ENV2_E_INVALID_ARG, "env2_trainer_save: NULL argument");
    env2_model *m = t->m;
    size_t per = m->nparams + m->nstats;
    int nsets = t->ema_p ? 4 : 3;
    float *scratch = env2_aligned_alloc((size_t)nsets * per * sizeof(float));
    int64_t *tracked = env2_calloc((size_t)(m->nbn + 1) * 4, sizeof(int64_t));
    st_writer *wr = NULL;
    env2_status s = ENV2_OK;
    if (!scratch || !tracked) s = env2_fail(&t->err, ENV2_E_NOMEM, "out of memory writing the checkpoint");
    if (!s) s = st_writer_create(&wr, &t->err);
    if (!s) s = model_add_meta(m, wr, &t->err);
    if (!s) s = model_add_to_writer(m, wr, "", m->params, m->stats, scratch, tracked, 1, &t->err);
    if (!s) s = model_add_to_writer(m, wr, "optim.s1.", t->s1, m->stats, scratch + per, tracked + m->nbn, 0, &t->err);
    if (!s) s = model_add_to_writer(m, wr, "optim.s2.", t->s2, m->stats, scratch + 2 * per, tracked + 2 * m->nbn, 0, &t->err);
    if (!s && t->ema_p)
        s = model_add_to_writer(m, wr, "ema.", t->ema_p, t->ema_s, scratch + 3 * per, tracked + 3 * m->nbn, 1, &t->err);
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"step\": %lld, \"optimizer\": %d, \"lr\": %.9g, \"dropout\": %.9g, \"drop_path\": %.9g, "
             "\"label_smoothing\": %.9g, \"weight_decay\": %.9g, \"seed\": %llu, \"ema\": %d, \"ema_start\": %lld}",
             (long long)t->step, t->o.optimizer, t->lr, t->dropout, t->drop_path, t->smoothing, t->wd,
             (unsigned long long)t->o.seed, t->ema_p != NULL, (long long)t->ema_start);
    if (!s) s = st_writer_meta(wr, "env2.trainer", buf, &t->err);
    snprintf(buf, sizeof buf, "%lld", (long long)t->step);
    if (!s) s = st_writer_meta(wr, "env2.step", buf, &t->err);
    snprintf(buf, sizeof buf, "%d", t->o.optimizer);
    if (!s) s = st_writer_meta(wr, "env2.optimizer", buf, &t->err);
    if (!s) s = st_writer_meta(wr, "user", user_metadata ? user_metadata : "", &t->err);
    if (!s) s = st_writer_save(wr, path, &t->err);
    st_writer_destroy(wr);
    env2_aligned_free(scratch);
    env2_free(tracked);
    return sync_t(t, s);
}

/* Reads prefix+name for every (trainable, or all with stats) tensor into
 * internal-layout slabs. */
static env2_status read_set(env2_trainer *t, const st_file *f, const char *prefix, float *params, float *stats,
                            int with_stats)
{
    env2_model *m = t->m;
    char name[ENV2_MAX_NAME + 32];
    float *tmp = NULL;
    size_t tmpn = 0;
    env2_status s = ENV2_OK;
    for (int i = 0; i < m->ntensors && !s; i++) {
        const tensor_def *td = &m->tensors[i];
        if (td->is_stat && !with_stats) continue;
        snprintf(name, sizeof name, "%s%s", prefix, td->name);
        const st_tensor *ft = st_find(f, name);
        if (!ft) {
            s = env2_fail(&t->err, ENV2_E_FORMAT, "checkpoint lacks tensor '%s'", name);
            break;
        }
        if ((size_t)td->numel > tmpn) {
            float *nb = env2_realloc(tmp, (size_t)td->numel * sizeof(float));
            if (!nb) {
                s = env2_fail(&t->err, ENV2_E_NOMEM, "out of memory reading the checkpoint");
                break;
            }
            tmp = nb;
            tmpn = (size_t)td->numel;
        }
        int same = ft->ndim == td->ndim;
        for (int d = 0; same && d < td->ndim; d++) same = ft->shape[d] == td->shape[d];
        if (!same) {
            s = env2_fail(&t->err, ENV2_E_SHAPE, "checkpoint tensor '%s' has the wrong shape for this model", name);
            break;
        }
        s = st_read_f32(f, ft, tmp, (size_t)td->numel, &t->err);
        if (!s) tensor_from_torch(m, td, tmp, (td->is_stat ? stats : params) + td->offset);
    }
    env2_free(tmp);
    return s;
}

ENV2_API env2_status env2_trainer_resume(env2_trainer *t, const char *path, char *user, size_t user_len)
{
    if (!t || !path) return fail_t(t, ENV2_E_INVALID_ARG, "env2_trainer_resume: NULL argument");
    env2_model *m = t->m;
    unsigned char *data = NULL;
    size_t len = 0;
    st_file f;
    memset(&f, 0, sizeof f);
    size_t np = m->nparams, ns = m->nstats;
    float *p = NULL, *st = NULL, *s1 = NULL, *s2 = NULL, *ep = NULL, *es = NULL;
    int64_t *tracked = NULL;
    env2_status s = io_read_file(path, &data, &len, &t->err);
    if (!s) s = st_open_memory(&f, data, len, &t->err);
    if (s) goto done;
    const char *arch = st_meta(&f, "env2.arch"), *opt = st_meta(&f, "env2.optimizer"), *stepv = st_meta(&f, "env2.step");
    const char *tr = st_meta(&f, "env2.trainer");
    if (!arch || !opt || !stepv || !tr) {
        s = env2_fail(&t->err, ENV2_E_FORMAT, "not a training checkpoint (metadata env2.arch/env2.step/env2.optimizer missing)");
        goto done;
    }
    if (strcmp(arch, m->arch_string) != 0) {
        s = env2_fail(&t->err, ENV2_E_VERSION, "checkpoint architecture '%s' differs from the model's '%s'", arch,
                      m->arch_string);
        goto done;
    }
    if (atoi(opt) != t->o.optimizer) {
        s = env2_fail(&t->err, ENV2_E_VERSION, "checkpoint optimizer %d differs from the trainer's %d", atoi(opt),
                      t->o.optimizer);
        goto done;
    }
    int has_ema = strstr(tr, "\"ema\": 1") != NULL;
    if (has_ema != (t->ema_p != NULL)) {
        s = env2_fail(&t->err, ENV2_E_VERSION, "checkpoint %s EMA weights but the trainer has EMA %s",
                      has_ema ? "has" : "lacks", t->ema_p ? "on" : "off");
        goto done;
    }
    p = env2_aligned_alloc(np * sizeof(float));
    st = env2_aligned_alloc(ns * sizeof(float));
    s1 = env2_aligned_alloc(np * sizeof(float));
    s2 = env2_aligned_alloc(np * sizeof(float));
    tracked = env2_calloc((size_t)m->nbn + 1, sizeof(int64_t));
    if (has_ema) {
        ep = env2_aligned_alloc(np * sizeof(float));
        es = env2_aligned_alloc(ns * sizeof(float));
    }
    if (!p || !st || !s1 || !s2 || !tracked || (has_ema && (!ep || !es))) {
        s = env2_fail(&t->err, ENV2_E_NOMEM, "out of memory reading the checkpoint");
        goto done;
    }
    if ((s = read_set(t, &f, "", p, st, 1))) goto done;
    if ((s = read_set(t, &f, "optim.s1.", s1, st, 0))) goto done;
    if ((s = read_set(t, &f, "optim.s2.", s2, st, 0))) goto done;
    if (has_ema && (s = read_set(t, &f, "ema.", ep, es, 1))) goto done;
    for (int i = 0, bn = 0; i < m->ntensors; i++) {
        const tensor_def *td = &m->tensors[i];
        if (td->kind != T_BN_MEAN) continue;
        char name[ENV2_MAX_NAME + 32];
        snprintf(name, sizeof name, "%.*snum_batches_tracked", (int)(strlen(td->name) - strlen("running_mean")), td->name);
        const st_tensor *ft = st_find(&f, name);
        if (ft && (s = st_read_i64(&f, ft, &tracked[bn], 1, &t->err))) goto done;
        bn++;
    }
    double lr = t->lr, dropout = t->dropout, dp = t->drop_path, ls = t->smoothing, wd = t->wd;
    long long ema_start = 0; /* checkpoints older than restart_ema have none */
    const char *q;
    if ((q = strstr(tr, "\"ema_start\": "))) ema_start = atoll(q + 13);
    if ((q = strstr(tr, "\"lr\": "))) lr = atof(q + 6);
    if ((q = strstr(tr, "\"dropout\": "))) dropout = atof(q + 11);
    if ((q = strstr(tr, "\"drop_path\": "))) dp = atof(q + 13);
    if ((q = strstr(tr, "\"label_smoothing\": "))) ls = atof(q + 19);
    if ((q = strstr(tr, "\"weight_decay\": "))) wd = atof(q + 16);
    /* everything read and checked: commit */
    memcpy(m->params, p, np * sizeof(float));
    model_params_changed(m);
    memcpy(m->stats, st, ns * sizeof(float));
    memcpy(m->bn_tracked, tracked, (size_t)m->nbn * sizeof(int64_t));
    memcpy(t->s1, s1, np * sizeof(float));
    memcpy(t->s2, s2, np * sizeof(float));
    if (has_ema) {
        memcpy(t->ema_p, ep, np * sizeof(float));
        memcpy(t->ema_s, es, ns * sizeof(float));
    }
    t->step = atoll(stepv);
    t->ema_start = ema_start < 0 || ema_start > t->step ? 0 : ema_start;
    t->lr = (float)lr;
    t->dropout = (float)dropout;
    t->drop_path = (float)dp;
    t->smoothing = (float)ls;
    t->wd = (float)wd;
    if (user && user_len) {
        const char *u = st_meta(&f, "user");
        snprintf(user, user_len, "%s", u ? u : "");
    }
done:
    if (s) env2_err_prefix(&t->err, s, "%s", path);
    st_close(&f);
    env2_free(data);
    env2_aligned_free(p);
    env2_aligned_free(st);
    env2_aligned_free(s1);
    env2_aligned_free(s2);
    env2_aligned_free(ep);
    env2_aligned_free(es);
    env2_free(tracked);
    return sync_t(t, s);
}
