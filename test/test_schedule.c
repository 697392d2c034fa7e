/* Progressive-learning schedule: preset tables (hand-written from paper
 * Table 6 and google/automl's main.py), stage boundaries, purity and every
 * error path. */
#include "efficientnetv2.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>

#define TOL 1e-5

/* Expected per-stage values for a 4-stage preset. */
typedef struct expect4 {
    const char *name;
    int32_t size[4];
    float dropout[4], randaug[4], mixup[4], cutmix[4], drop_path[4];
} expect4;

static const expect4 tables[] = {
    /* Algorithm 1 with Table 6: value_i = start + (end-start) * i/3 */
    {"paper-s", {128, 185, 243, 300}, /* 185.33 -> 185, 242.67 -> 243 */
     {0.1f, 0.1666667f, 0.2333333f, 0.3f},
     {5, 8.333333f, 11.666667f, 15},
     {0, 0, 0, 0},
     {0, 0, 0, 0},
     {0.2f, 0.2f, 0.2f, 0.2f}},
    {"paper-m", {128, 212, 296, 380},
     {0.1f, 0.2f, 0.3f, 0.4f},
     {5, 10, 15, 20},
     {0, 0.0666667f, 0.1333333f, 0.2f},
     {0, 0, 0, 0},
     {0.2f, 0.2f, 0.2f, 0.2f}},
    {"paper-l", {128, 212, 296, 380},
     {0.1f, 0.2333333f, 0.3666667f, 0.5f},
     {5, 11.666667f, 18.333333f, 25},
     {0, 0.1333333f, 0.2666667f, 0.4f},
     {0, 0, 0, 0},
     {0.2f, 0.2f, 0.2f, 0.2f}},
    /* official: size int(128 + (T-128)(i+1)/4), linspace(5, ram, 4), linspace(0, mix, 4) */
    {"official-s", {171, 214, 257, 300},
     {0.2f, 0.2f, 0.2f, 0.2f},
     {5, 6.666667f, 8.333333f, 10},
     {0, 0, 0, 0},
     {0, 0, 0, 0},
     {0.2f, 0.2f, 0.2f, 0.2f}},
    {"official-m", {192, 256, 320, 384},
     {0.3f, 0.3f, 0.3f, 0.3f},
     {5, 8.333333f, 11.666667f, 15},
     {0, 0.0666667f, 0.1333333f, 0.2f},
     {0, 0.0666667f, 0.1333333f, 0.2f},
     {0.2f, 0.2f, 0.2f, 0.2f}},
    {"official-l", {192, 256, 320, 384},
     {0.4f, 0.4f, 0.4f, 0.4f},
     {5, 10, 15, 20},
     {0, 0.1666667f, 0.3333333f, 0.5f},
     {0, 0.1666667f, 0.3333333f, 0.5f},
     {0.2f, 0.2f, 0.2f, 0.2f}},
    {"official-xl", {192, 256, 320, 384},
     {0.4f, 0.4f, 0.4f, 0.4f},
     {5, 10, 15, 20},
     {0, 0.1666667f, 0.3333333f, 0.5f},
     {0, 0.1666667f, 0.3333333f, 0.5f},
     {0.2f, 0.2f, 0.2f, 0.2f}},
};

