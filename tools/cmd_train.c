/* env2 train | eval | predict | schedule: progressive-learning training on
 * in-memory datasets, evaluation and prediction with saved models, and the
 * schedule table.  docs/TRAINING.md is the user guide. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "efficientnetv2.h"
#include "env2_cli.h"
#include "io/io.h"
#include "train/augment.h"
#include "train/data.h"

/* ---- small helpers --------------------------------------------------------- */

static int usage_err(const char *cmd, const char *fmt, ...) ENV2_PRINTF(2, 3);
static int usage_err(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "env2 %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'env2 %s --help' for usage.\n", cmd);
    return 2;
}

static int runtime_err(const char *cmd, const char *what, const char *detail)
{
    fprintf(stderr, "env2 %s: %s%s%s\n", cmd, what, detail && detail[0] ? ": " : "", detail ? detail : "");
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* growable string for JSON */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) ENV2_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->oom) return;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + (size_t)n;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sb_add(b, "\\%c", c);
        else if (c < 0x20) sb_add(b, "\\u%04x", c);
        else sb_add(b, "%c", c);
    }
    sb_add(b, "\"");
}

/* JSON has no NaN: non-finite numbers become null */
static void sb_num(sbuf *b, double v)
{
    if (isfinite(v)) sb_add(b, "%.17g", v);
    else sb_add(b, "null");
}

static void sb_num6(sbuf *b, double v)
{
    if (isfinite(v)) sb_add(b, "%.6g", v);
    else sb_add(b, "null");
}

static int join_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int file_exists(const char *p)
{
    struct stat s;
    return stat(p, &s) == 0;
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i < n; i++)
        if (tmp[i] == '/') {
            tmp[i] = '\0';
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
            tmp[i] = '/';
        }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
    return 0;
}

/* ---- configuration ----------------------------------------------------------
 * One table drives parsing, the JSON stored in checkpoints and the check that
 * a --resume does not silently change what the run is. */

#define PATHLEN 1024

typedef struct train_cfg {
    char arch[PATHLEN];
    int stem, head;
    double width, depth;
    int classes;
    char data[32];
    char data_dir[PATHLEN];
    int epochs, batch;
    char optimizer[16];
    double lr, wd, warmup_epochs;
    char lr_schedule[16];
    double label_smoothing, ema, dropout, drop_path;
    int ema_restart;
    char progressive[32];
    int stages, size_start, size_end, size_multiple;
    double randaug_start, randaug_end, mixup_start, mixup_end, cutmix_start, cutmix_end, dropout_start, dropout_end;
    double crop_area_min;
    int randaug_ref_size;
    int no_flip;
    int val_split;
    int threads;
    char seed[24];
    char out[PATHLEN];
    int resume, overwrite;
    int eval_size, eval_stage_size;
    long long max_steps, eval_max;
    int quiet, no_prefetch, no_winograd;
    long long stop_after;
    char keep_activations[8];
} train_cfg;

enum { T_STR, T_INT, T_LL, T_DBL, T_FLAG };
/* F_RUN: part of what the run is -- stored in the checkpoint and compared on
 * --resume; F_KEEP: stored and restored by --resume, but may be changed there
 * because results do not depend on it; F_SCHED: also accepted by
 * `env2 schedule` */
enum { F_RUN = 1, F_SCHED = 2, F_KEEP = 4 };

typedef struct topt {
    const char *name;
    int type;
    size_t off, size;
    int flags;
    double lo, hi;
} topt;

#define OPT(n, t, field, f, lo, hi) {n, t, offsetof(train_cfg, field), sizeof(((train_cfg *)0)->field), f, lo, hi}
static const topt topts[] = {
    OPT("arch", T_STR, arch, F_RUN, 0, 0),
    OPT("stem", T_INT, stem, F_RUN, 1, 8192),
    OPT("head", T_INT, head, F_RUN, 1, 8192),
    OPT("width", T_DBL, width, F_RUN, 0.01, 100),
    OPT("depth", T_DBL, depth, F_RUN, 0.01, 100),
    OPT("classes", T_INT, classes, F_RUN, 1, 1000000),
    OPT("data", T_STR, data, F_RUN, 0, 0),
    OPT("data-dir", T_STR, data_dir, F_KEEP, 0, 0),
    OPT("epochs", T_INT, epochs, F_RUN | F_SCHED, 1, 1000000),
    OPT("batch", T_INT, batch, F_RUN, 1, 65536),
    OPT("optimizer", T_STR, optimizer, F_RUN, 0, 0),
    OPT("lr", T_DBL, lr, F_RUN, 0, 1e6),
    OPT("wd", T_DBL, wd, F_RUN, 0, 1e6),
    OPT("warmup-epochs", T_DBL, warmup_epochs, F_RUN, 0, 1e6),
    OPT("lr-schedule", T_STR, lr_schedule, F_RUN, 0, 0),
    OPT("label-smoothing", T_DBL, label_smoothing, F_RUN, 0, 0.999999),
    OPT("ema", T_DBL, ema, F_RUN, 0, 0.999999999),
    OPT("ema-restart", T_FLAG, ema_restart, F_RUN, 0, 0),
    OPT("dropout", T_DBL, dropout, F_RUN | F_SCHED, 0, 0.999999),
    OPT("drop-path", T_DBL, drop_path, F_RUN | F_SCHED, 0, 0.999999),
    OPT("progressive", T_STR, progressive, F_RUN | F_SCHED, 0, 0),
    OPT("stages", T_INT, stages, F_RUN | F_SCHED, 1, 1000),
    OPT("size-start", T_INT, size_start, F_RUN | F_SCHED, 8, 4096),
    OPT("size-end", T_INT, size_end, F_RUN | F_SCHED, 8, 4096),
    OPT("size-multiple", T_INT, size_multiple, F_RUN | F_SCHED, 1, 4096),
    OPT("randaug-start", T_DBL, randaug_start, F_RUN | F_SCHED, 0, 30),
    OPT("randaug-end", T_DBL, randaug_end, F_RUN | F_SCHED, 0, 30),
    OPT("mixup-start", T_DBL, mixup_start, F_RUN | F_SCHED, 0, 1e6),
    OPT("mixup-end", T_DBL, mixup_end, F_RUN | F_SCHED, 0, 1e6),
    OPT("cutmix-start", T_DBL, cutmix_start, F_RUN | F_SCHED, 0, 1e6),
    OPT("cutmix-end", T_DBL, cutmix_end, F_RUN | F_SCHED, 0, 1e6),
    OPT("dropout-start", T_DBL, dropout_start, F_RUN | F_SCHED, 0, 0.999999),
    OPT("dropout-end", T_DBL, dropout_end, F_RUN | F_SCHED, 0, 0.999999),
    OPT("crop-area-min", T_DBL, crop_area_min, F_RUN, 1e-6, 1),
    OPT("randaug-ref-size", T_INT, randaug_ref_size, F_RUN, 0, 65536),
    OPT("no-flip", T_FLAG, no_flip, F_RUN, 0, 0),
    OPT("val-split", T_INT, val_split, F_RUN, 0, 2147483647.0),
    OPT("threads", T_INT, threads, F_KEEP, 0, 1024),
    OPT("seed", T_STR, seed, F_RUN, 0, 0),
    OPT("out", T_STR, out, 0, 0, 0),
    OPT("resume", T_FLAG, resume, 0, 0, 0),
    OPT("overwrite", T_FLAG, overwrite, 0, 0, 0),
    OPT("eval-size", T_INT, eval_size, F_KEEP, 8, 4096),
    OPT("eval-stage-size", T_FLAG, eval_stage_size, F_KEEP, 0, 0),
    OPT("max-steps", T_LL, max_steps, F_RUN, 1, 9e15),
    OPT("eval-max", T_LL, eval_max, F_KEEP, 1, 9e15),
    OPT("quiet", T_FLAG, quiet, 0, 0, 0),
    OPT("no-winograd", T_FLAG, no_winograd, F_RUN, 0, 0),
    OPT("no-prefetch", T_FLAG, no_prefetch, F_KEEP, 0, 0),
    OPT("stop-after", T_LL, stop_after, 0, 1, 9e15),
    OPT("keep-activations", T_STR, keep_activations, F_KEEP, 0, 0),
};
#define NOPTS ((int)(sizeof topts / sizeof topts[0]))

static void cfg_defaults(train_cfg *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "efficientnetv2-b0");
    c->width = c->depth = 1;
    snprintf(c->data, sizeof c->data, "fashion-mnist");
    c->epochs = 10;
    c->batch = 64;
    snprintf(c->optimizer, sizeof c->optimizer, "rmsprop");
    c->lr = -1;
    c->wd = 1e-5;
    c->warmup_epochs = -1;
    snprintf(c->lr_schedule, sizeof c->lr_schedule, "exp");
    c->label_smoothing = 0.1;
    c->ema = 0;
    c->dropout = c->drop_path = -1;
    c->randaug_start = c->randaug_end = c->mixup_start = c->mixup_end = -1;
    c->cutmix_start = c->cutmix_end = c->dropout_start = c->dropout_end = -1;
    c->size_multiple = 1;
    c->crop_area_min = 0.25;
    snprintf(c->seed, sizeof c->seed, "0");
    snprintf(c->out, sizeof c->out, "env2-run");
    snprintf(c->keep_activations, sizeof c->keep_activations, "auto");
}

