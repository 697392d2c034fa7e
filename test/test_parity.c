/* Parity with torchvision on the committed fixtures (test/data/<name>.safetensors,
 * written by tools/make_fixtures.py): eval logits at several sizes and batch
 * sizes, the gradient of every parameter, BN running statistics after one
 * training forward, and 5-step trajectories of SGD, SGD-Nesterov, AdamW and
 * TF-RMSProp.  Every figure is checked relative to the reference's scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "efficientnetv2.h"
#include "harness.h"
#include "io/io.h"
#include "kernels/kernels.h"

#ifndef FIXTURE_DIR
#define FIXTURE_DIR "test/data"
#endif

static st_file F;
static const char *fixture;

static float *get(const char *name, int64_t *numel)
{
    const st_tensor *t = st_find(&F, name);
    if (!t) {
        fprintf(stderr, "%s: fixture lacks %s\n", fixture, name);
        return NULL;
    }
    int64_t n = st_numel(t);
    float *d = malloc((size_t)(n ? n : 1) * sizeof(float));
    env2_err e;
    if (t->dtype == ST_I64) {
        int64_t *tmp = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        st_read_i64(&F, t, tmp, (size_t)n, &e);
        for (int64_t i = 0; i < n; i++) d[i] = (float)tmp[i];
        free(tmp);
    } else if (st_read_f32(&F, t, d, (size_t)n, &e) != ENV2_OK) {
        free(d);
        return NULL;
    }
    if (numel) *numel = n;
    return d;
}

static const st_tensor *shape_of(const char *name) { return st_find(&F, name); }

/* The model's state dict out of the fixture (without the reference tensors),
 * as a safetensors buffer for env2_model_load_memory. */
static int load_winograd = 1; /* env2_model_options.winograd of load_model */
static env2_model *load_model(void)
{
    env2_model_options o;
    env2_model_options_init(&o);
    o.winograd = load_winograd;
    const char *v;
    if ((v = st_meta(&F, "num_classes"))) o.num_classes = atoi(v);
    if ((v = st_meta(&F, "in_channels"))) o.in_channels = atoi(v);
    if ((v = st_meta(&F, "head"))) o.head_channels = atoi(v);
    if ((v = st_meta(&F, "stem"))) o.stem_channels = atoi(v);
    if ((v = st_meta(&F, "padding"))) o.padding = strcmp(v, "same") == 0 ? ENV2_PAD_SAME : ENV2_PAD_SYMMETRIC;
    o.dropout = 0;
    o.drop_path_rate = 0;
    env2_model *m = NULL;
    if (env2_model_create(&m, st_meta(&F, "arch"), &o) != ENV2_OK) {
        fprintf(stderr, "%s: %s\n", fixture, env2_last_error());
        return NULL;
    }
    st_writer *w = NULL;
    env2_err e;
    st_writer_create(&w, &e);
    for (int i = 0; i < F.count; i++) {
        const st_tensor *t = &F.tensors[i];
        if (strncmp(t->name, "features.", 9) && strncmp(t->name, "classifier.", 11)) continue;
        st_writer_add(w, t->name, (st_dtype)t->dtype, t->ndim, t->shape, F.buf + F.data_start + t->offset, &e);
    }
    void *buf = NULL;
    size_t len = 0;
    st_writer_to_memory(w, &buf, &len, &e);
    st_writer_destroy(w);
    env2_status s = env2_model_load_memory(m, buf, len, 0);
    CHECK_MSG(s == ENV2_OK, "%s: load: %s", fixture, env2_last_error());
    env2_free(buf);
    return m;
}

static void check_eval(env2_model *m)
{
    const char *tags = st_meta(&F, "eval_tags");
    CHECK(tags != NULL);
    if (!tags) return;
    char list[512];
    snprintf(list, sizeof list, "%s", tags);
    int count = 0;
    for (char *save = NULL, *tag = strtok_r(list, ",", &save); tag; tag = strtok_r(NULL, ",", &save)) {
        char name[128];
        snprintf(name, sizeof name, "eval.%s.input", tag);
        const st_tensor *ti = shape_of(name);
        if (!ti) continue;
        float *x = get(name, NULL);
        snprintf(name, sizeof name, "eval.%s.logits", tag);
        int64_t nl;
        float *ref = get(name, &nl);
        int n = (int)ti->shape[0], h = (int)ti->shape[2], w = (int)ti->shape[3];
        float *y = malloc((size_t)nl * sizeof(float));
        for (int threads = 1; threads <= 2; threads++) {
            env2_model_set_threads(m, threads);
            CHECK_EQ_INT(env2_forward(m, x, n, h, w, ENV2_LAYOUT_NCHW, y), ENV2_OK);
            double rel = test_max_rel_diff(y, ref, nl);
            CHECK_MSG(rel <= 1e-4, "%s eval %s (threads %d): max |diff| = %.3g of max |logit|", fixture, tag, threads, rel);
        }
        count++;
        free(x);
        free(ref);
        free(y);
    }
    CHECK_MSG(count >= 4, "%s: only %d eval cases", fixture, count);
}

