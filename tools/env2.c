/* env2: command-line front end of libefficientnetv2.
 *   env2 info VARIANT [--size N]           parameters, MACs, stage table
 *   env2 init VARIANT --seed S -o W        random initialization to safetensors
 *   env2 forward VARIANT --weights W --input X.npy --output Y.npy [...]
 *   env2 grad VARIANT --weights W --input X.npy --labels L.npy -o G.safetensors
 *   env2 bench VARIANT [--size N] [--batch B] [--threads T] [--runs R] [--profile]
 *   env2 train | eval | predict | schedule (tools/cmd_train.c)
 *   env2 --version */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "efficientnetv2.h"
#include "env2_cli.h"
#include "io/io.h"

typedef struct model_args {
    const char *arch;
    env2_model_options o;
    const char *weights;
    int skip_classifier;
} model_args;

static int usage_error(const char *cmd, const char *msg, const char *arg)
{
    fprintf(stderr, "env2 %s: %s%s%s\nRun 'env2 --help' for usage.\n", cmd, msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static int runtime_error(const char *what)
{
    fprintf(stderr, "env2: %s: %s\n", what, env2_last_error());
    return 1;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Shared model options; returns 1 if argv[*i] was consumed, -1 on error. */
static int model_option(const char *cmd, int argc, char **argv, int *i, model_args *ma, int *err)
{
    const char *a = argv[*i];
    long v;
#define NEED() do { if (*i + 1 >= argc) { *err = usage_error(cmd, "missing value for", a); return -1; } } while (0)
    if (!strcmp(a, "--classes")) {
        NEED();
        if (parse_int(argv[++*i], 1, 1000000, &v)) { *err = usage_error(cmd, "bad --classes", argv[*i]); return -1; }
        ma->o.num_classes = (int)v;
    } else if (!strcmp(a, "--in-channels")) {
        NEED();
        if (parse_int(argv[++*i], 1, 64, &v)) { *err = usage_error(cmd, "bad --in-channels", argv[*i]); return -1; }
        ma->o.in_channels = (int)v;
    } else if (!strcmp(a, "--padding")) {
        NEED();
        const char *p = argv[++*i];
        if (!strcmp(p, "same")) ma->o.padding = ENV2_PAD_SAME;
        else if (!strcmp(p, "symmetric")) ma->o.padding = ENV2_PAD_SYMMETRIC;
        else { *err = usage_error(cmd, "--padding must be same or symmetric", p); return -1; }
    } else if (!strcmp(a, "--arch")) {
        NEED();
        ma->arch = argv[++*i];
    } else if (!strcmp(a, "--stem")) {
        NEED();
        if (parse_int(argv[++*i], 1, 8192, &v)) { *err = usage_error(cmd, "bad --stem", argv[*i]); return -1; }
        ma->o.stem_channels = (int)v;
    } else if (!strcmp(a, "--head")) {
        NEED();
        if (parse_int(argv[++*i], 1, 8192, &v)) { *err = usage_error(cmd, "bad --head", argv[*i]); return -1; }
        ma->o.head_channels = (int)v;
    } else if (!strcmp(a, "--threads")) {
        NEED();
        if (parse_int(argv[++*i], 0, 1024, &v)) { *err = usage_error(cmd, "bad --threads", argv[*i]); return -1; }
        ma->o.num_threads = (int)v;
    } else if (!strcmp(a, "--seed")) {
        NEED();
        ma->o.seed = strtoull(argv[++*i], NULL, 10);
    } else if (!strcmp(a, "--width")) {
        NEED();
        ma->o.width_mult = (float)atof(argv[++*i]);
    } else if (!strcmp(a, "--depth")) {
        NEED();
        ma->o.depth_mult = (float)atof(argv[++*i]);
    } else if (!strcmp(a, "--bn-eps")) {
        NEED();
        ma->o.bn_eps = (float)atof(argv[++*i]);
    } else if (!strcmp(a, "--weights")) {
        NEED();
        ma->weights = argv[++*i];
    } else if (!strcmp(a, "--no-winograd")) {
        ma->o.winograd = 0;
    } else if (!strcmp(a, "--skip-classifier")) {
        ma->skip_classifier = 1;
    } else {
        return 0;
    }
#undef NEED
    return 1;
}

static int create_model(model_args *ma, env2_model **m)
{
    if (!ma->arch) return usage_error("", "no architecture given", NULL);
    if (env2_model_create(m, ma->arch, &ma->o)) return runtime_error("creating the model");
    if (ma->weights && env2_model_load(*m, ma->weights, ma->skip_classifier ? ENV2_LOAD_SKIP_CLASSIFIER : 0)) {
        runtime_error("loading weights");
        env2_model_destroy(*m);
        *m = NULL;
        return 1;
    }
    return 0;
}

static void print_int(long long v)
{
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%lld", v < 0 ? -v : v), lead = n % 3 ? n % 3 : 3;
    if (v < 0) putchar('-');
    for (int i = 0; i < n; i++) {
        if (i && (i - lead) % 3 == 0) putchar(',');
        putchar(buf[i]);
    }
}

int cmd_info(int argc, char **argv)
{
    model_args ma = {0};
    env2_model_options_init(&ma.o);
    long size = 0;
    int err = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_option("info", argc, argv, &i, &ma, &err);
        if (r < 0) return err;
        if (r) continue;
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (parse_int(argv[++i], 1, 4096, &size)) return usage_error("info", "bad --size", argv[i]);
        } else if (argv[i][0] != '-' && !ma.arch) {
            ma.arch = argv[i];
        } else {
            return usage_error("info", "unknown argument", argv[i]);
        }
    }
    if (!ma.arch) return usage_error("info", "usage: env2 info VARIANT|--arch STAGES [--size N] [--classes K]", NULL);
    env2_model *m;
    int rc = create_model(&ma, &m);
    if (rc) return rc;
    if (!size) size = env2_model_eval_size(m);
    int64_t macs = 0;
    env2_model_macs(m, (int)size, (int)size, &macs);
    printf("model        %s\n", env2_model_arch(m));
    printf("parameters   ");
    print_int(env2_model_num_params(m));
    printf("\nclasses      %d\nin channels  %d\ntrain size   %d\neval size    %d\n", env2_model_num_classes(m),
           env2_model_in_channels(m), env2_model_train_size(m), env2_model_eval_size(m));
    printf("MACs @%ld     ", size);
    print_int(macs);
    printf(" (%.2f G)\n\n", macs / 1e9);
    printf("stage  type          repeats  k  stride  expand  in -> out  SE\n");
    printf("stem   conv3x3       1        3  2       -       %d -> %d  -\n", env2_model_in_channels(m),
           env2_model_stem_channels(m));
    for (int i = 0; i < env2_model_num_stages(m); i++) {
        int32_t f, r, k, s, e, in, out, se;
        env2_model_stage(m, i, &f, &r, &k, &s, &e, &in, &out, &se);
        printf("%-6d %-13s %-8d %-2d %-7d %-7d %d -> %d  %s", i + 1, f ? "Fused-MBConv" : "MBConv", r, k, s, e, in, out,
               se ? "" : "-");
        if (se) printf("%d", se);
        printf("\n");
    }
    int32_t last_out = 0;
    env2_model_stage(m, env2_model_num_stages(m) - 1, NULL, NULL, NULL, NULL, NULL, NULL, &last_out, NULL);
    printf("head   conv1x1       1        1  1       -       %d -> %d  -\n", last_out, env2_model_head_channels(m));
    printf("fc     linear        -        -  -       -       %d -> %d  -\n", env2_model_head_channels(m),
           env2_model_num_classes(m));
    env2_model_destroy(m);
    return 0;
}

int cmd_init(int argc, char **argv)
{
    model_args ma = {0};
    env2_model_options_init(&ma.o);
    const char *out = NULL;
    int err = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_option("init", argc, argv, &i, &ma, &err);
        if (r < 0) return err;
        if (r) continue;
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (argv[i][0] != '-' && !ma.arch) ma.arch = argv[i];
        else return usage_error("init", "unknown argument", argv[i]);
    }
    if (!ma.arch || !out) return usage_error("init", "usage: env2 init VARIANT --seed S -o W.safetensors", NULL);
    env2_model *m;
    int rc = create_model(&ma, &m);
    if (rc) return rc;
    if (env2_model_save(m, out)) rc = runtime_error("saving");
    env2_model_destroy(m);
    return rc;
}