static void *field(train_cfg *c, const topt *o) { return (char *)c + o->off; }
static const void *cfield(const train_cfg *c, const topt *o) { return (const char *)c + o->off; }

static int valid_seed(const char *s)
{
    char *end;
    if (!s[0] || s[0] == '-') return 0;
    errno = 0;
    (void)strtoull(s, &end, 10);
    return !*end && !errno;
}

/* Sets option o from text; returns 0 or -1 (message in err). */
static int set_opt(train_cfg *c, const topt *o, const char *v, char *err, size_t errlen)
{
    long long l;
    double d;
    switch (o->type) {
    case T_STR:
        if (strlen(v) >= o->size) {
            snprintf(err, errlen, "--%s is too long", o->name);
            return -1;
        }
        if (!strcmp(o->name, "seed") && !valid_seed(v)) {
            snprintf(err, errlen, "--seed must be an unsigned 64-bit integer (got '%s')", v);
            return -1;
        }
        memcpy(field(c, o), v, strlen(v) + 1);
        return 0;
    case T_INT:
    case T_LL:
        if (parse_long(v, (long long)o->lo, (long long)o->hi, &l)) {
            snprintf(err, errlen, "--%s needs an integer in %.0f..%.0f (got '%s')", o->name, o->lo, o->hi, v);
            return -1;
        }
        if (o->type == T_INT) *(int *)field(c, o) = (int)l;
        else *(long long *)field(c, o) = l;
        return 0;
    case T_DBL:
        if (parse_double(v, o->lo, o->hi, &d)) {
            snprintf(err, errlen, "--%s needs a number in [%g, %g] (got '%s')", o->name, o->lo, o->hi, v);
            return -1;
        }
        *(double *)field(c, o) = d;
        return 0;
    default:
        *(int *)field(c, o) = 1;
        return 0;
    }
}

static int opt_equal(const train_cfg *a, const train_cfg *b, const topt *o)
{
    switch (o->type) {
    case T_STR: return !strcmp(cfield(a, o), cfield(b, o));
    case T_INT:
    case T_FLAG: return *(const int *)cfield(a, o) == *(const int *)cfield(b, o);
    case T_LL: return *(const long long *)cfield(a, o) == *(const long long *)cfield(b, o);
    default: return *(const double *)cfield(a, o) == *(const double *)cfield(b, o);
    }
}

static void opt_format(const train_cfg *c, const topt *o, char *buf, size_t len)
{
    switch (o->type) {
    case T_STR: snprintf(buf, len, "%s", (const char *)cfield(c, o)); break;
    case T_INT:
    case T_FLAG: snprintf(buf, len, "%d", *(const int *)cfield(c, o)); break;
    case T_LL: snprintf(buf, len, "%lld", *(const long long *)cfield(c, o)); break;
    default: snprintf(buf, len, "%.17g", *(const double *)cfield(c, o)); break;
    }
}

static const topt *find_opt(const char *name)
{
    for (int i = 0; i < NOPTS; i++)
        if (!strcmp(topts[i].name, name)) return &topts[i];
    return NULL;
}

/* Parses argv[first..] into c; given[i] marks options seen.  only_flags:
 * options allowed (F_SCHED for `env2 schedule`, 0 = all).  Returns 0, 1 for
 * --help, or 2 after printing a usage error. */
static int parse_train_args(const char *cmd, int argc, char **argv, int first, train_cfg *c, unsigned char *given,
                            int only_flags)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const topt *o;
        char err[256];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (strncmp(a, "--", 2) != 0) return usage_err(cmd, "unexpected argument '%s'", a);
        o = find_opt(a + 2);
        if (!o || (only_flags && !(o->flags & only_flags)))
            return usage_err(cmd, "unknown option '%s'", a);
        if (o->type != T_FLAG) {
            if (i + 1 >= argc) return usage_err(cmd, "missing value for %s", a);
            i++;
        }
        if (set_opt(c, o, o->type == T_FLAG ? "" : argv[i], err, sizeof err)) return usage_err(cmd, "%s", err);
        given[o - topts] = 1;
    }
    return 0;
}

/* ---- checkpoint user metadata --------------------------------------------- */

typedef struct run_state {
    int64_t epoch;          /* epoch to run next (0-based) */
    int64_t batch;          /* first batch of it still to train */
    int64_t step;           /* trainer steps taken */
    double loss_sum, wall_s, train_s;
    int64_t correct, seen;
} run_state;

