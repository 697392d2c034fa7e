/* Trainer: learning, determinism across threads, checkpoint/resume giving
 * bit-identical weights, atomic failure on bad input, schedules and EMA. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "efficientnetv2.h"
#include "harness.h"

extern long env2_alloc_count; /* internal counter of src/core/common.c */
extern long env2_fail_alloc_after; /* its fault injection */
/* internal SIMD dispatch (src/kernels/simd.c) */
int k_simd_level(void);
int k_simd_force(int level);

static const char *ARCH = "r1_k3_s1_e1_i16_o16_c1 r1_k3_s2_e4_i16_o24_c1 r2_k3_s2_e4_i24_o32_se0.25";
enum { N = 6, S = 16, K = 4 };

static env2_model *mk(int threads)
{
    env2_model_options o;
    env2_model_options_init(&o);
    o.num_classes = K;
    o.in_channels = 1;
    o.head_channels = 32;
    o.seed = 11;
    o.num_threads = threads;
    o.drop_path_rate = 0.3f; /* exercise stochastic depth */
    o.dropout = 0.2f;
    env2_model *m = NULL;
    env2_model_create(&m, ARCH, &o);
    return m;
}

static env2_trainer *mkt(env2_model *m, int opt, float ema)
{
    env2_trainer_options o;
    env2_trainer_options_init(&o);
    o.optimizer = opt;
    o.lr = opt == ENV2_OPT_SGD ? 0.05f : (opt == ENV2_OPT_ADAMW ? 3e-3f : 3e-3f);
    o.lr_schedule = ENV2_LR_CONSTANT;
    o.ema_decay = ema;
    o.seed = 5;
    o.clip_grad_norm = 5.0f;
    env2_trainer *t = NULL;
    env2_trainer_create(&t, m, &o);
    return t;
}

/* class k = a stripe orientation/frequency pattern, with per-sample phase */
static void batch(int step, int size, float *x, int32_t *y)
{
    for (int i = 0; i < N; i++) {
        int k = (i + step) % K;
        float ph = (float)((step * 7 + i * 3) % 5);
        for (int r = 0; r < size; r++)
            for (int c = 0; c < size; c++) {
                float v = k == 0 ? sinf(0.8f * r + ph) : k == 1 ? sinf(0.8f * c + ph) : k == 2 ? sinf(0.5f * (r + c) + ph)
                                                                                                : sinf(0.5f * (r - c) + ph);
                x[(size_t)i * size * size + r * size + c] = v;
            }
        y[i] = k;
    }
}

static void get_weights(env2_model *m, float **w, size_t *len)
{
    void *buf = NULL;
    env2_model_save_memory(m, &buf, len);
    *w = buf;
}

static int run(env2_trainer *t, int from, int to, float *last_loss)
{
    float x[N * 24 * 24];
    int32_t y[N];
    for (int s = from; s < to; s++) {
        int size = s % 3 == 2 ? 24 : S; /* size changes between steps */
        batch(s, size, x, y);
        float loss;
        if (env2_train_step(t, x, N, size, size, ENV2_LAYOUT_NCHW, y, NULL, &loss, NULL) != ENV2_OK) return -1;
        if (last_loss) *last_loss = loss;
    }
    return 0;
}

static void check_learning(void)
{
    static const int opts[3] = {ENV2_OPT_SGD, ENV2_OPT_RMSPROP_TF, ENV2_OPT_ADAMW};
    for (int o = 0; o < 3; o++) {
        env2_model *m = mk(2);
        env2_trainer *t = mkt(m, opts[o], 0);
        float first = 0, last = 0;
        CHECK_EQ_INT(run(t, 0, 1, &first), 0);
        CHECK_EQ_INT(run(t, 1, 40, &last), 0);
        CHECK_MSG(last < 0.6f * first, "optimizer %d: loss %g -> %g did not fall", opts[o], first, last);
        CHECK_EQ_INT(env2_trainer_step_count(t), 40);
        env2_trainer_destroy(t);
        env2_model_destroy(m);
    }
}

