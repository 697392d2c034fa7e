/* Progressive-learning schedule (paper Algorithm 1 and the official code's
 * variant).  Everything a query returns is recomputed from the handful of
 * numbers stored here, so a schedule is a pure function of the position and a
 * resumed run lands in exactly the same stage with the same values. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    /* Algorithm 1: size_i = start + (end - start) * i / (M - 1), rounded to
     * the nearest multiple of size_multiple (ties up). */
    SIZE_LINEAR = 0,
    /* google/automl main.py: size_i = int(start + (end - start) * (i+1) / M),
     * evaluated in double precision exactly as Python does. */
    SIZE_OFFICIAL = 1
};

struct env2_schedule {
    int32_t num_stages;
    int64_t total;
    int32_t size_start, size_end, size_multiple;
    int size_rule;
    float reg_start[ENV2_REG_COUNT], reg_end[ENV2_REG_COUNT];
};

#define IMG_SIZE_MIN 8
#define IMG_SIZE_MAX 4096

static const char *const reg_names[ENV2_REG_COUNT] = {"dropout", "randaug", "mixup", "cutmix", "drop_path"};

/* floor(i * total / M) without overflowing int64 for any total: the
 * remainder term i * (total % M) is below M * M < 2^62. */
static int64_t stage_begin(const env2_schedule *s, int64_t i)
{
    int64_t m = s->num_stages, q = s->total / m, r = s->total % m;
    return i * q + (i * r) / m;
}

static int32_t stage_of(const env2_schedule *s, int64_t pos)
{
    int32_t lo = 0, hi = s->num_stages - 1;
    if (pos >= s->total) return hi;
    /* largest i with begin(i) <= pos; begin is non-decreasing in i */
    while (lo < hi) {
        int32_t mid = lo + (hi - lo + 1) / 2;
        if (stage_begin(s, mid) <= pos) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static int32_t stage_size(const env2_schedule *s, int32_t i)
{
    int64_t m = s->num_stages;
    if (s->size_rule == SIZE_OFFICIAL) {
        /* ratio and product in double, like `int(ibase + (T - ibase) * ratio)`
         * in Python, so that the preset reproduces the official sizes bit for
         * bit, including any float truncation the original would do. */
        double ratio = (double)(i + 1) / (double)m;
        return (int32_t)((double)s->size_start + (double)(s->size_end - s->size_start) * ratio);
    }
    if (m == 1) return s->size_end;
    /* exact rational rounding: value = num / (M-1); nearest multiple k of
     * `mult` with ties up is floor((2 num + (M-1) mult) / (2 (M-1) mult)). */
    int64_t mult = s->size_multiple;
    int64_t num = (int64_t)s->size_start * (m - 1) + (int64_t)(s->size_end - s->size_start) * i;
    int64_t den = 2 * (m - 1) * mult;
    int64_t twice = 2 * num + (m - 1) * mult;
    int64_t k = twice >= 0 ? twice / den : -((-twice + den - 1) / den);
    int64_t size = k * mult;
    if (size < mult) size = mult; /* a size of 0 would be unusable */
    return (int32_t)size;
}

static float stage_value(const env2_schedule *s, int32_t i, int reg)
{
    int32_t m = s->num_stages;
    double a = s->reg_start[reg], b = s->reg_end[reg];
    /* M = 1 is "no progression": train with the final settings, as the
     * official code does when progressive stages are off. */
    if (m == 1 || i == m - 1) return s->reg_end[reg];
    return (float)(a + (b - a) * (double)i / (double)(m - 1));
}

static env2_status check_reg_value(int reg, float v, const char *which)
{
    env2_err *e = env2_tls_err();
    if (!isfinite(v) || v < 0.0f)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: %s value of %s must be finite and >= 0 (got %g)", which,
                         reg_names[reg], (double)v);
    if ((reg == ENV2_REG_DROPOUT || reg == ENV2_REG_DROP_PATH) && v >= 1.0f)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: %s rate of %s must be in [0, 1) (got %g)", which,
                         reg_names[reg], (double)v);
    if (reg == ENV2_REG_RANDAUG && v > 30.0f)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: %s RandAugment magnitude must be in [0, 30] (got %g)", which,
                         (double)v);
    return ENV2_OK;
}