/* Reads an image batch .npy: [N,C,H,W] (or [N,H,W,C] with nhwc). */
static int load_images(const char *path, int nhwc, int in_ch, float **x, int *n, int *h, int *w)
{
    npy_array a;
    env2_err e;
    memset(&a, 0, sizeof a);
    if (npy_load(path, &a, &e)) {
        fprintf(stderr, "env2: %s: %s\n", path, e.msg);
        return 1;
    }
    if (a.ndim != 4) {
        fprintf(stderr, "env2: %s: expected a 4-D array [N,%s], got %d dimensions\n", path, nhwc ? "H,W,C" : "C,H,W",
                a.ndim);
        npy_free(&a);
        return 1;
    }
    int c = (int)(nhwc ? a.shape[3] : a.shape[1]);
    if (c != in_ch) {
        fprintf(stderr, "env2: %s: %d channels, the model takes %d (%s layout)\n", path, c, in_ch,
                nhwc ? "NHWC" : "NCHW");
        npy_free(&a);
        return 1;
    }
    *n = (int)a.shape[0];
    *h = (int)(nhwc ? a.shape[1] : a.shape[2]);
    *w = (int)(nhwc ? a.shape[2] : a.shape[3]);
    if (npy_to_f32(&a, x, &e)) {
        fprintf(stderr, "env2: %s: %s\n", path, e.msg);
        npy_free(&a);
        return 1;
    }
    npy_free(&a);
    return 0;
}