static char *state_json(const train_cfg *c, const run_state *s)
{
    sbuf b = {0};
    int first = 1;
    sb_add(&b, "{\"format\":\"env2-train\",\"version\":1,\"config\":{");
    for (int i = 0; i < NOPTS; i++) {
        const topt *o = &topts[i];
        if (!(o->flags & (F_RUN | F_KEEP))) continue;
        sb_add(&b, "%s", first ? "" : ",");
        first = 0;
        sb_str(&b, o->name);
        sb_add(&b, ":");
        switch (o->type) {
        case T_STR: sb_str(&b, cfield(c, o)); break;
        case T_INT:
        case T_FLAG: sb_add(&b, "%d", *(const int *)cfield(c, o)); break;
        case T_LL: sb_add(&b, "%lld", *(const long long *)cfield(c, o)); break;
        default: sb_num(&b, *(const double *)cfield(c, o)); break;
        }
    }
    sb_add(&b, "},\"state\":{\"epoch\":%lld,\"batch\":%lld,\"step\":%lld,\"correct\":%lld,\"seen\":%lld,\"loss_sum\":",
           (long long)s->epoch, (long long)s->batch, (long long)s->step, (long long)s->correct, (long long)s->seen);
    sb_num(&b, s->loss_sum);
    sb_add(&b, ",\"wall_s\":");
    sb_num(&b, s->wall_s);
    sb_add(&b, ",\"train_s\":");
    sb_num(&b, s->train_s);
    sb_add(&b, "}}");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* Reads only the JSON header of a safetensors file and returns a malloc'd
 * copy of __metadata__.user: checkpoints can be large and only the header is
 * needed to rebuild the run before the trainer exists. */
static env2_status read_user_meta(const char *path, char **out, env2_err *e)
{
    FILE *f = fopen(path, "rb");
    unsigned char n8[8];
    uint64_t hl = 0;
    char *hdr = NULL;
    json_reader r;
    env2_status st;
    int idx = 0, has = 0;
    const char *key;
    *out = NULL;
    if (!f) return env2_fail(e, ENV2_E_IO, "cannot open %s: %s", path, strerror(errno));
    if (fread(n8, 1, 8, f) != 8) {
        fclose(f);
        return env2_fail(e, ENV2_E_FORMAT, "%s: too short for a safetensors file", path);
    }
    for (int i = 7; i >= 0; i--) hl = hl << 8 | n8[i];
    if (hl < 2 || hl > 100000000ULL) {
        fclose(f);
        return env2_fail(e, ENV2_E_FORMAT, "%s: implausible safetensors header length %llu", path,
                         (unsigned long long)hl);
    }
    hdr = malloc((size_t)hl + 1);
    if (!hdr) {
        fclose(f);
        return env2_fail(e, ENV2_E_NOMEM, "out of memory reading %s", path);
    }
    if (fread(hdr, 1, (size_t)hl, f) != (size_t)hl) {
        fclose(f);
        free(hdr);
        return env2_fail(e, ENV2_E_FORMAT, "%s: truncated safetensors header", path);
    }
    fclose(f);
    hdr[hl] = '\0';
    st = json_reader_init(&r, hdr, (size_t)hl, e);
    if (st == ENV2_OK) st = json_begin_object(&r, e);
    while (st == ENV2_OK && (st = json_next_member(&r, &idx, &has, &key, e)) == ENV2_OK && has) {
        if (strcmp(key, "__metadata__") != 0) {
            st = json_skip_value(&r, e);
            continue;
        }
        {
            int idx2 = 0, has2 = 0;
            const char *k2;
            st = json_begin_object(&r, e);
            while (st == ENV2_OK && (st = json_next_member(&r, &idx2, &has2, &k2, e)) == ENV2_OK && has2) {
                if (!strcmp(k2, "user") && json_peek(&r) == JSON_STRING) {
                    const char *v;
                    size_t vl;
                    st = json_read_string(&r, &v, &vl, e);
                    if (st == ENV2_OK) {
                        free(*out);
                        *out = malloc(vl + 1);
                        if (!*out) st = env2_fail(e, ENV2_E_NOMEM, "out of memory");
                        else memcpy(*out, v, vl + 1);
                    }
                } else {
                    st = json_skip_value(&r, e);
                }
            }
        }
    }
    json_reader_free(&r);
    free(hdr);
    if (st != ENV2_OK) {
        free(*out);
        *out = NULL;
        return env2_err_prefix(e, st, "%s", path);
    }
    if (!*out) return env2_fail(e, ENV2_E_FORMAT, "%s was not written by `env2 train` (no run configuration in it)", path);
    return ENV2_OK;
}

static env2_status parse_state_json(const char *text, train_cfg *c, run_state *s, env2_err *e)
{
    json_reader r;
    env2_status st;
    int idx = 0, has = 0, seen_cfg = 0, seen_state = 0, version = 0;
    const char *key;
    memset(s, 0, sizeof *s);
    st = json_reader_init(&r, text, strlen(text), e);
    if (st == ENV2_OK) st = json_begin_object(&r, e);
    while (st == ENV2_OK && (st = json_next_member(&r, &idx, &has, &key, e)) == ENV2_OK && has) {
        if (!strcmp(key, "version")) {
            int64_t v;
            st = json_read_int64(&r, &v, e);
            version = (int)v;
            if (st == ENV2_OK && v != 1)
                st = env2_fail(e, ENV2_E_VERSION, "run state version %lld is not supported", (long long)v);
        } else if (!strcmp(key, "config")) {
            int i2 = 0, h2 = 0;
            const char *k2;
            seen_cfg = 1;
            st = json_begin_object(&r, e);
            while (st == ENV2_OK && (st = json_next_member(&r, &i2, &h2, &k2, e)) == ENV2_OK && h2) {
                const topt *o = find_opt(k2);
                if (!o || !(o->flags & (F_RUN | F_KEEP))) {
                    st = env2_fail(e, ENV2_E_VERSION, "unknown setting \"%s\" in the stored run configuration", k2);
                    break;
                }
                if (o->type == T_STR) {
                    const char *v;
                    size_t vl;
                    st = json_read_string(&r, &v, &vl, e);
                    if (st == ENV2_OK && vl >= o->size) st = env2_fail(e, ENV2_E_FORMAT, "stored %s is too long", k2);
                    if (st == ENV2_OK) memcpy(field(c, o), v, vl + 1);
                } else if (o->type == T_DBL) {
                    double v;
                    st = json_read_number(&r, &v, e);
                    if (st == ENV2_OK) *(double *)field(c, o) = v;
                } else {
                    int64_t v;
                    st = json_read_int64(&r, &v, e);
                    if (st == ENV2_OK) {
                        if (o->type == T_LL) *(long long *)field(c, o) = v;
                        else *(int *)field(c, o) = (int)v;
                    }
                }
            }
        } else if (!strcmp(key, "state")) {
            int i2 = 0, h2 = 0;
            const char *k2;
            seen_state = 1;
            st = json_begin_object(&r, e);
            while (st == ENV2_OK && (st = json_next_member(&r, &i2, &h2, &k2, e)) == ENV2_OK && h2) {
                int64_t *ip = !strcmp(k2, "epoch") ? &s->epoch : !strcmp(k2, "batch") ? &s->batch
                              : !strcmp(k2, "step") ? &s->step : !strcmp(k2, "correct") ? &s->correct
                              : !strcmp(k2, "seen") ? &s->seen : NULL;
                double *dp = !strcmp(k2, "loss_sum") ? &s->loss_sum : !strcmp(k2, "wall_s") ? &s->wall_s
                             : !strcmp(k2, "train_s") ? &s->train_s : NULL;
                if (ip) st = json_read_int64(&r, ip, e);
                else if (dp && json_peek(&r) == JSON_NULL) {
                    st = json_read_null(&r, e);
                    *dp = NAN;
                } else if (dp) st = json_read_number(&r, dp, e);
                else st = json_skip_value(&r, e);
            }
        } else {
            st = json_skip_value(&r, e);
        }
    }
    if (st == ENV2_OK) st = json_end(&r, e);
    json_reader_free(&r);
    if (st == ENV2_OK && (!seen_cfg || !seen_state || version != 1))
        st = env2_fail(e, ENV2_E_FORMAT, "incomplete run state (config, state or version missing)");
    if (st == ENV2_OK && (s->epoch < 0 || s->batch < 0 || s->step < 0))
        st = env2_fail(e, ENV2_E_FORMAT, "negative position in the run state");
    return st;
}

/* ---- schedule from the configuration -------------------------------------- */

static int is_preset(const char *p) { return strcmp(p, "off") != 0 && strcmp(p, "linear") != 0; }

/* "linear" when any progression was asked for without a preset, else "off". */
static void resolve_progressive(train_cfg *c)
{
    if (c->progressive[0]) return;
    if (c->size_start > 0 || c->stages > 0 || c->randaug_start >= 0 || c->mixup_start >= 0 || c->cutmix_start >= 0 ||
        c->dropout_start >= 0)
        snprintf(c->progressive, sizeof c->progressive, "linear");
    else
        snprintf(c->progressive, sizeof c->progressive, "off");
}

static double pick(double a, double b, double fallback) { return a >= 0 ? a : b >= 0 ? b : fallback; }

/* Which regularizers the run controls per stage: a preset controls them all;
 * otherwise dropout and drop-path are left at the model's defaults unless an
 * option names them. */
typedef struct sched_info {
    int dropout_on, drop_path_on;
} sched_info;

/* Builds the schedule over cfg->epochs.  native: the data's image side (the
 * default final size without a preset).  Errors go to env2_tls_err. */
static env2_status build_schedule(const train_cfg *c, int native, env2_schedule **out, sched_info *si)
{
    env2_err *e = env2_tls_err();
    env2_schedule *s = NULL;
    env2_status st;
    const char *p = c->progressive;
    int stages = c->stages > 0 ? c->stages : (c->epochs < 4 ? c->epochs : 4);
    float v0[ENV2_REG_COUNT] = {0}, v1[ENV2_REG_COUNT] = {0};
    int s0 = 0, s1 = 0;
    double dflt_drop = c->dropout >= 0 ? c->dropout : 0.2;
    *out = NULL;
    memset(si, 0, sizeof *si);
    if (!strcmp(p, "off")) stages = 1;
    if (is_preset(p)) {
        int64_t b, en;
        int32_t sz;
        st = env2_schedule_create_preset(&s, p, c->epochs, stages);
        if (st != ENV2_OK) return st;
        env2_schedule_stage(s, 0, &b, &en, &sz, v0, ENV2_REG_COUNT);
        s0 = sz;
        env2_schedule_stage(s, env2_schedule_num_stages(s) - 1, &b, &en, &sz, v1, ENV2_REG_COUNT);
        s1 = sz;
        si->dropout_on = si->drop_path_on = 1;
        if (c->size_start > 0 || c->size_end > 0) {
            /* sizes other than the preset's: a linear schedule with the
             * preset's regularization */
            env2_schedule_destroy(s);
            s = NULL;
            int a = c->size_start, z = c->size_end > 0 ? c->size_end : s1;
            /* only the final size given: keep the preset's first/last ratio */
            if (a <= 0) a = (int)lround((double)z * s0 / (s1 > 0 ? s1 : 1));
            if (a < 8) a = 8;
            st = env2_schedule_create(&s, stages, c->epochs, a, z, c->size_multiple);
            if (st != ENV2_OK) return st;
            for (int r = 0; r < ENV2_REG_COUNT && st == ENV2_OK; r++)
                st = env2_schedule_set_range(s, (env2_regularizer)r, v0[r], v1[r]);
        }
        /* explicit values replace the preset's; one end given alone keeps
         * the preset's other end */
        {
            double dp = c->drop_path;
            struct {
                int reg;
                double a, b;
            } ov[] = {{ENV2_REG_RANDAUG, c->randaug_start, c->randaug_end},
                      {ENV2_REG_MIXUP, c->mixup_start, c->mixup_end},
                      {ENV2_REG_CUTMIX, c->cutmix_start, c->cutmix_end},
                      {ENV2_REG_DROPOUT, c->dropout_start >= 0 ? c->dropout_start : c->dropout,
                       c->dropout_end >= 0 ? c->dropout_end : c->dropout},
                      {ENV2_REG_DROP_PATH, dp, dp}};
            for (size_t k = 0; k < sizeof ov / sizeof ov[0] && st == ENV2_OK; k++) {
                if (ov[k].a < 0 && ov[k].b < 0) continue;
                st = env2_schedule_set_range(s, (env2_regularizer)ov[k].reg,
                                             (float)(ov[k].a >= 0 ? ov[k].a : v0[ov[k].reg]),
                                             (float)(ov[k].b >= 0 ? ov[k].b : v1[ov[k].reg]));
            }
        }
    } else {
        int end = c->size_end > 0 ? c->size_end : native;
        int start = !strcmp(p, "off") ? end : c->size_start > 0 ? c->size_start : end;
        int lin = strcmp(p, "off") != 0;
        if (end < 8) end = 8;
        if (start < 8) start = 8;
        st = env2_schedule_create(&s, stages, c->epochs, start, end, lin ? c->size_multiple : 1);
        if (st != ENV2_OK) return st;
        si->dropout_on = c->dropout >= 0 || c->dropout_start >= 0 || c->dropout_end >= 0;
        si->drop_path_on = c->drop_path >= 0;
        {
            /* off: the final values throughout; linear: start .. end, one
             * given alone is used for both */
            double ra1 = pick(c->randaug_end, c->randaug_start, 0), mx1 = pick(c->mixup_end, c->mixup_start, 0);
            double cm1 = pick(c->cutmix_end, c->cutmix_start, 0);
            double dr1 = pick(c->dropout_end, c->dropout_start, dflt_drop);
            double ra0 = lin ? pick(c->randaug_start, ra1, 0) : ra1, mx0 = lin ? pick(c->mixup_start, mx1, 0) : mx1;
            double cm0 = lin ? pick(c->cutmix_start, cm1, 0) : cm1, dr0 = lin ? pick(c->dropout_start, dr1, 0) : dr1;
            double dp = c->drop_path >= 0 ? c->drop_path : 0.2;
            st = env2_schedule_set_range(s, ENV2_REG_RANDAUG, (float)ra0, (float)ra1);
            if (st == ENV2_OK) st = env2_schedule_set_range(s, ENV2_REG_MIXUP, (float)mx0, (float)mx1);
            if (st == ENV2_OK) st = env2_schedule_set_range(s, ENV2_REG_CUTMIX, (float)cm0, (float)cm1);
            if (st == ENV2_OK) st = env2_schedule_set_range(s, ENV2_REG_DROPOUT, (float)dr0, (float)dr1);
            if (st == ENV2_OK) st = env2_schedule_set_range(s, ENV2_REG_DROP_PATH, (float)dp, (float)dp);
        }
    }
    if (st != ENV2_OK) {
        env2_schedule_destroy(s);
        if (!e->msg[0]) env2_fail(e, st, "invalid schedule settings");
        return st;
    }
    *out = s;
    return ENV2_OK;
}

static void print_schedule_table(FILE *f, const env2_schedule *s, const sched_info *si)
{
    int32_t n = env2_schedule_num_stages(s);
    fprintf(f, "stage  epochs        size  dropout  randaug   mixup  cutmix  drop_path\n");
    for (int32_t i = 0; i < n; i++) {
        int64_t b = 0, en = 0;
        int32_t sz = 0;
        float v[ENV2_REG_COUNT] = {0};
        char ep[48], dr[16], dp[16];
        env2_schedule_stage(s, i, &b, &en, &sz, v, ENV2_REG_COUNT);
        snprintf(ep, sizeof ep, "%lld-%lld", (long long)b + 1, (long long)en);
        if (si->dropout_on) snprintf(dr, sizeof dr, "%.3f", (double)v[ENV2_REG_DROPOUT]);
        else snprintf(dr, sizeof dr, "model");
        if (si->drop_path_on) snprintf(dp, sizeof dp, "%.3f", (double)v[ENV2_REG_DROP_PATH]);
        else snprintf(dp, sizeof dp, "model");
        fprintf(f, "%5d  %-12s %5d  %7s  %7.2f  %6.3f  %6.3f  %9s\n", (int)i + 1, ep, (int)sz, dr,
                (double)v[ENV2_REG_RANDAUG], (double)v[ENV2_REG_MIXUP], (double)v[ENV2_REG_CUTMIX], dp);
    }
}

/* ---- evaluation ------------------------------------------------------------ */

static volatile sig_atomic_t g_stop;

static void on_sigint(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* cross-entropy (no smoothing) and top-1 over a batch of logits */
static void score_logits(const float *logits, const int32_t *labels, int n, int K, double *loss_sum,
                         int64_t *correct)
{
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * (size_t)K;
        int arg = 0;
        double mx = z[0], se = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[arg]) arg = k;
        mx = z[arg];
        for (int k = 0; k < K; k++) se += exp((double)z[k] - mx);
        *loss_sum += log(se) + mx - (double)z[labels[i]];
        *correct += arg == labels[i];
    }
}

