/* Model construction, architecture tables, parameter and MAC counts, forward
 * invariances (threads, layout), save/load round trips and API misuse. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "efficientnetv2.h"
#include "harness.h"
#include "model/model.h"

static void check_counts(void)
{
    static const struct { const char *name; long long params, macs; int size; } want[] = {
        {"efficientnetv2-s", 21458488LL, 8365617152LL, 384},  {"efficientnetv2-m", 54139356LL, 24582460384LL, 480},
        {"efficientnetv2-l", 118515272LL, 56079699008LL, 480}, {"efficientnetv2-xl", 208119808LL, 93353451520LL, 512},
        {"efficientnetv2-b0", 7139704LL, 718086176LL, 224},   {"efficientnetv2-b1", 8141052LL, 1196819360LL, 240},
        {"efficientnetv2-b2", 10096086LL, 1697542832LL, 260}, {"efficientnetv2-b3", 14358406LL, 3011458816LL, 300},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        env2_model *m = NULL;
        CHECK_EQ_INT(env2_model_create(&m, want[i].name, NULL), ENV2_OK);
        if (!m) continue;
        CHECK_EQ_INT(env2_model_num_params(m), want[i].params);
        int64_t macs = 0;
        CHECK_EQ_INT(env2_model_macs(m, want[i].size, want[i].size, &macs), ENV2_OK);
        CHECK_EQ_INT(macs, want[i].macs);
        CHECK_EQ_INT(env2_model_eval_size(m), want[i].size);
        env2_model_destroy(m);
    }
    /* S at 224 and 300 (spec §7.2), short names */
    env2_model *m = NULL;
    CHECK_EQ_INT(env2_model_create(&m, "s", NULL), ENV2_OK);
    int64_t macs = 0;
    env2_model_macs(m, 224, 224, &macs);
    CHECK_EQ_INT(macs, 2849895872LL);
    env2_model_macs(m, 300, 300, &macs);
    CHECK_EQ_INT(macs, 5307561248LL);
    CHECK_EQ_INT(env2_model_num_stages(m), 6);
    int32_t f, r, k, s, e, in, out, se;
    CHECK_EQ_INT(env2_model_stage(m, 3, &f, &r, &k, &s, &e, &in, &out, &se), ENV2_OK);
    CHECK(f == 0 && r == 6 && k == 3 && s == 2 && e == 4 && in == 64 && out == 128 && se == 16);
    CHECK_EQ_INT(env2_model_stage(m, 6, &f, NULL, NULL, NULL, NULL, NULL, NULL, NULL), ENV2_E_INVALID_ARG);
    env2_model_destroy(m);
    /* B3 stage widths follow the official rounding without the 90 % rule */
    CHECK_EQ_INT(env2_model_create(&m, "efficientnetv2-b3", NULL), ENV2_OK);
    int32_t outs[6];
    for (int i = 0; i < 6; i++) env2_model_stage(m, i, NULL, NULL, NULL, NULL, NULL, NULL, &outs[i], NULL);
    CHECK(outs[0] == 16 && outs[1] == 40 && outs[2] == 56 && outs[3] == 112 && outs[4] == 136 && outs[5] == 232);
    CHECK_EQ_INT(env2_model_stem_channels(m), 40);
    CHECK_EQ_INT(env2_model_head_channels(m), 1536);
    env2_model_destroy(m);
    /* 10 classes: the classifier shrinks by 1280 * 990 + 990 */
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_classes = 10;
    CHECK_EQ_INT(env2_model_create(&m, "efficientnetv2-s", &o), ENV2_OK);
    CHECK_EQ_INT(env2_model_num_params(m), 20190298LL);
    env2_model_destroy(m);
}

static const char *TINY = "r1_k3_s1_e1_i16_o16_c1 r2_k3_s2_e4_i16_o24_c1 r2_k3_s2_e4_i24_o32_se0.25 r2_k3_s1_e6_i32_o40_se0.25";

static env2_model *tiny(int classes, int in_ch, int padding, uint64_t seed)
{
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_classes = classes;
    o.in_channels = in_ch;
    o.padding = padding;
    o.head_channels = 64;
    o.seed = seed;
    env2_model *m = NULL;
    if (env2_model_create(&m, TINY, &o) != ENV2_OK) return NULL;
    return m;
}

/* Each trainable tensor starts on a 64-byte line (the GEMMs read 1x1
 * weights in place, 16 floats a load), the tensors do not overlap, the
 * padding between them is zero after initialization and loading, and the
 * parameter count leaves the padding out. */