/* max |a - b| relative to max(max |b|, floor).  A BN bias whose only path
 * to the loss runs into another batch norm has a gradient that is zero in
 * exact arithmetic; both sides then hold rounding noise, so such tensors are
 * judged against 1e-3 of the largest gradient in the model instead. */
static float *model_tensor(env2_model *m, const char *name, int64_t *cnt, st_file *saved);

static double rel_to_floor(const float *a, const float *b, int64_t n, double floor)
{
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / (mb > floor ? mb : floor);
}

/* largest |gradient| over all grad.* tensors of the fixture */
static double grad_scale(void)
{
    double mx = 0;
    for (int i = 0; i < F.count; i++) {
        if (strncmp(F.tensors[i].name, "grad.", 5)) continue;
        int64_t n;
        float *g = get(F.tensors[i].name, &n);
        for (int64_t k = 0; g && k < n; k++)
            if (fabs(g[k]) > mx) mx = fabs(g[k]);
        free(g);
    }
    return mx * 1e-3;
}

/* tensors whose reference gradient is below that floor everywhere */
static int structurally_zero(const char *name, double floor)
{
    char g[200];
    snprintf(g, sizeof g, "grad.%s", name);
    if (!st_find(&F, g)) return 0;
    int64_t n;
    float *v = get(g, &n);
    double mx = 0;
    for (int64_t k = 0; v && k < n; k++)
        if (fabs(v[k]) > mx) mx = fabs(v[k]);
    free(v);
    return mx < floor * 1e-3;
}

static void check_grads(env2_model *m)
{
    const st_tensor *ti = shape_of("train.input");
    if (!ti) return;
    int n = (int)ti->shape[0], h = (int)ti->shape[2], w = (int)ti->shape[3];
    float *x = get("train.input", NULL), *lf = get("train.labels", NULL), *rloss = get("train.loss", NULL);
    int32_t *labels = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) labels[i] = (int32_t)lf[i];
    env2_trainer_options to;
    env2_trainer *t = NULL;
    int64_t np = env2_model_num_params(m);
    float *g = malloc((size_t)np * sizeof(float)), *g_kept = malloc((size_t)np * sizeof(float)), loss = 0;
    /* backward reading recomputed layer outputs (keep_activations 0) against
     * torch; then kept ones (1), which must give the same bits */
    for (int keep = 0; keep <= 1; keep++) {
        env2_trainer_options_init(&to);
        to.label_smoothing = 0.1f;
        to.keep_activations = keep;
        CHECK_EQ_INT(env2_trainer_create(&t, m, &to), ENV2_OK);
        CHECK_EQ_INT(env2_trainer_gradients(t, x, n, h, w, ENV2_LAYOUT_NCHW, labels, NULL, &loss, keep ? g_kept : g),
                     ENV2_OK);
        if (keep) {
            CHECK_MSG(memcmp(g, g_kept, (size_t)np * sizeof(float)) == 0,
                      "%s: gradients with kept activations differ from recomputed ones", fixture);
            env2_trainer_destroy(t);
            break;
        }
        CHECK_MSG(fabs(loss - rloss[0]) <= 1e-5 * fabs(rloss[0]) + 1e-6, "%s: loss %.8f vs torch %.8f", fixture, loss, rloss[0]);
        /* gradients come in state-dict order of the trainable tensors */
        const float *p = g;
        double gscale = grad_scale();
        int checked = 0;
        double worst = 0;
        char worst_name[128] = "";
        /* the fixture's state dict is in torchvision order, which is also the
         * order of env2_trainer_gradients */
        for (int i = 0; i < F.count; i++) {
            const st_tensor *ft = &F.tensors[i];
            const char *nm = ft->name;
            if (strncmp(nm, "features.", 9) && strncmp(nm, "classifier.", 11)) continue;
            size_t L = strlen(nm);
            if ((L > 12 && !strcmp(nm + L - 12, "running_mean")) || (L > 11 && !strcmp(nm + L - 11, "running_var")) ||
                (L > 19 && !strcmp(nm + L - 19, "num_batches_tracked")))
                continue;
            char gname[160];
            snprintf(gname, sizeof gname, "grad.%s", nm);
            int64_t cnt;
            float *ref = get(gname, &cnt);
            if (!ref) {
                CHECK_MSG(0, "%s: missing %s", fixture, gname);
                p += st_numel(ft);
                continue;
            }
            double rel = rel_to_floor(p, ref, cnt, gscale);
            if (rel > worst) {
                worst = rel;
                snprintf(worst_name, sizeof worst_name, "%s", nm);
            }
            checked++;
            p += cnt;
            free(ref);
        }
        CHECK_MSG(p - g == np, "%s: gradient count %lld vs %lld", fixture, (long long)(p - g), (long long)np);
        CHECK_MSG(worst <= 1e-4, "%s: worst gradient %s off by %.3g of its max", fixture, worst_name, worst);
        CHECK(checked > 10);
        env2_trainer_destroy(t);
    }
    free(g_kept);

    /* BN running statistics after one training forward (momentum 0.1,
     * unbiased batch variance): a step with learning rate 0 moves only them */
    env2_trainer_options_init(&to);
    to.optimizer = ENV2_OPT_SGD;
    to.lr = 0;
    to.weight_decay = 0;
    to.lr_schedule = ENV2_LR_CONSTANT;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &to), ENV2_OK);
    CHECK_EQ_INT(env2_train_step(t, x, n, h, w, ENV2_LAYOUT_NCHW, labels, NULL, NULL, NULL), ENV2_OK);
    void *buf = NULL;
    size_t len = 0;
    st_file saved;
    env2_err e;
    memset(&saved, 0, sizeof saved);
    CHECK_EQ_INT(env2_model_save_memory(m, &buf, &len), ENV2_OK);
    CHECK_EQ_INT(st_open_memory(&saved, buf, len, &e), ENV2_OK);
    int stats = 0;
    double worst_stat = 0;
    for (int i = 0; i < F.count; i++) {
        const char *nm = F.tensors[i].name;
        if (strncmp(nm, "train1.", 7)) continue;
        int64_t cnt = 0, cr;
        float *mine = model_tensor(m, nm + 7, &cnt, &saved), *ref = get(nm, &cr);
        if (!mine || !ref || cnt != cr) {
            CHECK_MSG(0, "%s: %s missing or mis-sized", fixture, nm);
        } else {
            double rel = test_max_rel_diff(mine, ref, cnt);
            if (rel > worst_stat) worst_stat = rel;
            stats++;
        }
        free(mine);
        free(ref);
    }
    CHECK_MSG(stats > 10 && worst_stat <= 1e-4, "%s: %d BN statistics, worst off by %.3g", fixture, stats, worst_stat);
    st_close(&saved);
    env2_free(buf);
    free(g);
    free(x);
    free(lf);
    free(rloss);
    free(labels);
    env2_trainer_destroy(t);
}