static void check_determinism_and_resume(void)
{
    float *w1, *w2, *w3;
    size_t l1, l2, l3;
    env2_model *m1 = mk(1), *m2 = mk(2), *m3 = mk(2);
    env2_trainer *t1 = mkt(m1, ENV2_OPT_RMSPROP_TF, 0.9f), *t2 = mkt(m2, ENV2_OPT_RMSPROP_TF, 0.9f);
    CHECK_EQ_INT(run(t1, 0, 8, NULL), 0);
    CHECK_EQ_INT(run(t2, 0, 4, NULL), 0);
    char path[] = "/tmp/env2_ckpt_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    CHECK_EQ_INT(env2_trainer_save(t2, path, "{\"epoch\": 3}"), ENV2_OK);
    {
        /* the checkpoint is also a model file: its live weights by default,
         * its EMA average with ENV2_LOAD_EMA -- each giving the same logits
         * as the trainer it came from */
        env2_model *m5 = NULL;
        float xe[N * S * S], live[N * K], avg[N * K], got[N * K];
        int32_t ye[N];
        batch(98, S, xe, ye);
        CHECK_EQ_INT(env2_model_create_from_file(&m5, path, NULL), ENV2_OK);
        CHECK_EQ_INT(env2_trainer_evaluate(t2, xe, N, S, S, ENV2_LAYOUT_NCHW, 0, live), ENV2_OK);
        CHECK_EQ_INT(env2_trainer_evaluate(t2, xe, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
        CHECK(memcmp(live, avg, sizeof live) != 0);
        if (m5) {
            CHECK_EQ_INT(env2_forward(m5, xe, N, S, S, ENV2_LAYOUT_NCHW, got), ENV2_OK);
            CHECK(memcmp(got, live, sizeof got) == 0);
            CHECK_EQ_INT(env2_model_load(m5, path, ENV2_LOAD_EMA), ENV2_OK);
            CHECK_EQ_INT(env2_forward(m5, xe, N, S, S, ENV2_LAYOUT_NCHW, got), ENV2_OK);
            CHECK(memcmp(got, avg, sizeof got) == 0);
            /* a plain model file has no average: refused, weights kept */
            void *plain = NULL;
            size_t plen = 0;
            CHECK_EQ_INT(env2_model_save_memory(m5, &plain, &plen), ENV2_OK);
            CHECK_EQ_INT(env2_model_load_memory(m5, plain, plen, ENV2_LOAD_EMA), ENV2_E_NOT_FOUND);
            CHECK(strstr(env2_model_last_error(m5), "no EMA weights") != NULL);
            CHECK_EQ_INT(env2_forward(m5, xe, N, S, S, ENV2_LAYOUT_NCHW, got), ENV2_OK);
            CHECK(memcmp(got, avg, sizeof got) == 0);
            env2_free(plain);
            env2_model_destroy(m5);
        }
    }
    env2_trainer *t3 = mkt(m3, ENV2_OPT_RMSPROP_TF, 0.9f);
    char user[64];
    CHECK_EQ_INT(env2_trainer_resume(t3, path, user, sizeof user), ENV2_OK);
    CHECK(strcmp(user, "{\"epoch\": 3}") == 0);
    CHECK_EQ_INT(env2_trainer_step_count(t3), 4);
    CHECK_EQ_INT(run(t3, 4, 8, NULL), 0);
    CHECK_EQ_INT(run(t2, 4, 8, NULL), 0);
    get_weights(m1, &w1, &l1);
    get_weights(m2, &w2, &l2);
    get_weights(m3, &w3, &l3);
    /* 1 thread vs 2 threads, and straight vs save/resume: bit-identical */
    CHECK(l1 == l2 && memcmp(w1, w2, l1) == 0);
    CHECK(l1 == l3 && memcmp(w1, w3, l1) == 0);
    /* EMA evaluation differs from live weights but is deterministic too */
    float x[N * S * S], a[N * K], b[N * K], c[N * K];
    int32_t y[N];
    batch(99, S, x, y);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 1, a), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t3, x, N, S, S, ENV2_LAYOUT_NCHW, 1, b), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t3, x, N, S, S, ENV2_LAYOUT_NCHW, 0, c), ENV2_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    /* a resume into a mismatched trainer is refused and changes nothing */
    env2_model *m4 = mk(1);
    env2_trainer *t4 = mkt(m4, ENV2_OPT_SGD, 0.9f);
    float *w4a, *w4b;
    size_t l4a, l4b;
    get_weights(m4, &w4a, &l4a);
    CHECK_EQ_INT(env2_trainer_resume(t4, path, NULL, 0), ENV2_E_VERSION);
    CHECK(strstr(env2_last_error(), "optimizer") != NULL);
    CHECK_EQ_INT(env2_trainer_resume(t4, "/nonexistent/ckpt", NULL, 0), ENV2_E_IO);
    get_weights(m4, &w4b, &l4b);
    CHECK(l4a == l4b && memcmp(w4a, w4b, l4a) == 0);
    remove(path);
    env2_free(w1);
    env2_free(w2);
    env2_free(w3);
    env2_free(w4a);
    env2_free(w4b);
    env2_trainer_destroy(t1);
    env2_trainer_destroy(t2);
    env2_trainer_destroy(t3);
    env2_trainer_destroy(t4);
    env2_model_destroy(m1);
    env2_model_destroy(m2);
    env2_model_destroy(m3);
    env2_model_destroy(m4);
}