static env2_status validate_shape(int32_t num_stages, int64_t total)
{
    env2_err *e = env2_tls_err();
    if (num_stages < 1)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: num_stages must be >= 1 (got %d)", (int)num_stages);
    if (total < num_stages)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: total (%lld) must be >= num_stages (%d)", (long long)total,
                         (int)num_stages);
    return ENV2_OK;
}

ENV2_API env2_status env2_schedule_create(env2_schedule **out, int32_t num_stages, int64_t total, int32_t size_start,
                                          int32_t size_end, int32_t size_multiple)
{
    env2_err *e = env2_tls_err();
    env2_status st;
    if (!out) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_create: out is NULL");
    *out = NULL;
    if ((st = validate_shape(num_stages, total)) != ENV2_OK) return st;
    if (size_start < IMG_SIZE_MIN || size_start > IMG_SIZE_MAX || size_end < IMG_SIZE_MIN ||
        size_end > IMG_SIZE_MAX)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: image sizes must be in [%d, %d] (got %d -> %d)", IMG_SIZE_MIN,
                         IMG_SIZE_MAX, (int)size_start, (int)size_end);
    if (size_multiple < 1 || size_multiple > IMG_SIZE_MAX)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: size_multiple must be in [1, %d] (got %d)", IMG_SIZE_MAX,
                         (int)size_multiple);
    env2_schedule *s = env2_calloc(1, sizeof *s);
    if (!s) return env2_fail(e, ENV2_E_NOMEM, "env2_schedule_create: out of memory");
    s->num_stages = num_stages;
    s->total = total;
    s->size_start = size_start;
    s->size_end = size_end;
    s->size_multiple = size_multiple;
    s->size_rule = SIZE_LINEAR;
    *out = s;
    return ENV2_OK;
}

typedef struct preset {
    const char *name;
    int size_rule;
    int32_t size_start, size_end;
    float start[ENV2_REG_COUNT], end[ENV2_REG_COUNT]; /* dropout, randaug, mixup, cutmix, drop_path */
} preset;

static const preset presets[] = {
    /* paper Table 6 */
    {"paper-s", SIZE_LINEAR, 128, 300, {0.1f, 5, 0, 0, 0.2f}, {0.3f, 15, 0, 0, 0.2f}},
    {"paper-m", SIZE_LINEAR, 128, 380, {0.1f, 5, 0, 0, 0.2f}, {0.4f, 20, 0.2f, 0, 0.2f}},
    {"paper-l", SIZE_LINEAR, 128, 380, {0.1f, 5, 0, 0, 0.2f}, {0.5f, 25, 0.4f, 0, 0.2f}},
    /* google/automl effnetv2_configs.py + main.py */
    {"official-s", SIZE_OFFICIAL, 128, 300, {0.2f, 5, 0, 0, 0.2f}, {0.2f, 10, 0, 0, 0.2f}},
    {"official-m", SIZE_OFFICIAL, 128, 384, {0.3f, 5, 0, 0, 0.2f}, {0.3f, 15, 0.2f, 0.2f, 0.2f}},
    {"official-l", SIZE_OFFICIAL, 128, 384, {0.4f, 5, 0, 0, 0.2f}, {0.4f, 20, 0.5f, 0.5f, 0.2f}},
    {"official-xl", SIZE_OFFICIAL, 128, 384, {0.4f, 5, 0, 0, 0.2f}, {0.4f, 20, 0.5f, 0.5f, 0.2f}},
};
#define PRESET_NAMES "paper-s, paper-m, paper-l, official-s, official-m, official-l, official-xl"

static int name_equal(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a, y = *b;
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return *a == *b;
}