/* state-dict float tensors of the model after training, by name */
static float *model_tensor(env2_model *m, const char *name, int64_t *cnt, st_file *saved)
{
    (void)m;
    const st_tensor *t = st_find(saved, name);
    if (!t) return NULL;
    *cnt = st_numel(t);
    float *d = malloc((size_t)*cnt * sizeof(float));
    env2_err e;
    st_read_f32(saved, t, d, (size_t)*cnt, &e);
    return d;
}

static int trajectories;

static void check_optim(const char *opt_name, int opt, float lr, float wd, int nesterov)
{
    char name[200];
    snprintf(name, sizeof name, "%s.losses", opt_name);
    if (!shape_of(name) || !shape_of("opt.input")) return; /* not every fixture carries trajectories */
    trajectories++;
    env2_model *m = load_model();
    if (!m) return;
    env2_trainer_options to;
    env2_trainer_options_init(&to);
    to.optimizer = opt;
    to.lr = lr;
    to.weight_decay = wd;
    to.nesterov = nesterov;
    to.lr_schedule = ENV2_LR_CONSTANT;
    to.label_smoothing = 0.1f;
    to.momentum = 0.9f;
    env2_trainer *t = NULL;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &to), ENV2_OK);
    const st_tensor *ti = shape_of("opt.input");
    int steps = (int)ti->shape[0], n = (int)ti->shape[1], c = (int)ti->shape[2], h = (int)ti->shape[3],
        w = (int)ti->shape[4];
    float *x = get("opt.input", NULL), *lf = get("opt.labels", NULL), *rl = get(name, NULL);
    int32_t *labels = malloc((size_t)n * sizeof(int32_t));
    double worst_loss = 0;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < n; i++) labels[i] = (int32_t)lf[s * n + i];
        float loss = 0;
        CHECK_EQ_INT(env2_train_step(t, x + (size_t)s * n * c * h * w, n, h, w, ENV2_LAYOUT_NCHW, labels, NULL, &loss,
                                     NULL),
                     ENV2_OK);
        double d = fabs(loss - rl[s]) / fabs(rl[s]);
        if (d > worst_loss) worst_loss = d;
    }
    CHECK_MSG(worst_loss <= 1e-4, "%s %s: loss off by %.3g relative", fixture, opt_name, worst_loss);
    void *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(env2_model_save_memory(m, &buf, &len), ENV2_OK);
    st_file saved;
    memset(&saved, 0, sizeof saved);
    env2_err e;
    CHECK_EQ_INT(st_open_memory(&saved, buf, len, &e), ENV2_OK);
    double worst = 0;
    char worst_name[160] = "";
    int checked = 0, skipped = 0;
    double zfloor = grad_scale();
    size_t pl = strlen(opt_name) + 7;
    for (int i = 0; i < F.count; i++) {
        const st_tensor *ft = &F.tensors[i];
        if (strncmp(ft->name, opt_name, strlen(opt_name)) || strncmp(ft->name + strlen(opt_name), ".final.", 7)) continue;
        const char *nm = ft->name + pl;
        /* Adaptive optimizers turn a rounding-noise gradient into full-size
         * steps (m / sqrt(v)), so where the exact gradient is zero the two
         * implementations walk different noise: compared elsewhere, not here. */
        size_t L = strlen(nm);
        int stat = L > 8 && (!strcmp(nm + L - 12, "running_mean") || !strcmp(nm + L - 11, "running_var"));
        /* AdamW's noise walk also moves the statistics of the layers after
         * such a bias; RMSProp's eps inside the root keeps those steps tiny */
        if (opt == ENV2_OPT_ADAMW && stat) continue;
        if (opt != ENV2_OPT_SGD && structurally_zero(nm, zfloor)) {
            skipped++;
            continue;
        }
        int64_t cnt = 0;
        float *mine = model_tensor(m, nm, &cnt, &saved), *ref = get(ft->name, NULL);
        if (!mine || !ref) {
            CHECK_MSG(0, "%s: %s missing", fixture, nm);
            free(mine);
            free(ref);
            continue;
        }
        double rel = test_max_rel_diff(mine, ref, cnt);
        if (rel > worst) {
            worst = rel;
            snprintf(worst_name, sizeof worst_name, "%s", nm);
        }
        checked++;
        free(mine);
        free(ref);
    }
    CHECK_MSG(worst <= 1e-4, "%s %s: worst tensor %s off by %.3g of its max", fixture, opt_name, worst_name, worst);
    CHECK(checked > 10 && skipped < checked / 4);
    st_close(&saved);
    env2_free(buf);
    free(x);
    free(lf);
    free(rl);
    free(labels);
    env2_trainer_destroy(t);
    env2_model_destroy(m);
}

