/* Public API, model part: argument checks, error text, handle bookkeeping.
 * Everything below validates and then calls into src/model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "model/model.h"
#include "profile.h"

/* Records a failure for both the thread (env2_last_error) and the handle. */
static env2_status fail_m(env2_model *m, env2_status code, const char *fmt, ...) ENV2_PRINTF(3, 4);
static env2_status fail_m(env2_model *m, env2_status code, const char *fmt, ...)
{
    env2_err *t = env2_tls_err();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    if (m) memcpy(&m->err, t, sizeof *t);
    return code;
}

/* After an internal call that wrote into m->err: mirror it to the thread. */
static env2_status sync_m(env2_model *m, env2_status s)
{
    if (s && m) memcpy(env2_tls_err(), &m->err, sizeof m->err);
    return s;
}

ENV2_API unsigned env2_version_number(void) { return ENV2_VERSION_NUMBER; }
ENV2_API const char *env2_version_string(void) { return ENV2_VERSION_STRING; }

ENV2_API const char *env2_build_info(void)
{
    static char buf[160];
    snprintf(buf, sizeof buf, "%s threads=%s simd=%s (detected %s)", ENV2_VERSION_STRING, env2_par_backend(),
             k_simd_name(k_simd_level()), k_simd_name(k_simd_detect()));
    return buf;
}

ENV2_API const char *env2_status_string(env2_status s)
{
    switch (s) {
    case ENV2_OK: return "ok";
    case ENV2_E_INVALID_ARG: return "invalid argument";
    case ENV2_E_NOMEM: return "out of memory";
    case ENV2_E_IO: return "input/output error";
    case ENV2_E_FORMAT: return "malformed data";
    case ENV2_E_SHAPE: return "shape mismatch";
    case ENV2_E_DTYPE: return "unsupported data type";
    case ENV2_E_NOT_FOUND: return "not found";
    case ENV2_E_UNSUPPORTED: return "unsupported";
    case ENV2_E_NUMERIC: return "NaN or Inf encountered";
    case ENV2_E_VERSION: return "incompatible version";
    case ENV2_E_STATE: return "invalid state";
    }
    return "unknown status";
}

ENV2_API const char *env2_last_error(void) { return env2_tls_err()->msg; }



ENV2_API void env2_model_options_init(env2_model_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->num_classes = 1000;
    o->in_channels = 3;
    o->width_mult = 1.0f;
    o->depth_mult = 1.0f;
    o->padding = ENV2_PAD_SYMMETRIC;
    o->bn_eps = 1e-3f;
    o->bn_momentum = 0.1f;
    o->dropout = -1.0f;
    o->drop_path_rate = -1.0f;
    o->winograd = 1;
}