ENV2_API env2_status env2_schedule_create_preset(env2_schedule **out, const char *preset_name, int64_t total,
                                                 int32_t num_stages)
{
    env2_err *e = env2_tls_err();
    const preset *p = NULL;
    env2_status st;
    if (!out) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_create_preset: out is NULL");
    *out = NULL;
    if (preset_name)
        for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
            if (name_equal(preset_name, presets[i].name)) p = &presets[i];
    if (!p)
        return env2_fail(e, ENV2_E_NOT_FOUND, "schedule: unknown preset \"%s\" (valid: " PRESET_NAMES ")",
                         preset_name ? preset_name : "(null)");
    if (num_stages < 0)
        return env2_fail(e, ENV2_E_INVALID_ARG, "schedule: num_stages must be >= 0 (0 = 4) (got %d)", (int)num_stages);
    if (num_stages == 0) num_stages = 4;
    if ((st = validate_shape(num_stages, total)) != ENV2_OK) return st;
    env2_schedule *s = env2_calloc(1, sizeof *s);
    if (!s) return env2_fail(e, ENV2_E_NOMEM, "env2_schedule_create_preset: out of memory");
    s->num_stages = num_stages;
    s->total = total;
    s->size_start = p->size_start;
    s->size_end = p->size_end;
    s->size_multiple = 1;
    s->size_rule = p->size_rule;
    memcpy(s->reg_start, p->start, sizeof s->reg_start);
    memcpy(s->reg_end, p->end, sizeof s->reg_end);
    *out = s;
    return ENV2_OK;
}

ENV2_API void env2_schedule_destroy(env2_schedule *schedule) { env2_free(schedule); }

ENV2_API env2_status env2_schedule_set_range(env2_schedule *schedule, env2_regularizer reg, float start, float end)
{
    env2_err *e = env2_tls_err();
    env2_status st;
    if (!schedule) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_set_range: schedule is NULL");
    if ((int)reg < 0 || (int)reg >= ENV2_REG_COUNT)
        return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_set_range: unknown regularizer %d", (int)reg);
    if ((st = check_reg_value((int)reg, start, "start")) != ENV2_OK) return st;
    if ((st = check_reg_value((int)reg, end, "end")) != ENV2_OK) return st;
    schedule->reg_start[reg] = start;
    schedule->reg_end[reg] = end;
    return ENV2_OK;
}

ENV2_API int32_t env2_schedule_num_stages(const env2_schedule *schedule)
{
    return schedule ? schedule->num_stages : 0;
}

ENV2_API int64_t env2_schedule_total(const env2_schedule *schedule) { return schedule ? schedule->total : 0; }

ENV2_API env2_status env2_schedule_at(const env2_schedule *schedule, int64_t pos, int32_t *stage, int32_t *image_size)
{
    env2_err *e = env2_tls_err();
    if (!schedule) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_at: schedule is NULL");
    if (pos < 0) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_at: negative position %lld", (long long)pos);
    int32_t i = stage_of(schedule, pos);
    if (stage) *stage = i;
    if (image_size) *image_size = stage_size(schedule, i);
    return ENV2_OK;
}

ENV2_API env2_status env2_schedule_value(const env2_schedule *schedule, int64_t pos, env2_regularizer reg,
                                         float *value)
{
    env2_err *e = env2_tls_err();
    if (!schedule) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_value: schedule is NULL");
    if (!value) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_value: value is NULL");
    if (pos < 0)
        return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_value: negative position %lld", (long long)pos);
    if ((int)reg < 0 || (int)reg >= ENV2_REG_COUNT)
        return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_value: unknown regularizer %d", (int)reg);
    *value = stage_value(schedule, stage_of(schedule, pos), (int)reg);
    return ENV2_OK;
}

ENV2_API env2_status env2_schedule_stage(const env2_schedule *schedule, int32_t i, int64_t *begin, int64_t *end,
                                         int32_t *image_size, float *values, int32_t count)
{
    env2_err *e = env2_tls_err();
    if (!schedule) return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_stage: schedule is NULL");
    if (i < 0 || i >= schedule->num_stages)
        return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_stage: stage %d out of range [0, %d)", (int)i,
                         (int)schedule->num_stages);
    if (count < 0 || count > ENV2_REG_COUNT)
        return env2_fail(e, ENV2_E_INVALID_ARG, "env2_schedule_stage: count %d out of range [0, %d]", (int)count,
                         ENV2_REG_COUNT);
    if (begin) *begin = stage_begin(schedule, i);
    if (end) *end = stage_begin(schedule, (int64_t)i + 1);
    if (image_size) *image_size = stage_size(schedule, i);
    if (values)
        for (int32_t k = 0; k < count; k++) values[k] = stage_value(schedule, i, k);
    return ENV2_OK;
}