typedef struct eval_result {
    double loss, acc;
    int64_t count;
    int interrupted;
} eval_result;

/* Evaluates d (whole images resized to size) with the trainer (EMA weights
 * if use_ema) or, when trainer is NULL, with env2_forward on model. */
static int evaluate(env2_trainer *tr, env2_model *m, batcher *bt, int size, int batch, long long eval_max,
                    int use_ema, int K, float *logits, eval_result *res, const char *cmd)
{
    data_config ec;
    env2_err e;
    const data_batch *b;
    double loss = 0;
    int64_t correct = 0, count = 0;
    env2_status st;
    memset(&ec, 0, sizeof ec);
    ec.train = 0;
    ec.batch_size = batch;
    ec.size = size;
    ec.area_min = 1;
    if (eval_max > 0) ec.max_batches = (eval_max + batch - 1) / batch;
    memset(res, 0, sizeof *res);
    st = batcher_begin(bt, &ec, 0, 0, &e);
    if (st != ENV2_OK) return runtime_err(cmd, "evaluation", e.msg);
    while ((st = batcher_next(bt, &b, &e)) == ENV2_OK && b) {
        int n = b->n;
        if (eval_max > 0 && count + n > eval_max) n = (int)(eval_max - count);
        if (tr) st = env2_trainer_evaluate(tr, b->images, n, b->size, b->size, ENV2_LAYOUT_NHWC, use_ema, logits);
        else st = env2_forward(m, b->images, n, b->size, b->size, ENV2_LAYOUT_NHWC, logits);
        if (st != ENV2_OK) {
            batcher_end(bt);
            return runtime_err(cmd, "evaluation", env2_last_error());
        }
        score_logits(logits, b->labels, n, K, &loss, &correct);
        count += n;
        if (g_stop) {
            res->interrupted = 1;
            break;
        }
    }
    batcher_end(bt);
    if (st != ENV2_OK) return runtime_err(cmd, "preparing evaluation images", e.msg);
    res->count = count;
    res->loss = count ? loss / (double)count : NAN;
    res->acc = count ? (double)correct / (double)count : NAN;
    return 0;
}

/* ---- env2 train -------------------------------------------------------------- */

static const char *train_usage =
    "usage: env2 train --data fashion-mnist|mnist|cifar10|cifar100|npy [options]\n"
    "model:  --arch VARIANT|STAGES (default efficientnetv2-b0)  --stem C --head C  --width W --depth D\n"
    "        --classes K (default: from the data)  --dropout P  --drop-path P\n"
    "data:   --data-dir DIR  --val-split N  --crop-area-min F (default 0.25)  --no-flip\n"
    "optim:  --epochs E (10)  --batch B (64)  --optimizer rmsprop|sgd|adamw  --lr LR  --wd WD (1e-5)\n"
    "        --warmup-epochs W  --lr-schedule exp|cosine|constant  --label-smoothing S (0.1)  --ema DECAY\n"
    "        --ema-restart (restart the EMA at each stage)\n"
    "stages: --progressive PRESET|linear|off  --stages M  --size-start S --size-end S  --size-multiple N\n"
    "        --randaug-start M --randaug-end M  --mixup-start A --mixup-end A  --cutmix-start A --cutmix-end A\n"
    "        --dropout-start P --dropout-end P  --randaug-ref-size S (Translate/Cutout pixels scaled by size/S;\n"
    "        default 0: the official absolute pixels)\n"
    "run:    --out DIR (env2-run)  --resume  --overwrite  --seed S  --threads N  --eval-size S  --eval-stage-size\n"
    "        --eval-max N  --max-steps N (per epoch)  --quiet  --no-prefetch  --stop-after STEP (acts as Ctrl-C there)\n"
    "        --no-winograd (3x3 stride-1 convolutions by the exact im2col GEMM instead of Winograd, in training\n"
    "        and evaluation; part of the run: results differ in the last bits)\n"
    "        --keep-activations auto|on|off (keep layer outputs for backward: faster, more memory; auto: when\n"
    "        that adds at most 256 MiB; results are the same)\n"
    "PRESET: paper-s|paper-m|paper-l|official-s|official-m|official-l|official-xl.  See docs/TRAINING.md.\n";

typedef struct run {
    train_cfg c;
    sched_info si;
    env2_dataset train, test, val;
    int has_val;
    env2_schedule *sched;
    env2_model *model;
    env2_trainer *tr;
    batcher *bt, *bt_test, *bt_val;
    float *logits;
    char ckpt[PATHLEN + 64], metrics[PATHLEN + 64], final_model[PATHLEN + 64];
} run;

static void run_free(run *r)
{
    batcher_destroy(r->bt);
    batcher_destroy(r->bt_test);
    batcher_destroy(r->bt_val);
    env2_trainer_destroy(r->tr);
    env2_model_destroy(r->model);
    env2_schedule_destroy(r->sched);
    dataset_free(&r->train);
    dataset_free(&r->test);
    dataset_free(&r->val);
    free(r->logits);
}

static int save_checkpoint(run *r, const run_state *s)
{
    char *js = state_json(&r->c, s);
    env2_status st;
    if (!js) return runtime_err("train", "out of memory", NULL);
    st = env2_trainer_save(r->tr, r->ckpt, js);
    free(js);
    if (st != ENV2_OK) return runtime_err("train", "writing the checkpoint", env2_trainer_last_error(r->tr));
    return 0;
}

/* Keeps the metrics lines of epochs before `epochs_done` (1-based epochs
 * <= epochs_done): a run stopped between writing its metrics and its
 * checkpoint repeats that epoch, and the line must not appear twice. */
static int trim_metrics(const char *path, int64_t epochs_done)
{
    FILE *f = fopen(path, "rb");
    io_atomic a;
    env2_err e;
    char line[8192];
    int dropped = 0;
    sbuf keep = {0};
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        long long ep = -1;
        if (sscanf(line, "{\"epoch\":%lld", &ep) == 1 && ep > epochs_done) {
            dropped = 1;
            continue;
        }
        sb_add(&keep, "%s", line);
    }
    fclose(f);
    if (dropped && !keep.oom) {
        if (io_atomic_open(&a, path, &e) != ENV2_OK ||
            (keep.len && io_atomic_write(&a, keep.p, keep.len, &e) != ENV2_OK) || io_atomic_commit(&a, &e) != ENV2_OK) {
            io_atomic_abort(&a);
            free(keep.p);
            return runtime_err("train", "rewriting metrics.jsonl", e.msg);
        }
    }
    free(keep.p);
    return 0;
}