static void check_param_layout(const char *variant, int reload)
{
    env2_model *m = NULL;
    CHECK_EQ_INT(env2_model_create(&m, variant, NULL), ENV2_OK);
    if (!m) return;
    if (reload) {
        void *data = NULL;
        size_t len = 0;
        CHECK_EQ_INT(env2_model_save_memory(m, &data, &len), ENV2_OK);
        CHECK_EQ_INT(env2_model_load_memory(m, data, len, 0), ENV2_OK);
        env2_free(data);
    }
    size_t count = 0, end = 0, misaligned = 0, overlap = 0, dirty = 0;
    for (int i = 0; i < m->ntensors; i++) {
        const tensor_def *t = &m->tensors[i];
        misaligned += t->offset % 16 != 0;
        if (t->is_stat) continue;
        overlap += t->offset < end;
        for (size_t j = end; j < t->offset; j++) dirty += m->params[j] != 0.0f;
        end = t->offset + (size_t)t->numel;
        count += (size_t)t->numel;
    }
    CHECK_EQ_INT((long long)misaligned, 0);
    CHECK_EQ_INT((long long)overlap, 0);
    CHECK_EQ_INT((long long)dirty, 0);
    CHECK(end <= m->nparams && m->nparams < end + 16);
    CHECK_EQ_INT(env2_model_num_params(m), (long long)count);
    env2_model_destroy(m);
}

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)sin(0.7 * (double)i + seed) * 1.5f;
}

static void check_forward(void)
{
    env2_model *m = tiny(7, 3, ENV2_PAD_SYMMETRIC, 1);
    CHECK(m != NULL);
    if (!m) return;
    const int n = 2, h = 29, w = 23, C = 3;
    float x[2 * 3 * 29 * 23], xh[2 * 29 * 23 * 3], y1[14], y2[14], y3[14];
    fill(x, sizeof x / sizeof x[0], 3);
    for (int b = 0; b < n; b++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < h * w; i++) xh[(b * h * w + i) * C + c] = x[(b * C + c) * h * w + i];
    env2_model_set_threads(m, 1);
    CHECK_EQ_INT(env2_forward(m, x, n, h, w, ENV2_LAYOUT_NCHW, y1), ENV2_OK);
    int finite = 1;
    for (int i = 0; i < 14; i++) finite &= isfinite(y1[i]);
    CHECK(finite);
    env2_model_set_threads(m, 2);
    CHECK_EQ_INT(env2_forward(m, x, n, h, w, ENV2_LAYOUT_NCHW, y2), ENV2_OK);
    CHECK(memcmp(y1, y2, sizeof y1) == 0); /* bit-identical across thread counts */
    CHECK_EQ_INT(env2_forward(m, xh, n, h, w, ENV2_LAYOUT_NHWC, y3), ENV2_OK);
    CHECK(memcmp(y1, y3, sizeof y1) == 0);
    /* a batch of two equals two batches of one */
    float s0[7], s1[7];
    CHECK_EQ_INT(env2_forward(m, x, 1, h, w, ENV2_LAYOUT_NCHW, s0), ENV2_OK);
    CHECK_EQ_INT(env2_forward(m, x + C * h * w, 1, h, w, ENV2_LAYOUT_NCHW, s1), ENV2_OK);
    CHECK(test_max_rel_diff(s0, y1, 7) < 1e-5 && test_max_rel_diff(s1, y1 + 7, 7) < 1e-5);
    /* sizes 1x1 and a size change between calls work */
    float one[3] = {1, 2, 3}, yo[7];
    CHECK_EQ_INT(env2_forward(m, one, 1, 1, 1, ENV2_LAYOUT_NCHW, yo), ENV2_OK);
    CHECK_EQ_INT(env2_forward(m, x, 1, h, w, ENV2_LAYOUT_NCHW, s1), ENV2_OK);
    CHECK(memcmp(s0, s1, sizeof s0) == 0);

    /* save -> load into a differently seeded model gives the same logits */
    void *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(env2_model_save_memory(m, &buf, &len), ENV2_OK);
    env2_model *m2 = tiny(7, 3, ENV2_PAD_SYMMETRIC, 99);
    CHECK_EQ_INT(env2_forward(m2, x, n, h, w, ENV2_LAYOUT_NCHW, y3), ENV2_OK);
    CHECK(memcmp(y1, y3, sizeof y1) != 0);
    CHECK_EQ_INT(env2_model_load_memory(m2, buf, len, 0), ENV2_OK);
    CHECK_EQ_INT(env2_forward(m2, x, n, h, w, ENV2_LAYOUT_NCHW, y3), ENV2_OK);
    CHECK(memcmp(y1, y3, sizeof y1) == 0);
    /* a truncated buffer fails and leaves the model as it was */
    env2_model *m3 = tiny(7, 3, ENV2_PAD_SYMMETRIC, 5);
    float before[14], after[14];
    env2_forward(m3, x, n, h, w, ENV2_LAYOUT_NCHW, before);
    CHECK(env2_model_load_memory(m3, buf, len / 2, 0) != ENV2_OK);
    CHECK(strlen(env2_last_error()) > 0);
    env2_forward(m3, x, n, h, w, ENV2_LAYOUT_NCHW, after);
    CHECK(memcmp(before, after, sizeof before) == 0);
    env2_model_destroy(m3);
    /* other class count: refused unless the classifier is skipped */
    env2_model *m4 = tiny(5, 3, ENV2_PAD_SYMMETRIC, 5);
    CHECK_EQ_INT(env2_model_load_memory(m4, buf, len, 0), ENV2_E_SHAPE);
    CHECK(strstr(env2_last_error(), "classifier.1.weight") != NULL);
    CHECK_EQ_INT(env2_model_load_memory(m4, buf, len, ENV2_LOAD_SKIP_CLASSIFIER), ENV2_OK);
    env2_model_destroy(m4);
    /* other architecture: names the offending tensor */
    env2_model *m5 = NULL;
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_classes = 7;
    o.head_channels = 64;
    CHECK_EQ_INT(env2_model_create(&m5, "r1_k3_s1_e1_i16_o16_c1 r2_k3_s2_e4_i16_o24_c1", &o), ENV2_OK);
    CHECK_EQ_INT(env2_model_load_memory(m5, buf, len, 0), ENV2_E_NOT_FOUND);
    env2_model_destroy(m5);

    /* create_from_file rebuilds the same model */
    const char *path = "/tmp/env2_test_model.safetensors";
    CHECK_EQ_INT(env2_model_save(m, path), ENV2_OK);
    env2_model *m6 = NULL;
    CHECK_EQ_INT(env2_model_create_from_file(&m6, path, NULL), ENV2_OK);
    if (m6) {
        CHECK_EQ_INT(env2_forward(m6, x, n, h, w, ENV2_LAYOUT_NCHW, y3), ENV2_OK);
        CHECK(memcmp(y1, y3, sizeof y1) == 0);
        env2_model_destroy(m6);
    }
    remove(path);
    env2_free(buf);
    env2_model_destroy(m2);
    env2_model_destroy(m);
}