ENV2_API env2_status env2_model_create(env2_model **out, const char *arch, const env2_model_options *user)
{
    env2_model_options o;
    env2_err *te = env2_tls_err();
    if (out) *out = NULL;
    if (!out || !arch) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_create: NULL %s", out ? "arch" : "out");
    env2_model_options_init(&o);
    if (user) {
        if (user->struct_size < offsetof(env2_model_options, num_threads) + sizeof(int32_t) ||
            user->struct_size > sizeof o)
            return fail_m(NULL, ENV2_E_VERSION, "env2_model_options.struct_size %u is not one this library knows (%zu)",
                          user->struct_size, sizeof o);
        memcpy(&o, user, user->struct_size);
    }
    if (o.num_classes < 1 || o.num_classes > 1000000)
        return fail_m(NULL, ENV2_E_INVALID_ARG, "num_classes %d out of range 1..1000000", o.num_classes);
    if (o.in_channels < 1 || o.in_channels > 64)
        return fail_m(NULL, ENV2_E_INVALID_ARG, "in_channels %d out of range 1..64", o.in_channels);
    if (o.padding != ENV2_PAD_SYMMETRIC && o.padding != ENV2_PAD_SAME)
        return fail_m(NULL, ENV2_E_INVALID_ARG, "padding %d is neither ENV2_PAD_SYMMETRIC nor ENV2_PAD_SAME", o.padding);
    if (!(o.bn_eps > 0 && o.bn_eps < 1)) return fail_m(NULL, ENV2_E_INVALID_ARG, "bn_eps must be in (0, 1)");
    if (!(o.bn_momentum >= 0 && o.bn_momentum <= 1))
        return fail_m(NULL, ENV2_E_INVALID_ARG, "bn_momentum must be in [0, 1]");
    if (!(o.width_mult > 0) || !(o.depth_mult > 0))
        return fail_m(NULL, ENV2_E_INVALID_ARG, "width_mult and depth_mult must be positive");
    if (o.dropout >= 1 || o.drop_path_rate >= 1 || isnan(o.dropout) || isnan(o.drop_path_rate))
        return fail_m(NULL, ENV2_E_INVALID_ARG, "dropout and drop_path_rate must be below 1");
    if (o.num_threads < 0 || o.num_threads > 1024)
        return fail_m(NULL, ENV2_E_INVALID_ARG, "num_threads %d out of range 0..1024", o.num_threads);
    if (o.winograd != 0 && o.winograd != 1)
        return fail_m(NULL, ENV2_E_INVALID_ARG, "winograd %d is neither 0 nor 1", o.winograd);
    if (o.stem_channels < 0 || o.head_channels < 0)
        return fail_m(NULL, ENV2_E_INVALID_ARG, "stem_channels/head_channels must be >= 0");

    env2_model *m = env2_calloc(1, sizeof *m);
    if (!m) return fail_m(NULL, ENV2_E_NOMEM, "out of memory creating the model");
    env2_status s = arch_resolve(&m->arch, arch, o.width_mult, o.depth_mult, o.stem_channels, o.head_channels, te);
    if (!s)
        for (int i = 0; i < m->arch.nstages; i++)
            if (m->arch.st[i].fused && m->arch.st[i].se_ratio > 0) {
                s = env2_fail(te, ENV2_E_UNSUPPORTED, "stage %d: squeeze-excite in a Fused-MBConv stage has no "
                              "torchvision equivalent and is not supported", i + 1);
                break;
            }
    if (s) {
        env2_free(m);
        return s;
    }
    arch_to_string(&m->arch, m->arch_string, sizeof m->arch_string);
    m->classes = o.num_classes;
    m->in_ch = o.in_channels;
    m->padding = o.padding;
    m->bn_eps = o.bn_eps;
    m->bn_momentum = o.bn_momentum;
    m->dropout = o.dropout >= 0 ? o.dropout : m->arch.dropout;
    m->drop_path = o.drop_path_rate >= 0 ? o.drop_path_rate : 0.2f;
    m->seed = o.seed;
    m->nthreads = o.num_threads;
    m->winograd = o.winograd;
    s = model_build(m, te);
    if (s) {
        model_free_contents(m);
        env2_free(m);
        return s;
    }
    *out = m;
    return ENV2_OK;
}

ENV2_API void env2_model_destroy(env2_model *m)
{
    if (!m) return;
    model_free_contents(m);
    env2_free(m);
}

ENV2_API const char *env2_model_last_error(const env2_model *m) { return m ? m->err.msg : ""; }

ENV2_API size_t env2_model_output_size(const env2_model *m, int32_t n)
{
    if (!m || n < 0) return 0;
    return (size_t)n * (size_t)m->classes;
}

ENV2_API int64_t env2_model_num_params(const env2_model *m) { return m ? (int64_t)m->param_count : 0; }
ENV2_API int32_t env2_model_num_classes(const env2_model *m) { return m ? m->classes : 0; }
ENV2_API int32_t env2_model_in_channels(const env2_model *m) { return m ? m->in_ch : 0; }
ENV2_API int32_t env2_model_train_size(const env2_model *m) { return m ? m->arch.train_size : 0; }
ENV2_API int32_t env2_model_eval_size(const env2_model *m) { return m ? m->arch.eval_size : 0; }
ENV2_API const char *env2_model_arch(const env2_model *m) { return m ? m->arch.name : ""; }
ENV2_API int32_t env2_model_num_stages(const env2_model *m) { return m ? m->arch.nstages : 0; }
ENV2_API int32_t env2_model_stem_channels(const env2_model *m) { return m ? m->arch.stem : 0; }
ENV2_API int32_t env2_model_head_channels(const env2_model *m) { return m ? m->arch.head : 0; }