static void fmt_time(double s, char *buf, size_t len)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, len, "%02ld:%02ld", t / 60, t % 60);
}

static void progress_bar(const train_cfg *c, int64_t epoch, int stage, int nstages, int size, int64_t done,
                         int64_t total, double loss, double acc, double ips, double eta)
{
    char bar[32], et[32];
    int w = 20, fill = total > 0 ? (int)(w * done / total) : w;
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = '\0';
    fmt_time(eta, et, sizeof et);
    printf("\r\033[Kepoch %lld/%d stage %d/%d size %d [%s] %lld/%lld loss %.4f acc %.2f%% %.1f img/s ETA %s",
           (long long)epoch + 1, c->epochs, stage + 1, nstages, size, bar, (long long)done, (long long)total, loss,
           100 * acc, ips, et);
    fflush(stdout);
}

static int run_training(run *r, run_state *s, int fresh_metrics, int tty)
{
    train_cfg *c = &r->c;
    env2_err e;
    int nst = env2_schedule_num_stages(r->sched);
    data_config dc;
    int64_t spe;
    int32_t eval_size = c->eval_size;
    int64_t b0_, e0_;
    int use_ema = c->ema > 0;
    int K = env2_model_num_classes(r->model);
    double t_start = now_s() - s->wall_s;
    uint64_t seed = strtoull(c->seed, NULL, 10);
    int rc;

    data_config_default(&dc, &r->train, 1);
    dc.batch_size = c->batch;
    dc.area_min = (float)c->crop_area_min;
    dc.hflip = !c->no_flip;
    dc.max_batches = c->max_steps;
    dc.seed = seed;
    spe = data_num_batches(&r->train, &dc);
    if (eval_size <= 0) env2_schedule_stage(r->sched, nst - 1, &b0_, &e0_, &eval_size, NULL, 0);
    const int32_t eval_size_final = eval_size;

    for (int64_t ep = s->epoch; ep < c->epochs; ep++) {
        int32_t stage = 0, size = 0;
        float dropout = 0, drop_path = 0, ra = 0, mix = 0, cut = 0;
        const data_batch *b;
        env2_status st;
        double t_ep = now_s(), t_last = 0, lr_used = env2_trainer_current_lr(r->tr), train_time;
        double loss_sum = s->batch ? s->loss_sum : 0;
        int64_t correct = s->batch ? s->correct : 0, seen = s->batch ? s->seen : 0, seen_here = 0;
        eval_result te, va;
        double dval;

        env2_schedule_at(r->sched, ep, &stage, &size);
        /* --ema-restart: the average starts afresh from the live weights when
         * a stage begins, so it does not carry weights fitted to the previous
         * image size into the new one.  Decided from the schedule alone, at an
         * epoch's first batch, so a resumed run restarts at the same step. */
        if (c->ema_restart && ep > 0 && s->batch == 0) { /* cmd_train refuses it without --ema */
            int32_t prev = 0, psize = 0;
            env2_schedule_at(r->sched, ep - 1, &prev, &psize);
            if (prev != stage && env2_trainer_restart_ema(r->tr) != ENV2_OK)
                return runtime_err("train", "restarting the EMA", env2_trainer_last_error(r->tr));
        }
        env2_schedule_value(r->sched, ep, ENV2_REG_DROPOUT, &dropout);
        env2_schedule_value(r->sched, ep, ENV2_REG_DROP_PATH, &drop_path);
        env2_schedule_value(r->sched, ep, ENV2_REG_RANDAUG, &ra);
        env2_schedule_value(r->sched, ep, ENV2_REG_MIXUP, &mix);
        env2_schedule_value(r->sched, ep, ENV2_REG_CUTMIX, &cut);
        if (r->si.dropout_on && env2_trainer_set_param(r->tr, ENV2_PARAM_DROPOUT, dropout) != ENV2_OK)
            return runtime_err("train", "setting dropout", env2_trainer_last_error(r->tr));
        if (r->si.drop_path_on && env2_trainer_set_param(r->tr, ENV2_PARAM_DROP_PATH, drop_path) != ENV2_OK)
            return runtime_err("train", "setting drop-path", env2_trainer_last_error(r->tr));
        dc.size = size;
        dc.randaug_magnitude = ra;
        dc.randaug_ref_size = c->randaug_ref_size;
        dc.mixup_alpha = mix;
        dc.cutmix_alpha = cut;
        st = batcher_begin(r->bt, &dc, ep, s->batch, &e);
        if (st != ENV2_OK) return runtime_err("train", "preparing the epoch", e.msg);

        for (;;) {
            float loss = 0;
            int32_t corr = 0;
            double tnow;
            st = batcher_next(r->bt, &b, &e);
            if (st != ENV2_OK) return runtime_err("train", "preparing training images", e.msg);
            if (!b) break;
            lr_used = env2_trainer_current_lr(r->tr);
            st = env2_train_step(r->tr, b->images, b->n, b->size, b->size, ENV2_LAYOUT_NHWC,
                                 b->targets ? NULL : b->labels, b->targets, &loss, &corr);
            if (st != ENV2_OK) {
                char what[96];
                snprintf(what, sizeof what, "training step %lld (epoch %lld, batch %lld)",
                         (long long)env2_trainer_step_count(r->tr) + 1, (long long)ep + 1, (long long)b->index + 1);
                return runtime_err("train", what, env2_trainer_last_error(r->tr));
            }
            loss_sum += (double)loss * b->n;
            correct += corr;
            seen += b->n;
            seen_here += b->n;
            s->batch = b->index + 1;
            tnow = now_s();
            if (tty && !c->quiet && (tnow - t_last > 0.1 || s->batch == spe)) {
                double el = tnow - t_ep, ips = el > 0 ? seen_here / el : 0;
                double per = seen_here > 0 ? el / (double)seen_here : 0;
                progress_bar(c, ep, stage, nst, size, s->batch, spe, seen ? loss_sum / seen : 0,
                             seen ? (double)correct / seen : 0, ips, per * (double)(spe - s->batch) * c->batch);
                t_last = tnow;
            }
            /* --stop-after: a Ctrl-C at a chosen step, for tests of --resume */
            if (c->stop_after > 0 && env2_trainer_step_count(r->tr) >= c->stop_after) g_stop = 1;
            if (g_stop) break;
        }
        train_time = now_s() - t_ep;
        s->train_s += train_time;
        if (g_stop) {
            /* the epoch is incomplete: keep its running sums for --resume */
            s->epoch = ep;
            s->step = env2_trainer_step_count(r->tr);
            s->loss_sum = loss_sum;
            s->correct = correct;
            s->seen = seen;
            s->wall_s = now_s() - t_start;
            batcher_end(r->bt);
            if (tty && !c->quiet) printf("\n");
            if ((rc = save_checkpoint(r, s))) return rc;
            fprintf(stderr, "env2 train: interrupted in epoch %lld after step %lld; checkpoint written to %s "
                            "(continue with --resume)\n", (long long)ep + 1, (long long)s->step, r->ckpt);
            return 130;
        }

        /* --eval-stage-size: judge each stage at the scale it trains on; the
         * last stage trains at the final size, so the final figure is the same */
        eval_size = c->eval_stage_size && c->eval_size <= 0 ? size : eval_size_final;
        if (tty && !c->quiet) {
            printf("\r\033[Kepoch %lld/%d  evaluating at %d x %d%s...", (long long)ep + 1, c->epochs, (int)eval_size,
                   (int)eval_size, use_ema ? " with EMA weights" : "");
            fflush(stdout);
        }
        if ((rc = evaluate(r->tr, r->model, r->bt_test, eval_size, c->batch, c->eval_max, use_ema, K, r->logits, &te,
                           "train")))
            return rc;
        memset(&va, 0, sizeof va);
        va.loss = va.acc = NAN;
        if (!te.interrupted && r->has_val &&
            (rc = evaluate(r->tr, r->model, r->bt_val, eval_size, c->batch, c->eval_max, use_ema, K, r->logits, &va,
                           "train")))
            return rc;
        if (g_stop) {
            /* training of this epoch is complete; --resume repeats only the evaluation */
            s->epoch = ep;
            s->batch = spe;
            s->step = env2_trainer_step_count(r->tr);
            s->loss_sum = loss_sum;
            s->correct = correct;
            s->seen = seen;
            s->wall_s = now_s() - t_start;
            if (tty && !c->quiet) printf("\n");
            if ((rc = save_checkpoint(r, s))) return rc;
            fprintf(stderr, "env2 train: interrupted during the evaluation of epoch %lld; checkpoint written to %s "
                            "(continue with --resume)\n", (long long)ep + 1, r->ckpt);
            return 130;
        }

        {
            double wall = now_s() - t_start, ips = train_time > 0 ? seen_here / train_time : 0;
            double tl = seen ? loss_sum / seen : NAN, ta = seen ? (double)correct / seen : NAN;
            char el[32];
            sbuf m = {0};
            FILE *f;
            env2_trainer_get_param(r->tr, ENV2_PARAM_DROPOUT, &dval);
            fmt_time(wall, el, sizeof el);
            if (!c->quiet) {
                if (tty) printf("\r\033[K");
                printf("epoch %lld/%d  stage %d/%d  size %d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%",
                       (long long)ep + 1, c->epochs, stage + 1, nst, size, tl, 100 * ta, te.loss, 100 * te.acc);
                if (r->has_val) printf("  val loss %.4f acc %.2f%%", va.loss, 100 * va.acc);
                printf("  %.1f img/s  %s\n", ips, el);
                fflush(stdout);
            }
            sb_add(&m, "{\"epoch\":%lld,\"step\":%lld,\"stage\":%d,\"size\":%d,\"lr\":", (long long)ep + 1,
                   (long long)env2_trainer_step_count(r->tr), stage + 1, size);
            sb_num6(&m, lr_used);
            sb_add(&m, ",\"dropout\":");
            sb_num6(&m, dval);
            env2_trainer_get_param(r->tr, ENV2_PARAM_DROP_PATH, &dval);
            sb_add(&m, ",\"drop_path\":");
            sb_num6(&m, dval);
            sb_add(&m, ",\"randaug\":");
            sb_num6(&m, ra);
            sb_add(&m, ",\"mixup\":");
            sb_num6(&m, mix);
            sb_add(&m, ",\"cutmix\":");
            sb_num6(&m, cut);
            sb_add(&m, ",\"train_loss\":");
            sb_num6(&m, tl);
            sb_add(&m, ",\"train_acc\":");
            sb_num6(&m, ta);
            sb_add(&m, ",\"test_loss\":");
            sb_num6(&m, te.loss);
            sb_add(&m, ",\"test_acc\":");
            sb_num6(&m, te.acc);
            if (r->has_val) {
                sb_add(&m, ",\"val_loss\":");
                sb_num6(&m, va.loss);
                sb_add(&m, ",\"val_acc\":");
                sb_num6(&m, va.acc);
            }
            sb_add(&m, ",\"eval_size\":%d,\"ema\":%s,\"wall_s\":", eval_size, use_ema ? "true" : "false");
            sb_num6(&m, wall);
            sb_add(&m, ",\"images_per_s\":");
            sb_num6(&m, ips);
            sb_add(&m, "}\n");
            f = m.oom ? NULL : fopen(r->metrics, fresh_metrics ? "w" : "a");
            if (!f || fputs(m.p, f) < 0 || fclose(f) != 0) {
                free(m.p);
                return runtime_err("train", "writing", r->metrics);
            }
            fresh_metrics = 0;
            free(m.p);
            s->epoch = ep + 1;
            s->batch = 0;
            s->step = env2_trainer_step_count(r->tr);
            s->loss_sum = 0;
            s->correct = s->seen = 0;
            s->wall_s = wall;
            if ((rc = save_checkpoint(r, s))) return rc;
        }
    }
    return 0;
}