static void check_bad_input(void)
{
    env2_model *m = mk(2);
    env2_trainer *t = mkt(m, ENV2_OPT_ADAMW, 0.99f);
    float x[N * S * S], tg[N * K];
    int32_t y[N];
    batch(0, S, x, y);
    CHECK_EQ_INT(run(t, 0, 2, NULL), 0);
    float *before, *after;
    size_t lb, la;
    get_weights(m, &before, &lb);
    y[2] = K;
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "label") != NULL);
    y[2] = -1;
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL), ENV2_E_INVALID_ARG);
    y[2] = 0;
    x[17] = NAN;
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL), ENV2_E_NUMERIC);
    x[17] = INFINITY;
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL), ENV2_E_NUMERIC);
    x[17] = 0;
    for (int i = 0; i < N * K; i++) tg[i] = 0.3f;
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, NULL, tg, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "sum") != NULL);
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, y, tg, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, NULL, NULL, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_train_step(t, x, 1, S, S, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_train_step(t, x, N, 0, S, ENV2_LAYOUT_NCHW, y, NULL, NULL, NULL), ENV2_E_INVALID_ARG);
    /* out-of-range parameters are refused */
    CHECK_EQ_INT(env2_trainer_set_param(t, ENV2_PARAM_LR, 1e30), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_trainer_set_param(t, ENV2_PARAM_DROPOUT, 1.0), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_trainer_set_param(t, (env2_train_param)42, 0.1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_trainer_step_count(t), 2);
    get_weights(m, &after, &la);
    CHECK(lb == la && memcmp(before, after, lb) == 0);
    /* soft targets work */
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) tg[i * K + k] = k == y[i] ? 0.7f : 0.1f;
    int32_t correct = -1;
    float loss = 0;
    CHECK_EQ_INT(env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, NULL, tg, &loss, &correct), ENV2_OK);
    CHECK(loss > 0 && correct >= 0 && correct <= N);
    size_t ws = 0, fixed = 0, ws2 = 0;
    CHECK_EQ_INT(env2_trainer_memory_needed(t, N, S, S, &ws, &fixed), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_memory_needed(t, 2 * N, S, S, &ws2, NULL), ENV2_OK);
    CHECK(ws > 0 && ws2 > ws && fixed >= 4 * sizeof(float) * (size_t)env2_model_num_params(m));
    double v = 0;
    CHECK_EQ_INT(env2_trainer_set_param(t, ENV2_PARAM_DROPOUT, 0.25), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_get_param(t, ENV2_PARAM_DROPOUT, &v), ENV2_OK);
    CHECK_NEAR(v, 0.25, 1e-7);
    env2_free(before);
    env2_free(after);
    env2_trainer_destroy(t);
    env2_trainer_destroy(NULL);
    env2_model_destroy(m);
}

/* after a step at each size has been taken, further steps allocate nothing */
static void check_no_alloc(void)
{
    env2_model *m = mk(2);
    env2_trainer *t = mkt(m, ENV2_OPT_RMSPROP_TF, 0.99f);
    CHECK_EQ_INT(run(t, 0, 3, NULL), 0); /* sizes 16 and 24 seen */
    long before = env2_alloc_count;
    CHECK_EQ_INT(run(t, 3, 9, NULL), 0);
    CHECK_EQ_INT(env2_alloc_count - before, 0);
    float x[N * S * S], y[N * K];
    int32_t lab[N];
    batch(1, S, x, lab);
    CHECK_EQ_INT(env2_trainer_evaluate(t, x, N, S, S, ENV2_LAYOUT_NCHW, 1, y), ENV2_OK);
    before = env2_alloc_count;
    CHECK_EQ_INT(env2_trainer_evaluate(t, x, N, S, S, ENV2_LAYOUT_NCHW, 1, y), ENV2_OK);
    CHECK_EQ_INT(env2_forward(m, x, N, S, S, ENV2_LAYOUT_NCHW, y), ENV2_OK);
    CHECK_EQ_INT(env2_alloc_count - before, 0);
    env2_trainer_destroy(t);
    env2_model_destroy(m);
}