ENV2_API env2_status env2_model_stage(const env2_model *m, int32_t i, int32_t *fused, int32_t *repeats,
                                      int32_t *kernel, int32_t *stride, int32_t *expand, int32_t *in_ch,
                                      int32_t *out_ch, int32_t *se_channels)
{
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_stage: NULL model");
    if (i < 0 || i >= m->arch.nstages)
        return fail_m((env2_model *)m, ENV2_E_INVALID_ARG, "stage %d out of range 0..%d", i, m->arch.nstages - 1);
    const stage_def *st = &m->arch.st[i];
    if (fused) *fused = st->fused;
    if (repeats) *repeats = st->repeats;
    if (kernel) *kernel = st->kernel;
    if (stride) *stride = st->stride;
    if (expand) *expand = st->expand;
    if (in_ch) *in_ch = st->in;
    if (out_ch) *out_ch = st->out;
    if (se_channels) {
        int se = st->se_ratio > 0 ? (int)(st->in * st->se_ratio) : 0;
        *se_channels = st->se_ratio > 0 && se < 1 ? 1 : se;
    }
    return ENV2_OK;
}

static int64_t conv_macs(const convbn *c, int ho, int wo)
{
    int64_t per = c->kind == T_DW ? (int64_t)c->k * c->k : (int64_t)c->k * c->k * c->ci;
    return per * c->co * ho * wo;
}

ENV2_API env2_status env2_model_macs(const env2_model *m, int32_t h, int32_t w, int64_t *macs)
{
    if (!m || !macs) return fail_m((env2_model *)m, ENV2_E_INVALID_ARG, "env2_model_macs: NULL argument");
    if (h < 1 || w < 1 || h > 4096 || w > 4096)
        return fail_m((env2_model *)m, ENV2_E_INVALID_ARG, "image size %dx%d out of range 1..4096", h, w);
    int64_t t = 0;
    h = conv_out(h, 3, 2);
    w = conv_out(w, 3, 2);
    t += conv_macs(&m->stem, h, w);
    for (int b = 0; b < m->nblocks; b++) {
        const block_def *bl = &m->blocks[b];
        for (int i = 0; i < bl->ncb; i++) {
            const convbn *c = &bl->cb[i];
            h = conv_out(h, c->k, c->stride);
            w = conv_out(w, c->k, c->stride);
            t += conv_macs(c, h, w);
            if (c->kind == T_DW && bl->se) t += 2 * (int64_t)bl->mid * bl->se;
        }
    }
    t += conv_macs(&m->head, h, w);
    t += (int64_t)m->arch.head * m->classes;
    *macs = t;
    return ENV2_OK;
}

ENV2_API env2_status env2_model_set_threads(env2_model *m, int32_t n)
{
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_set_threads: NULL model");
    if (n < 0 || n > 1024) return fail_m(m, ENV2_E_INVALID_ARG, "thread count %d out of range 0..1024", n);
    m->nthreads = n;
    return ENV2_OK;
}

ENV2_API int32_t env2_model_threads(const env2_model *m) { return m ? model_threads(m) : 0; }

/* Checks shared by env2_forward and the trainer's entry points. */
env2_status api_check_images(env2_model *m, const float *images, int32_t n, int32_t h, int32_t w, env2_layout layout,
                             const void *out, env2_err *e)
{
    if (!images || !out) return env2_fail(e, ENV2_E_INVALID_ARG, "NULL %s buffer", images ? "output" : "images");
    if (n < 1 || n > 65536) return env2_fail(e, ENV2_E_INVALID_ARG, "batch size %d out of range 1..65536", n);
    if (h < 1 || w < 1 || h > 4096 || w > 4096)
        return env2_fail(e, ENV2_E_INVALID_ARG, "image size %dx%d out of range 1..4096", h, w);
    if (layout != ENV2_LAYOUT_NCHW && layout != ENV2_LAYOUT_NHWC)
        return env2_fail(e, ENV2_E_INVALID_ARG, "layout %d is neither NCHW nor NHWC", (int)layout);
    if ((double)n * h * w * (m->in_ch > m->arch.head ? m->in_ch : m->arch.head) > 4e9)
        return env2_fail(e, ENV2_E_INVALID_ARG, "batch %d of %dx%d images is too large", n, h, w);
    return ENV2_OK;
}