int cmd_train(int argc, char **argv)
{
    run r;
    unsigned char given[NOPTS];
    run_state s;
    env2_err e;
    env2_model_options mo;
    env2_trainer_options to;
    int rc, tty, fresh_metrics = 1;
    char *user = NULL;
    data_config dc;
    int64_t spe;
    uint64_t seed;
    struct sigaction sa, old_sa;

    memset(&r, 0, sizeof r);
    memset(given, 0, sizeof given);
    memset(&s, 0, sizeof s);
    cfg_defaults(&r.c);
    rc = parse_train_args("train", argc, argv, 1, &r.c, given, 0);
    if (rc == 1) {
        fputs(train_usage, stdout);
        return 0;
    }
    if (rc) return rc;
    if (join_path(r.ckpt, sizeof r.ckpt, r.c.out, "checkpoint.safetensors") ||
        join_path(r.metrics, sizeof r.metrics, r.c.out, "metrics.jsonl") ||
        join_path(r.final_model, sizeof r.final_model, r.c.out, "model.safetensors"))
        return usage_err("train", "--out path is too long");

    if (r.c.resume) {
        /* the checkpoint's configuration is the run; options given now must
         * agree with it, except those that do not change the results */
        train_cfg stored;
        env2_status st = read_user_meta(r.ckpt, &user, &e);
        if (st != ENV2_OK) return runtime_err("train", "--resume", e.msg);
        stored = r.c;
        st = parse_state_json(user, &stored, &s, &e);
        if (st != ENV2_OK) {
            free(user);
            return runtime_err("train", "--resume: bad run state in the checkpoint", e.msg);
        }
        for (int i = 0; i < NOPTS; i++) {
            const topt *o = &topts[i];
            if (!(o->flags & F_RUN) || !given[i] || opt_equal(&r.c, &stored, o)) continue;
            {
                char now[64], was[64];
                opt_format(&r.c, o, now, sizeof now);
                opt_format(&stored, o, was, sizeof was);
                fprintf(stderr, "env2 train: --resume: --%s %s differs from the checkpoint's %s; a resumed run keeps "
                                "its configuration (start a new run in another --out)\n", o->name, now, was);
                free(user);
                return 1;
            }
        }
        for (int i = 0; i < NOPTS; i++)
            if ((topts[i].flags & F_KEEP) && given[i])
                memcpy(field(&stored, &topts[i]), cfield(&r.c, &topts[i]), topts[i].size);
        r.c = stored;
        if (s.epoch >= r.c.epochs) {
            free(user);
            fprintf(stderr, "env2 train: --resume: the run in %s already finished its %d epochs\n", r.c.out,
                    r.c.epochs);
            return 1;
        }
        fresh_metrics = 0;
    } else if (!r.c.overwrite && (file_exists(r.ckpt) || file_exists(r.metrics))) {
        return runtime_err("train", "refusing to overwrite an earlier run",
                           "--out already holds checkpoint.safetensors or metrics.jsonl; use --resume to continue "
                           "it, --overwrite to replace it, or another --out");
    }

    /* validate the choices that need no data */
    if (strcmp(r.c.optimizer, "rmsprop") && strcmp(r.c.optimizer, "sgd") && strcmp(r.c.optimizer, "adamw")) {
        free(user);
        return usage_err("train", "--optimizer must be rmsprop, sgd or adamw (got '%s')", r.c.optimizer);
    }
    if (cli_keep_activations(r.c.keep_activations) == -2) {
        free(user);
        return usage_err("train", "--keep-activations must be auto, on or off (got '%s')", r.c.keep_activations);
    }
    if (strcmp(r.c.lr_schedule, "exp") && strcmp(r.c.lr_schedule, "cosine") && strcmp(r.c.lr_schedule, "constant")) {
        free(user);
        return usage_err("train", "--lr-schedule must be exp, cosine or constant (got '%s')", r.c.lr_schedule);
    }
    if (r.c.ema_restart && !(r.c.ema > 0)) {
        free(user);
        return usage_err("train", "--ema-restart restarts the weight average: it needs --ema DECAY");
    }
    resolve_progressive(&r.c);

    {
        env2_status st = dataset_load(r.c.data, r.c.data_dir[0] ? r.c.data_dir : NULL, &r.train, &r.test, &e);
        if (st != ENV2_OK) {
            free(user);
            return st == ENV2_E_NOT_FOUND ? usage_err("train", "%s", e.msg) : runtime_err("train", "loading data", e.msg);
        }
    }
    seed = strtoull(r.c.seed, NULL, 10);
    if (r.c.val_split > 0) {
        env2_dataset tr2, va;
        env2_status st = dataset_split(&r.train, r.c.val_split, seed, &tr2, &va, &e);
        if (st != ENV2_OK) {
            free(user);
            run_free(&r);
            return usage_err("train", "--val-split: %s", e.msg);
        }
        dataset_free(&r.train);
        r.train = tr2;
        r.val = va;
        r.has_val = 1;
    }
    if (r.c.classes > 0 && r.c.classes < r.train.num_classes) {
        free(user);
        rc = usage_err("train", "--classes %d is fewer than the %d classes in the data", r.c.classes,
                       r.train.num_classes);
        run_free(&r);
        return rc;
    }
    if (r.c.classes <= 0) r.c.classes = r.train.num_classes;
    if (r.c.batch > r.train.n) {
        free(user);
        rc = usage_err("train", "--batch %d is larger than the %lld training images", r.c.batch, (long long)r.train.n);
        run_free(&r);
        return rc;
    }
    if (r.c.lr < 0) {
        /* the recipes' rates for their batch sizes, scaled linearly */
        if (!strcmp(r.c.optimizer, "rmsprop")) r.c.lr = 0.016 * r.c.batch / 256.0;
        else if (!strcmp(r.c.optimizer, "sgd")) r.c.lr = 0.5 * r.c.batch / 1024.0;
        else r.c.lr = 0.001;
    }
    if (r.c.warmup_epochs < 0) r.c.warmup_epochs = r.c.epochs * 0.1 < 5 ? r.c.epochs * 0.1 : 5;

    {
        int native = r.train.h > r.train.w ? r.train.h : r.train.w;
        if (build_schedule(&r.c, native, &r.sched, &r.si) != ENV2_OK) {
            free(user);
            rc = usage_err("train", "%s", env2_last_error());
            run_free(&r);
            return rc;
        }
    }

    data_config_default(&dc, &r.train, 1);
    dc.batch_size = r.c.batch;
    dc.max_batches = r.c.max_steps;
    spe = data_num_batches(&r.train, &dc);

    env2_model_options_init(&mo);
    mo.num_classes = r.c.classes;
    mo.in_channels = r.train.c;
    mo.width_mult = (float)r.c.width;
    mo.depth_mult = (float)r.c.depth;
    mo.stem_channels = r.c.stem;
    mo.head_channels = r.c.head;
    mo.seed = seed;
    mo.num_threads = r.c.threads;
    mo.winograd = !r.c.no_winograd;
    if (env2_model_create(&r.model, r.c.arch, &mo) != ENV2_OK) {
        free(user);
        rc = usage_err("train", "--arch %s: %s", r.c.arch, env2_last_error());
        run_free(&r);
        return rc;
    }
    env2_trainer_options_init(&to);
    to.optimizer = !strcmp(r.c.optimizer, "sgd") ? ENV2_OPT_SGD : !strcmp(r.c.optimizer, "adamw") ? ENV2_OPT_ADAMW
                                                                                                   : ENV2_OPT_RMSPROP_TF;
    to.lr = (float)r.c.lr;
    to.weight_decay = (float)r.c.wd;
    to.label_smoothing = (float)r.c.label_smoothing;
    to.ema_decay = (float)r.c.ema;
    to.seed = seed;
    to.keep_activations = cli_keep_activations(r.c.keep_activations);
    to.warmup_steps = (int64_t)llround(r.c.warmup_epochs * (double)spe);
    to.total_steps = (int64_t)r.c.epochs * spe;
    to.lr_schedule = !strcmp(r.c.lr_schedule, "cosine") ? ENV2_LR_COSINE
                     : !strcmp(r.c.lr_schedule, "constant") ? ENV2_LR_CONSTANT : ENV2_LR_EXPONENTIAL;
    /* the paper's 0.97 every 2.4 epochs, counted in steps */
    to.decay_steps = (float)(2.4 * (double)spe);
    to.decay_rate = 0.97f;
    if (env2_trainer_create(&r.tr, r.model, &to) != ENV2_OK) {
        free(user);
        rc = runtime_err("train", "creating the trainer", env2_last_error());
        run_free(&r);
        return rc;
    }
    if (r.c.resume) {
        char back[16384];
        if (env2_trainer_resume(r.tr, r.ckpt, back, sizeof back) != ENV2_OK) {
            free(user);
            rc = runtime_err("train", "--resume", env2_trainer_last_error(r.tr));
            run_free(&r);
            return rc;
        }
        if (env2_trainer_step_count(r.tr) != s.step || s.step != s.epoch * spe + (s.batch < spe ? s.batch : spe)) {
            fprintf(stderr, "env2 train: --resume: the checkpoint is at step %lld but its run state says epoch %lld "
                            "batch %lld of %lld steps per epoch\n", (long long)env2_trainer_step_count(r.tr),
                    (long long)s.epoch, (long long)s.batch, (long long)spe);
            free(user);
            run_free(&r);
            return 1;
        }
        if ((rc = trim_metrics(r.metrics, s.epoch))) {
            free(user);
            run_free(&r);
            return rc;
        }
    } else if (mkdir_p(r.c.out) != 0) {
        rc = runtime_err("train", "cannot create the output directory", r.c.out);
        run_free(&r);
        return rc;
    }
    free(user);
    user = NULL;

    if (batcher_create(&r.bt, &r.train, !r.c.no_prefetch, &e) != ENV2_OK ||
        batcher_create(&r.bt_test, &r.test, !r.c.no_prefetch, &e) != ENV2_OK ||
        (r.has_val && batcher_create(&r.bt_val, &r.val, !r.c.no_prefetch, &e) != ENV2_OK) ||
        !(r.logits = malloc(env2_model_output_size(r.model, r.c.batch) * sizeof(float)))) {
        rc = runtime_err("train", "allocating the data pipeline", e.msg);
        run_free(&r);
        return rc;
    }

    tty = isatty(STDOUT_FILENO);
    if (!r.c.quiet) {
        printf("env2 train: %s, %lld training images (%dx%dx%d, %d classes)%s, %s, %lld parameters, %d epochs of "
               "%lld steps, batch %d, %s lr %g, progressive %s (%d stage%s)%s\n",
               r.c.data, (long long)r.train.n, r.train.h, r.train.w, r.train.c, r.c.classes,
               r.has_val ? " + validation split" : "", env2_model_arch(r.model),
               (long long)env2_model_num_params(r.model), r.c.epochs, (long long)spe, r.c.batch, r.c.optimizer,
               r.c.lr, r.c.progressive, (int)env2_schedule_num_stages(r.sched),
               env2_schedule_num_stages(r.sched) == 1 ? "" : "s", s.epoch || s.batch ? ", resumed" : "");
        fflush(stdout);
    }

    g_stop = 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    /* a second Ctrl-C ends the program at once */
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    rc = run_training(&r, &s, fresh_metrics, tty);
    sigaction(SIGINT, &old_sa, NULL);

    if (rc == 0) {
        /* the averaged weights replace the live ones only now that
         * training is over: the checkpoint above keeps both */
        if (r.c.ema > 0 && env2_trainer_apply_ema(r.tr) != ENV2_OK)
            rc = runtime_err("train", "applying EMA weights", env2_trainer_last_error(r.tr));
        else if (env2_model_save(r.model, r.final_model) != ENV2_OK)
            rc = runtime_err("train", "saving the model", env2_last_error());
        else if (!r.c.quiet) {
            int32_t es = r.c.eval_size;
            int64_t b_, e_;
            if (es <= 0) env2_schedule_stage(r.sched, env2_schedule_num_stages(r.sched) - 1, &b_, &e_, &es, NULL, 0);
            printf("saved %s (evaluate with: env2 eval --model %s --data %s --size %d)\n", r.final_model,
                   r.final_model, r.c.data, (int)es);
        }
    }
    run_free(&r);
    return rc;
}

