/* Weights as safetensors with torchvision state_dict names.  Loading checks
 * every tensor before touching the model, so a bad file changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "model.h"

static int is_tracked_name(const char *name)
{
    size_t n = strlen(name), k = strlen("num_batches_tracked");
    return n >= k && strcmp(name + n - k, "num_batches_tracked") == 0;
}

static int is_classifier(const tensor_def *t) { return t->kind == T_FC_W || t->kind == T_FC_B; }

/* A checkpoint of env2_trainer_save holds the model under its own names and
 * the optimizer state and EMA average under these prefixes, which no
 * torchvision name starts with. */
static int is_trainer_state(const char *name)
{
    return strncmp(name, "optim.", 6) == 0 || strncmp(name, "ema.", 4) == 0;
}

env2_status model_load_st(env2_model *m, const void *data, size_t len, uint32_t flags, env2_err *e)
{
    st_file f;
    memset(&f, 0, sizeof f);
    env2_status s = st_open_memory(&f, data, len, e);
    if (s) return s;
    float *np = NULL, *ns = NULL;
    int64_t *tracked = NULL;
    int skip_fc = (flags & ENV2_LOAD_SKIP_CLASSIFIER) != 0;
    const char *prefix = (flags & ENV2_LOAD_EMA) ? "ema." : "";
    char fname[ENV2_MAX_NAME + 40];

    /* every file tensor must be known: catches loading weights of another
     * architecture whose names happen to overlap */
    for (int i = 0; i < f.count; i++) {
        const char *name = f.tensors[i].name;
        int known = is_trainer_state(name);
        for (int j = 0; j < m->ntensors && !known; j++) known = strcmp(m->tensors[j].name, name) == 0;
        if (!known && is_tracked_name(name)) {
            char base[ENV2_MAX_NAME + 32];
            snprintf(base, sizeof base, "%.*srunning_mean", (int)(strlen(name) - strlen("num_batches_tracked")), name);
            for (int j = 0; j < m->ntensors && !known; j++) known = strcmp(m->tensors[j].name, base) == 0;
        }
        if (!known) {
            s = env2_fail(e, ENV2_E_NOT_FOUND, "tensor '%s' in the file does not belong to this model (%s)", name,
                          m->arch.name);
            goto done;
        }
    }
    if (*prefix && m->ntensors > 0) {
        snprintf(fname, sizeof fname, "%s%s", prefix, m->tensors[0].name);
        if (!st_find(&f, fname)) {
            s = env2_fail(e, ENV2_E_NOT_FOUND, "the file has no EMA weights (no tensor '%s'): it is not a checkpoint "
                          "of a trainer with an EMA", fname);
            goto done;
        }
    }
    np = env2_aligned_alloc(m->nparams * sizeof(float));
    ns = env2_aligned_alloc(m->nstats * sizeof(float));
    tracked = env2_calloc((size_t)m->nbn + 1, sizeof(int64_t));
    float *tmp = NULL;
    size_t tmpn = 0;
    if (!np || !ns || !tracked) {
        s = env2_fail(e, ENV2_E_NOMEM, "out of memory loading weights");
        goto done;
    }
    memcpy(np, m->params, m->nparams * sizeof(float));
    memcpy(ns, m->stats, m->nstats * sizeof(float));
    memcpy(tracked, m->bn_tracked, (size_t)m->nbn * sizeof(int64_t));
    for (int j = 0; j < m->ntensors; j++) {
        const tensor_def *t = &m->tensors[j];
        if (skip_fc && is_classifier(t)) continue;
        snprintf(fname, sizeof fname, "%s%s", prefix, t->name);
        const st_tensor *ft = st_find(&f, fname);
        if (!ft) {
            s = env2_fail(e, ENV2_E_NOT_FOUND, "tensor '%s' is missing from the file", fname);
            break;
        }
        int same = ft->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = ft->shape[d] == t->shape[d];
        if (!same) {
            char want[64], got[64];
            int o = 0;
            for (int d = 0; d < t->ndim; d++) o += snprintf(want + o, sizeof want - (size_t)o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            want[o] = 0;
            o = 0;
            got[0] = 0;
            for (int d = 0; d < ft->ndim && o < 50; d++) o += snprintf(got + o, sizeof got - (size_t)o, "%s%lld", d ? "," : "", (long long)ft->shape[d]);
            s = env2_fail(e, ENV2_E_SHAPE, "tensor '%s' has shape [%s], the model needs [%s]", t->name, got, want);
            break;
        }
        if ((size_t)t->numel > tmpn) {
            float *nt = env2_realloc(tmp, (size_t)t->numel * sizeof(float));
            if (!nt) {
                s = env2_fail(e, ENV2_E_NOMEM, "out of memory loading '%s'", t->name);
                break;
            }
            tmp = nt;
            tmpn = (size_t)t->numel;
        }
        s = st_read_f32(&f, ft, tmp, (size_t)t->numel, e);
        if (s) {
            env2_err_prefix(e, s, "tensor '%s'", t->name);
            break;
        }
        tensor_from_torch(m, t, tmp, (t->is_stat ? ns : np) + t->offset);
    }
    env2_free(tmp);
    if (s) goto done;
    /* num_batches_tracked is optional (timm exports lack it) */
    for (int j = 0, bn = 0; j < m->ntensors; j++) {
        const tensor_def *t = &m->tensors[j];
        if (t->kind != T_BN_MEAN) continue;
        char name[ENV2_MAX_NAME + 32];
        snprintf(name, sizeof name, "%s%.*snum_batches_tracked", prefix, (int)(strlen(t->name) - strlen("running_mean")),
                 t->name);
        const st_tensor *ft = st_find(&f, name);
        if (ft) {
            int64_t v;
            s = st_read_i64(&f, ft, &v, 1, e);
            if (s) {
                env2_err_prefix(e, s, "tensor '%s'", name);
                goto done;
            }
            tracked[bn] = v;
        }
        bn++;
    }
    memcpy(m->params, np, m->nparams * sizeof(float));
    model_params_changed(m);
    memcpy(m->stats, ns, m->nstats * sizeof(float));
    memcpy(m->bn_tracked, tracked, (size_t)m->nbn * sizeof(int64_t));
done:
    env2_aligned_free(np);
    env2_aligned_free(ns);
    env2_free(tracked);
    st_close(&f);
    return s;
}

env2_status model_add_meta(const env2_model *m, st_writer *w, env2_err *e)
{
    char buf[64];
    env2_status s;
    if ((s = st_writer_meta(w, "format", "pt", e))) return s;
    if ((s = st_writer_meta(w, "env2.version", ENV2_VERSION_STRING, e))) return s;
    if ((s = st_writer_meta(w, "env2.variant", m->arch.name, e))) return s;
    if ((s = st_writer_meta(w, "env2.arch", m->arch_string, e))) return s;
#define META_INT(key, v) \
    snprintf(buf, sizeof buf, "%d", (int)(v)); \
    if ((s = st_writer_meta(w, key, buf, e))) return s;
    META_INT("env2.stem", m->arch.stem);
    META_INT("env2.head", m->arch.head);
    META_INT("env2.num_classes", m->classes);
    META_INT("env2.in_channels", m->in_ch);
#undef META_INT
    if ((s = st_writer_meta(w, "env2.padding", m->padding == ENV2_PAD_SAME ? "same" : "symmetric", e))) return s;
    snprintf(buf, sizeof buf, "%.9g", m->bn_eps);
    if ((s = st_writer_meta(w, "env2.bn_eps", buf, e))) return s;
    snprintf(buf, sizeof buf, "%.9g", m->dropout);
    if ((s = st_writer_meta(w, "env2.dropout", buf, e))) return s;
    return ENV2_OK;
}

env2_status model_add_to_writer(const env2_model *m, st_writer *w, const char *prefix, const float *params,
                                const float *stats, float *scratch, int64_t *tracked, int with_stats, env2_err *e)
{
    char name[ENV2_MAX_NAME + 64];
    float *out = scratch;
    int bn = 0;
    for (int j = 0; j < m->ntensors; j++) {
        const tensor_def *t = &m->tensors[j];
        if (t->is_stat && !with_stats) continue;
        tensor_to_torch(m, t, (t->is_stat ? stats : params) + t->offset, out);
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        env2_status s = st_writer_add(w, name, ST_F32, t->ndim, t->shape, out, e);
        if (s) return s;
        out += t->numel;
        if (t->kind == T_BN_VAR && with_stats) {
            snprintf(name, sizeof name, "%s%.*snum_batches_tracked", prefix,
                     (int)(strlen(t->name) - strlen("running_var")), t->name);
            tracked[bn] = m->bn_tracked[bn];
            s = st_writer_add(w, name, ST_I64, 0, NULL, &tracked[bn], e);
            if (s) return s;
            bn++;
        }
    }
    return ENV2_OK;
}