/* winograd = 1 (the default) and 0 agree to float rounding, and the option is
 * validated; a caller built before the field existed gets the default. */
static void check_winograd(void)
{
    env2_model_options o;
    env2_model_options_init(&o);
    CHECK_EQ_INT(o.winograd, 1);
    o.num_classes = 7;
    o.head_channels = 64;
    o.seed = 3;
    env2_model *a = NULL, *b = NULL, *c = NULL;
    CHECK_EQ_INT(env2_model_create(&a, TINY, &o), ENV2_OK);
    o.winograd = 0;
    CHECK_EQ_INT(env2_model_create(&b, TINY, &o), ENV2_OK);
    o.winograd = 2;
    CHECK_EQ_INT(env2_model_create(&c, TINY, &o), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "winograd") != NULL);
    o.winograd = 0;
    o.struct_size = (uint32_t)offsetof(env2_model_options, winograd);
    CHECK_EQ_INT(env2_model_create(&c, TINY, &o), ENV2_OK);
    if (!a || !b || !c) {
        env2_model_destroy(a);
        env2_model_destroy(b);
        env2_model_destroy(c);
        return;
    }
    const int n = 2, h = 29, w = 23;
    float x[2 * 3 * 29 * 23], ya[14], yb[14], yc[14], y2[14];
    fill(x, sizeof x / sizeof x[0], 5);
    CHECK_EQ_INT(env2_forward(a, x, n, h, w, ENV2_LAYOUT_NCHW, ya), ENV2_OK);
    CHECK_EQ_INT(env2_forward(b, x, n, h, w, ENV2_LAYOUT_NCHW, yb), ENV2_OK);
    CHECK_EQ_INT(env2_forward(c, x, n, h, w, ENV2_LAYOUT_NCHW, yc), ENV2_OK);
    CHECK(test_max_rel_diff(ya, yb, 14) < 1e-4);
    CHECK(memcmp(ya, yb, sizeof ya) != 0); /* the two paths really differ */
    CHECK(memcmp(ya, yc, sizeof ya) == 0); /* short struct: the default, winograd on */
    env2_model_set_threads(a, 1);
    CHECK_EQ_INT(env2_forward(a, x, n, h, w, ENV2_LAYOUT_NCHW, y2), ENV2_OK);
    CHECK(memcmp(ya, y2, sizeof ya) == 0); /* and thread-count independent */
    env2_model_destroy(a);
    env2_model_destroy(b);
    env2_model_destroy(c);
}