/* ---- env2 eval --------------------------------------------------------------- */

/* A training checkpoint holds the live weights and, with --ema, their average;
 * evaluate and predict with the average, as training did.  The live weights
 * are already loaded, so a file without an average keeps them. */
static void prefer_ema(env2_model *m, const char *path, const char *cmd)
{
    if (env2_model_load(m, path, ENV2_LOAD_EMA) == ENV2_OK)
        fprintf(stderr, "env2 %s: %s is a training checkpoint: using its EMA weights\n", cmd, path);
}

int cmd_eval(int argc, char **argv)
{
    const char *model_path = NULL, *data = NULL, *dir = NULL;
    long long size = 0, batch = 64, threads = 0, max = 0;
    env2_dataset tr, te;
    env2_model *m = NULL;
    env2_model_options mo;
    batcher *bt = NULL;
    env2_err e;
    float *logits = NULL;
    eval_result res;
    int rc = 0, split_train = 0, winograd = 1;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: env2 eval --model FILE --data fashion-mnist|mnist|cifar10|cifar100|npy [--data-dir DIR]\n"
                   "                 [--size S (default: the data's image size)] [--batch B] [--threads N]\n"
                   "                 [--split test|train] [--max N] [--no-winograd]\n");
            return 0;
        }
        if (!strcmp(a, "--no-winograd")) {
            winograd = 0;
            continue;
        }
        if (i + 1 >= argc) return usage_err("eval", "missing value for %s", a);
        if (!strcmp(a, "--model")) model_path = argv[++i];
        else if (!strcmp(a, "--data")) data = argv[++i];
        else if (!strcmp(a, "--data-dir")) dir = argv[++i];
        else if (!strcmp(a, "--size")) {
            if (parse_long(argv[++i], 1, 4096, &size)) return usage_err("eval", "--size needs 1..4096");
        } else if (!strcmp(a, "--batch")) {
            if (parse_long(argv[++i], 1, 65536, &batch)) return usage_err("eval", "--batch needs 1..65536");
        } else if (!strcmp(a, "--threads")) {
            if (parse_long(argv[++i], 0, 1024, &threads)) return usage_err("eval", "--threads needs 0..1024");
        } else if (!strcmp(a, "--max")) {
            if (parse_long(argv[++i], 1, (long long)9e15, &max)) return usage_err("eval", "--max needs a positive count");
        } else if (!strcmp(a, "--split")) {
            const char *v = argv[++i];
            if (!strcmp(v, "train")) split_train = 1;
            else if (strcmp(v, "test")) return usage_err("eval", "--split must be test or train");
        } else
            return usage_err("eval", "unknown option '%s'", a);
    }
    if (!model_path) return usage_err("eval", "--model is required");
    if (!data) return usage_err("eval", "--data is required");
    env2_model_options_init(&mo);
    mo.num_threads = (int32_t)threads;
    mo.winograd = winograd;
    if (env2_model_create_from_file(&m, model_path, &mo) != ENV2_OK)
        return runtime_err("eval", "loading the model", env2_last_error());
    prefer_ema(m, model_path, "eval");
    {
        env2_status st = dataset_load(data, dir, &tr, &te, &e);
        if (st != ENV2_OK) {
            env2_model_destroy(m);
            return st == ENV2_E_NOT_FOUND ? usage_err("eval", "%s", e.msg) : runtime_err("eval", "loading data", e.msg);
        }
    }
    {
        env2_dataset *d = split_train ? &tr : &te;
        int K = env2_model_num_classes(m);
        if (d->c != env2_model_in_channels(m)) {
            fprintf(stderr, "env2 eval: the images have %d channels, the model takes %d\n", d->c,
                    env2_model_in_channels(m));
            rc = 1;
        } else if (d->num_classes > K) {
            fprintf(stderr, "env2 eval: the data has %d classes but the model only %d\n", d->num_classes, K);
            rc = 1;
        }
        if (!size) size = d->h > d->w ? d->h : d->w;
        if (!rc && (batcher_create(&bt, d, 1, &e) != ENV2_OK ||
                    !(logits = malloc(env2_model_output_size(m, (int32_t)batch) * sizeof(float)))))
            rc = runtime_err("eval", "out of memory", NULL);
        if (!rc) {
            double t0 = now_s();
            rc = evaluate(NULL, m, bt, (int)size, (int)batch, max, 0, K, logits, &res, "eval");
            if (!rc)
                printf("%s split: %lld images at %lldx%lld  top-1 %.4f  loss %.4f  (%.1f img/s)\n",
                       split_train ? "train" : "test", (long long)res.count, size, size, res.acc, res.loss,
                       res.count / (now_s() - t0 + 1e-9));
        }
    }
    free(logits);
    batcher_destroy(bt);
    dataset_free(&tr);
    dataset_free(&te);
    env2_model_destroy(m);
    return rc;
}