int cmd_forward(int argc, char **argv)
{
    model_args ma = {0};
    env2_model_options_init(&ma.o);
    const char *in = NULL, *out = NULL;
    int nhwc = 0, err = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_option("forward", argc, argv, &i, &ma, &err);
        if (r < 0) return err;
        if (r) continue;
        if (!strcmp(argv[i], "--input") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--output") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--nhwc")) nhwc = 1;
        else if (argv[i][0] != '-' && !ma.arch) ma.arch = argv[i];
        else return usage_error("forward", "unknown argument", argv[i]);
    }
    if (!ma.arch || !in || !out)
        return usage_error("forward", "usage: env2 forward VARIANT --weights W --input X.npy --output Y.npy", NULL);
    env2_model *m;
    int rc = create_model(&ma, &m);
    if (rc) return rc;
    float *x = NULL, *y = NULL;
    int n, h, w;
    rc = load_images(in, nhwc, env2_model_in_channels(m), &x, &n, &h, &w);
    if (!rc) {
        y = malloc(env2_model_output_size(m, n) * sizeof(float));
        if (!y) rc = runtime_error("allocating the output");
    }
    if (!rc && env2_forward(m, x, n, h, w, nhwc ? ENV2_LAYOUT_NHWC : ENV2_LAYOUT_NCHW, y)) rc = runtime_error("forward");
    if (!rc) {
        int64_t shape[2] = {n, env2_model_num_classes(m)};
        env2_err e;
        if (npy_save(out, ST_F32, 2, shape, y, &e)) {
            fprintf(stderr, "env2: %s: %s\n", out, e.msg);
            rc = 1;
        }
    }
    free(x);
    free(y);
    env2_model_destroy(m);
    return rc;
}