static void check_lr_schedule(void)
{
    env2_model *m = mk(1);
    env2_trainer_options o;
    env2_trainer_options_init(&o);
    o.lr = 0.256f;
    o.warmup_steps = 4;
    o.lr_schedule = ENV2_LR_EXPONENTIAL;
    o.decay_steps = 2.4f;
    o.decay_rate = 0.97f;
    env2_trainer *t = NULL;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &o), ENV2_OK);
    CHECK_NEAR(env2_trainer_current_lr(t), 0.256 * 1 / 4, 1e-7);
    CHECK_EQ_INT(run(t, 0, 5, NULL), 0);
    /* step 5: 0.256 * 0.97^floor(5/2.4) = 0.256 * 0.97^2 */
    CHECK_NEAR(env2_trainer_current_lr(t), 0.256 * 0.97 * 0.97, 1e-6);
    env2_trainer_destroy(t);
    o.lr_schedule = ENV2_LR_COSINE;
    o.total_steps = 0;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &o), ENV2_E_INVALID_ARG);
    o.total_steps = 10;
    o.warmup_steps = 0;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &o), ENV2_OK);
    CHECK_NEAR(env2_trainer_current_lr(t), 0.256, 1e-7);
    CHECK_EQ_INT(run(t, 0, 5, NULL), 0);
    CHECK_NEAR(env2_trainer_current_lr(t), 0.128, 1e-6);
    env2_trainer_destroy(t);
    env2_model_destroy(m);
}

/* env2_trainer_restart_ema: the average equals the live weights right after a
 * restart, restarts its warm-up (so the next step moves it 9/11 of the way
 * to the new weights, not 1 - ema_decay), and the restart point survives
 * save/resume bit-identically. */
static void check_ema_restart(void)
{
    float x[N * S * S], live[N * K], avg[N * K], a1[N * K], a2[N * K];
    int32_t y[N];
    batch(77, S, x, y);
    env2_model *m0 = mk(1);
    env2_trainer *t0 = mkt(m0, ENV2_OPT_ADAMW, 0);
    CHECK_EQ_INT(env2_trainer_restart_ema(t0), ENV2_E_STATE); /* EMA off */
    CHECK_EQ_INT(env2_trainer_restart_ema(NULL), ENV2_E_INVALID_ARG);
    env2_model *m1 = mk(1), *m2 = mk(2), *m3 = mk(2);
    env2_trainer *t1 = mkt(m1, ENV2_OPT_ADAMW, 0.99f), *t2 = mkt(m2, ENV2_OPT_ADAMW, 0.99f),
                 *t3 = mkt(m3, ENV2_OPT_ADAMW, 0.99f);
    CHECK_EQ_INT(run(t1, 0, 30, NULL), 0);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 0, live), ENV2_OK);
    CHECK(memcmp(avg, live, sizeof avg) != 0);
    CHECK_EQ_INT(env2_trainer_restart_ema(t1), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    CHECK(memcmp(avg, live, sizeof avg) == 0);
    /* one step after the restart: decay (1+1)/(10+1) = 2/11, so the average
     * sits 9/11 of the way to the new weights; without the restart it would
     * barely move (decay 0.99) */
    float before[N * K], after_live[N * K];
    memcpy(before, live, sizeof before);
    CHECK_EQ_INT(run(t1, 30, 31, NULL), 0);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 0, after_live), ENV2_OK);
    double dl = 0, da = 0;
    for (int i = 0; i < N * K; i++) {
        dl += fabs((double)after_live[i] - before[i]);
        da += fabs((double)avg[i] - after_live[i]);
    }
    CHECK_MSG(dl > 0 && da < 0.5 * dl, "after a restart the average follows the weights (%g vs %g)", da, dl);
    /* same run in t2 with a save/resume after the restart into t3 */
    CHECK_EQ_INT(run(t2, 0, 30, NULL), 0);
    CHECK_EQ_INT(env2_trainer_restart_ema(t2), ENV2_OK);
    CHECK_EQ_INT(run(t2, 30, 33, NULL), 0);
    char path[] = "/tmp/env2_ema_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    CHECK_EQ_INT(env2_trainer_save(t2, path, NULL), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_resume(t3, path, NULL, 0), ENV2_OK);
    remove(path);
    CHECK_EQ_INT(run(t1, 31, 40, NULL), 0);
    CHECK_EQ_INT(run(t2, 33, 40, NULL), 0);
    CHECK_EQ_INT(run(t3, 33, 40, NULL), 0);
    CHECK_EQ_INT(env2_trainer_evaluate(t1, x, N, S, S, ENV2_LAYOUT_NCHW, 1, a1), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t3, x, N, S, S, ENV2_LAYOUT_NCHW, 1, a2), ENV2_OK);
    CHECK(memcmp(a1, a2, sizeof a1) == 0);
    CHECK_EQ_INT(env2_trainer_evaluate(t2, x, N, S, S, ENV2_LAYOUT_NCHW, 1, a2), ENV2_OK);
    CHECK(memcmp(a1, a2, sizeof a1) == 0);
    env2_trainer_destroy(t0);
    env2_trainer_destroy(t1);
    env2_trainer_destroy(t2);
    env2_trainer_destroy(t3);
    env2_model_destroy(m0);
    env2_model_destroy(m1);
    env2_model_destroy(m2);
    env2_model_destroy(m3);
}