int main(int argc, char **argv)
{
    static const char *names[] = {"tiny_rgb", "tiny_gray_same", "tiny_rgb_same"};
    const char *dir = argc > 1 ? argv[1] : FIXTURE_DIR;
    /* every SIMD path this CPU has, each forced in turn, must match torch */
    for (int level = K_SIMD_GENERIC; level <= k_simd_detect(); level++) {
        k_simd_force(level);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char path[512], label[96];
            snprintf(path, sizeof path, "%s/%s.safetensors", dir, names[i]);
            snprintf(label, sizeof label, "%s [%s]", names[i], k_simd_name(level));
            fixture = label;
            env2_err e;
            memset(&F, 0, sizeof F);
            if (st_open_file(&F, path, &e) != ENV2_OK) {
                CHECK_MSG(0, "cannot open fixture %s: %s", path, e.msg);
                continue;
            }
            env2_model *m = load_model();
            CHECK(m != NULL);
            if (m) {
                check_eval(m);
                check_grads(m);
                env2_model_destroy(m);
            }
            /* and the exact (im2col) path, for inference and training */
            load_winograd = 0;
            m = load_model();
            load_winograd = 1;
            CHECK(m != NULL);
            if (m) {
                check_eval(m);
                check_grads(m);
                env2_model_destroy(m);
            }
            check_optim("sgd", ENV2_OPT_SGD, 0.05f, 1e-4f, 0);
            check_optim("sgd_nesterov", ENV2_OPT_SGD, 0.05f, 1e-4f, 1);
            check_optim("adamw", ENV2_OPT_ADAMW, 1e-3f, 0.05f, 0);
            check_optim("rmsprop_tf", ENV2_OPT_RMSPROP_TF, 1e-3f, 1e-5f, 0);
            st_close(&F);
        }
    }
    k_simd_force(k_simd_detect());
    CHECK_MSG(trajectories >= 4 * (k_simd_detect() + 1), "only %d optimizer trajectories found in the fixtures",
              trajectories);
    return test_summary();
}