static void test_tables(void)
{
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        const expect4 *x = &tables[t];
        env2_schedule *s = NULL;
        /* 350 epochs as in the paper: stage bounds 0, 87, 175, 262, 350 */
        CHECK_EQ_INT(env2_schedule_create_preset(&s, x->name, 350, 0), ENV2_OK);
        if (!s) continue;
        CHECK_EQ_INT(env2_schedule_num_stages(s), 4);
        CHECK_EQ_INT(env2_schedule_total(s), 350);
        static const int64_t bounds[5] = {0, 87, 175, 262, 350};
        for (int i = 0; i < 4; i++) {
            int64_t b = -1, en = -1;
            int32_t size = -1;
            float v[ENV2_REG_COUNT] = {-1, -1, -1, -1, -1};
            CHECK_EQ_INT(env2_schedule_stage(s, i, &b, &en, &size, v, ENV2_REG_COUNT), ENV2_OK);
            CHECK_EQ_INT(b, bounds[i]);
            CHECK_EQ_INT(en, bounds[i + 1]);
            CHECK_MSG(size == x->size[i], "%s stage %d size %d, expected %d", x->name, i, size, x->size[i]);
            CHECK_NEAR(v[ENV2_REG_DROPOUT], x->dropout[i], TOL);
            CHECK_NEAR(v[ENV2_REG_RANDAUG], x->randaug[i], 1e-4);
            CHECK_NEAR(v[ENV2_REG_MIXUP], x->mixup[i], TOL);
            CHECK_NEAR(v[ENV2_REG_CUTMIX], x->cutmix[i], TOL);
            CHECK_NEAR(v[ENV2_REG_DROP_PATH], x->drop_path[i], TOL);
            /* the same through the position queries, at both ends of the stage */
            int64_t probe[2] = {bounds[i], bounds[i + 1] - 1};
            for (int k = 0; k < 2; k++) {
                int32_t st = -1, sz = -1;
                float val = -1;
                CHECK_EQ_INT(env2_schedule_at(s, probe[k], &st, &sz), ENV2_OK);
                CHECK_EQ_INT(st, i);
                CHECK_EQ_INT(sz, x->size[i]);
                CHECK_EQ_INT(env2_schedule_value(s, probe[k], ENV2_REG_RANDAUG, &val), ENV2_OK);
                CHECK_NEAR(val, x->randaug[i], 1e-4);
                CHECK_EQ_INT(env2_schedule_value(s, probe[k], ENV2_REG_MIXUP, &val), ENV2_OK);
                CHECK_NEAR(val, x->mixup[i], TOL);
            }
        }
        /* last stage ends exactly on the configured value */
        float last = -1;
        CHECK_EQ_INT(env2_schedule_value(s, 349, ENV2_REG_RANDAUG, &last), ENV2_OK);
        CHECK(last == x->randaug[3]);
        env2_schedule_destroy(s);
    }
    /* name lookup ignores case */
    env2_schedule *s = NULL;
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "Official-S", 8, 0), ENV2_OK);
    CHECK(s != NULL);
    env2_schedule_destroy(s);
}

