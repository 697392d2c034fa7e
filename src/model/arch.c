/* Architectures as data: the official stage strings of every variant, the
 * scaling and rounding rules (spec §1.2) and a parser for custom ones. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

typedef struct variant {
    const char *name;
    const char *stages;
    float width, depth;
    float dropout;
    int train_size, eval_size;
} variant;

#define V2_BASE "r1_k3_s1_e1_i32_o16_c1 r2_k3_s2_e4_i16_o32_c1 r2_k3_s2_e4_i32_o48_c1 " \
                "r3_k3_s2_e4_i48_o96_se0.25 r5_k3_s1_e6_i96_o112_se0.25 r8_k3_s2_e6_i112_o192_se0.25"

static const variant variants[] = {
    {"efficientnetv2-s",
     "r2_k3_s1_e1_i24_o24_c1 r4_k3_s2_e4_i24_o48_c1 r4_k3_s2_e4_i48_o64_c1 r6_k3_s2_e4_i64_o128_se0.25 "
     "r9_k3_s1_e6_i128_o160_se0.25 r15_k3_s2_e6_i160_o256_se0.25",
     1.0f, 1.0f, 0.2f, 300, 384},
    {"efficientnetv2-m",
     "r3_k3_s1_e1_i24_o24_c1 r5_k3_s2_e4_i24_o48_c1 r5_k3_s2_e4_i48_o80_c1 r7_k3_s2_e4_i80_o160_se0.25 "
     "r14_k3_s1_e6_i160_o176_se0.25 r18_k3_s2_e6_i176_o304_se0.25 r5_k3_s1_e6_i304_o512_se0.25",
     1.0f, 1.0f, 0.3f, 384, 480},
    {"efficientnetv2-l",
     "r4_k3_s1_e1_i32_o32_c1 r7_k3_s2_e4_i32_o64_c1 r7_k3_s2_e4_i64_o96_c1 r10_k3_s2_e4_i96_o192_se0.25 "
     "r19_k3_s1_e6_i192_o224_se0.25 r25_k3_s2_e6_i224_o384_se0.25 r7_k3_s1_e6_i384_o640_se0.25",
     1.0f, 1.0f, 0.4f, 384, 480},
    {"efficientnetv2-xl",
     "r4_k3_s1_e1_i32_o32_c1 r8_k3_s2_e4_i32_o64_c1 r8_k3_s2_e4_i64_o96_c1 r16_k3_s2_e4_i96_o192_se0.25 "
     "r24_k3_s1_e6_i192_o256_se0.25 r32_k3_s2_e6_i256_o512_se0.25 r8_k3_s1_e6_i512_o640_se0.25",
     1.0f, 1.0f, 0.4f, 384, 512},
    {"efficientnetv2-b0", V2_BASE, 1.0f, 1.0f, 0.2f, 192, 224},
    {"efficientnetv2-b1", V2_BASE, 1.0f, 1.1f, 0.2f, 192, 240},
    {"efficientnetv2-b2", V2_BASE, 1.1f, 1.2f, 0.3f, 208, 260},
    {"efficientnetv2-b3", V2_BASE, 1.2f, 1.4f, 0.3f, 240, 300},
};

/* Official round_filters: no "keep 90 %" correction (spec §1.2).  With a
 * multiplier of exactly 1 custom channel counts are kept as written, so a
 * user's architecture means what it says. */
static int round_filters(int c, float width)
{
    if (width == 1.0f) return c;
    double f = (double)c * width;
    int v = (int)floor(f + 4.0) / 8 * 8;
    return v < 8 ? 8 : v;
}

static int round_repeats(int r, float depth)
{
    return (int)ceil((double)depth * r - 1e-5); /* float multipliers: 1.2f * 5 must give 6 */
}

static env2_status parse_stage(const char *s, size_t len, stage_def *st, env2_err *e)
{
    char buf[128];
    if (len >= sizeof buf) return env2_fail(e, ENV2_E_FORMAT, "stage string too long: '%.40s...'", s);
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(st, 0, sizeof *st);
    st->kernel = 3;
    st->stride = 1;
    st->expand = 1;
    st->in = st->out = st->repeats = -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, "_", &save); tok; tok = strtok_r(NULL, "_", &save)) {
        char *end;
        if (tok[0] == 's' && tok[1] == 'e') {
            double v = strtod(tok + 2, &end);
            if (end == tok + 2 || *end || !(v > 0 && v <= 1))
                return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': bad SE ratio '%s' (want 0 < se <= 1)", (int)len, s, tok);
            st->se_ratio = (float)v;
            continue;
        }
        long v = strtol(tok + 1, &end, 10);
        if (end == tok + 1 || *end)
            return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': malformed field '%s'", (int)len, s, tok);
        switch (tok[0]) {
        case 'r': st->repeats = (int)v; break;
        case 'k': st->kernel = (int)v; break;
        case 's': st->stride = (int)v; break;
        case 'e': st->expand = (int)v; break;
        case 'i': st->in = (int)v; break;
        case 'o': st->out = (int)v; break;
        case 'c': st->fused = (int)v; break;
        default: return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': unknown field '%s'", (int)len, s, tok);
        }
    }
    if (st->repeats < 1 || st->repeats > 1000)
        return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': repeats r must be 1..1000", (int)len, s);
    if (st->kernel < 1 || st->kernel > 15 || st->kernel % 2 == 0)
        return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': kernel k must be odd, 1..15", (int)len, s);
    if (st->stride < 1 || st->stride > 4)
        return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': stride s must be 1..4", (int)len, s);
    if (st->expand < 1 || st->expand > 16)
        return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': expansion e must be 1..16", (int)len, s);
    if (st->in < 1 || st->in > 8192 || st->out < 1 || st->out > 8192)
        return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': channels i and o must be given, 1..8192", (int)len, s);
    if (st->fused != 0 && st->fused != 1)
        return env2_fail(e, ENV2_E_FORMAT, "stage '%.*s': c must be 0 or 1", (int)len, s);
    return ENV2_OK;
}