/* NCHW input is converted into a buffer the model keeps between calls. */
static env2_status to_nhwc(env2_model *m, const float *images, int n, int h, int w, env2_layout layout,
                           const float **x)
{
    if (layout == ENV2_LAYOUT_NHWC) {
        *x = images;
        return ENV2_OK;
    }
    size_t need = (size_t)n * h * w * m->in_ch;
    if (need > m->in_floats) {
        float *b = env2_aligned_alloc(need * sizeof(float));
        if (!b) return env2_fail(&m->err, ENV2_E_NOMEM, "out of memory converting the input to NHWC");
        env2_aligned_free(m->inbuf);
        m->inbuf = b;
        m->in_floats = need;
    }
    PROF(PROF_LAYOUT, k_nchw_to_nhwc(model_threads(m), n, m->in_ch, h, w, images, m->inbuf));
    *x = m->inbuf;
    return ENV2_OK;
}

env2_status api_model_forward(env2_model *m, const float *params, const float *stats, const float *images, int32_t n,
                              int32_t h, int32_t w, env2_layout layout, float *logits)
{
    const float *x = NULL;
    env2_status s = api_check_images(m, images, n, h, w, layout, logits, &m->err);
    if (!s) s = to_nhwc(m, images, n, h, w, layout, &x);
    if (!s) s = model_forward_nhwc(m, params, stats, x, n, h, w, logits, &m->err);
    return sync_m(m, s);
}

ENV2_API env2_status env2_forward(env2_model *m, const float *images, int32_t n, int32_t h, int32_t w,
                                  env2_layout layout, float *logits)
{
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_forward: NULL model");
    return api_model_forward(m, m->params, m->stats, images, n, h, w, layout, logits);
}

ENV2_API env2_status env2_model_load_memory(env2_model *m, const void *data, size_t len, uint32_t flags)
{
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_load_memory: NULL model");
    if (!data) return fail_m(m, ENV2_E_INVALID_ARG, "env2_model_load_memory: NULL data");
    if (flags & ~(uint32_t)(ENV2_LOAD_SKIP_CLASSIFIER | ENV2_LOAD_EMA)) return fail_m(m, ENV2_E_INVALID_ARG, "unknown load flags 0x%x", flags);
    return sync_m(m, model_load_st(m, data, len, flags, &m->err));
}

ENV2_API env2_status env2_model_load(env2_model *m, const char *path, uint32_t flags)
{
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_load: NULL model");
    if (!path) return fail_m(m, ENV2_E_INVALID_ARG, "env2_model_load: NULL path");
    unsigned char *data = NULL;
    size_t len = 0;
    env2_status s = io_read_file(path, &data, &len, &m->err);
    if (!s) {
        s = env2_model_load_memory(m, data, len, flags);
        if (s) env2_err_prefix(&m->err, s, "%s", path);
    }
    env2_free(data);
    return sync_m(m, s);
}

static env2_status build_writer(const env2_model *m, st_writer **wp, float **scratch, int64_t **tracked, env2_err *e)
{
    *scratch = env2_aligned_alloc((m->nparams + m->nstats) * sizeof(float));
    *tracked = env2_calloc((size_t)m->nbn + 1, sizeof(int64_t));
    if (!*scratch || !*tracked) return env2_fail(e, ENV2_E_NOMEM, "out of memory saving the model");
    env2_status s = st_writer_create(wp, e);
    if (!s) s = model_add_meta(m, *wp, e);
    if (!s) s = model_add_to_writer(m, *wp, "", m->params, m->stats, *scratch, *tracked, 1, e);
    return s;
}