/* ---- env2 predict ------------------------------------------------------------ */

int cmd_predict(int argc, char **argv)
{
    const char *model_path = NULL, *input = NULL;
    long long size = 0, top = 5, threads = 0, batch = 32;
    int winograd = 1;
    env2_model *m = NULL;
    env2_model_options mo;
    npy_array x;
    env2_err e;
    aug_config ac;
    float *imgs = NULL, *logits = NULL;
    void *scratch = NULL;
    int rc = 0;
    memset(&x, 0, sizeof x);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: env2 predict --model FILE --input X.npy [--size S (default: the images' size)] [--top K]\n"
                   "                    [--batch B] [--threads N] [--no-winograd]\n"
                   "X: uint8 images [N,H,W] or [N,H,W,C]; prints the K most likely classes of each image.\n");
            return 0;
        }
        if (!strcmp(a, "--no-winograd")) {
            winograd = 0;
            continue;
        }
        if (i + 1 >= argc) return usage_err("predict", "missing value for %s", a);
        if (!strcmp(a, "--model")) model_path = argv[++i];
        else if (!strcmp(a, "--input")) input = argv[++i];
        else if (!strcmp(a, "--size")) {
            if (parse_long(argv[++i], 1, 4096, &size)) return usage_err("predict", "--size needs 1..4096");
        } else if (!strcmp(a, "--top")) {
            if (parse_long(argv[++i], 1, 1000000, &top)) return usage_err("predict", "--top needs a positive count");
        } else if (!strcmp(a, "--batch")) {
            if (parse_long(argv[++i], 1, 65536, &batch)) return usage_err("predict", "--batch needs 1..65536");
        } else if (!strcmp(a, "--threads")) {
            if (parse_long(argv[++i], 0, 1024, &threads)) return usage_err("predict", "--threads needs 0..1024");
        } else
            return usage_err("predict", "unknown option '%s'", a);
    }
    if (!model_path) return usage_err("predict", "--model is required");
    if (!input) return usage_err("predict", "--input is required");
    env2_model_options_init(&mo);
    mo.num_threads = (int32_t)threads;
    mo.winograd = winograd;
    if (env2_model_create_from_file(&m, model_path, &mo) != ENV2_OK)
        return runtime_err("predict", "loading the model", env2_last_error());
    prefer_ema(m, model_path, "predict");
    if (npy_load(input, &x, &e) != ENV2_OK) {
        env2_model_destroy(m);
        return runtime_err("predict", "reading the images", e.msg);
    }
    {
        int K = env2_model_num_classes(m), C = env2_model_in_channels(m);
        int64_t n = x.ndim >= 1 ? x.shape[0] : 0;
        int h = x.ndim >= 3 ? (int)x.shape[1] : 0, w = x.ndim >= 3 ? (int)x.shape[2] : 0;
        int c = x.ndim == 4 ? (int)x.shape[3] : 1;
        size_t in_img = (size_t)h * (size_t)w * (size_t)c, out_img;
        if (x.dtype != ST_U8) rc = runtime_err("predict", input, "images must be uint8");
        else if ((x.ndim != 3 && x.ndim != 4) || n < 1 || h < 1 || w < 1 || h > 4096 || w > 4096)
            rc = runtime_err("predict", input, "images must be [N,H,W] or [N,H,W,C]");
        else if (c != C) {
            fprintf(stderr, "env2 predict: %s: the images have %d channels, the model takes %d\n", input, c, C);
            rc = 1;
        }
        if (top > K) top = K;
        if (!size) size = h > w ? h : w;
        out_img = (size_t)size * (size_t)size * (size_t)c;
        if (!rc) {
            aug_config_default(&ac, (int)size, c);
            ac.random_crop = 0;
            ac.hflip = 0;
            ac.randaug_magnitude = 0;
            imgs = malloc((size_t)batch * out_img * sizeof(float));
            logits = malloc(env2_model_output_size(m, (int32_t)batch) * sizeof(float));
            scratch = malloc(aug_scratch_size(h, w, c, &ac) + 1);
            if (!imgs || !logits || !scratch) rc = runtime_err("predict", "out of memory", NULL);
        }
        for (int64_t i0 = 0; !rc && i0 < n; i0 += batch) {
            int nb = (int)(n - i0 < batch ? n - i0 : batch);
            for (int i = 0; i < nb && !rc; i++)
                if (aug_image((const uint8_t *)x.data + (size_t)(i0 + i) * in_img, h, w, c, &ac, 0, 0,
                              imgs + (size_t)i * out_img, scratch, &e) != ENV2_OK)
                    rc = runtime_err("predict", "preprocessing", e.msg);
            if (!rc && env2_forward(m, imgs, nb, (int32_t)size, (int32_t)size, ENV2_LAYOUT_NHWC, logits) != ENV2_OK)
                rc = runtime_err("predict", "forward", env2_last_error());
            for (int i = 0; i < nb && !rc; i++) {
                const float *z = logits + (size_t)i * (size_t)K;
                double mx = z[0], se = 0;
                unsigned char *used = calloc((size_t)K, 1);
                if (!used) {
                    rc = runtime_err("predict", "out of memory", NULL);
                    break;
                }
                for (int k = 1; k < K; k++)
                    if (z[k] > mx) mx = z[k];
                for (int k = 0; k < K; k++) se += exp((double)z[k] - mx);
                printf("%lld:", (long long)(i0 + i));
                for (int t = 0; t < top; t++) {
                    int best = -1;
                    for (int k = 0; k < K; k++)
                        if (!used[k] && (best < 0 || z[k] > z[best])) best = k;
                    used[best] = 1;
                    printf("%s %d %.4f", t ? "," : "", best, exp((double)z[best] - mx) / se);
                }
                printf("\n");
                free(used);
            }
        }
    }
    free(imgs);
    free(logits);
    free(scratch);
    npy_free(&x);
    env2_model_destroy(m);
    return rc;
}

/* ---- env2 schedule -------------------------------------------------------------- */

int cmd_schedule(int argc, char **argv)
{
    train_cfg c;
    unsigned char given[NOPTS];
    env2_schedule *s = NULL;
    sched_info si;
    int rc, first = 1;
    cfg_defaults(&c);
    memset(given, 0, sizeof given);
    c.epochs = 0;
    if (argc >= 2 && strncmp(argv[1], "--", 2) != 0) {
        if (strlen(argv[1]) >= sizeof c.progressive) return usage_err("schedule", "unknown preset '%s'", argv[1]);
        snprintf(c.progressive, sizeof c.progressive, "%s", argv[1]);
        first = 2;
    }
    rc = parse_train_args("schedule", argc, argv, first, &c, given, F_SCHED);
    if (rc == 1) {
        printf("usage: env2 schedule PRESET|linear|off --epochs E [--stages M] [--size-start S --size-end S]\n"
               "       [--size-multiple N] [--randaug-start M --randaug-end M] [--mixup-start A --mixup-end A]\n"
               "       [--cutmix-start A --cutmix-end A] [--dropout-start P --dropout-end P] [--dropout P]\n"
               "       [--drop-path P]\n"
               "PRESET: paper-s|paper-m|paper-l|official-s|official-m|official-l|official-xl\n"
               "Prints the stages exactly as `env2 train` with the same options would run them.\n");
        return 0;
    }
    if (rc) return rc;
    if (!c.progressive[0]) return usage_err("schedule", "a preset (or linear or off) is required");
    if (c.epochs <= 0) return usage_err("schedule", "--epochs is required");
    if (!is_preset(c.progressive) && c.size_end <= 0)
        return usage_err("schedule", "%s schedules need --size-end", c.progressive);
    if (build_schedule(&c, c.size_end, &s, &si) != ENV2_OK) return usage_err("schedule", "%s", env2_last_error());
    printf("schedule %s over %d epochs, %d stage%s\n", c.progressive, c.epochs, (int)env2_schedule_num_stages(s),
           env2_schedule_num_stages(s) == 1 ? "" : "s");
    print_schedule_table(stdout, s, &si);
    env2_schedule_destroy(s);
    return 0;
}