static env2_status parse_stages(arch_def *a, const char *str, env2_err *e)
{
    const char *p = str;
    a->nstages = 0;
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == ',' || *p == ';')) p++;
        if (!*p) break;
        const char *q = p;
        while (*q && !(isspace((unsigned char)*q) || *q == ',' || *q == ';')) q++;
        if (a->nstages == ENV2_MAX_STAGES)
            return env2_fail(e, ENV2_E_FORMAT, "too many stages (at most %d)", ENV2_MAX_STAGES);
        env2_status s = parse_stage(p, (size_t)(q - p), &a->st[a->nstages], e);
        if (s) return s;
        a->nstages++;
        p = q;
    }
    if (a->nstages == 0) return env2_fail(e, ENV2_E_FORMAT, "architecture string has no stages");
    return ENV2_OK;
}

static const variant *find_variant(const char *name)
{
    char full[64];
    if (strncmp(name, "efficientnetv2-", 15) == 0) snprintf(full, sizeof full, "%s", name);
    else snprintf(full, sizeof full, "efficientnetv2-%s", name);
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
        if (strcmp(variants[i].name, full) == 0) return &variants[i];
    return NULL;
}

env2_status arch_resolve(arch_def *a, const char *arch, float width, float depth, int stem, int head, env2_err *e)
{
    memset(a, 0, sizeof *a);
    const variant *v = NULL;
    int is_custom = strchr(arch, '_') != NULL;
    if (!is_custom) {
        v = find_variant(arch);
        if (!v)
            return env2_fail(e, ENV2_E_NOT_FOUND,
                             "unknown variant '%s' (known: efficientnetv2-s, -m, -l, -xl, -b0, -b1, -b2, -b3, or "
                             "stage strings like r2_k3_s1_e1_i24_o24_c1)", arch);
    }
    env2_status s = parse_stages(a, v ? v->stages : arch, e);
    if (s) return s;
    float wm = width * (v ? v->width : 1.0f), dm = depth * (v ? v->depth : 1.0f);
    if (!(wm > 0 && wm <= 16) || !(dm > 0 && dm <= 16))
        return env2_fail(e, ENV2_E_INVALID_ARG, "width/depth multipliers must be in (0, 16]");
    for (int i = 0; i < a->nstages; i++) {
        stage_def *st = &a->st[i];
        st->in = round_filters(st->in, wm);
        st->out = round_filters(st->out, wm);
        st->repeats = round_repeats(st->repeats, dm);
    }
    if (v) {
        snprintf(a->name, sizeof a->name, "%s", v->name);
        a->dropout = v->dropout;
        a->train_size = v->train_size;
        a->eval_size = v->eval_size;
    } else {
        snprintf(a->name, sizeof a->name, "custom");
        a->dropout = 0.2f;
        a->train_size = a->eval_size = 224;
    }
    a->stem = stem > 0 ? stem : a->st[0].in;
    a->head = head > 0 ? head : round_filters(1280, wm);
    if (a->stem > 8192 || a->head > 8192)
        return env2_fail(e, ENV2_E_INVALID_ARG, "stem/head width must be at most 8192");
    if (a->stem != a->st[0].in)
        return env2_fail(e, ENV2_E_INVALID_ARG, "stem width %d differs from the first stage's input %d", a->stem,
                         a->st[0].in);
    for (int i = 1; i < a->nstages; i++)
        if (a->st[i].in != a->st[i - 1].out)
            return env2_fail(e, ENV2_E_INVALID_ARG, "stage %d input %d differs from stage %d output %d", i + 1,
                             a->st[i].in, i, a->st[i - 1].out);
    return ENV2_OK;
}

void arch_to_string(const arch_def *a, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < a->nstages && off < len; i++) {
        const stage_def *st = &a->st[i];
        int n = snprintf(buf + off, len - off, "%sr%d_k%d_s%d_e%d_i%d_o%d", i ? " " : "", st->repeats, st->kernel,
                         st->stride, st->expand, st->in, st->out);
        if (n < 0) break;
        off += (size_t)n;
        if (off < len && st->se_ratio > 0) {
            n = snprintf(buf + off, len - off, "_se%g", st->se_ratio);
            if (n > 0) off += (size_t)n;
        }
        if (off < len && st->fused) {
            n = snprintf(buf + off, len - off, "_c1");
            if (n > 0) off += (size_t)n;
        }
    }
}