/* Stage i of M covers [floor(i*total/M), floor((i+1)*total/M)). */
static void test_boundaries(void)
{
    env2_schedule *s = NULL;
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 64, 160, 32), ENV2_OK);
    if (!s) return;
    /* 10/4: bounds 0, 2, 5, 7, 10 */
    static const int32_t stage_of[10] = {0, 0, 1, 1, 1, 2, 2, 3, 3, 3};
    for (int p = 0; p < 10; p++) {
        int32_t st = -1;
        CHECK_EQ_INT(env2_schedule_at(s, p, &st, NULL), ENV2_OK);
        CHECK_MSG(st == stage_of[p], "pos %d stage %d expected %d", p, st, stage_of[p]);
    }
    static const int64_t b[5] = {0, 2, 5, 7, 10};
    /* sizes 64 + 96 i/3 = 64, 96, 128, 160 -> multiples of 32 */
    static const int32_t sz[4] = {64, 96, 128, 160};
    for (int i = 0; i < 4; i++) {
        int64_t lo, hi;
        int32_t size;
        CHECK_EQ_INT(env2_schedule_stage(s, i, &lo, &hi, &size, NULL, 0), ENV2_OK);
        CHECK_EQ_INT(lo, b[i]);
        CHECK_EQ_INT(hi, b[i + 1]);
        CHECK_EQ_INT(size, sz[i]);
    }
    /* past the end -> last stage */
    int32_t st = -1, size = -1;
    CHECK_EQ_INT(env2_schedule_at(s, 10, &st, &size), ENV2_OK);
    CHECK_EQ_INT(st, 3);
    CHECK_EQ_INT(size, 160);
    CHECK_EQ_INT(env2_schedule_at(s, INT64_MAX, &st, NULL), ENV2_OK);
    CHECK_EQ_INT(st, 3);
    /* NULL outs are allowed */
    CHECK_EQ_INT(env2_schedule_at(s, 3, NULL, NULL), ENV2_OK);
    env2_schedule_destroy(s);

    /* 7 over 3 stages: bounds 0, 2, 4, 7; size rounding to 8 with ties up:
     * 100 -> 100 + 101 i/2 = 100, 150.5, 201 -> 104, 152, 200 */
    CHECK_EQ_INT(env2_schedule_create(&s, 3, 7, 100, 201, 8), ENV2_OK);
    if (!s) return;
    static const int64_t b3[4] = {0, 2, 4, 7};
    static const int32_t sz3[3] = {104, 152, 200};
    for (int i = 0; i < 3; i++) {
        int64_t lo, hi;
        int32_t size3;
        CHECK_EQ_INT(env2_schedule_stage(s, i, &lo, &hi, &size3, NULL, 0), ENV2_OK);
        CHECK_EQ_INT(lo, b3[i]);
        CHECK_EQ_INT(hi, b3[i + 1]);
        CHECK_EQ_INT(size3, sz3[i]);
    }
    env2_schedule_destroy(s);

    /* ties go up with multiple 1: 10 -> 11 over 3 stages: 10, 10.5, 11 -> 10, 11, 11 */
    CHECK_EQ_INT(env2_schedule_create(&s, 3, 3, 10, 11, 1), ENV2_OK);
    if (!s) return;
    int32_t tsz[3];
    for (int i = 0; i < 3; i++) env2_schedule_stage(s, i, NULL, NULL, &tsz[i], NULL, 0);
    CHECK_EQ_INT(tsz[0], 10);
    CHECK_EQ_INT(tsz[1], 11);
    CHECK_EQ_INT(tsz[2], 11);
    /* shrinking schedules are allowed: values may decrease */
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_DROPOUT, 0.4f, 0.1f), ENV2_OK);
    float v = -1;
    CHECK_EQ_INT(env2_schedule_value(s, 1, ENV2_REG_DROPOUT, &v), ENV2_OK);
    CHECK_NEAR(v, 0.25, TOL);
    env2_schedule_destroy(s);

    /* huge totals do not overflow: stage 1 of 3 starts at floor(total/3) */
    int64_t big = INT64_MAX - 5;
    CHECK_EQ_INT(env2_schedule_create(&s, 3, big, 64, 64, 1), ENV2_OK);
    if (!s) return;
    int64_t lo, hi;
    CHECK_EQ_INT(env2_schedule_stage(s, 1, &lo, &hi, NULL, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(lo, big / 3);
    CHECK_EQ_INT(hi, (big / 3) * 2 + ((big % 3) * 2) / 3);
    CHECK_EQ_INT(env2_schedule_stage(s, 2, NULL, &hi, NULL, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(hi, big);
    CHECK_EQ_INT(env2_schedule_at(s, lo - 1, &st, NULL), ENV2_OK);
    CHECK_EQ_INT(st, 0);
    CHECK_EQ_INT(env2_schedule_at(s, lo, &st, NULL), ENV2_OK);
    CHECK_EQ_INT(st, 1);
    env2_schedule_destroy(s);
}

static void test_single_stage_and_defaults(void)
{
    env2_schedule *s = NULL;
    /* M = 1: everything at the end value */
    CHECK_EQ_INT(env2_schedule_create(&s, 1, 5, 128, 224, 1), ENV2_OK);
    if (!s) return;
    int32_t st = -1, size = -1;
    CHECK_EQ_INT(env2_schedule_at(s, 0, &st, &size), ENV2_OK);
    CHECK_EQ_INT(st, 0);
    CHECK_EQ_INT(size, 224);
    float v = -1;
    /* unset regularizers are 0 */
    for (int r = 0; r < ENV2_REG_COUNT; r++) {
        CHECK_EQ_INT(env2_schedule_value(s, 4, (env2_regularizer)r, &v), ENV2_OK);
        CHECK(v == 0.0f);
    }
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_RANDAUG, 5, 15), ENV2_OK);
    CHECK_EQ_INT(env2_schedule_value(s, 0, ENV2_REG_RANDAUG, &v), ENV2_OK);
    CHECK(v == 15.0f);
    int64_t b, en;
    CHECK_EQ_INT(env2_schedule_stage(s, 0, &b, &en, NULL, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(b, 0);
    CHECK_EQ_INT(en, 5);
    env2_schedule_destroy(s);

    /* presets with M = 1 train at the final settings */
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "official-l", 10, 1), ENV2_OK);
    if (!s) return;
    CHECK_EQ_INT(env2_schedule_at(s, 3, &st, &size), ENV2_OK);
    CHECK_EQ_INT(size, 384);
    CHECK_EQ_INT(env2_schedule_value(s, 3, ENV2_REG_MIXUP, &v), ENV2_OK);
    CHECK_NEAR(v, 0.5, TOL);
    env2_schedule_destroy(s);

    /* preset with another stage count: official-s in 2 stages:
     * sizes int(128 + 172 * 1/2) = 214, 300; randaug linspace(5, 10, 2) */
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "official-s", 100, 2), ENV2_OK);
    if (!s) return;
    float vals[2];
    CHECK_EQ_INT(env2_schedule_stage(s, 0, &b, &en, &size, vals, 2), ENV2_OK);
    CHECK_EQ_INT(size, 214);
    CHECK_EQ_INT(en, 50);
    CHECK_NEAR(vals[0], 0.2, TOL);
    CHECK_NEAR(vals[1], 5.0, TOL);
    CHECK_EQ_INT(env2_schedule_stage(s, 1, &b, &en, &size, vals, 2), ENV2_OK);
    CHECK_EQ_INT(size, 300);
    CHECK_NEAR(vals[1], 10.0, TOL);
    /* official-s in 3 stages: int(128 + 172/3) = 185, int(128 + 344/3) = 242 */
    env2_schedule_destroy(s);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "official-s", 100, 3), ENV2_OK);
    if (!s) return;
    CHECK_EQ_INT(env2_schedule_stage(s, 0, NULL, NULL, &size, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(size, 185);
    CHECK_EQ_INT(env2_schedule_stage(s, 1, NULL, NULL, &size, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(size, 242);
    /* set_range works on presets too */
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_CUTMIX, 0, 1.0f), ENV2_OK);
    CHECK_EQ_INT(env2_schedule_value(s, 50, ENV2_REG_CUTMIX, &v), ENV2_OK);
    CHECK_NEAR(v, 0.5, TOL);
    env2_schedule_destroy(s);
}

/* Any order of queries gives the same answers (no hidden cursor). */
static void test_purity(void)
{
    env2_schedule *s = NULL;
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "paper-l", 1000, 7), ENV2_OK);
    if (!s) return;
    int32_t fwd_stage[1000], fwd_size[1000];
    float fwd_val[1000];
    for (int p = 0; p < 1000; p++) {
        env2_schedule_at(s, p, &fwd_stage[p], &fwd_size[p]);
        env2_schedule_value(s, p, ENV2_REG_DROPOUT, &fwd_val[p]);
    }
    int bad = 0;
    uint32_t x = 12345;
    for (int k = 0; k < 3000; k++) {
        x = x * 1664525u + 1013904223u;
        int p = (int)(x % 1000u);
        int32_t st, size;
        float v;
        env2_schedule_at(s, p, &st, &size);
        env2_schedule_value(s, p, ENV2_REG_DROPOUT, &v);
        if (st != fwd_stage[p] || size != fwd_size[p] || v != fwd_val[p]) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    /* monotone stages, first and last as configured */
    int mono = 1;
    for (int p = 1; p < 1000; p++)
        if (fwd_stage[p] < fwd_stage[p - 1] || fwd_stage[p] > fwd_stage[p - 1] + 1) mono = 0;
    CHECK(mono);
    CHECK_EQ_INT(fwd_stage[0], 0);
    CHECK_EQ_INT(fwd_stage[999], 6);
    CHECK_EQ_INT(fwd_size[0], 128);
    CHECK_EQ_INT(fwd_size[999], 380);
    CHECK_NEAR(fwd_val[0], 0.1, TOL);
    CHECK_NEAR(fwd_val[999], 0.5, TOL);
    /* two handles with identical settings agree */
    env2_schedule *s2 = NULL;
    CHECK_EQ_INT(env2_schedule_create_preset(&s2, "paper-l", 1000, 7), ENV2_OK);
    if (s2) {
        int32_t st;
        env2_schedule_at(s2, 500, &st, NULL);
        CHECK_EQ_INT(st, fwd_stage[500]);
        env2_schedule_destroy(s2);
    }
    env2_schedule_destroy(s);
}