/* Logits of a new model given the weights `blob` (its Winograd filter
 * transforms computed from scratch). */
static int fresh_logits(const void *blob, size_t len, const float *x, float *out)
{
    env2_model *f = mk(2);
    int ok = f && env2_model_load_memory(f, blob, len, 0) == ENV2_OK &&
             env2_forward(f, x, N, S, S, ENV2_LAYOUT_NCHW, out) == ENV2_OK;
    env2_model_destroy(f);
    return ok;
}

/* Inference keeps the Winograd filter transforms between forwards; every
 * way the weights change must make the next forward use the new ones: a
 * training step, EMA evaluation and back, apply_ema, loading weights,
 * resuming a checkpoint.  Each forward is compared bit for bit with a new
 * model given the same weights. */
static void check_kept_transforms(void)
{
    float x[N * S * S], got[N * K], want[N * K], first[N * K], avg[N * K];
    int32_t y[N];
    batch(55, S, x, y);
    env2_model *m = mk(2), *other = mk(1);
    env2_trainer *t = mkt(m, ENV2_OPT_ADAMW, 0.9f), *t0 = NULL;
    if (!m || !other || !t) {
        CHECK(0);
        return;
    }
    float *w;
    size_t len;
#define SAME_AS_FRESH(what)                                                                                         \
    do {                                                                                                            \
        CHECK_EQ_INT(env2_forward(m, x, N, S, S, ENV2_LAYOUT_NCHW, got), ENV2_OK);                                 \
        get_weights(m, &w, &len);                                                                                   \
        CHECK_MSG(w && fresh_logits(w, len, x, want) && memcmp(got, want, sizeof got) == 0,                         \
                  "forward after %s used stale weights", what);                                                     \
        env2_free(w);                                                                                               \
    } while (0)
    {
        /* a step without EMA (with it, the average's update also counts as a write) */
        env2_model *keep = m;
        t0 = mkt(m = mk(2), ENV2_OPT_SGD, 0);
        SAME_AS_FRESH("creation");
        CHECK_EQ_INT(run(t0, 0, 1, NULL), 0);
        SAME_AS_FRESH("an SGD step");
        env2_trainer_destroy(t0);
        env2_model_destroy(m);
        m = keep;
    }
    SAME_AS_FRESH("creation");
    memcpy(first, got, sizeof first);
    SAME_AS_FRESH("a second forward");
    CHECK_EQ_INT(run(t, 0, 1, NULL), 0);
    SAME_AS_FRESH("a training step");
    CHECK(memcmp(got, first, sizeof got) != 0);
    CHECK_EQ_INT(run(t, 1, 3, NULL), 0);
    CHECK_EQ_INT(env2_trainer_evaluate(t, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    SAME_AS_FRESH("an EMA evaluation");
    CHECK(memcmp(got, avg, sizeof got) != 0);
    /* restart_ema rewrites the average in place: an EMA evaluation right
     * before and right after it uses the same buffer */
    CHECK_EQ_INT(env2_trainer_evaluate(t, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_restart_ema(t), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_evaluate(t, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    CHECK_EQ_INT(env2_forward(m, x, N, S, S, ENV2_LAYOUT_NCHW, got), ENV2_OK);
    CHECK_MSG(memcmp(got, avg, sizeof got) == 0, "EMA evaluation after restart_ema used stale weights");
    CHECK_EQ_INT(run(t, 3, 4, NULL), 0);
    CHECK_EQ_INT(env2_trainer_evaluate(t, x, N, S, S, ENV2_LAYOUT_NCHW, 1, avg), ENV2_OK);
    CHECK_EQ_INT(env2_trainer_apply_ema(t), ENV2_OK);
    SAME_AS_FRESH("apply_ema");
    CHECK(memcmp(got, avg, sizeof got) == 0);
    char path[] = "/tmp/env2_kept_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    CHECK_EQ_INT(env2_trainer_save(t, path, NULL), ENV2_OK);
    float saved[N * K];
    memcpy(saved, got, sizeof saved);
    CHECK_EQ_INT(run(t, 4, 6, NULL), 0);
    SAME_AS_FRESH("more steps");
    CHECK_EQ_INT(env2_trainer_resume(t, path, NULL, 0), ENV2_OK);
    SAME_AS_FRESH("resume");
    CHECK(memcmp(got, saved, sizeof got) == 0);
    remove(path);
    get_weights(other, &w, &len);
    CHECK_EQ_INT(w ? env2_model_load_memory(m, w, len, 0) : -1, ENV2_OK);
    env2_free(w);
    SAME_AS_FRESH("loading other weights");
    CHECK(memcmp(got, saved, sizeof got) != 0);
    /* the kept transform's layout follows the micro-kernel: a forward after
     * a change of SIMD path must not read one laid out for the other */
    const int level = k_simd_level();
    for (int l = level - 1; l >= 0; l--) {
        CHECK_EQ_INT(k_simd_force(l), l);
        SAME_AS_FRESH("a change of SIMD path");
    }
    k_simd_force(level);
    SAME_AS_FRESH("the SIMD path restored");
    /* kept transforms that cannot be allocated: the first forward fails
     * cleanly (its workspace cannot be had either), the next ones transform
     * into the workspace and give the same logits as a model that keeps them */
    {
        env2_model *keep = m;
        m = mk(2);
        env2_fail_alloc_after = 0;
        /* NHWC (one channel: the same floats) allocates no input buffer, so
         * the first allocation that fails is the transforms' */
        CHECK_EQ_INT(m ? env2_forward(m, x, N, S, S, ENV2_LAYOUT_NHWC, got) : -1, ENV2_E_NOMEM);
        env2_fail_alloc_after = -1;
        SAME_AS_FRESH("a failed allocation of the transforms");
        CHECK_EQ_INT(run(t0 = mkt(m, ENV2_OPT_SGD, 0), 0, 1, NULL), 0);
        SAME_AS_FRESH("a step without kept transforms");
        env2_trainer_destroy(t0);
        env2_model_destroy(m);
        m = keep;
    }
#undef SAME_AS_FRESH
    env2_trainer_destroy(t);
    env2_model_destroy(m);
    env2_model_destroy(other);
}

/* keep_activations: backward reading kept layer outputs gives the same bits
 * as recomputing them, at 1 and 2 threads and across size changes; the auto
 * setting keeps them for a small model; the workspace reflects the choice. */
static void check_keep_activations(void)
{
    float *w[3];
    size_t len[3];
    static const int keep[3] = {0, 1, -1};
    size_t ws[3], big[3];
    for (int i = 0; i < 3; i++) {
        env2_model *m = mk(i == 1 ? 1 : 2);
        env2_trainer_options o;
        env2_trainer_options_init(&o);
        CHECK_EQ_INT(o.keep_activations, -1);
        o.optimizer = ENV2_OPT_ADAMW;
        o.lr = 3e-3f;
        o.lr_schedule = ENV2_LR_CONSTANT;
        o.seed = 5;
        o.keep_activations = keep[i];
        env2_trainer *t = NULL;
        CHECK_EQ_INT(env2_trainer_create(&t, m, &o), ENV2_OK);
        CHECK_EQ_INT(run(t, 0, 6, NULL), 0);
        CHECK_EQ_INT(env2_trainer_memory_needed(t, N, 24, 24, &ws[i], NULL), ENV2_OK);
        CHECK_EQ_INT(env2_trainer_memory_needed(t, 64, 512, 512, &big[i], NULL), ENV2_OK); /* only plans */
        get_weights(m, &w[i], &len[i]);
        env2_trainer_destroy(t);
        env2_model_destroy(m);
    }
    CHECK(len[0] == len[1] && memcmp(w[0], w[1], len[0]) == 0);
    CHECK(len[0] == len[2] && memcmp(w[0], w[2], len[0]) == 0);
    CHECK_MSG(ws[1] > ws[0], "workspace kept %zu, recomputed %zu", ws[1], ws[0]);
    CHECK_EQ_INT((long long)ws[2], (long long)ws[1]);
    /* where keeping would add more than 256 MiB, auto recomputes */
    CHECK_MSG(big[1] > big[0] + ((size_t)256 << 20), "workspace kept %zu, recomputed %zu", big[1], big[0]);
    CHECK_EQ_INT((long long)big[2], (long long)big[0]);
    for (int i = 0; i < 3; i++) env2_free(w[i]);
    /* out of range: refused, naming the field */
    env2_model *m = mk(1);
    env2_trainer_options o;
    env2_trainer_options_init(&o);
    env2_trainer *t = NULL;
    o.keep_activations = 2;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &o), ENV2_E_INVALID_ARG);
    CHECK(t == NULL);
    CHECK(strstr(env2_last_error(), "keep_activations") != NULL);
    o.keep_activations = -2;
    CHECK_EQ_INT(env2_trainer_create(&t, m, &o), ENV2_E_INVALID_ARG);
    env2_model_destroy(m);
}

/* An embedding program may call the library from a thread with a small
 * stack (the header promises 256 KiB is enough; the kernels keep tiles and
 * padded bands of up to about 70 KiB on the stack).  Two training steps and
 * a forward on such a thread, one library thread so that every kernel runs
 * there, must give the bits of the same calls on the main thread. */
typedef struct small_stack_run {
    float loss, logits[N * K];
    int rc;
} small_stack_run;

static void *small_stack_body(void *arg)
{
    small_stack_run *r = arg;
    float x[N * S * S];
    int32_t y[N];
    env2_model *m = mk(1);
    env2_trainer *t = m ? mkt(m, ENV2_OPT_ADAMW, 0.0f) : NULL;
    r->rc = t ? 0 : -1;
    for (int step = 0; step < 2 && r->rc == 0; step++) {
        batch(step, S, x, y);
        r->rc = env2_train_step(t, x, N, S, S, ENV2_LAYOUT_NCHW, y, NULL, &r->loss, NULL) == ENV2_OK ? 0 : -1;
    }
    if (r->rc == 0) r->rc = env2_forward(m, x, N, S, S, ENV2_LAYOUT_NCHW, r->logits) == ENV2_OK ? 0 : -1;
    env2_trainer_destroy(t);
    env2_model_destroy(m);
    return NULL;
}

static void check_small_stack(void)
{
    small_stack_run main_run, thr_run;
    memset(&thr_run, 0, sizeof thr_run);
    small_stack_body(&main_run);
    CHECK_EQ_INT(main_run.rc, 0);
    pthread_attr_t at;
    pthread_t th;
    CHECK(pthread_attr_init(&at) == 0);
    CHECK(pthread_attr_setstacksize(&at, 256 * 1024) == 0);
    thr_run.rc = -2;
    int started = pthread_create(&th, &at, small_stack_body, &thr_run) == 0;
    pthread_attr_destroy(&at);
    CHECK_MSG(started, "pthread_create with a 256 KiB stack");
    if (!started) return;
    pthread_join(th, NULL);
    CHECK_EQ_INT(thr_run.rc, 0);
    CHECK(memcmp(&main_run.loss, &thr_run.loss, sizeof main_run.loss) == 0);
    CHECK(memcmp(main_run.logits, thr_run.logits, sizeof main_run.logits) == 0);
}

int main(void)
{
    check_learning();
    check_determinism_and_resume();
    check_ema_restart();
    check_kept_transforms();
    check_bad_input();
    check_lr_schedule();
    check_no_alloc();
    check_keep_activations();
    check_small_stack();
    return test_summary();
}