static void check_misuse(void)
{
    env2_model *m = (env2_model *)1;
    CHECK_EQ_INT(env2_model_create(&m, "efficientnetv2-q", NULL), ENV2_E_NOT_FOUND);
    CHECK(m == NULL);
    CHECK(strstr(env2_last_error(), "efficientnetv2-q") != NULL);
    CHECK_EQ_INT(env2_model_create(NULL, "s", NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_model_create(&m, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_model_create(&m, "r0_k3_s1_e1_i16_o16_c1", NULL), ENV2_E_FORMAT);
    CHECK_EQ_INT(env2_model_create(&m, "r1_k4_s1_e1_i16_o16_c1", NULL), ENV2_E_FORMAT);
    CHECK_EQ_INT(env2_model_create(&m, "r1_k3_s1_e1_i16_o16_c1 r1_k3_s1_e1_i24_o24", NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_model_create(&m, "r1_k3_s1_e1_i16_o16_q1", NULL), ENV2_E_FORMAT);
    CHECK_EQ_INT(env2_model_create(&m, "r1_k3_s1_e1_i16_o16_c1_se0.25", NULL), ENV2_E_UNSUPPORTED);
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_classes = 0;
    CHECK_EQ_INT(env2_model_create(&m, "s", &o), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "num_classes") != NULL);
    env2_model_options_init(&o);
    o.in_channels = -1;
    CHECK_EQ_INT(env2_model_create(&m, "s", &o), ENV2_E_INVALID_ARG);
    env2_model_options_init(&o);
    o.struct_size = 3;
    CHECK_EQ_INT(env2_model_create(&m, "s", &o), ENV2_E_VERSION);
    env2_model_destroy(NULL);

    m = tiny(3, 1, ENV2_PAD_SAME, 0);
    float x[16] = {0}, y[3];
    CHECK_EQ_INT(env2_forward(NULL, x, 1, 4, 4, ENV2_LAYOUT_NCHW, y), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_forward(m, NULL, 1, 4, 4, ENV2_LAYOUT_NCHW, y), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_forward(m, x, 1, 4, 4, ENV2_LAYOUT_NCHW, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_forward(m, x, 0, 4, 4, ENV2_LAYOUT_NCHW, y), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_forward(m, x, 1, 0, 4, ENV2_LAYOUT_NCHW, y), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_forward(m, x, 1, 5000, 4, ENV2_LAYOUT_NCHW, y), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_forward(m, x, 1, 4, 4, (env2_layout)7, y), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_model_last_error(m), "layout") != NULL);
    CHECK_EQ_INT(env2_forward(m, x, 1, 4, 4, ENV2_LAYOUT_NCHW, y), ENV2_OK);
    CHECK_EQ_INT(env2_model_load(m, "/nonexistent/w.safetensors", 0), ENV2_E_IO);
    CHECK(strstr(env2_last_error(), "/nonexistent/w.safetensors") != NULL);
    CHECK_EQ_INT(env2_model_set_threads(m, -2), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_model_output_size(m, 4), 12);
    CHECK_EQ_INT(env2_model_in_channels(m), 1);
    env2_model *none = (env2_model *)1;
    CHECK_EQ_INT(env2_model_create_from_file(&none, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK(none == NULL);
    CHECK(env2_status_string(ENV2_E_NOMEM)[0] != 0 && strcmp(env2_status_string((env2_status)-99), "unknown status") == 0);
    CHECK_EQ_INT(env2_version_number(), ENV2_VERSION_NUMBER);
    CHECK(strcmp(env2_version_string(), ENV2_VERSION_STRING) == 0);
    env2_model_destroy(m);
}

int main(void)
{
    check_counts();
    check_param_layout("efficientnetv2-s", 0);
    check_param_layout("efficientnetv2-b3", 1);
    check_forward();
    check_winograd();
    check_misuse();
    return test_summary();
}