ENV2_API env2_status env2_model_save(const env2_model *cm, const char *path)
{
    env2_model *m = (env2_model *)cm;
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_save: NULL model");
    if (!path) return fail_m(m, ENV2_E_INVALID_ARG, "env2_model_save: NULL path");
    st_writer *w = NULL;
    float *scratch = NULL;
    int64_t *tracked = NULL;
    env2_status s = build_writer(m, &w, &scratch, &tracked, &m->err);
    if (!s) s = st_writer_save(w, path, &m->err);
    st_writer_destroy(w);
    env2_aligned_free(scratch);
    env2_free(tracked);
    return sync_m(m, s);
}

ENV2_API env2_status env2_model_save_memory(const env2_model *cm, void **data, size_t *len)
{
    env2_model *m = (env2_model *)cm;
    if (!m) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_save_memory: NULL model");
    if (!data || !len) return fail_m(m, ENV2_E_INVALID_ARG, "env2_model_save_memory: NULL output");
    st_writer *w = NULL;
    float *scratch = NULL;
    int64_t *tracked = NULL;
    env2_status s = build_writer(m, &w, &scratch, &tracked, &m->err);
    if (!s) s = st_writer_to_memory(w, data, len, &m->err);
    st_writer_destroy(w);
    env2_aligned_free(scratch);
    env2_free(tracked);
    return sync_m(m, s);
}

ENV2_API env2_status env2_model_create_from_file(env2_model **out, const char *path, const env2_model_options *user)
{
    env2_err *te = env2_tls_err();
    if (out) *out = NULL;
    if (!out || !path) return fail_m(NULL, ENV2_E_INVALID_ARG, "env2_model_create_from_file: NULL argument");
    unsigned char *data = NULL;
    size_t len = 0;
    st_file f;
    memset(&f, 0, sizeof f);
    env2_status s = io_read_file(path, &data, &len, te);
    if (!s) s = st_open_memory(&f, data, len, te);
    if (s) {
        env2_err_prefix(te, s, "%s", path);
        env2_free(data);
        return s;
    }
    env2_model_options o;
    env2_model_options_init(&o);
    if (user && user->struct_size <= sizeof o && user->struct_size >= sizeof(uint32_t)) memcpy(&o, user, user->struct_size);
    const char *arch = st_meta(&f, "env2.arch"), *v;
    if (!arch) {
        s = env2_fail(te, ENV2_E_NOT_FOUND, "%s has no env2.arch metadata (not written by libefficientnetv2): create "
                      "the model by name and use env2_model_load", path);
        goto done;
    }
    const char *variant = st_meta(&f, "env2.variant");
    if ((v = st_meta(&f, "env2.stem"))) o.stem_channels = atoi(v);
    if ((v = st_meta(&f, "env2.head"))) o.head_channels = atoi(v);
    if ((v = st_meta(&f, "env2.num_classes"))) o.num_classes = atoi(v);
    if ((v = st_meta(&f, "env2.in_channels"))) o.in_channels = atoi(v);
    if ((v = st_meta(&f, "env2.padding"))) o.padding = strcmp(v, "same") == 0 ? ENV2_PAD_SAME : ENV2_PAD_SYMMETRIC;
    if ((v = st_meta(&f, "env2.bn_eps"))) o.bn_eps = (float)atof(v);
    if ((v = st_meta(&f, "env2.dropout"))) o.dropout = (float)atof(v);
    o.width_mult = o.depth_mult = 1.0f; /* the stored stage strings are already scaled */
    /* a named variant keeps its name and default sizes when the stored
     * stages are exactly that variant's; otherwise the stage strings rule */
    s = ENV2_E_NOT_FOUND;
    if (variant && strcmp(variant, "custom") != 0) {
        env2_model_options ov = o;
        ov.stem_channels = ov.head_channels = 0;
        s = env2_model_create(out, variant, &ov);
        if (!s && (strcmp((*out)->arch_string, arch) != 0 || (*out)->arch.head != o.head_channels)) {
            env2_model_destroy(*out);
            *out = NULL;
            s = ENV2_E_NOT_FOUND;
        }
    }
    if (s) s = env2_model_create(out, arch, &o);
    if (!s) {
        s = model_load_st(*out, data, len, 0, te);
        if (s) {
            env2_err_prefix(te, s, "%s", path);
            env2_model_destroy(*out);
            *out = NULL;
        }
    }
done:
    st_close(&f);
    env2_free(data);
    return s;
}