static void test_errors(void)
{
    env2_schedule *s = (env2_schedule *)&s; /* must be reset to NULL on failure */
    CHECK_EQ_INT(env2_schedule_create(NULL, 4, 10, 128, 300, 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create(&s, 0, 10, 128, 300, 1), ENV2_E_INVALID_ARG);
    CHECK(s == NULL);
    CHECK(strstr(env2_last_error(), "num_stages") != NULL);
    CHECK_EQ_INT(env2_schedule_create(&s, -2, 10, 128, 300, 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 3, 128, 300, 1), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "total") != NULL);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, -1, 128, 300, 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 7, 300, 1), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "size") != NULL);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 128, 4097, 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 4097, 128, 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 128, 7, 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 128, 300, 0), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "size_multiple") != NULL);
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 10, 128, 300, -8), ENV2_E_INVALID_ARG);
    CHECK(s == NULL);
    /* limits themselves are fine */
    CHECK_EQ_INT(env2_schedule_create(&s, 4, 4, 8, 4096, 1), ENV2_OK);
    env2_schedule_destroy(s);

    /* presets */
    s = (env2_schedule *)&s;
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "paper-xl", 100, 0), ENV2_E_NOT_FOUND);
    CHECK(s == NULL);
    CHECK(strstr(env2_last_error(), "paper-s") != NULL);
    CHECK(strstr(env2_last_error(), "official-xl") != NULL);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, NULL, 100, 0), ENV2_E_NOT_FOUND);
    CHECK(strstr(env2_last_error(), "official-m") != NULL);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "", 100, 0), ENV2_E_NOT_FOUND);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "official-s ", 100, 0), ENV2_E_NOT_FOUND);
    CHECK_EQ_INT(env2_schedule_create_preset(NULL, "paper-s", 100, 0), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "paper-s", 3, 0), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "paper-s", 100, -1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_create_preset(&s, "paper-s", 5, 6), ENV2_E_INVALID_ARG);
    CHECK(s == NULL);

    /* NULL handles: status for fallible calls, 0 for numeric queries, no crash */
    float v = 0;
    int32_t st;
    int64_t b;
    env2_schedule_destroy(NULL);
    CHECK_EQ_INT(env2_schedule_num_stages(NULL), 0);
    CHECK_EQ_INT(env2_schedule_total(NULL), 0);
    CHECK_EQ_INT(env2_schedule_set_range(NULL, ENV2_REG_MIXUP, 0, 0.2f), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "NULL") != NULL);
    CHECK_EQ_INT(env2_schedule_at(NULL, 0, &st, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_value(NULL, 0, ENV2_REG_MIXUP, &v), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_stage(NULL, 0, &b, NULL, NULL, NULL, 0), ENV2_E_INVALID_ARG);

    CHECK_EQ_INT(env2_schedule_create(&s, 4, 100, 128, 256, 16), ENV2_OK);
    if (!s) return;
    /* set_range validation */
    CHECK_EQ_INT(env2_schedule_set_range(s, (env2_regularizer)ENV2_REG_COUNT, 0, 0), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, (env2_regularizer)-1, 0, 0), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_MIXUP, -0.1f, 0.2f), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_CUTMIX, 0, -1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_DROPOUT, 0.1f, 1.0f), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "dropout") != NULL);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_DROP_PATH, 1.0f, 0.2f), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_RANDAUG, 5, 30.5f), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_RANDAUG, NAN, 10), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_MIXUP, 0, INFINITY), ENV2_E_INVALID_ARG);
    /* a failed set_range leaves the old range in place */
    CHECK_EQ_INT(env2_schedule_value(s, 99, ENV2_REG_DROPOUT, &v), ENV2_OK);
    CHECK(v == 0.0f);
    CHECK_EQ_INT(env2_schedule_value(s, 99, ENV2_REG_RANDAUG, &v), ENV2_OK);
    CHECK(v == 0.0f);
    /* accepted edges */
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_RANDAUG, 0, 30), ENV2_OK);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_DROPOUT, 0, 0.99f), ENV2_OK);
    CHECK_EQ_INT(env2_schedule_set_range(s, ENV2_REG_MIXUP, 0, 8), ENV2_OK);

    /* query validation */
    CHECK_EQ_INT(env2_schedule_at(s, -1, &st, NULL), ENV2_E_INVALID_ARG);
    CHECK(strstr(env2_last_error(), "negative") != NULL);
    CHECK_EQ_INT(env2_schedule_value(s, -5, ENV2_REG_MIXUP, &v), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_value(s, 0, ENV2_REG_MIXUP, NULL), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_value(s, 0, (env2_regularizer)ENV2_REG_COUNT, &v), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_value(s, 0, (env2_regularizer)-3, &v), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_stage(s, 4, &b, NULL, NULL, NULL, 0), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_stage(s, -1, &b, NULL, NULL, NULL, 0), ENV2_E_INVALID_ARG);
    float vals[ENV2_REG_COUNT + 1];
    CHECK_EQ_INT(env2_schedule_stage(s, 0, &b, NULL, NULL, vals, ENV2_REG_COUNT + 1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_stage(s, 0, &b, NULL, NULL, vals, -1), ENV2_E_INVALID_ARG);
    CHECK_EQ_INT(env2_schedule_stage(s, 3, NULL, NULL, NULL, NULL, ENV2_REG_COUNT), ENV2_OK);
    /* sizes with multiple 16: 128 + 128 i/3 = 128, 170.67, 213.33, 256 -> 128, 176, 208, 256 */
    int32_t size;
    CHECK_EQ_INT(env2_schedule_stage(s, 1, NULL, NULL, &size, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(size, 176);
    CHECK_EQ_INT(env2_schedule_stage(s, 2, NULL, NULL, &size, NULL, 0), ENV2_OK);
    CHECK_EQ_INT(size, 208);
    env2_schedule_destroy(s);
}

int main(void)
{
    test_tables();
    test_boundaries();
    test_single_stage_and_defaults();
    test_purity();
    test_errors();
    return test_summary();
}