int cmd_grad(int argc, char **argv)
{
    model_args ma = {0};
    env2_model_options_init(&ma.o);
    const char *in = NULL, *labels_path = NULL, *out = NULL;
    float smoothing = 0.1f;
    int nhwc = 0, err = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_option("grad", argc, argv, &i, &ma, &err);
        if (r < 0) return err;
        if (r) continue;
        if (!strcmp(argv[i], "--input") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--labels") && i + 1 < argc) labels_path = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--label-smoothing") && i + 1 < argc) smoothing = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--nhwc")) nhwc = 1;
        else if (argv[i][0] != '-' && !ma.arch) ma.arch = argv[i];
        else return usage_error("grad", "unknown argument", argv[i]);
    }
    if (!ma.arch || !in || !labels_path || !out)
        return usage_error("grad", "usage: env2 grad VARIANT --weights W --input X.npy --labels L.npy -o G.safetensors",
                           NULL);
    ma.o.dropout = 0;
    ma.o.drop_path_rate = 0;
    env2_model *m;
    int rc = create_model(&ma, &m);
    if (rc) return rc;
    float *x = NULL, *g = NULL, loss = 0;
    int32_t *labels = NULL;
    int n, h, w;
    env2_trainer *t = NULL;
    rc = load_images(in, nhwc, env2_model_in_channels(m), &x, &n, &h, &w);
    if (!rc) {
        npy_array a;
        env2_err e;
        memset(&a, 0, sizeof a);
        if (npy_load(labels_path, &a, &e) || npy_to_i32(&a, &labels, &e)) {
            fprintf(stderr, "env2: %s: %s\n", labels_path, e.msg);
            rc = 1;
        } else if (a.ndim != 1 || a.shape[0] != n) {
            fprintf(stderr, "env2: %s: expected %d labels\n", labels_path, n);
            rc = 1;
        }
        npy_free(&a);
    }
    env2_trainer_options to;
    env2_trainer_options_init(&to);
    to.label_smoothing = smoothing;
    if (!rc && env2_trainer_create(&t, m, &to)) rc = runtime_error("creating the trainer");
    if (!rc && !(g = malloc((size_t)env2_model_num_params(m) * sizeof(float)))) rc = runtime_error("allocating");
    if (!rc && env2_trainer_gradients(t, x, n, h, w, nhwc ? ENV2_LAYOUT_NHWC : ENV2_LAYOUT_NCHW, labels, NULL, &loss, g))
        rc = runtime_error("computing gradients");
    if (!rc && env2_trainer_save_gradients(t, g, loss, out)) rc = runtime_error("saving gradients");
    if (!rc) printf("loss %.7f\n", loss);
    free(x);
    free(g);
    free(labels);
    env2_trainer_destroy(t);
    env2_model_destroy(m);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: env2 COMMAND [options]\n"
            "  info VARIANT [--size N]                       parameters, MACs and stage table\n"
            "  init VARIANT [--seed S] -o W.safetensors        random initialization\n"
            "  forward VARIANT --weights W --input X.npy --output Y.npy [--threads N] [--nhwc]\n"
            "          [--classes K] [--in-channels C] [--padding same|symmetric] [--arch STAGES --stem C --head C]\n"
            "  grad VARIANT --weights W --input X.npy --labels L.npy -o G.safetensors [--label-smoothing S]\n"
            "  bench VARIANT [--size N] [--batch B] [--threads T] [--runs R] [--train] [--profile]\n"
            "  train ...    progressive-learning training (env2 train --help)\n"
            "  eval ...     evaluate a saved model on a dataset\n"
            "  predict ...  classify images\n"
            "  schedule PRESET --epochs E [--stages M]   print a progressive-learning schedule\n"
            "  --version\n"
            "VARIANT: efficientnetv2-s|m|l|xl|b0|b1|b2|b3 (or s, m, ...), or --arch with stage strings.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "--version") || !strcmp(c, "version")) {
        printf("env2 %s (%s)\n", env2_version_string(), env2_build_info());
        return 0;
    }
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"info", cmd_info},   {"init", cmd_init}, {"forward", cmd_forward}, {"grad", cmd_grad},
        {"bench", cmd_bench}, {"train", cmd_train}, {"eval", cmd_eval}, {"predict", cmd_predict},
        {"schedule", cmd_schedule},
    };
    /* "env2 CMD --help": bench, train, eval, predict and schedule print their own page */
    if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) &&
        (!strcmp(c, "info") || !strcmp(c, "init") || !strcmp(c, "forward") || !strcmp(c, "grad"))) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(c, cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "env2: unknown command '%s'\n", c);
    usage(stderr);
    return 2;
}
